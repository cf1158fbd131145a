'use strict';
// Hostile and broken input, at every function. Each call is refused with a stable `code`, nothing
// stored changes, and the process survives (a panic across N-API would take Jest down with it).
//
// Addon errors come from another realm than Jest's, so they are matched on `code`, never instanceof.

const fs = require('fs');
const path = require('path');

const { NarrativeSessionStore, mergeSessions, mergeSessionsJson, defaultDataDir } = require('../index');
const { INDEX, QUIET, sandbox, filesIn, runNode } = require('./helpers/env');

const DAY = 86400000;

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

function nest(levels) {
  const root = {};
  let node = root;
  for (let i = 0; i < levels; i++) {
    node.next = {};
    node = node.next;
  }
  return root;
}

const cyclic = { name: 'loop' };
cyclic.self = cyclic;
const deep = nest(100000);
const throwingProxy = new Proxy(
  {},
  {
    get() {
      throw new Error('proxy get trap');
    },
    ownKeys() {
      throw new Error('proxy ownKeys trap');
    },
  },
);

/** Values that are not what any argument wants (but a plain object, for arguments that take one). */
const NOT_A_STRING = [
  ['a number', 42],
  ['NaN', NaN],
  ['null', null],
  ['undefined', undefined],
  ['a boolean', true],
  ['an object', { id: 'alice' }],
  ['an array', ['alice']],
  ['a function', () => 'alice'],
  ['a symbol', Symbol('alice')],
  ['a BigInt', 10n],
  ['a cyclic object', cyclic],
  ['a 100000-level object', deep],
  ['a String object', new String('alice')],
  ['a Promise', Promise.resolve('alice')],
  ['a throwing Proxy', throwingProxy],
];

/** Resolves with the error `call` rejects with; fails if it throws synchronously or resolves. */
async function rejection(call) {
  let promise;
  try {
    promise = call();
  } catch (err) {
    throw new Error(`threw synchronously instead of rejecting: ${err && err.code} ${err && err.message}`);
  }
  if (!promise || typeof promise.then !== 'function') throw new Error('did not return a promise');
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('resolved instead of rejecting');
}

/** The error `call` throws synchronously. */
function thrown(call) {
  try {
    call();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
}

/**
 * A store with one well-filled, saved session (alice in /proj), and a check that this session is
 * exactly as it was, in memory and on disk.
 */
async function seeded(options = {}) {
  const dataDir = path.join(box.tempDir(), 'sessions');
  const store = await box.open(dataDir, options);
  await store.merge('alice', '/proj', {
    universeFocus: 'story',
    storyPosition: { arc: 'a1', beat: 2, phase: 'rising' },
    memory: { goal: 'ship', nested: { list: [1, 2.5, '2026-01-01T00:00:00.000Z'] } },
    config: { theme: 'dark' },
    activeCharts: [{ id: 'c1', title: 'Chart', actions: [{ id: 'a1', title: 'act', order: 1 }] }],
    storyBeats: [{ id: 'b1', description: 'beat', type: 'commit' }],
    conversationHistory: [{ id: 'e1', role: 'user', content: 'hello' }],
  });
  await store.save('alice', '/proj');
  // The save made the journal outgrow the small snapshot: flush() waits for the compaction it
  // started in the background, so that what is on disk now stays so.
  await store.flush();
  const before = (await store.load('alice', '/proj')).session;
  const snapshot = () => new Map(filesIn(dataDir).map((f) => [f, fs.readFileSync(path.join(dataDir, f))]));
  const bytesBefore = snapshot();
  async function expectUnchanged() {
    expect((await store.load('alice', '/proj')).session).toEqual(before);
    expect((await store.list()).map((s) => [s.userId, s.workspaceId, s.dirty])).toEqual([['alice', '/proj', false]]);
    expect(await store.save('alice', '/proj')).toBe(false);
    const after = snapshot();
    expect([...after.keys()]).toEqual([...bytesBefore.keys()]);
    for (const [name, bytes] of bytesBefore) expect(after.get(name).equals(bytes)).toBe(true);
  }
  return { dataDir, store, before, expectUnchanged };
}

describe('ids', () => {
  test.each(NOT_A_STRING)('%s as a user or workspace id is refused by load, merge, save and delete', async (_, bad) => {
    const { store, expectUnchanged } = await seeded();
    const calls = [
      () => store.load(bad, '/proj'),
      () => store.load('alice', bad),
      () => store.merge(bad, '/proj', { memory: { x: 1 } }),
      () => store.merge('alice', bad, { memory: { x: 1 } }),
      () => store.save(bad, '/proj'),
      () => store.save('alice', bad),
      () => store.delete(bad, '/proj'),
      () => store.delete('alice', bad),
    ];
    for (const call of calls) expect(await rejection(call)).toMatchObject({ code: 'EINVALID' });
    await expectUnchanged();
  });

  test('missing ids are refused', async () => {
    const { store, expectUnchanged } = await seeded();
    expect(await rejection(() => store.load())).toMatchObject({ code: 'EINVALID' });
    expect(await rejection(() => store.load('alice'))).toMatchObject({ code: 'EINVALID' });
    expect(await rejection(() => store.merge('alice', '/proj'))).toMatchObject({ code: 'EINVALID' });
    expect(await rejection(() => store.delete('alice'))).toMatchObject({ code: 'EINVALID' });
    await expectUnchanged();
  });

  test('empty ids, ids over 1024 bytes and huge ids are refused; 1024 bytes is fine', async () => {
    const { store, dataDir, expectUnchanged } = await seeded();
    const bad = ['', 'x'.repeat(1025), '€'.repeat(342) /* 1026 bytes in 342 characters */, 'y'.repeat(5 * 1024 * 1024)];
    for (const id of bad) {
      for (const call of [
        () => store.load(id, '/proj'),
        () => store.load('alice', id),
        () => store.merge(id, '/proj', { memory: { x: 1 } }),
        () => store.save('alice', id),
        () => store.delete(id, '/proj'),
      ]) {
        expect(await rejection(call)).toMatchObject({ code: 'EINVALID' });
      }
    }
    await expectUnchanged();

    const longest = 'x'.repeat(1024);
    const longestUnicode = `${'€'.repeat(341)}x`; // 1024 bytes
    for (const [user, workspace] of [
      [longest, '/proj'],
      ['alice', longestUnicode],
    ]) {
      const { created, session } = await store.load(user, workspace);
      expect(created).toBe(true);
      expect(session.userId).toBe(user);
      expect(session.workspaceId).toBe(workspace);
    }
    // Only hash-named session files, and the directory's lock file (`.locks`, a fixed name).
    for (const f of filesIn(dataDir)) expect(f).toMatch(/^(\.locks$|[0-9a-f]{64}\.)/);
  });

  test('hostile ids create nothing outside the data dir and come back exactly as given', async () => {
    const root = box.tempDir();
    const dataDir = path.join(root, 'srv', 'data', 'sessions');
    // Decoys where a path-joining store would write.
    fs.mkdirSync(path.join(root, 'etc'));
    fs.writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:decoy');
    const store = await box.open(dataDir);

    const walk = (dir) =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
        const full = path.join(dir, d.name);
        if (full === dataDir) return [full];
        const stat = fs.statSync(full);
        const here = `${full} ${stat.size} ${stat.mtimeMs}`;
        return d.isDirectory() ? [here, ...walk(full)] : [here];
      });
    const rootBefore = walk(root);
    const cwdBefore = fs.readdirSync(process.cwd());
    const fsRootBefore = fs.readdirSync('/');

    const hostile = ['../../etc/passwd', 'C:\\x', 'a/../../b', '/', '..', '.', '\\\\server\\share\\x', 'nul\0byte', '%2e%2e%2f', '*'];
    const pairs = [];
    for (const user of hostile.slice(0, 5)) for (const workspace of hostile.slice(0, 5)) pairs.push([user, workspace]);
    for (const id of hostile.slice(5)) pairs.push([id, id], ['alice', id], [id, '/proj']);

    for (const [user, workspace] of pairs) {
      const { session, created } = await store.load(user, workspace);
      expect(created).toBe(true);
      expect(session.userId).toBe(user);
      expect(session.workspaceId).toBe(workspace);
      await store.merge(user, workspace, { memory: { who: user, where: workspace } });
      expect(await store.save(user, workspace)).toBe(true);
    }

    expect(walk(root)).toEqual(rootBefore);
    expect(fs.readFileSync(path.join(root, 'etc', 'passwd'), 'utf8')).toBe('root:x:0:0:decoy');
    expect(fs.readdirSync(process.cwd())).toEqual(cwdBefore);
    expect(fs.readdirSync('/')).toEqual(fsRootBefore);
    const files = filesIn(dataDir);
    for (const f of files) expect(f).toMatch(/^(\.locks$|[0-9a-f]{64}\.)/);
    expect(fs.readdirSync(dataDir, { withFileTypes: true }).every((d) => d.isFile())).toBe(true);

    // Every pair is its own session and comes back from a new store exactly as given.
    await store.close();
    const reader = await box.open(dataDir);
    const listed = await reader.list();
    expect(listed).toHaveLength(pairs.length);
    expect(new Set(listed.map((s) => s.id)).size).toBe(pairs.length);
    for (const [user, workspace] of pairs) {
      const { session, created } = await reader.load(user, workspace);
      expect(created).toBe(false);
      expect(session.memory).toEqual({ who: user, where: workspace });
      expect(await reader.delete(user, workspace)).toBe(true);
    }
    // Every session's files are gone; only the directory's lock file stays.
    expect(filesIn(dataDir).filter((f) => f !== '.locks')).toEqual([]);
    expect(walk(root)).toEqual(rootBefore);
  });

  test('two user ids that differ only in unpaired surrogates are never the same session', async () => {
    // JavaScript strings may hold lone surrogates; UTF-8 cannot. Such an id must be refused, or kept
    // apart from every other id, never silently rewritten into one shared session.
    const { store } = await seeded();
    const ids = ['\uD800', '\uDBFF', '\uFFFD'];
    const sessions = [];
    for (const id of ids) {
      const outcome = await store.load(id, '/proj').then(
        (r) => ({ session: r.session }),
        (error) => ({ error }),
      );
      if (outcome.error) {
        expect(outcome.error).toMatchObject({ code: 'EINVALID' });
      } else {
        const codes = (text) => Array.from(text, (c) => c.codePointAt(0).toString(16));
        expect(codes(outcome.session.userId)).toEqual(codes(id));
        sessions.push(outcome.session.id);
      }
    }
    expect(new Set(sessions).size).toBe(sessions.length);
  });
});

describe('merge updates', () => {
  test.each([
    ['a number', 7],
    ['a string', '{"memory":{"x":1}}'],
    ['null', null],
    ['undefined', undefined],
    ['a boolean', false],
    ['an array', [{ memory: { x: 1 } }]],
    ['a function', () => ({ memory: { x: 1 } })],
    ['a symbol', Symbol('update')],
    ['a BigInt', 1n],
    ['a cyclic object', cyclic],
    ['an object holding a cycle', { memory: { loop: cyclic } }],
    ['a 100000-level object', { memory: { deep } }],
    ['a 5000-level object', { memory: { deep: nest(5000) } }],
    ['an object holding a BigInt', { memory: { n: 5n } }],
    ['a throwing Proxy', throwingProxy],
    ['an object with a throwing getter', { get memory() { throw new Error('getter'); } }],
    ['an object whose toJSON throws', { toJSON() { throw new Error('toJSON'); } }],
    ['an object whose toJSON returns undefined', { toJSON: () => undefined }],
    ['an unknown field', { memory: { x: 1 }, colour: 'red' }],
    ['a misspelt field', { memroy: { x: 1 } }],
    ['a wrong universeFocus', { universeFocus: 'galaxy' }],
    ['a wrong universFocus', { universFocus: 'everything' }],
    ['a numeric universeFocus', { universeFocus: 1 }],
    ['storyPosition as a string', { storyPosition: 'chapter 2' }],
    ['a negative beat', { storyPosition: { arc: 'a', beat: -1, phase: 'p' } }],
    ['a fractional beat', { storyPosition: { arc: 'a', beat: 1.5, phase: 'p' } }],
    ['a numeric arc', { storyPosition: { arc: 5, beat: 1, phase: 'p' } }],
    ['memory as an array', { memory: ['x'] }],
    ['memory as a string', { memory: 'x' }],
    ['config as a number', { config: 3 }],
    ['activeCharts as an object', { activeCharts: { id: 'c1' } }],
    ['a chart without an id', { memory: { x: 1 }, activeCharts: [{ title: 'no id' }] }],
    ['a chart with an empty id', { activeCharts: [{ id: '' }] }],
    ['a chart with a numeric id', { activeCharts: [{ id: 1 }] }],
    ['a chart with a wrong status', { activeCharts: [{ id: 'c1', status: 'done' }] }],
    ['a chart with a null title', { activeCharts: [{ id: 'c1', title: null }] }],
    ['a chart with a bad time', { activeCharts: [{ id: 'c1', createdAt: 'last tuesday' }] }],
    ['a chart whose actions are not a list', { activeCharts: [{ id: 'c1', actions: 'a1' }] }],
    ['an action without an id', { activeCharts: [{ id: 'c1', actions: [{ title: 'no id' }] }] }],
    ['an action that is not an object', { activeCharts: [{ id: 'c1', actions: ['a1'] }] }],
    ['an action with a string completed', { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: 'yes' }] }] }],
    ['an action with a bad completedAt', { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completedAt: 'soon' }] }] }],
    ['a beat without an id', { storyBeats: [{ description: 'x', type: 'commit' }] }],
    ['a beat with a bad time', { storyBeats: [{ id: 'b2', createdAt: 'not a time' }] }],
    ['an entry with a wrong role', { conversationHistory: [{ id: 'e2', role: 'robot', content: 'x' }] }],
    ['an entry without a role', { conversationHistory: [{ id: 'e2', content: 'x' }] }],
    ['an entry with a wrong universe', { conversationHistory: [{ id: 'e2', role: 'user', universe: 'multiverse' }] }],
    ['an entry with a bad timestamp', { conversationHistory: [{ id: 'e2', role: 'user', timestamp: 'yesterday' }] }],
    ['an entry with an id over 1024 bytes', { conversationHistory: [{ id: 'e'.repeat(1025), role: 'user' }] }],
    ['a malformed version', { memory: { goal: 'x' }, versions: { 'memory.goal': 'garbage' } }],
    ['a version far in the future', { memory: { goal: 'x' }, versions: { 'memory.goal': `${Date.now() + 30 * DAY}-0000-future` } }],
  ])('%s is refused with EINVALID and changes nothing', async (_, update) => {
    const { store, expectUnchanged } = await seeded();
    const events = [];
    store.onMerge((e) => events.push(e));
    expect(await rejection(() => store.merge('alice', '/proj', update))).toMatchObject({ code: 'EINVALID' });
    await expectUnchanged();
    expect(events).toEqual([]);
  });

  test('a good part next to a bad part is not applied either', async () => {
    const { store, expectUnchanged } = await seeded();
    const mixed = [
      { memory: { good: 1 }, universeFocus: 'galaxy' },
      { memory: { good: 1 }, conversationHistory: [{ id: 'ok', role: 'user' }, { id: 'bad', role: 'robot' }] },
      { universeFocus: 'engineer', activeCharts: [{ id: 'c1', title: 'renamed' }, { title: 'no id' }] },
      { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }, { id: 'a2', completedAt: 'never' }] }] },
      { memory: { good: 1 }, versions: { 'memory.good': `${Date.now() + 30 * DAY}-0000-x` } },
    ];
    for (const update of mixed) {
      expect(await rejection(() => store.merge('alice', '/proj', update))).toMatchObject({ code: 'EINVALID' });
    }
    await expectUnchanged();
  });

  test('merge options: an empty, long or non-string origin, unknown options and non-objects are refused', async () => {
    const { store, expectUnchanged } = await seeded();
    const update = { memory: { fromOption: true } };
    for (const options of [
      { origin: '' },
      { origin: 'o'.repeat(1025) },
      { origin: 5 },
      { origin: { name: 'x' } },
      { source: 'socket' },
      5,
      'socket-1',
      true,
      () => ({ origin: 'x' }),
      Symbol('x'),
      10n,
      cyclic,
      deep,
    ]) {
      expect(await rejection(() => store.merge('alice', '/proj', update, options))).toMatchObject({ code: 'EINVALID' });
    }
    await expectUnchanged();
    // null and undefined mean "no options".
    expect((await store.merge('alice', '/proj', { memory: { a: 1 } }, null)).changes).toEqual(['memory.a']);
    expect((await store.merge('alice', '/proj', { memory: { b: 1 } }, undefined)).changes).toEqual(['memory.b']);
  });

  // serde reads a struct from a JSON array by position; an array must not be taken as options.
  test('merge options given as an array are refused', async () => {
    const { store, expectUnchanged } = await seeded();
    const events = [];
    store.onMerge((e) => events.push(e));
    const err = await rejection(() => store.merge('alice', '/proj', { memory: { x: 1 } }, ['spoofed-origin']));
    expect(err).toMatchObject({ code: 'EINVALID' });
    await expectUnchanged();
    expect(events).toEqual([]);
  });

  test('cleanup options given as an array are refused, and remove nothing', async () => {
    const { store, dataDir, expectUnchanged } = await seeded();
    // A second, saved session that is not loaded here: cleanup([1, inThreeDays]) taken as
    // { ttlDays: 1, now: inThreeDays } would remove it.
    const other = await box.open(dataDir);
    await other.load('bob', '/proj');
    await other.close();
    expect(await rejection(() => store.cleanup([1, Date.now() + 3 * DAY]))).toMatchObject({ code: 'EINVALID' });
    expect((await store.list()).map((s) => s.userId)).toEqual(['alice', 'bob']);
    await store.delete('bob', '/proj');
    await expectUnchanged();
  });

  test('open options given as an array are refused, and create nothing', async () => {
    const arrayDir = path.join(box.tempDir(), 'from-array');
    const opened = await NarrativeSessionStore.open([arrayDir, null, 0, 0, null]).then(
      (s) => box.track(s),
      (error) => error,
    );
    expect(opened).toMatchObject({ code: 'EINVALID' });
    expect(fs.existsSync(arrayDir)).toBe(false);
  });

  test('a key named __proto__ is plain data, and pollutes nothing', async () => {
    const { store } = await seeded();
    const update = JSON.parse('{"memory":{"__proto__":{"polluted":true},"constructor":{"prototype":{"bad":1}}}}');
    const { session } = await store.merge('alice', '/proj', update, { returnSession: true });
    expect(Object.prototype.hasOwnProperty.call(session.memory, '__proto__')).toBe(true);
    expect(session.memory.__proto__).toEqual({ polluted: true });
    expect({}.polluted).toBeUndefined();
    expect(Object.prototype.polluted).toBeUndefined();
    expect({}.bad).toBeUndefined();
  });
});

describe('size limits', () => {
  test('an update over maxSessionBytes is refused with ETOOLARGE and changes nothing', async () => {
    const { store, expectUnchanged } = await seeded({ maxSessionBytes: 10000 });
    const events = [];
    store.onMerge((e) => events.push(e));
    for (const update of [
      { memory: { big: 'x'.repeat(20000) } },
      { conversationHistory: Array.from({ length: 200 }, (_, i) => ({ id: `e-${i}`, role: 'user', content: 'x'.repeat(100) })) },
    ]) {
      expect(await rejection(() => store.merge('alice', '/proj', update))).toMatchObject({ code: 'ETOOLARGE' });
    }
    await expectUnchanged();
    expect(events).toEqual([]);
  });

  test('a session that would grow past maxSessionBytes refuses the update that would do it', async () => {
    const { store, dataDir, before } = await seeded({ maxSessionBytes: 10000 });
    const accepted = [];
    let refused;
    for (let i = 0; i < 10 && !refused; i++) {
      const update = { memory: { [`chunk${i}`]: 'x'.repeat(3000) } };
      try {
        await store.merge('alice', '/proj', update);
        accepted.push(`chunk${i}`);
      } catch (err) {
        refused = err;
      }
    }
    expect(refused).toMatchObject({ code: 'ETOOLARGE' });
    expect(accepted.length).toBeGreaterThan(0);
    const { session } = await store.load('alice', '/proj');
    expect(Object.keys(session.memory).sort()).toEqual([...Object.keys(before.memory), ...accepted].sort());
    await store.close();
    const reader = await box.open(dataDir);
    const back = (await reader.load('alice', '/proj')).session;
    expect(back).toEqual(session);
    expect(JSON.stringify(back).length).toBeLessThanOrEqual(10000);
  });

  test('a session well under maxSessionBytes accepts updates however often it changes', async () => {
    // A client may send the whole session back with one field changed (the server ignores what is
    // unchanged). The session stays about 3 KB; the limit is 10 KB. Nothing is saved in between, as
    // between two autosaves.
    const { store } = await seeded({ maxSessionBytes: 10000 });
    let { session } = await store.merge('alice', '/proj', { memory: { notes: 'n'.repeat(2500) } }, { returnSession: true });
    await store.save('alice', '/proj');
    for (let beat = 10; beat < 20; beat++) {
      const { versions, ...whole } = session; // stale clocks would make the new value lose
      const result = await store.merge('alice', '/proj', { ...whole, storyPosition: { arc: 'a1', beat, phase: 'rising' } }, { returnSession: true });
      expect(result.changes).toEqual(['storyPosition']);
      session = result.session;
      expect(JSON.stringify(session).length).toBeLessThan(5000);
    }
  });

  test('an update over the default 32 MiB is refused with ETOOLARGE', async () => {
    const { store, expectUnchanged } = await seeded();
    const huge = { memory: { blob: 'z'.repeat(33 * 1024 * 1024) } };
    expect(await rejection(() => store.merge('alice', '/proj', huge))).toMatchObject({ code: 'ETOOLARGE' });
    await expectUnchanged();
  });
});

describe('NarrativeSessionStore.open options', () => {
  test.each([
    ['a negative ttlDays', { ttlDays: -1 }],
    ['a zero ttlDays', { ttlDays: 0 }],
    ['a string ttlDays', { ttlDays: '30' }],
    ['a negative autosaveIntervalMs', { autosaveIntervalMs: -5 }],
    ['a string autosaveIntervalMs', { autosaveIntervalMs: 'often' }],
    ['a negative cleanupIntervalMs', { cleanupIntervalMs: -1 }],
    ['a negative unloadAfterMs', { unloadAfterMs: -1 }],
    ['a string unloadAfterMs', { unloadAfterMs: '10m' }],
    ['a negative foldAfterMs', { foldAfterMs: -1 }],
    ['a string foldAfterMs', { foldAfterMs: '2s' }],
    ['a zero maxSessionBytes', { maxSessionBytes: 0 }],
    ['a negative maxSessionBytes', { maxSessionBytes: -100 }],
    ['an unknown option', { ttlDay: 5 }],
    ['an empty dataDir', { dataDir: '' }],
    ['a numeric dataDir', { dataDir: 42 }],
  ])('%s is refused with EINVALID and creates nothing', async (_, options) => {
    const parent = box.tempDir();
    const dataDir = path.join(parent, 'sessions');
    const err = await rejection(() => NarrativeSessionStore.open({ dataDir, ...QUIET, ...options }));
    expect(err).toMatchObject({ code: 'EINVALID' });
    expect(fs.readdirSync(parent)).toEqual([]);
  });

  test.each([
    ['a number', 5],
    ['a string', '/tmp/sessions'],
    ['a boolean', true],
    ['a function', () => ({})],
    ['a symbol', Symbol('options')],
    ['a BigInt', 5n],
    ['a cyclic object', cyclic],
    ['a 100000-level object', deep],
    ['a throwing Proxy', throwingProxy],
  ])('%s as options is refused with EINVALID', async (_, options) => {
    expect(await rejection(() => NarrativeSessionStore.open(options))).toMatchObject({ code: 'EINVALID' });
  });

  test('a data dir that cannot be created is refused with EIO', async () => {
    const parent = box.tempDir();
    const file = path.join(parent, 'a-file');
    fs.writeFileSync(file, 'not a directory');
    for (const dataDir of [file, path.join(file, 'sessions')]) {
      expect(await rejection(() => NarrativeSessionStore.open({ dataDir, ...QUIET }))).toMatchObject({ code: 'EIO' });
    }
    expect(fs.readFileSync(file, 'utf8')).toBe('not a directory');
  });
});

describe('cleanup options', () => {
  test.each([
    ['a negative ttlDays', { ttlDays: -1 }],
    ['a zero ttlDays', { ttlDays: 0 }],
    ['a string ttlDays', { ttlDays: '1' }],
    ['a string now', { now: 'tomorrow' }],
    ['a now beyond any date', { now: 1e20 }],
    ['an object now', { now: { ms: 1 } }],
    ['an unknown option', { ttlDays: 1, force: true }],
    ['a number', 1],
    ['a string', 'all'],
    ['a function', () => ({ ttlDays: 1 })],
    ['a symbol', Symbol('cleanup')],
    ['a BigInt', 1n],
    ['a cyclic object', cyclic],
    ['a 100000-level object', deep],
  ])('%s is refused with EINVALID and removes nothing', async (_, options) => {
    const { store, dataDir, expectUnchanged } = await seeded();
    const other = await box.open(dataDir);
    await other.merge('bob', '/proj', { memory: { k: 1 } });
    await other.close();
    expect(await rejection(() => store.cleanup(options))).toMatchObject({ code: 'EINVALID' });
    expect((await store.list()).map((s) => s.userId)).toEqual(['alice', 'bob']);
    await store.delete('bob', '/proj');
    await expectUnchanged();
  });
});

describe('onMerge', () => {
  test.each([
    ['a number', 1],
    ['null', null],
    ['undefined', undefined],
    ['an object', { handleEvent() {} }],
    ['a string', 'console.log'],
    ['a symbol', Symbol('listener')],
    ['a BigInt', 1n],
    ['an array', [() => {}]],
  ])('%s as a listener throws EINVALID at once, and registers nothing', async (_, listener) => {
    const { store } = await seeded();
    expect(thrown(() => store.onMerge(listener))).toMatchObject({ code: 'EINVALID' });
    expect(thrown(() => store.onMerge())).toMatchObject({ code: 'EINVALID' });
    // Merges go on working.
    const result = await store.merge('alice', '/proj', { memory: { after: 1 } });
    expect(result.changes).toEqual(['memory.after']);
  });

  test('a listener that throws does not break merging for others', async () => {
    // Throwing from a listener is the host's bug; the store itself must stay usable. (The error
    // surfaces as Node's uncaught exception, like a throwing EventEmitter listener would, so the
    // throwing listener runs in a child process.)
    const dataDir = path.join(box.tempDir(), 'sessions');
    const script = `
      const { NarrativeSessionStore } = require(${JSON.stringify(INDEX)});
      let reported;
      const thrown = new Promise((resolve) => (reported = resolve));
      process.on('uncaughtException', (e) => {
        process.stdout.write('caught:' + e.message + ';');
        reported();
      });
      (async () => {
        const store = await NarrativeSessionStore.open({ dataDir: ${JSON.stringify(dataDir)}, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
        store.onMerge(() => { throw new Error('listener bug'); });
        const heard = new Promise((resolve) => store.onMerge(resolve));
        await store.merge('u', '/w', { memory: { a: 1 } });
        await heard;
        await thrown;
        const second = await store.merge('u', '/w', { memory: { b: 2 } }, { returnSession: true });
        await store.close();
        process.stdout.write('memory:' + JSON.stringify(second.session.memory));
      })();
    `;
    const result = await runNode(['-e', script]);
    expect(result.killed).toBe(false);
    expect(result.stdout).toContain('caught:listener bug;');
    expect(result.stdout).toContain('memory:{"a":1,"b":2}');
    expect(result.code).toBe(0);
  });
});

describe('mergeSessions', () => {
  async function twoSessions() {
    const { store, before } = await seeded();
    const other = (await store.merge('alice', '/proj', { memory: { more: true } }, { returnSession: true })).session;
    return { a: before, b: other };
  }

  test('garbage arguments throw EINVALID synchronously', async () => {
    const { a } = await twoSessions();
    const broken = [
      undefined,
      null,
      1,
      'session',
      true,
      [],
      {},
      () => a,
      Symbol('s'),
      1n,
      cyclic,
      deep,
      throwingProxy,
      { ...a, id: '' },
      { ...a, userId: 'u'.repeat(1025) },
      { ...a, workspaceId: 7 },
      { ...a, updatedAt: 'yesterday' },
      { ...a, universeFocus: 'galaxy' },
      { ...a, activeCharts: [{ title: 'no id' }] },
      { ...a, activeCharts: [{ id: 'c9', actions: [{ title: 'no id' }] }] },
      { ...a, storyBeats: [{ id: 'b9', createdAt: 'not a time' }] },
      { ...a, conversationHistory: [{ id: 'e9', role: 'robot' }] },
      { ...a, versions: { universeFocus: 'garbage' } },
      { ...a, memory: { bad: 1n } },
    ];
    const aCopy = JSON.parse(JSON.stringify(a));
    for (const bad of broken) {
      expect(thrown(() => mergeSessions(a, bad))).toMatchObject({ code: 'EINVALID' });
      expect(thrown(() => mergeSessions(bad, a))).toMatchObject({ code: 'EINVALID' });
    }
    expect(thrown(() => mergeSessions())).toMatchObject({ code: 'EINVALID' });
    expect(thrown(() => mergeSessions(a))).toMatchObject({ code: 'EINVALID' });
    // The good argument was not touched.
    expect(a).toEqual(aCopy);
  });

  test('a session over the size limit throws ETOOLARGE', async () => {
    const { a } = await twoSessions();
    const huge = { ...a, memory: { blob: 'q'.repeat(33 * 1024 * 1024) } };
    expect(thrown(() => mergeSessions(a, huge))).toMatchObject({ code: 'ETOOLARGE' });
  });

  test('does not change its arguments', async () => {
    const { a, b } = await twoSessions();
    const [aCopy, bCopy] = [JSON.parse(JSON.stringify(a)), JSON.parse(JSON.stringify(b))];
    const merged = mergeSessions(a, b);
    expect(a).toEqual(aCopy);
    expect(b).toEqual(bCopy);
    expect(merged).not.toBe(a);
    expect(merged).not.toBe(b);
  });
});

describe('mergeSessionsJson', () => {
  test('garbage rejects with EINVALID, oversized text with ETOOLARGE, and the process lives on', async () => {
    const { store } = await seeded();
    const a = JSON.stringify((await store.load('alice', '/proj')).session);
    const b = JSON.stringify({ ...JSON.parse(a), userId: 'mallory' });
    for (const bad of [undefined, null, 1, {}, [], 'not json', '[1,2]', '{"id":1}', '{', a.slice(0, -1), Symbol('s')]) {
      expect(await rejection(() => mergeSessionsJson(a, bad))).toMatchObject({ code: 'EINVALID' });
      expect(await rejection(() => mergeSessionsJson(Buffer.from(a), bad))).toMatchObject({ code: 'EINVALID' });
    }
    // Copies of two different sessions are not mixed.
    expect(await rejection(() => mergeSessionsJson(a, b))).toMatchObject({ code: 'EINVALID' });
    const huge = 'x'.repeat(33 * 1024 * 1024);
    expect(await rejection(() => mergeSessionsJson(a, huge))).toMatchObject({ code: 'ETOOLARGE' });
    expect(await rejection(() => mergeSessionsJson(Buffer.from(huge), a))).toMatchObject({ code: 'ETOOLARGE' });
    expect(JSON.parse((await mergeSessionsJson(a, a)).toString())).toEqual(mergeSessions(JSON.parse(a), JSON.parse(a)));
  });

  test('a Buffer that is not UTF-8 rejects with EINVALID; a string short in UTF-16 but long in UTF-8 with ETOOLARGE', async () => {
    const { store } = await seeded();
    const a = JSON.stringify((await store.load('alice', '/proj')).session);
    const marked = Buffer.from(JSON.stringify({ ...JSON.parse(a), memory: { note: 'one ~ byte' } }));
    expect(JSON.parse((await mergeSessionsJson(a, marked)).toString()).memory.note).toBe('one ~ byte');
    const notUtf8 = Buffer.from(marked);
    notUtf8[notUtf8.indexOf('~')] = 0xff;
    expect(await rejection(() => mergeSessionsJson(a, notUtf8))).toMatchObject({ code: 'EINVALID', message: expect.stringContaining('utf-8') });
    // 12 M characters of 3 UTF-8 bytes each: 36 MB, over the 32 MiB limit, from 12 M UTF-16 units.
    const wide = JSON.stringify({ ...JSON.parse(a), memory: { text: '日'.repeat(12 * 1024 * 1024) } });
    expect(await rejection(() => mergeSessionsJson(a, wide))).toMatchObject({ code: 'ETOOLARGE' });
    expect(JSON.parse((await mergeSessionsJson(a, Buffer.from(a))).toString())).toEqual(mergeSessions(JSON.parse(a), JSON.parse(a)));
  });
});

describe('after close()', () => {
  test('every call rejects with ECLOSED and nothing changes on disk', async () => {
    const { store, dataDir } = await seeded();
    await store.merge('alice', '/proj', { memory: { flushed: 'at close' } });
    await store.close();
    const snapshot = filesIn(dataDir).map((f) => [f, fs.readFileSync(path.join(dataDir, f), 'utf8')]);

    for (const call of [
      () => store.load('alice', '/proj'),
      () => store.load('carol', '/new'),
      () => store.merge('alice', '/proj', { memory: { late: 1 } }),
      () => store.save('alice', '/proj'),
      () => store.flush(),
      () => store.delete('alice', '/proj'),
      () => store.list(),
      () => store.cleanup(),
      () => store.cleanup({ ttlDays: 1, now: Date.now() + 10 * DAY }),
    ]) {
      expect(await rejection(call)).toMatchObject({ code: 'ECLOSED' });
    }
    await expect(store.close()).resolves.toMatchObject({ notCompacted: [] });
    expect(store.dataDir).toBe(dataDir);
    expect(filesIn(dataDir).map((f) => [f, fs.readFileSync(path.join(dataDir, f), 'utf8')])).toEqual(snapshot);

    const reader = await box.open(dataDir);
    const { session } = await reader.load('alice', '/proj');
    expect(session.memory.flushed).toBe('at close');
    expect('late' in session.memory).toBe(false);
  });
});

describe('misuse of the API surface', () => {
  test('methods called on something that is not a store fail without crashing, each with the error that says so', async () => {
    // These are refused by V8 and napi-rs before the addon's code runs, so they carry no `code` of
    // ours: each is checked by what it is, so that a mistake in the test itself (a TypeError of
    // its own) cannot pass for one of them.
    const proto = NarrativeSessionStore.prototype;
    const failure = async (call) => {
      try {
        await call();
      } catch (err) {
        return { name: err.name, code: err.code, message: err.message };
      }
      return 'no error';
    };
    const NOT_A_CONSTRUCTOR = { name: 'Error', code: undefined, message: 'Class contains no `constructor`, can not new it!' };
    expect(await failure(() => new NarrativeSessionStore())).toEqual(NOT_A_CONSTRUCTOR);
    expect(await failure(() => NarrativeSessionStore())).toEqual(NOT_A_CONSTRUCTOR);
    for (const name of ['load', 'merge', 'save', 'delete', 'list', 'cleanup', 'onMerge', 'close']) {
      expect(typeof proto[name]).toBe('function');
      for (const self of [{}, null, undefined, 1, 'store']) {
        expect({ name, self: String(self), error: await failure(() => proto[name].call(self, 'u', '/w', {})) }).toEqual({
          name,
          self: String(self),
          error: { name: 'TypeError', code: undefined, message: 'Illegal invocation' },
        });
      }
    }
    expect(await failure(() => Object.getOwnPropertyDescriptor(proto, 'dataDir').get.call({}))).toEqual({
      name: 'Error',
      code: 'InvalidArg',
      message: 'Failed to unwrap exclusive reference of `NarrativeSessionStore` type from napi value',
    });
  });

  test('extra arguments are ignored by list(), close() and defaultDataDir()', async () => {
    const { store } = await seeded();
    expect(defaultDataDir(1, Symbol('x'), cyclic)).toBe(defaultDataDir());
    expect(await store.list(Symbol('x'), deep)).toHaveLength(1);
    await store.close(cyclic, 1n);
    expect(await rejection(() => store.list())).toMatchObject({ code: 'ECLOSED' });
  });

  test('a burst of garbage in parallel leaves the store whole', async () => {
    const { store, expectUnchanged } = await seeded();
    const calls = [];
    for (const [what, bad] of NOT_A_STRING) {
      calls.push(store.load(bad, bad), store.merge(bad, '/proj', { memory: { x: 1 } }), store.save(bad, bad), store.delete(bad, 'x'));
      calls.push(store.merge('alice', '/proj', { memory: { x: 1 }, universeFocus: 'galaxy', junk: bad }));
      calls.push(store.cleanup({ junk: bad, ttlDays: -1 }));
      // (A plain object or a Promise, which JSON sees as {}, is a valid, empty update.)
      if (what !== 'an object' && what !== 'a Promise') calls.push(store.merge('alice', '/proj', bad));
    }
    const results = await Promise.allSettled(calls);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect(r.reason).toMatchObject({ code: 'EINVALID' });
    }
    await expectUnchanged();
  });
});
