'use strict'
// What the handler sends to one socket: in order, and never more than a bounded amount held for a
// client that does not read (docs/protocol.md, "Clients that do not read").
//
// One message of the handler's is in the socket's buffer at a time: the next is written once the
// kernel has taken the last (lib/fragments.js). What comes meanwhile waits here as a small record,
// without the session. For a client that reads, that is a moment, and each message goes out as it
// would have. For a client that is behind (the socket still held unsent bytes when the message
// came), the waiting records are folded: every `merged` announcement into one, and when the socket
// takes data again they go out in order in one batch in which only the last message that carries a
// session carries it, loaded at that moment: the latest state, once, however many changes the
// client missed. A message the client takes none of for `timeoutMs` ends the connection
// (`onSlowReader`).

const { sendText, sendTextMessage } = require('./fragments')

const WS_OPEN = 1
/** Marks a record whose message carries the session, loaded when it goes out. */
const LOAD = Symbol('load the session when sending')

class Outbox {
  /**
   * @param ws the socket
   * @param loadSession resolves with `{ sessionJson }`: the session as it is now
   * @param timeoutMs how long one message may wait for the client to take any of it
   * @param onSlowReader called once when a message waited longer than that
   * @param onBacklog called when the number of waiting records may have changed
   * @param after nothing is sent before this promise settles (the connection's admission); what is
   *   posted meanwhile waits, and goes out only if the socket is still open then
   */
  constructor(ws, { loadSession, timeoutMs, onSlowReader, onBacklog, after }) {
    this.ws = ws
    this.loadSession = loadSession
    this.timeoutMs = timeoutMs
    this.onSlowReader = onSlowReader
    this.onBacklog = onBacklog
    this.records = []
    this.merged = undefined
    this.sending = false
    this.behind = false
    this.held = after !== undefined
    if (this.held) {
      const release = () => {
        this.held = false
        if (this.records.length > 0 && !this.sending) this.sendAll()
      }
      after.then(release, release)
    }
  }

  /** How many messages wait for the client to take the one before them. */
  get backlog() {
    return this.records.length
  }

  /** A message without the session (an error). */
  post(type, payload, traceId) {
    this.add({ type, payload, traceId, session: undefined })
  }

  /** A `session-event` that ends with the session as it is when it goes out (an ack). */
  postWithSession(payload, traceId) {
    this.add({ type: 'session-event', payload, traceId, session: LOAD })
  }

  /** A `session-event` with a session already loaded (`restored`): it always carries that one. */
  postWithLoadedSession(payload, sessionJson) {
    this.add({ type: 'session-event', payload, traceId: undefined, session: sessionJson })
  }

  /**
   * A `merged` announcement. For a client that is behind, later ones fold into the one that waits
   * (their changes added, the latest origin kept) and it moves to the end, so that however many
   * merges it misses, a client that does not read costs one record.
   */
  postMerged(origin, changes) {
    this.noteBehind()
    let record = this.merged
    if (record && this.behind) {
      this.records.splice(this.records.indexOf(record), 1)
      record.payload.origin = origin
    } else {
      record = { type: 'session-event', payload: { event: 'merged', origin }, changed: new Set(), session: LOAD }
      this.merged = record
    }
    for (const change of changes) record.changed.add(change)
    record.payload.changes = [...record.changed]
    this.add(record)
  }

  /** The socket is gone: what waits is dropped (a closed socket takes nothing more anyway). */
  close() {
    this.records = []
    this.merged = undefined
  }

  /** A message that comes while the socket still holds unsent bytes finds the client behind. */
  noteBehind() {
    if (this.sending && this.ws.bufferedAmount > 0) this.behind = true
  }

  add(record) {
    // A socket that is closing takes nothing more; without this, what a closing socket is sent
    // would wait here until it is gone.
    if (this.ws.readyState !== WS_OPEN) return
    this.noteBehind()
    this.records.push(record)
    this.onBacklog()
    if (!this.sending && !this.held) this.sendAll()
  }

  // Writes what waits, batch after batch, each once the socket took the one before. The first write
  // happens before the first `await`, so a message posted just before `ws.close()` is written first.
  async sendAll() {
    this.sending = true
    try {
      while (this.records.length > 0) {
        const batch = this.records
        const folded = this.behind
        this.records = []
        this.merged = undefined
        this.behind = false
        this.onBacklog()
        // Folded: only the last record that carries the session carries it.
        const carrier = batch.map((record) => record.session).lastIndexOf(LOAD)
        for (let i = 0; i < batch.length; i++) await this.write(batch[i], !folded || i === carrier)
      }
    } catch (err) {
      // A client that took nothing for too long; any other error is the socket closing under the
      // write, and then nothing more can go out.
      if (err.code === 'ESLOWREADER') this.onSlowReader(err)
    } finally {
      this.sending = false
    }
  }

  async write(record, carries) {
    let { type, payload, session } = record
    if (session === LOAD && carries) {
      try {
        session = (await this.loadSession()).sessionJson
      } catch (err) {
        type = 'error'
        payload = { code: err.code || 'EINTERNAL', message: err.message }
        session = undefined
      }
    }
    // (It may have closed while the session was loaded.)
    if (this.ws.readyState !== WS_OPEN) return undefined
    // JSON.stringify leaves out a traceId that is undefined.
    const { traceId } = record
    if (session === LOAD || session === undefined) {
      const message = { type, channel: 'session', payload, timestamp: new Date().toISOString(), traceId }
      return sendText(this.ws, JSON.stringify(message), this.timeoutMs)
    }
    // The session goes out as the JSON text Rust produced, never parsed here: it is written between
    // the envelope, cut open at the payload's end, and the two closing braces.
    const open = { type, channel: 'session', timestamp: new Date().toISOString(), traceId }
    const head = `${JSON.stringify(open).slice(0, -1)},"payload":${JSON.stringify(payload).slice(0, -1)},"session":`
    return sendTextMessage(this.ws, head, session, '}}', this.timeoutMs)
  }
}

module.exports = { Outbox }
