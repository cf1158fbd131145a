'use strict';
// Every durable path of the store, one after another, each followed by an "ACK <what>" line written
// straight to stdout (one write(2) each) once its promise resolves:
//   node durable-probe.js <dataDir>
// syscalls.spec.js runs it under strace and checks that, at every ACK, everything it acknowledges
// was synced: journal appends fdatasync'ed, snapshots fsync'ed, renames and new files made durable
// by an fsync of the directory.

const fs = require('fs');
const { NarrativeSessionStore } = require('../../index');

const dataDir = process.argv[2];
const ack = (what) => fs.writeSync(1, `ACK ${what}\n`);
const durable = { durable: true, returnSession: false };

async function main() {
  let store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  await store.merge('alice', '/w', { memory: { a: 1 } }, durable);
  ack('first durable merge of a new session (snapshot, then a new journal)');
  await store.merge('alice', '/w', { memory: { b: 2 } }, durable);
  ack('durable merge (append)');
  await store.merge('alice', '/w', { memory: { big: 'x'.repeat(20000) } }, durable);
  ack('durable merge that compacts (the journal outgrew the snapshot)');
  await store.merge('alice', '/w', { memory: { c: 3 } });
  await store.save('alice', '/w');
  ack('save after a merge');
  await store.merge('bob', '/w', { memory: { d: 4 } });
  await store.flush();
  ack('flush');
  await store.merge('alice', '/w', { memory: { e: 5 } });
  await store.close();
  ack('close (compacts every journal)');
  store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  await store.merge('alice', '/w', { memory: { f: 6 } }, durable);
  ack('durable merge after a restart');
  await store.close();
  ack('second close');
}

main().catch((err) => {
  process.stderr.write(`durable-probe failed: ${err && err.code} ${err && err.message}\n`);
  process.exit(1);
});
