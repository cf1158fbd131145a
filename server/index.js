'use strict'
// The reference server: serves the narrative web client and the narrative session WebSocket.
//
//   npm start -- [--data-dir <dir>] [--trusted-user-header <name>] [--host <addr>] [--redis <url>]
//   (or node server/index.js ...; `npm start -- --help` lists every flag and environment variable)
//
// HTTP GET / serves server/public/ (a fixed whitelist of files); the WebSocket at /api/ws/narrative
// is handled by lib/handler.js (docs/protocol.md). Every other upgrade is refused.

const http = require('node:http')
const fs = require('node:fs')
const path = require('node:path')
const { WebSocketServer } = require('ws')
const { NarrativeSessionStore, defaultDataDir } = require('..')
const { attachNarrativeSession } = require('../lib/handler')

const WS_PATH = '/api/ws/narrative'
const PUBLIC_DIR = path.join(__dirname, 'public')

// URL path -> [file in server/public, content type]. Nothing else is ever read from disk.
const STATIC_FILES = new Map([
  ['/', ['index.html', 'text/html; charset=utf-8']],
  ['/index.html', ['index.html', 'text/html; charset=utf-8']],
  ['/app.js', ['app.js', 'text/javascript; charset=utf-8']],
  ['/style.css', ['style.css', 'text/css; charset=utf-8']],
  ['/favicon.svg', ['favicon.svg', 'image/svg+xml']],
])

const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}

function sendText(res, status, text, extra = {}) {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    ...SECURITY_HEADERS,
    ...extra,
  })
  res.end(text)
}

function sameOrigin(req) {
  const origin = req.headers.origin
  if (origin === undefined) return true
  try {
    return new URL(origin).host === String(req.headers.host || '').toLowerCase()
  } catch {
    return false
  }
}

function serveStatic(req, res) {
  let pathname
  try {
    pathname = new URL(req.url || '/', 'http://localhost').pathname
  } catch {
    return sendText(res, 400, 'Bad Request\n')
  }
  const entry = STATIC_FILES.get(pathname)
  if (!entry) return sendText(res, 404, 'Not Found\n')
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return sendText(res, 405, 'Method Not Allowed\n', { Allow: 'GET, HEAD' })
  }
  const [file, type] = entry
  fs.readFile(path.join(PUBLIC_DIR, file), (err, body) => {
    if (err) return sendText(res, err.code === 'ENOENT' ? 404 : 500, err.code === 'ENOENT' ? 'Not Found\n' : 'Internal Server Error\n')
    res.writeHead(200, {
      'Content-Type': type,
      'Content-Length': body.length,
      'Cache-Control': 'no-cache',
      ...SECURITY_HEADERS,
    })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
}

/**
 * Starts the server. `port` 0 picks a free port.
 * @returns {Promise<{ server: http.Server, store: NarrativeSessionStore, wss: WebSocketServer, url: string, port: number, close(): Promise<void> }>}
 */
async function createServer(options = {}) {
  const { dataDir, port = 8787, host = '127.0.0.1', trustedUserHeader, autosaveIntervalMs, redisUrl } = options
  const openOptions = {}
  if (dataDir !== undefined) openOptions.dataDir = dataDir
  if (redisUrl) Object.assign(openOptions, { backend: 'redis', redisUrl })
  if (autosaveIntervalMs !== undefined) openOptions.autosaveIntervalMs = autosaveIntervalMs
  const store = await NarrativeSessionStore.open(openOptions)

  const wss = new WebSocketServer({ noServer: true, maxPayload: 2 * 1024 * 1024 })
  const pendingSaves = new Set()
  let closing // the close() promise, once close() was called
  const server = http.createServer(serveStatic)
  const rawSockets = new Set()
  server.on('connection', (socket) => {
    rawSockets.add(socket)
    socket.on('close', () => rawSockets.delete(socket))
  })

  server.on('upgrade', (req, socket, head) => {
    let pathname
    try {
      pathname = new URL(req.url || '/', 'http://localhost').pathname
    } catch {
      pathname = ''
    }
    if (pathname !== WS_PATH || closing) {
      socket.destroy()
      return
    }
    // A page on another site must not read or write the session (cross-site WebSocket hijacking):
    // browsers always send Origin, and it must name this server. Non-browser clients send none.
    if (!sameOrigin(req)) {
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const connection = attachNarrativeSession(ws, req, { store, trustedUserHeader })
      connection.ready.catch(() => {}) // the handler already reported it on the socket
      // The handler sets `saved` on close; keep it until it settles so close() can wait for it.
      ws.on('close', () => {
        const saved = Promise.resolve(connection.saved).catch(() => {})
        pendingSaves.add(saved)
        saved.finally(() => pendingSaves.delete(saved))
      })
    })
  })

  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\n\r\n')
    else socket.destroy()
  })

  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
  const actualPort = server.address().port
  const urlHost = host.includes(':') ? `[${host}]` : host
  const url = `http://${urlHost}:${actualPort}/`

  const close = () => {
    if (!closing) {
      closing = (async () => {
        const serverClosed = new Promise((resolve) => server.close(() => resolve()))
        // Close every socket; those that do not answer the close handshake in time are cut off.
        const clients = [...wss.clients]
        await Promise.all(
          clients.map(
            (ws) =>
              new Promise((resolve) => {
                if (ws.readyState === ws.CLOSED) return resolve()
                const timer = setTimeout(() => ws.terminate(), 1000)
                ws.once('close', () => {
                  clearTimeout(timer)
                  resolve()
                })
                ws.close(1001, 'server shutting down')
              }),
          ),
        )
        if (typeof server.closeAllConnections === 'function') server.closeAllConnections()
        for (const s of rawSockets) s.destroy()
        await serverClosed
        // Let every handler finish its save-on-close before the store closes.
        await Promise.allSettled([...pendingSaves])
        await new Promise((resolve) => wss.close(() => resolve()))
        await store.close()
      })()
    }
    return closing
  }

  return { server, store, wss, url, port: actualPort, close }
}

const USAGE = `usage: npm start -- [options]   (or: node server/index.js [options])

Serves the narrative web client at http://<host>:<PORT>/ and the narrative session WebSocket at
${WS_PATH}.

options:
  --data-dir <dir>               where sessions are stored (default: ~/.local/share/mia-code-server/sessions,
                                 under $XDG_DATA_HOME when set); created 0700 if missing
  --trusted-user-header <name>   take each connection's user from this request header (such as
                                 x-forwarded-user); only behind an auth proxy that sets it and strips it
                                 from client requests. Without it the user is the OS account running the server
  --host <addr>                  the address to listen on (default: 127.0.0.1)
  --redis <url>                  store sessions in Redis (redis:// or rediss://) instead of --data-dir
  -h, --help                     this text

environment:
  PORT                           the port to listen on (default: 8787; 0 picks a free one)
  MIA_SESSION_REDIS_URL          as --redis, when --redis is not given
  XDG_DATA_HOME                  moves the default --data-dir to $XDG_DATA_HOME/mia-code-server/sessions`

/** A command-line mistake: reported as one line and exit code 2. */
class UsageError extends Error {}

/** A failure to start that the operator can fix: reported as one line and exit code 1. */
class StartError extends Error {}

function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const eq = arg.indexOf('=')
    const name = eq === -1 ? arg : arg.slice(0, eq)
    const inline = eq === -1 ? undefined : arg.slice(eq + 1)
    const value = () => {
      if (inline !== undefined) return inline
      const v = argv[++i]
      if (v === undefined) throw new UsageError(`${name} needs a value`)
      return v
    }
    switch (name) {
      case '--data-dir':
        out.dataDir = path.resolve(value())
        break
      case '--trusted-user-header':
        out.trustedUserHeader = value()
        break
      case '--host':
        out.host = value()
        break
      case '--redis':
        out.redisUrl = value()
        break
      case '-h':
      case '--help':
        out.help = true
        break
      default:
        throw new UsageError(`unknown argument: ${arg}${npmAteFlag(arg)}`)
    }
  }
  return out
}

/**
 * `npm start --data-dir DIR` gives npm the flag (it sets npm_config_data_dir=true) and this server
 * only DIR. When that is what happened, says how to pass the flag through.
 */
function npmAteFlag(arg) {
  for (const flag of ['--data-dir', '--trusted-user-header', '--host', '--redis']) {
    if (process.env[`npm_config_${flag.slice(2).replace(/-/g, '_')}`] === 'true') {
      return ` (npm took ${flag} for itself: put the server's flags after --, as in npm start -- ${flag} ${arg})`
    }
  }
  return ''
}

/** A Redis URL fit to print: its password replaced by ***. */
function redactUrl(url) {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(an invalid URL)'
  }
}

/**
 * Why `dir` cannot hold the sessions, if the file system says so before the store is opened: a
 * file in its place or along its path, or a directory this user cannot write. Null when it looks fine
 * (the store reports anything else when it opens).
 */
function dataDirProblem(dir) {
  let existing = dir
  for (;;) {
    let stat
    try {
      stat = fs.statSync(existing)
    } catch (err) {
      if (!['ENOENT', 'ENOTDIR', 'EACCES'].includes(err.code) || path.dirname(existing) === existing) return null
      existing = path.dirname(existing)
      continue
    }
    if (!stat.isDirectory()) {
      return existing === dir
        ? `the data dir ${dir} is not a directory (it is a file); give --data-dir a directory`
        : `the data dir ${dir} cannot be created: ${existing} is a file, not a directory`
    }
    try {
      fs.accessSync(existing, fs.constants.W_OK | fs.constants.X_OK)
    } catch {
      const who = typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : ''
      return existing === dir
        ? `the data dir ${dir} is not writable by this user${who}; give --data-dir a directory it can write`
        : `the data dir ${dir} cannot be created: ${existing} is not writable by this user${who}`
    }
    return null
  }
}

/** Starts the server for `main`, turning each failure an operator can fix into a StartError. */
async function start(args, port, redisUrl) {
  const dataDir = args.dataDir || (redisUrl ? undefined : defaultDataDir())
  const problem = !redisUrl && dataDirProblem(dataDir)
  if (problem) throw new StartError(problem)
  const host = args.host || '127.0.0.1'
  try {
    return await createServer({ ...args, dataDir, redisUrl, port })
  } catch (err) {
    switch (err.code) {
      case 'EADDRINUSE':
        throw new StartError(`port ${port} on ${host} is in use; stop what uses it, or choose another port with PORT=<port>`)
      case 'EACCES':
        throw new StartError(`not allowed to listen on port ${port} on ${host}; choose a port above 1023 with PORT=<port>`)
      case 'EADDRNOTAVAIL':
      case 'ENOTFOUND':
        throw new StartError(`cannot listen on --host ${host}: no such address on this machine`)
      case 'EUNAVAILABLE':
        throw new StartError(`cannot reach Redis at ${redactUrl(redisUrl)}: ${err.message}`)
      case 'EIO':
      case 'EINVALID':
        throw new StartError(`cannot open the sessions in ${redisUrl ? redactUrl(redisUrl) : dataDir}: ${err.message}`)
      default:
        throw err
    }
  }
}

async function main() {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    console.error(`error: ${err.message}; see npm start -- --help`)
    process.exit(2)
  }
  if (args.help) {
    console.log(USAGE)
    return
  }
  const port = process.env.PORT !== undefined && process.env.PORT !== '' ? Number(process.env.PORT) : 8787
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`error: invalid PORT: ${process.env.PORT} (a port number, 0 to 65535)`)
    process.exit(2)
  }
  const redisUrl = args.redisUrl || process.env.MIA_SESSION_REDIS_URL || undefined
  let running
  try {
    running = await start(args, port, redisUrl)
  } catch (err) {
    if (!(err instanceof StartError)) throw err
    console.error(`error: ${err.message}`)
    process.exit(1)
  }
  console.log(`mia-narrative-session server listening on ${running.url}`)
  console.log(redisUrl ? 'sessions stored in Redis' : `sessions stored in ${running.store.dataDir}`)

  let stopping = false
  const stop = async (signal) => {
    if (stopping) return
    stopping = true
    console.log(`${signal}: saving sessions and shutting down`)
    const force = setTimeout(() => {
      console.error('shutdown timed out')
      process.exit(1)
    }, 10000)
    force.unref()
    try {
      await running.close()
      process.exit(0)
    } catch (err) {
      console.error('shutdown failed:', err)
      process.exit(1)
    }
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err && err.stack ? err.stack : err)
    process.exit(1)
  })
}

module.exports = { createServer, WS_PATH }
