//! The mark a snapshot carries when it holds exactly what the store serialised from a checked
//! session: an extended attribute (`user.mia-narrative-session.canonical`) holding a checksum of
//! the session's file stem and the file's bytes.
//!
//! A load that finds a marked snapshot with no journal beside it, whose bytes still match the
//! mark, sends those bytes as the session's text and parses them only when a call needs the
//! session (see `Live` in `live.rs`): a client restoring a large session then waits for a read,
//! not for a parse and a serialisation. Anything else — no mark, a file changed since it was
//! marked, a file copied from another session's name, a file system without user extended
//! attributes, a system other than Linux — is read the long way, parsed and checked as before.
//!
//! The checksum (CRC-32) finds accidental change, not deliberate forgery: whoever can write the
//! data directory can write any session anyway.

use std::path::Path;

/// Bumped whenever the serialised form of a session changes, so that files marked by an earlier
/// version are read the long way.
const VERSION: &str = "1";

/// The mark for `bytes` stored as session `stem`.
pub fn mark_for(stem: &str, bytes: &[u8]) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(stem.as_bytes());
    hasher.update(&[0]);
    crate::yielding::crc32(&mut hasher, bytes);
    format!("{VERSION} {:08x} {}", hasher.finalize(), bytes.len())
}

/// The mark of the file at `path`, if it has one.
pub fn read_mark(path: &Path) -> Option<String> {
    imp::get(path)
}

/// Marks the file at `path` as holding `bytes` for session `stem`. Best effort: where the file
/// system refuses, the file stays unmarked and is read the long way.
pub fn mark(path: &Path, stem: &str, bytes: &[u8]) {
    let _ = imp::set(path, &mark_for(stem, bytes));
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    const NAME: &CStr = c"user.mia-narrative-session.canonical";

    fn c_path(path: &Path) -> Option<CString> {
        CString::new(path.as_os_str().as_bytes()).ok()
    }

    pub fn get(path: &Path) -> Option<String> {
        let path = c_path(path)?;
        let mut buf = [0u8; 64];
        // SAFETY: both strings are NUL-terminated, and the buffer's length is passed with it.
        let len = unsafe {
            libc::getxattr(
                path.as_ptr(),
                NAME.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let len = usize::try_from(len).ok()?;
        String::from_utf8(buf[..len].to_vec()).ok()
    }

    pub fn set(path: &Path, value: &str) -> std::io::Result<()> {
        let path = c_path(path).ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: both strings are NUL-terminated, and the value's length is passed with it.
        let done = unsafe {
            libc::setxattr(
                path.as_ptr(),
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
mod imp {
    use std::path::Path;

    pub fn get(_path: &Path) -> Option<String> {
        None
    }

    pub fn set(_path: &Path, _value: &str) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_binds_the_bytes_and_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"{\"a\":1}").unwrap();
        assert_eq!(read_mark(&path), None, "unmarked");
        mark(&path, "s", b"{\"a\":1}");
        let Some(found) = read_mark(&path) else {
            eprintln!("this file system keeps no user extended attributes: nothing to check");
            return;
        };
        assert_eq!(found, mark_for("s", b"{\"a\":1}"));
        assert_ne!(found, mark_for("s", b"{\"a\":2}"), "other bytes");
        assert_ne!(found, mark_for("t", b"{\"a\":1}"), "another session's name");
    }
}
