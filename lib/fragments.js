'use strict'
// Writing one message to a socket without holding Node's main thread, and without piling data up
// in front of a client that does not read.
//
// A 10 MB restore written to a socket in one call is one `writev` that copies the whole frame into
// the kernel on Node's thread: 1.5–5 ms in which no other socket is served. Here the message goes
// out as WebSocket fragments of FRAGMENT_BYTES, one per turn of the event loop, and each fragment
// only once the kernel has taken the one before (its write callback), so a client that stops
// reading leaves at most one fragment waiting in the process, never the whole session.
//
// Every write is awaited the same way: a piece the kernel has not taken within the time given is a
// client that is not reading, and the send rejects with code ESLOWREADER (the caller closes the
// socket).
//
// Fragments of one message must not have other data frames between them (RFC 6455 §5.4), so while
// a message is going out, every other `send` on the socket, the host's included, is held and sent,
// in order, once the message is complete. Control frames (ping, pong, close) may come between.

/** The size of each fragment of a large message, and the size above which a message is fragmented. */
const FRAGMENT_BYTES = 256 * 1024
const WS_OPEN = 1
const MORE = Object.freeze({ binary: false, fin: false })
const LAST = Object.freeze({ binary: false, fin: true })

/**
 * Sends `text` as one text message. Resolves once the kernel has taken it; rejects when it has not
 * within `timeoutMs` (code ESLOWREADER) or the socket closed first.
 */
function sendText(ws, text, timeoutMs) {
  return written((done) => ws.send(text, LAST, done), timeoutMs)
}

/**
 * Sends `head + body + tail` as one text message: `head` and `tail` are strings, `body` a Buffer
 * of UTF-8. A body up to FRAGMENT_BYTES goes out at once, a larger one in fragments. Settles as
 * `sendText` does, after the last piece. If the socket closes meanwhile, the rest is dropped.
 */
function sendTextMessage(ws, head, body, tail, timeoutMs) {
  if (body.length <= FRAGMENT_BYTES) {
    ws.send(head, MORE)
    ws.send(body, MORE)
    return written((done) => ws.send(tail, LAST, done), timeoutMs)
  }
  return sendInFragments(ws, head, body, tail, timeoutMs)
}

async function sendInFragments(ws, head, body, tail, timeoutMs) {
  const hold = holdOtherSends(ws)
  try {
    hold.send(head, MORE)
    for (let at = 0; at < body.length; at += FRAGMENT_BYTES) {
      await new Promise((resolve) => setImmediate(resolve))
      if (ws.readyState !== WS_OPEN) return
      await written((done) => hold.send(body.subarray(at, at + FRAGMENT_BYTES), MORE, done), timeoutMs)
    }
    await written((done) => hold.send(tail, LAST, done), timeoutMs)
  } finally {
    hold.release()
  }
}

/**
 * Calls `write(done)` and settles when the socket calls `done`: once the kernel has taken the data
 * (with an error if the socket closed first). Rejects with code ESLOWREADER after `timeoutMs`.
 */
function written(write, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const err = new Error(`the client took none of a message for ${timeoutMs} ms`)
      err.code = 'ESLOWREADER'
      reject(err)
    }, timeoutMs)
    timer.unref()
    write((err) => {
      clearTimeout(timer)
      if (err) reject(err)
      else resolve()
    })
  })
}

/**
 * Holds every `ws.send` made by others until `release()`, which sends them in the order made.
 * `hold.send` is the socket's own send.
 */
function holdOtherSends(ws) {
  const own = Object.prototype.hasOwnProperty.call(ws, 'send')
  const previous = ws.send
  const held = []
  ws.send = (...args) => {
    held.push(args)
  }
  return {
    send: (data, options, done) => previous.call(ws, data, options, done),
    release() {
      if (own) ws.send = previous
      else delete ws.send
      for (const args of held) ws.send(...args)
    },
  }
}

module.exports = { sendText, sendTextMessage, FRAGMENT_BYTES }
