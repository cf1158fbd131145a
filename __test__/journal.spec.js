'use strict';
// The journal: a save appends the merged updates to `<stem>.journal` (framed records: u32 LE length,
// u32 LE CRC-32, JSON payload; see src/journal.rs) instead of rewriting the snapshot `<stem>.json`.
// A snapshot is written when the journal would outgrow it, and on close(). What these tests hold
// the store to: a save costs the change, not the session; the journal never outgrows the snapshot;
// a torn journal loses only its torn record; an acknowledged save survives kill -9. Plus the two
// calls that go with it: loadRaw, and merge resolving to its changes only (the default). No mocks.

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const {
  INDEX,
  sandbox,
  filesIn,
  storedSession,
  journalOf,
  readJournal,
  fileStamp,
  loadInChild,
  runNode,
  pollUntil,
} = require('./helpers/env');

const ACK_WRITER = path.join(__dirname, 'helpers', 'ack-writer.js');
const USER = 'alice';
const WORKSPACE = '/home/alice/proj';

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

function newDataDir() {
  return path.join(box.tempDir('mia-journal-'), 'sessions');
}

/** A conversation entry of a fixed size (ids sort in creation order). */
function entry(prefix, n, contentBytes = 100) {
  const id = `${prefix}-${String(n).padStart(6, '0')}`;
  return { id, role: 'user', content: `${id} ${'x'.repeat(contentBytes)}` };
}

/** Creates the session with `count` entries and closes the store, so that they are in the snapshot. */
async function seed(dataDir, count, contentBytes = 100) {
  const seeder = await box.open(dataDir);
  for (let start = 0; start < count; start += 500) {
    const batch = [];
    for (let n = start; n < Math.min(count, start + 500); n++) batch.push(entry('seed', n, contentBytes));
    await seeder.merge(USER, WORKSPACE, { conversationHistory: batch }, { returnSession: false });
  }
  await seeder.close();
  const stored = storedSession(dataDir, USER, WORKSPACE);
  expect(stored.session.conversationHistory).toHaveLength(count);
  expect(fs.existsSync(journalOf(stored.file))).toBe(false);
  return stored.file;
}

const idsOf = (session) => session.conversationHistory.map((e) => e.id);

describe('a save writes the change, not the session', () => {
  test('one small merge into a 2,000-entry session appends under 2 KB and leaves the snapshot untouched', async () => {
    const dataDir = newDataDir();
    const file = await seed(dataDir, 2000);
    const snapshotBytes = fs.readFileSync(file);
    const snapshot = fileStamp(file);
    const backup = fileStamp(`${file}.bak`);
    expect(snapshot.size).toBeGreaterThan(200 * 1024);

    const store = await box.open(dataDir);
    expect((await store.load(USER, WORKSPACE)).created).toBe(false);
    const updates = [
      { memory: { cursor: 'src/app.ts:42' } },
      { conversationHistory: [entry('new', 1)] },
      { activeCharts: [{ id: 'c1', title: 'Ship v1', actions: [{ id: 'a1', title: 'tests' }] }] },
      { activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }] }] },
    ];
    let journalSize = 0;
    for (const [i, update] of updates.entries()) {
      const { changes } = await store.merge(USER, WORKSPACE, update, { returnSession: false });
      expect(changes.length).toBeGreaterThan(0);
      expect(await store.save(USER, WORKSPACE)).toBe(true);

      const journal = readJournal(journalOf(file));
      expect(journal.records).toHaveLength(i + 1);
      expect(journal.end).toBe(journal.size);
      const grew = journal.size - journalSize;
      expect(grew).toBeGreaterThan(0);
      expect(grew).toBeLessThan(2048);
      journalSize = journal.size;
      // The snapshot and its backup are as they were: not rewritten, not even touched.
      expect(fileStamp(file)).toEqual(snapshot);
      expect(fs.readFileSync(file)).toEqual(snapshotBytes);
      expect(fileStamp(`${file}.bak`)).toEqual(backup);
    }
    expect(filesIn(dataDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    // What was saved is on disk: another process finds the session exactly as this store holds it.
    const seen = await loadInChild(dataDir, USER, WORKSPACE);
    expect(seen).toMatchObject({ created: false, recovered: false });
    expect(seen.session.conversationHistory).toHaveLength(2001);
    expect(seen.session.memory).toEqual({ cursor: 'src/app.ts:42' });
    expect(seen.session.activeCharts[0].actions[0]).toMatchObject({ id: 'a1', completed: true });
    expect(seen.session).toEqual((await store.load(USER, WORKSPACE)).session);
  });
});

describe('compaction', () => {
  test('a journal that outgrows its snapshot is folded into a new one in the background; every save is an append', async () => {
    const dataDir = newDataDir();
    const file = await seed(dataDir, 20);
    const store = await box.open(dataDir);
    const expected = idsOf((await store.load(USER, WORKSPACE)).session);
    const snapshots = new Set([fileStamp(file).ino]);
    const onDisk = () => {
      // The journal first: a compaction puts its snapshot in place before it cuts the journal, so
      // whatever is read in this order holds everything saved.
      const journal = readJournal(journalOf(file));
      const snapshot = JSON.parse(fs.readFileSync(file, 'utf8'));
      expect(journal.end).toBe(journal.size);
      return new Set([...idsOf(snapshot), ...journal.records.flatMap((r) => (r.conversationHistory || []).map((e) => e.id))]);
    };
    for (let n = 0; n < 60; n++) {
      await store.merge(USER, WORKSPACE, { conversationHistory: [entry('n', n)] }, { returnSession: false });
      expect(await store.save(USER, WORKSPACE)).toBe(true);
      expected.push(entry('n', n).id);
      snapshots.add(fileStamp(file).ino);
      // What was saved is on disk, whether or not a compaction is under way.
      const stored = onDisk();
      expect(expected.filter((id) => !stored.has(id))).toEqual([]);
    }
    // The journal outgrew the snapshot several times; each time a new snapshot took it in.
    await pollUntil(() => readJournal(journalOf(file)).size <= fileStamp(file).size, { what: 'the journal folded in' });
    snapshots.add(fileStamp(file).ino);
    expect(snapshots.size).toBeGreaterThanOrEqual(3);
    expect(filesIn(dataDir).filter((f) => f.endsWith('.tmp') || f.includes('.corrupt-'))).toEqual([]);

    const seen = await loadInChild(dataDir, USER, WORKSPACE);
    expect(idsOf(seen.session).sort()).toEqual([...expected].sort());
    expect(seen.session).toEqual((await store.load(USER, WORKSPACE)).session);
  });

  test("close() folds every loaded session's journal (and unsaved changes) into its snapshot", async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const users = ['alice', 'bob'];
    for (const user of users) {
      const seeded = Array.from({ length: 20 }, (_, n) => entry(`${user}-seed`, n));
      await store.merge(user, WORKSPACE, { conversationHistory: seeded });
    }
    await store.close(); // so that each session has a snapshot (large enough for three appends) and a backup

    // Two sessions with journals (bob with one more change, merged but never saved) and a third,
    // clean, without one.
    const second = await box.open(dataDir);
    for (const user of users) {
      for (let n = 1; n <= 3; n++) {
        await second.merge(user, WORKSPACE, { conversationHistory: [entry(user, n)] }, { returnSession: false });
        await second.save(user, WORKSPACE);
      }
    }
    await second.merge('bob', WORKSPACE, { memory: { unsaved: true } });
    await second.load('carol', WORKSPACE);
    await second.save('carol', WORKSPACE);
    const files = {};
    const before = {};
    for (const user of [...users, 'carol']) {
      files[user] = storedSession(dataDir, user, WORKSPACE).file;
      before[user] = {
        snapshot: fileStamp(files[user]),
        bytes: fs.readFileSync(files[user]),
        session: (await second.load(user, WORKSPACE)).session,
      };
    }
    for (const user of users) expect(readJournal(journalOf(files[user])).records).toHaveLength(3);
    expect(fs.existsSync(journalOf(files.carol))).toBe(false);

    await second.close();

    for (const user of users) {
      const file = files[user];
      expect(fs.existsSync(journalOf(file))).toBe(false);
      expect(fileStamp(file).ino).not.toBe(before[user].snapshot.ino);
      expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(before[user].session);
      expect(fs.readFileSync(`${file}.bak`)).toEqual(before[user].bytes);
    }
    expect(before.bob.session.memory).toEqual({ unsaved: true });
    // The clean session without a journal is not rewritten.
    expect(fileStamp(files.carol)).toEqual(before.carol.snapshot);
    expect(fs.existsSync(`${files.carol}.bak`)).toBe(false);

    // A new store reads the snapshots alone, and writes nothing to do so.
    const third = await box.open(dataDir);
    for (const user of users) {
      const stamp = fileStamp(files[user]);
      const loaded = await third.load(user, WORKSPACE);
      expect(loaded).toMatchObject({ created: false, recovered: false });
      expect(loaded.session).toEqual(before[user].session);
      expect(fileStamp(files[user])).toEqual(stamp);
    }
  });
});

describe('a torn journal', () => {
  const damages = [
    ['a few bytes cut off the last record', (file, last) => fs.truncateSync(file, last.offset + last.length - 3)],
    ['the last record cut inside its header', (file, last) => fs.truncateSync(file, last.offset + 5)],
  ];

  test.each(damages)('(%s) loads every complete record, and the store keeps working', async (_, damage) => {
    const dataDir = newDataDir();
    const file = await seed(dataDir, 40);
    const snapshot = fileStamp(file);

    // A server process saves six updates (six journal records) and dies without closing.
    const run = await runNode([ACK_WRITER, dataDir, USER, WORKSPACE, 't', '6', 'exit'], { killAfterMs: 15000 });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const acked = run.stdout.trim().split('\n');
    expect(acked).toHaveLength(6);
    expect(fileStamp(file)).toEqual(snapshot);
    const written = readJournal(journalOf(file));
    expect(written.records).toHaveLength(6);
    expect(written.end).toBe(written.size);
    const intact = fs.readFileSync(journalOf(file)).subarray(0, written.frames[5].offset);

    damage(journalOf(file), written.frames[5]);
    const torn = readJournal(journalOf(file));
    expect(torn.records).toHaveLength(5);
    expect(torn.end).toBe(intact.length);

    // Loading takes the five complete records; the torn sixth is ignored. It is not a recovery:
    // the snapshot is fine.
    const store = await box.open(dataDir);
    const loaded = await store.load(USER, WORKSPACE);
    expect(loaded).toMatchObject({ created: false, recovered: false });
    const ids = idsOf(loaded.session);
    expect(ids).toHaveLength(45);
    expect(ids).toEqual(expect.arrayContaining(acked.slice(0, 5)));
    expect(ids).not.toContain(acked[5]);
    expect(loaded.session.memory).toEqual({ 'last-t': 4 });

    // The next save appends cleanly after the complete records: the journal is whole again.
    await store.merge(USER, WORKSPACE, { conversationHistory: [entry('after-tear', 0)] });
    expect(await store.save(USER, WORKSPACE)).toBe(true);
    const mended = readJournal(journalOf(file));
    expect(mended.end).toBe(mended.size);
    expect(mended.records).toHaveLength(6);
    expect(fs.readFileSync(journalOf(file)).subarray(0, intact.length)).toEqual(intact);
    expect(mended.records[5].conversationHistory.map((e) => e.id)).toEqual([entry('after-tear', 0).id]);
    expect(fileStamp(file)).toEqual(snapshot);

    // Another process sees every complete record plus the new one.
    const seen = await loadInChild(dataDir, USER, WORKSPACE);
    expect(seen).toMatchObject({ created: false, recovered: false });
    expect(idsOf(seen.session)).toHaveLength(46);
    expect(idsOf(seen.session)).toEqual(expect.arrayContaining([...acked.slice(0, 5), entry('after-tear', 0).id]));
    expect(idsOf(seen.session)).not.toContain(acked[5]);
    expect(seen.session).toEqual((await store.load(USER, WORKSPACE)).session);

    // And it goes on working.
    await store.merge(USER, WORKSPACE, { memory: { still: 'working' } });
    expect(await store.save(USER, WORKSPACE)).toBe(true);
    expect(readJournal(journalOf(file)).records).toHaveLength(7);
    expect((await loadInChild(dataDir, USER, WORKSPACE)).session.memory).toEqual({ 'last-t': 4, still: 'working' });
  });
});

describe('a damaged journal record', () => {
  test('is skipped and kept aside; every other record loads, and the load says recovered', async () => {
    const dataDir = newDataDir();
    const file = await seed(dataDir, 40);
    const run = await runNode([ACK_WRITER, dataDir, USER, WORKSPACE, 'd', '6', 'exit'], { killAfterMs: 15000 });
    expect(run.stderr).toBe('');
    const acked = run.stdout.trim().split('\n');
    expect(acked).toHaveLength(6);
    const written = readJournal(journalOf(file));
    // A flipped byte inside the third record's payload: its checksum fails. Unlike a torn tail,
    // records follow it, and they are kept.
    const damaged = fs.readFileSync(journalOf(file));
    damaged[written.frames[2].offset + 8 + 10] ^= 0x01;
    fs.writeFileSync(journalOf(file), damaged);

    const store = await box.open(dataDir);
    const loaded = await store.load(USER, WORKSPACE);
    expect(loaded).toMatchObject({ created: false, recovered: true });
    const ids = idsOf(loaded.session);
    expect(ids).toHaveLength(45);
    expect(ids).toEqual(expect.arrayContaining([...acked.slice(0, 2), ...acked.slice(3)]));
    expect(ids).not.toContain(acked[2]);
    // The damaged journal is kept aside as it was; the session is written back whole.
    const aside = filesIn(dataDir).filter((f) => f.startsWith(`${path.basename(journalOf(file))}.corrupt-`));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(dataDir, aside[0]))).toEqual(damaged);
    expect(fs.existsSync(journalOf(file))).toBe(false);
    const seen = await loadInChild(dataDir, USER, WORKSPACE);
    expect(seen).toMatchObject({ created: false, recovered: false });
    expect(seen.session).toEqual(loaded.session);
  });
});

describe('kill -9', () => {
  /**
   * Runs an ack-writer that would go on for a long time, and SIGKILLs it as soon as it has printed
   * `killAfter` acknowledged ids. Resolves with every id it printed (complete lines only).
   */
  function runAndKill(dataDir, prefix, killAfter) {
    return new Promise((resolve, reject) => {
      const args = [ACK_WRITER, dataDir, USER, WORKSPACE, prefix, '1000000', 'exit', '150'];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let killedByTest = false;
      const guard = setTimeout(() => child.kill('SIGKILL'), 20000);
      child.stdout.on('data', (d) => {
        stdout += d;
        if (!killedByTest && stdout.split('\n').length - 1 >= killAfter) {
          killedByTest = true;
          child.kill('SIGKILL');
        }
      });
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(guard);
        const lines = stdout.split('\n');
        lines.pop(); // an unfinished line (or the empty string after the last newline)
        resolve({ acked: lines, code, signal, stderr, killedByTest });
      });
    });
  }

  test('every update acknowledged before a SIGKILL is there for a fresh store', async () => {
    const dataDir = newDataDir();
    const allAcked = [];
    // Several rounds on one session, killed at different points, so that kills land in appends and
    // in snapshot writes, on a journal a previous kill may have torn.
    for (const [round, killAfter] of [3, 20, 45, 80, 130].entries()) {
      const prefix = `r${round}`;
      const result = await runAndKill(dataDir, prefix, killAfter);
      expect(result.stderr).toBe('');
      expect(result.killedByTest).toBe(true);
      expect(result.signal).toBe('SIGKILL');
      expect(result.acked.length).toBeGreaterThanOrEqual(killAfter);
      allAcked.push(...result.acked);

      const seen = await loadInChild(dataDir, USER, WORKSPACE);
      expect(seen).toMatchObject({ created: false, recovered: false });
      const ids = new Set(idsOf(seen.session));
      const missing = allAcked.filter((id) => !ids.has(id));
      expect(missing).toEqual([]);
      expect(seen.session.memory[`last-${prefix}`]).toBeGreaterThanOrEqual(result.acked.length - 1);
    }

    const store = await box.open(dataDir);
    const { session, recovered, created } = await store.load(USER, WORKSPACE);
    expect({ recovered, created }).toEqual({ recovered: false, created: false });
    const ids = new Set(idsOf(session));
    expect(allAcked.filter((id) => !ids.has(id))).toEqual([]);
    // Nothing was lost or kept aside as corrupt; what a kill tore off the journal is cut away.
    expect(filesIn(dataDir).filter((f) => f.includes('.corrupt-'))).toEqual([]);
    const journal = readJournal(journalOf(storedSession(dataDir, USER, WORKSPACE).file));
    expect(journal.end).toBe(journal.size);
  });

  test('every new session whose first durable write was acknowledged before a SIGKILL is there', async () => {
    const dataDir = newDataDir();
    // 64 writers at once, each creating sessions by a durable merge into a session never seen (its
    // first snapshot, directory fsyncs shared) and loading one it never saves; killed mid-stream.
    const creator = (round) => `
      const { NarrativeSessionStore } = require(${JSON.stringify(INDEX)});
      (async () => {
        const store = await NarrativeSessionStore.open({ dataDir: ${JSON.stringify(dataDir)}, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
        let next = 0;
        const writer = async () => {
          for (;;) {
            const n = next++;
            await store.load('idle-${round}-' + n, '/w');
            await store.merge('new-${round}-' + n, '/w', { memory: { n } }, { durable: true, returnSession: false });
            process.stdout.write(n + '\\n');
          }
        };
        await Promise.all(Array.from({ length: 64 }, writer));
      })();
    `;
    const acked = [];
    for (const [round, killAfter] of [40, 300].entries()) {
      const child = spawn(process.execPath, ['-e', creator(round)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      const guard = setTimeout(() => child.kill('SIGKILL'), 30000);
      child.stderr.on('data', (d) => (stderr += d));
      child.stdout.on('data', (d) => {
        stdout += d;
        if (stdout.split('\n').length - 1 >= killAfter) child.kill('SIGKILL');
      });
      const signal = await new Promise((resolve) => child.on('close', (code, sig) => resolve(sig)));
      clearTimeout(guard);
      expect(stderr).toBe('');
      expect(signal).toBe('SIGKILL');
      const lines = stdout.split('\n');
      lines.pop(); // an unfinished line
      expect(lines.length).toBeGreaterThanOrEqual(killAfter);
      acked.push(...lines.map((n) => ({ user: `new-${round}-${n}`, n: Number(n) })));
    }

    const store = await box.open(dataDir);
    for (const { user, n } of acked) {
      const { session, created, recovered } = await store.load(user, '/w');
      expect({ user, created, recovered, n: session.memory.n }).toEqual({ user, created: false, recovered: false, n });
    }
    const listed = new Set((await store.list()).map((s) => s.userId));
    expect(acked.filter(({ user }) => !listed.has(user))).toEqual([]);
    // Sessions only loaded were never written; nothing was kept aside as damaged.
    expect([...listed].filter((user) => user.startsWith('idle-'))).toEqual([]);
    expect(filesIn(dataDir).filter((f) => f.includes('.corrupt-'))).toEqual([]);
  });
});

describe('loadRaw', () => {
  test('returns the session as a UTF-8 JSON Buffer that parses to what load() returns', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const first = await store.loadRaw(USER, WORKSPACE);
    expect(Object.keys(first).sort()).toEqual(['created', 'recovered', 'sessionId', 'sessionJson']);
    expect(Buffer.isBuffer(first.sessionJson)).toBe(true);
    expect(first).toMatchObject({ created: true, recovered: false });
    const loaded = await store.load(USER, WORKSPACE);
    expect(loaded).toMatchObject({ created: false, recovered: false });
    expect(JSON.parse(first.sessionJson.toString('utf8'))).toEqual(loaded.session);
    expect(first.sessionId).toBe(loaded.session.id);

    // After merges with non-ASCII text, and saved to the journal.
    const { session: merged } = await store.merge(USER, WORKSPACE, {
      universeFocus: 'story',
      memory: { note: 'naïve café — 日本語 🚀', nested: { list: [1, 2, { deep: true }] } },
      conversationHistory: [{ id: 'e1', role: 'user', content: 'ünïcödé ✓' }],
      activeCharts: [{ id: 'c1', title: 'Ship', actions: [{ id: 'a1', title: 'tests', extra: { kept: 1 } }] }],
    }, { returnSession: true });
    await store.save(USER, WORKSPACE);
    const raw = await store.loadRaw(USER, WORKSPACE);
    expect(raw).toMatchObject({ created: false, recovered: false });
    const parsed = JSON.parse(raw.sessionJson.toString('utf8'));
    expect(parsed).toEqual(merged);
    expect(parsed).toEqual((await store.load(USER, WORKSPACE)).session);
    expect(parsed.memory.note).toBe('naïve café — 日本語 🚀');

    // A fresh store reads snapshot plus journal and gives the same bytes' meaning.
    const other = await box.open(dataDir);
    const fresh = await other.loadRaw(USER, WORKSPACE);
    expect(fresh).toMatchObject({ created: false, recovered: false });
    expect(JSON.parse(fresh.sessionJson.toString('utf8'))).toEqual(merged);
    expect(JSON.parse(fresh.sessionJson.toString('utf8'))).toEqual((await other.load(USER, WORKSPACE)).session);
  });

  test('reports a recovery as load() does, and rejects like load()', async () => {
    const dataDir = newDataDir();
    const first = await box.open(dataDir);
    await first.load(USER, WORKSPACE);
    await first.save(USER, WORKSPACE); // the first snapshot: the session as first created
    await first.merge(USER, WORKSPACE, { memory: { v: 1 } });
    await first.close();
    const { file } = storedSession(dataDir, USER, WORKSPACE);
    fs.writeFileSync(file, 'not json');

    const store = await box.open(dataDir);
    const raw = await store.loadRaw(USER, WORKSPACE);
    expect(raw).toMatchObject({ created: false, recovered: true });
    const session = JSON.parse(raw.sessionJson.toString('utf8'));
    expect(session.memory).toEqual({}); // the backup: the session as first created
    expect(session).toEqual((await store.load(USER, WORKSPACE)).session);

    await expect(store.loadRaw('', WORKSPACE)).rejects.toMatchObject({ code: 'EINVALID' });
    await expect(store.loadRaw(USER, 42)).rejects.toMatchObject({ code: 'EINVALID' });
    await store.close();
    await expect(store.loadRaw(USER, WORKSPACE)).rejects.toMatchObject({ code: 'ECLOSED' });
  });
});

describe('merge resolves to its changes only unless returnSession: true', () => {
  test('returns only the changes; the merge is applied, heard and saved as usual', async () => {
    const dataDir = newDataDir();
    const store = await box.open(dataDir);
    const heard = [];
    store.onMerge((event) => heard.push(event));
    const update = {
      memory: { k: 1 },
      conversationHistory: [{ id: 'e1', role: 'user', content: 'hi' }],
      storyBeats: [{ id: 'b1', description: 'first', type: 'commit' }],
    };

    const result = await store.merge(USER, WORKSPACE, update, { origin: 'tab-1', returnSession: false });
    expect(Object.keys(result)).toEqual(['changes', 'lost']);
    expect([...result.changes].sort()).toEqual(['conversationHistory.e1', 'memory.k', 'storyBeats.b1']);
    expect(heard).toEqual([expect.objectContaining({ userId: USER, workspaceId: WORKSPACE, origin: 'tab-1', changes: result.changes })]);

    // The same update through the default path reports the same changes, with the session.
    const full = await store.merge('bob', WORKSPACE, update, { returnSession: true });
    expect([...full.changes].sort()).toEqual([...result.changes].sort());
    expect(full.session).toMatchObject({ userId: 'bob', memory: { k: 1 } });
    const explicit = await store.merge('bob', WORKSPACE, { memory: { j: 2 } }, { returnSession: true });
    expect(explicit.session.memory).toEqual({ k: 1, j: 2 });

    // Applied: load shows it, and it is dirty until saved.
    const { session } = await store.load(USER, WORKSPACE);
    expect(session.memory).toEqual({ k: 1 });
    expect(idsOf(session)).toEqual(['e1']);
    expect(session.storyBeats.map((b) => b.id)).toEqual(['b1']);
    expect((await store.list()).find((s) => s.userId === USER).dirty).toBe(true);

    // A merge that changes nothing returns no changes, and is not heard.
    expect(await store.merge(USER, WORKSPACE, { memory: { k: 1 } }, { returnSession: false })).toEqual({ changes: [], lost: [] });
    expect(heard.filter((e) => e.userId === USER)).toHaveLength(1);

    expect(await store.save(USER, WORKSPACE)).toBe(true);
    const seen = await loadInChild(dataDir, USER, WORKSPACE);
    expect(seen.session).toEqual((await store.load(USER, WORKSPACE)).session);

    // Refusals are the same as with the session returned.
    await expect(store.merge(USER, WORKSPACE, { universeFocus: 'nowhere' }, { returnSession: false })).rejects.toMatchObject({
      code: 'EINVALID',
    });
    await expect(store.merge(USER, WORKSPACE, { memory: { k: 2 } }, { returnSession: 'no' })).rejects.toMatchObject({
      code: 'EINVALID',
    });
    expect((await store.load(USER, WORKSPACE)).session.memory).toEqual({ k: 1 });
  });
});
