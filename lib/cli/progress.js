'use strict'
// Progress of a long command on stderr: a bar with counts, rate and time left on a terminal (redrawn
// at most ten times a second); a plain line when it starts, every second and when it ends otherwise
// (a log, a pipe, CI); nothing with --no-progress.

const BAR_WIDTH = 30

/**
 * Starts showing progress of `label` towards `total`. Returns `{ increment(n), update(done),
 * stop() }`. `enabled: false` shows nothing.
 */
function startProgress(label, total, { enabled = true, stream = process.stderr } = {}) {
  if (!enabled) return { increment() {}, update() {}, stop() {} }
  const tty = Boolean(stream.isTTY)
  const started = Date.now()
  let done = 0
  let drawnAt = 0
  let stopped = false

  const rate = () => {
    const seconds = (Date.now() - started) / 1000
    return seconds > 0 ? Math.round(done / seconds) : 0
  }
  const line = () => {
    if (!tty) return `${label}: ${done}/${total} (${rate()}/s)\n`
    const filled = total > 0 ? Math.min(BAR_WIDTH, Math.round((done / total) * BAR_WIDTH)) : BAR_WIDTH
    const perSecond = rate()
    const left = perSecond > 0 ? `${Math.ceil((total - done) / perSecond)}s` : '?'
    return `\r${label} [${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}] ${done}/${total} ${perSecond}/s, ${left} left\x1b[K`
  }
  const draw = (force) => {
    const now = Date.now()
    if (!force && now - drawnAt < (tty ? 100 : 1000)) return
    drawnAt = now
    stream.write(line())
  }
  // A plain line every second even while nothing moves (a slow Redis); the timer never keeps the
  // process alive.
  const timer = tty ? null : setInterval(() => draw(true), 1000)
  timer?.unref()
  draw(true)

  return {
    increment(n = 1) {
      done += n
      draw(false)
    },
    update(value) {
      done = value
      draw(false)
    },
    stop() {
      if (stopped) return
      stopped = true
      if (timer) clearInterval(timer)
      if (tty) stream.write('\r\x1b[K')
      else draw(true)
    },
  }
}

module.exports = { startProgress }
