'use strict'
// Sending one large text message without holding Node's main thread.
//
// A 10 MB restore written to a socket in one call is one `writev` that copies the whole frame into
// the kernel on Node's thread: 1.5–5 ms in which no other socket is served. Here the message goes
// out as WebSocket fragments of FRAGMENT_BYTES, one per turn of the event loop, so that each write
// copies a fragment and the loop runs in between. When the socket's buffer already holds unsent
// bytes (a slow client), the next fragment waits for it to empty, polling once a millisecond, so a
// slow client never makes the process buffer a whole session.
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
 * Sends `head + body + tail` as one text message: `head` and `tail` are strings, `body` a Buffer
 * of UTF-8 (or a string). A body up to FRAGMENT_BYTES goes out at once, and the promise is
 * already settled; a larger one in fragments, and the promise settles after the last. If the
 * socket closes meanwhile, the rest is dropped.
 */
function sendTextMessage(ws, head, body, tail) {
  if (body.length <= FRAGMENT_BYTES) {
    ws.send(head, MORE)
    ws.send(body, MORE)
    ws.send(tail, LAST)
    return Promise.resolve()
  }
  return sendInFragments(ws, head, typeof body === 'string' ? Buffer.from(body) : body, tail)
}

async function sendInFragments(ws, head, body, tail) {
  const hold = holdOtherSends(ws)
  try {
    hold.send(head, MORE)
    for (let at = 0; at < body.length; at += FRAGMENT_BYTES) {
      await nextTurn(ws)
      if (ws.readyState !== WS_OPEN) return
      hold.send(body.subarray(at, at + FRAGMENT_BYTES), MORE)
    }
    hold.send(tail, LAST)
  } finally {
    hold.release()
  }
}

/** Waits for the loop's next turn, and for the socket's buffer to empty if it holds unsent bytes. */
async function nextTurn(ws) {
  await new Promise((resolve) => setImmediate(resolve))
  while (ws.readyState === WS_OPEN && ws.bufferedAmount > 0) {
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
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
    send: (data, options) => previous.call(ws, data, options),
    release() {
      if (own) ws.send = previous
      else delete ws.send
      for (const args of held) ws.send(...args)
    },
  }
}

module.exports = { sendTextMessage, FRAGMENT_BYTES }
