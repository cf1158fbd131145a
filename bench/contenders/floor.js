'use strict'
// The floor: the least a durable store on files does. One file per session (`<stem>.log`, 0600):
// a new session is its JSON written to a new file, `fdatasync`ed, and the directory `fsync`ed (the
// new name must survive a crash too); an append is a `write` of the entry's JSON line to the
// session's file (opened once, O_APPEND) and an `fdatasync` of that file. No format, no index, no
// checksum, no recovery, no merge.
//
// Two ways to make the calls, for two questions:
// - `synchronous` (W2, one append at a time): `fs.writeSync` + `fs.fdatasyncSync` on Node's main
//   thread. No thread hop at all: the bare cost of an append and its sync, which no async form can
//   beat (each hop to libuv's pool and back costs a wake-up, and on a loaded machine a wait for a
//   core). Node's thread is held for the sync, which a host would not accept: a floor for wall time
//   only.
// - asynchronous (W6, W7, many at once): Node's fs promises, which wait on libuv's thread pool;
//   run.js gives the floor's processes 64 threads (UV_THREADPOOL_SIZE), so that many syncs are in
//   flight at once. Appends to one file are committed in groups, as a store would at best: the
//   appends that arrive while the file's last group is being written and synced form the next
//   group, written with one `writev` and synced with one `fdatasync` (so 20 appends to one file
//   issued at once cost one or two syncs, not 20). New files' directory entries share directory
//   `fsync`s the same way.
//
// Restoring a session (W1) is reading its file: the bytes, sent as they are.

const fs = require('node:fs')
const fsp = require('node:fs/promises')
const path = require('node:path')

const { sessionFileStem } = require('../generate')

/**
 * `sync()` on demand, shared: a caller waits for a run of `sync` that started after its call;
 * callers that arrive while one runs share the next.
 */
class SharedSync {
  constructor(sync) {
    this.sync = sync
    this.running = null
    this.next = null
  }

  run() {
    if (this.next) return this.next
    const previous = this.running
    const mine = (async () => {
      await (previous && previous.catch(() => {}))
      // From here on, a new caller may have written after this sync started: it waits for the next.
      this.next = null
      this.running = mine
      try {
        await this.sync()
      } finally {
        if (this.running === mine) this.running = null
      }
    })()
    this.next = mine
    return mine
  }
}

/** One session's file, open for appends; asynchronous appends go out in groups (see above). */
class AppendFile {
  constructor(handle) {
    this.handle = handle
    this.waiting = []
    this.writing = false
  }

  append(line) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ line, resolve, reject })
      if (!this.writing) this.writeGroups()
    })
  }

  async writeGroups() {
    this.writing = true
    while (this.waiting.length) {
      const group = this.waiting
      this.waiting = []
      try {
        await this.handle.writev(group.map((w) => w.line))
        await this.handle.datasync()
        for (const w of group) w.resolve()
      } catch (err) {
        for (const w of group) w.reject(err)
      }
    }
    this.writing = false
  }
}

class FloorStore {
  /** `synchronous`: make every append's calls synchronously on Node's thread (see above). */
  constructor(dir, { synchronous = false } = {}) {
    this.dir = dir
    this.synchronous = synchronous
    /** stem → the open file: an fd (synchronous) or a promise of an AppendFile. */
    this.files = new Map()
    this.dirSync = new SharedSync(async () => {
      const handle = await fsp.open(dir, 'r')
      try {
        await handle.sync()
      } finally {
        await handle.close()
      }
    })
  }

  fileOf(userId, workspaceId) {
    return path.join(this.dir, `${sessionFileStem(userId, workspaceId)}.log`)
  }

  /** The session's open file, opened once (O_APPEND) however many ask at once. */
  openFile(userId, workspaceId) {
    const stem = sessionFileStem(userId, workspaceId)
    let file = this.files.get(stem)
    if (file === undefined) {
      const name = this.fileOf(userId, workspaceId)
      file = this.synchronous ? fs.openSync(name, 'a') : fsp.open(name, 'a').then((handle) => new AppendFile(handle))
      this.files.set(stem, file)
    }
    return file
  }

  /** A new session, durably: a new file with its JSON, synced, then its directory entry synced. */
  async create(session) {
    const handle = await fsp.open(this.fileOf(session.userId, session.workspaceId), 'wx', 0o600)
    this.files.set(sessionFileStem(session.userId, session.workspaceId), Promise.resolve(new AppendFile(handle)))
    await handle.write(JSON.stringify(session) + '\n')
    await handle.datasync()
    await this.dirSync.run()
  }

  /** Stores sessions (set-up, untimed), synced. */
  async seed(sessions) {
    for (const s of sessions) {
      const fd = fs.openSync(this.fileOf(s.userId, s.workspaceId), 'wx', 0o600)
      fs.writeSync(fd, JSON.stringify(s) + '\n')
      fs.fdatasyncSync(fd)
      fs.closeSync(fd)
    }
    await this.dirSync.run()
  }

  /** Appends one conversation entry durably: a line written, the file synced. */
  async append(userId, workspaceId, entry) {
    const line = Buffer.from(JSON.stringify(entry) + '\n')
    if (this.synchronous) {
      const fd = this.openFile(userId, workspaceId)
      fs.writeSync(fd, line)
      fs.fdatasyncSync(fd)
      return
    }
    const file = await this.openFile(userId, workspaceId)
    await file.append(line)
  }

  /** The session's file as it is (W1 sends these bytes). */
  restore(userId, workspaceId) {
    return fsp.readFile(this.fileOf(userId, workspaceId))
  }

  /** Entries in the file: the session's own plus one a line after it (verification). */
  entryCount(userId, workspaceId) {
    const lines = fs.readFileSync(this.fileOf(userId, workspaceId), 'utf8').split('\n').filter(Boolean)
    return JSON.parse(lines[0]).conversationHistory.length + lines.length - 1
  }

  async close() {
    for (const file of this.files.values()) {
      if (typeof file === 'number') fs.closeSync(file)
      else await (await file).handle.close()
    }
    this.files.clear()
  }
}

module.exports = { FloorStore, SharedSync }
