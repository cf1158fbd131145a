//! A Redis Cluster: the crate's [`ClusterConnection`] for single commands and publishing, and the
//! backend's own routing for what must run on one connection of the node serving a slot:
//! `WATCH`/`MULTI`/`EXEC` transactions and the `MULTI` reads of a whole session.
//!
//! The crate's cluster connection multiplexes every caller onto one connection per node, where
//! one task's `EXEC` would clear another's `WATCH`, so transactions take a connection of their own
//! from a pool per node, found through a slot map read with `CLUSTER SLOTS`. A `MOVED` reply
//! updates the slot at once and has the whole map read again before the next call; `ASK` and
//! `TRYAGAIN` (the slot is being moved) are waited out until the move ends in a `MOVED`. A lost
//! node (killed, failed over) has the map read again from any node that answers, so after a
//! failover the store follows the promoted replica by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind as RedisErrorKind,
    Pipeline, RedisError, RedisResult, Value,
};

use super::keys::CLUSTER_SLOTS;
use super::net::{
    migrating_pause, redirect_among, redirect_of, scan_node, Redirect, TxConn, REDIRECT_ATTEMPTS,
};
use super::{unavailable, CONNECT_TIMEOUT, MAX_IDLE_TX_CONNECTIONS, RESPONSE_TIMEOUT};
use crate::lock;

/// Attempts the crate's cluster connection makes per command (it follows redirects and
/// reconnects between them), and the pauses between them: short, so that a call during a
/// failover fails within seconds (the store keeps its data and tries again).
const SHARED_RETRIES: u32 = 3;
const SHARED_MIN_RETRY_WAIT_MS: u64 = 50;
const SHARED_MAX_RETRY_WAIT_MS: u64 = 500;
/// How long a node a connection to failed is asked for the slot map after the others.
const FAILED_NODE_MEMORY: Duration = Duration::from_secs(10);
/// How many times `list` scans again when the slots moved while it scanned.
const SCAN_ROUNDS: usize = 3;

/// Which node serves each slot, and every node known.
#[derive(Default, PartialEq, Eq)]
struct SlotMap {
    /// The primary serving each slot (`host:port`), or None when no node does.
    owners: Vec<Option<Arc<str>>>,
    /// The primaries, then the replicas: where to ask for the map again.
    nodes: Vec<Arc<str>>,
}

impl SlotMap {
    fn primaries(&self) -> Vec<Arc<str>> {
        let mut primaries: Vec<Arc<str>> = self.owners.iter().flatten().cloned().collect();
        primaries.sort();
        primaries.dedup();
        primaries
    }
}

pub(super) struct Cluster {
    /// The crate's cluster connection: single commands, `SPUBLISH`.
    pub(super) shared: ClusterConnection,
    /// The seed nodes, as given: what a new node's connection copies (credentials, TLS), and
    /// where to ask for the map when no known node answers.
    pub(super) seeds: Vec<ConnectionInfo>,
    map: Mutex<SlotMap>,
    /// Bumped whenever a read of the map finds it changed.
    epoch: std::sync::atomic::AtomicU64,
    /// The map must be read again before the next call (a redirect, a lost node).
    stale: AtomicBool,
    /// When the map was last read; held while it is read, so that callers who ask at once share
    /// one read.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    clients: Mutex<HashMap<Arc<str>, Client>>,
    idle: Mutex<HashMap<Arc<str>, Vec<MultiplexedConnection>>>,
    /// Nodes a connection to failed, and when: asked for the map last.
    failed: Mutex<HashMap<Arc<str>, Instant>>,
}

impl Cluster {
    /// Connects to the cluster through `seeds` and reads its slot map.
    pub(super) async fn connect(seeds: Vec<ConnectionInfo>) -> RedisResult<Cluster> {
        let shared = ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(SHARED_RETRIES)
            .min_retry_wait(SHARED_MIN_RETRY_WAIT_MS)
            .max_retry_wait(SHARED_MAX_RETRY_WAIT_MS)
            .build()?
            .get_async_connection()
            .await?;
        let cluster = Cluster {
            shared,
            seeds,
            map: Mutex::new(SlotMap::default()),
            epoch: Default::default(),
            stale: AtomicBool::new(true),
            refreshed: tokio::sync::Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        };
        cluster.refresh().await?;
        Ok(cluster)
    }

    /// A builder for another cluster connection with the same settings (the subscriber's).
    pub(super) fn builder(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.seeds.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(SHARED_RETRIES)
            .min_retry_wait(SHARED_MIN_RETRY_WAIT_MS)
            .max_retry_wait(SHARED_MAX_RETRY_WAIT_MS)
    }

    /// Reads the slot map again, from the first node that answers: known primaries, then
    /// replicas, then the seeds. Callers that ask while a read runs share it.
    pub(super) async fn refresh(&self) -> RedisResult<()> {
        let asked = Instant::now();
        let mut refreshed = self.refreshed.lock().await;
        if refreshed.is_some_and(|at| at >= asked) {
            return Ok(());
        }
        self.stale.store(false, Ordering::SeqCst);
        let mut candidates = lock(&self.map).nodes.clone();
        for seed in &self.seeds {
            if let Some(node) = node_name(seed.addr()) {
                if !candidates.contains(&node) {
                    candidates.push(node);
                }
            }
        }
        {
            let failed = lock(&self.failed);
            let recently = |node: &Arc<str>| {
                failed
                    .get(node)
                    .is_some_and(|at| at.elapsed() < FAILED_NODE_MEMORY)
            };
            // Stable: known primaries first, then replicas, then seeds; nodes just lost last.
            candidates.sort_by_key(recently);
        }
        let mut last_error = None;
        for node in candidates {
            let read = async {
                let mut tx = self.connection(&node, RESPONSE_TIMEOUT).await?;
                let reply = ::redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(&mut tx.conn)
                    .await?;
                self.give_back(tx);
                parse_slots(&reply, host_of(&node))
            };
            match read.await {
                Ok(map) => {
                    let mut current = lock(&self.map);
                    if *current != map {
                        *current = map;
                        self.epoch.fetch_add(1, Ordering::SeqCst);
                    }
                    *refreshed = Some(Instant::now());
                    self.stale.store(false, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        self.stale.store(true, Ordering::SeqCst);
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((RedisErrorKind::Io, "no node of the Redis Cluster answered"))
        }))
    }

    /// A connection for one transaction on the primary serving `slot`.
    pub(super) async fn take(&self, slot: u16, response_timeout: Duration) -> RedisResult<TxConn> {
        for attempt in 0..2 {
            if self.stale.load(Ordering::SeqCst) || attempt > 0 {
                // A map that cannot be read now leaves the one we have: its owner may still answer.
                let _ = self.refresh().await;
            }
            let owner = lock(&self.map)
                .owners
                .get(usize::from(slot))
                .cloned()
                .flatten();
            if let Some(node) = owner {
                return self.connection(&node, response_timeout).await;
            }
            self.stale.store(true, Ordering::SeqCst);
        }
        Err(RedisError::from((
            RedisErrorKind::Server(::redis::ServerErrorKind::ClusterDown),
            "no node of the Redis Cluster serves the slot",
            format!("slot {slot}"),
        )))
    }

    /// An idle connection to `node`, or a new one.
    async fn connection(&self, node: &Arc<str>, response_timeout: Duration) -> RedisResult<TxConn> {
        if let Some(conn) = lock(&self.idle).get_mut(node).and_then(Vec::pop) {
            return Ok(TxConn {
                conn,
                node: Some(node.clone()),
                reused: true,
            });
        }
        let client = self.client(node)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => Ok(TxConn {
                conn,
                node: Some(node.clone()),
                reused: false,
            }),
            Err(e) => {
                self.stale.store(true, Ordering::SeqCst);
                lock(&self.failed).insert(node.clone(), Instant::now());
                Err(e)
            }
        }
    }

    /// The client for `node`: the first seed's settings (credentials, TLS) at `node`'s address.
    fn client(&self, node: &Arc<str>) -> RedisResult<Client> {
        if let Some(client) = lock(&self.clients).get(node) {
            return Ok(client.clone());
        }
        let (host, port) = split_node(node).ok_or_else(|| {
            RedisError::from((
                RedisErrorKind::Client,
                "the Redis Cluster named a node without a port",
                node.to_string(),
            ))
        })?;
        let seed = &self.seeds[0];
        let addr = match seed.addr().clone() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure,
                tls_params,
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        let client = Client::open(seed.clone().set_addr(addr))?;
        lock(&self.clients).insert(node.clone(), client.clone());
        Ok(client)
    }

    pub(super) fn give_back(&self, tx: TxConn) {
        let Some(node) = tx.node else { return };
        let mut idle = lock(&self.idle);
        let pool = idle.entry(node).or_default();
        if pool.len() < MAX_IDLE_TX_CONNECTIONS {
            pool.push(tx.conn);
        }
    }

    /// A redirect moves its slot at once and has the map read again; a lost node has it read
    /// again.
    pub(super) fn learn(&self, error: &RedisError) {
        match redirect_of(error) {
            Some(Redirect::Moved { slot, node }) => {
                if let Some(owner) = lock(&self.map).owners.get_mut(usize::from(slot)) {
                    *owner = Some(node.into());
                }
                self.stale.store(true, Ordering::SeqCst);
            }
            Some(Redirect::Migrating) => {}
            None if unavailable(error) => self.stale.store(true, Ordering::SeqCst),
            None => {}
        }
    }

    /// Runs `pipe` on the primary serving `slot`: follows `MOVED`, waits out `ASK` and
    /// `TRYAGAIN`, and replaces a pooled connection found dead.
    pub(super) async fn query(&self, slot: u16, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.take(slot, RESPONSE_TIMEOUT).await?;
            let reused = tx.reused;
            let error = match pipe.query_async::<Vec<Value>>(&mut tx.conn).await {
                Ok(values) => {
                    self.give_back(tx);
                    match redirect_among(&values) {
                        None => return Ok(values),
                        Some(e) => e,
                    }
                }
                Err(e) => {
                    if !unavailable(&e) {
                        self.give_back(tx);
                    }
                    e
                }
            };
            self.learn(&error);
            match redirect_of(&error) {
                Some(Redirect::Moved { .. }) if attempt < REDIRECT_ATTEMPTS => {}
                Some(Redirect::Migrating) if attempt < REDIRECT_ATTEMPTS => {
                    tokio::time::sleep(migrating_pause(attempt)).await;
                }
                None if reused && attempt == 1 && unavailable(&error) => {}
                _ => return Err(error),
            }
        }
    }

    /// Every key matching `pattern` on every primary. When the slot map changed meanwhile (a
    /// reshard or a failover moved keys between nodes already scanned and not yet), it scans
    /// again, up to [`SCAN_ROUNDS`] times.
    pub(super) async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut found = Vec::new();
        for _ in 0..SCAN_ROUNDS {
            self.refresh().await?;
            let epoch = self.epoch.load(Ordering::SeqCst);
            let primaries = lock(&self.map).primaries();
            found.clear();
            for node in primaries {
                let mut tx = self.connection(&node, RESPONSE_TIMEOUT).await?;
                found.extend(scan_node(&mut tx.conn, pattern).await?);
                self.give_back(tx);
            }
            self.refresh().await?;
            if self.epoch.load(Ordering::SeqCst) == epoch {
                break;
            }
        }
        Ok(found)
    }

    /// Every node known (primaries, then replicas), as clients.
    pub(super) fn node_clients(&self) -> Vec<Client> {
        let nodes = lock(&self.map).nodes.clone();
        nodes
            .iter()
            .filter_map(|node| self.client(node).ok())
            .collect()
    }

    /// Whether the cluster's nodes have sharded pub/sub (`SSUBSCRIBE`: Redis 7 and later).
    pub(super) async fn has_sharded_pubsub(&self) -> RedisResult<bool> {
        let node = lock(&self.map).primaries().into_iter().next();
        let Some(node) = node else {
            return Ok(false);
        };
        let mut tx = self.connection(&node, RESPONSE_TIMEOUT).await?;
        let info: Vec<Value> = ::redis::cmd("COMMAND")
            .arg("INFO")
            .arg("SSUBSCRIBE")
            .query_async(&mut tx.conn)
            .await?;
        self.give_back(tx);
        Ok(info.iter().any(|v| !matches!(v, Value::Nil)))
    }
}

/// `host:port` of an address (None for a Unix socket).
pub(super) fn node_name(addr: &ConnectionAddr) -> Option<Arc<str>> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some(format!("{host}:{port}").into())
        }
        _ => None,
    }
}

fn split_node(node: &str) -> Option<(&str, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

fn host_of(node: &str) -> &str {
    split_node(node).map_or(node, |(host, _)| host)
}

/// The slot map in a `CLUSTER SLOTS` reply. A node listed without a host (`""` or `?`) is on
/// the host that answered.
fn parse_slots(reply: &Value, asked_host: &str) -> RedisResult<SlotMap> {
    let bad = |what: &str| {
        RedisError::from((
            RedisErrorKind::Parse,
            "an unexpected CLUSTER SLOTS reply",
            what.to_string(),
        ))
    };
    let Value::Array(ranges) = reply else {
        return Err(bad("not an array"));
    };
    let mut map = SlotMap {
        owners: vec![None; usize::from(CLUSTER_SLOTS)],
        nodes: Vec::new(),
    };
    let mut replicas = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad("a range is not an array"));
        };
        let (Some(Value::Int(start)), Some(Value::Int(end))) = (fields.first(), fields.get(1))
        else {
            return Err(bad("a range without bounds"));
        };
        let mut nodes = fields[2..].iter().map(|node| {
            let Value::Array(parts) = node else {
                return Err(bad("a node is not an array"));
            };
            let host = match parts.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(bad("a node without a host")),
            };
            let Some(Value::Int(port)) = parts.get(1) else {
                return Err(bad("a node without a port"));
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_string()
            } else {
                host
            };
            Ok::<Arc<str>, RedisError>(format!("{host}:{port}").into())
        });
        let primary = nodes
            .next()
            .ok_or_else(|| bad("a range without a node"))??;
        for replica in nodes {
            replicas.push(replica?);
        }
        let (start, end) = (
            usize::try_from(*start).map_err(|_| bad("a negative slot"))?,
            usize::try_from(*end).map_err(|_| bad("a negative slot"))?,
        );
        if start > end || end >= usize::from(CLUSTER_SLOTS) {
            return Err(bad("a slot out of range"));
        }
        for owner in &mut map.owners[start..=end] {
            *owner = Some(primary.clone());
        }
        if !map.nodes.contains(&primary) {
            map.nodes.push(primary);
        }
    }
    for replica in replicas {
        if !map.nodes.contains(&replica) {
            map.nodes.push(replica);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn slot_maps_name_each_slots_primary() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(8192), Value::Int(16383), node("", 7001)]),
        ]);
        let map = parse_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(map.owners[0].as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(map.owners[8191].as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(map.owners[16383].as_deref(), Some("10.0.0.9:7001"));
        let nodes: Vec<&str> = map.nodes.iter().map(|n| &**n).collect();
        assert_eq!(nodes, ["10.0.0.1:7000", "10.0.0.9:7001", "10.0.0.4:7003"]);
        assert_eq!(map.primaries().len(), 2);
    }

    #[test]
    fn bad_slot_maps_are_refused() {
        let out_of_range = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16384),
            node("h", 1),
        ])]);
        assert!(parse_slots(&out_of_range, "h").is_err());
        assert!(parse_slots(&Value::Nil, "h").is_err());
        let no_node = Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]);
        assert!(parse_slots(&no_node, "h").is_err());
    }
}
