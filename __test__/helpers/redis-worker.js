'use strict';
// One store instance of a multi-instance deployment, in its own process, on a shared Redis. Forked
// with IPC by redis.spec.js:
//   node redis-worker.js <redisUrl> <keyPrefix> <tag> <otherTag> <count> <userId> <workspaceId> [padBytes]
// It opens a store, loads the session, listens to every merge event, says 'ready' and waits for
// 'go'. Then it makes <count> merges, each adding the conversation entry `<tag>-<i>` and setting
// its memory key `from-<tag>`, and acknowledges each one as a server would: even ones by save(),
// odd ones by a durable merge. It says 'written', waits until its listener has heard every entry
// of <otherTag> arrive as an 'external' change (or 15 s pass), closes its store, reports what it
// heard and the entries and memory of the session it held in 'done', and exits. [padBytes] pads each entry's content, so
// that the log outgrows the snapshot often and snapshot writes race with the other's appends.

const { NarrativeSessionStore } = require('../../index');

const [redisUrl, keyPrefix, tag, otherTag, countText, userId, workspaceId, padText] = process.argv.slice(2);
const count = Number(countText);
const pad = 'p'.repeat(Number(padText || 0));

async function main() {
  const store = await NarrativeSessionStore.open({
    backend: 'redis',
    redisUrl,
    keyPrefix,
    autosaveIntervalMs: 0,
    cleanupIntervalMs: 0,
  });
  const events = [];
  let wake = () => {};
  store.onMerge((event) => {
    events.push(event);
    wake();
  });
  await store.load(userId, workspaceId);
  await new Promise((resolve) => {
    process.on('message', (message) => message === 'go' && resolve());
    process.send({ type: 'ready' });
  });

  const acked = [];
  for (let i = 0; i < count; i++) {
    const update = {
      conversationHistory: [{ id: `${tag}-${i}`, role: 'user', content: `message ${i} from ${tag}${pad}` }],
      memory: { [`from-${tag}`]: i + 1 },
    };
    if (i % 2 === 0) {
      await store.merge(userId, workspaceId, update, { origin: tag, returnSession: false });
      await store.save(userId, workspaceId);
    } else {
      await store.merge(userId, workspaceId, update, { origin: tag, returnSession: false, durable: true });
    }
    acked.push(`${tag}-${i}`);
  }
  process.send({ type: 'written', acked });

  const wanted = Array.from({ length: count }, (_, i) => `conversationHistory.${otherTag}-${i}`);
  const heard = () => {
    const external = new Set();
    for (const e of events) if (e.origin === 'external') for (const c of e.changes) external.add(c);
    return external;
  };
  const deadline = Date.now() + 15000;
  while (!wanted.every((c) => heard().has(c)) && Date.now() < deadline) {
    await new Promise((resolve) => {
      wake = resolve;
      setTimeout(resolve, 100);
    });
  }
  const { session } = await store.load(userId, workspaceId);
  await store.close();
  // Ids, not the session (which can be large): the report must be on its way before disconnect.
  await new Promise((resolve, reject) =>
    process.send(
      {
        type: 'done',
        external: [...heard()],
        origins: [...new Set(events.map((e) => e.origin))],
        eventsForOtherSessions: events.filter((e) => e.userId !== userId || e.workspaceId !== workspaceId).length,
        entryIds: session.conversationHistory.map((e) => e.id),
        memory: session.memory,
      },
      (err) => (err ? reject(err) : resolve()),
    ),
  );
}

main().then(
  () => process.disconnect(),
  (err) => {
    process.stderr.write(`worker ${tag} failed: ${err && err.code} ${err && err.message}\n`);
    process.exit(1);
  },
);
