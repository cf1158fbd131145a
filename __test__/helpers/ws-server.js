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
 * - `maxMessageBytes`: passed to the handler.
 * - `hostHandler(ws, req)`: the host's own handler on the same socket (mia-code-server's
 *   `auth`/`subscribe`/`replay` handling), called after the narrative handler is attached.
 */
async function startNarrativeServer({ dataDir, maxMessageBytes, hostHandler } = {}) {
  if (!dataDir) throw new Error('startNarrativeServer needs a dataDir');
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  const server = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true });
  /** The handler's connection objects, in the order the sockets were upgraded. */
  const connections = [];
  const byTag = new Map();

  server.on('upgrade', (req, socket, head) => {
    const { pathname } = new URL(req.url || '/', 'http://localhost');
    if (pathname !== NARRATIVE_PATH) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const options = { store, trustedUserHeader: USER_HEADER };
      if (maxMessageBytes !== undefined) options.maxMessageBytes = maxMessageBytes;
      const connection = attachNarrativeSession(ws, req, options);
      connections.push(connection);
      const tag = req.headers[CLIENT_TAG_HEADER];
      if (tag) byTag.set(tag, connection);
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

/**
 * A real `ws` client. Every message is parsed and kept in `messages`; `next(predicate)` resolves
 * with the first message after the last one `next` returned that matches, or fails after
 * `timeoutMs` with a message that lists what did arrive.
 */
class NarrativeClient {
  constructor(url, { user, headers = {}, label } = {}) {
    this.tag = `t${process.pid}-${++nextTag}`;
    this.label = label || user || '(no user)';
    this.messages = [];
    this.cursor = 0;
    this.waiters = new Set();
    this.closeInfo = undefined;
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
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wakeWaiters();
      });
    });
    this.ws.on('error', () => {}); // a refused socket must not crash the test run
    this.ws.on('message', (data, isBinary) => {
      const text = data.toString();
      let message;
      try {
        message = JSON.parse(text);
      } catch {
        message = { unparsable: text, isBinary };
      }
      this.messages.push(message);
      this.wakeWaiters();
    });
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
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

  /** Connects and resolves with the `restored` payload, which must be the first message. */
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
  startNarrativeServer,
  NarrativeClient,
  clientPool,
};
