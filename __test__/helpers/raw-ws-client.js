'use strict';
// A WebSocket client written on a bare TCP socket, for the clients the `ws` package will not be:
// one that completes the upgrade and then never reads, one that sends its upgrade request a byte at
// a time, one that half-closes, one that sends frames no library would (oversized, binary, cut
// short). It speaks RFC 6455 by hand: masked frames out, unmasked frames in, fragments put back
// together. What it receives goes to a MessageInbox, as with the `ws` test client.

const crypto = require('node:crypto');
const net = require('node:net');

const { NARRATIVE_PATH, USER_HEADER, CLIENT_TAG_HEADER, MessageInbox, newClientTag } = require('./ws-server');

const OPCODE = Object.freeze({ continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 });

class RawWsClient extends MessageInbox {
  /**
   * Opens a TCP connection to `127.0.0.1:port` and sends the upgrade request for the narrative
   * socket. Options: `user` (the trusted header), `query`, `headers`; `byteDelayMs` sends the
   * request one byte at a time with that pause between bytes (slowloris); `complete: false` leaves
   * the request's last byte unsent; `neverRead` stops reading the moment the upgrade is answered.
   * `opened` resolves once the server answered 101.
   */
  constructor(port, { user, query = {}, headers = {}, label, byteDelayMs = 0, complete = true, neverRead = false } = {}) {
    super(label || `raw ${user || '(no user)'}`);
    this.tag = newClientTag();
    this.neverRead = neverRead;
    this.bytesReceived = 0;
    this.chunks = [];
    this.buffered = 0;
    this.fragments = [];
    /** Every frame received: `{ opcode, fin, length }`. */
    this.frames = [];
    this.upgraded = false;
    this.closeFrame = undefined;
    const search = new URLSearchParams(query).toString();
    const lines = [
      `GET ${NARRATIVE_PATH}${search ? `?${search}` : ''} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      `${CLIENT_TAG_HEADER}: ${this.tag}`,
    ];
    if (user !== undefined) lines.push(`${USER_HEADER}: ${user}`);
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
    const request = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);

    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => {}); // a reset is an outcome the tests look at, not a crash
    this.socket.on('data', (chunk) => this.onData(chunk));
    this.gone = new Promise((resolve) => this.socket.once('close', resolve));
    /** Resolves once the connection is gone with the close frame's `{ code, reason }` (1006 without one). */
    this.closed = this.gone.then(() => {
      const closeInfo = this.closeFrame || { code: 1006, reason: 'connection dropped' };
      this.ended(closeInfo);
      return closeInfo;
    });
    this.opened = new Promise((resolve, reject) => {
      this.resolveOpened = resolve;
      this.gone.then(() => reject(new Error(`${this.label}: connection closed before the upgrade`)));
    });
    this.opened.catch(() => {}); // reported by whoever awaits it
    /** Resolves once the request (all of it, or all but its last byte) is written. */
    this.requestSent = new Promise((resolve) => {
      this.socket.once('connect', () => resolve(this.sendRequest(request, byteDelayMs, complete)));
    });
  }

  async sendRequest(request, byteDelayMs, complete) {
    const end = complete ? request.length : request.length - 1;
    if (byteDelayMs <= 0) {
      await new Promise((resolve) => this.socket.write(request.subarray(0, end), resolve));
      return;
    }
    for (let i = 0; i < end && !this.socket.destroyed; i++) {
      this.socket.write(request.subarray(i, i + 1));
      await new Promise((resolve) => setTimeout(resolve, byteDelayMs));
    }
  }

  /** Stops reading: the bytes the server sends stay in its buffers and the kernel's. */
  pause() {
    this.socket.pause();
  }

  resume() {
    this.socket.resume();
  }

  /** Sends one frame, masked as a client must (unless `mask: false`). */
  sendFrame(frame) {
    return this.socket.write(encodeFrame(frame));
  }

  /** Sends `session-update` envelopes, one a frame, all in one write to the socket. */
  updateAll(updates) {
    const frames = updates.map(([payload, traceId]) => encodeFrame({ payload: JSON.stringify({ type: 'session-update', payload, traceId }) }));
    return this.socket.write(Buffer.concat(frames));
  }

  sendText(text) {
    return this.sendFrame({ opcode: OPCODE.text, payload: text });
  }

  /** Sends a `session-update` envelope as one text frame. */
  update(payload, traceId) {
    const envelope = { type: 'session-update', payload, timestamp: new Date().toISOString() };
    if (traceId !== undefined) envelope.traceId = traceId;
    return this.sendText(JSON.stringify(envelope));
  }

  /** Closes the sending half only (TCP FIN), and keeps reading. */
  halfClose() {
    this.socket.end();
  }

  destroy() {
    this.socket.destroy();
    return this.gone;
  }

  onData(chunk) {
    this.bytesReceived += chunk.length;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (!this.upgraded) {
      const head = Buffer.concat(this.chunks);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = head.subarray(0, head.indexOf('\r\n')).toString();
      if (!/^HTTP\/1\.1 101 /.test(status)) {
        this.socket.destroy();
        return;
      }
      this.upgraded = true;
      if (this.neverRead) this.socket.pause();
      this.chunks = [head.subarray(end + 4)];
      this.buffered = this.chunks[0].length;
      this.resolveOpened();
    }
    for (let frame = this.takeFrame(); frame; frame = this.takeFrame()) this.onFrame(frame);
  }

  /** The next whole frame from what was received, or undefined while it is not all there. */
  takeFrame() {
    if (this.buffered < 2) return undefined;
    const start = this.peek(Math.min(this.buffered, 10));
    let length = start[1] & 0x7f;
    let headerLength = 2;
    if (length === 126) {
      if (start.length < 4) return undefined;
      length = start.readUInt16BE(2);
      headerLength = 4;
    } else if (length === 127) {
      if (start.length < 10) return undefined;
      length = Number(start.readBigUInt64BE(2));
      headerLength = 10;
    }
    if (this.buffered < headerLength + length) return undefined;
    const bytes = this.take(headerLength + length);
    return { fin: (bytes[0] & 0x80) !== 0, opcode: bytes[0] & 0x0f, payload: bytes.subarray(headerLength) };
  }

  peek(n) {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  take(n) {
    const parts = [];
    let needed = n;
    while (needed > 0) {
      const chunk = this.chunks[0];
      if (chunk.length <= needed) {
        parts.push(chunk);
        this.chunks.shift();
        needed -= chunk.length;
      } else {
        parts.push(chunk.subarray(0, needed));
        this.chunks[0] = chunk.subarray(needed);
        needed = 0;
      }
    }
    this.buffered -= n;
    if (this.chunks.length === 0) this.chunks.push(Buffer.alloc(0));
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  onFrame({ fin, opcode, payload }) {
    this.frames.push({ opcode, fin, length: payload.length });
    if (opcode === OPCODE.close) {
      this.closeFrame = {
        code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005,
        reason: payload.subarray(2).toString(),
      };
      // Answered as RFC 6455 §5.5.1 asks, so that the server may close at once.
      this.sendFrame({ opcode: OPCODE.close, payload: payload.subarray(0, 2) });
      this.socket.end();
      return;
    }
    if (opcode === OPCODE.ping) {
      this.sendFrame({ opcode: OPCODE.pong, payload });
      return;
    }
    if (opcode === OPCODE.pong) return;
    this.fragments.push({ opcode, payload });
    if (!fin) return;
    const message = Buffer.concat(this.fragments.map((f) => f.payload));
    const isBinary = this.fragments[0].opcode === OPCODE.binary;
    this.fragments = [];
    this.received(message.toString('utf8'), isBinary);
  }
}

/** One frame as a client sends it: masked (unless `mask: false`), with `claimedLength` in its header if given. */
function encodeFrame({ opcode = OPCODE.text, payload = Buffer.alloc(0), fin = true, mask = true, claimedLength }) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const length = claimedLength ?? data.length;
  let header;
  if (length < 126) {
    header = Buffer.from([0, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header.writeUInt16BE(length, 2);
    header[1] = 126;
  } else {
    header = Buffer.alloc(10);
    header.writeBigUInt64BE(BigInt(length), 2);
    header[1] = 127;
  }
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

module.exports = { RawWsClient, OPCODE };
