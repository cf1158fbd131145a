'use strict'
// The systems of the many-sessions workloads (W6 to W9) and the contenders of W1 and W2, behind
// one interface, so that a workload is written once for all of them:
//   create(session)                     a new session, durably (resolves once synced)
//   append(userId, workspaceId, entry)  one conversation entry, durably
//   seed(sessions)                      set-up (untimed): sessions stored, synced
//   restore(userId, workspaceId)        the whole session (W1)
//   list()                              a summary per session (W8)
//   entryCount(userId, workspaceId)     verification
//   close()
// `ours` is this package's store through its public API only (index.d.ts), so the harness measures
// whatever the built addon does.

const { FloorStore } = require('./floor')

/** The contenders, beside ours and the older baselines. */
const CONTENDERS = ['sqlite', 'sqlite-group', 'lmdb', 'floor']

/** Every durable write of ours: one merge that resolves once synced, the session not returned. */
const DURABLE = Object.freeze({ origin: 'bench', durable: true, returnSession: false })

class OursStore {
  constructor(store) {
    this.store = store
  }

  static async open(dir) {
    const { NarrativeSessionStore } = require('../..')
    return new OursStore(await NarrativeSessionStore.open({ dataDir: dir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 }))
  }

  /** A new session's first durable write: the whole session as an update. */
  create(session) {
    return this.store.merge(session.userId, session.workspaceId, session, DURABLE)
  }

  append(userId, workspaceId, entry) {
    return this.store.merge(userId, workspaceId, { conversationHistory: [entry] }, DURABLE)
  }

  seed(sessions) {
    return inFlight(sessions, 100, (s) => this.create(s))
  }

  list() {
    return this.store.list()
  }

  async entryCount(userId, workspaceId) {
    return (await this.store.load(userId, workspaceId)).session.conversationHistory.length
  }

  close() {
    return this.store.close()
  }
}

/** Opens system `name` on the directory `dir`; `floor` takes `{ synchronous }` (contenders/floor.js). */
async function openSystem(name, dir, { synchronous = false } = {}) {
  switch (name) {
    case 'ours':
      return OursStore.open(dir)
    case 'sqlite':
    case 'sqlite-group':
      return new (require('./sqlite').SqliteStore)(dir, { group: name === 'sqlite-group' })
    case 'lmdb':
      return new (require('./lmdb').LmdbStore)(dir)
    case 'floor':
      return new FloorStore(dir, { synchronous })
    default:
      throw new Error(`no system ${name}`)
  }
}

/**
 * Which contenders can run here: a system whose package is missing or not built (better-sqlite3
 * installed with --ignore-scripts has no binary) maps to the reason; the others to null.
 */
function availability() {
  const reasons = {}
  const check = (names, probe) => {
    let reason = null
    try {
      probe()
    } catch (err) {
      reason = String(err.message).split('\n')[0]
    }
    for (const n of names) reasons[n] = reason
  }
  check(['sqlite', 'sqlite-group'], () => new (require('better-sqlite3'))(':memory:').close())
  check(['lmdb'], () => require('lmdb'))
  reasons.floor = null
  return reasons
}

/**
 * Calls `fn` on every item with at most `limit` calls pending at once (each completion starts the
 * next), as that many clients would; resolves to the results in order.
 */
async function inFlight(items, limit, fn) {
  const results = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

module.exports = { CONTENDERS, DURABLE, openSystem, availability, inFlight }
