'use strict';
// A fresh store in its own process, looking at what is on disk:
//   node read-session.js <dataDir> <userId> <workspaceId>
// Prints `{ found, created, recovered, session }` as JSON. A session the data dir does not list is
// reported as not found without being loaded (loading would create it). The process exits without
// closing the store: close() compacts the journal into the snapshot, and a reader must not change
// what it reads.

const { NarrativeSessionStore } = require('../../index');

const [dataDir, userId, workspaceId] = process.argv.slice(2);

async function main() {
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  const listed = (await store.list()).some((s) => s.userId === userId && s.workspaceId === workspaceId);
  if (!listed) return { found: false };
  const { session, created, recovered } = await store.load(userId, workspaceId);
  return { found: true, created, recovered, session };
}

main().then(
  (result) => {
    // Writes to a pipe are synchronous on Linux and macOS, so nothing is lost by exiting at once.
    process.stdout.write(JSON.stringify(result), () => process.exit(0));
  },
  (err) => {
    process.stderr.write(`read-session failed: ${err && err.code} ${err && err.message}\n`);
    process.exit(1);
  },
);
