'use strict';
// A session's worth of narrative context, shared by the store suites of both backends.

/** A rich update, as a client would send it after a working session. */
function richUpdate() {
  return {
    universFocus: 'ceremony', // the request's spelling
    storyPosition: { arc: 'release-2', beat: 3, phase: 'rising-action' },
    activeCharts: [
      {
        id: 'chart-ship',
        title: 'Ship session persistence',
        desiredOutcome: 'Sessions survive a reconnect',
        currentReality: 'Everything is lost on restart',
        status: 'active',
        createdAt: '2026-01-05T10:00:00.000Z',
        updatedAt: '2026-01-05T10:00:00.000Z',
        actions: [
          { id: 'act-1', title: 'Write the store', completed: true, completedAt: '2026-01-06T09:30:00.000Z', order: 1 },
          { id: 'act-2', title: 'Write the tests', completed: false, order: 2, effort: 'M' },
        ],
        colour: { r: 10, g: 20, b: 30 },
      },
    ],
    storyBeats: [
      {
        id: 'beat-1',
        description: 'First commit of the store',
        type: 'commit',
        universeAnnotations: { engineer: 'scaffolded', ceremony: 'a beginning', story: 'the call', mood: 'hopeful' },
        createdAt: '2026-01-05T10:05:00.000Z',
        sha: 'abc123',
      },
    ],
    memory: {
      goal: 'persist narrative context',
      nested: { level1: { level2: { list: [1, 'two', { three: 3 }, [4, [5]]], flag: false, nothing: null } } },
      numbers: [0, -1, 2.5, 3.141592653589793, 1e-7, 1.7976931348623157e308, 9007199254740991, -0.25],
      when: '2026-01-05T10:00:00.000Z',
      dateLike: '2026-01-05',
      unicode: 'héllo — 世界 🌍',
      emptyObject: {},
      emptyList: [],
    },
    conversationHistory: [
      { id: 'e1', role: 'user', content: 'Where were we?', universe: 'engineer', timestamp: '2026-01-05T10:01:00.000Z', traceId: 't-1' },
      { id: 'e2', role: 'assistant', content: 'Writing the store.', timestamp: '2026-01-05T10:01:05.000Z', tokens: 12 },
      { id: 'e3', role: 'agent', content: 'Ran the tests.', universe: 'story', timestamp: '2026-01-05T10:02:00.000Z' },
      { id: 'e4', role: 'system', content: 'Reconnected.', timestamp: '2026-01-05T10:03:00.000Z' },
    ],
    config: { theme: 'dark', panels: ['charts', 'beats'], fontSize: 14 },
  };
}

/** What a client should see again of what it sent in `richUpdate()`. */
function expectRestored(session, update) {
  expect(session.universeFocus).toBe(update.universFocus);
  expect(session.storyPosition).toEqual(update.storyPosition);
  expect(session.memory).toEqual(update.memory);
  expect(session.config).toEqual(update.config);
  expect(session.storyBeats).toEqual(update.storyBeats);
  expect(session.conversationHistory).toEqual(update.conversationHistory);
  expect(session.activeCharts).toEqual(update.activeCharts);
}

module.exports = { richUpdate, expectRestored };
