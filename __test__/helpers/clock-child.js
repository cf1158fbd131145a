'use strict';
// A host process driven over stdin, for tests that run it under a clock of their choosing
// (`faketime '2100-01-01 00:00:00' node clock-child.js <dataDir>`):
//   in:  one JSON command per line: { op: 'merge', userId, workspaceId, update }
//                                   { op: 'load', userId, workspaceId } | { op: 'close' }
//                                   { op: 'until', userId, workspaceId, key, value }: waits until
//                                     the session holds `value` at memory[key]
//   out: one JSON line per command: { result } or { error: { code, message } }
// The first line out is { ready: true, now: Date.now() }, so a test can check which clock it has.

const readline = require('node:readline');

const { NarrativeSessionStore } = require('../../index');

const [dataDir] = process.argv.slice(2);

async function main() {
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  const reply = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);
  reply({ ready: true, now: Date.now() });
  const lines = readline.createInterface({ input: process.stdin });
  // One command at a time, in order.
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    queue = queue.then(async () => {
      const command = JSON.parse(line);
      try {
        switch (command.op) {
          case 'merge':
            reply({
              result: await store.merge(command.userId, command.workspaceId, command.update, {
                durable: true,
                returnSession: false,
              }),
            });
            break;
          case 'load':
            reply({ result: (await store.load(command.userId, command.workspaceId)).session });
            break;
          case 'until':
            // Resolves once the session holds `value` at memory[key]: checked now, then at each merge.
            await new Promise((resolve, reject) => {
              const check = () =>
                store.load(command.userId, command.workspaceId).then(({ session }) => {
                  if (JSON.stringify(session.memory[command.key]) !== JSON.stringify(command.value)) return;
                  off();
                  resolve();
                }, reject);
              const off = store.onMerge(check);
              check();
            });
            reply({ result: true });
            break;
          case 'close':
            await store.close();
            reply({ result: true });
            lines.close();
            break;
          default:
            reply({ error: { code: 'EINVALID', message: `unknown op ${command.op}` } });
        }
      } catch (err) {
        reply({ error: { code: err.code, message: err.message } });
      }
    });
  });
}

main().catch((err) => {
  process.stderr.write(`clock-child failed: ${err && err.code} ${err && err.message}\n`);
  process.exitCode = 1;
});
