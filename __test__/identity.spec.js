'use strict';
// Whose session a connection reads and writes is decided by the server alone (docs/protocol.md,
// "Connecting"): never by what a client puts in a message, wherever it puts it, nor by a header that
// only a trusted proxy may set when no proxy is configured. Here alice's tab puts bob's user id,
// user name, workspace and session id everywhere a message has room for them (top level, payload,
// nested, as an array, as a number, as an object) in every message type, and the tests check that
// only alice's own session was ever read or written. Real `ws` clients, a real server, a real store.

const os = require('os');

const { SESSION_MESSAGE_TYPES } = require('../lib/handler');
const { sandbox } = require('./helpers/env');
const { startNarrativeServer, clientPool } = require('./helpers/ws-server');

const WORKSPACE = '/home/alice/proj';
const BOB_WORKSPACE = '/home/bob/secret';
/** Message types a host's own handler takes on the same socket; the handler must leave them alone. */
const HOST_MESSAGE_TYPES = ['auth', 'subscribe', 'unsubscribe', 'replay', 'narrative-event', 'session-event', 'session-restore'];
/** Headers that identify a user only when a proxy in front sets them (and strips them from clients). */
const PROXY_HEADERS = [
  'x-forwarded-user',
  'x-auth-request-user',
  'x-auth-request-email',
  'x-forwarded-email',
  'x-forwarded-preferred-username',
  'x-remote-user',
  'remote-user',
  'x-user',
  'x-pomerium-claim-user',
];

let box;
let server;
const servers = [];
const pool = clientPool(() => server);

beforeEach(async () => {
  box = sandbox();
  server = await start({});
});

afterEach(async () => {
  await pool.closeAll();
  await Promise.allSettled(servers.splice(0).map((s) => s.close()));
  await box.dispose();
});

async function start(options) {
  const s = await startNarrativeServer({ dataDir: box.tempDir('mia-identity-'), ...options });
  servers.push(s);
  return s;
}

/** Every stored session as `user workspace`, sorted. */
async function sessionsOf(on) {
  return (await on.store.list()).map((s) => `${s.userId} ${s.workspaceId}`).sort();
}

/** The session as the server's store holds it (only for sessions known to exist: a load creates). */
async function held(on, user, workspace) {
  return JSON.parse((await on.store.loadRaw(user, workspace)).sessionJson.toString('utf8'));
}

/** Bob has a session in alice's workspace and one in his own, with something in each, and a tab open on each. */
async function bobIsThere(on) {
  const tabs = [];
  for (const workspace of [WORKSPACE, BOB_WORKSPACE]) {
    const tab = pool.connect({ user: 'bob', workspace, label: `bob in ${workspace}`, server: on });
    await tab.restored();
    await tab.updateAndAck({ memory: { secret: `bob's, in ${workspace}` }, universeFocus: 'engineer' });
    tabs.push(tab);
  }
  const sessions = {
    [WORKSPACE]: await held(on, 'bob', WORKSPACE),
    [BOB_WORKSPACE]: await held(on, 'bob', BOB_WORKSPACE),
  };
  return { tabs, sessions };
}

/**
 * The values a spoofing client would try for `key`, aimed at bob: as a string, in an array, as a
 * number and as an object.
 */
function spoofs(key, bobSessionId) {
  const target = { userId: 'bob', user: 'bob', workspaceId: BOB_WORKSPACE, sessionId: bobSessionId }[key];
  return [
    ['a string', target],
    ['an array', [target]],
    ['a number', 42],
    ['an object', { id: target, [key]: target }],
  ];
}

/** Every place in a message where a client could put `key`, each as a function of the value. */
const PLACES = [
  ['at the top level', (key, value, payload) => ({ [key]: value, payload })],
  ['in the payload', (key, value, payload) => ({ payload: { ...payload, [key]: value } })],
  ['as the whole payload', (key, value) => ({ payload: { [key]: value } })],
  ['in payload.session', (key, value, payload) => ({ payload: { ...payload, session: { [key]: value } } })],
  ['in payload.memory', (key, value, payload) => ({ payload: { ...payload, memory: { ...payload.memory, [key]: value } } })],
  ['in a chart', (key, value, payload) => ({ payload: { ...payload, activeCharts: [{ id: 'spoof-chart', [key]: value }] } })],
  ['in an auth object beside the payload', (key, value, payload) => ({ auth: { [key]: value }, payload })],
  ['in a meta object beside the payload', (key, value, payload) => ({ meta: { user: { [key]: value } }, payload })],
  ['in the channel', (key, value, payload) => ({ channel: { [key]: value }, payload })],
];

describe('identity fields in messages', () => {
  test('wherever a message puts userId, user, workspaceId or sessionId, in any message type, only the sender’s own session is read or written', async () => {
    const { tabs: bobTabs, sessions: bobBefore } = await bobIsThere(server);
    const alice = pool.connect({ user: 'alice', workspace: WORKSPACE, label: 'alice (spoofing)' });
    const aliceSession = (await alice.restored()).session;
    const stored = await sessionsOf(server);
    expect(stored).toEqual(['alice /home/alice/proj', 'bob /home/alice/proj', 'bob /home/bob/secret']);

    let n = 0;
    const acked = [];
    const refused = [];
    for (const type of [...SESSION_MESSAGE_TYPES, ...HOST_MESSAGE_TYPES]) {
      for (const key of ['userId', 'user', 'workspaceId', 'sessionId']) {
        for (const [as, value] of spoofs(key, bobBefore[WORKSPACE].id)) {
          for (const [where, place] of PLACES) {
            const traceId = `spoof-${++n}`;
            const what = `${type}: ${key} as ${as} ${where}`;
            const marker = { memory: { [`m${n}`]: what } };
            const message = { type, traceId, ...place(key, value, marker) };
            const carriesMarker = JSON.stringify(message.payload).includes(`"m${n}"`);
            alice.send(message);
            if (!SESSION_MESSAGE_TYPES.includes(type)) continue;
            const reply = await alice.next((m) => m.traceId === traceId, { what: `the reply to ${what}` });
            if (reply.type === 'error') {
              expect({ what, code: reply.payload.code }).toEqual({ what, code: 'EINVALID' });
              refused.push(what);
              continue;
            }
            // An ack, for alice's session and no other.
            const { session } = reply.payload;
            expect({ what, event: reply.payload.event, id: session.id, userId: session.userId, workspaceId: session.workspaceId }).toEqual({
              what,
              event: 'ack',
              id: aliceSession.id,
              userId: 'alice',
              workspaceId: WORKSPACE,
            });
            if (carriesMarker) {
              expect({ what, written: session.memory[`m${n}`] }).toEqual({ what, written: what });
              acked.push(what);
            }
          }
        }
      }
    }
    // Both kinds of outcome happened, so the checks above looked at both.
    expect(acked.length).toBeGreaterThan(20);
    expect(refused.length).toBeGreaterThan(20);

    // The messages for the host got no reply: the next message alice gets is the ack of this one.
    await alice.updateAndAck({ memory: { done: true } }, 'last');
    expect(alice.pending()).toEqual([]);
    expect(alice.messages.filter((m) => m.type === 'error').length).toBe(refused.length);

    // Nothing of bob's was read into alice's messages, or written.
    for (const message of alice.messages) {
      if (message.payload && message.payload.session) expect(message.payload.session.userId).toBe('alice');
    }
    expect(await sessionsOf(server)).toEqual(stored);
    expect(await held(server, 'bob', WORKSPACE)).toEqual(bobBefore[WORKSPACE]);
    expect(await held(server, 'bob', BOB_WORKSPACE)).toEqual(bobBefore[BOB_WORKSPACE]);
    for (const tab of bobTabs) expect(tab.pending()).toEqual([]);
    // And alice's own session holds exactly what was acked.
    const aliceNow = await held(server, 'alice', WORKSPACE);
    expect(aliceNow.id).toBe(aliceSession.id);
    for (const what of acked) expect(Object.values(aliceNow.memory)).toContain(what);
  });

  test('identity fields in the socket URL choose nothing: only ?workspace= (or ?folder=) names the workspace', async () => {
    const { sessions: bobBefore } = await bobIsThere(server);
    const query = { userId: 'bob', user: 'bob', workspaceId: BOB_WORKSPACE, sessionId: bobBefore[BOB_WORKSPACE].id };
    const alice = pool.connect({ user: 'alice', query: { ...query, workspace: WORKSPACE } });
    const { session } = await alice.restored();
    expect(session).toMatchObject({ userId: 'alice', workspaceId: WORKSPACE });
    const ack = await alice.updateAndAck({ memory: { via: 'url' } });
    expect(ack.session).toMatchObject({ userId: 'alice', workspaceId: WORKSPACE, memory: { via: 'url' } });

    const noWorkspace = pool.connect({ user: 'alice', query });
    expect((await noWorkspace.restored()).session).toMatchObject({ userId: 'alice', workspaceId: '(none)' });
    expect(await sessionsOf(server)).toEqual([
      'alice (none)',
      'alice /home/alice/proj',
      'bob /home/alice/proj',
      'bob /home/bob/secret',
    ]);
    expect(await held(server, 'bob', BOB_WORKSPACE)).toEqual(bobBefore[BOB_WORKSPACE]);
  });
});

describe('headers only a trusted proxy may set', () => {
  test('without a proxy configured, none of them changes the user: it is the account the server runs as', async () => {
    const bare = await start({ userHeader: null });
    const { sessions: bobBefore } = await bobIsThereOn(bare);
    const owner = os.userInfo().username;
    for (const header of PROXY_HEADERS) {
      const tab = pool.connect({ server: bare, workspace: WORKSPACE, headers: { [header]: 'bob' }, label: `${header}: bob` });
      const { session } = await tab.restored();
      expect({ header, userId: session.userId }).toEqual({ header, userId: owner });
      const ack = await tab.updateAndAck({ memory: { [header]: 'was sent' } });
      expect({ header, userId: ack.session.userId, id: ack.session.id }).toEqual({ header, userId: owner, id: session.id });
      await tab.close();
    }
    expect(await sessionsOf(bare)).toEqual([`${owner} /home/alice/proj`, 'bob /home/alice/proj'].sort());
    expect(await held(bare, 'bob', WORKSPACE)).toEqual(bobBefore);
  });

  test('with a proxy configured, only its header counts: the others a client adds change nothing', async () => {
    await bobIsThere(server);
    const others = Object.fromEntries(PROXY_HEADERS.filter((h) => h !== 'x-forwarded-user').map((h) => [h, 'bob']));
    const alice = pool.connect({ user: 'alice', workspace: WORKSPACE, headers: { ...others, authorization: 'Basic Ym9iOmJvYg==' } });
    const { session } = await alice.restored();
    expect(session.userId).toBe('alice');
    expect((await alice.updateAndAck({ memory: { k: 1 } })).session.userId).toBe('alice');
    // Without the configured header, the others do not stand in for it.
    const anonymous = pool.connect({ workspace: WORKSPACE, headers: others, label: 'no x-forwarded-user' });
    await anonymous.opened;
    // Refused before anything is restored or sent: closed with 4401 (not authenticated).
    expect((await anonymous.closed).code).toBe(4401);
    expect(anonymous.messages).toEqual([]);
    expect(await sessionsOf(server)).toEqual(['alice /home/alice/proj', 'bob /home/alice/proj', 'bob /home/bob/secret']);
  });
});

/**
 * On a server without a trusted header, "bob" cannot connect as himself over the socket: his
 * session is written through the store, as another process of his would.
 */
async function bobIsThereOn(on) {
  await on.store.merge('bob', WORKSPACE, { memory: { secret: "bob's" } }, { durable: true });
  return { sessions: await held(on, 'bob', WORKSPACE) };
}
