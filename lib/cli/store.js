'use strict'
// Opening the store a command works on: files in a data dir, or Redis. Through the library, so
// every read and write takes the same locks and follows the same merge rules as a running server.

const fs = require('node:fs')
const { NarrativeSessionStore, defaultDataDir } = require('../..')
const { usageError } = require('./format')

/** Options every store the tools open gets: no autosave, no TTL sweep, no unloading. */
const TOOL_OPTIONS = Object.freeze({ autosaveIntervalMs: 0, cleanupIntervalMs: 0, unloadAfterMs: 0 })

/**
 * Where a command's sessions are, from the global flags: `{ kind: 'redis', url, keyPrefix }` or
 * `{ kind: 'file', dataDir }`.
 */
function whereFrom(opts) {
  if (opts.redis) return { kind: 'redis', url: opts.redis, keyPrefix: opts.keyPrefix }
  return { kind: 'file', dataDir: opts.dataDir || defaultDataDir() }
}

/**
 * `--from` / `--to` of migrate: a `redis://` or `rediss://` URL, or a data dir (`file:DIR` or a
 * path).
 */
function whereOf(spec, keyPrefix) {
  if (/^rediss?:\/\//.test(spec)) return { kind: 'redis', url: spec, keyPrefix }
  const dir = spec.startsWith('file:') ? spec.slice(5) : spec
  if (!dir) throw usageError(`${JSON.stringify(spec)} names no data dir`)
  return { kind: 'file', dataDir: dir }
}

/** How a place is named to the operator; a Redis password is never shown. */
function describe(where) {
  if (where.kind === 'file') return where.dataDir
  return where.url.replace(/\/\/([^@/]*)@/, '//***@') + (where.keyPrefix ? ` (prefix ${where.keyPrefix})` : '')
}

/**
 * Opens the store at `where`. `mustExist` (every command but those that write into it) refuses a
 * data dir that is not there instead of creating it: a mistyped path is not a new, empty store.
 */
async function openStore(where, { mustExist = true, ttlDays, onlyRead = false } = {}) {
  const ttl = ttlDays === undefined ? {} : { ttlDays }
  if (where.kind === 'redis') {
    const prefix = where.keyPrefix === undefined ? {} : { keyPrefix: where.keyPrefix }
    return NarrativeSessionStore.open({ backend: 'redis', redisUrl: where.url, ...prefix, ...ttl, ...TOOL_OPTIONS })
  }
  if (mustExist && !isDirectory(where.dataDir)) {
    const error = new Error(`no data dir at ${where.dataDir} (give the right one with --data-dir)`)
    error.code = 'ENOENT'
    throw error
  }
  // onlyRead: list() writes no index either, so the data dir is left exactly as it was.
  const index = onlyRead ? { listIndex: false } : {}
  return NarrativeSessionStore.open({ dataDir: where.dataDir, ...ttl, ...index, ...TOOL_OPTIONS })
}

function isDirectory(dir) {
  try {
    return fs.statSync(dir).isDirectory()
  } catch {
    return false
  }
}

/**
 * The stored session of `user` in `workspace`, or null: as given, else with the workspace as the
 * server keys a folder path (`/home/me/proj/` → `/home/me/proj`).
 */
async function peekSession(store, user, workspace) {
  const found = await store.peek(user, workspace)
  if (found) return found
  const { normalizeWorkspaceId } = require('../..')
  const normalized = normalizeWorkspaceId(workspace)
  return normalized === workspace ? null : store.peek(user, normalized)
}

module.exports = { TOOL_OPTIONS, whereFrom, whereOf, describe, openStore, peekSession }
