'use strict'
// The command line: a program with global options and commands, each with its own arguments and
// options, read from argv and described by --help. Written here rather than taken from a package so
// that `npm install mia-narrative-session` brings no runtime dependency.
//
// An option is made from its flags as help shows them: `--user <id>` takes a value, `--json` is a
// switch, `--no-progress` turns `progress` (true by default) off, `-o, --output <file>` has a short
// form. Its settings: `parse` (text → value, throws a usage error), `choices`, `default`, `env` (read
// when the flag is absent), `required`.

const { usageError } = require('./format')

/** An option from its flags, description and settings. */
function option(flags, description, settings = {}) {
  const match = /^(?:-(\w), )?--([\w-]+)(?: <(\w[\w-]*)>)?$/.exec(flags)
  if (!match) throw new Error(`bad option flags: ${flags}`)
  const [, short, long, valueName] = match
  const negated = !valueName && long.startsWith('no-')
  const key = camel(negated ? long.slice(3) : long)
  return { flags, description, short, long, valueName, negated, key, ...settings }
}

function camel(name) {
  return name.replace(/-(\w)/g, (_, c) => c.toUpperCase())
}

/** `<user>` is required, `[user]` optional. */
function argument(spec, description) {
  const required = spec.startsWith('<')
  return { spec, description, required, name: spec.slice(1, -1) }
}

/**
 * Reads `args` (argv without node and the script) against `program` ({ name, description, options,
 * commands: [{ name, description, args, options, action }] }). Returns `{ help: text }` when help
 * was asked for (with `noCommand: true` when no command was named), else `{ command, positionals, options }` with every option's value (flags, then
 * the environment, then defaults). Throws a usage error for anything it does not know.
 */
function parseArgs(program, args, env = process.env) {
  let command = null
  const positionals = []
  const given = new Map() // option → value as given
  const known = () => (command ? [...program.options, ...command.options] : program.options)

  for (let i = 0; i < args.length; i += 1) {
    const token = args[i]
    if (token === '--help' || token === '-h') return { help: helpText(program, command) }
    if (token === '--') {
      positionals.push(...args.slice(i + 1))
      break
    }
    if (token.startsWith('-') && token !== '-') {
      const [flag, inline] = token.startsWith('--') && token.includes('=') ? [token.slice(0, token.indexOf('=')), token.slice(token.indexOf('=') + 1)] : [token, undefined]
      const opt = known().find((o) => `--${o.long}` === flag || (o.short && `-${o.short}` === flag))
      if (!opt) throw usageError(`unknown option '${flag}'${command ? ` for ${command.name}` : ''}`)
      if (!opt.valueName) {
        if (inline !== undefined) throw usageError(`option '${flag}' takes no value`)
        given.set(opt, !opt.negated)
        continue
      }
      const value = inline ?? args[++i]
      if (value === undefined) throw usageError(`option '${opt.flags}' needs a value`)
      given.set(opt, value)
      continue
    }
    if (!command) {
      command = program.commands.find((c) => c.name === token)
      if (!command) throw usageError(`unknown command '${token}'`)
      continue
    }
    positionals.push(token)
  }

  if (!command) return { help: helpText(program), noCommand: true }
  const required = command.args.filter((a) => a.required).length
  if (positionals.length < required) {
    throw usageError(`${command.name}: missing argument '${command.args[positionals.length].name}'`)
  }
  if (positionals.length > command.args.length) {
    throw usageError(`${command.name}: too many arguments (expected ${command.args.map((a) => a.spec).join(' ') || 'none'})`)
  }

  const options = {}
  for (const opt of known()) {
    let value = given.get(opt)
    if (value === undefined && opt.env && env[opt.env] !== undefined && env[opt.env] !== '') value = env[opt.env]
    if (value === undefined) {
      if (opt.required) throw usageError(`${command.name}: option '${opt.flags}' is required`)
      if (opt.negated) options[opt.key] = true
      else if (opt.default !== undefined) options[opt.key] = opt.default
      continue
    }
    if (typeof value === 'string') {
      if (opt.choices && !opt.choices.includes(value)) {
        throw usageError(`option '${opt.flags}': ${JSON.stringify(value)} is not one of ${opt.choices.join(', ')}`)
      }
      if (opt.parse) value = opt.parse(value)
    }
    options[opt.key] = value
  }
  return { command, positionals, options }
}

const HELP_OPTION = option('-h, --help', 'this help')

/** Help for the program, or for one command. */
function helpText(program, command) {
  const lines = []
  if (command) {
    const args = command.args.map((a) => a.spec).join(' ')
    lines.push(`Usage: ${program.name} ${command.name} [options]${args ? ` ${args}` : ''}`, '', command.description)
    if (command.args.length) lines.push('', 'Arguments:', ...columns(command.args.map((a) => [a.name, a.description])))
    lines.push('', 'Options:', ...columns([...command.options, HELP_OPTION].map(optionRow)))
    lines.push('', 'Global options:', ...columns(program.options.map(optionRow)))
  } else {
    lines.push(`Usage: ${program.name} [options] <command>`, '', program.description)
    lines.push('', 'Options:', ...columns([...program.options, HELP_OPTION].map(optionRow)))
    const usage = (c) => [c.name, c.options.length ? '[options]' : '', ...c.args.map((a) => a.spec)].filter(Boolean).join(' ')
    lines.push('', 'Commands:', ...columns(program.commands.map((c) => [usage(c), c.description])))
    lines.push('', `${program.name} <command> --help tells more about a command.`)
  }
  return `${lines.join('\n')}\n`
}

function optionRow(opt) {
  const notes = []
  if (opt.choices) notes.push(`choices: ${opt.choices.join(', ')}`)
  if (opt.default !== undefined) notes.push(`default: ${opt.default}`)
  if (opt.env) notes.push(`env: ${opt.env}`)
  const flags = opt.short ? opt.flags : `    ${opt.flags}`
  return [flags, `${opt.description}${notes.length ? ` (${notes.join('; ')})` : ''}`]
}

/** Two-column help rows, the second column aligned. */
function columns(rows) {
  const width = Math.max(...rows.map(([left]) => left.length))
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`)
}

module.exports = { option, argument, parseArgs, helpText }
