'use strict';
// A server process that acknowledges updates only once they are durable:
//   node ack-writer.js <dataDir> <userId> <workspaceId> <prefix> <count> <exit|close> [contentBytes]
// It opens its own store (timers off), loads the session, then <count> times merges one conversation
// entry `<prefix>-<i>` (and `memory["last-<prefix>"] = <i>`) and saves; after each save resolves it
// prints the entry's id on its own line. Then it exits: with `close`, after close() (which compacts
// the journal); with `exit`, at once, as a crash right after the last acknowledgement would.
// durability and journal tests SIGKILL it mid-stream, or let it finish.

const { NarrativeSessionStore } = require('../../index');

const [dataDir, userId, workspaceId, prefix, countText, mode, contentText] = process.argv.slice(2);
const count = Number(countText);
const padding = 'x'.repeat(Number(contentText || 100));

async function main() {
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  await store.load(userId, workspaceId);
  for (let i = 0; i < count; i++) {
    const id = `${prefix}-${String(i).padStart(6, '0')}`;
    await store.merge(
      userId,
      workspaceId,
      {
        conversationHistory: [{ id, role: 'user', content: `${id} ${padding}` }],
        memory: { [`last-${prefix}`]: i },
      },
      { origin: prefix, returnSession: false },
    );
    await store.save(userId, workspaceId);
    process.stdout.write(`${id}\n`);
  }
  if (mode === 'close') await store.close();
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`ack-writer ${prefix} failed: ${err && err.code} ${err && err.message}\n`);
    process.exit(1);
  },
);
