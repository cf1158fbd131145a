'use strict';
// A server process that merges durably into one shared session until it is killed:
//   node kill-writer.js '<open options as JSON>' <tag>
// It loads the addon and prints "ready", then waits for SIGUSR1 before it opens its store, so that
// two writers released together open the same data dir at the same moment (as two server processes
// started together do). Then, forever: merge one conversation entry `<tag>-<n>` (content of 50 to
// 30,000 bytes, so snapshots grow and journals compact often) and `memory["last<tag>"] = n`, durably,
// and print `n` once the merge resolves: a printed number is an acknowledged durable write.
// Output goes through writeSync, so nothing acknowledged sits in a stream buffer when SIGKILL comes.

const fs = require('fs');
const { NarrativeSessionStore } = require('../../index');

const [optionsText, tag] = process.argv.slice(2);
const options = JSON.parse(optionsText);

async function run() {
  const store = await NarrativeSessionStore.open(options);
  for (let n = 0; ; n++) {
    const content = 'z'.repeat(50 + Math.floor(Math.random() * 30000));
    await store.merge(
      'u',
      'w',
      { conversationHistory: [{ id: `${tag}-${n}`, role: 'user', content }], memory: { [`last${tag}`]: n } },
      { durable: true, returnSession: false },
    );
    fs.writeSync(1, `${n}\n`);
  }
}

process.once('SIGUSR1', () => {
  run().catch((err) => {
    fs.writeSync(2, `kill-writer ${tag} failed: ${err && err.code} ${err && err.message}\n`);
    process.exit(1);
  });
});
// Keeps the process alive until the signal.
const idle = setInterval(() => {}, 1 << 30);
process.once('SIGUSR1', () => clearInterval(idle));
fs.writeSync(1, 'ready\n');
