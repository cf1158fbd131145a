'use strict';
// Real redis-server processes for the Redis backend's tests, and a tiny raw RESP client to plant
// and inspect keys. No npm Redis client, no mocks.
//
//   const redis = await startRedis();                       // persistence off, a free port
//   const durable = await startRedis({ persistent: true }); // AOF on (appendfsync always), own dir
//   await redisCommand(redis.port, 'SET', 'k', 'v');        // raw RESP over net.Socket
//   await redis.kill(); await redis.restart();              // SIGKILL, then the same port again
//   await redis.stop();                                     // SIGTERM and wait

const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const HOST = '127.0.0.1';

/** A port nothing listens on right now (the kernel's pick for port 0, released again). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Encodes a command as a RESP array of bulk strings. Strings, numbers and Buffers are accepted. */
function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg), 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** A Redis error reply (`-ERR ...`), as a value: parse results hold it, `redisCommand` throws it. */
class RedisReplyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RedisReplyError';
  }
}

/**
 * Parses one RESP2 reply at `at` in `buf`. Returns `{ value, end }`, or undefined when `buf` does not
 * hold a whole reply yet. Bulk strings come back as Buffers (`null` for a nil), arrays as arrays,
 * errors as `RedisReplyError` values.
 */
function parseReply(buf, at = 0) {
  if (at >= buf.length) return undefined;
  const lineEnd = buf.indexOf('\r\n', at);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buf[at]);
  const line = buf.toString('utf8', at + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: new RedisReplyError(line), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, end: next };
      if (buf.length < next + length + 2) return undefined;
      return { value: buf.subarray(next, next + length), end: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, end: next };
      const items = [];
      let pos = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, pos);
        if (!item) return undefined;
        items.push(item.value);
        pos = item.end;
      }
      return { value: items, end: pos };
    }
    default:
      throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}

/**
 * Sends one command to the Redis on `port` over a new connection and resolves with its reply (see
 * `parseReply`; an error reply rejects). `timeoutMs` bounds the whole exchange.
 */
function redisCommand(port, ...args) {
  return rawCommand(port, args, { timeoutMs: 5000 }).then((value) => {
    if (value instanceof RedisReplyError) throw value;
    return value;
  });
}

/** `redisCommand`, with bulk strings turned into UTF-8 text (also inside arrays). */
async function redisText(port, ...args) {
  const toText = (v) => (Buffer.isBuffer(v) ? v.toString('utf8') : Array.isArray(v) ? v.map(toText) : v);
  return toText(await redisCommand(port, ...args));
}

function rawCommand(port, args, { timeoutMs }) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: HOST, port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(
      () => finish(new Error(`redis ${args[0]} on port ${port}: no reply within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once('connect', () => socket.write(encodeCommand(args)));
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let reply;
      try {
        reply = parseReply(buf);
      } catch (err) {
        finish(err);
        return;
      }
      if (reply) finish(null, reply.value);
    });
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error(`redis ${args[0]} on port ${port}: connection closed without a reply`)));
  });
}

/** Whether the Redis on `port` answers `PING` with `+PONG` (a raw `*1\r\n$4\r\nPING\r\n`). */
async function pings(port) {
  try {
    const reply = await rawCommand(port, ['PING'], { timeoutMs: 1000 });
    // A server with a password refuses PING before AUTH, but it is up.
    return reply === 'PONG' || (reply instanceof RedisReplyError && reply.message.startsWith('NOAUTH'));
  } catch {
    return false;
  }
}

/** Waits until the Redis on `port` answers PING (it refuses with -LOADING while reading its AOF). */
async function waitForPing(port, { timeoutMs = 10000, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pings(port)) return;
    if (child && child.exitCode !== null) {
      throw new Error(`redis-server on port ${port} exited with ${child.exitCode} before it answered PING`);
    }
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Every redis-server this module started and has not seen exit: killed when the test process exits. */
const running = new Set();
process.once('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * Starts a real redis-server on 127.0.0.1 and waits until it answers PING. Options:
 * - `port`: default a free one;
 * - `persistent`: AOF on with `appendfsync always` (every acknowledged write is on disk before the
 *   reply), for tests that kill and restart Redis; default off (`--save '' --appendonly no`);
 * - `dir`: its working directory (the AOF goes there); default a new temporary directory;
 * - `extraArgs`: more redis-server arguments, such as `['--requirepass', 'secret']`.
 * Resolves with a handle: `{ port, url(db), dir, log(), command(...), text(...), stop(), kill(),
 * restart(), isRunning() }`.
 */
async function startRedis({ port, persistent = false, dir, extraArgs = [] } = {}) {
  const ownDir = !dir;
  const workDir = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'mia-redis-'));
  const chosenPort = port || (await freePort());
  let child;
  let logText = '';

  const args = () => {
    const list = ['--port', String(chosenPort), '--bind', HOST, '--save', '', '--dir', workDir, '--daemonize', 'no'];
    list.push('--appendonly', persistent ? 'yes' : 'no');
    if (persistent) list.push('--appendfsync', 'always');
    list.push('--loglevel', 'warning', '--logfile', '', ...extraArgs);
    return list;
  };

  async function launch() {
    // A port picked free can be taken by the time we bind it; a previous process of ours can
    // hold it for a moment after it exited. Try a few times.
    for (let attempt = 1; ; attempt++) {
      const proc = spawn(REDIS_SERVER, args(), { stdio: ['ignore', 'pipe', 'pipe'] });
      running.add(proc);
      proc.stdout.on('data', (d) => (logText += d));
      proc.stderr.on('data', (d) => (logText += d));
      const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
      proc.exited = exited;
      exited.then(() => running.delete(proc));
      proc.once('error', (err) => (logText += `spawn error: ${err.message}\n`));
      try {
        await waitForPing(chosenPort, { child: proc });
        child = proc;
        return;
      } catch (err) {
        proc.kill('SIGKILL');
        await exited;
        if (attempt >= 5 || port) throw new Error(`${err.message}\nredis-server log:\n${logText}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  async function signalAndWait(signal) {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const proc = child;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    await proc.exited;
    clearTimeout(timer);
  }

  await launch();

  return {
    port: chosenPort,
    dir: workDir,
    /** `redis://127.0.0.1:<port>/<db>`. */
    url(db = 0) {
      return `redis://${HOST}:${chosenPort}/${db}`;
    },
    /** What redis-server wrote to stdout and stderr. */
    log() {
      return logText;
    },
    isRunning() {
      return Boolean(child) && child.exitCode === null && child.signalCode === null;
    },
    command(...commandArgs) {
      return redisCommand(chosenPort, ...commandArgs);
    },
    text(...commandArgs) {
      return redisText(chosenPort, ...commandArgs);
    },
    /** SIGTERM (Redis writes its AOF and exits cleanly), then waits for the exit. */
    stop() {
      return signalAndWait('SIGTERM');
    },
    /** SIGKILL, as a crash or an OOM kill would: no shutdown work at all. */
    kill() {
      return signalAndWait('SIGKILL');
    },
    /** Starts redis-server again on the same port and dir (after `stop` or `kill`). */
    async restart() {
      await signalAndWait('SIGTERM');
      await launch();
    },
    /** Stops the server and removes the directory this module made for it. */
    async dispose() {
      await signalAndWait('SIGTERM');
      if (ownDir) fs.rmSync(workDir, { recursive: true, force: true });
    },
  };
}

module.exports = {
  REDIS_SERVER,
  freePort,
  encodeCommand,
  parseReply,
  RedisReplyError,
  redisCommand,
  redisText,
  pings,
  waitForPing,
  startRedis,
};
