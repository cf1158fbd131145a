'use strict'
// One workload × system × variant, in its own process: `node --expose-gc bench/child.js '<job JSON>'`.
// Sets up (untimed), warms up, measures `reps` repetitions, checks the result once, then reports
// { samples, maxRSSKB, verify, features } to the parent over IPC. run.js is the entry point.

const fs = require('node:fs')
const fsp = require('node:fs/promises')
const path = require('node:path')
const http = require('node:http')
const { spawn } = require('node:child_process')

const { measure, idleNoise, sleep } = require('./lib/measure')
const { StallProbe } = require('./lib/stall-probe')
const { sendTextMessage } = require('../lib/fragments')

/** The handler's default `slowReaderTimeoutMs`. */
const SLOW_READER_TIMEOUT_MS = 30000
const gen = require('./generate')
const { CONTENDERS, openSystem } = require('./contenders')
const manySessions = require('./many-sessions')

const job = JSON.parse(process.argv[2])
const manifest = JSON.parse(fs.readFileSync(job.manifest, 'utf8'))
const dataDir = path.join(job.workDir, 'data')
fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })

const features = {}
let addon
function ours() {
  if (!addon) addon = require('..')
  return addon
}

// The systems on Redis (`ours-redis`, `ioredis`) get the harness's redis-server in `job.redisUrl` and
// a key prefix of their own in `job.keyPrefix`.
const REDIS = job.system === 'ours-redis' || job.system === 'ioredis'
/** Every system that is this package's store, on either backend. */
const OURS = ['ours', 'ours-all', 'ours-tick', 'ours-redis', 'ours-lean'].includes(job.system)
/** SQLite, LMDB or the floor (contenders/), in W1 and W2. */
const CONTENDER = CONTENDERS.includes(job.system)
const redisLib = REDIS ? require('./lib/redis') : null
/** A raw RESP connection of the harness's own: seeds keys, reads INFO stats, checks results. */
let admin
let meter

async function openStore(dir = dataDir) {
  if (job.system === 'ours-redis') {
    return ours().NarrativeSessionStore.open({
      backend: 'redis',
      redisUrl: job.redisUrl,
      keyPrefix: job.keyPrefix,
      autosaveIntervalMs: 0,
      cleanupIntervalMs: 0,
    })
  }
  return ours().NarrativeSessionStore.open({ dataDir: dir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 })
}

async function baselineStore(system, dir = dataDir) {
  if (system === 'naive') return new (require('./baselines/naive').NaiveStore)(dir)
  if (system === 'atomic') return new (require('./baselines/atomic').AtomicStore)(dir)
  if (system === 'ioredis') return new (require('./baselines/ioredis').IoredisStore)(job.redisUrl, job.keyPrefix).connect()
  throw new Error(`no baseline store ${system}`)
}

/** Where a system keeps the session with this file stem, in Redis. */
function redisKey(stem) {
  return job.system === 'ours-redis' ? `${job.keyPrefix}{${stem}}:snap` : `${job.keyPrefix}${stem}`
}

/**
 * Puts stored sessions in place before a job (untimed): a copy of each fixture file, or with Redis
 * the same JSON text SET as the session's value (for ours-redis, its snapshot key, with an empty
 * log), with a 30-day expiry as either system sets.
 */
async function seed(list, dir = dataDir) {
  if (!REDIS) {
    for (const { file, stem } of list) fs.copyFileSync(file, path.join(dir, `${stem}.json`))
    return
  }
  for (let i = 0; i < list.length; i += 100) {
    await admin.pipeline(list.slice(i, i + 100).map(({ file, stem }) => ['SET', redisKey(stem), fs.readFileSync(file), 'EX', 30 * 86_400]))
  }
}

/** The stored session of a baseline, read back for verification. */
async function storedBaseline(stem) {
  if (job.system === 'ioredis') return JSON.parse((await admin.command('GET', redisKey(stem))).toString())
  return JSON.parse(await fsp.readFile(path.join(dataDir, `${stem}.json`), 'utf8'))
}

/** A merge that returns only `changes`, as a host that forwards sessions as text would make it. */
function mergeLean(store, userId, workspaceId, update) {
  return store.merge(userId, workspaceId, update, { origin: 'bench', returnSession: false })
}

/** At most this many repetitions with the stall probe, after the timed ones. */
const PROBE_REPS = 15

/**
 * Interleaving (run.js runs the systems of one variant side by side): after its set-up, this
 * process does its work only in turns that the parent hands out one process at a time, round
 * robin, so that the systems' repetitions alternate and whatever else the machine is doing weighs
 * on all of them alike. Without `job.interleaved` every turn is granted at once.
 */
let granted = null
process.on('message', (m) => {
  if (m && m.type === 'go' && granted) granted()
})
async function inTurn(work) {
  if (!job.interleaved) return work()
  await new Promise((resolve) => {
    granted = resolve
    process.send({ type: 'turn' })
  })
  granted = null
  try {
    return await work()
  } finally {
    process.send({ type: 'done' })
  }
}

async function run(body) {
  const samples = []
  if (REDIS) {
    admin = await redisLib.RespClient.connect(redisLib.portOf(job.redisUrl))
    meter = new redisLib.NetMeter(admin)
  }
  const { setup, rep, prepare, after, verify, warmup = 1, reps, probeReps = PROBE_REPS } = body
  const state = setup ? await setup() : {}
  const idleMs = job.idleMs || 300
  const noise = { ...(await inTurn(() => idleNoise(idleMs))), windowMs: idleMs }
  // Warm-up repetitions are numbered -warmup … -1, so that their updates come before the measured ones.
  for (let i = -warmup; i < 0; i++) {
    await inTurn(async () => {
      if (prepare) await prepare(state, i)
      await rep(state, i)
      if (after) await after(state, i, {})
    })
  }
  /** Repetition `i` in a turn of its own, measured (with `probe`, its stall too), its result checked. */
  const measured = (i, probe) =>
    inTurn(async () => {
      if (prepare) await prepare(state, i)
      const net0 = meter ? await meter.read() : null
      const { sample, value } = await measure(() => rep(state, i), probe)
      if (meter) {
        const net = await meter.since(net0)
        sample.redisInBytes = net.in
        sample.redisOutBytes = net.out
      }
      if (body.check) sample.check = body.check(value, i)
      // Untimed: the workload's own figures from this repetition (rates, disk, memory), and its tidying.
      if (after) await after(state, i, sample)
      return sample
    })
  for (let i = 0; i < reps; i++) samples.push(await measured(i))
  // The stall probe's repetitions, after the timed ones: its pings would count in their figures.
  const probe = await inTurn(async () => {
    const p = new StallProbe()
    noise.stallMs = await p.idle(idleMs)
    return p
  })
  const probeSamples = []
  for (let i = reps; i < reps + Math.min(reps, probeReps); i++) probeSamples.push(await measured(i, probe))
  const maxRSSKB = process.resourceUsage().maxRSS
  const verification = await inTurn(async () => {
    await probe.close()
    const v = verify ? await verify(state) : { ok: true }
    if (body.teardown) await body.teardown(state)
    return v
  })
  if (admin) admin.close()
  return { samples, probeSamples, maxRSSKB, noise, verify: verification }
}

// ---------------------------------------------------------------- W1: restore on connect

function w1() {
  const fixture = manifest.sizes[job.size]
  const { userId, workspaceId, stem } = fixture
  const cold = job.mode === 'cold'
  let server, wss, socket, client
  const acks = []
  const waiting = []
  const nextAck = () =>
    new Promise((resolve) => {
      if (acks.length) resolve(acks.shift())
      else waiting.push(resolve)
    })

  const envelope = (session, created, recovered) =>
    JSON.stringify({
      type: 'session-event',
      channel: 'session',
      payload: { event: 'restored', created, recovered, session },
      timestamp: new Date().toISOString(),
    })

  // As the handler sends it (lib/fragments.js): in fragments, one per turn of the loop, when large,
  // each waited for as long as the handler waits by default for a client to take it.
  const sendFramed = (sessionJson, created, recovered) => {
    const head = `{"type":"session-event","channel":"session","payload":{"event":"restored","created":${!!created},"recovered":${!!recovered},"session":`
    const tail = `},"timestamp":"${new Date().toISOString()}"}`
    return sendTextMessage(socket, head, sessionJson, tail, SLOW_READER_TIMEOUT_MS)
  }

  return {
    reps: job.reps,
    warmup: job.warmup,
    async setup() {
      await seed([{ file: fixture.file, stem }])
      const { WebSocketServer } = require('ws')
      server = http.createServer()
      wss = new WebSocketServer({ server })
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
      const connected = new Promise((resolve) => wss.once('connection', resolve))
      client = spawn(process.execPath, [path.join(__dirname, 'lib', 'ws-client.js'), `ws://127.0.0.1:${server.address().port}/`], {
        stdio: ['ignore', 'inherit', 'inherit'],
      })
      socket = await connected
      socket.on('message', (data) => {
        const ack = JSON.parse(data.toString())
        if (waiting.length) waiting.shift()(ack)
        else acks.push(ack)
      })
      const state = { firstAck: undefined, bytes: [] }
      if (job.system === 'send-only') {
        state.text = fs.readFileSync(fixture.file)
        return state
      }
      if (CONTENDER) {
        // Stored untimed, as each keeps it: SQLite and LMDB as rows, the floor as the JSON text in
        // the session's file.
        const writer = await openSystem(job.system, dataDir)
        await writer.seed([JSON.parse(fs.readFileSync(fixture.file, 'utf8'))])
        await writer.close()
        state.store = await openSystem(job.system, dataDir)
        return state
      }
      if ((job.system === 'ours' || job.system === 'ours-redis') && !job.unmarked) {
        // Stored as the store writes it: its close writes the snapshot of what it merged (with
        // Redis too: the snapshot key and its mark, with the log empty).
        const writer = await openStore()
        await writer.merge(userId, workspaceId, { config: { restoredBy: 'bench' } }, { returnSession: false })
        await writer.close()
      }
      if (OURS) {
        state.store = await openStore()
        features.loadRaw = typeof state.store.loadRaw === 'function'
        if (!cold) await state.store.load(userId, workspaceId)
      } else {
        state.store = await baselineStore(job.system)
        if (!cold) state.session = await state.store.load(stem)
      }
      return state
    },
    async prepare(state) {
      // Cold: a new store instance, which has nothing loaded. (The file is in the page cache.)
      if (cold && OURS) {
        await state.store.close()
        state.store = await openStore()
      }
      // Contenders: a new connection (SQLite), the environment opened again (LMDB), nothing held
      // (the floor reads its file anyway).
      if (cold && CONTENDER) {
        await state.store.close()
        state.store = await openSystem(job.system, dataDir)
      }
    },
    async rep(state) {
      if (job.system === 'send-only') {
        await sendFramed(state.text, false, false)
      } else if (CONTENDER) {
        // The floor's restore is its file's bytes, sent as they are; SQLite and LMDB rebuild the
        // session from its rows, then it is sent as the naive baseline sends it.
        const restored = await state.store.restore(userId, workspaceId)
        if (Buffer.isBuffer(restored)) await sendFramed(restored, false, false)
        else socket.send(envelope(restored, false, false))
      } else if (OURS) {
        const store = state.store
        if (features.loadRaw) {
          // The session's JSON text goes out as it came from Rust, framed by the envelope, unparsed.
          const { sessionJson, created, recovered } = await store.loadRaw(userId, workspaceId)
          await sendFramed(sessionJson, created, recovered)
        } else {
          const { session, created, recovered } = await store.load(userId, workspaceId)
          socket.send(envelope(session, created, recovered))
        }
      } else {
        const session = cold ? await state.store.load(stem) : state.session
        socket.send(envelope(session, false, false))
      }
      const ack = await nextAck()
      if (state.firstAck === undefined) state.firstAck = ack
      state.bytes.push(ack.bytes)
      return ack.bytes
    },
    async verify(state) {
      const a = state.firstAck
      const ok =
        a.type === 'session-event' &&
        a.event === 'restored' &&
        a.sessionId === fixture.id &&
        a.entries === fixture.entries &&
        a.binary === false &&
        state.bytes.every((b) => b >= fixture.bytes)
      return { ok, firstAck: a, messageBytes: state.bytes[state.bytes.length - 1], fixtureBytes: fixture.bytes }
    },
    async teardown(state) {
      await state.store?.close?.()
      socket.close()
      await new Promise((resolve) => client.once('exit', resolve))
      wss.close()
      server.close()
    },
  }
}

// ---------------------------------------------------------------- W2: append one entry, persist

function w2() {
  const fixture = manifest.sizes[job.size]
  const { userId, workspaceId, stem } = fixture
  // `late`: each new entry's time falls among the session's last 20 entries, as from another tab
  // whose clock is behind, so it belongs before entries already stored.
  const after = job.late
    ? (() => {
        const history = JSON.parse(fs.readFileSync(fixture.file, 'utf8')).conversationHistory
        return Date.parse(history[history.length - 20].timestamp) - (job.reps + job.warmup + 101) * 15_000
      })()
    : fixture.lastTimeMs
  const updateOf = (i) => gen.makeUpdate(1000 + job.reps, i + 100, after)
  let appended = 0
  let lastId
  return {
    reps: job.reps,
    warmup: job.warmup,
    async setup() {
      if (CONTENDER) {
        // The floor makes its calls synchronously here: the bare cost of one append and its sync.
        const store = await openSystem(job.system, dataDir, { synchronous: true })
        await store.seed([JSON.parse(fs.readFileSync(fixture.file, 'utf8'))])
        return { store }
      }
      await seed([{ file: fixture.file, stem }])
      if (OURS) {
        const store = await openStore()
        await store.load(userId, workspaceId)
        return { store }
      }
      const store = await baselineStore(job.system)
      return { store, session: await store.load(stem) }
    },
    // The entry a client sent, made before the timed part (generating its text is neither
    // system's work).
    prepare(state, i) {
      state.update = updateOf(i)
    },
    async rep(state) {
      const { update } = state
      lastId = update.conversationHistory[0].id
      appended++
      if (CONTENDER) {
        // One durable append: SQLite one transaction (the entry's row, the session row's count and
        // time), LMDB the same two records in one synced transaction, the floor a line and an
        // fdatasync.
        await state.store.append(userId, workspaceId, update.conversationHistory[0])
        return true
      }
      if (OURS) {
        // One call: merge, then append to the journal and fsync before resolving (with Redis:
        // append the record to the session's log in one WATCH/MULTI/EXEC, then PUBLISH).
        const { changes } = await state.store.merge(userId, workspaceId, update, {
          origin: 'bench',
          returnSession: false,
          durable: true,
        })
        return changes.length > 0
      }
      const entry = update.conversationHistory[0]
      const history = state.session.conversationHistory
      if (job.late) {
        // Where a host keeping the history in order would put it: after the last earlier entry.
        const at = history.findLastIndex((e) => e.timestamp <= entry.timestamp) + 1
        history.splice(at, 0, entry)
      } else {
        history.push(entry)
      }
      if (entry.timestamp > state.session.updatedAt) state.session.updatedAt = entry.timestamp
      await state.store.save(stem, state.session)
      return true
    },
    check: (wrote) => wrote === true,
    async verify(state) {
      if (CONTENDER) {
        const entries = await state.store.entryCount(userId, workspaceId)
        await state.store.close()
        return { ok: entries === fixture.entries + appended, entries, expected: fixture.entries + appended }
      }
      let session
      if (OURS) {
        await state.store.close()
        const store = await openStore()
        session = (await store.load(userId, workspaceId)).session
        await store.close()
      } else {
        session = await storedBaseline(stem)
        await state.store.close?.()
      }
      const h = session.conversationHistory
      const inOrder = h.every((e, i) => i === 0 || Date.parse(h[i - 1].timestamp) <= Date.parse(e.timestamp))
      const ok = h.length === fixture.entries + appended && h.some((e) => e.id === lastId) && inOrder
      return { ok, entries: h.length, expected: fixture.entries + appended, inOrder }
    },
  }
}

// ---------------------------------------------------------------- W3: autosave tick, 1,000 open, 10% dirty

function w3() {
  const { sessions, lastTimeMs, dir } = manifest.w3
  const dirtyPerTick = Math.round(sessions.length * 0.1)
  const dirtyAt = (rep) => {
    const r = gen.rng(7000 + rep + 100)
    const chosen = new Set()
    while (chosen.size < dirtyPerTick) chosen.add(r.int(0, sessions.length - 1))
    return [...chosen]
  }
  let lastDirty = []
  const isOurs = OURS
  return {
    reps: job.reps,
    warmup: job.warmup,
    async setup() {
      await seed(sessions.map((s) => ({ file: path.join(dir, `${s.stem}.json`), stem: s.stem })))
      if (isOurs) {
        const store = await openStore()
        for (let i = 0; i < sessions.length; i += 50) {
          await Promise.all(sessions.slice(i, i + 50).map((s) => store.load(s.userId, s.workspaceId)))
        }
        return { store }
      }
      const store = await baselineStore(job.system)
      const live = new Map()
      for (const s of sessions) live.set(s.stem, await store.load(s.stem))
      return { store, live, dirty: new Set() }
    },
    // Between ticks: 10% of the sessions get one new entry each (untimed).
    async prepare(state, rep) {
      lastDirty = dirtyAt(rep).map((i) => ({ index: i, update: gen.makeUpdate(7000 + i, rep + 100, lastTimeMs) }))
      if (isOurs) {
        await Promise.all(lastDirty.map(({ index, update }) => mergeLean(state.store, sessions[index].userId, sessions[index].workspaceId, update)))
      } else {
        for (const { index, update } of lastDirty) {
          const session = state.live.get(sessions[index].stem)
          const entry = update.conversationHistory[0]
          session.conversationHistory.push(entry)
          session.updatedAt = entry.timestamp
          state.dirty.add(sessions[index].stem)
        }
      }
    },
    // The tick. Baselines and `ours`: the host saves the sessions it changed since the last tick.
    // `ours-all`: the host calls save() on every open session and the store writes the dirty ones.
    // `ours-tick`: one flush(), the store's own autosave tick.
    async rep(state) {
      if (job.system === 'ours-tick') return state.store.flush()
      if (isOurs) {
        const targets = job.system === 'ours-all' ? sessions : lastDirty.map(({ index }) => sessions[index])
        const wrote = await Promise.all(targets.map((s) => state.store.save(s.userId, s.workspaceId)))
        return wrote.filter(Boolean).length
      }
      const dirty = [...state.dirty]
      state.dirty.clear()
      await Promise.all(dirty.map((stem) => state.store.save(stem, state.live.get(stem))))
      return dirty.length
    },
    check: (written) => written === dirtyPerTick,
    async verify(state) {
      const { index, update } = lastDirty[0]
      const s = sessions[index]
      let session
      if (isOurs) {
        await state.store.close()
        const store = await openStore()
        session = (await store.load(s.userId, s.workspaceId)).session
        await store.close()
      } else {
        session = await storedBaseline(s.stem)
        await state.store.close?.()
      }
      const id = update.conversationHistory[0].id
      return { ok: session.conversationHistory.some((e) => e.id === id), dirtyPerTick, open: sessions.length }
    },
  }
}

// ---------------------------------------------------------------- W4: merge two diverged sessions

function w4() {
  // `objects`: both sessions are parsed objects and so is the result (the sync `mergeSessions`).
  // `text`: both sessions are JSON text, as a host reads them from files or Redis, and the result
  // is JSON text to write or send: `mergeSessionsJson` against JSON.parse + js-merge + JSON.stringify.
  const text = job.form === 'text'
  let result
  const merged = () => (text ? JSON.parse(result.toString()) : result)
  return {
    reps: job.reps,
    warmup: job.warmup,
    async setup() {
      const a = fs.readFileSync(manifest.w4.a, 'utf8')
      const b = fs.readFileSync(manifest.w4.b, 'utf8')
      if (job.system === 'ours') {
        const { mergeSessions, mergeSessionsJson } = ours()
        if (text) return { a, b, merge: (x, y) => mergeSessionsJson(x, y) }
        return { a: JSON.parse(a), b: JSON.parse(b), merge: mergeSessions }
      }
      const { mergeSessions } = require('./baselines/js-merge')
      if (text) return { a, b, merge: (x, y) => JSON.stringify(mergeSessions(JSON.parse(x), JSON.parse(y))) }
      return { a: JSON.parse(a), b: JSON.parse(b), merge: mergeSessions }
    },
    async rep(state) {
      result = await state.merge(state.a, state.b)
      return text ? result.length : result.conversationHistory.length
    },
    // Text: a result at least as long as the larger input; verify() checks the session in it.
    check: (n) => (text ? n >= Math.max(manifest.w4.bytesEach, 1) : n === manifest.w4.expectedEntries),
    async verify() {
      const { canonicalText } = require('./baselines/js-merge')
      const session = merged()
      const canonical = canonicalText(session)
      const digest = require('node:crypto').createHash('sha256').update(canonical).digest('hex')
      // The parent compares the two systems' results field by field.
      const out = path.join(job.workDir, '..', `w4-${job.form}-${job.system}.json`)
      fs.writeFileSync(out, canonical)
      return {
        ok: session.conversationHistory.length === manifest.w4.expectedEntries,
        entries: session.conversationHistory.length,
        beats: session.storyBeats.length,
        charts: session.activeCharts.length,
        versions: Object.keys(session.versions || {}).length,
        sha256: digest,
        resultFile: out,
      }
    },
  }
}

// ---------------------------------------------------------------- W5: TTL sweep

function w5() {
  const { master, count, now, ttlDays, expired } = manifest.w5
  const sweepDir = path.join(job.workDir, 'sweep')
  const warmDir = path.join(job.workDir, 'warm')
  const names = fs.readdirSync(master).filter((n) => n.endsWith('.json'))
  if (names.length !== count) throw new Error(`W5 fixture has ${names.length} files, expected ${count}`)
  const link = (dir, list) => {
    let n = 0
    for (const name of list) {
      try {
        fs.linkSync(path.join(master, name), path.join(dir, name))
        n++
      } catch (err) {
        if (err.code !== 'EEXIST') throw err
      }
    }
    return n
  }
  const reports = []
  return {
    reps: job.reps,
    warmup: 0,
    async setup() {
      fs.mkdirSync(sweepDir, { mode: 0o700 })
      fs.mkdirSync(warmDir, { mode: 0o700 })
      // Warm-up on a small copy, so code paths are hot without touching the measured directory.
      link(warmDir, names.slice(0, 200))
      if (job.system === 'ours') {
        const store = await openStore(warmDir)
        await store.cleanup({ ttlDays, now })
        await store.close()
      } else {
        await require('./baselines/js-sweep').sweep(warmDir, { ttlDays, now })
      }
      return {}
    },
    // Before each sweep (untimed): every file back in place, hard-linked from the master copy, so
    // that half of them are expired again; ours gets a fresh store on the directory.
    async prepare(state) {
      state.linked = link(sweepDir, names)
      // The kernel's own work for 100,000 new links (the journal's commit, writing the directory
      // back) would otherwise run during the sweep: done and settled before the clock starts.
      const fd = fs.openSync(sweepDir, 'r')
      fs.fsyncSync(fd)
      fs.closeSync(fd)
      await sleep(200)
      if (job.system === 'ours') {
        state.store = await openStore(sweepDir)
        await sleep(20)
      }
    },
    async rep(state) {
      const report =
        job.system === 'ours'
          ? await state.store.cleanup({ ttlDays, now })
          : await require('./baselines/js-sweep').sweep(sweepDir, { ttlDays, now })
      if (state.store) {
        await state.store.close()
        state.store = undefined
      }
      reports.push({ scanned: report.scanned, removed: report.removed, kept: report.kept, errors: report.errors.length })
      return report
    },
    check: (report) => report.removed === expired && report.scanned === count && report.errors.length === 0,
    async verify() {
      const left = fs.readdirSync(sweepDir).filter((n) => n.endsWith('.json')).length
      const ok = left === count - expired && reports.every((r) => r.removed === expired && r.scanned === count)
      return { ok, filesLeft: left, expectedLeft: count - expired, reports }
    },
  }
}

// ---------------------------------------------------------------- W10: the README's first merge()

function w10() {
  const fixture = manifest.sizes[job.size]
  const { userId, workspaceId, stem } = fixture
  // `ours`: the call exactly as the README's store example makes it (its options: origin only).
  // `ours-lean`: the same with returnSession: false, for reference.
  const options = job.system === 'ours-lean' ? { origin: 'bench', returnSession: false } : { origin: 'bench' }
  let chart
  let lastBeat
  return {
    reps: job.reps,
    warmup: job.warmup,
    async setup() {
      await seed([{ file: fixture.file, stem }])
      const first = JSON.parse(fs.readFileSync(fixture.file, 'utf8')).activeCharts[0]
      chart = { id: first.id, action: first.actions[0].id }
      const store = await openStore()
      await store.load(userId, workspaceId)
      return { store }
    },
    // The README's update, with values that change at every repetition (the chart and action are
    // the session's own; the README's c1 and a2 stand for them).
    prepare(state, i) {
      lastBeat = `b7-${i + 100}`
      state.update = {
        universeFocus: i % 2 ? 'ceremony' : 'story',
        storyBeats: [{ id: lastBeat, description: 'First deploy', type: 'deploy' }],
        activeCharts: [{ id: chart.id, actions: [{ id: chart.action, completed: i % 2 === 0 }] }],
        memory: { lastFile: `src/app-${i + 100}.ts`, scratch: null },
      }
    },
    async rep(state) {
      const { changes, lost } = await state.store.merge(userId, workspaceId, state.update, options)
      return changes.length > 0 && lost.length === 0
    },
    check: (ok) => ok === true,
    async verify(state) {
      await state.store.close()
      const store = await openStore()
      const { session } = await store.load(userId, workspaceId)
      await store.close()
      const ok = session.storyBeats.some((b) => b.id === lastBeat)
      return { ok, beats: session.storyBeats.length, lastBeat }
    },
  }
}

const many = (name) => () => manySessions[name]({ job, dataDir })
const WORKLOADS = { W1: w1, W2: w2, W3: w3, W4: w4, W5: w5, W6: many('W6'), W7: many('W7'), W8: many('W8'), W9: many('W9'), W10: w10 }

run(WORKLOADS[job.workload]())
  .then((result) => {
    result.features = features
    process.send({ ok: true, result }, () => process.exit(0))
  })
  .catch((err) => {
    process.send({ ok: false, error: String((err && err.stack) || err), code: err && err.code }, () => process.exit(1))
  })
