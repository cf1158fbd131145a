//! Clocks that disagree: a store whose clock runs decades or minutes ahead, a client's version from
//! the future, and a restart after either. Each store reads time from a wall clock the test sets
//! (`StoreOptions::wall_clock`), so the skews are exact and nothing waits on real time. Two stores
//! on one directory play two processes, as in tests/store.rs.
//!
//! What must hold (docs/merge.md, "Clocks"): a write made after a store has seen a value wins over
//! it, whatever clock wrote the value; a write that loses is reported in `lost`, never in
//! `changes`; `updatedAt` never runs ahead of the store's own wall clock, and the TTL sweep never
//! believes one that does.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mia_narrative_session::clock::{
    parse_rfc3339_millis, wall_clock_millis, Hlc, WallClock, MAX_CLOCK_AHEAD_MS,
};
use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::{MergeMode, MergeOutcome, SessionStore, StoreOptions};
use serde_json::{json, Value};

const USER: &str = "alice";
const WORKSPACE: &str = "/home/alice/proj";
/// 2100-01-01T00:00:00Z: the clock of the process from the future.
const YEAR_2100: u64 = 4_102_444_800_000;
const DURABLE: MergeMode = MergeMode {
    with_session: true,
    durable: true,
};

/// A wall clock the test moves: `base` plus whatever `advance` added.
#[derive(Clone)]
struct TestWall {
    base: u64,
    elapsed: Arc<AtomicU64>,
}

impl TestWall {
    fn at(base: u64) -> TestWall {
        TestWall {
            base,
            elapsed: Arc::new(AtomicU64::new(0)),
        }
    }

    fn now(&self) -> u64 {
        self.base + self.elapsed.load(Ordering::SeqCst)
    }

    fn advance(&self, millis: u64) {
        self.elapsed.fetch_add(millis, Ordering::SeqCst);
    }

    fn clock(&self) -> WallClock {
        let wall = self.clone();
        WallClock::new(move || wall.now())
    }
}

/// A store with its timers off whose clock reads `wall`.
async fn open(dir: &Path, wall: &TestWall) -> SessionStore {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    options.wall_clock = wall.clock();
    SessionStore::open(options).await.unwrap()
}

async fn write(store: &SessionStore, update: Value) -> MergeOutcome {
    store
        .merge(USER, WORKSPACE, &update.to_string(), None, DURABLE)
        .await
        .unwrap()
}

async fn session(store: &SessionStore) -> NarrativeSession {
    serde_json::from_str(&store.load(USER, WORKSPACE).await.unwrap().session_json).unwrap()
}

/// The session as a store opened now on `dir` (with the system's clock) finds it.
async fn on_disk(dir: &Path) -> NarrativeSession {
    let store = open(dir, &TestWall::at(wall_clock_millis())).await;
    let found = session(&store).await;
    store.close().await.unwrap();
    found
}

fn millis(time: &str) -> u64 {
    parse_rfc3339_millis(time).unwrap() as u64
}

/// A process whose clock reads 2100 writes a field; the normal process, having seen it, then
/// writes it ten times. Every one of those writes lands and says so, on every replica, the
/// future one included, and the normal store's own clock and `updatedAt` stay on its wall clock.
/// Before the fix, 9 of 10 such writes resolved with `changes: []` and the 2100 value stayed.
#[tokio::test(flavor = "multi_thread")]
async fn writes_made_after_seeing_a_value_from_2100_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = TestWall::at(wall_clock_millis());
    let future = TestWall::at(YEAR_2100);
    let normal = open(dir.path(), &now).await;
    let ahead = open(dir.path(), &future).await;
    normal.load(USER, WORKSPACE).await.unwrap();

    let first = write(&ahead, json!({"memory": {"k": "from 2100"}})).await;
    assert_eq!(first.changes, ["memory.k"]);
    normal.reread(USER, WORKSPACE).await.unwrap();
    assert_eq!(session(&normal).await.memory["k"], "from 2100");

    for n in 0..10 {
        now.advance(1);
        let outcome = write(&normal, json!({"memory": {"k": n}})).await;
        assert_eq!(
            (outcome.changes.as_slice(), outcome.lost.as_slice()),
            (&["memory.k".to_string()][..], &[][..]),
            "write {n}"
        );
        assert_eq!(session(&normal).await.memory["k"], n);
    }
    let mine = session(&normal).await;
    assert!(
        millis(&mine.updated_at) <= now.now(),
        "updatedAt {} followed the clock from 2100",
        mine.updated_at
    );
    // The normal store's clock did not jump to 2100: its next write to another field is stamped
    // by its own wall clock.
    write(&normal, json!({"memory": {"other": true}})).await;
    let other = session(&normal).await.versions["memory.other"].clone();
    assert!(
        other.millis <= now.now() + MAX_CLOCK_AHEAD_MS,
        "stamped {other}"
    );

    // Every replica agrees, the process from 2100 included, and a fresh reader.
    ahead.reread(USER, WORKSPACE).await.unwrap();
    assert_eq!(session(&ahead).await.memory["k"], 9);
    assert_eq!(on_disk(dir.path()).await.memory["k"], 9);
    // And the process from 2100, having seen that, wins with its next write in turn.
    let again = write(&ahead, json!({"memory": {"k": "2100 again"}})).await;
    assert!(again.lost.is_empty(), "{:?}", again.lost);
    normal.reread(USER, WORKSPACE).await.unwrap();
    assert_eq!(session(&normal).await.memory["k"], "2100 again");

    ahead.close().await.unwrap();
    normal.close().await.unwrap();
    let stored = on_disk(dir.path()).await;
    assert_eq!(stored.memory["k"], "2100 again");
}

/// The same after a restart: the normal process opens a data dir in which a process from 2100
/// wrote (a machine whose clock was set right since, say).
#[tokio::test(flavor = "multi_thread")]
async fn a_store_opened_on_values_from_2100_still_lands_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let ahead = open(dir.path(), &TestWall::at(YEAR_2100)).await;
    write(
        &ahead,
        json!({"memory": {"k": "from 2100"}, "config": {"theme": "dark"}, "universeFocus": "story",
               "activeCharts": [{"id": "c1", "title": "from 2100", "actions": [{"id": "a1", "title": "t"}]}]}),
    )
    .await;
    ahead.close().await.unwrap();

    let now = TestWall::at(wall_clock_millis());
    let normal = open(dir.path(), &now).await;
    let loaded = session(&normal).await;
    assert!(
        millis(&loaded.updated_at) <= now.now(),
        "updatedAt {} was taken from 2100",
        loaded.updated_at
    );
    let outcome = write(
        &normal,
        json!({"memory": {"k": "now"}, "config": {"theme": "light"}, "universeFocus": "engineer",
               "activeCharts": [{"id": "c1", "title": "now", "actions": [{"id": "a1", "title": "u"}]}]}),
    )
    .await;
    let mut changes = outcome.changes.clone();
    changes.sort();
    assert_eq!(
        changes,
        [
            "activeCharts.c1.actions.a1.title",
            "activeCharts.c1.title",
            "config.theme",
            "memory.k",
            "universeFocus"
        ]
    );
    assert!(outcome.lost.is_empty(), "{:?}", outcome.lost);
    normal.close().await.unwrap();
    let stored = on_disk(dir.path()).await;
    assert_eq!(stored.memory["k"], "now");
    assert_eq!(stored.config["theme"], "light");
    assert_eq!(stored.active_charts[0].title, "now");
    assert_eq!(stored.active_charts[0].actions[0].title, "u");
    assert!(
        millis(&stored.updated_at) <= now.now(),
        "the snapshot's updatedAt is {}",
        stored.updated_at
    );
}

/// A client's version 59 minutes ahead is within the bound and accepted. After a restart the
/// store's clock starts from its wall clock again; it must still take that version in from the
/// file, so that the next write to the field wins.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_version_59_minutes_ahead_then_a_restart_drops_no_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let now = TestWall::at(wall_clock_millis());
    let ahead = Hlc {
        millis: now.now() + 59 * 60 * 1000,
        counter: 0,
        node: "client".into(),
    };
    let store = open(dir.path(), &now).await;
    let accepted = write(
        &store,
        json!({"memory": {"k": "ahead"}, "versions": {"memory.k": ahead.to_string()}}),
    )
    .await;
    assert_eq!(accepted.changes, ["memory.k"]);
    store.close().await.unwrap();

    now.advance(1_000);
    let store = open(dir.path(), &now).await;
    for n in 0..3 {
        let outcome = write(&store, json!({"memory": {"k": n}})).await;
        assert_eq!(outcome.changes, ["memory.k"], "write {n}");
        assert!(outcome.lost.is_empty(), "write {n}: {:?}", outcome.lost);
    }
    let mine = session(&store).await;
    assert_eq!(mine.memory["k"], 2);
    assert!(mine.versions["memory.k"] > ahead);
    assert!(millis(&mine.updated_at) <= now.now());
    store.close().await.unwrap();
    assert_eq!(on_disk(dir.path()).await.memory["k"], 2);

    // One more millisecond than the bound is refused, and changes nothing.
    let store = open(dir.path(), &now).await;
    let too_far = Hlc {
        millis: now.now() + MAX_CLOCK_AHEAD_MS + 1,
        ..ahead
    };
    let err = store
        .merge(
            USER,
            WORKSPACE,
            &json!({"memory": {"k": "too far"}, "versions": {"memory.k": too_far.to_string()}})
                .to_string(),
            None,
            DURABLE,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid);
    assert_eq!(session(&store).await.memory["k"], 2);
    store.close().await.unwrap();
}

/// A write that loses is said to: an explicit version older than the field's, a beat whose id is
/// taken by a larger copy, and a write another process's record beats during the save.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_loses_is_reported_in_lost_and_not_in_changes() {
    let dir = tempfile::tempdir().unwrap();
    let now = TestWall::at(wall_clock_millis());
    let store = open(dir.path(), &now).await;
    write(
        &store,
        json!({"memory": {"k": "current"}, "storyBeats": [{"id": "b1", "description": "the longer one"}]}),
    )
    .await;
    let old = Hlc {
        millis: now.now() - 60_000,
        counter: 0,
        node: "client".into(),
    };
    let outcome = write(
        &store,
        json!({"memory": {"k": "stale", "fresh": 1}, "versions": {"memory.k": old.to_string()},
               "storyBeats": [{"id": "b1", "description": "short"}]}),
    )
    .await;
    assert_eq!(outcome.changes, ["memory.fresh"]);
    assert_eq!(outcome.lost, ["memory.k", "storyBeats.b1"]);
    assert_eq!(session(&store).await.memory["k"], "current");

    // Another process from 2100 wrote the field after this store last looked: this store's write
    // is stamped before it sees that record, the save takes the record in, and the record wins.
    let ahead = open(dir.path(), &TestWall::at(YEAR_2100)).await;
    write(&ahead, json!({"memory": {"k": "2100"}})).await;
    let outcome = write(&store, json!({"memory": {"k": "unseen"}})).await;
    let value = session(&store).await.memory["k"].clone();
    if outcome.lost.is_empty() {
        // The directory watcher took the record in before the write: then the write wins.
        assert_eq!(
            (outcome.changes, value),
            (vec!["memory.k".to_string()], json!("unseen"))
        );
    } else {
        assert_eq!(outcome.lost, ["memory.k"]);
        assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
        assert_eq!(value, "2100");
    }
    ahead.close().await.unwrap();
    store.close().await.unwrap();
}

/// The counter is half of a clock. A store whose wall clock is behind takes in another's clocks
/// of one millisecond with counters up to 5, then writes a field nobody else wrote: its stamp must
/// come after every one of them, so its later writes of any field win.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_behind_takes_in_the_counter_of_the_clocks_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let frozen = TestWall::at(wall_clock_millis());
    let behind = TestWall::at(frozen.now() - 10_000);
    let first = open(dir.path(), &frozen).await;
    for n in 0..6 {
        write(&first, json!({"memory": {"a": n}})).await;
    }
    let seen = session(&first).await.versions["memory.a"].clone();
    assert!(seen.millis == frozen.now() && seen.counter >= 5, "{seen}");

    let second = open(dir.path(), &behind).await;
    write(&second, json!({"memory": {"b": "later"}})).await;
    let stamped = session(&second).await.versions["memory.b"].clone();
    assert!(stamped > seen, "{stamped} was issued after seeing {seen}");
    first.close().await.unwrap();
    second.close().await.unwrap();
}

/// `updatedAt` decides when the TTL sweep removes a session. One that says 2100 in a file written
/// 40 days ago expires as a file written 40 days ago does.
#[tokio::test(flavor = "multi_thread")]
async fn the_ttl_sweep_does_not_believe_an_updated_at_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let ahead = open(dir.path(), &TestWall::at(YEAR_2100)).await;
    write(&ahead, json!({"memory": {"k": 1}})).await;
    ahead.close().await.unwrap();
    let stem = SessionKey::new(USER, WORKSPACE).unwrap().file_stem();
    let snapshot = dir.path().join(format!("{stem}.json"));
    let stored: NarrativeSession = serde_json::from_slice(&fs::read(&snapshot).unwrap()).unwrap();
    assert!(
        stored.updated_at.starts_with("2100-"),
        "{}",
        stored.updated_at
    );
    let forty_days_ago = SystemTime::now() - Duration::from_secs(40 * 86_400);
    fs::File::options()
        .write(true)
        .open(&snapshot)
        .unwrap()
        .set_modified(forty_days_ago)
        .unwrap();

    let sweeper = open(dir.path(), &TestWall::at(wall_clock_millis())).await;
    let report = sweeper.cleanup(Some(30.0), None).await.unwrap();
    assert_eq!((report.removed, report.kept), (1, 0), "{report:?}");
    assert!(!snapshot.exists());
    sweeper.close().await.unwrap();
}
