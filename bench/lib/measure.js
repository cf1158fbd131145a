'use strict'
// Measuring one repetition: wall time, main-thread blocking, CPU, bytes written.
//
// - Blocking: perf_hooks.monitorEventLoopDelay at 1 ms resolution. Its histogram records each
//   timer interval (≈ 1 ms when the loop is free), so the longest stretch the main thread was
//   blocked is `max − 1 ms`, floored at 0; p99 likewise. Node skips the first interval after
//   `enable()`, so the monitor is primed for a few ms before the operation starts, and the loop is
//   let run for a few ms after it ends, so that a block at the very end is seen.
// - Stall: the longest an event posted to the main thread waited for it, to within ~0.25 ms
//   (lib/stall-probe.js), in repetitions of its own (the probe's pings cost the main thread time).
// - Main-thread busy time: event-loop utilisation over the operation (active ms), i.e. all the
//   time the main thread spent running JavaScript or native callbacks, however it was split up.
// - CPU: process.cpuUsage() delta, user + system, all threads of the process (tokio, libuv pool).
// - Queued: how long the main thread was ready to run but waited for a core during the operation,
//   in total (/proc/self/task/<pid>/schedstat, Linux). Time the main thread was held up without
//   working: whatever kept both cores busy.
// - Bytes written: /proc/self/io `write_bytes` delta (bytes the process caused to be sent to the
//   storage layer, page-granular, all threads), and `wchar` (bytes passed to write syscalls).

const fs = require('node:fs')
const { monitorEventLoopDelay, performance } = require('node:perf_hooks')

const RESOLUTION_MS = 1
const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let ioAvailable
function readIo() {
  if (ioAvailable === false) return null
  try {
    const text = fs.readFileSync('/proc/self/io', 'utf8')
    const out = {}
    for (const line of text.trim().split('\n')) {
      const [key, value] = line.split(':')
      out[key.trim()] = Number(value)
    }
    ioAvailable = true
    return out
  } catch {
    ioAvailable = false
    return null
  }
}

// The main thread's schedstat: ns on a core, ns waiting for one, timeslices.
const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`
function queuedNs() {
  try {
    return Number(fs.readFileSync(SCHEDSTAT, 'utf8').split(' ')[1])
  } catch {
    return null
  }
}

const gc = typeof global.gc === 'function' ? global.gc : () => {}

/**
 * Runs `fn` once and measures it. `fn` may be sync or async. With a `probe` (a StallProbe), the
 * sample also has `stallMs`: the longest an event waited for the main thread (lib/stall-probe.js).
 */
async function measure(fn, probe) {
  gc()
  histogram.reset()
  histogram.enable()
  if (probe) probe.start()
  await sleep(4)
  const io0 = readIo()
  const cpu0 = process.cpuUsage()
  const queued0 = queuedNs()
  const elu0 = performance.eventLoopUtilization()
  const t0 = performance.now()
  const value = await fn()
  const wallMs = performance.now() - t0
  const elu = performance.eventLoopUtilization(elu0)
  const cpu = process.cpuUsage(cpu0)
  const queued1 = queuedNs()
  const io1 = readIo()
  await sleep(4)
  histogram.disable()
  const stallMs = probe ? probe.stop() : undefined
  const blocked = (ns) => Math.max(0, ns / 1e6 - RESOLUTION_MS)
  return {
    value,
    sample: {
      wallMs,
      blockMaxMs: blocked(histogram.max),
      blockP99Ms: blocked(histogram.percentile(99)),
      busyMs: elu.active,
      queuedMs: queued0 != null && queued1 != null ? (queued1 - queued0) / 1e6 : null,
      cpuMs: (cpu.user + cpu.system) / 1000,
      writeBytes: io0 && io1 ? io1.write_bytes - io0.write_bytes : null,
      wcharBytes: io0 && io1 ? io1.wchar - io0.wchar : null,
      ...(probe ? { stallMs } : {}),
    },
  }
}

/** The loop's own noise on this machine: blocking seen while doing nothing for `ms`. */
async function idleNoise(ms = 300) {
  histogram.reset()
  histogram.enable()
  await sleep(ms)
  histogram.disable()
  return {
    blockMaxMs: Math.max(0, histogram.max / 1e6 - RESOLUTION_MS),
    blockP99Ms: Math.max(0, histogram.percentile(99) / 1e6 - RESOLUTION_MS),
  }
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (!v.length) return null
  const mid = v.length >> 1
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

/** The 99th percentile, nearest rank: of 200 samples the 3rd-longest, of 100 or fewer the longest. */
function p99(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  return v.length ? v[Math.ceil(0.99 * v.length) - 1] : null
}

const METRICS = [
  'wallMs',
  'blockMaxMs',
  'blockP99Ms',
  'busyMs',
  'queuedMs',
  'stallMs',
  'cpuMs',
  'writeBytes',
  'wcharBytes',
  'redisInBytes',
  'redisOutBytes',
  // A workload's own figures (bench/many-sessions.js), from the same repetitions.
  'opsPerSec',
  'usPerSession',
  'diskOpenPerSession',
  'diskClosedPerSession',
  'meanJsonBytes',
  'rssPerSession',
  'timesJson',
]

/**
 * Medians and maxima of the timed samples, and of the stall probe's own samples for `stallMs`;
 * the p99 of wall time.
 */
function summarize(samples, probeSamples = []) {
  const med = {}
  const max = {}
  for (const m of METRICS) {
    const from = m === 'stallMs' ? probeSamples : samples
    med[m] = median(from.map((s) => s[m]))
    const vals = from.map((s) => s[m]).filter((x) => typeof x === 'number')
    max[m] = vals.length ? Math.max(...vals) : null
  }
  return { median: med, max, p99: { wallMs: p99(samples.map((s) => s.wallMs)) } }
}

module.exports = { measure, idleNoise, median, p99, summarize, sleep, readIo, METRICS, RESOLUTION_MS }
