//! Skewed clocks under random interleavings (issue 18's "skewed clocks" suite). Three stores share
//! one directory, as three processes would: one on time, one whose clock is hours off (behind or
//! ahead, beyond the store's one-hour bound, or within it), and one whose clock reads 2100. They
//! write the same fields durably, look at what the others wrote, restart, and let time pass, in
//! an order proptest draws. After every write and at the end:
//!
//! - a write made right after its store looked at the files lands (`lost` is empty): a later
//!   write wins over every value its writer had seen, whatever clocks wrote those;
//! - a write says truly whether it landed: its store holds its value if and only if `lost` is
//!   empty;
//! - nothing acknowledged is dropped: at the end every store, and a fresh reader, holds for each
//!   field the value of the last write that landed;
//! - the stores whose clocks are not from the future keep `updatedAt` at or before their own wall
//!   clock.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mia_narrative_session::clock::{parse_rfc3339_millis, wall_clock_millis, WallClock};
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::store::{MergeMode, SessionStore, StoreOptions};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

const USER: &str = "alice";
const WORKSPACE: &str = "/home/alice/proj";
const HOUR: i64 = 60 * 60 * 1000;
/// 2100-01-01T00:00:00Z.
const YEAR_2100: i64 = 4_102_444_800_000;
const KEYS: [&str; 2] = ["k0", "k1"];
const DURABLE: MergeMode = MergeMode {
    with_session: false,
    durable: true,
};

#[derive(Clone, Debug)]
enum Step {
    /// Store `store` writes field `key`; with `look`, it first takes in what the others wrote.
    Write {
        store: usize,
        key: usize,
        look: bool,
    },
    /// Store `store` takes in what the others wrote.
    Look(usize),
    /// Store `store` closes and opens again (a process restart).
    Restart(usize),
    /// Time passes, on every clock alike.
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, 0..KEYS.len(), any::<bool>())
            .prop_map(|(store, key, look)| Step::Write { store, key, look }),
        2 => (0..3usize).prop_map(Step::Look),
        1 => (0..3usize).prop_map(Step::Restart),
        2 => select(vec![0u64, 1, 7, 1_000, 2 * HOUR as u64]).prop_map(Step::Wait),
    ]
}

/// The second store's offset from the first: hours behind or ahead (beyond the bound), or half an
/// hour either way (within it).
fn skew() -> impl Strategy<Value = i64> {
    select(vec![
        -7 * HOUR,
        -2 * HOUR,
        -HOUR / 2,
        HOUR / 2,
        3 * HOUR,
        11 * HOUR,
    ])
}

/// The stores' wall clocks: each its own start, all moved by one elapsed time.
struct Clocks {
    starts: [u64; 3],
    elapsed: Arc<AtomicU64>,
}

impl Clocks {
    fn wall(&self, store: usize) -> WallClock {
        let (start, elapsed) = (self.starts[store], self.elapsed.clone());
        WallClock::new(move || start + elapsed.load(Ordering::SeqCst))
    }

    fn now(&self, store: usize) -> u64 {
        self.starts[store] + self.elapsed.load(Ordering::SeqCst)
    }
}

async fn open(dir: &Path, wall: WallClock) -> SessionStore {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    options.wall_clock = wall;
    SessionStore::open(options).await.unwrap()
}

async fn session(store: &SessionStore) -> NarrativeSession {
    serde_json::from_str(&store.load(USER, WORKSPACE).await.unwrap().session_json).unwrap()
}

fn value_of(session: &NarrativeSession, key: &str) -> Option<Value> {
    session.memory.get(key).cloned()
}

async fn run(skew: i64, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let now = wall_clock_millis() as i64;
    let clocks = Clocks {
        starts: [now as u64, (now + skew) as u64, YEAR_2100 as u64],
        elapsed: Arc::new(AtomicU64::new(0)),
    };
    let mut stores = Vec::new();
    for store in 0..3 {
        stores.push(open(dir.path(), clocks.wall(store)).await);
    }
    // The value of the last write of each field that landed.
    let mut landed: [Option<Value>; 2] = [None, None];
    for (n, step) in steps.into_iter().enumerate() {
        let step_store = match step {
            Step::Write { store, .. } | Step::Look(store) | Step::Restart(store) => Some(store),
            Step::Wait(_) => None,
        };
        match step {
            Step::Write { store, key, look } => {
                if look {
                    stores[store].reread(USER, WORKSPACE).await.unwrap();
                }
                let value = json!(format!("write {n} by store {store}"));
                let update = json!({"memory": {KEYS[key]: value}}).to_string();
                let outcome = stores[store]
                    .merge(USER, WORKSPACE, &update, None, DURABLE)
                    .await
                    .unwrap();
                let path = format!("memory.{}", KEYS[key]);
                let held = value_of(&session(&stores[store]).await, KEYS[key]);
                if look {
                    prop_assert!(
                        outcome.lost.is_empty(),
                        "step {}: store {} looked, then wrote {}, and lost: {:?}",
                        n,
                        store,
                        path,
                        outcome
                    );
                }
                if outcome.lost.is_empty() {
                    prop_assert_eq!(&outcome.changes, &vec![path.clone()], "step {}", n);
                    prop_assert_eq!(held.as_ref(), Some(&value), "step {}: said landed", n);
                    landed[key] = Some(value);
                } else {
                    prop_assert_eq!(&outcome.lost, &vec![path.clone()], "step {}", n);
                    prop_assert!(outcome.changes.is_empty(), "step {}: {:?}", n, outcome);
                    prop_assert_ne!(held.as_ref(), Some(&value), "step {}: said lost", n);
                }
            }
            Step::Look(store) => stores[store].reread(USER, WORKSPACE).await.unwrap(),
            Step::Restart(store) => {
                stores[store].close().await.unwrap();
                stores[store] = open(dir.path(), clocks.wall(store)).await;
            }
            Step::Wait(millis) => {
                clocks.elapsed.fetch_add(millis, Ordering::SeqCst);
            }
        }
        // The stores on time and hours off never hold an updatedAt ahead of their clocks.
        let touched = match step_store {
            Some(store) if store < 2 => store,
            _ => continue,
        };
        let updated = session(&stores[touched]).await.updated_at;
        let millis = parse_rfc3339_millis(&updated).unwrap() as u64;
        prop_assert!(
            millis <= clocks.now(touched),
            "step {}: store {} holds updatedAt {} ahead of its clock",
            n,
            touched,
            updated
        );
    }
    // Every store converges on the last write of each field that landed; so does a fresh reader.
    for store in &stores {
        store.reread(USER, WORKSPACE).await.unwrap();
    }
    for (i, store) in stores.iter().enumerate() {
        let held = session(store).await;
        for (key, last) in KEYS.iter().zip(&landed) {
            prop_assert_eq!(&value_of(&held, key), last, "store {}", i);
        }
    }
    for store in stores {
        store.close().await.unwrap();
    }
    let fresh = open(dir.path(), WallClock::system()).await;
    let held = session(&fresh).await;
    fresh.close().await.unwrap();
    for (key, last) in KEYS.iter().zip(&landed) {
        prop_assert_eq!(&value_of(&held, key), last, "on disk");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_later_write_wins_and_nothing_acknowledged_is_dropped(
        skew in skew(),
        steps in vec(step(), 1..24),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(skew, steps))?;
    }
}
