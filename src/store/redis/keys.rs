//! Key names and the checks on what goes into them: a session's keys share the hash tag `{S}`, so
//! on Redis Cluster they live in one slot, and the slot is computed here as the cluster does.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Result, StoreError};
use crate::paths::{is_file_stem, SessionKey};

/// The longest key prefix accepted, in bytes.
pub const MAX_PREFIX_BYTES: usize = 256;

/// Slots of a Redis Cluster.
pub(super) const CLUSTER_SLOTS: u16 = 16384;

/// The keys of one session.
pub(super) struct Keys {
    pub(super) snap: String,
    pub(super) log: String,
    pub(super) ver: String,
    pub(super) gen: String,
    pub(super) mark: String,
    /// The cluster slot all of them (and the session's channel) hash to.
    pub(super) slot: u16,
}

impl Keys {
    /// The keys of the session with stem `stem` under `prefix`; refuses what is not a stem.
    pub(super) fn of(prefix: &str, stem: &str) -> Result<Keys> {
        if !is_file_stem(stem) {
            return Err(StoreError::invalid(format!(
                "{stem:?} is not a session stem (64 lowercase hex digits)"
            )));
        }
        Ok(Keys {
            snap: key_name(prefix, stem, "snap"),
            log: key_name(prefix, stem, "log"),
            ver: key_name(prefix, stem, "ver"),
            gen: key_name(prefix, stem, "gen"),
            mark: key_name(prefix, stem, "mark"),
            slot: slot_of(stem.as_bytes()),
        })
    }

    pub(super) fn all(&self) -> [&str; 5] {
        [&self.snap, &self.log, &self.ver, &self.gen, &self.mark]
    }
}

/// `<prefix>{<stem>}:<kind>`.
pub(super) fn key_name(prefix: &str, stem: &str, kind: &str) -> String {
    format!("{prefix}{{{stem}}}:{kind}")
}

/// The stem in `<prefix>{<stem>}<suffix>`, if `name` is one of the backend's names.
pub(super) fn stem_of(prefix: &str, name: &str, suffix: &str) -> Option<String> {
    let stem = name
        .strip_prefix(prefix)?
        .strip_prefix('{')?
        .strip_suffix(suffix)?
        .strip_suffix('}')?;
    is_file_stem(stem).then(|| stem.to_string())
}

/// The cluster slot of a hash tag's content: CRC16 (XMODEM) modulo 16384, as Redis computes it.
pub(super) fn slot_of(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in tag {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % CLUSTER_SLOTS
}

/// Refuses what is not one frame as [`crate::journal::encode`] makes it (a bug in the caller).
pub(super) fn check_frame(record: &[u8]) -> Result<()> {
    let len = record
        .get(..4)
        .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
    if len.is_some_and(|len| len + 8 == record.len()) {
        Ok(())
    } else {
        Err(StoreError::internal(
            "a log record must be one journal frame",
        ))
    }
}

pub(super) fn check_stem_of(stem: &str, key: &SessionKey) -> Result<()> {
    if key.file_stem() == stem {
        Ok(())
    } else {
        Err(StoreError::internal(format!(
            "stem {stem} is not the stem of the session key"
        )))
    }
}

pub(super) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.contains(['{', '}']) {
        return Err(StoreError::invalid(format!(
            "keyPrefix {prefix:?} must not contain braces: they make the Redis Cluster hash tag"
        )));
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(StoreError::invalid(format!(
            "keyPrefix is {} bytes long; the limit is {MAX_PREFIX_BYTES}",
            prefix.len()
        )));
    }
    Ok(())
}

pub(super) fn ttl_millis(ttl: Duration) -> Result<i64> {
    let ms = ttl.as_millis();
    if ms == 0 || ms > i64::MAX as u128 {
        return Err(StoreError::invalid(format!(
            "the TTL must be at least 1 ms, not {ttl:?}"
        )));
    }
    Ok(ms as i64)
}

/// `url` with any password (or user) replaced, for messages.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

/// Escapes Redis glob characters, so a prefix matches only itself in `SCAN` and `PSUBSCRIBE`.
pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A generation token: non-zero, and unlikely to repeat across instances and restarts.
pub(super) fn new_generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // Kept below 2^53 so that it survives a trip through JavaScript numbers too.
    (hasher.finish() >> 11).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:p%40ss@h/1?x=y"),
            "rediss://***@h/1?x=y"
        );
        assert_eq!(redact_url("redis://host:1/0"), "redis://host:1/0");
    }

    #[test]
    fn prefixes_are_escaped_for_globs() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("mia:ns:"), "mia:ns:");
    }

    #[test]
    fn braces_in_a_prefix_are_refused() {
        assert!(check_prefix("mia:{x}:").is_err());
        assert!(check_prefix("mia:ns:").is_ok());
        assert!(check_prefix("").is_ok());
    }

    #[test]
    fn generations_are_nonzero_and_fit_javascript_numbers() {
        for _ in 0..100 {
            let g = new_generation();
            assert!(g > 0 && g < (1 << 53));
        }
    }

    #[test]
    fn slots_are_the_clusters() {
        // CRC16/XMODEM's check value, and what `CLUSTER KEYSLOT` answers.
        assert_eq!(slot_of(b"123456789"), 0x31c3 % CLUSTER_SLOTS);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b""), 0);
    }
}
