'use strict';
// Two server processes on one store, both merging durably into the same session, killed (SIGKILL)
// one after the other at random points; a third opens the store and must find every write either
// acknowledged. Both start together, as two servers started by one command do, so they open the data
// dir at the same moment: that is when two processes once chose different kinds of lock and lost
// acknowledged writes (about one round in seven). The number of rounds is MIA_KILL_ROUNDS (default
// 40 for files, 10 for Redis); a run outside CI uses more, e.g. MIA_KILL_ROUNDS=200.

const path = require('path');
const { spawn } = require('child_process');

const { sandbox } = require('./helpers/env');
const { startRedis } = require('./helpers/redis-server');

const WRITER = path.join(__dirname, 'helpers', 'kill-writer.js');
const ROUNDS = Number(process.env.MIA_KILL_ROUNDS || 0);

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

const between = (low, high) => low + Math.floor(Math.random() * (high - low));

/** Starts a writer; resolves once it has loaded the addon and waits for SIGUSR1. */
function startWriter(options, tag) {
  const child = spawn(process.execPath, [WRITER, JSON.stringify(options), tag], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    const check = () => stdout.startsWith('ready\n') && resolve();
    child.stdout.on('data', check);
    child.on('exit', () => reject(new Error(`writer ${tag} exited before it was ready: ${stderr}`)));
  });
  const firstAck = new Promise((resolve) => {
    const check = () => /^ready\n\d+\n/.test(stdout) && resolve();
    child.stdout.on('data', check);
    child.on('exit', resolve);
  });
  return {
    tag,
    child,
    ready,
    firstAck,
    exited,
    stderr: () => stderr,
    /** The numbers this writer printed: its acknowledged writes. */
    acked: () => stdout.split('\n').filter((line) => /^\d+$/.test(line)).map(Number),
  };
}

/** Runs one round; returns the acknowledged writes the third store does not have. */
async function round(options) {
  const writers = [startWriter(options, 'A'), startWriter(options, 'B')];
  await Promise.all(writers.map((w) => w.ready));
  for (const w of writers) w.child.kill('SIGUSR1');
  const [a, b] = writers;
  await a.firstAck;
  await new Promise((r) => setTimeout(r, between(30, 300)));
  a.child.kill('SIGKILL');
  await a.exited;
  await new Promise((r) => setTimeout(r, between(20, 150)));
  b.child.kill('SIGKILL');
  await b.exited;
  for (const w of writers) expect(w.stderr()).toBe('');

  const third = await box.open(options.dataDir, { ...options, autosaveIntervalMs: 0 });
  const { session } = await third.load('u', 'w');
  await third.close();
  const have = new Set(session.conversationHistory.map((e) => e.id));
  const missing = [];
  let acked = 0;
  for (const w of writers) {
    const numbers = w.acked();
    acked += numbers.length;
    for (const n of numbers) if (!have.has(`${w.tag}-${n}`)) missing.push(`${w.tag}-${n}`);
    // The last acknowledged value of each writer's own memory key is there, or a later one.
    const last = numbers.length > 0 ? Math.max(...numbers) : undefined;
    if (last !== undefined && !(session.memory[`last${w.tag}`] >= last)) {
      missing.push(`memory.last${w.tag} = ${session.memory[`last${w.tag}`]}, acknowledged ${last}`);
    }
  }
  return { missing, acked };
}

async function rounds(count, optionsFor) {
  const losses = [];
  let acked = 0;
  for (let i = 0; i < count; i++) {
    const result = await round(await optionsFor(i));
    acked += result.acked;
    if (result.missing.length > 0) losses.push(`round ${i}: ${result.missing.length} lost (${result.missing.slice(0, 4).join(', ')}…)`);
  }
  process.stdout.write(`${count} two-writer kill rounds, ${acked} acknowledged writes checked, ${losses.length} rounds lost some\n`);
  expect(losses).toEqual([]);
}

test('files: every acknowledged durable write survives two writers killed in turn', async () => {
  const count = ROUNDS || 40;
  await rounds(count, () => ({
    dataDir: path.join(box.tempDir(), 'sessions'),
    autosaveIntervalMs: 100,
    cleanupIntervalMs: 0,
    unloadAfterMs: 0,
  }));
}, 600000);

describe('redis', () => {
  let redis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });

  test('every acknowledged durable write survives two instances killed in turn', async () => {
    const count = ROUNDS || 10;
    await rounds(count, (i) => ({
      backend: 'redis',
      redisUrl: redis.url(),
      keyPrefix: `kill${process.pid}r${i}:`,
      dataDir: path.join(box.tempDir(), 'unused'),
      autosaveIntervalMs: 100,
      cleanupIntervalMs: 0,
      unloadAfterMs: 0,
    }));
  }, 600000);
});
