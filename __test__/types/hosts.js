'use strict'
// Compiles the README's TypeScript examples as hosts compile them (`npm run typecheck`, part of
// `npm test`): from the package's name, out of the tarball `npm pack` makes, with the real `ws`
// types, under `strict` and each `moduleResolution` a host may use. mia-code-server compiles with
// `moduleResolution: "node"` (which ignores package.json `exports`) and @types/ws 8.5.12; newer
// hosts use `node16` or `bundler` and the current @types/ws 8.x.
//
// Every code block in README.md that follows the line `<!-- compiled by npm test -->` is compiled:
// its imports at the top of a file, its body inside an async function, after a prelude that declares
// what a host has in scope (code-server's WebSocket router, a `ws` server, ids).

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const ts = require('typescript')

const ROOT = path.join(__dirname, '..', '..')
const WORK = path.join(ROOT, '__test__', 'artifacts', 'type-hosts')
const MARKER = '<!-- compiled by npm test -->'

/** The @types/ws versions a host may have: the fork's lock and the current 8.x (devDependencies). */
const WS_TYPES = {
  'ws-types-8.5.12': path.join(ROOT, 'node_modules', 'ws-types-8.5.12'),
  '@types/ws': path.join(ROOT, 'node_modules', '@types', 'ws'),
}

const MODES = {
  node: { module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10, extensions: ['.ts'] },
  node16: { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16, extensions: ['.ts', '.mts'] },
  bundler: { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, extensions: ['.ts'] },
}

const PRELUDE_IMPORTS = `import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
`

const PRELUDE = `// What a host has in scope: code-server's WebSocket router and request, a \`ws\` server, ids.
interface WebsocketRequest extends IncomingMessage {
  ws: Duplex
  head: Buffer
}
declare const wsRouter: { ws(route: string, handler: (req: WebsocketRequest) => Promise<void> | void): void }
declare const userId: string
declare const workspaceId: string
declare const connectionId: string
declare function isAuthenticated(req: IncomingMessage): boolean
const wss = new WebSocketServer({ noServer: true })
void wss
`

/** The marked code blocks of README.md, as { line, code }. */
function readmeBlocks() {
  const lines = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n')
  const blocks = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== MARKER) continue
    const open = i + 1
    if (!/^```(ts|typescript)\s*$/.test(lines[open] || '')) throw new Error(`README.md:${open + 1}: a ts code block must follow ${MARKER}`)
    const close = lines.findIndex((line, j) => j > open && line.startsWith('```'))
    blocks.push({ line: open + 1, code: lines.slice(open + 1, close).join('\n') })
    i = close
  }
  if (blocks.length === 0) throw new Error(`README.md has no code block marked ${MARKER}`)
  return blocks
}

/** A host's source for one README block: imports first, the rest inside an async function. */
function hostSource({ line, code }) {
  const codeLines = code.split('\n')
  const imports = codeLines.filter((l) => l.startsWith('import '))
  const body = codeLines.map((l) => (l.startsWith('import ') ? '' : `  ${l}`))
  return `// README.md line ${line}\n${PRELUDE_IMPORTS}${imports.join('\n')}\n${PRELUDE}\nexport async function readmeExample(): Promise<void> {\n${body.join('\n')}\n}\n`
}

/** A fresh host folder per @types/ws version: the packed package and that @types/ws in node_modules. */
function makeHosts(tarball, blocks) {
  const hosts = []
  for (const [name, typesDir] of Object.entries(WS_TYPES)) {
    const { version } = JSON.parse(fs.readFileSync(path.join(typesDir, 'package.json'), 'utf8'))
    const dir = path.join(WORK, `ws-${version}`)
    const pkgDir = path.join(dir, 'node_modules', 'mia-narrative-session')
    fs.mkdirSync(pkgDir, { recursive: true })
    execFileSync('tar', ['-xzf', tarball, '-C', pkgDir, '--strip-components=1'])
    fs.cpSync(typesDir, path.join(dir, 'node_modules', '@types', 'ws'), { recursive: true })
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `host-${name.replace(/\W/g, '-')}`, private: true }))
    const files = []
    blocks.forEach((block, i) => {
      for (const ext of ['.ts', '.mts']) {
        const file = path.join(dir, `readme-${i}${ext}`)
        fs.writeFileSync(file, hostSource(block))
        files.push(file)
      }
    })
    hosts.push({ version, dir, files })
  }
  return hosts
}

/**
 * A compiler host that parses TypeScript's own lib files and @types/node once for all the programs
 * here (by far most of the text each one reads); everything else is read afresh.
 */
const shared = new Map()
function compilerHost(options) {
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  host.getSourceFile = (fileName, version, ...rest) => {
    if (!/[\\/]node_modules[\\/](typescript[\\/]lib|@types[\\/]node)[\\/]/.test(fileName)) return getSourceFile(fileName, version, ...rest)
    const key = `${fileName}|${typeof version === 'object' ? `${version.languageVersion}:${version.impliedNodeFormat}` : version}`
    if (!shared.has(key)) shared.set(key, getSourceFile(fileName, version, ...rest))
    return shared.get(key)
  }
  return host
}

function main() {
  const blocks = readmeBlocks()
  fs.rmSync(WORK, { recursive: true, force: true })
  fs.mkdirSync(WORK, { recursive: true })
  const npmCli = process.env.npm_execpath && process.env.npm_execpath.endsWith('.js') ? [process.env.npm_execpath] : []
  const [npmFile, ...npmArgs] = npmCli.length ? [process.execPath, ...npmCli] : ['npm']
  const packed = execFileSync(npmFile, [...npmArgs, 'pack', '--ignore-scripts', '--json', '--pack-destination', WORK], {
    cwd: ROOT,
    encoding: 'utf8',
  })
  const tarball = path.join(WORK, JSON.parse(packed)[0].filename)
  let failed = 0
  for (const host of makeHosts(tarball, blocks)) {
    for (const [mode, { extensions, ...options }] of Object.entries(MODES)) {
      const compilerOptions = { ...options, strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, types: ['node'], skipLibCheck: false }
      const roots = host.files.filter((f) => extensions.includes(path.extname(f)))
      const program = ts.createProgram(roots, compilerOptions, compilerHost(compilerOptions))
      const diagnostics = ts.getPreEmitDiagnostics(program)
      const what = `README examples (${blocks.length}) with @types/ws ${host.version}, moduleResolution ${mode}`
      if (diagnostics.length === 0) {
        console.log(`types: ${what}: compiled`)
        continue
      }
      failed++
      console.error(`types: ${what}: ${diagnostics.length} error(s)`)
      console.error(
        ts.formatDiagnostics(diagnostics, {
          getCanonicalFileName: (f) => f,
          getCurrentDirectory: () => host.dir,
          getNewLine: () => '\n',
        }),
      )
    }
  }
  if (failed) process.exit(1)
}

main()
