'use strict';
// A real host for the narrative WebSocket, wired the way mia-code-server wires it: a plain node
// http server on 127.0.0.1 (port 0), a `ws` server in noServer mode, and an `upgrade` listener that
// hands `/api/ws/narrative` sockets to `attachNarrativeSession`. Plus a real `ws` client that
// collects every message and lets a test await the next one matching a predicate. No mocks.

const http = require('node:http');
const { WebSocket, WebSocketServer } = require('ws');

const { NarrativeSessionStore } = require('../../index');
const { attachNarrativeSession } = require('../../lib/handler');

const NARRATIVE_PATH = '/api/ws/narrative';
const USER_HEADER = 'x-forwarded-user';
/** A header the test client sets so the test can find the server side of its connection. */
const CLIENT_TAG_HEADER = 'x-test-client';

/**
 * Starts a host on `dataDir` with a real store (autosave and cleanup off, so only the handler's
 * close-save writes a changed session). Options:
 * - `maxMessageBytes`, `slowReaderTimeoutMs`: passed to the handler.
 * - `userHeader`: the handler's `trustedUserHeader` (default `x-forwarded-user`); `null` for none,
 *   so that the user is the OS account the server runs as.
 * - `wsOptions`: more options for the `WebSocketServer` (`maxPayload`, `closeTimeout`).
 * - `handlerOptions`: more options for the handler (`resolveUser`, `resolveWorkspace`).
 * - `hostHandler(ws, req)`: the host's own handler on the same socket (mia-code-server's
 *   `auth`/`subscribe`/`replay` handling), called after the narrative handler is attached.
 */
async function startNarrativeServer({
  dataDir,
  maxMessageBytes,
  slowReaderTimeoutMs,
  userHeader = USER_HEADER,
  wsOptions = {},
  handlerOptions = {},
  hostHandler,
} = {}) {
  if (!dataDir) throw new Error('startNarrativeServer needs a dataDir');
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  const server = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ ...wsOptions, noServer: true });
  /** The handler's connection objects, in the order the sockets were upgraded. */
  const connections = [];
  const byTag = new Map();
  /** The server side of each tagged client's socket. */
  const socketByTag = new Map();

  server.on('upgrade', (req, socket, head) => {
    const { pathname } = new URL(req.url || '/', 'http://localhost');
    if (pathname !== NARRATIVE_PATH) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const options = { store, ...handlerOptions };
      if (userHeader !== null) options.trustedUserHeader = userHeader;
      if (maxMessageBytes !== undefined) options.maxMessageBytes = maxMessageBytes;
      if (slowReaderTimeoutMs !== undefined) options.slowReaderTimeoutMs = slowReaderTimeoutMs;
      const connection = attachNarrativeSession(ws, req, options);
      connections.push(connection);
      const tag = req.headers[CLIENT_TAG_HEADER];
      if (tag) {
        byTag.set(tag, connection);
        socketByTag.set(tag, ws);
      }
      if (hostHandler) hostHandler(ws, req);
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();

  return {
    store,
    dataDir,
    port,
    connections,
    /** The handler's connection for the client opened with `tag`. */
    connectionOf(tag) {
      const connection = byTag.get(tag);
      if (!connection) throw new Error(`no server connection for client ${tag}`);
      return connection;
    },
    /** The server side (a `ws` WebSocket) of the client opened with `tag`. */
    socketOf(tag) {
      const ws = socketByTag.get(tag);
      if (!ws) throw new Error(`no server socket for client ${tag}`);
      return ws;
    },
    /** Every tagged client's server-side socket, as `[tag, ws]`. */
    sockets() {
      return [...socketByTag];
    },
    /** `ws://127.0.0.1:<port>/api/ws/narrative?<query>`. */
    url(query = {}) {
      const search = new URLSearchParams(query).toString();
      return `ws://127.0.0.1:${port}${NARRATIVE_PATH}${search ? `?${search}` : ''}`;
    },
    /** Drops every socket, stops listening and closes the store (which writes dirty sessions). */
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(() => resolve()));
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve()));
      // Let the handlers' close-saves run before the store goes away.
      await Promise.allSettled(connections.map((c) => c.saved).filter(Boolean));
      await store.close();
    },
  };
}

let nextTag = 0;

/** A tag for a new client, unique in this test run. */
function newClientTag() {
  return `t${process.pid}-${++nextTag}`;
}

/**
 * What a client has received: every message is parsed and kept in `messages`; `next(predicate)`
 * resolves with the first message after the last one `next` returned that matches, or fails after
 * `timeoutMs` with a message that lists what did arrive. A subclass calls `received(text, isBinary)`
 * for each message and `ended({ code, reason })` once its socket is closed.
 */
class MessageInbox {
  constructor(label) {
    this.label = label;
    this.messages = [];
    this.cursor = 0;
    this.waiters = new Set();
    this.closeInfo = undefined;
  }

  received(text, isBinary) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      message = { unparsable: text, isBinary };
    }
    this.messages.push(message);
    this.wakeWaiters();
  }

  ended(closeInfo) {
    this.closeInfo = closeInfo;
    this.wakeWaiters();
  }

  /** Resolves with the first not-yet-consumed message matching `predicate` (and consumes it). */
  next(predicate = () => true, { timeoutMs = 3000, what = 'a message' } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          for (let i = this.cursor; i < this.messages.length; i++) {
            if (predicate(this.messages[i])) {
              this.cursor = i + 1;
              finish();
              resolve(this.messages[i]);
              return;
            }
          }
          if (this.closeInfo) {
            finish();
            reject(
              new Error(
                `${this.label}: socket closed (${this.closeInfo.code} ${this.closeInfo.reason}) ` +
                  `while waiting for ${what}; received: ${this.describeReceived()}`,
              ),
            );
          }
        },
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}; received: ${this.describeReceived()}`),
        );
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  /** The next message, whatever it is. */
  nextMessage(options) {
    return this.next(() => true, { what: 'the next message', ...options });
  }

  /** The next `session-event` with `payload.event === event` (and matching `extra`, if given). */
  nextEvent(event, extra = () => true, options = {}) {
    return this.next((m) => m.type === 'session-event' && m.payload && m.payload.event === event && extra(m), {
      what: `a '${event}' session-event`,
      ...options,
    });
  }

  /** The next `error` message. */
  nextError(options = {}) {
    return this.next((m) => m.type === 'error', { what: 'an error message', ...options });
  }

  /** Resolves with the `restored` payload, which must be the first message. */
  async restored(options) {
    await this.opened;
    const message = await this.nextMessage({ what: 'the restored session-event', ...options });
    if (!(message.type === 'session-event' && message.payload && message.payload.event === 'restored')) {
      throw new Error(`${this.label}: first message is not 'restored': ${JSON.stringify(message)}`);
    }
    return message.payload;
  }

  /** Messages not yet consumed by `next`. */
  pending() {
    return this.messages.slice(this.cursor);
  }

  /**
   * Waits `ms`, then fails when a message matching `predicate` is there: by default any message
   * not consumed by `next` (including ones that came before the wait); with `{ onlyNew: true }`,
   * only messages that arrived during the wait.
   */
  async expectNothing(predicate = () => true, ms = 300, what = 'message', { onlyNew = false } = {}) {
    const from = onlyNew ? this.messages.length : this.cursor;
    await new Promise((resolve) => setTimeout(resolve, ms));
    const unexpected = this.messages.slice(from).filter(predicate);
    if (unexpected.length > 0) {
      throw new Error(`${this.label}: expected no ${what}, got ${JSON.stringify(unexpected)}`);
    }
  }

  wakeWaiters() {
    for (const waiter of [...this.waiters]) waiter.check();
  }

  describeReceived() {
    const all = this.messages.map((m) =>
      m.type === 'session-event' ? `session-event/${m.payload && m.payload.event}` : JSON.stringify(m).slice(0, 160),
    );
    return all.length ? `[${all.join(', ')}]` : 'nothing';
  }
}

/** A real `ws` client (see MessageInbox for what it received). */
class NarrativeClient extends MessageInbox {
  constructor(url, { user, headers = {}, label } = {}) {
    super(label || user || '(no user)');
    this.tag = newClientTag();
    const allHeaders = { [CLIENT_TAG_HEADER]: this.tag, ...headers };
    if (user !== undefined) allHeaders[USER_HEADER] = user;
    this.ws = new WebSocket(url, { headers: allHeaders });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (req, res) =>
        reject(new Error(`${this.label}: upgrade refused with HTTP ${res.statusCode}`)),
      );
    });
    this.opened.catch(() => {}); // reported by whoever awaits it
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        const closeInfo = { code, reason: reason.toString() };
        resolve(closeInfo);
        this.ended(closeInfo);
      });
    });
    this.ws.on('error', () => {}); // a refused socket must not crash the test run
    this.ws.on('message', (data, isBinary) => this.received(data.toString(), isBinary));
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(envelope) {
    this.ws.send(JSON.stringify({ timestamp: new Date().toISOString(), ...envelope }));
  }

  sendRaw(text) {
    this.ws.send(text);
  }

  /** Sends a `session-update`; with a `traceId`, the reply carries it. */
  update(payload, traceId) {
    const envelope = { type: 'session-update', payload };
    if (traceId !== undefined) envelope.traceId = traceId;
    this.send(envelope);
  }

  /** Sends an update and resolves with its ack (the error, if one comes instead, fails). */
  async updateAndAck(payload, traceId = `${this.tag}-${this.messages.length}-${Math.random()}`) {
    this.update(payload, traceId);
    const reply = await this.next((m) => m.traceId === traceId, { what: `the reply to ${traceId}` });
    if (reply.type !== 'session-event' || reply.payload.event !== 'ack') {
      throw new Error(`${this.label}: update ${traceId} was not acked: ${JSON.stringify(reply)}`);
    }
    return reply.payload;
  }

  /** Closes the socket and resolves with `{ code, reason }` once it is closed. */
  close() {
    if (this.ws.readyState === WebSocket.CLOSED) return this.closed;
    this.ws.close(1000, 'test done');
    return this.closed;
  }

}

/**
 * Opens clients against `server` and closes them all in `closeAll()`.
 * `connect({ user, workspace, folder, query, headers, label })`.
 */
function clientPool(getServer) {
  const clients = [];
  return {
    connect({ user, workspace, folder, query = {}, headers, label, server } = {}) {
      const q = { ...query };
      if (workspace !== undefined) q.workspace = workspace;
      if (folder !== undefined) q.folder = folder;
      const client = new NarrativeClient((server || getServer()).url(q), { user, headers, label });
      clients.push(client);
      return client;
    },
    async closeAll() {
      await Promise.allSettled(
        clients.splice(0).map((c) => {
          let timer;
          const giveUp = new Promise((resolve) => {
            timer = setTimeout(resolve, 1000);
          });
          return Promise.race([c.close(), giveUp]).finally(() => {
            clearTimeout(timer);
            c.ws.terminate();
          });
        }),
      );
    },
  };
}

module.exports = {
  NARRATIVE_PATH,
  USER_HEADER,
  CLIENT_TAG_HEADER,
  startNarrativeServer,
  newClientTag,
  MessageInbox,
  NarrativeClient,
  clientPool,
};
