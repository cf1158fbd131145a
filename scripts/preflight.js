'use strict'
// Runs first in `npm test`: checks that everything the test suites use outside npm is there, and if
// anything is missing, names all of it and the command that installs it, in one line, and exits 1
// within a second, instead of failing test after test minutes later. It starts nothing and installs
// nothing. The browser test drives Chromium (CHROMIUM_PATH, default /usr/bin/chromium); the Redis
// backend's tests start redis-server (REDIS_SERVER, default /usr/bin/redis-server); strace and
// faketime run the system-call and clock tests; `cargo test`
// needs Rust; every Jest suite needs the addon that `npm install` builds.

const fs = require('node:fs')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')

function executable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

function onPath(command) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && executable(path.join(dir, command)))
}

/** The addon `npm install` (or `npm run build`) builds beside index.js, for any platform. */
function addonBuilt() {
  return fs.readdirSync(ROOT).some((file) => /^mia-narrative-session\..+\.node$/.test(file))
}

function main() {
  const debianPackages = []
  if (!executable(process.env.CHROMIUM_PATH || '/usr/bin/chromium')) debianPackages.push('chromium')
  if (!executable(process.env.REDIS_SERVER || '/usr/bin/redis-server')) debianPackages.push('redis-server')
  // The system-call check runs the durable paths under strace; the clock test runs a second host
  // under libfaketime.
  if (!onPath('strace')) debianPackages.push('strace')
  if (!onPath('faketime')) debianPackages.push('faketime')
  const missing = [...debianPackages]
  if (!onPath('cargo')) missing.push('Rust >= 1.89 with cargo (install it with rustup)')
  const npmInstall = !fs.existsSync(path.join(ROOT, 'node_modules', 'jest')) || !addonBuilt()
  if (npmInstall) missing.push('the npm dependencies and the built addon')
  if (missing.length === 0) return
  const commands = []
  if (debianPackages.length) {
    const sudo = typeof process.getuid === 'function' && process.getuid() !== 0 ? 'sudo ' : ''
    commands.push(`${sudo}apt-get install -y --no-install-recommends ${debianPackages.join(' ')}`)
  }
  if (npmInstall) commands.push('npm install')
  const run = commands.length ? `; run: ${commands.join(' && ')}` : ''
  console.error(`npm test needs ${missing.join(', ')}${run}`)
  process.exit(1)
}

main()
