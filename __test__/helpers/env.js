'use strict';
// Shared helpers for the test suite: real temporary directories, stores that are always closed,
// polling, and running child Node processes. No mocks.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const { NarrativeSessionStore } = require('../../index');

const INDEX = path.resolve(__dirname, '../../index.js');

/** Options that keep timers out of a test unless it is about timers. */
const QUIET = Object.freeze({ autosaveIntervalMs: 0, cleanupIntervalMs: 0 });

/** A sandbox: temporary directories and stores, all cleaned up by `dispose()`. */
function sandbox() {
  const dirs = [];
  const stores = [];
  return {
    /** A fresh, empty temporary directory. */
    tempDir(prefix = 'mia-ns-') {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
      dirs.push(dir);
      return dir;
    },
    /** Opens a store on `dataDir` with timers off (unless `options` says otherwise). */
    async open(dataDir, options = {}) {
      const store = await NarrativeSessionStore.open({ dataDir, ...QUIET, ...options });
      stores.push(store);
      return store;
    },
    /** Remembers a store opened some other way, so that it is closed at the end. */
    track(store) {
      stores.push(store);
      return store;
    },
    async dispose() {
      // close() is idempotent, so stores a test already closed are fine here.
      await Promise.allSettled(stores.splice(0).map((s) => s.close()));
      for (const dir of dirs.splice(0)) await removeDir(dir);
    },
  };
}

/**
 * Removes a directory tree. A store may still create files in its dir for a moment after close()
 * resolves (a bug durability.spec.js reports); that must not fail an unrelated test, so a removal
 * that races with it is tried again from the top.
 */
async function removeDir(dir) {
  for (let attempt = 1; ; attempt++) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
      return;
    } catch (err) {
      if (err.code !== 'ENOTEMPTY' || attempt >= 20) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** The files of a data dir, sorted. */
function filesIn(dir) {
  return fs.readdirSync(dir).sort();
}

/** The main session files (`<64 hex>.json`) of a data dir, as full paths. */
function sessionFiles(dir) {
  return filesIn(dir)
    .filter((f) => /^[0-9a-f]{64}\.json$/.test(f))
    .map((f) => path.join(dir, f));
}

/**
 * The stored snapshot (parsed `<stem>.json`) of one user and workspace, or undefined. Since the
 * journal, a saved change may be in `<stem>.journal` rather than here: to check what is on disk,
 * use `loadInChild` (a fresh store's view), or `readJournal` for the journal itself.
 */
function storedSession(dir, userId, workspaceId) {
  for (const file of sessionFiles(dir)) {
    const session = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (session.userId === userId && session.workspaceId === workspaceId) return { file, session };
  }
  return undefined;
}

/** The journal file beside a snapshot file: `<stem>.json` → `<stem>.journal`. */
function journalOf(snapshotFile) {
  return snapshotFile.replace(/\.json$/, '.journal');
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, as zlib and crc32fast compute it). */
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Reads a journal as the format defines it (docs: src/journal.rs): frames of u32 LE payload length,
 * u32 LE CRC-32 of the payload, JSON payload. Reading stops at the first frame that is cut short,
 * fails its checksum or does not parse. Returns `{ exists, size, end, records, frames }`: `end` is
 * the offset after the last complete record, `records` their parsed payloads, `frames` their
 * `{ offset, length }` (whole frame, header included).
 */
function readJournal(file) {
  if (!fs.existsSync(file)) return { exists: false, size: 0, end: 0, records: [], frames: [] };
  const bytes = fs.readFileSync(file);
  const records = [];
  const frames = [];
  let at = 0;
  while (at + 8 <= bytes.length) {
    const length = bytes.readUInt32LE(at);
    const crc = bytes.readUInt32LE(at + 4);
    if (at + 8 + length > bytes.length) break;
    const payload = bytes.subarray(at + 8, at + 8 + length);
    if (crc32(payload) !== crc) break;
    let record;
    try {
      record = JSON.parse(payload.toString('utf8'));
    } catch {
      break;
    }
    records.push(record);
    frames.push({ offset: at, length: 8 + length });
    at += 8 + length;
  }
  return { exists: true, size: bytes.length, end: at, records, frames };
}

/** What a file looks like on disk (`{ ino, size, mtimeMs }`), or null when it is missing. */
function fileStamp(file) {
  try {
    const { ino, size, mtimeMs } = fs.statSync(file);
    return { ino, size, mtimeMs };
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
}

const READ_SESSION = path.join(__dirname, 'read-session.js');

/**
 * The session as a fresh store in another process finds it on disk (snapshot plus journal): a
 * child Node process opens its own store on `dataDir`, loads the session and exits without
 * closing (a close would compact the journal and so change what is on disk). Resolves with
 * `{ created, recovered, session }`, or undefined when no such session is stored (nothing is
 * created then).
 */
async function loadInChild(dataDir, userId, workspaceId) {
  const run = await runNode([READ_SESSION, dataDir, userId, workspaceId], { killAfterMs: 15000 });
  if (run.code !== 0 || run.stderr !== '') {
    throw new Error(`read-session failed (code ${run.code}, signal ${run.signal}): ${run.stderr}`);
  }
  const result = JSON.parse(run.stdout);
  return result.found ? { created: result.created, recovered: result.recovered, session: result.session } : undefined;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Resolves once the wall clock has moved past the millisecond it was called in, so that a write
 * made after it has a later clock than every write made before it (clocks are in milliseconds).
 */
async function nextMillisecond() {
  const now = Date.now();
  while (Date.now() <= now) await new Promise((resolve) => setImmediate(resolve));
}

/** Calls `check` until it returns something truthy, or throws after `timeoutMs`. */
async function pollUntil(check, { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Runs `node <args>` and resolves with its exit status and output. A child still running after
 * `killAfterMs` is killed (and `killed` is true), so a hang fails the test instead of Jest.
 */
function runNode(args, { env = process.env, killAfterMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, killed });
    });
  });
}

/** Rewrites a stored session file as if it were last updated at `when` (a Date), file time included. */
function ageSessionFile(file, when) {
  const session = JSON.parse(fs.readFileSync(file, 'utf8'));
  session.updatedAt = when.toISOString();
  // Written as an operator's tool would: a new file renamed into place. (Changed in place, the
  // file would keep the store's checksum mark for its old bytes, and rightly be moved aside as
  // damaged.)
  const temp = `${file}.aging`;
  fs.writeFileSync(temp, JSON.stringify(session));
  fs.renameSync(temp, file);
  fs.utimesSync(file, when, when);
}

module.exports = {
  INDEX,
  removeDir,
  QUIET,
  sandbox,
  filesIn,
  sessionFiles,
  storedSession,
  journalOf,
  crc32,
  readJournal,
  fileStamp,
  loadInChild,
  sleep,
  nextMillisecond,
  pollUntil,
  runNode,
  ageSessionFile,
};
