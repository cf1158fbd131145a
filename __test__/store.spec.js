'use strict';
// The store as a host uses it: a developer connects, their narrative context changes, they drop, and
// when they (or a new server process) come back, everything is there.

const fs = require('fs');
const path = require('path');

const { NarrativeSessionStore, mergeSessions, mergeSessionsJson, defaultDataDir } = require('../index');
const {
  INDEX,
  sandbox,
  filesIn,
  storedSession,
  journalOf,
  readJournal,
  fileStamp,
  loadInChild,
  pollUntil,
  runNode,
  nextMillisecond,
} = require('./helpers/env');
const { richUpdate, expectRestored } = require('./helpers/fixtures');

const LISTENER_CHILD = path.join(__dirname, 'helpers', 'listener-child.js');

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

/** A fresh data dir inside a fresh temporary directory (so that open has to create it). */
function newDataDir() {
  return path.join(box.tempDir(), 'sessions');
}

describe('defaultDataDir', () => {
  test('names the mia-code-server sessions directory', () => {
    const dir = defaultDataDir();
    expect(typeof dir).toBe('string');
    expect(path.isAbsolute(dir)).toBe(true);
    expect(dir.endsWith(path.join('mia-code-server', 'sessions'))).toBe(true);
  });

  // The directory is computed from the environment of the process, so each case runs in its own.
  const printDefaultDir = `process.stdout.write(require(${JSON.stringify(INDEX)}).defaultDataDir())`;

  test('honours XDG_DATA_HOME, like code-server', async () => {
    const xdg = box.tempDir('mia-xdg-');
    const result = await runNode(['-e', printDefaultDir], { env: { ...process.env, XDG_DATA_HOME: xdg } });
    expect(result).toMatchObject({ code: 0, killed: false });
    expect(result.stdout).toBe(path.join(xdg, 'mia-code-server', 'sessions'));
  });

  test('falls back to ~/.local/share when XDG_DATA_HOME is unset or relative', async () => {
    const home = box.tempDir('mia-home-');
    const env = { ...process.env, HOME: home };
    delete env.XDG_DATA_HOME;
    const unset = await runNode(['-e', printDefaultDir], { env });
    const relative = await runNode(['-e', printDefaultDir], { env: { ...env, XDG_DATA_HOME: 'relative/dir' } });
    const expected = path.join(home, '.local', 'share', 'mia-code-server', 'sessions');
    expect(unset.stdout).toBe(expected);
    expect(relative.stdout).toBe(expected);
  });

  test('is only computed, never created', async () => {
    const xdg = box.tempDir('mia-xdg-');
    const result = await runNode(['-e', printDefaultDir], { env: { ...process.env, XDG_DATA_HOME: xdg } });
    expect(result.code).toBe(0);
    expect(filesIn(xdg)).toEqual([]);
  });
});

describe('a first connection', () => {
  test('creates the data dir (0700) and the session, stored by its first save (0600)', async () => {
    const dataDir = newDataDir();
    expect(fs.existsSync(dataDir)).toBe(false);
    const store = await box.open(dataDir);
    expect(store.dataDir).toBe(dataDir);
    expect(fs.statSync(dataDir).mode & 0o777).toBe(0o700);

    const first = await store.load('alice', '/home/alice/proj');
    expect(first.created).toBe(true);
    expect(first.recovered).toBe(false);
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
    expect(typeof first.session.id).toBe('string');
    expect(first.session.id.length).toBeGreaterThan(0);
    expect(Number.isNaN(Date.parse(first.session.createdAt))).toBe(false);

    // Created in memory only: nothing in it to lose yet. Its first save stores it, private.
    expect(storedSession(dataDir, 'alice', '/home/alice/proj')).toBeUndefined();
    expect(await store.save('alice', '/home/alice/proj')).toBe(true);
    const stored = storedSession(dataDir, 'alice', '/home/alice/proj');
    expect(stored).toBeDefined();
    expect(fs.statSync(stored.file).mode & 0o777).toBe(0o600);
    expect(stored.session.id).toBe(first.session.id);

    const second = await store.load('alice', '/home/alice/proj');
    expect(second.created).toBe(false);
    expect(second.recovered).toBe(false);
    expect(second.session).toEqual(first.session);
  });

  test('the session id is stable for a user and workspace, and differs between them', async () => {
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    const one = (await a.load('alice', '/w1')).session.id;
    await a.close();
    const b = await box.open(dataDir);
    expect((await b.load('alice', '/w1')).session.id).toBe(one);
    const others = [
      (await b.load('alice', '/w2')).session.id,
      (await b.load('bob', '/w1')).session.id,
      // Ids that concatenate alike are still different sessions.
      (await b.load('alice/', 'w1')).session.id,
    ];
    expect(new Set([one, ...others]).size).toBe(4);
  });
});

describe('reconnecting', () => {
  test('a new store on the same dir restores everything after save()', async () => {
    const dataDir = newDataDir();
    const update = richUpdate();
    const first = await box.open(dataDir);
    await first.load('alice', '/proj');
    const merged = await first.merge('alice', '/proj', update, { returnSession: true });
    expectRestored(merged.session, update);
    expect(await first.save('alice', '/proj')).toBe(true);
    await first.close();

    const second = await box.open(dataDir);
    const back = await second.load('alice', '/proj');
    expect(back.created).toBe(false);
    expect(back.recovered).toBe(false);
    expectRestored(back.session, update);
    expect(back.session).toEqual(merged.session);
  });

  test('close() without save() flushes the changes', async () => {
    const dataDir = newDataDir();
    const update = richUpdate();
    const first = await box.open(dataDir);
    const merged = await first.merge('alice', '/proj', update, { returnSession: true }); // merge loads on first access too
    await first.close();

    const second = await box.open(dataDir);
    const back = await second.load('alice', '/proj');
    expect(back.created).toBe(false);
    expectRestored(back.session, update);
    expect(back.session).toEqual(merged.session);
  });

  test('changes made over several merges and stores accumulate', async () => {
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    await a.merge('alice', '/proj', { memory: { step: 1 }, conversationHistory: [{ id: 'e1', role: 'user', content: 'one' }] });
    await a.close();
    const b = await box.open(dataDir);
    await b.merge('alice', '/proj', { memory: { other: true }, conversationHistory: [{ id: 'e2', role: 'user', content: 'two' }] });
    await b.close();
    const c = await box.open(dataDir);
    const { session } = await c.load('alice', '/proj');
    expect(session.memory).toEqual({ step: 1, other: true });
    expect(session.conversationHistory.map((e) => e.content)).toEqual(['one', 'two']);
  });

  test('actions added to an existing chart keep the documented order (order, then id) across a reconnect', async () => {
    // index.d.ts: "actions sort by `order`, then by id".
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    await a.merge('alice', '/proj', { activeCharts: [{ id: 'c1', title: 'Chart', actions: [{ id: 'b', title: 'second' }] }] });
    const live = await a.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'a', title: 'first' }] }] }, { returnSession: true });
    await a.close();
    const b = await box.open(dataDir);
    const back = await b.load('alice', '/proj');
    expect(back.session.activeCharts[0].actions.map((x) => x.id)).toEqual(['a', 'b']);
    expect(live.session.activeCharts[0].actions.map((x) => x.id)).toEqual(['a', 'b']);
  });
});

describe('one window, several sockets at once', () => {
  test('parallel first loads create the session exactly once', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const results = await Promise.all(Array.from({ length: 12 }, () => store.load('alice', '/proj')));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.session.id)).size).toBe(1);
    expect(await store.list()).toHaveLength(1);
  });

  test('parallel merges from many tabs all land', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const tabs = Array.from({ length: 25 }, (_, i) => i);
    await Promise.all(
      tabs.map((i) =>
        store.merge(
          'alice',
          '/proj',
          { memory: { [`tab${i}`]: i }, conversationHistory: [{ id: `tab-${i}`, role: 'user', content: `from tab ${i}` }] },
          { origin: `socket-${i}` },
        ),
      ),
    );
    await store.close();
    const reader = await box.open(dataDir);
    const { session } = await reader.load('alice', '/proj');
    expect(Object.keys(session.memory)).toHaveLength(tabs.length);
    for (const i of tabs) expect(session.memory[`tab${i}`]).toBe(i);
    expect(session.conversationHistory.map((e) => e.id).sort()).toEqual(tabs.map((i) => `tab-${i}`).sort());
  });

  test('different users and workspaces in parallel stay apart', async () => {
    const store = await box.open(newDataDir());
    const pairs = [];
    for (const user of ['alice', 'bob', 'carol']) for (const ws of ['/a', '/b', '/c']) pairs.push([user, ws]);
    await Promise.all(pairs.map(([u, w]) => store.merge(u, w, { memory: { owner: `${u}@${w}` } })));
    for (const [u, w] of pairs) {
      const { session } = await store.load(u, w);
      expect(session.memory).toEqual({ owner: `${u}@${w}` });
      expect(session.userId).toBe(u);
      expect(session.workspaceId).toBe(w);
    }
  });
});

describe('merge', () => {
  test('changes lists exactly the paths that changed, and nothing when the values are the same', async () => {
    const store = await box.open(newDataDir());
    await store.load('alice', '/proj');
    const first = await store.merge('alice', '/proj', {
      universeFocus: 'story',
      memory: { goal: 'ship', count: 1 },
      config: { theme: 'dark' },
      conversationHistory: [{ id: 'e1', role: 'user', content: 'hi' }],
      storyBeats: [{ id: 'b1', description: 'start', type: 'custom' }],
    }, { returnSession: true });
    expect([...first.changes].sort()).toEqual(
      ['universeFocus', 'memory.goal', 'memory.count', 'config.theme', 'conversationHistory.e1', 'storyBeats.b1'].sort(),
    );

    // The same values again change nothing.
    const again = await store.merge('alice', '/proj', {
      universeFocus: 'story',
      memory: { goal: 'ship', count: 1 },
      config: { theme: 'dark' },
      conversationHistory: [first.session.conversationHistory[0]],
      storyBeats: [first.session.storyBeats[0]],
    }, { returnSession: true });
    expect(again.changes).toEqual([]);
    expect(again.session).toEqual(first.session);

    // One value changed, one the same: only the changed one is listed.
    const third = await store.merge('alice', '/proj', { memory: { goal: 'ship', count: 2 } }, { returnSession: true });
    expect(third.changes).toEqual(['memory.count']);
    expect(third.session.memory).toEqual({ goal: 'ship', count: 2 });
  });

  test('sending the whole session back changes nothing', async () => {
    const store = await box.open(newDataDir());
    const { session } = await store.merge('alice', '/proj', richUpdate(), { returnSession: true });
    const back = await store.merge('alice', '/proj', session, { returnSession: true });
    expect(back.changes).toEqual([]);
    expect(back.session).toEqual(session);
  });

  test('a memory or config key set to null is deleted, and stays deleted after a reconnect', async () => {
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    await a.merge('alice', '/proj', { memory: { keep: 1, drop: 'x' }, config: { theme: 'dark', old: true } });
    const deleted = await a.merge('alice', '/proj', { memory: { drop: null }, config: { old: null } }, { returnSession: true });
    expect([...deleted.changes].sort()).toEqual(['config.old', 'memory.drop']);
    expect(deleted.session.memory).toEqual({ keep: 1 });
    expect(deleted.session.config).toEqual({ theme: 'dark' });
    expect('drop' in deleted.session.memory).toBe(false);

    // Deleting again is no change.
    expect((await a.merge('alice', '/proj', { memory: { drop: null } })).changes).toEqual([]);
    await a.close();

    const b = await box.open(dataDir);
    const { session } = await b.load('alice', '/proj');
    expect(session.memory).toEqual({ keep: 1 });
    expect(session.config).toEqual({ theme: 'dark' });
  });

  test('accepts the request spelling universFocus as well as universeFocus', async () => {
    const store = await box.open(newDataDir());
    const a = await store.merge('alice', '/proj', { universFocus: 'engineer' }, { returnSession: true });
    expect(a.changes).toEqual(['universeFocus']);
    expect(a.session.universeFocus).toBe('engineer');
    expect('universFocus' in a.session).toBe(false);
    const b = await store.merge('alice', '/proj', { universeFocus: 'ceremony' }, { returnSession: true });
    expect(b.changes).toEqual(['universeFocus']);
    expect(b.session.universeFocus).toBe('ceremony');
  });

  test('charts merge field by field: completing one action keeps the title and the other actions', async () => {
    const store = await box.open(newDataDir());
    const created = await store.merge('alice', '/proj', {
      activeCharts: [
        {
          id: 'c1',
          title: 'Ship it',
          desiredOutcome: 'shipped',
          currentReality: 'not shipped',
          actions: [
            { id: 'a1', title: 'write', completed: false, order: 1 },
            { id: 'a2', title: 'test', completed: false, order: 2 },
          ],
        },
      ],
    }, { returnSession: true });
    const before = created.session.activeCharts[0];

    const done = await store.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }] }] }, { returnSession: true });
    expect(done.changes).toContain('activeCharts.c1.actions.a1.completed');
    expect(done.changes.every((p) => p.startsWith('activeCharts.c1.actions.a1'))).toBe(true);
    const chart = done.session.activeCharts[0];
    expect(chart).toMatchObject({ id: 'c1', title: 'Ship it', desiredOutcome: 'shipped', currentReality: 'not shipped' });
    expect(chart.actions).toEqual([
      { ...before.actions[0], completed: true },
      before.actions[1],
    ]);

    // A new action is appended to the chart, the rest stays.
    const added = await store.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'a3', title: 'ship', order: 3 }] }] }, { returnSession: true });
    expect(added.changes).toContain('activeCharts.c1.actions.a3');
    expect(added.session.activeCharts[0].actions.map((a) => a.id)).toEqual(['a1', 'a2', 'a3']);
    expect(added.session.activeCharts[0].title).toBe('Ship it');
  });

  test('list entries are appended by id, never duplicated', async () => {
    const store = await box.open(newDataDir());
    await store.merge('alice', '/proj', {
      conversationHistory: [
        { id: 'e1', role: 'user', content: 'one', timestamp: '2026-01-01T00:00:01.000Z' },
        { id: 'e2', role: 'assistant', content: 'two', timestamp: '2026-01-01T00:00:02.000Z' },
      ],
    });
    const next = await store.merge('alice', '/proj', {
      conversationHistory: [
        { id: 'e2', role: 'assistant', content: 'two', timestamp: '2026-01-01T00:00:02.000Z' },
        { id: 'e3', role: 'user', content: 'three', timestamp: '2026-01-01T00:00:03.000Z' },
      ],
    }, { returnSession: true });
    expect(next.changes).toEqual(['conversationHistory.e3']);
    expect(next.session.conversationHistory.map((e) => e.id)).toEqual(['e1', 'e2', 'e3']);
  });

  test('entries sent without a time get the server time', async () => {
    const store = await box.open(newDataDir());
    const before = Date.now();
    const { session } = await store.merge('alice', '/proj', {
      conversationHistory: [{ id: 'e1', role: 'user', content: 'hi' }],
      storyBeats: [{ id: 'b1', description: 'd', type: 'custom' }],
    }, { returnSession: true });
    const after = Date.now();
    for (const time of [session.conversationHistory[0].timestamp, session.storyBeats[0].createdAt]) {
      const ms = Date.parse(time);
      expect(ms).toBeGreaterThanOrEqual(before - 1000);
      expect(ms).toBeLessThanOrEqual(after + 1000);
    }
  });

  test('identity fields sent by a client are ignored', async () => {
    const store = await box.open(newDataDir());
    const { session: original } = await store.load('alice', '/proj');
    const { session } = await store.merge('alice', '/proj', {
      id: 'forged',
      userId: 'mallory',
      workspaceId: '/etc',
      createdAt: '1999-01-01T00:00:00.000Z',
      memory: { k: 1 },
    }, { returnSession: true });
    expect(session.id).toBe(original.id);
    expect(session.userId).toBe('alice');
    expect(session.workspaceId).toBe('/proj');
    expect(session.createdAt).toBe(original.createdAt);
    expect(session.memory).toEqual({ k: 1 });
  });

  test('the later of two writes wins, even when an older write arrives last', async () => {
    const store = await box.open(newDataDir());
    const now = Date.now();
    const newer = `${now}-0005-clientb`;
    const older = `${now - 60000}-0000-clienta`;
    const first = await store.merge('alice', '/proj', { memory: { goal: 'newer' }, versions: { 'memory.goal': newer } }, { returnSession: true });
    expect(first.session.memory.goal).toBe('newer');
    const late = await store.merge('alice', '/proj', { memory: { goal: 'older' }, versions: { 'memory.goal': older } }, { returnSession: true });
    expect(late.changes).toEqual([]);
    expect(late.session.memory.goal).toBe('newer');
  });
});

describe('a large session loaded again', () => {
  // Every change must show in the next load, whichever path it took (a cache of the session's
  // text, as was tried, must pass this).
  const bigUpdate = () => ({
    conversationHistory: Array.from({ length: 600 }, (_, n) => ({ id: `big-${n}`, role: 'user', content: `${n} ${'words '.repeat(100)}` })),
  });
  const raw = async (store) => JSON.parse((await store.loadRaw('alice', '/proj')).sessionJson.toString());

  test.each([
    ['with room to spare', {}],
    // Every merge then goes into a copy of the session, which replaces it.
    ['near its size limit', { maxSessionBytes: 470 * 1024 }],
  ])('%s: shows every change made since the last load, by this store or another', async (_, options) => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir, options);
    await store.merge('alice', '/proj', bigUpdate());
    const first = await raw(store);
    expect((await store.loadRaw('alice', '/proj')).sessionJson.length).toBeGreaterThan(256 * 1024);
    expect(await raw(store)).toEqual(first);

    await store.merge('alice', '/proj', { memory: { step: 1 } }, { returnSession: false });
    expect((await raw(store)).memory).toEqual({ step: 1 });
    const { session } = await store.merge('alice', '/proj', { memory: { step: 2 } }, { returnSession: true });
    expect(session.memory).toEqual({ step: 2 });
    await store.merge('alice', '/proj', { conversationHistory: [{ id: 'late', role: 'agent', content: 'x' }] }, { returnSession: false });
    const afterLocal = await raw(store);
    expect(afterLocal.memory).toEqual({ step: 2 });
    expect(afterLocal.conversationHistory.map((e) => e.id)).toContain('late');
    expect((await store.load('alice', '/proj')).session).toEqual(afterLocal);

    await store.save('alice', '/proj');
    const other = await box.open(dataDir, options);
    await other.merge('alice', '/proj', { memory: { from: 'other' } }, { durable: true, returnSession: false });
    await pollUntil(async () => (await raw(store)).memory.from === 'other', { what: "the other store's change" });
    expect(await raw(store)).toEqual(await raw(other));
  });
});

describe('onMerge listeners', () => {
  test('hear every merge that changed something, with user, workspace, session, origin and changes', async () => {
    const store = await box.open(newDataDir());
    const { session } = await store.load('alice', '/proj');
    const events = [];
    const unsubscribe = store.onMerge((event) => events.push(event));
    expect(typeof unsubscribe).toBe('function');

    await store.merge('alice', '/proj', { memory: { goal: 'ship' } }, { origin: 'conn-42' });
    await store.merge('alice', '/proj', { universeFocus: 'story' });
    await pollUntil(() => events.length >= 2, { what: 'two merge events' });
    expect(events[0]).toEqual({
      userId: 'alice',
      workspaceId: '/proj',
      sessionId: session.id,
      origin: 'conn-42',
      changes: ['memory.goal'],
    });
    expect(events[1]).toMatchObject({ origin: 'local', changes: ['universeFocus'] });

    // A merge that changes nothing is not announced; a later one that does is.
    await store.merge('alice', '/proj', { memory: { goal: 'ship' } }, { origin: 'quiet' });
    await store.merge('alice', '/proj', { memory: { goal: 'done' } }, { origin: 'loud' });
    // A listener hears events in the order of the merges: any for 'quiet' would come before 'loud'.
    await pollUntil(() => events.some((e) => e.origin === 'loud'), { what: "the 'loud' event" });
    expect(events.map((e) => e.origin)).toEqual(['conn-42', 'local', 'loud']);
    unsubscribe();
  });

  test('an unsubscribed listener hears nothing more, while others still do', async () => {
    const store = await box.open(newDataDir());
    const gone = [];
    const staying = [];
    const unsubscribe = store.onMerge((e) => gone.push(e));
    const unsubscribeStaying = store.onMerge((e) => staying.push(e));

    await store.merge('alice', '/proj', { memory: { n: 1 } });
    await pollUntil(() => gone.length === 1 && staying.length === 1, { what: 'both listeners' });

    unsubscribe();
    unsubscribe(); // twice is harmless
    await store.merge('alice', '/proj', { memory: { n: 2 } });
    // The merge's event has reached the listeners it was sent to; an unsubscribed one is not among them.
    await pollUntil(() => staying.length === 2, { what: 'the remaining listener' });
    expect(gone).toHaveLength(1);
    expect(staying[1].changes).toEqual(['memory.n']);
    unsubscribeStaying();
  });

  test('a change another store wrote to disk is announced with origin "external"', async () => {
    const dataDir = newDataDir();
    const serverA = await box.open(dataDir);
    const serverB = await box.open(dataDir);
    await serverA.load('alice', '/proj');
    await serverB.load('alice', '/proj');
    const events = [];
    serverA.onMerge((e) => events.push(e));

    await serverB.merge('alice', '/proj', { memory: { fromB: 'hello' } });
    await serverB.save('alice', '/proj');
    await serverA.merge('alice', '/proj', { memory: { fromA: 'hi' } }, { origin: 'conn-a' });
    await serverA.save('alice', '/proj'); // reads B's write, merges it in, writes both

    await pollUntil(() => events.some((e) => e.origin === 'external'), { what: 'an external event' });
    const external = events.find((e) => e.origin === 'external');
    expect(external).toMatchObject({ userId: 'alice', workspaceId: '/proj' });
    expect(external.changes).toContain('memory.fromB');
    expect(events.find((e) => e.origin === 'conn-a').changes).toEqual(['memory.fromA']);
  });

  test.each(['close', 'no-close'])(
    'a listener never unsubscribed does not keep Node alive (%s)',
    async (mode) => {
      const dataDir = newDataDir();
      const result = await runNode([LISTENER_CHILD, dataDir, mode], { killAfterMs: 15000 });
      expect(result.stderr).toBe('');
      expect(result.killed).toBe(false);
      expect(result.code).toBe(0);
      const event = JSON.parse(result.stdout);
      expect(event).toMatchObject({
        userId: 'child-user',
        workspaceId: '/child/workspace',
        origin: 'socket-1',
        changes: ['memory.from'],
      });
      // And its work is on disk.
      const store = await box.open(dataDir);
      expect((await store.load('child-user', '/child/workspace')).session.memory).toEqual({ from: 'child' });
    },
  );
});

describe('save, delete and list', () => {
  test('a burst of durable merges and saves, more than run on blocking threads at once, all reach the disk', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const users = Array.from({ length: 8 }, (_, i) => `user-${i}`);
    // Per user: three durable merges, and a plain merge followed by a save, all started at once.
    const calls = [];
    for (const user of users) {
      for (const k of ['a', 'b', 'c']) calls.push(store.merge(user, '/proj', { memory: { [k]: user } }, { durable: true, returnSession: false }));
      calls.push(store.merge(user, '/proj', { memory: { d: user } }).then(() => store.save(user, '/proj')));
    }
    const results = await Promise.all(calls);
    expect(results).toHaveLength(32);
    // Read by another process from the files alone.
    for (const user of [users[0], users[7]]) {
      const { session } = await loadInChild(dataDir, user, '/proj');
      expect(session.memory).toEqual({ a: user, b: user, c: user, d: user });
    }
    expect((await store.list()).filter((s) => s.dirty)).toEqual([]);
  });

  test('save() resolves true when there was something to write, false when clean', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    expect(await store.save('nobody', '/never-loaded')).toBe(false);
    await store.load('alice', '/proj');
    expect(await store.save('alice', '/proj')).toBe(true); // created: its first snapshot
    expect(await store.save('alice', '/proj')).toBe(false);

    const { file } = storedSession(dataDir, 'alice', '/proj');
    await store.merge('alice', '/proj', { memory: { k: 1 } });
    expect((await store.list())[0].dirty).toBe(true);
    expect((await loadInChild(dataDir, 'alice', '/proj')).session.memory).toEqual({}); // not yet
    expect(await store.save('alice', '/proj')).toBe(true);
    expect(readJournal(journalOf(file)).records).toHaveLength(1);
    expect((await loadInChild(dataDir, 'alice', '/proj')).session.memory).toEqual({ k: 1 });
    const journal = fileStamp(journalOf(file));
    const snapshot = fileStamp(file);
    expect(await store.save('alice', '/proj')).toBe(false);
    expect(fileStamp(journalOf(file))).toEqual(journal); // nothing written
    expect(fileStamp(file)).toEqual(snapshot);

    // A merge that changes nothing leaves it clean.
    await store.merge('alice', '/proj', { memory: { k: 1 } });
    expect(await store.save('alice', '/proj')).toBe(false);
  });

  test('flush() writes every dirty session durably, as the autosave tick does, and resolves how many', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const users = ['alice', 'bob', 'carol'];
    for (const user of users) await store.load(user, '/proj');
    expect(await store.flush()).toBe(3); // created: their first snapshots
    expect(await store.flush()).toBe(0);
    await store.merge('alice', '/proj', { memory: { k: 'a' } });
    await store.merge('carol', '/proj', { conversationHistory: [{ id: 'c1', role: 'user', content: 'hi' }] });
    expect((await store.list()).filter((s) => s.dirty).map((s) => s.userId)).toEqual(['alice', 'carol']);
    expect(await store.flush()).toBe(2);
    expect((await store.list()).some((s) => s.dirty)).toBe(false);
    expect(await store.flush()).toBe(0);
    // Another process sees both, and bob's session untouched.
    expect((await loadInChild(dataDir, 'alice', '/proj')).session.memory).toEqual({ k: 'a' });
    expect((await loadInChild(dataDir, 'carol', '/proj')).session.conversationHistory.map((e) => e.id)).toEqual(['c1']);
    expect((await loadInChild(dataDir, 'bob', '/proj')).session.memory).toEqual({});
  });

  test('delete() removes the session and its files; the next load creates it anew', async () => {
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.load('alice', '/proj');
    await first.save('alice', '/proj'); // the new session's first snapshot
    await first.merge('alice', '/proj', { memory: { secret: 'x' } });
    await first.save('alice', '/proj');
    await first.close(); // a second snapshot: the first is now the backup
    const store = await box.open(dataDir);
    await store.merge('alice', '/proj', { memory: { more: 'y' } });
    await store.save('alice', '/proj'); // appended to the journal
    await store.load('bob', '/proj');
    const stem = path.basename(storedSession(dataDir, 'alice', '/proj').file, '.json');
    // The lock: one byte of the directory's `.locks` on Linux, a lock file of its own elsewhere.
    const lockFile = process.platform === 'linux' ? '.locks' : `${stem}.lock`;
    expect(filesIn(dataDir)).toEqual(
      expect.arrayContaining([`${stem}.json`, `${stem}.json.bak`, `${stem}.journal`, lockFile]),
    );

    expect(await store.delete('alice', '/proj')).toBe(true);
    expect(filesIn(dataDir).filter((f) => f.includes(stem))).toEqual([]);
    expect((await store.list()).map((s) => s.userId)).toEqual(['bob']);
    expect(await store.delete('alice', '/proj')).toBe(false);

    const again = await store.load('alice', '/proj');
    expect(again.created).toBe(true);
    expect(again.session.memory).toEqual({});
    // One created here and never saved is deleted from memory.
    expect(await store.delete('alice', '/proj')).toBe(true);
    expect((await store.list()).map((s) => s.userId)).toEqual(['bob']);

    // And the deletion holds for a new store too (nothing resurrected from a backup).
    await store.close();
    const other = await box.open(dataDir);
    expect((await other.load('alice', '/proj')).created).toBe(true);
  });

  test('list() summarises every stored session, sorted by user and workspace', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
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
    const bob = list[2];
    expect(bob).toMatchObject({ charts: 2, beats: 1, entries: 3, loaded: true, dirty: false });
    expect(bob.bytes).toBe(fs.statSync(storedSession(dataDir, 'bob', '/b').file).size);
    expect(list[0]).toMatchObject({ loaded: true, dirty: true, bytes: 0 });
    // Created by a load and not saved: listed from memory, with no file yet.
    expect(list[1]).toMatchObject({ loaded: true, dirty: true, bytes: 0, charts: 0, beats: 0, entries: 0 });
    for (const s of list) {
      expect(s.id).toBe((await store.load(s.userId, s.workspaceId)).session.id);
      expect(Number.isNaN(Date.parse(s.createdAt))).toBe(false);
      expect(Number.isNaN(Date.parse(s.updatedAt))).toBe(false);
    }
    await store.close();

    // Another store sees the same sessions, none of them loaded there.
    const other = await box.open(dataDir);
    const seen = await other.list();
    expect(seen.map((s) => [s.userId, s.workspaceId, s.loaded, s.dirty])).toEqual([
      ['alice', '/a', false, false],
      ['alice', '/z', false, false],
      ['bob', '/b', false, false],
    ]);
  });

  test('a session no call uses leaves memory once written (unloadAfterMs), and loads again whole', async () => {
    const dataDir = newDataDir();
    const unloadAfterMs = 300;
    const store = await box.open(dataDir, { autosaveIntervalMs: 20, unloadAfterMs });
    let lastUse = Date.now();
    await store.merge('alice', '/proj', richUpdate());
    await store.load('bob', '/proj');
    const loaded = async () => (await store.list()).filter((s) => s.loaded).map((s) => s.userId);
    expect(await loaded()).toEqual(['alice', 'bob']);

    // Alice's session stays while it is used; Bob's goes. Whenever less than unloadAfterMs has
    // passed since alice's last use, she must still be loaded; a look that comes later than that
    // (a late timer on a busy machine) proves nothing and is not counted.
    let looks = 0;
    await pollUntil(
      async () => {
        const now = await loaded();
        if (Date.now() - lastUse < unloadAfterMs) {
          expect(now).toContain('alice');
          looks++;
        }
        lastUse = Date.now();
        await store.load('alice', '/proj');
        return !now.includes('bob');
      },
      { timeoutMs: 10000, intervalMs: 25, what: "bob's session to leave memory" },
    );
    expect(looks).toBeGreaterThan(0);
    expect(await loaded()).toEqual(['alice']);
    await pollUntil(async () => (await loaded()).length === 0, { timeoutMs: 10000, intervalMs: 20, what: "alice's session to leave memory" });
    expectRestored((await store.load('alice', '/proj')).session, richUpdate());
    expect(await loaded()).toEqual(['alice']);
  });
});

describe('small sessions held as text between calls (foldAfterMs)', () => {
  test('a session held as text after every call loads, merges, lists and restores whole', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir, { foldAfterMs: 0 });
    await store.merge('alice', '/proj', richUpdate());
    expectRestored((await store.load('alice', '/proj')).session, richUpdate());
    const { changes } = await store.merge('alice', '/proj', { memory: { lastFile: 'b.ts' }, conversationHistory: [{ id: 'late', role: 'user', content: 'again' }] });
    expect(changes).toEqual(expect.arrayContaining(['memory.lastFile', 'conversationHistory.late']));
    const [summary] = await store.list();
    expect(summary).toMatchObject({ userId: 'alice', loaded: true, dirty: true, entries: richUpdate().conversationHistory.length + 1 });
    await store.close();

    const reopened = await box.open(dataDir, { foldAfterMs: 0 });
    const { session } = await reopened.load('alice', '/proj');
    expect(session.memory.lastFile).toBe('b.ts');
    expect(session.conversationHistory.map((e) => e.id)).toContain('late');
  });
});

describe('mergeSessions', () => {
  /** Two server stores on one dir that both loaded a session, then diverged before either saved. */
  async function divergedCopies() {
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    const b = await box.open(dataDir);
    await a.merge('alice', '/proj', { memory: { shared: 'base' }, conversationHistory: [{ id: 'e0', role: 'system', content: 'base' }] });
    await a.save('alice', '/proj');
    await b.load('alice', '/proj');
    const left = await a.merge('alice', '/proj', {
      universeFocus: 'engineer',
      memory: { fromA: 1, goal: 'A' },
      config: { theme: 'light' },
      conversationHistory: [{ id: 'ea', role: 'user', content: 'from A' }],
      storyBeats: [{ id: 'ba', description: 'beat A', type: 'commit' }],
      activeCharts: [{ id: 'chart-a', title: 'A chart' }],
    }, { returnSession: true });
    await nextMillisecond(); // B's writes come later in time than A's
    const right = await b.merge('alice', '/proj', {
      universeFocus: 'story',
      memory: { fromB: [1, 2], goal: 'B', shared: null },
      storyPosition: { arc: 'b-arc', beat: 1, phase: 'start' },
      conversationHistory: [{ id: 'eb', role: 'agent', content: 'from B' }],
      storyBeats: [{ id: 'bb', description: 'beat B', type: 'review' }],
      activeCharts: [{ id: 'chart-b', title: 'B chart' }],
    }, { returnSession: true });
    return { left: left.session, right: right.session, a, b, dataDir };
  }

  test('is commutative and idempotent, and unions the entries of diverged copies', async () => {
    const { left, right } = await divergedCopies();
    const ab = mergeSessions(left, right);
    const ba = mergeSessions(right, left);
    expect(ab).toEqual(ba);
    expect(mergeSessions(ab, ab)).toEqual(ab);
    expect(mergeSessions(left, left)).toEqual(left);
    // Absorbing: merging in a copy already included changes nothing.
    expect(mergeSessions(ab, left)).toEqual(ab);
    expect(mergeSessions(right, ab)).toEqual(ab);

    expect(ab.conversationHistory.map((e) => e.id).sort()).toEqual(['e0', 'ea', 'eb']);
    expect(ab.storyBeats.map((b) => b.id).sort()).toEqual(['ba', 'bb']);
    expect(ab.activeCharts.map((c) => c.id).sort()).toEqual(['chart-a', 'chart-b']);
    // Last write wins for simple values; a deletion is a write like any other.
    expect(ab.memory).toEqual({ fromA: 1, fromB: [1, 2], goal: 'B' });
    expect(ab.universeFocus).toBe('story');
    expect(ab.config).toEqual({ theme: 'light' });
    expect(ab.storyPosition).toEqual({ arc: 'b-arc', beat: 1, phase: 'start' });
    expect(ab.id).toBe(left.id);
  });

  test('mergeSessionsJson merges the same copies held as JSON text, from strings or Buffers', async () => {
    const { left, right } = await divergedCopies();
    const expected = mergeSessions(left, right);
    const [leftText, rightText] = [JSON.stringify(left), JSON.stringify(right)];
    for (const [x, y] of [
      [leftText, rightText],
      [Buffer.from(rightText), Buffer.from(leftText)],
      [leftText, Buffer.from(rightText)],
    ]) {
      const merged = await mergeSessionsJson(x, y);
      expect(Buffer.isBuffer(merged)).toBe(true);
      expect(JSON.parse(merged.toString('utf8'))).toEqual(expected);
    }
    // The inputs are left as they were.
    expect(JSON.stringify(left)).toBe(leftText);
  });

  test('mergeSessionsJson gives each merge its own result, whatever ran before it or beside it', async () => {
    // Texts are copied into buffers kept from earlier merges: a large merge, then small ones and
    // many at once, each must see only its own text.
    const { left, right } = await divergedCopies();
    const entries = Array.from({ length: 3000 }, (_, n) => ({ id: `big-${n}`, role: 'user', content: `é ${n} ${'x'.repeat(200)}`, timestamp: right.updatedAt }));
    const bigRight = { ...right, conversationHistory: [...right.conversationHistory, ...entries] };
    const bigExpected = mergeSessions(left, bigRight);
    const smallExpected = mergeSessions(left, right);
    const [leftText, rightText, bigText] = [JSON.stringify(left), JSON.stringify(right), JSON.stringify(bigRight)];
    expect(JSON.parse((await mergeSessionsJson(leftText, bigText)).toString())).toEqual(bigExpected);
    expect(JSON.parse((await mergeSessionsJson(leftText, rightText)).toString())).toEqual(smallExpected);
    const pairs = Array.from({ length: 12 }, (_, n) =>
      n % 3 === 0 ? [Buffer.from(bigText), leftText, bigExpected] : [n % 2 ? Buffer.from(rightText) : rightText, leftText, smallExpected],
    );
    const results = await Promise.all(pairs.map(([x, y]) => mergeSessionsJson(x, y)));
    results.forEach((merged, n) => expect(JSON.parse(merged.toString())).toEqual(pairs[n][2]));
  });

  test('mergeSessionsJson reads non-ASCII text from a string as Buffer.from(string) would', async () => {
    const { left, right } = await divergedCopies();
    const words = 'héllo wörld, 日本語, 🌍🚀 and a lone \ud800 surrogate';
    const rich = { ...right, conversationHistory: [...right.conversationHistory, { id: 'eu', role: 'user', content: words, timestamp: right.updatedAt }] };
    // The raw text (not JSON.stringify's escapes) carries the characters themselves.
    const text = JSON.stringify(rich).replace(/\\ud800/g, '\ud800');
    expect(text).toContain('\ud800');
    const fromString = JSON.parse((await mergeSessionsJson(JSON.stringify(left), text)).toString('utf8'));
    const fromBuffer = JSON.parse((await mergeSessionsJson(JSON.stringify(left), Buffer.from(text))).toString('utf8'));
    expect(fromString).toEqual(fromBuffer);
    const entry = fromString.conversationHistory.find((e) => e.id === 'eu');
    expect(entry.content).toBe(words.replace('\ud800', '\ufffd'));
  });

  test('mergeSessionsJson writes each entry as it came, and one text of an entry written two ways whatever the order', async () => {
    const { left, right } = await divergedCopies();
    const [leftText, rightText] = [JSON.stringify(left), JSON.stringify(right)];
    // The same session again, its entries with their keys in reverse order and indented.
    const respelled = JSON.stringify(
      { ...left, conversationHistory: left.conversationHistory.map((e) => Object.fromEntries(Object.entries(e).reverse())) },
      null,
      2,
    );
    const texts = async (x, y) => (await mergeSessionsJson(x, y)).toString('utf8');
    const [one, other] = [await texts(leftText, respelled), await texts(respelled, leftText)];
    expect(JSON.parse(one)).toEqual(mergeSessions(left, left));
    const entryText = (e) => JSON.stringify(Object.fromEntries(Object.entries(e).reverse()), null, 2);
    for (const merged of [one, other]) {
      // Each entry is one of its two texts, the larger, whichever argument it came in.
      for (const e of left.conversationHistory) {
        const candidates = [JSON.stringify(e), entryText(e).replace(/\n/g, '\n    ')];
        const larger = candidates[0] > candidates[1] ? candidates[0] : candidates[1];
        expect(merged).toContain(larger);
      }
    }
    expect(one).toBe(other);
    // A text merge with the other copy keeps the entries of each as written there.
    const ab = await texts(leftText, rightText);
    for (const e of right.conversationHistory) expect(ab).toContain(JSON.stringify(e));
  });

  test('mergeSessionsJson merges large diverged sessions, with non-ASCII text, as mergeSessions does', async () => {
    // Several MB each: both texts are converted and parsed on two threads at once, and the string
    // copies are big enough to be backed by 2 MiB pages.
    const { left, right } = await divergedCopies();
    const entries = (tag, count, at) =>
      Array.from({ length: count }, (_, i) => ({
        id: `${tag}-${i}`,
        role: i % 2 ? 'assistant' : 'user',
        content: `${tag} ${i}: naïve café, 日本語 and 🚀 `.repeat(8),
        timestamp: new Date(at + i * 1000).toISOString(),
      }));
    const shared = entries('shared', 3000, Date.parse('2026-01-01T00:00:00.000Z'));
    const big = (copy, tag) => ({
      ...copy,
      conversationHistory: [...shared, ...copy.conversationHistory, ...entries(tag, 9000, Date.parse('2026-02-01T00:00:00.000Z'))],
    });
    const [x, y] = [big(left, 'left'), big(right, 'right')];
    const [xText, yText] = [JSON.stringify(x), JSON.stringify(y)];
    expect(xText.length).toBeGreaterThan(4 * 1024 * 1024);
    const expected = mergeSessions(x, y);
    expect(expected.conversationHistory).toHaveLength(3000 + 2 * 9000 + 3);
    expect(JSON.parse((await mergeSessionsJson(xText, yText)).toString('utf8'))).toEqual(expected);
    expect(JSON.parse((await mergeSessionsJson(Buffer.from(yText), xText)).toString('utf8'))).toEqual(expected);
  });

  test('is associative, and the stores converge on disk to the same result', async () => {
    const { left, right, a, b, dataDir } = await divergedCopies();
    const third = await box.open(dataDir);
    const { session: base } = await third.load('alice', '/proj');
    const c = (await third.merge('alice', '/proj', { memory: { fromC: true }, conversationHistory: [{ id: 'ec', role: 'user', content: 'C' }] }, { returnSession: true })).session;

    const leftFirst = mergeSessions(mergeSessions(left, right), c);
    const rightFirst = mergeSessions(left, mergeSessions(right, c));
    expect(leftFirst).toEqual(rightFirst);
    expect(mergeSessions(base, leftFirst)).toEqual(leftFirst);

    await a.close();
    await b.close();
    await third.close();
    const reader = await box.open(dataDir);
    expect((await reader.load('alice', '/proj')).session).toEqual(leftFirst);
  });

  test('is commutative when both copies add actions to the same chart', async () => {
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    const b = await box.open(dataDir);
    await a.merge('alice', '/proj', { activeCharts: [{ id: 'c1', title: 'Shared chart' }] });
    await a.save('alice', '/proj');
    await b.load('alice', '/proj');
    const left = (await a.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'x', title: 'X' }] }] }, { returnSession: true })).session;
    const right = (await b.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'y', title: 'Y' }] }] }, { returnSession: true })).session;
    const ab = mergeSessions(left, right);
    expect(ab.activeCharts[0].actions.map((x) => x.id).sort()).toEqual(['x', 'y']);
    expect(ab).toEqual(mergeSessions(right, left));
  });

  test('a partial chart update made on a copy that lacked the chart erases none of its fields', async () => {
    // index.d.ts: "A chart in an update: only the fields present are written." Two servers (here on
    // separate dirs, so neither sees the other's file) hold copies of one session.
    const full = await box.open(newDataDir());
    const partial = await box.open(newDataDir());
    await partial.load('alice', '/proj');
    const withChart = (
      await full.merge(
        'alice',
        '/proj',
        { activeCharts: [{ id: 'c1', title: 'Ship v1', desiredOutcome: 'shipped', actions: [{ id: 'a1', title: 'write docs' }] }] },
        { returnSession: true },
      )
    ).session;
    await nextMillisecond(); // the partial update is the later write
    const completed = (
      await partial.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }] }] }, { returnSession: true })
    ).session;

    const merged = mergeSessions(withChart, completed);
    expect(merged).toEqual(mergeSessions(completed, withChart));
    expect(merged.activeCharts).toHaveLength(1);
    expect(merged.activeCharts[0]).toMatchObject({ id: 'c1', title: 'Ship v1', desiredOutcome: 'shipped' });
    expect(merged.activeCharts[0].actions).toEqual([expect.objectContaining({ id: 'a1', title: 'write docs', completed: true })]);
  });

  test('returns a plain session object that a store accepts back', async () => {
    const { left, right } = await divergedCopies();
    const merged = mergeSessions(left, right);
    const store = await box.open(newDataDir());
    const result = await store.merge('alice', '/proj', merged, { returnSession: true });
    expect(result.session.memory).toEqual(merged.memory);
    expect(result.session.conversationHistory.map((e) => e.id)).toEqual(merged.conversationHistory.map((e) => e.id));
  });
});

describe('NarrativeSessionStore.open', () => {
  test('opens on an existing directory and leaves other files alone', async () => {
    const dataDir = box.tempDir();
    fs.writeFileSync(path.join(dataDir, 'README.txt'), 'operator notes');
    const store = await box.open(dataDir);
    await store.load('alice', '/proj');
    expect(await store.list()).toHaveLength(1);
    await store.close();
    expect(fs.readFileSync(path.join(dataDir, 'README.txt'), 'utf8')).toBe('operator notes');
  });

  test('works in worker threads, one after another and beside the main thread: every call settles', async () => {
    // Each worker is a Node environment of its own. When the last one using the addon goes, napi-rs
    // stops its tokio runtime, and starts a new one for the next: calls made then must still run.
    const script = `
      const { Worker, isMainThread, workerData, parentPort } = require('node:worker_threads')
      // Loaded only when first used: the main thread uses the addon after two workers have.
      async function session(dir, tag) {
        const { NarrativeSessionStore } = require(${JSON.stringify(INDEX)})
        const store = await NarrativeSessionStore.open({ dataDir: dir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 })
        await Promise.all([1, 2, 3].map((n) => store.merge('alice', '/proj', { memory: { [tag + n]: n } }, { returnSession: false })))
        const { session } = await store.load('alice', '/proj')
        await store.close()
        return Object.keys(session.memory).sort().join(',')
      }
      const inWorker = (dir, tag) => new Promise((resolve, reject) => {
        const worker = new Worker(__filename, { workerData: { dir, tag } })
        worker.once('message', resolve)
        worker.once('error', reject)
      })
      if (!isMainThread) {
        session(workerData.dir, workerData.tag).then((keys) => parentPort.postMessage(keys))
      } else {
        ;(async () => {
          const dir = process.argv[2]
          const out = []
          out.push(await inWorker(dir, 'w'))
          out.push(await inWorker(dir, 'x'))
          out.push(await session(dir, 'm'))
          out.push(await inWorker(dir, 'y'))
          console.log(JSON.stringify(out))
        })()
      }
    `;
    const file = path.join(box.tempDir(), 'workers.js');
    fs.writeFileSync(file, script);
    const result = await runNode([file, newDataDir()]);
    expect(result).toMatchObject({ code: 0, killed: false });
    expect(JSON.parse(result.stdout)).toEqual(['w1,w2,w3', 'w1,w2,w3,x1,x2,x3', 'm1,m2,m3,w1,w2,w3,x1,x2,x3', 'm1,m2,m3,w1,w2,w3,x1,x2,x3,y1,y2,y3']);
  });

  test('returns a store instance whose close() can be called twice', async () => {
    const store = await box.open(newDataDir());
    expect(store).toBeInstanceOf(NarrativeSessionStore);
    await store.close();
    await expect(store.close()).resolves.toMatchObject({ notCompacted: [] });
  });
});

describe('normalizeWorkspaceId', () => {
  // Exported by the addon for hosts that take the workspace from `?workspace=` or `?folder=`.
  const { normalizeWorkspaceId } = require('../index');

  test('two spellings of one folder are one workspace, and so one session', async () => {
    const spellings = ['/home/me/proj', '/home/me/proj/', '/home/me/./proj', '/home/me/other/../proj', '//home//me/proj//'];
    const ids = spellings.map((p) => normalizeWorkspaceId(p));
    expect(new Set(ids)).toEqual(new Set(['/home/me/proj']));

    const store = await box.open(newDataDir());
    await store.merge('alice', normalizeWorkspaceId(spellings[1]), { memory: { k: 1 } });
    const { session, created } = await store.load('alice', normalizeWorkspaceId(spellings[3]));
    expect(created).toBe(false);
    expect(session.memory).toEqual({ k: 1 });
  });

  test('is absolute, never climbs above the root, and names a missing folder "(none)"', () => {
    expect(normalizeWorkspaceId('/../../etc/passwd')).toBe('/etc/passwd');
    expect(normalizeWorkspaceId('relative/dir')).toBe('/relative/dir');
    expect(normalizeWorkspaceId('/')).toBe('/');
    expect(normalizeWorkspaceId('')).toBe('(none)');
    expect(normalizeWorkspaceId('c:\\Users\\me\\..\\you\\')).toBe('C:/Users/you');
    for (const p of ['/a/b/../c/', 'x/./y', '/', '']) {
      const once = normalizeWorkspaceId(p);
      expect(normalizeWorkspaceId(once === '(none)' ? '' : once)).toBe(once);
    }
  });

  test('throws EINVALID for anything but a string', () => {
    for (const bad of [undefined, null, 1, {}, ['/a'], () => '/a', Symbol('a'), 1n]) {
      let error;
      try {
        normalizeWorkspaceId(bad);
      } catch (err) {
        error = err;
      }
      expect(error).toMatchObject({ code: 'EINVALID' });
    }
  });
});
