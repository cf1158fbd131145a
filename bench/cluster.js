'use strict'
// The Redis variants of the benchmark (issue 23): the store on one Redis node, on one node with a
// replica and `redisWaitReplicas: 1`, on a Redis Cluster (3 primaries with a replica each), and on
// that cluster with `redisWaitReplicas: 1`. `node bench/cluster.js` runs only these workloads:
//
// - W2: one durable merge of one conversation entry into a 10 KB / 1 MB / 10 MB session (as in
//   run.js: the store appends one record to the session's log in a WATCH/MULTI/EXEC, then
//   publishes), timed per call in one process.
// - C (concurrent): two store instances in two processes (lib/cluster-instance.js), each running 8
//   merge loops at once into the same 12 sessions (spread over the shards) for 4 s after 1 s of
//   warm-up: acknowledged merges per second, and the latency of each acknowledgement.
//
// Every server is the run's own (redis-server from PATH or REDIS_SERVER, persistence off, on
// 127.0.0.1), started by the test helpers (__test__/helpers/redis-server.js, redis-cluster.js).
// Environment: BENCH_QUICK=1 fewer repetitions and 2 s runs; BENCH_OUT=DIR where cluster.json goes.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { fork, execFileSync } = require('node:child_process')
const { performance } = require('node:perf_hooks')

const gen = require('./generate')
const { startRedis, redisCommand, redisText } = require('../__test__/helpers/redis-server')
const { startCluster } = require('../__test__/helpers/redis-cluster')

const QUICK = process.env.BENCH_QUICK === '1'
const OUT = path.resolve(process.env.BENCH_OUT || path.join(__dirname, 'results'))
const W2_REPS = QUICK ? { '10KB': [20, 3], '1MB': [20, 3], '10MB': [8, 2] } : { '10KB': [100, 10], '1MB': [60, 5], '10MB': [30, 3] }
const C_WARMUP_MS = QUICK ? 500 : 1000
const C_MS = QUICK ? 2000 : 4000
const C_INSTANCES = 2
const C_LOOPS = 8
const C_SESSIONS = 12
const INSTANCE = path.join(__dirname, 'lib', 'cluster-instance.js')

const log = (...args) => process.stderr.write(args.join(' ') + '\n')

function percentile(sorted, p) {
  if (!sorted.length) return null
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

function stats(samples) {
  const sorted = [...samples].sort((a, b) => a - b)
  return { n: sorted.length, median: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] }
}

/** The Redis targets: where the store goes, and how it is opened. */
async function startTargets() {
  const single = await startRedis()
  const primary = await startRedis()
  const replica = await startRedis({ extraArgs: ['--replicaof', '127.0.0.1', String(primary.port)] })
  for (;;) {
    if ((await redisText(replica.port, 'INFO', 'replication')).includes('master_link_status:up')) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const cluster = await startCluster({ primaries: 3, replicas: 1 })
  const targets = [
    { name: 'one node', options: { redisUrl: single.url() }, nodeOf: async () => single.port },
    { name: 'one node + replica, WAIT 1', options: { redisUrl: primary.url(), redisWaitReplicas: 1 }, nodeOf: async () => primary.port },
    { name: 'cluster 3×2', options: { redisUrl: cluster.urls().slice(0, 1) }, nodeOf: async (key) => cluster.primaryOf(await cluster.keyslot(key)) },
    { name: 'cluster 3×2, WAIT 1', options: { redisUrl: cluster.urls().slice(0, 1), redisWaitReplicas: 1 }, nodeOf: async (key) => cluster.primaryOf(await cluster.keyslot(key)) },
  ]
  const stop = async () => {
    await cluster.stop()
    for (const server of [single, primary, replica]) await server.dispose()
  }
  return { targets, stop }
}

async function openStore(target, keyPrefix) {
  const { NarrativeSessionStore } = require('..')
  return NarrativeSessionStore.open({ backend: 'redis', keyPrefix, autosaveIntervalMs: 0, cleanupIntervalMs: 0, ...target.options })
}

/** W2 on `target`: the fixture SET as the session's snapshot (untimed), then timed durable merges. */
async function w2(target, size, keyPrefix) {
  const userId = 'dev-alice'
  const workspaceId = `/home/alice/projects/mia-app-${size.toLowerCase()}`
  const session = gen.generateSession({ seed: 2, size, userId, workspaceId })
  const stem = gen.sessionFileStem(userId, workspaceId)
  const snap = `${keyPrefix}{${stem}}:snap`
  await redisCommand(await target.nodeOf(snap), 'SET', snap, JSON.stringify(session), 'EX', 30 * 86_400)
  const store = await openStore(target, keyPrefix)
  await store.load(userId, workspaceId)
  const [reps, warmup] = W2_REPS[size]
  const after = gen.lastTime(session)
  const samples = []
  for (let i = 0; i < warmup + reps; i++) {
    const update = gen.makeUpdate(1000 + reps, i + 100, after)
    const started = performance.now()
    const cpu = process.cpuUsage()
    await store.merge(userId, workspaceId, update, { origin: 'bench', returnSession: false, durable: true })
    const wallMs = performance.now() - started
    const used = process.cpuUsage(cpu)
    if (i >= warmup) samples.push({ wallMs, cpuMs: (used.user + used.system) / 1000 })
  }
  const { session: stored } = await store.load(userId, workspaceId)
  await store.close()
  const ok = stored.conversationHistory.length === session.conversationHistory.length + warmup + reps
  return { wall: stats(samples.map((s) => s.wallMs)), cpu: stats(samples.map((s) => s.cpuMs)), ok }
}

/** C on `target`: instances in their own processes merging into the same sessions at once. */
async function concurrent(target, keyPrefix) {
  const sessions = Array.from({ length: C_SESSIONS }, (_, n) => [`team-${n}`, `/srv/team-${n}/app`])
  const children = Array.from({ length: C_INSTANCES }, (_, i) =>
    fork(INSTANCE, [JSON.stringify({ options: { backend: 'redis', keyPrefix, ...target.options }, tag: `i${i}`, sessions, loops: C_LOOPS })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  )
  const next = (child, type) => new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m.type === type) {
        child.off('message', onMessage)
        resolve(m)
      }
    }
    child.on('message', onMessage)
    child.once('exit', (code) => reject(new Error(`an instance exited with ${code}`)))
  })
  await Promise.all(children.map((c) => next(c, 'ready')))
  for (const c of children) c.send({ type: 'go', warmupMs: C_WARMUP_MS, runMs: C_MS })
  const reports = await Promise.all(children.map((c) => next(c, 'done')))
  await Promise.all(children.map((c) => new Promise((resolve) => {
    c.once('exit', resolve)
    c.send({ type: 'close' })
  })))
  const latencies = reports.flatMap((r) => r.latencies)
  return {
    mergesPerSecond: latencies.length / (C_MS / 1000),
    latency: stats(latencies),
    refused: reports.reduce((n, r) => n + r.refused, 0),
    errors: reports.flatMap((r) => r.errors).slice(0, 5),
  }
}

const fmt = (v) => (v == null ? '—' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2))

async function main() {
  const started = Date.now()
  log(`Redis variants: W2 and C on one node, one node + replica (WAIT 1), a 3×2 cluster, and the cluster with WAIT 1${QUICK ? ' (BENCH_QUICK)' : ''}`)
  const { targets, stop } = await startTargets()
  const results = []
  try {
    let n = 0
    for (const target of targets) {
      for (const size of Object.keys(gen.SIZES)) {
        const result = await w2(target, size, `bench:cl${++n}:`)
        results.push({ workload: 'W2', variant: size, target: target.name, ...result })
        log(`  W2 ${size} on ${target.name}: median ${fmt(result.wall.median)} ms, p99 ${fmt(result.wall.p99)} ms${result.ok ? '' : ' VERIFY FAILED'}`)
      }
      const result = await concurrent(target, `bench:cl${++n}:`)
      results.push({ workload: 'C', variant: `${C_INSTANCES} instances × ${C_LOOPS} loops, ${C_SESSIONS} sessions`, target: target.name, ...result })
      log(`  C on ${target.name}: ${fmt(result.mergesPerSecond)} merges/s, latency median ${fmt(result.latency.median)} ms, p99 ${fmt(result.latency.p99)} ms`)
    }
  } finally {
    await stop()
  }
  const cpus = os.cpus()
  const output = {
    generatedAt: new Date().toISOString(),
    command: 'node bench/cluster.js',
    quick: QUICK,
    durationSeconds: (Date.now() - started) / 1000,
    machine: { cpu: cpus[0] && cpus[0].model, cores: cpus.length, loadavg: os.loadavg(), node: process.version, redisServer: execFileSync(process.env.REDIS_SERVER || '/usr/bin/redis-server', ['--version']).toString().trim() },
    notes: [
      'Every server runs on this machine, with persistence off, sharing its cores with the store processes: the figures compare the modes, not a network deployment.',
      'W2: one merge({ durable: true, returnSession: false }) of one entry; wall and CPU (all threads of the process) per call.',
      `C: ${C_INSTANCES} processes, each ${C_LOOPS} merge loops at once, round-robin over the same ${C_SESSIONS} sessions; every merge durable; latency from the call to its acknowledgement.`,
      'WAIT 1: a save resolves once one replica has it (redisWaitReplicas: 1); on the cluster each primary has one replica.',
    ],
    results,
  }
  fs.mkdirSync(OUT, { recursive: true })
  const file = path.join(OUT, 'cluster.json')
  fs.writeFileSync(file, JSON.stringify(output, null, 2) + '\n')

  console.log(`Redis variants — ${output.machine.cpu}, ${output.machine.cores} cores, Node ${process.version}${QUICK ? ' — BENCH_QUICK' : ''}`)
  console.log('| workload | ' + targets.map((t) => t.name).join(' | ') + ' |')
  console.log('|---|' + targets.map(() => '---|').join(''))
  const rows = [...new Set(results.map((r) => `${r.workload}|${r.variant}`))]
  for (const row of rows) {
    const cells = targets.map((t) => {
      const r = results.find((x) => `${x.workload}|${x.variant}` === row && x.target === t.name)
      if (!r) return '—'
      if (r.workload === 'W2') return `${fmt(r.wall.median)} ms (p99 ${fmt(r.wall.p99)})`
      return `${fmt(r.mergesPerSecond)}/s, ${fmt(r.latency.median)} ms (p99 ${fmt(r.latency.p99)})`
    })
    console.log(`| ${row.replace('|', ' ')} | ${cells.join(' | ')} |`)
  }
  console.log(`\nwrote ${path.relative(process.cwd(), file)} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  if (results.some((r) => r.ok === false || (r.errors && r.errors.length))) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
