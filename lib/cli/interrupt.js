'use strict'
// Ctrl-C during a long command: the first one stops it between two sessions (every write so far
// is whole: each is one locked write or one Redis transaction), the second one exits at once
// (still nothing half-written: a write under way either lands whole or leaves a temp file that
// the TTL sweep removes).

const INTERRUPTED = 130

/** Starts listening for SIGINT; `stopped()` says whether one came. `dispose()` stops listening. */
function watchInterrupt(stream = process.stderr) {
  let count = 0
  const onSignal = () => {
    count += 1
    if (count === 1) {
      stream.write('\nmia-sessions: stopping after the sessions under way (Ctrl-C again to quit now)\n')
    } else {
      stream.write('mia-sessions: quit; what was written so far is whole\n')
      process.exit(INTERRUPTED)
    }
  }
  process.on('SIGINT', onSignal)
  return {
    stopped: () => count > 0,
    dispose: () => process.removeListener('SIGINT', onSignal),
  }
}

/**
 * Runs `work(item)` for every item, `limit` at a time, until done or `shouldStop()`. Resolves once
 * every started call has finished; the first failure rejects after that.
 */
async function forEachLimited(items, limit, work, shouldStop = () => false) {
  let next = 0
  let failure
  const lane = async () => {
    while (next < items.length && failure === undefined && !shouldStop()) {
      const item = items[next++]
      try {
        await work(item)
      } catch (err) {
        failure ??= err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, limit) }, lane))
  if (failure !== undefined) throw failure
}

module.exports = { INTERRUPTED, watchInterrupt, forEachLimited }
