'use strict'
// The benchmark suite of issues 4 and 21: `npm run bench` (node bench/run.js).
//
// Generates the fixtures (bench/generate.js) in a temp dir, then runs every workload × system ×
// variant in its own child process (bench/child.js), one after another, and prints a table, writes
// bench/results/latest.json (every sample, medians, ratios, machine) and bench/results/w2.svg.
//
// Environment:
//   BENCH_QUICK=1       fewer repetitions and sessions: a 10,000-file W5, no 100,000-session W8
//   BENCH_ONLY=W2,W4    run only these workloads (W1 … W10)
//   BENCH_W5_FILES=N    W5 directory size (default 100000, quick 10000)
//   BENCH_KEEP=1        keep the temp dir (its path is printed)
//   BENCH_OUT=DIR       where results go (default bench/results)
//   BENCH_REDIS=0       leave out the Redis systems (ours-redis, ioredis) of W1 to W3
//   BENCH_INTERLEAVE=0  run the systems of a variant one after another, not interleaved
//   REDIS_SERVER=PATH   the redis-server binary (default /usr/bin/redis-server)
//
// W1 to W3 also run on Redis when redis-server is there: the harness starts its own (a free port,
// persistence off) for the run and stops it at the end; every job gets its own key prefix.
//
// The contenders (issue 21; contenders/): better-sqlite3 (`sqlite`, and `sqlite-group` with group
// commit), lmdb-js (`lmdb`) and the floor (`floor`, one file per session, append + fdatasync), on
// W1 cold, W2 and the many-sessions workloads W6 to W9 (many-sessions.js). A contender whose package
// cannot be loaded is skipped with a printed note.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { fork, execFileSync } = require('node:child_process')

const gen = require('./generate')
const { drawW2 } = require('./lib/svg')
const { drawContenders } = require('./lib/contenders-svg')
const contendersSummary = require('./lib/contenders-summary')
const redisLib = require('./lib/redis')
const { CONTENDERS, availability } = require('./contenders')

const QUICK = process.env.BENCH_QUICK === '1'
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.toUpperCase().split(',')) : null
const INTERLEAVE = process.env.BENCH_INTERLEAVE !== '0'
const W5_FILES = Number(process.env.BENCH_W5_FILES || (QUICK ? 10_000 : 100_000))
const OUT = path.resolve(process.env.BENCH_OUT || path.join(__dirname, 'results'))
const ROOT = path.resolve(__dirname, '..')

const SIZE_KEYS = Object.keys(gen.SIZES)
// Repetitions (measured) and warm-ups per size.
const REPS = QUICK
  ? { '10KB': [10, 2], '1MB': [6, 2], '10MB': [3, 1], W3: [3, 1], W4: [3, 1], W5: [2, 0] }
  : { '10KB': [50, 5], '1MB': [30, 3], '10MB': [15, 2], W3: [15, 1], W4: [11, 1], W5: [3, 0] }
/**
 * W2 repetitions of the systems whose save takes about a millisecond at any size (ours, on files or
 * Redis): a median of more samples, where the host's noise is as large as the figure itself. The
 * baselines keep REPS, which are many times their own noise.
 */
const W2_CHEAP_REPS = QUICK ? [10, 2] : [60, 5]
const W2_CHEAP = new Set(['ours-redis'])
/**
 * W2 repetitions of the durable appends compared with the floor (ours, SQLite, LMDB, the floor):
 * enough for a p99 (the 3rd-longest of 200), where the issue sets a target.
 */
const W2_P99_REPS = QUICK ? [20, 2] : [200, 10]
const W2_P99 = new Set(['ours', 'sqlite', 'lmdb', 'floor'])
/** The many-sessions workloads: sessions, [reps, warm-ups], repetitions with the stall probe. */
const MANY = {
  W6: { sessions: 100, appendsEach: 20, reps: QUICK ? [2, 1] : [7, 1], probeReps: QUICK ? 1 : 3 },
  W7: { sessions: QUICK ? 1_000 : 10_000, reps: QUICK ? [2, 1] : [2, 1], probeReps: 1 },
  W8: { sessions: QUICK ? [10_000] : [10_000, 100_000], reps: QUICK ? [5, 1] : [11, 1], repsLarge: [5, 1], probeReps: QUICK ? 1 : 3 },
  W9: { sessions: QUICK ? 2_000 : 10_000 },
  W10: { reps: QUICK ? [10, 2] : [30, 3] },
}

/** The baselines each workload is compared with, and the system of ours each is compared with. */
const versusOurs = (...names) => Object.fromEntries(names.map((n) => [n, 'ours']))
const BASELINES = {
  W1: { naive: 'ours', ioredis: 'ours-redis', 'send-only': 'ours', ...versusOurs('sqlite', 'lmdb', 'floor') },
  W2: { naive: 'ours', atomic: 'ours', ioredis: 'ours-redis', ...versusOurs('sqlite', 'lmdb', 'floor') },
  W3: { naive: 'ours', atomic: 'ours', ioredis: 'ours-redis' },
  W4: { 'js-merge': 'ours' },
  W5: { 'js-sweep': 'ours' },
  W6: versusOurs(...CONTENDERS),
  W7: versusOurs(...CONTENDERS),
  W8: versusOurs('sqlite', 'lmdb'),
  W9: versusOurs('naive'),
  W10: versusOurs('ours-lean'),
}
const REDIS_SYSTEMS = new Set(['ours-redis', 'ioredis'])
const TITLES = {
  W1: 'W1 restore on connect (load, send to a ws client)',
  W2: 'W2 append one entry, then persist',
  W3: 'W3 autosave tick: 1,000 open sessions (~10 KB), 10% dirty',
  W4: 'W4 merge two sessions diverged by 10,000 entries each',
  W5: `W5 TTL sweep: ${W5_FILES.toLocaleString('en-US')} session files, half expired`,
  W6: 'W6 concurrent durable appends: 100 small sessions × 20 appends, all issued at once',
  W7: 'W7 create small sessions durably (~2.7 KB each), 100 in flight; disk per session',
  W8: 'W8 list() of every stored small session',
  W9: 'W9 memory per small session loaded by merge (RSS delta ÷ sessions)',
  W10: "W10 the README's first merge() example on a 10 MB session",
}
/** Per workload, figures of its own: [sample key, label, format], printed under its rows. */
const FIGURES = {
  W6: [['opsPerSec', 'appends/s', (v) => Math.round(v).toLocaleString('en-US')]],
  W7: [
    ['usPerSession', 'µs per session', (v) => Math.round(v).toLocaleString('en-US')],
    ['diskOpenPerSession', 'disk per session, store open', (v) => `${(v / 1024).toFixed(1)} KiB`],
    ['diskClosedPerSession', 'disk per session, store closed', (v) => `${(v / 1024).toFixed(1)} KiB`],
  ],
  W9: [
    ['rssPerSession', 'RSS per session', (v) => `${(v / 1024).toFixed(1)} KiB`],
    ['timesJson', '× its JSON', (v) => `${v.toFixed(2)}×`],
  ],
}

const log = (...args) => process.stderr.write(args.join(' ') + '\n')

// ---------------------------------------------------------------- fixtures

function writeFixtures(dir) {
  const started = Date.now()
  const manifest = { sizes: {}, generatedIn: dir }
  fs.mkdirSync(path.join(dir, 'sizes'), { recursive: true })
  SIZE_KEYS.forEach((size, i) => {
    const userId = 'dev-alice'
    const workspaceId = `/home/alice/projects/mia-app-${size.toLowerCase()}`
    const session = gen.generateSession({ seed: 1 + i, size, userId, workspaceId })
    const text = JSON.stringify(session)
    const file = path.join(dir, 'sizes', `${size}.json`)
    fs.writeFileSync(file, text)
    manifest.sizes[size] = {
      file,
      userId,
      workspaceId,
      id: session.id,
      stem: gen.sessionFileStem(userId, workspaceId),
      bytes: Buffer.byteLength(text),
      entries: session.conversationHistory.length,
      charts: session.activeCharts.length,
      beats: session.storyBeats.length,
      lastTimeMs: gen.lastTime(session),
    }
  })

  if (!ONLY || ONLY.has('W3')) {
    const w3dir = path.join(dir, 'w3')
    fs.mkdirSync(w3dir)
    const sessions = []
    let lastTimeMs = 0
    let bytes = 0
    for (let i = 0; i < 1000; i++) {
      const userId = `user-${String(i).padStart(4, '0')}`
      const workspaceId = `/home/${userId}/project`
      const session = gen.generateSession({ seed: 10_000 + i, size: '10KB', userId, workspaceId })
      const stem = gen.sessionFileStem(userId, workspaceId)
      const text = JSON.stringify(session)
      bytes += text.length
      fs.writeFileSync(path.join(w3dir, `${stem}.json`), text)
      sessions.push({ userId, workspaceId, stem })
      lastTimeMs = Math.max(lastTimeMs, gen.lastTime(session))
    }
    manifest.w3 = { dir: w3dir, sessions, lastTimeMs, meanBytes: Math.round(bytes / 1000) }
  }

  if (!ONLY || ONLY.has('W4')) {
    const { base, a, b } = gen.generateDivergedPair({ seed: 4, size: '1MB', diverged: 10_000 })
    const ids = new Set([...a.conversationHistory, ...b.conversationHistory].map((e) => e.id))
    manifest.w4 = {
      a: path.join(dir, 'w4-a.json'),
      b: path.join(dir, 'w4-b.json'),
      baseEntries: base.conversationHistory.length,
      diverged: 10_000,
      entriesEach: a.conversationHistory.length,
      bytesEach: Buffer.byteLength(JSON.stringify(a)),
      expectedEntries: ids.size,
    }
    fs.writeFileSync(manifest.w4.a, JSON.stringify(a))
    fs.writeFileSync(manifest.w4.b, JSON.stringify(b))
  }

  if (!ONLY || ONLY.has('W5')) {
    // Small session files, each with its mtime at its updatedAt as if it had been written then.
    // Odd ones are past the TTL. `now` is fixed, so the data is the same on every run.
    const master = path.join(dir, 'w5')
    fs.mkdirSync(master)
    const now = Date.UTC(2026, 9, 1)
    const r = gen.rng(5)
    let expired = 0
    for (let i = 0; i < W5_FILES; i++) {
      const old = i % 2 === 1
      if (old) expired++
      const ms = now - (old ? r.int(31, 400) : r.int(1, 28)) * 86_400_000 - r.int(0, 86_399_999)
      const { stem, text } = gen.smallSessionText(i, ms)
      const file = path.join(master, `${stem}.json`)
      fs.writeFileSync(file, text)
      fs.utimesSync(file, ms / 1000, ms / 1000)
    }
    manifest.w5 = { master, count: W5_FILES, expired, now, ttlDays: 30 }
  }
  manifest.seconds = (Date.now() - started) / 1000
  const file = path.join(dir, 'manifest.json')
  fs.writeFileSync(file, JSON.stringify(manifest))
  return { manifest, file }
}

// ---------------------------------------------------------------- jobs

/**
 * The jobs; `redis`: whether the Redis systems run too; `missing`: contenders that cannot run here
 * (name → reason). The systems of one variant run one after another, so that what else the machine
 * is doing weighs on them alike.
 */
function plan(redis, missing = {}) {
  const jobs = []
  const add = (job) => {
    if ((!ONLY || ONLY.has(job.workload)) && (redis || !REDIS_SYSTEMS.has(job.system)) && !missing[job.system]) {
      // The floor's syncs wait on libuv's pool: enough threads for many in flight at once.
      if (job.system === 'floor') job.env = { UV_THREADPOOL_SIZE: '64' }
      jobs.push(job)
    }
  }
  for (const size of SIZE_KEYS) {
    const [reps, warmup] = REPS[size]
    for (const mode of ['cold', 'warm']) {
      const contenders = mode === 'cold' ? ['sqlite', 'lmdb', 'floor'] : []
      for (const system of ['ours', 'naive', 'send-only', 'ours-redis', 'ioredis', ...contenders]) add({ workload: 'W1', variant: `${size} ${mode}`, size, mode, system, reps, warmup })
    }
  }
  // The long way: a snapshot the store did not write (the generator's file, never marked), so every
  // cold load parses, checks and serialises it, as every cold load did before marks.
  const [reps, warmup] = REPS['10MB']
  for (const system of ['ours', 'ours-redis']) add({ workload: 'W1', variant: '10MB cold, unmarked snapshot', size: '10MB', mode: 'cold', unmarked: true, system, reps, warmup })
  for (const size of SIZE_KEYS) {
    for (const system of ['ours', 'naive', 'atomic', 'ours-redis', 'ioredis', 'sqlite', 'lmdb', 'floor']) {
      const [reps, warmup] = W2_P99.has(system) ? W2_P99_REPS : W2_CHEAP.has(system) ? W2_CHEAP_REPS : REPS[size]
      add({ workload: 'W2', variant: size, size, system, reps, warmup })
    }
  }
  // A late entry (another tab's clock behind) into the largest session: the change must still cost
  // the change, not a re-sort of the history.
  for (const system of ['ours', 'naive']) {
    const [reps, warmup] = system === 'ours' ? W2_CHEAP_REPS : REPS['10MB']
    add({ workload: 'W2', variant: '10MB late', size: '10MB', late: true, system, reps, warmup })
  }
  for (const system of ['ours', 'ours-all', 'ours-tick', 'naive', 'atomic', 'ours-redis', 'ioredis']) add({ workload: 'W3', variant: '1000 open, 100 dirty', system, reps: REPS.W3[0], warmup: REPS.W3[1] })
  for (const form of ['text', 'objects']) {
    for (const system of ['ours', 'js-merge']) add({ workload: 'W4', variant: `2 × 15,000 entries, ${form}`, form, system, reps: REPS.W4[0], warmup: REPS.W4[1] })
  }
  // A sweep takes a second or more: the machine's idle noise over as long a window is what its
  // longest block compares with (short windows miss this VM's rarer multi-ms hiccups).
  for (const system of ['ours', 'js-sweep']) add({ workload: 'W5', variant: `${W5_FILES} files`, system, reps: REPS.W5[0], warmup: REPS.W5[1], idleMs: 2000 })

  const n = (count) => count.toLocaleString('en-US')
  const { W6, W7, W8, W9, W10 } = MANY
  for (const system of ['ours', ...CONTENDERS]) {
    add({ workload: 'W6', variant: `${W6.sessions} sessions × ${W6.appendsEach} appends`, system, sessions: W6.sessions, appendsEach: W6.appendsEach, reps: W6.reps[0], warmup: W6.reps[1], probeReps: W6.probeReps })
  }
  for (const system of ['ours', ...CONTENDERS]) {
    add({ workload: 'W7', variant: `${n(W7.sessions)} sessions`, system, sessions: W7.sessions, reps: W7.reps[0], warmup: W7.reps[1], probeReps: W7.probeReps })
  }
  for (const sessions of W8.sessions) {
    const [reps, warmup] = sessions > 10_000 ? W8.repsLarge : W8.reps
    for (const system of ['ours', 'sqlite', 'lmdb']) add({ workload: 'W8', variant: `${n(sessions)} sessions`, system, sessions, reps, warmup, probeReps: W8.probeReps })
  }
  // One repetition a process, no probe: memory a process has freed stays in its RSS.
  for (const system of ['ours', 'naive']) add({ workload: 'W9', variant: `${n(W9.sessions)} sessions`, system, sessions: W9.sessions, reps: 1, warmup: 0, probeReps: 0 })
  for (const system of ['ours', 'ours-lean']) add({ workload: 'W10', variant: '10MB', size: '10MB', system, reps: W10.reps[0], warmup: W10.reps[1] })
  return jobs
}

/**
 * Runs jobs (each in its own child.js process) side by side: every child sets up at once, then
 * does its work (warm-ups, repetitions, probe repetitions, verification) only in turns, which are
 * handed out one at a time, round robin, once every child has set up. So the systems' repetitions
 * alternate, and a moment when the machine is busier with other work falls on all of them alike.
 * Resolves to each job's result, in order, with its 1-minute load average at its first and last
 * turn and its own duration.
 */
function runInterleaved(jobs) {
  return new Promise((resolveAll) => {
    let holder = null
    let started = false
    let next = 0
    const children = jobs.map((job, index) => {
      const c = { index, state: 'setup', message: null, result: null, startedAt: Date.now(), loadBefore: null }
      c.proc = fork(path.join(__dirname, 'child.js'), [JSON.stringify({ ...job, interleaved: true })], {
        execArgv: ['--expose-gc'],
        env: { ...process.env, ...job.env },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      c.proc.on('message', (m) => {
        if (m && m.type === 'turn') c.state = 'waiting'
        else if (m && m.type === 'done') {
          c.state = 'between'
          holder = null
        } else c.message = m
        schedule()
      })
      c.proc.on('exit', (code, signal) => {
        c.state = 'exited'
        if (holder === c) holder = null
        const { message } = c
        c.result = message && message.ok ? message.result : { error: message ? message.error : `child exited with ${signal || code}` }
        c.result.loadavg = { before: +(c.loadBefore ?? os.loadavg()[0]).toFixed(2), after: +os.loadavg()[0].toFixed(2) }
        c.result.seconds = (Date.now() - c.startedAt) / 1000
        schedule()
      })
      return c
    })
    function schedule() {
      if (children.every((c) => c.state === 'exited')) return resolveAll(children.map((c) => c.result))
      if (holder) return
      // The first turn waits until every child has set up (or failed), so no set-up overlaps a repetition.
      if (!started && children.some((c) => c.state === 'setup')) return
      started = true
      for (let k = 0; k < children.length; k++) {
        const c = children[(next + k) % children.length]
        if (c.state !== 'waiting') continue
        holder = c
        c.state = 'running'
        if (c.loadBefore === null) c.loadBefore = os.loadavg()[0]
        next = (c.index + 1) % children.length
        c.proc.send({ type: 'go' })
        return
      }
    }
  })
}

// ---------------------------------------------------------------- reporting

const { summarize } = require('./lib/measure')

function ratio(base, ours) {
  if (base == null || ours == null) return null
  if (ours === 0) return base === 0 ? 1 : Infinity
  return base / ours
}

function fmtMs(v) {
  if (v == null) return '—'
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`
  if (v >= 100) return v.toFixed(0)
  if (v >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

function fmtBytes(v) {
  if (v == null) return '—'
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} GB`
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)} MB`
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} KB`
  return `${v} B`
}

function fmtRatio(v) {
  if (v == null) return '—'
  if (v === Infinity) return '∞'
  if (v >= 100) return `${v.toFixed(0)}×`
  if (v >= 10) return `${v.toFixed(1)}×`
  if (v >= 0.1 || v === 0) return `${v.toFixed(2)}×`
  return `${v.toPrecision(2)}×`
}

function pad(cells, widths) {
  return cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ')
}

const RATIO_METRICS = [
  ['wallMs', 'wall'],
  ['blockMaxMs', 'block'],
  ['stallMs', 'stall'],
  ['busyMs', 'busy'],
  ['cpuMs', 'cpu'],
  ['writeBytes', 'written'],
  ['maxRSSKB', 'rss'],
]
// Between the Redis systems, bytes written to disk mean nothing (Redis has persistence off): bytes
// sent to Redis and received from it instead.
const REDIS_RATIO_METRICS = [
  ['wallMs', 'wall'],
  ['blockMaxMs', 'block'],
  ['stallMs', 'stall'],
  ['busyMs', 'busy'],
  ['cpuMs', 'cpu'],
  ['redisInBytes', 'to redis'],
  ['redisOutBytes', 'from redis'],
  ['maxRSSKB', 'rss'],
]
/** Ratios of each workload's own figures, after the common ones (`p99.` keys read `row.p99`). */
const EXTRA_RATIO_METRICS = {
  W2: [['p99.wallMs', 'p99']],
  W7: [
    ['diskOpenPerSession', 'disk open'],
    ['diskClosedPerSession', 'disk closed'],
  ],
  W9: [['rssPerSession', 'rss per session']],
}
const ratioMetrics = (baseline, workload) => [...(REDIS_SYSTEMS.has(baseline) ? REDIS_RATIO_METRICS : RATIO_METRICS), ...(EXTRA_RATIO_METRICS[workload] || [])]
/** A figure of a system's row by ratio key: its median, or with `p99.` its p99. */
const statOf = (row, key) => (key.startsWith('p99.') ? row.p99 && row.p99[key.slice(4)] : row.median[key])

function table(groups) {
  const lines = []
  const widths = [12, 3, 9, 9, 9, 9, 7, 8, 9, 7, 9, 9, 7, 9, 10]
  let workload
  for (const g of groups) {
    // Bytes to and from Redis, in the groups where a system ran on Redis.
    const withRedis = g.rows.some((r) => REDIS_SYSTEMS.has(r.system))
    const head = ['system', 'n', 'wall ms', 'p99 ms', 'block max', 'block p99', 'stall', 'idle max', 'busy ms', 'queued', 'cpu ms', 'written', 'rss MB', ...(withRedis ? ['to redis', 'from redis'] : [])]
    if (g.workload !== workload) {
      workload = g.workload
      lines.push('', `== ${TITLES[workload]}`)
    }
    lines.push('', `-- ${g.workload} ${g.variant}`, pad(head, widths))
    for (const r of g.rows) {
      if (r.error) {
        lines.push(pad([r.system, '', 'ERROR'], widths.slice(0, 3)) + '  ' + r.error.split('\n')[0])
        continue
      }
      const m = r.median
      const rowCells = [
        r.system + (r.verify && r.verify.ok === false ? '!' : ''),
        r.samples.length,
        fmtMs(m.wallMs),
        fmtMs(r.p99 && r.p99.wallMs),
        fmtMs(m.blockMaxMs),
        fmtMs(m.blockP99Ms),
        fmtMs(m.stallMs),
        r.noise ? fmtMs(r.noise.blockMaxMs) : '',
        fmtMs(m.busyMs),
        fmtMs(m.queuedMs),
        fmtMs(m.cpuMs),
        REDIS_SYSTEMS.has(r.system) ? '—' : fmtBytes(m.writeBytes),
        (r.maxRSSKB / 1024).toFixed(0),
        ...(withRedis ? [fmtBytes(m.redisInBytes), fmtBytes(m.redisOutBytes)] : []),
      ]
      lines.push(pad(rowCells, widths))
    }
    for (const [key, label, format] of FIGURES[g.workload] || []) {
      const parts = g.rows.filter((r) => !r.error && r.median[key] != null).map((r) => `${r.system} ${format(r.median[key])}`)
      if (parts.length) lines.push(`   ${label}: ${parts.join(', ')}`)
    }
    for (const [baseline, ratios] of Object.entries(g.ratios)) {
      const parts = ratioMetrics(baseline, g.workload).map(([k, name]) => `${name} ${fmtRatio(ratios[k])}`)
      lines.push(`   ${baseline} ÷ ${BASELINES[g.workload][baseline]}: ${parts.join(', ')}`)
    }
    const bad = g.rows.filter((r) => r.verify && r.verify.ok === false)
    if (bad.length) lines.push(`   VERIFICATION FAILED: ${bad.map((r) => r.system).join(', ')}`)
    const failedChecks = g.rows.filter((r) => r.samples && [...r.samples, ...(r.probeSamples || [])].some((s) => s.check === false))
    if (failedChecks.length) lines.push(`   per-rep check failed: ${failedChecks.map((r) => r.system).join(', ')}`)
  }
  return lines.join('\n')
}

function machine(tmp) {
  const cpus = os.cpus()
  const sh = (cmd, args, cwd) => {
    try {
      return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return null
    }
  }
  const addon = addonIdentity()
  const version = (name) => {
    try {
      return require(`${name}/package.json`).version
    } catch {
      return null
    }
  }
  return {
    cpu: cpus[0] && cpus[0].model,
    cores: cpus.length,
    memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    tmpDir: tmp,
    tmpFs: fsTypeOf(tmp),
    gitCommit: sh('git', ['rev-parse', 'HEAD'], ROOT),
    gitDirty: sh('git', ['status', '--porcelain', '--', 'src', 'lib', 'index.js'], ROOT) ? true : false,
    addon,
    packages: {
      ws: version('ws'),
      'write-file-atomic': version('write-file-atomic'),
      ioredis: version('ioredis'),
      'better-sqlite3': version('better-sqlite3'),
      lmdb: version('lmdb'),
    },
    sqlite: sqliteVersion(),
  }
}

/** The SQLite library better-sqlite3 was built with, if it loads. */
function sqliteVersion() {
  try {
    const db = new (require('better-sqlite3'))(':memory:')
    const v = db.prepare('SELECT sqlite_version()').pluck().get()
    db.close()
    return v
  } catch {
    return null
  }
}

/** Which addon binary is in place (it must not change during a run). */
function addonIdentity() {
  const file = fs.readdirSync(ROOT).find((n) => n.endsWith('.node'))
  if (!file) return null
  const full = path.join(ROOT, file)
  return {
    file,
    sha256: crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex'),
    mtime: fs.statSync(full).mtime.toISOString(),
  }
}

/** The file system type of the mount holding `dir`, from /proc/mounts (Linux). */
function fsTypeOf(dir) {
  try {
    let best = null
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mount, type] = line.split(' ')
      if (!mount) continue
      const m = mount.replace(/\\040/g, ' ')
      if ((dir === m || dir.startsWith(m.endsWith('/') ? m : m + '/')) && (!best || m.length > best.m.length)) best = { m, type }
    }
    return best && best.type
  } catch {
    return null
  }
}

/** W4: where the two systems' results differ, top-level field by field. */
function compareW4(files) {
  const [x, y] = files.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')))
  const { canonicalText } = require('./baselines/js-merge')
  const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])]
  return keys.filter((k) => canonicalText(x[k]) !== canonicalText(y[k]))
}

// ---------------------------------------------------------------- main

let redis = null

async function main() {
  const started = Date.now()
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mia-bench-'))
  log(`mia-narrative-session benchmarks${QUICK ? ' (BENCH_QUICK)' : ''}; temp dir ${tmp}`)
  const cleanup = () => {
    if (process.env.BENCH_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true })
  }
  process.on('SIGINT', async () => {
    if (redis) await redis.stop()
    cleanup()
    process.exit(130)
  })
  try {
    log('generating fixtures …')
    const { manifest, file: manifestFile } = writeFixtures(path.join(tmp, 'fixtures'))
    log(`  done in ${manifest.seconds.toFixed(1)} s: ${SIZE_KEYS.map((s) => `${s} = ${manifest.sizes[s].bytes} B / ${manifest.sizes[s].entries} entries`).join(', ')}`)

    // Contenders whose package cannot be loaded here are left out, with a note.
    const missing = Object.fromEntries(Object.entries(availability()).filter(([, reason]) => reason))
    const contenderNotes = Object.entries(missing).map(([name, reason]) => `${name} skipped: ${reason} (npm install builds it)`)
    for (const note of contenderNotes) log(`NOTE: ${note}`)

    // The Redis systems need a redis-server: the harness's own, for this run only.
    let redisNote = null
    const wantsRedis = process.env.BENCH_REDIS !== '0' && plan(true, missing).some((j) => REDIS_SYSTEMS.has(j.system))
    if (wantsRedis) {
      const server = await redisLib.startRedis(path.join(tmp, 'redis'))
      if (server.missing) {
        redisNote = `Redis systems skipped: ${server.reason} (set REDIS_SERVER, or install redis-server)`
        log(`NOTE: ${redisNote}`)
      } else {
        redis = server
        log(`redis-server ${redis.version} on ${redis.url} (pid ${redis.pid}, persistence off)`)
      }
    } else if (process.env.BENCH_REDIS === '0') {
      redisNote = 'Redis systems left out (BENCH_REDIS=0)'
    }
    const redisAdmin = redis ? await redisLib.RespClient.connect(redis.port) : null

    const addonAtStart = addonIdentity()
    const results = []
    const jobs = plan(!!redis, missing)
    // The jobs of one variant run side by side, interleaved (BENCH_INTERLEAVE=0: one at a time).
    const batches = []
    jobs.forEach((job, i) => {
      const last = batches[batches.length - 1]
      if (INTERLEAVE && last && last[0].job.workload === job.workload && last[0].job.variant === job.variant) last.push({ i, job })
      else batches.push([{ i, job }])
    })
    for (const batch of batches) {
      const specs = batch.map(({ i, job }) => {
        const workDir = path.join(tmp, 'work', `${i}`)
        fs.mkdirSync(workDir, { recursive: true })
        if (REDIS_SYSTEMS.has(job.system)) Object.assign(job, { redisUrl: redis.url, keyPrefix: `bench:${i}:${job.workload.toLowerCase()}:${job.system}:` })
        return { ...job, manifest: manifestFile, workDir }
      })
      const outcomes = await runInterleaved(specs)
      // Untimed, once no job of the batch runs: the next variant starts on an empty Redis and no
      // work directories.
      if (batch.some(({ job }) => REDIS_SYSTEMS.has(job.system))) await redisAdmin.command('FLUSHALL')
      for (const spec of specs) fs.rmSync(spec.workDir, { recursive: true, force: true })
      batch.forEach(({ i, job }, k) => {
        const result = outcomes[k]
        const row = { ...job, ...result }
        if (!result.error) Object.assign(row, summarize(result.samples, result.probeSamples))
        results.push(row)
        const status = result.error ? `ERROR ${result.error.split('\n')[0]}` : `median ${fmtMs(row.median.wallMs)}${row.median.wallMs >= 1000 ? '' : ' ms'}${result.verify.ok ? '' : ' VERIFY FAILED'}`
        log(`  [${i + 1}/${jobs.length}] ${job.workload} ${job.variant} ${job.system}: ${status} (${result.seconds.toFixed(1)} s${batch.length > 1 ? `, ${batch.length} interleaved` : ''})`)
      })
    }

    // Group by workload + variant; ratios are baseline ÷ ours, from medians of this run.
    const groups = []
    for (const row of results) {
      let g = groups.find((x) => x.workload === row.workload && x.variant === row.variant)
      if (!g) groups.push((g = { workload: row.workload, variant: row.variant, size: row.size, rows: [], ratios: {} }))
      g.rows.push(row)
    }
    for (const g of groups) {
      for (const [name, against] of Object.entries(BASELINES[g.workload])) {
        const mine = g.rows.find((r) => r.system === against && !r.error)
        const base = g.rows.find((r) => r.system === name && !r.error)
        if (!mine || !base) continue
        g.ratios[name] = {}
        for (const [k] of ratioMetrics(name, g.workload)) {
          g.ratios[name][k] = k === 'maxRSSKB' ? ratio(base.maxRSSKB, mine.maxRSSKB) : ratio(statOf(base, k), statOf(mine, k))
        }
      }
      if (g.workload === 'W4') {
        const files = g.rows.filter((r) => r.verify && r.verify.resultFile).map((r) => r.verify.resultFile)
        if (files.length === 2) {
          const differs = compareW4(files)
          g.agreement = { sameResult: differs.length === 0, fieldsThatDiffer: differs }
        }
        for (const r of g.rows) if (r.verify) delete r.verify.resultFile
      }
    }

    const summary = contendersSummary.summarize(groups, SIZE_KEYS)
    const features = Object.assign({}, ...results.filter((r) => r.features && r.system.startsWith('ours')).map((r) => r.features))
    const info = machine(tmp)
    info.redisServer = redis ? { version: redis.version, binary: redisLib.REDIS_SERVER, options: '--save "" --appendonly no --bind 127.0.0.1' } : null
    if (redisAdmin) redisAdmin.close()
    info.addonChangedDuringRun = !!(addonAtStart && info.addon && addonAtStart.sha256 !== info.addon.sha256)
    if (info.addonChangedDuringRun) info.addonAtStart = addonAtStart
    const output = {
      generatedAt: new Date().toISOString(),
      command: 'npm run bench',
      quick: QUICK,
      durationSeconds: (Date.now() - started) / 1000,
      machine: info,
      features,
      notes: [
        INTERLEAVE
          ? 'All figures are medians over the measured repetitions, after warm-ups. Every job ran in its own process; the jobs of one variant ran side by side, interleaved: each set up, then did its work (warm-ups, repetitions, verification) only in turns handed out one process at a time, round robin, so that their repetitions alternate.'
          : 'All figures are medians over the measured repetitions, after warm-ups; every job ran in its own process, one at a time (BENCH_INTERLEAVE=0).',
        'p99: the 99th percentile of wall time, nearest rank (of 200 samples the 3rd-longest; of 100 or fewer, the longest).',
        'Contenders (bench/contenders/): sqlite = better-sqlite3, WAL, synchronous=FULL, normalised (a row per chart, action, beat and entry, a row for the session\'s fields with the counts list() reports), one transaction per write, on Node\'s main thread; sqlite-group = the same with the writes issued at once committed as one transaction at the next turn of the event loop; lmdb = lmdb-js with its defaults (sync on, writes of one turn batched into one transaction, overlappingSync), every write awaiting its transaction\'s flushed promise; floor = one file per session, an append is a write + fdatasync (W2: synchronous calls on the main thread; W6/W7: fs promises on a 64-thread pool, appends to one file grouped into one writev + fdatasync, new files\' directory entries sharing directory fsyncs).',
        'W6: 100 small sessions (stored and open before the clock starts), 20 one-entry appends each, all 2,000 issued at once; each resolves once durable; opsPerSec = 2,000 ÷ wall. W7: small sessions (~2.7 KB JSON) created durably into an empty store, 100 in flight; usPerSession = wall ÷ sessions; disk = st_blocks × 512 of every file and directory of the store ÷ sessions, right after the last creation (open) and after close (closed). W8: list() on a new store instance (new connection, environment opened again) over sessions stored untimed by bench/seed.js. W9: RSS delta (after GC) of loading the stored small sessions by a one-entry merge each (ours) or readFile + JSON.parse + push into a Map (naive), ÷ sessions; timesJson = that ÷ the mean JSON size. W10: the README\'s first merge() call as shown (ours, options { origin }) and with returnSession: false (ours-lean), on a loaded 10 MB session.',
        'blockMaxMs / blockP99Ms: monitorEventLoopDelay (1 ms resolution) max / p99 minus the 1 ms resolution: the longest stretch the main thread was blocked. noise: the same (blockMaxMs, the table\'s "idle max") and the stall probe\'s reading (stallMs), measured in each process while it does nothing, over noise.windowMs (300 ms; 2 s for W5, the time a sweep may take).',
        'busyMs: event-loop utilisation (active time) of the main thread during the operation.',
        'queuedMs: the total time the main thread was ready to run but waited for a core during the operation (Linux schedstat).',
        'cpuMs: process.cpuUsage() delta, user + system, all threads. writeBytes: /proc/self/io write_bytes delta (page-granular, all threads); wcharBytes: bytes passed to write syscalls (sockets included).',
        'maxRSSKB: process.resourceUsage().maxRSS of the job process, taken before verification.',
        'ratios: baseline ÷ ours (above 1: ours uses less).',
        'Event-loop delay also counts time the main thread was runnable but not scheduled (2 cores shared with tokio threads, the ws client and anything else running); busyMs does not. loadavg: the 1-minute load average before and after each job.',
        'W1 cold: a new store instance (ours) or a fresh readFile + JSON.parse (naive); the file is in the page cache either way. The ws client is a separate process and acknowledges each message.',
        'W1 ours and ours-redis: the stored session is as the store writes it (the fixture merged in once, with one config value, and the store closed, which writes its snapshot, marked as its own: see docs/storage.md); a cold load then sends the snapshot\'s text unparsed. W1 10MB cold, unmarked snapshot: the generator\'s file (or, with Redis, the same bytes SET as the snapshot) as it is, which every cold load parses, checks and serialises.',
        'W1 send-only: no load at all, only the send, framed as ours frames it, of the same session text from a Buffer made before the job: the floor that sending the bytes sets, whoever loads them. send-only ÷ ours near 1 means the load adds next to nothing on top of the send.',
        'W3: before each tick (untimed) 100 of the 1,000 open sessions get one new entry. The tick: baselines and ours save those 100 sessions (Promise.all); ours-all calls store.save() on all 1,000 open sessions and the store writes the 100 dirty ones; ours-tick is one store.flush(), the store\'s own autosave tick (what runs every 30 s with no call from the host).',
        'W4: sessions share a 5,000-entry history and diverged by 10,000 entries each (beats, memory, chart fields and clocks too); both systems must produce the same session.',
        'W2 10MB late: each new entry belongs among the last 20 stored ones (another tab whose clock is behind); naive splices it into place, ours moves it into place in the live history.',
        'W5: files carry mtime = updatedAt. The baseline reads every file; the store skips reading files modified after the cutoff. The files are hard links to a master copy, so unlinking one frees no blocks.',
        'Redis systems (W1 to W3): ours-redis is the store with backend "redis"; ioredis is connect-redis\'s way, SET of the whole JSON (with EX) per save and GET + JSON.parse per load. Both use one redis-server the harness starts on 127.0.0.1 with persistence off (no disk writes), every job its own key prefix, FLUSHALL between jobs. Stored sessions are seeded untimed as the fixture JSON (for ours-redis, as the session snapshot with an empty log). ratios for ioredis are ioredis ÷ ours-redis.',
        'redisInBytes / redisOutBytes: INFO stats total_net_input_bytes / total_net_output_bytes deltas of the redis-server across the operation (all its clients, the meter\'s own INFO calls taken out): bytes sent to Redis and received from it. For ours-redis this includes PUBLISH and the subscriber connection.',
        'W1 cold with Redis: a new store instance (ours-redis; opened untimed) or a fresh GET + JSON.parse (ioredis). W2 with Redis: ours-redis is one merge({ durable: true, returnSession: false }), which appends one record to the session\'s Redis log in a WATCH/MULTI/EXEC and PUBLISHes; ioredis pushes the entry and SETs the whole JSON. W3 with Redis: ours-redis saves its 100 dirty sessions, ioredis SETs them (Promise.all on one connection).',
      ],
      redis: redis ? { url: redis.url, version: redis.version } : { skipped: redisNote },
      contendersSkipped: missing,
      contenders: summary,
      fixtures: {
        sizes: manifest.sizes,
        w3: manifest.w3 && { sessions: manifest.w3.sessions.length, meanBytes: manifest.w3.meanBytes },
        w4: manifest.w4 && { baseEntries: manifest.w4.baseEntries, diverged: manifest.w4.diverged, entriesEach: manifest.w4.entriesEach, bytesEach: manifest.w4.bytesEach, expectedEntries: manifest.w4.expectedEntries },
        w5: manifest.w5 && { count: manifest.w5.count, expired: manifest.w5.expired, now: new Date(manifest.w5.now).toISOString(), ttlDays: manifest.w5.ttlDays },
        generationSeconds: manifest.seconds,
      },
      groups: groups.map((g) => ({
        workload: g.workload,
        title: TITLES[g.workload],
        variant: g.variant,
        sessionBytes: g.size ? manifest.sizes[g.size].bytes : undefined,
        ratios: g.ratios,
        ratiosAgainst: Object.fromEntries(Object.keys(g.ratios).map((b) => [b, BASELINES[g.workload][b]])),
        agreement: g.agreement,
        systems: g.rows.map((r) => ({
          system: r.system,
          error: r.error,
          reps: r.reps,
          warmup: r.warmup,
          median: r.median,
          p99: r.p99,
          max: r.max,
          maxRSSKB: r.maxRSSKB,
          keyPrefix: r.keyPrefix,
          noise: r.noise,
          loadavg: r.loadavg,
          verify: r.verify,
          features: r.features,
          samples: r.samples,
        })),
      })),
    }

    fs.mkdirSync(OUT, { recursive: true })
    const write = (name, text) => {
      const file = path.join(OUT, name)
      fs.writeFileSync(`${file}.tmp`, text)
      fs.renameSync(`${file}.tmp`, file)
      return file
    }
    const jsonFile = write('latest.json', JSON.stringify(output, null, 2) + '\n')
    const w2 = groups.filter((g) => g.workload === 'W2' && !g.variant.endsWith('late'))
    const svgFiles = []
    if (w2.length) {
      svgFiles.push(write('w2.svg', drawW2(w2.map((g) => ({ bytes: manifest.sizes[g.size].bytes, label: gen.SIZES[g.size].label, rows: g.rows })), { quick: QUICK, machine: info })))
    }
    if (summary.length) svgFiles.push(write('contenders.svg', drawContenders(summary, { quick: QUICK, machine: info })))

    console.log(`mia-narrative-session benchmark — ${info.cpu}, ${info.cores} cores, ${info.os}, Node ${info.node}, ${info.tmpFs}${QUICK ? ' — BENCH_QUICK' : ''}`)
    const yesNo = (v) => (v === undefined ? 'not exercised' : v ? 'yes' : 'no')
    console.log(`addon features used: store.loadRaw ${yesNo(features.loadRaw)}; merge { returnSession: false, durable: true }`)
    console.log('medians; block = longest main-thread block (event-loop delay − 1 ms); idle max = the same in that process while idle (300 ms; W5 2 s); busy = main-thread active time; queued = main thread waiting for a core, in total; written = /proc/self/io write_bytes')
    if (redis) console.log(`Redis systems on redis-server ${redis.version} (persistence off); to/from redis = INFO stats total_net_input/output_bytes deltas`)
    if (redisNote) console.log(`NOTE: ${redisNote}`)
    for (const note of contenderNotes) console.log(`NOTE: ${note}`)
    console.log(table(groups))
    if (summary.length) {
      console.log('\n== Contenders: ours against SQLite, LMDB and the floor (medians; the targets set for ours)\n')
      console.log(contendersSummary.summaryTable(summary))
    }
    for (const g of groups.filter((x) => x.agreement)) {
      console.log(`\nW4 (${g.variant}) results agree: ${g.agreement.sameResult ? 'yes (identical canonical JSON)' : `NO — differ in ${g.agreement.fieldsThatDiffer.join(', ')}`}`)
    }
    const load = Math.max(...results.map((r) => (r.loadavg ? Math.max(r.loadavg.before, r.loadavg.after) : 0)))
    console.log(`\nhighest 1-minute load average seen at a job boundary: ${load.toFixed(2)} on ${os.cpus().length} cores${load > os.cpus().length ? ' (other work was running: blocking figures include preemption)' : ''}`)
    if (info.addonChangedDuringRun) console.log('\nWARNING: the addon binary changed during the run; figures mix two builds. Run again.')
    const noise = results.filter((r) => r.noise).map((r) => r.noise.blockMaxMs)
    if (noise.length) console.log(`idle event-loop noise (block max while idle, per process): median ${fmtMs(noise.sort((a, b) => a - b)[noise.length >> 1])} ms, worst ${fmtMs(Math.max(...noise))} ms`)
    console.log(`\nwrote ${[jsonFile, ...svgFiles].map((f) => path.relative(process.cwd(), f)).join(', ')} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
    if (results.some((r) => r.error || (r.verify && r.verify.ok === false))) process.exitCode = 1
  } finally {
    if (redis) await redis.stop()
    cleanup()
    if (process.env.BENCH_KEEP === '1') log(`kept ${tmp}`)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
