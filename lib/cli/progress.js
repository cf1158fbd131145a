'use strict'
// Progress of a long command on stderr: a bar with counts, rate and time left on a terminal; a
// plain line every second otherwise (a log, a pipe, CI), and nothing with --no-progress.

const cliProgress = require('cli-progress')

/**
 * Starts showing progress of `label` towards `total`. Returns `{ increment(n), update(done),
 * stop() }`.
 * `enabled: false` shows nothing.
 */
function startProgress(label, total, { enabled = true, stream = process.stderr } = {}) {
  if (!enabled) return { increment() {}, update() {}, stop() {} }
  const tty = Boolean(stream.isTTY)
  const started = Date.now()
  const bar = new cliProgress.SingleBar({
    stream,
    format: tty
      ? `${label} [{bar}] {value}/{total} {rate}/s, {eta_formatted} left`
      : `${label}: {value}/{total} ({rate}/s)`,
    noTTYOutput: true,
    notTTYSchedule: 1000,
    clearOnComplete: true,
    hideCursor: tty,
    gracefulExit: false,
    barsize: 30,
  })
  let done = 0
  const rate = () => {
    const seconds = (Date.now() - started) / 1000
    return seconds > 0 ? Math.round(done / seconds) : 0
  }
  bar.start(total, 0, { rate: 0 })
  return {
    increment(n = 1) {
      done += n
      bar.update(done, { rate: rate() })
    },
    update(value) {
      done = value
      bar.update(done, { rate: rate() })
    },
    stop() {
      bar.update(done, { rate: rate() })
      bar.stop()
    },
  }
}

module.exports = { startProgress }
