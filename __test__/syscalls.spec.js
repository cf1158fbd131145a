'use strict';
// The real system calls behind every acknowledgement. The durable paths run under strace; at each
// "ACK" the probe prints, everything it acknowledges must already be on the disk as Linux promises
// it: each journal append fdatasync'ed, each snapshot fsync'ed before its rename, and each rename,
// link and new file followed by an fsync of the directory. (A kill -9 test cannot see a missing
// sync: the page cache survives the process. A power loss would not forgive it.)

const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const { sandbox } = require('./helpers/env');

const PROBE = path.join(__dirname, 'helpers', 'durable-probe.js');
const STRACE = ['/usr/bin/strace', '/bin/strace'].find((p) => fs.existsSync(p));
const TRACED = 'write,fsync,fdatasync,rename,renameat,renameat2,link,linkat,openat,statx,newfstatat';

let box;
beforeEach(() => {
  box = sandbox();
});
afterEach(async () => {
  await box.dispose();
});

/**
 * The completed calls of an strace -f -y log, in order: { name, args, result }. A call split by
 * another thread's ("<unfinished ...>", then "<... name resumed>") counts where it completed.
 */
function completedCalls(log) {
  const open = new Map();
  const calls = [];
  for (const line of log.split('\n')) {
    // strace pads the pid column ("2823  write(...)" but "31440 write(...)").
    let m = line.match(/^(\d+) +(\w+)\((.*) <unfinished \.\.\.>$/);
    if (m) {
      open.set(m[1], { name: m[2], args: m[3] });
      continue;
    }
    m = line.match(/^(\d+) +<\.\.\. (\w+) resumed>(.*)\) += (.*)$/);
    if (m) {
      const start = open.get(m[1]) || { name: m[2], args: '' };
      open.delete(m[1]);
      calls.push({ name: start.name, args: start.args + m[3], result: m[4] });
      continue;
    }
    m = line.match(/^(\d+) +(\w+)\((.*)\) += (.*)$/);
    if (m) calls.push({ name: m[2], args: m[3], result: m[4] });
  }
  return calls;
}

/** The path strace -y shows for the call's first argument (a descriptor): `23</dir/file>`. */
const fdPath = (args) => (args.match(/^\d+<([^>]*)>/) || [])[1];
/** The quoted paths in the call's arguments. */
const quoted = (args) => [...args.matchAll(/"([^"]*)"/g)].map((m) => m[1]);

/**
 * Walks the calls and returns, for each ACK, what was not yet durable when it was written:
 * files written since their last sync, and names created, linked or renamed in the data dir since
 * its last fsync.
 */
function unsyncedAtEachAck(calls, dataDir) {
  const dirty = new Set();
  let dirOps = [];
  const absent = new Set();
  const acks = [];
  const inDir = (p) => p && path.dirname(p) === dataDir;
  for (const { name, args, result } of calls) {
    const ok = !result.startsWith('-1');
    if (name === 'write' && args.includes('"ACK ')) {
      acks.push({ what: args.match(/"ACK ([^"\\]*)/)[1], unsynced: [...dirty, ...dirOps] });
    } else if (name === 'write' && ok && inDir(fdPath(args))) {
      dirty.add(`write to ${path.basename(fdPath(args))}`);
    } else if ((name === 'fsync' || name === 'fdatasync') && ok) {
      const p = fdPath(args);
      if (p === dataDir) dirOps = [];
      else dirty.delete(`write to ${path.basename(p)}`);
    } else if (/^(rename|renameat2?|link|linkat)$/.test(name) && ok) {
      const [, to] = quoted(args);
      if (inDir(to)) dirOps.push(`${name} to ${path.basename(to)}`);
    } else if ((name === 'statx' || name === 'newfstatat') && !ok) {
      const [p] = quoted(args);
      if (inDir(p)) absent.add(p);
    } else if (name === 'openat' && ok && args.includes('O_CREAT')) {
      const [p] = quoted(args);
      // A file that was not there: its name is new until the directory is synced.
      if (inDir(p) && absent.has(p) && !args.includes('O_EXCL')) dirOps.push(`new ${path.basename(p)}`);
      absent.delete(p);
    } else if (name === 'openat' && ok) {
      absent.delete(quoted(args)[0]);
    }
  }
  return acks;
}

const runTraced = (dataDir, log) =>
  spawnSync(STRACE, ['-f', '-y', '-qq', '-s', '256', '-e', `trace=${TRACED}`, '-o', log, process.execPath, PROBE, dataDir], {
    encoding: 'utf8',
    timeout: 60000,
  });

(STRACE ? test : test.skip)('every durable path syncs what it acknowledges before it acknowledges it', () => {
  const root = box.tempDir();
  const dataDir = path.join(root, 'sessions');
  const log = path.join(root, 'strace.log');
  const run = runTraced(dataDir, log);
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  const acks = unsyncedAtEachAck(completedCalls(fs.readFileSync(log, 'utf8')), dataDir);
  expect(acks.map((a) => a.what)).toEqual(run.stdout.trim().split('\n').map((l) => l.slice(4)));
  expect(acks).toHaveLength(8);
  for (const ack of acks) expect({ ack: ack.what, unsynced: ack.unsynced }).toEqual({ ack: ack.what, unsynced: [] });
});

if (!STRACE) {
  test('strace is missing', () => {
    process.stdout.write('syscalls.spec.js skipped: strace is not installed (apt-get install strace)\n');
  });
}

// The checker itself, on logs with a sync missing: it must see each omission.
test('the checker finds an append, a snapshot and a rename that were not synced', () => {
  const dir = '/d';
  const log = [
    '1 write(5</d/S.journal>, "x", 1) = 1',
    '1 write(1<pipe:[1]>, "ACK append\\n", 11) = 11',
    '1 fdatasync(5</d/S.journal>) = 0',
    '1 write(6</d/.S.1.tmp>, "{}", 2) = 2',
    '1 rename("/d/.S.1.tmp", "/d/S.json" <unfinished ...>',
    '2 write(1<pipe:[1]>, "ACK snapshot\\n", 13) = 13',
    '1 <... rename resumed>) = 0',
    '1 fsync(6</d/.S.1.tmp>) = 0',
    '1 write(1<pipe:[1]>, "ACK rename\\n", 11) = 11',
    '1 fsync(7</d>) = 0',
    '1 write(1<pipe:[1]>, "ACK all\\n", 8) = 8',
  ].join('\n');
  const acks = unsyncedAtEachAck(completedCalls(log), dir);
  expect(acks).toEqual([
    { what: 'append', unsynced: ['write to S.journal'] },
    { what: 'snapshot', unsynced: ['write to .S.1.tmp'] },
    { what: 'rename', unsynced: ['rename to S.json'] },
    { what: 'all', unsynced: [] },
  ]);
});
