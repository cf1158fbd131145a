'use strict';
// A narrative host in a process of its own (the test host of ws-server.js, started by
// `startHostProcess`), so that a test can weigh the server's memory without Jest's in the scale.
// It runs with --expose-gc and answers requests over IPC: `start`, `stats` (memory after a full
// collection, and each server-side socket's state), `merge`, `load`, `list`, `stall` and `close`.

const { fork } = require('node:child_process');

if (require.main === module) serve();

function serve() {
  const { startNarrativeServer } = require('./ws-server');
  let server;

  const commands = {
    async start(options) {
      // Counts the times the handler stops reading each socket.
      const hostHandler = (ws) => {
        ws.timesPaused = 0;
        const pause = ws.pause.bind(ws);
        ws.pause = () => {
          ws.timesPaused++;
          pause();
        };
      };
      server = await startNarrativeServer({ ...options, hostHandler });
      return { port: server.port };
    },
    async stats() {
      // Two passes: the first frees what finalizers were holding on to.
      global.gc();
      await new Promise((resolve) => setImmediate(resolve));
      global.gc();
      const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage();
      const sockets = server.sockets().map(([tag, ws]) => ({
        tag,
        readyState: ws.readyState,
        bufferedAmount: ws.bufferedAmount,
        paused: ws.isPaused,
        timesPaused: ws.timesPaused,
      }));
      return { rss, heapUsed, external, arrayBuffers, sockets };
    },
    async merge({ user, workspace, update }) {
      const { changes } = await server.store.merge(user, workspace, update, { returnSession: false, durable: true });
      const { sessionJson } = await server.store.loadRaw(user, workspace);
      return { changes, sessionBytes: sessionJson.length };
    },
    async load({ user, workspace }) {
      const { sessionJson } = await server.store.loadRaw(user, workspace);
      return JSON.parse(sessionJson.toString('utf8'));
    },
    async list() {
      return server.store.list();
    },
    // Holds the host's main thread for `ms`, as a host busy with other work would: what clients
    // send meanwhile waits in the socket buffers and arrives at once.
    async stall({ ms }) {
      const end = Date.now() + ms;
      while (Date.now() < end);
      return true;
    },
    async close() {
      await server.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  };

  process.on('message', async ({ id, command, args }) => {
    try {
      process.send({ id, result: await commands[command](args) });
    } catch (err) {
      process.send({ id, error: { message: err.message, code: err.code, stack: err.stack } });
    }
  });
}

/**
 * Starts the host in a child process on `dataDir` with the options of `startNarrativeServer`.
 * Resolves with `{ port, pid, request(command, args), stop() }`.
 */
async function startHostProcess(options) {
  const child = fork(__filename, [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  let nextId = 0;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  exited.then((status) => {
    for (const { reject } of waiting.values()) reject(new Error(`host exited (${JSON.stringify(status)})`));
    waiting.clear();
  });
  child.on('message', ({ id, result, error }) => {
    const call = waiting.get(id);
    if (!call) return;
    waiting.delete(id);
    if (error) call.reject(Object.assign(new Error(`host: ${error.message}`), { code: error.code, hostStack: error.stack }));
    else call.resolve(result);
  });
  const request = (command, args = {}) =>
    new Promise((resolve, reject) => {
      const id = ++nextId;
      waiting.set(id, { resolve, reject });
      child.send({ id, command, args });
    });
  const { port } = await request('start', options);
  return {
    port,
    pid: child.pid,
    request,
    /** Closes the server and its store, and waits for the process to exit (killing it after 10 s). */
    async stop() {
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      await request('close');
      const status = await exited;
      clearTimeout(timer);
      return status;
    },
  };
}

module.exports = { startHostProcess };
