//! The Redis backend on a real Redis Cluster (tests/support/redis_cluster.rs starts it from
//! `redis-server` processes): sessions in one slot each and spread over every primary, `list` on
//! every primary, slots moved under transactions (`MOVED`, `ASK`, `TRYAGAIN`), sharded pub/sub
//! across a slot move, `WAIT` for a replica, and a failover the store follows by itself.
//!
//! `redis-server` must be installed (`apt-get install redis-server`; `.ci/run` does it).

#[path = "support/redis_cluster.rs"]
mod redis_cluster_support;

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mia_narrative_session::clock::HybridClock;
use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::journal;
use mia_narrative_session::merge::{normalize, settle_update};
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::redis::{RedisBackend, RedisConfig, RedisEvent, RedisView};
use mia_narrative_session::store::{
    BackendChoice, MergeEvent, MergeMode, SessionStore, StoreOptions,
};
use mia_narrative_session::update::parse_update;
use redis_cluster_support::{wait_until, RedisCluster};
use tokio::sync::mpsc;

const PREFIX: &str = "mia:ns:";
const TTL: Duration = Duration::from_secs(3600);
const WORKSPACE: &str = "/home/me/proj";

fn key(n: usize) -> SessionKey {
    SessionKey::new(&format!("user{n}"), WORKSPACE).unwrap()
}

fn config(cluster: &RedisCluster) -> RedisConfig {
    // One seed is enough: the others are found through it.
    RedisConfig::cluster(cluster.urls()[..1].to_vec(), PREFIX)
}

async fn backend(config: &RedisConfig, instance: &str) -> RedisBackend {
    RedisBackend::open(config, TTL, instance.to_string())
        .await
        .unwrap()
}

async fn store(config: RedisConfig) -> SessionStore {
    let mut options = StoreOptions::new("/nonexistent");
    options.backend = BackendChoice::Redis(config);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    SessionStore::open(options).await.unwrap()
}

fn entry(tag: &str, n: usize) -> String {
    format!(
        r#"{{"conversationHistory":[{{"id":"{tag}-{n}","role":"user","content":"entry {n}"}}]}}"#
    )
}

const DURABLE: MergeMode = MergeMode {
    with_session: false,
    durable: true,
};

/// The ids of a session's conversation entries, as a store loads them.
async fn entry_ids(store: &SessionStore, key: &SessionKey) -> Vec<String> {
    let loaded = store.load(&key.user_id, &key.workspace_id).await.unwrap();
    let session: NarrativeSession = serde_json::from_str(&loaded.session_json).unwrap();
    session
        .conversation_history
        .iter()
        .map(|e| e.id.clone())
        .collect()
}

/// A new session's snapshot in Redis, as a first load writes it; and a record for it.
async fn create(backend: &RedisBackend, key: &SessionKey) -> (NarrativeSession, RedisView) {
    let session = normalize(&NarrativeSession::new(
        key.session_id(),
        key.user_id.clone(),
        key.workspace_id.clone(),
        "2026-01-01T00:00:00.000Z".into(),
    ))
    .unwrap();
    let bytes = serde_json::to_vec(&session).unwrap();
    let view = backend
        .write_snapshot(&key.file_stem(), &bytes, RedisView::default())
        .await
        .unwrap()
        .expect("nobody else wrote");
    (session, view)
}

fn record(session: &NarrativeSession, clock: &mut HybridClock, tag: &str, n: usize) -> Vec<u8> {
    let patch = parse_update(&entry(tag, n))
        .unwrap()
        .into_patch(clock)
        .unwrap();
    journal::encode(&settle_update(session, patch).unwrap()).unwrap()
}

/// A session with one record in its log, where a slot move starts: its slot, the primary serving
/// it, and another primary to move it to.
struct Placed {
    session: NarrativeSession,
    view: RedisView,
    clock: HybridClock,
    slot: u16,
    from: u16,
    to: u16,
}

async fn placed(cluster: &RedisCluster, backend: &RedisBackend, key: &SessionKey) -> Placed {
    let stem = key.file_stem();
    let (session, view) = create(backend, key).await;
    let mut clock = HybridClock::new("a");
    let view = backend
        .append(&stem, &[record(&session, &mut clock, "r", 1)], view)
        .await
        .unwrap()
        .expect("no one else writes");
    let slot = backend.slot_of(&stem);
    let from = cluster.primary_of(slot);
    let to = cluster
        .primary_ports()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    Placed {
        session,
        view,
        clock,
        slot,
        from,
        to,
    }
}

/// Moves `slot` between primaries (see `RedisCluster::move_slot`) off the async threads.
async fn move_slot(cluster: &Arc<RedisCluster>, slot: u16, from: u16, to: u16, pause: Duration) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || cluster.move_slot(slot, from, to, pause))
        .await
        .unwrap();
}

/// The count Redis keeps of an error reply, from `INFO errorstats` (`errorstat_ASK:count=3`).
fn error_count(cluster: &RedisCluster, port: u16, code: &str) -> u64 {
    let info: String = cluster.query(port, &["INFO", "errorstats"]);
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("errorstat_{code}:count=")))
        .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
        .unwrap_or(0)
}

async fn next_event(events: &mut mpsc::Receiver<RedisEvent>) -> RedisEvent {
    tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .expect("an event within 15 s")
        .expect("the subscription is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_live_in_one_slot_each_spread_over_every_primary_and_list_scans_them_all() {
    let cluster = RedisCluster::start(3, 0);
    let a = store(config(&cluster)).await;
    let b = store(config(&cluster)).await;
    let (heard, hear) = std_mpsc::channel::<MergeEvent>();
    let heard = std::sync::Mutex::new(heard);
    a.on_merge(Arc::new(move |event: &MergeEvent| {
        let _ = heard.lock().unwrap().send(event.clone());
    }));
    const SESSIONS: usize = 24;
    for n in 0..SESSIONS {
        let key = key(n);
        a.merge(&key.user_id, WORKSPACE, &entry("a", n), Some("a"), DURABLE)
            .await
            .unwrap();
    }
    let probe = cluster.nodes[0].port;
    for n in 0..SESSIONS {
        let stem = key(n).file_stem();
        let slots: Vec<i64> = ["snap", "log", "ver", "gen", "mark", "events"]
            .iter()
            .map(|kind| {
                let name = format!("{PREFIX}{{{stem}}}:{kind}");
                cluster.query(probe, &["CLUSTER", "KEYSLOT", &name])
            })
            .collect();
        assert!(slots.iter().all(|s| *s == slots[0]), "{stem}: {slots:?}");
        let owner = cluster.primary_of(slots[0] as u16);
        // A new session's first durable write is its snapshot, on the primary of its slot.
        let name = format!("{PREFIX}{{{stem}}}:snap");
        assert_eq!(cluster.query::<i64>(owner, &["EXISTS", &name]), 1);
    }
    for node in &cluster.nodes {
        assert!(cluster.dbsize(node.port) > 0, "a primary holds no session");
    }
    let listed = a.list().await.unwrap();
    assert_eq!(listed.len(), SESSIONS);
    let mut ids: Vec<String> = listed.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let mut wanted: Vec<String> = (0..SESSIONS).map(|n| key(n).session_id()).collect();
    wanted.sort();
    assert_eq!(ids, wanted);

    // Another instance's write reaches `a` through the session's shard (sharded pub/sub).
    for n in [0, SESSIONS - 1] {
        let key = key(n);
        b.merge(&key.user_id, WORKSPACE, &entry("b", n), Some("b"), DURABLE)
            .await
            .unwrap();
        let change = format!("conversationHistory.b-{n}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let event = hear
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("a's listener hears b's write");
            if event.user_id == key.user_id && event.changes.contains(&change) {
                assert_eq!(event.origin, "external");
                break;
            }
        }
        assert!(entry_ids(&a, &key).await.contains(&format!("b-{n}")));
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_follows_a_slot_moved_away_from_under_it() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let backend = backend(&config(&cluster), "a").await;
    let key = key(1);
    let stem = key.file_stem();
    let Placed {
        session,
        view,
        mut clock,
        slot,
        from,
        to,
    } = placed(&cluster, &backend, &key).await;
    move_slot(&cluster, slot, from, to, Duration::ZERO).await;
    // The old owner answers MOVED; the append goes to the new one, with the view it had.
    let view = backend
        .append(&stem, &[record(&session, &mut clock, "r", 2)], view)
        .await
        .unwrap()
        .expect("no one else writes");
    assert_eq!(view.log_len, 2);
    let log = backend.key_name(&stem, "log");
    assert_eq!(cluster.query::<i64>(to, &["LLEN", &log]), 2);
    assert_eq!(cluster.query::<i64>(from, &["DBSIZE"]), 0);
    let loaded = backend.load(&stem, &key).await.unwrap();
    assert_eq!((loaded.patches.len(), loaded.view), (2, view));
    assert_eq!(backend.stems().await.unwrap(), vec![stem.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_waits_out_a_slot_split_between_two_nodes() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let backend = Arc::new(backend(&config(&cluster), "a").await);
    let key = key(2);
    let stem = key.file_stem();
    let Placed {
        session,
        view,
        mut clock,
        slot,
        from,
        to,
    } = placed(&cluster, &backend, &key).await;
    // Half-way through a move: the log is on the new node, the other keys on the old one.
    let (from_id, to_id) = (cluster.node_id(from), cluster.node_id(to));
    let slot_text = slot.to_string();
    let _: () = cluster.query(
        to,
        &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
    );
    let _: () = cluster.query(
        from,
        &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
    );
    let log = backend.key_name(&stem, "log");
    let to_text = to.to_string();
    let _: String = cluster.query(
        from,
        &[
            "MIGRATE",
            "127.0.0.1",
            &to_text,
            "",
            "0",
            "5000",
            "KEYS",
            &log,
        ],
    );
    let refused_before =
        error_count(&cluster, from, "TRYAGAIN") + error_count(&cluster, from, "ASK");
    let writer = backend.clone();
    let frame = record(&session, &mut clock, "r", 2);
    let append = {
        let stem = stem.clone();
        tokio::spawn(async move { writer.append(&stem, &[frame], view).await })
    };
    // The append meets the split slot (TRYAGAIN or ASK) and waits; then the move ends.
    wait_until(
        "the append meets the split slot",
        Duration::from_secs(10),
        || {
            error_count(&cluster, from, "TRYAGAIN") + error_count(&cluster, from, "ASK")
                > refused_before
        },
    );
    move_slot(&cluster, slot, from, to, Duration::ZERO).await;
    let view = append.await.unwrap().unwrap().expect("nothing else wrote");
    assert_eq!(view.log_len, 2);
    assert_eq!(cluster.query::<i64>(to, &["LLEN", &log]), 2);
    let loaded = backend.load(&stem, &key).await.unwrap();
    assert_eq!(loaded.patches.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_events_reach_the_follower_and_move_with_their_slot() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let listener = backend(&config(&cluster), "listener").await;
    let writer = backend(&config(&cluster), "writer").await;
    let stem = key(3).file_stem();
    let mut events = listener.subscribe().await.unwrap();
    listener.follow(&stem).await.unwrap();
    writer.publish(&stem, 7).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        RedisEvent::Changed {
            stem: stem.clone(),
            instance_id: "writer".into(),
            version: 7
        }
    );
    // Its own messages are dropped; another session's channel is not heard (not followed).
    listener.publish(&stem, 8).await.unwrap();
    writer.publish(&key(4).file_stem(), 9).await.unwrap();

    // The slot moves: the old node drops the subscription, the listener subscribes again where
    // the slot is now and says the session must be re-read.
    let slot = listener.slot_of(&stem);
    let from = cluster.primary_of(slot);
    let to = cluster
        .primary_ports()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    move_slot(&cluster, slot, from, to, Duration::ZERO).await;
    assert_eq!(
        next_event(&mut events).await,
        RedisEvent::Stale(stem.clone())
    );
    writer.publish(&stem, 10).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        RedisEvent::Changed {
            stem: stem.clone(),
            instance_id: "writer".into(),
            version: 10
        }
    );
    // A session no longer held stops being heard.
    listener
        .unfollow_except(&std::collections::HashSet::new())
        .await;
    writer.publish(&stem, 11).await.unwrap();
    listener.follow(&key(5).file_stem()).await.unwrap();
    writer.publish(&key(5).file_stem(), 12).await.unwrap();
    match next_event(&mut events).await {
        RedisEvent::Changed { stem: heard, .. } => assert_eq!(heard, key(5).file_stem()),
        other => panic!("expected the followed session's event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sharded_pub_sub_one_pattern_subscription_hears_every_shard() {
    let cluster = RedisCluster::start(3, 0);
    let mut classic = config(&cluster);
    classic.sharded_events = Some(false);
    let listener = backend(&classic, "listener").await;
    let writer = backend(&classic, "writer").await;
    let mut events = listener.subscribe().await.unwrap();
    // Sessions on every shard, none followed: PUBLISH reaches every node.
    let mut owners = std::collections::HashSet::new();
    for n in 0..12 {
        let stem = key(n).file_stem();
        owners.insert(cluster.primary_of(writer.slot_of(&stem)));
        writer.publish(&stem, n as u64 + 1).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            RedisEvent::Changed {
                stem,
                instance_id: "writer".into(),
                version: n as u64 + 1
            }
        );
    }
    assert_eq!(owners.len(), 3, "the sessions are on every shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_a_write_counts_only_once_a_replica_has_it() {
    let mut cluster = RedisCluster::start(3, 1);
    let plain = backend(&config(&cluster), "plain").await;
    let mut waiting_config = config(&cluster);
    waiting_config.wait_replicas = 1;
    waiting_config.wait_timeout = Duration::from_millis(300);
    let waiting = backend(&waiting_config, "waiting").await;
    let key = key(6);
    let stem = key.file_stem();
    let (session, view) = create(&waiting, &key).await;
    let mut clock = HybridClock::new("w");
    let view = waiting
        .append(&stem, &[record(&session, &mut clock, "w", 1)], view)
        .await
        .unwrap()
        .expect("acknowledged: the replica has it");
    let primary = cluster.primary_of(plain.slot_of(&stem));
    let replica = cluster.replica_of(primary);
    cluster.pause(replica);

    // The replica is stalled: a plain write is acknowledged all the same (the primary has it).
    let view = plain
        .append(&stem, &[record(&session, &mut clock, "p", 2)], view)
        .await
        .unwrap()
        .expect("acknowledged on the primary");
    // A waiting one is not: EUNAVAILABLE after the timeout, though the primary has it.
    let started = Instant::now();
    let refused = waiting
        .append(&stem, &[record(&session, &mut clock, "w", 3)], view)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused}");
    assert!(refused.message.contains("0 of the 1 replicas"), "{refused}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let log = plain.key_name(&stem, "log");
    assert_eq!(cluster.query::<i64>(primary, &["LLEN", &log]), 3);

    cluster.resume(replica);
    let replica_log = || {
        let mut conn = cluster.connection(replica);
        redis::cmd("READONLY").query::<()>(&mut conn).unwrap();
        redis::cmd("LLEN")
            .arg(&log)
            .query::<i64>(&mut conn)
            .unwrap()
    };
    wait_until("the replica catches up", Duration::from_secs(10), || {
        replica_log() == 3
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_a_promoted_replica_by_itself() {
    let mut cluster = RedisCluster::start(3, 1);
    let writer = store(config(&cluster)).await;
    let reader = store(config(&cluster)).await;
    let key = key(7);
    let (heard, hear) = std_mpsc::channel::<MergeEvent>();
    let heard = std::sync::Mutex::new(heard);
    reader.on_merge(Arc::new(move |event: &MergeEvent| {
        let _ = heard.lock().unwrap().send(event.clone());
    }));
    writer
        .merge(&key.user_id, WORKSPACE, &entry("w", 0), Some("w"), DURABLE)
        .await
        .unwrap();
    reader.load(&key.user_id, WORKSPACE).await.unwrap();
    let stem = key.file_stem();
    let probe = RedisBackend::open(&config(&cluster), TTL, "probe".into())
        .await
        .unwrap();
    let primary = cluster.primary_of(probe.slot_of(&stem));
    let replica = cluster.replica_of(primary);
    // The first durable write of a new session is its snapshot.
    let snap = probe.key_name(&stem, "snap");
    wait_until(
        "the replica has the first write",
        Duration::from_secs(10),
        || {
            let mut conn = cluster.connection(replica);
            redis::cmd("READONLY").query::<()>(&mut conn).unwrap();
            redis::cmd("EXISTS")
                .arg(&snap)
                .query::<i64>(&mut conn)
                .unwrap()
                == 1
        },
    );
    cluster.kill(primary);

    // Writes fail (EUNAVAILABLE) until the replica takes over, then succeed on the same store.
    let started = Instant::now();
    let mut refused = 0;
    loop {
        match writer
            .merge(&key.user_id, WORKSPACE, &entry("w", 1), Some("w"), DURABLE)
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
                refused += 1;
                assert!(started.elapsed() < Duration::from_secs(30), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        refused > 0,
        "the first write after the kill had nowhere to go"
    );
    cluster.wait_promoted(replica);
    // The reader hears of it on the new primary (its subscription moved there).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let event = hear
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the reader hears the write made after the failover");
        if event
            .changes
            .contains(&"conversationHistory.w-1".to_string())
        {
            break;
        }
    }
    assert_eq!(entry_ids(&reader, &key).await, ["w-0", "w-1"]);
    writer.close().await.unwrap();
    reader.close().await.unwrap();
}

#[tokio::test]
async fn bad_cluster_options_are_refused_before_connecting() {
    let cases = [
        RedisConfig {
            urls: vec!["redis://127.0.0.1:1/1".into()],
            ..RedisConfig::cluster(vec![], PREFIX)
        },
        RedisConfig::cluster(vec!["redis+unix:///tmp/redis.sock".into()], PREFIX),
        RedisConfig::cluster(vec![], PREFIX),
        RedisConfig {
            urls: vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
            ..RedisConfig::new("", PREFIX)
        },
        RedisConfig {
            wait_replicas: 65,
            ..RedisConfig::new("redis://127.0.0.1:1", PREFIX)
        },
        RedisConfig {
            wait_replicas: 1,
            wait_timeout: Duration::ZERO,
            ..RedisConfig::new("redis://127.0.0.1:1", PREFIX)
        },
    ];
    for config in cases {
        let error = RedisBackend::open(&config, TTL, "a".into())
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Invalid, "{config:?}: {error}");
    }
    // Nothing listens on port 1: unavailable, not invalid.
    let error = RedisBackend::open(
        &RedisConfig::cluster(vec!["redis://127.0.0.1:1".into()], PREFIX),
        TTL,
        "a".into(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_merges_go_on_while_their_slot_moves_key_by_key() {
    let cluster = Arc::new(RedisCluster::start(3, 1));
    let a = Arc::new(store(config(&cluster)).await);
    let b = Arc::new(store(config(&cluster)).await);
    let key = key(8);
    let stem = key.file_stem();
    a.merge(&key.user_id, WORKSPACE, &entry("a", 0), Some("a"), DURABLE)
        .await
        .unwrap();
    let probe = backend(&config(&cluster), "probe").await;
    let slot = probe.slot_of(&stem);
    let from = cluster.primary_of(slot);
    let to = cluster
        .primary_ports()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [("a", a.clone()), ("b", b.clone())]
        .into_iter()
        .map(|(tag, store)| {
            let (stop, key) = (stop.clone(), key.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 1.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    store
                        .merge(&key.user_id, WORKSPACE, &entry(tag, n), Some(tag), DURABLE)
                        .await
                        .unwrap_or_else(|e| panic!("{tag}-{n}: {e}"));
                    acked.push(format!("{tag}-{n}"));
                }
                acked
            })
        })
        .collect();
    move_slot(&cluster, slot, from, to, Duration::from_millis(20)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = vec!["a-0".to_string()];
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    let reader = store(config(&cluster)).await;
    let stored = entry_ids(&reader, &key).await;
    for id in &acked {
        assert!(
            stored.contains(id),
            "{id} was acknowledged and is not stored"
        );
    }
}
