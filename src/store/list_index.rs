//! `list()`'s index: `sessions.index` in the data dir, the summary of every stored session with the
//! state of the files it was read from, so that a list looks at each session's files (one `stat`
//! each) instead of opening and parsing every snapshot.
//!
//! The index is a cache and is never trusted over the files:
//! - an entry is used only while the session's snapshot and journal are the very files it was read
//!   from: same inode, same length, same change time (ctime, which no one can set back). Any
//!   write, append, rename or repair changes one of them, and the session is read again;
//! - a file that changed less than [`SETTLE`] before it was read is not cached, since a second
//!   change within the same tick of the file system's clock would leave its ctime as it was;
//! - sessions are those the directory holds: an entry whose files are gone is dropped, a session
//!   the index lacks is read;
//! - an index that is missing, damaged, too large or of another version is rebuilt from the files.
//!
//! Being a cache, it is written without a sync: after a crash it may be old or gone, and is rebuilt.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::file::{ChangeStamp, FileBackend, StoredSummary};
use super::StoredRow;
use crate::error::Result;

/// The index's file name in the data dir.
pub const INDEX_NAME: &str = "sessions.index";
/// The layout of the index; an index of any other is rebuilt.
const VERSION: u32 = 1;
/// How long ago a file must have changed for its summary to be cached.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The most the index may take per stored session (ids are at most a few KiB), plus a margin.
const BYTES_PER_SESSION: u64 = 16 * 1024;
const BYTES_MARGIN: u64 = 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    sessions: HashMap<String, Entry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    snapshot: ChangeStamp,
    journal: Option<ChangeStamp>,
    summary: StoredSummary,
}

impl Entry {
    fn bytes(&self) -> u64 {
        self.snapshot.len + self.journal.map_or(0, |j| j.len)
    }
}

/// How a list went: how many summaries came from the index, and how many were read from the files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListStats {
    pub from_index: usize,
    pub read: usize,
}

/// Every stored session's stem, summary and size, through the index; the index is brought up to
/// date when anything in it changed. Sessions that cannot be read are left out. With `use_index`
/// false, every session is read from its files and nothing is written.
pub fn stored_summaries(
    backend: &FileBackend,
    use_index: bool,
) -> Result<(Vec<StoredRow>, ListStats)> {
    let (stems, journals) = backend.stems_with_journals()?;
    let mut stats = ListStats::default();
    if !use_index {
        let found: Vec<StoredRow> = stems
            .into_iter()
            .filter_map(|stem| {
                let (summary, bytes) = backend.summary(&stem, journals.contains(&stem))?;
                Some((stem, summary, bytes))
            })
            .collect();
        stats.read = found.len();
        return Ok((found, stats));
    }
    let max = BYTES_MARGIN.saturating_add(BYTES_PER_SESSION.saturating_mul(stems.len() as u64));
    let mut old = read_index(backend, max);
    let old_len = old.len();
    let settled_before =
        nanos_since_epoch(SystemTime::now()).map(|now| now - SETTLE.as_nanos() as i64);
    let settled = |stamp: &ChangeStamp| matches!((stamp.changed, settled_before), (Some(at), Some(before)) if at < before);

    let mut found = Vec::with_capacity(stems.len());
    let mut kept = HashMap::with_capacity(stems.len());
    let mut added = false;
    for stem in stems {
        let Some(snapshot) = backend.change_stamp(&stem, false) else {
            continue;
        };
        let journal = if journals.contains(&stem) {
            backend.change_stamp(&stem, true)
        } else {
            None
        };
        if let Some(entry) = old
            .remove(&stem)
            .filter(|e| e.snapshot == snapshot && e.journal == journal)
        {
            stats.from_index += 1;
            found.push((stem.clone(), entry.summary.clone(), entry.bytes()));
            kept.insert(stem, entry);
            continue;
        }
        // Stamped before the read: if the files change meanwhile, the next list sees other stamps.
        let Some((summary, bytes)) = backend.summary(&stem, journal.is_some()) else {
            continue;
        };
        stats.read += 1;
        if settled(&snapshot) && journal.as_ref().is_none_or(settled) {
            let entry = Entry {
                snapshot,
                journal,
                summary: summary.clone(),
            };
            kept.insert(stem.clone(), entry);
            added = true;
        }
        found.push((stem, summary, bytes));
    }
    if added || kept.len() != old_len {
        // A cache: a data dir that cannot take it (full, read-only) lists as before.
        let _ = write_index(backend, kept);
    }
    Ok((found, stats))
}

fn read_index(backend: &FileBackend, max: u64) -> HashMap<String, Entry> {
    backend
        .read_own_file(INDEX_NAME, max)
        .and_then(|bytes| serde_json::from_slice::<IndexFile>(&bytes).ok())
        .filter(|index| index.version == VERSION)
        .map(|index| index.sessions)
        .unwrap_or_default()
}

fn write_index(backend: &FileBackend, sessions: HashMap<String, Entry>) -> Result<()> {
    let index = IndexFile {
        version: VERSION,
        sessions,
    };
    let bytes = serde_json::to_vec(&index).map_err(super::internal)?;
    backend.replace_own_file(INDEX_NAME, &bytes)
}

fn nanos_since_epoch(at: SystemTime) -> Option<i64> {
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
}
