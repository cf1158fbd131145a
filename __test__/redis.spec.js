'use strict';
// The Redis backend (issue 5), against real redis-server processes started on free ports
// (helpers/redis-server.js): the store contract run against both backends by the same test code,
// two store instances in two processes on one Redis, TTL expiry, Redis killed and restarted
// mid-run, Redis down at open, and invalid data planted by hand.
//
// Addon errors come from another realm than Jest's, so they are matched on `code`, never instanceof.

const crypto = require('crypto');
const zlib = require('zlib');
const fs = require('fs');
const path = require('path');
const { fork, spawn } = require('child_process');

const { NarrativeSessionStore } = require('../index');
const { QUIET, sandbox, pollUntil, sleep } = require('./helpers/env');
const { richUpdate, expectRestored } = require('./helpers/fixtures');
const net = require('net');
const { startRedis, freePort, redisCommand, parseReply, encodeCommand } = require('./helpers/redis-server');
const { NarrativeClient } = require('./helpers/ws-server');

const WORKER = path.join(__dirname, 'helpers', 'redis-worker.js');
const SERVER = path.resolve(__dirname, '..', 'server', 'index.js');
const SECOND = 1 / 86400; // ttlDays of one second

jest.setTimeout(30000);

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

let prefixes = 0;
/** A key prefix no other test uses, so tests can share one redis-server. */
function freshPrefix(what = 't') {
  prefixes += 1;
  return `mia:ns:${what}${prefixes}-${process.pid}:`;
}

/** Opens a store (timers off unless `options` says otherwise) that the sandbox closes at the end. */
async function openStore(where, options = {}) {
  return box.track(await NarrativeSessionStore.open({ ...QUIET, ...where, ...options }));
}

/** Resolves with the error `promise` rejects with; fails if it resolves. */
async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('resolved instead of rejecting');
}

/** The 64-hex stem of a session, as docs/storage.md defines it. */
function stemOf(userId, workspaceId) {
  const u = Buffer.from(userId, 'utf8');
  const w = Buffer.from(workspaceId, 'utf8');
  const len = (n) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };
  return crypto
    .createHash('sha256')
    .update(Buffer.concat([Buffer.from('mia-narrative-session/v1\0'), len(u.length), u, len(w.length), w]))
    .digest('hex');
}

/** The Redis keys of a session: `{ snap, log, ver, gen }`. */
function keysOf(prefix, userId, workspaceId) {
  const base = `${prefix}{${stemOf(userId, workspaceId)}}`;
  return { snap: `${base}:snap`, log: `${base}:log`, ver: `${base}:ver`, gen: `${base}:gen`, mark: `${base}:mark` };
}

/** The mark of a snapshot the store wrote (docs/storage.md): "1 <CRC-32 of the stem, a zero byte and
 * the bytes, 8 hex digits> <length>". */
function markOf(userId, workspaceId, bytes) {
  const crc = zlib.crc32(Buffer.concat([Buffer.from(stemOf(userId, workspaceId)), Buffer.from([0]), bytes]));
  return `1 ${crc.toString(16).padStart(8, '0')} ${bytes.length}`;
}

/** Every key matching `pattern`, found with SCAN. */
async function scanKeys(port, pattern) {
  const found = new Set();
  let cursor = '0';
  do {
    const [next, keys] = await redisCommand(port, 'SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next.toString();
    for (const k of keys) found.add(k.toString());
  } while (cursor !== '0');
  return [...found].sort();
}

/** The union of the `changes` of the 'external' events in `events`. */
function externalChanges(events) {
  const out = new Set();
  for (const e of events) if (e.origin === 'external') for (const c of e.changes) out.add(c);
  return out;
}

// ---------------------------------------------------------------------------------------------
// (a) The store contract, the same test code against both backends.

const fileBackend = {
  async start() {},
  async stop() {},
  /** Where a fresh set of sessions lives: a new data dir. */
  location() {
    return { dataDir: path.join(box.tempDir(), 'sessions') };
  },
};

const redisBackend = {
  redis: undefined,
  async start() {
    this.redis = await startRedis();
  },
  async stop() {
    if (this.redis) await this.redis.dispose();
  },
  /** Where a fresh set of sessions lives: a new key prefix on the shared redis-server. */
  location() {
    return { backend: 'redis', redisUrl: this.redis.url(), keyPrefix: freshPrefix('contract') };
  },
};

describe.each([
  ['file', fileBackend],
  ['redis', redisBackend],
])('the store contract (%s backend)', (_name, backend) => {
  beforeAll(() => backend.start());
  afterAll(() => backend.stop());

  let where;
  beforeEach(() => {
    where = backend.location();
  });

  test('the first access creates and persists the session; later accesses find it', async () => {
    const store = await openStore(where);
    const first = await store.load('alice', '/home/alice/proj');
    expect(first).toMatchObject({ created: true, recovered: false });
    expect(first.session).toMatchObject({
      userId: 'alice',
      workspaceId: '/home/alice/proj',
      universeFocus: 'all',
      activeCharts: [],
      storyBeats: [],
      memory: {},
      conversationHistory: [],
      config: {},
    });
    expect(first.session.id).toBe(stemOf('alice', '/home/alice/proj').slice(0, 32));
    const again = await store.load('alice', '/home/alice/proj');
    expect(again).toMatchObject({ created: false, recovered: false });
    expect(again.session).toEqual(first.session);

    // Created in memory; its first save stores it, and another instance finds it.
    expect(await store.save('alice', '/home/alice/proj')).toBe(true);
    const other = await openStore(where);
    const seen = await other.load('alice', '/home/alice/proj');
    expect(seen).toMatchObject({ created: false, recovered: false });
    expect(seen.session).toEqual(first.session);

    const raw = await other.loadRaw('alice', '/home/alice/proj');
    expect(raw).toMatchObject({ created: false, recovered: false });
    expect(JSON.parse(raw.sessionJson.toString('utf8'))).toEqual(first.session);

    // Parallel first loads of another session create it exactly once.
    const results = await Promise.all(Array.from({ length: 8 }, () => store.load('bob', '/b')));
    expect(results.filter((r) => r.created)).toHaveLength(1);
  });

  test('a new store instance restores every field after save(), and close() flushes unsaved changes', async () => {
    const update = richUpdate();
    const first = await openStore(where);
    const merged = await first.merge('alice', '/proj', update, { returnSession: true });
    expectRestored(merged.session, update);
    expect(await first.save('alice', '/proj')).toBe(true);
    const unsaved = await first.merge('bob', '/proj', { memory: { flushed: 'by close' } }, { returnSession: true });
    await first.close();

    const second = await openStore(where);
    const back = await second.load('alice', '/proj');
    expect(back).toMatchObject({ created: false, recovered: false });
    expectRestored(back.session, update);
    expect(back.session).toEqual(merged.session); // versions included
    expect((await second.load('bob', '/proj')).session).toEqual(unsaved.session);
  });

  test('a durable merge is stored once it resolves', async () => {
    const writer = await openStore(where);
    await writer.load('alice', '/proj');
    const reader = await openStore(where);
    await writer.merge('alice', '/proj', { memory: { durable: 'yes' } }, { durable: true, returnSession: false });
    const { session } = await reader.load('alice', '/proj');
    expect(session.memory).toEqual({ durable: 'yes' });
  });

  test('merge reports what changed, nothing for the same values, and null deletes', async () => {
    const store = await openStore(where);
    await store.load('alice', '/proj');
    const first = await store.merge('alice', '/proj', {
      universeFocus: 'story',
      memory: { goal: 'ship', count: 1, drop: 'x' },
      config: { theme: 'dark', old: true },
      conversationHistory: [{ id: 'e1', role: 'user', content: 'hi' }],
      storyBeats: [{ id: 'b1', description: 'start', type: 'custom' }],
      activeCharts: [{ id: 'c1', title: 'Chart', actions: [{ id: 'a1', title: 'act', completed: false, order: 1 }] }],
    }, { returnSession: true });
    expect([...first.changes].sort()).toEqual(
      expect.arrayContaining(['universeFocus', 'memory.goal', 'memory.count', 'config.theme', 'conversationHistory.e1', 'storyBeats.b1']),
    );

    const same = await store.merge('alice', '/proj', {
      universeFocus: 'story',
      memory: { goal: 'ship', count: 1 },
      conversationHistory: [first.session.conversationHistory[0]],
    }, { returnSession: true });
    expect(same.changes).toEqual([]);
    expect(same.session).toEqual(first.session);

    const one = await store.merge('alice', '/proj', { memory: { goal: 'ship', count: 2 } });
    expect(one.changes).toEqual(['memory.count']);

    const action = await store.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }] }] }, { returnSession: true });
    expect(action.changes).toContain('activeCharts.c1.actions.a1.completed');
    expect(action.session.activeCharts[0]).toMatchObject({ id: 'c1', title: 'Chart' });

    const deleted = await store.merge('alice', '/proj', { memory: { drop: null }, config: { old: null } }, { returnSession: true });
    expect([...deleted.changes].sort()).toEqual(['config.old', 'memory.drop']);
    expect(deleted.session.memory).toEqual({ goal: 'ship', count: 2 });
    expect(deleted.session.config).toEqual({ theme: 'dark' });
    expect((await store.merge('alice', '/proj', { memory: { drop: null } })).changes).toEqual([]);

    const quiet = await store.merge('alice', '/proj', { memory: { count: 3 } }, { returnSession: false });
    expect(quiet).toEqual({ changes: ['memory.count'], lost: [] });
    await store.close();

    const other = await openStore(where);
    const { session } = await other.load('alice', '/proj');
    expect(session.memory).toEqual({ goal: 'ship', count: 3 });
    expect(session.config).toEqual({ theme: 'dark' });
    expect(session.activeCharts[0].actions[0].completed).toBe(true);
  });

  test('listeners hear every merge that changed something, with its origin, until they unsubscribe', async () => {
    const store = await openStore(where);
    const events = [];
    const off = store.onMerge((e) => events.push(e));
    // A listener that stays, to know when an event has been delivered.
    const witnessed = [];
    store.onMerge((e) => witnessed.push(e));
    const { session } = await store.load('alice', '/proj');
    await store.merge('alice', '/proj', { memory: { a: 1 } }, { origin: 'socket-1' });
    await store.merge('alice', '/proj', { memory: { a: 1 } }, { origin: 'socket-2' }); // no change
    await store.merge('alice', '/proj', { universeFocus: 'engineer' });
    // A listener hears events in the order of the merges: once the last is heard, any for the
    // merge that changed nothing would have come before it.
    await pollUntil(() => events.some((e) => e.changes.includes('universeFocus')), { what: 'the last merge event' });
    expect(events).toEqual([
      { userId: 'alice', workspaceId: '/proj', sessionId: session.id, origin: 'socket-1', changes: ['memory.a'] },
      { userId: 'alice', workspaceId: '/proj', sessionId: session.id, origin: 'local', changes: ['universeFocus'] },
    ]);
    off();
    await store.merge('alice', '/proj', { memory: { b: 2 } });
    await pollUntil(() => witnessed.some((e) => e.changes.includes('memory.b')), { what: 'the event after unsubscribing' });
    expect(events).toHaveLength(2);
  });

  test("another instance's saved change reaches this instance's live session as an 'external' merge", async () => {
    const here = await openStore(where);
    const there = await openStore(where);
    await here.load('alice', '/proj');
    await here.save('alice', '/proj');
    expect((await there.load('alice', '/proj')).created).toBe(false);
    const events = [];
    here.onMerge((e) => events.push(e));
    await there.merge('alice', '/proj', { memory: { fromThere: 1 }, conversationHistory: [{ id: 'x1', role: 'user', content: 'x' }] });
    expect(await there.save('alice', '/proj')).toBe(true);
    await pollUntil(() => externalChanges(events).has('conversationHistory.x1'), { timeoutMs: 5000, what: 'the external event' });
    expect(externalChanges(events)).toEqual(new Set(['memory.fromThere', 'conversationHistory.x1']));
    expect((await here.load('alice', '/proj')).session.memory).toEqual({ fromThere: 1 });
    // Hearing it does not make it this instance's change to write.
    expect(await here.save('alice', '/proj')).toBe(false);
  });

  test('save() resolves true when it wrote, false when there was nothing to write', async () => {
    const store = await openStore(where);
    expect(await store.save('nobody', '/never-loaded')).toBe(false);
    await store.load('alice', '/proj');
    expect(await store.save('alice', '/proj')).toBe(true); // created: its first snapshot
    expect(await store.save('alice', '/proj')).toBe(false);
    await store.merge('alice', '/proj', { memory: { k: 1 } });
    expect((await store.list())[0]).toMatchObject({ loaded: true, dirty: true });
    expect(await store.save('alice', '/proj')).toBe(true);
    expect((await store.list())[0]).toMatchObject({ loaded: true, dirty: false });
    expect(await store.save('alice', '/proj')).toBe(false);
    await store.merge('alice', '/proj', { memory: { k: 1 } }); // no change
    expect(await store.save('alice', '/proj')).toBe(false);
  });

  test('delete() removes the session everywhere; the next load creates it anew', async () => {
    const store = await openStore(where);
    await store.merge('alice', '/proj', { memory: { secret: 'x' } });
    await store.save('alice', '/proj');
    await store.merge('alice', '/proj', { memory: { more: 'y' } });
    await store.save('alice', '/proj');
    await store.load('bob', '/proj');
    expect(await store.delete('alice', '/proj')).toBe(true);
    expect((await store.list()).map((s) => s.userId)).toEqual(['bob']);
    expect(await store.delete('alice', '/proj')).toBe(false);
    const again = await store.load('alice', '/proj');
    expect(again.created).toBe(true);
    expect(again.session.memory).toEqual({});
    await store.delete('alice', '/proj');
    await store.close();
    const other = await openStore(where);
    expect((await other.load('alice', '/proj')).created).toBe(true);
  });

  test('list() summarises every stored session, sorted by user and workspace', async () => {
    const store = await openStore(where);
    expect(await store.list()).toEqual([]);
    await store.merge('bob', '/b', {
      activeCharts: [{ id: 'c1', title: 'one' }, { id: 'c2', title: 'two' }],
      storyBeats: [{ id: 'b1', description: 'x', type: 'commit' }],
      conversationHistory: [1, 2, 3].map((n) => ({ id: `e${n}`, role: 'user', content: `${n}` })),
    });
    await store.save('bob', '/b');
    await store.load('alice', '/z');
    await store.load('alice', '/a');
    await store.merge('alice', '/a', { memory: { unsaved: true } });
    const list = await store.list();
    expect(list.map((s) => [s.userId, s.workspaceId])).toEqual([
      ['alice', '/a'],
      ['alice', '/z'],
      ['bob', '/b'],
    ]);
    expect(list[2]).toMatchObject({ charts: 2, beats: 1, entries: 3, loaded: true, dirty: false });
    expect(list[0]).toMatchObject({ loaded: true, dirty: true });
    for (const s of list) {
      expect(s.id).toBe(stemOf(s.userId, s.workspaceId).slice(0, 32));
      // Created by a load and not saved yet: nothing stored.
      expect(s.bytes > 0).toBe(s.userId === 'bob');
      expect(Number.isNaN(Date.parse(s.updatedAt))).toBe(false);
    }
    await store.close();
    const other = await openStore(where);
    expect((await other.list()).map((s) => [s.userId, s.workspaceId, s.loaded, s.dirty, s.entries])).toEqual([
      ['alice', '/a', false, false, 0],
      ['alice', '/z', false, false, 0],
      ['bob', '/b', false, false, 3],
    ]);
  });

  test('cleanup() keeps a session loaded in this store', async () => {
    const store = await openStore(where);
    await store.merge('alice', '/proj', { memory: { k: 1 } });
    await store.save('alice', '/proj');
    const report = await store.cleanup();
    expect(report).toMatchObject({ removed: 0, errors: [] });
    expect(report.inUse).toBeGreaterThanOrEqual(1);
    const other = await openStore(where);
    expect((await other.load('alice', '/proj')).session.memory).toEqual({ k: 1 });
  });

  test('bad input is refused with a stable code and changes nothing', async () => {
    const store = await openStore(where, { maxSessionBytes: 10000 });
    await store.merge('alice', '/proj', { memory: { goal: 'ship' }, conversationHistory: [{ id: 'e1', role: 'user', content: 'hi' }] });
    await store.save('alice', '/proj');
    const before = (await store.load('alice', '/proj')).session;
    const events = [];
    store.onMerge((e) => events.push(e));

    const refused = [
      ['EINVALID', () => store.load('', '/proj')],
      ['EINVALID', () => store.load('alice', 'x'.repeat(1025))],
      ['EINVALID', () => store.load(42, '/proj')],
      ['EINVALID', () => store.merge('alice', '/proj', { universeFocus: 'galaxy', memory: { goal: 'changed' } })],
      ['EINVALID', () => store.merge('alice', '/proj', { conversationHistory: [{ id: 'e2', role: 'robot' }] })],
      ['EINVALID', () => store.merge('alice', '/proj', 'not an update')],
      [
        'EINVALID',
        () => store.merge('alice', '/proj', { memory: { goal: 'x' }, versions: { 'memory.goal': `${Date.now() + 30 * 86400000}-0000-future` } }),
      ],
      ['ETOOLARGE', () => store.merge('alice', '/proj', { memory: { big: 'x'.repeat(20000) } })],
      ['EINVALID', () => store.save('', '/proj')],
      ['EINVALID', () => store.delete('alice', '')],
      ['EINVALID', () => store.cleanup({ ttlDays: -1 })],
    ];
    for (const [code, call] of refused) expect(await rejection(call())).toMatchObject({ code });

    expect((await store.load('alice', '/proj')).session).toEqual(before);
    expect(await store.save('alice', '/proj')).toBe(false);
    expect(events).toEqual([]);
    const other = await openStore(where);
    expect((await other.load('alice', '/proj')).session).toEqual(before);
    expect((await other.list()).map((s) => s.userId)).toEqual(['alice']);

    for (const bad of [{ ttlDays: -1 }, { autosaveIntervalMs: 'often' }, { maxSessionBytes: 0 }, { noSuchOption: 1 }]) {
      expect(await rejection(NarrativeSessionStore.open({ ...where, ...bad }))).toMatchObject({ code: 'EINVALID' });
    }
  });

  test('after close() every call rejects with ECLOSED, and close() again resolves', async () => {
    const store = await openStore(where);
    await store.merge('alice', '/proj', { memory: { flushed: 'at close' } });
    await store.close();
    for (const call of [
      () => store.load('alice', '/proj'),
      () => store.loadRaw('alice', '/proj'),
      () => store.merge('alice', '/proj', { memory: { late: 1 } }),
      () => store.save('alice', '/proj'),
      () => store.flush(),
      () => store.delete('alice', '/proj'),
      () => store.list(),
      () => store.cleanup(),
    ]) {
      expect(await rejection(call())).toMatchObject({ code: 'ECLOSED' });
    }
    await expect(store.close()).resolves.toMatchObject({ notCompacted: [] });
    const other = await openStore(where);
    const { session } = await other.load('alice', '/proj');
    expect(session.memory).toEqual({ flushed: 'at close' });
  });
});

// ---------------------------------------------------------------------------------------------
// Redis specifics: keys, options, multi-instance, TTL, faults, bad data. One redis-server (no
// persistence) shared by the tests below that do not kill it; each test uses its own key prefix.

describe('the Redis backend', () => {
  let redis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    if (redis) await redis.dispose();
  });
  const redisAt = (keyPrefix = freshPrefix(), db = 0) => ({ backend: 'redis', redisUrl: redis.url(db), keyPrefix });

  describe('keys and options', () => {
    test("a session is five hash-tagged keys, each with the TTL; the snapshot's mark is its CRC; a save appends one journal frame", async () => {
      const prefix = freshPrefix('keys');
      const store = await openStore(redisAt(prefix), { ttlDays: 3 });
      await store.load('alice', '/proj');
      expect(await scanKeys(redis.port, `${prefix}*`)).toEqual([]); // created, not saved yet
      expect(await store.save('alice', '/proj')).toBe(true);
      const keys = keysOf(prefix, 'alice', '/proj');
      expect(await scanKeys(redis.port, `${prefix}*`)).toEqual([keys.gen, keys.mark, keys.snap, keys.ver].sort());
      const snapBytes = await redis.command('GET', keys.snap);
      const snap = JSON.parse(snapBytes.toString('utf8'));
      expect(snap).toMatchObject({ userId: 'alice', workspaceId: '/proj', id: stemOf('alice', '/proj').slice(0, 32) });
      expect(await redis.text('GET', keys.mark)).toBe(markOf('alice', '/proj', snapBytes));

      await store.merge('alice', '/proj', { memory: { k: 1 } });
      expect(await store.save('alice', '/proj')).toBe(true);
      expect(await redis.command('LLEN', keys.log)).toBe(1);
      const frame = await redis.command('LINDEX', keys.log, 0);
      const length = frame.readUInt32LE(0);
      expect(frame.length).toBe(8 + length);
      expect(JSON.parse(frame.subarray(8).toString('utf8'))).toMatchObject({ memory: { k: 1 } });

      const ttl = 3 * 86400000;
      for (const key of Object.values(keys)) {
        const pttl = await redis.command('PTTL', key);
        expect(pttl).toBeGreaterThan(ttl - 60000);
        expect(pttl).toBeLessThanOrEqual(ttl);
      }
    });

    test("keyPrefix defaults to 'mia:ns:'; the database in the URL is used", async () => {
      const db = 3;
      const store = await openStore({ backend: 'redis', redisUrl: redis.url(db) });
      await store.load('alice', '/default-prefix');
      await store.save('alice', '/default-prefix');
      const keys = keysOf('mia:ns:', 'alice', '/default-prefix');
      expect(await redis.command('EXISTS', keys.snap)).toBe(0); // not in db 0
      expect(await scanKeysInDb(redis.port, db, 'mia:ns:*')).toEqual([keys.gen, keys.mark, keys.snap, keys.ver].sort());
      await store.delete('alice', '/default-prefix');
    });

    test("a restore sends the snapshot the store wrote as it is; one changed since is read again; a session restored so takes in another instance's change", async () => {
      const prefix = freshPrefix('mark');
      const keys = keysOf(prefix, 'alice', '/proj');
      const writer = await openStore(redisAt(prefix));
      await writer.merge('alice', '/proj', richUpdate());
      await writer.close(); // compacts: the snapshot, marked, and an empty log
      expect(await redis.command('LLEN', keys.log)).toBe(0);
      const stored = await redis.command('GET', keys.snap);
      const restore = async () => {
        const store = await openStore(redisAt(prefix));
        return { store, text: (await store.loadRaw('alice', '/proj')).sessionJson.toString('utf8') };
      };
      expect((await restore()).text).toBe(stored.toString('utf8'));

      // The same session with spaces added, by hand: the mark no longer matches, so it is parsed
      // and sent as the store serialises it.
      const spaced = JSON.stringify(JSON.parse(stored.toString('utf8')), null, 1);
      await redis.command('SET', keys.snap, spaced);
      const reread = await restore();
      expect(reread.text).not.toBe(spaced);
      expect(JSON.parse(reread.text)).toEqual(JSON.parse(stored.toString('utf8')));
      await reread.store.close();
      // With a mark that matches those bytes, the store sends them unparsed, spaces and all.
      await redis.command('SET', keys.snap, spaced);
      await redis.command('SET', keys.mark, markOf('alice', '/proj', Buffer.from(spaced)));
      const { store: here, text } = await restore();
      expect(text).toBe(spaced);

      // The session here is still its text; another instance's saved change is parsed in.
      const events = [];
      here.onMerge((e) => events.push(e));
      const there = await openStore(redisAt(prefix));
      await there.merge('alice', '/proj', { conversationHistory: [{ id: 'late-1', role: 'user', content: 'from there' }] });
      expect(await there.save('alice', '/proj')).toBe(true);
      await pollUntil(() => externalChanges(events).has('conversationHistory.late-1'), { timeoutMs: 5000, what: 'the external event' });
      const history = JSON.parse((await here.loadRaw('alice', '/proj')).sessionJson.toString('utf8')).conversationHistory;
      expect(history.map((e) => e.id)).toContain('late-1');
      expect(history).toHaveLength(JSON.parse(stored.toString('utf8')).conversationHistory.length + 1);
    });

    test('two key prefixes on one Redis are two separate stores: sessions, lists and events stay apart', async () => {
      const one = await openStore(redisAt(freshPrefix('iso')));
      const twoPrefix = freshPrefix('iso');
      const two = await openStore(redisAt(twoPrefix));
      await one.load('alice', '/proj');
      await two.load('alice', '/proj');
      const heardByTwo = [];
      two.onMerge((e) => heardByTwo.push(e));
      await one.merge('alice', '/proj', { memory: { only: 'one' } }, { durable: true });
      // A durable merge resolves after its PUBLISH: a later write under two's prefix is announced
      // after it, so once two hears that one, it would already have heard one's.
      const twoPeer = await openStore(redisAt(twoPrefix));
      await twoPeer.merge('alice', '/proj', { memory: { peer: 'two' } }, { durable: true });
      await pollUntil(() => heardByTwo.length > 0, { timeoutMs: 5000, what: "two to hear its peer's write" });
      expect(heardByTwo.map((e) => [e.origin, e.changes])).toEqual([['external', ['memory.peer']]]);
      expect((await two.load('alice', '/proj')).session.memory).toEqual({ peer: 'two' });
      await one.load('bob', '/proj');
      expect((await two.list()).map((s) => s.userId)).toEqual(['alice']);
    });

    test('bad Redis options are refused with EINVALID', async () => {
      for (const bad of [
        { backend: 'redis' }, // no redisUrl
        { backend: 'bogus', redisUrl: redis.url() },
        { backend: 'redis', redisUrl: 'http://127.0.0.1:6379/' },
        { backend: 'redis', redisUrl: 'not a url' },
        { backend: 'redis', redisUrl: redis.url(), keyPrefix: 'has{braces}:' },
        { backend: 'redis', redisUrl: redis.url(), ttlDays: 0 },
      ]) {
        const err = await rejection(NarrativeSessionStore.open({ ...QUIET, ...bad }));
        expect({ bad, code: err.code }).toEqual({ bad, code: 'EINVALID' });
      }
    });

    test('a password in the URL is used, and a wrong one is refused without appearing in the message', async () => {
      const locked = await startRedis({ extraArgs: ['--requirepass', 's3cret-pw'] });
      try {
        const store = await openStore({ backend: 'redis', redisUrl: `redis://:s3cret-pw@127.0.0.1:${locked.port}/0`, keyPrefix: 'pw:' });
        await store.merge('alice', '/proj', { memory: { k: 1 } }, { durable: true });
        expect(await redisCommand(locked.port, 'AUTH', 's3cret-pw')).toBe('OK');
        const err = await rejection(
          NarrativeSessionStore.open({ ...QUIET, backend: 'redis', redisUrl: `redis://:wrong-pw@127.0.0.1:${locked.port}/0` }),
        );
        expect(typeof err.code).toBe('string');
        expect(['EUNAVAILABLE', 'EINVALID', 'EIO']).toContain(err.code);
        expect(err.message).not.toContain('wrong-pw');
        await store.close();
      } finally {
        await locked.dispose();
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  // (b) Two store instances in two Node processes on one Redis.

  describe('two instances in two processes', () => {
    /** Forks a worker; resolves its messages by type as they come. */
    function startWorker(args) {
      const child = fork(WORKER, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.stdout.on('data', () => {});
      const messages = new Map();
      const waiters = new Map();
      child.on('message', (m) => {
        messages.set(m.type, m);
        const w = waiters.get(m.type);
        if (w) w(m);
      });
      const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      return {
        child,
        exited,
        stderr: () => stderr,
        wait(type, timeoutMs = 25000) {
          if (messages.has(type)) return Promise.resolve(messages.get(type));
          return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`worker: no '${type}' within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
            waiters.set(type, (m) => {
              clearTimeout(timer);
              resolve(m);
            });
            exited.then(({ code }) => {
              if (!messages.has(type)) {
                clearTimeout(timer);
                reject(new Error(`worker exited (${code}) before '${type}'; stderr: ${stderr}`));
              }
            });
          });
        },
      };
    }

    test("concurrent merges and saves into one session lose nothing; each hears the other's as 'external'", async () => {
      const prefix = freshPrefix('two');
      const count = 30;
      const user = 'alice';
      const workspace = '/shared/proj';
      const a = startWorker([redis.url(), prefix, 'A', 'B', String(count), user, workspace]);
      const b = startWorker([redis.url(), prefix, 'B', 'A', String(count), user, workspace]);
      try {
        await Promise.all([a.wait('ready'), b.wait('ready')]);
        a.child.send('go');
        b.child.send('go');
        const [doneA, doneB] = await Promise.all([a.wait('done'), b.wait('done')]);
        expect(await a.exited).toEqual({ code: 0, signal: null });
        expect(await b.exited).toEqual({ code: 0, signal: null });

        const ids = (tag) => Array.from({ length: count }, (_, i) => `${tag}-${i}`);
        const heardA = new Set(doneA.external);
        const heardB = new Set(doneB.external);
        expect(ids('B').filter((id) => !heardA.has(`conversationHistory.${id}`))).toEqual([]);
        expect(ids('A').filter((id) => !heardB.has(`conversationHistory.${id}`))).toEqual([]);
        // An instance never hears its own writes back as external.
        expect(ids('A').filter((id) => heardA.has(`conversationHistory.${id}`))).toEqual([]);
        expect(ids('B').filter((id) => heardB.has(`conversationHistory.${id}`))).toEqual([]);
        expect(doneA.eventsForOtherSessions + doneB.eventsForOtherSessions).toBe(0);

        const all = [...ids('A'), ...ids('B')].sort();
        for (const done of [doneA, doneB]) {
          expect([...done.entryIds].sort()).toEqual(all);
          expect(done.memory).toEqual({ 'from-A': count, 'from-B': count });
        }
        const reader = await openStore(redisAt(prefix));
        const { session } = await reader.load(user, workspace);
        expect(session.conversationHistory.map((e) => e.id).sort()).toEqual(all);
        expect(session.memory).toEqual({ 'from-A': count, 'from-B': count });
        expect((await reader.list()).map((s) => [s.userId, s.workspaceId, s.entries])).toEqual([[user, workspace, 2 * count]]);
      } finally {
        for (const w of [a, b]) if (w.child.exitCode === null) w.child.kill('SIGKILL');
      }
    });

    test('two instances appending 4 KB entries as fast as they can: every save and durable merge is acknowledged', async () => {
      // Optimistic concurrency must not starve one instance: a save that gives up after a few lost
      // races fails its client's ack (EIO "other instances kept writing") though nothing is wrong.
      const prefix = freshPrefix('busy');
      const count = 100;
      const a = startWorker([redis.url(), prefix, 'A', 'B', String(count), 'alice', '/busy', '4000']);
      const b = startWorker([redis.url(), prefix, 'B', 'A', String(count), 'alice', '/busy', '4000']);
      try {
        await Promise.all([a.wait('ready'), b.wait('ready')]);
        a.child.send('go');
        b.child.send('go');
        const results = await Promise.allSettled([a.wait('written'), b.wait('written')]);
        expect(results.map((r) => (r.status === 'fulfilled' ? r.value.acked.length : r.reason.message))).toEqual([count, count]);
        await Promise.all([a.wait('done'), b.wait('done')]);
        const reader = await openStore(redisAt(prefix));
        expect((await reader.load('alice', '/busy')).session.conversationHistory).toHaveLength(2 * count);
      } finally {
        for (const w of [a, b]) if (w.child.exitCode === null) w.child.kill('SIGKILL');
      }
    });

    /** Starts `node server/index.js` on a free port; resolves when it listens. */
    async function startReferenceServer(args, env = {}) {
      const child = spawn(process.execPath, [SERVER, ...args], {
        env: { ...process.env, MIA_SESSION_REDIS_URL: '', PORT: '0', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      const port = await pollUntil(
        () => {
          if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}): ${out}`);
          const m = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
          return m && Number(m[1]);
        },
        { timeoutMs: 10000, what: `the reference server to listen (output: ${out})` },
      );
      return {
        port,
        output: () => out,
        url: (query) => `ws://127.0.0.1:${port}/api/ws/narrative?${new URLSearchParams(query)}`,
        async stop() {
          if (child.exitCode === null) child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
          const status = await exited;
          clearTimeout(timer);
          return status;
        },
      };
    }

    test("the reference server with --redis / MIA_SESSION_REDIS_URL: ws clients on one instance get the other's changes as 'merged' events from 'external'", async () => {
      const db = 5;
      const dataDir = box.tempDir('mia-unused-');
      const serverA = await startReferenceServer(['--redis', redis.url(db), '--data-dir', dataDir]);
      const serverB = await startReferenceServer(['--data-dir', dataDir], { MIA_SESSION_REDIS_URL: redis.url(db) });
      const clients = [];
      const connect = (server, label) => {
        const c = new NarrativeClient(server.url({ workspace: '/shared/ws-proj' }), { label });
        clients.push(c);
        return c;
      };
      try {
        const onA = connect(serverA, 'client on A');
        const onB = connect(serverB, 'client on B');
        const [restoredA, restoredB] = await Promise.all([onA.restored(), onB.restored()]);
        expect(restoredB.session.id).toBe(restoredA.session.id);

        await onA.updateAndAck({ conversationHistory: [{ id: 'from-a', role: 'user', content: 'hello from A' }] });
        // Both servers keep the session in Redis (db 5, default prefix), not in the data dir.
        expect((await scanKeysInDb(redis.port, db, 'mia:ns:{*}:snap')).length).toBe(1);
        expect(fs.readdirSync(dataDir)).toEqual([]);
        const seenOnB = await onB.nextEvent('merged', (m) => m.payload.changes.includes('conversationHistory.from-a'), { timeoutMs: 5000 });
        expect(seenOnB.payload.origin).toBe('external');
        expect(seenOnB.payload.session.conversationHistory.map((e) => e.id)).toContain('from-a');

        await onB.updateAndAck({ memory: { fromB: true } });
        const seenOnA = await onA.nextEvent('merged', (m) => m.payload.changes.includes('memory.fromB'), { timeoutMs: 5000 });
        expect(seenOnA.payload.origin).toBe('external');

        // Both send a burst at once: every update is acked, and each side hears all of the other's.
        const n = 10;
        for (let i = 0; i < n; i++) {
          onA.update({ conversationHistory: [{ id: `a-${i}`, role: 'user', content: `a ${i}` }] }, `ta-${i}`);
          onB.update({ conversationHistory: [{ id: `b-${i}`, role: 'user', content: `b ${i}` }] }, `tb-${i}`);
        }
        const acked = (client, prefix) =>
          client.messages.filter((m) => m.traceId && m.traceId.startsWith(prefix) && m.payload && m.payload.event === 'ack').length;
        await pollUntil(() => acked(onA, 'ta-') === n && acked(onB, 'tb-') === n, { timeoutMs: 10000, what: 'every ack' });
        expect(onA.messages.filter((m) => m.type === 'error')).toEqual([]);
        expect(onB.messages.filter((m) => m.type === 'error')).toEqual([]);
        const heard = (client) => {
          const out = new Set();
          for (const m of client.messages) {
            if (m.type === 'session-event' && m.payload.event === 'merged' && m.payload.origin === 'external') {
              for (const c of m.payload.changes) out.add(c);
            }
          }
          return out;
        };
        const want = (tag) => Array.from({ length: n }, (_, i) => `conversationHistory.${tag}-${i}`);
        await pollUntil(() => want('b').every((c) => heard(onA).has(c)) && want('a').every((c) => heard(onB).has(c)), {
          timeoutMs: 10000,
          what: "each client to hear all of the other instance's entries",
        });

        // A third client, on A, gets everything back.
        const late = connect(serverA, 'late client on A');
        const restored = await late.restored();
        expect(restored.session.conversationHistory.map((e) => e.id).sort()).toEqual(
          ['from-a', ...Array.from({ length: n }, (_, i) => [`a-${i}`, `b-${i}`]).flat()].sort(),
        );
        expect(restored.session.memory).toEqual({ fromB: true });
      } finally {
        await Promise.allSettled(clients.map((c) => c.close()));
        const [stopA, stopB] = await Promise.all([serverA.stop(), serverB.stop()]);
        expect({ a: stopA, b: stopB }).toEqual({ a: { code: 0, signal: null }, b: { code: 0, signal: null } });
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  // (c) TTL is Redis's own expiry.

  test('TTL: an unloaded session expires; a loaded one is kept alive by cleanup(), then expires once no longer renewed', async () => {
    const prefix = freshPrefix('ttl');
    const ttlDays = 2 * SECOND; // 2 s
    const gone = keysOf(prefix, 'gone', '/proj');
    const kept = keysOf(prefix, 'kept', '/proj');

    const writer = await openStore(redisAt(prefix), { ttlDays });
    await writer.merge('gone', '/proj', { memory: { k: 1 } });
    await writer.save('gone', '/proj');
    await writer.close(); // 'gone' is loaded nowhere now (close folded its log into the snapshot)
    expect(await redis.command('EXISTS', gone.snap, gone.ver, gone.gen)).toBe(3);
    for (const key of Object.values(gone)) {
      const pttl = await redis.command('PTTL', key);
      // -2: no such key (the log, once folded); every key that exists expires within the TTL.
      expect({ key, ok: pttl === -2 || (pttl > 0 && pttl <= 2000) }).toEqual({ key, ok: true });
    }

    const holder = await openStore(redisAt(prefix), { ttlDays });
    // Each session is stored by its first save; the durable merge then appends to its log.
    await holder.load('kept', '/proj');
    await holder.save('kept', '/proj');
    await holder.merge('kept', '/proj', { memory: { k: 2 } }, { durable: true });
    // Another instance renews its own loaded session by its cleanup timer alone.
    const timed = await openStore(redisAt(prefix), { ttlDays, cleanupIntervalMs: 500 });
    await timed.load('timed', '/proj');
    await timed.save('timed', '/proj');
    await timed.merge('timed', '/proj', { memory: { k: 3 } }, { durable: true });
    const timedKeys = keysOf(prefix, 'timed', '/proj');
    // Until 'gone' expires (its TTL running out is the event), the holder renews 'kept' by calling
    // cleanup(), and the timed store renews 'timed' by its own timer.
    const reports = [];
    await pollUntil(
      async () => {
        reports.push(await holder.cleanup());
        return (await redis.command('EXISTS', gone.snap, gone.log, gone.ver, gone.gen)) === 0;
      },
      { timeoutMs: 10000, intervalMs: 200, what: "'gone' to expire" },
    );
    for (const report of reports) {
      expect(report).toMatchObject({ removed: 0, inUse: 1, errors: [] });
    }
    expect(await redis.command('EXISTS', kept.snap, kept.log, kept.ver, kept.gen)).toBe(4);
    expect(await redis.command('EXISTS', timedKeys.snap, timedKeys.log, timedKeys.ver, timedKeys.gen)).toBe(4);
    expect((await holder.list()).map((s) => s.userId)).toEqual(['kept', 'timed']);
    expect((await holder.load('gone', '/proj')).created).toBe(true);

    // Nothing renews 'kept' once its store is closed: it expires too.
    await holder.close();
    await pollUntil(async () => (await redis.command('EXISTS', kept.snap, kept.log, kept.ver, kept.gen)) === 0, {
      timeoutMs: 4000,
      what: "'kept' to expire",
    });
  });

  // -------------------------------------------------------------------------------------------
  // (e) Redis down at open.

  test('Redis down at open: rejects with EUNAVAILABLE, quickly', async () => {
    const port = await freePort(); // nothing listens there
    for (const redisUrl of [`redis://127.0.0.1:${port}/0`, 'redis://127.0.0.1:1']) {
      const started = Date.now();
      const err = await rejection(NarrativeSessionStore.open({ ...QUIET, backend: 'redis', redisUrl }));
      expect(err.code).toBe('EUNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(10000);
    }
  });

  // -------------------------------------------------------------------------------------------
  // Pub/sub lost for a moment: the instance re-reads its live sessions after resubscribing.

  test('a change written while the subscription was cut reaches the live session after it resubscribes', async () => {
    const prefix = freshPrefix('pubsub');
    const listener = await openStore(redisAt(prefix));
    const writer = await openStore(redisAt(prefix));
    await listener.load('alice', '/proj');
    await writer.load('alice', '/proj');
    const events = [];
    listener.onMerge((e) => events.push(e));
    const killed = await redis.command('CLIENT', 'KILL', 'TYPE', 'pubsub');
    expect(killed).toBeGreaterThanOrEqual(1);
    await writer.merge('alice', '/proj', { memory: { missed: 'while cut' } }, { durable: true });
    await pollUntil(() => externalChanges(events).has('memory.missed'), { timeoutMs: 8000, what: 'the missed change' });
    expect((await listener.load('alice', '/proj')).session.memory).toEqual({ missed: 'while cut' });
  });

  // -------------------------------------------------------------------------------------------
  // (f) Invalid data placed by hand.

  describe('invalid data placed by hand', () => {
    /** Plants bad data for alice in /proj and returns `[keyMovedAside, what it held (a check)]`. */
    const cases = [
      [
        'a snapshot that is not JSON',
        async (prefix, keys) => {
          await redis.command('SET', keys.snap, 'this is {not json');
          return { from: keys.snap, check: async (aside) => expect(await redis.text('GET', aside)).toBe('this is {not json') };
        },
      ],
      [
        'a snapshot that is JSON but not a session',
        async (prefix, keys) => {
          await redis.command('SET', keys.snap, '{"hello":"world"}');
          return { from: keys.snap, check: async (aside) => expect(await redis.text('GET', aside)).toBe('{"hello":"world"}') };
        },
      ],
      [
        "another user's snapshot copied over this one",
        async (prefix, keys, store) => {
          await store.merge('bob', '/proj', { memory: { bobs: 'secret' } }, { durable: true });
          await store.close();
          const bobs = await redis.command('GET', keysOf(prefix, 'bob', '/proj').snap);
          await redis.command('SET', keys.snap, bobs);
          return { from: keys.snap, check: async (aside) => expect(JSON.parse(await redis.text('GET', aside)).userId).toBe('bob') };
        },
      ],
      [
        'a snapshot key of the wrong type (a hash)',
        async (prefix, keys) => {
          await redis.command('DEL', keys.snap);
          await redis.command('HSET', keys.snap, 'field', 'value');
          return { from: keys.snap, check: async (aside) => expect(await redis.text('TYPE', aside)).toBe('hash') };
        },
      ],
      [
        'a journal element that is not a frame',
        async (prefix, keys) => {
          await redis.command('RPUSH', keys.log, 'garbage element');
          return {
            from: keys.log,
            check: async (aside) => {
              expect(await redis.text('LRANGE', aside, 0, -1)).toEqual(['garbage element']);
              expect(await redis.text('LRANGE', keys.log, 0, -1)).not.toContain('garbage element');
            },
          };
        },
      ],
      [
        'a version counter that is not a number',
        async (prefix, keys) => {
          await redis.command('SET', keys.ver, 'not-a-number');
          return { from: keys.ver, check: async (aside) => expect(await redis.text('GET', aside)).toBe('not-a-number') };
        },
      ],
    ];

    test('a bad snapshot planted while the session is loaded is kept aside, not overwritten by the next snapshot write', async () => {
      // The file backend moves such a file aside (S.json.corrupt-<ms>) when it next writes; the issue:
      // a value that is not a valid session "is never silently dropped".
      const prefix = freshPrefix('badlive');
      const keys = keysOf(prefix, 'alice', '/proj');
      const store = await openStore(redisAt(prefix));
      await store.merge('alice', '/proj', { memory: { x: 1 } }, { durable: true });
      await redis.command('SET', keys.snap, 'GARBAGE planted while loaded');
      await store.merge('alice', '/proj', { memory: { y: 2 } });
      await store.save('alice', '/proj');
      await store.close(); // folds the log into a new snapshot
      const reader = await openStore(redisAt(prefix));
      expect((await reader.load('alice', '/proj')).session.memory).toEqual({ x: 1, y: 2 });
      const aside = await scanKeys(redis.port, `${keys.snap}:corrupt:*`);
      expect(aside).toHaveLength(1);
      expect(await redis.text('GET', aside[0])).toBe('GARBAGE planted while loaded');
    });

    test.each(cases)('%s: load reports recovered, the bad value is kept aside, and the store keeps working', async (_, plant) => {
      const prefix = freshPrefix('bad');
      const keys = keysOf(prefix, 'alice', '/proj');
      const seeder = await openStore(redisAt(prefix));
      await seeder.merge('alice', '/proj', { memory: { before: 1 } });
      await seeder.save('alice', '/proj');
      const planted = await plant(prefix, keys, seeder);
      // A stray key matching the pattern with a stem that is no stem must not trouble list().
      await redis.command('SET', `${prefix}{not-a-stem}:snap`, 'junk');

      const store = await openStore(redisAt(prefix));
      expect(Array.isArray(await store.list())).toBe(true); // (an array of the addon's realm)
      const loaded = await store.load('alice', '/proj');
      expect(loaded.recovered).toBe(true);
      expect(loaded.session).toMatchObject({ userId: 'alice', workspaceId: '/proj' });
      expect(loaded.session.memory.bobs).toBeUndefined();

      const aside = await scanKeys(redis.port, `${planted.from}:corrupt:*`);
      expect(aside).toHaveLength(1);
      expect(aside[0]).toMatch(/:corrupt:\d+(\.\d+)?$/);
      await planted.check(aside[0]);
      expect(await redis.command('PTTL', aside[0])).toBe(-1); // never expires
      expect(await redis.text('GET', `${prefix}{not-a-stem}:snap`)).toBe('junk');

      // The store keeps working, and a fresh instance loads the session cleanly.
      await store.merge('alice', '/proj', { memory: { after: 2 } }, { durable: true });
      await expect(store.cleanup()).resolves.toMatchObject({ removed: 0 });
      const reader = await openStore(redisAt(prefix));
      const again = await reader.load('alice', '/proj');
      expect(again).toMatchObject({ created: false, recovered: false });
      expect(again.session.memory.after).toBe(2);
      expect((await reader.list()).map((s) => s.userId)).toContain('alice');
      expect(await scanKeys(redis.port, `${planted.from}:corrupt:*`)).toEqual(aside); // still there
    });

    test('a snapshot planted with a mark that matches but no session in it: the first merge reads it the long way and moves it aside', async () => {
      const prefix = freshPrefix('badmark');
      const keys = keysOf(prefix, 'alice', '/proj');
      const planted = '{"hello":"world"}';
      await redis.command('SET', keys.snap, planted);
      await redis.command('SET', keys.mark, markOf('alice', '/proj', Buffer.from(planted)));
      const store = await openStore(redisAt(prefix));
      // The mark finds accidents, not forgery (whoever can write Redis can write any session): a
      // restore sends the text as it is. The merge needs the session, and finds it bad.
      expect((await store.loadRaw('alice', '/proj')).sessionJson.toString()).toBe(planted);
      await store.merge('alice', '/proj', { memory: { after: 1 } }, { durable: true });
      const aside = await scanKeys(redis.port, `${keys.snap}:corrupt:*`);
      expect(aside).toHaveLength(1);
      expect(await redis.text('GET', aside[0])).toBe(planted);
      const reader = await openStore(redisAt(prefix));
      const again = await reader.load('alice', '/proj');
      expect(again).toMatchObject({ created: false, recovered: false });
      expect(again.session.memory).toEqual({ after: 1 });
    });
  });
});

/** SCAN in another database (SELECT then SCAN on one connection). */
function scanKeysInDb(port, db, pattern) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let cursor = '0';
    const found = [];
    let stage = 'select';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('scanKeysInDb timed out'));
    }, 5000);
    socket.on('error', reject);
    socket.on('connect', () => socket.write(encodeCommand(['SELECT', db])));
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const reply = parseReply(buf);
      if (!reply) return;
      buf = buf.subarray(reply.end);
      if (stage === 'select') {
        stage = 'scan';
      } else {
        cursor = reply.value[0].toString();
        for (const k of reply.value[1]) found.push(k.toString());
        if (cursor === '0') {
          clearTimeout(timer);
          socket.destroy();
          resolve(found.sort());
          return;
        }
      }
      socket.write(encodeCommand(['SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000]));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// (d) Redis killed and restarted mid-run (its own server, AOF on with appendfsync always).

describe('Redis killed and restarted mid-run', () => {
  let redis;
  beforeAll(async () => {
    redis = await startRedis({ persistent: true });
  });
  afterAll(async () => {
    if (redis) await redis.dispose();
  });

  test('save() rejects EUNAVAILABLE while down and keeps the data; the store reconnects and nothing acknowledged is lost', async () => {
    const where = { backend: 'redis', redisUrl: redis.url(), keyPrefix: 'mia:ns:restart:' };
    const store = await openStore(where);
    const autosaving = await openStore(where, { autosaveIntervalMs: 200 });
    const listener = await openStore(where);
    const entry = (id) => ({ conversationHistory: [{ id, role: 'user', content: id }] });

    // Acknowledged before the crash: by save(), and by a durable merge.
    await store.merge('alice', '/proj', entry('e1'));
    expect(await store.save('alice', '/proj')).toBe(true);
    await store.merge('alice', '/proj', entry('e2'), { durable: true });
    await autosaving.merge('bob', '/proj', entry('b1'), { durable: true });
    await listener.load('alice', '/proj');
    const events = [];
    listener.onMerge((e) => events.push(e));

    await redis.kill();

    // While Redis is down: merges apply in memory; save and durable merges refuse, keeping the data.
    const live = await store.merge('alice', '/proj', entry('e3'));
    expect(live.changes).toEqual(['conversationHistory.e3']);
    expect(await rejection(store.save('alice', '/proj'))).toMatchObject({ code: 'EUNAVAILABLE' });
    expect(await rejection(store.merge('alice', '/proj', entry('e4'), { durable: true }))).toMatchObject({ code: 'EUNAVAILABLE' });
    expect(await rejection(store.save('alice', '/proj'))).toMatchObject({ code: 'EUNAVAILABLE' });
    expect(await rejection(store.load('carol', '/proj'))).toMatchObject({ code: 'EUNAVAILABLE' }); // not loaded here
    expect(await rejection(store.list())).toMatchObject({ code: 'EUNAVAILABLE' });
    const held = (await store.load('alice', '/proj')).session;
    expect(held.conversationHistory.map((e) => e.id)).toEqual(['e1', 'e2', 'e3', 'e4']);
    await autosaving.merge('bob', '/proj', entry('b2'));
    await sleep(600); // a few autosave ticks fail meanwhile

    await redis.restart();

    // The store reconnects by itself: the next save writes what it kept.
    expect(await store.save('alice', '/proj')).toBe(true);
    expect(await store.save('alice', '/proj')).toBe(false);
    // Autosave writes b2 without anyone calling save().
    const reader = await openStore(where);
    await pollUntil(
      async () => {
        const fresh = await openStore(where);
        const { session } = await fresh.load('bob', '/proj');
        await fresh.close();
        return session.conversationHistory.some((e) => e.id === 'b2');
      },
      { timeoutMs: 5000, intervalMs: 200, what: 'autosave to write b2 after the restart' },
    );
    // The other instance hears of e3 and e4 (pub/sub restored, or its re-read after reconnecting).
    await pollUntil(() => ['conversationHistory.e3', 'conversationHistory.e4'].every((c) => externalChanges(events).has(c)), {
      timeoutMs: 8000,
      what: 'the listener to hear e3 and e4',
    });

    const alice = (await reader.load('alice', '/proj')).session;
    expect(alice.conversationHistory.map((e) => e.id)).toEqual(['e1', 'e2', 'e3', 'e4']);
    expect((await reader.load('bob', '/proj')).session.conversationHistory.map((e) => e.id)).toEqual(['b1', 'b2']);

    // And once more through a crash: every acknowledged change is on Redis's disk.
    await redis.kill();
    await redis.restart();
    const afterCrash = await openStore(where);
    expect((await afterCrash.load('alice', '/proj')).session.conversationHistory.map((e) => e.id)).toEqual(['e1', 'e2', 'e3', 'e4']);
    expect((await afterCrash.load('bob', '/proj')).session.conversationHistory.map((e) => e.id)).toEqual(['b1', 'b2']);
  });

  test('delete() while Redis is down rejects with EUNAVAILABLE and changes nothing: the unsaved change stays and is written once Redis is back', async () => {
    // README, EUNAVAILABLE: "Unsaved changes stay in memory and are written once it is back."
    const where = { backend: 'redis', redisUrl: redis.url(), keyPrefix: 'mia:ns:delete-down:' };
    const store = await openStore(where);
    await store.merge('alice', '/proj', { memory: { saved: 1 } }, { durable: true });
    await store.merge('alice', '/proj', { memory: { unsaved: 2 } });
    await redis.kill();
    try {
      expect(await rejection(store.delete('alice', '/proj'))).toMatchObject({ code: 'EUNAVAILABLE' });
      const held = await store.load('alice', '/proj').then(
        (r) => r.session.memory,
        (e) => `load rejected: ${e.code}`,
      );
      expect(held).toEqual({ saved: 1, unsaved: 2 });
    } finally {
      await redis.restart();
    }
    // The store reconnects by itself: the unsaved change is written now.
    expect(await store.save('alice', '/proj')).toBe(true);
    const reader = await openStore(where);
    expect((await reader.load('alice', '/proj')).session.memory).toEqual({ saved: 1, unsaved: 2 });
  });
});
