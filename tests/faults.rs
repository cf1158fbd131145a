//! I/O failures, injected (`support::fault_disk`), as redb's fuzzer and SQLite's I/O-error tests
//! inject theirs: the scripted workload runs with its Nth file operation (a read, write, fsync,
//! rename, link, removal…) failing with `EIO` or `ENOSPC`, for every N; then a store opened on the
//! real files must find every write that was acknowledged, nothing that was never written, and no
//! damaged file. A failed write may fail its call; it must never cost what was already stored.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::file::{FileBackend, ReadLimits};
use support::fault_disk::{FaultDisk, Faults, Op};
use support::records::{entry_record, new_session};
use support::workload::{check, workload};

/// A fresh data dir, on a RAM disk when the machine has one: every run fsyncs, and the point is
/// what the store does when a call fails, not how long a disk takes.
fn fresh_dir() -> (tempfile::TempDir, PathBuf) {
    let shm = std::path::Path::new("/dev/shm");
    let root = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let dir = root.path().join("sessions");
    (root, dir)
}

async fn fail_every_operation_once(seed: u64, steps: usize, errno: i32) -> Vec<String> {
    let total = {
        let (_root, dir) = fresh_dir();
        let faults = Faults::default();
        workload(&dir, Arc::new(FaultDisk::new(faults.clone())), seed, steps).await;
        faults.count()
    };
    let mut runs = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for n in 1..=total {
        while runs.len() >= 8 {
            failures.extend(runs.join_next().await.unwrap().unwrap());
        }
        runs.spawn(async move {
            let (_root, dir) = fresh_dir();
            let faults = Faults::default();
            faults.fail_nth(n, errno);
            let model = workload(&dir, Arc::new(FaultDisk::new(faults.clone())), seed, steps).await;
            let wrong = check(
                &dir,
                Arc::new(FaultDisk::new(Faults::default())),
                &model,
                false,
            )
            .await;
            (!wrong.is_empty()).then(|| {
                format!(
                    "seed {seed}, operation {n} of {total} failed with errno {errno}: {wrong:?}"
                )
            })
        });
    }
    while let Some(done) = runs.join_next().await {
        failures.extend(done.unwrap());
    }
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn any_one_failed_operation_loses_nothing_acknowledged_and_damages_nothing() {
    let mut failures = Vec::new();
    for (seed, errno) in [(1, libc::EIO), (2, libc::ENOSPC), (3, libc::EIO)] {
        failures.extend(fail_every_operation_once(seed, 30, errno).await);
    }
    assert!(
        failures.is_empty(),
        "{} failed operations went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The model catches what it must: a store that acknowledged a write it then lost. (The
/// workload's model and check are what every fault test leans on.)
#[tokio::test(flavor = "multi_thread")]
async fn the_check_finds_a_lost_acknowledged_write() {
    let (_root, dir) = fresh_dir();
    let faults = Faults::default();
    let model = workload(&dir, Arc::new(FaultDisk::new(faults.clone())), 1, 30).await;
    assert!(model.durable.values().any(|w| !w.is_empty()));
    assert!(check(
        &dir,
        Arc::new(FaultDisk::new(Faults::default())),
        &model,
        false
    )
    .await
    .is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
    let wrong = check(
        &dir,
        Arc::new(FaultDisk::new(Faults::default())),
        &model,
        false,
    )
    .await;
    assert!(wrong.iter().any(|w| w.contains("is missing")), "{wrong:?}");
}

/// A file backend on `dir` over a disk that fails when the returned faults say.
fn backend_with_faults(dir: &std::path::Path) -> (FileBackend, Faults) {
    let faults = Faults::default();
    let backend = FileBackend::open_on(
        dir,
        Arc::new(FaultDisk::new(faults.clone())),
        ReadLimits::for_sessions_of(1 << 20),
    )
    .unwrap();
    (backend, faults)
}

/// A snapshot or journal the disk cannot read (`EIO`) is an error, not damage: the read fails with
/// `EIO`, the files stay where they are, whole, and once the disk reads again all is there.
#[test]
fn files_that_cannot_be_read_fail_the_read_and_stay_in_place() {
    let (_root, dir) = fresh_dir();
    let (backend, faults) = backend_with_faults(&dir);
    let key = SessionKey::new("alice", "/w").unwrap();
    let stem = key.file_stem();
    let session = new_session(&key);
    let (_, record) = entry_record(&session, "e1");
    let lock = backend.lock(&stem).unwrap();
    let snapshot = serde_json::to_vec(&session).unwrap();
    backend.write(&stem, &snapshot, &lock).unwrap();
    let len = backend.append_journal(&stem, &record, &lock).unwrap().len;

    faults.fail_every(&[Op::Read], libc::EIO);
    let err = backend.read(&stem, Some(&key), &lock).unwrap_err();
    assert_eq!(err.code, ErrorCode::Io, "{err:?}");
    let err = backend.read_journal(&stem, 0, &lock).unwrap_err();
    assert_eq!(err.code, ErrorCode::Io, "{err:?}");
    assert_eq!(
        std::fs::read(backend.session_path(&stem)).unwrap(),
        snapshot
    );
    assert_eq!(
        backend.journal_size(&stem),
        Some(len),
        "left in place, whole"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");

    faults.heal();
    assert_eq!(
        backend.read(&stem, Some(&key), &lock).unwrap().session,
        Some(session)
    );
    let read = backend.read_journal(&stem, 0, &lock).unwrap();
    assert!(!read.recovered);
    assert_eq!(read.patches.len(), 1);
}

/// A delete whose removal fails is an error, not a `true`: the session is still there.
#[test]
fn a_delete_that_cannot_remove_the_files_says_so() {
    let (_root, dir) = fresh_dir();
    let (backend, faults) = backend_with_faults(&dir);
    let stem = SessionKey::new("alice", "/w").unwrap().file_stem();
    let lock = backend.lock(&stem).unwrap();
    backend.write(&stem, b"{}", &lock).unwrap();
    faults.fail_every(&[Op::Remove], libc::EIO);
    let err = backend.delete(&stem, lock).unwrap_err();
    assert_eq!(err.code, ErrorCode::Io, "{err:?}");
    assert!(backend.session_path(&stem).exists());
}
