//! The Redis backend's two guards, each tested deterministically:
//!
//! - **The optimistic check.** Every write is `WATCH`, read, then `MULTI` ... `EXEC`, and commits
//!   only if nobody wrote the session between the read and the `EXEC`. Here another writer always
//!   writes exactly there: the backend under test talks to Redis through a proxy that holds its
//!   transaction before the `EXEC` until the other write is done (`support/redis_proxy.rs`), so
//!   nothing depends on timing.
//! - **The quarantine.** A value that is not valid is moved aside to a key that never expires,
//!   never deleted, and the store goes on with what is valid.
//!
//! Needs `redis-server` (`.ci/run` installs it); each test starts its own on a free port.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mia_narrative_session::merge::{apply_patch, normalize};
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::redis::{RedisBackend, RedisConfig, RedisView};
use mia_narrative_session::store::{BackendChoice, MergeMode, SessionStore, StoreOptions};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use support::records::{entry_ids, entry_record, new_session};
use support::redis_proxy::{Gate, HoldingProxy, RedisServer, HOLD_WITHIN};

const PREFIX: &str = "guards:";
const USER: &str = "alice";
const WORKSPACE: &str = "/home/alice/proj";
const DURABLE: MergeMode = MergeMode {
    with_session: false,
    durable: true,
};

fn key() -> SessionKey {
    SessionKey::new(USER, WORKSPACE).unwrap()
}

async fn backend(url: &str, instance: &str) -> RedisBackend {
    RedisBackend::connect(url, PREFIX, Duration::from_secs(3600), instance.into())
        .await
        .unwrap()
}

async fn raw_connection(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The ids of the conversation entries in what Redis holds for the session: snapshot and log.
async fn stored_entries(redis: &RedisServer) -> Vec<String> {
    let checker = backend(&redis.url(), "checker").await;
    let key = key();
    let loaded = checker.load(&key.file_stem(), &key).await.unwrap();
    assert!(loaded.invalid.is_empty(), "{:?}", loaded.invalid);
    let mut session = loaded
        .snapshot
        .map(|s| normalize(&s).unwrap())
        .unwrap_or_else(|| new_session(&key));
    for patch in &loaded.patches {
        apply_patch(&mut session, patch).unwrap();
    }
    let mut ids = entry_ids(&session);
    ids.sort();
    ids
}

/// Waits (off the runtime's threads) until a transaction is held at the proxy.
async fn held(gate: &Arc<Gate>) {
    let gate = gate.clone();
    let reached = tokio::task::spawn_blocking(move || gate.wait_held(HOLD_WITHIN))
        .await
        .unwrap();
    assert!(reached, "no write transaction reached the proxy's hold");
}

/// A session created by `b` (straight to Redis) and loaded by `a` (through the proxy): the
/// views each has of it.
async fn shared_session(
    a: &RedisBackend,
    b: &RedisBackend,
) -> (NarrativeSession, RedisView, RedisView) {
    let key = key();
    let stem = key.file_stem();
    let session = new_session(&key);
    let bytes = serde_json::to_vec(&session).unwrap();
    let b_view = b
        .write_snapshot(&stem, &bytes, RedisView::default())
        .await
        .unwrap()
        .expect("nobody else wrote");
    let a_view = a.load(&stem, &key).await.unwrap().view;
    assert_eq!(a_view, b_view);
    (session, a_view, b_view)
}

// ----- the optimistic check -----

/// An append whose session changed between its read and its `EXEC` must not commit: it would
/// tell its store that it has seen a log it has not, and the store's next snapshot would drop
/// what the other writer added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_does_not_commit_over_a_write_made_between_its_read_and_its_exec() {
    let redis = RedisServer::start();
    let proxy = HoldingProxy::start(redis.port);
    let a = Arc::new(backend(&proxy.url(), "a").await);
    let b = backend(&redis.url(), "b").await;
    let (session, a_view, b_view) = shared_session(&a, &b).await;
    let stem = key().file_stem();
    let (_, from_a) = entry_record(&session, "from-a");
    let (_, from_b) = entry_record(&session, "from-b");

    proxy.gate.arm();
    let append = tokio::spawn({
        let (a, stem) = (a.clone(), stem.clone());
        async move { a.append(&stem, &[from_a], a_view).await }
    });
    held(&proxy.gate).await;
    b.append(&stem, &[from_b], b_view)
        .await
        .unwrap()
        .expect("b's append finds the session as it last saw it");
    proxy.gate.release();

    let committed = append.await.unwrap().unwrap();
    assert_eq!(
        committed, None,
        "a's append committed although b wrote between its read and its EXEC"
    );
    assert_eq!(stored_entries(&redis).await, ["from-b"]);
    assert_eq!(proxy.gate.times_held(), 1);
}

/// A snapshot written over a log that grew between the read and the `EXEC` would delete the
/// record another writer had just acknowledged. It must not commit, and the record stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_does_not_commit_over_a_record_appended_between_its_read_and_its_exec() {
    let redis = RedisServer::start();
    let proxy = HoldingProxy::start(redis.port);
    let a = Arc::new(backend(&proxy.url(), "a").await);
    let b = backend(&redis.url(), "b").await;
    let (session, a_view, b_view) = shared_session(&a, &b).await;
    let stem = key().file_stem();
    let (with_a, _) = entry_record(&session, "from-a");
    let (_, from_b) = entry_record(&session, "from-b");
    let snapshot = serde_json::to_vec(&with_a).unwrap();

    proxy.gate.arm();
    let write = tokio::spawn({
        let (a, stem) = (a.clone(), stem.clone());
        async move { a.write_snapshot(&stem, &snapshot, a_view).await }
    });
    held(&proxy.gate).await;
    b.append(&stem, &[from_b], b_view)
        .await
        .unwrap()
        .expect("b's append finds the session as it last saw it");
    proxy.gate.release();

    let committed = write.await.unwrap().unwrap();
    assert_eq!(
        committed, None,
        "a's snapshot committed although b appended between its read and its EXEC"
    );
    assert_eq!(
        stored_entries(&redis).await,
        ["from-b"],
        "b's record was lost"
    );
}

async fn open_store(url: &str) -> SessionStore {
    let mut options = StoreOptions::new("/nonexistent");
    options.backend = BackendChoice::Redis(RedisConfig::new(url.to_string(), PREFIX));
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    SessionStore::open(options).await.unwrap()
}

async fn memory_of(store: &SessionStore) -> serde_json::Map<String, serde_json::Value> {
    let text = store.load(USER, WORKSPACE).await.unwrap().session_json;
    serde_json::from_str::<NarrativeSession>(&text)
        .unwrap()
        .memory
}

/// Two servers share a session. While server A's durable merge is between its read and its
/// `EXEC`, server B makes and acknowledges a durable merge of its own. A's merge must take B's
/// in and retry; then A compacts the session (on close), and B's acknowledged merge must still be
/// there for a third server, though B never writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_acknowledged_elsewhere_during_a_stores_write_survives_its_compaction() {
    let redis = RedisServer::start();
    let proxy = HoldingProxy::start(redis.port);
    let a = open_store(&proxy.url()).await;
    let b = open_store(&redis.url()).await;
    a.load(USER, WORKSPACE).await.unwrap();
    b.load(USER, WORKSPACE).await.unwrap();

    proxy.gate.arm();
    let merge = tokio::spawn({
        let a = a.clone();
        async move {
            let update = json!({"memory": {"fromA": 1}}).to_string();
            a.merge(USER, WORKSPACE, &update, None, DURABLE).await
        }
    });
    held(&proxy.gate).await;
    let update = json!({"memory": {"fromB": 2}}).to_string();
    b.merge(USER, WORKSPACE, &update, None, DURABLE)
        .await
        .expect("b's durable merge is acknowledged");
    proxy.gate.release();
    let outcome = merge.await.unwrap().unwrap();
    assert!(outcome.lost.is_empty(), "{:?}", outcome.lost);

    // A knows B's merge, and its compaction keeps it.
    assert_eq!(memory_of(&a).await.get("fromB"), Some(&json!(2)));
    a.close().await.unwrap();
    let c = open_store(&redis.url()).await;
    let memory = memory_of(&c).await;
    assert_eq!(memory.get("fromA"), Some(&json!(1)));
    assert_eq!(
        memory.get("fromB"),
        Some(&json!(2)),
        "b's acknowledged merge was lost"
    );
    c.close().await.unwrap();
    drop(b);
}

// ----- the quarantine -----

/// Every key under `pattern`, with `SCAN`.
async fn keys_matching(conn: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            keys.sort();
            return keys;
        }
    }
}

/// A store finds garbage in a session's snapshot and in its log: it loads what is valid, says
/// it recovered, and keeps the bad values under keys that never expire, byte for byte, through
/// every write that follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeps_bad_values_aside_and_loads_the_rest() {
    let redis = RedisServer::start();
    let mut conn = raw_connection(&redis).await;
    let writer = backend(&redis.url(), "writer").await;
    let key = key();
    let stem = key.file_stem();
    let snap = writer.key_name(&stem, "snap");
    let log = writer.key_name(&stem, "log");
    let (_, good) = entry_record(&new_session(&key), "kept");
    let () = redis::cmd("SET")
        .arg(&snap)
        .arg("{\"truncated\": ")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: u64 = redis::cmd("RPUSH")
        .arg(&log)
        .arg(&good)
        .arg("not a frame")
        .query_async(&mut conn)
        .await
        .unwrap();

    let store = open_store(&redis.url()).await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    assert!(loaded.recovered);
    let session: NarrativeSession = serde_json::from_str(&loaded.session_json).unwrap();
    assert_eq!(entry_ids(&session), ["kept"], "the valid record is loaded");
    let update = json!({"memory": {"after": true}}).to_string();
    store
        .merge(USER, WORKSPACE, &update, None, DURABLE)
        .await
        .unwrap();
    store.close().await.unwrap();

    let snap_aside = keys_matching(&mut conn, &format!("{snap}:corrupt:*")).await;
    assert_eq!(snap_aside.len(), 1, "{snap_aside:?}");
    let kept: String = redis::cmd("GET")
        .arg(&snap_aside[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, "{\"truncated\": ");
    let log_aside = keys_matching(&mut conn, &format!("{log}:corrupt:*")).await;
    assert_eq!(log_aside.len(), 1, "{log_aside:?}");
    let elements: Vec<String> = redis::cmd("LRANGE")
        .arg(&log_aside[0])
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(elements, ["not a frame"]);
    for aside in snap_aside.iter().chain(&log_aside) {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(aside)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "{aside} must never expire");
    }
    // And the session itself is whole again.
    let again = open_store(&redis.url()).await;
    let reloaded = again.load(USER, WORKSPACE).await.unwrap();
    assert!(!reloaded.recovered);
    assert_eq!(memory_of(&again).await.get("after"), Some(&json!(true)));
    again.close().await.unwrap();
}
