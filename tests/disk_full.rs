//! A real full disk: a small tmpfs, mounted for the test (root only; elsewhere the test says why it
//! skips), filled to `ENOSPC` during durable merges, compactions, saves and close. Nothing
//! acknowledged may be lost, nothing stored may be damaged, and once there is room again every
//! change that was applied is written.
#![cfg(target_os = "linux")]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::store::{MergeMode, SessionStore};
use support::{quiet_options, DURABLE};

const USER: &str = "alice";
const WORKSPACE: &str = "/w";

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    _root: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().join("disk");
        fs::create_dir(&mount).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { _root: root, mount }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn dir(&self) -> PathBuf {
        self.mount.join("sessions")
    }

    /// Fills the disk but for about `leave` bytes, with a file that `make_room` removes.
    fn fill_leaving(&self, leave: u64) {
        let filler = self.mount.join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        use std::io::Write;
        while free_bytes(&self.mount) > leave + 4096 {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        file.sync_all().ok();
    }

    fn make_room(&self) {
        let _ = fs::remove_file(self.mount.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a zeroed statvfs for the kernel to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut stat) }, 0);
    stat.f_bavail * stat.f_frsize
}

fn entry(n: usize, size: usize) -> String {
    serde_json::json!({
        "conversationHistory": [{ "id": format!("e{n}"), "role": "user", "content": "z".repeat(size) }],
        "memory": { format!("k{n}"): n },
    })
    .to_string()
}

async fn stored(dir: &Path) -> (NarrativeSession, bool) {
    let store = SessionStore::open(quiet_options(dir)).await.unwrap();
    let loaded = store.load(USER, WORKSPACE).await.unwrap();
    let session = serde_json::from_str(&loaded.session_json).unwrap();
    let _ = store.close().await;
    (session, loaded.recovered)
}

fn has(session: &NarrativeSession, n: usize) -> bool {
    session
        .conversation_history
        .iter()
        .any(|e| e.id == format!("e{n}"))
}

/// Durable merges until the disk is full: every one acknowledged is there, the ones that failed
/// say they were applied, and once there is room `close()` writes them all.
#[tokio::test(flavor = "multi_thread")]
async fn durable_merges_on_a_filling_disk_lose_nothing_acknowledged() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let dir = disk.dir();
    let store = SessionStore::open(quiet_options(&dir)).await.unwrap();
    // A session of about 600 KB: a compaction needs room for a second copy.
    for n in 0..12 {
        store
            .merge(USER, WORKSPACE, &entry(n, 50_000), None, DURABLE)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let store = SessionStore::open(quiet_options(&dir)).await.unwrap();
    disk.fill_leaving(400_000);
    let (mut acked, mut applied) = (Vec::new(), Vec::new());
    for n in 12..60 {
        match store
            .merge(USER, WORKSPACE, &entry(n, 20_000), None, DURABLE)
            .await
        {
            Ok(_) => acked.push(n),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Io, "{e:?}");
                assert!(e.applied, "{e:?}");
                applied.push(n);
            }
        }
    }
    assert!(
        acked.len() > 5,
        "appends that fit succeed after compactions fail: {acked:?}"
    );
    assert!(!applied.is_empty(), "the disk filled up");

    // Full: close cannot write the rest; it keeps the sessions and says so.
    let err = store.close().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Io);
    let (on_disk, recovered) = stored(&dir).await;
    assert!(!recovered, "nothing stored was damaged");
    for &n in &acked {
        assert!(has(&on_disk, n), "acknowledged e{n} is on disk");
    }

    // Room again: the same close writes every applied change.
    disk.make_room();
    store.close().await.unwrap();
    let (on_disk, recovered) = stored(&dir).await;
    assert!(!recovered);
    for n in acked.iter().chain(&applied) {
        assert!(has(&on_disk, *n), "e{n} is on disk once there is room");
    }
}

/// A disk with room for appends but not for a second copy of the session: `close()` writes what
/// fits and reports what it could not fold in.
#[tokio::test(flavor = "multi_thread")]
async fn close_on_a_nearly_full_disk_writes_what_fits_and_says_what_it_could_not() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let dir = disk.dir();
    let store = SessionStore::open(quiet_options(&dir)).await.unwrap();
    for n in 0..20 {
        store
            .merge(USER, WORKSPACE, &entry(n, 50_000), None, DURABLE)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let store = SessionStore::open(quiet_options(&dir)).await.unwrap();
    store
        .merge(
            USER,
            WORKSPACE,
            &entry(100, 1000),
            None,
            MergeMode::default(),
        )
        .await
        .unwrap();
    disk.fill_leaving(200_000);
    let report = store.close().await.unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(report.not_compacted.len(), 1, "{report:?}");
    let (on_disk, recovered) = stored(&dir).await;
    assert!(!recovered);
    assert!(has(&on_disk, 100) && has(&on_disk, 19));
}

/// The journal's length, if there is one.
fn journal_len(dir: &Path) -> Option<u64> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".journal"))
        .map(|e| e.metadata().unwrap().len())
}

/// An append that runs out of room part-way through a record is cut back: the journal ends on a
/// record boundary, as it did before, and nothing follows half a record.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_that_runs_out_of_room_leaves_the_journal_as_it_was() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let dir = disk.dir();
    let store = SessionStore::open(quiet_options(&dir)).await.unwrap();
    store
        .merge(USER, WORKSPACE, &entry(0, 1_000), None, DURABLE)
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = SessionStore::open(quiet_options(&dir)).await.unwrap();
    store
        .merge(USER, WORKSPACE, &entry(1, 1_000), None, DURABLE)
        .await
        .unwrap();
    let before = journal_len(&dir).expect("the second merge was appended");
    // Room for a few pages of a record of about 200 KB.
    disk.fill_leaving(16_384);
    let err = store
        .merge(USER, WORKSPACE, &entry(2, 200_000), None, DURABLE)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Io, "{err:?}");
    assert_eq!(journal_len(&dir), Some(before), "cut back to where it was");
    disk.make_room();
    store.close().await.unwrap();
    let (on_disk, recovered) = stored(&dir).await;
    assert!(!recovered);
    assert!(has(&on_disk, 0) && has(&on_disk, 1) && has(&on_disk, 2));
}
