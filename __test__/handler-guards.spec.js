'use strict';
// The handler's edges that the mutation run over lib/handler.js, lib/outbox.js and lib/fragments.js
// (docs/mutation/handler.md) found no test looking at: a host hook that fails, what a refused
// connection's `ready` says, the Origin check behind proxies, a socket that ends with an error, and
// sockets let go once closed. Real `ws` clients (and the raw
// client where a frame no library would send is needed) against a real node http server and a
// real store on a temporary directory. No mocks.

const { sandbox, pollUntil } = require('./helpers/env');
const { startNarrativeServer, clientPool } = require('./helpers/ws-server');
const { RawWsClient } = require('./helpers/raw-ws-client');

const WORKSPACE = '/home/me/proj';

let box;
let server;
const servers = [];
const rawClients = [];
const pool = clientPool(() => server);

async function startServer(options = {}) {
  const s = await startNarrativeServer({ dataDir: box.tempDir('mia-guards-'), ...options });
  servers.push(s);
  return s;
}

beforeEach(async () => {
  box = sandbox();
  server = await startServer();
});

afterEach(async () => {
  for (const client of rawClients.splice(0)) client.destroy();
  await pool.closeAll();
  await Promise.allSettled(servers.splice(0).map((s) => s.close()));
  await box.dispose();
});

function rawTab(on, options = {}) {
  const client = new RawWsClient(on.port, { user: 'alice', query: { workspace: WORKSPACE }, ...options });
  rawClients.push(client);
  return client;
}

/** Resolves with `connection.saved` once the server has seen the socket close. */
async function savedOf(connection) {
  await pollUntil(() => connection.saved !== undefined, { what: 'the server to see the close' });
  return connection.saved;
}

describe('a host hook that fails after admission', () => {
  test('a resolveWorkspace that throws, whatever it throws: an EINTERNAL error, close 1011, and no session', async () => {
    const thrown = [new Error('workspace lookup failed'), undefined, 'a string'];
    const host = await startServer({
      handlerOptions: {
        resolveWorkspace: () => {
          throw thrown[0];
        },
      },
    });
    for (const [i, what] of thrown.entries()) {
      thrown[0] = what;
      const client = pool.connect({ user: 'alice', server: host, label: `throw #${i}` });
      await client.opened;
      const error = await client.nextError();
      expect({ i, type: error.type, channel: error.channel, code: error.payload.code }).toEqual({
        i,
        type: 'error',
        channel: 'session',
        code: 'EINTERNAL',
      });
      expect(error.payload.message).toBe(what instanceof Error ? 'workspace lookup failed' : undefined);
      expect(await client.closed).toEqual({ code: 1011, reason: 'session unavailable' });
      await expect(host.connections[i].ready).rejects.toBe(what);
    }
    expect(await host.store.list()).toEqual([]);
  });
});

describe("what a refused connection's ready says", () => {
  test('no user: EAUTH that says so; a resolveUser that throws a non-error: EAUTH that says it could not authenticate, with it as cause', async () => {
    const noUser = pool.connect({ workspace: WORKSPACE, label: 'no user' });
    expect((await noUser.closed).code).toBe(4401);
    await expect(server.connectionOf(noUser.tag).ready).rejects.toMatchObject({
      code: 'EAUTH',
      message: 'no user identity: the trusted header or resolveUser gave none',
    });

    const host = await startServer({
      handlerOptions: {
        resolveUser: () => {
          throw 'the directory is down';
        },
      },
    });
    const refused = pool.connect({ user: 'alice', server: host });
    expect((await refused.closed).code).toBe(4401);
    const err = await host.connectionOf(refused.tag).ready.catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect({ code: err.code, message: err.message, cause: err.cause }).toEqual({
      code: 'EAUTH',
      message: 'the connection could not be authenticated',
      cause: 'the directory is down',
    });
  });
});

describe('the Origin check behind proxies (Forwarded and X-Forwarded-Host as proxies write them)', () => {
  /** Whether a page of `origin` is admitted when the request carries `headers`. */
  async function admitted(origin, headers) {
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, headers: { origin, ...headers }, label: `${origin} ${JSON.stringify(headers)}` });
    const first = await Promise.race([client.nextMessage().then(() => 'admitted'), client.closed.then(({ code }) => code)]);
    return first;
  }

  test('Forwarded: spaces around its parameters, a quoted host, and only the first hop count', async () => {
    const ide = 'https://ide.example.com';
    expect(await admitted(ide, { forwarded: 'for=192.0.2.1; host=ide.example.com; proto=https' })).toBe('admitted');
    expect(await admitted(ide, { forwarded: 'for=192.0.2.1;host="ide.example.com";proto=https' })).toBe('admitted');
    expect(await admitted(ide, { forwarded: 'for=192.0.2.1;host=ide.example.com , for=10.0.0.1;host=internal.example' })).toBe('admitted');
    expect(await admitted('https://internal.example', { forwarded: 'for=192.0.2.1;host=ide.example.com, for=10.0.0.1;host=internal.example' })).toBe(4403);
  });

  test('Forwarded without a host value: the Host header decides', async () => {
    const own = `http://127.0.0.1:${server.port}`;
    expect(await admitted(own, { forwarded: 'for=192.0.2.1;host=;proto=http' })).toBe('admitted');
    expect(await admitted(own, { forwarded: 'for=192.0.2.1;host;proto=http' })).toBe('admitted');
    expect(await admitted('https://ide.example.com', { forwarded: 'for=192.0.2.1;host=' })).toBe(4403);
  });

  test('X-Forwarded-Host: the first of a list, spaces and case aside', async () => {
    expect(await admitted('https://ide.example.com', { 'x-forwarded-host': 'IDE.example.com , internal.example' })).toBe('admitted');
    expect(await admitted('https://internal.example', { 'x-forwarded-host': 'ide.example.com, internal.example' })).toBe(4403);
  });
});

describe("what a refused connection's ready says, for the Origin and authenticate(req)", () => {
  test('the Origin refused, authenticate refusing, authenticate failing: each error says which', async () => {
    const failure = new Error('the login service is down');
    const host = await startServer({
      handlerOptions: {
        authenticate: (req) => {
          if (req.headers.cookie === 'throws') throw failure;
          return req.headers.cookie === 'ok';
        },
      },
    });
    const cases = [
      [{ origin: 'http://evil.example', cookie: 'ok' }, 4403, 'EORIGIN', 'origin "http://evil.example" is not allowed', undefined],
      [{ cookie: 'wrong' }, 4401, 'EAUTH', 'authenticate(req) refused the connection', undefined],
      [{ cookie: 'throws' }, 4401, 'EAUTH', 'authenticate(req) failed', failure],
    ];
    for (const [headers, close, code, message, cause] of cases) {
      const client = pool.connect({ user: 'alice', workspace: WORKSPACE, headers, server: host, label: JSON.stringify(headers) });
      expect({ headers, close: (await client.closed).code }).toEqual({ headers, close });
      const err = await host.connectionOf(client.tag).ready.catch((e) => e);
      expect({ headers, code: err.code, message: err.message, cause: err.cause }).toEqual({ headers, code, message, cause });
    }
  });

  test('allowedOrigins that is not an array, or names something that is not an origin: a TypeError that says so', () => {
    const { attachNarrativeSession } = require('../lib/handler');
    const attach = (allowedOrigins) => {
      try {
        attachNarrativeSession({}, { headers: {}, url: '/' }, { store: server.store, allowedOrigins });
      } catch (err) {
        return { type: err.constructor.name, code: err.code, message: err.message };
      }
      return 'attached';
    };
    const notAnArray = 'allowedOrigins must be an array of origins such as "https://ide.example.com", or ["*"]';
    for (const allowedOrigins of ['https://ide.example.com', 42, { origin: 'https://ide.example.com' }]) {
      expect({ allowedOrigins, thrown: attach(allowedOrigins) }).toEqual({ allowedOrigins, thrown: { type: 'TypeError', code: 'EINVALID', message: notAnArray } });
    }
    expect(attach(['https://ide.example.com', 'ide.example.com'])).toEqual({
      type: 'TypeError',
      code: 'EINVALID',
      message: 'allowedOrigins: "ide.example.com" is not an origin such as "https://ide.example.com"',
    });
  });
});

describe('a socket that ends with an error', () => {
  test('a frame that is not UTF-8 closes it (1007); the close-save runs once and its result is connection.saved', async () => {
    const tab = rawTab(server);
    await tab.restored();
    const connection = server.connectionOf(tab.tag);
    // A change the host merged without `durable`: only the close-save writes it.
    await server.store.merge('alice', WORKSPACE, { memory: { fromHost: true } });
    tab.sendFrame({ payload: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]) });
    expect((await tab.closed).code).toBe(1007);
    // The socket emitted 'error' and then 'close': one save, which wrote.
    expect(await savedOf(connection)).toBe(true);
  });
});

describe('sockets that close are let go', () => {
  const http = require('node:http');
  const v8 = require('node:v8');
  const vm = require('node:vm');
  const { WebSocketServer } = require('ws');
  const { attachNarrativeSession } = require('../lib/handler');
  const { NarrativeClient } = require('./helpers/ws-server');

  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc');

  test('once closed, nothing keeps a socket: neither one that was restored nor one whose restore finished after its close', async () => {
    const store = await box.open(box.tempDir('mia-guards-gone-'));
    const wss = new WebSocketServer({ noServer: true });
    // The host keeps nothing of a socket but a weak reference, as a host that forgets it would.
    const sockets = [];
    const settled = [];
    const httpServer = http.createServer((req, res) => res.writeHead(404).end());
    httpServer.on('upgrade', (req, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        const gone = new Promise((resolve) => ws.once('close', resolve));
        // A client that says `late` is admitted only once it is gone: its restore runs after its close.
        const resolveUser = () => (req.headers['x-late'] ? gone.then(() => 'alice') : 'alice');
        const connection = attachNarrativeSession(ws, req, { store, resolveUser });
        sockets.push(new WeakRef(ws));
        settled.push(gone.then(() => connection.ready).then(() => connection.saved));
      });
    });
    await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    const url = `ws://127.0.0.1:${httpServer.address().port}/api/ws/narrative?workspace=${encodeURIComponent(WORKSPACE)}`;
    try {
      // Another tab stays open on the same session the whole time: its room is never empty.
      const stays = new NarrativeClient(url, { label: 'stays open' });
      await stays.restored();
      const restored = new NarrativeClient(url, { label: 'restored, then closed' });
      await restored.restored();
      await restored.updateAndAck({ memory: { by: 'the tab that closes' } });
      await restored.close();
      const late = new NarrativeClient(url, { headers: { 'x-late': '1' }, label: 'closed before its restore' });
      await late.opened;
      await late.close();
      await pollUntil(() => settled.length === 3, { what: 'the server to take the sockets' });
      expect(await Promise.all(settled.slice(1))).toEqual([false, false]);
      expect(late.messages).toEqual([]);
      // The tab that stayed hears of a change made now; the closed ones are sent nothing.
      await store.merge('alice', WORKSPACE, { memory: { after: 'the closes' } });
      await stays.nextEvent('merged');
      settled.length = 0;
      await pollUntil(
        async () => {
          await new Promise((resolve) => setImmediate(resolve));
          gc();
          return sockets.slice(1).every((ref) => ref.deref() === undefined);
        },
        { timeoutMs: 2000, what: 'the closed sockets to be collected' },
      );
      expect(sockets[0].deref()).toBeDefined();
      stays.ws.terminate();
    } finally {
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => httpServer.close(resolve));
    }
  });
});
