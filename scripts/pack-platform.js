'use strict'
// Builds and packs this machine's platform package (npm/<platform>/) and the main package, as the
// release workflow does for every target, so that both can be installed where there is no Rust:
//
//   npm run pack:platform                                  # this machine's target, e.g. linux-x64-gnu
//   npm run pack:platform -- --target x86_64-unknown-linux-musl   # needs zig and cargo-zigbuild
//   npm run pack:platform -- --no-build                    # pack the addon `npm install` built
//   (--out DIR: where the tarballs go, default dist/; --json: print their paths as JSON)
//
// The tarballs go to dist/ (or --out DIR). Install both with
// `npm install ./mia-narrative-session-0.1.0.tgz ./mia-narrative-session-linux-x64-gnu-0.1.0.tgz`.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')

/** The Rust target triple of the machine this runs on, as package.json's napi.targets spell it. */
function hostTriple() {
  const arch = { x64: 'x86_64', arm64: 'aarch64' }[process.arch] || process.arch
  if (process.platform === 'darwin') return `${arch}-apple-darwin`
  if (process.platform === 'win32') return `${arch}-pc-windows-msvc`
  process.report.excludeNetwork = true
  const musl = !process.report.getReport().header.glibcVersionRuntime
  return `${arch}-unknown-linux-${musl ? 'musl' : 'gnu'}`
}

/** Whether zig can be run: on PATH, or as the `ziglang` Python package (cargo-zigbuild finds either). */
function hasZig() {
  for (const [file, args] of [['zig', ['version']], ['python3', ['-m', 'ziglang', 'version']]]) {
    try {
      execFileSync(file, args, { stdio: 'ignore' })
      return true
    } catch {}
  }
  return false
}

/** Runs npm's own CLI with the Node running this script (npm need not be on PATH). */
function npm(args, cwd) {
  const npmCli = process.env.npm_execpath || fs.realpathSync(execFileSync('which', ['npm'], { encoding: 'utf8' }).trim())
  return execFileSync(process.execPath, [npmCli, ...args], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
}

/** `npm pack` of one folder into `out`; returns the tarball's path. */
function pack(dir, out, ignoreScripts) {
  const args = ['pack', '--json', '--pack-destination', out]
  // The main package's `prepare` would build the addon again: packing is not building.
  if (ignoreScripts) args.push('--ignore-scripts')
  const [{ filename }] = JSON.parse(npm(args, dir))
  return path.join(out, filename)
}

/**
 * Packs the main package and the platform package of `target` into `out`, building the addon first
 * unless `build` is false. Returns `{ target, platform, main, platformPackage }` (tarball paths).
 */
function packPlatform({ target = hostTriple(), build = true, out = path.join(ROOT, 'dist') } = {}) {
  const { parseTriple } = require('@napi-rs/cli')
  const pkg = require(path.join(ROOT, 'package.json'))
  if (!pkg.napi.targets.includes(target)) {
    throw new Error(`${target} is not among package.json's napi.targets: ${pkg.napi.targets.join(', ')}`)
  }
  const { platformArchABI: platform, abi } = parseTriple(target)
  const fileName = `${pkg.napi.binaryName}.${platform}.node`
  if (build) {
    const args = ['build', '--platform', '--release', '--js', 'binding.js']
    // The host's own target builds where `npm install` built it (target/release), reusing that build.
    if (target !== hostTriple()) args.push('--target', target)
    // A musl addon from a glibc machine is linked by zig (cargo-zigbuild), as the release workflow does.
    if (abi === 'musl' && !hostTriple().endsWith('-musl')) {
      if (!hasZig()) throw new Error(`building ${target} here needs zig and cargo-zigbuild: pip install ziglang cargo-zigbuild`)
      args.push('--cross-compile')
    }
    const cli = require.resolve('@napi-rs/cli/package.json')
    const napi = path.join(path.dirname(cli), require(cli).bin.napi)
    execFileSync(process.execPath, [napi, ...args], { cwd: ROOT, stdio: 'inherit' })
  }
  const built = path.join(ROOT, fileName)
  if (!fs.existsSync(built)) throw new Error(`${fileName} is not built: run \`npm run pack:platform\` without --no-build`)
  const packageDir = path.join(ROOT, 'npm', platform)
  if (!fs.existsSync(path.join(packageDir, 'package.json'))) throw new Error(`npm/${platform} is missing: run \`npx napi create-npm-dirs\``)
  fs.copyFileSync(built, path.join(packageDir, fileName))
  fs.mkdirSync(out, { recursive: true })
  return { target, platform, main: pack(ROOT, out, true), platformPackage: pack(packageDir, out, false) }
}

function parseArgs(argv) {
  const options = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--no-build') options.build = false
    else if (arg === '--target' && argv[i + 1]) options.target = argv[++i]
    else if (arg === '--out' && argv[i + 1]) options.out = path.resolve(argv[++i])
    else if (arg === '--json') options.json = true
    else throw new Error(`unknown argument: ${arg} (usage: pack-platform.js [--target TRIPLE] [--no-build] [--out DIR] [--json])`)
  }
  return options
}

if (require.main === module) {
  try {
    const options = parseArgs(process.argv.slice(2))
    const result = packPlatform(options)
    if (options.json) console.log(JSON.stringify(result))
    else console.log(`${result.platform}:\n  ${path.relative(process.cwd(), result.main)}\n  ${path.relative(process.cwd(), result.platformPackage)}`)
  } catch (err) {
    console.error(`pack-platform: ${err.message}`)
    process.exit(1)
  }
}

module.exports = { packPlatform, hostTriple }
