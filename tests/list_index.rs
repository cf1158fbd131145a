//! `list()`'s index (`sessions.index`): summaries come from it only while each session's files are
//! the ones it read. Whatever changes the files (another process's write, an operator's edit in
//! place with the same length, a delete, a new session), the next list says what the files hold;
//! a damaged, foreign or linked index is rebuilt and never followed.
//!
//! A file's change time cannot be set back, and a file changed in the last two seconds is never
//! cached, so these tests wait for that to pass where they need the index to hold a session.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::file::FileBackend;
use mia_narrative_session::store::list_index::{stored_summaries, ListStats, INDEX_NAME, SETTLE};
use mia_narrative_session::store::{SessionStore, SessionSummary};
use serde_json::json;
use support::{quiet_options, DURABLE};

fn user(i: usize) -> String {
    format!("user-{i}")
}

const WORKSPACE: &str = "/home/proj";

/// `count` sessions, user `i` with `i` story beats, folded into their snapshots by a close.
async fn seed(dir: &Path, count: usize) {
    let store = SessionStore::open(quiet_options(dir)).await.unwrap();
    for i in 0..count {
        let beats: Vec<_> = (0..i)
            .map(|b| json!({ "id": format!("b{b}"), "description": "beat", "type": "note" }))
            .collect();
        let update = json!({ "storyBeats": beats, "memory": { "n": i } });
        store
            .merge(&user(i), WORKSPACE, &update.to_string(), None, DURABLE)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
}

/// What a list says, in a store opened for it (so nothing is loaded in memory).
async fn listed(dir: &Path) -> Vec<SessionSummary> {
    let store = SessionStore::open(quiet_options(dir)).await.unwrap();
    let list = store.list().await.unwrap();
    store.close().await.unwrap();
    list
}

/// Lists through the index and says how many summaries came from it.
fn stats(dir: &Path) -> ListStats {
    stored_summaries(&FileBackend::open(dir).unwrap(), true)
        .unwrap()
        .1
}

/// Waits until every file written so far has settled long enough to be cached.
async fn settle() {
    tokio::time::sleep(SETTLE + Duration::from_millis(200)).await;
}

fn snapshot_path(dir: &Path, user: &str) -> std::path::PathBuf {
    dir.join(format!(
        "{}.json",
        SessionKey::new(user, WORKSPACE).unwrap().file_stem()
    ))
}

/// The names in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn beats_of(list: &[SessionSummary], user: &str) -> Option<usize> {
    list.iter().find(|s| s.user_id == user).map(|s| s.beats)
}

#[tokio::test]
async fn a_settled_store_lists_from_the_index_and_says_the_same() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 12).await;
    let fresh = listed(dir.path()).await;
    assert_eq!(
        stats(dir.path()).from_index,
        0,
        "files changed in the last two seconds are not cached"
    );
    settle().await;
    assert_eq!(
        stats(dir.path()),
        ListStats {
            from_index: 0,
            read: 12
        }
    );
    assert_eq!(
        stats(dir.path()),
        ListStats {
            from_index: 12,
            read: 0
        }
    );
    assert_eq!(listed(dir.path()).await, fresh);
    for i in 0..12 {
        assert_eq!(beats_of(&fresh, &user(i)), Some(i));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(INDEX_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn every_change_to_the_files_shows_in_the_next_list() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 6).await;
    settle().await;
    stats(dir.path());
    assert_eq!(stats(dir.path()).from_index, 6);

    // Another process appends to a journal, deletes a session and creates one.
    let other = SessionStore::open(quiet_options(dir.path())).await.unwrap();
    let beat = json!({ "storyBeats": [{ "id": "new", "description": "more", "type": "note" }] });
    other
        .merge(&user(1), WORKSPACE, &beat.to_string(), None, DURABLE)
        .await
        .unwrap();
    assert!(other.delete(&user(2), WORKSPACE).await.unwrap());
    other
        .merge("newcomer", WORKSPACE, &beat.to_string(), None, DURABLE)
        .await
        .unwrap();
    other.close().await.unwrap();

    // An operator edits a snapshot in place: same file, same length, another creation time.
    let path = snapshot_path(dir.path(), &user(3));
    let text = fs::read_to_string(&path).unwrap();
    let session: serde_json::Value = serde_json::from_str(&text).unwrap();
    let created = session["createdAt"].as_str().unwrap().to_string();
    let edited = text.replacen(
        &format!("\"createdAt\":\"{created}\""),
        "\"createdAt\":\"2020-01-01T00:00:00.000Z\"",
        1,
    );
    assert_eq!(edited.len(), text.len());
    fs::write(&path, &edited).unwrap();

    let list = listed(dir.path()).await;
    assert_eq!(beats_of(&list, &user(1)), Some(2));
    assert_eq!(beats_of(&list, &user(2)), None);
    assert_eq!(beats_of(&list, "newcomer"), Some(1));
    let three = list.iter().find(|s| s.user_id == user(3)).unwrap();
    assert_eq!(three.created_at, "2020-01-01T00:00:00.000Z");
    assert_eq!(list.len(), 6);
    // The sessions nobody touched still come from the index.
    assert!(stats(dir.path()).from_index >= 3);
}

#[tokio::test]
async fn a_damaged_or_foreign_index_is_rebuilt_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 5).await;
    let truth = listed(dir.path()).await;
    settle().await;
    let index = dir.path().join(INDEX_NAME);
    stats(dir.path());
    let good = fs::read(&index).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x5a;
    let mut forged: serde_json::Value = serde_json::from_slice(&good).unwrap();
    forged["version"] = json!(99);
    for damaged in [
        flipped,
        b"not json".to_vec(),
        Vec::new(),
        serde_json::to_vec(&forged).unwrap(),
    ] {
        fs::write(&index, &damaged).unwrap();
        assert_eq!(listed(dir.path()).await, truth);
        assert_eq!(
            stats(dir.path()).from_index,
            5,
            "rebuilt by the list before"
        );
    }

    // An index far larger than the sessions could need is not read.
    fs::write(&index, vec![b' '; 8 * 1024 * 1024]).unwrap();
    assert_eq!(listed(dir.path()).await, truth);
}

#[cfg(unix)]
#[tokio::test]
async fn an_index_that_is_a_link_out_of_the_data_dir_is_replaced_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    fs::write(&target, b"keep me").unwrap();
    seed(dir.path(), 3).await;
    let truth = listed(dir.path()).await;
    let index = dir.path().join(INDEX_NAME);
    fs::remove_file(&index).ok();
    std::os::unix::fs::symlink(&target, &index).unwrap();
    settle().await;

    assert_eq!(listed(dir.path()).await, truth);
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert!(fs::symlink_metadata(&index).unwrap().file_type().is_file());
    assert_eq!(stats(dir.path()).from_index, 3);
}

#[tokio::test]
async fn a_data_dir_that_cannot_take_the_index_lists_as_before() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 4).await;
    let truth = listed(dir.path()).await;
    settle().await;
    // A directory where the index would go: the rename fails, the list does not.
    fs::create_dir(dir.path().join(INDEX_NAME)).unwrap();
    assert_eq!(listed(dir.path()).await, truth);
    assert_eq!(
        stats(dir.path()),
        ListStats {
            from_index: 0,
            read: 4
        }
    );
    let leftovers: Vec<_> = file_names(dir.path())
        .into_iter()
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

#[tokio::test]
async fn with_the_index_off_a_list_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 3).await;
    settle().await;
    let names = || file_names(dir.path());
    let before = names();
    let mut options = quiet_options(dir.path());
    options.list_index = false;
    let store = SessionStore::open(options).await.unwrap();
    let list = store.list().await.unwrap();
    store.close().await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(names(), before);
    assert!(!dir.path().join(INDEX_NAME).exists());
    assert_eq!(listed(dir.path()).await, list);
    assert!(dir.path().join(INDEX_NAME).exists());
}
