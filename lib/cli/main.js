'use strict'
// `mia-sessions`: see, move, repair and clean up narrative sessions without writing code.
// Commands and flags are commander's; each command's code is in this folder. Every command goes
// through the library (NarrativeSessionStore), so it takes the same locks and follows the same
// merge rules as a server that has the store open. docs/operating.md is the operator's guide.

const { Command, Option } = require('commander')
const { whereFrom, describe } = require('./store')
const { parseDuration, parsePositive } = require('./format')
const views = require('./views')
const transfer = require('./transfer')
const upkeep = require('./upkeep')

/** Exit codes: 0 done, 1 failed, 2 bad usage, 3 damage found and left, 130 interrupted. */
const EXIT = { ok: 0, failed: 1, usage: 2 }

function buildProgram(io) {
  const program = new Command('mia-sessions')
    .description(
      'See, move, repair and clean up the narrative sessions of mia-code-server, in a data dir or in Redis,' +
        ' safely beside a running server (the same locks and merge rules).',
    )
    .addOption(new Option('--data-dir <dir>', 'the file store (default: the library\'s defaultDataDir())'))
    .addOption(new Option('--redis <url>', 'a Redis store instead: redis://[user:password@]host:port/db').env('MIA_SESSION_REDIS_URL'))
    .addOption(new Option('--key-prefix <prefix>', 'the prefix of the Redis keys (default mia:ns:)'))
    .option('--no-progress', 'no progress bar or progress lines on stderr')
    .showHelpAfterError('(mia-sessions --help lists every command)')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.out.write(text),
      writeErr: (text) => io.err.write(text),
      outputError: (text, write) => write(`mia-sessions: ${text.replace(/^error: /, '')}`),
    })

  // Each action returns its exit code; `run` keeps it.
  const run = (handler) =>
    async function action(...args) {
      const command = args[args.length - 1]
      const globals = command.optsWithGlobals()
      if (globals.redis && globals.dataDir) {
        throw Object.assign(new Error('give --data-dir or --redis, not both'), { exitCode: EXIT.usage })
      }
      const context = { io, where: whereFrom(globals), progress: globals.progress !== false, globals }
      io.exitCode = await handler(context, ...args.slice(0, -1))
    }

  program
    .command('list')
    .description('a table of the stored sessions: user, workspace, size, counts, last update, age')
    .option('--user <id>', 'only this user\'s sessions')
    .option('--workspace <id>', 'only sessions of this workspace')
    .option('--older-than <duration>', 'only sessions not updated for this long (30d, 12h, 90m, 2w)', parseDuration)
    .addOption(new Option('--sort <field>', 'sort by').choices(views.SORT_FIELDS).default('user'))
    .option('--reverse', 'largest, newest or last first')
    .option('--limit <n>', 'at most this many rows', parsePositive('--limit'))
    .option('--json', 'JSON for scripts: an array of session summaries')
    .action(run(views.list))

  program
    .command('show')
    .description('one session: focus, position, charts with progress, last beats and messages')
    .argument('<user>', 'the user id')
    .argument('<workspace>', 'the workspace id (the folder path the server keyed it by)')
    .option('--json', 'the whole session as JSON')
    .option('--beats <n>', 'how many of the last story beats', parsePositive('--beats'), 5)
    .option('--messages <n>', 'how many of the last messages', parsePositive('--messages'), 5)
    .action(run(views.show))

  program
    .command('stats')
    .description('totals, sizes, their distribution, the oldest and largest sessions, copies kept aside')
    .option('--top <n>', 'how many of the oldest and largest', parsePositive('--top'), 5)
    .option('--json', 'JSON for scripts')
    .action(run(views.stats))

  program
    .command('export')
    .description('one session, or all (--all), as JSON lines: one whole session a line, with its user and workspace')
    .argument('[user]', 'the user id (with <workspace>)')
    .argument('[workspace]', 'the workspace id')
    .option('--all', 'every session (or every session of --user)')
    .option('--user <id>', 'with --all: only this user\'s sessions')
    .option('-o, --output <file>', 'write to this file (made whole at the end; standard output by default)')
    .action(run(transfer.exportSessions))

  program
    .command('import')
    .description('merge the sessions of an export into the store by the merge rules: never overwrites; says what changed')
    .argument('<file>', 'JSON lines (or one JSON session or array), "-" for standard input')
    .option('--json', 'one JSON result a line')
    .action(run(transfer.importSessions))

  program
    .command('migrate')
    .description(
      'copy every session from one store to another (files to Redis and back), resumable after Ctrl-C,' +
        ' verified by counts and checksums at the end; the source is only read',
    )
    .requiredOption('--from <store>', 'a data dir (or file:DIR) or a redis:// URL')
    .requiredOption('--to <store>', 'a data dir (or file:DIR) or a redis:// URL')
    .option('--state <file>', 'where progress is kept for a resume (default: mia-sessions-migrate-<hash>.state here)')
    .option('--concurrency <n>', 'sessions copied at once', parsePositive('--concurrency'), 8)
    .option('--ttl-days <days>', 'with Redis as the target: the expiry the copies get', parsePositive('--ttl-days'))
    .action(run(transfer.migrate))

  program
    .command('gc')
    .description('the TTL sweep: remove sessions not updated for --ttl-days (Redis: those whose keys never expire)')
    .option('--ttl-days <days>', 'the TTL', parsePositive('--ttl-days'), 30)
    .option('--dry-run', 'list what would be removed, remove nothing')
    .option('--json', 'JSON for scripts')
    .action(run(upkeep.gc))

  program
    .command('doctor')
    .description(
      'check every snapshot and journal, list damaged files and copies kept aside (read-only);' +
        ' with --repair, print what it will do, then restore each damaged session from its best copies',
    )
    .option('--repair', 'repair what can be repaired (damaged files are moved aside, never deleted)')
    .option('--json', 'JSON for scripts')
    .action(run(upkeep.doctor))

  return program
}

/**
 * Runs the command in `argv` (as `process.argv`) and resolves to its exit code. Errors are one
 * line on stderr: `mia-sessions: <what went wrong>`.
 */
async function main(argv, io = { out: process.stdout, err: process.stderr }) {
  const program = buildProgram(io)
  io.exitCode = EXIT.ok
  try {
    await program.parseAsync(argv)
    return io.exitCode
  } catch (err) {
    if (err && err.code === 'commander.helpDisplayed') return EXIT.ok
    if (err && err.code === 'commander.version') return EXIT.ok
    if (err && typeof err.code === 'string' && err.code.startsWith('commander.')) return EXIT.usage
    io.err.write(`mia-sessions: ${oneLineError(err)}\n`)
    return err && Number.isInteger(err.exitCode) ? err.exitCode : EXIT.failed
  }
}

/** An error as one line, with the library's stable code when it has one. */
function oneLineError(err) {
  const message = String((err && err.message) || err).replace(/\s*\n\s*/g, ' ')
  const code = err && typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code) ? ` (${err.code})` : ''
  return message + code
}

module.exports = { main, describe }
