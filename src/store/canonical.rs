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
//! Wherever a mark is found, it is checked: a snapshot (or backup) whose bytes no longer match its
//! mark has changed since the store wrote it (bit rot, a torn copy, an edit in place), and is moved
//! aside as corrupt even if it still parses, so that the best other copy is loaded instead.
//!
//! The checksum (CRC-32) finds accidental change, not deliberate forgery: whoever can write the
//! data directory can write any session anyway.

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

/// Whether `mark` vouches for `bytes` stored as session `stem`: Some(true) when it matches,
/// Some(false) when it was made for other bytes (the file changed since it was marked), and None
/// when it is no mark this version can check (a later format, or no mark at all).
pub fn verify(mark: &str, stem: &str, bytes: &[u8]) -> Option<bool> {
    let version = mark.split(' ').next()?;
    (version == VERSION).then(|| mark == mark_for(stem, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_binds_the_bytes_and_the_name() {
        let mark = mark_for("s", b"{\"a\":1}");
        assert_eq!(verify(&mark, "s", b"{\"a\":1}"), Some(true));
        assert_eq!(verify(&mark, "s", b"{\"a\":2}"), Some(false), "other bytes");
        assert_eq!(
            verify(&mark, "t", b"{\"a\":1}"),
            Some(false),
            "another name"
        );
        assert_eq!(verify("2 0 7", "s", b"{\"a\":1}"), None, "a later format");
        assert_eq!(verify("", "s", b""), None);
    }
}
