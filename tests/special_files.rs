//! Things that are not a session's regular file, where one should be: symbolic links to files and
//! directories outside the data dir, FIFOs, directories, devices, a huge sparse file. None may be
//! written through, none may hang a call, and none may cost another session its writes.
#![cfg(target_os = "linux")]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::{MergeMode, SessionStore, StoreOptions};

const USER: &str = "alice";
const WORKSPACE: &str = "/w";

fn options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    options
}

fn stem() -> String {
    SessionKey::new(USER, WORKSPACE).unwrap().file_stem()
}

/// A data dir beside an "outside" directory holding a file the store must never touch.
struct Setup {
    _root: tempfile::TempDir,
    dir: PathBuf,
    outside: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sessions");
        let outside = root.path().join("outside");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("precious"), b"not a session: leave me alone\n").unwrap();
        Setup {
            _root: root,
            dir,
            outside,
        }
    }

    fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}{ext}", stem()))
    }

    fn precious(&self) -> Vec<u8> {
        fs::read(self.outside.join("precious")).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    async fn store(&self) -> SessionStore {
        SessionStore::open(options(&self.dir)).await.unwrap()
    }
}

/// Fails the test instead of hanging it.
async fn within<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

const DURABLE: MergeMode = MergeMode {
    with_session: false,
    durable: true,
};

/// Writes a session so that it has a snapshot, a backup and a journal.
async fn stored_session(setup: &Setup) {
    let store = setup.store().await;
    for n in 0..2 {
        let update = format!(r#"{{"memory":{{"k{n}":{n}}}}}"#);
        store
            .merge(USER, WORKSPACE, &update, None, DURABLE)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let store = setup.store().await;
    store
        .merge(USER, WORKSPACE, r#"{"memory":{"j":1}}"#, None, DURABLE)
        .await
        .unwrap();
    assert!(setup.path(".journal").exists() && setup.path(".json.bak").exists());
    drop(store);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_journal_is_moved_aside_and_its_target_never_written() {
    let setup = Setup::new();
    stored_session(&setup).await;
    let journal = setup.path(".journal");
    fs::remove_file(&journal).unwrap();
    symlink(setup.outside.join("precious"), &journal).unwrap();
    let before = setup.precious();

    let store = setup.store().await;
    let loaded = within("load", store.load(USER, WORKSPACE)).await.unwrap();
    assert!(loaded.recovered, "the link is reported");
    store
        .merge(USER, WORKSPACE, r#"{"memory":{"after":1}}"#, None, DURABLE)
        .await
        .unwrap();
    store.close().await.unwrap();
    assert_eq!(setup.precious(), before, "the target is untouched");
    let aside: Vec<String> = setup
        .names()
        .into_iter()
        .filter(|n| n.contains(".journal.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", setup.names());
    let kept = setup.dir.join(&aside[0]);
    assert!(fs::symlink_metadata(&kept)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(&kept).unwrap(),
        setup.outside.join("precious")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_linked_after_load_is_not_written_through() {
    let setup = Setup::new();
    stored_session(&setup).await;
    let store = setup.store().await;
    store.load(USER, WORKSPACE).await.unwrap();
    // Planted while the session is loaded: the next durable merge finds it.
    let journal = setup.path(".journal");
    fs::remove_file(&journal).unwrap();
    symlink(setup.outside.join("precious"), &journal).unwrap();
    let before = setup.precious();
    let merged = store
        .merge(USER, WORKSPACE, r#"{"memory":{"after":1}}"#, None, DURABLE)
        .await;
    assert!(merged.is_ok(), "{merged:?}");
    store.close().await.unwrap();
    assert_eq!(setup.precious(), before);
    let store = setup.store().await;
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    assert!(loaded.session_json.contains(r#""after":1"#));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_snapshot_or_backup_is_moved_aside_and_its_target_never_written() {
    for (ext, to_dir) in [(".json", false), (".json", true), (".json.bak", false)] {
        let setup = Setup::new();
        stored_session(&setup).await;
        let path = setup.path(ext);
        fs::remove_file(&path).unwrap();
        let target = if to_dir {
            setup.outside.clone()
        } else {
            setup.outside.join("precious")
        };
        symlink(&target, &path).unwrap();
        let before = setup.precious();
        let store = setup.store().await;
        let loaded = within("load", store.load(USER, WORKSPACE)).await.unwrap();
        if ext == ".json" {
            assert!(loaded.recovered, "{ext}: reported");
        }
        store
            .merge(USER, WORKSPACE, r#"{"memory":{"after":1}}"#, None, DURABLE)
            .await
            .unwrap();
        store.close().await.unwrap();
        assert_eq!(setup.precious(), before, "{ext}");
        assert_eq!(
            fs::read_dir(&setup.outside).unwrap().count(),
            1,
            "{ext}: nothing created outside"
        );
        // The session file is a regular file of the store's again.
        assert!(fs::symlink_metadata(setup.path(".json")).unwrap().is_file());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifos_hang_nothing_and_close_writes_every_other_session() {
    for ext in [".json", ".json.bak", ".journal"] {
        let setup = Setup::new();
        stored_session(&setup).await;
        let path = setup.path(ext);
        fs::remove_file(&path).unwrap();
        nix_mkfifo(&path);
        let store = setup.store().await;
        // Another session with unsaved changes: close must write it whatever this one does.
        store
            .merge(
                "bob",
                WORKSPACE,
                r#"{"memory":{"unsaved":1}}"#,
                None,
                MergeMode::default(),
            )
            .await
            .unwrap();
        let loaded = within("load", store.load(USER, WORKSPACE)).await;
        assert!(loaded.is_ok(), "{ext}: {loaded:?}");
        within("list", store.list()).await.unwrap();
        within("close", store.close()).await.unwrap();
        let store = setup.store().await;
        let bob = store.load("bob", WORKSPACE).await.unwrap();
        assert!(bob.session_json.contains(r#""unsaved":1"#), "{ext}");
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_or_a_device_where_a_file_should_be_is_moved_aside() {
    for (ext, device) in [(".json", false), (".journal", false), (".json", true)] {
        let setup = Setup::new();
        stored_session(&setup).await;
        let path = setup.path(ext);
        fs::remove_file(&path).unwrap();
        if device {
            // A character device (like /dev/null): root only.
            if !nix_mknod_null(&path) {
                eprintln!("skipped: cannot make a device node here (not root)");
                continue;
            }
        } else {
            fs::create_dir(&path).unwrap();
            fs::write(path.join("inside"), b"x").unwrap();
        }
        let store = setup.store().await;
        let loaded = within("load", store.load(USER, WORKSPACE)).await.unwrap();
        assert!(loaded.recovered, "{ext}");
        store
            .merge(USER, WORKSPACE, r#"{"memory":{"after":1}}"#, None, DURABLE)
            .await
            .unwrap();
        store.close().await.unwrap();
        assert!(fs::symlink_metadata(setup.path(".json")).unwrap().is_file());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_file_is_refused_before_it_is_read() {
    let setup = Setup::new();
    stored_session(&setup).await;
    let snapshot = setup.path(".json");
    let file = fs::OpenOptions::new().write(true).open(&snapshot).unwrap();
    file.set_len(2 << 30).unwrap(); // 2 GiB, sparse
    drop(file);
    let mut options = options(&setup.dir);
    options.max_session_bytes = 1 << 20;
    let store = SessionStore::open(options).await.unwrap();
    let started = std::time::Instant::now();
    let err = store.load(USER, WORKSPACE).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err:?}");
    assert!(err.message.contains("bytes"), "{}", err.message);
    // Refused, not read: reading 2 GiB takes seconds.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        fs::metadata(&snapshot).unwrap().len(),
        2 << 30,
        "left as it is"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let setup = Setup::new();
    symlink(setup.outside.join("precious"), setup.dir.join(".locks")).unwrap();
    let before = setup.precious();
    let err = SessionStore::open(options(&setup.dir)).await.err().unwrap();
    assert_eq!(err.code, ErrorCode::Io);
    assert!(err.message.contains(".locks"), "{}", err.message);
    assert_eq!(setup.precious(), before);
}

/// The data dir itself may be a link: the store then works in the directory it names.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_that_is_a_link_is_followed() {
    let setup = Setup::new();
    let link = setup.dir.with_file_name("linked");
    symlink(&setup.dir, &link).unwrap();
    let store = SessionStore::open(options(&link)).await.unwrap();
    store
        .merge(USER, WORKSPACE, r#"{"memory":{"a":1}}"#, None, DURABLE)
        .await
        .unwrap();
    store.close().await.unwrap();
    assert!(setup.path(".json").is_file());
}

/// `close()` leaves no descriptor open: 50 open/close cycles, then as many as before.
#[tokio::test(flavor = "multi_thread")]
async fn close_releases_every_descriptor() {
    let setup = Setup::new();
    let open_fds = || fs::read_dir("/proc/self/fd").unwrap().count();
    // One cycle first: the runtime's own descriptors (its blocking threads) settle.
    let store = setup.store().await;
    store
        .merge(USER, WORKSPACE, r#"{"memory":{"a":1}}"#, None, DURABLE)
        .await
        .unwrap();
    store.close().await.unwrap();
    let before = open_fds();
    for n in 0..50 {
        let store = setup.store().await;
        let update = format!(r#"{{"memory":{{"n":{n}}}}}"#);
        store
            .merge(USER, WORKSPACE, &update, None, DURABLE)
            .await
            .unwrap();
        store.close().await.unwrap();
        // The handle is kept (as a host keeps its store object until it is collected).
        std::mem::forget(store);
    }
    let after = open_fds();
    assert!(
        after <= before + 2,
        "{before} descriptors before, {after} after 50 cycles"
    );
}

fn nix_mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn nix_mknod_null(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; 1:3 is /dev/null's device number.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) == 0 }
}
