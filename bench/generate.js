'use strict'
// Deterministic generator of realistic narrative sessions for the benchmarks.
//
// Every function takes a seed and returns the same data for the same seed. Sessions are valid for
// the addon (index.d.ts `NarrativeSession`): non-empty ids, RFC 3339 times, entries ordered by time.
// `sessionFileStem` names a file the way the store does (docs/storage.md), so a generated session can
// be dropped into a store's data dir and loaded from disk.

const crypto = require('node:crypto')

/** The three session sizes of issue 4: entries, charts × actions, beats. */
const SIZES = Object.freeze({
  '10KB': { label: '10 KB', entries: 50, charts: 1, actions: 3, beats: 3 },
  '1MB': { label: '1 MB', entries: 5_000, charts: 8, actions: 8, beats: 80 },
  '10MB': { label: '10 MB', entries: 50_000, charts: 24, actions: 12, beats: 600 },
})

/** All generated time lines start here (well in the past, so nothing looks like a future clock). */
const BASE_TIME = Date.UTC(2026, 4, 4, 8, 0, 0)

// mulberry32: small, fast, good enough for test data.
function rng(seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const r = {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(next() * list.length)],
    chance: (p) => next() < p,
    // Log-normal: most values near `median`, a long tail of large ones.
    lognormal: (median, sigma) => {
      const u1 = next() || 1e-12
      const u2 = next()
      const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)
      return median * Math.exp(sigma * z)
    },
    id: (prefix, length = 12) => {
      let s = prefix
      for (let i = 0; i < length; i++) s += ALPHABET[Math.floor(next() * ALPHABET.length)]
      return s
    },
  }
  return r
}

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz'

const WORDS = (
  'the a to of and in is it that for on with this we you can be as not are should will function ' +
  'test build deploy commit review merge branch error fix type session chart action outcome reality ' +
  'tension story beat arc phase ceremony engineer universe memory config workspace user server client ' +
  'socket message update reconnect restore persist save load file path module import export async ' +
  'await promise callback handler router request response header token cache index query schema ' +
  'migration database table column row value field key string number boolean array object map set ' +
  'queue stream buffer encode decode parse serialize render component state props hook effect layout ' +
  'style theme panel editor terminal extension command palette setting keybinding debug breakpoint ' +
  'trace log metric latency throughput memory leak heap stack thread lock mutex race deadlock retry ' +
  'timeout backoff fallback feature flag release rollout canary rollback incident postmortem ' +
  'refactor rename extract inline simplify clarify document explain why because however instead ' +
  'first then next finally done ready blocked waiting started finished passing failing green red'
).split(' ')

const CODE_LINES = [
  'const session = await store.load(userId, workspaceId)',
  'if (!changes.length) return',
  "ws.send(JSON.stringify({ type: 'session-event', payload }))",
  'for (const chart of session.activeCharts) render(chart)',
  'export function mergeSessions(a, b) {',
  '  return a.updatedAt > b.updatedAt ? a : b',
  '}',
  'let retries = 0; while (retries++ < 3) await save()',
  'fn persist(&self, key: &SessionKey) -> Result<()> {',
  'git commit -m "fix: restore charts on reconnect"',
  'npm test -- --runInBand',
]

function sentence(r, words) {
  const out = []
  for (let i = 0; i < words; i++) out.push(r.pick(WORDS))
  const text = out.join(' ')
  return text.charAt(0).toUpperCase() + text.slice(1) + r.pick(['.', '.', '.', '?', '!', ':'])
}

/** Text of about `chars` characters: prose, sometimes with a code block. */
function text(r, chars) {
  const parts = []
  let length = 0
  while (length < chars) {
    let part
    if (chars > 300 && r.chance(0.12)) {
      const lines = []
      for (let i = r.int(2, 6); i > 0; i--) lines.push(r.pick(CODE_LINES))
      part = '```\n' + lines.join('\n') + '\n```'
    } else {
      part = sentence(r, r.int(4, 18))
    }
    parts.push(part)
    length += part.length + 1
  }
  let out = parts.join(r.chance(0.2) ? '\n\n' : ' ')
  if (out.length > chars * 1.5 && chars > 20) out = out.slice(0, Math.ceil(chars)).trimEnd() + '…'
  return out
}

const ROLES = [
  ['user', 0.34, 40],
  ['assistant', 0.36, 52],
  ['agent', 0.22, 27],
  ['system', 0.08, 22],
]
const UNIVERSES = ['engineer', 'ceremony', 'story']

function pickRole(r) {
  let x = r.next()
  for (const [role, p, median] of ROLES) {
    if ((x -= p) < 0) return [role, median]
  }
  return [ROLES[0][0], ROLES[0][2]]
}

const iso = (ms) => new Date(ms).toISOString()

/** One conversation entry at `time` (milliseconds). */
function makeEntry(r, time) {
  const [role, median] = pickRole(r)
  const entry = {
    id: r.id('msg_'),
    role,
    content: text(r, Math.min(6000, Math.max(2, r.lognormal(median, 0.95)))),
  }
  if (r.chance(0.7)) entry.universe = r.pick(UNIVERSES)
  entry.timestamp = iso(time)
  if ((role === 'assistant' || role === 'agent') && r.chance(0.5)) entry.traceId = r.id('tr_', 16)
  return entry
}

function makeChart(r, index, time, actions) {
  const list = []
  for (let i = 0; i < actions; i++) {
    const completed = r.chance(0.4)
    const action = { id: `a${index}_${i}_${r.id('', 6)}`, title: sentence(r, r.int(3, 9)).slice(0, -1), completed }
    if (completed) action.completedAt = iso(time + r.int(1, 48) * 3_600_000)
    action.order = i + 1
    if (r.chance(0.3)) action.effort = r.pick(['S', 'M', 'L'])
    list.push(action)
  }
  return {
    id: `chart_${index}_${r.id('', 8)}`,
    title: sentence(r, r.int(3, 8)).slice(0, -1),
    desiredOutcome: text(r, r.int(60, 240)),
    currentReality: text(r, r.int(60, 240)),
    actions: list,
    status: r.pick(['active', 'active', 'active', 'resolved', 'archived']),
    createdAt: iso(time),
    updatedAt: iso(time + r.int(1, 72) * 3_600_000),
  }
}

function makeBeat(r, time) {
  const beat = {
    id: r.id('beat_'),
    description: text(r, r.int(30, 160)),
    type: r.pick(['commit', 'deploy', 'review', 'chart-complete', 'analysis', 'custom']),
  }
  if (r.chance(0.6)) {
    beat.universeAnnotations = {}
    for (const u of UNIVERSES) if (r.chance(0.6)) beat.universeAnnotations[u] = text(r, r.int(20, 90))
  }
  beat.createdAt = iso(time)
  if (beat.type === 'commit') beat.sha = r.id('', 40).replace(/[g-z]/g, 'f')
  return beat
}

/** The hash the store names a session's files by (docs/storage.md). */
function sessionDigest(userId, workspaceId) {
  const h = crypto.createHash('sha256')
  h.update('mia-narrative-session/v1\0')
  for (const id of [userId, workspaceId]) {
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(id)))
    h.update(len)
    h.update(id)
  }
  return h.digest('hex')
}

/** The file stem of a session: `<stem>.json` in the data dir. */
const sessionFileStem = (userId, workspaceId) => sessionDigest(userId, workspaceId)
/** A session's id: the first 32 hex digits of the same hash. */
const sessionIdOf = (userId, workspaceId) => sessionDigest(userId, workspaceId).slice(0, 32)

/**
 * A realistic session. `size` is one of SIZES' keys or an object with the same fields.
 * Entries are `gapSeconds` apart on average (varied), starting at `start`.
 */
function generateSession({ seed = 1, size = '10KB', userId = 'dev-alice', workspaceId = '/home/alice/projects/mia-app', start = BASE_TIME } = {}) {
  const shape = typeof size === 'string' ? SIZES[size] : size
  if (!shape) throw new Error(`unknown size ${size}`)
  const r = rng(seed)
  let time = start
  const tick = () => (time += r.int(2, 110) * 1000 + r.int(0, 999))

  const charts = []
  for (let i = 0; i < shape.charts; i++) charts.push(makeChart(r, i, start + i * 3_600_000, shape.actions))
  const beats = []
  const entries = []
  // Beats are spread among the entries, in time order like everything else.
  const beatEvery = shape.beats ? Math.max(1, Math.floor(shape.entries / shape.beats)) : Infinity
  for (let i = 0; i < shape.entries; i++) {
    entries.push(makeEntry(r, tick()))
    if (beats.length < shape.beats && i % beatEvery === beatEvery - 1) beats.push(makeBeat(r, tick()))
  }
  while (beats.length < shape.beats) beats.push(makeBeat(r, tick()))

  const memory = {
    goal: sentence(r, 8),
    lastFile: `src/${r.pick(['app', 'store', 'session', 'server'])}/${r.pick(['index', 'handler', 'merge'])}.ts`,
    openFiles: Array.from({ length: r.int(2, 6) }, () => `src/${r.pick(WORDS)}/${r.pick(WORDS)}.ts`),
    lastCommand: r.pick(['npm test', 'npm run build', 'git status', 'cargo test']),
    notes: text(r, 200),
    counters: { reconnects: r.int(0, 40), saves: r.int(0, 4000) },
  }
  const config = {
    theme: r.pick(['dark', 'light', 'high-contrast']),
    autosave: true,
    panels: { charts: true, story: r.chance(0.5), ceremony: r.chance(0.5) },
    fontSize: r.int(11, 16),
  }
  return {
    id: sessionIdOf(userId, workspaceId),
    userId,
    workspaceId,
    createdAt: iso(start),
    updatedAt: iso(time),
    universeFocus: r.pick(['engineer', 'ceremony', 'story', 'all']),
    activeCharts: charts,
    storyBeats: beats,
    storyPosition: { arc: r.pick(['onboarding', 'refactor', 'launch']), beat: r.int(0, 12), phase: r.pick(['rising', 'climax', 'resolution']) },
    memory,
    conversationHistory: entries,
    config,
  }
}

/** The time of the last entry of a session, in milliseconds. */
function lastTime(session) {
  const h = session.conversationHistory
  return h.length ? Date.parse(h[h.length - 1].timestamp) : Date.parse(session.updatedAt)
}

/** The shape of a small session (~2.7 KB of JSON): what most stored sessions look like. */
const SMALL_SHAPE = Object.freeze({ label: 'small', entries: 3, charts: 1, actions: 2, beats: 1 })

/**
 * Small session number `i` (user `small-user-<i>`), for the workloads with many sessions: creation,
 * concurrent appends, list, disk and memory per session. Deterministic in `i`.
 */
function smallSession(i) {
  const userId = `small-user-${String(i).padStart(6, '0')}`
  return generateSession({ seed: 500_000 + i, size: SMALL_SHAPE, userId, workspaceId: `/home/${userId}/project` })
}

/**
 * The n-th update of a stream: one new conversation entry (`SessionUpdate`), after `afterMs`.
 * Deterministic in (seed, n).
 */
function makeUpdate(seed, n, afterMs = BASE_TIME) {
  const r = rng((seed * 7919 + n * 104729) >>> 0)
  const entry = makeEntry(r, afterMs + (n + 1) * 15_000)
  return { conversationHistory: [entry] }
}

/**
 * Two sessions that share a history of `size` and then diverged by `diverged` entries each, as two
 * servers appending concurrently would make them: interleaved times, new beats, and last-write-wins
 * values written on each side with their own clocks (nodes `nodeA` and `nodeB`).
 */
function generateDivergedPair({ seed = 4, size = '1MB', diverged = 10_000, userId = 'dev-alice', workspaceId = '/home/alice/projects/mia-app' } = {}) {
  const base = generateSession({ seed, size, userId, workspaceId })
  const fork = lastTime(base)
  const side = (name, sideSeed, node) => {
    const s = structuredClone(base)
    const r = rng(sideSeed)
    let time = fork
    for (let i = 0; i < diverged; i++) {
      time += r.int(2, 110) * 1000 + r.int(0, 999)
      s.conversationHistory.push(makeEntry(r, time))
      if (i % 200 === 199) s.storyBeats.push(makeBeat(r, time + 1))
    }
    const clock = (ms, c = 0) => `${String(ms).padStart(13, '0')}-${String(c).padStart(4, '0')}-${node}`
    const t = (k) => fork + k * 60_000
    s.versions = {}
    s.universeFocus = name === 'a' ? 'engineer' : 'story'
    s.versions.universeFocus = clock(t(name === 'a' ? 5 : 9))
    s.memory.goal = `${name}: ${sentence(r, 6)}`
    s.versions['memory.goal'] = clock(t(name === 'a' ? 12 : 3))
    s.memory[`from_${name}`] = { at: iso(t(1)), note: sentence(r, 5) }
    s.versions[`memory.from_${name}`] = clock(t(1))
    if (name === 'b') {
      delete s.memory.notes
      s.versions['memory.notes'] = clock(t(20))
    }
    const chart = s.activeCharts[0]
    if (chart) {
      if (name === 'a') {
        chart.title = `Renamed on A: ${chart.title}`
        s.versions[`activeCharts.${chart.id}.title`] = clock(t(7))
        chart.actions.push({ id: `a_new_${name}`, title: 'Added on A', completed: false, order: 99 })
      } else {
        chart.currentReality = `Updated on B: ${chart.currentReality}`
        s.versions[`activeCharts.${chart.id}.currentReality`] = clock(t(8))
        const action = chart.actions[0]
        action.completed = true
        action.completedAt = iso(t(8))
        s.versions[`activeCharts.${chart.id}.actions.${action.id}.completed`] = clock(t(8))
        s.versions[`activeCharts.${chart.id}.actions.${action.id}.completedAt`] = clock(t(8))
      }
      chart.updatedAt = iso(t(name === 'a' ? 7 : 8))
    }
    s.updatedAt = iso(time)
    return s
  }
  return { base, a: side('a', seed * 31 + 1, 'nodeA'), b: side('b', seed * 31 + 2, 'nodeB') }
}

/**
 * A small session file's text for the TTL sweep: user `i`, updated at `updatedMs`. Made from a
 * template (fast enough for 100,000 files) but each file is a valid, distinct session.
 */
function smallSessionText(i, updatedMs) {
  const userId = `sweep-user-${i}`
  const workspaceId = `/home/sweep-user-${i}/project`
  const created = updatedMs - 3_600_000
  const session = {
    id: sessionIdOf(userId, workspaceId),
    userId,
    workspaceId,
    createdAt: iso(created),
    updatedAt: iso(updatedMs),
    universeFocus: 'all',
    activeCharts: [],
    storyBeats: [],
    storyPosition: { arc: 'onboarding', beat: 1, phase: 'rising' },
    memory: { lastFile: 'src/index.ts' },
    conversationHistory: [
      { id: `m${i}_1`, role: 'user', content: 'Restore my charts after the reconnect, please.', timestamp: iso(created + 1000) },
      { id: `m${i}_2`, role: 'assistant', content: 'Your two active charts and story position are back; the last beat was the review of the merge.', universe: 'engineer', timestamp: iso(created + 5000) },
      { id: `m${i}_3`, role: 'agent', content: 'Autosaved.', timestamp: iso(updatedMs) },
    ],
    config: { theme: 'dark' },
  }
  return { stem: sessionFileStem(userId, workspaceId), text: JSON.stringify(session) }
}

module.exports = {
  SIZES,
  BASE_TIME,
  rng,
  generateSession,
  generateDivergedPair,
  makeUpdate,
  makeEntry,
  lastTime,
  smallSessionText,
  SMALL_SHAPE,
  smallSession,
  sessionFileStem,
  sessionIdOf,
}

if (require.main === module) {
  // `node bench/generate.js`: print what each size comes to.
  for (const size of Object.keys(SIZES)) {
    const s = generateSession({ seed: 1, size })
    const bytes = Buffer.byteLength(JSON.stringify(s))
    console.log(`${size}: ${s.conversationHistory.length} entries, ${s.activeCharts.length} charts, ${s.storyBeats.length} beats, ${bytes} bytes`)
  }
}
