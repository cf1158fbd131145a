'use strict';
// TTL cleanup: old sessions go, sessions in use or touched during the sweep stay, leftovers of
// interrupted writes are swept, and nothing unreadable is ever deleted.

const fs = require('fs');
const path = require('path');

const { NarrativeSessionStore } = require('../index');
const { QUIET, sandbox, filesIn, sessionFiles, storedSession, pollUntil, sleep, ageSessionFile } = require('./helpers/env');

const DAY = 86400000;

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

/** A data dir holding the given sessions, written by a store that is closed again. */
async function dirWithSessions(pairs, update = { memory: { note: 'kept?' } }) {
  const dataDir = path.join(box.tempDir(), 'sessions');
  const writer = await box.open(dataDir);
  for (const [user, workspace] of pairs) {
    await writer.merge(user, workspace, update);
    await writer.save(user, workspace);
  }
  await writer.close();
  return dataDir;
}

/** Makes a stored session look last updated `days` ago (updatedAt and file time). */
function age(dataDir, user, workspace, days) {
  const { file } = storedSession(dataDir, user, workspace);
  ageSessionFile(file, new Date(Date.now() - days * DAY));
  return path.basename(file, '.json');
}

const usersOf = async (store) => (await store.list()).map((s) => `${s.userId} ${s.workspaceId}`);

describe('cleanup()', () => {
  test('removes sessions not updated within the TTL, with all their files, and keeps fresh ones', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/old'],
      ['bob', '/old'],
      ['carol', '/fresh'],
    ]);
    const stems = [age(dataDir, 'alice', '/old', 10), age(dataDir, 'bob', '/old', 3)];
    const store = await box.open(dataDir);

    const report = await store.cleanup({ ttlDays: 2 });
    expect(report).toEqual({ scanned: 3, removed: 2, kept: 1, inUse: 0, tempFilesRemoved: 0, errors: [] });
    expect(await usersOf(store)).toEqual(['carol /fresh']);
    for (const stem of stems) expect(filesIn(dataDir).filter((f) => f.startsWith(stem))).toEqual([]);

    // An expired session that comes back starts over.
    expect((await store.load('alice', '/old')).created).toBe(true);
    expect((await store.load('carol', '/fresh')).session.memory).toEqual({ note: 'kept?' });
  });

  test('judges age against `now` and the given ttlDays, or the store ttlDays by default', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/a'],
      ['bob', '/b'],
    ]);
    const store = await box.open(dataDir, { ttlDays: 7 });

    // Three days from now, nothing is older than five days, nor older than the store's seven.
    const inThreeDays = Date.now() + 3 * DAY;
    expect(await store.cleanup({ ttlDays: 5, now: inThreeDays })).toMatchObject({ scanned: 2, removed: 0, kept: 2 });
    expect(await store.cleanup({ now: inThreeDays })).toMatchObject({ removed: 0, kept: 2 });
    expect(await store.cleanup()).toMatchObject({ removed: 0, kept: 2 });
    expect(await usersOf(store)).toHaveLength(2);

    // With a one-day TTL they are older than that.
    const report = await store.cleanup({ ttlDays: 1, now: inThreeDays });
    expect(report).toMatchObject({ scanned: 2, removed: 2, kept: 0, inUse: 0, errors: [] });
    expect(await store.list()).toEqual([]);
    expect(sessionFiles(dataDir)).toEqual([]);

    // The store's own TTL applies when none is given.
    await store.merge('carol', '/c', { memory: { k: 1 } });
    await store.close();
    const sevenDays = await box.open(dataDir, { ttlDays: 7 });
    expect(await sevenDays.cleanup({ now: Date.now() + 6 * DAY })).toMatchObject({ removed: 0 });
    expect(await sevenDays.cleanup({ now: Date.now() + 8 * DAY })).toMatchObject({ removed: 1 });
  });

  test('keeps a session loaded in this store (in use) and it stays usable', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/proj'],
      ['bob', '/proj'],
    ]);
    const store = await box.open(dataDir);
    await store.load('alice', '/proj');

    const report = await store.cleanup({ ttlDays: 1, now: Date.now() + 3 * DAY });
    expect(report).toMatchObject({ scanned: 2, removed: 1, inUse: 1, errors: [] });
    expect(await usersOf(store)).toEqual(['alice /proj']);

    const merged = await store.merge('alice', '/proj', { memory: { still: 'here' } }, { returnSession: true });
    expect(merged.session.memory).toEqual({ note: 'kept?', still: 'here' });
    await store.close();
    const reader = await box.open(dataDir);
    expect((await reader.load('alice', '/proj')).session.memory).toEqual({ note: 'kept?', still: 'here' });
  });

  test('a session that a second store saves during the sweep survives it', async () => {
    const count = 150;
    const pairs = Array.from({ length: count }, (_, i) => [`user-${String(i).padStart(3, '0')}`, '/proj']);
    const dataDir = await dirWithSessions(pairs);
    for (const [user, workspace] of pairs) age(dataDir, user, workspace, 30);

    const sweeper = await box.open(dataDir);
    const writer = await box.open(dataDir);
    // The writer touches every third session, from the end of the list, while the sweep runs.
    const touched = pairs.filter((_, i) => i % 3 === 0).reverse();
    const writes = (async () => {
      for (const [user, workspace] of touched) {
        await writer.merge(user, workspace, { memory: { touched: 'during the sweep' } });
        await writer.save(user, workspace);
      }
    })();
    const [report] = await Promise.all([sweeper.cleanup({ ttlDays: 7 }), writes]);
    await writer.close();

    expect(report.errors).toEqual([]);
    expect(report.scanned).toBe(count);
    expect(report.removed + report.kept).toBe(count);
    expect(report.removed).toBeGreaterThanOrEqual(count - touched.length);

    const reader = await box.open(dataDir);
    const left = await usersOf(reader);
    for (const [user, workspace] of touched) {
      expect(left).toContain(`${user} ${workspace}`);
      const { session } = await reader.load(user, workspace);
      expect(session.memory.touched).toBe('during the sweep');
    }
    for (const [user, workspace] of pairs.filter((_, i) => i % 3 !== 0)) {
      expect(left).not.toContain(`${user} ${workspace}`);
    }
  });

  test('removes stale temp files of interrupted writes, and only those', async () => {
    const dataDir = await dirWithSessions([['alice', '/proj']]);
    const stem = path.basename(storedSession(dataDir, 'alice', '/proj').file, '.json');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600 * 1000);
    const stale = ['.x.tmp', `.${stem}.4242.7.tmp`];
    const keep = ['.fresh-write.tmp', 'notes.tmp', 'README.txt'];
    for (const name of [...stale, ...keep]) fs.writeFileSync(path.join(dataDir, name), 'partial');
    for (const name of [...stale, 'notes.tmp', 'README.txt']) fs.utimesSync(path.join(dataDir, name), twoHoursAgo, twoHoursAgo);

    const store = await box.open(dataDir);
    const report = await store.cleanup();
    expect(report).toMatchObject({ tempFilesRemoved: 2, removed: 0, kept: 1, errors: [] });
    const files = filesIn(dataDir);
    for (const name of stale) expect(files).not.toContain(name);
    for (const name of keep) expect(files).toContain(name);
    expect((await store.load('alice', '/proj')).session.memory).toEqual({ note: 'kept?' });
  });

  test('never deletes a file it cannot read, nor files kept aside as corrupt', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/proj'],
      ['bob', '/proj'],
    ]);
    const { file } = storedSession(dataDir, 'alice', '/proj');
    const longAgo = new Date(Date.now() - 400 * DAY);
    fs.writeFileSync(file, '{"updatedAt": "1999-01-01T00:00:00.000Z", truncated');
    fs.utimesSync(file, longAgo, longAgo);
    const aside = `${file}.corrupt-946684800000`;
    fs.writeFileSync(aside, 'kept for the operator');
    fs.utimesSync(aside, longAgo, longAgo);

    const store = await box.open(dataDir);
    const report = await store.cleanup({ ttlDays: 1, now: Date.now() + 1000 * DAY });
    expect(report).toMatchObject({ scanned: 2, removed: 1, kept: 1 });
    expect(fs.readFileSync(file, 'utf8')).toContain('truncated');
    expect(fs.readFileSync(aside, 'utf8')).toBe('kept for the operator');
    // It is left for load to recover.
    expect((await store.load('alice', '/proj')).recovered).toBe(true);
  });

  test('an infinite TTL never removes a session', async () => {
    // Either the option is refused (EINVALID) or it means "never expire": what must not happen is
    // that it silently becomes the 30-day default and sessions are removed.
    const dataDir = await dirWithSessions([['alice', '/proj']]);
    const store = await box.open(dataDir);
    const farFuture = Date.now() + 1000 * DAY;
    for (const ttlDays of [Infinity, NaN]) {
      const outcome = await store.cleanup({ ttlDays, now: farFuture }).then(
        (report) => ({ report }),
        (error) => ({ error }),
      );
      if (outcome.error) expect(outcome.error).toMatchObject({ code: 'EINVALID' });
      else expect(outcome.report.removed).toBe(0);
      expect(await usersOf(store)).toEqual(['alice /proj']);
    }

    const opened = await NarrativeSessionStore.open({ dataDir, ttlDays: Infinity, ...QUIET }).then(
      (s) => ({ store: box.track(s) }),
      (error) => ({ error }),
    );
    if (opened.error) {
      expect(opened.error).toMatchObject({ code: 'EINVALID' });
    } else {
      const report = await opened.store.cleanup({ now: farFuture });
      expect(report.removed).toBe(0);
    }
    expect(await usersOf(store)).toEqual(['alice /proj']);
  });
});

describe('cleanup on its own', () => {
  test('runs when a store opens: expired sessions of a previous store are removed', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/old'],
      ['bob', '/old'],
      ['carol', '/fresh'],
    ]);
    age(dataDir, 'alice', '/old', 45);
    age(dataDir, 'bob', '/old', 31);

    // Default cleanupIntervalMs: the first sweep runs at open.
    const store = box.track(await NarrativeSessionStore.open({ dataDir, ttlDays: 30, autosaveIntervalMs: 0 }));
    await pollUntil(async () => (await store.list()).length === 1, { what: 'the expired sessions to go' });
    expect(await usersOf(store)).toEqual(['carol /fresh']);
    expect(sessionFiles(dataDir)).toHaveLength(1);
  });

  test('runs every cleanupIntervalMs', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/proj'],
      ['bob', '/proj'],
      ['carol', '/old'],
    ]);
    age(dataDir, 'carol', '/old', 60);
    const store = await box.open(dataDir, { ttlDays: 30, cleanupIntervalMs: 100 });
    // The sweep at open has run once carol's expired session is gone; alice and bob were fresh then.
    await pollUntil(async () => (await store.list()).length === 2, { what: 'the sweep at open' });
    expect(await usersOf(store)).toEqual(['alice /proj', 'bob /proj']);
    // The session expires while the store runs (it is not loaded there).
    age(dataDir, 'bob', '/proj', 60);
    await pollUntil(async () => (await store.list()).length === 1, { what: 'the periodic sweep' });
    expect(await usersOf(store)).toEqual(['alice /proj']);
  });

  test('does not run at all with cleanupIntervalMs: 0', async () => {
    const dataDir = await dirWithSessions([['alice', '/old']]);
    age(dataDir, 'alice', '/old', 90);
    const store = await box.open(dataDir, { ttlDays: 30, cleanupIntervalMs: 0 });
    // Nothing can announce that nothing happens: a stretch of time passes, and no sweep runs.
    await sleep(300);
    expect(await usersOf(store)).toEqual(['alice /old']);
    // An explicit cleanup still works.
    expect(await store.cleanup()).toMatchObject({ removed: 1 });
  });

  test('stops at close()', async () => {
    const dataDir = await dirWithSessions([
      ['alice', '/proj'],
      ['carol', '/old'],
    ]);
    age(dataDir, 'carol', '/old', 60);
    const store = await box.open(dataDir, { ttlDays: 30, cleanupIntervalMs: 50 });
    await pollUntil(async () => (await store.list()).length === 1, { what: 'a sweep to remove carol' });
    await store.close();
    age(dataDir, 'alice', '/proj', 60);
    // Nothing can announce that nothing happens: several intervals pass, and no sweep removes alice.
    await sleep(300);
    expect(sessionFiles(dataDir)).toHaveLength(1);
  });
});
