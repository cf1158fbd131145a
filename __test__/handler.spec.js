'use strict';
// The narrative WebSocket handler, end to end: real `ws` clients talk to a real node http server
// that hands `/api/ws/narrative` upgrades to `attachNarrativeSession`, backed by a real store on
// a temporary directory. See docs/protocol.md. No mocks.

const fs = require('fs');

const { NarrativeSessionStore } = require('../index');
const { SESSION_MESSAGE_TYPES } = require('../lib/handler');
const { sandbox, storedSession, sessionFiles, journalOf, loadInChild, pollUntil, runNode, INDEX } = require('./helpers/env');
const { startNarrativeServer, clientPool } = require('./helpers/ws-server');

const WORKSPACE = '/home/me/proj';

let box;
let server;
let dataDir;
const servers = [];
const pool = clientPool(() => server);

/** Starts another host (own store) on `dir`; it is closed after the test. */
async function startServer(options) {
  const s = await startNarrativeServer(options);
  servers.push(s);
  return s;
}

beforeEach(async () => {
  box = sandbox();
  dataDir = box.tempDir('mia-ws-');
  server = await startServer({ dataDir });
});

afterEach(async () => {
  await pool.closeAll();
  await Promise.allSettled(servers.splice(0).map((s) => s.close()));
  await box.dispose();
});

/** Connects and waits for the restored session. */
async function open(options) {
  const client = pool.connect(options);
  const restored = await client.restored();
  return { client, restored, session: restored.session };
}

/** What a brand-new connection of `user` in `workspace` is given: the session as the server holds it. */
async function freshLook(user, workspace = WORKSPACE, on = server) {
  const client = pool.connect({ user, workspace, server: on, label: `${user} (fresh look)` });
  const { session } = await client.restored();
  await client.close();
  return session;
}

/** An update that touches every field of a session. */
const EVERYTHING = Object.freeze({
  universeFocus: 'ceremony',
  activeCharts: [
    {
      id: 'c1',
      title: 'Ship v1',
      desiredOutcome: 'v1 in the hands of users',
      currentReality: 'a prototype on a laptop',
      status: 'active',
      actions: [
        { id: 'a1', title: 'write the tests', completed: false, order: 1 },
        { id: 'a2', title: 'deploy', completed: true, completedAt: '2026-11-24T07:00:01.000Z', order: 2 },
      ],
    },
  ],
  storyBeats: [
    {
      id: 'b-1732431601',
      description: 'First deploy',
      type: 'deploy',
      universeAnnotations: { engineer: 'CI is green', story: 'the hero ships' },
    },
  ],
  storyPosition: { arc: 'rising action', beat: 3, phase: 'confrontation' },
  memory: {
    lastFile: 'src/app.ts',
    openTabs: ['src/app.ts', 'README.md'],
    nested: { depth: { deeper: [1, 2, { x: 'y', ok: true, none: null }] }, count: 7 },
  },
  config: { theme: 'dark', panels: { left: ['charts', 'beats'], width: 320 } },
  conversationHistory: [{ id: 'e1', role: 'user', content: 'Where were we, Mia?', universe: 'story' }],
});

describe('connecting', () => {
  test('the first connect creates the session: the first message is restored/created for the header user and the normalised workspace', async () => {
    const client = pool.connect({ user: 'alice', workspace: '/home/me/proj/' });
    await client.opened;
    const first = await client.nextMessage();

    expect(client.messages[0]).toBe(first);
    expect(first).toMatchObject({ type: 'session-event', channel: 'session' });
    expect(typeof first.timestamp).toBe('string');
    expect(Number.isNaN(Date.parse(first.timestamp))).toBe(false);
    expect(first.payload).toMatchObject({ event: 'restored', created: true, recovered: false });
    const { session } = first.payload;
    expect(session).toMatchObject({
      userId: 'alice',
      workspaceId: '/home/me/proj',
      activeCharts: [],
      storyBeats: [],
      conversationHistory: [],
      memory: {},
      config: {},
    });
    expect(session.id).toMatch(/^[0-9a-f]+$/);
    // The first access creates the session without writing it: it is stored by its first save.
    expect(storedSession(dataDir, 'alice', '/home/me/proj')).toBeUndefined();
  });

  test('?folder= names the workspace too, and . / .. / trailing slashes are normalised away', async () => {
    const { restored } = await open({ user: 'alice', folder: '/home/me/other/./src/../' });
    expect(restored.created).toBe(true);
    expect(restored.session.workspaceId).toBe('/home/me/other');
  });

  test('two spellings of the same folder reach the same session', async () => {
    const first = await open({ user: 'alice', workspace: '/home/me/proj/' });
    const second = await open({ user: 'alice', folder: '/home/me/./proj' });
    expect(second.restored.created).toBe(false);
    expect(second.session.id).toBe(first.session.id);
  });

  test('a socket without ?workspace= or ?folder= gets the (none) workspace', async () => {
    const { restored } = await open({ user: 'alice' });
    expect(restored.session.workspaceId).toBe('(none)');
  });

  test('an update sent the moment the socket opens is applied after the restore, and acked after it', async () => {
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE });
    await client.opened;
    client.update({ memory: { early: 'bird' } }, 'early-1');
    const first = await client.nextMessage();
    expect(first.payload).toMatchObject({ event: 'restored', created: true });
    expect(first.payload.session.memory).toEqual({});
    const second = await client.nextMessage();
    expect(second).toMatchObject({ traceId: 'early-1', payload: { event: 'ack', session: { memory: { early: 'bird' } } } });
  });

  test('the handler claims session-update only', () => {
    expect([...SESSION_MESSAGE_TYPES]).toEqual(['session-update']);
  });
});

describe('acks', () => {
  test('the sender gets an ack carrying its traceId, the changed paths and the merged session', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    client.update({ universeFocus: 'ceremony', memory: { lastFile: 'src/app.ts' } }, 'u-17');
    const ack = await client.nextMessage();

    expect(ack).toMatchObject({ type: 'session-event', channel: 'session', traceId: 'u-17' });
    expect(ack.payload.event).toBe('ack');
    expect(ack.payload.changes).toEqual(expect.arrayContaining(['universeFocus', 'memory.lastFile']));
    expect(ack.payload.session).toMatchObject({
      userId: 'alice',
      workspaceId: WORKSPACE,
      universeFocus: 'ceremony',
      memory: { lastFile: 'src/app.ts' },
    });
  });

  test('an update without a traceId is acked without one', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    client.update({ storyPosition: { arc: 'a', beat: 1, phase: 'p' } });
    const ack = await client.nextMessage();
    expect(ack.payload.event).toBe('ack');
    expect(ack).not.toHaveProperty('traceId');
  });

  test('updates from one socket are applied and acked in the order they were sent', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    for (let i = 0; i < 20; i++) client.update({ memory: { counter: i } }, `seq-${i}`);
    let previous = -1;
    for (let i = 0; i < 20; i++) {
      const ack = await client.nextMessage();
      expect(ack.traceId).toBe(`seq-${i}`);
      // The ack comes once the update is applied; the session it carries may already hold later ones.
      const { counter } = ack.payload.session.memory;
      expect(counter).toBeGreaterThanOrEqual(i);
      expect(counter).toBeGreaterThanOrEqual(previous);
      previous = counter;
    }
    expect(previous).toBe(19);
    expect((await freshLook('alice')).memory.counter).toBe(19);
  });
});

describe('reconnecting', () => {
  test('a reconnect restores every field exactly as it was acked', async () => {
    const { client, session: initial } = await open({ user: 'alice', workspace: WORKSPACE });
    const ack = await client.updateAndAck(EVERYTHING);
    const acked = ack.session;
    expect(acked).toMatchObject({
      universeFocus: 'ceremony',
      activeCharts: [
        {
          id: 'c1',
          title: 'Ship v1',
          desiredOutcome: 'v1 in the hands of users',
          currentReality: 'a prototype on a laptop',
          status: 'active',
          actions: [
            { id: 'a1', title: 'write the tests', completed: false, order: 1 },
            { id: 'a2', title: 'deploy', completed: true, completedAt: '2026-11-24T07:00:01.000Z', order: 2 },
          ],
        },
      ],
      storyBeats: [EVERYTHING.storyBeats[0]],
      storyPosition: EVERYTHING.storyPosition,
      memory: EVERYTHING.memory,
      config: EVERYTHING.config,
      conversationHistory: [EVERYTHING.conversationHistory[0]],
    });
    await client.close();

    const { restored } = await open({ user: 'alice', workspace: WORKSPACE });
    expect(restored.created).toBe(false);
    expect(restored.recovered).toBe(false);
    expect(restored.session.id).toBe(initial.id);
    expect(restored.session).toEqual(acked);
  });

  test('a reconnect after the server restarts (a new store on the same directory) restores every field', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    const { session: acked } = await client.updateAndAck(EVERYTHING);
    await client.close();
    await server.close();

    const restarted = await startServer({ dataDir });
    const again = pool.connect({ user: 'alice', workspace: WORKSPACE, server: restarted });
    const restored = await again.restored();
    expect(restored.created).toBe(false);
    expect(restored.session).toEqual(acked);
  });
});

describe('two tabs of one user on one workspace', () => {
  test("each receives the other's changes as merged events from the other connection, and they end in the same state", async () => {
    const a = await open({ user: 'alice', workspace: WORKSPACE, label: 'tab A' });
    const b = await open({ user: 'alice', workspace: WORKSPACE, label: 'tab B' });
    expect(b.session.id).toBe(a.session.id);
    const idA = server.connectionOf(a.client.tag).id;
    const idB = server.connectionOf(b.client.tag).id;
    expect(idA).not.toBe(idB);

    const ackA = await a.client.updateAndAck({ universeFocus: 'engineer', memory: { fromA: { n: 1 } } });
    const mergedAtB = await b.client.nextEvent('merged');
    expect(mergedAtB.payload.origin).toBe(idA);
    expect(mergedAtB.payload.origin).not.toBe('external');
    expect(mergedAtB.payload.changes).toEqual(expect.arrayContaining(['universeFocus', 'memory.fromA']));
    expect(mergedAtB.payload.session).toEqual(ackA.session);

    const ackB = await b.client.updateAndAck({
      storyBeats: [{ id: 'b1', description: 'B was here', type: 'custom' }],
      memory: { fromB: true },
    });
    const mergedAtA = await a.client.nextEvent('merged');
    expect(mergedAtA.payload.origin).toBe(idB);
    expect(mergedAtA.payload.changes).toEqual(expect.arrayContaining(['storyBeats.b1', 'memory.fromB']));
    expect(mergedAtA.payload.session).toEqual(ackB.session);

    // Neither tab hears its own changes echoed back as merged.
    await a.client.expectNothing(() => true, 200, 'further message');
    expect(a.client.messages.filter((m) => m.payload && m.payload.origin === idA)).toEqual([]);
    expect(b.client.messages.filter((m) => m.payload && m.payload.origin === idB)).toEqual([]);
    expect(b.client.pending()).toEqual([]);

    // Both hold what the server holds.
    const server_ = await freshLook('alice');
    expect(mergedAtA.payload.session).toEqual(server_);
    expect(ackB.session).toEqual(server_);
    expect(server_).toMatchObject({ universeFocus: 'engineer', memory: { fromA: { n: 1 }, fromB: true } });
  });

  /**
   * Both tabs fire `perRound` updates at once without waiting, `rounds` times; after each round,
   * once every ack and merged event has arrived, `afterRound` looks at the tabs and the server.
   * Every update adds a new conversation entry and fights over the same memory key.
   */
  async function concurrentRounds({ rounds, perRound, afterRound }) {
    const a = await open({ user: 'alice', workspace: WORKSPACE, label: 'tab A' });
    const b = await open({ user: 'alice', workspace: WORKSPACE, label: 'tab B' });
    const idA = server.connectionOf(a.client.tag).id;
    const idB = server.connectionOf(b.client.tag).id;
    const mergedAt = (client) => client.messages.filter((m) => m.payload && m.payload.event === 'merged');
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < perRound; i++) {
        const n = `${r}.${i}`;
        a.client.update({ conversationHistory: [{ id: `a-${n}`, role: 'user', content: `A${n}` }], memory: { last: `A${n}` } }, `a-${n}`);
        b.client.update({ conversationHistory: [{ id: `b-${n}`, role: 'agent', content: `B${n}` }], memory: { last: `B${n}` } }, `b-${n}`);
      }
      for (let i = 0; i < perRound; i++) {
        const n = `${r}.${i}`;
        await a.client.next((m) => m.traceId === `a-${n}` && m.payload.event === 'ack', { what: `ack a-${n}` });
        await b.client.next((m) => m.traceId === `b-${n}` && m.payload.event === 'ack', { what: `ack b-${n}` });
      }
      // Every merge of the other tab is announced, once.
      const expected = (r + 1) * perRound;
      await pollUntil(() => mergedAt(a.client).length >= expected && mergedAt(b.client).length >= expected, {
        timeoutMs: 5000,
        what: `${expected} merged events at each tab`,
      });
      await a.client.expectNothing(() => true, 100, 'message after the round', { onlyNew: true });
      expect(mergedAt(a.client)).toHaveLength(expected);
      expect(mergedAt(b.client)).toHaveLength(expected);
      expect(new Set(mergedAt(a.client).map((m) => m.payload.origin))).toEqual(new Set([idB]));
      expect(new Set(mergedAt(b.client).map((m) => m.payload.origin))).toEqual(new Set([idA]));
      // A tab that reads is sent the session with every ack and merged event.
      for (const client of [a.client, b.client]) {
        const without = client.messages.filter((m) => m.type === 'session-event' && !m.payload.session);
        expect({ tab: client.label, without }).toEqual({ tab: client.label, without: [] });
      }
      const truth = await freshLook('alice');
      afterRound({ round: r, a: a.client, b: b.client, truth });
    }
  }

  /** The session of every ack and merged event a tab was given, in order. */
  const sessionsGiven = (client) =>
    client.messages
      .filter((m) => m.payload && m.payload.session)
      .map((m) => ({ session: m.payload.session, what: `${m.payload.event} ${m.traceId || m.payload.origin}` }));

  test('concurrent updates from both tabs are all kept, and both tabs converge on the session the server holds', async () => {
    const rounds = 5;
    const perRound = 10;
    await concurrentRounds({
      rounds,
      perRound,
      afterRound: ({ round, a, b, truth }) => {
        const ids = truth.conversationHistory.map((e) => e.id).sort();
        const sent = [];
        for (let r = 0; r <= round; r++) for (let i = 0; i < perRound; i++) sent.push(`a-${r}.${i}`, `b-${r}.${i}`);
        expect(ids).toEqual(sent.sort());
        expect([`A${round}.${perRound - 1}`, `B${round}.${perRound - 1}`]).toContain(truth.memory.last);
        // Once everything has arrived, what each tab was given last is what the server holds.
        for (const client of [a, b]) {
          const last = sessionsGiven(client).at(-1);
          const missing = ids.filter((id) => !last.session.conversationHistory.some((e) => e.id === id));
          expect({ round, tab: client.label, last: last.what, missing }).toEqual({ round, tab: client.label, last: last.what, missing: [] });
          expect(last.session).toEqual(truth);
        }
      },
    });
  });

  test('a tab is never handed a session older than one it was already given', async () => {
    await concurrentRounds({
      rounds: 15,
      perRound: 6,
      afterRound: ({ a, b }) => {
        // Entries are only ever added, so no session may lack an entry of the one given before it.
        for (const client of [a, b]) {
          const given = sessionsGiven(client);
          for (let i = 1; i < given.length; i++) {
            const has = new Set(given[i].session.conversationHistory.map((e) => e.id));
            const lost = given[i - 1].session.conversationHistory.map((e) => e.id).filter((id) => !has.has(id));
            expect({ tab: client.label, message: `#${i}: ${given[i].what}`, after: given[i - 1].what, lost }).toEqual({
              tab: client.label,
              message: `#${i}: ${given[i].what}`,
              after: given[i - 1].what,
              lost: [],
            });
          }
        }
      },
    });
  });

  test('a third connection on another workspace of the same user hears nothing', async () => {
    const a = await open({ user: 'alice', workspace: WORKSPACE });
    const other = await open({ user: 'alice', workspace: '/home/me/elsewhere' });
    expect(other.session.id).not.toBe(a.session.id);
    await a.client.updateAndAck({ memory: { here: 1 } });
    await other.client.expectNothing(() => true, 300, 'message for another workspace');
    expect((await freshLook('alice', '/home/me/elsewhere')).memory).toEqual({});
  });
});

describe('users are isolated', () => {
  test("two users on the same workspace never see each other's session", async () => {
    const alice = await open({ user: 'alice', workspace: WORKSPACE });
    const bob = await open({ user: 'bob', workspace: WORKSPACE });
    expect(bob.restored.created).toBe(true);
    expect(bob.session.userId).toBe('bob');
    expect(bob.session.id).not.toBe(alice.session.id);

    await alice.client.updateAndAck({ memory: { secret: 'alice-only' }, universeFocus: 'engineer' });
    await bob.client.updateAndAck({ memory: { secret: 'bob-only' }, universeFocus: 'story' });
    await Promise.all([
      alice.client.expectNothing((m) => m.payload && m.payload.event === 'merged', 300, 'merged event from bob'),
      bob.client.expectNothing((m) => m.payload && m.payload.event === 'merged', 300, 'merged event from alice'),
    ]);
    // Nothing but their own restore and ack, ever.
    const events = (client) => client.messages.map((m) => `${m.type}/${m.payload && (m.payload.event || m.payload.code)}`);
    expect(events(alice.client)).toEqual(['session-event/restored', 'session-event/ack']);
    expect(events(bob.client)).toEqual(['session-event/restored', 'session-event/ack']);

    const aliceNow = await freshLook('alice');
    const bobNow = await freshLook('bob');
    expect(aliceNow).toMatchObject({ userId: 'alice', universeFocus: 'engineer', memory: { secret: 'alice-only' } });
    expect(bobNow).toMatchObject({ userId: 'bob', universeFocus: 'story', memory: { secret: 'bob-only' } });
  });

  test('a userId sent by the client is ignored: the change lands in the header user’s own session', async () => {
    const alice = await open({ user: 'alice', workspace: WORKSPACE });
    const bob = await open({ user: 'bob', workspace: WORKSPACE });

    const ack = await alice.client.updateAndAck({ userId: 'bob', memory: { spoof: 'written by alice' } });
    expect(ack.session.userId).toBe('alice');
    expect(ack.session.id).toBe(alice.session.id);
    expect(ack.session.memory).toEqual({ spoof: 'written by alice' });

    await bob.client.expectNothing(() => true, 300, 'message caused by alice');
    expect((await freshLook('bob')).memory).toEqual({});
    expect((await freshLook('alice')).memory).toEqual({ spoof: 'written by alice' });
  });

  test('the other server-owned fields (id, workspaceId, createdAt, updatedAt) in a payload are ignored too', async () => {
    const alice = await open({ user: 'alice', workspace: WORKSPACE });
    const ack = await alice.client.updateAndAck({
      id: 'ffffffffffffffffffffffffffffffff',
      workspaceId: '/somewhere/else',
      createdAt: '2000-01-01T00:00:00.000Z',
      updatedAt: '2000-01-01T00:00:00.000Z',
      memory: { k: 1 },
    });
    expect(ack.session).toMatchObject({ id: alice.session.id, workspaceId: WORKSPACE, createdAt: alice.session.createdAt });
    expect(ack.session.updatedAt).not.toBe('2000-01-01T00:00:00.000Z');
  });

  test('a connection without the trusted user header is refused (close 4401, nothing sent) and creates nothing', async () => {
    const client = pool.connect({ workspace: WORKSPACE, label: 'anonymous' });
    await client.opened;
    const { code, reason } = await client.closed;
    expect({ code, reason }).toEqual({ code: 4401, reason: 'not authenticated' });
    expect(client.messages).toEqual([]);
    await expect(server.connections[0].ready).rejects.toMatchObject({ code: 'EAUTH' });

    expect(await server.store.list()).toEqual([]);
    expect(sessionFiles(dataDir)).toEqual([]);
  });

  test('an empty trusted user header is refused the same way', async () => {
    const client = pool.connect({ user: '', workspace: WORKSPACE, label: 'empty user' });
    await client.opened;
    expect((await client.closed).code).toBe(4401);
    expect(client.messages).toEqual([]);
    expect(sessionFiles(dataDir)).toEqual([]);
  });
});

describe('durability', () => {
  test('an acked update is already on disk, and a disconnect leaves it there for a new store in another process', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    // Autosave is off, yet an ack means durable. A new session's first durable write is its first
    // snapshot; later ones are appended to the journal beside it before the ack is sent.
    expect(storedSession(dataDir, 'alice', WORKSPACE)).toBeUndefined();
    await client.updateAndAck({ universeFocus: 'story' });
    const { file } = storedSession(dataDir, 'alice', WORKSPACE);
    expect(storedSession(dataDir, 'alice', WORKSPACE).session.universeFocus).toBe('story');
    expect(fs.existsSync(journalOf(file))).toBe(false);
    const ack = await client.updateAndAck({ memory: { durable: { yes: true } } });
    expect(ack.changes).toContain('memory.durable');
    expect(storedSession(dataDir, 'alice', WORKSPACE).session.memory).toEqual({});
    expect(fs.existsSync(journalOf(file))).toBe(true);
    expect((await loadInChild(dataDir, 'alice', WORKSPACE)).session.memory).toEqual({ durable: { yes: true } });

    const connection = server.connectionOf(client.tag);
    await client.close();
    await pollUntil(() => connection.saved !== undefined, { what: 'the server to see the close' });
    await connection.saved;
    // The save appended the change to the journal beside the snapshot.
    expect(fs.existsSync(journalOf(file))).toBe(true);

    // Another process opens its own store on the directory (the server's store stays open).
    const script = `
      const { NarrativeSessionStore } = require(${JSON.stringify(INDEX)});
      (async () => {
        const store = await NarrativeSessionStore.open({ dataDir: ${JSON.stringify(dataDir)}, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
        const result = await store.load('alice', ${JSON.stringify(WORKSPACE)});
        await store.close();
        process.stdout.write(JSON.stringify(result));
      })().catch((e) => { process.stderr.write(String(e && e.code) + ' ' + e.message); process.exitCode = 1; });
    `;
    const run = await runNode(['-e', script], { killAfterMs: 15000 });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const seen = JSON.parse(run.stdout);
    expect(seen.created).toBe(false);
    expect(seen.session).toMatchObject({ id: ack.session.id, universeFocus: 'story', memory: { durable: { yes: true } } });
    expect(seen.session).toEqual(ack.session);
  });

  test('a tab closed right after sending an update (without waiting for the ack) still keeps the change', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    const connection = server.connectionOf(client.tag);
    for (let i = 0; i < 5; i++) client.update({ conversationHistory: [{ id: `last-${i}`, role: 'user', content: `bye ${i}` }] });
    await client.close();
    await pollUntil(() => connection.saved !== undefined, { what: 'the server to see the close' });
    await connection.saved;
    const seen = await loadInChild(dataDir, 'alice', WORKSPACE);
    expect(seen.session.conversationHistory.map((e) => e.id)).toEqual(['last-0', 'last-1', 'last-2', 'last-3', 'last-4']);
  });

  test('closing one tab saves while the other tab keeps working on the loaded session', async () => {
    const a = await open({ user: 'alice', workspace: WORKSPACE, label: 'tab A' });
    const b = await open({ user: 'alice', workspace: WORKSPACE, label: 'tab B' });
    await a.client.updateAndAck({ memory: { fromA: 1 } });
    const connection = server.connectionOf(a.client.tag);
    await a.client.close();
    await pollUntil(() => connection.saved !== undefined, { what: 'the server to see the close' });
    await connection.saved;
    expect((await loadInChild(dataDir, 'alice', WORKSPACE)).session.memory).toEqual({ fromA: 1 });

    const ack = await b.client.updateAndAck({ memory: { fromB: 2 } });
    expect(ack.session.memory).toEqual({ fromA: 1, fromB: 2 });
  });
});

describe('changes made by another process', () => {
  test('a change another store writes to the session file reaches connected clients as merged/external', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    const { client: bob } = await open({ user: 'bob', workspace: WORKSPACE });

    // Another mia-code-server process: its own store on the same directory.
    const other = box.track(
      await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 }),
    );
    const { session: written } = await other.merge(
      'alice',
      WORKSPACE,
      { memory: { fromOtherProcess: 'hello' }, storyBeats: [{ id: 'ext-1', description: 'from afar', type: 'custom' }] },
      { origin: 'process-2', returnSession: true },
    );
    await other.save('alice', WORKSPACE);

    const merged = await client.nextEvent('merged', () => true, { timeoutMs: 2000 });
    expect(merged.payload.origin).toBe('external');
    expect(merged.payload.changes).toEqual(expect.arrayContaining(['memory.fromOtherProcess', 'storyBeats.ext-1']));
    expect(merged.payload.session.memory).toEqual({ fromOtherProcess: 'hello' });
    expect(merged.payload.session.storyBeats.map((b) => b.id)).toEqual(['ext-1']);
    expect(merged.payload.session.id).toBe(written.id);

    // Bob's socket hears nothing of alice's change.
    await bob.expectNothing(() => true, 200, 'message about alice');
    // And the connected client's next update builds on the external change.
    const ack = await client.updateAndAck({ memory: { local: true } });
    expect(ack.session.memory).toEqual({ fromOtherProcess: 'hello', local: true });
  });
});

describe('malformed messages', () => {
  const NOT_JSON = 'message is not JSON';
  const NOT_AN_ENVELOPE = 'message must be an object with a string type';
  const NOT_AN_UPDATE = 'session-update payload must be an object';
  // [what, message, code, traceId, the handler's own error message (the store's are its own)]
  const BAD = [
    ['text that is not JSON', () => 'hello, mia', 'EINVALID', undefined, NOT_JSON],
    ['a JSON array', () => JSON.stringify([{ type: 'session-update', payload: {} }]), 'EINVALID', undefined, NOT_AN_ENVELOPE],
    ['an object without a type', () => JSON.stringify({ payload: { universeFocus: 'engineer' } }), 'EINVALID', undefined, NOT_AN_ENVELOPE],
    ['a type that is not a string', () => JSON.stringify({ type: ['session-update'], payload: {} }), 'EINVALID', undefined, NOT_AN_ENVELOPE],
    ['a JSON string', () => JSON.stringify('session-update'), 'EINVALID', undefined, NOT_AN_ENVELOPE],
    ['JSON null', () => 'null', 'EINVALID', undefined, NOT_AN_ENVELOPE],
    ['a payload that is a string', () => update('engineer', 'bad-1'), 'EINVALID', 'bad-1', NOT_AN_UPDATE],
    ['a payload that is an array', () => update([{ universeFocus: 'engineer' }], 'bad-2'), 'EINVALID', 'bad-2', NOT_AN_UPDATE],
    ['a payload that is null', () => update(null, 'bad-3'), 'EINVALID', 'bad-3', NOT_AN_UPDATE],
    ['a missing payload', () => JSON.stringify({ type: 'session-update', traceId: 'bad-4' }), 'EINVALID', 'bad-4', NOT_AN_UPDATE],
    ['an unknown field', () => update({ galaxy: 'far away', memory: { x: 1 } }, 'bad-5'), 'EINVALID', 'bad-5'],
    ['an unknown universe', () => update({ universeFocus: 'galaxy' }, 'bad-6'), 'EINVALID', 'bad-6'],
    ['a chart without an id', () => update({ activeCharts: [{ title: 'no id' }] }, 'bad-7'), 'EINVALID', 'bad-7'],
    [
      'a good change next to a bad one',
      () => update({ universeFocus: 'engineer', memory: { half: 'done' }, activeCharts: [{ title: 'no id' }] }, 'bad-8'),
      'EINVALID',
      'bad-8',
    ],
    ['a conversation entry with a bad role', () => update({ conversationHistory: [{ id: 'e9', role: 'villain', content: 'x' }] }, 'bad-9'), 'EINVALID', 'bad-9'],
  ];
  function update(payload, traceId) {
    return JSON.stringify({ type: 'session-update', traceId, timestamp: new Date().toISOString(), payload });
  }

  test('each gets an error, changes nothing, and leaves the socket open', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    await client.updateAndAck({ universeFocus: 'story', memory: { keep: 'me' }, activeCharts: [{ id: 'c1', title: 'kept' }] });
    const before = await freshLook('alice');
    // Another tab watches: a refused message must not be announced to it.
    const { client: watcher } = await open({ user: 'alice', workspace: WORKSPACE, label: 'watching tab' });

    for (const [what, message, code, traceId, text] of BAD) {
      client.sendRaw(message());
      const reply = await client.nextMessage({ what: `the reply to ${what}` });
      expect({ what, type: reply.type, code: reply.payload && reply.payload.code }).toEqual({ what, type: 'error', code });
      expect(reply.channel).toBe('session');
      expect(typeof reply.payload.message).toBe('string');
      if (text !== undefined) expect({ what, message: reply.payload.message }).toEqual({ what, message: text });
      if (traceId !== undefined) expect({ what, traceId: reply.traceId }).toEqual({ what, traceId });
      expect({ what, open: client.isOpen }).toEqual({ what, open: true });
    }
    await watcher.expectNothing(() => true, 200, 'merged event for a refused message');

    expect(await freshLook('alice')).toEqual(before);

    // The socket still works.
    const ack = await client.updateAndAck({ universeFocus: 'engineer' });
    expect(ack.changes).toEqual(['universeFocus']);
    const after = await freshLook('alice');
    expect(after.universeFocus).toBe('engineer');
    const { universeFocus: _f1, updatedAt: _u1, versions: v1, ...restAfter } = after;
    const { universeFocus: _f2, updatedAt: _u2, versions: v2, ...restBefore } = before;
    expect(restAfter).toEqual(restBefore);
    const { universeFocus: _c1, ...otherClocksAfter } = v1;
    const { universeFocus: _c2, ...otherClocksBefore } = v2;
    expect(otherClocksAfter).toEqual(otherClocksBefore);
  });

  test('a message over maxMessageBytes gets ETOOLARGE and changes nothing; smaller ones still work', async () => {
    const small = await startServer({ dataDir: box.tempDir('mia-ws-small-'), maxMessageBytes: 2048 });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    await client.updateAndAck({ memory: { keep: 'me' } });
    const before = await freshLook('alice', WORKSPACE, small);

    client.send({ type: 'session-update', traceId: 'big-1', payload: { memory: { blob: 'x'.repeat(3000) } } });
    const reply = await client.nextMessage({ what: 'the reply to an oversized update' });
    expect(reply.type).toBe('error');
    expect(reply.payload.code).toBe('ETOOLARGE');
    expect(client.isOpen).toBe(true);
    expect(await freshLook('alice', WORKSPACE, small)).toEqual(before);

    const ack = await client.updateAndAck({ memory: { blob: 'x'.repeat(1500) } });
    expect(ack.session.memory).toEqual({ keep: 'me', blob: 'x'.repeat(1500) });
  });

  // docs/protocol.md: ETOOLARGE answers "a message over the handler's maxMessageBytes", and a
  // session-update's traceId "comes back on the ack or error".
  test('an oversized session-update is refused whatever the order of its keys', async () => {
    const small = await startServer({ dataDir: box.tempDir('mia-ws-small-'), maxMessageBytes: 2048 });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    // A valid envelope; JSON key order is the sender's business.
    client.sendRaw(
      JSON.stringify({ traceId: 'big-2', payload: { memory: { blob: 'x'.repeat(3000) } }, type: 'session-update' }),
    );
    const reply = await client.nextMessage({ what: 'a reply to an oversized update whose type comes last', timeoutMs: 1500 });
    expect(reply).toMatchObject({ type: 'error', payload: { code: 'ETOOLARGE' } });
  });

  test("an oversized session-update's ETOOLARGE error carries its traceId", async () => {
    const small = await startServer({ dataDir: box.tempDir('mia-ws-small-'), maxMessageBytes: 2048 });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    client.send({ type: 'session-update', traceId: 'big-3', payload: { memory: { blob: 'x'.repeat(3000) } } });
    const reply = await client.nextMessage({ what: 'the reply to an oversized update' });
    expect(reply).toMatchObject({ type: 'error', payload: { code: 'ETOOLARGE' } });
    expect(reply.traceId).toBe('big-3');
  });

  test('an oversized message of another type is left to the host: no error from the handler', async () => {
    const small = await startServer({ dataDir: box.tempDir('mia-ws-small-'), maxMessageBytes: 2048 });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    client.send({ type: 'replay', payload: { events: 'x'.repeat(3000) } });
    client.update({ memory: { after: 'replay' } }, 'after-big-replay');
    expect(await client.nextMessage()).toMatchObject({ traceId: 'after-big-replay', payload: { event: 'ack' } });
  });
});

describe('messages for the host', () => {
  test.each(['auth', 'subscribe', 'unsubscribe', 'replay', 'narrative-event'])(
    'a %s message gets no reply from the handler',
    async (type) => {
      const { client } = await open({ user: 'alice', workspace: WORKSPACE });
      client.send({ type, payload: { token: 'abc', channels: ['session'], since: 0 }, traceId: `host-${type}` });
      client.update({ memory: { after: type } }, 'after-host');
      const next = await client.nextMessage();
      expect(next).toMatchObject({ type: 'session-event', traceId: 'after-host', payload: { event: 'ack' } });
      await client.expectNothing(() => true, 150, `reply to ${type}`);
      expect((await freshLook('alice')).memory).toEqual({ after: type });
    },
  );

  test('a host handler on the same socket takes its own messages while the narrative handler takes session-update', async () => {
    const hostSeen = [];
    const host = await startServer({
      dataDir: box.tempDir('mia-ws-host-'),
      hostHandler(ws) {
        ws.on('message', (data) => {
          const message = JSON.parse(data.toString());
          hostSeen.push(message.type);
          if (message.type === 'subscribe') ws.send(JSON.stringify({ type: 'subscribed', traceId: message.traceId }));
        });
      },
    });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host });
    await client.restored();
    client.send({ type: 'subscribe', payload: { channels: ['session'] }, traceId: 's-1' });
    client.update({ universeFocus: 'all' }, 'u-1');
    expect(await client.nextMessage()).toMatchObject({ type: 'subscribed', traceId: 's-1' });
    expect(await client.nextMessage()).toMatchObject({ type: 'session-event', traceId: 'u-1', payload: { event: 'ack' } });
    await client.expectNothing((m) => m.type === 'error', 150, 'error');
    expect(hostSeen).toEqual(['subscribe', 'session-update']);
  });
});

describe('large sessions', () => {
  const { FRAGMENT_BYTES } = require('../lib/fragments');

  /** Stores, before anyone connects, a session of alice's whose JSON is several fragments long. */
  async function storeLargeSession(on) {
    const entries = Array.from({ length: 400 }, (_, n) => ({
      id: `big-${n}`,
      role: n % 2 ? 'agent' : 'user',
      content: `${n} ${'é tension and resolution '.repeat(80)}`,
    }));
    await on.store.merge('alice', WORKSPACE, { conversationHistory: entries, memory: { big: true } });
    const { sessionJson } = await on.store.loadRaw('alice', WORKSPACE);
    expect(sessionJson.length).toBeGreaterThan(3 * FRAGMENT_BYTES);
    return JSON.parse(sessionJson.toString());
  }

  test('a session several fragments long is restored whole, and so is the ack that carries it', async () => {
    const stored = await storeLargeSession(server);
    const { client, session } = await open({ user: 'alice', workspace: WORKSPACE });
    expect(session).toEqual(stored);
    client.update({ memory: { after: 'big' } }, 'big-ack');
    const ack = await client.nextEvent('ack');
    expect(ack.traceId).toBe('big-ack');
    expect(ack.payload.session.conversationHistory).toEqual(stored.conversationHistory);
    expect(ack.payload.session.memory).toEqual({ big: true, after: 'big' });
  });

  test("the host's sends made while a large restore is going out arrive whole and in order, none inside it", async () => {
    let sent = 0;
    let hostDone = false;
    const host = await startServer({
      dataDir: box.tempDir('mia-ws-host-'),
      hostHandler(ws) {
        // A host that sends on every turn of the loop for a while, as a busy host's own channel would.
        const started = Date.now();
        const tick = () => {
          if (ws.readyState !== 1 || Date.now() - started > 200) {
            hostDone = true;
            return;
          }
          ws.send(JSON.stringify({ type: 'host-tick', n: sent++ }));
          setImmediate(tick);
        };
        tick();
      },
    });
    const stored = await storeLargeSession(host);
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host });
    await client.opened;
    const restored = await client.nextEvent('restored', () => true, { timeoutMs: 5000 });
    expect(restored.payload.session).toEqual(stored);
    await pollUntil(() => hostDone && client.messages.filter((m) => m.type === 'host-tick').length === sent, {
      what: "all the host's messages",
    });
    const ticks = client.messages.filter((m) => m.type === 'host-tick').map((m) => m.n);
    expect(ticks).toEqual(Array.from({ length: sent }, (_, n) => n));
    expect(client.messages.filter((m) => m.unparsable !== undefined)).toEqual([]);
    expect(client.isOpen).toBe(true);
    // Some of the host's messages were sent while the restore was going out, and were held until its end.
    const restoredAt = client.messages.indexOf(restored);
    expect(restoredAt).toBeGreaterThan(0);
    expect(restoredAt).toBeLessThan(client.messages.length - 1);
  });
});

describe('clients that do not read (docs/protocol.md)', () => {
  const { FRAGMENT_BYTES } = require('../lib/fragments');
  const { RawWsClient } = require('./helpers/raw-ws-client');
  /** One message of the handler's, or one fragment of it, and its frame header. */
  const SOCKET_BOUND = FRAGMENT_BYTES + 1024;
  const rawClients = [];
  afterEach(() => {
    for (const client of rawClients.splice(0)) client.destroy();
  });

  /** A tab of alice's that stops reading the moment its socket opens. */
  async function stuckTab(on = server) {
    const client = new RawWsClient(on.port, { user: 'alice', query: { workspace: WORKSPACE }, neverRead: true });
    rawClients.push(client);
    await client.opened;
    return client;
  }

  /** Gives alice a session of about `bytes` of JSON text. */
  async function bulkySession(on, bytes) {
    await on.store.merge('alice', WORKSPACE, { memory: { bulk: 'b'.repeat(bytes) } }, { durable: true });
  }

  const latestOf = async (on) => JSON.parse((await on.store.loadRaw('alice', WORKSPACE)).sessionJson.toString('utf8'));
  const withSession = (client) => client.messages.filter((m) => m.payload && m.payload.session);

  test('a tab that does not read is sent one message at a time, and once it reads, the latest state in one message', async () => {
    await bulkySession(server, 200 * 1024);
    const stuck = await stuckTab();
    const { client: writer } = await open({ user: 'alice', workspace: WORKSPACE, label: 'writer' });
    const updates = 60;
    for (let i = 0; i < updates; i++) await writer.updateAndAck({ memory: { [`k${i}`]: i } });
    const socket = server.socketOf(stuck.tag);
    expect({ open: socket.readyState, withinBound: socket.bufferedAmount <= SOCKET_BOUND }).toEqual({ open: 1, withinBound: true });

    stuck.resume();
    const latest = await latestOf(server);
    await pollUntil(() => withSession(stuck).some((m) => m.payload.session.memory[`k${updates - 1}`] !== undefined), {
      what: 'the tab to be given the latest state',
    });
    const given = withSession(stuck);
    expect(given[0].payload).toMatchObject({ event: 'restored' });
    expect(given.at(-1).payload).toMatchObject({ event: 'merged', origin: server.connectionOf(writer.tag).id, session: latest });
    expect(given.length).toBeLessThan(updates / 2);
    // The announcements it missed were folded into one, not sent one by one without the session.
    expect(stuck.messages.filter((m) => m.payload.event === 'merged').length).toBeLessThan(updates / 2);
    const announced = stuck.messages.filter((m) => m.payload && m.payload.event === 'merged').flatMap((m) => m.payload.changes);
    expect(new Set(announced)).toEqual(new Set(Array.from({ length: updates }, (_, i) => `memory.k${i}`)));
    // Nothing else was sent, and no message was cut: every one parsed.
    expect(stuck.messages.every((m) => m.type === 'session-event')).toBe(true);
  });

  test("a tab that sends updates without reading the acks is not read until it catches up, and gets every ack in order; of those sent together, only the last carries the session", async () => {
    await bulkySession(server, 500 * 1024);
    const stuck = await stuckTab();
    const socket = server.socketOf(stuck.tag);
    // Sent in one write, so that the handler has them all before it stops reading: they are all
    // applied while it waits, and only the client's reading can let it read again.
    const count = 90;
    stuck.updateAll(Array.from({ length: count }, (_, i) => [{ memory: { [`n${i}`]: i } }, `n-${i}`]));
    await pollUntil(async () => socket.isPaused && (await latestOf(server)).memory[`n${count - 1}`] === count - 1, {
      what: 'every update applied, and the socket no longer read',
    });
    expect(socket.bufferedAmount).toBeLessThanOrEqual(SOCKET_BOUND);

    stuck.resume();
    const acks = [];
    for (let i = 0; i < count; i++) acks.push(await stuck.next((m) => m.traceId !== undefined, { timeoutMs: 10000, what: `ack ${i}` }));
    expect(acks.map((m) => `${m.traceId} ${m.payload.event}`)).toEqual(Array.from({ length: count }, (_, i) => `n-${i} ack`));
    const bare = acks.filter((m) => !m.payload.session);
    expect(bare.length).toBeGreaterThan(0);
    for (const ack of bare) {
      // The session comes in a later message of the same batch.
      expect(acks.slice(acks.indexOf(ack)).some((m) => m.payload.session)).toBe(true);
      expect(Object.keys(ack.payload)).toEqual(['event', 'changes', 'lost']);
    }
    expect(acks.at(-1).payload.session).toEqual(await latestOf(server));
    await pollUntil(() => !socket.isPaused, { what: 'the handler to read the socket again' });
    stuck.update({ memory: { after: 'catching up' } }, 'after');
    expect(await stuck.next((m) => m.traceId === 'after')).toMatchObject({ payload: { event: 'ack', session: { memory: { after: 'catching up' } } } });
  });

  test('a tab that sends large updates faster than they apply is not read meanwhile, and each is applied in order', async () => {
    const calls = [];
    const small = await startServer({
      dataDir: box.tempDir('mia-ws-flood-'),
      maxMessageBytes: 8 * 1024,
      hostHandler(ws) {
        for (const name of ['pause', 'resume']) {
          const real = ws[name].bind(ws);
          ws[name] = () => {
            calls.push(name);
            real();
          };
        }
      },
    });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    const count = 40;
    for (let i = 0; i < count; i++) client.update({ memory: { [`big${i}`]: 'f'.repeat(6 * 1024) } }, `big-${i}`);
    const acks = [];
    for (let i = 0; i < count; i++) acks.push(await client.next((m) => m.traceId !== undefined, { what: `reply ${i}` }));
    expect(acks.map((m) => `${m.traceId} ${m.payload.event}`)).toEqual(Array.from({ length: count }, (_, i) => `big-${i} ack`));
    // Reading stopped when more than maxMessageBytes waited, and started again each time.
    expect(calls[0]).toBe('pause');
    expect(calls.filter((c) => c === 'pause').length).toBe(calls.filter((c) => c === 'resume').length);
    expect(calls.every((c, i) => c === (i % 2 === 0 ? 'pause' : 'resume'))).toBe(true);
    expect(small.socketOf(client.tag).isPaused).toBe(false);
  });

  test('a tab that takes nothing for slowReaderTimeoutMs is closed with 1013, and the other tabs go on', async () => {
    const quick = await startServer({ dataDir: box.tempDir('mia-ws-slow-'), slowReaderTimeoutMs: 300, wsOptions: { closeTimeout: 5000 } });
    await bulkySession(quick, 300 * 1024);
    const stuck = await stuckTab(quick);
    const connection = quick.connectionOf(stuck.tag);
    const writer = pool.connect({ user: 'alice', workspace: WORKSPACE, server: quick, label: 'writer' });
    await writer.restored();
    for (let i = 0; i < 30; i++) await writer.updateAndAck({ memory: { [`k${i}`]: i } });
    const socket = quick.socketOf(stuck.tag);
    await pollUntil(() => socket.readyState !== 1, { what: 'the handler to close the socket' });
    stuck.resume();
    expect(await stuck.closed).toEqual({ code: 1013, reason: 'client is not reading' });
    // The close saved the session and left the room: the writer's changes reach no one, and go on.
    await pollUntil(() => connection.saved !== undefined, { what: 'the close to be seen' });
    await connection.saved;
    expect((await writer.updateAndAck({ memory: { after: true } })).session.memory.after).toBe(true);
  });
});

describe('who the user is, and which workspace', () => {
  const { attachNarrativeSession } = require('../lib/handler');

  test('attaching without a store is refused at once, with a TypeError that says what is missing', () => {
    for (const options of [undefined, {}, { store: {} }, { store: { merge: 'not a function' } }]) {
      expect(() => attachNarrativeSession({}, {}, options)).toThrow(
        new TypeError('attachNarrativeSession needs { store }: a NarrativeSessionStore'),
      );
    }
  });

  test("the host's resolveUser decides, before any header, and may be async", async () => {
    const host = await startServer({
      dataDir: box.tempDir('mia-ws-resolve-'),
      handlerOptions: {
        async resolveUser(req) {
          await new Promise((resolve) => setImmediate(resolve));
          return req.headers.cookie === 'session=carol-s3cret' ? 'carol' : '';
        },
      },
    });
    // The trusted header says alice; the host's own authentication says carol.
    const carol = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host, headers: { cookie: 'session=carol-s3cret' } });
    expect((await carol.restored()).session.userId).toBe('carol');
    expect((await carol.updateAndAck({ memory: { who: 'carol' } })).session.userId).toBe('carol');

    const stranger = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host, label: 'no cookie' });
    await stranger.opened;
    expect((await stranger.closed).code).toBe(4401);
    expect(stranger.messages).toEqual([]);
    expect((await host.store.list()).map((s) => s.userId)).toEqual(['carol']);
  });

  test('a resolveUser that gives something other than a name, or fails, refuses the connection (4401) with nothing sent', async () => {
    const givens = [
      () => 42,
      () => ['alice'],
      () => undefined,
      () => {
        throw new Error('authentication backend down');
      },
    ];
    for (const given of givens) {
      const host = await startServer({ dataDir: box.tempDir('mia-ws-resolve-'), handlerOptions: { resolveUser: given } });
      const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host });
      await client.opened;
      // It fails closed: a hook that throws refuses as one that says no.
      expect({ given: String(given), close: (await client.closed).code, messages: client.messages }).toEqual({
        given: String(given),
        close: 4401,
        messages: [],
      });
      await expect(host.connections[0].ready).rejects.toMatchObject({ code: 'EAUTH' });
      expect(await host.store.list()).toEqual([]);
    }
  });

  test("the host's resolveWorkspace names the workspace, normalised; nothing from it is the (none) workspace", async () => {
    let workspace = '/from/the/host/./src/../';
    const host = await startServer({ dataDir: box.tempDir('mia-ws-resolve-'), handlerOptions: { resolveWorkspace: () => workspace } });
    const first = pool.connect({ user: 'alice', workspace: '/ignored', server: host });
    expect((await first.restored()).session.workspaceId).toBe('/from/the/host');
    workspace = undefined;
    const second = pool.connect({ user: 'alice', workspace: '/ignored', server: host });
    expect((await second.restored()).session.workspaceId).toBe('(none)');
  });

  test("the connection's ready promise gives the user, the workspace and the session's id", async () => {
    const { client, session } = await open({ user: 'alice', workspace: '/home/me/proj/./' });
    expect(await server.connectionOf(client.tag).ready).toEqual({ userId: 'alice', workspaceId: WORKSPACE, sessionId: session.id });
  });

  test('the trusted header may be named in any case', async () => {
    const host = await startServer({ dataDir: box.tempDir('mia-ws-case-'), userHeader: 'X-Forwarded-User' });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host });
    expect((await client.restored()).session.userId).toBe('alice');
  });
});

describe('a session that cannot be loaded', () => {
  test('at connect: an error with the store’s code, and close code 1011', async () => {
    await server.store.close();
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE });
    await client.opened;
    expect((await client.nextError()).payload).toMatchObject({ code: 'ECLOSED' });
    expect(await client.closed).toEqual({ code: 1011, reason: 'session unavailable' });
  });

  test('when a message that carries it goes out: an error with the store’s code instead', async () => {
    const { RawWsClient } = require('./helpers/raw-ws-client');
    await server.store.merge('alice', WORKSPACE, { memory: { bulk: 'b'.repeat(200 * 1024) } });
    const stuck = new RawWsClient(server.port, { user: 'alice', query: { workspace: WORKSPACE }, neverRead: true });
    await stuck.opened;
    try {
      const { client: writer } = await open({ user: 'alice', workspace: WORKSPACE, label: 'writer' });
      for (let i = 0; i < 40; i++) await writer.updateAndAck({ memory: { [`k${i}`]: i } });
      // The stuck tab's announcement waits; the session is gone by the time it could go out.
      await server.store.close();
      stuck.resume();
      const error = await stuck.nextError({ timeoutMs: 10000 });
      expect(error.payload).toMatchObject({ code: 'ECLOSED' });
      expect(error).not.toHaveProperty('traceId');
    } finally {
      stuck.destroy();
    }
  });
});

describe('message edges', () => {
  const envelope = (traceId, pad) => JSON.stringify({ type: 'session-update', traceId, payload: { memory: { pad } } });

  test('a message of exactly maxMessageBytes is taken; one byte more is ETOOLARGE', async () => {
    const small = await startServer({ dataDir: box.tempDir('mia-ws-edge-'), maxMessageBytes: 2048 });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    const exact = envelope('exact', 'p'.repeat(2048 - envelope('exact', '').length));
    expect(Buffer.byteLength(exact)).toBe(2048);
    client.sendRaw(exact);
    expect(await client.nextMessage()).toMatchObject({ traceId: 'exact', payload: { event: 'ack' } });
    const over = envelope('over', 'p'.repeat(2049 - envelope('over', '').length));
    client.sendRaw(over);
    expect(await client.nextMessage()).toMatchObject({
      traceId: 'over',
      type: 'error',
      payload: { code: 'ETOOLARGE', message: 'message over 2048 bytes' },
    });
    // Without a traceId, the error comes without one.
    client.sendRaw(JSON.stringify({ type: 'session-update', payload: { memory: { pad: 'p'.repeat(3000) } } }));
    const untraced = await client.nextMessage();
    expect(untraced).toMatchObject({ type: 'error', payload: { code: 'ETOOLARGE' } });
    expect(untraced).not.toHaveProperty('traceId');
  });

  test('an oversized session-update written with spaces around its colons is still known, traceId and all', async () => {
    const small = await startServer({ dataDir: box.tempDir('mia-ws-edge-'), maxMessageBytes: 2048 });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: small });
    await client.restored();
    client.sendRaw(`{ "type" : "session-update", "traceId"\t:\n"spaced", "payload" : { "memory" : { "blob" : "${'x'.repeat(3000)}" } } }`);
    expect(await client.nextMessage()).toMatchObject({ type: 'error', traceId: 'spaced', payload: { code: 'ETOOLARGE' } });
  });

  test('a traceId of up to 256 characters comes back; a longer one or one that is not a string does not', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    const longest = 't'.repeat(256);
    client.update({ memory: { a: 1 } }, longest);
    expect((await client.nextMessage()).traceId).toBe(longest);
    for (const traceId of ['t'.repeat(257), 17, { id: 'x' }]) {
      client.update({ memory: { a: String(traceId).length } }, traceId);
      const ack = await client.nextMessage();
      expect({ traceId: String(traceId).slice(0, 20), event: ack.payload.event, has: 'traceId' in ack }).toEqual({
        traceId: String(traceId).slice(0, 20),
        event: 'ack',
        has: false,
      });
    }
  });

  test('a session-update in a binary message is left to the host: not applied, not answered', async () => {
    const { client } = await open({ user: 'alice', workspace: WORKSPACE });
    client.ws.send(Buffer.from(envelope('binary', 'should not land')), { binary: true });
    client.update({ memory: { text: true } }, 'text');
    const next = await client.nextMessage();
    expect(next).toMatchObject({ traceId: 'text', payload: { event: 'ack' } });
    expect(next.payload.session.memory).toEqual({ text: true });
  });
});

describe('how a message goes out on the wire', () => {
  const { FRAGMENT_BYTES } = require('../lib/fragments');
  const { RawWsClient, OPCODE } = require('./helpers/raw-ws-client');

  async function rawTab(on = server) {
    const client = new RawWsClient(on.port, { user: 'alice', query: { workspace: WORKSPACE } });
    await client.opened;
    return client;
  }

  test('a large session is one text message in fragments of at most 256 KiB; small messages are text, unfragmented or in three', async () => {
    await server.store.merge('alice', WORKSPACE, { memory: { bulk: 'b'.repeat(FRAGMENT_BYTES * 3) } });
    const client = await rawTab();
    try {
      const restored = await client.restored({ timeoutMs: 10000 });
      expect(restored.session.memory.bulk).toHaveLength(FRAGMENT_BYTES * 3);
      const frames = client.frames.map(({ opcode, fin, length }) => ({ opcode, fin, length }));
      // The envelope's head, the session in fragments, the closing braces.
      expect(frames[0]).toMatchObject({ opcode: OPCODE.text, fin: false });
      expect(frames.at(-1)).toEqual({ opcode: OPCODE.continuation, fin: true, length: 2 });
      const body = frames.slice(1, -1);
      expect(body.length).toBeGreaterThanOrEqual(4);
      for (const frame of body) expect(frame).toMatchObject({ opcode: OPCODE.continuation, fin: false });
      expect(Math.max(...body.map((f) => f.length))).toBe(FRAGMENT_BYTES);

      // An error is one text frame.
      const seen = client.frames.length;
      client.sendText('not json');
      expect((await client.nextError()).payload.code).toBe('EINVALID');
      expect(client.frames.slice(seen)).toEqual([{ opcode: OPCODE.text, fin: true, length: expect.any(Number) }]);
    } finally {
      client.destroy();
    }
  });

  test('a small session goes in three frames of one text message', async () => {
    const client = await rawTab();
    try {
      await client.restored();
      expect(client.frames.map(({ opcode, fin }) => [opcode, fin])).toEqual([
        [OPCODE.text, false],
        [OPCODE.continuation, false],
        [OPCODE.continuation, true],
      ]);
    } finally {
      client.destroy();
    }
  });

  test("a host's own wrapper around ws.send is still in place after a large message went out", async () => {
    const wrapped = [];
    const host = await startServer({
      dataDir: box.tempDir('mia-ws-wrap-'),
      hostHandler(ws) {
        const send = ws.send;
        ws.send = function hostSend(data, ...rest) {
          wrapped.push(String(data).slice(0, 40));
          return send.call(this, data, ...rest);
        };
        ws.hostSend = ws.send;
        ws.send(JSON.stringify({ type: 'host-hello' }));
      },
    });
    await host.store.merge('alice', WORKSPACE, { memory: { bulk: 'b'.repeat(FRAGMENT_BYTES * 2) } });
    const client = pool.connect({ user: 'alice', workspace: WORKSPACE, server: host });
    await client.nextEvent('restored', () => true, { timeoutMs: 10000 });
    const ws = host.socketOf(client.tag);
    expect(ws.send).toBe(ws.hostSend);
    ws.send(JSON.stringify({ type: 'host-after' }));
    await client.next((m) => m.type === 'host-after');
    expect(wrapped.filter((d) => d.includes('host-'))).toEqual(['{"type":"host-hello"}', '{"type":"host-after"}']);
  });
});

describe('the save when a tab closes', () => {
  const closedConnection = async (client) => {
    const connection = server.connectionOf(client.tag);
    await client.close();
    await pollUntil(() => connection.saved !== undefined, { what: 'the server to see the close' });
    return connection.saved;
  };

  test("connection.saved says whether it wrote, never rejects, and gives the error when the save failed", async () => {
    // The tab's own changes were durable before their acks: nothing is left to write.
    const { client: changed } = await open({ user: 'alice', workspace: WORKSPACE });
    await changed.updateAndAck({ memory: { k: 1 } });
    expect(await closedConnection(changed)).toBe(false);

    // A change the host merged without `durable` is written when the tab closes.
    const { client: tab } = await open({ user: 'alice', workspace: WORKSPACE });
    await server.store.merge('alice', WORKSPACE, { memory: { fromHost: true } });
    expect(await closedConnection(tab)).toBe(true);
    expect((await loadInChild(dataDir, 'alice', WORKSPACE)).session.memory).toEqual({ k: 1, fromHost: true });

    const refused = pool.connect({ workspace: WORKSPACE, label: 'no user' });
    await refused.opened;
    const connection = server.connectionOf(refused.tag);
    await refused.closed;
    await pollUntil(() => connection.saved !== undefined, { what: 'the server to see the close' });
    expect(await connection.saved).toBe(false);

    const { client: late } = await open({ user: 'bob', workspace: WORKSPACE });
    await server.store.close();
    const failed = await closedConnection(late);
    expect({ code: failed.code, isError: typeof failed.message === 'string' }).toEqual({ code: 'ECLOSED', isError: true });
  });
});
