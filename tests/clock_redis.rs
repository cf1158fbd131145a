//! Clocks that disagree between instances sharing one Redis: the clocks an instance reads from
//! Redis (another instance's records and snapshots) go into its clock as those it reads from files
//! do. One instance's clock reads 2100; the writes the other makes after seeing its values land.
//! Needs `redis-server` (`.ci/run` installs it); one is started on a free loopback port.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mia_narrative_session::clock::{parse_rfc3339_millis, wall_clock_millis, WallClock};
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::store::redis::RedisConfig;
use mia_narrative_session::store::{BackendChoice, MergeMode, SessionStore, StoreOptions};
use serde_json::json;

const USER: &str = "alice";
const WORKSPACE: &str = "/home/alice/proj";
const YEAR_2100: u64 = 4_102_444_800_000;
const DURABLE: MergeMode = MergeMode {
    with_session: false,
    durable: true,
};

/// `redis-server` without persistence on a free port of 127.0.0.1; killed on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server)");
        let redis = Redis(child, port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn open(redis: &Redis, wall: u64, elapsed: &Arc<AtomicU64>) -> SessionStore {
    let mut options = StoreOptions::new("/nonexistent");
    options.backend = BackendChoice::Redis(RedisConfig::new(
        format!("redis://127.0.0.1:{}/0", redis.1),
        "clock:",
    ));
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    let elapsed = elapsed.clone();
    options.wall_clock = WallClock::new(move || wall + elapsed.load(Ordering::SeqCst));
    // Redis may take a moment to accept connections after its port opens.
    for _ in 0..50 {
        if let Ok(store) = SessionStore::open(options.clone()).await {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not open a store on redis-server");
}

async fn session(store: &SessionStore) -> NarrativeSession {
    serde_json::from_str(&store.load(USER, WORKSPACE).await.unwrap().session_json).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_made_after_seeing_a_value_from_2100_in_redis_win_over_it() {
    let redis = Redis::start();
    let elapsed = Arc::new(AtomicU64::new(0));
    let now = wall_clock_millis();
    let normal = open(&redis, now, &elapsed).await;
    let ahead = open(&redis, YEAR_2100, &elapsed).await;
    normal.load(USER, WORKSPACE).await.unwrap();

    let update = json!({"memory": {"k": "from 2100"}}).to_string();
    ahead
        .merge(USER, WORKSPACE, &update, None, DURABLE)
        .await
        .unwrap();
    normal.reread(USER, WORKSPACE).await.unwrap();
    assert_eq!(session(&normal).await.memory["k"], "from 2100");

    for n in 0..5 {
        elapsed.fetch_add(1, Ordering::SeqCst);
        let update = json!({"memory": {"k": n}}).to_string();
        let outcome = normal
            .merge(USER, WORKSPACE, &update, None, DURABLE)
            .await
            .unwrap();
        assert_eq!(
            (outcome.changes, outcome.lost),
            (vec!["memory.k".to_string()], vec![]),
            "write {n}"
        );
    }
    let mine = session(&normal).await;
    assert_eq!(mine.memory["k"], 4);
    let updated = parse_rfc3339_millis(&mine.updated_at).unwrap() as u64;
    assert!(
        updated <= now + elapsed.load(Ordering::SeqCst),
        "{}",
        mine.updated_at
    );

    ahead.reread(USER, WORKSPACE).await.unwrap();
    assert_eq!(session(&ahead).await.memory["k"], 4);
    // A new instance, on time, loads what Redis holds and still lands its writes.
    normal.close().await.unwrap();
    let restarted = open(&redis, now, &elapsed).await;
    let update = json!({"memory": {"k": "after a restart"}}).to_string();
    let outcome = restarted
        .merge(USER, WORKSPACE, &update, None, DURABLE)
        .await
        .unwrap();
    assert!(outcome.lost.is_empty(), "{:?}", outcome.lost);
    ahead.reread(USER, WORKSPACE).await.unwrap();
    assert_eq!(session(&ahead).await.memory["k"], "after a restart");
    ahead.close().await.unwrap();
    restarted.close().await.unwrap();
}
