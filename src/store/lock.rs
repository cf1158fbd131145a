//! Cross-process locks on sessions: what serialises read-merge-write on one session between the
//! threads and processes that share a sessions directory.
//!
//! Two kinds, chosen once per directory (every process on one file system chooses alike):
//! - **Byte-range locks** (Linux): an open-file-description lock (`F_OFD_SETLKW`) on one byte of a
//!   single file, `.locks`, at an offset taken from the session's stem. Taking one is a single
//!   `fcntl` on a pooled descriptor: no file is created or removed per session, which is what made
//!   a sweep of many sessions and a small save slow. Two stems that share their first 60 bits share
//!   a lock, which only serialises them.
//! - **Lock files** (elsewhere, or where the file system refuses byte-range locks): `S.lock`,
//!   locked with `flock`. A delete removes it while holding it; a waiter that then gets the lock
//!   on the unlinked file notices and locks the new one.
//!
//! A lock is released when its [`SessionLock`] is dropped.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};

/// The file whose bytes are the sessions' locks (byte-range kind).
pub const RANGE_LOCK_FILE: &str = ".locks";
/// The extension of a session's lock file (lock-file kind).
pub const LOCK_EXT: &str = ".lock";
/// Descriptors kept open for reuse; more are opened when more locks are held at once.
#[cfg(target_os = "linux")]
const POOL_SIZE: usize = 16;

/// The locks of one sessions directory.
#[derive(Debug)]
pub struct SessionLocks {
    dir: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    #[cfg(target_os = "linux")]
    Range(Arc<RangeFile>),
    Files,
}

/// The `.locks` file and a pool of descriptors on it. Each descriptor is its own open file
/// description, so locks taken through two of them exclude each other, in one process too.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct RangeFile {
    path: PathBuf,
    pool: Mutex<Vec<File>>,
}

/// An exclusive lock on one session, across threads and processes. Released on drop.
#[derive(Debug)]
pub struct SessionLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    #[cfg(target_os = "linux")]
    Range {
        file: Option<File>,
        offset: i64,
        owner: Arc<RangeFile>,
    },
    File {
        _file: File,
        path: PathBuf,
    },
}

impl SessionLocks {
    /// The locks of `dir`: byte-range locks where the file system takes them, lock files otherwise.
    pub fn open(dir: &Path) -> Result<SessionLocks> {
        #[cfg(target_os = "linux")]
        {
            let path = dir.join(RANGE_LOCK_FILE);
            let file = open_private(&path)?;
            if takes_range_locks(&file) {
                let range = RangeFile {
                    path,
                    pool: Mutex::new(vec![file]),
                };
                return Ok(SessionLocks {
                    dir: dir.to_path_buf(),
                    kind: Kind::Range(Arc::new(range)),
                });
            }
        }
        Ok(SessionLocks {
            dir: dir.to_path_buf(),
            kind: Kind::Files,
        })
    }

    /// Closes the pooled descriptors of `.locks` (none is held while no lock is). Locks taken
    /// later open a descriptor again.
    pub fn release(&self) {
        #[cfg(target_os = "linux")]
        if let Kind::Range(range) = &self.kind {
            crate::lock(&range.pool).clear();
        }
    }

    /// Whether these are byte-range locks (no per-session lock files).
    pub fn is_range(&self) -> bool {
        !matches!(self.kind, Kind::Files)
    }

    /// Takes the session's lock, waiting for another holder (thread or process) to let go.
    pub fn lock(&self, stem: &str) -> Result<SessionLock> {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Range(owner) => {
                let file = owner.take()?;
                let offset = range_offset(stem);
                range_lock(&file, offset, libc::F_WRLCK as libc::c_short, true)
                    .map_err(|e| StoreError::io("cannot lock", &owner.path, e))?;
                Ok(SessionLock {
                    held: Held::Range {
                        file: Some(file),
                        offset,
                        owner: owner.clone(),
                    },
                })
            }
            Kind::Files => self.lock_file(stem),
        }
    }

    fn lock_file(&self, stem: &str) -> Result<SessionLock> {
        let path = self.dir.join(format!("{stem}{LOCK_EXT}"));
        loop {
            let file = open_private(&path)?;
            file.lock()
                .map_err(|e| StoreError::io("cannot lock", &path, e))?;
            // A delete unlinks the lock file while holding it. Whoever waited on the unlinked file
            // must lock the new one instead, or two holders would each think they are alone.
            if still_linked(&file, &path) {
                return Ok(SessionLock {
                    held: Held::File { _file: file, path },
                });
            }
        }
    }
}

impl SessionLock {
    /// Releases the lock of a session that is being deleted, removing its lock file (if it has
    /// one) while still holding it.
    pub fn release_deleted(self) -> Result<()> {
        let path = match &self.held {
            #[cfg(target_os = "linux")]
            Held::Range { .. } => return Ok(()),
            Held::File { path, .. } => path,
        };
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("cannot remove", path, e)),
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Held::Range {
            file,
            offset,
            owner,
        } = &mut self.held
        {
            if let Some(file) = file.take() {
                // Closing the descriptor would release the lock too; unlocking keeps it for reuse.
                if range_lock(&file, *offset, libc::F_UNLCK as libc::c_short, false).is_ok() {
                    owner.give_back(file);
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl RangeFile {
    fn take(&self) -> Result<File> {
        let pooled = crate::lock(&self.pool).pop();
        match pooled {
            Some(file) => Ok(file),
            None => open_private(&self.path),
        }
    }

    fn give_back(&self, file: File) {
        let mut pool = crate::lock(&self.pool);
        if pool.len() < POOL_SIZE {
            pool.push(file);
        }
    }
}

/// The byte that stands for a session: its stem's first 15 hex digits (60 bits).
#[cfg(target_os = "linux")]
fn range_offset(stem: &str) -> i64 {
    stem.get(..15)
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// Whether the file system of `file` takes OFD byte-range locks: a probe far past any stem's
/// offset. A probe that finds the byte held has its answer too: another process is probing (it
/// opened the same directory at the same moment), so the file system does take them. Counting that
/// as "no" made two processes started together choose different kinds of lock, which then did not
/// exclude each other, and their writes to one session interleaved: acknowledged records were lost.
#[cfg(target_os = "linux")]
fn takes_range_locks(file: &File) -> bool {
    const PROBE: i64 = i64::MAX - 1;
    match range_lock(file, PROBE, libc::F_WRLCK as libc::c_short, false) {
        Ok(()) => {
            let _ = range_lock(file, PROBE, libc::F_UNLCK as libc::c_short, false);
            true
        }
        Err(e) => is_held_elsewhere(&e),
    }
}

/// The error of a lock that did not wait because someone else holds the range.
#[cfg(target_os = "linux")]
fn is_held_elsewhere(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

/// Takes (`F_WRLCK`, waiting when `wait`) or releases (`F_UNLCK`) an OFD lock on one byte.
#[cfg(target_os = "linux")]
fn range_lock(file: &File, offset: i64, kind: libc::c_short, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed `flock` is a valid value (l_pid must be 0 for OFD locks).
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = kind;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    range.l_start = offset;
    range.l_len = 1;
    let command = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: the descriptor is open for as long as `file` lives, and `range` is a valid flock.
        if unsafe { libc::fcntl(file.as_raw_fd(), command, &range) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Opens (creating, 0600) a lock file. A symbolic link or anything else that is not a regular file
/// at its name is refused: the store never opens, let alone creates, a file through a link.
fn open_private(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options
        .open(path)
        .map_err(|e| StoreError::io("cannot open lock", path, e))?;
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    if !regular {
        return Err(StoreError::io(
            "cannot open lock",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"),
        ));
    }
    Ok(file)
}

#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_linked(_file: &File, path: &Path) -> bool {
    path.exists()
}
