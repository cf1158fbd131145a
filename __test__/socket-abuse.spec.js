'use strict';
// Slow and malicious socket clients against a real host in a process of its own: clients that never
// read, that half-close, that send their upgrade request a byte at a time, that send frames too big,
// binary or cut short, and that flood. The host's memory is weighed (after a full collection) before
// and after each, and must come back. See docs/protocol.md, "Clients that do not read".

const { FRAGMENT_BYTES } = require('../lib/fragments');
const { sandbox, pollUntil } = require('./helpers/env');
const { startHostProcess } = require('./helpers/abuse-host');
const { RawWsClient, OPCODE } = require('./helpers/raw-ws-client');
const { NarrativeClient } = require('./helpers/ws-server');

jest.setTimeout(60000);

const MiB = 1024 * 1024;
const WORKSPACE = '/home/me/proj';
const WS_OPEN = 1;
const WS_CLOSED = 3;
/** What one socket may hold for a client that does not read: one fragment and its frame header. */
const SOCKET_BOUND = FRAGMENT_BYTES + 1024;
/** As the reference server (server/index.js) sets it. */
const MAX_PAYLOAD = 2 * MiB;
/** What may stay behind in the host after clients are gone (allocator and JIT noise). */
const NOISE = 4 * MiB;

let box;
let host;
const clients = [];

beforeEach(() => {
  box = sandbox();
});

afterEach(async () => {
  for (const client of clients.splice(0)) {
    if (client instanceof RawWsClient) client.destroy();
    else client.ws.terminate();
  }
  if (host) await host.stop();
  host = undefined;
  await box.dispose();
});

async function startHost(options = {}) {
  host = await startHostProcess({ dataDir: box.tempDir('mia-abuse-'), ...options });
  return host;
}

function raw(options) {
  const client = new RawWsClient(host.port, { query: { workspace: WORKSPACE }, ...options });
  clients.push(client);
  return client;
}

function wsClient(user, label) {
  const client = new NarrativeClient(`ws://127.0.0.1:${host.port}/api/ws/narrative?workspace=${encodeURIComponent(WORKSPACE)}`, {
    user,
    label,
  });
  clients.push(client);
  return client;
}

/** The host's heap and the memory outside it (Buffers, socket buffers), after a full collection. */
async function weigh() {
  const stats = await host.request('stats');
  return { ...stats, held: stats.heapUsed + stats.external };
}

/** Gives alice a session of about `bytes` of JSON text, stored before anyone connects. */
async function seedSession(bytes) {
  const { sessionBytes } = await host.request('merge', {
    user: 'alice',
    workspace: WORKSPACE,
    update: { memory: { bulk: 'x'.repeat(bytes) } },
  });
  return sessionBytes;
}

const mib = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`;
const socketOf = (stats, client) => stats.sockets.find((s) => s.tag === client.tag);
const sessionEvents = (client) => client.messages.filter((m) => m.type === 'session-event' && m.payload.session);

/** Fails unless the host holds no more than `before` (plus noise), now that the clients are gone. */
async function expectMemoryBack(before) {
  const after = await weigh();
  const leftOver = after.held - before.held;
  expect({ leftOver: mib(leftOver), back: leftOver < NOISE }).toEqual({ leftOver: mib(leftOver), back: true });
}

/** Waits until the host has no socket open but `keep` ones. */
async function untilSocketsClosed(keep = 0) {
  await pollUntil(async () => (await weigh()).sockets.filter((s) => s.readyState !== WS_CLOSED).length === keep, {
    timeoutMs: 10000,
    what: `the host to have ${keep} sockets open`,
  });
}

describe('a client that never reads', () => {
  // A session sent whole (under one fragment) and one sent in fragments.
  test.each([
    ['200 KiB', 200 * 1024, 100],
    ['1 MiB', MiB, 40],
  ])('on a %s session costs the host one message at most, however many changes it misses, and gets the latest state at once when it reads again', async (_, size, updates) => {
    await startHost({ slowReaderTimeoutMs: 60000 });
    const sessionBytes = await seedSession(size);
    const before = await weigh();

    // Three tabs of alice stop reading the moment their sockets open; a fourth keeps working.
    const stuck = [raw({ user: 'alice', neverRead: true }), raw({ user: 'alice', neverRead: true }), raw({ user: 'alice', neverRead: true })];
    await Promise.all(stuck.map((c) => c.opened));
    const writer = wsClient('alice', 'writer');
    await writer.restored();
    for (let i = 0; i < updates; i++) await writer.updateAndAck({ memory: { [`k${i}`]: i } }, `w-${i}`);

    // Each change was announced to every stuck tab with the whole session: without a bound, that is
    // 20 or 40 MiB a tab waiting in the host.
    const during = await weigh();
    for (const client of stuck) {
      const { readyState, bufferedAmount } = socketOf(during, client);
      const buffered = `${bufferedAmount} bytes`;
      expect({ open: readyState === WS_OPEN, buffered, withinBound: bufferedAmount <= SOCKET_BOUND }).toEqual({
        open: true,
        buffered,
        withinBound: true,
      });
    }
    // Per stuck tab: the session being sent and one fragment of it; a little more for the rest.
    const grown = during.held - before.held;
    expect({ grown: mib(grown), withinBound: grown < 3 * (sessionBytes + SOCKET_BOUND) + 8 * MiB }).toEqual({
      grown: mib(grown),
      withinBound: true,
    });

    // One tab reads again: it is given the latest state, without one session per missed change.
    const reader = stuck[0];
    reader.resume();
    const latest = await host.request('load', { user: 'alice', workspace: WORKSPACE });
    await pollUntil(() => sessionEvents(reader).some((m) => m.payload.session.memory[`k${updates - 1}`] === updates - 1), {
      timeoutMs: 20000,
      what: 'the reading tab to be given the latest state',
    });
    const given = sessionEvents(reader);
    expect(given[0].payload.event).toBe('restored');
    expect(given.at(-1).payload).toMatchObject({ event: 'merged', session: latest });
    const announced = new Set(given.flatMap((m) => m.payload.changes || []));
    for (let i = 0; i < updates; i++) expect(announced).toContain(`memory.k${i}`);
    expect(given.length).toBeLessThan(updates / 2);

    // The memory comes back once the tabs are gone.
    await Promise.all(stuck.map((c) => c.destroy()));
    await untilSocketsClosed(1);
    await expectMemoryBack(before);
  });

  test('is closed with code 1013 once it has taken nothing for slowReaderTimeoutMs, and the host lets its memory go', async () => {
    await startHost({ slowReaderTimeoutMs: 500, wsOptions: { closeTimeout: 3000 } });
    await seedSession(MiB);
    const before = await weigh();
    const stuck = raw({ user: 'alice', neverRead: true });
    await stuck.opened;
    const writer = wsClient('alice', 'writer');
    await writer.restored();
    // More than the kernel's buffers hold, so that a write stays waiting.
    for (let i = 0; i < 12; i++) await writer.updateAndAck({ memory: { [`k${i}`]: i } });

    await pollUntil(async () => socketOf(await weigh(), stuck).readyState !== WS_OPEN, {
      timeoutMs: 10000,
      what: 'the host to close the socket that does not read',
    });
    // A client that reads again before the closing handshake times out is told why.
    stuck.resume();
    const { code, reason } = await stuck.closed;
    expect({ code, reason }).toEqual({ code: 1013, reason: 'client is not reading' });
    expect(writer.isOpen).toBe(true);
    await untilSocketsClosed(1);
    await expectMemoryBack(before);
  });
});

describe('a client that floods', () => {
  test('with large messages it does not wait for is read no faster than they are applied, and every one is answered in order', async () => {
    await startHost({ wsOptions: { maxPayload: MAX_PAYLOAD } });
    const before = await weigh();
    const flooder = raw({ user: 'alice' });
    await flooder.restored();
    flooder.pause();
    // 60 refused updates of 900 KiB each (an unknown universe): 54 MiB sent as fast as TCP takes it,
    // the first of them while the host is busy for half a second, so that they arrive faster than
    // they are applied whatever else this machine is doing.
    const count = 60;
    const bulk = 'y'.repeat(900 * 1024);
    const stalled = host.request('stall', { ms: 500 });
    for (let i = 0; i < count; i++) flooder.update({ universeFocus: 'galaxy', memory: { bulk } }, `f-${i}`);
    await stalled;

    // While they are applied, the host holds a few of them at most (weighed a few times meanwhile),
    // and stops reading the rest.
    let peak = 0;
    for (let sample = 0; sample < 8; sample++) peak = Math.max(peak, (await weigh()).held - before.held);
    expect({ peak: mib(peak), withinBound: peak < 8 * MiB }).toEqual({ peak: mib(peak), withinBound: true });

    flooder.resume();
    const replies = [];
    for (let i = 0; i < count; i++) replies.push(await flooder.next((m) => m.type === 'error', { timeoutMs: 20000, what: `reply ${i}` }));
    expect(replies.map((m) => [m.traceId, m.payload.code])).toEqual(Array.from({ length: count }, (_, i) => [`f-${i}`, 'EINVALID']));
    expect(socketOf(await weigh(), flooder).timesPaused).toBeGreaterThan(0);
    expect((await host.request('load', { user: 'alice', workspace: WORKSPACE })).memory).toEqual({});
    await flooder.destroy();
    await untilSocketsClosed();
    await expectMemoryBack(before);
  });

  test('with 3,000 small updates it does not read the acks of: all applied, all acked in order once it reads', async () => {
    await startHost({ wsOptions: { maxPayload: MAX_PAYLOAD } });
    const before = await weigh();
    const flooder = raw({ user: 'alice' });
    await flooder.restored();
    flooder.pause();
    const count = 3000;
    for (let i = 0; i < count; i++) flooder.update({ memory: { [`k${i}`]: i } }, `s-${i}`);
    flooder.resume();
    const acks = [];
    for (let i = 0; i < count; i++) acks.push(await flooder.next((m) => m.traceId !== undefined, { timeoutMs: 20000, what: `ack ${i}` }));
    expect(acks.map((m) => `${m.traceId} ${m.payload.event}`)).toEqual(Array.from({ length: count }, (_, i) => `s-${i} ack`));
    // The last ack carries the session, with every update in it.
    const last = acks.at(-1).payload.session;
    expect(Object.keys(last.memory)).toHaveLength(count);
    expect(last).toEqual(await host.request('load', { user: 'alice', workspace: WORKSPACE }));
    await flooder.destroy();
    await untilSocketsClosed();
    await expectMemoryBack(before);
  });
});

describe('slowloris', () => {
  test('20 clients that send their upgrade request a byte at a time are served, and cost nothing once gone', async () => {
    await startHost();
    await seedSession(10 * 1024);
    const before = await weigh();
    const slow = Array.from({ length: 20 }, () => raw({ user: 'alice', byteDelayMs: 2 }));
    const restored = await Promise.all(slow.map((c) => c.restored({ timeoutMs: 20000 })));
    for (const payload of restored) expect(payload.session.userId).toBe('alice');
    await Promise.all(slow.map((c) => c.destroy()));
    await untilSocketsClosed();
    await expectMemoryBack(before);
  });

  test('an upgrade request that never ends reaches no session, and costs nothing once dropped', async () => {
    await startHost();
    const before = await weigh();
    const endless = Array.from({ length: 20 }, () => raw({ user: 'mallory', complete: false }));
    // Every byte but the last is in the host's hands.
    await Promise.all(endless.map((c) => c.requestSent));
    const other = wsClient('alice', 'a client that finishes its request');
    await other.restored();
    expect((await host.request('list')).map((s) => s.userId)).toEqual(['alice']);
    expect(endless.every((c) => !c.upgraded)).toBe(true);
    await Promise.all(endless.map((c) => c.destroy()));
    other.ws.close();
    await untilSocketsClosed();
    await expectMemoryBack(before);
  });
});

describe('half-open connections', () => {
  test('a client that half-closes after an update is closed by the host, which saves its change and lets it go', async () => {
    await startHost();
    const before = await weigh();
    const client = raw({ user: 'alice' });
    await client.restored();
    client.update({ memory: { before: 'half-close' } }, 'h-1');
    expect(await client.next((m) => m.traceId === 'h-1')).toMatchObject({ payload: { event: 'ack' } });
    client.halfClose();
    await client.closed;
    await untilSocketsClosed();
    expect((await host.request('load', { user: 'alice', workspace: WORKSPACE })).memory).toEqual({ before: 'half-close' });
    await expectMemoryBack(before);
  });

  test('a client that stops in the middle of a frame changes nothing, holds up no one, and is let go when it drops', async () => {
    await startHost();
    const before = await weigh();
    const client = raw({ user: 'alice' });
    await client.restored();
    const frame = JSON.stringify({ type: 'session-update', traceId: 'cut', payload: { memory: { cut: true } } });
    client.sendFrame({ payload: frame.slice(0, 20), claimedLength: Buffer.byteLength(frame) });
    const other = wsClient('alice', 'another tab');
    await other.restored();
    expect((await other.updateAndAck({ memory: { other: 1 } })).session.memory).toEqual({ other: 1 });
    await client.destroy();
    other.ws.close();
    await untilSocketsClosed();
    expect((await host.request('load', { user: 'alice', workspace: WORKSPACE })).memory).toEqual({ other: 1 });
    await expectMemoryBack(before);
  });
});

describe('frames no client should send', () => {
  const update = (traceId) => JSON.stringify({ type: 'session-update', traceId, payload: { memory: { bad: traceId } } });
  // [what, close code, send(client)]: each closes the socket with that code and changes nothing.
  const CLOSING = [
    ['a frame that claims 1 TiB', 1009, (c) => c.sendFrame({ payload: 'x', claimedLength: 2 ** 40 })],
    [
      'a message over maxPayload in fragments',
      1009,
      (c) => {
        const part = Buffer.alloc(MiB, 'x');
        c.sendFrame({ payload: part, fin: false });
        c.sendFrame({ opcode: OPCODE.continuation, payload: part, fin: false });
        c.sendFrame({ opcode: OPCODE.continuation, payload: part });
      },
    ],
    ['text that is not UTF-8', 1007, (c) => c.sendFrame({ payload: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]) })],
    ['an unmasked frame', 1002, (c) => c.sendFrame({ payload: update('unmasked'), mask: false })],
    ['a ping over 125 bytes', 1002, (c) => c.sendFrame({ opcode: OPCODE.ping, payload: Buffer.alloc(200) })],
    ['a continuation with no message begun', 1002, (c) => c.sendFrame({ opcode: OPCODE.continuation, payload: update('orphan') })],
    ['a reserved opcode', 1002, (c) => c.sendFrame({ opcode: 3, payload: update('reserved') })],
  ];

  test.each(CLOSING)('%s closes the socket with code %i and changes nothing', async (what, code, send) => {
    await startHost({ wsOptions: { maxPayload: MAX_PAYLOAD } });
    const before = await weigh();
    const client = raw({ user: 'alice' });
    await client.restored();
    send(client);
    expect({ what, code: (await client.closed).code }).toEqual({ what, code });
    await untilSocketsClosed();
    expect((await host.request('load', { user: 'alice', workspace: WORKSPACE })).memory).toEqual({});
    await expectMemoryBack(before);
  });

  test('a session-update in a binary frame is left alone: no change, no reply, and the socket stays open', async () => {
    await startHost({ wsOptions: { maxPayload: MAX_PAYLOAD } });
    const client = raw({ user: 'alice' });
    await client.restored();
    client.sendFrame({ opcode: OPCODE.binary, payload: update('binary') });
    client.update({ memory: { text: true } }, 'text-1');
    const reply = await client.nextMessage();
    expect(reply).toMatchObject({ traceId: 'text-1', payload: { event: 'ack', session: { memory: { text: true } } } });
  });

  test('a message over maxMessageBytes but within maxPayload gets ETOOLARGE, and the socket stays open', async () => {
    await startHost({ wsOptions: { maxPayload: MAX_PAYLOAD } });
    const before = await weigh();
    const client = raw({ user: 'alice' });
    await client.restored();
    client.update({ memory: { big: 'z'.repeat(1.5 * MiB) } }, 'big');
    expect(await client.nextMessage()).toMatchObject({ type: 'error', traceId: 'big', payload: { code: 'ETOOLARGE' } });
    client.update({ memory: { small: true } }, 'small');
    expect(await client.nextMessage()).toMatchObject({ traceId: 'small', payload: { event: 'ack' } });
    await client.destroy();
    await untilSocketsClosed();
    await expectMemoryBack(before);
  });
});
