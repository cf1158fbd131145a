'use strict';
// Numbers JSON cannot hold. JSON.stringify writes Infinity, -Infinity and NaN as null, and a null
// in `memory` or `config` deletes the key: an update holding one must be refused with EINVALID and
// change nothing, from the API and from the socket (where `1e309` in the message's JSON text
// parses to Infinity). A real null still deletes.

const { sandbox } = require('./helpers/env');
const { startNarrativeServer, clientPool } = require('./helpers/ws-server');
const { mergeSessions } = require('../index');

const USER = 'alice';
const WORKSPACE = '/home/alice/proj';

let box;
let server;
const pool = clientPool(() => server);

beforeEach(() => {
  box = sandbox();
});

afterEach(async () => {
  await pool.closeAll();
  if (server) await server.close();
  server = undefined;
  await box.dispose();
});

const BAD_UPDATES = [
  ['Infinity in memory', { memory: { keep: Infinity } }],
  ['-Infinity in memory', { memory: { keep: -Infinity } }],
  ['NaN in config', { config: { theme: NaN } }],
  ['NaN inside an array', { memory: { list: [1, NaN, 3] } }],
  ['Infinity deep in an object', { memory: { nested: { a: { b: Infinity } } } }],
  ['Infinity beside a real deletion', { memory: { scratch: null, keep: Infinity } }],
  ['Infinity in a story position', { storyPosition: { arc: 'a', beat: Infinity } }],
  ['NaN in a chart', { activeCharts: [{ id: 'c1', weight: NaN }] }],
  ['Infinity in a beat', { storyBeats: [{ id: 'b9', description: 'x', size: Infinity }] }],
];

test.each(BAD_UPDATES)('merge refuses %s with EINVALID and changes nothing', async (_, update) => {
  const store = await box.open(box.tempDir('mia-finite-'));
  const before = await store.merge(USER, WORKSPACE, {
    memory: { keep: 'me', scratch: 'x', list: [1], nested: { a: { b: 1 } } },
    config: { theme: 'dark' },
    storyPosition: { arc: 'a', beat: 1 },
    activeCharts: [{ id: 'c1', title: 'chart' }],
  }, { returnSession: true });
  const error = await store.merge(USER, WORKSPACE, update, { durable: true }).then(
    () => undefined,
    (err) => err,
  );
  expect(error).toMatchObject({ code: 'EINVALID' });
  expect(error.message).toMatch(/JSON cannot hold/);
  const after = await store.load(USER, WORKSPACE);
  expect(after.session).toEqual(before.session);
});

test('a real null still deletes, and a string that says "null" is taken as it is', async () => {
  const store = await box.open(box.tempDir('mia-finite-'));
  await store.merge(USER, WORKSPACE, { memory: { keep: 'me', scratch: 'x' } });
  const result = await store.merge(USER, WORKSPACE, { memory: { scratch: null, note: 'null', big: 1e308 } }, { returnSession: true });
  expect(result.changes.sort()).toEqual(['memory.big', 'memory.note', 'memory.scratch']);
  expect(result.session.memory).toEqual({ keep: 'me', note: 'null', big: 1e308 });
});

test('every object argument refuses a number JSON cannot hold', async () => {
  const store = await box.open(box.tempDir('mia-finite-'));
  const { session } = await store.load(USER, WORKSPACE);
  expect(() => mergeSessions({ ...session, memory: { k: NaN } }, session)).toThrow(
    expect.objectContaining({ code: 'EINVALID' }),
  );
  await expect(store.cleanup({ ttlDays: Infinity })).rejects.toMatchObject({ code: 'EINVALID' });
});

test('over the socket, 1e309 in the message text is refused with EINVALID and nothing changes', async () => {
  server = await startNarrativeServer({ dataDir: box.tempDir('mia-finite-ws-') });
  const client = pool.connect({ user: USER, workspace: WORKSPACE });
  await client.restored();
  await client.updateAndAck({ memory: { keep: 'me' } });

  for (const [traceId, number] of [
    ['plus', '1e309'],
    ['minus', '-1e309'],
  ]) {
    client.sendRaw(`{"type":"session-update","traceId":"${traceId}","payload":{"memory":{"keep":${number}}}}`);
    const reply = await client.next((m) => m.traceId === traceId, { what: `the reply to ${traceId}` });
    expect(reply).toMatchObject({ type: 'error', payload: { code: 'EINVALID' } });
  }
  const { session } = await server.store.load(USER, WORKSPACE);
  expect(session.memory).toEqual({ keep: 'me' });
});
