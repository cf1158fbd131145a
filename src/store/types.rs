//! What a store takes and what its calls give back: options, outcomes, events and summaries.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{disk, file::StoredSummary, redis};
use crate::clock::WallClock;
use crate::error::{Result, StoreError};

pub const DEFAULT_TTL_DAYS: f64 = 30.0;
pub const DEFAULT_AUTOSAVE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_UNLOAD_AFTER: Duration = Duration::from_secs(10 * 60);
/// The default limit on a session's size, and so on one update's.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 32 * 1024 * 1024;

/// Where a store keeps its sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Files in `data_dir`: one machine, one or several processes. The default.
    File,
    /// Redis (one node, or a Redis Cluster), shared by several instances. Sessions expire
    /// through Redis's own TTL.
    Redis(redis::RedisConfig),
}

/// How long a small session goes without calls before it is held as text (see
/// [`StoreOptions::fold_after`]).
pub const DEFAULT_FOLD_AFTER: Duration = Duration::from_secs(2);

/// The default prefix of the Redis backend's keys.
pub const DEFAULT_KEY_PREFIX: &str = "mia:ns:";

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub backend: BackendChoice,
    /// The file system the file backend writes through: the real one, or in tests one that fails
    /// or loses writes on purpose (see [`disk`]).
    pub disk: Arc<dyn disk::Disk>,
    pub data_dir: PathBuf,
    pub ttl_days: f64,
    /// How often dirty sessions are written. Zero turns autosave off.
    pub autosave_interval: Duration,
    /// How often the TTL sweep runs (it also runs at open). Zero turns it off.
    pub cleanup_interval: Duration,
    /// How long a session no call uses stays in memory once everything is written (checked at each
    /// autosave tick). Zero keeps sessions until close.
    pub unload_after: Duration,
    /// How long a small session (its JSON at most 16 KiB) goes without calls before it is held
    /// as its text alone, about a third of the memory it takes parsed; the next call parses it
    /// again. The first call on a session after such a pause holds it as text when it ends. Zero:
    /// after every call.
    pub fold_after: Duration,
    pub max_session_bytes: usize,
    /// The wall clock the store's hybrid clock reads: the system's, or one a test sets.
    pub wall_clock: WallClock,
    /// Whether `list()` keeps its index in the data dir (see [`super::list_index`]). Off, a list
    /// reads every session and writes nothing.
    pub list_index: bool,
}

impl StoreOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            backend: BackendChoice::File,
            disk: Arc::new(disk::RealDisk),
            data_dir: data_dir.into(),
            ttl_days: DEFAULT_TTL_DAYS,
            autosave_interval: DEFAULT_AUTOSAVE_INTERVAL,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            unload_after: DEFAULT_UNLOAD_AFTER,
            fold_after: DEFAULT_FOLD_AFTER,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
            wall_clock: WallClock::system(),
            list_index: true,
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        check_ttl(self.ttl_days)?;
        if self.max_session_bytes == 0 {
            return Err(StoreError::invalid("maxSessionBytes must be positive"));
        }
        Ok(())
    }
}

pub(super) fn check_ttl(ttl_days: f64) -> Result<()> {
    if ttl_days.is_finite() && ttl_days > 0.0 {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "ttlDays must be a positive number, not {ttl_days}"
        )))
    }
}

/// A loaded session, as JSON text: what a host sends to a socket without parsing it.
#[derive(Clone, Debug)]
pub struct LoadOutcome {
    /// Shared with the copy the store keeps until the session changes: a caller that hands the
    /// text on to code that may write into it (a JavaScript Buffer) gives a copy.
    pub session_json: Arc<String>,
    /// The session's id, so that a caller forwarding the text need not parse it.
    pub session_id: String,
    /// The session did not exist and was created.
    pub created: bool,
    /// The stored file was unusable: the session came from the backup (or, with `created`, was lost).
    pub recovered: bool,
}

/// How `merge` reports and persists.
#[derive(Clone, Copy, Debug)]
pub struct MergeMode {
    /// Return the merged session as JSON. Serialising a large session costs far more than the merge.
    pub with_session: bool,
    /// Save before returning (one journal append): the merge is durable once acknowledged.
    pub durable: bool,
}

impl Default for MergeMode {
    fn default() -> Self {
        MergeMode {
            with_session: true,
            durable: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MergeOutcome {
    pub session_json: Option<String>,
    /// The path of every value that changed (`"memory.goal"`, `"conversationHistory.e1"`).
    pub changes: Vec<String>,
    /// The path of every value of the update that the session does not hold after the merge (and,
    /// when durable, after the save): it lost to a later write. Never also in `changes`.
    pub lost: Vec<String>,
}

/// What `close()` wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Sessions written.
    pub written: usize,
    /// Sessions whose changes are durable in their journal, but which could not be folded into a
    /// snapshot (session id, why): a later open reads the journal as usual.
    pub not_compacted: Vec<(String, String)>,
}

/// Sent to listeners for every merge that changed something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeEvent {
    pub user_id: String,
    pub workspace_id: String,
    pub session_id: String,
    /// Who made the change: the caller's origin, or `"external"` for a change found on disk.
    pub origin: String,
    pub changes: Vec<String>,
}

pub type MergeListener = Arc<dyn Fn(&MergeEvent) + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub created_at: String,
    pub updated_at: String,
    /// Size of the stored file (0 for a session created here and not saved yet).
    pub bytes: u64,
    pub charts: usize,
    pub beats: usize,
    pub entries: usize,
    /// Loaded in this store.
    pub loaded: bool,
    /// Loaded, with changes not yet written.
    pub dirty: bool,
}

impl SessionSummary {
    /// A session as stored, `bytes` long, and not loaded here.
    pub fn stored(s: StoredSummary, bytes: u64) -> SessionSummary {
        SessionSummary {
            id: s.id,
            user_id: s.user_id,
            workspace_id: s.workspace_id,
            created_at: s.created_at,
            updated_at: s.updated_at,
            bytes,
            charts: s.charts,
            beats: s.beats,
            entries: s.entries,
            loaded: false,
            dirty: false,
        }
    }

    /// The same summary, for a session loaded here (`dirty`: with changes not written yet).
    pub fn loaded(self, dirty: bool) -> SessionSummary {
        SessionSummary {
            loaded: true,
            dirty,
            ..self
        }
    }
}
