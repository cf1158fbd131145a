'use strict'
// One store instance of bench/cluster.js's concurrent workload (C), in its own process:
//   node cluster-instance.js '{ options, tag, sessions: [[userId, workspaceId], ...], loops }'
// Opens the store with `options`, loads the sessions, says { type: 'ready' }. On { type: 'go',
// warmupMs, runMs } it runs `loops` merge loops at once, each merging one conversation entry at a
// time with durable: true into the sessions in turn (loop k starts at session k), and notes the
// latency of every acknowledgement made after the warm-up and before the end. Reports
// { type: 'done', latencies, refused, errors }; on { type: 'close' } closes the store and exits.

const { performance } = require('node:perf_hooks')
const { NarrativeSessionStore } = require('../..')

const { options, tag, sessions, loops } = JSON.parse(process.argv[2])

async function main() {
  const store = await NarrativeSessionStore.open({ autosaveIntervalMs: 0, cleanupIntervalMs: 0, ...options })
  for (const [userId, workspaceId] of sessions) await store.load(userId, workspaceId)
  process.on('message', async (message) => {
    if (message.type === 'go') {
      const report = await run(store, message)
      process.send({ type: 'done', ...report })
    } else if (message.type === 'close') {
      await store.close()
      process.exit(0)
    }
  })
  process.send({ type: 'ready' })
}

async function run(store, { warmupMs, runMs }) {
  const start = performance.now()
  const measureFrom = start + warmupMs
  const end = measureFrom + runMs
  const latencies = []
  const errors = []
  let refused = 0
  let n = 0
  const loop = async (k) => {
    for (let i = k; performance.now() < end; i++) {
      const [userId, workspaceId] = sessions[i % sessions.length]
      const id = `${tag}-${n++}`
      const t = performance.now()
      try {
        await store.merge(userId, workspaceId, { conversationHistory: [{ id, role: 'user', content: `message ${id}` }] }, { origin: tag, returnSession: false, durable: true })
      } catch (err) {
        if (err.code === 'EUNAVAILABLE') refused++
        else errors.push(`${err.code}: ${err.message}`)
        continue
      }
      const done = performance.now()
      if (t >= measureFrom && done <= end) latencies.push(done - t)
    }
  }
  await Promise.all(Array.from({ length: loops }, (_, k) => loop(k)))
  return { latencies, refused, errors }
}

main().catch((err) => {
  process.stderr.write(`instance ${tag} failed: ${err && err.stack}\n`)
  process.exit(1)
})
