'use strict'
// Contender "sqlite" / "sqlite-group": better-sqlite3 (12.x) as a Node developer would use it for
// sessions that must survive a crash: WAL with synchronous=FULL (every commit fsyncs the WAL before
// it returns), normalised, a row per chart, action, beat and entry, a row for the session's scalar
// fields. The session row also keeps the counts list() reports, updated in the same transaction as
// the rows they count (a counter cache), so that list() is one scan of one table.
//
// - `sqlite`: one transaction per write, run when the call is made (better-sqlite3 is synchronous:
//   the commit and its fsync run on Node's main thread).
// - `sqlite-group` (group commit): writes are queued and the queue is committed as one transaction
//   at the next turn of the event loop, so writes issued at once share one commit and one fsync, as
//   a host batching its writes would do. Every write's promise resolves only once its transaction
//   has committed.

const path = require('node:path')
const Database = require('better-sqlite3')

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sessions (
  id INTEGER PRIMARY KEY,
  session_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  universe_focus TEXT NOT NULL,
  story_position TEXT NOT NULL,
  memory TEXT NOT NULL,
  config TEXT NOT NULL,
  versions TEXT,
  charts INTEGER NOT NULL DEFAULT 0,
  beats INTEGER NOT NULL DEFAULT 0,
  entries INTEGER NOT NULL DEFAULT 0,
  UNIQUE (user_id, workspace_id)
);
CREATE TABLE IF NOT EXISTS charts (
  id INTEGER PRIMARY KEY,
  session INTEGER NOT NULL REFERENCES sessions (id),
  chart_id TEXT NOT NULL,
  title TEXT NOT NULL,
  desired_outcome TEXT NOT NULL,
  current_reality TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  extra TEXT
);
CREATE INDEX IF NOT EXISTS charts_by_session ON charts (session, id);
CREATE TABLE IF NOT EXISTS actions (
  id INTEGER PRIMARY KEY,
  chart INTEGER NOT NULL REFERENCES charts (id),
  session INTEGER NOT NULL REFERENCES sessions (id),
  action_id TEXT NOT NULL,
  title TEXT NOT NULL,
  completed INTEGER NOT NULL,
  completed_at TEXT,
  ord INTEGER,
  extra TEXT
);
CREATE INDEX IF NOT EXISTS actions_by_session ON actions (session, id);
CREATE TABLE IF NOT EXISTS beats (
  id INTEGER PRIMARY KEY,
  session INTEGER NOT NULL REFERENCES sessions (id),
  beat_id TEXT NOT NULL,
  type TEXT NOT NULL,
  description TEXT NOT NULL,
  created_at TEXT NOT NULL,
  annotations TEXT,
  extra TEXT
);
CREATE INDEX IF NOT EXISTS beats_by_session ON beats (session, id);
CREATE TABLE IF NOT EXISTS entries (
  id INTEGER PRIMARY KEY,
  session INTEGER NOT NULL REFERENCES sessions (id),
  entry_id TEXT NOT NULL,
  role TEXT NOT NULL,
  content TEXT NOT NULL,
  universe TEXT,
  ts TEXT NOT NULL,
  trace_id TEXT,
  extra TEXT
);
CREATE INDEX IF NOT EXISTS entries_by_session ON entries (session, id);
`

/** The fields each table has a column for; any other field of the object goes to `extra` (JSON). */
const KNOWN = {
  chart: new Set(['id', 'title', 'desiredOutcome', 'currentReality', 'actions', 'status', 'createdAt', 'updatedAt']),
  action: new Set(['id', 'title', 'completed', 'completedAt', 'order']),
  beat: new Set(['id', 'description', 'type', 'universeAnnotations', 'createdAt']),
  entry: new Set(['id', 'role', 'content', 'universe', 'timestamp', 'traceId']),
}

function extraOf(object, known) {
  let extra
  for (const key of Object.keys(object)) {
    if (!known.has(key)) (extra ||= {})[key] = object[key]
  }
  return extra ? JSON.stringify(extra) : null
}

const withExtra = (object, extra) => (extra ? Object.assign(object, JSON.parse(extra)) : object)

class SqliteStore {
  /** `group`: commit the writes issued at once as one transaction (see above). */
  constructor(dir, { group = false } = {}) {
    this.file = path.join(dir, 'sessions.db')
    this.db = new Database(this.file)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = FULL')
    this.db.exec(SCHEMA)
    this.group = group
    this.queue = []
    this.flushScheduled = false
    /** (user, workspace) → the session's row id, as a host keeps it once it has seen the session. */
    this.rowIds = new Map()
    const q = (sql) => this.db.prepare(sql)
    this.sql = {
      insertSession: q(`INSERT INTO sessions (session_id, user_id, workspace_id, created_at, updated_at, universe_focus,
        story_position, memory, config, versions, charts, beats, entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      insertChart: q(`INSERT INTO charts (session, chart_id, title, desired_outcome, current_reality, status, created_at,
        updated_at, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      insertAction: q('INSERT INTO actions (chart, session, action_id, title, completed, completed_at, ord, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      insertBeat: q('INSERT INTO beats (session, beat_id, type, description, created_at, annotations, extra) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      insertEntry: q('INSERT INTO entries (session, entry_id, role, content, universe, ts, trace_id, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      entryAdded: q('UPDATE sessions SET entries = entries + 1, updated_at = max(updated_at, ?) WHERE id = ?'),
      rowId: q('SELECT id FROM sessions WHERE user_id = ? AND workspace_id = ?').pluck(),
      session: q('SELECT * FROM sessions WHERE user_id = ? AND workspace_id = ?'),
      charts: q('SELECT id, chart_id, title, desired_outcome, current_reality, status, created_at, updated_at, extra FROM charts WHERE session = ? ORDER BY id').raw(),
      actions: q('SELECT chart, action_id, title, completed, completed_at, ord, extra FROM actions WHERE session = ? ORDER BY id').raw(),
      beats: q('SELECT beat_id, type, description, created_at, annotations, extra FROM beats WHERE session = ? ORDER BY id').raw(),
      entries: q('SELECT entry_id, role, content, universe, ts, trace_id, extra FROM entries WHERE session = ? ORDER BY id').raw(),
      list: q('SELECT session_id, user_id, workspace_id, created_at, updated_at, charts, beats, entries FROM sessions ORDER BY user_id, workspace_id').raw(),
      count: q('SELECT entries FROM sessions WHERE user_id = ? AND workspace_id = ?').pluck(),
    }
    this.transaction = this.db.transaction((writes) => {
      for (const write of writes) write()
    })
  }

  rowIdOf(userId, workspaceId) {
    const key = `${userId}\0${workspaceId}`
    let id = this.rowIds.get(key)
    if (id === undefined) {
      id = this.sql.rowId.get(userId, workspaceId)
      if (id === undefined) throw new Error(`no session ${userId} ${workspaceId}`)
      this.rowIds.set(key, id)
    }
    return id
  }

  /** Runs `write` (synchronous statements) in a transaction: now, or with the next group. */
  write(write) {
    if (!this.group) {
      this.transaction([write])
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ write, resolve, reject })
      if (!this.flushScheduled) {
        this.flushScheduled = true
        setImmediate(() => this.commitQueue())
      }
    })
  }

  commitQueue() {
    const batch = this.queue
    this.queue = []
    this.flushScheduled = false
    try {
      this.transaction(batch.map((w) => w.write))
    } catch (err) {
      for (const w of batch) w.reject(err)
      return
    }
    for (const w of batch) w.resolve()
  }

  /** Inserts a whole session (inside a transaction). */
  insertSession(s) {
    const { sql } = this
    const info = sql.insertSession.run(
      s.id,
      s.userId,
      s.workspaceId,
      s.createdAt,
      s.updatedAt,
      s.universeFocus,
      JSON.stringify(s.storyPosition),
      JSON.stringify(s.memory),
      JSON.stringify(s.config),
      s.versions ? JSON.stringify(s.versions) : null,
      s.activeCharts.length,
      s.storyBeats.length,
      s.conversationHistory.length,
    )
    const session = Number(info.lastInsertRowid)
    this.rowIds.set(`${s.userId}\0${s.workspaceId}`, session)
    for (const c of s.activeCharts) {
      const chart = Number(
        sql.insertChart.run(session, c.id, c.title, c.desiredOutcome, c.currentReality, c.status, c.createdAt, c.updatedAt, extraOf(c, KNOWN.chart)).lastInsertRowid,
      )
      for (const a of c.actions) {
        sql.insertAction.run(chart, session, a.id, a.title, a.completed ? 1 : 0, a.completedAt ?? null, a.order ?? null, extraOf(a, KNOWN.action))
      }
    }
    for (const b of s.storyBeats) {
      sql.insertBeat.run(session, b.id, b.type, b.description, b.createdAt, b.universeAnnotations ? JSON.stringify(b.universeAnnotations) : null, extraOf(b, KNOWN.beat))
    }
    for (const e of s.conversationHistory) this.insertEntry(session, e)
  }

  insertEntry(session, e) {
    this.sql.insertEntry.run(session, e.id, e.role, e.content, e.universe ?? null, e.timestamp, e.traceId ?? null, extraOf(e, KNOWN.entry))
  }

  /** Stores a new session durably. */
  create(session) {
    return this.write(() => this.insertSession(session))
  }

  /** Stores sessions in one transaction (set-up, untimed). */
  seed(sessions) {
    this.transaction(sessions.map((s) => () => this.insertSession(s)))
  }

  /** Appends one conversation entry durably. */
  append(userId, workspaceId, entry) {
    const session = this.rowIdOf(userId, workspaceId)
    return this.write(() => {
      this.insertEntry(session, entry)
      this.sql.entryAdded.run(entry.timestamp, session)
    })
  }

  /** The whole session, rebuilt from its rows. */
  restore(userId, workspaceId) {
    const { sql } = this
    const row = sql.session.get(userId, workspaceId)
    if (!row) throw new Error(`no session ${userId} ${workspaceId}`)
    const charts = new Map()
    const activeCharts = sql.charts.all(row.id).map(([id, chartId, title, desiredOutcome, currentReality, status, createdAt, updatedAt, extra]) => {
      const chart = withExtra({ id: chartId, title, desiredOutcome, currentReality, actions: [], status, createdAt, updatedAt }, extra)
      charts.set(id, chart)
      return chart
    })
    for (const [chart, id, title, completed, completedAt, order, extra] of sql.actions.all(row.id)) {
      const action = { id, title, completed: completed === 1 }
      if (completedAt !== null) action.completedAt = completedAt
      if (order !== null) action.order = order
      charts.get(chart).actions.push(withExtra(action, extra))
    }
    const storyBeats = sql.beats.all(row.id).map(([id, type, description, createdAt, annotations, extra]) => {
      const beat = { id, description, type }
      if (annotations !== null) beat.universeAnnotations = JSON.parse(annotations)
      beat.createdAt = createdAt
      return withExtra(beat, extra)
    })
    const conversationHistory = sql.entries.all(row.id).map(([id, role, content, universe, timestamp, traceId, extra]) => {
      const entry = { id, role, content }
      if (universe !== null) entry.universe = universe
      entry.timestamp = timestamp
      if (traceId !== null) entry.traceId = traceId
      return withExtra(entry, extra)
    })
    const session = {
      id: row.session_id,
      userId: row.user_id,
      workspaceId: row.workspace_id,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      universeFocus: row.universe_focus,
      activeCharts,
      storyBeats,
      storyPosition: JSON.parse(row.story_position),
      memory: JSON.parse(row.memory),
      conversationHistory,
      config: JSON.parse(row.config),
    }
    if (row.versions !== null) session.versions = JSON.parse(row.versions)
    return session
  }

  /** A summary per stored session, sorted by user and workspace (the UNIQUE index's order). */
  list() {
    return this.sql.list.all().map(([id, userId, workspaceId, createdAt, updatedAt, charts, beats, entries]) => ({ id, userId, workspaceId, createdAt, updatedAt, charts, beats, entries }))
  }

  /** The number of entries stored for a session (verification). */
  entryCount(userId, workspaceId) {
    return this.sql.count.get(userId, workspaceId)
  }

  close() {
    if (this.queue.length) this.commitQueue()
    this.db.close()
  }
}

module.exports = { SqliteStore }
