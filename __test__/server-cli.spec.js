'use strict';
// The reference server as an operator starts it: `npm start -- --data-dir DIR`, `--help`, and the
// mistakes an operator makes (a port in use, a data dir that is a file or that this user cannot
// write), each of which must end the process at once with one line that says what to fix, and no
// stack trace.

const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const { removeDir } = require('./helpers/env');

const ROOT = path.join(__dirname, '..');
const SERVER = path.join(ROOT, 'server', 'index.js');
const NPM_CLI = process.env.npm_execpath && process.env.npm_execpath.endsWith('.js')
  ? process.env.npm_execpath
  : path.join(path.dirname(fs.realpathSync(process.execPath)), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

let tmp;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mia-ns-cli-'));
});
afterAll(async () => {
  await removeDir(tmp);
});

/** Runs a command to its end; resolves to { code, stdout, stderr }. */
function run(args, { env = {}, uid, file = process.execPath } = {}) {
  return new Promise((resolve, reject) => {
    const options = { cwd: ROOT, env: { ...process.env, PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] };
    if (uid !== undefined) Object.assign(options, { uid, gid: uid });
    const child = spawn(file, args, options);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The one line an operator's mistake must produce: nothing else, and no stack frame. */
function expectOneLine({ code, stdout, stderr }, expectedCode, text) {
  expect({ code, stdout }).toEqual({ code: expectedCode, stdout: '' });
  expect(stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(stderr).toMatch(/^error: /);
  expect(stderr).toContain(text);
  expect(stderr).not.toMatch(/\n\s+at /);
}

test('--help lists every flag the server takes and every environment variable it reads', async () => {
  const { code, stdout } = await run([SERVER, '--help']);
  expect(code).toBe(0);
  const source = fs.readFileSync(SERVER, 'utf8');
  const flags = [...source.matchAll(/case '(--?[a-z][a-z-]*)'/g)].map((m) => m[1]);
  const envVars = [...source.matchAll(/process\.env\.([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1]);
  expect(flags).toEqual(expect.arrayContaining(['--data-dir', '--trusted-user-header', '--host', '--redis', '--help']));
  expect(envVars).toEqual(expect.arrayContaining(['PORT', 'MIA_SESSION_REDIS_URL']));
  for (const name of [...flags, ...envVars]) expect(stdout).toMatch(new RegExp(`(^|\\s)${name}\\b`, 'm'));
  expect(stdout).toContain('npm start -- ');
});

test('a port in use: one line naming the port, exit 1', async () => {
  const blocker = net.createServer();
  await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const { port } = blocker.address();
  try {
    const result = await run([SERVER, '--data-dir', path.join(tmp, 'port')], { env: { PORT: String(port) } });
    expectOneLine(result, 1, `port ${port} on 127.0.0.1 is in use`);
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
});

test('a data dir that is a file, or under a file: one line, exit 1', async () => {
  const file = path.join(tmp, 'a-file');
  fs.writeFileSync(file, 'not a directory');
  expectOneLine(await run([SERVER, '--data-dir', file]), 1, `the data dir ${file} is not a directory`);
  expectOneLine(await run([SERVER, '--data-dir', path.join(file, 'sessions')]), 1, `${file} is a file, not a directory`);
});

test('a data dir this user cannot write: one line, exit 1', async () => {
  // As root, run the server as nobody against a directory only root may write; otherwise take the
  // write bit off a directory of our own.
  const asRoot = process.getuid() === 0;
  if (asRoot) fs.chmodSync(tmp, 0o755); // nobody may look inside, but not write
  const dir = path.join(tmp, 'read-only');
  fs.mkdirSync(dir, { mode: asRoot ? 0o700 : 0o500 });
  try {
    const uid = asRoot ? 65534 : undefined;
    expectOneLine(await run([SERVER, '--data-dir', dir], { uid }), 1, `the data dir ${dir} is not writable by this user`);
    expectOneLine(await run([SERVER, '--data-dir', path.join(dir, 'sessions')], { uid }), 1, `${dir} is not writable by this user`);
  } finally {
    fs.chmodSync(dir, 0o700);
  }
});

test('an unknown argument, and `npm start --data-dir DIR` (npm keeps the flag): one line saying to pass flags after --', async () => {
  expectOneLine(await run([SERVER, '--data-dri', 'x']), 2, 'unknown argument: --data-dri');
  const dir = path.join(tmp, 'npm-ate-it');
  const result = await run([NPM_CLI, 'start', '--silent', '--data-dir', dir]);
  expect(result.code).not.toBe(0);
  expect(result.stderr).toContain(`npm start -- --data-dir ${dir}`);
  expect(result.stderr).not.toMatch(/\n\s+at /);
  expect(fs.existsSync(dir)).toBe(false);
});

test('`npm start -- --data-dir DIR` serves from DIR until SIGTERM', async () => {
  const dir = path.join(tmp, 'served');
  const child = spawn(process.execPath, [NPM_CLI, 'start', '--silent', '--', '--data-dir', dir], {
    cwd: ROOT,
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: npm's shell and the server get the SIGTERM below
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      // Both lines the server prints once it is up: where it listens, where it stores.
      const match = /listening on (http:\S+)\nsessions stored in .*\n/.exec(stdout);
      if (match) resolve(match[1]);
    });
    exited.then(() => reject(new Error(`npm start exited: ${stderr}`)));
  });
  try {
    expect(stdout).toContain(`sessions stored in ${dir}`);
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(fs.statSync(dir).isDirectory()).toBe(true);
  } finally {
    process.kill(-child.pid, 'SIGTERM');
  }
  await exited;
  expect(stdout).toContain('SIGTERM: saving sessions and shutting down');
});
