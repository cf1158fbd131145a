'use strict'
// The commands that only read: list, show, stats.

const { openStore, peekSession } = require('./store')
const { table, bytes, age, when, oneLine } = require('./format')

const SORT_FIELDS = ['user', 'workspace', 'size', 'updated', 'created', 'charts', 'beats', 'entries']

const SORT_KEYS = {
  user: (s) => [s.userId, s.workspaceId],
  workspace: (s) => [s.workspaceId, s.userId],
  size: (s) => [s.bytes],
  updated: (s) => [Date.parse(s.updatedAt)],
  created: (s) => [Date.parse(s.createdAt)],
  charts: (s) => [s.charts],
  beats: (s) => [s.beats],
  entries: (s) => [s.entries],
}

function compareKeys(a, b) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] < b[i]) return -1
    if (a[i] > b[i]) return 1
  }
  return 0
}

/** Opens the store, runs `work(store)`, and closes it whatever happens. */
async function withStore(context, work, options) {
  const store = await openStore(context.where, options)
  try {
    return await work(store)
  } finally {
    await store.close()
  }
}

async function list(context, options) {
  const sessions = await withStore(context, (store) => store.list())
  const now = Date.now()
  let rows = sessions.filter(
    (s) =>
      (options.user === undefined || s.userId === options.user) &&
      (options.workspace === undefined || s.workspaceId === options.workspace) &&
      (options.olderThan === undefined || now - Date.parse(s.updatedAt) >= options.olderThan),
  )
  const key = SORT_KEYS[options.sort]
  rows.sort((a, b) => compareKeys(key(a), key(b)))
  if (options.reverse) rows.reverse()
  if (options.limit !== undefined) rows = rows.slice(0, options.limit)
  const { out } = context.io
  if (options.json) {
    out.write(`${JSON.stringify(rows.map(({ loaded, dirty, ...summary }) => summary), null, 2)}\n`)
    return 0
  }
  if (rows.length === 0) {
    out.write(sessions.length === 0 ? 'no sessions stored\n' : 'no session matches\n')
    return 0
  }
  out.write(
    `${table(
      ['USER', 'WORKSPACE', 'SIZE', 'CHARTS', 'BEATS', 'ENTRIES', 'UPDATED', 'AGE'],
      rows.map((s) => [oneLine(s.userId, 32), oneLine(s.workspaceId, 48), bytes(s.bytes), s.charts, s.beats, s.entries, when(s.updatedAt), age(s.updatedAt, now)]),
    )}\n${rows.length} of ${sessions.length} session(s)\n`,
  )
  return 0
}

async function show(context, user, workspace, options) {
  const found = await withStore(context, (store) => peekSession(store, user, workspace))
  if (!found) {
    throw new Error(`no session of user ${JSON.stringify(user)} in workspace ${JSON.stringify(workspace)}`)
  }
  const { out, err } = context.io
  for (const note of found.notes) err.write(`mia-sessions: note: ${note}\n`)
  const s = found.session
  if (options.json) {
    out.write(`${JSON.stringify(s, null, 2)}\n`)
    return 0
  }
  const lines = []
  lines.push(`${s.userId}  ${s.workspaceId}  (session ${s.id})`)
  lines.push(`created ${when(s.createdAt)}, updated ${when(s.updatedAt)} (${age(s.updatedAt)} ago), ${bytes(Buffer.byteLength(JSON.stringify(s)))}`)
  const p = s.storyPosition || {}
  lines.push(`focus: ${s.universeFocus}   position: arc ${JSON.stringify(p.arc ?? '')}, beat ${p.beat ?? 0}, phase ${JSON.stringify(p.phase ?? '')}`)
  lines.push('')
  lines.push(`Charts (${s.activeCharts.length})`)
  for (const chart of s.activeCharts) {
    const done = chart.actions.filter((a) => a.completed).length
    const total = chart.actions.length
    const filled = total === 0 ? 0 : Math.round((done / total) * 10)
    lines.push(`  ${'█'.repeat(filled)}${'░'.repeat(10 - filled)} ${done}/${total}  ${oneLine(chart.title, 50)}  [${chart.status}]`)
    if (chart.desiredOutcome) lines.push(`             wants: ${oneLine(chart.desiredOutcome, 60)}`)
  }
  lines.push('')
  const beats = s.storyBeats.slice(-options.beats)
  lines.push(`Last beats (${beats.length} of ${s.storyBeats.length})`)
  for (const beat of beats) lines.push(`  ${when(beat.createdAt)}  ${oneLine(beat.type, 14).padEnd(14)}  ${oneLine(beat.description, 60)}`)
  lines.push('')
  const messages = s.conversationHistory.slice(-options.messages)
  lines.push(`Last messages (${messages.length} of ${s.conversationHistory.length})`)
  for (const m of messages) lines.push(`  ${when(m.timestamp)}  ${m.role.padEnd(9)}  ${oneLine(m.content, 60)}`)
  lines.push('')
  lines.push(`memory: ${Object.keys(s.memory).length} key(s)   config: ${Object.keys(s.config).length} key(s)`)
  out.write(`${lines.join('\n')}\n`)
  return 0
}

const SIZE_BUCKETS = [
  ['< 10 KB', 10 * 1024],
  ['10–100 KB', 100 * 1024],
  ['100 KB–1 MB', 1024 * 1024],
  ['1–10 MB', 10 * 1024 * 1024],
  ['≥ 10 MB', Infinity],
]
const AGE_BUCKETS = [
  ['< 1 day', 86_400_000],
  ['1–7 days', 7 * 86_400_000],
  ['7–30 days', 30 * 86_400_000],
  ['≥ 30 days', Infinity],
]

function bucketsOf(values, buckets) {
  const counts = buckets.map(([label]) => ({ label, sessions: 0 }))
  for (const v of values) counts[buckets.findIndex(([, limit]) => v < limit)].sessions += 1
  return counts
}

async function stats(context, options) {
  const [sessions, aside] = await withStore(context, (store) => Promise.all([store.list(), store.quarantined()]))
  const now = Date.now()
  const brief = ({ userId, workspaceId, bytes: size, updatedAt }) => ({ userId, workspaceId, bytes: size, updatedAt })
  const report = {
    sessions: sessions.length,
    users: new Set(sessions.map((s) => s.userId)).size,
    workspaces: new Set(sessions.map((s) => s.workspaceId)).size,
    bytes: sessions.reduce((sum, s) => sum + s.bytes, 0),
    charts: sessions.reduce((sum, s) => sum + s.charts, 0),
    beats: sessions.reduce((sum, s) => sum + s.beats, 0),
    entries: sessions.reduce((sum, s) => sum + s.entries, 0),
    bySize: bucketsOf(sessions.map((s) => s.bytes), SIZE_BUCKETS),
    byAge: bucketsOf(sessions.map((s) => now - Date.parse(s.updatedAt)), AGE_BUCKETS),
    oldest: [...sessions].sort((a, b) => Date.parse(a.updatedAt) - Date.parse(b.updatedAt)).slice(0, options.top).map(brief),
    largest: [...sessions].sort((a, b) => b.bytes - a.bytes).slice(0, options.top).map(brief),
    quarantined: { copies: aside.length, bytes: aside.reduce((sum, c) => sum + c.bytes, 0), names: aside.map((c) => c.name) },
  }
  const { out } = context.io
  if (options.json) {
    out.write(`${JSON.stringify(report, null, 2)}\n`)
    return 0
  }
  const lines = [
    `${report.sessions} session(s) of ${report.users} user(s) in ${report.workspaces} workspace(s), ${bytes(report.bytes)}`,
    `${report.charts} chart(s), ${report.beats} beat(s), ${report.entries} message(s)`,
    '',
    table(['SIZE', 'SESSIONS'], report.bySize.map((b) => [b.label, b.sessions])),
    '',
    table(['NOT UPDATED FOR', 'SESSIONS'], report.byAge.map((b) => [b.label, b.sessions])),
  ]
  const rows = (list) => list.map((s) => [oneLine(s.userId, 32), oneLine(s.workspaceId, 48), bytes(s.bytes), when(s.updatedAt), age(s.updatedAt, now)])
  if (sessions.length > 0) {
    lines.push('', 'Oldest', table(['USER', 'WORKSPACE', 'SIZE', 'UPDATED', 'AGE'], rows(report.oldest)))
    lines.push('', 'Largest', table(['USER', 'WORKSPACE', 'SIZE', 'UPDATED', 'AGE'], rows(report.largest)))
  }
  lines.push('', `copies kept aside (damaged, moved there by a load): ${report.quarantined.copies}, ${bytes(report.quarantined.bytes)}` + (report.quarantined.copies ? ' (mia-sessions doctor says what they hold)' : ''))
  out.write(`${lines.join('\n')}\n`)
  return 0
}

module.exports = { SORT_FIELDS, list, show, stats, withStore }
