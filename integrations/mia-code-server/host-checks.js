'use strict'
// The checks test-in-host.sh runs against real code-server with the patched narrative module:
// real processes (code-server's wrapper and the child that serves), real HTTP and WebSocket on
// 127.0.0.1, a real login, real files. Each check prints `ok` or `not ok`; the last line is
// "N passed, N failed".
//
//   node host-checks.js --node <node binary> --code-server <code-server>/out/node/entry.js

const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { WebSocket } = require('ws')

const argv = process.argv.slice(2)
const option = (name) => {
  const at = argv.indexOf(name)
  if (at < 0 || !argv[at + 1]) throw new Error(`usage: node host-checks.js --node <node> --code-server <entry.js>; missing ${name}`)
  return argv[at + 1]
}
const NODE = option('--node')
const ENTRY = option('--code-server')

const PASSWORD = 'correct horse battery staple'
const WORKSPACE = '/home/me/proj'
const USER = os.userInfo().username
const WAIT_MS = 15000

let passed = 0
let failed = 0
async function check(name, fn) {
  try {
    await fn()
    passed++
    console.log(`ok - ${name}`)
  } catch (err) {
    failed++
    console.log(`not ok - ${name}\n  ${String(err && err.stack ? err.stack : err).split('\n').join('\n  ')}`)
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message)
}

function assertEqual(actual, expected, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`)
}

/** Fails after WAIT_MS with `what` if `promise` has not settled. */
function within(promise, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Fresh HOME and XDG directories for one code-server; the sessions go to the default place in them. */
function makeBox() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mia-host-box-'))
  const dirs = { home: 'home', data: 'data', config: 'config', cache: 'cache' }
  for (const key of Object.keys(dirs)) {
    dirs[key] = path.join(root, dirs[key])
    fs.mkdirSync(dirs[key])
  }
  return {
    root,
    ...dirs,
    sessionsDir: path.join(dirs.data, 'mia-code-server', 'sessions'),
    env(extra = {}) {
      const env = { PATH: process.env.PATH, HOME: dirs.home, XDG_DATA_HOME: dirs.data, XDG_CONFIG_HOME: dirs.config }
      return { ...env, XDG_CACHE_HOME: dirs.cache, ...extra }
    },
  }
}

/** code-server on 127.0.0.1 (a free port it picks), its wrapper process and its serving child. */
async function startHost(box, { auth = 'password', env = {} } = {}) {
  const proc = spawn(
    NODE,
    [ENTRY, '--auth', auth, '--bind-addr', '127.0.0.1:0', '--disable-telemetry', '--disable-update-check'],
    { env: box.env({ PASSWORD, ...env }), stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let log = ''
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  const listening = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      log += chunk
      const match = /HTTP server listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(log)
      if (match) resolve(Number(match[1]))
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    exited.then(({ code, signal }) => reject(new Error(`code-server exited (${code ?? signal}) before listening:\n${log}`)))
  })
  const port = await within(listening, 'code-server to listen')
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    wrapperPid: proc.pid,
    get log() {
      return log
    },
    childPid() {
      const children = fs.readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(/\s+/)
      assert(children.length === 1 && children[0], `expected one child of the wrapper, found ${JSON.stringify(children)}`)
      return Number(children[0])
    },
    /** SIGTERM to the wrapper, which owns it (as an init system would send it); resolves on exit. */
    async stop() {
      proc.kill('SIGTERM')
      return within(exited, 'code-server to exit after SIGTERM')
    },
    kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    },
  }
}

/** Files under `dir` that process `pid` has open. */
function openFilesUnder(pid, dir) {
  const found = []
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`)
    } catch {
      continue // closed meanwhile
    }
    if (target === dir || target.startsWith(dir + path.sep)) found.push(target)
  }
  return found
}

function request(host, method, pathname, { cookie, origin, body, form } = {}) {
  return within(
    new Promise((resolve, reject) => {
      const headers = { accept: 'application/json' }
      let payload
      if (body !== undefined) {
        payload = JSON.stringify(body)
        headers['content-type'] = 'application/json'
      } else if (form !== undefined) {
        payload = new URLSearchParams(form).toString()
        headers['content-type'] = 'application/x-www-form-urlencoded'
      }
      if (payload !== undefined) headers['content-length'] = Buffer.byteLength(payload)
      if (cookie) headers.cookie = cookie
      if (origin) headers.origin = origin
      const req = http.request({ host: '127.0.0.1', port: host.port, method, path: pathname, headers }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => (text += chunk))
        res.on('end', () => {
          let json
          try {
            json = JSON.parse(text)
          } catch {
            json = undefined
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json })
        })
      })
      req.on('error', reject)
      req.end(payload)
    }),
    `${method} ${pathname}`,
  )
}

/** `?workspace=` for the REST routes, as on the socket's URL. */
const inWorkspace = (pathname) => `${pathname}?workspace=${encodeURIComponent(WORKSPACE)}`

async function login(host) {
  const res = await request(host, 'POST', '/login', { form: { password: PASSWORD } })
  assertEqual(res.status, 302, 'POST /login status')
  const cookie = (res.headers['set-cookie'] || []).map((c) => c.split(';')[0]).find((c) => c.startsWith('code-server-session'))
  assert(cookie, `no session cookie in ${JSON.stringify(res.headers['set-cookie'])}`)
  return cookie
}

/** A socket on /api/ws/narrative that keeps every message (parsed) and every raw text. */
class Client {
  constructor(host, { cookie, origin, label }) {
    const headers = {}
    if (cookie) headers.cookie = cookie
    if (origin) headers.origin = origin
    this.label = label
    this.messages = []
    this.raw = []
    this.cursor = 0
    this.waiters = new Set()
    this.ws = new WebSocket(`ws://127.0.0.1:${host.port}/api/ws/narrative?workspace=${encodeURIComponent(WORKSPACE)}`, {
      headers,
    })
    this.ws.on('error', () => {})
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('unexpected-response', (_req, res) => {
        const refused = new Error(`${label}: upgrade answered HTTP ${res.statusCode}`)
        refused.status = res.statusCode
        reject(refused)
      })
      this.ws.once('error', reject)
    })
    this.opened.catch(() => {})
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() }
        resolve(this.closeInfo)
        this.wake()
      })
    })
    this.ws.on('message', (data) => {
      const text = data.toString()
      this.raw.push(text)
      let message
      try {
        message = JSON.parse(text)
      } catch {
        message = { unparsable: text }
      }
      this.messages.push(message)
      this.wake()
    })
  }

  /** The first message at or after index `from` that matches `predicate`; does not move `next`'s place. */
  find(predicate, what, from) {
    return within(
      new Promise((resolve, reject) => {
        const waiter = () => {
          const found = this.messages.slice(from).find(predicate)
          if (found || this.closeInfo) this.waiters.delete(waiter)
          if (found) resolve(found)
          else if (this.closeInfo) reject(new Error(`${this.label}: closed (${this.closeInfo.code}) while waiting for ${what}`))
        }
        this.waiters.add(waiter)
        waiter()
      }),
      `${this.label}: ${what}`,
    )
  }

  /** The first message not yet taken that matches `predicate`. */
  next(predicate, what) {
    return within(
      new Promise((resolve, reject) => {
        const waiter = () => {
          for (let i = this.cursor; i < this.messages.length; i++) {
            if (predicate(this.messages[i])) {
              this.cursor = i + 1
              this.waiters.delete(waiter)
              resolve(this.messages[i])
              return
            }
          }
          if (this.closeInfo) {
            this.waiters.delete(waiter)
            reject(new Error(`${this.label}: closed (${this.closeInfo.code}) while waiting for ${what}`))
          }
        }
        this.waiters.add(waiter)
        waiter()
      }),
      `${this.label}: ${what}`,
    )
  }

  event(event, extra = () => true) {
    return this.next((m) => m.type === 'session-event' && m.payload && m.payload.event === event && extra(m), `a '${event}' session-event`)
  }

  async restored() {
    await this.opened
    const first = await this.next(() => true, 'the first message')
    assert(first.type === 'session-event' && first.payload.event === 'restored', `${this.label}: first message is not 'restored': ${JSON.stringify(first)}`)
    return first.payload
  }

  send(message) {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message))
  }

  async update(payload, traceId) {
    this.send({ type: 'session-update', traceId, payload, timestamp: new Date().toISOString() })
    const reply = await this.next((m) => m.traceId === traceId, `the reply to ${traceId}`)
    assert(reply.type === 'session-event' && reply.payload.event === 'ack', `${traceId} not acked: ${JSON.stringify(reply)}`)
    return reply.payload
  }

  wake() {
    for (const waiter of [...this.waiters]) waiter()
  }

  close() {
    this.ws.close()
    return within(this.closed, `${this.label} to close`)
  }
}

/** Connects and expects the upgrade to be refused with HTTP `status`. */
async function expectRefused(host, options, status) {
  const client = new Client(host, options)
  let err
  try {
    await client.opened
  } catch (e) {
    err = e
  }
  assert(err && err.status === status, `${options.label}: expected HTTP ${status}, got ${err ? err.message : 'HTTP 101, an open socket'}`)
}

const memoryKey = (session) => `narrativeSession:${session.id}`

async function main() {
  console.log(`# code-server ${ENTRY} on ${NODE} (${spawnSync(NODE, ['--version']).stdout.toString().trim()})`)
  const boxes = []
  const hosts = []
  const box = makeBox()
  boxes.push(box)
  try {
    await check('`code-server --version` opens nothing: no sessions directory', async () => {
      const run = spawnSync(NODE, [ENTRY, '--version'], { env: box.env(), encoding: 'utf8', timeout: WAIT_MS })
      assertEqual(run.status, 0, '--version exit status')
      assert(/^4\.139\.\d+ /m.test(run.stdout), `--version printed ${JSON.stringify(run.stdout)}`)
      assert(!fs.existsSync(path.dirname(box.sessionsDir)), `${path.dirname(box.sessionsDir)} exists after --version`)
    })

    const host = await startHost(box)
    hosts.push(host)
    let cookie
    let a
    let b
    let developmentSession
    let beat
    let chart

    await check('started with --auth password, neither process has opened the store', async () => {
      assert(!fs.existsSync(box.sessionsDir), 'the sessions directory exists before any narrative request')
    })

    await check('refused without a cookie: the socket with HTTP 401, the REST routes with 401; nothing created', async () => {
      await expectRefused(host, { origin: host.origin, label: 'no cookie' }, 401)
      const rest = await request(host, 'GET', inWorkspace('/api/narrative/beats'))
      assertEqual(rest.status, 401, 'GET /api/narrative/beats without a cookie')
      const post = await request(host, 'POST', inWorkspace('/api/narrative/beats'), { body: { description: 'planted' } })
      assertEqual(post.status, 401, 'POST /api/narrative/beats without a cookie')
      assert(!fs.existsSync(box.sessionsDir), 'the sessions directory exists after refused requests')
    })

    cookie = await login(host)

    await check('refused from a foreign Origin even with the cookie: the socket with HTTP 403, a REST write with 403', async () => {
      await expectRefused(host, { cookie, origin: 'http://evil.example', label: 'evil.example' }, 403)
      const post = await request(host, 'POST', inWorkspace('/api/narrative/beats'), {
        cookie,
        origin: 'http://evil.example',
        body: { description: 'planted' },
      })
      assertEqual(post.status, 403, 'POST from http://evil.example')
    })

    await check('restore on connect: the first message is the whole session, created on first access', async () => {
      a = new Client(host, { cookie, origin: host.origin, label: 'tab A' })
      const restored = await a.restored()
      assertEqual([restored.created, restored.session.userId, restored.session.workspaceId], [true, USER, WORKSPACE], 'created, user, workspace')
    })

    await check("the serving child holds the store's files; the wrapper process holds none", async () => {
      assert(openFilesUnder(host.childPid(), box.sessionsDir).length > 0, 'the child has nothing open in the sessions directory')
      assertEqual(openFilesUnder(host.wrapperPid, box.sessionsDir), [], 'files the wrapper has open there')
    })

    await check("the fork's own messages work beside it: auth, subscribe, unsubscribe", async () => {
      a.send({ type: 'auth', token: 'anything' })
      await a.next((m) => m.type === 'auth' && m.status === 'ok', 'auth ok')
      a.send({ type: 'subscribe', channel: 'stc:*' })
      await a.next((m) => m.type === 'subscribed' && m.channel === 'stc:*', 'subscribed')
      a.send({ type: 'unsubscribe', channel: 'stc:*' })
      await a.next((m) => m.type === 'unsubscribed' && m.channel === 'stc:*', 'unsubscribed')
    })

    await check("invalid JSON gets one error, in the session handler's envelope", async () => {
      const from = a.messages.length
      a.send('this is not JSON')
      a.send({ type: 'subscribe', channel: 'after-1' })
      await a.next((m) => m.type === 'error' && m.payload && m.payload.code === 'EINVALID', 'the EINVALID error')
      a.send({ type: 'subscribe', channel: 'after-2' })
      await a.next((m) => m.type === 'subscribed' && m.channel === 'after-2', 'the second subscribe')
      const errors = a.messages.slice(from).filter((m) => m.type === 'error')
      assertEqual(errors.map((m) => [m.channel, m.payload.code]), [['session', 'EINVALID']], 'error replies')
      a.send({ type: 'unsubscribe', channel: 'after-1' })
      a.send({ type: 'unsubscribe', channel: 'after-2' })
      await a.next((m) => m.type === 'unsubscribed' && m.channel === 'after-2', 'unsubscribed')
    })

    await check('ack: a session-update is acked with its changes, once durable', async () => {
      const ack = await a.update({ universeFocus: 'story', memory: { lastFile: 'src/app.ts' } }, 'u-1')
      assertEqual(ack.changes.slice().sort(), ['memory.lastFile', 'universeFocus'], 'changes')
      assertEqual(ack.session.memory, { lastFile: 'src/app.ts' }, 'acked session memory')
    })

    await check('merge to a second client: another tab restores the change and hears the next one', async () => {
      b = new Client(host, { cookie, origin: host.origin, label: 'tab B' })
      const restored = await b.restored()
      assertEqual(restored.session.memory, { lastFile: 'src/app.ts' }, "tab B's restored memory")
      await a.update({ memory: { fromA: 1 } }, 'u-2')
      const merged = await b.event('merged')
      assertEqual(merged.payload.changes, ['memory.fromA'], 'merged changes')
      assertEqual(merged.payload.session.memory.fromA, 1, 'merged session')
    })

    await check('POST /api/sessions lands in the session (memory) and reaches the open sockets as a merge', async () => {
      const res = await request(host, 'POST', inWorkspace('/api/sessions'), { cookie, body: { intent: 'ship v1' } })
      assertEqual(res.status, 201, 'status')
      developmentSession = res.json
      const merged = await b.event('merged', (m) => m.payload.changes.includes(`memory.${memoryKey(developmentSession)}`))
      assertEqual(merged.payload.session.memory[memoryKey(developmentSession)].intent, 'ship v1', 'in the session')
    })

    await check('POST /api/narrative/beats lands in storyBeats, reaches the sockets, and the event bus still forwards beat.created', async () => {
      const from = b.messages.length
      const res = await request(host, 'POST', inWorkspace('/api/narrative/beats'), {
        cookie,
        body: { description: 'First deploy', type: 'deploy', sessionId: developmentSession.id },
      })
      assertEqual(res.status, 201, 'status')
      beat = res.json
      const merged = await b.event('merged', (m) => m.payload.changes.includes(`storyBeats.${beat.id}`))
      const stored = merged.payload.session.storyBeats.find((x) => x.id === beat.id)
      assertEqual([stored.description, stored.type, stored.sessionId], ['First deploy', 'deploy', developmentSession.id], 'stored beat')
      assertEqual(merged.payload.session.memory[memoryKey(developmentSession)].beatCount, 1, "the development session's beatCount")
      const event = await b.find((m) => m.type === 'beat.created', 'the bus event beat.created', from)
      assertEqual(event.payload.id, beat.id, 'bus event payload')
    })

    await check('replay sends the event bus history', async () => {
      a.send({ type: 'replay' })
      await a.next((m) => m.type === 'beat.created' && m.payload.id === beat.id, 'beat.created replayed')
    })

    await check('POST /api/stc/charts, then an action added and completed through /api/narrative/charts, land in activeCharts', async () => {
      const res = await request(host, 'POST', inWorkspace('/api/stc/charts'), {
        cookie,
        body: { desiredOutcome: 'v1 in the hands of users', currentReality: 'a prototype', actions: [{ title: 'write the tests' }] },
      })
      assertEqual(res.status, 201, 'create status')
      chart = res.json
      await b.event('merged', (m) => m.payload.changes.some((c) => c.startsWith(`activeCharts.${chart.id}`)))
      const added = await request(host, 'POST', inWorkspace(`/api/narrative/charts/${chart.id}/actions`), { cookie, body: { title: 'deploy' } })
      assertEqual(added.status, 201, 'add action status')
      const done = await request(host, 'PATCH', inWorkspace(`/api/narrative/charts/${chart.id}/actions/${added.json.id}`), { cookie })
      assertEqual([done.status, done.json.completed], [200, true], 'complete action')
      const storedChart = (m) => m.payload.session.activeCharts.find((c) => c.id === chart.id)
      const merged = await b.event('merged', (m) => m.payload.changes.includes(`activeCharts.${chart.id}.actions.${added.json.id}.completed`) && storedChart(m).actions.some((x) => x.completed))
      const stored = storedChart(merged)
      assertEqual(stored.actions.map((x) => [x.title, x.completed]), [['write the tests', false], ['deploy', true]], 'stored actions')
    })

    await check('PATCH /api/sessions/:id/phase lands in the session', async () => {
      const res = await request(host, 'PATCH', inWorkspace(`/api/sessions/${developmentSession.id}/phase`), { cookie, body: { phase: 'assimilation' } })
      assertEqual(res.status, 200, 'status')
      const merged = await b.event('merged', (m) => m.payload.session.memory[memoryKey(developmentSession)].phase === 'assimilation')
      assert(merged, 'no merge with the new phase')
    })

    await check('a REST change the session refuses is a 400 with its code, and is not served afterwards', async () => {
      const res = await request(host, 'POST', inWorkspace('/api/stc/charts'), {
        cookie,
        body: { desiredOutcome: 'd', currentReality: 'r', actions: [{ title: 5 }] },
      })
      assertEqual([res.status, res.json && res.json.code], [400, 'EINVALID'], 'status and code')
      const charts = await request(host, 'GET', inWorkspace('/api/stc/charts'), { cookie })
      assertEqual(charts.json.map((c) => c.id), [chart.id], 'charts served')
    })

    await check("SIGTERM: the serving child closes the store through code-server's dispose (every journal folded into its snapshot), the wrapper exits 0", async () => {
      // With no socket open, code-server's own dispose is quick: the process would exit before the
      // store is closed unless that is awaited.
      await Promise.all([a.close(), b.close()])
      const { code, signal } = await host.stop()
      assertEqual([code, signal], [0, null], 'exit')
      const journals = fs.readdirSync(box.sessionsDir).filter((f) => f.endsWith('.journal'))
      assertEqual(journals, [], 'journals left beside the snapshots')
      assert(!/cannot write every session/.test(host.log), `shutdown logged a failed flush:\n${host.log}`)
    })

    const again = await startHost(box)
    hosts.push(again)

    await check('restart and restore: the socket restores what the socket and the REST routes made', async () => {
      const againCookie = await login(again)
      const c = new Client(again, { cookie: againCookie, origin: again.origin, label: 'after restart' })
      const { created, session } = await c.restored()
      assertEqual(created, false, 'created')
      assertEqual([session.universeFocus, session.memory.lastFile, session.memory.fromA], ['story', 'src/app.ts', 1], 'socket-made values')
      assertEqual(session.storyBeats.map((x) => x.id), [beat.id], 'beats')
      assertEqual(session.activeCharts.map((x) => [x.id, x.actions.length]), [[chart.id, 2]], 'charts')
      const kept = session.memory[memoryKey(developmentSession)]
      assertEqual([kept.intent, kept.phase, kept.beatCount, kept.active], ['ship v1', 'assimilation', 1, true], 'development session')
      await c.close()
    })

    await check("restart: the fork's REST routes serve what they made before it", async () => {
      const againCookie = await login(again)
      const beats = await request(again, 'GET', inWorkspace('/api/narrative/beats'), { cookie: againCookie })
      assertEqual(beats.json.map((x) => [x.id, x.description]), [[beat.id, 'First deploy']], 'GET /api/narrative/beats')
      const charts = await request(again, 'GET', inWorkspace('/api/stc/charts'), { cookie: againCookie })
      assertEqual(charts.json.map((c) => c.actions.map((x) => x.completed)), [[false, true]], 'GET /api/stc/charts')
      const current = await request(again, 'GET', inWorkspace('/api/sessions/current'), { cookie: againCookie })
      assertEqual([current.json.id, current.json.phase, current.json.beatCount], [developmentSession.id, 'assimilation', 1], 'GET /api/sessions/current')
      const health = await request(again, 'GET', '/api/health')
      assertEqual(health.json.narrative.totalBeats, 1, '/api/health totalBeats')
    })

    await check('restart: a chart made before it is still changed through REST', async () => {
      const againCookie = await login(again)
      const res = await request(again, 'PATCH', inWorkspace(`/api/stc/charts/${chart.id}`), { cookie: againCookie, body: { title: 'Ship v1' } })
      assertEqual([res.status, res.json.title], [200, 'Ship v1'], 'PATCH /api/stc/charts/:id')
    })
    await again.stop()

    const broken = makeBox()
    boxes.push(broken)
    fs.writeFileSync(path.join(broken.root, 'a-file'), 'not a directory\n')
    const unavailableDir = path.join(broken.root, 'a-file', 'sessions')
    const failing = await startHost(broken, { auth: 'none', env: { MIA_SESSION_DATA_DIR: unavailableDir } })
    hosts.push(failing)

    await check('a store that cannot open: logged on the server, a code and no path to the client (socket and REST)', async () => {
      const client = new Client(failing, { origin: failing.origin, label: 'store unavailable' })
      const error = await client.next((m) => m.type === 'error', 'the error')
      assertEqual([error.channel, error.payload.code], ['session', 'EUNAVAILABLE'], 'socket error')
      const { code } = await within(client.closed, 'the close')
      assertEqual(code, 1011, 'close code')
      const rest = await request(failing, 'GET', inWorkspace('/api/narrative/beats'))
      assertEqual([rest.status, rest.json && rest.json.code], [503, 'EUNAVAILABLE'], 'REST answer')
      const seen = [...client.raw, client.closeInfo.reason, rest.text].join('\n')
      assert(!seen.includes(broken.root) && !/directory/i.test(seen), `the client saw a path or its reason: ${seen}`)
      assert(failing.log.includes('cannot open the session store') && failing.log.includes(unavailableDir), `the server log lacks the failure:\n${failing.log}`)
    })
    await failing.stop()
  } catch (err) {
    failed++
    console.log(`not ok - the checks stopped: ${err.stack || err}`)
  } finally {
    for (const host of hosts) host.kill()
    for (const dir of boxes) fs.rmSync(dir.root, { recursive: true, force: true })
  }
  console.log(`${passed} passed, ${failed} failed`)
  process.exitCode = failed === 0 ? 0 : 1
}

main()
