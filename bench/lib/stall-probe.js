'use strict'
// How long Node's main thread keeps an event waiting, read to a few tens of microseconds.
//
// The event-loop delay histogram reads only to within ~1 ms (libuv's timers count whole
// milliseconds), and event-loop utilisation gives a total, not the longest stretch. Here a worker
// thread posts a message to the main thread, waits (Atomics.wait) until the main thread's handler
// has answered through shared memory, pauses PERIOD_MS, and posts the next. The main thread's
// handler notes how long each ping waited. A stretch of S ms in which the main thread does not get back to its event loop holds up
// the ping posted just before or during it: the longest wait reads at least S − PERIOD_MS − the
// worker's own wake-up, and at most S plus the main thread's wake-up (tens of µs; `idle` reads
// the floor).
//
// The pings cost the main thread a few µs each, several thousand times a second, so the benchmark
// runs the probe in repetitions of its own, apart from those it times.

const { Worker } = require('node:worker_threads')

const PERIOD_MS = 0.2
// Cells of the shared Int32Array.
const ANSWERED = 0 // the last ping number the main thread answered
const RUNNING = 1 // 1 while the worker should ping
const STOP = 2 // 1 tells the worker to exit

// The worker notes when it posts each ping (process.hrtime, the clock both threads read), and the
// main thread's handler takes the difference: the worker's own wake-ups are not in the reading.
const WORKER = `
const { workerData } = require('node:worker_threads')
const { cells, posted, port, periodMs } = workerData
const pause = new Int32Array(new SharedArrayBuffer(4))
let seq = 0
for (;;) {
  Atomics.wait(cells, ${RUNNING}, 0)
  if (Atomics.load(cells, ${STOP})) break
  Atomics.store(posted, 0, process.hrtime.bigint())
  port.postMessage(++seq)
  while (Atomics.load(cells, ${ANSWERED}) !== seq && !Atomics.load(cells, ${STOP})) {
    Atomics.wait(cells, ${ANSWERED}, seq - 1, 50)
  }
  Atomics.wait(pause, 0, 0, periodMs)
}
`

class StallProbe {
  constructor() {
    const { port1, port2 } = new MessageChannel()
    this.cells = new Int32Array(new SharedArrayBuffer(4 * 3))
    this.posted = new BigInt64Array(new SharedArrayBuffer(8))
    this.startedAt = 0n
    this.longest = 0n
    this.port = port1
    this.port.on('message', (seq) => {
      const waited = process.hrtime.bigint() - Atomics.load(this.posted, 0)
      // A ping posted before start() is not counted.
      if (Atomics.load(this.posted, 0) >= this.startedAt && waited > this.longest) this.longest = waited
      Atomics.store(this.cells, ANSWERED, seq)
      Atomics.notify(this.cells, ANSWERED)
    })
    this.port.unref()
    this.worker = new Worker(WORKER, {
      eval: true,
      workerData: { cells: this.cells, posted: this.posted, port: port2, periodMs: PERIOD_MS },
      transferList: [port2],
    })
    this.worker.unref()
  }

  /** Starts pinging, from a reset maximum. */
  start() {
    this.startedAt = process.hrtime.bigint()
    this.longest = 0n
    Atomics.store(this.cells, RUNNING, 1)
    Atomics.notify(this.cells, RUNNING)
  }

  /** Stops pinging; the longest wait since `start()`, in ms. */
  stop() {
    Atomics.store(this.cells, RUNNING, 0)
    return Number(this.longest) / 1e6
  }

  /** The longest wait while the main thread does nothing for `ms`: the probe's own floor. */
  async idle(ms = 300) {
    this.start()
    await new Promise((resolve) => setTimeout(resolve, ms))
    return this.stop()
  }

  close() {
    Atomics.store(this.cells, STOP, 1)
    Atomics.store(this.cells, RUNNING, 1)
    Atomics.notify(this.cells, RUNNING)
    Atomics.notify(this.cells, ANSWERED)
    this.port.close()
    return this.worker.terminate()
  }
}

module.exports = { StallProbe, PERIOD_MS }
