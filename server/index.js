'use strict'
// The reference server: serves the narrative web client and the narrative session WebSocket.
//
//   node server/index.js [--data-dir <dir>] [--trusted-user-header <name>] [--redis <url>]
//   (PORT env, default 8787; MIA_SESSION_REDIS_URL env as --redis)
//
// HTTP GET / serves server/public/ (a fixed whitelist of files); the WebSocket at /api/ws/narrative
// is handled by lib/handler.js (docs/protocol.md). Every other upgrade is refused.

const http = require('node:http')
const fs = require('node:fs')
const path = require('node:path')
const { WebSocketServer } = require('ws')
const { NarrativeSessionStore } = require('..')
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
      if (v === undefined) throw new Error(`${name} needs a value`)
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
        throw new Error(`unknown argument: ${arg}`)
    }
  }
  return out
}

async function main() {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    console.error(`${err.message}\nusage: node server/index.js [--data-dir <dir>] [--trusted-user-header <name>] [--host <addr>] [--redis <url>]  (PORT, MIA_SESSION_REDIS_URL env)`)
    process.exit(2)
  }
  if (args.help) {
    console.log('usage: node server/index.js [--data-dir <dir>] [--trusted-user-header <name>] [--host <addr>] [--redis <url>]  (PORT env, default 8787; MIA_SESSION_REDIS_URL)')
    return
  }
  const port = process.env.PORT !== undefined && process.env.PORT !== '' ? Number(process.env.PORT) : 8787
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`invalid PORT: ${process.env.PORT}`)
    process.exit(2)
  }
  const redisUrl = args.redisUrl || process.env.MIA_SESSION_REDIS_URL || undefined
  const running = await createServer({ ...args, redisUrl, port })
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
