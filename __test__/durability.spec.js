'use strict';
// What is on disk: several server processes on one data dir, corrupt files, autosave.
//
// A session on disk is a snapshot (`<stem>.json`) plus a journal (`<stem>.journal`) of updates saved
// since; a saved change may be in either. So "on disk" is checked as a user would see it: a fresh
// store (here, or in another process: `loadInChild`) finds it. A snapshot (and so a new backup) is
// written on creation, on recovery, when the journal would outgrow the snapshot, and on close().

const fs = require('fs');
const path = require('path');
const { fork } = require('child_process');

const {
  sandbox,
  filesIn,
  storedSession,
  journalOf,
  readJournal,
  fileStamp,
  loadInChild,
  runNode,
  pollUntil,
  sleep,
  nextMillisecond,
} = require('./helpers/env');

const WORKER = path.join(__dirname, 'helpers', 'merge-worker.js');
const ACK_WRITER = path.join(__dirname, 'helpers', 'ack-writer.js');

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

function newDataDir() {
  return path.join(box.tempDir(), 'sessions');
}

/** Forks a merge worker and resolves once it has loaded the session and waits for 'go'. */
function startWorker(dataDir, tag, count, userId, workspaceId) {
  const child = fork(WORKER, [dataDir, tag, String(count), userId, workspaceId], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const messages = [];
  child.on('message', (m) => messages.push(m));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr, messages })));
  const ready = new Promise((resolve, reject) => {
    child.on('message', (m) => m === 'ready' && resolve());
    child.on('exit', () => reject(new Error(`worker ${tag} exited before it was ready: ${stderr}`)));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
  exited.then(() => clearTimeout(timer));
  return { child, ready, exited };
}

describe('two server processes on one data dir', () => {
  test('each merging and saving concurrently, every update of both ends up on disk', async () => {
    const dataDir = newDataDir();
    const perWorker = 20;
    const workers = ['alpha', 'beta'].map((tag) => startWorker(dataDir, tag, perWorker, 'alice', '/home/alice/proj'));
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.child.send('go');
    const results = await Promise.all(workers.map((w) => w.exited));
    for (const r of results) {
      expect(r.stderr).toBe('');
      expect(r).toMatchObject({ code: 0, signal: null });
      expect(r.messages).toContain('done');
    }

    const reader = await box.open(dataDir);
    const { session, created } = await reader.load('alice', '/home/alice/proj');
    expect(created).toBe(false);
    const ids = session.conversationHistory.map((e) => e.id);
    expect(ids).toHaveLength(2 * perWorker);
    for (const tag of ['alpha', 'beta']) {
      for (let i = 0; i < perWorker; i++) expect(ids).toContain(`${tag}-${i}`);
    }
    expect(session.memory).toEqual({ 'from-alpha': { written: perWorker }, 'from-beta': { written: perWorker } });
    // And nothing was left behind half-written.
    expect(filesIn(dataDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  test('a partial chart update from a server whose copy predates the chart keeps the chart', async () => {
    // Server A creates a chart and saves. Server B loaded the session before that, and a client on B
    // completes one action of the chart (the update carries only ids and `completed`).
    const dataDir = newDataDir();
    const serverA = await box.open(dataDir);
    const serverB = await box.open(dataDir);
    await serverB.load('alice', '/proj');
    await serverA.merge('alice', '/proj', {
      activeCharts: [{ id: 'c1', title: 'Ship v1', desiredOutcome: 'shipped', actions: [{ id: 'a1', title: 'write docs' }] }],
    });
    await serverA.save('alice', '/proj');
    await nextMillisecond();
    await serverB.merge('alice', '/proj', { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }] }] });
    await serverB.save('alice', '/proj');
    await serverA.close();
    await serverB.close();

    const reader = await box.open(dataDir);
    const [chart] = (await reader.load('alice', '/proj')).session.activeCharts;
    expect(chart).toMatchObject({ id: 'c1', title: 'Ship v1', desiredOutcome: 'shipped' });
    expect(chart.actions).toEqual([expect.objectContaining({ id: 'a1', title: 'write docs', completed: true })]);
  });

  test('a session deleted by one store and then saved by another that still had it comes back whole', async () => {
    // Deleting is local to the store that does it; a store that still holds the session and saves it
    // writes what it holds. What matters is that the file is whole and loadable afterwards.
    const dataDir = newDataDir();
    const a = await box.open(dataDir);
    const b = await box.open(dataDir);
    await a.merge('alice', '/proj', { memory: { k: 1 } });
    await a.save('alice', '/proj');
    await b.load('alice', '/proj');
    expect(await a.delete('alice', '/proj')).toBe(true);
    await b.merge('alice', '/proj', { memory: { j: 2 } });
    expect(await b.save('alice', '/proj')).toBe(true);
    const reader = await box.open(dataDir);
    const back = await reader.load('alice', '/proj');
    expect(back).toMatchObject({ created: false, recovered: false });
    expect(back.session.memory.j).toBe(2);
    expect(filesIn(dataDir).filter((f) => f.includes('.corrupt-') || f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('a corrupt session file', () => {
  test('is moved aside and the previous good version (the backup) is loaded', async () => {
    // Two snapshots in a row (close() writes one): the first becomes the backup of the second.
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.merge('alice', '/proj', { memory: { saved: 'first' }, conversationHistory: [{ id: 'e1', role: 'user', content: 'one' }] });
    await first.save('alice', '/proj');
    await first.close();
    const later = await box.open(dataDir);
    await later.merge('alice', '/proj', { memory: { later: 'second' } });
    await later.save('alice', '/proj');
    await later.close();

    const { file, session: current } = storedSession(dataDir, 'alice', '/proj');
    expect(current.memory).toEqual({ saved: 'first', later: 'second' });
    expect(fs.existsSync(journalOf(file))).toBe(false); // close() compacted it
    const backupFile = `${file}.bak`;
    expect(fs.existsSync(backupFile)).toBe(true);
    const backup = JSON.parse(fs.readFileSync(backupFile, 'utf8'));
    expect(backup.memory).toEqual({ saved: 'first' });

    const garbage = Buffer.from('{"id": "half-written sess\u0000\u00ff garbage', 'latin1');
    fs.writeFileSync(file, garbage);

    const second = await box.open(dataDir);
    const loaded = await second.load('alice', '/proj');
    expect(loaded.recovered).toBe(true);
    expect(loaded.created).toBe(false);
    expect(loaded.session).toEqual(backup);
    expect(loaded.session.memory).toEqual({ saved: 'first' });
    expect(loaded.session.conversationHistory.map((e) => e.content)).toEqual(['one']);

    // The bad bytes are kept aside for the operator, never deleted.
    const stem = path.basename(file, '.json');
    const aside = filesIn(dataDir).filter((f) => f.startsWith(`${stem}.json.corrupt-`));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(dataDir, aside[0]))).toEqual(garbage);

    // The main file is valid again and holds the recovered session.
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(loaded.session);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);

    // Recovery happens once: the next load is ordinary, and work goes on.
    await second.merge('alice', '/proj', { memory: { after: 'recovery' } });
    await second.close();
    const third = await box.open(dataDir);
    const again = await third.load('alice', '/proj');
    expect(again).toMatchObject({ created: false, recovered: false });
    expect(again.session.memory).toEqual({ saved: 'first', after: 'recovery' });
  });

  test('with no backup, a new session is created and the corrupt file is kept', async () => {
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.load('alice', '/proj'); // the first write: no backup yet
    await first.close();
    const { file } = storedSession(dataDir, 'alice', '/proj');
    expect(fs.existsSync(`${file}.bak`)).toBe(false);
    fs.writeFileSync(file, 'not json at all');

    const second = await box.open(dataDir);
    const loaded = await second.load('alice', '/proj');
    expect(loaded).toMatchObject({ created: true, recovered: true });
    expect(loaded.session).toMatchObject({ userId: 'alice', workspaceId: '/proj', memory: {} });
    const stem = path.basename(file, '.json');
    const aside = filesIn(dataDir).filter((f) => f.startsWith(`${stem}.json.corrupt-`));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(dataDir, aside[0]), 'utf8')).toBe('not json at all');
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(loaded.session);
  });

  test('an empty (truncated) file is recovered from the backup too', async () => {
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.merge('alice', '/proj', { memory: { v: 1 } });
    await first.save('alice', '/proj');
    await first.close(); // snapshot v1
    const second = await box.open(dataDir);
    await second.merge('alice', '/proj', { memory: { v: 2 } });
    await second.close(); // snapshot v2, backup v1
    const { file } = storedSession(dataDir, 'alice', '/proj');
    expect(JSON.parse(fs.readFileSync(`${file}.bak`, 'utf8')).memory).toEqual({ v: 1 });
    fs.truncateSync(file, 0);

    const third = await box.open(dataDir);
    const loaded = await third.load('alice', '/proj');
    expect(loaded.recovered).toBe(true);
    expect(loaded.session.memory).toEqual({ v: 1 });
  });

  test('with a journal beside it, the backup is loaded and the journal replayed onto it', async () => {
    // Records are joins, so they apply to an older snapshot as well as to the one they were written
    // beside. What lived only in the corrupt snapshot is gone; everything journaled since is not.
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.merge('alice', '/proj', {
      memory: { a: 1 },
      // Enough to make the snapshot larger than the journal below, so the saves append to it.
      conversationHistory: Array.from({ length: 30 }, (_, i) => ({ id: `seed-${i}`, role: 'user', content: `seed ${i} ${'s'.repeat(100)}` })),
    });
    await first.close(); // snapshot A
    const second = await box.open(dataDir);
    await second.merge('alice', '/proj', { memory: { b: 2 } });
    await second.close(); // snapshot A+B, backup A
    const { file } = storedSession(dataDir, 'alice', '/proj');
    const snapshotBefore = fileStamp(file);

    // Another server process saves two updates (journal appends) and dies without closing.
    const run = await runNode([ACK_WRITER, dataDir, 'alice', '/proj', 'c', '2', 'exit'], { killAfterMs: 15000 });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const acked = run.stdout.trim().split('\n');
    expect(acked).toEqual(['c-000000', 'c-000001']);
    expect(fileStamp(file)).toEqual(snapshotBefore);
    const journal = readJournal(journalOf(file));
    expect(journal.records).toHaveLength(2);
    expect(journal.end).toBe(journal.size);

    const garbage = Buffer.from('{"id": "torn snapshot \u0000', 'latin1');
    fs.writeFileSync(file, garbage);

    const third = await box.open(dataDir);
    const loaded = await third.load('alice', '/proj');
    expect(loaded).toMatchObject({ created: false, recovered: true });
    expect(loaded.session.memory).toEqual({ a: 1, 'last-c': 1 });
    const ids = loaded.session.conversationHistory.map((e) => e.id);
    expect(ids).toHaveLength(32);
    expect(ids).toEqual(expect.arrayContaining(['seed-0', 'seed-29', ...acked]));

    // The corrupt snapshot is kept aside; the recovered session is written back as a snapshot that
    // holds the replayed journal, so the journal is gone.
    const stem = path.basename(file, '.json');
    const aside = filesIn(dataDir).filter((f) => f.startsWith(`${stem}.json.corrupt-`));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(dataDir, aside[0]))).toEqual(garbage);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(loaded.session);
    expect(fs.existsSync(journalOf(file))).toBe(false);

    // Another process sees the same session, as an ordinary (not recovered) load.
    const seen = await loadInChild(dataDir, 'alice', '/proj');
    expect(seen).toMatchObject({ created: false, recovered: false });
    expect(seen.session).toEqual(loaded.session);
  });

  test('when both the file and its backup are corrupt, both are kept aside', async () => {
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.merge('alice', '/proj', { memory: { v: 1 } });
    await first.save('alice', '/proj');
    await first.close();
    const { file } = storedSession(dataDir, 'alice', '/proj');
    fs.writeFileSync(file, 'bad main');
    fs.writeFileSync(`${file}.bak`, 'bad backup');

    const second = await box.open(dataDir);
    const loaded = await second.load('alice', '/proj');
    expect(loaded).toMatchObject({ created: true, recovered: true });
    const kept = filesIn(dataDir)
      .filter((f) => f.includes('.corrupt-'))
      .map((f) => fs.readFileSync(path.join(dataDir, f), 'utf8'))
      .sort();
    expect(kept).toEqual(['bad backup', 'bad main']);
  });

  test("another user's session copied over the file is not served to this user", async () => {
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.merge('alice', '/proj', { memory: { aliceSecret: 'a' } });
    await first.load('bob', '/proj');
    await first.close();
    const alice = storedSession(dataDir, 'alice', '/proj').file;
    const bob = storedSession(dataDir, 'bob', '/proj').file;
    fs.copyFileSync(alice, bob);

    const second = await box.open(dataDir);
    const loaded = await second.load('bob', '/proj');
    expect(loaded.recovered).toBe(true);
    expect(loaded.session.userId).toBe('bob');
    expect(loaded.session.memory).toEqual({});
    // Alice's own session is untouched.
    expect((await second.load('alice', '/proj')).session.memory).toEqual({ aliceSecret: 'a' });
  });
});

describe('files on disk', () => {
  test('every file the store writes is private (0600) in a private dir (0700)', async () => {
    const parent = box.tempDir();
    const dataDir = path.join(parent, 'deep', 'er', 'sessions');
    const first = await box.open(dataDir);
    for (const user of ['alice', 'bob']) {
      await first.load(user, '/proj');
      await first.save(user, '/proj'); // a new session's first snapshot
      await first.merge(user, '/proj', { memory: { v: 1 } });
      await first.save(user, '/proj');
    }
    await first.close(); // a second snapshot each: the first becomes the backup
    const second = await box.open(dataDir);
    for (const user of ['alice', 'bob']) {
      await second.merge(user, '/proj', { memory: { v: 2 } });
      await second.save(user, '/proj'); // appended to the journal
    }
    expect(fs.statSync(dataDir).mode & 0o777).toBe(0o700);
    const files = filesIn(dataDir);
    // .json, .json.bak and .journal for each, and the locks: one `.locks` for the directory on
    // Linux (byte-range locks), a .lock for each elsewhere.
    const rangeLocks = process.platform === 'linux'
    expect(files.length).toBe(rangeLocks ? 7 : 8);
    for (const f of files) {
      expect(f).toMatch(/^(\.locks|[0-9a-f]{64}\.(json|json\.bak|journal|lock))$/);
      expect(fs.statSync(path.join(dataDir, f)).mode & 0o777).toBe(0o600);
    }
    for (const ext of ['.json', '.json.bak', '.journal', ...(rangeLocks ? [] : ['.lock'])]) {
      expect(files.filter((f) => f.endsWith(ext) && !f.startsWith('.'))).toHaveLength(2);
    }
    if (rangeLocks) expect(files).toContain('.locks');
  });

  test('the backup holds the snapshot before the last snapshot write; journal appends leave both alone', async () => {
    const dataDir = newDataDir();
    for (let v = 1; v <= 3; v++) {
      const store = await box.open(dataDir);
      await store.merge('alice', '/proj', { memory: { v } });
      await store.save('alice', '/proj');
      await store.close(); // writes a snapshot
    }
    const { file, session } = storedSession(dataDir, 'alice', '/proj');
    expect(session.memory).toEqual({ v: 3 });
    expect(JSON.parse(fs.readFileSync(`${file}.bak`, 'utf8')).memory).toEqual({ v: 2 });

    // A save that appends to the journal writes no snapshot, so the backup stays what it was.
    const snapshot = fileStamp(file);
    const backup = fileStamp(`${file}.bak`);
    const store = await box.open(dataDir);
    await store.merge('alice', '/proj', { memory: { v: 4 } });
    expect(await store.save('alice', '/proj')).toBe(true);
    expect(readJournal(journalOf(file)).records).toHaveLength(1);
    expect(fileStamp(file)).toEqual(snapshot);
    expect(fileStamp(`${file}.bak`)).toEqual(backup);
    expect((await loadInChild(dataDir, 'alice', '/proj')).session.memory).toEqual({ v: 4 });

    // The next snapshot (close) makes v3 the backup.
    await store.close();
    expect(storedSession(dataDir, 'alice', '/proj').session.memory).toEqual({ v: 4 });
    expect(JSON.parse(fs.readFileSync(`${file}.bak`, 'utf8')).memory).toEqual({ v: 3 });
  });
});

describe('close()', () => {
  test('after close() resolves, a store touches nothing more in its data dir', async () => {
    // A host closes the store and then archives or removes the data dir. Server A has sessions
    // loaded that server B changes on disk right before both close.
    const dataDir = newDataDir();
    const serverA = await box.open(dataDir);
    const serverB = await box.open(dataDir);
    const users = Array.from({ length: 30 }, (_, i) => `user-${i}`);
    for (const user of users) await serverA.load(user, '/proj');
    for (const user of users) {
      await serverB.merge(user, '/proj', { memory: { fromB: true } });
      await serverB.save(user, '/proj');
    }
    await serverA.close();
    await serverB.close();

    for (const f of filesIn(dataDir)) fs.rmSync(path.join(dataDir, f));
    // Nothing can announce that nothing happens: a stretch of time passes, and no file comes back.
    await sleep(300);
    expect(filesIn(dataDir)).toEqual([]);
  });
});

describe('autosave', () => {
  /**
   * Waits for `ticks` autosave ticks of `store`: before each, a session of `user`'s (in /ticks) is
   * changed, and the tick is seen writing it. Returns a filter that leaves that session's files out
   * of a listing, so that a test can check what the ticks did not write.
   */
  async function autosaveTicks(store, ticks, user) {
    for (let tick = 0; tick < ticks; tick++) {
      await store.merge(user, '/ticks', { memory: { tick } });
      await pollUntil(async () => (await store.list()).some((s) => s.userId === user && !s.dirty), {
        what: `autosave tick ${tick + 1} of ${ticks}`,
      });
    }
    const stem = path.basename(storedSession(store.dataDir, user, '/ticks').file, '.json');
    return (files) => files.filter((f) => !f.includes(stem));
  }

  test('writes a merged change without save() within a few intervals', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir, { autosaveIntervalMs: 200 });
    await store.load('alice', '/proj');
    await store.save('alice', '/proj'); // the new session's first snapshot
    const { file } = storedSession(dataDir, 'alice', '/proj');
    const snapshot = fileStamp(file);
    await store.merge('alice', '/proj', { memory: { unsaved: 'but autosaved' } });
    // Autosave appends the change to the journal (fsynced) ...
    const journal = await pollUntil(
      () => {
        const j = readJournal(journalOf(file));
        return j.records.length > 0 && j;
      },
      { timeoutMs: 2500, intervalMs: 20, what: 'the autosaved change in the journal' },
    );
    expect(journal.records).toHaveLength(1);
    expect(journal.end).toBe(journal.size);
    expect(fileStamp(file)).toEqual(snapshot);
    // ... where another process finds it.
    const seen = await loadInChild(dataDir, 'alice', '/proj');
    expect(seen.session.memory).toEqual({ unsaved: 'but autosaved' });
    await pollUntil(async () => (await store.list())[0].dirty === false, { what: 'the session to be clean' });
    // Nothing was left to write.
    expect(await store.save('alice', '/proj')).toBe(false);
  });

  test('does not rewrite a clean session', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir, { autosaveIntervalMs: 100 });
    await store.load('alice', '/proj');
    await store.save('alice', '/proj'); // the new session's first snapshot
    await store.merge('alice', '/proj', { memory: { k: 1 } });
    await store.save('alice', '/proj');
    const { file } = storedSession(dataDir, 'alice', '/proj');
    const before = fileStamp(file);
    const bytes = fs.readFileSync(file);
    const journalBefore = fileStamp(journalOf(file));
    expect(journalBefore).not.toBeNull(); // the save appended to it
    const journalBytes = fs.readFileSync(journalOf(file));
    const filesBefore = filesIn(dataDir);

    const others = await autosaveTicks(store, 5, 'ticker');
    expect(fileStamp(file)).toEqual(before);
    expect(fs.readFileSync(file)).toEqual(bytes);
    expect(fileStamp(journalOf(file))).toEqual(journalBefore);
    expect(fs.readFileSync(journalOf(file))).toEqual(journalBytes);
    expect(others(filesIn(dataDir))).toEqual(filesBefore);
  });

  test('two stores with autosave on one dir converge, then stop rewriting the file', async () => {
    const dataDir = newDataDir();
    const serverA = await box.open(dataDir, { autosaveIntervalMs: 100 });
    const serverB = await box.open(dataDir, { autosaveIntervalMs: 100 });
    await serverA.load('alice', '/proj');
    await serverB.load('alice', '/proj');
    await serverA.merge('alice', '/proj', { memory: { fromA: 1 } });
    await serverB.merge('alice', '/proj', { memory: { fromB: 2 } });

    // Both changes reach the disk, and both stores hold both.
    await pollUntil(
      async () => {
        const seen = await loadInChild(dataDir, 'alice', '/proj');
        return seen && seen.session.memory.fromA === 1 && seen.session.memory.fromB === 2;
      },
      { intervalMs: 50, what: 'both changes on disk' },
    );
    // Each store learns of the other's write by its own save or by its watcher, which may lag on a
    // loaded machine: wait for both.
    await pollUntil(
      async () => {
        const [a, b] = await Promise.all([serverA.list(), serverB.list()]);
        const held = await Promise.all([serverA, serverB].map((s) => s.load('alice', '/proj')));
        return !a[0].dirty && !b[0].dirty && held.every(({ session }) => session.memory.fromB === 2 && session.memory.fromA === 1);
      },
      { what: 'both stores clean, each holding both changes' },
    );
    for (const server of [serverA, serverB]) {
      expect((await server.load('alice', '/proj')).session.memory).toEqual({ fromA: 1, fromB: 2 });
    }
    // Quiet now: several ticks of each store pass without a write, to the snapshot, its backup or
    // the journal.
    const [othersOfA, othersOfB] = await Promise.all([autosaveTicks(serverA, 2, 'ticker-a'), autosaveTicks(serverB, 2, 'ticker-b')]);
    const { file } = storedSession(dataDir, 'alice', '/proj');
    const files = [file, `${file}.bak`, journalOf(file)];
    const settled = files.map(fileStamp);
    const contents = files.map((f) => (fs.existsSync(f) ? fs.readFileSync(f) : null));
    const listing = othersOfA(othersOfB(filesIn(dataDir)));
    await Promise.all([autosaveTicks(serverA, 4, 'ticker-a'), autosaveTicks(serverB, 4, 'ticker-b')]);
    expect(files.map(fileStamp)).toEqual(settled);
    expect(files.map((f) => (fs.existsSync(f) ? fs.readFileSync(f) : null))).toEqual(contents);
    expect(othersOfA(othersOfB(filesIn(dataDir)))).toEqual(listing);
  });

  test('stops at close(): nothing is written after it', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir, { autosaveIntervalMs: 50 });
    await store.merge('alice', '/proj', { memory: { k: 1 } });
    await store.close();
    const { file, session } = storedSession(dataDir, 'alice', '/proj');
    expect(session.memory).toEqual({ k: 1 }); // close() wrote it into the snapshot
    const before = fileStamp(file);
    const listing = filesIn(dataDir);
    expect(listing.some((f) => f.endsWith('.journal'))).toBe(false);
    // Nothing can announce that nothing happens: six intervals pass, and nothing is written.
    await sleep(300);
    expect(fileStamp(file)).toEqual(before);
    expect(filesIn(dataDir)).toEqual(listing);
  });
});
