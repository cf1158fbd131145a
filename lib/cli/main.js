'use strict'
// `mia-sessions`: see, move, repair and clean up narrative sessions without writing code.
// The commands and their flags are the table below (lib/cli/args.js reads argv); each command's
// code is in this folder. Every command goes through the library (NarrativeSessionStore), so it
// takes the same locks and follows the same merge rules as a server that has the store open. docs/operating.md is the operator's guide.

const { option, argument, parseArgs } = require('./args')
const { whereFrom, describe } = require('./store')
const { parseDuration, parsePositive, usageError } = require('./format')
const views = require('./views')
const transfer = require('./transfer')
const upkeep = require('./upkeep')

/** Exit codes: 0 done, 1 failed, 2 bad usage, 3 damage found and left, 130 interrupted. */
const EXIT = { ok: 0, failed: 1, usage: 2 }

const PROGRAM = {
  name: 'mia-sessions',
  description:
    'See, move, repair and clean up the narrative sessions of mia-code-server, in a data dir or in Redis,' +
    ' safely beside a running server (the same locks and merge rules).',
  options: [
    option('--data-dir <dir>', "the file store (default: the library's defaultDataDir())"),
    option('--redis <url>', 'a Redis store instead: redis://[user:password@]host:port/db', { env: 'MIA_SESSION_REDIS_URL' }),
    option('--key-prefix <prefix>', 'the prefix of the Redis keys (default mia:ns:)'),
    option('--no-progress', 'no progress bar or progress lines on stderr'),
  ],
  commands: [
    {
      name: 'list',
      description: 'a table of the stored sessions: user, workspace, size, counts, last update, age',
      args: [],
      options: [
        option('--user <id>', "only this user's sessions"),
        option('--workspace <id>', 'only sessions of this workspace'),
        option('--older-than <duration>', 'only sessions not updated for this long (30d, 12h, 90m, 2w)', { parse: parseDuration }),
        option('--sort <field>', 'sort by', { choices: views.SORT_FIELDS, default: 'user' }),
        option('--reverse', 'largest, newest or last first'),
        option('--limit <n>', 'at most this many rows', { parse: parsePositive('--limit') }),
        option('--json', 'JSON for scripts: an array of session summaries'),
      ],
      action: views.list,
    },
    {
      name: 'show',
      description: 'one session: focus, position, charts with progress, last beats and messages',
      args: [argument('<user>', 'the user id'), argument('<workspace>', 'the workspace id (the folder path the server keyed it by)')],
      options: [
        option('--json', 'the whole session as JSON'),
        option('--beats <n>', 'how many of the last story beats', { parse: parsePositive('--beats'), default: 5 }),
        option('--messages <n>', 'how many of the last messages', { parse: parsePositive('--messages'), default: 5 }),
      ],
      action: views.show,
    },
    {
      name: 'stats',
      description: 'totals, sizes, their distribution, the oldest and largest sessions, copies kept aside',
      args: [],
      options: [
        option('--top <n>', 'how many of the oldest and largest', { parse: parsePositive('--top'), default: 5 }),
        option('--json', 'JSON for scripts'),
      ],
      action: views.stats,
    },
    {
      name: 'export',
      description: 'one session, or all (--all), as JSON lines: one whole session a line, with its user and workspace',
      args: [argument('[user]', 'the user id (with <workspace>)'), argument('[workspace]', 'the workspace id')],
      options: [
        option('--all', 'every session (or every session of --user)'),
        option('--user <id>', "with --all: only this user's sessions"),
        option('-o, --output <file>', 'write to this file (made whole at the end; standard output by default)'),
      ],
      action: transfer.exportSessions,
    },
    {
      name: 'import',
      description: 'merge the sessions of an export into the store by the merge rules: never overwrites; says what changed',
      args: [argument('<file>', 'JSON lines (or one JSON session or array), "-" for standard input')],
      options: [option('--json', 'one JSON result a line')],
      action: transfer.importSessions,
    },
    {
      name: 'migrate',
      description:
        'copy every session from one store to another (files to Redis and back), resumable after Ctrl-C,' +
        ' verified by counts and checksums at the end; the source\'s sessions are only read',
      args: [],
      options: [
        option('--from <store>', 'a data dir (or file:DIR) or a redis:// URL', { required: true }),
        option('--to <store>', 'a data dir (or file:DIR) or a redis:// URL', { required: true }),
        option('--state <file>', 'where progress is kept for a resume (default: mia-sessions-migrate-<hash>.state here)'),
        option('--concurrency <n>', 'sessions copied at once', { parse: parsePositive('--concurrency'), default: 8 }),
        option('--ttl-days <days>', 'with Redis as the target: the expiry the copies get', { parse: parsePositive('--ttl-days') }),
      ],
      action: transfer.migrate,
    },
    {
      name: 'gc',
      description: 'the TTL sweep: remove sessions not updated for --ttl-days (Redis: those whose keys never expire)',
      args: [],
      options: [
        option('--ttl-days <days>', 'the TTL', { parse: parsePositive('--ttl-days'), default: 30 }),
        option('--dry-run', 'list what would be removed, remove nothing'),
        option('--json', 'JSON for scripts'),
      ],
      action: upkeep.gc,
    },
    {
      name: 'doctor',
      description:
        'check every snapshot and journal, list damaged files and copies kept aside (read-only);' +
        ' with --repair, print what it will do, then restore each damaged session from its best copies',
      args: [],
      options: [
        option('--repair', 'repair what can be repaired (damaged files are moved aside, never deleted)'),
        option('--json', 'JSON for scripts'),
      ],
      action: upkeep.doctor,
    },
  ],
}

/**
 * Runs the command in `argv` (as `process.argv`) and resolves to its exit code. Errors are one
 * line on stderr: `mia-sessions: <what went wrong>`; bad usage adds a line that points to --help.
 */
async function main(argv, io = { out: process.stdout, err: process.stderr }, env = process.env) {
  let parsed
  try {
    parsed = parseArgs(PROGRAM, argv.slice(2), env)
    if (parsed.noCommand) {
      io.err.write(parsed.help)
      return EXIT.usage
    }
    if (parsed.help !== undefined) {
      io.out.write(parsed.help)
      return EXIT.ok
    }
    if (parsed.options.redis && parsed.options.dataDir) throw usageError('give --data-dir or --redis, not both')
  } catch (err) {
    io.err.write(`mia-sessions: ${oneLineError(err)}\n(mia-sessions --help lists every command)\n`)
    return EXIT.usage
  }
  const { command, positionals, options } = parsed
  const context = { io, where: whereFrom(options), progress: options.progress !== false, globals: options }
  try {
    const code = await command.action(context, ...padded(positionals, command.args.length), options)
    return Number.isInteger(code) ? code : EXIT.ok
  } catch (err) {
    io.err.write(`mia-sessions: ${oneLineError(err)}\n`)
    return err && Number.isInteger(err.exitCode) ? err.exitCode : EXIT.failed
  }
}

/** The positional arguments, with `undefined` for the optional ones not given. */
function padded(positionals, count) {
  return Array.from({ length: count }, (_, i) => positionals[i])
}

/** An error as one line, with the library's stable code when it has one. */
function oneLineError(err) {
  const message = String((err && err.message) || err).replace(/\s*\n\s*/g, ' ')
  const code = err && typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code) ? ` (${err.code})` : ''
  return message + code
}

module.exports = { main, describe }
