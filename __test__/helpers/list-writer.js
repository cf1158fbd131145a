'use strict';
// A server process that lists and writes until it is killed: node list-writer.js <dataDir> <count> <tag>
// Forever: a durable merge of story beat `<tag>-<n>` into session `user-<n % count>`, printed as
// `<user> <beat>` once acknowledged, then a list() (which rewrites the list index, since a session
// just changed). Output goes through writeSync, so nothing acknowledged waits in a stream buffer
// when SIGKILL comes.

const fs = require('fs');
const { NarrativeSessionStore } = require('../../index');

const [dataDir, countText, tag] = process.argv.slice(2);
const count = Number(countText);

(async () => {
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  fs.writeSync(1, 'ready\n');
  for (let n = 0; ; n++) {
    const userId = `user-${n % count}`;
    const beat = `${tag}-${n}`;
    await store.merge(userId, '/w', { storyBeats: [{ id: beat, description: 'listed', type: 'note' }] }, { durable: true, returnSession: false });
    fs.writeSync(1, `${userId} ${beat}\n`);
    await store.list();
  }
})().catch((err) => {
  fs.writeSync(2, `list-writer failed: ${err && err.code} ${err && err.message}\n`);
  process.exit(1);
});
