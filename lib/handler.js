'use strict'
// The drop-in connection handler for mia-code-server's narrative WebSocket (docs/protocol.md).
// It restores the session on connect, merges `session-update` messages, tells the user's other
// connections about every change, and saves on close. Other message types are left to the host.

const os = require('node:os')
const { normalizeWorkspaceId } = require('../index')
const { Outbox } = require('./outbox')

/** Message types this handler takes; a host's own handler can skip them. */
const SESSION_MESSAGE_TYPES = Object.freeze(['session-update'])
const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
const MAX_TRACE_ID_LENGTH = 256
const SESSION_UPDATE_TYPE = /"type"\s*:\s*"session-update"/
const TRACE_ID = new RegExp(`"traceId"\\s*:\\s*"([^"\\\\]{1,${MAX_TRACE_ID_LENGTH}})"`)
/** A message the client takes none of for this long ends the connection (docs/protocol.md). */
const DEFAULT_SLOW_READER_TIMEOUT_MS = 30000
/** Replies waiting for a client that does not read, past which its socket is no longer read. */
const MAX_WAITING_MESSAGES = 64
const CLOSE_POLICY_VIOLATION = 1008
const CLOSE_INTERNAL_ERROR = 1011
/** RFC 6455's registry: "Try Again Later". The client was too slow to read; it may reconnect. */
const CLOSE_TRY_AGAIN_LATER = 1013

let nextConnection = 0

/**
 * Serves the narrative session on one socket. Call it from the `handleUpgrade` callback.
 * Returns the connection at once; `connection.ready` settles when the session is restored.
 */
function attachNarrativeSession(ws, req, options) {
  const { store } = options || {}
  if (!store || typeof store.merge !== 'function') {
    throw new TypeError('attachNarrativeSession needs { store }: a NarrativeSessionStore')
  }
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES
  const connection = {
    id: `c${process.pid}-${++nextConnection}`,
    userId: undefined,
    workspaceId: undefined,
    ready: undefined,
  }
  const room = roomsOf(store)
  // Every incoming message waits for the restore, then for the message before it: updates apply in order.
  let queue
  let closed = false
  // Bytes of messages taken off the socket and not yet applied; see `readOnlyWhileCaughtUp`.
  let unapplied = 0
  let pausedHere = false
  // Every outgoing message waits for the client to take the one before it (lib/outbox.js). A message
  // that carries the session loads it when it goes out, so each snapshot a client receives is at
  // least as new as the one before, and a client that does not read is sent the latest state once.
  const outbox = new Outbox(ws, {
    loadSession: () => store.loadRaw(connection.userId, connection.workspaceId),
    timeoutMs: options.slowReaderTimeoutMs ?? DEFAULT_SLOW_READER_TIMEOUT_MS,
    onSlowReader: () => ws.close(CLOSE_TRY_AGAIN_LATER, 'client is not reading'),
    onBacklog: () => readOnlyWhileCaughtUp(),
  })
  const send = (type, payload, traceId) => outbox.post(type, payload, traceId)
  connection.postMerged = (origin, changes) => outbox.postMerged(origin, changes)

  // A client that sends faster than its updates are applied, or does not read the replies, is not
  // read from until it catches up: its messages wait in its own TCP buffers, not in this process.
  const readOnlyWhileCaughtUp = () => {
    const behind = unapplied > maxMessageBytes || outbox.backlog > MAX_WAITING_MESSAGES
    if (behind && !pausedHere && typeof ws.pause === 'function') {
      pausedHere = true
      ws.pause()
    } else if (!behind && pausedHere) {
      pausedHere = false
      ws.resume()
    }
  }

  connection.ready = (async () => {
    const userId = await resolveUserId(req, options)
    const workspaceId = resolveWorkspaceId(req, options)
    const { sessionJson, sessionId, created, recovered } = await store.loadRaw(userId, workspaceId)
    connection.userId = userId
    connection.workspaceId = workspaceId
    if (!closed) room.join(connection)
    outbox.postWithLoadedSession({ event: 'restored', created, recovered }, sessionJson)
    return { userId, workspaceId, sessionId }
  })()
  queue = connection.ready.catch((err) => {
    send('error', { code: err.code || 'EINTERNAL', message: err.message })
    if (err.code === 'EAUTH') ws.close(CLOSE_POLICY_VIOLATION, 'no trusted user identity')
    else ws.close(CLOSE_INTERNAL_ERROR, 'session unavailable')
  })

  const onMessage = (data, isBinary) => {
    if (isBinary) return
    const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : data.toString()
    const bytes = Buffer.byteLength(text)
    if (bytes > maxMessageBytes) {
      // Too big to parse: a linear scan says whether it is ours (and its traceId), without parsing.
      if (SESSION_UPDATE_TYPE.test(text)) {
        const traceId = TRACE_ID.exec(text)?.[1]
        send('error', { code: 'ETOOLARGE', message: `message over ${maxMessageBytes} bytes` }, traceId)
      }
      return
    }
    let message
    try {
      message = JSON.parse(text)
    } catch {
      send('error', { code: 'EINVALID', message: 'message is not JSON' })
      return
    }
    if (!isObject(message) || typeof message.type !== 'string') {
      send('error', { code: 'EINVALID', message: 'message must be an object with a string type' })
      return
    }
    if (!SESSION_MESSAGE_TYPES.includes(message.type)) return
    const traceId =
      typeof message.traceId === 'string' && message.traceId.length <= MAX_TRACE_ID_LENGTH
        ? message.traceId
        : undefined
    unapplied += bytes
    readOnlyWhileCaughtUp()
    queue = queue
      .then(() => applyUpdate(message.payload, traceId))
      .finally(() => {
        unapplied -= bytes
        readOnlyWhileCaughtUp()
      })
  }

  const applyUpdate = async (payload, traceId) => {
    if (connection.userId === undefined) return
    if (!isObject(payload)) {
      send('error', { code: 'EINVALID', message: 'session-update payload must be an object' }, traceId)
      return
    }
    try {
      const { changes } = await store.merge(connection.userId, connection.workspaceId, payload, {
        origin: connection.id,
        returnSession: false,
        // The ack tells the client its change is safe: it is on disk before the ack is sent.
        durable: true,
      })
      outbox.postWithSession({ event: 'ack', changes }, traceId)
    } catch (err) {
      send('error', { code: err.code || 'EINTERNAL', message: err.message }, traceId)
    }
  }

  // A close ends this connection, not the session: save what it changed, keep the session loaded.
  const onClose = () => {
    if (closed) return
    closed = true
    ws.off('message', onMessage)
    room.leave(connection)
    outbox.close()
    // Every change was durable before its ack, so a failed save loses nothing acknowledged: it is
    // handed to the host as the value of `saved`, which never rejects (nobody may be waiting on it).
    queue = queue
      .then(() => connection.userId !== undefined && store.save(connection.userId, connection.workspaceId))
      .catch((err) => err)
    connection.saved = queue
  }

  ws.on('message', onMessage)
  ws.on('close', onClose)
  ws.on('error', onClose)
  return connection
}

async function resolveUserId(req, options) {
  let user
  if (typeof options.resolveUser === 'function') {
    user = await options.resolveUser(req)
  } else if (options.trustedUserHeader) {
    user = req.headers[String(options.trustedUserHeader).toLowerCase()]
  } else {
    user = os.userInfo().username
  }
  if (typeof user !== 'string' || user === '') {
    const err = new Error('no user identity: the trusted header or resolveUser gave none')
    err.code = 'EAUTH'
    throw err
  }
  return user
}

function resolveWorkspaceId(req, options) {
  if (typeof options.resolveWorkspace === 'function') {
    return normalizeWorkspaceId(String(options.resolveWorkspace(req) ?? ''))
  }
  const params = new URL(req.url || '/', 'http://localhost').searchParams
  return normalizeWorkspaceId(params.get('workspace') ?? params.get('folder') ?? '')
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

// Connections by (user, workspace), per store, so a merge reaches the right sockets of this process.
const roomsByStore = new WeakMap()

function roomsOf(store) {
  let rooms = roomsByStore.get(store)
  if (!rooms) {
    rooms = new Rooms(store)
    roomsByStore.set(store, rooms)
  }
  return rooms
}

class Rooms {
  constructor(store) {
    this.store = store
    this.members = new Map()
    store.onMerge((event) => this.broadcast(event))
  }

  join(connection) {
    const key = roomKey(connection.userId, connection.workspaceId)
    if (!this.members.has(key)) this.members.set(key, new Set())
    this.members.get(key).add(connection)
  }

  leave(connection) {
    const key = roomKey(connection.userId, connection.workspaceId)
    const members = this.members.get(key)
    if (!members) return
    members.delete(connection)
    if (members.size === 0) this.members.delete(key)
  }

  broadcast(event) {
    const members = this.members.get(roomKey(event.userId, event.workspaceId))
    for (const connection of members || []) {
      if (connection.id === event.origin) continue
      connection.postMerged(event.origin, event.changes)
    }
  }
}

function roomKey(userId, workspaceId) {
  return `${userId}\u0000${workspaceId}`
}

module.exports = { attachNarrativeSession, SESSION_MESSAGE_TYPES }
