//! A scripted workload for the fault and power-loss tests: three users' sessions, durable and
//! ordinary merges, saves, flushes, cleanup and restarts (each `close()` folds every journal into
//! its snapshot), with entry sizes that make journals outgrow their snapshots now and then. A
//! [`Model`] keeps what the store acknowledged as durable; [`missing_after`] checks it against a
//! store opened afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::store::disk::Disk;
use mia_narrative_session::store::{MergeMode, SessionStore, StoreOptions};

use super::power_loss::Rng;

pub const WORKSPACE: &str = "/w";
pub const USERS: [&str; 3] = ["alice", "bob", "carol"];

pub fn options(dir: &Path, disk: Arc<dyn Disk>) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    options.unload_after = Duration::ZERO;
    // Small sessions held as text after every call: the crashes also fall between a session
    // parsed again from its text and its next write.
    options.fold_after = Duration::ZERO;
    options.disk = disk;
    options
}

/// What the store acknowledged, per user: the numbers of the writes (entry `e<n>` and
/// `memory.k<n> = n`).
#[derive(Debug, Default)]
pub struct Model {
    /// Acknowledged as durable.
    pub durable: BTreeMap<&'static str, Vec<u64>>,
    /// Applied, not yet acknowledged as durable.
    pending: BTreeMap<&'static str, Vec<u64>>,
    /// Every write ever applied: nothing else may turn up in a session.
    pub applied: BTreeMap<&'static str, Vec<u64>>,
}

impl Model {
    fn apply(&mut self, user: &'static str, n: u64) {
        self.pending.entry(user).or_default().push(n);
        self.applied.entry(user).or_default().push(n);
    }

    fn acknowledge(&mut self, user: &'static str) {
        let pending = self.pending.remove(user).unwrap_or_default();
        self.durable.entry(user).or_default().extend(pending);
    }

    fn acknowledge_all(&mut self) {
        for user in USERS {
            self.acknowledge(user);
        }
    }
}

fn update(n: u64, size: usize) -> String {
    serde_json::json!({
        "conversationHistory": [{ "id": format!("e{n}"), "role": "user", "content": "z".repeat(size) }],
        "memory": { format!("k{n}"): n },
    })
    .to_string()
}

/// Runs the workload of `seed` through `disk` in `dir`. Failures are expected (the disk fails on
/// purpose) and only what returned Ok counts as acknowledged. A durable merge that failed with its
/// change applied (`applied`) is pending: a later save writes it.
pub async fn workload(dir: &Path, disk: Arc<dyn Disk>, seed: u64, steps: usize) -> Model {
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let Ok(mut store) = SessionStore::open(options(dir, disk.clone())).await else {
        return model;
    };
    for n in 0..steps as u64 {
        let user = USERS[rng.below(USERS.len() as u64) as usize];
        let size = [10, 200, 3000][rng.below(3) as usize];
        match rng.below(10) {
            // Four durable merges at once: group commit acknowledges them with shared syncs.
            6 => {
                let merges: Vec<_> = (0..4)
                    .map(|k| {
                        let store = store.clone();
                        let id = n * 10 + k;
                        let text = update(id, size);
                        let mode = MergeMode {
                            with_session: false,
                            durable: true,
                        };
                        (
                            id,
                            tokio::spawn(async move {
                                store.merge(user, WORKSPACE, &text, None, mode).await
                            }),
                        )
                    })
                    .collect();
                for (id, merge) in merges {
                    match merge.await.unwrap() {
                        Ok(_) => {
                            model.apply(user, id);
                            model.durable.entry(user).or_default().push(id);
                        }
                        Err(e) if e.applied => model.apply(user, id),
                        Err(_) => {}
                    }
                }
            }
            0..=5 => {
                let durable = rng.chance();
                let mode = MergeMode {
                    with_session: false,
                    durable,
                };
                match store
                    .merge(user, WORKSPACE, &update(n * 10, size), None, mode)
                    .await
                {
                    Ok(_) => {
                        model.apply(user, n * 10);
                        if durable {
                            model.acknowledge(user);
                        }
                    }
                    Err(e) if e.applied => model.apply(user, n * 10),
                    Err(_) => {}
                }
            }
            7 => {
                if store.save(user, WORKSPACE).await.is_ok() {
                    model.acknowledge(user);
                }
            }
            8 => {
                if store.flush_dirty().await.is_ok() {
                    model.acknowledge_all();
                }
                let _ = store.cleanup(None, None).await;
            }
            _ => {
                if store.close().await.is_ok() {
                    model.acknowledge_all();
                }
                // What a failed close did not write went with the store: never acknowledged.
                model.pending.clear();
                match SessionStore::open(options(dir, disk.clone())).await {
                    Ok(next) => store = next,
                    Err(_) => return model,
                }
            }
        }
    }
    if store.close().await.is_ok() {
        model.acknowledge_all();
    }
    model
}

/// Opens a store on `disk` and checks `model` against it. Returns what is wrong: acknowledged
/// writes missing, writes that were never made, sessions that did not load or loaded recovered.
pub async fn check(
    dir: &Path,
    disk: Arc<dyn Disk>,
    model: &Model,
    allow_recovered: bool,
) -> Vec<String> {
    let store = match SessionStore::open(options(dir, disk)).await {
        Ok(store) => store,
        Err(e) => return vec![format!("the store does not open: {e}")],
    };
    let mut wrong = Vec::new();
    for user in USERS {
        let loaded = match store.load(user, WORKSPACE).await {
            Ok(loaded) => loaded,
            Err(e) => {
                wrong.push(format!("{user}: does not load: {e}"));
                continue;
            }
        };
        if loaded.recovered && !allow_recovered {
            wrong.push(format!("{user}: loaded from a damaged file"));
        }
        let session: NarrativeSession = serde_json::from_str(&loaded.session_json).unwrap();
        for n in model.durable.get(user).into_iter().flatten() {
            let entry = format!("e{n}");
            let has_entry = session.conversation_history.iter().any(|e| e.id == entry);
            let has_memory = session.memory.get(&format!("k{n}")) == Some(&(*n).into());
            if !has_entry || !has_memory {
                wrong.push(format!("{user}: acknowledged {entry} is missing"));
            }
        }
        let applied = model.applied.get(user).cloned().unwrap_or_default();
        for entry in &session.conversation_history {
            let made = entry.id[1..]
                .parse()
                .is_ok_and(|n: u64| applied.contains(&n));
            if !made {
                wrong.push(format!("{user}: {} was never written", entry.id));
            }
        }
    }
    let _ = store.close().await;
    wrong
}
