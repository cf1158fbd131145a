'use strict';
// list() reads its summaries from an index kept in the data dir (sessions.index). A process that
// writes and lists is killed (SIGKILL) at random points, several times, while the index is being
// rewritten: whatever it leaves, the next list says what the sessions hold, every acknowledged
// story beat counted, and the same as a list with no index at all.

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const { sandbox } = require('./helpers/env');

const WRITER = path.join(__dirname, 'helpers', 'list-writer.js');
const SESSIONS = 40;
const ROUNDS = 8;

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

const between = (low, high) => low + Math.floor(Math.random() * (high - low));

/** Runs the writer until it has acknowledged a few merges, kills it, returns what it acknowledged. */
async function killedWriter(dataDir, tag) {
  const child = spawn(process.execPath, [WRITER, dataDir, String(SESSIONS), tag], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const acks = () => stdout.split('\n').filter((line) => / /.test(line));
  const wanted = between(5, 60);
  await new Promise((resolve) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (acks().length >= wanted) resolve();
    });
    child.on('exit', resolve);
  });
  child.kill('SIGKILL');
  await exited;
  expect(stderr).toBe('');
  return acks().map((line) => line.split(' '));
}

test('a writer killed while it rewrites the index: the next list counts every acknowledged beat, as a list without the index does', async () => {
  const dataDir = box.tempDir('mia-list-index-');
  const seeding = await box.open(dataDir);
  for (let i = 0; i < SESSIONS; i++) {
    // Half the sessions large enough that their journals stay smaller than their snapshots (never
    // compacted: the index must notice the journal), half small (compacted often: a new snapshot).
    const memory = i % 2 === 0 ? { i, text: 'm'.repeat(20000) } : { i };
    await seeding.merge(`user-${i}`, '/w', { memory }, { durable: true, returnSession: false });
  }
  await seeding.close();
  // The index keeps only files that changed over two seconds ago (their change time cannot be set
  // back): let the seeded sessions settle, so that the first list caches them.
  await new Promise((resolve) => setTimeout(resolve, 2200));

  const acked = new Map(); // user → acknowledged beat ids
  for (let round = 0; round < ROUNDS; round++) {
    for (const [userId, beat] of await killedWriter(dataDir, `r${round}`)) {
      if (!acked.has(userId)) acked.set(userId, new Set());
      acked.get(userId).add(beat);
    }
  }
  expect(acked.size).toBeGreaterThan(0);

  const listOnce = async () => {
    const store = await box.open(dataDir);
    const list = await store.list();
    await store.close();
    return list;
  };
  const withIndex = await listOnce();
  expect(withIndex).toHaveLength(SESSIONS);
  for (const summary of withIndex) {
    // A beat merged but killed before its ack may be there too: at least every acknowledged one.
    expect(summary.beats).toBeGreaterThanOrEqual(acked.get(summary.userId)?.size ?? 0);
  }
  // The same as a list that reads every session from its files.
  fs.rmSync(path.join(dataDir, 'sessions.index'), { force: true });
  expect(await listOnce()).toEqual(withIndex);

  const store = await box.open(dataDir);
  for (const [userId, beats] of acked) {
    const { session } = await store.load(userId, '/w');
    const have = new Set(session.storyBeats.map((b) => b.id));
    expect([...beats].filter((b) => !have.has(b))).toEqual([]);
    expect(withIndex.find((s) => s.userId === userId).beats).toBe(session.storyBeats.length);
  }
  await store.close();
}, 120000);
