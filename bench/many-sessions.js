'use strict'
// The workloads where many writes or many sessions meet (issue 21), for child.js:
//   W6 100 sessions × 20 durable appends, all issued at once (appends/s)
//   W7 creating small sessions durably, 100 in flight (µs per session), and the disk they take
//   W8 list() of 10,000 / 100,000 stored sessions
//   W9 memory per small session loaded by merge (RSS delta ÷ sessions, against its JSON)
// Each returns a job body for child.js's run(): setup, prepare, rep (timed), after (untimed, adds
// the workload's own figures to the sample), verify. Every system goes through the interface of
// contenders/index.js; ours through the public API only.

const fs = require('node:fs')
const fsp = require('node:fs/promises')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const gen = require('./generate')
const { openSystem, inFlight } = require('./contenders')
const { sleep } = require('./lib/measure')

/** Clients at once in W7 (and W9's loads): each completion starts the next. */
const IN_FLIGHT = 100

/** Bytes on disk of `dir` and everything in it, as du counts them: st_blocks × 512, links once. */
function diskUsage(dir) {
  const seen = new Set()
  let bytes = 0
  const walk = (p) => {
    // A file may go between the directory's read and its stat (a background compaction's temp
    // file, a store's renames): it takes no space then.
    const st = fs.lstatSync(p, { bigint: true, throwIfNoEntry: false })
    if (!st) return
    if (!seen.has(st.ino)) {
      seen.add(st.ino)
      bytes += Number(st.blocks) * 512
    }
    if (st.isDirectory()) for (const name of fs.readdirSync(p)) walk(path.join(p, name))
  }
  walk(dir)
  return bytes
}

/** Stores small sessions 0 … count−1 in `dir` from a process of its own (bench/seed.js). */
function seedInOwnProcess(system, dir, count) {
  const out = execFileSync(process.execPath, [path.join(__dirname, 'seed.js'), system, dir, String(count)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  })
  return JSON.parse(out.trim().split('\n').pop())
}

/** A job's repetitions as run.js planned them: measured, warm-ups, with the stall probe. */
const repetitions = ({ reps, warmup, probeReps }) => ({ reps, warmup, probeReps })

const gc = typeof global.gc === 'function' ? global.gc : () => {}

/** The process's RSS once garbage is collected and the loop has settled. */
async function settledRss() {
  gc()
  await sleep(100)
  gc()
  return process.memoryUsage().rss
}

/** One new conversation entry for `session`, the n-th of its stream, after its last one. */
const entryFor = (session, i, n) => gen.makeUpdate(700_000 + i, n, gen.lastTime(session)).conversationHistory[0]

// ---------------------------------------------------------------- W6: concurrent durable appends

function concurrentAppends({ job, dataDir }) {
  const { sessions: count, appendsEach } = job
  const sessions = Array.from({ length: count }, (_, i) => gen.smallSession(i))
  const appended = new Array(count).fill(0)
  let stream = 0
  return {
    ...repetitions(job),
    async setup() {
      const system = await openSystem(job.system, dataDir)
      await system.seed(sessions)
      return { system }
    },
    // Untimed: the appends of one repetition, as every session's client sends its 20 at once.
    prepare(state) {
      state.appends = []
      for (let k = 0; k < appendsEach; k++, stream++) {
        sessions.forEach((s, i) => state.appends.push([i, entryFor(s, i, stream)]))
      }
    },
    async rep(state) {
      const { system, appends } = state
      await Promise.all(appends.map(([i, entry]) => system.append(sessions[i].userId, sessions[i].workspaceId, entry).then(() => appended[i]++)))
      return appends.length
    },
    check: (n) => n === count * appendsEach,
    after(state, i, sample) {
      sample.opsPerSec = (state.appends.length * 1000) / sample.wallMs
    },
    async verify(state) {
      const counts = []
      for (const i of [0, count - 1]) counts.push(await state.system.entryCount(sessions[i].userId, sessions[i].workspaceId))
      const expected = [0, count - 1].map((i) => sessions[i].conversationHistory.length + appended[i])
      await state.system.close()
      return { ok: counts.every((c, k) => c === expected[k]), entries: counts, expected, appendsPerRep: count * appendsEach }
    },
  }
}

// ---------------------------------------------------------------- W7: create sessions durably

function createSessions({ job, dataDir }) {
  const { sessions: count } = job
  let sessions
  let lastDir
  return {
    ...repetitions(job),
    setup() {
      sessions = Array.from({ length: count }, (_, i) => gen.smallSession(i))
      const jsonBytes = sessions.reduce((sum, s) => sum + Buffer.byteLength(JSON.stringify(s)), 0)
      return { meanJsonBytes: Math.round(jsonBytes / count) }
    },
    // Untimed: an empty directory and a new store on it. A warm-up creates 200 sessions.
    async prepare(state, i) {
      state.dir = path.join(dataDir, `rep${i + 100}`)
      fs.mkdirSync(state.dir, { mode: 0o700 })
      state.system = await openSystem(job.system, state.dir)
      state.sessions = i < 0 ? sessions.slice(0, 200) : sessions
    },
    async rep(state) {
      await inFlight(state.sessions, IN_FLIGHT, (s) => state.system.create(s))
      return state.sessions.length
    },
    check: (n) => n === count || n === 200,
    // Disk per session: right after the last creation is acknowledged (the store open), and once
    // the store is closed (what stays at rest).
    async after(state, i, sample) {
      const n = state.sessions.length
      sample.usPerSession = (sample.wallMs * 1000) / n
      sample.diskOpenPerSession = diskUsage(state.dir) / n
      await state.system.close()
      sample.diskClosedPerSession = diskUsage(state.dir) / n
      sample.meanJsonBytes = state.meanJsonBytes
      if (i === job.reps - 1) lastDir = state.dir
      else fs.rmSync(state.dir, { recursive: true, force: true })
    },
    // The last timed repetition's store, reopened: every session there, the last one whole.
    async verify() {
      const system = await openSystem(job.system, lastDir)
      const last = sessions[count - 1]
      const stored = system.list ? (await system.list()).length : fs.readdirSync(lastDir).filter((n) => n.endsWith('.log')).length
      const entries = await system.entryCount(last.userId, last.workspaceId)
      await system.close()
      return { ok: stored === count && entries === last.conversationHistory.length, stored, expected: count, entries }
    },
  }
}

// ---------------------------------------------------------------- W8: list()

function listSessions({ job, dataDir }) {
  const { sessions: count } = job
  let seeded
  return {
    ...repetitions(job),
    setup() {
      seeded = seedInOwnProcess(job.system, dataDir, count)
      return {}
    },
    // Untimed: a new instance of the store (ours: a new store; SQLite: a new connection; LMDB:
    // the environment opened again), so each list() is a first one.
    async prepare(state) {
      state.system = await openSystem(job.system, dataDir)
    },
    async rep(state) {
      const summaries = await state.system.list()
      state.first = summaries[0]
      return summaries.length
    },
    check: (n) => n === count,
    async after(state) {
      await state.system.close()
    },
    verify(state) {
      const first = gen.smallSession(0)
      const ok = state.first.userId === first.userId && state.first.entries === first.conversationHistory.length
      return { ok, sessions: count, seedSeconds: seeded.seconds, first: state.first }
    },
  }
}

// ---------------------------------------------------------------- W9: memory per loaded session

function memoryPerSession({ job, dataDir }) {
  const { sessions: count } = job
  let seeded
  let updates
  return {
    ...repetitions(job),
    setup() {
      seeded = seedInOwnProcess(job.system, dataDir, count)
      // Ids and one new entry per session, made before the RSS is read.
      updates = Array.from({ length: count }, (_, i) => {
        const userId = `small-user-${String(i).padStart(6, '0')}`
        const workspaceId = `/home/${userId}/project`
        return { userId, workspaceId, stem: gen.sessionFileStem(userId, workspaceId), update: gen.makeUpdate(800_000 + i, 0, gen.BASE_TIME + 86_400_000) }
      })
      return {}
    },
    async prepare(state) {
      if (job.system === 'ours') state.system = await openSystem('ours', dataDir)
      state.rssBefore = await settledRss()
    },
    // Ours: a merge of one entry into each stored session, which loads it. naive (a host holding
    // sessions as objects): read, JSON.parse, push the entry, kept in a Map.
    async rep(state) {
      if (job.system === 'ours') {
        const { store } = state.system
        await inFlight(updates, IN_FLIGHT, (u) => store.merge(u.userId, u.workspaceId, u.update, { origin: 'bench', returnSession: false }))
        return count
      }
      state.held = new Map()
      await inFlight(updates, IN_FLIGHT, async (u) => {
        const session = JSON.parse(await fsp.readFile(path.join(dataDir, `${u.stem}.json`), 'utf8'))
        session.conversationHistory.push(u.update.conversationHistory[0])
        state.held.set(u.stem, session)
      })
      return state.held.size
    },
    check: (n) => n === count,
    async after(state, i, sample) {
      const entryBytes = Buffer.byteLength(JSON.stringify(updates[0].update.conversationHistory[0]))
      sample.rssPerSession = ((await settledRss()) - state.rssBefore) / count
      sample.meanJsonBytes = seeded.meanJsonBytes + entryBytes
      sample.timesJson = sample.rssPerSession / sample.meanJsonBytes
      state.heldSessions = state.held ? state.held.size : count
      if (state.system) await state.system.close()
      state.held = null
    },
    verify(state) {
      return { ok: state.heldSessions === count, sessions: count, seedSeconds: seeded.seconds }
    },
  }
}

module.exports = { W6: concurrentAppends, W7: createSessions, W8: listSessions, W9: memoryPerSession, diskUsage }
