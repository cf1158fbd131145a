//! Damaged files: for a small session's snapshot, backup and journal, every single-byte change
//! and every truncation, each loaded by a fresh store. Two promises are checked against what the
//! files held before the damage:
//! - nothing another copy holds is lost: a damaged snapshot falls back to the backup with every
//!   journal record replayed onto it; a damaged journal record costs that record only;
//! - nothing changed is accepted silently: a load that returns anything but the session as it was
//!   says `recovered`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mia_narrative_session::journal;
use mia_narrative_session::merge::apply_patch;
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::disk::{Disk, RealDisk};
use mia_narrative_session::store::{MergeMode, SessionStore, StoreOptions};

const USER: &str = "alice";
const WORKSPACE: &str = "/w";

fn options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    options
}

/// A file of the session, with its checksum mark if it has one.
#[derive(Clone, Debug)]
struct Stored {
    bytes: Vec<u8>,
    mark: Option<String>,
}

#[derive(Clone, Debug)]
struct Files {
    snapshot: Stored,
    backup: Stored,
    journal: Stored,
}

const ALL: [&str; 3] = ["snapshot", "backup", "journal"];

const KINDS: [(&str, &str); 3] = [
    ("snapshot", ".json"),
    ("backup", ".json.bak"),
    ("journal", ".journal"),
];

impl Files {
    fn get(&self, kind: &str) -> &Stored {
        match kind {
            "snapshot" => &self.snapshot,
            "backup" => &self.backup,
            _ => &self.journal,
        }
    }

    fn with(&self, kind: &str, bytes: Vec<u8>) -> Files {
        let mut files = self.clone();
        let stored = match kind {
            "snapshot" => &mut files.snapshot,
            "backup" => &mut files.backup,
            _ => &mut files.journal,
        };
        stored.bytes = bytes;
        files
    }

    /// Writes the files (and their marks) into `dir`.
    fn write(&self, dir: &Path, stem: &str) {
        std::fs::create_dir_all(dir).unwrap();
        for (kind, ext) in KINDS {
            let stored = self.get(kind);
            let mut file = RealDisk
                .create_new(&dir.join(format!("{stem}{ext}")))
                .unwrap();
            if let Some(mark) = &stored.mark {
                file.set_mark(mark).unwrap();
            }
            file.write_all(&stored.bytes).unwrap();
        }
    }
}

fn stem() -> String {
    SessionKey::new(USER, WORKSPACE).unwrap().file_stem()
}

fn merge_text(n: u32) -> String {
    serde_json::json!({
        "conversationHistory": [{ "id": format!("e{n}"), "role": "user", "content": format!("entry {n}") }],
        "memory": { format!("k{n}"): n },
        "storyBeats": [{ "id": format!("b{n}"), "title": format!("beat {n}") }],
    })
    .to_string()
}

/// A session written the way a store writes one: two versions of the snapshot (the older kept as
/// the backup) and three updates journaled since.
async fn written_files(dir: &Path) -> Files {
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    for round in 0..2 {
        let store = SessionStore::open(options(dir)).await.unwrap();
        for n in round * 2..round * 2 + 2 {
            store
                .merge(USER, WORKSPACE, &merge_text(n), None, durable)
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
    let store = SessionStore::open(options(dir)).await.unwrap();
    for n in 10..13 {
        store
            .merge(USER, WORKSPACE, &merge_text(n), None, durable)
            .await
            .unwrap();
    }
    let stem = stem();
    let read = |ext: &str| {
        let path = dir.join(format!("{stem}{ext}"));
        Stored {
            bytes: std::fs::read(&path).unwrap(),
            mark: RealDisk.mark(&path),
        }
    };
    let files = Files {
        snapshot: read(".json"),
        backup: read(".json.bak"),
        journal: read(".journal"),
    };
    assert!(journal::decode(&files.journal.bytes).patches.len() == 3);
    assert_ne!(files.snapshot.bytes, files.backup.bytes);
    files
}

/// What a session holds, as a set of facts (entry ids, beat ids, memory keys and values).
fn facts(session: &NarrativeSession) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    facts.extend(
        session
            .conversation_history
            .iter()
            .map(|e| format!("entry {}", e.id)),
    );
    facts.extend(session.story_beats.iter().map(|b| format!("beat {}", b.id)));
    facts.extend(
        session
            .memory
            .iter()
            .map(|(k, v)| format!("memory {k}={v}")),
    );
    facts
}

/// What a load must at least find: the best intact copy with every intact journal record.
fn at_least(files: &Files, damaged: &str, damage: &[u8]) -> BTreeSet<String> {
    let base = if damaged == "snapshot" {
        &files.backup.bytes
    } else {
        &files.snapshot.bytes
    };
    let mut session: NarrativeSession = serde_json::from_slice(base).unwrap();
    let original = journal::decode(&files.journal.bytes);
    for (record, patch) in original.records.iter().zip(&original.patches) {
        // A record the damage did not touch is intact.
        let intact = damaged != "journal"
            || damage.get(record.clone()) == Some(&files.journal.bytes[record.clone()]);
        if intact {
            apply_patch(&mut session, patch).unwrap();
        }
    }
    facts(&session)
}

async fn load_damaged(
    files: Files,
    damaged: &'static str,
    damage: Vec<u8>,
    what: String,
) -> Option<String> {
    let root = tempfile::tempdir_in(shm_or_tmp()).unwrap();
    let dir = root.path().join("sessions");
    let pristine = files.clone();
    files.with(damaged, damage.clone()).write(&dir, &stem());
    let store = SessionStore::open(options(&dir)).await.unwrap();
    let loaded = match store.load(USER, WORKSPACE).await {
        Ok(loaded) => loaded,
        Err(e) => return Some(format!("{what}: load failed: {e}")),
    };
    let _ = store.close().await;
    let session: NarrativeSession = serde_json::from_str(&loaded.session_json).unwrap();
    let got = facts(&session);
    let lost: Vec<_> = at_least(&pristine, damaged, &damage)
        .difference(&got)
        .cloned()
        .collect();
    if !lost.is_empty() {
        return Some(format!("{what}: lost {lost:?}"));
    }
    let mut whole: NarrativeSession = serde_json::from_slice(&pristine.snapshot.bytes).unwrap();
    for patch in journal::decode(&pristine.journal.bytes).patches {
        apply_patch(&mut whole, &patch).unwrap();
    }
    let expected = facts(&whole);
    // A journal cut short is what a crash during an append leaves, and cut at a record's end it
    // is a shorter journal, nothing else: that loses the records past the cut, unseen (they are
    // the last ones written; an acknowledged record was synced, so a crash never cuts it).
    let cut_journal = damaged == "journal"
        && damage.len() < pristine.journal.bytes.len()
        && pristine.journal.bytes.starts_with(&damage);
    if got != expected && !loaded.recovered && !cut_journal {
        let extra: Vec<_> = got.symmetric_difference(&expected).collect();
        return Some(format!("{what}: changed ({extra:?}) without `recovered`"));
    }
    None
}

fn shm_or_tmp() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Every damage of `kinds` of file, several loads at a time.
async fn every_damage(
    files: &Files,
    kinds: &[&'static str],
    damages: impl Fn(&[u8]) -> Vec<(String, Vec<u8>)>,
) -> Vec<String> {
    let mut runs = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for &kind in kinds {
        for (what, damage) in damages(&files.get(kind).bytes) {
            while runs.len() >= 16 {
                failures.extend(runs.join_next().await.unwrap().unwrap());
            }
            let files = files.clone();
            runs.spawn(load_damaged(files, kind, damage, format!("{kind}: {what}")));
        }
    }
    while let Some(done) = runs.join_next().await {
        failures.extend(done.unwrap());
    }
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn every_single_byte_change_is_caught_or_harmless() {
    let root = tempfile::tempdir_in(shm_or_tmp()).unwrap();
    let files = written_files(&root.path().join("sessions")).await;
    assert!(
        files.snapshot.mark.is_some(),
        "the snapshot carries its checksum mark (user extended attributes)"
    );
    let failures = every_damage(&files, &ALL, |bytes| {
        (0..bytes.len())
            .map(|at| {
                let mut damaged = bytes.to_vec();
                // A change that keeps JSON text JSON more often than a random byte would.
                damaged[at] = if damaged[at].is_ascii_digit() {
                    b'0' + (damaged[at] - b'0' + 1) % 10
                } else {
                    damaged[at] ^ 0x01
                };
                (format!("byte {at} changed"), damaged)
            })
            .collect()
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of them:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_truncation_is_caught_or_harmless() {
    let root = tempfile::tempdir_in(shm_or_tmp()).unwrap();
    let files = written_files(&root.path().join("sessions")).await;
    let failures = every_damage(&files, &ALL, |bytes| {
        (0..bytes.len())
            .map(|len| (format!("cut to {len} bytes"), bytes[..len].to_vec()))
            .collect()
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of them:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A file system without user extended attributes: no mark. Damage that still parses cannot be
/// seen in a snapshot then (docs/storage.md says so); what is checked is that a journal's
/// checksums still catch theirs, and that nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn without_marks_journal_damage_is_still_caught() {
    let root = tempfile::tempdir_in(shm_or_tmp()).unwrap();
    let mut files = written_files(&root.path().join("sessions")).await;
    files.snapshot.mark = None;
    files.backup.mark = None;
    let failures = every_damage(&files, &["journal"], |bytes| {
        (0..bytes.len())
            .map(|at| {
                let mut damaged = bytes.to_vec();
                damaged[at] ^= 0x01;
                (format!("byte {at} changed"), damaged)
            })
            .collect()
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
