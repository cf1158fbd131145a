//! The session store as a host uses it: load, merge, save, autosave, close, listeners, and two
//! server processes sharing one data directory (simulated by two stores on one directory).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::model::{NarrativeSession, UniverseFocus};
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::file::FileBackend;
use mia_narrative_session::store::{MergeEvent, MergeMode, SessionStore};
use serde_json::{json, Value};
use support::fault_disk::{FaultDisk, Faults, Op};
use support::quiet_options;

const USER: &str = "alice";
const WORKSPACE: &str = "/home/alice/proj";

async fn open(dir: &Path) -> SessionStore {
    SessionStore::open(quiet_options(dir)).await.unwrap()
}

fn session_file(dir: &Path) -> PathBuf {
    dir.join(format!(
        "{}.json",
        SessionKey::new(USER, WORKSPACE).unwrap().file_stem()
    ))
}

/// The session as the files hold it: the snapshot with its journal replayed.
fn on_disk(dir: &Path) -> NarrativeSession {
    let mut session: NarrativeSession =
        serde_json::from_slice(&fs::read(session_file(dir)).unwrap()).unwrap();
    let journal = session_file(dir).with_extension("journal");
    let patches =
        mia_narrative_session::journal::decode(&fs::read(journal).unwrap_or_default()).patches;
    for patch in &patches {
        mia_narrative_session::merge::apply_patch(&mut session, patch).unwrap();
    }
    session
}

fn parse(json: &str) -> NarrativeSession {
    serde_json::from_str(json).unwrap()
}

async fn merge(store: &SessionStore, update: Value) -> Vec<String> {
    store
        .merge(
            USER,
            WORKSPACE,
            &update.to_string(),
            None,
            Default::default(),
        )
        .await
        .unwrap()
        .changes
}

async fn current(store: &SessionStore) -> String {
    store
        .load(USER, WORKSPACE)
        .await
        .unwrap()
        .session_json
        .to_string()
}

/// Polls `check` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check().await
}

/// A session file as it looks on disk: the bytes, and (through the inode) whether it was replaced.
fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime, u64) {
    let meta = fs::metadata(path).unwrap();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    (fs::read(path).unwrap(), meta.modified().unwrap(), inode)
}

fn recorder(store: &SessionStore) -> (Arc<Mutex<Vec<MergeEvent>>>, u64) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let id = store.on_merge(Arc::new(move |event: &MergeEvent| {
        sink.lock().unwrap().push(event.clone())
    }));
    (events, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_load_creates_the_session_and_its_first_save_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let first = store.load(USER, WORKSPACE).await.unwrap();
    assert!(first.created);
    assert!(!first.recovered);
    let session = parse(&first.session_json);
    assert_eq!(session.user_id, USER);
    assert_eq!(session.workspace_id, WORKSPACE);
    assert_eq!(
        session.id,
        SessionKey::new(USER, WORKSPACE).unwrap().session_id()
    );
    assert_eq!(session.universe_focus, UniverseFocus::All);
    // Nothing is written by the load: the session holds nothing yet that could be lost.
    assert!(!session_file(dir.path()).exists(), "written by the load");

    let again = store.load(USER, WORKSPACE).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.session_json, first.session_json);
    assert!(
        store.save(USER, WORKSPACE).await.unwrap(),
        "a new session is dirty"
    );
    assert_eq!(on_disk(dir.path()), session, "stored by its first save");
    assert!(!store.save(USER, WORKSPACE).await.unwrap());
    store.close().await.unwrap();
}

/// A new session's first durable merge writes one snapshot holding the whole session (no
/// journal), and the session created by the load keeps its creation time through it.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_sessions_first_durable_merge_writes_its_snapshot_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let created = parse(&store.load(USER, WORKSPACE).await.unwrap().session_json);
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    let update = json!({"memory": {"goal": "first"}}).to_string();
    let outcome = store
        .merge(USER, WORKSPACE, &update, None, durable)
        .await
        .unwrap();
    assert_eq!(outcome.changes, vec!["memory.goal".to_string()]);
    assert!(!session_file(dir.path()).with_extension("journal").exists());
    let stored = on_disk(dir.path());
    assert_eq!(stored.memory["goal"], "first");
    assert_eq!(stored.created_at, created.created_at);
    // Read back by another store, as a crash right after the acknowledgement would leave it.
    let other = open(dir.path()).await;
    let loaded = other.load(USER, WORKSPACE).await.unwrap();
    assert!(!loaded.created);
    assert_eq!(parse(&loaded.session_json).memory["goal"], "first");
    other.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_store_on_the_same_directory_restores_everything_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.load(USER, WORKSPACE).await.unwrap();
    merge(
        &store,
        json!({
            "universeFocus": "story",
            "storyPosition": {"arc": "setup", "beat": 2, "phase": "rising"},
            "memory": {"goal": "ship", "when": "2026-01-01T00:00:00.000Z", "nested": {"n": [1, 2.5, null, {"deep": true}]},
                       "big": 12345678901234567890u64, "neg": -42},
            "config": {"theme": "dark", "fontSize": 14},
            "activeCharts": [{"id": "c1", "title": "Launch", "desiredOutcome": "live", "currentReality": "draft",
                              "actions": [{"id": "a1", "title": "write", "completed": true, "effort": "S"}],
                              "colour": "teal"}],
            "storyBeats": [{"id": "b1", "description": "first commit", "type": "commit", "sha": "abc"}],
            "conversationHistory": [{"id": "e1", "role": "user", "content": "hi", "universe": "engineer"}]
        }),
    )
    .await;
    let before = current(&store).await;
    store.close().await.unwrap();

    let reopened = open(dir.path()).await;
    let restored = reopened.load(USER, WORKSPACE).await.unwrap();
    assert!(!restored.created);
    assert!(!restored.recovered);
    assert_eq!(parse(&restored.session_json), parse(&before));
    let session = parse(&restored.session_json);
    assert_eq!(session.memory["big"], json!(12345678901234567890u64));
    assert_eq!(
        session.memory["nested"],
        json!({"n": [1, 2.5, null, {"deep": true}]})
    );
    assert_eq!(session.active_charts[0].actions[0].extra["effort"], "S");
    assert_eq!(session.story_beats[0].extra["sha"], "abc");
    reopened.close().await.unwrap();
}

/// A small session is held as its JSON text between calls and parsed again by the next call that
/// needs it; a large one stays parsed. Both must hold the same thing after the same calls: two
/// sessions, one padded past the size that is held as text, take the same updates, and after each
/// their JSON differs only in the padding, their ids and their clocks.
#[tokio::test(flavor = "multi_thread")]
async fn a_small_session_held_as_text_between_calls_holds_what_a_parsed_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (small, large) = ("small-user", "large-user");
    let pad = json!({"memory": {"pad": "p".repeat(40_000)}});
    store
        .merge(large, WORKSPACE, &pad.to_string(), None, Default::default())
        .await
        .unwrap();
    let updates = [
        json!({"universeFocus": "story", "memory": {"goal": "ship", "nested": {"n": [1, 2.5, null]}},
               "config": {"theme": "dark"}, "storyPosition": {"arc": "setup", "beat": 2, "phase": "rising"},
               "activeCharts": [{"id": "c1", "title": "Launch", "desiredOutcome": "live",
                                 "currentReality": "draft", "colour": "teal",
                                 "actions": [{"id": "a1", "title": "write", "order": 2, "effort": "S"}]}],
               "storyBeats": [{"id": "b1", "description": "first", "type": "commit", "sha": "abc",
                               "universeAnnotations": {"engineer": "e", "mood": "calm"}}],
               "conversationHistory": [{"id": "e2", "role": "user", "content": "second",
                                        "timestamp": "2026-01-01T00:00:02.000Z"}]}),
        json!({"memory": {"goal": null, "nested": {"n": [3]}},
               "conversationHistory": [{"id": "e1", "role": "user", "content": "first",
                                        "timestamp": "2026-01-01T00:00:01.000Z"}]}),
        json!({"activeCharts": [{"id": "c1", "actions": [{"id": "a1", "completed": true,
                                                          "completedAt": "2026-01-02T00:00:00.000Z"},
                                                         {"id": "a0", "title": "plan", "order": 1}]}]}),
        json!({"universeFocus": "engineer", "config": {"theme": null, "fontSize": 14}}),
    ];
    // Without the padding, the ids, and the times and clocks each merge stamps.
    fn without_stamps(value: &mut Value) {
        if let Some(object) = value.as_object_mut() {
            object.remove("createdAt");
            object.remove("updatedAt");
        }
        match value {
            Value::Object(object) => object.values_mut().for_each(without_stamps),
            Value::Array(items) => items.iter_mut().for_each(without_stamps),
            _ => {}
        }
    }
    let comparable = |text: &str| {
        let mut value: Value = serde_json::from_str(text).unwrap();
        let object = value.as_object_mut().unwrap();
        for field in ["id", "userId", "versions"] {
            object.remove(field);
        }
        object["memory"].as_object_mut().unwrap().remove("pad");
        without_stamps(&mut value);
        value
    };
    for update in &updates {
        for user in [small, large] {
            store
                .merge(
                    user,
                    WORKSPACE,
                    &update.to_string(),
                    None,
                    Default::default(),
                )
                .await
                .unwrap();
        }
        // A read in between: the text of a session held as text is what the load sends.
        let small_text = store.load(small, WORKSPACE).await.unwrap().session_json;
        let large_text = store.load(large, WORKSPACE).await.unwrap().session_json;
        assert_eq!(
            comparable(&small_text),
            comparable(&large_text),
            "after {update}"
        );
    }
    let last = comparable(&store.load(small, WORKSPACE).await.unwrap().session_json);
    assert_eq!(last["activeCharts"][0]["colour"], "teal");
    assert_eq!(last["storyBeats"][0]["universeAnnotations"]["mood"], "calm");
    assert_eq!(last["memory"], json!({"nested": {"n": [3]}}));
    assert_eq!(last["config"], json!({"fontSize": 14}));

    // What list() shows of each (neither has been written yet) is what the session holds.
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    for summary in &listed {
        assert_eq!((summary.charts, summary.beats, summary.entries), (1, 1, 2));
    }
    store.close().await.unwrap();

    // And what was written is the same.
    let reopened = open(dir.path()).await;
    let small_text = reopened.load(small, WORKSPACE).await.unwrap().session_json;
    let large_text = reopened.load(large, WORKSPACE).await.unwrap().session_json;
    assert_eq!(comparable(&small_text), comparable(&large_text));
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn save_writes_only_when_there_is_something_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.load(USER, WORKSPACE).await.unwrap();
    assert!(
        store.save(USER, WORKSPACE).await.unwrap(),
        "a new session is written by its first save"
    );
    assert!(
        !store.save(USER, WORKSPACE).await.unwrap(),
        "a saved session is on disk"
    );
    merge(&store, json!({"memory": {"goal": "ship"}})).await;
    assert!(store.save(USER, WORKSPACE).await.unwrap());
    assert_eq!(on_disk(dir.path()).memory["goal"], "ship");
    assert!(!store.save(USER, WORKSPACE).await.unwrap());
    assert!(
        !store.save("bob", WORKSPACE).await.unwrap(),
        "a session never loaded has nothing to save"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_saves_on_many_sessions_writes_every_one() {
    // More saves at once than the store writes at once: the rest wait their turn, none is lost.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    for user in &users {
        store.load(user, WORKSPACE).await.unwrap();
        let update = json!({"memory": {"owner": user}}).to_string();
        let merged = store.merge(user, WORKSPACE, &update, None, Default::default());
        merged.await.unwrap();
    }
    let saves: Vec<_> = users
        .iter()
        .map(|user| {
            let (store, user) = (store.clone(), user.clone());
            tokio::spawn(async move { store.save(&user, WORKSPACE).await })
        })
        .collect();
    for save in saves {
        assert!(
            save.await.unwrap().unwrap(),
            "each session had a change to write"
        );
    }
    drop(store);
    let reopened = open(dir.path()).await;
    for user in &users {
        let loaded = reopened.load(user, WORKSPACE).await.unwrap();
        assert_eq!(parse(&loaded.session_json).memory["owner"], json!(user));
    }
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_directory_keep_both_updates() {
    // Two server processes share a data dir; each merges its own update, then both save.
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    let second = open(dir.path()).await;
    first.load(USER, WORKSPACE).await.unwrap();
    second.load(USER, WORKSPACE).await.unwrap();

    merge(
        &first,
        json!({"memory": {"fromFirst": 1}, "storyBeats": [{"id": "b-first", "type": "commit"}]}),
    )
    .await;
    merge(
        &second,
        json!({"memory": {"fromSecond": 2}, "storyBeats": [{"id": "b-second", "type": "deploy"}]}),
    )
    .await;
    first.save(USER, WORKSPACE).await.unwrap();
    second.save(USER, WORKSPACE).await.unwrap();

    let stored = on_disk(dir.path());
    assert_eq!(stored.memory["fromFirst"], 1);
    assert_eq!(stored.memory["fromSecond"], 2);
    let beats: Vec<&str> = stored.story_beats.iter().map(|b| b.id.as_str()).collect();
    assert!(
        beats.contains(&"b-first") && beats.contains(&"b-second"),
        "{beats:?}"
    );
    first.close().await.unwrap();
    second.close().await.unwrap();
    let stored = on_disk(dir.path());
    assert_eq!(
        (
            stored.memory.get("fromFirst"),
            stored.memory.get("fromSecond")
        ),
        (Some(&json!(1)), Some(&json!(2)))
    );
}

/// A load's text is kept until the session changes. Every way a loaded session changes shows in
/// the next load: a merge here, records another store appended, a snapshot another store
/// rewrote. A merge that changes nothing leaves the text as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_after_any_change_returns_the_changed_session() {
    let dir = tempfile::tempdir().unwrap();
    let reading = open(dir.path()).await;
    let writing = open(dir.path()).await;
    writing.load(USER, WORKSPACE).await.unwrap();
    current(&reading).await;

    merge(&reading, json!({"memory": {"here": 1}})).await;
    let text = current(&reading).await;
    assert_eq!(parse(&text).memory["here"], 1, "a merge here");
    assert_eq!(
        merge(&reading, json!({"memory": {"here": 1}})).await,
        Vec::<String>::new()
    );
    assert_eq!(
        current(&reading).await,
        text,
        "a merge that changed nothing"
    );

    merge(&writing, json!({"memory": {"appended": 2}})).await;
    writing.save(USER, WORKSPACE).await.unwrap();
    let appended = eventually(Duration::from_secs(5), async || {
        parse(&current(&reading).await).memory.get("appended") == Some(&json!(2))
    })
    .await;
    assert!(appended, "records another store appended");

    merge(&writing, json!({"memory": {"rewritten": 3}})).await;
    writing.close().await.unwrap();
    let rewritten = eventually(Duration::from_secs(5), async || {
        parse(&current(&reading).await).memory.get("rewritten") == Some(&json!(3))
    })
    .await;
    assert!(rewritten, "a snapshot another store rewrote");
    reading.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_hears_of_another_stores_write_as_an_external_merge() {
    let dir = tempfile::tempdir().unwrap();
    let listening = open(dir.path()).await;
    let writing = open(dir.path()).await;
    listening.load(USER, WORKSPACE).await.unwrap();
    writing.load(USER, WORKSPACE).await.unwrap();
    let (events, _) = recorder(&listening);

    merge(&writing, json!({"memory": {"goal": "from elsewhere"}})).await;
    writing.save(USER, WORKSPACE).await.unwrap();

    let arrived = eventually(Duration::from_secs(5), async || {
        parse(&current(&listening).await).memory.get("goal") == Some(&json!("from elsewhere"))
    })
    .await;
    assert!(arrived, "the live session picks up the other store's write");
    let events = events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e.origin == "external" && e.changes.contains(&"memory.goal".to_string())),
        "{events:?}"
    );
    listening.close().await.unwrap();
    writing.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn autosave_writes_dirty_sessions_and_never_rewrites_a_clean_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = quiet_options(dir.path());
    options.autosave_interval = Duration::from_millis(50);
    let store = SessionStore::open(options).await.unwrap();
    store.load(USER, WORKSPACE).await.unwrap();
    let file = session_file(dir.path());
    // The new session is written by the first tick, then never again while it is clean.
    assert!(eventually(Duration::from_secs(5), async || file.exists()).await);

    let clean = fingerprint(&file);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        fingerprint(&file) == clean,
        "a clean session is not rewritten by autosave"
    );

    merge(&store, json!({"memory": {"goal": "autosaved"}})).await;
    let saved = eventually(Duration::from_secs(5), async || {
        on_disk(dir.path()).memory.get("goal") == Some(&json!("autosaved"))
    })
    .await;
    assert!(
        saved,
        "autosave writes the dirty session without a save() call"
    );
    let listed = store.list().await.unwrap();
    assert!(listed[0].loaded && !listed[0].dirty, "{listed:?}");

    let written = fingerprint(&file);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        fingerprint(&file) == written,
        "once saved, later ticks leave the file alone"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_update_is_refused_with_einvalid_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.load(USER, WORKSPACE).await.unwrap();
    merge(&store, json!({"memory": {"goal": "ship"}})).await;
    store.save(USER, WORKSPACE).await.unwrap();
    let before = current(&store).await;
    let (events, _) = recorder(&store);

    for bad in [
        r#"{"universeFocus":"galaxy"}"#,
        r#"{"memory":{"goal":"changed"},"activeCharts":[{"title":"a chart without an id"}]}"#,
        r#"{"memory":{"goal":"changed"},"conversationHistory":[{"id":"e","role":"user","timestamp":"yesterday"}]}"#,
        r#"{"memory":{"goal":"changed"},"versions":{"memory.goal":"not a clock"}}"#,
        r#"{"memory":{"goal":"changed"},"userName":"unknown field"}"#,
        r#"["not", "an", "object"]"#,
        "{ torn",
    ] {
        let err = store
            .merge(USER, WORKSPACE, bad, None, Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Invalid, "{bad}: {err}");
    }
    assert_eq!(current(&store).await, before);
    assert!(
        events.lock().unwrap().is_empty(),
        "no listener hears of a refused update"
    );
    assert!(
        !store.save(USER, WORKSPACE).await.unwrap(),
        "nothing was made dirty"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_that_would_pass_the_size_limit_is_refused_with_etoolarge() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = quiet_options(dir.path());
    options.max_session_bytes = 4096;
    let store = SessionStore::open(options).await.unwrap();
    store.load(USER, WORKSPACE).await.unwrap();
    let big = |n: usize| json!({"memory": {"notes": "x".repeat(n)}}).to_string();

    // An update larger than the limit on its own.
    let err = store
        .merge(USER, WORKSPACE, &big(5000), None, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);

    // Updates that fit alone but not together.
    store
        .merge(USER, WORKSPACE, &big(1800), None, Default::default())
        .await
        .unwrap();
    let before = current(&store).await;
    store.save(USER, WORKSPACE).await.unwrap();
    let err = store
        .merge(
            USER,
            WORKSPACE,
            &json!({"memory": {"more": "y".repeat(3000)}}).to_string(),
            None,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    assert_eq!(current(&store).await, before, "nothing changed");
    assert!(
        !store.save(USER, WORKSPACE).await.unwrap(),
        "and nothing is dirty"
    );
    store.close().await.unwrap();
}

/// The store's estimate of a session's size decides whether a merge near the limit is made on a
/// copy. A compaction in the background sets it from the snapshot it wrote: right after one, an
/// update that would pass the limit is still refused, and the session stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_past_the_size_limit_right_after_a_compaction_is_refused() {
    const MAX: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut options = quiet_options(dir.path());
    options.max_session_bytes = MAX;
    let store = SessionStore::open(options).await.unwrap();
    store.load(USER, WORKSPACE).await.unwrap();
    merge(&store, json!({"memory": {"base": "b".repeat(890_000)}})).await;
    store.save(USER, WORKSPACE).await.unwrap();
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    let journal = session_file(dir.path()).with_extension("journal");
    let len = |path: &Path| fs::metadata(path).map_or(0, |m| m.len());
    // Durable merges that replace one 150 KB value: the session stays near 1 MB while its
    // journal grows, until the journal outgrows the snapshot and a compaction is due.
    let mut last = String::new();
    for n in 0..20 {
        last = format!("{n}").repeat(150_000 / format!("{n}").len());
        let update = json!({"memory": {"churn": last}}).to_string();
        store
            .merge(USER, WORKSPACE, &update, None, durable)
            .await
            .unwrap();
        if len(&journal) > len(&session_file(dir.path())) {
            break;
        }
    }
    let compacted = eventually(Duration::from_secs(10), async || {
        let snapshot: NarrativeSession =
            serde_json::from_slice(&fs::read(session_file(dir.path())).unwrap()).unwrap();
        snapshot.memory.get("churn").and_then(Value::as_str) == Some(last.as_str())
            && !journal.exists()
    })
    .await;
    assert!(compacted, "the compaction folded in every merge");
    let size = len(&session_file(dir.path())) as usize;
    assert!(size < MAX && size + 12_000 > MAX, "{size}");

    let before = current(&store).await;
    let err = store
        .merge(
            USER,
            WORKSPACE,
            &json!({"memory": {"extra": "e".repeat(12_000)}}).to_string(),
            None,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    assert_eq!(current(&store).await, before, "nothing changed");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_close_every_call_fails_with_eclosed_and_dirty_work_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.load(USER, WORKSPACE).await.unwrap();
    merge(&store, json!({"memory": {"goal": "flushed by close"}})).await;
    store.close().await.unwrap();
    assert_eq!(on_disk(dir.path()).memory["goal"], "flushed by close");

    let closed = |r: Result<(), mia_narrative_session::error::StoreError>| {
        assert_eq!(r.unwrap_err().code, ErrorCode::Closed)
    };
    closed(store.load(USER, WORKSPACE).await.map(|_| ()));
    closed(
        store
            .merge(USER, WORKSPACE, "{}", None, Default::default())
            .await
            .map(|_| ()),
    );
    closed(store.save(USER, WORKSPACE).await.map(|_| ()));
    closed(store.delete(USER, WORKSPACE).await.map(|_| ()));
    closed(store.list().await.map(|_| ()));
    closed(store.cleanup(None, None).await.map(|_| ()));
    store.close().await.expect("a second close does nothing");
}

/// Every file operation that writes: what a full disk fails.
const WRITES: [Op; 7] = [
    Op::Create,
    Op::OpenAppend,
    Op::Write,
    Op::Rename,
    Op::Link,
    Op::SyncData,
    Op::SyncAll,
];

async fn open_failing(dir: &Path, faults: &Faults) -> SessionStore {
    let mut options = quiet_options(dir);
    options.disk = Arc::new(FaultDisk::new(faults.clone()));
    SessionStore::open(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn close_frees_the_sessions_and_a_failed_close_keeps_them_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let store = open_failing(dir.path(), &faults).await;
    store.load(USER, WORKSPACE).await.unwrap();
    store.load("bob", WORKSPACE).await.unwrap();
    merge(
        &store,
        json!({"memory": {"goal": "kept through a failed close"}}),
    )
    .await;
    assert_eq!(store.loaded_sessions(), 2);

    // The disk is full: neither a snapshot nor an append can be written.
    faults.fail_every(&WRITES, libc::ENOSPC);
    let failed = store.close().await.unwrap_err();
    assert_eq!(failed.code, ErrorCode::Io);
    assert_eq!(store.loaded_sessions(), 2, "nothing unsaved is dropped");
    assert_eq!(
        store.load(USER, WORKSPACE).await.unwrap_err().code,
        ErrorCode::Closed
    );

    faults.heal();
    let report = store.close().await.unwrap();
    // The merged session, and bob's, new and so never written yet.
    assert_eq!(report.written, 2);
    assert!(report.not_compacted.is_empty());
    assert_eq!(store.loaded_sessions(), 0);
    assert_eq!(
        on_disk(dir.path()).memory["goal"],
        "kept through a failed close"
    );
}

/// A nearly full disk: room for an append, not for a second copy of the session. The records
/// are appended (durable), and close says which session it could not fold into a snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_that_fails_leaves_the_journal_in_use_and_close_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let store = open_failing(dir.path(), &faults).await;
    store.load(USER, WORKSPACE).await.unwrap();
    assert!(
        store.save(USER, WORKSPACE).await.unwrap(),
        "the new session is stored"
    );
    // New files cannot be made: every snapshot write needs one (its temp file).
    faults.fail_every(&[Op::Create], libc::ENOSPC);
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    for n in 0..20 {
        // Large enough that the journal outgrows the snapshot: a compaction is due, and fails.
        let update = json!({"memory": {format!("k{n}"): "x".repeat(2000)}}).to_string();
        store
            .merge(USER, WORKSPACE, &update, None, durable)
            .await
            .expect("a durable merge that fits in the journal is written there");
    }
    let report = store.close().await.unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(report.not_compacted.len(), 1, "{report:?}");
    assert_eq!(
        report.not_compacted[0].0,
        SessionKey::new(USER, WORKSPACE).unwrap().session_id()
    );
    let stored = on_disk(dir.path());
    for n in 0..20 {
        assert_eq!(stored.memory[&format!("k{n}")], "x".repeat(2000));
    }

    // Room again: the next close folds the journal in.
    faults.heal();
    let store = open_failing(dir.path(), &faults).await;
    merge(&store, json!({"memory": {"after": 1}})).await;
    let report = store.close().await.unwrap();
    assert!(report.not_compacted.is_empty());
    assert!(!session_file(dir.path()).with_extension("journal").exists());
    assert_eq!(on_disk(dir.path()).memory["k19"], "x".repeat(2000));
}

/// A durable merge whose write fails stays applied: its error says so, listeners hear of it,
/// and the next save writes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_durable_merge_that_cannot_be_written_says_it_was_applied_and_is_heard() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let store = open_failing(dir.path(), &faults).await;
    store.load(USER, WORKSPACE).await.unwrap();
    let (events, _id) = recorder(&store);
    faults.fail_every(&WRITES, libc::ENOSPC);
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    let err = store
        .merge(
            USER,
            WORKSPACE,
            r#"{"memory":{"goal":"applied"}}"#,
            None,
            durable,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Io);
    assert!(err.applied, "{err:?}");
    assert!(err.message.contains("applied"), "{}", err.message);
    assert_eq!(events.lock().unwrap().len(), 1, "the merge event is sent");
    faults.heal();
    assert!(store.save(USER, WORKSPACE).await.unwrap());
    assert_eq!(on_disk(dir.path()).memory["goal"], "applied");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_merge_that_close_did_not_refuse_is_on_disk_after_it() {
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        // Large, so that each merge spends a while parsing before it reaches its session: the
        // time close() has to slip in. Made before the merges start.
        let pad = "x".repeat(512 << 10);
        let merges: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let update = json!({"memory": {"n": i, "pad": pad}}).to_string();
                tokio::spawn(async move {
                    let user = format!("user-{i}");
                    let done = store
                        .merge(&user, WORKSPACE, &update, None, Default::default())
                        .await;
                    (user, done.map(|_| ()))
                })
            })
            .collect();
        // close() races the merges: each is refused with ECLOSED or is written by close.
        tokio::time::sleep(Duration::from_micros(50 * round)).await;
        store.close().await.unwrap();
        let reopened = open(dir.path()).await;
        for merge in merges {
            let (user, done) = merge.await.unwrap();
            match done {
                Err(e) => assert_eq!(e.code, ErrorCode::Closed),
                Ok(()) => {
                    let json = reopened.load(&user, WORKSPACE).await.unwrap().session_json;
                    assert!(
                        parse(&json).memory.contains_key("n"),
                        "round {round}: {user}'s acknowledged merge was lost"
                    );
                }
            }
        }
        reopened.close().await.unwrap();
    }
}

/// A store that checks for idle sessions every 20 ms and unloads those unused for `unload_after`.
async fn open_unloading(dir: &Path, unload_after: Duration) -> SessionStore {
    let mut options = quiet_options(dir);
    options.autosave_interval = Duration::from_millis(20);
    options.unload_after = unload_after;
    SessionStore::open(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unused_session_leaves_memory_once_written_and_a_used_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unloading(dir.path(), Duration::from_millis(150)).await;
    store.load("bob", WORKSPACE).await.unwrap();
    merge(
        &store,
        json!({"memory": {"goal": "written, then unloaded"}}),
    )
    .await;
    assert_eq!(store.loaded_sessions(), 2);

    // Alice's session is used every 30 ms for 600 ms; Bob's not at all.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        store.load(USER, WORKSPACE).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        store.loaded_sessions(),
        1,
        "Bob's session went, Alice's stayed"
    );
    assert!(
        eventually(Duration::from_secs(5), async || store.loaded_sessions()
            == 0)
        .await,
        "Alice's went once unused"
    );
    assert_eq!(on_disk(dir.path()).memory["goal"], "written, then unloaded");

    // The next call loads it again, whole.
    assert_eq!(
        parse(&current(&store).await).memory["goal"],
        "written, then unloaded"
    );
    assert_eq!(store.loaded_sessions(), 1);
    store.close().await.unwrap();
}

/// Group commit: durable merges that arrive while one is being synced are acknowledged together by
/// the next sync. Every one is acknowledged, every one is on disk, and there are far fewer syncs
/// than merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_merges_issued_at_once_share_their_syncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let store = open_failing(dir.path(), &faults).await;
    store.load(USER, WORKSPACE).await.unwrap();
    let before = faults.count_of(Op::SyncData);
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    let merges = (0..100).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let update = json!({"memory": {format!("k{n}"): n}}).to_string();
            store.merge(USER, WORKSPACE, &update, None, durable).await
        })
    });
    for merge in futures_all(merges).await {
        let outcome = merge.unwrap().unwrap();
        assert_eq!(outcome.changes.len(), 1);
    }
    let syncs = faults.count_of(Op::SyncData) - before;
    assert!(syncs < 50, "100 durable merges at once took {syncs} syncs");
    // On disk as another process would read it, without a close.
    let stored = on_disk(dir.path());
    for n in 0..100 {
        assert_eq!(stored.memory[&format!("k{n}")], n, "k{n}");
    }
    store.close().await.unwrap();
}

/// A journal that outgrows its snapshot is folded in by a compaction in the background: the durable
/// merges go on appending, the snapshot catches up, and the journal shrinks back to what came after.
#[tokio::test(flavor = "multi_thread")]
async fn a_journal_that_outgrows_its_snapshot_is_compacted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.load(USER, WORKSPACE).await.unwrap();
    let durable = MergeMode {
        with_session: false,
        durable: true,
    };
    for n in 0..40 {
        let update = json!({"memory": {format!("k{n}"): "x".repeat(2000)}}).to_string();
        store
            .merge(USER, WORKSPACE, &update, None, durable)
            .await
            .unwrap();
    }
    let journal = session_file(dir.path()).with_extension("journal");
    let snapshot_holds_all = || {
        let snapshot: NarrativeSession =
            serde_json::from_slice(&fs::read(session_file(dir.path())).unwrap()).unwrap();
        let journal_len = fs::metadata(&journal).map_or(0, |m| m.len());
        let snapshot_len = fs::metadata(session_file(dir.path())).unwrap().len();
        // How many keys the last compaction folded in depends on how fast it ran: a snapshot of
        // k keys is outgrown by the journal of the remaining 40 - k merges while k < 20, and then
        // folded again. So once it settles, the snapshot holds at least 20 keys.
        snapshot.memory.len() >= 20 && journal_len <= snapshot_len
    };
    assert!(
        eventually(Duration::from_secs(10), async || snapshot_holds_all()).await,
        "the snapshot caught up and the journal shrank"
    );
    let stored = on_disk(dir.path());
    for n in 0..40 {
        assert_eq!(stored.memory[&format!("k{n}")], "x".repeat(2000), "k{n}");
    }
    store.close().await.unwrap();
}

async fn futures_all<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<std::result::Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_write_fails_stays_in_memory_until_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let mut options = quiet_options(dir.path());
    options.disk = Arc::new(FaultDisk::new(faults.clone()));
    options.autosave_interval = Duration::from_millis(20);
    options.unload_after = Duration::from_millis(1);
    let store = SessionStore::open(options).await.unwrap();
    store.load(USER, WORKSPACE).await.unwrap();
    // A full disk: autosave's writes fail.
    faults.fail_every(&WRITES, libc::ENOSPC);
    merge(&store, json!({"memory": {"goal": "not lost"}})).await;
    assert!(
        eventually(Duration::from_secs(5), async || faults.failures() >= 3).await,
        "autosave tried, and failed, a few times"
    );
    assert_eq!(store.loaded_sessions(), 1, "unwritten, so kept");

    faults.heal();
    assert!(
        eventually(Duration::from_secs(5), async || store.loaded_sessions()
            == 0)
        .await
    );
    assert_eq!(on_disk(dir.path()).memory["goal"], "not lost");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn listeners_hear_each_merge_with_its_origin_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (events, id) = recorder(&store);

    store
        .merge(
            USER,
            WORKSPACE,
            r#"{"memory":{"goal":"ship"}}"#,
            Some("tab-1"),
            Default::default(),
        )
        .await
        .unwrap();
    store
        .merge(
            USER,
            WORKSPACE,
            r#"{"universeFocus":"ceremony"}"#,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    {
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            MergeEvent {
                user_id: USER.into(),
                workspace_id: WORKSPACE.into(),
                session_id: SessionKey::new(USER, WORKSPACE).unwrap().session_id(),
                origin: "tab-1".into(),
                changes: vec!["memory.goal".into()],
            }
        );
        assert_eq!(events[1].origin, "local", "the default origin");
        assert_eq!(events[1].changes, ["universeFocus"]);
    }

    assert!(store.remove_listener(id));
    store
        .merge(
            USER,
            WORKSPACE,
            r#"{"memory":{"goal":"again"}}"#,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        events.lock().unwrap().len(),
        2,
        "a removed listener hears nothing"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_list_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (events, _) = recorder(&store);

    assert_eq!(
        merge(&store, json!({"memory": {"goal": "ship"}})).await,
        ["memory.goal"]
    );
    assert!(
        merge(&store, json!({"memory": {"goal": "ship"}}))
            .await
            .is_empty(),
        "the same value again is no change"
    );
    assert_eq!(
        merge(&store, json!({"memory": {"goal": "ship", "mood": "calm"}})).await,
        ["memory.mood"]
    );
    assert_eq!(
        merge(&store, json!({"memory": {"mood": null}})).await,
        ["memory.mood"],
        "a deletion is a change"
    );
    assert!(
        merge(&store, json!({"memory": {"mood": null}}))
            .await
            .is_empty(),
        "deleting it again is not"
    );
    assert_eq!(
        merge(&store, json!({"universeFocus": "story"})).await,
        ["universeFocus"]
    );
    assert!(merge(&store, json!({"universeFocus": "story"}))
        .await
        .is_empty());

    let chart = json!({"activeCharts": [{"id": "c1", "title": "Launch"}]});
    let added = merge(&store, chart.clone()).await;
    assert!(added.contains(&"activeCharts.c1".to_string()), "{added:?}");
    assert!(
        added.iter().all(|p| p.starts_with("activeCharts.c1")),
        "{added:?}"
    );
    assert!(
        merge(&store, chart).await.is_empty(),
        "a chart sent back unchanged"
    );
    assert_eq!(
        merge(
            &store,
            json!({"activeCharts": [{"id": "c1", "title": "Launch v2"}]})
        )
        .await,
        ["activeCharts.c1.title"]
    );

    let entry = json!({"conversationHistory": [{"id": "e1", "role": "user", "content": "hi",
                                                 "timestamp": "2026-01-01T00:00:00.000Z"}]});
    assert_eq!(
        merge(&store, entry.clone()).await,
        ["conversationHistory.e1"]
    );
    assert!(merge(&store, entry).await.is_empty(), "an entry sent twice");

    let sent = events.lock().unwrap().len();
    assert_eq!(sent, 7, "one event for each merge that changed something");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_resent_without_a_timestamp_keeps_its_first_one() {
    // A client replaying its history after a reconnect may leave timestamps to the server.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let entry = json!({"conversationHistory": [{"id": "e1", "role": "user", "content": "hi"}],
                       "storyBeats": [{"id": "b1", "type": "commit"}]});
    assert_eq!(
        merge(&store, entry.clone()).await,
        ["storyBeats.b1", "conversationHistory.e1"]
    );
    let first = parse(&current(&store).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        merge(&store, entry).await.is_empty(),
        "resending is no change"
    );
    let second = parse(&current(&store).await);
    assert_eq!(second.conversation_history, first.conversation_history);
    assert_eq!(second.story_beats, first.story_beats);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_session_is_gone_from_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    merge(&store, json!({"memory": {"goal": "ship"}})).await;
    store.save(USER, WORKSPACE).await.unwrap();
    assert!(store.delete(USER, WORKSPACE).await.unwrap());
    assert!(!session_file(dir.path()).exists());
    assert!(store.list().await.unwrap().is_empty());
    let fresh = store.load(USER, WORKSPACE).await.unwrap();
    assert!(fresh.created);
    assert!(parse(&fresh.session_json).memory.is_empty());
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_file_is_recovered_from_the_backup_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    merge(&store, json!({"memory": {"goal": "v1"}})).await;
    store.close().await.unwrap(); // close folds the journal into a snapshot
    let store = open(dir.path()).await;
    merge(&store, json!({"memory": {"goal": "v2"}})).await;
    store.close().await.unwrap(); // and the v1 snapshot becomes the backup
    fs::write(session_file(dir.path()), b"\0\0\0\0").unwrap(); // a crash left garbage

    let store = open(dir.path()).await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    assert!(loaded.recovered && !loaded.created);
    assert_eq!(
        parse(&loaded.session_json).memory["goal"],
        "v1",
        "the previous good version"
    );
    assert_eq!(
        on_disk(dir.path()).memory["goal"],
        "v1",
        "written back over the bad file"
    );
    let aside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read(aside[0].path()).unwrap(), b"\0\0\0\0");
    store.close().await.unwrap();
}

/// A snapshot the store wrote is marked as its own (docs/storage.md): a load sends its text as it
/// is, and the first merge parses it. A marked file changed since, in place, is read again.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_the_store_wrote_is_sent_as_it_is_and_one_changed_since_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    merge(&store, json!({"memory": {"goal": "first"}})).await;
    store.close().await.unwrap(); // close writes the snapshot
    let stem = SessionKey::new(USER, WORKSPACE).unwrap().file_stem();
    let backend = FileBackend::open(dir.path()).unwrap();
    let marked = backend.read_canonical(&stem, &backend.lock(&stem).unwrap());
    let written = fs::read(session_file(dir.path())).unwrap();
    assert_eq!(marked.map(String::into_bytes), Some(written.clone()));

    let store = open(dir.path()).await;
    assert_eq!(
        current(&store).await.into_bytes(),
        written,
        "the file's text"
    );
    merge(&store, json!({"memory": {"then": "second"}})).await;
    let merged = parse(&current(&store).await);
    assert_eq!(
        (&merged.memory["goal"], &merged.memory["then"]),
        (&json!("first"), &json!("second")),
        "merged into the parsed text"
    );
    store.close().await.unwrap();

    // Edited in place (the mark stays on the file) to name another user: checked, and refused.
    let text = fs::read_to_string(session_file(dir.path())).unwrap();
    let edited = text.replace(&format!("\"userId\":\"{USER}\""), "\"userId\":\"mallory\"");
    assert_ne!(edited, text);
    fs::write(session_file(dir.path()), edited).unwrap();
    let store = open(dir.path()).await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    assert!(loaded.recovered, "the edited file is moved aside");
    assert_eq!(parse(&loaded.session_json).user_id, USER);
    store.close().await.unwrap();
}

/// A session held only as its marked snapshot's text still hears of another store's write: the
/// change is parsed in, and listeners hear of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_loaded_as_text_takes_in_another_stores_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    merge(&store, json!({"memory": {"goal": "first"}})).await;
    store.close().await.unwrap();
    let reading = open(dir.path()).await;
    let writing = open(dir.path()).await;
    current(&reading).await;
    let (events, _) = recorder(&reading);

    merge(&writing, json!({"memory": {"goal": "from elsewhere"}})).await;
    writing.save(USER, WORKSPACE).await.unwrap();
    let arrived = eventually(Duration::from_secs(5), async || {
        !events.lock().unwrap().is_empty()
    })
    .await;
    assert!(arrived, "an external merge");
    let events = events.lock().unwrap().clone();
    assert_eq!(events[0].origin, "external");
    assert!(
        events[0].changes.contains(&"memory.goal".to_string()),
        "{events:?}"
    );
    assert_eq!(
        parse(&current(&reading).await).memory["goal"],
        "from elsewhere"
    );
    reading.close().await.unwrap();
    writing.close().await.unwrap();
}

/// Another user's marked snapshot moved over this user's file is not this user's session: the
/// mark binds the file's name, and the long way checks the ids inside.
#[tokio::test(flavor = "multi_thread")]
async fn another_users_marked_snapshot_under_this_users_name_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    merge(&store, json!({"memory": {"goal": "alice's"}})).await;
    store
        .merge(
            "bob",
            WORKSPACE,
            r#"{"memory":{"goal":"bob's"}}"#,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    store.close().await.unwrap();
    let bob = dir.path().join(format!(
        "{}.json",
        SessionKey::new("bob", WORKSPACE).unwrap().file_stem()
    ));
    fs::rename(&bob, session_file(dir.path())).unwrap();

    let store = open(dir.path()).await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    let session = parse(&loaded.session_json);
    assert!(loaded.recovered, "the file is moved aside");
    assert_eq!(
        (session.user_id.as_str(), session.memory.get("goal")),
        (USER, None)
    );
    store.close().await.unwrap();
}

/// `list` counts what a save appended to the journal, not only what the snapshot holds.
#[tokio::test(flavor = "multi_thread")]
async fn list_reflects_the_journal_of_a_session_not_loaded_here() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path()).await;
    // A snapshot large enough that three small appends do not outgrow it.
    merge(&writer, json!({"memory": {"notes": "n".repeat(4000)}})).await;
    writer.close().await.unwrap();
    let writer = open(dir.path()).await;
    for n in 0..3 {
        merge(
            &writer,
            json!({"conversationHistory": [{"id": format!("e{n}"), "role": "user", "content": "hi"}]}),
        )
        .await;
    }
    writer.save(USER, WORKSPACE).await.unwrap();
    assert!(session_file(dir.path()).with_extension("journal").exists());

    let reader = open(dir.path()).await;
    let listed = reader.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].entries, 3);
    assert!(!listed[0].loaded);
    writer.close().await.unwrap();
    reader.close().await.unwrap();
}
