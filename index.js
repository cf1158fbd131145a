'use strict'
// The package's entry point. `binding.js` is the loader napi generates (`napi build --platform
// --js binding.js`); it loads this platform's addon from one of three places: the file
// NAPI_RS_NATIVE_LIBRARY_PATH names, a `mia-narrative-session.<platform>.node` built from source
// beside it, or the prebuilt package of this platform (an optional dependency, such as
// mia-narrative-session-linux-x64-gnu). When none loads, its error blames an npm bug and names
// nothing; this file replaces that error with one that says which platform, which package, and
// how to build the addon from source. Every other error passes through unchanged.

const BINARY_NAME = 'mia-narrative-session'

try {
  module.exports = require('./binding.js')
} catch (err) {
  throw isNotFound(err) ? noBindingError(err) : err
}

/** The generated loader's two messages for "no candidate loaded". */
function isNotFound(err) {
  const message = err && typeof err.message === 'string' ? err.message : ''
  return message.startsWith('Cannot find native binding') || message.startsWith('Failed to load native binding')
}

function noBindingError(cause) {
  const platform = platformName()
  const packageName = `${BINARY_NAME}-${platform}`
  const fileName = `${BINARY_NAME}.${platform}.node`
  const prebuilt = prebuiltPlatforms()
  const lines = [`mia-narrative-session: found no native addon that loads on this platform, ${platform} (Node ${process.version}).`]
  const failure = installedButFailed(packageName, cause)
  if (failure) {
    lines.push(`The package ${packageName} is installed but did not load: ${failure}`)
  } else if (prebuilt.includes(platform)) {
    const { version } = require('./package.json')
    lines.push(
      `It looked for the package ${packageName} (an optional dependency of this one), which is not installed:` +
        ` \`npm install ${packageName}@${version}\` adds it (npm skips an optional dependency it cannot fetch,` +
        ' and all of them with --omit=optional).',
    )
  } else {
    lines.push(`It looked for the package ${packageName}; there is none: prebuilt packages exist for ${prebuilt.join(', ')}.`)
  }
  lines.push(
    `To build from source (Rust and Node >= 20): run \`npm install\` in a clone of this package's repository, which builds ${fileName},` +
      ' then copy that file beside this index.js, or set NAPI_RS_NATIVE_LIBRARY_PATH to its path.',
  )
  const error = new Error(lines.join('\n'))
  error.code = 'ENOBINDING'
  error.platform = platform
  error.packageName = packageName
  error.cause = cause
  return error
}

/** The `<platform>` part of the names napi gives a target's file and package. */
function platformName() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const libc = isMusl() ? 'musl' : 'gnu'
    return arch === 'arm' ? `linux-arm-${libc}eabihf` : `linux-${arch}-${libc}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform === 'android') return arch === 'arm' ? 'android-arm-eabi' : `android-${arch}`
  return `${platform}-${arch}`
}

/** As the generated loader decides it: `/usr/bin/ldd` first, else Node's own report. */
function isMusl() {
  try {
    return require('node:fs').readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    process.report.excludeNetwork = true
    const header = process.report.getReport().header
    return !header.glibcVersionRuntime
  }
}

/** The platforms with a package of their own: this package's optional dependencies. */
function prebuiltPlatforms() {
  const { optionalDependencies = {} } = require('./package.json')
  return Object.keys(optionalDependencies).map((name) => name.slice(BINARY_NAME.length + 1))
}

/** When the platform's package is there, the first line of why it failed to load; else null. */
function installedButFailed(packageName, cause) {
  try {
    require.resolve(`${packageName}/package.json`)
  } catch {
    return null
  }
  for (let err = cause; err; err = err.cause) {
    const first = String(err.message || '').split('\n')[0]
    if (first.includes(packageName) || first.includes('binding package version mismatch')) return first
  }
  return 'see the error\'s cause'
}
