'use strict'
// The benchmark's own redis-server, and a tiny raw RESP client for seeding keys and reading
// `INFO stats` (bytes sent to and from Redis) without going through either system under test.
//
//   const server = await startRedis(dir)   // null, with server.reason, when there is no redis-server
//   const c = await RespClient.connect(port)
//   await c.command('SET', 'k', 'v'); await c.pipeline([['SET', 'a', '1'], ['SET', 'b', '2']])
//   const meter = new NetMeter(c); const t0 = await meter.read(); …; await meter.since(t0)
//   await server.stop()

const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const { spawn, execFileSync } = require('node:child_process')

const HOST = '127.0.0.1'
const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server'

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg), 'utf8')
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}

class ReplyError extends Error {}

/** One RESP2 reply at `at`: { value, end }, or undefined when `buf` does not hold it all yet. */
function parseReply(buf, at = 0) {
  if (at >= buf.length) return undefined
  const lineEnd = buf.indexOf('\r\n', at)
  if (lineEnd === -1) return undefined
  const type = String.fromCharCode(buf[at])
  const line = buf.toString('utf8', at + 1, lineEnd)
  const next = lineEnd + 2
  switch (type) {
    case '+':
      return { value: line, end: next }
    case '-':
      return { value: new ReplyError(line), end: next }
    case ':':
      return { value: Number(line), end: next }
    case '$': {
      const length = Number(line)
      if (length < 0) return { value: null, end: next }
      if (buf.length < next + length + 2) return undefined
      return { value: buf.subarray(next, next + length), end: next + length + 2 }
    }
    case '*': {
      const count = Number(line)
      if (count < 0) return { value: null, end: next }
      const items = []
      let pos = next
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, pos)
        if (!item) return undefined
        items.push(item.value)
        pos = item.end
      }
      return { value: items, end: pos }
    }
    default:
      throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
  }
}

/** A RESP connection: commands are answered in order; each reply also reports its size in bytes. */
class RespClient {
  static connect(port, host = HOST) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host)
      socket.once('error', reject)
      socket.once('connect', () => {
        socket.off('error', reject)
        resolve(new RespClient(socket))
      })
    })
  }

  constructor(socket) {
    this.socket = socket
    this.buf = Buffer.alloc(0)
    this.waiting = []
    socket.setNoDelay(true)
    socket.on('data', (chunk) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk
      let reply
      while (this.waiting.length && (reply = parseReply(this.buf))) {
        this.buf = this.buf.subarray(reply.end)
        this.waiting.shift()({ value: reply.value, bytes: reply.end })
      }
    })
    const fail = (err) => {
      for (const w of this.waiting.splice(0)) w({ error: err || new Error('connection closed') })
    }
    socket.on('error', fail)
    socket.on('close', () => fail())
  }

  /** Sends one command; resolves to { value, bytes } (bytes: the reply's size on the wire). */
  send(args) {
    return new Promise((resolve, reject) => {
      this.waiting.push((r) => (r.error ? reject(r.error) : resolve(r)))
      this.socket.write(encodeCommand(args))
    })
  }

  async command(...args) {
    const { value } = await this.send(args)
    if (value instanceof ReplyError) throw value
    return value
  }

  /** Many commands in one write; resolves when every reply has arrived. */
  async pipeline(commands) {
    const replies = commands.map(
      () => new Promise((resolve, reject) => this.waiting.push((r) => (r.error ? reject(r.error) : resolve(r.value)))),
    )
    this.socket.write(Buffer.concat(commands.map(encodeCommand)))
    const values = await Promise.all(replies)
    const bad = values.find((v) => v instanceof ReplyError)
    if (bad) throw bad
    return values
  }

  close() {
    this.socket.end()
  }
}

/**
 * Bytes Redis received (`total_net_input_bytes`) and sent (`total_net_output_bytes`), all clients.
 * The meter's own INFO calls are taken out: the server counts a command's bytes before it runs it
 * (so the second INFO's request is in the second reading) and a reply's once it is written (so the
 * first INFO's reply is in the second reading).
 */
class NetMeter {
  constructor(client) {
    this.client = client
    this.request = encodeCommand(['INFO', 'stats']).length
  }

  async read() {
    const { value, bytes } = await this.client.send(['INFO', 'stats'])
    const text = value.toString()
    const field = (name) => Number((text.match(new RegExp(`^${name}:(\\d+)`, 'm')) || [])[1])
    return { in: field('total_net_input_bytes'), out: field('total_net_output_bytes'), replyBytes: bytes }
  }

  async since(before) {
    const now = await this.read()
    return { in: now.in - before.in - this.request, out: now.out - before.out - before.replyBytes }
  }
}

function redisVersion() {
  try {
    const text = execFileSync(REDIS_SERVER, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    return (text.match(/v=(\S+)/) || [])[1] || text.trim()
  } catch {
    return null
  }
}

/**
 * Starts redis-server on a free port with persistence off, its working directory in `dir`.
 * Resolves to { port, url, version, stop() }, or to { missing: true, reason } when it cannot run.
 */
async function startRedis(dir) {
  if (!fs.existsSync(REDIS_SERVER)) return { missing: true, reason: `${REDIS_SERVER} not found` }
  fs.mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const child = spawn(
    REDIS_SERVER,
    ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--logfile', path.join(dir, 'redis.log')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  let exited = false
  const exit = new Promise((resolve) => child.once('exit', (code, signal) => ((exited = true), resolve(signal || code))))
  child.once('error', () => {})
  const deadline = Date.now() + 10_000
  for (;;) {
    if (exited) return { missing: true, reason: `redis-server exited: ${stderr.trim() || (await exit)}` }
    try {
      const c = await RespClient.connect(port)
      const pong = await c.command('PING')
      c.close()
      if (pong === 'PONG') break
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      return { missing: true, reason: 'redis-server did not answer within 10 s' }
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    port,
    pid: child.pid,
    url: `redis://${HOST}:${port}/0`,
    version: redisVersion(),
    async stop() {
      if (exited) return
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exit
      clearTimeout(t)
    },
  }
}

/** The port of a redis:// URL. */
const portOf = (url) => Number(new URL(url).port || 6379)

module.exports = { startRedis, RespClient, NetMeter, encodeCommand, parseReply, freePort, portOf, redisVersion, REDIS_SERVER }
