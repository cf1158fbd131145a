//! The TTL sweep (design.md, section 4): compare, then delete. Expired sessions go; fresh ones, ones
//! in use, ones touched during the sweep and corrupt files stay; leftovers of crashed writes go.

mod support;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mia_narrative_session::cleanup::{cutoff, expired, now_millis, remove_if_expired, sweep};
use mia_narrative_session::clock::millis_to_rfc3339;
use mia_narrative_session::journal;
use mia_narrative_session::merge::SessionPatch;
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::disk::Disk;
use mia_narrative_session::store::file::{FileBackend, ReadLimits};
use mia_narrative_session::store::SessionStore;
use support::power_loss::SimDisk;
use support::quiet_options;

const WORKSPACE: &str = "/home/shared/proj";
const DAY: Duration = Duration::from_secs(86_400);
const TTL_DAYS: f64 = 30.0;

fn days_ago(days: u64) -> SystemTime {
    SystemTime::now() - DAY * days as u32
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn session_bytes(user: &str, updated: SystemTime) -> Vec<u8> {
    let key = SessionKey::new(user, WORKSPACE).unwrap();
    let time = millis_to_rfc3339(millis(updated));
    let session = NarrativeSession::new(key.session_id(), user.into(), WORKSPACE.into(), time);
    serde_json::to_vec(&session).unwrap()
}

fn set_mtime(path: &Path, time: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// Stores `user`'s session as last updated at `updated`, in a file last written then too.
fn plant(backend: &FileBackend, user: &str, updated: SystemTime) -> String {
    let stem = SessionKey::new(user, WORKSPACE).unwrap().file_stem();
    let lock = backend.lock(&stem).unwrap();
    backend
        .write(&stem, &session_bytes(user, updated), &lock)
        .unwrap();
    set_mtime(&backend.session_path(&stem), updated);
    stem
}

fn backend(dir: &Path) -> FileBackend {
    FileBackend::open(dir).unwrap()
}

fn the_cutoff() -> i64 {
    cutoff(now_millis(), TTL_DAYS)
}

fn nothing_in_use(_: &str) -> bool {
    false
}

fn no_hook(_: &str) {}

fn exists(backend: &FileBackend, stem: &str) -> bool {
    backend.session_path(stem).exists()
}

#[test]
fn expired_sessions_are_removed_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let old = plant(&backend, "gone-for-two-months", days_ago(60));
    let fresh = plant(&backend, "here-yesterday", days_ago(1));

    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &no_hook).unwrap();
    assert_eq!(
        (report.scanned, report.removed, report.kept, report.in_use),
        (2, 1, 1, 0),
        "{report:?}"
    );
    assert!(report.errors.is_empty());
    assert!(!exists(&backend, &old));
    assert!(
        !dir.path().join(format!("{old}.lock")).exists(),
        "all of its files go"
    );
    assert!(exists(&backend, &fresh));
}

#[test]
fn a_recently_written_file_is_kept_whatever_its_updated_at_says() {
    // Another process's sweep skips files written after the cutoff: that is how a store marks a
    // session it has loaded as alive for every process.
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let stem = plant(&backend, "old-but-touched", days_ago(60));
    set_mtime(&backend.session_path(&stem), SystemTime::now());
    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &no_hook).unwrap();
    assert_eq!(report.kept, 1);
    assert!(exists(&backend, &stem));
}

#[test]
fn an_old_file_with_a_recent_updated_at_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let stem = plant(&backend, "restored-from-a-copy", days_ago(1));
    set_mtime(&backend.session_path(&stem), days_ago(90));
    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &no_hook).unwrap();
    assert_eq!((report.removed, report.kept), (0, 1));
    assert!(exists(&backend, &stem));
}

#[test]
fn a_session_in_use_is_never_reaped_and_is_marked_alive_for_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let stem = plant(&backend, "in-a-long-meeting", days_ago(60));
    let in_use = |s: &str| s == stem;

    let report = sweep(&backend, the_cutoff(), &in_use, &no_hook).unwrap();
    assert_eq!((report.in_use, report.removed), (1, 0));
    assert!(exists(&backend, &stem));
    let modified = fs::metadata(backend.session_path(&stem))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        modified.elapsed().unwrap() < Duration::from_secs(60),
        "touched, so other sweeps skip it"
    );
}

#[test]
fn a_session_saved_during_the_sweep_survives() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let stem = plant(&backend, "came-back-just-in-time", days_ago(60));
    let hook_ran = AtomicBool::new(false);
    // Between the sweep's first look and its locked re-check, a writer saves the session.
    let writer = |s: &str| {
        assert_eq!(s, stem);
        let lock = backend.lock(s).unwrap();
        backend
            .write(
                s,
                &session_bytes("came-back-just-in-time", SystemTime::now()),
                &lock,
            )
            .unwrap();
        hook_ran.store(true, Ordering::SeqCst);
    };

    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &writer).unwrap();
    assert!(
        hook_ran.load(Ordering::SeqCst),
        "the session looked expired at first"
    );
    assert_eq!((report.removed, report.kept), (0, 1), "{report:?}");
    let lock = backend.lock(&stem).unwrap();
    let kept = backend
        .read(&stem, None, &lock)
        .unwrap()
        .session
        .expect("the saved session is still there");
    assert_eq!(kept.user_id, "came-back-just-in-time");
}

#[test]
fn a_session_appended_to_during_the_sweep_survives() {
    // The snapshot stays as it was; only a journal record says the session is alive again.
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let user = "typed-one-line";
    let stem = plant(&backend, user, days_ago(60));
    let appended = AtomicBool::new(false);
    let writer = |s: &str| {
        let now: NarrativeSession =
            serde_json::from_slice(&session_bytes(user, SystemTime::now())).unwrap();
        let record = journal::encode(&SessionPatch::from_session(&now)).unwrap();
        let lock = backend.lock(s).unwrap();
        backend.append_journal(s, &record, &lock).unwrap();
        appended.store(true, Ordering::SeqCst);
    };
    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &writer).unwrap();
    assert!(
        appended.load(Ordering::SeqCst),
        "it looked expired at first"
    );
    assert_eq!((report.removed, report.kept), (0, 1), "{report:?}");
    assert!(exists(&backend, &stem) && backend.journal_size(&stem).is_some());
}

#[test]
fn a_session_saved_at_exactly_the_cutoff_during_the_sweep_is_kept() {
    // "Before the cutoff" is strict, at the first look and at the locked re-check.
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let user = "on-the-line";
    let cutoff = the_cutoff();
    let at_cutoff = UNIX_EPOCH + Duration::from_millis(cutoff as u64);
    plant(&backend, user, at_cutoff - DAY);
    let writer = |s: &str| {
        let lock = backend.lock(s).unwrap();
        backend
            .write(s, &session_bytes(user, at_cutoff), &lock)
            .unwrap();
    };
    let report = sweep(&backend, cutoff, &nothing_in_use, &writer).unwrap();
    assert_eq!((report.removed, report.kept), (0, 1), "{report:?}");

    let other = plant(&backend, "exactly-at-the-cutoff", at_cutoff);
    assert!(!expired(&backend, cutoff, &nothing_in_use)
        .unwrap()
        .contains(&other));
}

/// The sessions of `gc --dry-run` and of `removeIfExpired`: expired, fresh, in use, and from a
/// clock that ran ahead (an `updatedAt` in 2100 in files last written 60 days ago).
struct Planted {
    old: String,
    fresh: String,
    in_use: String,
    future: String,
}

fn plant_each_kind(backend: &FileBackend) -> Planted {
    let future_user = "clock-ran-ahead";
    let future = plant(backend, future_user, days_ago(60));
    let lock = backend.lock(&future).unwrap();
    let year_2100 = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    backend
        .write(&future, &session_bytes(future_user, year_2100), &lock)
        .unwrap();
    set_mtime(&backend.session_path(&future), days_ago(60));
    Planted {
        old: plant(backend, "gone-for-two-months", days_ago(60)),
        fresh: plant(backend, "here-yesterday", days_ago(1)),
        in_use: plant(backend, "in-a-long-meeting", days_ago(60)),
        future,
    }
}

#[test]
fn the_dry_run_lists_what_a_sweep_removes_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let p = plant_each_kind(&backend);
    let in_use = |s: &str| s == p.in_use;

    let mut listed = expired(&backend, the_cutoff(), &in_use).unwrap();
    listed.sort();
    let mut want = vec![p.old.clone(), p.future.clone()];
    want.sort();
    assert_eq!(listed, want);
    for stem in [&p.old, &p.fresh, &p.in_use, &p.future] {
        assert!(exists(&backend, stem), "a dry run removes nothing");
    }

    let report = sweep(&backend, the_cutoff(), &in_use, &no_hook).unwrap();
    assert_eq!(
        (report.removed, report.kept, report.in_use),
        (2, 1, 1),
        "{report:?}"
    );
    assert!(!exists(&backend, &p.old) && !exists(&backend, &p.future));
}

#[test]
fn remove_if_expired_removes_one_expired_session_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let p = plant_each_kind(&backend);
    let in_use = |s: &str| s == p.in_use;
    let cutoff = the_cutoff();

    assert!(!remove_if_expired(&backend, &p.fresh, cutoff, &in_use).unwrap());
    assert!(!remove_if_expired(&backend, &p.in_use, cutoff, &in_use).unwrap());
    assert!(exists(&backend, &p.fresh) && exists(&backend, &p.in_use));

    assert!(remove_if_expired(&backend, &p.old, cutoff, &in_use).unwrap());
    assert!(!exists(&backend, &p.old));
    assert!(
        remove_if_expired(&backend, &p.future, cutoff, &in_use).unwrap(),
        "an updatedAt from a clock that ran ahead counts as when its files were written"
    );
    assert!(!exists(&backend, &p.future));
    assert!(
        !remove_if_expired(&backend, &p.old, cutoff, &in_use).unwrap(),
        "already gone"
    );
}

/// A session from a clock that ran ahead counts as updated when its files were last written, and
/// that includes its journal: one appended to today is kept, though its snapshot is 60 days old.
#[test]
fn a_future_updated_at_counts_as_the_time_its_journal_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let p = plant_each_kind(&backend);
    let session: NarrativeSession =
        serde_json::from_slice(&fs::read(backend.session_path(&p.future)).unwrap()).unwrap();
    let record = journal::encode(&SessionPatch::from_session(&session)).unwrap();
    {
        let lock = backend.lock(&p.future).unwrap();
        backend.append_journal(&p.future, &record, &lock).unwrap();
    }
    let cutoff = the_cutoff();
    assert!(!expired(&backend, cutoff, &nothing_in_use)
        .unwrap()
        .contains(&p.future));
    assert!(!remove_if_expired(&backend, &p.future, cutoff, &nothing_in_use).unwrap());
    assert!(exists(&backend, &p.future));

    // Once the journal too is old, the session goes.
    set_mtime(
        &dir.path().join(format!("{}.journal", p.future)),
        days_ago(60),
    );
    assert!(remove_if_expired(&backend, &p.future, cutoff, &nothing_in_use).unwrap());
}

#[test]
fn a_session_loaded_during_the_sweep_survives() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let stem = plant(&backend, "opened-a-tab", days_ago(60));
    let loaded = AtomicBool::new(false);
    let in_use = |_: &str| loaded.load(Ordering::SeqCst);
    let report = sweep(&backend, the_cutoff(), &in_use, &|_| {
        loaded.store(true, Ordering::SeqCst)
    })
    .unwrap();
    assert_eq!(report.removed, 0);
    assert!(exists(&backend, &stem));
}

fn temp_file(dir: &Path, name: &str, age: Duration) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, b"half a write").unwrap();
    set_mtime(&path, SystemTime::now() - age);
    path
}

#[test]
fn stale_temp_files_of_crashed_writes_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let stem = plant(&backend, "someone", days_ago(1));
    let stale = temp_file(
        dir.path(),
        &format!(".{stem}.4242.7.tmp"),
        Duration::from_secs(2 * 3600),
    );
    let other_stale = temp_file(dir.path(), ".anything.tmp", Duration::from_secs(3 * 3600));
    // Younger than an hour: a write may still be in progress.
    let in_flight = temp_file(
        dir.path(),
        &format!(".{stem}.4242.8.tmp"),
        Duration::from_secs(50 * 60),
    );
    let not_ours = temp_file(dir.path(), "notes.tmp", Duration::from_secs(5 * 3600));

    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &no_hook).unwrap();
    assert_eq!(report.temp_files_removed, 2);
    assert!(!stale.exists() && !other_stale.exists());
    assert!(in_flight.exists(), "a write may still be in progress");
    assert!(
        not_ours.exists(),
        "only our `.<name>.tmp` files are touched"
    );
    assert!(exists(&backend, &stem));
}

#[test]
fn corrupt_files_are_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let long_ago = days_ago(400);
    let garbage_stem = SessionKey::new("torn-write", WORKSPACE)
        .unwrap()
        .file_stem();
    let garbage = temp_file(dir.path(), &format!("{garbage_stem}.json"), DAY * 400);
    let aside = temp_file(
        dir.path(),
        &format!("{garbage_stem}.json.corrupt-1700000000000"),
        DAY * 400,
    );
    // Parses, but its updatedAt is not a time: left for load to deal with.
    let odd_stem = SessionKey::new("odd-time", WORKSPACE).unwrap().file_stem();
    let mut odd: serde_json::Value =
        serde_json::from_slice(&session_bytes("odd-time", long_ago)).unwrap();
    odd["updatedAt"] = "last spring".into();
    let odd_path = backend.session_path(&odd_stem);
    fs::write(&odd_path, odd.to_string()).unwrap();
    set_mtime(&odd_path, long_ago);

    let report = sweep(&backend, the_cutoff(), &nothing_in_use, &no_hook).unwrap();
    assert_eq!(
        (report.scanned, report.removed, report.kept),
        (2, 0, 2),
        "{report:?}"
    );
    assert_eq!(fs::read(&garbage).unwrap(), b"half a write");
    assert_eq!(fs::read(&aside).unwrap(), b"half a write");
    assert!(odd_path.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn store_cleanup_removes_expired_sessions_but_keeps_fresh_and_loaded_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = backend(dir.path());
        plant(&backend, "left-long-ago", days_ago(60));
        plant(&backend, "still-working", days_ago(60));
        plant(&backend, "active-last-week", days_ago(7));
    }
    let store = SessionStore::open(quiet_options(dir.path())).await.unwrap();
    store.load("still-working", WORKSPACE).await.unwrap();

    let report = store.cleanup(None, None).await.unwrap();
    assert_eq!(
        (report.scanned, report.removed, report.kept, report.in_use),
        (3, 1, 1, 1),
        "{report:?}"
    );
    let users: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.user_id)
        .collect();
    assert_eq!(users, ["active-last-week", "still-working"]);

    // The caller may choose the TTL and the time: in 60 days, last week's session has expired too.
    let later = now_millis() + 60 * 86_400_000;
    let report = store.cleanup(Some(TTL_DAYS), Some(later)).await.unwrap();
    assert_eq!((report.removed, report.in_use), (1, 1), "{report:?}");
    assert_eq!(store.list().await.unwrap().len(), 1);

    let err = store.cleanup(Some(0.0), None).await.unwrap_err();
    assert_eq!(
        err.code,
        mia_narrative_session::error::ErrorCode::Invalid,
        "a TTL must be positive"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_sweeps_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let stem = plant(&backend(dir.path()), "left-long-ago", days_ago(60));
    let mut options = quiet_options(dir.path());
    options.cleanup_interval = Duration::from_secs(3600);
    let store = SessionStore::open(options).await.unwrap();
    let start = std::time::Instant::now();
    while dir.path().join(format!("{stem}.json")).exists()
        && start.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir.path().join(format!("{stem}.json")).exists(),
        "the first sweep runs at open"
    );
    store.close().await.unwrap();
}

#[test]
fn a_removal_a_sweep_reports_is_still_done_after_a_power_loss() {
    // On a disk that loses power (support::power_loss), a removal is kept only once its
    // directory is synced; the sweep syncs before it returns its report.
    for seed in 0..16 {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sessions");
        fs::create_dir(&dir).unwrap();
        let disk = SimDisk::new();
        let backend = FileBackend::open_on(
            &dir,
            Arc::new(disk.clone()),
            ReadLimits::for_sessions_of(1 << 20),
        )
        .unwrap();
        let stem = SessionKey::new("gone-for-two-months", WORKSPACE)
            .unwrap()
            .file_stem();
        let lock = backend.lock(&stem).unwrap();
        let bytes = session_bytes("gone-for-two-months", days_ago(60));
        backend.write(&stem, &bytes, &lock).unwrap();
        drop(lock);
        let path = backend.session_path(&stem);
        disk.open_write(&path)
            .unwrap()
            .set_modified(days_ago(60))
            .unwrap();
        disk.sync_dir(&dir).unwrap();

        let report = sweep(&backend, the_cutoff(), &nothing_in_use, &no_hook).unwrap();
        assert_eq!(report.removed, 1, "{report:?}");
        disk.lose_power_at(1, seed);
        assert!(disk.sync_dir(&dir).is_err(), "the power went");
        let after = disk.after_power_loss().unwrap();
        assert!(
            after.read(&path, 1 << 20).is_err(),
            "seed {seed}: the removed session came back: {:?}",
            after.names()
        );
    }
}
