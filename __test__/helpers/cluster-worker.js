'use strict';
// One store instance of a deployment on a Redis Cluster, in its own process. Forked with IPC by
// redis-cluster.spec.js:   node cluster-worker.js '<options JSON>'
//   { redisUrl: [...seeds], keyPrefix, tag, sessions: [[userId, workspaceId], ...],
//     redisWaitReplicas?, redisWaitTimeoutMs? }
// It opens a store, loads every session, listens to merge events, says { type: 'ready' } and waits
// for 'go'. Then it merges round-robin into the sessions one conversation entry `<tag>-<i>` at a
// time with durable: true, as the WebSocket handler does, and reports { type: 'ack', session, id }
// for each one acknowledged. A merge refused with EUNAVAILABLE (a failover under way, a replica that
// did not confirm) is reported { type: 'refused', session, id, code } and acknowledged by the first
// save() that succeeds after it (the change stays in the store meanwhile), as a client retrying
// would have it. Messages from the test:
//   'stop'                    stop merging; reports { type: 'stopped', unacked } (a write still refused)
//   { type: 'expect', ids }   waits until the listener heard each id as an external change (or 20 s);
//                             reports { type: 'heard', missing }
//   'close'                   closes the store, reports { type: 'closed' } and exits

const { NarrativeSessionStore } = require('../../index');

const options = JSON.parse(process.argv[2]);
const { tag, sessions } = options;

let stopping = false;
const heard = new Set();
let wake = () => {};

const send = (message) => new Promise((resolve) => process.send(message, () => resolve()));
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const store = await NarrativeSessionStore.open({
    backend: 'redis',
    redisUrl: options.redisUrl,
    keyPrefix: options.keyPrefix,
    ...(options.redisWaitReplicas !== undefined && { redisWaitReplicas: options.redisWaitReplicas }),
    ...(options.redisWaitTimeoutMs !== undefined && { redisWaitTimeoutMs: options.redisWaitTimeoutMs }),
    autosaveIntervalMs: 0,
    cleanupIntervalMs: 0,
  });
  store.onMerge((event) => {
    if (event.origin !== 'external') return;
    for (const change of event.changes) heard.add(change.replace(/^conversationHistory\./, ''));
    wake();
  });
  for (const [userId, workspaceId] of sessions) await store.load(userId, workspaceId);

  process.on('message', async (message) => {
    if (message === 'go') run(store).catch(fail);
    else if (message === 'stop') stopping = true;
    else if (message === 'close') {
      await store.close().catch(() => {});
      await send({ type: 'closed' });
      process.exit(0);
    } else if (message && message.type === 'expect') {
      const deadline = Date.now() + 20000;
      const missing = () => message.ids.filter((id) => !heard.has(id));
      while (missing().length > 0 && Date.now() < deadline) {
        await new Promise((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100);
        });
      }
      await send({ type: 'heard', missing: missing() });
    }
  });
  await send({ type: 'ready' });
}

async function run(store) {
  let unacked = null;
  for (let i = 0; !stopping; i++) {
    const session = i % sessions.length;
    const [userId, workspaceId] = sessions[session];
    const id = `${tag}-${i}`;
    const update = { conversationHistory: [{ id, role: 'user', content: `message ${i} from ${tag}` }] };
    try {
      await store.merge(userId, workspaceId, update, { origin: tag, returnSession: false, durable: true });
      await send({ type: 'ack', session, id });
      continue;
    } catch (err) {
      if (err.code !== 'EUNAVAILABLE') throw err;
      await send({ type: 'refused', session, id, code: err.code, message: err.message });
    }
    // The change is in the store, unsaved: the first save that succeeds acknowledges it.
    unacked = id;
    while (!stopping) {
      try {
        await store.save(userId, workspaceId);
        await send({ type: 'ack', session, id, late: true });
        unacked = null;
        break;
      } catch (err) {
        if (err.code !== 'EUNAVAILABLE') throw err;
        await pause(50);
      }
    }
  }
  await send({ type: 'stopped', unacked });
}

function fail(err) {
  process.stderr.write(`worker ${tag} failed: ${err && err.code} ${err && err.stack}\n`);
  process.exit(1);
}

main().catch(fail);
