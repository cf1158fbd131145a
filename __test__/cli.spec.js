'use strict';
// `mia-sessions` (bin/mia-sessions.js), run as a real child process on a real data dir and on a
// real redis-server: every command on both backends, errors as one line with a non-zero exit,
// progress as plain lines when stderr is not a terminal, and Ctrl-C (a real SIGINT) that leaves
// nothing half-written. The sessions are made and checked through the library itself.

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const { NarrativeSessionStore } = require('../index');
const { QUIET, sandbox, runNode } = require('./helpers/env');
const { richUpdate } = require('./helpers/fixtures');
const { startRedis } = require('./helpers/redis-server');

const CLI = path.resolve(__dirname, '..', 'bin', 'mia-sessions.js');
const DAY = 86_400_000;

jest.setTimeout(60000);

let redis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.dispose();
});

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

/** Runs the command with `args`; resolves with `{ code, stdout, stderr }`. */
async function cli(args, { env = {}, killAfterMs = 60000 } = {}) {
  const childEnv = { ...process.env, ...env };
  delete childEnv.MIA_SESSION_REDIS_URL;
  Object.assign(childEnv, env);
  return runNode([CLI, ...args], { env: childEnv, killAfterMs });
}

let prefixes = 0;

/**
 * A fresh, empty store on one backend: `{ args, open(), kind }`. `args` are the flags that name it
 * to the command, `open()` opens it through the library (closed at the end of the test).
 */
function freshStore(kind) {
  if (kind === 'file') {
    const dataDir = box.tempDir('mia-cli-');
    return { kind, dataDir, args: ['--data-dir', dataDir], open: (o = {}) => box.open(dataDir, o) };
  }
  prefixes += 1;
  const keyPrefix = `mia:cli${prefixes}-${process.pid}:`;
  return {
    kind,
    keyPrefix,
    url: redis.url(),
    args: ['--redis', redis.url(), '--key-prefix', keyPrefix],
    open: async (o = {}) =>
      box.track(await NarrativeSessionStore.open({ backend: 'redis', redisUrl: redis.url(), keyPrefix, ...QUIET, ...o })),
  };
}

/** The 64-hex stem of a session (docs/storage.md). */
function stemOf(userId, workspaceId) {
  const len = (n) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };
  const u = Buffer.from(userId);
  const w = Buffer.from(workspaceId);
  return crypto
    .createHash('sha256')
    .update(Buffer.concat([Buffer.from('mia-narrative-session/v1\0'), len(u.length), u, len(w.length), w]))
    .digest('hex');
}

/** A whole stored session as `export` writes it, last updated `daysAgo` days ago. */
function storedSession(userId, workspaceId, { daysAgo = 0, memory = {} } = {}) {
  const at = new Date(Date.now() - daysAgo * DAY).toISOString();
  return {
    id: stemOf(userId, workspaceId).slice(0, 32),
    userId,
    workspaceId,
    createdAt: at,
    updatedAt: at,
    universeFocus: 'story',
    activeCharts: [],
    storyBeats: [],
    storyPosition: { arc: 'a', beat: 1, phase: 'p' },
    memory,
    conversationHistory: [],
    config: {},
  };
}

/** Three sessions: alice in two workspaces (one rich), bob in one. */
async function threeSessions(store) {
  await store.merge('alice', '/home/alice/proj', richUpdate(), { durable: true });
  await store.merge('alice', '/home/alice/other', { memory: { note: 'other' } }, { durable: true });
  await store.merge('bob', '/home/bob/proj', { memory: { note: 'bob' } }, { durable: true });
}

test('--help lists every command, and every command has its own --help', async () => {
  const help = await cli(['--help']);
  expect(help.code).toBe(0);
  for (const command of ['list', 'show', 'export', 'import', 'migrate', 'gc', 'stats', 'doctor']) {
    expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    const own = await cli([command, '--help']);
    expect(own.code).toBe(0);
    expect(own.stdout).toContain(`Usage: mia-sessions ${command}`);
  }
});

test('no command prints the help on stderr, exit code 2', async () => {
  const run = await cli([]);
  expect(run).toMatchObject({ code: 2, stdout: '' });
  expect(run.stderr).toMatch(/^Usage: mia-sessions /);
});

test('bad usage is one line on stderr and exit code 2', async () => {
  const bad = [
    ['frobnicate'],
    ['list', '--older-than', 'soon'],
    ['list', '--sort', 'colour'],
    ['list', '--limit'],
    ['list', '--json=yes'],
    ['list', '--frobnicate'],
    ['show', 'alice'],
    ['export', 'alice', '/w', 'extra'],
    ['migrate', '--from', '/x'],
    ['list', '--data-dir', '/x', '--redis', 'redis://127.0.0.1:1'],
  ];
  for (const args of bad) {
    const run = await cli(args);
    expect(run.code).toBe(2);
    expect(run.stderr.split('\n')[0]).toMatch(/^mia-sessions: /);
  }
});

test('a data dir that is not there is an error, and is not created', async () => {
  const missing = path.join(box.tempDir(), 'typo');
  const run = await cli(['list', '--data-dir', missing]);
  expect(run.code).toBe(1);
  expect(run.stderr).toBe(`mia-sessions: no data dir at ${missing} (give the right one with --data-dir) (ENOENT)\n`);
  expect(fs.existsSync(missing)).toBe(false);
});

test('Redis that cannot be reached is one line with its code, and exit code 1', async () => {
  const run = await cli(['list'], { env: { MIA_SESSION_REDIS_URL: 'redis://127.0.0.1:1/0' } });
  expect(run.code).toBe(1);
  expect(run.stderr.trim().split('\n')).toHaveLength(1);
  expect(run.stderr).toMatch(/^mia-sessions: .*\(EUNAVAILABLE\)\n$/);
});

describe.each([['file'], ['redis']])('on the %s backend', (kind) => {
  test('list: a table, filters, sorting and --json', async () => {
    const where = freshStore(kind);
    const store = await where.open();
    await threeSessions(store);
    await store.importSession(storedSession('carol', '/old', { daysAgo: 40 }));
    await store.close();

    const table = await cli(['list', ...where.args]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^USER\s+WORKSPACE\s+SIZE\s+CHARTS\s+BEATS\s+ENTRIES\s+UPDATED\s+AGE$/);
    expect(lines.slice(1, 5).map((l) => l.split(/\s+/).slice(0, 2).join(' '))).toEqual([
      'alice /home/alice/other',
      'alice /home/alice/proj',
      'bob /home/bob/proj',
      'carol /old',
    ]);
    expect(lines[2]).toMatch(/^alice\s+\/home\/alice\/proj\s+[\d.]+ KB\s+1\s+1\s+4\s/);
    expect(lines.at(-1)).toBe('4 of 4 session(s)');

    const bob = JSON.parse((await cli(['list', ...where.args, '--user', 'bob', '--json'])).stdout);
    expect(bob.map((s) => [s.userId, s.workspaceId])).toEqual([['bob', '/home/bob/proj']]);
    const old = JSON.parse((await cli(['list', ...where.args, '--older-than', '30d', '--json'])).stdout);
    expect(old.map((s) => s.userId)).toEqual(['carol']);
    const bySize = JSON.parse((await cli(['list', ...where.args, '--sort', 'size', '--reverse', '--limit', '1', '--json'])).stdout);
    expect(bySize.map((s) => s.workspaceId)).toEqual(['/home/alice/proj']);
  });

  test('show: a readable summary, --json for the whole session, and no session created by asking', async () => {
    const where = freshStore(kind);
    const store = await where.open();
    await threeSessions(store);
    const { session } = await store.load('alice', '/home/alice/proj');
    await store.close();

    const shown = await cli(['show', ...where.args, 'alice', '/home/alice/proj/']);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('alice  /home/alice/proj');
    expect(shown.stdout).toContain('focus: ceremony   position: arc "release-2", beat 3, phase "rising-action"');
    expect(shown.stdout).toMatch(/█{5}░{5} 1\/2 {2}Ship session persistence {2}\[active\]/);
    expect(shown.stdout).toContain('Last beats (1 of 1)');
    expect(shown.stdout).toContain('First commit of the store');
    expect(shown.stdout).toMatch(/Last messages \(4 of 4\)[\s\S]*system\s+Reconnected\./);

    const json = await cli(['show', ...where.args, 'alice', '/home/alice/proj', '--json']);
    expect(JSON.parse(json.stdout)).toEqual(session);

    const missing = await cli(['show', ...where.args, 'mallory', '/nowhere']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('mia-sessions: no session of user "mallory" in workspace "/nowhere"\n');
    const reader = await where.open();
    expect((await reader.list()).map((s) => s.userId)).toEqual(['alice', 'alice', 'bob']);
  });

  test('export and import: JSON lines, merged by the rules, never overwriting, saying what changed', async () => {
    const where = freshStore(kind);
    const store = await where.open();
    await threeSessions(store);
    await store.close();
    const file = path.join(box.tempDir(), 'sessions.jsonl');

    const exported = await cli(['export', ...where.args, '--all', '-o', file]);
    expect(exported.code).toBe(0);
    expect(exported.stderr).toContain(`exported 3 session(s) to ${file}`);
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((s) => [s.userId, s.workspaceId])).toEqual([
      ['alice', '/home/alice/other'],
      ['alice', '/home/alice/proj'],
      ['bob', '/home/bob/proj'],
    ]);
    const one = await cli(['export', ...where.args, 'bob', '/home/bob/proj']);
    expect(JSON.parse(one.stdout)).toEqual(lines[2]);

    // Into a store that has its own, newer copy of bob's session: both kept.
    const other = freshStore(kind);
    const target = await other.open();
    await target.merge('bob', '/home/bob/proj', { memory: { mine: 'target' } }, { durable: true });
    await target.close();
    const imported = await cli(['import', ...other.args, file]);
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('alice  /home/alice/proj  created');
    expect(imported.stdout).toMatch(/bob {2}\/home\/bob\/proj {2}took \d+ value\(s\): .*memory\.note/);
    expect(imported.stderr).toMatch(/imported: 2 created, 1 merged \(\d+ value\(s\)\), 0 unchanged, 0 refused/);
    const reader = await other.open();
    expect((await reader.peek('bob', '/home/bob/proj')).session.memory).toEqual({ note: 'bob', mine: 'target' });
    expect((await reader.peek('alice', '/home/alice/proj')).session).toEqual(lines[1]);
    await reader.close();

    const again = await cli(['import', ...other.args, file, '--json']);
    expect(again.stdout.trim().split('\n').map((l) => JSON.parse(l).state)).toEqual(['unchanged', 'unchanged', 'unchanged']);

    // A line that is not a session is refused with its line number; the others still go in.
    const bad = path.join(box.tempDir(), 'bad.jsonl');
    fs.writeFileSync(bad, `${JSON.stringify(storedSession('dave', '/d'))}\n{"userId": 1}\n`);
    const refused = await cli(['import', ...other.args, bad]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^mia-sessions: line 2: .*\(EINVALID\)$/m);
    expect(refused.stdout).toContain('dave  /d  created');
  });

  test('gc: --dry-run lists what the sweep would remove; gc removes only that', async () => {
    const where = freshStore(kind);
    const store = await where.open();
    await store.importSession(storedSession('old', '/w', { daysAgo: 40 }));
    await store.importSession(storedSession('new', '/w', { daysAgo: 1 }));
    await store.close();
    // As a sweep sees a session last written 40 days ago: its files that old, or its Redis keys
    // without an expiry (Redis expires the others itself).
    if (kind === 'file') {
      const then = new Date(Date.now() - 40 * DAY);
      fs.utimesSync(path.join(where.dataDir, `${stemOf('old', '/w')}.json`), then, then);
    } else {
      for (const k of ['snap', 'ver', 'gen', 'mark', 'log']) await redis.command('PERSIST', `${where.keyPrefix}{${stemOf('old', '/w')}}:${k}`);
    }

    const dry = await cli(['gc', ...where.args, '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout).wouldRemove.map((s) => s.userId)).toEqual(['old']);
    const reader = await where.open();
    expect((await reader.list()).map((s) => s.userId)).toEqual(['new', 'old']);
    await reader.close();

    const run = await cli(['gc', ...where.args]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^old\s+\/w\s/m);
    expect(run.stdout).toMatch(/removed 1 session\(s\) not updated for 30 day\(s\)/);
    const after = await where.open();
    expect((await after.list()).map((s) => s.userId)).toEqual(['new']);
  });

  test('stats: totals, distributions, oldest and largest, and the copies kept aside', async () => {
    const where = freshStore(kind);
    const store = await where.open();
    await threeSessions(store);
    await store.importSession(storedSession('carol', '/old', { daysAgo: 40 }));
    await store.close();
    const stem = stemOf('bob', '/home/bob/proj');
    if (kind === 'file') fs.writeFileSync(path.join(where.dataDir, `${stem}.json.corrupt-1700000000000`), '{torn', { mode: 0o600 });
    else await redis.command('SET', `${where.keyPrefix}{${stem}}:snap:corrupt:1700000000000`, '{torn');

    const run = await cli(['stats', ...where.args, '--json']);
    expect(run.code).toBe(0);
    const stats = JSON.parse(run.stdout);
    expect(stats).toMatchObject({ sessions: 4, users: 3, workspaces: 4, charts: 1, beats: 1, entries: 4 });
    expect(stats.byAge.map((b) => b.sessions)).toEqual([3, 0, 0, 1]);
    expect(stats.bySize.reduce((n, b) => n + b.sessions, 0)).toBe(4);
    expect(stats.oldest[0].userId).toBe('carol');
    expect(stats.largest[0].workspaceId).toBe('/home/alice/proj');
    expect(stats.quarantined).toMatchObject({ copies: 1, bytes: 5 });
    const text = await cli(['stats', ...where.args]);
    expect(text.stdout).toContain('4 session(s) of 3 user(s) in 4 workspace(s)');
    expect(text.stdout).toContain('copies kept aside (damaged, moved there by a load): 1, 5 B');
  });
});

describe('doctor', () => {
  /** A session saved twice: its backup holds chart c1, its snapshot c1 and c2. */
  async function twoVersions(where) {
    let store = await where.open();
    await store.merge('alice', '/p', { activeCharts: [{ id: 'c1', title: 'First chart', actions: [] }] }, { durable: true });
    await store.close();
    store = await where.open();
    await store.merge('alice', '/p', { activeCharts: [{ id: 'c2', title: 'Second chart', actions: [] }] }, { durable: true });
    await store.close();
  }

  test('file: a snapshot with a flipped byte is found; --repair brings the session back from its backup and what only the snapshot held', async () => {
    const where = freshStore('file');
    await twoVersions(where);
    const snapshot = path.join(where.dataDir, `${stemOf('alice', '/p')}.json`);
    const text = fs.readFileSync(snapshot, 'utf8');
    // The damage is in c1's title, which the backup also holds; c2 is only in the snapshot.
    fs.writeFileSync(snapshot, text.replace('First chart', 'Firsu chart'));
    expect((await cli(['show', ...where.args, 'alice', '/p', '--json'])).code).toBe(0);

    const check = await cli(['doctor', ...where.args]);
    expect(check.code).toBe(3);
    expect(check.stdout).toContain('checked 1 session(s): 1 need(s) repair');
    expect(check.stdout).toContain('no longer match the checksum');
    expect(check.stdout).toMatch(/--repair would: move [0-9a-f]{64}\.json aside/);
    expect(check.stdout).toMatch(/--repair would: write a snapshot from the backup, what only the snapshot holds/);
    expect(fs.readFileSync(snapshot, 'utf8')).toContain('Firsu chart'); // read-only

    const repair = await cli(['doctor', ...where.args, '--repair']);
    expect(repair.code).toBe(0);
    expect(repair.stdout.indexOf('--repair would:')).toBeLessThan(repair.stdout.indexOf('repairing 1 session(s)'));
    expect(repair.stdout).toMatch(/moved [0-9a-f]{64}\.json aside as [0-9a-f]{64}\.json\.corrupt-\d+/);
    expect(repair.stdout).toContain('every damaged session repaired');
    const aside = fs.readdirSync(where.dataDir).filter((f) => f.includes('.json.corrupt-'));
    expect(aside).toHaveLength(1); // moved aside, never deleted
    expect(fs.readFileSync(path.join(where.dataDir, aside[0]), 'utf8')).toContain('Firsu chart');

    const reader = await where.open();
    const { session, recovered } = await reader.load('alice', '/p');
    expect(recovered).toBe(false);
    expect(session.activeCharts.map((c) => [c.id, c.title])).toEqual([
      ['c1', 'First chart'],
      ['c2', 'Second chart'],
    ]);
    await reader.close();
    const healthy = await cli(['doctor', ...where.args]);
    expect(healthy.code).toBe(0);
    expect(healthy.stdout).toContain('checked 1 session(s): no damage found');
  });

  test('file: a snapshot that no longer parses is restored from its backup and journal records', async () => {
    const where = freshStore('file');
    await twoVersions(where);
    // A later change still in the journal: written by a server that then died (no close, so
    // the journal was not folded into the snapshot).
    const died = await runNode([
      '-e',
      `require(${JSON.stringify(require.resolve('../index'))}).NarrativeSessionStore.open({ dataDir: process.argv[1], autosaveIntervalMs: 0, cleanupIntervalMs: 0 })
        .then((s) => s.merge('alice', '/p', { memory: { later: 'kept' } }, { durable: true }))
        .then(() => process.exit(0))`,
      where.dataDir,
    ]);
    expect(died).toMatchObject({ code: 0, stderr: '' });
    expect(fs.existsSync(path.join(where.dataDir, `${stemOf('alice', '/p')}.journal`))).toBe(true);
    const snapshot = path.join(where.dataDir, `${stemOf('alice', '/p')}.json`);
    fs.writeFileSync(snapshot, fs.readFileSync(snapshot, 'utf8').slice(0, 40));

    const repair = await cli(['doctor', ...where.args, '--repair', '--json']);
    expect(repair.code).toBe(0);
    const report = JSON.parse(repair.stdout);
    expect(report.damaged[0].problems[0]).toMatch(/is not a session/);
    expect(report.repairs[0].actions.at(-1)).toBe('wrote a snapshot from the backup, 1 journal record(s)');
    const reader = await where.open();
    const { session } = await reader.load('alice', '/p');
    expect(session.memory).toEqual({ later: 'kept' });
    expect(session.activeCharts.map((c) => c.id)).toEqual(['c1']);
  });

  test('redis: a damaged snapshot is moved aside and the session brought back from the copy kept aside', async () => {
    const where = freshStore('redis');
    const store = await where.open();
    await store.merge('alice', '/p', richUpdate(), { durable: true });
    const before = (await store.peek('alice', '/p')).session;
    await store.close();
    const base = `${where.keyPrefix}{${stemOf('alice', '/p')}}`;
    await redis.command('SET', `${base}:snap:corrupt:1700000000000`, JSON.stringify(before));
    await redis.command('SET', `${base}:snap`, '{"id": torn');

    const check = await cli(['doctor', ...where.args]);
    expect(check.code).toBe(3);
    expect(check.stdout).toContain(`${base}:snap is not a session`);
    expect(check.stdout).toContain(`${base}:snap:corrupt:1700000000000, kept aside, holds what the session lacks`);

    const repair = await cli(['doctor', ...where.args, '--repair']);
    expect(repair.code).toBe(0);
    expect(repair.stdout).toMatch(new RegExp(`moved ${base.replace(/[{}]/g, '\\$&')}:snap \\(.*\\): kept at ${base.replace(/[{}]/g, '\\$&')}:snap:corrupt:\\d+`));
    const reader = await where.open();
    expect((await reader.load('alice', '/p')).session).toEqual(before);
    expect(await redis.text('GET', `${base}:snap:corrupt:1700000000000`)).toBe(JSON.stringify(before));
  });
});

/** Spawns the command; resolves once stderr shows `pattern`, with the child and what it printed. */
function spawnCli(args) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    output: () => ({ stdout, stderr }),
    waitFor(pattern) {
      return new Promise((resolve, reject) => {
        const look = () => {
          const match = pattern.exec(stderr);
          if (match) {
            child.stderr.off('data', look);
            resolve(match);
          }
        };
        child.stderr.on('data', look);
        child.once('close', () => reject(new Error(`exited before ${pattern}: ${stderr}`)));
        look();
      });
    },
  };
}

/** `n` sessions written as a server leaves them, some with charts, beats and messages. */
function writeSessions(dataDir, n) {
  fs.chmodSync(dataDir, 0o700);
  for (let i = 0; i < n; i++) {
    const s = storedSession(`user${i % 97}`, `/work/p${i}`, { daysAgo: i % 20, memory: { i, note: `session ${i}` } });
    if (i % 3 === 0) {
      s.activeCharts.push({ id: `c${i}`, title: `Chart ${i}`, desiredOutcome: 'd', currentReality: 'r', status: 'active', createdAt: s.createdAt, updatedAt: s.updatedAt, actions: [{ id: 'a1', title: 'step', completed: i % 2 === 0 }] });
      s.storyBeats.push({ id: `b${i}`, description: `beat ${i}`, type: 'commit', createdAt: s.createdAt });
      s.conversationHistory.push({ id: `e${i}`, role: 'user', content: `hello ${i}`, timestamp: s.createdAt });
    }
    fs.writeFileSync(path.join(dataDir, `${stemOf(s.userId, s.workspaceId)}.json`), JSON.stringify(s), { mode: 0o600 });
  }
}

/** Every session of a store, by user and workspace, as its SHA-256. */
async function digests(store) {
  const out = new Map();
  for (const s of await store.list()) {
    const { session } = await store.peek(s.userId, s.workspaceId);
    out.set(`${s.userId} ${s.workspaceId}`, crypto.createHash('sha256').update(JSON.stringify(session)).digest('hex'));
  }
  return out;
}

test('migrate: 10,000 sessions, files to Redis (interrupted by Ctrl-C once, then resumed) and back, nothing lost', async () => {
  const N = 10_000;
  const source = freshStore('file');
  writeSessions(source.dataDir, N);
  const redisSide = freshStore('redis');
  const back = freshStore('file');
  const state = path.join(box.tempDir(), 'migrate.state');
  const sourceFiles = () => fs.readdirSync(source.dataDir).filter((f) => !f.startsWith('.')).sort();
  const filesBefore = sourceFiles().map((f) => [f, fs.readFileSync(path.join(source.dataDir, f), 'utf8')]);
  const toRedis = ['migrate', '--from', source.dataDir, '--to', redisSide.url, '--key-prefix', redisSide.keyPrefix, '--state', state];

  const first = spawnCli(toRedis);
  const [, copied] = await first.waitFor(/copy: ([1-9]\d*)\/10000/);
  first.child.kill('SIGINT');
  const stopped = await first.exited;
  expect(stopped.code).toBe(130);
  const { stderr } = first.output();
  expect(stderr).toMatch(new RegExp(`migrate interrupted: \\d+ of ${N} session\\(s\\) copied; run the same command again to resume`));
  const done = Number(/interrupted: (\d+) of/.exec(stderr)[1]);
  expect(done).toBeGreaterThanOrEqual(Number(copied));
  expect(done).toBeLessThan(N);
  expect(fs.readFileSync(state, 'utf8').trim().split('\n')).toHaveLength(done + 1);

  const resumed = await cli(toRedis, { killAfterMs: 240000 });
  expect(resumed.code).toBe(0);
  expect(resumed.stderr).toContain(`resuming: ${done} of ${N} session(s) were copied before`);
  expect(resumed.stderr).toMatch(new RegExp(`migrated ${N} session\\(s\\) .*: counts match, ${N} identical by checksum`));
  expect(resumed.stderr).toMatch(/^copy: \d+\/\d+ \(\d+\/s\)$/m); // plain progress lines: stderr is not a terminal
  expect(fs.existsSync(state)).toBe(false);

  const fromRedis = await cli(['migrate', '--from', redisSide.url, '--key-prefix', redisSide.keyPrefix, '--to', back.dataDir, '--state', state], { killAfterMs: 240000 });
  expect(fromRedis.code).toBe(0);
  expect(fromRedis.stderr).toMatch(new RegExp(`counts match, ${N} identical by checksum`));

  // The source untouched, byte for byte; the copy back equal to it, session for session.
  expect(sourceFiles().map((f) => [f, fs.readFileSync(path.join(source.dataDir, f), 'utf8')])).toEqual(filesBefore);
  const original = await digests(await source.open());
  const returned = await digests(await back.open());
  expect(original.size).toBe(N);
  expect(returned).toEqual(original);
}, 600000);
