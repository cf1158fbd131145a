'use strict'
// Baseline 3, "js-merge": the merge rules of the README ("Merge rules"), in plain JavaScript, the
// way a host would write them: Maps keyed by id and by version path, objects shared rather than
// copied where that is safe.
//
// - Last-write-wins registers (universeFocus, storyPosition, each memory/config key, each chart and
//   action field): the later hybrid logical clock "millis-counter-node" wins, compared numerically
//   by (millis, counter, node); on an equal clock the larger canonical JSON text wins. A value with
//   no clock of its own takes its session's updatedAt. A memory/config key set to null is deleted
//   and its clock kept in `versions`.
// - activeCharts, storyBeats, conversationHistory: unions by id, ordered by time then id. Two copies
//   of one chart merge field by field with their actions unioned by id (sorted by order, then id);
//   two different copies of one beat or entry resolve to the larger canonical JSON text.
// - createdAt is the earliest, updatedAt the latest; ids converge on the smallest.
//
// Like `mergeSessions`, the result is normalised: every register has its clock in `versions`.

const CHART_META = new Set(['id', 'actions', 'createdAt', 'updatedAt'])
const ACTION_SKIP = new Set(['id'])
const ZERO_CLOCK = Object.freeze({ millis: 0, counter: 0, node: '' })

function mergeSessions(a, b) {
  const out = blank(a)
  applySession(out, a)
  applySession(out, b)
  return toSession(out)
}

// ---- clocks ----

function parseClock(text) {
  const first = text.indexOf('-')
  const second = text.indexOf('-', first + 1)
  if (first <= 0 || second <= first + 1) throw invalid(`not a clock value: ${text}`)
  const millis = Number(text.slice(0, first))
  const counter = Number(text.slice(first + 1, second))
  if (!Number.isInteger(millis) || !Number.isInteger(counter)) throw invalid(`not a clock value: ${text}`)
  return { millis, counter, node: text.slice(second + 1) }
}

function compareClocks(x, y) {
  if (x.millis !== y.millis) return x.millis < y.millis ? -1 : 1
  if (x.counter !== y.counter) return x.counter < y.counter ? -1 : 1
  return x.node < y.node ? -1 : x.node > y.node ? 1 : 0
}

const formatClock = (c) => `${String(c.millis).padStart(13, '0')}-${String(c.counter).padStart(4, '0')}-${c.node}`

function timeMillis(time) {
  if (typeof time !== 'string' || time === '') return undefined
  const ms = Date.parse(time)
  return Number.isNaN(ms) ? undefined : ms
}

const clockOfTime = (time) => ({ millis: Math.max(0, timeMillis(time) ?? 0), counter: 0, node: '' })

// ---- values ----

function deepEqual(x, y) {
  if (x === y) return true
  if (typeof x !== 'object' || typeof y !== 'object' || x === null || y === null) return false
  if (Array.isArray(x)) {
    if (!Array.isArray(y) || x.length !== y.length) return false
    for (let i = 0; i < x.length; i++) if (!deepEqual(x[i], y[i])) return false
    return true
  }
  if (Array.isArray(y)) return false
  let n = 0
  for (const key in x) {
    if (x[key] === undefined) continue
    if (!Object.prototype.hasOwnProperty.call(y, key) || !deepEqual(x[key], y[key])) return false
    n++
  }
  for (const key in y) if (y[key] !== undefined) n--
  return n === 0
}

/** JSON text with every object's keys sorted: the tie-breaker between two different values. */
function canonicalText(value) {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map(canonicalText).join(',')}]`
  const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalText(value[k])}`).join(',')}}`
}

const segment = (raw) => (/[.\\]/.test(raw) ? raw.replace(/\\/g, '\\\\').replace(/\./g, '\\.') : raw)

function invalid(message) {
  const err = new Error(message)
  err.code = 'EINVALID'
  return err
}

// ---- the session being built ----

function blank(session) {
  return {
    id: session.id,
    userId: session.userId,
    workspaceId: session.workspaceId,
    createdAt: session.createdAt,
    updatedAt: '',
    universeFocus: 'all',
    charts: new Map(), // id -> chart (plain object, actions as an array)
    beats: new List(),
    entries: new List(),
    storyPosition: { arc: '', beat: 0, phase: '' },
    memory: new Map(),
    config: new Map(),
    versions: new Map(), // path -> clock
  }
}

/** An append-only list with an index by id. */
class List {
  constructor() {
    this.items = []
    this.index = new Map()
  }
}

function applySession(target, session) {
  const versions = new Map()
  for (const [path, text] of Object.entries(session.versions || {})) versions.set(path, parseClock(text))
  const ctx = {
    target,
    versions: target.versions,
    targetDefault: clockOfTime(target.updatedAt),
    patchVersions: versions,
    patchClock: clockOfTime(session.updatedAt),
  }

  for (const key of ['id', 'userId', 'workspaceId']) {
    const incoming = session[key]
    if (incoming && (!target[key] || incoming < target[key])) target[key] = incoming
  }
  const focus = session.universeFocus ?? session.universFocus ?? 'all'
  if (resolve(ctx, 'universeFocus', target.universeFocus, focus)) target.universeFocus = focus
  const position = { arc: '', beat: 0, phase: '', ...(session.storyPosition || {}) }
  if (resolve(ctx, 'storyPosition', target.storyPosition, position)) target.storyPosition = position

  mergeKeyed(ctx, target.memory, withTombstones(session.memory, versions, 'memory.'), 'memory')
  mergeKeyed(ctx, target.config, withTombstones(session.config, versions, 'config.'), 'config')

  for (const chart of session.activeCharts || []) mergeChart(ctx, chart)
  unionById(target.beats, session.storyBeats || [], 'createdAt')
  unionById(target.entries, session.conversationHistory || [], 'timestamp')

  if (earlier(session.createdAt, target.createdAt)) target.createdAt = session.createdAt
  if (later(session.updatedAt, target.updatedAt)) target.updatedAt = session.updatedAt
}

/**
 * One last-write-wins register. `current` is undefined when the target never wrote it.
 * Returns whether the incoming value replaces the target's; the clock is kept either way.
 */
function resolve(ctx, path, current, incoming) {
  const incomingClock = ctx.patchVersions.get(path) ?? ctx.patchClock
  let currentClock = ctx.versions.get(path)
  if (currentClock === undefined && current !== undefined) currentClock = ctx.targetDefault
  let take = true
  if (currentClock !== undefined && current !== undefined) {
    const order = compareClocks(incomingClock, currentClock)
    take =
      order > 0 ||
      (order === 0 && !deepEqual(incoming, current) && canonicalText(incoming) > canonicalText(current))
  }
  if (!take) return false
  if (currentClock === undefined || compareClocks(currentClock, incomingClock) !== 0) {
    ctx.versions.set(path, incomingClock)
  }
  return current === undefined || !deepEqual(current, incoming)
}

function withTombstones(map, versions, prefix) {
  const out = new Map(Object.entries(map || {}))
  for (const path of versions.keys()) {
    if (path.startsWith(prefix)) {
      const key = path.slice(prefix.length)
      if (!out.has(key)) out.set(key, null)
    }
  }
  return out
}

function mergeKeyed(ctx, target, incoming, name) {
  for (const [key, value] of incoming) {
    const path = `${name}.${key}`
    const current = target.has(key) ? target.get(key) : ctx.versions.has(path) ? null : undefined
    if (resolve(ctx, path, current, value)) {
      if (value === null) target.delete(key)
      else target.set(key, value)
    }
  }
}

function mergeFields(ctx, target, incoming, skip, prefix) {
  for (const field of Object.keys(incoming)) {
    if (skip.has(field)) continue
    const value = incoming[field] === undefined ? null : incoming[field]
    const path = `${prefix}.${segment(field)}`
    const current = field in target ? target[field] : ctx.versions.has(path) ? null : undefined
    if (resolve(ctx, path, current, value)) target[field] = value
  }
}

/** A chart's registers: an action's absent completedAt and order count as null. */
function actionRegisters(action) {
  const out = { ...action }
  if (out.completedAt === undefined) out.completedAt = null
  if (out.order === undefined) out.order = null
  return out
}

function mergeChart(ctx, incoming) {
  const id = incoming.id
  if (typeof id !== 'string' || id === '') throw invalid('a chart needs a string id')
  const prefix = `activeCharts.${segment(id)}`
  const existing = ctx.target.charts.get(id)
  const chart = existing ? { ...existing } : { id }
  mergeFields(ctx, chart, incoming, CHART_META, prefix)
  if (typeof incoming.createdAt === 'string' && earlier(incoming.createdAt, chart.createdAt ?? '')) {
    chart.createdAt = incoming.createdAt
  }
  if (typeof incoming.updatedAt === 'string' && later(incoming.updatedAt, chart.updatedAt ?? '')) {
    chart.updatedAt = incoming.updatedAt
  }
  const actions = new Map()
  for (const action of existing?.actions || []) actions.set(action.id, actionRegisters(action))
  for (const action of incoming.actions || []) {
    const actionPrefix = `${prefix}.actions.${segment(action.id)}`
    let target = actions.get(action.id)
    if (!target) actions.set(action.id, (target = { id: action.id }))
    mergeFields(ctx, target, actionRegisters(action), ACTION_SKIP, actionPrefix)
    fillActionDefaults(target)
    clockEveryField(ctx, target, actionPrefix)
  }
  chart.actions = [...actions.values()].sort(compareActions)
  fillChartDefaults(chart)
  if (!existing) clockEveryField(ctx, chart, prefix)
  ctx.target.charts.set(id, chart)
}

function fillChartDefaults(chart) {
  for (const [field, value] of [['title', ''], ['desiredOutcome', ''], ['currentReality', ''], ['status', 'active'], ['createdAt', ''], ['updatedAt', '']]) {
    if (chart[field] === undefined) chart[field] = value
  }
}

function fillActionDefaults(action) {
  if (action.title === undefined) action.title = ''
  if (action.completed === undefined) action.completed = false
  if (action.completedAt === undefined) action.completedAt = null
  if (action.order === undefined) action.order = null
}

/** Registers a patch left out still get a clock: the lowest there is, so any real write wins. */
function clockEveryField(ctx, fields, prefix) {
  for (const field of Object.keys(fields)) {
    if (CHART_META.has(field)) continue
    const path = `${prefix}.${segment(field)}`
    if (!ctx.versions.has(path)) ctx.versions.set(path, ctx.patchVersions.get(path) ?? ZERO_CLOCK)
  }
  if (fields.actions) {
    for (const action of fields.actions) clockEveryField(ctx, actionRegisters(action), `${prefix}.actions.${segment(action.id)}`)
  }
}

function compareActions(x, y) {
  const ox = typeof x.order === 'number' ? x.order : Infinity
  const oy = typeof y.order === 'number' ? y.order : Infinity
  if (ox !== oy) return ox < oy ? -1 : 1
  return x.id < y.id ? -1 : x.id > y.id ? 1 : 0
}

/** Beats and entries: a union by id; of two different copies, the larger canonical text wins. */
function unionById(list, incoming, timeField) {
  if (incoming.length === 0) return
  let needsSort = false
  for (const item of incoming) {
    if (typeof item.id !== 'string' || item.id === '') throw invalid('a list entry needs a string id')
    const i = list.index.get(item.id)
    if (i === undefined) {
      const last = list.items[list.items.length - 1]
      if (last && compareOrder(last, item, timeField) > 0) needsSort = true
      list.index.set(item.id, list.items.length)
      list.items.push(item)
    } else {
      const current = list.items[i]
      if (current !== item && !deepEqual(current, item) && canonicalText(item) > canonicalText(current)) {
        if (compareOrder(current, item, timeField) !== 0) needsSort = true
        list.items[i] = item
      }
    }
  }
  if (needsSort) {
    const keyed = list.items.map((item) => ({ item, ms: timeMillis(item[timeField]), time: item[timeField] ?? '' }))
    keyed.sort(compareKeyed)
    list.items = keyed.map((k) => k.item)
    list.index = new Map(list.items.map((item, i) => [item.id, i]))
  }
}

function compareKeyed(x, y) {
  // Unreadable times (undefined) first, then by millis, by the time text, by id.
  if (x.ms !== y.ms) {
    if (x.ms === undefined) return -1
    if (y.ms === undefined) return 1
    return x.ms < y.ms ? -1 : 1
  }
  if (x.time !== y.time) return x.time < y.time ? -1 : 1
  return x.item.id < y.item.id ? -1 : x.item.id > y.item.id ? 1 : 0
}

const compareOrder = (x, y, field) =>
  compareKeyed({ item: x, ms: timeMillis(x[field]), time: x[field] ?? '' }, { item: y, ms: timeMillis(y[field]), time: y[field] ?? '' })

/** Times rank by millis, then text; an empty or unreadable time loses to a readable one. */
function earlier(candidate, current) {
  if (typeof candidate !== 'string') return false
  return rankTime(candidate, true, current) < 0
}

function later(candidate, current) {
  if (typeof candidate !== 'string') return false
  return rankTime(candidate, false, current) > 0
}

function rankTime(candidate, forMin, current) {
  const rank = (t) => {
    const ms = timeMillis(t)
    return ms === undefined ? [forMin ? 1 : -1, 0, t] : [0, ms, t]
  }
  const [a, b] = [rank(candidate), rank(current)]
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1
  return 0
}

// ---- back to a plain session ----

function toSession(s) {
  const charts = [...s.charts.values()].map((chart) => {
    const out = { ...chart }
    out.actions = chart.actions.map((action) => {
      const a = { ...action }
      if (a.completedAt === null) delete a.completedAt
      if (a.order === null) delete a.order
      return a
    })
    return out
  })
  charts.sort((x, y) => compareOrder(x, y, 'createdAt'))
  const versions = {}
  for (const path of [...s.versions.keys()].sort()) versions[path] = formatClock(s.versions.get(path))
  const session = {
    id: s.id,
    userId: s.userId,
    workspaceId: s.workspaceId,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    universeFocus: s.universeFocus,
    activeCharts: charts,
    storyBeats: s.beats.items,
    storyPosition: s.storyPosition,
    memory: Object.fromEntries(s.memory),
    conversationHistory: s.entries.items,
    config: Object.fromEntries(s.config),
  }
  if (s.versions.size) session.versions = versions
  return session
}

module.exports = { mergeSessions, canonicalText, parseClock, compareClocks }
