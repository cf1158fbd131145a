'use strict'
// Baseline for W5: a straightforward JavaScript TTL sweep, as session-file-store's reaper does it.
// List the directory, read every session file with fs.promises, parse it, and unlink it when its
// `updatedAt` is older than the TTL. Files are processed `concurrency` at a time (a plain
// for-await loop, one file at a time, would be several times slower: this is the stronger baseline).

const fsp = require('node:fs/promises')
const path = require('node:path')

async function sweep(dir, { ttlDays = 30, now = Date.now(), concurrency = 32 } = {}) {
  const cutoff = now - ttlDays * 86_400_000
  const names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.json'))
  const report = { scanned: 0, removed: 0, kept: 0, errors: [] }
  let next = 0
  const worker = async () => {
    while (next < names.length) {
      const file = path.join(dir, names[next++])
      report.scanned++
      try {
        const session = JSON.parse(await fsp.readFile(file, 'utf8'))
        const updated = Date.parse(session.updatedAt)
        if (updated < cutoff) {
          await fsp.unlink(file)
          report.removed++
        } else {
          report.kept++
        }
      } catch (err) {
        // Unreadable or half-written: keep it, like the store does.
        if (err.code !== 'ENOENT') report.kept++
        report.errors.push(`${file}: ${err.message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return report
}

module.exports = { sweep }
