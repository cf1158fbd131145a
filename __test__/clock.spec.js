'use strict';
// Clocks that disagree, with real processes: a second host whose clock reads 2100 (run under
// libfaketime, `faketime`) writes into the same data dir as this one, and a client sends a
// version 59 minutes ahead before a restart. Writes made after a value was seen must land and
// be reported as landed; a write that loses is reported in `lost`. docs/merge.md, "Clocks".

const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const { sandbox, loadInChild } = require('./helpers/env');

const CHILD = path.join(__dirname, 'helpers', 'clock-child.js');
const USER = 'alice';
const WORKSPACE = '/home/alice/proj';
const YEAR_2100 = Date.UTC(2100, 0, 1);

const hasFaketime = spawnSync('faketime', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasFaketime) {
  // .ci/run installs it; elsewhere the process tests are skipped, and say so.
  if (process.env.CI) throw new Error('faketime is not installed (apt-get install faketime)');
  console.warn('clock.spec.js: faketime is not installed; the tests with a process at 2100 are skipped');
}
const withFaketime = hasFaketime ? test : test.skip;

let box;
const children = [];

beforeEach(() => {
  box = sandbox();
});

afterEach(async () => {
  for (const child of children.splice(0)) child.kill();
  await box.dispose();
});

/**
 * Starts `clock-child.js` on `dataDir` under `faketime` at `time` ('2100-01-01 00:00:00').
 * Resolves with `{ now, send(command) }` once the child's store is open: `now` is its Date.now(),
 * `send` resolves with the child's reply to one command.
 */
async function startChildAt(time, dataDir) {
  const child = spawn('faketime', [time, process.execPath, CHILD, dataDir], {
    env: { ...process.env, FAKETIME_DONT_FAKE_MONOTONIC: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const replies = [];
  const waiting = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const message = JSON.parse(line);
    if (waiting.length > 0) waiting.shift().resolve(message);
    else replies.push(message);
  });
  child.on('close', (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`child exited (${code}): ${stderr}`));
  });
  const nextReply = () =>
    replies.length > 0
      ? Promise.resolve(replies.shift())
      : new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  children.push(child);
  const ready = await nextReply();
  return {
    now: ready.now,
    async send(command) {
      child.stdin.write(`${JSON.stringify({ userId: USER, workspaceId: WORKSPACE, ...command })}\n`);
      const reply = await nextReply();
      if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code });
      return reply.result;
    },
  };
}

/** Resolves with the first merge event of `store` that `matches`. */
function nextMergeEvent(store, matches) {
  return new Promise((resolve) => {
    const off = store.onMerge((event) => {
      if (matches(event)) {
        off();
        resolve(event);
      }
    });
  });
}

const durable = { durable: true };

withFaketime('writes made after seeing a value from a process at 2100 land, on both processes', async () => {
  const dataDir = box.tempDir('mia-clock-');
  const store = await box.open(dataDir);
  await store.load(USER, WORKSPACE);

  const future = await startChildAt('2100-01-01 00:00:00', dataDir);
  expect(future.now).toBeGreaterThanOrEqual(YEAR_2100);
  const heard = nextMergeEvent(store, (e) => e.origin === 'external' && e.changes.includes('memory.k'));
  const written = await future.send({ op: 'merge', update: { memory: { k: 'from 2100' } } });
  expect(written.changes).toEqual(['memory.k']);
  await heard;
  expect((await store.load(USER, WORKSPACE)).session.memory.k).toBe('from 2100');

  for (let n = 0; n < 10; n++) {
    const result = await store.merge(USER, WORKSPACE, { memory: { k: n } }, { ...durable, returnSession: true });
    expect({ n, changes: result.changes, lost: result.lost }).toEqual({ n, changes: ['memory.k'], lost: [] });
    expect(result.session.memory.k).toBe(n);
  }
  const { session } = await store.load(USER, WORKSPACE);
  expect(Date.parse(session.updatedAt)).toBeLessThanOrEqual(Date.now());

  // The process at 2100 takes those writes in, and its own next write, made after seeing them,
  // wins in turn.
  await future.send({ op: 'until', key: 'k', value: 9 });
  const heardAgain = nextMergeEvent(store, (e) => e.origin === 'external' && e.changes.includes('memory.k'));
  const again = await future.send({ op: 'merge', update: { memory: { k: '2100 again' } } });
  expect({ changes: again.changes, lost: again.lost }).toEqual({ changes: ['memory.k'], lost: [] });
  await heardAgain;
  expect((await store.load(USER, WORKSPACE)).session.memory.k).toBe('2100 again');

  await future.send({ op: 'close' });
  const last = await store.merge(USER, WORKSPACE, { memory: { k: 'last' } }, durable);
  expect(last.lost).toEqual([]);
  await store.close();
  expect((await loadInChild(dataDir, USER, WORKSPACE)).session.memory.k).toBe('last');
});

withFaketime('a host opened on values a process at 2100 wrote lands every write, and keeps updatedAt on its clock', async () => {
  const dataDir = box.tempDir('mia-clock-');
  const future = await startChildAt('2100-01-01 00:00:00', dataDir);
  await future.send({ op: 'merge', update: { memory: { k: 'from 2100' }, universeFocus: 'story' } });
  await future.send({ op: 'close' });

  const store = await box.open(dataDir);
  const loaded = await store.load(USER, WORKSPACE);
  expect(Date.parse(loaded.session.updatedAt)).toBeLessThanOrEqual(Date.now());
  const result = await store.merge(USER, WORKSPACE, { memory: { k: 'now' }, universeFocus: 'engineer' }, { ...durable, returnSession: true });
  expect({ changes: [...result.changes].sort(), lost: result.lost }).toEqual({
    changes: ['memory.k', 'universeFocus'],
    lost: [],
  });
  await store.close();
  const stored = (await loadInChild(dataDir, USER, WORKSPACE)).session;
  expect([stored.memory.k, stored.universeFocus]).toEqual(['now', 'engineer']);
  expect(Date.parse(stored.updatedAt)).toBeLessThanOrEqual(Date.now());
});

test('a client version 59 minutes ahead, then a restart: the next write still lands', async () => {
  const dataDir = box.tempDir('mia-clock-');
  const first = await box.open(dataDir);
  const ahead = `${Date.now() + 59 * 60 * 1000}-0000-client`;
  const accepted = await first.merge(USER, WORKSPACE, { memory: { k: 'ahead' }, versions: { 'memory.k': ahead } }, durable);
  expect(accepted.changes).toEqual(['memory.k']);
  await first.close();

  const second = await box.open(dataDir);
  const result = await second.merge(USER, WORKSPACE, { memory: { k: 'after the restart' } }, { ...durable, returnSession: true });
  expect({ changes: result.changes, lost: result.lost }).toEqual({ changes: ['memory.k'], lost: [] });
  expect(result.session.memory.k).toBe('after the restart');
  await second.close();
  expect((await loadInChild(dataDir, USER, WORKSPACE)).session.memory.k).toBe('after the restart');
});

test('a write that loses is reported in lost, not in changes', async () => {
  const dataDir = box.tempDir('mia-clock-');
  const store = await box.open(dataDir);
  await store.merge(USER, WORKSPACE, { memory: { k: 'current' } });
  const old = `${Date.now() - 60 * 1000}-0000-client`;
  const result = await store.merge(USER, WORKSPACE, { memory: { k: 'stale', fresh: 1 }, versions: { 'memory.k': old } }, { returnSession: true });
  expect({ changes: result.changes, lost: result.lost }).toEqual({ changes: ['memory.fresh'], lost: ['memory.k'] });
  expect(result.session.memory).toEqual({ k: 'current', fresh: 1 });
  const quiet = await store.merge(USER, WORKSPACE, { memory: { k: 'stale again' }, versions: { 'memory.k': old } }, { returnSession: false });
  expect(quiet).toEqual({ changes: [], lost: ['memory.k'] });
});
