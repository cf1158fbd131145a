'use strict'
// Stores small sessions 0 … count−1 (generate.js `smallSession`) in a system, in a process of its
// own: `node bench/seed.js <system> <dir> <count>`. Prints { sessions, meanJsonBytes, seconds }.
//
// W8 (list) and W9 (memory per session) need many stored sessions before they start. Seeding them
// here keeps the job's own process clean: what the seeding allocated and freed is not memory the
// job's allocator can hand back out (W9 reads the RSS delta of loading), and its garbage is not in
// the job's heap. `naive` (W9's reference) is a JSON file per session, as NaiveStore writes it.

const fs = require('node:fs')
const path = require('node:path')

const gen = require('./generate')
const { openSystem } = require('./contenders')

/** Sessions per chunk; ours gets a new store instance every STORE_CHUNK, so memory stays flat. */
const CHUNK = 1000
const STORE_CHUNK = 10_000

async function main() {
  const [system, dir, countText] = process.argv.slice(2)
  const count = Number(countText)
  const started = Date.now()
  let jsonBytes = 0
  let store = null
  for (let first = 0; first < count; first += CHUNK) {
    const sessions = []
    for (let i = first; i < Math.min(count, first + CHUNK); i++) {
      const session = gen.smallSession(i)
      jsonBytes += Buffer.byteLength(JSON.stringify(session))
      sessions.push(session)
    }
    if (system === 'naive') {
      for (const s of sessions) fs.writeFileSync(path.join(dir, `${gen.sessionFileStem(s.userId, s.workspaceId)}.json`), JSON.stringify(s), { mode: 0o600 })
      continue
    }
    if (!store) store = await openSystem(system, dir)
    await store.seed(sessions)
    if (system === 'ours' && (first + CHUNK) % STORE_CHUNK === 0) {
      await store.close()
      store = null
    }
  }
  if (store) await store.close()
  process.stdout.write(JSON.stringify({ sessions: count, meanJsonBytes: Math.round(jsonBytes / count), seconds: (Date.now() - started) / 1000 }) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
