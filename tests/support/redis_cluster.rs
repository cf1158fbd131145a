//! A real Redis Cluster for tests: `redis-server` processes on free loopback ports with cluster
//! mode on and persistence off, joined by hand (`CLUSTER ADDSLOTSRANGE`, `MEET`, `REPLICATE`), so
//! the layout is known: primary `i` serves an equal share of the slots in order, and its replicas
//! follow it. Nodes can be killed, paused (`SIGSTOP`: a replica that falls behind), resumed, and
//! slots moved between primaries key by key, as `redis-cli --cluster reshard` does.
//!
//! `redis-server` must be installed (`apt-get install redis-server`; `.ci/run` does it). Every
//! process is killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{Connection, FromRedisValue, Value};

/// How long a node goes unanswered before the others count it failed. Short, so a failover takes
/// about two seconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;

pub struct ClusterNode {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// Stopped with SIGSTOP: it answers nothing until resumed.
    paused: bool,
}

impl ClusterNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    pub primaries: usize,
    _dir: tempfile::TempDir,
}

fn redis_server_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("redis-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/bin/redis-server".into());
    candidates.into_iter().find(|p| p.is_file()).expect(
        "redis-server was not found on PATH: install it with `apt-get install redis-server`",
    )
}

fn free_port() -> u16 {
    // Cluster nodes also listen on port + 10000 (the cluster bus): keep both free.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// Polls `done` every 20 ms until it holds, or panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl RedisCluster {
    /// Starts `primaries` primaries, each with `replicas` replicas, and waits until every node
    /// says the cluster is ok and every replica is in sync.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let count = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).unwrap();
            let mut node = ClusterNode {
                port: free_port(),
                child: None,
                dir: node_dir,
                paused: false,
            };
            spawn(&mut node);
            nodes.push(node);
        }
        let cluster = RedisCluster {
            nodes,
            primaries,
            _dir: dir,
        };
        cluster.join(replicas);
        cluster
    }

    fn join(&self, replicas: usize) {
        let slots = 16384 / self.primaries;
        for i in 0..self.primaries {
            let start = i * slots;
            let end = if i + 1 == self.primaries {
                16383
            } else {
                start + slots - 1
            };
            let mut conn = self.connection(self.nodes[i].port);
            let _: () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query(&mut conn)
                .unwrap();
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .query(&mut conn)
                .unwrap();
        }
        let mut first = self.connection(self.nodes[0].port);
        for node in &self.nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .query(&mut first)
                .unwrap();
        }
        let count = self.nodes.len();
        for node in &self.nodes {
            wait_until(
                "every node knows every other",
                Duration::from_secs(20),
                || self.text(node.port, &["CLUSTER", "NODES"]).lines().count() == count,
            );
        }
        for r in 0..replicas {
            for p in 0..self.primaries {
                let replica = self.nodes[self.primaries * (1 + r) + p].port;
                let id = self.node_id(self.nodes[p].port);
                let _: () = redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&id)
                    .query(&mut self.connection(replica))
                    .unwrap();
            }
        }
        self.wait_healthy();
    }

    /// Waits until every running node says `cluster_state:ok` and every running replica's link
    /// to its primary is up.
    pub fn wait_healthy(&self) {
        for node in self.nodes.iter().filter(|n| n.is_running() && !n.paused) {
            wait_until("the cluster is ok", Duration::from_secs(30), || {
                self.text(node.port, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            wait_until("replicas are in sync", Duration::from_secs(30), || {
                let info = self.text(node.port, &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
    }

    /// `redis://127.0.0.1:<port>/0` of every node: the seeds a store is given (any subset works).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/0", n.port))
            .collect()
    }

    pub fn connection(&self, port: u16) -> Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to the node on port {port}: {e}"))
    }

    pub fn query<T: FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.connection(port))
            .unwrap_or_else(|e| panic!("{args:?} on port {port}: {e}"))
    }

    fn text(&self, port: u16, args: &[&str]) -> String {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        client
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| cmd.query::<String>(&mut c))
            .unwrap_or_default()
    }

    pub fn node_id(&self, port: u16) -> String {
        self.query(port, &["CLUSTER", "MYID"])
    }

    /// The port of the primary serving `slot`, as a running primary says.
    pub fn primary_of(&self, slot: u16) -> u16 {
        let asker = self
            .nodes
            .iter()
            .find(|n| n.is_running() && !n.paused)
            .expect("a running node")
            .port;
        let ranges: Vec<Value> = self.query(asker, &["CLUSTER", "SLOTS"]);
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Value::Int(start), Value::Int(end), Value::Array(primary)) =
                (&fields[0], &fields[1], &fields[2])
            else {
                continue;
            };
            if (*start..=*end).contains(&i64::from(slot)) {
                if let Value::Int(port) = primary[1] {
                    return port as u16;
                }
            }
        }
        panic!("no primary serves slot {slot}")
    }

    /// The ports of the running primaries.
    pub fn primary_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && !n.paused && self.is_primary(n.port))
            .map(|n| n.port)
            .collect()
    }

    pub fn is_primary(&self, port: u16) -> bool {
        self.text(port, &["INFO", "replication"])
            .contains("role:master")
    }

    /// The first replica of the primary on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let id = self.node_id(port);
        let nodes = self.text(port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() > 3 && fields[3] == id && fields[2].contains("slave") {
                let address = fields[1].split('@').next().unwrap();
                return address.rsplit_once(':').unwrap().1.parse().unwrap();
            }
        }
        panic!("the primary on port {port} has no replica")
    }

    fn node(&mut self, port: u16) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// SIGKILL: no shutdown work at all, as a crash or an OOM kill.
    pub fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.node(port).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the node stops answering and stops replicating, as a stalled machine.
    pub fn pause(&mut self, port: u16) {
        let node = self.node(port);
        signal(node, libc::SIGSTOP);
        node.paused = true;
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self, port: u16) {
        let node = self.node(port);
        signal(node, libc::SIGCONT);
        node.paused = false;
    }

    /// Waits until the node on `port` is a primary serving slots, and every running node says the
    /// cluster is ok: a failover is over.
    pub fn wait_promoted(&self, port: u16) {
        wait_until("the replica is promoted", Duration::from_secs(30), || {
            self.is_primary(port)
        });
        self.wait_healthy();
    }

    /// Moves `slot` from the primary on `from` to the one on `to`, one key at a time with `pause`
    /// between keys (so writes meanwhile meet a slot split between two nodes: `ASK`, `TRYAGAIN`),
    /// then tells every primary the slot's new owner.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16, pause: Duration) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_text = slot.to_string();
        let _: () = self.query(
            to,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
        );
        let _: () = self.query(
            from,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
        );
        loop {
            let keys: Vec<String> =
                self.query(from, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "10"]);
            if keys.is_empty() {
                break;
            }
            for key in keys {
                let _: Value = self.query(
                    from,
                    &[
                        "MIGRATE",
                        "127.0.0.1",
                        &to.to_string(),
                        "",
                        "0",
                        "5000",
                        "KEYS",
                        &key,
                    ],
                );
                std::thread::sleep(pause);
            }
        }
        let _: () = self.query(to, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        let _: () = self.query(from, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        for port in self.primary_ports() {
            if port != from && port != to {
                let _: () = self.query(port, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
            }
        }
    }

    /// How many keys the node on `port` holds.
    pub fn dbsize(&self, port: u16) -> u64 {
        self.query(port, &["DBSIZE"])
    }
}

fn spawn(node: &mut ClusterNode) {
    let mut child = Command::new(redis_server_binary())
        .arg("--port")
        .arg(node.port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .arg("--cluster-node-timeout")
        .arg(NODE_TIMEOUT_MS.to_string())
        // A replica that fell behind still takes over: the tests count what that costs.
        .args(["--cluster-replica-validity-factor", "0"])
        .arg("--dir")
        .arg(&node.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run redis-server");
    let port = node.port;
    wait_until("redis-server answers", Duration::from_secs(10), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server on port {port} exited: {status}");
        }
        redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    });
    node.child = Some(child);
}

fn signal(node: &ClusterNode, signal: libc::c_int) {
    let child = node.child.as_ref().expect("a running node");
    // SAFETY: kill(2) with the pid of a child this process started and has not reaped.
    let status = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(status, 0, "kill({}, {signal})", child.id());
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
