//! The Redis backend: sessions shared by several store instances through one Redis node or a
//! Redis Cluster (issues 5 and 23).
//!
//! The backend on its own, with the same semantics as the file backend ([`super::file`]) and the
//! journal ([`crate::journal`]); the store's side is [`super::redis_sessions`]. The merge rules stay
//! in Rust; Redis only stores bytes and orders writes.
//!
//! | module | what it holds |
//! |---|---|
//! | this one | opening, `list`, `touch`, `delete`, publish and subscribe |
//! | [`read`] | reading a session, its text alone, what changed since a view |
//! | [`keys`] | key names, the hash tag and slot, the checks on prefixes and frames |
//! | [`values`] | reading a whole session in one pipeline and parsing the replies |
//! | [`tx`] | every write: `WATCH`/`MULTI`/`EXEC`, moving bad values aside, `WAIT` |
//! | [`net`] | where commands go: [`single`] (one node) or [`cluster`] (a Redis Cluster) |
//! | [`events`] | pub/sub between instances: `PSUBSCRIBE`, or sharded `SSUBSCRIBE` on a cluster |
//!
//! # Keys
//!
//! Every key of the session with stem `S` (see [`crate::paths::SessionKey::file_stem`]) carries the
//! hash tag `{S}`, so on Redis Cluster a session lives in one slot and its transactions are legal:
//!
//! | key | type | what it is |
//! |---|---|---|
//! | `<prefix>{S}:snap` | string | the session's snapshot (JSON), as the file backend's `S.json` |
//! | `<prefix>{S}:log` | list | journal frames appended since the snapshot, one frame an element, exactly as [`crate::journal::encode`] makes them |
//! | `<prefix>{S}:ver` | string (integer) | bumped (`INCR`) by every write: the version optimistic concurrency compares |
//! | `<prefix>{S}:gen` | string (integer) | a random token replaced by every snapshot write: a reader whose token differs reads everything again |
//! | `<prefix>{S}:mark` | string | set with a snapshot the store serialised from a checked session: the mark of [`super::canonical`] (a CRC-32 of `S` and the snapshot); a load that finds it matching and the log empty sends the snapshot unparsed |
//! | `<prefix>{S}:<kind>:corrupt:<ms>` | any | a value that was not valid, moved aside for the operator; never expires, never deleted |
//! | channel `<prefix>{S}:events` | pub/sub | `{"instance": id, "version": n}` after a write that changed something |
//!
//! # Concurrency
//!
//! Every write is a `WATCH`/`MULTI`/`EXEC` transaction that commits only if `ver`, `gen` and the
//! log's length are still what the caller last saw ([`RedisView`]); otherwise it returns `Ok(None)`
//! and the caller reads what changed ([`RedisBackend::read_changes`]), merges it, and tries again.
//! `WATCH` state belongs to a connection, so transactions never run on a shared multiplexed
//! connection: another task's `EXEC` would clear this one's `WATCH`, and a silent reconnect between
//! `WATCH` and `EXEC` would commit unguarded. They run on connections taken from a small pool (one
//! per node on a cluster), each used by one transaction at a time and dropped on any error. Reads
//! of a whole session run in `MULTI`/`EXEC` on the same pools; on one node, they and the other
//! single commands go through the reconnecting `ConnectionManager`.
//!
//! # Cluster and failover
//!
//! On a cluster ([`RedisConfig::cluster`]), each call goes to the primary serving the session's
//! slot ([`cluster`]); `MOVED`, `ASK` and `TRYAGAIN` are followed or waited out, `list` scans every
//! primary, and a failover is followed by reading the slot map again. Replication is asynchronous:
//! a write is acknowledged once its primary has it. With [`RedisConfig::wait_replicas`], a write
//! also waits (`WAIT`) until that many replicas have it, and fails `EUNAVAILABLE` when they do not
//! within [`RedisConfig::wait_timeout`] (the store keeps it and writes it again).
//!
//! # Expiry
//!
//! Every write sets the TTL of all of a session's keys (`PEXPIRE`), and [`RedisBackend::touch`]
//! keeps a session in use alive. Redis removes expired sessions itself (on every node): no sweep.
//!
//! # Errors
//!
//! Redis unreachable, timing out, loading, failing over, or refusing credentials, a slot that stays
//! in motion, too few replicas confirming a write: [`ErrorCode::Unavailable`] (`EUNAVAILABLE`, see
//! [`is_unavailable`]); the store keeps its data dirty and tries again. Other Redis errors:
//! [`ErrorCode::Io`] with a message starting `redis:`. A bad URL (or one asking for what this build
//! lacks, such as `rediss://...#insecure`), prefix, TTL, option or stem: [`ErrorCode::Invalid`].

mod cluster;
mod events;
mod keys;
mod net;
mod read;
mod single;
mod tools;
mod tx;
mod values;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ::redis::{
    Client, ConnectionInfo, ErrorKind as RedisErrorKind, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisError, ServerErrorKind,
};
use tokio::sync::mpsc;

use crate::error::{ErrorCode, Result, StoreError};
use crate::merge::SessionPatch;
use crate::model::{check_id, NarrativeSession};
use cluster::Cluster;
use events::{Decoder, EventPayload, Sharded, Subscriber, EVENT_BUFFER};
pub use keys::MAX_PREFIX_BYTES;
use keys::{check_prefix, glob_escape, redact_url, stem_of, ttl_millis, Keys};
use net::Net;
use single::Single;

/// How long a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command (or pipeline) may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle transaction connections kept for reuse (per node).
const MAX_IDLE_TX_CONNECTIONS: usize = 4;
/// Keys per `SCAN` step.
const SCAN_COUNT: usize = 512;
/// The most replicas a write may wait for.
pub const MAX_WAIT_REPLICAS: u32 = 64;
/// The longest a write may wait for its replicas.
pub const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write waits for its replicas when [`RedisConfig::wait_timeout`] is not set.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the sessions are, and how writes are acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// One node's URL; with `cluster`, one or more seed nodes of the cluster (any nodes: the
    /// others are found through them). `redis://[user:password@]host:port/db`, or `rediss://`.
    pub urls: Vec<String>,
    /// A Redis Cluster: sessions are spread over its primaries by slot.
    pub cluster: bool,
    pub key_prefix: String,
    /// Writes wait until this many replicas have them (`WAIT`) before they count as done. 0: a
    /// write is done once its primary has it (Redis's asynchronous replication).
    pub wait_replicas: u32,
    /// How long a write waits for its replicas before it fails `EUNAVAILABLE`.
    pub wait_timeout: Duration,
    /// On a cluster: sharded pub/sub (`SSUBSCRIBE`), or classic (`PUBLISH` reaches every node).
    /// None: sharded when the nodes have it (Redis 7).
    pub sharded_events: Option<bool>,
}

impl RedisConfig {
    /// One node at `url`, writes done once the node has them.
    pub fn new(url: impl Into<String>, key_prefix: impl Into<String>) -> RedisConfig {
        RedisConfig {
            urls: vec![url.into()],
            cluster: false,
            key_prefix: key_prefix.into(),
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            sharded_events: None,
        }
    }

    /// A Redis Cluster reached through `seeds`, writes done once their primary has them.
    pub fn cluster(seeds: Vec<String>, key_prefix: impl Into<String>) -> RedisConfig {
        RedisConfig {
            urls: seeds,
            cluster: true,
            ..RedisConfig::new(String::new(), key_prefix)
        }
    }
}

/// What `WAIT` asks for.
#[derive(Clone, Copy, Debug)]
struct Wait {
    replicas: u32,
    timeout: Duration,
}

/// A session's keys and channel as a store instance last saw them.
///
/// `version`, `generation` and `log_len` are what a write compares before it commits. The byte
/// sizes are this instance's own count (what it read and wrote), for the compaction decision: the
/// store writes a snapshot once the log outgrows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisView {
    /// The session's `ver` counter (0: no write yet, or the session expired or was deleted).
    pub version: u64,
    /// Elements in the session's log.
    pub log_len: u64,
    /// The token of the last snapshot write (0: none).
    pub generation: u64,
    /// Bytes of the snapshot.
    pub snapshot_bytes: u64,
    /// Bytes of the log's elements.
    pub log_bytes: u64,
}

/// A value that was not valid, and where it now is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The key the value was found in.
    pub from: String,
    /// The key it was moved (a whole key) or copied (log elements) to. Never expires.
    pub to: String,
    /// Why it was refused.
    pub reason: String,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): kept at {}", self.from, self.reason, self.to)
    }
}

/// What [`RedisBackend::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The snapshot, or None when there is none (or it was not valid, see `invalid`).
    pub snapshot: Option<NarrativeSession>,
    /// The log's records, in order: joins to apply onto the snapshot (or onto a new session).
    pub patches: Vec<SessionPatch>,
    pub view: RedisView,
    /// Values that were not valid: moved aside and skipped. A non-empty list is what the file
    /// backend calls `recovered`.
    pub invalid: Vec<Quarantined>,
    /// From [`RedisBackend::load_text`] only: the snapshot's text, unparsed, when the store wrote
    /// it (its mark matches) and the log is empty. `snapshot` and `patches` are then empty.
    pub text: Option<String>,
    /// From [`RedisBackend::load_text`] only: the bytes of an unmarked snapshot that loaded with
    /// an empty log and nothing invalid, for the caller to mark if they are what the store would
    /// write.
    pub raw: Option<Vec<u8>>,
}

/// What changed in a session since a [`RedisView`].
#[derive(Debug)]
pub enum RedisChange {
    Unchanged,
    /// Records appended to the log since the view (possibly none, when only the version moved),
    /// and the view after them.
    Tail(Vec<SessionPatch>, RedisView),
    /// The snapshot was rewritten, the session deleted or expired, or a bad value moved aside:
    /// everything, read again.
    Full(Box<Loaded>),
}

/// What a subscription reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisEvent {
    /// Another instance wrote `stem`, reaching `version`.
    Changed {
        stem: String,
        instance_id: String,
        version: u64,
    },
    /// The subscription was lost and is back. Messages sent meanwhile are lost: re-read every
    /// live session.
    Resync,
    /// The subscription to one session's channel was lost and is back (on a cluster, after its
    /// shard failed over or its slot moved). Messages sent meanwhile are lost: re-read it.
    Stale(String),
}

/// How instances hear of each other's writes.
enum Events {
    /// `PUBLISH` and one `PSUBSCRIBE` (one node, or a cluster without sharded pub/sub).
    Pattern,
    /// `SPUBLISH` and an `SSUBSCRIBE` per session held (a cluster with Redis 7).
    Sharded(Arc<Sharded>),
}

/// The Redis backend. All methods are async and cancel-safe in the sense that a dropped call
/// leaves Redis consistent (a transaction either committed or did not).
pub struct RedisBackend {
    net: Net,
    events: Events,
    prefix: String,
    ttl_ms: i64,
    instance_id: String,
    /// For messages: where Redis is, without credentials.
    address: String,
    wait: Option<Wait>,
    /// How long a transaction's command may take: a `WAIT` included.
    tx_timeout: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.address)
            .field("cluster", &self.net.is_cluster())
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .field("instance_id", &self.instance_id)
            .field("wait", &self.wait)
            .finish()
    }
}

impl RedisBackend {
    /// Connects to one node at `url` (`redis://[user:pass@]host:port/db`, or `rediss://` for TLS
    /// through rustls, checked against the system's root certificates; `#insecure` is not compiled
    /// in). Keys are named `<key_prefix>{<stem>}:...`; every write sets their time to live to
    /// `ttl`. `instance_id` tags this instance's pub/sub messages, so that it can drop its own.
    ///
    /// Redis unreachable: an `EUNAVAILABLE` error.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        ttl: Duration,
        instance_id: String,
    ) -> Result<RedisBackend> {
        Self::open(&RedisConfig::new(url, key_prefix), ttl, instance_id).await
    }

    /// Connects as `config` says: one node, or a cluster through its seed nodes.
    pub async fn open(
        config: &RedisConfig,
        ttl: Duration,
        instance_id: String,
    ) -> Result<RedisBackend> {
        check_prefix(&config.key_prefix)?;
        check_id("instance id", &instance_id)?;
        let ttl_ms = ttl_millis(ttl)?;
        let wait = check_wait(config)?;
        let infos = connection_infos(config)?;
        let address = addresses(&infos);
        let what = format!("cannot connect to Redis at {address}");
        let (net, events) = if config.cluster {
            let cluster = Cluster::connect(infos)
                .await
                .map_err(|e| redis_error(&what, e))?;
            let sharded = match config.sharded_events {
                Some(sharded) => sharded,
                None => cluster
                    .has_sharded_pubsub()
                    .await
                    .map_err(|e| redis_error(&what, e))?,
            };
            let events = if sharded {
                let decoder = Decoder {
                    prefix: config.key_prefix.clone(),
                    instance_id: instance_id.clone(),
                };
                let sharded = Sharded::connect(cluster.builder(), decoder)
                    .await
                    .map_err(|e| redis_error(&what, e))?;
                Events::Sharded(Arc::new(sharded))
            } else {
                Events::Pattern
            };
            (Net::Cluster(cluster), events)
        } else {
            let info = infos
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::invalid("redisUrl names no Redis node"))?;
            let single = Single::connect(info)
                .await
                .map_err(|e| redis_error(&what, e))?;
            (Net::Single(single), Events::Pattern)
        };
        Ok(RedisBackend {
            net,
            events,
            prefix: config.key_prefix.clone(),
            ttl_ms,
            instance_id,
            address,
            tx_timeout: RESPONSE_TIMEOUT + wait.map_or(Duration::ZERO, |w| w.timeout),
            wait,
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the sessions are on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.net.is_cluster()
    }

    /// The keys' time to live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms as u64)
    }

    /// The name of one of a session's keys: `kind` is `snap`, `log`, `ver`, `gen` or `mark`. For
    /// tests and operators; the backend checks `stem` elsewhere.
    pub fn key_name(&self, stem: &str, kind: &str) -> String {
        keys::key_name(&self.prefix, stem, kind)
    }

    /// The pub/sub channel of a session.
    pub fn channel_name(&self, stem: &str) -> String {
        self.key_name(stem, "events")
    }

    /// The cluster slot of a session's keys and channel (the same on one node).
    pub fn slot_of(&self, stem: &str) -> u16 {
        keys::slot_of(stem.as_bytes())
    }

    fn keys(&self, stem: &str) -> Result<Keys> {
        Keys::of(&self.prefix, stem)
    }

    /// Keeps a session alive: sets the TTL of its keys again. Returns whether it exists. (This
    /// counts as a change to a watched key: a concurrent write returns `Ok(None)` and retries.)
    pub async fn touch(&self, stem: &str) -> Result<bool> {
        let keys = self.keys(stem)?;
        let renewed: Vec<bool> = self
            .with_retry("cannot renew the expiry of", || {
                let mut pipe = ::redis::pipe();
                for key in keys.all() {
                    pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms);
                }
                let keys = &keys;
                async move { self.net.query(keys, &pipe).await }
            })
            .await?;
        Ok(renewed.into_iter().any(|r| r))
    }

    /// Removes a session's keys (values moved aside are kept). Returns whether it existed.
    pub async fn delete(&self, stem: &str) -> Result<bool> {
        let keys = self.keys(stem)?;
        let (removed,): (u64,) = self
            .with_retry("cannot delete", || {
                let mut pipe = ::redis::pipe();
                let del = pipe.cmd("DEL");
                for key in keys.all() {
                    del.arg(key);
                }
                let keys = &keys;
                async move { self.net.query(keys, &pipe).await }
            })
            .await?;
        Ok(removed > 0)
    }

    /// The stems of every stored session (those with a snapshot), found with `SCAN`, never `KEYS`:
    /// on the node, or on every primary of a cluster. Sorted.
    pub async fn stems(&self) -> Result<Vec<String>> {
        let pattern = format!("{}{{*}}:snap", glob_escape(&self.prefix));
        let names = self
            .with_retry("cannot list the sessions in", || self.net.scan(&pattern))
            .await?;
        let mut stems: Vec<String> = names
            .iter()
            .filter_map(|name| stem_of(&self.prefix, name, ":snap"))
            .collect();
        // SCAN may return a key twice.
        stems.sort();
        stems.dedup();
        Ok(stems)
    }

    /// Tells other instances that this one wrote `stem`, reaching `version`. Returns how many
    /// subscriptions received it (this instance's own included).
    pub async fn publish(&self, stem: &str, version: u64) -> Result<u64> {
        self.keys(stem)?;
        let channel = self.channel_name(stem);
        let payload = serde_json::to_string(&EventPayload {
            instance: self.instance_id.clone(),
            version,
        })
        .map_err(|e| StoreError::internal(e.to_string()))?;
        let command = match self.events {
            Events::Pattern => "PUBLISH",
            Events::Sharded(_) => "SPUBLISH",
        };
        self.with_retry("cannot publish on", || {
            let mut shared = self.net.shared();
            let mut publish = ::redis::cmd(command);
            publish.arg(&channel).arg(&payload);
            async move { publish.query_async(&mut shared).await }
        })
        .await
    }

    /// Reports other instances' writes; this instance's own messages are dropped. The
    /// subscription is live when this returns. If it is lost, it is restored by itself, then
    /// reported: [`RedisEvent::Resync`] (every session), or on a cluster with sharded pub/sub
    /// [`RedisEvent::Stale`] (one session). It ends when the receiver is dropped.
    ///
    /// On one node (or a cluster without sharded pub/sub) it is one `PSUBSCRIBE` on every
    /// session's channel under this prefix, on a connection of its own (RESP3, so Redis 6 or
    /// later). On a cluster with sharded pub/sub, sessions are listened to one by one: see
    /// [`Self::follow`].
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<RedisEvent>> {
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        match &self.events {
            Events::Sharded(sharded) => {
                tokio::spawn(sharded.clone().run(events));
            }
            Events::Pattern => {
                let clients = match &self.net {
                    Net::Single(single) => vec![resp3_client(&single.client)?],
                    Net::Cluster(cluster) => cluster
                        .node_clients()
                        .iter()
                        .map(resp3_client)
                        .collect::<Result<_>>()?,
                };
                let subscriber = Subscriber {
                    clients,
                    pattern: format!("{}{{*}}:events", glob_escape(&self.prefix)),
                    decoder: Decoder {
                        prefix: self.prefix.clone(),
                        instance_id: self.instance_id.clone(),
                    },
                };
                let connection = subscriber.open().await.map_err(|e| {
                    redis_error(&format!("cannot subscribe to Redis at {}", self.address), e)
                })?;
                tokio::spawn(subscriber.run(connection, events));
            }
        }
        Ok(receiver)
    }

    /// Listens to `stem`'s channel from now on, when channels are listened to one by one (sharded
    /// pub/sub); returns once the shard confirmed it, so a read made after this misses no later
    /// write. Nothing to do otherwise.
    pub async fn follow(&self, stem: &str) -> Result<()> {
        let Events::Sharded(sharded) = &self.events else {
            return Ok(());
        };
        self.keys(stem)?;
        sharded.follow(stem).await.map_err(|e| {
            redis_error(
                &format!(
                    "cannot subscribe to the events of {}",
                    self.channel_name(stem)
                ),
                e,
            )
        })
    }

    /// Stops listening to the channels of sessions not in `keep` (sharded pub/sub only).
    pub async fn unfollow_except(&self, keep: &HashSet<String>) {
        if let Events::Sharded(sharded) = &self.events {
            sharded.unfollow_except(keep).await;
        }
    }

    /// Sets every key's TTL, in a transaction being built.
    fn expire_all(&self, pipe: &mut Pipeline, keys: &Keys) {
        for key in keys.all() {
            pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms).ignore();
        }
    }

    /// Runs an idempotent call, once more if it failed for want of a connection: after Redis
    /// comes back, the first call only finds the old, failed connection (and starts a new one).
    async fn with_retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        match call().await {
            Ok(value) => Ok(value),
            Err(e) if unavailable(&e) => call()
                .await
                .map_err(|e| redis_error(&format!("{what} {}", self.address), e)),
            Err(e) => Err(redis_error(&format!("{what} {}", self.address), e)),
        }
    }
}

/// Whether an error means "Redis is not reachable now": what the store reports as `EUNAVAILABLE`.
pub fn is_unavailable(error: &StoreError) -> bool {
    error.code == ErrorCode::Unavailable
}

fn unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            RedisErrorKind::AuthenticationFailed
                | RedisErrorKind::ClusterConnectionNotFound
                | RedisErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
}

fn redis_error(what: &str, e: RedisError) -> StoreError {
    if e.kind() == RedisErrorKind::InvalidClientConfig {
        // The URL asks for something this build cannot do (`#insecure` TLS, say).
        return StoreError::invalid(format!("{what}: {e}"));
    }
    if unavailable(&e) {
        StoreError::new(
            ErrorCode::Unavailable,
            format!("{what}: Redis is unavailable: {e}"),
        )
    } else {
        StoreError::new(ErrorCode::Io, format!("redis: {what}: {e}"))
    }
}

/// The URLs of `config`, parsed. A cluster's are TCP addresses with database 0 (the only one a
/// cluster has).
fn connection_infos(config: &RedisConfig) -> Result<Vec<ConnectionInfo>> {
    if config.urls.is_empty() {
        return Err(StoreError::invalid("redisUrl names no Redis node"));
    }
    if !config.cluster && config.urls.len() > 1 {
        return Err(StoreError::invalid(
            "several Redis URLs are the seed nodes of a Redis Cluster: set redisCluster",
        ));
    }
    let mut infos = Vec::with_capacity(config.urls.len());
    for url in &config.urls {
        let info = url.as_str().into_connection_info().map_err(|e| {
            StoreError::invalid(format!(
                "redisUrl {} is not a usable Redis URL: {e}",
                redact_url(url)
            ))
        })?;
        if config.cluster {
            if cluster::node_name(info.addr()).is_none() {
                return Err(StoreError::invalid(format!(
                    "redisUrl {}: a Redis Cluster is reached over TCP",
                    redact_url(url)
                )));
            }
            if info.redis_settings().db() != 0 {
                return Err(StoreError::invalid(format!(
                    "redisUrl {}: a Redis Cluster has database 0 only",
                    redact_url(url)
                )));
            }
        }
        infos.push(info);
    }
    Ok(infos)
}

/// For messages: the nodes, without credentials.
fn addresses(infos: &[ConnectionInfo]) -> String {
    let nodes: Vec<String> = infos.iter().map(|i| i.addr().to_string()).collect();
    nodes.join(", ")
}

fn check_wait(config: &RedisConfig) -> Result<Option<Wait>> {
    if config.wait_replicas == 0 {
        return Ok(None);
    }
    if config.wait_replicas > MAX_WAIT_REPLICAS {
        return Err(StoreError::invalid(format!(
            "redisWaitReplicas must be at most {MAX_WAIT_REPLICAS}, not {}",
            config.wait_replicas
        )));
    }
    if config.wait_timeout.is_zero() || config.wait_timeout > MAX_WAIT_TIMEOUT {
        return Err(StoreError::invalid(format!(
            "redisWaitTimeoutMs must be from 1 to {}, not {}",
            MAX_WAIT_TIMEOUT.as_millis(),
            config.wait_timeout.as_millis()
        )));
    }
    Ok(Some(Wait {
        replicas: config.wait_replicas,
        timeout: config.wait_timeout,
    }))
}

/// The same connection settings, speaking RESP3 (pub/sub messages arrive as pushes).
fn resp3_client(client: &Client) -> Result<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
        .map_err(|e| StoreError::invalid(format!("redisUrl: {e}")))
}
