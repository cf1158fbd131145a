'use strict';
// A host that installs the package from npm on a machine with no Rust: the main package and this
// platform's prebuilt package, packed as the release workflow packs them (scripts/pack-platform.js,
// from the addon `npm install` built), installed into a fresh folder by npm with nothing but `node` on
// PATH and an empty npm cache, offline (so the libraries the package needs travel inside it). One
// process saves a session through the package's name, another restores it, and the operator's
// command lists it. Without the platform's package, requiring it fails with an error that says what
// is missing and what to do.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFile, execFileSync } = require('child_process');

const PACK_PLATFORM = path.join(__dirname, '..', 'scripts', 'pack-platform.js');
const { removeDir } = require('./helpers/env');

/** npm's own CLI, run by this Node, so that npm need not be on the PATH the installs see. */
const NPM_CLI = process.env.npm_execpath && process.env.npm_execpath.endsWith('.js')
  ? process.env.npm_execpath
  : path.join(path.dirname(fs.realpathSync(process.execPath)), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

let root; // the temporary directory of this file's tests
let packed; // { platform, main, platformPackage }: the two tarballs
let env; // what every child process here gets: nothing but `node` on PATH

/** Runs `file args` with `env` in `cwd`; resolves to { code, stdout, stderr }. */
function run(file, args, cwd) {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env, timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A new folder with an empty package.json and the given tarballs installed by npm, offline. */
async function freshInstall(name, tarballs) {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true }));
  const npm = await run(process.execPath, [NPM_CLI, 'install', '--offline', '--no-audit', '--no-fund', ...tarballs], dir);
  expect(npm).toMatchObject({ code: 0 });
  return dir;
}

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'mia-ns-consumer-'));
  const out = path.join(root, 'tarballs');
  packed = JSON.parse(execFileSync(process.execPath, [PACK_PLATFORM, '--no-build', '--out', out, '--json'], { encoding: 'utf8' }));
  const bin = path.join(root, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  env = { PATH: bin, HOME: root, npm_config_cache: path.join(root, 'npm-cache'), npm_config_update_notifier: 'false' };
}, 60000);

afterAll(async () => {
  if (root) await removeDir(root);
});

test('the tarballs hold what a host needs: the main package no addon, the platform package only its addon', () => {
  const list = (tarball) =>
    execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).trim().split('\n').sort();
  const main = list(packed.main);
  for (const file of ['index.js', 'index.d.ts', 'binding.js', 'handler.js', 'handler.d.ts', 'lib/handler.js', 'lib/handler.d.ts']) {
    expect(main).toContain(`package/${file}`);
  }
  expect(main.filter((f) => f.endsWith('.node'))).toEqual([]);
  expect(list(packed.platformPackage)).toEqual(
    ['package/README.md', `package/mia-narrative-session.${packed.platform}.node`, 'package/package.json'].sort(),
  );
  // Nothing but the platform's addon is fetched at install: the operator command's libraries travel
  // inside the main package (bundled), so an offline install or a registry mirror lacking them works.
  const manifest = JSON.parse(execFileSync('tar', ['-xzOf', packed.main, 'package/package.json'], { encoding: 'utf8' }));
  expect([...manifest.bundleDependencies].sort()).toEqual(Object.keys(manifest.dependencies).sort());
  for (const name of manifest.bundleDependencies) expect(main).toContain(`package/node_modules/${name}/package.json`);
  expect(Object.keys(manifest.optionalDependencies)).toContain(`mia-narrative-session-${packed.platform}`);
});

test('installed with no Rust on PATH, it loads the platform package and restores a session another process saved', async () => {
  for (const dir of env.PATH.split(path.delimiter)) {
    expect(fs.readdirSync(dir).filter((f) => /^(cargo|rustc|rustup)$/.test(f))).toEqual([]);
  }
  const app = await freshInstall('host-app', [packed.main, packed.platformPackage]);
  fs.writeFileSync(
    path.join(app, 'session.js'),
    `
const { NarrativeSessionStore } = require('mia-narrative-session');
const { SESSION_MESSAGE_TYPES } = require('mia-narrative-session/handler');
const [dataDir, step] = process.argv.slice(2);
(async () => {
  const store = await NarrativeSessionStore.open({ dataDir, autosaveIntervalMs: 0, cleanupIntervalMs: 0 });
  if (step === 'save') {
    await store.merge('alice', '/home/alice/proj', {
      universeFocus: 'story',
      storyBeats: [{ id: 'b1', description: 'First deploy', type: 'deploy' }],
    });
    await store.save('alice', '/home/alice/proj');
  }
  const { session, created } = await store.load('alice', '/home/alice/proj');
  await store.close();
  const addons = process.report.getReport().sharedObjects.filter((file) => file.endsWith('.node'));
  console.log(JSON.stringify({ created, focus: session.universeFocus, beats: session.storyBeats.map((b) => b.description), addons, SESSION_MESSAGE_TYPES }));
})().catch((err) => { console.error(err.code, err.message); process.exit(1); });
`,
  );
  const dataDir = path.join(root, 'sessions');
  const saved = await run(process.execPath, ['session.js', dataDir, 'save'], app);
  expect(saved).toMatchObject({ code: 0, stderr: '' });
  const restored = await run(process.execPath, ['session.js', dataDir, 'restore'], app);
  expect(restored).toMatchObject({ code: 0, stderr: '' });
  const result = JSON.parse(restored.stdout);
  expect(result).toMatchObject({ created: false, focus: 'story', beats: ['First deploy'], SESSION_MESSAGE_TYPES: ['session-update'] });
  const platformPackageDir = fs.realpathSync(path.join(app, 'node_modules', `mia-narrative-session-${packed.platform}`));
  expect(result.addons).toEqual([path.join(platformPackageDir, `mia-narrative-session.${packed.platform}.node`)]);

  // An ES module host imports the same names (Node reads the CommonJS exports statically).
  const esm = await run(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      "import { NarrativeSessionStore, normalizeWorkspaceId } from 'mia-narrative-session';" +
        "import { attachNarrativeSession } from 'mia-narrative-session/handler';" +
        'console.log(typeof NarrativeSessionStore.open, typeof attachNarrativeSession, normalizeWorkspaceId("/a/b/../c/"))',
    ],
    app,
  );
  expect(esm).toMatchObject({ code: 0, stdout: 'function function /a/c\n' });

  // The operator's command, as npm linked it, lists the session the host saved.
  const listed = await run(path.join(app, 'node_modules', '.bin', 'mia-sessions'), ['list', '--data-dir', dataDir, '--json'], app);
  expect(listed).toMatchObject({ code: 0, stderr: '' });
  expect(JSON.parse(listed.stdout)).toMatchObject([{ userId: 'alice', workspaceId: '/home/alice/proj', beats: 1 }]);
}, 60000);

test('without the platform package, require fails with ENOBINDING naming the platform, the package and how to build from source', async () => {
  const app = await freshInstall('host-without-addon', [packed.main]);
  const probe = await run(
    process.execPath,
    [
      '-e',
      "try { require('mia-narrative-session') } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message, platform: err.platform, packageName: err.packageName })) }",
    ],
    app,
  );
  expect(probe).toMatchObject({ code: 0, stderr: '' });
  const err = JSON.parse(probe.stdout);
  const packageName = `mia-narrative-session-${packed.platform}`;
  expect(err).toMatchObject({ code: 'ENOBINDING', platform: packed.platform, packageName });
  expect(err.message).toContain(`loads on this platform, ${packed.platform}`);
  expect(err.message).toContain(`npm install ${packageName}@`);
  expect(err.message).toContain('To build from source');
  expect(err.message).toContain(`mia-narrative-session.${packed.platform}.node`);
  expect(err.message).not.toContain('npm has a bug');
}, 60000);

test('a platform package whose addon does not load: ENOBINDING says the package is installed, and why it failed', async () => {
  // The platform's package as npm would install it, but its addon is not a shared library (as when
  // a download is cut short, or the addon was built for a newer C library).
  const packageName = `mia-narrative-session-${packed.platform}`;
  const broken = path.join(root, 'broken-package');
  fs.mkdirSync(broken);
  fs.copyFileSync(path.join(__dirname, '..', 'npm', packed.platform, 'package.json'), path.join(broken, 'package.json'));
  fs.writeFileSync(path.join(broken, `mia-narrative-session.${packed.platform}.node`), 'not an ELF file');
  const tarball = JSON.parse(
    execFileSync(process.execPath, [NPM_CLI, 'pack', '--json', '--pack-destination', root], { cwd: broken, env, encoding: 'utf8' }),
  )[0].filename;
  const app = await freshInstall('host-with-broken-addon', [packed.main, path.join(root, tarball)]);
  const probe = await run(
    process.execPath,
    ['-e', "try { require('mia-narrative-session') } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })) }"],
    app,
  );
  const err = JSON.parse(probe.stdout);
  expect(err.code).toBe('ENOBINDING');
  expect(err.message).toContain(`The package ${packageName} is installed but did not load:`);
  expect(err.message).toMatch(/invalid ELF header|file too short/);
}, 60000);
