'use strict';
// The Redis backend on a real Redis Cluster: 3 primaries with a replica each, started from
// redis-server processes by helpers/redis-cluster.js. Store instances are separate processes
// (helpers/cluster-worker.js), each merging durably into the same sessions on every shard:
// - they converge, and each hears the other's writes (sharded pub/sub, Redis 7);
// - a reshard moves sessions between primaries, key by key, while they merge;
// - a primary is killed while they merge and its replica is promoted, in each mode: the count of
//   acknowledged writes the cluster lost is reported (zero with redisWaitReplicas), then what the
//   surviving instances write again.
//
// Addon errors come from another realm than Jest's, so they are matched on `code`, never instanceof.

const path = require('path');
const { fork } = require('child_process');

const { NarrativeSessionStore } = require('../index');
const { redisCommand } = require('./helpers/redis-server');
const { startCluster } = require('./helpers/redis-cluster');
// The 64-hex stem of a session, as docs/storage.md defines it.
const { sessionFileStem: stemOf } = require('../bench/generate');

const WORKER = path.join(__dirname, 'helpers', 'cluster-worker.js');
const WORKSPACE = '/home/dev/proj';

jest.setTimeout(180000);

/** `perPrimary` sessions on each primary: [{ userId, workspaceId, stem, slot, primary }]. */
async function sessionsOnEveryPrimary(cluster, prefix, perPrimary) {
  const primaries = await cluster.primaryPorts();
  const chosen = [];
  for (let n = 0; chosen.length < primaries.length * perPrimary; n++) {
    const userId = `dev${n}`;
    const stem = stemOf(userId, WORKSPACE);
    const slot = await cluster.keyslot(`${prefix}{${stem}}:snap`);
    const primary = await cluster.primaryOf(slot);
    if (chosen.filter((s) => s.primary === primary).length < perPrimary) {
      chosen.push({ userId, workspaceId: WORKSPACE, stem, slot, primary });
    }
  }
  return chosen;
}

/** A store instance in its own process (helpers/cluster-worker.js) and what it reported. */
function startWorker(options) {
  const child = fork(WORKER, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const worker = {
    child,
    tag: options.tag,
    messages: [],
    acks: [],
    refused: [],
    waiters: [],
    exited: null,
    /** Resolves once `check()` holds (checked at every message), rejects if the worker exits. */
    until(what, check, timeoutMs = 60000) {
      if (check()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${options.tag}: timed out waiting until ${what}`)), timeoutMs);
        worker.waiters.push({ check, resolve, reject, timer });
      });
    },
    /** The next message of `type`, from now on. */
    next(type, timeoutMs) {
      const seen = worker.messages.length;
      let found;
      return worker
        .until(`a ${type} message`, () => (found = worker.messages.slice(seen).find((m) => m.type === type)), timeoutMs)
        .then(() => found);
    },
    send: (message) => child.send(message),
    freeze: () => process.kill(child.pid, 'SIGSTOP'),
    thaw: () => process.kill(child.pid, 'SIGCONT'),
  };
  const settle = () => {
    for (const w of [...worker.waiters]) {
      if (worker.exited !== null) {
        clearTimeout(w.timer);
        w.reject(new Error(`worker ${options.tag} exited with ${worker.exited}`));
      } else if (w.check()) {
        clearTimeout(w.timer);
        w.resolve();
      } else continue;
      worker.waiters.splice(worker.waiters.indexOf(w), 1);
    }
  };
  child.on('message', (message) => {
    worker.messages.push(message);
    if (message.type === 'ack') worker.acks.push(message);
    if (message.type === 'refused') worker.refused.push(message);
    settle();
  });
  child.on('exit', (code, signal) => {
    worker.exited = code === null ? signal : code;
    settle();
  });
  return worker;
}

async function startWorkers(tags, options) {
  const workers = tags.map((tag) => startWorker({ ...options, tag }));
  await Promise.all(workers.map((w) => w.next('ready')));
  for (const w of workers) w.send('go');
  return workers;
}

async function stopWorkers(workers) {
  const stopped = workers.map((w) => w.next('stopped'));
  for (const w of workers) w.send('stop');
  return Promise.all(stopped);
}

async function closeWorkers(workers) {
  await Promise.all(
    workers.map(async (w) => {
      if (w.exited !== null) return;
      const exited = new Promise((resolve) => w.child.once('exit', resolve));
      w.send('close');
      await exited;
    }),
  );
}

/** Each of two workers heard every write the other acknowledged, as an external change. */
async function expectEachHeardTheOther([a, b]) {
  const heardA = a.next('heard');
  const heardB = b.next('heard');
  a.send({ type: 'expect', ids: b.acks.map((m) => m.id) });
  b.send({ type: 'expect', ids: a.acks.map((m) => m.id) });
  expect((await heardA).missing).toEqual([]);
  expect((await heardB).missing).toEqual([]);
}

/** The acknowledged ids of `workers` per session index. */
function ackedBySession(workers) {
  const acked = new Map();
  for (const w of workers) {
    for (const { session, id } of w.acks) {
      if (!acked.has(session)) acked.set(session, []);
      acked.get(session).push(id);
    }
  }
  return acked;
}

/** The entry ids each session holds, as a new store instance loads them. */
async function storedIds(seeds, prefix, sessions) {
  const reader = await NarrativeSessionStore.open({ backend: 'redis', redisUrl: seeds, keyPrefix: prefix, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  try {
    const ids = [];
    for (const s of sessions) {
      const { session } = await reader.load(s.userId, s.workspaceId);
      ids.push(new Set(session.conversationHistory.map((e) => e.id)));
    }
    return ids;
  } finally {
    await reader.close();
  }
}

/** The acknowledged writes the stored sessions lack: [{ session, id }]. */
function lostWrites(acked, stored) {
  const lost = [];
  for (const [session, ids] of acked) for (const id of ids) if (!stored[session].has(id)) lost.push({ session, id });
  return lost;
}

let prefixes = 0;
const freshPrefix = (what) => `mia:ns:${what}${++prefixes}-${process.pid}:`;

describe('a 3-primary cluster with a replica each', () => {
  let cluster;
  beforeAll(async () => {
    cluster = await startCluster({ primaries: 3, replicas: 1 });
  });
  afterAll(async () => {
    if (cluster) await cluster.stop();
  });

  test('two stores in two processes merge into the same sessions on every shard: nothing acknowledged is lost, each hears the other, list() finds them all', async () => {
    const prefix = freshPrefix('two');
    const sessions = await sessionsOnEveryPrimary(cluster, prefix, 2);
    const options = { redisUrl: cluster.urls().slice(0, 1), keyPrefix: prefix, sessions: sessions.map((s) => [s.userId, s.workspaceId]) };
    const workers = await startWorkers(['a', 'b'], options);
    try {
      await Promise.all(workers.map((w) => w.until('40 acknowledged merges', () => w.acks.length >= 40)));
      await stopWorkers(workers);
      // Each heard every write of the other as an external change, whatever shard it went to.
      await expectEachHeardTheOther(workers);

      const acked = ackedBySession(workers);
      expect(acked.size).toBe(sessions.length);
      const stored = await storedIds(cluster.urls().slice(-1), prefix, sessions);
      expect(lostWrites(acked, stored)).toEqual([]);

      const reader = await NarrativeSessionStore.open({ backend: 'redis', redisUrl: cluster.urls(), keyPrefix: prefix, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
      const listed = (await reader.list()).map((s) => s.id).sort();
      await reader.close();
      expect(listed).toEqual(sessions.map((s) => s.stem.slice(0, 32)).sort());
      for (const port of await cluster.primaryPorts()) {
        expect(await redisCommand(port, 'DBSIZE')).toBeGreaterThan(0);
      }
    } finally {
      await closeWorkers(workers);
    }
  });

  test('a reshard during merges: sessions move between primaries key by key, the writers follow them, nothing acknowledged is lost and events keep flowing', async () => {
    const prefix = freshPrefix('reshard');
    const sessions = await sessionsOnEveryPrimary(cluster, prefix, 1);
    const options = { redisUrl: cluster.urls().slice(0, 2), keyPrefix: prefix, sessions: sessions.map((s) => [s.userId, s.workspaceId]) };
    const workers = await startWorkers(['a', 'b'], options);
    try {
      await Promise.all(workers.map((w) => w.until('20 acknowledged merges', () => w.acks.length >= 20)));
      const ports = sessions.map((s) => s.primary);
      // Two sessions move: to the next primary, one key at a time, 20 ms apart.
      const moves = [
        { session: 0, from: ports[0], to: ports[1] },
        { session: 1, from: ports[1], to: ports[2] },
      ];
      const redirectsBefore = {};
      for (const { from } of moves) {
        redirectsBefore[from] = {};
        for (const code of ['MOVED', 'ASK', 'TRYAGAIN']) redirectsBefore[from][code] = await cluster.errorCount(from, code);
      }
      for (const move of moves) {
        move.keys = await cluster.moveSlot(sessions[move.session].slot, move.from, move.to, { pauseMs: 20 });
        move.acksAtEnd = workers.map((w) => w.acks.length);
      }
      // Both keep writing to the moved sessions after the move.
      await Promise.all(
        workers.map((w, i) =>
          w.until('10 more merges into each moved session', () =>
            moves.every((m) => w.acks.slice(m.acksAtEnd[i]).filter((a) => a.session === m.session).length >= 10),
          ),
        ),
      );
      await stopWorkers(workers);
      await expectEachHeardTheOther(workers);

      const stored = await storedIds(cluster.urls(), prefix, sessions);
      expect(lostWrites(ackedBySession(workers), stored)).toEqual([]);
      for (const move of moves) {
        const snap = `${prefix}{${sessions[move.session].stem}}:snap`;
        expect(move.keys).toBeGreaterThanOrEqual(3);
        expect(await redisCommand(move.to, 'EXISTS', snap)).toBe(1);
        expect(await redisCommand(move.from, 'CLUSTER', 'COUNTKEYSINSLOT', sessions[move.session].slot)).toBe(0);
      }
      const reader = await NarrativeSessionStore.open({ backend: 'redis', redisUrl: cluster.urls(), keyPrefix: prefix, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
      expect((await reader.list()).length).toBe(sessions.length);
      await reader.close();
      const redirects = {};
      for (const { from } of moves) {
        for (const code of ['MOVED', 'ASK', 'TRYAGAIN']) {
          redirects[code] = (redirects[code] || 0) + (await cluster.errorCount(from, code)) - redirectsBefore[from][code];
        }
      }
      console.log(`reshard during merges: ${moves.map((m) => m.keys).join(' + ')} keys moved; redirects answered by the old owners: ${JSON.stringify(redirects)}; ${workers.map((w) => w.acks.length).join(' + ')} merges acknowledged, none lost`);
      // The writers' next call to a moved session went to its old owner and was redirected.
      expect(redirects.MOVED).toBeGreaterThan(0);
    } finally {
      await closeWorkers(workers);
    }
  });

  test('bad cluster options are refused with EINVALID before anything connects', async () => {
    const base = { backend: 'redis', keyPrefix: freshPrefix('bad') };
    const cases = [
      { redisUrl: [] },
      { redisUrl: [cluster.urls()[0], 7] },
      { redisUrl: cluster.urls(), redisCluster: false },
      { redisUrl: cluster.urls()[0].replace(/\/0$/, '/1'), redisCluster: true },
      { redisUrl: cluster.urls()[0], redisWaitReplicas: 1.5 },
      { redisUrl: cluster.urls()[0], redisWaitReplicas: -1 },
      { redisUrl: cluster.urls()[0], redisWaitReplicas: 1, redisWaitTimeoutMs: 0 },
      { redisUrl: cluster.urls()[0], redisWaitReplicas: 1, redisWaitTimeoutMs: 60001 },
    ];
    for (const options of cases) {
      await expect(NarrativeSessionStore.open({ ...base, ...options })).rejects.toMatchObject({ code: 'EINVALID' });
    }
    await expect(NarrativeSessionStore.open({ redisCluster: true })).rejects.toMatchObject({ code: 'EINVALID' });
    // One seed with redisCluster: true is a cluster (list() scans every primary).
    const store = await NarrativeSessionStore.open({ ...base, redisUrl: cluster.urls()[0], redisCluster: true, redisWaitReplicas: 1 });
    await store.merge('u', WORKSPACE, { memory: { k: 1 } }, { durable: true });
    expect((await store.list()).length).toBe(1);
    await store.close();
  });
});

// A primary killed while two instances merge, its replica promoted by the cluster itself. Phase 1
// kills it outright; phase 2 first stalls the new primary's replica (SIGSTOP, and the primary drops
// the link to it), as a replica that falls behind, then kills the primary. Each time the instances
// are frozen (SIGSTOP) before the kill, so that what the cluster kept is counted before they can
// write anything again; then they are thawed.
describe.each([
  ['plain (acknowledged once the primary has it)', {}],
  ['redisWaitReplicas: 1 (acknowledged once a replica has it too)', { redisWaitReplicas: 1, redisWaitTimeoutMs: 250 }],
])('failover during merges, %s', (mode, modeOptions) => {
  const waiting = modeOptions.redisWaitReplicas === 1;
  let cluster;
  let workers = [];
  afterEach(async () => {
    for (const w of workers) if (w.exited === null) w.thaw();
    await closeWorkers(workers);
    if (cluster) await cluster.stop();
  });

  test('acknowledged writes lost at each failover are counted; the instances follow the new primary and write again what they hold', async () => {
    cluster = await startCluster({ primaries: 3, replicas: 1 });
    const prefix = freshPrefix('failover');
    const sessions = await sessionsOnEveryPrimary(cluster, prefix, 2);
    const seeds = cluster.urls();
    workers = await startWorkers(['a', 'b'], { redisUrl: seeds, keyPrefix: prefix, sessions: sessions.map((s) => [s.userId, s.workspaceId]), ...modeOptions });
    const report = [];
    let victim = sessions[0].primary;
    // The sessions of the shard that fails over (twice): the promoted replica takes their slots.
    const doomed = new Set(sessions.flatMap((s, i) => (s.primary === victim ? [i] : [])));
    const victimAcks = (w, from = 0) => w.acks.slice(from).filter((a) => doomed.has(a.session));
    for (const phase of ['killed outright', 'killed after its replica stalled']) {
      const replica = await cluster.replicaOf(victim);
      await Promise.all(workers.map((w) => w.until('10 merges into the doomed shard', () => victimAcks(w).length >= 10)));
      const marks = workers.map((w) => ({ acks: w.acks.length, refused: w.refused.length }));
      if (phase === 'killed after its replica stalled') {
        await cluster.pause(replica);
        await redisCommand(victim, 'CLIENT', 'KILL', 'TYPE', 'replica');
        if (waiting) {
          // No write to that shard is acknowledged now: each instance's next one is refused after
          // 250 ms (and then saved again and again, unacknowledged, until a replica has it).
          await Promise.all(workers.map((w, i) => w.until('a refusal on the stalled shard', () => w.refused.slice(marks[i].refused).some((r) => doomed.has(r.session)))));
        } else {
          await Promise.all(workers.map((w, i) => w.until('10 merges acknowledged by the stalled shard', () => victimAcks(w, marks[i].acks).length >= 10)));
        }
      }
      for (const w of workers) w.freeze();
      const acked = ackedBySession(workers);
      const ackedCount = workers.reduce((n, w) => n + w.acks.length, 0);
      await cluster.kill(victim);
      if (phase === 'killed after its replica stalled') await cluster.resume(replica);
      const failedAt = Date.now();
      await cluster.waitPromoted(replica);
      const promotedMs = Date.now() - failedAt;
      const lost = lostWrites(acked, await storedIds([`redis://127.0.0.1:${replica}/0`], prefix, sessions));
      report.push(`${phase}: ${lost.length} of ${ackedCount} acknowledged writes lost (replica promoted after ${promotedMs} ms)`);
      if (waiting) expect(lost).toEqual([]);
      if (phase === 'killed after its replica stalled' && !waiting) {
        // Exactly writes to the dead primary's sessions made while its replica was stalled.
        expect(lost.length).toBeGreaterThanOrEqual(10);
        expect(lost.every(({ session }) => doomed.has(session))).toBe(true);
      }
      for (const w of workers) w.thaw();
      // The old primary comes back empty and rejoins as the new one's replica; writes the
      // instances hold but that were not acknowledged (refused, or lost with the primary) are
      // written again, and the merges go on against the new primary.
      await cluster.restart(victim);
      await cluster.waitHealthy();
      const failed = victim;
      victim = replica;
      const freshMarks = workers.map((w) => w.acks.length);
      await Promise.all(workers.map((w, i) => w.until('merges acknowledged by the new primary', () => victimAcks(w, freshMarks[i]).length >= 5)));
      expect(await cluster.isPrimary(failed)).toBe(false);
    }
    await stopWorkers(workers);
    // The instances held every write they made: what a failover lost, they wrote again (when they
    // re-read the session after the failover, and at the latest when they close, which writes
    // each session whole).
    await closeWorkers(workers);
    const everything = ackedBySession(workers);
    expect(lostWrites(everything, await storedIds(seeds, prefix, sessions))).toEqual([]);
    const refusals = workers.reduce((n, w) => n + w.refused.length, 0);
    console.log(`failover during merges, ${mode}:\n  ${report.join('\n  ')}\n  ${refusals} merges refused with EUNAVAILABLE meanwhile (kept, then written); in the end all ${workers.reduce((n, w) => n + w.acks.length, 0)} acknowledged writes are stored`);
  });
});
