//! The Redis backend: sessions shared by several store instances through one Redis (issue 5).
//!
//! The backend on its own, with the same semantics as the file backend ([`super::file`]) and the
//! journal ([`crate::journal`]); the store's side is [`super::redis_sessions`]. The merge rules stay
//! in Rust; Redis only stores bytes and orders writes.
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
//! `WATCH` state belongs to a connection, so transactions never run on the shared multiplexed
//! [`ConnectionManager`]: another task's `EXEC` would clear this one's `WATCH`, and a silent
//! reconnect between `WATCH` and `EXEC` would commit unguarded. They run on connections taken from a
//! small pool, each used by one transaction at a time and dropped on any error. Reads, `touch`,
//! `delete`, `SCAN` and `PUBLISH` go through the reconnecting [`ConnectionManager`].
//!
//! # Expiry
//!
//! Every write sets the TTL of all of a session's keys (`PEXPIRE`), and [`RedisBackend::touch`]
//! keeps a session in use alive. Redis removes expired sessions itself: no sweep.
//!
//! # Errors
//!
//! Redis unreachable, timing out, loading, or refusing credentials: [`ErrorCode::Io`] with a message
//! with the code `EUNAVAILABLE` (see [`is_unavailable`]); the store keeps its data dirty and
//! tries again. Other Redis errors: [`ErrorCode::Io`] with a message starting `redis:`. A bad URL
//! (or one asking for what this build lacks, such as `rediss://...#insecure`), prefix, TTL or stem:
//! [`ErrorCode::Invalid`].

mod tools;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, ErrorKind as RedisErrorKind, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, PushKind, RedisError, ServerErrorKind, Value,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::canonical;
use super::file::StoredSummary;
use crate::clock::wall_clock_millis;
use crate::error::{ErrorCode, Result, StoreError};
use crate::journal;
use crate::lock;
use crate::merge::{apply_patch, SessionPatch};
use crate::model::{check_id, from_json_bytes, validate_session, NarrativeSession};
use crate::paths::{is_file_stem, SessionKey};

/// The longest key prefix accepted, in bytes.
pub const MAX_PREFIX_BYTES: usize = 256;

/// How long a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command (or pipeline) may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts the manager makes per reconnect, after the first: few, so that a call
/// while Redis is down fails fast (the store keeps its data and tries again later).
const RECONNECT_RETRIES: usize = 1;
/// Idle transaction connections kept for reuse.
const MAX_IDLE_TX_CONNECTIONS: usize = 4;
/// Reads again when a session changes under a load that is moving bad values aside.
const QUARANTINE_ATTEMPTS: usize = 8;
/// Keys per `SCAN` step.
const SCAN_COUNT: usize = 512;
/// Events buffered for a slow subscriber before the pub/sub connection waits for it.
const EVENT_BUFFER: usize = 1024;
/// How often an idle subscription checks that its connection is alive.
const SUBSCRIPTION_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Delays between attempts to restore a lost subscription.
const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(2);

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
}

#[derive(Serialize, Deserialize)]
struct EventPayload {
    instance: String,
    version: u64,
}

/// The Redis backend. All methods are async and cancel-safe in the sense that a dropped call
/// leaves Redis consistent (a transaction either committed or did not).
pub struct RedisBackend {
    client: Client,
    manager: ConnectionManager,
    /// Connections for `WATCH`/`MULTI`/`EXEC`, each used by one transaction at a time.
    idle: Mutex<Vec<MultiplexedConnection>>,
    prefix: String,
    ttl_ms: i64,
    instance_id: String,
    /// For messages: where Redis is, without credentials.
    address: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

/// The keys of one session.
struct Keys {
    snap: String,
    log: String,
    ver: String,
    gen: String,
    mark: String,
}

impl Keys {
    fn all(&self) -> [&str; 5] {
        [&self.snap, &self.log, &self.ver, &self.gen, &self.mark]
    }
}

/// What a session's keys hold, as read in one go.
struct RawSession {
    snap: Value,
    log: Value,
    ver: Value,
    gen: Value,
    mark: Value,
}

/// A session's keys, parsed: what is valid, and what must be moved aside.
struct Parsed {
    loaded: Loaded,
    /// Whole keys to move aside: (key, reason).
    bad_keys: Vec<(String, String)>,
    /// Log elements to copy aside and remove from the log: (element, reason).
    bad_elements: Vec<(Vec<u8>, String)>,
}

impl Parsed {
    fn is_clean(&self) -> bool {
        self.bad_keys.is_empty() && self.bad_elements.is_empty()
    }
}

/// The values a transaction compares before it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    version: u64,
    generation: u64,
    log_len: u64,
    /// The snapshot's length; `u64::MAX` when the key is not a string. A snapshot replaced by hand
    /// (which moves neither counter) shows here, and is read (and moved aside) before any write.
    snapshot_bytes: u64,
}

impl Current {
    fn matches(&self, view: &RedisView) -> bool {
        self.version == view.version
            && self.generation == view.generation
            && self.log_len == view.log_len
            && self.snapshot_bytes == view.snapshot_bytes
    }
}

impl RedisBackend {
    /// Connects to `url` (`redis://[user:pass@]host:port/db`, or `rediss://` for TLS through rustls,
    /// checked against the system's root certificates; `#insecure` is not compiled in). Keys are named `<key_prefix>{<stem>}:...`; every
    /// write sets their time to live to `ttl`. `instance_id` tags this instance's pub/sub messages,
    /// so that it can drop its own.
    ///
    /// Redis unreachable: an `EUNAVAILABLE` error.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        ttl: Duration,
        instance_id: String,
    ) -> Result<RedisBackend> {
        check_prefix(key_prefix)?;
        check_id("instance id", &instance_id)?;
        let ttl_ms = ttl_millis(ttl)?;
        let info = url.into_connection_info().map_err(|e| {
            StoreError::invalid(format!(
                "redisUrl {} is not a usable Redis URL: {e}",
                redact_url(url)
            ))
        })?;
        let address = info.addr().to_string();
        let client = Client::open(info)
            .map_err(|e| StoreError::invalid(format!("redisUrl for {address}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let what = format!("cannot connect to Redis at {address}");
        let mut manager = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| redis_error(&what, e))?;
        ::redis::cmd("PING")
            .query_async::<()>(&mut manager)
            .await
            .map_err(|e| redis_error(&what, e))?;
        Ok(RedisBackend {
            client,
            manager,
            idle: Mutex::new(Vec::new()),
            prefix: key_prefix.to_string(),
            ttl_ms,
            instance_id,
            address,
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys' time to live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms as u64)
    }

    /// The name of one of a session's keys: `kind` is `snap`, `log`, `ver`, `gen` or `mark`. For tests and
    /// operators; the backend checks `stem` elsewhere.
    pub fn key_name(&self, stem: &str, kind: &str) -> String {
        format!("{}{{{stem}}}:{kind}", self.prefix)
    }

    /// The pub/sub channel of a session.
    pub fn channel_name(&self, stem: &str) -> String {
        self.key_name(stem, "events")
    }

    /// A session's snapshot, log, version, generation and mark, read in one transaction.
    async fn read_raw(&self, keys: &Keys) -> Result<RawSession> {
        let raw = self
            .with_retry("cannot read a session from", || {
                let mut manager = self.manager.clone();
                let pipe = read_pipeline(keys, true);
                async move { pipe.query_async::<Vec<Value>>(&mut manager).await }
            })
            .await?;
        raw_from(raw)
    }

    fn keys(&self, stem: &str) -> Result<Keys> {
        if !is_file_stem(stem) {
            return Err(StoreError::invalid(format!(
                "{stem:?} is not a session stem (64 lowercase hex digits)"
            )));
        }
        Ok(Keys {
            snap: self.key_name(stem, "snap"),
            log: self.key_name(stem, "log"),
            ver: self.key_name(stem, "ver"),
            gen: self.key_name(stem, "gen"),
            mark: self.key_name(stem, "mark"),
        })
    }

    /// Reads a session: snapshot, whole log and version in one transaction. A snapshot that does
    /// not parse, fails the model's checks or holds other ids than `key`'s, and log elements that
    /// are not one complete journal frame, are moved aside (never deleted) and reported in
    /// `invalid`; the rest loads as if they were absent.
    pub async fn load(&self, stem: &str, key: &SessionKey) -> Result<Loaded> {
        let keys = self.keys(stem)?;
        check_stem_of(stem, key)?;
        let mut loaded = self
            .load_from(&keys, self.read_raw(&keys).await?, key)
            .await?;
        loaded.raw = None;
        Ok(loaded)
    }

    /// [`Self::load`], except that a snapshot the store wrote (its `mark` matches) with an empty
    /// log comes back as its text, unparsed (`Loaded::text`): a client restoring a large session
    /// then waits for a read and a checksum, not for a parse. An unmarked snapshot with an empty
    /// log comes back parsed, with its bytes (`Loaded::raw`).
    pub async fn load_text(&self, stem: &str, key: &SessionKey) -> Result<Loaded> {
        let keys = self.keys(stem)?;
        check_stem_of(stem, key)?;
        let mut raw = self.read_raw(&keys).await?;
        if let Some(loaded) = own_text(stem, &mut raw) {
            return Ok(loaded);
        }
        let mut loaded = self.load_from(&keys, raw, key).await?;
        if !loaded.invalid.is_empty() || !loaded.patches.is_empty() {
            loaded.raw = None;
        }
        Ok(loaded)
    }

    /// Marks the stored snapshot as the store's own write when it holds `bytes` (best effort: a
    /// snapshot replaced meanwhile does not match the mark, and is read the long way).
    pub async fn mark_canonical(&self, stem: &str, bytes: &[u8]) {
        let Ok(keys) = self.keys(stem) else {
            return;
        };
        let mut manager = self.manager.clone();
        let _ = ::redis::cmd("SET")
            .arg(&keys.mark)
            .arg(canonical::mark_for(stem, bytes))
            .arg("PX")
            .arg(self.ttl_ms)
            .query_async::<()>(&mut manager)
            .await;
    }

    /// [`Self::load`] from what was read: moves bad values aside when there are any.
    async fn load_from(&self, keys: &Keys, raw: RawSession, key: &SessionKey) -> Result<Loaded> {
        let parsed = parse_session(keys, raw, key);
        if parsed.is_clean() {
            return Ok(parsed.loaded);
        }
        for _ in 0..QUARANTINE_ATTEMPTS {
            if let Some(loaded) = self.quarantine(keys, key).await? {
                return Ok(loaded);
            }
        }
        Err(StoreError::new(
            ErrorCode::Io,
            format!(
                "redis: {} kept changing while its bad values were being moved aside",
                keys.snap
            ),
        ))
    }

    /// Under `WATCH`, reads the session again and moves what is not valid aside, in one
    /// transaction that also bumps the version and the generation (so every other instance reads
    /// the session again). None when the session changed meanwhile: read again.
    async fn quarantine(&self, keys: &Keys, key: &SessionKey) -> Result<Option<Loaded>> {
        let what = "cannot move bad values aside in";
        let mut tx = self.begin_raw(keys, what).await?;
        let raw = match read_pipeline(keys, false)
            .query_async::<Vec<Value>>(&mut tx.conn)
            .await
        {
            Ok(values) => raw_from(values)?,
            Err(e) => return Err(redis_error(&format!("{what} {}", keys.snap), e)),
        };
        let mut parsed = parse_session(keys, raw, key);
        if parsed.is_clean() {
            // Someone else moved them aside (or fixed them) first.
            self.end(tx, true).await;
            return Ok(Some(parsed.loaded));
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut invalid = Vec::new();
        for (from, reason) in &parsed.bad_keys {
            let to = match self.free_aside_name(&mut tx.conn, from).await {
                Ok(to) => to,
                Err(e) => return Err(redis_error(&format!("{what} {from}"), e)),
            };
            pipe.cmd("RENAME").arg(from).arg(&to).ignore();
            pipe.cmd("PERSIST").arg(&to).ignore();
            invalid.push(Quarantined {
                from: from.clone(),
                to,
                reason: reason.clone(),
            });
        }
        if !parsed.bad_elements.is_empty() {
            let to = match self.free_aside_name(&mut tx.conn, &keys.log).await {
                Ok(to) => to,
                Err(e) => return Err(redis_error(&format!("{what} {}", keys.log), e)),
            };
            let mut push = ::redis::cmd("RPUSH");
            push.arg(&to);
            for (element, _) in &parsed.bad_elements {
                push.arg(element.as_slice());
            }
            pipe.add_command(push).ignore();
            pipe.cmd("PERSIST").arg(&to).ignore();
            let mut removed: Vec<&[u8]> = Vec::new();
            for (element, reason) in &parsed.bad_elements {
                if !removed.contains(&element.as_slice()) {
                    removed.push(element);
                    pipe.cmd("LREM")
                        .arg(&keys.log)
                        .arg(0)
                        .arg(element.as_slice())
                        .ignore();
                }
                invalid.push(Quarantined {
                    from: keys.log.clone(),
                    to: to.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let generation = new_generation();
        pipe.cmd("INCR").arg(&keys.ver);
        pipe.cmd("SET").arg(&keys.gen).arg(generation).ignore();
        self.expire_all(&mut pipe, keys);
        match pipe.query_async::<Option<(u64,)>>(&mut tx.conn).await {
            Ok(Some((version,))) => {
                self.end(tx, false).await;
                let view = &mut parsed.loaded.view;
                view.version = version;
                view.generation = generation;
                parsed.loaded.invalid = invalid;
                Ok(Some(parsed.loaded))
            }
            Ok(None) => {
                self.end(tx, false).await;
                Ok(None)
            }
            Err(e) => Err(redis_error(&format!("{what} {}", keys.snap), e)),
        }
    }

    /// A key name for a bad value of `key` that nothing holds yet: `<key>:corrupt:<ms>`, with
    /// `.<n>` added if that is taken. Watched, so that a concurrent quarantine choosing the same
    /// name makes this transaction fail rather than overwrite it.
    async fn free_aside_name(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
    ) -> std::result::Result<String, RedisError> {
        let base = format!("{key}:corrupt:{}", wall_clock_millis());
        let mut n = 0;
        loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let (exists,): (bool,) = ::redis::pipe()
                .cmd("WATCH")
                .arg(&name)
                .ignore()
                .cmd("EXISTS")
                .arg(&name)
                .query_async(conn)
                .await?;
            if !exists {
                return Ok(name);
            }
            n += 1;
        }
    }

    /// What changed since `known`: nothing, records appended to the log (read from
    /// `known.log_len` on), or everything (snapshot rewritten, session deleted or expired, bad
    /// values found): one round trip when nothing or only the log changed.
    pub async fn read_changes(
        &self,
        stem: &str,
        key: &SessionKey,
        known: RedisView,
    ) -> Result<RedisChange> {
        let keys = self.keys(stem)?;
        check_stem_of(stem, key)?;
        let start = known.log_len.min(i64::MAX as u64) as i64;
        let read = self
            .with_retry("cannot read the changes of", || {
                let mut manager = self.manager.clone();
                let mut pipe = ::redis::pipe();
                pipe.atomic()
                    .ignore_errors()
                    .cmd("GET")
                    .arg(&keys.ver)
                    .cmd("GET")
                    .arg(&keys.gen)
                    .cmd("LLEN")
                    .arg(&keys.log)
                    .cmd("LRANGE")
                    .arg(&keys.log)
                    .arg(start)
                    .arg(-1)
                    .cmd("STRLEN")
                    .arg(&keys.snap);
                async move {
                    pipe.query_async::<(Value, Value, Value, Value, Value)>(&mut manager)
                        .await
                }
            })
            .await?;
        let (ver, gen, log_len, tail, snapshot_bytes) = read;
        let (Some(version), Some(generation), Value::Int(log_len), Value::Array(tail)) =
            (counter(&ver), counter(&gen), log_len, tail)
        else {
            // A key of the wrong type or a counter that is not one: load moves it aside.
            return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?)));
        };
        let log_len = log_len.max(0) as u64;
        let snapshot_replaced = int_value(&snapshot_bytes) != Some(known.snapshot_bytes);
        if generation != known.generation
            || version < known.version
            || log_len < known.log_len
            || snapshot_replaced
        {
            return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?)));
        }
        if version == known.version && log_len == known.log_len {
            return Ok(RedisChange::Unchanged);
        }
        let mut patches = Vec::with_capacity(tail.len());
        let mut tail_bytes = 0;
        for element in tail {
            match element {
                Value::BulkString(bytes) => match decode_frame(&bytes) {
                    Ok(patch) => {
                        tail_bytes += bytes.len() as u64;
                        patches.push(patch);
                    }
                    Err(_) => return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?))),
                },
                _ => return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?))),
            }
        }
        let view = RedisView {
            version,
            log_len: known.log_len + patches.len() as u64,
            generation,
            snapshot_bytes: known.snapshot_bytes,
            log_bytes: known.log_bytes + tail_bytes,
        };
        Ok(RedisChange::Tail(patches, view))
    }

    /// Appends journal frames (each one complete [`journal::encode`] frame) to the session's log,
    /// if the session is still as `expect` saw it; sets the TTL of every key. `Ok(None)`: someone
    /// else wrote first (or a key was touched meanwhile): read the changes, merge them, try again.
    /// Costs the records' size, not the session's.
    pub async fn append(
        &self,
        stem: &str,
        records: &[Vec<u8>],
        expect: RedisView,
    ) -> Result<Option<RedisView>> {
        let keys = self.keys(stem)?;
        for record in records {
            check_frame(record)?;
        }
        if records.is_empty() {
            return Ok(Some(expect));
        }
        let what = "cannot append to";
        let (mut tx, current) = self.begin(&keys, what).await?;
        if !current.matches(&expect) {
            self.end(tx, true).await;
            return Ok(None);
        }
        let mut push = ::redis::cmd("RPUSH");
        push.arg(&keys.log);
        for record in records {
            push.arg(record.as_slice());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic().add_command(push).cmd("INCR").arg(&keys.ver);
        self.expire_all(&mut pipe, &keys);
        match pipe.query_async::<Option<(u64, u64)>>(&mut tx.conn).await {
            Ok(Some((log_len, version))) => {
                self.end(tx, false).await;
                let added: u64 = records.iter().map(|r| r.len() as u64).sum();
                Ok(Some(RedisView {
                    version,
                    log_len,
                    generation: expect.generation,
                    snapshot_bytes: expect.snapshot_bytes,
                    log_bytes: expect.log_bytes + added,
                }))
            }
            Ok(None) => {
                self.end(tx, false).await;
                Ok(None)
            }
            Err(e) => Err(redis_error(&format!("{what} {}", keys.log), e)),
        }
    }

    /// Replaces the snapshot with `bytes` (a whole session as JSON) and drops the log it now
    /// holds, if the session is still as `expect` saw it: every record in the log must be in
    /// `bytes`. A new generation tells other instances to read everything again. `Ok(None)`:
    /// someone else wrote first: read the changes, merge them, try again.
    /// The snapshot carries no mark (one left from before is removed): a load parses it.
    pub async fn write_snapshot(
        &self,
        stem: &str,
        bytes: &[u8],
        expect: RedisView,
    ) -> Result<Option<RedisView>> {
        self.put_snapshot(stem, bytes, expect, false).await
    }

    /// [`Self::write_snapshot`] of what the store serialised from a checked session whose id is
    /// the one its key gives: the snapshot is marked as the store's own (see [`Self::load_text`]).
    pub async fn write_canonical(
        &self,
        stem: &str,
        bytes: &[u8],
        expect: RedisView,
    ) -> Result<Option<RedisView>> {
        self.put_snapshot(stem, bytes, expect, true).await
    }

    async fn put_snapshot(
        &self,
        stem: &str,
        bytes: &[u8],
        expect: RedisView,
        mark: bool,
    ) -> Result<Option<RedisView>> {
        let keys = self.keys(stem)?;
        let what = "cannot write the snapshot of";
        let (mut tx, current) = self.begin(&keys, what).await?;
        if !current.matches(&expect) {
            self.end(tx, true).await;
            return Ok(None);
        }
        let generation = new_generation();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&keys.snap)
            .arg(bytes)
            .ignore()
            .cmd("DEL")
            .arg(&keys.log)
            .ignore()
            .cmd("INCR")
            .arg(&keys.ver)
            .cmd("SET")
            .arg(&keys.gen)
            .arg(generation)
            .ignore();
        if mark {
            pipe.cmd("SET")
                .arg(&keys.mark)
                .arg(canonical::mark_for(stem, bytes))
                .ignore();
        } else {
            pipe.cmd("DEL").arg(&keys.mark).ignore();
        }
        self.expire_all(&mut pipe, &keys);
        match pipe.query_async::<Option<(u64,)>>(&mut tx.conn).await {
            Ok(Some((version,))) => {
                self.end(tx, false).await;
                Ok(Some(RedisView {
                    version,
                    log_len: 0,
                    generation,
                    snapshot_bytes: bytes.len() as u64,
                    log_bytes: 0,
                }))
            }
            Ok(None) => {
                self.end(tx, false).await;
                Ok(None)
            }
            Err(e) => Err(redis_error(&format!("{what} {}", keys.snap), e)),
        }
    }

    /// Keeps a session alive: sets the TTL of its keys again. Returns whether it exists. (This
    /// counts as a change to a watched key: a concurrent write returns `Ok(None)` and retries.)
    pub async fn touch(&self, stem: &str) -> Result<bool> {
        let keys = self.keys(stem)?;
        let renewed: Vec<bool> = self
            .with_retry("cannot renew the expiry of", || {
                let mut manager = self.manager.clone();
                let mut pipe = ::redis::pipe();
                for key in keys.all() {
                    pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms);
                }
                async move { pipe.query_async(&mut manager).await }
            })
            .await?;
        Ok(renewed.into_iter().any(|r| r))
    }

    /// Removes a session's keys (values moved aside are kept). Returns whether it existed.
    pub async fn delete(&self, stem: &str) -> Result<bool> {
        let keys = self.keys(stem)?;
        let removed: u64 = self
            .with_retry("cannot delete", || {
                let mut manager = self.manager.clone();
                let mut del = ::redis::cmd("DEL");
                for key in keys.all() {
                    del.arg(key);
                }
                async move { del.query_async(&mut manager).await }
            })
            .await?;
        Ok(removed > 0)
    }

    /// The stems of every stored session (those with a snapshot), found with `SCAN`, never `KEYS`.
    /// Sorted. (On Redis Cluster this scans the node the manager is connected to only.)
    pub async fn stems(&self) -> Result<Vec<String>> {
        let pattern = format!("{}{{*}}:snap", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        let mut stems = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .with_retry("cannot list the sessions in", || {
                    let mut manager = self.manager.clone();
                    let mut scan = ::redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT);
                    async move { scan.query_async(&mut manager).await }
                })
                .await?;
            for key in keys {
                if let Some(stem) = self.stem_of(&key, ":snap") {
                    stems.push(stem);
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice.
        stems.sort();
        stems.dedup();
        Ok(stems)
    }

    /// The stem in `<prefix>{<stem>}<suffix>`, if `name` is one of this backend's names.
    fn stem_of(&self, name: &str, suffix: &str) -> Option<String> {
        let stem = name
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix(suffix)?
            .strip_suffix('}')?;
        is_file_stem(stem).then(|| stem.to_string())
    }

    /// The summary fields of a stored session and its size (snapshot and log), or None when it
    /// has no valid snapshot. Reads without moving anything aside: bad log elements are skipped.
    pub async fn summary(&self, stem: &str) -> Result<Option<(StoredSummary, u64)>> {
        let keys = self.keys(stem)?;
        let raw = self.read_raw(&keys).await?;
        let Value::BulkString(snapshot) = raw.snap else {
            return Ok(None);
        };
        let Ok(mut session) = from_json_bytes::<NarrativeSession>(&snapshot) else {
            return Ok(None);
        };
        let mut size = snapshot.len() as u64;
        if let Value::Array(elements) = raw.log {
            for element in elements {
                if let Value::BulkString(bytes) = element {
                    size += bytes.len() as u64;
                    if let Ok(patch) = decode_frame(&bytes) {
                        if apply_patch(&mut session, &patch).is_err() {
                            return Ok(None);
                        }
                    }
                }
            }
        }
        Ok(Some((StoredSummary::of(&session), size)))
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
        self.with_retry("cannot publish on", || {
            let mut manager = self.manager.clone();
            let mut publish = ::redis::cmd("PUBLISH");
            publish.arg(&channel).arg(&payload);
            async move { publish.query_async(&mut manager).await }
        })
        .await
    }

    /// Subscribes to every session's channel under this prefix (`PSUBSCRIBE`) on a connection of
    /// its own (RESP3, so Redis 6 or later), and reports other instances' writes; this instance's
    /// own messages are dropped. The subscription is live when this returns. If its connection is
    /// lost, it reconnects by itself, then sends [`RedisEvent::Resync`]. It ends when the receiver
    /// is dropped.
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<RedisEvent>> {
        let subscriber = Subscriber {
            client: resp3_client(&self.client)?,
            pattern: format!("{}{{*}}:events", glob_escape(&self.prefix)),
            prefix: self.prefix.clone(),
            instance_id: self.instance_id.clone(),
        };
        let connection = subscriber.open().await.map_err(|e| {
            redis_error(&format!("cannot subscribe to Redis at {}", self.address), e)
        })?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(subscriber.run(connection, events));
        Ok(receiver)
    }

    /// Sets every key's TTL, in a transaction being built.
    fn expire_all(&self, pipe: &mut Pipeline, keys: &Keys) {
        for key in keys.all() {
            pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms).ignore();
        }
    }

    /// Runs an idempotent call through the connection manager, once more if it failed for want of
    /// a connection: after Redis comes back, the first call only finds the manager's old, failed
    /// connection attempt (and starts a new one).
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

    /// A connection for one transaction: an idle one, or a new one.
    async fn take_connection(
        &self,
    ) -> std::result::Result<(MultiplexedConnection, bool), RedisError> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok((conn, true));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((conn, false))
    }

    /// Starts a transaction: `WATCH` the session's version, generation and log on a connection of
    /// its own. An idle connection that turns out dead (Redis restarted since) is replaced once.
    async fn begin_raw(&self, keys: &Keys, what: &str) -> Result<Tx> {
        let mut retried = false;
        loop {
            let (mut conn, reused) = self
                .take_connection()
                .await
                .map_err(|e| redis_error(&format!("{what} {}", keys.snap), e))?;
            let watched = ::redis::cmd("WATCH")
                .arg(&keys.snap)
                .arg(&keys.log)
                .arg(&keys.ver)
                .arg(&keys.gen)
                .query_async::<()>(&mut conn)
                .await;
            match watched {
                Ok(()) => return Ok(Tx { conn }),
                Err(e) if reused && !retried && unavailable(&e) => retried = true,
                Err(e) => return Err(redis_error(&format!("{what} {}", keys.snap), e)),
            }
        }
    }

    /// [`Self::begin_raw`], then reads what the transaction compares.
    async fn begin(&self, keys: &Keys, what: &str) -> Result<(Tx, Current)> {
        let mut tx = self.begin_raw(keys, what).await?;
        let read = ::redis::pipe()
            .cmd("GET")
            .arg(&keys.ver)
            .cmd("GET")
            .arg(&keys.gen)
            .cmd("LLEN")
            .arg(&keys.log)
            .cmd("STRLEN")
            .arg(&keys.snap)
            .ignore_errors()
            .query_async::<(Option<u64>, Option<u64>, u64, Value)>(&mut tx.conn)
            .await;
        match read {
            Ok((version, generation, log_len, snapshot_bytes)) => Ok((
                tx,
                Current {
                    version: version.unwrap_or(0),
                    generation: generation.unwrap_or(0),
                    log_len,
                    snapshot_bytes: int_value(&snapshot_bytes).unwrap_or(u64::MAX),
                },
            )),
            Err(e) => Err(redis_error(&format!("{what} {}", keys.snap), e)),
        }
    }

    /// Ends a transaction and keeps its connection for the next one. `unwatch` when it ended
    /// without `EXEC` (which unwatches by itself).
    async fn end(&self, mut tx: Tx, unwatch: bool) {
        if unwatch
            && ::redis::cmd("UNWATCH")
                .query_async::<()>(&mut tx.conn)
                .await
                .is_err()
        {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_TX_CONNECTIONS {
            idle.push(tx.conn);
        }
    }
}

/// A transaction's connection. Dropped (not returned to the pool) on any error, so a `WATCH` can
/// never outlive the transaction it guards.
struct Tx {
    conn: MultiplexedConnection,
}

/// The pub/sub side: a RESP3 connection of its own with the pushed messages sent to a channel.
struct Subscriber {
    client: Client,
    pattern: String,
    prefix: String,
    instance_id: String,
}

/// A live subscription: the connection and its pushed messages.
struct Subscription {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Subscriber {
    async fn open(&self) -> std::result::Result<Subscription, RedisError> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(sender);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        conn.psubscribe(&self.pattern).await?;
        Ok(Subscription { conn, pushes })
    }

    /// Forwards messages until the receiver goes; restores the subscription whenever it is lost.
    async fn run(self, mut live: Subscription, events: mpsc::Sender<RedisEvent>) {
        loop {
            if !self.forward(&mut live, &events).await {
                return;
            }
            let Some(restored) = self.reopen(&events).await else {
                return;
            };
            live = restored;
            if events.send(RedisEvent::Resync).await.is_err() {
                return;
            }
        }
    }

    /// Forwards messages while the connection lives. False when the receiver is gone.
    async fn forward(&self, live: &mut Subscription, events: &mpsc::Sender<RedisEvent>) -> bool {
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING_INTERVAL);
        ping.reset();
        loop {
            tokio::select! {
                push = live.pushes.recv() => {
                    let Some(push) = push else { return true };
                    if push.kind == PushKind::Disconnection {
                        return true;
                    }
                    if let Some(event) = self.event(push) {
                        if events.send(event).await.is_err() {
                            return false;
                        }
                    }
                }
                _ = ping.tick() => {
                    // A connection that died without closing (a lost network) shows here.
                    if ::redis::cmd("PING").query_async::<()>(&mut live.conn).await.is_err() {
                        return true;
                    }
                }
                _ = events.closed() => return false,
            }
        }
    }

    /// Reconnects and subscribes again, backing off. None when the receiver is gone.
    async fn reopen(&self, events: &mpsc::Sender<RedisEvent>) -> Option<Subscription> {
        let mut delay = RESUBSCRIBE_MIN_DELAY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = events.closed() => return None,
            }
            if let Ok(live) = self.open().await {
                return Some(live);
            }
            delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
        }
    }

    /// The event a pushed message stands for: None for confirmations, foreign channels, bad
    /// payloads and this instance's own messages.
    fn event(&self, push: PushInfo) -> Option<RedisEvent> {
        let message = ::redis::Msg::from_push_info(push)?;
        let stem = message
            .get_channel_name()
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix(":events")?
            .strip_suffix('}')?;
        if !is_file_stem(stem) {
            return None;
        }
        let payload: EventPayload = serde_json::from_slice(message.get_payload_bytes()).ok()?;
        if payload.instance == self.instance_id {
            return None;
        }
        Some(RedisEvent::Changed {
            stem: stem.to_string(),
            instance_id: payload.instance,
            version: payload.version,
        })
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
                | RedisErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// A non-negative integer reply, or None for anything else (an error reply included).
fn int_value(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
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

/// One pipeline reading a whole session; `atomic` wraps it in `MULTI`/`EXEC` (not when the
/// connection has a `WATCH` running: its `EXEC` checks consistency instead). Errors (a key of
/// the wrong type) come back as values.
fn read_pipeline(keys: &Keys, atomic: bool) -> Pipeline {
    let mut pipe = ::redis::pipe();
    if atomic {
        pipe.atomic();
    }
    pipe.ignore_errors()
        .cmd("GET")
        .arg(&keys.snap)
        .cmd("LRANGE")
        .arg(&keys.log)
        .arg(0)
        .arg(-1)
        .cmd("GET")
        .arg(&keys.ver)
        .cmd("GET")
        .arg(&keys.gen)
        .cmd("GET")
        .arg(&keys.mark);
    pipe
}

fn raw_from(values: Vec<Value>) -> Result<RawSession> {
    let [snap, log, ver, gen, mark]: [Value; 5] = values.try_into().map_err(|v: Vec<Value>| {
        StoreError::new(
            ErrorCode::Io,
            format!("redis: a session read returned {} replies, not 5", v.len()),
        )
    })?;
    Ok(RawSession {
        snap,
        log,
        ver,
        gen,
        mark,
    })
}

/// A counter's value: 0 when missing, None when it is not a counter.
fn counter(value: &Value) -> Option<u64> {
    match value {
        Value::Nil => Some(0),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::ServerError(e) => format!("not readable: {e}"),
        other => format!("an unexpected reply: {other:?}"),
    }
}

fn parse_session(keys: &Keys, raw: RawSession, key: &SessionKey) -> Parsed {
    let mut parsed = Parsed {
        loaded: Loaded::default(),
        bad_keys: Vec::new(),
        bad_elements: Vec::new(),
    };
    match raw.snap {
        Value::Nil => {}
        Value::BulkString(bytes) => match parse_snapshot(&bytes, key) {
            Ok(session) => {
                parsed.loaded.snapshot = Some(session);
                parsed.loaded.view.snapshot_bytes = bytes.len() as u64;
                parsed.loaded.raw = Some(bytes);
            }
            Err(reason) => parsed.bad_keys.push((keys.snap.clone(), reason)),
        },
        other => parsed.bad_keys.push((keys.snap.clone(), describe(&other))),
    }
    match raw.log {
        Value::Array(elements) => {
            for element in elements {
                match element {
                    Value::BulkString(bytes) => match decode_frame(&bytes) {
                        Ok(patch) => {
                            parsed.loaded.patches.push(patch);
                            parsed.loaded.view.log_len += 1;
                            parsed.loaded.view.log_bytes += bytes.len() as u64;
                        }
                        Err(reason) => parsed.bad_elements.push((bytes, reason)),
                    },
                    other => {
                        // Not possible in a list; keep the log whole and let the operator look.
                        parsed.bad_keys.push((
                            keys.log.clone(),
                            format!("an element is {}", describe(&other)),
                        ));
                        break;
                    }
                }
            }
        }
        Value::Nil => {}
        other => parsed.bad_keys.push((keys.log.clone(), describe(&other))),
    }
    if parsed.bad_keys.iter().any(|(k, _)| k == &keys.log) {
        // The whole log goes aside: nothing in it counts.
        parsed.loaded.patches.clear();
        parsed.bad_elements.clear();
        parsed.loaded.view.log_len = 0;
        parsed.loaded.view.log_bytes = 0;
    }
    for (name, value, slot) in [
        (&keys.ver, &raw.ver, &mut parsed.loaded.view.version),
        (&keys.gen, &raw.gen, &mut parsed.loaded.view.generation),
    ] {
        match counter(value) {
            Some(n) => *slot = n,
            None => parsed
                .bad_keys
                .push((name.clone(), format!("not a counter: {}", describe(value)))),
        }
    }
    parsed
}

/// A snapshot is accepted only if it parses, passes the model's checks and holds `key`'s ids.
fn parse_snapshot(bytes: &[u8], key: &SessionKey) -> std::result::Result<NarrativeSession, String> {
    let session: NarrativeSession =
        from_json_bytes(bytes).map_err(|e| format!("not a session: {e}"))?;
    validate_session(&session).map_err(|e| format!("not a valid session: {}", e.message))?;
    if session.user_id != key.user_id || session.workspace_id != key.workspace_id {
        return Err("the session of another user or workspace".to_string());
    }
    Ok(session)
}

/// The session as its snapshot's text, taken out of `raw`, when the store wrote that snapshot
/// (the mark matches it), nothing is in the log and the counters are counters.
fn own_text(stem: &str, raw: &mut RawSession) -> Option<Loaded> {
    let log_empty = match &raw.log {
        Value::Nil => true,
        Value::Array(elements) => elements.is_empty(),
        _ => false,
    };
    let (Value::BulkString(snapshot), Value::BulkString(mark), true) =
        (&raw.snap, &raw.mark, log_empty)
    else {
        return None;
    };
    if mark.as_slice() != canonical::mark_for(stem, snapshot).as_bytes() {
        return None;
    }
    let (version, generation) = (counter(&raw.ver)?, counter(&raw.gen)?);
    let Value::BulkString(bytes) = std::mem::replace(&mut raw.snap, Value::Nil) else {
        return None;
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(not_text) => {
            raw.snap = Value::BulkString(not_text.into_bytes());
            return None;
        }
    };
    Some(Loaded {
        view: RedisView {
            version,
            generation,
            snapshot_bytes: text.len() as u64,
            ..RedisView::default()
        },
        text: Some(text),
        ..Loaded::default()
    })
}

/// One log element: exactly one complete journal frame.
fn decode_frame(bytes: &[u8]) -> std::result::Result<SessionPatch, String> {
    let mut decoded = journal::decode(bytes);
    if decoded.patches.len() == 1 && decoded.records[0] == (0..bytes.len()) {
        Ok(decoded.patches.remove(0))
    } else {
        Err("not one complete journal record".to_string())
    }
}

/// Refuses what is not one frame as [`journal::encode`] makes it (a bug in the caller).
fn check_frame(record: &[u8]) -> Result<()> {
    let len = record
        .get(..4)
        .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
    if len.is_some_and(|len| len + 8 == record.len()) {
        Ok(())
    } else {
        Err(StoreError::internal(
            "a log record must be one journal frame",
        ))
    }
}

fn check_stem_of(stem: &str, key: &SessionKey) -> Result<()> {
    if key.file_stem() == stem {
        Ok(())
    } else {
        Err(StoreError::internal(format!(
            "stem {stem} is not the stem of the session key"
        )))
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.contains(['{', '}']) {
        return Err(StoreError::invalid(format!(
            "keyPrefix {prefix:?} must not contain braces: they make the Redis Cluster hash tag"
        )));
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(StoreError::invalid(format!(
            "keyPrefix is {} bytes long; the limit is {MAX_PREFIX_BYTES}",
            prefix.len()
        )));
    }
    Ok(())
}

fn ttl_millis(ttl: Duration) -> Result<i64> {
    let ms = ttl.as_millis();
    if ms == 0 || ms > i64::MAX as u128 {
        return Err(StoreError::invalid(format!(
            "the TTL must be at least 1 ms, not {ttl:?}"
        )));
    }
    Ok(ms as i64)
}

/// `url` with any password (or user) replaced, for messages.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

/// Escapes Redis glob characters, so a prefix matches only itself in `SCAN` and `PSUBSCRIBE`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

/// A generation token: non-zero, and unlikely to repeat across instances and restarts.
fn new_generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // Kept below 2^53 so that it survives a trip through JavaScript numbers too.
    (hasher.finish() >> 11).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:p%40ss@h/1?x=y"),
            "rediss://***@h/1?x=y"
        );
        assert_eq!(redact_url("redis://host:1/0"), "redis://host:1/0");
    }

    #[test]
    fn prefixes_are_escaped_for_globs() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("mia:ns:"), "mia:ns:");
    }

    #[test]
    fn braces_in_a_prefix_are_refused() {
        assert!(check_prefix("mia:{x}:").is_err());
        assert!(check_prefix("mia:ns:").is_ok());
        assert!(check_prefix("").is_ok());
    }

    #[test]
    fn counters_parse_or_are_refused() {
        assert_eq!(counter(&Value::Nil), Some(0));
        assert_eq!(counter(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(counter(&Value::BulkString(b"x".to_vec())), None);
    }

    #[test]
    fn generations_are_nonzero_and_fit_javascript_numbers() {
        for _ in 0..100 {
            let g = new_generation();
            assert!(g > 0 && g < (1 << 53));
        }
    }
}
