'use strict'
// The commands that move sessions: export, import, migrate.

const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const { mergeSessionsJson } = require('../..')
const { openStore, peekSession, whereOf, describe } = require('./store')
const { usageError } = require('./format')
const { startProgress } = require('./progress')
const { INTERRUPTED, watchInterrupt, forEachLimited } = require('./interrupt')
const { withStore } = require('./views')

/**
 * Writes lines to a file made whole only at the end (a temp file beside it, synced, then renamed
 * into place), or to stdout. `abort()` removes the temp file: an interrupted export leaves no file.
 */
function lineSink(output, out) {
  if (!output) return { write: (line) => out.write(line), finish: async () => {}, abort: () => {} }
  const temp = path.join(path.dirname(output), `.${path.basename(output)}.${process.pid}.tmp`)
  const fd = fs.openSync(temp, 'wx', 0o600)
  return {
    write: (line) => fs.writeSync(fd, line),
    finish: async () => {
      fs.fsyncSync(fd)
      fs.closeSync(fd)
      fs.renameSync(temp, output)
    },
    abort: () => {
      fs.closeSync(fd)
      fs.rmSync(temp, { force: true })
    },
  }
}

async function exportSessions(context, user, workspace, options) {
  if (!options.all && (user === undefined || workspace === undefined)) {
    throw usageError('export needs <user> <workspace>, or --all')
  }
  if (options.all && user !== undefined) throw usageError('give <user> <workspace> or --all, not both')
  const { io } = context
  const sink = lineSink(options.output, io.out)
  const interrupt = watchInterrupt(io.err)
  let written = 0
  try {
    await withStore(context, async (store) => {
      if (!options.all) {
        const found = await peekSession(store, user, workspace)
        if (!found) throw new Error(`no session of user ${JSON.stringify(user)} in workspace ${JSON.stringify(workspace)}`)
        sink.write(`${JSON.stringify(found.session)}\n`)
        written = 1
        return
      }
      const sessions = (await store.list()).filter((s) => options.user === undefined || s.userId === options.user)
      const progress = startProgress('export', sessions.length, { enabled: context.progress })
      try {
        for (const summary of sessions) {
          if (interrupt.stopped()) break
          const found = await store.peek(summary.userId, summary.workspaceId)
          if (found) {
            sink.write(`${JSON.stringify(found.session)}\n`)
            written += 1
          }
          progress.increment()
        }
      } finally {
        progress.stop()
      }
    })
    if (interrupt.stopped()) {
      sink.abort()
      io.err.write(`mia-sessions: export interrupted after ${written} session(s)${options.output ? `; ${options.output} not written` : ''}\n`)
      return INTERRUPTED
    }
    await sink.finish()
  } catch (err) {
    sink.abort()
    throw err
  } finally {
    interrupt.dispose()
  }
  io.err.write(`exported ${written} session(s)${options.output ? ` to ${options.output}` : ''}\n`)
  return 0
}

/** The sessions in an export: JSON lines, or one JSON document (a session, or an array of them). */
async function* sessionsIn(file) {
  const input = file === '-' ? process.stdin : fs.createReadStream(file)
  const lines = readline.createInterface({ input, crlfDelay: Infinity })
  let number = 0
  let whole = null
  for await (const line of lines) {
    number += 1
    if (whole !== null) {
      whole += `\n${line}`
      continue
    }
    if (line.trim() === '') continue
    try {
      yield { line: number, session: JSON.parse(line) }
    } catch {
      // Not one session a line: the file is one JSON document (as `show --json` prints it).
      if (number === 1 || /^\s*[[{]\s*$/.test(line)) whole = line
      else yield { line: number, error: 'not JSON' }
    }
  }
  if (whole !== null) {
    let parsed
    try {
      parsed = JSON.parse(whole)
    } catch (err) {
      yield { line: 1, error: `not JSON lines, nor one JSON document: ${err.message}` }
      return
    }
    for (const [i, session] of (Array.isArray(parsed) ? parsed : [parsed]).entries()) yield { line: i + 1, session }
  }
}

async function importSessions(context, file, options) {
  if (file !== '-' && !fs.existsSync(file)) throw new Error(`no file ${file}`)
  const { io } = context
  const interrupt = watchInterrupt(io.err)
  const totals = { created: 0, merged: 0, unchanged: 0, failed: 0, values: 0 }
  try {
    await withStore(
      context,
      async (store) => {
        for await (const item of sessionsIn(file)) {
          if (interrupt.stopped()) break
          if (item.error) {
            totals.failed += 1
            io.err.write(`mia-sessions: line ${item.line}: ${item.error}\n`)
            continue
          }
          let result
          try {
            result = await store.importSession(item.session)
          } catch (err) {
            if (err.code !== 'EINVALID' && err.code !== 'ETOOLARGE') throw err
            totals.failed += 1
            io.err.write(`mia-sessions: line ${item.line}: ${err.message} (${err.code})\n`)
            continue
          }
          const state = result.created ? 'created' : result.changes.length > 0 ? 'merged' : 'unchanged'
          totals[state] += 1
          totals.values += result.changes.length
          if (options.json) {
            io.out.write(`${JSON.stringify({ ...result, state })}\n`)
          } else {
            const what = state === 'merged' ? `took ${result.changes.length} value(s): ${summarizePaths(result.changes)}` : state
            io.out.write(`${result.userId}  ${result.workspaceId}  ${what}\n`)
          }
        }
      },
      { mustExist: false },
    )
  } finally {
    interrupt.dispose()
  }
  const summary = `imported: ${totals.created} created, ${totals.merged} merged (${totals.values} value(s)), ${totals.unchanged} unchanged, ${totals.failed} refused`
  if (interrupt.stopped()) {
    io.err.write(`mia-sessions: import interrupted; ${summary}; importing the file again is safe (a merge)\n`)
    return INTERRUPTED
  }
  io.err.write(`${summary}\n`)
  return totals.failed > 0 ? 1 : 0
}

function summarizePaths(paths) {
  return paths.length <= 6 ? paths.join(', ') : `${paths.slice(0, 6).join(', ')}, …`
}

/** A digest of a session's content: equal digests, equal sessions. */
function digest(session) {
  return crypto.createHash('sha256').update(JSON.stringify(session)).digest('hex')
}

/**
 * A migration's progress, kept for a resume: a header line naming both stores, then one JSON
 * line `[userId, workspaceId]` per session copied. A torn last line (a crash) is ignored, and
 * so is the file if it names other stores: copying a session again is a merge, so a resume that
 * redoes some loses nothing.
 */
class MigrationState {
  constructor(file, header) {
    this.file = file
    this.header = header
    this.done = new Set()
    this.pending = []
    if (fs.existsSync(file)) this.read()
    if (this.done.size === 0) fs.writeFileSync(file, `${JSON.stringify(header)}\n`, { mode: 0o600 })
    this.fd = fs.openSync(file, 'a')
  }

  read() {
    const [first, ...rest] = fs.readFileSync(this.file, 'utf8').split('\n')
    let header
    try {
      header = JSON.parse(first)
    } catch {
      return
    }
    if (header.from !== this.header.from || header.to !== this.header.to) {
      throw new Error(`${this.file} is the state of another migration (from ${header.from} to ${header.to}); give another --state`)
    }
    for (const line of rest) {
      try {
        this.done.add(JSON.stringify(JSON.parse(line)))
      } catch {
        // a torn last line
      }
    }
  }

  has(summary) {
    return this.done.has(JSON.stringify([summary.userId, summary.workspaceId]))
  }

  /** Records a copied session; written out by `flush`. */
  add(summary) {
    const line = JSON.stringify([summary.userId, summary.workspaceId])
    this.done.add(line)
    this.pending.push(`${line}\n`)
    if (this.pending.length >= 256) this.flush()
  }

  flush() {
    if (this.pending.length === 0) return
    fs.writeSync(this.fd, this.pending.join(''))
    fs.fsyncSync(this.fd)
    this.pending = []
  }

  close() {
    this.flush()
    fs.closeSync(this.fd)
  }
}

async function migrate(context, options) {
  const { io } = context
  const keyPrefix = context.globals.keyPrefix
  const from = whereOf(options.from, keyPrefix)
  const to = whereOf(options.to, keyPrefix)
  const header = { migration: 'mia-sessions', from: describe(from), to: describe(to) }
  if (header.from === header.to) throw usageError('--from and --to are the same store')
  const stateFile =
    options.state ||
    `mia-sessions-migrate-${crypto.createHash('sha256').update(`${header.from}\0${header.to}`).digest('hex').slice(0, 12)}.state`
  const source = await openStore(from, { onlyRead: true })
  let target
  const interrupt = watchInterrupt(io.err)
  try {
    target = await openStore(to, { mustExist: false, ttlDays: options.ttlDays })
    const sessions = await source.list()
    const state = new MigrationState(stateFile, header)
    const todo = sessions.filter((s) => !state.has(s))
    if (todo.length < sessions.length) {
      io.err.write(`resuming: ${sessions.length - todo.length} of ${sessions.length} session(s) were copied before\n`)
    }
    const progress = startProgress('copy', todo.length, { enabled: context.progress })
    let gone = 0
    try {
      await forEachLimited(
        todo,
        options.concurrency,
        async (summary) => {
          const found = await source.peek(summary.userId, summary.workspaceId)
          if (found) await target.importSession(found.session)
          else gone += 1
          state.add(summary)
          progress.increment()
        },
        interrupt.stopped,
      )
    } finally {
      progress.stop()
      state.close()
    }
    if (interrupt.stopped()) {
      io.err.write(
        `mia-sessions: migrate interrupted: ${state.done.size} of ${sessions.length} session(s) copied; ` +
          `run the same command again to resume (progress is in ${stateFile})\n`,
      )
      return INTERRUPTED
    }
    const verdict = await verify(context, source, target, sessions, options.concurrency, interrupt)
    if (verdict === INTERRUPTED) return INTERRUPTED
    if (verdict.failed.length > 0) {
      for (const line of verdict.failed.slice(0, 20)) io.err.write(`mia-sessions: ${line}\n`)
      throw new Error(
        `migrate: ${verdict.failed.length} of ${sessions.length} session(s) do not match in ${header.to}; ` +
          'if the source changed meanwhile, run migrate again',
      )
    }
    fs.rmSync(stateFile, { force: true })
    io.err.write(
      `migrated ${sessions.length} session(s) from ${header.from} to ${header.to}: ` +
        `counts match, ${verdict.identical} identical by checksum, ${verdict.merged} merged with a copy the target already held` +
        (gone ? `, ${gone} removed from the source meanwhile` : '') +
        '\n',
    )
    return 0
  } finally {
    interrupt.dispose()
    await Promise.allSettled([source.close(), target?.close()])
  }
}

/**
 * Checks a migration: every source session is in the target, and the target's copy is the same
 * (equal SHA-256 of the session) or holds all of it (merging the source's copy into it changes
 * nothing: the target had its own copy, and merged).
 */
async function verify(context, source, target, sessions, concurrency, interrupt) {
  const verdict = { identical: 0, merged: 0, failed: [] }
  const progress = startProgress('verify', sessions.length, { enabled: context.progress })
  try {
    await forEachLimited(
      sessions,
      concurrency,
      async (summary) => {
        const [a, b] = await Promise.all([
          source.peek(summary.userId, summary.workspaceId),
          target.peek(summary.userId, summary.workspaceId),
        ])
        progress.increment()
        if (!a) return // removed from the source meanwhile
        if (!b) {
          verdict.failed.push(`${summary.userId} ${summary.workspaceId}: missing in the target`)
          return
        }
        if (digest(a.session) === digest(b.session)) {
          verdict.identical += 1
          return
        }
        const merged = JSON.parse(await mergeSessionsJson(JSON.stringify(b.session), JSON.stringify(a.session)))
        if (digest(merged) === digest(b.session)) verdict.merged += 1
        else verdict.failed.push(`${summary.userId} ${summary.workspaceId}: the target's copy lacks some of the source's`)
      },
      interrupt.stopped,
    )
  } finally {
    progress.stop()
  }
  if (interrupt.stopped()) {
    context.io.err.write('mia-sessions: migrate interrupted while verifying; run the same command again to verify\n')
    return INTERRUPTED
  }
  return verdict
}

module.exports = { exportSessions, importSessions, migrate, digest }
