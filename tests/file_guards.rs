//! The file backend keeps what is damaged: a journal with a damaged record is repaired from its
//! intact records, and the journal as it was is kept aside (`S.journal.corrupt-<ms>`), byte for
//! byte, never deleted. (Snapshots and backups moved aside are tested in file_backend.rs,
//! special_files.rs and store.rs.)

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::file::FileBackend;
use mia_narrative_session::store::{MergeMode, SessionStore, StoreOptions};
use serde_json::json;
use support::records::{entry_ids, entry_record, new_session};

const USER: &str = "alice";
const WORKSPACE: &str = "/home/alice/proj";

fn key() -> SessionKey {
    SessionKey::new(USER, WORKSPACE).unwrap()
}

/// A journal of three records (entries e0, e1, e2) whose middle record has one digit of its
/// clock changed: the JSON still parses, only the checksum tells. Returns the journal's bytes.
fn damaged_journal() -> Vec<u8> {
    let session = new_session(&key());
    let frames: Vec<Vec<u8>> = ["e0", "e1", "e2"]
        .iter()
        .map(|id| entry_record(&session, id).1)
        .collect();
    let mut journal = frames.concat();
    let middle = frames[0].len() + 8;
    let digit = journal[middle..]
        .iter()
        .position(|b| b.is_ascii_digit())
        .unwrap()
        + middle;
    journal[digit] = if journal[digit] == b'7' { b'3' } else { b'7' };
    journal
}

/// Files in `dir` whose name starts with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    found.sort();
    found
}

#[test]
fn a_repaired_journal_keeps_its_damaged_version_aside_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::open(dir.path()).unwrap();
    let stem = key().file_stem();
    let path = dir.path().join(format!("{stem}.journal"));
    let damaged = damaged_journal();
    fs::write(&path, &damaged).unwrap();

    let lock = backend.lock(&stem).unwrap();
    let read = backend.read_journal(&stem, 0, &lock).unwrap();
    assert!(read.recovered);
    let mut session = new_session(&key());
    for patch in &read.patches {
        mia_narrative_session::merge::apply_patch(&mut session, patch).unwrap();
    }
    assert_eq!(entry_ids(&session), ["e0", "e2"]);

    let aside = files_starting(dir.path(), &format!("{stem}.journal.corrupt-"));
    assert_eq!(read.quarantined, aside);
    assert_eq!(aside.len(), 1, "the damaged journal is kept, once");
    assert_eq!(fs::read(&aside[0]).unwrap(), damaged);
    // The journal now holds the intact records, and the next read finds nothing to repair.
    let repaired = fs::read(&path).unwrap();
    assert_eq!(repaired.len() as u64, read.end());
    assert!(repaired.len() < damaged.len());
    let again = backend.read_journal(&stem, 0, &lock).unwrap();
    assert!(!again.recovered && again.quarantined.is_empty());
    assert_eq!(again.patches.len(), 2);
}

async fn open(dir: &Path) -> SessionStore {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    SessionStore::open(options).await.unwrap()
}

/// A store that finds a damaged journal beside a session loads every intact record, says it
/// recovered, and the damaged journal stays aside through later writes, compaction and a
/// restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_loads_the_intact_records_and_keeps_the_damaged_journal() {
    let dir = tempfile::tempdir().unwrap();
    let stem = key().file_stem();
    fs::write(
        dir.path().join(format!("{stem}.json")),
        serde_json::to_vec(&new_session(&key())).unwrap(),
    )
    .unwrap();
    let damaged = damaged_journal();
    fs::write(dir.path().join(format!("{stem}.journal")), &damaged).unwrap();

    let store = open(dir.path()).await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    assert!(loaded.recovered && !loaded.created);
    let session: NarrativeSession = serde_json::from_str(&loaded.session_json).unwrap();
    assert_eq!(entry_ids(&session), ["e0", "e2"]);
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    let update = json!({"memory": {"after": 1}}).to_string();
    store
        .merge(USER, WORKSPACE, &update, None, durable)
        .await
        .unwrap();
    store.close().await.unwrap(); // folds the journal into the snapshot

    let aside = files_starting(dir.path(), &format!("{stem}.journal.corrupt-"));
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(&aside[0]).unwrap(), damaged);
    let store = open(dir.path()).await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    assert!(!loaded.recovered);
    let session: NarrativeSession = serde_json::from_str(&loaded.session_json).unwrap();
    assert_eq!(entry_ids(&session), ["e0", "e2"]);
    assert_eq!(session.memory["after"], 1);
    store.close().await.unwrap();
    assert_eq!(
        files_starting(dir.path(), &format!("{stem}.journal.corrupt-")),
        aside
    );
}
