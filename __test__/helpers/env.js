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

/** The stored session (parsed main file) of one user and workspace, or undefined. */
function storedSession(dir, userId, workspaceId) {
  for (const file of sessionFiles(dir)) {
    const session = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (session.userId === userId && session.workspaceId === workspaceId) return { file, session };
  }
  return undefined;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
  fs.writeFileSync(file, JSON.stringify(session));
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
  sleep,
  pollUntil,
  runNode,
  ageSessionFile,
};
