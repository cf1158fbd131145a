//! The file system as the file backend sees it: every read, write, sync, rename and removal the
//! backend makes in the data dir goes through [`Disk`].
//!
//! [`RealDisk`] is the one the store uses. It never follows a symbolic link inside the data dir
//! and never opens anything but a regular file there: every open is `O_NOFOLLOW | O_NONBLOCK`,
//! checked with `fstat` before it is read or written, so a symlink planted as a session's journal
//! is not written through, a FIFO does not hang a read, and a 2 GiB file in place of a snapshot is
//! refused before a byte of it is read. (The data dir itself may be a symbolic link: the store
//! then writes into the directory it names.)
//!
//! The tests put other implementations in its place: one that fails the Nth operation with `EIO`
//! or `ENOSPC`, and one that keeps files in memory and, at a simulated power loss, keeps only what
//! Linux promises to have on disk (`tests/support/`). That is why the backend calls each `fsync`
//! itself, through [`DiskFile::sync_data`], [`DiskFile::sync_all`] and [`Disk::sync_dir`]: a
//! sync the backend forgot is a sync the simulated power loss sees missing.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// What kind of thing a directory entry is (a symbolic link is not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

/// What `stat` tells of an entry, without following a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub len: u64,
    pub modified: Option<SystemTime>,
    /// Device and inode: the same pair means the same file.
    pub identity: (u64, u64),
    /// When the file's content or metadata last changed (its ctime, in nanoseconds since the
    /// epoch): unlike the modification time, no one can set it back. None where it is not known.
    pub changed: Option<i64>,
}

/// The operations the file backend makes on the data dir.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Reads the regular file at `path` whole. Refuses, before reading, anything that is not a
    /// regular file ([`not_regular`]) and any file over `max` bytes ([`too_big`]).
    fn read(&self, path: &Path, max: u64) -> io::Result<Vec<u8>>;
    /// What is at `path`, without following a symbolic link.
    fn entry(&self, path: &Path) -> io::Result<Entry>;
    /// Creates a new private (0600) file; fails if anything, a symbolic link included, is there.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens the regular file at `path` for appending, creating it (0600) when there is nothing
    /// there. Refuses anything that is not a regular file.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens the existing regular file at `path` for writing, without truncating it.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Gives the file at `from` a second name, `to` (which must not exist).
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the renames, creations and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its missing parents, private (0700). A directory already there is fine;
    /// anything else there is an error.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// The value of the store's extended attribute on the regular file at `path`, if it has one.
    fn mark(&self, path: &Path) -> Option<String>;
}

/// An open regular file of the data dir.
pub trait DiskFile: Send + fmt::Debug {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: the file's data (and its length) are on the disk.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fsync`: data and metadata.
    fn sync_all(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn set_modified(&mut self, time: SystemTime) -> io::Result<()>;
    fn entry(&self) -> io::Result<Entry>;
    /// Sets the store's extended attribute. Best effort for the caller: a file system without user
    /// extended attributes refuses it.
    fn set_mark(&mut self, value: &str) -> io::Result<()>;
}

/// The error for an entry that is not a regular file where one was expected.
pub fn not_regular(path: &Path, kind: EntryKind) -> io::Error {
    let what = match kind {
        EntryKind::File => "a regular file",
        EntryKind::Dir => "a directory",
        EntryKind::Symlink => "a symbolic link",
        EntryKind::Special => "a FIFO, socket or device",
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        NotRegular(format!("{} is {what}, not a regular file", path.display())),
    )
}

/// The error for a file larger than a read may take.
pub fn too_big(path: &Path, len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        TooBig(format!(
            "{} is {len} bytes, more than the {max} a read may take",
            path.display()
        )),
    )
}

/// The inner error of [`not_regular`].
#[derive(Debug)]
pub struct NotRegular(String);

/// The inner error of [`too_big`].
#[derive(Debug)]
pub struct TooBig(String);

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TooBig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotRegular {}
impl std::error::Error for TooBig {}

/// Whether `e` says the entry is not a regular file (or, from the system, a symbolic link that
/// `O_NOFOLLOW` refused).
pub fn is_not_regular(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotRegular>()) || e.raw_os_error() == Some(ELOOP)
}

/// Whether `e` says the file is larger than the read may take.
pub fn is_too_big(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooBig>())
}

#[cfg(unix)]
const ELOOP: i32 = libc::ELOOP;
#[cfg(not(unix))]
const ELOOP: i32 = -1;

/// The real file system.
#[derive(Debug, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile {
    file: std::fs::File,
}

impl RealDisk {
    /// Opens `path` without following a symbolic link and without blocking on a FIFO, and checks
    /// that it is a regular file.
    /// `extra_flags`: more `open(2)` flags (Unix).
    fn open_regular(
        path: &Path,
        options: &mut std::fs::OpenOptions,
        extra_flags: i32,
    ) -> io::Result<(RealFile, Entry)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | extra_flags);
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = extra_flags;
        let file = options.open(path)?;
        let entry = entry_of(&file.metadata()?);
        if entry.kind != EntryKind::File {
            return Err(not_regular(path, entry.kind));
        }
        Ok((RealFile { file }, entry))
    }
}

impl Disk for RealDisk {
    fn read(&self, path: &Path, max: u64) -> io::Result<Vec<u8>> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        // Linux's O_NOATIME, for the files' owner: reading a session then writes nothing to the
        // disk (a sweep of 100,000 files: 2.07–2.23 s against 2.25–2.43 s, alternating runs).
        #[cfg(target_os = "linux")]
        let opened = match RealDisk::open_regular(path, &mut options.clone(), libc::O_NOATIME) {
            // Not the owner (and without CAP_FOWNER): an ordinary read.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                RealDisk::open_regular(path, &mut options, 0)
            }
            other => other,
        };
        #[cfg(not(target_os = "linux"))]
        let opened = RealDisk::open_regular(path, &mut options, 0);
        let (file, entry) = opened?;
        if entry.len > max {
            return Err(too_big(path, entry.len, max));
        }
        // Sized once from the length, and read in pieces (yielding the core between them); no
        // more than `max` even if the file grows meanwhile.
        let bytes = crate::yielding::read_to_end(
            &mut io::Read::take(&file.file, max + 1),
            entry.len as usize,
        )?;
        if bytes.len() as u64 > max {
            return Err(too_big(path, bytes.len() as u64, max));
        }
        Ok(bytes)
    }

    fn entry(&self, path: &Path) -> io::Result<Entry> {
        std::fs::symlink_metadata(path).map(|m| entry_of(&m))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        Ok(Box::new(RealDisk::open_regular(path, &mut options, 0)?.0))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        Ok(Box::new(RealDisk::open_regular(path, &mut options, 0)?.0))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        Ok(Box::new(RealDisk::open_regular(path, &mut options, 0)?.0))
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        // link(2) does not follow a symbolic link at `from` (it links the link itself), and fails
        // if anything is at `to`.
        std::fs::hard_link(from, to)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Windows has no directory fsync; NTFS journals renames.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = dir;
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        if std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)
    }

    fn mark(&self, path: &Path) -> Option<String> {
        xattr::get(path)
    }
}

impl DiskFile for RealFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.file, bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn set_modified(&mut self, time: SystemTime) -> io::Result<()> {
        self.file.set_modified(time)
    }

    fn entry(&self) -> io::Result<Entry> {
        self.file.metadata().map(|m| entry_of(&m))
    }

    fn set_mark(&mut self, value: &str) -> io::Result<()> {
        xattr::set(&self.file, value)
    }
}

fn entry_of(meta: &std::fs::Metadata) -> Entry {
    let kind = meta.file_type();
    let kind = if kind.is_file() {
        EntryKind::File
    } else if kind.is_dir() {
        EntryKind::Dir
    } else if kind.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Special
    };
    #[cfg(unix)]
    let identity = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let identity = (0, 0);
    #[cfg(unix)]
    let changed = {
        use std::os::unix::fs::MetadataExt;
        meta.ctime()
            .checked_mul(1_000_000_000)
            .and_then(|ns| ns.checked_add(meta.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let changed = None;
    Entry {
        kind,
        len: meta.len(),
        modified: meta.modified().ok(),
        identity,
        changed,
    }
}

/// The store's extended attribute (`user.mia-narrative-session.canonical`; see `canonical.rs`),
/// read without following a symbolic link and written through the open file.
#[cfg(target_os = "linux")]
mod xattr {
    use std::ffi::{CStr, CString};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    const NAME: &CStr = c"user.mia-narrative-session.canonical";

    pub fn get(path: &Path) -> Option<String> {
        let path = CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut buf = [0u8; 64];
        // SAFETY: both strings are NUL-terminated, and the buffer's length is passed with it.
        let len = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                NAME.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let len = usize::try_from(len).ok()?;
        String::from_utf8(buf[..len].to_vec()).ok()
    }

    pub fn set(file: &std::fs::File, value: &str) -> std::io::Result<()> {
        // SAFETY: the descriptor is open for as long as `file` lives, the name is NUL-terminated,
        // and the value's length is passed with it.
        let done = unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                NAME.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod xattr {
    use std::path::Path;

    pub fn get(_path: &Path) -> Option<String> {
        None
    }

    pub fn set(_file: &std::fs::File, _value: &str) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; len]).unwrap();
        path
    }

    #[test]
    fn a_read_takes_a_file_of_exactly_its_limit_and_refuses_one_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let at_limit = file_of(dir.path(), "at", 100);
        assert_eq!(RealDisk.read(&at_limit, 100).unwrap().len(), 100);
        let over = file_of(dir.path(), "over", 101);
        let err = RealDisk.read(&over, 100).unwrap_err();
        assert!(is_too_big(&err) && !is_not_regular(&err), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is 101 bytes, more than the 100 a read may take",
                over.display()
            )
        );
    }

    /// A file whose size says less than it holds (as one growing during the read would) is read
    /// up to the limit and refused, never cut short: Linux's /proc files report a size of 0.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_size_said_is_refused_not_cut_short() {
        let status = Path::new("/proc/self/status");
        assert_eq!(RealDisk.entry(status).unwrap().len, 0);
        assert!(RealDisk.read(status, 1 << 20).unwrap().len() > 100);
        let err = RealDisk.read(status, 100).unwrap_err();
        assert!(is_too_big(&err), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_refused_as_not_a_regular_file_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let target = file_of(dir.path(), "target", 10);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = RealDisk.read(&link, 100).unwrap_err();
        assert!(is_not_regular(&err) && !is_too_big(&err), "{err}");

        let err = RealDisk.read(dir.path(), 100).unwrap_err();
        assert!(is_not_regular(&err) && !is_too_big(&err), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a directory, not a regular file",
                dir.path().display()
            )
        );
        let plain = io::Error::other("disk on fire");
        assert!(!is_too_big(&plain) && !is_not_regular(&plain));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_mark_written_through_the_file_is_read_back_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marked");
        let mut file = RealDisk.create_new(&path).unwrap();
        assert_eq!(RealDisk.mark(&path), None);
        file.set_mark("abc123").unwrap();
        assert_eq!(RealDisk.mark(&path).as_deref(), Some("abc123"));
    }
}
