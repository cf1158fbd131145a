'use strict'
// Contender "lmdb": lmdb-js (npm `lmdb`, 3.x) with durable commits. Its defaults, as a Node
// developer gets them: syncing on (no `noSync`), writes issued in one turn of the event loop
// batched into one transaction on lmdb-js's write thread, values as msgpack, and `overlappingSync`
// (on by default on Linux: the sync of one transaction overlaps the next one's commit). With
// overlappingSync a write's promise resolves at commit, before the sync; every write here waits
// for the `flushed` promise of its transaction too (`separateFlushed: true`), so it resolves only
// once the data is synced: the same promise as a durable merge of ours.
//
// Normalised like the SQLite contender, as keys: a record per chart, action, beat and entry, and
// one for the session's scalar fields (which also keeps the counts list() reports):
//   ['s', userId, workspaceId]         → session fields, counts, `id`
//   ['c', id, chart#]                  → chart without its actions
//   ['a', id, chart#, action#]         → action
//   ['b', id, beat#]                   → beat
//   ['e', id, entry#]                  → conversation entry
// Reads (restore, list) are lmdb-js's synchronous reads, on Node's main thread.

const { open } = require('lmdb')

const MAX = Number.MAX_SAFE_INTEGER
const rangeOf = (...prefix) => ({ start: prefix, end: [...prefix, MAX] })

class LmdbStore {
  constructor(dir) {
    this.db = open({ path: dir, separateFlushed: true })
    /** (user, workspace) → the session record, as a host keeps it once it has seen the session. */
    this.records = new Map()
  }

  recordOf(userId, workspaceId) {
    const key = `${userId}\0${workspaceId}`
    let record = this.records.get(key)
    if (!record) {
      record = this.db.get(['s', userId, workspaceId])
      if (!record) throw new Error(`no session ${userId} ${workspaceId}`)
      this.records.set(key, record)
    }
    return record
  }

  /** Puts a whole session (no wait); returns the promise of its last write. */
  putSession(s) {
    const { db } = this
    s.activeCharts.forEach(({ actions, ...chart }, c) => {
      db.put(['c', s.id, c], chart)
      actions.forEach((action, a) => db.put(['a', s.id, c, a], action))
    })
    s.storyBeats.forEach((beat, b) => db.put(['b', s.id, b], beat))
    s.conversationHistory.forEach((entry, e) => db.put(['e', s.id, e], entry))
    const { activeCharts, storyBeats, conversationHistory, ...fields } = s
    const record = { ...fields, charts: activeCharts.length, beats: storyBeats.length, entries: conversationHistory.length }
    this.records.set(`${s.userId}\0${s.workspaceId}`, record)
    return db.put(['s', s.userId, s.workspaceId], record)
  }

  /** Resolves once `written` (a write's promise) has committed and its transaction is synced. */
  static async durable(written) {
    if (!(await written)) throw new Error('lmdb write did not happen')
    await written.flushed
  }

  create(session) {
    return LmdbStore.durable(this.putSession(session))
  }

  /** Stores sessions (set-up, untimed), synced. */
  async seed(sessions) {
    let last
    for (const s of sessions) last = this.putSession(s)
    if (last) await LmdbStore.durable(last)
  }

  /** Appends one conversation entry durably: the entry and the session record, in one transaction. */
  append(userId, workspaceId, entry) {
    const record = this.recordOf(userId, workspaceId)
    this.db.put(['e', record.id, record.entries++], entry)
    if (entry.timestamp > record.updatedAt) record.updatedAt = entry.timestamp
    return LmdbStore.durable(this.db.put(['s', userId, workspaceId], record))
  }

  restore(userId, workspaceId) {
    const { db } = this
    const { charts, beats, entries, ...fields } = db.get(['s', userId, workspaceId])
    const values = (range) => Array.from(db.getRange(range), ({ value }) => value)
    const activeCharts = values(rangeOf('c', fields.id)).map((chart) => ({ ...chart, actions: [] }))
    for (const { key, value } of db.getRange({ start: ['a', fields.id], end: ['a', fields.id, MAX] })) activeCharts[key[2]].actions.push(value)
    return { ...fields, activeCharts, storyBeats: values(rangeOf('b', fields.id)), conversationHistory: values(rangeOf('e', fields.id)) }
  }

  /** A summary per stored session, in key order (user, then workspace). */
  list() {
    return Array.from(this.db.getRange({ start: ['s'], end: ['t'] }), ({ value: r }) => ({
      id: r.id,
      userId: r.userId,
      workspaceId: r.workspaceId,
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
      charts: r.charts,
      beats: r.beats,
      entries: r.entries,
    }))
  }

  entryCount(userId, workspaceId) {
    const record = this.db.get(['s', userId, workspaceId])
    return record ? record.entries : 0
  }

  close() {
    return this.db.close()
  }
}

module.exports = { LmdbStore }
