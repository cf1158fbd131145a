//! The TTL sweep: sessions untouched for longer than the TTL are removed.
//!
//! What it promises:
//! - **Compare, then delete.** A session is deleted only after its lock is taken and its `updatedAt`
//!   is read again under that lock; one saved during the sweep survives.
//! - **In use is never reaped.** A session loaded in this store is skipped, and its file is touched
//!   so that other processes' sweeps, which skip recently modified files, leave it alone too.
//! - **Corrupt files are never deleted** here: only a session that parses and is expired goes.
//! - It blocks, so the store runs it on tokio's blocking pool, never on Node's main thread.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::{parse_rfc3339_millis, MAX_CLOCK_AHEAD_MS};
use crate::error::Result;
use crate::store::file::{FileBackend, FileStamp};

/// Temp files older than this are leftovers of an interrupted write.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    /// Session files looked at.
    pub scanned: usize,
    /// Expired sessions removed.
    pub removed: usize,
    /// Sessions kept because they are within the TTL (or unreadable: those are left for `load`).
    pub kept: usize,
    /// Sessions kept because this store has them loaded.
    pub in_use: usize,
    /// Stale temp files removed.
    pub temp_files_removed: usize,
    /// Per-file failures; the sweep goes on past them.
    pub errors: Vec<String>,
}

/// Removes every session whose `updatedAt` is before `cutoff_millis`, except those `in_use` says
/// are loaded. `before_delete` runs between the first look and the locked re-check; tests use it to
/// play a writer that touches the session mid-sweep.
///
/// A large directory is swept by a few threads at once, each over its own share of the sessions,
/// and each yields its core every [`YIELD_EVERY`] sessions: Linux often wakes the host's main
/// thread on a core a sweep thread holds and leaves it waiting there, and a yield lets it run.
/// (W5, 100,000 files on 2 cores, W5-only runs: two threads yielding, 0.81–1.15 s, longest block
/// 1.1–3.6 ms, stall 0.4–3.0 ms; two threads not yielding, 1.08 s, 4.05 and 4.75 ms; one thread,
/// leaving a core to Node, 1.48–1.96 s, 2.2–4.0 and 1.6–4.0 ms.)
pub fn sweep(
    backend: &FileBackend,
    cutoff_millis: i64,
    in_use: &(dyn Fn(&str) -> bool + Sync),
    before_delete: &(dyn Fn(&str) + Sync),
) -> Result<CleanupReport> {
    let (stems, journals) = backend.stems_with_journals()?;
    let sweep = Sweep {
        backend,
        journals,
        cutoff_millis,
        cutoff_time: UNIX_EPOCH + Duration::from_millis(cutoff_millis.max(0) as u64),
        in_use,
        before_delete,
    };
    let threads = sweep_threads(crate::cores(), stems.len());
    let mut shares = stems.chunks(stems.len().div_ceil(threads).max(1));
    let first = shares.next().unwrap_or_default();
    let mut report = std::thread::scope(|scope| {
        let sweep = &sweep;
        let others: Vec<_> = shares
            .map(|share| scope.spawn(move || sweep.share(share)))
            .collect();
        let mut report = sweep.share(first);
        for other in others {
            let part = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            report.add(part);
        }
        report
    });
    if report.removed > 0 {
        backend.sync()?;
    }
    report.temp_files_removed = backend.remove_stale_temp_files(STALE_TEMP_AGE)?;
    Ok(report)
}

/// How many threads sweep `sessions` sessions on a machine with `cores` cores: one per core, up to
/// [`MAX_SWEEP_THREADS`], and one for a small directory.
fn sweep_threads(cores: usize, sessions: usize) -> usize {
    cores
        .clamp(1, MAX_SWEEP_THREADS)
        .min(sessions.div_ceil(SESSIONS_PER_THREAD).max(1))
}

/// A sweep thread yields its core after this many sessions (about 0.3 ms of work here).
const YIELD_EVERY: usize = 16;

/// At most this many threads sweep one directory.
const MAX_SWEEP_THREADS: usize = 4;
/// A thread more for each this many sessions: below it, one thread does the whole sweep.
const SESSIONS_PER_THREAD: usize = 2_000;

impl CleanupReport {
    fn add(&mut self, other: CleanupReport) {
        self.scanned += other.scanned;
        self.removed += other.removed;
        self.kept += other.kept;
        self.in_use += other.in_use;
        self.temp_files_removed += other.temp_files_removed;
        self.errors.extend(other.errors);
    }
}

/// One sweep of a directory, as every thread of it sees it.
struct Sweep<'a> {
    backend: &'a FileBackend,
    /// The stems that had a journal when the directory was read.
    journals: HashSet<String>,
    cutoff_millis: i64,
    cutoff_time: SystemTime,
    in_use: &'a (dyn Fn(&str) -> bool + Sync),
    before_delete: &'a (dyn Fn(&str) + Sync),
}

impl Sweep<'_> {
    fn share(&self, stems: &[String]) -> CleanupReport {
        let mut report = CleanupReport::default();
        crate::yielding::in_pieces(stems, YIELD_EVERY, |piece| {
            for stem in piece {
                self.one(stem, &mut report);
            }
        });
        report
    }

    /// Looks at one stored session and removes it if it is expired and not in use.
    fn one(&self, stem: &str, report: &mut CleanupReport) {
        let backend = self.backend;
        report.scanned += 1;
        if (self.in_use)(stem) {
            backend.touch(stem);
            report.in_use += 1;
            return;
        }
        let has_journal = self.journals.contains(stem);
        let (expired, seen) = looks_expired(
            backend,
            stem,
            has_journal,
            self.cutoff_millis,
            self.cutoff_time,
        );
        if !expired {
            report.kept += 1;
            return;
        }
        (self.before_delete)(stem);
        match delete_if_still_expired(backend, stem, self.cutoff_millis, seen, self.in_use) {
            Ok(true) => report.removed += 1,
            Ok(false) => report.kept += 1,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
}

/// Whether a sweep takes the session for expired at its first look (without its lock), and the
/// snapshot's stamp it looked at.
fn looks_expired(
    backend: &FileBackend,
    stem: &str,
    has_journal: bool,
    cutoff_millis: i64,
    cutoff_time: SystemTime,
) -> (bool, Option<FileStamp>) {
    let seen = backend.stamp(stem);
    // A file written after the cutoff holds a session updated after it: no need to read it.
    let journal_written = has_journal
        .then(|| backend.journal_modified(stem))
        .flatten();
    let written = seen.and_then(|s| s.modified()).max(journal_written);
    if written.is_some_and(|m| m >= cutoff_time) {
        return (false, seen);
    }
    // Without a journal in the listing, the snapshot alone is read; one made since is seen by
    // the re-check under the lock.
    let expired = is_expired(backend, stem, cutoff_millis, has_journal, written);
    (expired, seen)
}

/// The stems a sweep at `cutoff_millis` would remove, as it judges them at its first look, read
/// only: what `gc --dry-run` lists. Sessions `in_use` says are loaded are left out.
pub fn expired(
    backend: &FileBackend,
    cutoff_millis: i64,
    in_use: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<String>> {
    let (stems, journals) = backend.stems_with_journals()?;
    let cutoff_time = UNIX_EPOCH + Duration::from_millis(cutoff_millis.max(0) as u64);
    Ok(stems
        .into_iter()
        .filter(|stem| {
            !in_use(stem)
                && looks_expired(
                    backend,
                    stem,
                    journals.contains(stem),
                    cutoff_millis,
                    cutoff_time,
                )
                .0
        })
        .collect())
}

/// Removes one session if it is expired, as the sweep does: under its lock, after reading its
/// `updatedAt` again (a session saved meanwhile stays), and makes the removal durable.
pub fn remove_if_expired(
    backend: &FileBackend,
    stem: &str,
    cutoff_millis: i64,
    in_use: &(dyn Fn(&str) -> bool + Sync),
) -> Result<bool> {
    let cutoff_time = UNIX_EPOCH + Duration::from_millis(cutoff_millis.max(0) as u64);
    let has_journal = backend.journal_size(stem).is_some();
    if in_use(stem) || !looks_expired(backend, stem, has_journal, cutoff_millis, cutoff_time).0 {
        return Ok(false);
    }
    let removed = delete_if_still_expired(backend, stem, cutoff_millis, None, in_use)?;
    if removed {
        backend.sync()?;
    }
    Ok(removed)
}

/// Whether the session's `updatedAt` is before the cutoff. An `updatedAt` more than the clock bound
/// ahead of this machine's clock came from a clock that ran ahead (a machine whose clock read
/// 2100, say): the session then counts as updated when its files were last written (`written`),
/// so that it still expires. (An `updatedAt` later than the files but not in the future is
/// believed: a copy restored from a backup keeps its old modification time.)
fn is_expired(
    backend: &FileBackend,
    stem: &str,
    cutoff_millis: i64,
    journal: bool,
    written: Option<SystemTime>,
) -> bool {
    let future = now_millis().saturating_add(MAX_CLOCK_AHEAD_MS as i64);
    let written = written
        .and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |w| w.as_millis() as i64);
    backend
        .summary(stem, journal)
        .and_then(|(summary, _)| parse_rfc3339_millis(&summary.updated_at))
        .map(|updated| if updated > future { written } else { updated })
        .is_some_and(|updated| updated < cutoff_millis)
}

fn delete_if_still_expired(
    backend: &FileBackend,
    stem: &str,
    cutoff_millis: i64,
    seen: Option<FileStamp>,
    in_use: &(dyn Fn(&str) -> bool + Sync),
) -> Result<bool> {
    let lock = backend.lock(stem)?;
    if in_use(stem) {
        return Ok(false);
    }
    // Unchanged files (same snapshot stamp, no journal) hold what was judged expired; anything
    // else is read again under the lock.
    let journal = backend.journal_size(stem);
    let stamp = backend.stamp(stem);
    let unchanged = seen.is_some() && stamp == seen && journal.unwrap_or(0) == 0;
    let written = stamp
        .and_then(|s| s.modified())
        .max(backend.journal_modified(stem));
    if !unchanged && !is_expired(backend, stem, cutoff_millis, true, written) {
        return Ok(false);
    }
    backend.unlink(stem, lock, journal.is_some())
}

/// Milliseconds since the epoch, `ttl_days` before `now_millis`.
pub fn cutoff(now_millis: i64, ttl_days: f64) -> i64 {
    now_millis - (ttl_days * 86_400_000.0) as i64
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::{sweep_threads, CleanupReport};

    #[test]
    fn the_reports_of_a_sweeps_threads_add_up() {
        let report = |n: usize, error: &str| CleanupReport {
            scanned: n,
            removed: n + 1,
            kept: n + 2,
            in_use: n + 3,
            temp_files_removed: n + 4,
            errors: vec![error.to_string()],
        };
        let mut total = report(10, "a");
        total.add(report(100, "b"));
        assert_eq!(
            total,
            CleanupReport {
                scanned: 110,
                removed: 112,
                kept: 114,
                in_use: 116,
                temp_files_removed: 118,
                errors: vec!["a".into(), "b".into()],
            }
        );
    }

    #[test]
    fn a_sweep_has_a_thread_per_core_up_to_four_and_small_directories_get_one() {
        assert_eq!(sweep_threads(1, 100_000), 1);
        assert_eq!(sweep_threads(2, 100_000), 2);
        assert_eq!(sweep_threads(3, 100_000), 3);
        assert_eq!(sweep_threads(16, 100_000), 4);
        assert_eq!(sweep_threads(16, 1_500), 1);
        assert_eq!(sweep_threads(16, 5_000), 3);
        assert_eq!(sweep_threads(16, 0), 1);
    }
}
