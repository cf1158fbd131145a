'use strict'
// Tables, sizes, times and durations as the commands print and read them.

const Table = require('cli-table3')

/** A borderless table with a two-space gap between columns, for a terminal or a log. */
function table(head, rows) {
  const out = new Table({
    head,
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
      bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
      left: '', 'left-mid': '', mid: '', 'mid-mid': '',
      right: '', 'right-mid': '', middle: '  ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  })
  out.push(...rows)
  return out
    .toString()
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n')
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB']

/** `1536` → `1.5 KB` (powers of 1024). */
function bytes(n) {
  let value = n
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`
}

const DURATION_UNITS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** `30d`, `12h`, `90m`, `45s`, `2w` → milliseconds. Throws a usage error for anything else. */
function parseDuration(text) {
  const match = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(String(text).trim())
  if (!match) throw usageError(`${JSON.stringify(text)} is not a duration such as 30d, 12h, 90m or 2w`)
  return Number(match[1]) * DURATION_UNITS[match[2]]
}

/** A positive number (days, a count). */
function parsePositive(what) {
  return (text) => {
    const n = Number(text)
    if (!Number.isFinite(n) || n <= 0) throw usageError(`${what} must be a positive number, not ${JSON.stringify(text)}`)
    return n
  }
}

/** How long ago `iso` was, in the largest unit: `3d`, `5h`, `12m`, `40s`. */
function age(iso, now = Date.now()) {
  const ms = now - Date.parse(iso)
  if (!Number.isFinite(ms)) return '?'
  if (ms < 0) return 'future'
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000]]) {
    if (ms >= size) return `${Math.floor(ms / size)}${unit}`
  }
  return `${Math.floor(ms / 1000)}s`
}

/** An ISO time shortened to the minute: `2026-12-04 10:31`. */
function when(iso) {
  return typeof iso === 'string' ? iso.replace('T', ' ').slice(0, 16) : ''
}

/** One line of at most `max` characters, newlines folded. */
function oneLine(text, max = 80) {
  const line = String(text ?? '').replace(/\s+/g, ' ').trim()
  return line.length > max ? `${line.slice(0, max - 1)}…` : line
}

/** An error of the command's use (a bad flag value): exit code 2. */
function usageError(message) {
  const error = new Error(message)
  error.exitCode = 2
  return error
}

module.exports = { table, bytes, parseDuration, parsePositive, age, when, oneLine, usageError }
