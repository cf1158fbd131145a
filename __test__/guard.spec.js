'use strict';
// The handler's guard at the start of a connection: the Origin check and the host's
// `authenticate(req)` run before anything is restored, merged or sent. Real `ws` clients against a
// real node http server and a real store on a temporary directory; the host's checks are real
// functions of the upgrade request, as a host would write them. No mocks.

const http = require('node:http');
const { WebSocketServer } = require('ws');

const { NarrativeSessionStore } = require('../index');
const { attachNarrativeSession } = require('../lib/handler');
const { sandbox, sessionFiles } = require('./helpers/env');
const { NarrativeClient } = require('./helpers/ws-server');

const WORKSPACE = '/home/me/proj';
const PATH = '/api/ws/narrative';

let box;
let dataDir;
let store;
const servers = [];
const clients = [];

beforeEach(async () => {
  box = sandbox();
  dataDir = box.tempDir('mia-guard-');
  store = await box.open(dataDir);
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.ws.terminate();
  for (const s of servers.splice(0)) await s.close();
  await box.dispose();
});

/**
 * A host that hands every upgrade on PATH to the handler with `options(req)` (the store is added).
 * `sockets` gets each server-side socket, so a test can see what the server received.
 */
async function startHost(options = () => ({})) {
  const wss = new WebSocketServer({ noServer: true });
  const server = http.createServer((req, res) => res.writeHead(404).end());
  const connections = [];
  const sockets = [];
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.push(ws);
      connections.push(attachNarrativeSession(ws, req, { store, ...options(req) }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const host = {
    port,
    connections,
    sockets,
    url: `ws://127.0.0.1:${port}${PATH}?workspace=${encodeURIComponent(WORKSPACE)}`,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await Promise.allSettled(connections.map((c) => c.saved).filter(Boolean));
    },
  };
  servers.push(host);
  return host;
}

function connect(host, { headers = {}, label } = {}) {
  const client = new NarrativeClient(host.url, { headers, label });
  clients.push(client);
  return client;
}

/** Resolves when the server-side socket `ws` has received `count` messages in all. */
function received(ws, count) {
  let seen = 0;
  return new Promise((resolve) => {
    const onMessage = () => {
      if (++seen < count) return;
      ws.off('message', onMessage);
      resolve();
    };
    ws.on('message', onMessage);
  });
}

/**
 * A ping and its pong: the server writes frames in order, so whatever it sent before answering the
 * ping has reached the client when the pong does.
 */
function roundTrip(client) {
  return new Promise((resolve) => {
    client.ws.once('pong', resolve);
    client.ws.ping();
  });
}

/** A promise with its resolve function, for a host check the test decides when to answer. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function expectNothingStored() {
  expect(await store.list()).toEqual([]);
  expect(sessionFiles(dataDir)).toEqual([]);
}

describe('Origin', () => {
  test('a page on another site is refused with 4403 before authenticate runs, and nothing is sent or stored', async () => {
    let authenticateCalls = 0;
    const host = await startHost(() => ({ authenticate: () => ++authenticateCalls > 0 }));
    const client = connect(host, { headers: { origin: 'http://evil.example' }, label: 'evil.example' });
    await client.opened;
    expect(await client.closed).toEqual({ code: 4403, reason: 'origin not allowed' });
    expect(client.messages).toEqual([]);
    await expect(host.connections[0].ready).rejects.toMatchObject({ code: 'EORIGIN' });
    expect(authenticateCalls).toBe(0);
    await expectNothingStored();
  });

  test("the server's own origin, and a client that sends none (not a browser), are admitted", async () => {
    const host = await startHost();
    const samePage = connect(host, { headers: { origin: `http://127.0.0.1:${host.port}` }, label: 'same origin' });
    expect((await samePage.restored()).session.workspaceId).toBe(WORKSPACE);
    const cli = connect(host, { label: 'no origin' });
    expect((await cli.restored()).session.workspaceId).toBe(WORKSPACE);
  });

  test('`Origin: null` (a sandboxed frame or a file) and a same-host Origin on another port are refused', async () => {
    const host = await startHost();
    for (const origin of ['null', `http://127.0.0.1:${host.port + 1}`, 'not a url']) {
      const client = connect(host, { headers: { origin }, label: origin });
      expect((await client.closed).code).toBe(4403);
      expect(client.messages).toEqual([]);
    }
    await expectNothingStored();
  });

  test('behind a proxy the forwarded host is the host (Forwarded, then X-Forwarded-Host), as in code-server', async () => {
    const host = await startHost();
    const viaForwarded = connect(host, {
      headers: { origin: 'https://ide.example.com', forwarded: 'for=192.0.2.1;host=ide.example.com;proto=https' },
    });
    expect((await viaForwarded.restored()).session.workspaceId).toBe(WORKSPACE);
    const viaXForwarded = connect(host, {
      headers: { origin: 'https://IDE.example.com', 'x-forwarded-host': 'ide.example.com' },
    });
    expect((await viaXForwarded.restored()).session.workspaceId).toBe(WORKSPACE);
    const mismatch = connect(host, { headers: { origin: 'https://evil.example', 'x-forwarded-host': 'ide.example.com' } });
    expect((await mismatch.closed).code).toBe(4403);
  });

  test('allowedOrigins widens the check to the origins it names, and `*` to any', async () => {
    const named = await startHost(() => ({ allowedOrigins: ['https://ide.example.com'] }));
    const allowed = connect(named, { headers: { origin: 'https://ide.example.com' } });
    expect((await allowed.restored()).session.workspaceId).toBe(WORKSPACE);
    // Same host, other scheme or port: another origin.
    for (const origin of ['http://ide.example.com', 'https://ide.example.com:8443', 'http://evil.example']) {
      const refused = connect(named, { headers: { origin }, label: origin });
      expect((await refused.closed).code).toBe(4403);
    }
    const any = await startHost(() => ({ allowedOrigins: ['*'] }));
    const elsewhere = connect(any, { headers: { origin: 'http://evil.example' } });
    expect((await elsewhere.restored()).session.workspaceId).toBe(WORKSPACE);
  });

  test('an allowedOrigins entry that is not an origin is a TypeError with code EINVALID', async () => {
    const host = await startHost();
    const client = connect(host);
    await client.restored();
    const [ws] = host.sockets;
    for (const allowedOrigins of ['https://ide.example.com', ['ide.example.com'], ['https://ide.example.com/path'], ['null'], [42]]) {
      let thrown;
      try {
        attachNarrativeSession(ws, { headers: {}, url: PATH }, { store, allowedOrigins });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(TypeError);
      expect(thrown.code).toBe('EINVALID');
    }
  });
});

describe('authenticate(req)', () => {
  /** A host's own check, as code-server's: a login cookie, here one of a fixed set. */
  const sessionsByCookie = new Map([
    ['mia_session=alice-key', 'alice'],
    ['mia_session=bob-key', 'bob'],
  ]);
  const cookieHost = () =>
    startHost(() => ({
      authenticate: async (req) => sessionsByCookie.has(req.headers.cookie),
      resolveUser: (req) => sessionsByCookie.get(req.headers.cookie),
    }));

  test("the host's check is honoured: its users get their own sessions, a wrong or missing cookie is refused with 4401", async () => {
    const host = await cookieHost();
    const alice = connect(host, { headers: { cookie: 'mia_session=alice-key' }, label: 'alice' });
    const restored = await alice.restored();
    expect(restored.session.userId).toBe('alice');
    await alice.updateAndAck({ memory: { secret: 'alice only' } });

    const bob = connect(host, { headers: { cookie: 'mia_session=bob-key' }, label: 'bob' });
    const bobs = await bob.restored();
    expect(bobs.session.userId).toBe('bob');
    expect(bobs.session.memory).toEqual({});

    for (const headers of [{ cookie: 'mia_session=guessed' }, {}]) {
      const intruder = connect(host, { headers, label: JSON.stringify(headers) });
      await intruder.opened;
      expect(await intruder.closed).toEqual({ code: 4401, reason: 'not authenticated' });
      expect(intruder.messages).toEqual([]);
    }
    expect((await store.list()).map((s) => s.userId).sort()).toEqual(['alice', 'bob']);
  });

  test('a refused connection gets nothing, and what it sent before the refusal is never applied', async () => {
    const answer = deferred();
    const called = deferred();
    const host = await startHost(() => ({
      authenticate: (req) => {
        called.resolve(req);
        return answer.promise;
      },
    }));
    const client = connect(host, { label: 'waiting for authentication' });
    await client.opened;
    const req = await called.promise;
    expect(req.url).toBe(`${PATH}?workspace=${encodeURIComponent(WORKSPACE)}`);

    const [ws] = host.sockets;
    const arrived = received(ws, 3);
    client.sendRaw('this is not JSON');
    client.sendRaw('{"no":"type"}');
    client.update({ memory: { planted: 'by someone not logged in' } }, 'u-1');
    await arrived;
    await roundTrip(client);
    expect(client.messages).toEqual([]);

    answer.resolve(false);
    expect(await client.closed).toEqual({ code: 4401, reason: 'not authenticated' });
    expect(client.messages).toEqual([]);
    await expect(host.connections[0].ready).rejects.toMatchObject({ code: 'EAUTH' });
    await host.connections[0].saved;
    await expectNothingStored();
  });

  test('what a client sent while its check ran is answered, in order, once it passes', async () => {
    const answer = deferred();
    const host = await startHost(() => ({ authenticate: () => answer.promise }));
    const client = connect(host, { label: 'admitted late' });
    await client.opened;
    const [ws] = host.sockets;
    const arrived = received(ws, 2);
    client.sendRaw('this is not JSON');
    client.update({ memory: { early: true } }, 'u-early');
    await arrived;
    await roundTrip(client);
    expect(client.messages).toEqual([]);

    answer.resolve(true);
    const error = await client.nextError();
    expect(error.payload.code).toBe('EINVALID');
    const ack = await client.next((m) => m.traceId === 'u-early', { what: 'the ack of u-early' });
    expect(ack.payload).toMatchObject({ event: 'ack', changes: ['memory.early'] });
    expect(ack.payload.session.memory).toEqual({ early: true });
    expect(client.messages.map((m) => m.payload.event || m.payload.code)).toEqual(['EINVALID', 'restored', 'ack']);
  });

  test('a check that throws refuses the connection (4401); the error is the cause of the rejected ready', async () => {
    const failure = new Error('the login service is down');
    const host = await startHost(() => ({
      authenticate: async () => {
        throw failure;
      },
    }));
    const client = connect(host);
    expect((await client.closed).code).toBe(4401);
    expect(client.messages).toEqual([]);
    await expect(host.connections[0].ready).rejects.toMatchObject({ code: 'EAUTH', cause: failure });
    await expectNothingStored();
  });

  test('only `true` admits: a truthy value that is not true is refused', async () => {
    const host = await startHost(() => ({ authenticate: () => 'yes' }));
    const client = connect(host);
    expect((await client.closed).code).toBe(4401);
    await expectNothingStored();
  });

  test('a resolveUser that throws, whatever it throws, refuses the connection the same way (4401, nothing sent)', async () => {
    const thrown = [new Error('no such user'), undefined, 'a string'];
    const host = await startHost(() => ({
      authenticate: () => true,
      resolveUser: () => {
        throw thrown.shift();
      },
    }));
    for (let i = 0; i < 3; i++) {
      const client = connect(host, { label: `throw #${i}` });
      expect((await client.closed).code).toBe(4401);
      expect(client.messages).toEqual([]);
      await expect(host.connections[i].ready).rejects.toMatchObject({ code: 'EAUTH' });
    }
    await expectNothingStored();
  });
});

describe('a second store', () => {
  test('guards are per connection: a refused socket does not disturb an admitted one on the same store', async () => {
    const host = await startHost((req) => ({ authenticate: () => req.headers.cookie === 'ok' }));
    const good = connect(host, { headers: { cookie: 'ok' }, label: 'good' });
    await good.restored();
    const bad = connect(host, { label: 'bad' });
    expect((await bad.closed).code).toBe(4401);
    const ack = await good.updateAndAck({ universeFocus: 'story' });
    expect(ack.changes).toEqual(['universeFocus']);
    // Another process sees the acked change: nothing about the refusal touched the session.
    const other = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
    box.track(other);
    const { session } = await other.load(ack.session.userId, WORKSPACE);
    expect(session.universeFocus).toBe('story');
  });
});
