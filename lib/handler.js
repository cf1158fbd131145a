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
const CLOSE_INTERNAL_ERROR = 1011
// A refused connection's close codes, as HTTP's 401 and 403, in the range RFC 6455 leaves to
// applications (graphql-ws uses the same two).
const CLOSE_UNAUTHENTICATED = 4401
const CLOSE_FORBIDDEN_ORIGIN = 4403
const REFUSALS = new Map([
  ['EAUTH', { code: CLOSE_UNAUTHENTICATED, reason: 'not authenticated' }],
  ['EORIGIN', { code: CLOSE_FORBIDDEN_ORIGIN, reason: 'origin not allowed' }],
])
/** A message the client takes none of for this long ends the connection (docs/protocol.md). */
const DEFAULT_SLOW_READER_TIMEOUT_MS = 30000
/** Replies waiting for a client that does not read, past which its socket is no longer read. */
const MAX_WAITING_MESSAGES = 64
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
  const allowedOrigins = parseAllowedOrigins(options.allowedOrigins)
  const connection = {
    id: `c${process.pid}-${++nextConnection}`,
    userId: undefined,
    workspaceId: undefined,
    ready: undefined,
  }
  const room = roomsOf(store)
  // The origin check, the host's `authenticate` and the user come first: until they pass, nothing is
  // sent, restored or merged. A refused socket is closed (4403 or 4401) before anything queued runs.
  const admission = admit(req, options, allowedOrigins)
  admission.catch((err) => {
    const refusal = REFUSALS.get(err.code)
    if (refusal) ws.close(refusal.code, refusal.reason)
  })
  // Every incoming message waits for the restore, then for the message before it: updates apply in order.
  let queue
  let closed = false
  // Bytes of messages taken off the socket and not yet applied; see `readOnlyWhileCaughtUp`.
  let unapplied = 0
  let pausedHere = false
  // Every outgoing message waits for the admission, then for the client to take the one before it
  // (lib/outbox.js). A message that carries the session loads it when it goes out, so each snapshot
  // a client receives is at least as new as the one before, and a client that does not read is sent
  // the latest state once.
  const outbox = new Outbox(ws, {
    after: admission,
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
    const userId = await admission
    const workspaceId = resolveWorkspaceId(req, options)
    const { sessionJson, sessionId, created, recovered } = await store.loadRaw(userId, workspaceId)
    connection.userId = userId
    connection.workspaceId = workspaceId
    if (!closed) room.join(connection)
    outbox.postWithLoadedSession({ event: 'restored', created, recovered }, sessionJson)
    return { userId, workspaceId, sessionId }
  })()
  queue = connection.ready.catch((err) => {
    if (REFUSALS.has(err?.code)) return // closed by the admission, with nothing sent
    send('error', { code: err?.code || 'EINTERNAL', message: err?.message })
    ws.close(CLOSE_INTERNAL_ERROR, 'session unavailable')
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
      const { changes, lost } = await store.merge(connection.userId, connection.workspaceId, payload, {
        origin: connection.id,
        returnSession: false,
        // The ack tells the client its change is safe: it is on disk before the ack is sent.
        durable: true,
      })
      outbox.postWithSession({ event: 'ack', changes, lost }, traceId)
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

/**
 * Resolves to the connection's user once the Origin is allowed, the host's `authenticate(req)` has
 * passed and a user is known; rejects with `EORIGIN` or `EAUTH` otherwise, whatever went wrong
 * (it fails closed: any other error is an `EAUTH` with that error as `cause`).
 */
async function admit(req, options, allowedOrigins) {
  try {
    return await checkAdmission(req, options, allowedOrigins)
  } catch (err) {
    throw REFUSALS.has(err?.code) ? err : codedError('EAUTH', 'the connection could not be authenticated', err)
  }
}

async function checkAdmission(req, options, allowedOrigins) {
  if (!originAllowed(req, allowedOrigins)) {
    throw codedError('EORIGIN', `origin ${JSON.stringify(firstHeader(req, 'origin'))} is not allowed`)
  }
  // A hook that throws refuses the connection too; the error is `cause` of the rejected `ready`.
  if (typeof options.authenticate === 'function') {
    let authenticated
    try {
      authenticated = await options.authenticate(req)
    } catch (cause) {
      throw codedError('EAUTH', 'authenticate(req) failed', cause)
    }
    if (authenticated !== true) throw codedError('EAUTH', 'authenticate(req) refused the connection')
  }
  return resolveUserId(req, options)
}

/**
 * Whether a browser page may open this socket (cross-site WebSocket hijacking: browsers always send
 * the page's Origin and let no page change it). As code-server's `ensureOrigin`: no Origin (not a
 * browser) passes; otherwise its host must be the request's host (`Forwarded: host=`, then
 * `X-Forwarded-Host`, then `Host`), or the Origin one of `allowedOrigins`.
 */
function originAllowed(req, allowedOrigins) {
  const raw = firstHeader(req, 'origin')
  if (raw === undefined) return true
  if (allowedOrigins === ANY_ORIGIN) return true
  let origin
  try {
    origin = new URL(raw)
  } catch {
    return false // `null` (a sandboxed frame, a file) or garbage
  }
  if (allowedOrigins.has(origin.origin)) return true
  const host = requestHost(req)
  return host !== undefined && origin.host.toLowerCase() === host
}

function requestHost(req) {
  const forwarded = firstHeader(req, 'forwarded')
  if (forwarded) {
    // The first hop's `host=` parameter: `for=1.2.3.4;host=ide.example.com, for=…`.
    const first = forwarded.split(',')[0]
    for (const part of first.split(';')) {
      const [key, value] = part.split('=')
      if (key && value && key.trim().toLowerCase() === 'host') return value.trim().replace(/^"|"$/g, '').toLowerCase()
    }
  }
  const host = firstHeader(req, 'x-forwarded-host') || firstHeader(req, 'host')
  return host ? host.split(',')[0].trim().toLowerCase() : undefined
}

function firstHeader(req, name) {
  const value = req.headers[name]
  return Array.isArray(value) ? value[0] : value
}

const ANY_ORIGIN = Symbol('any origin')

/** `allowedOrigins` as a Set of `URL.origin`s, or ANY_ORIGIN for `['*']`. Throws EINVALID on a bad entry. */
function parseAllowedOrigins(allowedOrigins) {
  if (allowedOrigins === undefined) return new Set()
  if (!Array.isArray(allowedOrigins)) {
    throw codedError('EINVALID', 'allowedOrigins must be an array of origins such as "https://ide.example.com", or ["*"]', undefined, TypeError)
  }
  if (allowedOrigins.includes('*')) return ANY_ORIGIN
  const origins = new Set()
  for (const entry of allowedOrigins) {
    let url
    try {
      url = new URL(entry)
    } catch {
      url = undefined
    }
    if (!url || url.origin === 'null' || url.href.replace(/\/$/, '') !== url.origin) {
      throw codedError('EINVALID', `allowedOrigins: ${JSON.stringify(entry)} is not an origin such as "https://ide.example.com"`, undefined, TypeError)
    }
    origins.add(url.origin)
  }
  return origins
}

function codedError(code, message, cause, Type = Error) {
  const err = new Type(message, cause === undefined ? undefined : { cause })
  err.code = code
  return err
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
    throw codedError('EAUTH', 'no user identity: the trusted header or resolveUser gave none')
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
