'use strict'
// The WebSocket client of W1, in its own process so that receiving a session costs the server
// nothing. It acknowledges each message with its size; the first one it also parses and checks.

const WebSocket = require('ws')

const ws = new WebSocket(process.argv[2])
let n = 0
ws.on('message', (data, isBinary) => {
  const bytes = Array.isArray(data) ? data.reduce((s, b) => s + b.length, 0) : data.length
  const reply = { n: n++, bytes, binary: isBinary }
  if (reply.n === 0) {
    try {
      const message = JSON.parse(data.toString())
      const session = message.payload && message.payload.session
      reply.type = message.type
      reply.event = message.payload && message.payload.event
      reply.sessionId = session && session.id
      reply.entries = session && session.conversationHistory && session.conversationHistory.length
    } catch (err) {
      reply.error = err.message
    }
  }
  ws.send(JSON.stringify(reply))
})
ws.on('close', () => process.exit(0))
ws.on('error', (err) => {
  console.error(err)
  process.exit(1)
})
