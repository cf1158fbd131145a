'use strict';
// A host that registers a merge listener and never unsubscribes:
//   node listener-child.js <dataDir> <close|no-close>
// The store keeps its default autosave and cleanup timers. After its work, the script does nothing
// more; Node must exit by itself. It prints the merge event it heard as JSON on stdout.

const { NarrativeSessionStore } = require('../../index');

const [dataDir, mode] = process.argv.slice(2);

async function main() {
  const store = await NarrativeSessionStore.open({ dataDir });
  const heard = new Promise((resolve) => {
    store.onMerge((event) => resolve(event)); // never unsubscribed
  });
  await store.merge('child-user', '/child/workspace', { memory: { from: 'child' } }, { origin: 'socket-1' });
  const event = await heard;
  await store.save('child-user', '/child/workspace');
  if (mode === 'close') await store.close();
  process.stdout.write(JSON.stringify(event));
}

main().catch((err) => {
  process.stderr.write(`child failed: ${err && err.code} ${err && err.message}\n`);
  process.exitCode = 1;
});
