//! The file backend on a real directory (design.md, section 4): atomic writes, the backup, private
//! permissions, corrupt files moved aside and never deleted, and the per-session lock.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::file::FileBackend;
use support::records::{entry_record, new_session};

fn key() -> SessionKey {
    SessionKey::new("alice", "/home/alice/proj").unwrap()
}

fn session_bytes(key: &SessionKey, goal: &str) -> Vec<u8> {
    let mut session = NarrativeSession::new(
        key.session_id(),
        key.user_id.clone(),
        key.workspace_id.clone(),
        "2026-01-01T00:00:00.000Z".into(),
    );
    session.memory.insert("goal".into(), goal.into());
    serde_json::to_vec(&session).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files that hold the locks of `stem`: the directory's `.locks` (byte-range locks, Linux) or
/// the session's own `S.lock`.
fn lock_files(backend: &FileBackend, stem: &str) -> Vec<String> {
    if backend.has_range_locks() {
        vec![".locks".to_string()]
    } else {
        vec![format!("{stem}.lock")]
    }
}

/// Files in `dir` whose name starts with `prefix`.
/// The names in `dir`, which must hold no temp file: every write cleaned up after itself.
fn names_without_temp_files(dir: &Path) -> Vec<String> {
    let files = names(dir);
    assert!(files.iter().all(|n| !n.ends_with(".tmp")), "{files:?}");
    files
}

fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| dir.join(n))
        .collect()
}

/// A backend on a sessions directory that does not exist yet, so `open` creates it.
fn backend() -> (tempfile::TempDir, FileBackend) {
    let root = tempfile::tempdir().unwrap();
    let backend = FileBackend::open(&root.path().join("data").join("sessions")).unwrap();
    (root, backend)
}

fn write(backend: &FileBackend, key: &SessionKey, goal: &str) {
    let stem = key.file_stem();
    let lock = backend.lock(&stem).unwrap();
    backend
        .write(&stem, &session_bytes(key, goal), &lock)
        .unwrap();
}

fn goal_of(session: &NarrativeSession) -> &str {
    session.memory["goal"].as_str().unwrap()
}

#[test]
fn a_write_is_atomic_and_leaves_no_temp_file_behind() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "first");
    write(&backend, &key, "second");
    let files = names_without_temp_files(backend.dir());
    let mut expected = lock_files(&backend, &stem);
    expected.extend([format!("{stem}.json"), format!("{stem}.json.bak")]);
    expected.sort();
    assert_eq!(files, expected);
    assert_eq!(
        fs::read(backend.session_path(&stem)).unwrap(),
        session_bytes(&key, "second")
    );
}

#[test]
fn the_previous_version_is_kept_as_the_backup() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "first");
    assert!(
        !backend.dir().join(format!("{stem}.json.bak")).exists(),
        "no backup before a second write"
    );
    write(&backend, &key, "second");
    write(&backend, &key, "third");
    let backup = fs::read(backend.dir().join(format!("{stem}.json.bak"))).unwrap();
    assert_eq!(backup, session_bytes(&key, "second"));
}

#[cfg(unix)]
#[test]
fn a_backup_that_already_is_the_main_file_leaves_no_temp_file_behind() {
    // A write that fails after keeping the backup (before its rename into place) leaves the backup
    // and the main file one file, hard-linked. The next write must still clean up after itself:
    // renaming a link onto the file it already names does nothing.
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "first");
    let backup = backend.dir().join(format!("{stem}.json.bak"));
    fs::hard_link(backend.session_path(&stem), &backup).unwrap();
    write(&backend, &key, "second");
    names_without_temp_files(backend.dir());
    assert_eq!(fs::read(&backup).unwrap(), session_bytes(&key, "first"));
    assert_eq!(
        fs::read(backend.session_path(&stem)).unwrap(),
        session_bytes(&key, "second")
    );
}

#[test]
fn files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let (_root, backend) = backend();
    let key = key();
    write(&backend, &key, "first");
    write(&backend, &key, "second");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(backend.dir()), 0o700, "the sessions directory");
    for name in names(backend.dir()) {
        assert_eq!(mode(&backend.dir().join(&name)), 0o600, "{name}");
    }
}

#[test]
fn a_corrupt_main_file_is_moved_aside_and_the_backup_is_returned() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "good");
    write(&backend, &key, "newer");
    let garbage = b"{\"id\": \"s\", \"userId\": tru".to_vec(); // a torn write
    fs::write(backend.session_path(&stem), &garbage).unwrap();

    let lock = backend.lock(&stem).unwrap();
    let read = backend.read(&stem, Some(&key), &lock).unwrap();
    assert!(read.recovered);
    assert_eq!(goal_of(read.session.as_ref().unwrap()), "good");

    let aside = files_starting(backend.dir(), &format!("{stem}.json.corrupt-"));
    assert_eq!(aside.len(), 1, "{:?}", names(backend.dir()));
    assert_eq!(read.quarantined, aside);
    assert_eq!(
        fs::read(&aside[0]).unwrap(),
        garbage,
        "the bad bytes are kept for the operator"
    );
    let millis = aside[0]
        .to_string_lossy()
        .rsplit("corrupt-")
        .next()
        .unwrap()
        .to_string();
    assert!(
        millis.parse::<u64>().is_ok(),
        "named after the time it was moved: {millis}"
    );
    assert!(!backend.session_path(&stem).exists());
}

#[test]
fn when_both_copies_are_corrupt_both_are_moved_aside_and_nothing_is_returned() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    fs::write(backend.session_path(&stem), b"not json").unwrap();
    fs::write(backend.dir().join(format!("{stem}.json.bak")), b"[]").unwrap();

    let lock = backend.lock(&stem).unwrap();
    let read = backend.read(&stem, Some(&key), &lock).unwrap();
    assert!(read.session.is_none());
    assert!(read.recovered, "the caller is told data was lost");
    let main_aside = files_starting(backend.dir(), &format!("{stem}.json.corrupt-"));
    let backup_aside = files_starting(backend.dir(), &format!("{stem}.json.bak.corrupt-"));
    assert_eq!(main_aside.len(), 1);
    assert_eq!(backup_aside.len(), 1);
    assert_eq!(fs::read(&main_aside[0]).unwrap(), b"not json");
    assert_eq!(fs::read(&backup_aside[0]).unwrap(), b"[]");
    assert_eq!(read.quarantined.len(), 2);
}

#[test]
fn a_file_holding_another_users_session_counts_as_corrupt() {
    let (_root, backend) = backend();
    let alice = key();
    let mallory = SessionKey::new("mallory", "/home/alice/proj").unwrap();
    let stem = alice.file_stem();
    // Mallory's session, planted under Alice's file name.
    let planted = session_bytes(&mallory, "steal");
    fs::write(backend.session_path(&stem), &planted).unwrap();

    let lock = backend.lock(&stem).unwrap();
    let read = backend.read(&stem, Some(&alice), &lock).unwrap();
    assert!(read.session.is_none());
    assert!(read.recovered);
    let aside = files_starting(backend.dir(), &format!("{stem}.json.corrupt-"));
    assert_eq!(fs::read(&aside[0]).unwrap(), planted);

    // Without an expected key (cleanup's view), the same file reads fine.
    fs::write(backend.session_path(&stem), &planted).unwrap();
    let read = backend.read(&stem, None, &lock).unwrap();
    assert_eq!(read.session.unwrap().user_id, "mallory");
}

#[test]
fn a_missing_session_reads_as_nothing_without_recovery() {
    let (_root, backend) = backend();
    let stem = key().file_stem();
    let lock = backend.lock(&stem).unwrap();
    let read = backend.read(&stem, Some(&key()), &lock).unwrap();
    assert!(read.session.is_none());
    assert!(!read.recovered);
    assert!(read.quarantined.is_empty());
}

/// How long a thread waiting on a lock is given to (wrongly) get it.
const GRACE: Duration = Duration::from_millis(300);

#[test]
fn the_lock_is_exclusive_across_threads() {
    let (_root, backend) = backend();
    let backend = Arc::new(backend);
    let stem = key().file_stem();
    let held = backend.lock(&stem).unwrap();

    let (got_it, report) = mpsc::channel();
    let waiter = {
        let (backend, stem) = (backend.clone(), stem.clone());
        thread::spawn(move || {
            let _lock = backend.lock(&stem).unwrap();
            got_it.send(()).unwrap();
        })
    };
    assert!(
        report.recv_timeout(GRACE).is_err(),
        "the second lock() must wait for the first"
    );
    drop(held);
    report
        .recv_timeout(Duration::from_secs(10))
        .expect("the waiter gets the lock once it is free");
    waiter.join().unwrap();
}

/// Another process that opens the same directory at the same moment holds the probe byte of
/// `.locks` while it checks that the file system takes byte-range locks. A store opened then must
/// still choose byte-range locks: one that fell back to `S.lock` files would not exclude the
/// other process, and their writes to one session would interleave (acknowledged records were
/// lost that way, when two processes started together).
#[cfg(target_os = "linux")]
#[test]
fn a_store_opened_while_another_process_probes_the_locks_takes_the_same_kind() {
    use std::os::fd::AsRawFd;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sessions");
    fs::create_dir(&dir).unwrap();
    let probe_file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".locks"))
        .unwrap();
    // What the other process's probe holds: one byte far past any session's offset.
    // SAFETY: a zeroed flock is valid (l_pid must be 0 for OFD locks); the descriptor is open.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = libc::F_WRLCK as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    range.l_start = i64::MAX - 1;
    range.l_len = 1;
    let held = unsafe { libc::fcntl(probe_file.as_raw_fd(), libc::F_OFD_SETLK, &range) };
    assert_eq!(held, 0, "{}", std::io::Error::last_os_error());

    let backend = FileBackend::open(&dir).unwrap();
    assert!(
        backend.has_range_locks(),
        "a probe that finds the byte held proves the file system takes byte-range locks"
    );
    let other = FileBackend::open(&dir).unwrap();
    let stem = key().file_stem();
    let _mine = backend.lock(&stem).unwrap();
    let (got_it, report) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _theirs = other.lock(&stem).unwrap();
        got_it.send(()).unwrap();
    });
    assert!(
        report.recv_timeout(GRACE).is_err(),
        "the two stores must exclude each other"
    );
    drop(_mine);
    report.recv_timeout(Duration::from_secs(10)).unwrap();
    waiter.join().unwrap();
    assert!(!names(&dir).iter().any(|n| n.ends_with(".lock")));
}

/// Appends `bytes` to the journal of `stem` under its lock; returns the journal's new length.
fn append(backend: &FileBackend, stem: &str, bytes: &[u8]) -> u64 {
    let lock = backend.lock(stem).unwrap();
    backend.append_journal(stem, bytes, &lock).unwrap().len
}

#[test]
fn an_append_after_another_process_replaced_the_journal_goes_to_the_new_one() {
    let (root, mine) = backend();
    // A second store on the same directory, as another mia-code-server process would open it.
    let other = FileBackend::open(&root.path().join("data").join("sessions")).unwrap();
    let stem = key().file_stem();
    let journal = mine.dir().join(format!("{stem}.journal"));

    assert_eq!(append(&mine, &stem, b"one."), 4);
    assert_eq!(
        append(&mine, &stem, b"two."),
        8,
        "the kept journal appends at its end"
    );
    // The other process compacts the session (its journal goes) and journals a new update.
    {
        let lock = other.lock(&stem).unwrap();
        other.remove_journal(&stem, &lock).unwrap();
    }
    assert_eq!(append(&other, &stem, b"three."), 6);

    // Written into the file it kept open, this would be lost with the removed journal.
    assert_eq!(append(&mine, &stem, b"four."), 11);
    assert_eq!(fs::read(&journal).unwrap(), b"three.four.");
    // Each side goes on appending to the same, current file.
    assert_eq!(append(&other, &stem, b"five."), 16);
    assert_eq!(fs::read(&journal).unwrap(), b"three.four.five.");
}

#[test]
fn an_append_after_the_journal_was_removed_here_creates_a_new_private_one() {
    use std::os::unix::fs::PermissionsExt;
    let (_root, backend) = backend();
    let stem = key().file_stem();
    let journal = backend.dir().join(format!("{stem}.journal"));
    append(&backend, &stem, b"old.");
    {
        let lock = backend.lock(&stem).unwrap();
        backend.remove_journal(&stem, &lock).unwrap();
    }
    assert!(!journal.exists());
    assert_eq!(append(&backend, &stem, b"new."), 4);
    assert_eq!(fs::read(&journal).unwrap(), b"new.");
    let mode = fs::metadata(&journal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_delete_while_another_thread_waits_hands_it_a_lock_on_the_new_file() {
    let (_root, backend) = backend();
    let backend = Arc::new(backend);
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "doomed");
    let held = backend.lock(&stem).unwrap();

    let (locked, report) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let waiter = {
        let (backend, stem, key) = (backend.clone(), stem.clone(), key.clone());
        thread::spawn(move || {
            let lock = backend.lock(&stem).unwrap();
            locked.send(()).unwrap();
            // Holding the lock of the new file: write a fresh session through it.
            backend
                .write(&stem, &session_bytes(&key, "reborn"), &lock)
                .unwrap();
            released.recv().unwrap();
        })
    };
    assert!(
        report.recv_timeout(GRACE).is_err(),
        "the waiter waits while the delete holds the lock"
    );
    assert!(backend.delete(&stem, held).unwrap(), "the session existed");
    report
        .recv_timeout(Duration::from_secs(10))
        .expect("the waiter re-locks after the delete");
    if !backend.has_range_locks() {
        assert!(
            backend.dir().join(format!("{stem}.lock")).exists(),
            "the waiter made a new lock file"
        );
    }

    // The waiter's lock is real: a third party must wait for it.
    let (third_got_it, third) = mpsc::channel();
    let third_party = {
        let (backend, stem) = (backend.clone(), stem.clone());
        thread::spawn(move || {
            let lock = backend.lock(&stem).unwrap();
            let read = backend.read(&stem, None, &lock).unwrap();
            third_got_it
                .send(read.session.map(|s| goal_of(&s).to_string()))
                .unwrap();
        })
    };
    assert!(
        third.recv_timeout(GRACE).is_err(),
        "the waiter's lock excludes others"
    );
    release.send(()).unwrap();
    waiter.join().unwrap();
    let seen = third.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(seen.as_deref(), Some("reborn"));
    third_party.join().unwrap();
}

#[test]
fn delete_removes_the_session_and_its_backup_but_keeps_quarantined_copies() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "one");
    write(&backend, &key, "two");
    let aside = backend.dir().join(format!("{stem}.json.corrupt-1"));
    fs::write(&aside, b"junk").unwrap();
    let lock = backend.lock(&stem).unwrap();
    assert!(backend.delete(&stem, lock).unwrap());
    // A session's own lock file goes with it; the directory's `.locks` stays.
    let mut left = lock_files(&backend, &stem);
    left.retain(|name| name == ".locks");
    left.push(format!("{stem}.json.corrupt-1"));
    assert_eq!(names(backend.dir()), left);
    let lock = backend.lock(&stem).unwrap();
    assert!(
        !backend.delete(&stem, lock).unwrap(),
        "a second delete finds nothing"
    );
}

#[test]
fn only_session_files_are_listed_as_stems() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "one");
    write(&backend, &key, "two");
    fs::write(backend.dir().join(format!("{stem}.json.corrupt-5")), b"x").unwrap();
    fs::write(backend.dir().join("notes.json"), b"{}").unwrap();
    assert_eq!(backend.stems().unwrap(), [stem]);
}

/// Journals kept open between appends are capped (128), so that a host appending to thousands of
/// sessions does not run out of file descriptors.
#[cfg(target_os = "linux")]
#[test]
fn journals_kept_open_between_appends_are_capped() {
    let (dir, backend) = backend();
    let open_journals_here = || {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| {
                target.starts_with(dir.path()) && target.to_string_lossy().ends_with(".journal")
            })
            .count()
    };
    for n in 0..300 {
        let stem = SessionKey::new(&format!("user-{n}"), "/w")
            .unwrap()
            .file_stem();
        append(
            &backend,
            &stem,
            b"not a record, as far as the journal's file is concerned",
        );
    }
    let open = open_journals_here();
    assert!((1..=128).contains(&open), "{open} journals open");
}

#[test]
fn a_missing_main_file_is_read_from_the_backup_and_says_so() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "first");
    write(&backend, &key, "second");
    fs::remove_file(backend.session_path(&stem)).unwrap();
    let lock = backend.lock(&stem).unwrap();
    let outcome = backend.read(&stem, Some(&key), &lock).unwrap();
    assert!(outcome.recovered, "the main file was gone");
    assert_eq!(goal_of(&outcome.session.unwrap()), "first");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("sessions");
    fs::write(&file, b"not a directory").unwrap();
    let err = FileBackend::open(&file).unwrap_err();
    assert_eq!(err.code, mia_narrative_session::error::ErrorCode::Io);
    assert_eq!(
        err.message,
        format!("{} exists and is not a directory", file.display())
    );
    assert_eq!(
        fs::read(&file).unwrap(),
        b"not a directory",
        "left as it was"
    );
}

#[test]
fn a_journal_may_hold_four_sessions_and_a_mebibyte_before_a_read_refuses_it() {
    use mia_narrative_session::store::file::ReadLimits;
    let limits = ReadLimits::for_sessions_of(1000);
    assert_eq!((limits.snapshot, limits.journal), (1000, 4000 + (1 << 20)));
}

/// A journal past the read limit is refused before a byte is read, with ETOOLARGE, and left as
/// it is.
#[test]
fn a_journal_past_the_read_limit_is_refused_as_too_large_and_left_alone() {
    use mia_narrative_session::store::disk::RealDisk;
    use mia_narrative_session::store::file::ReadLimits;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sessions");
    let limits = ReadLimits::for_sessions_of(1000);
    let backend = FileBackend::open_on(&dir, Arc::new(RealDisk), limits).unwrap();
    let stem = key().file_stem();
    let journal = dir.join(format!("{stem}.journal"));
    let too_long = vec![b'x'; limits.journal as usize + 1];
    fs::write(&journal, &too_long).unwrap();
    let lock = backend.lock(&stem).unwrap();
    let err = backend.read_journal(&stem, 0, &lock).unwrap_err();
    assert_eq!(
        err.code,
        mia_narrative_session::error::ErrorCode::TooLarge,
        "{err:?}"
    );
    assert_eq!(fs::metadata(&journal).unwrap().len(), too_long.len() as u64);
}

/// A crash during an append leaves half a record at the journal's end: the next read cuts it off,
/// so that the next append starts on a record boundary, and says where that is.
#[test]
fn a_torn_append_is_cut_off_by_the_next_read() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    let (_, record) = entry_record(&new_session(&key), "e1");
    let whole = append(&backend, &stem, &record);
    let path = backend.dir().join(format!("{stem}.journal"));
    {
        use std::io::Write;
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&record[..record.len() / 2]).unwrap();
    }
    let lock = backend.lock(&stem).unwrap();
    let read = backend.read_journal(&stem, 0, &lock).unwrap();
    assert!(!read.recovered);
    assert_eq!(read.patches.len(), 1);
    assert_eq!(read.end(), whole);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        whole,
        "the torn half is cut off"
    );
}

/// A session's size, as `list()` shows it, is its snapshot and its journal together.
#[test]
fn a_summary_counts_the_snapshot_and_the_journal() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "goal");
    let snapshot = fs::metadata(backend.session_path(&stem)).unwrap().len();
    let (_, record) = entry_record(&new_session(&key), "e1");
    let journal = append(&backend, &stem, &record);
    let (summary, bytes) = backend.summary(&stem, true).unwrap();
    assert_eq!(bytes, snapshot + journal);
    assert_eq!(summary.user_id, key.user_id);
}

/// A compaction in the background: the snapshot is prepared without the lock, then installed under
/// it. The journal keeps only what was appended after the part the snapshot covers, and the stamp
/// returned is that of the journal left (none when nothing was left).
#[test]
fn an_installed_snapshot_keeps_the_journals_uncovered_tail() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "before");
    let covered = append(&backend, &stem, b"covered.");
    let prepared = backend
        .prepare_snapshot(&stem, &session_bytes(&key, "compacted"), true)
        .unwrap();
    assert_eq!(prepared.size(), session_bytes(&key, "compacted").len());
    append(&backend, &stem, b"tail.");

    let lock = backend.lock(&stem).unwrap();
    let stamp = backend
        .install_snapshot(&stem, prepared, covered, &lock)
        .unwrap();
    let journal = backend.dir().join(format!("{stem}.journal"));
    assert_eq!(fs::read(&journal).unwrap(), b"tail.");
    assert_eq!(stamp, backend.journal_stamp(&stem));
    assert_eq!(stamp.map(|s| s.len), Some(5));
    let read = backend
        .read(&stem, Some(&key), &lock)
        .unwrap()
        .session
        .unwrap();
    assert_eq!(goal_of(&read), "compacted");
    drop(lock);
    assert!(names_without_temp_files(backend.dir())
        .iter()
        .any(|n| n.ends_with(".json.bak")));
}

/// A session with no journal at all (another process removed it, or it never had one) takes the
/// snapshot all the same, and is left with no journal.
#[test]
fn a_snapshot_installed_where_no_journal_is_left_leaves_none() {
    let (_root, backend) = backend();
    let key = key();
    let stem = key.file_stem();
    write(&backend, &key, "before");
    let prepared = backend
        .prepare_snapshot(&stem, &session_bytes(&key, "compacted"), true)
        .unwrap();
    let lock = backend.lock(&stem).unwrap();
    assert_eq!(
        backend.install_snapshot(&stem, prepared, 0, &lock).unwrap(),
        None
    );
    assert_eq!(backend.journal_stamp(&stem), None);
    let read = backend
        .read(&stem, Some(&key), &lock)
        .unwrap()
        .session
        .unwrap();
    assert_eq!(goal_of(&read), "compacted");

    // And the same when the whole journal was covered.
    let covered = backend
        .append_journal(&stem, b"covered.", &lock)
        .unwrap()
        .len;
    let prepared = backend
        .prepare_snapshot(&stem, &session_bytes(&key, "again"), true)
        .unwrap();
    assert_eq!(
        backend
            .install_snapshot(&stem, prepared, covered, &lock)
            .unwrap(),
        None
    );
    assert!(!backend.dir().join(format!("{stem}.journal")).exists());
}
