'use strict';
// A second server process on the same data dir. Forked with IPC by durability.spec.js:
//   node merge-worker.js <dataDir> <tag> <count> <userId> <workspaceId>
// It loads the session, says 'ready', waits for 'go', then makes <count> merges, each adding one
// conversation entry and setting its own memory key, and saves after each one, as a server does on
// every disconnect. It reports 'done' with the last session it saw, closes and exits.

const { NarrativeSessionStore } = require('../../index');

const [dataDir, tag, countText, userId, workspaceId] = process.argv.slice(2);
const count = Number(countText);

async function main() {
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  await store.load(userId, workspaceId);
  await new Promise((resolve) => {
    process.once('message', (message) => message === 'go' && resolve());
    process.send('ready');
  });
  for (let i = 0; i < count; i++) {
    await store.merge(
      userId,
      workspaceId,
      {
        conversationHistory: [{ id: `${tag}-${i}`, role: 'user', content: `message ${i} from ${tag}` }],
        memory: { [`from-${tag}`]: { written: i + 1 } },
      },
      { origin: tag },
    );
    await store.save(userId, workspaceId);
  }
  await store.close();
  process.send('done');
}

main().then(
  () => process.disconnect(),
  (err) => {
    process.stderr.write(`worker ${tag} failed: ${err && err.code} ${err && err.message}\n`);
    process.exit(1);
  },
);
