'use strict';
// A real Redis Cluster for the tests: redis-server processes (./redis-server.js) with cluster mode on
// and persistence off, joined by hand (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE) so the layout is
// known: primary i serves the i-th share of the slots and its replicas follow it. No redis-cli.
//
//   const cluster = await startCluster({ primaries: 3, replicas: 1 });
//   cluster.urls()                       // every node's redis://127.0.0.1:<port>/0 (any are seeds)
//   await cluster.primaryOf(slot)        // the port serving a slot
//   await cluster.replicaOf(port)        // the first replica of a primary
//   await cluster.keyslot(key)           // CLUSTER KEYSLOT
//   await cluster.pause(port) / resume(port) / kill(port) / restart(port)
//   await cluster.waitPromoted(port)     // a failover is over: port is a primary, the cluster ok
//   await cluster.moveSlot(slot, from, to, { pauseMs })  // key by key, as a reshard does
//   await cluster.stop()

const net = require('net');
const { startRedis, redisCommand, redisText } = require('./redis-server');

/** How long a node goes unanswered before the others count it failed: a failover takes ~2 s. */
const NODE_TIMEOUT_MS = 1000;
const HOST = '127.0.0.1';

/** A free port whose cluster bus port (+10000) is free too. */
async function freeClusterPort() {
  const listen = (port) =>
    new Promise((resolve) => {
      const server = net.createServer();
      server.unref();
      server.once('error', () => resolve(null));
      server.listen(port, HOST, () => {
        const { port: got } = server.address();
        server.close(() => resolve(got));
      });
    });
  for (;;) {
    const port = await listen(0);
    if (port && port < 55000 && (await listen(port + 10000))) return port;
  }
}

/** Polls `check` every 20 ms until it resolves truthy, or throws `what` after `timeoutMs`. */
async function waitFor(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await check();
    } catch {
      ok = false;
    }
    if (ok) return ok;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Starts `primaries` primaries with `replicas` replicas each, and waits until the cluster is ok. */
async function startCluster({ primaries = 3, replicas = 1 } = {}) {
  const count = primaries * (1 + replicas);
  const nodes = [];
  try {
    for (let i = 0; i < count; i++) {
      const port = await freeClusterPort();
      const handle = await startRedis({
        port,
        extraArgs: [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', 'nodes.conf',
          '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
          // A replica that fell behind still takes over: the tests count what that costs.
          '--cluster-replica-validity-factor', '0',
        ],
      });
      nodes.push({ port, handle, paused: false });
    }
  } catch (err) {
    await Promise.all(nodes.map((n) => n.handle.dispose()));
    throw err;
  }
  const cluster = makeCluster(nodes, primaries);
  await cluster.join(replicas);
  return cluster;
}

function makeCluster(nodes, primaries) {
  const node = (port) => {
    const found = nodes.find((n) => n.port === port);
    if (!found) throw new Error(`no node on port ${port}`);
    return found;
  };
  const live = () => nodes.filter((n) => n.handle.isRunning() && !n.paused);
  const pidOf = async (port) => Number(/process_id:(\d+)/.exec(await redisText(port, 'INFO', 'server'))[1]);
  const nodeId = (port) => redisText(port, 'CLUSTER', 'MYID');
  const isPrimary = async (port) => (await redisText(port, 'INFO', 'replication')).includes('role:master');

  const cluster = {
    nodes,
    primaries,

    async join(replicas) {
      const share = Math.floor(16384 / primaries);
      for (let i = 0; i < primaries; i++) {
        const start = i * share;
        const end = i + 1 === primaries ? 16383 : start + share - 1;
        await redisCommand(nodes[i].port, 'CLUSTER', 'SET-CONFIG-EPOCH', i + 1);
        await redisCommand(nodes[i].port, 'CLUSTER', 'ADDSLOTSRANGE', start, end);
      }
      for (const other of nodes.slice(1)) await redisCommand(nodes[0].port, 'CLUSTER', 'MEET', HOST, other.port);
      for (const n of nodes) {
        await waitFor('every node knows every other', async () => (await redisText(n.port, 'CLUSTER', 'NODES')).trim().split('\n').length === nodes.length);
      }
      for (let r = 0; r < replicas; r++) {
        for (let p = 0; p < primaries; p++) {
          await redisCommand(nodes[primaries * (1 + r) + p].port, 'CLUSTER', 'REPLICATE', await nodeId(nodes[p].port));
        }
      }
      await cluster.waitHealthy();
    },

    /** Waits until every running node says cluster_state:ok and every replica's link is up. */
    async waitHealthy(timeoutMs = 30000) {
      for (const n of live()) {
        await waitFor('the cluster is ok', async () => (await redisText(n.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), timeoutMs);
        await waitFor('replicas are in sync', async () => {
          const info = await redisText(n.port, 'INFO', 'replication');
          return info.includes('role:master') || info.includes('master_link_status:up');
        }, timeoutMs);
      }
    },

    /** Every node's URL: the seeds a store may be given (any subset works). */
    urls() {
      return nodes.map((n) => `redis://${HOST}:${n.port}/0`);
    },

    keyslot: async (key) => redisCommand(live()[0].port, 'CLUSTER', 'KEYSLOT', key),

    /** The port of the primary serving `slot`, as a running node says. */
    async primaryOf(slot) {
      const ranges = await redisCommand(live()[0].port, 'CLUSTER', 'SLOTS');
      for (const [start, end, primary] of ranges) {
        if (slot >= start && slot <= end) return primary[1];
      }
      throw new Error(`no primary serves slot ${slot}`);
    },

    async primaryPorts() {
      const ports = [];
      for (const n of live()) if (await isPrimary(n.port)) ports.push(n.port);
      return ports;
    },

    isPrimary,
    nodeId,

    /** The first replica of the primary on `port`. */
    async replicaOf(port) {
      const id = await nodeId(port);
      for (const line of (await redisText(port, 'CLUSTER', 'NODES')).trim().split('\n')) {
        const fields = line.split(' ');
        if (fields[3] === id && fields[2].includes('slave')) return Number(fields[1].split('@')[0].split(':').pop());
      }
      throw new Error(`the primary on port ${port} has no replica`);
    },

    /** SIGSTOP: the node answers nothing and replicates nothing, as a stalled machine. */
    async pause(port) {
      const n = node(port);
      // Kept for resume(): a paused node cannot answer INFO.
      n.pid = await pidOf(port);
      process.kill(n.pid, 'SIGSTOP');
      n.paused = true;
    },

    async resume(port) {
      const n = node(port);
      n.paused = false;
      process.kill(n.pid, 'SIGCONT');
    },

    /** SIGKILL, as a crash: no shutdown work at all. */
    async kill(port) {
      await node(port).handle.kill();
    },

    /** Starts a killed node again on its port and directory (its nodes.conf: it rejoins). */
    async restart(port) {
      await node(port).handle.restart();
    },

    /** Waits until the node on `port` is a primary and the cluster is ok again. */
    async waitPromoted(port, timeoutMs = 30000) {
      await waitFor('the replica is promoted', () => isPrimary(port), timeoutMs);
      await cluster.waitHealthy(timeoutMs);
    },

    /**
     * Moves `slot` from the primary on `from` to the one on `to`, one key at a time with `pauseMs`
     * between keys (writes meanwhile meet a slot split between two nodes: ASK, TRYAGAIN), then
     * tells every primary the slot's new owner.
     */
    async moveSlot(slot, from, to, { pauseMs = 0 } = {}) {
      const [fromId, toId] = [await nodeId(from), await nodeId(to)];
      await redisCommand(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
      await redisCommand(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
      let moved = 0;
      for (;;) {
        const keys = (await redisCommand(from, 'CLUSTER', 'GETKEYSINSLOT', slot, 10)).map(String);
        if (keys.length === 0) break;
        for (const key of keys) {
          await redisCommand(from, 'MIGRATE', HOST, to, '', 0, 5000, 'KEYS', key);
          moved++;
          if (pauseMs) await new Promise((resolve) => setTimeout(resolve, pauseMs));
        }
      }
      await redisCommand(to, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
      await redisCommand(from, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
      for (const port of await cluster.primaryPorts()) {
        if (port !== from && port !== to) await redisCommand(port, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
      }
      return moved;
    },

    /** How many times the node on `port` answered with error `code` (INFO errorstats). */
    async errorCount(port, code) {
      const match = new RegExp(`errorstat_${code}:count=(\\d+)`).exec(await redisText(port, 'INFO', 'errorstats'));
      return match ? Number(match[1]) : 0;
    },

    async stop() {
      for (const n of nodes) if (n.paused) await cluster.resume(n.port);
      await Promise.all(nodes.map((n) => n.handle.dispose()));
    },
  };
  return cluster;
}

module.exports = { startCluster, waitFor, NODE_TIMEOUT_MS };
