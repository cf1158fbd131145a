//! The file backend: one JSON document a session, written crash-safely (design.md, section 4).
//!
//! Files of the session with stem `S` (see [`crate::paths::SessionKey::file_stem`]):
//!
//! | file | what it is |
//! |---|---|
//! | `S.json` | the session |
//! | `S.json.bak` | the version before the last write: the previous good copy |
//! | `S.journal` | updates merged since `S.json` was written (see [`crate::journal`]) |
//! | `.locks` | the cross-process locks for read-merge-write, one byte a session (Linux; see [`super::lock`]) |
//! | `S.lock` | the same, as one lock file a session, where byte-range locks are not to be had |
//! | `S.json.corrupt-<ms>` | a file that did not parse, moved aside and kept for the operator |
//! | `.S.<pid>.<n>.tmp` | a write in progress; stale ones are removed by cleanup |
//! | `sessions.index` | `list()`'s summaries of the sessions, a cache (see [`super::list_index`]) |
//!
//! Every function here blocks: the store calls them on tokio's blocking pool (or, for a save's short
//! first step, on a tokio worker that has handed its other tasks on), never on Node's thread.
//! Every function that reads or changes a session's files takes its [`SessionLock`].

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::clock::wall_clock_millis;
use crate::error::{ErrorCode, Result, StoreError};
use crate::model::{from_json_bytes, validate_session, NarrativeSession};
use crate::paths::{is_file_stem, SessionKey};

use super::canonical;
use super::disk::{is_not_regular, is_too_big, Disk, DiskFile, EntryKind, RealDisk};
use super::group_sync::GroupSync;
pub use super::lock::SessionLock;
use super::lock::SessionLocks;

const SESSION_EXT: &str = ".json";
const BACKUP_EXT: &str = ".json.bak";
const JOURNAL_EXT: &str = ".journal";
const TEMP_EXT: &str = ".tmp";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many journals stay open between appends (see [`OpenJournals`]).
const MAX_OPEN_JOURNALS: usize = 128;

/// The largest files a read takes, from the store's limit on a session's size: a snapshot is one
/// session; a journal may grow past its snapshot before it is folded in (and further while a full
/// disk keeps the fold from happening). Anything larger is refused before a byte is read.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub snapshot: u64,
    pub journal: u64,
}

impl ReadLimits {
    pub fn for_sessions_of(max_session_bytes: usize) -> ReadLimits {
        let max = max_session_bytes as u64;
        ReadLimits {
            snapshot: max,
            journal: max.saturating_mul(4).saturating_add(1 << 20),
        }
    }
}

#[derive(Debug)]
pub struct FileBackend {
    dir: PathBuf,
    disk: Arc<dyn Disk>,
    limits: ReadLimits,
    locks: SessionLocks,
    journals: OpenJournals,
    /// Directory fsyncs shared by writers that ask for one at once (new sessions, new journals).
    dir_syncs: GroupSync,
}

/// Journals kept open between appends, so that a save is a `stat`, a write and an `fdatasync`,
/// without an open and a close around them (which also makes every store watching the directory
/// see one event per append instead of three).
///
/// An open file is used only while the journal's path still names it (same device and inode):
/// another process that compacts a session removes its journal, and the next append then opens the
/// new one. The inode cannot be reused meanwhile, since the open file keeps it. Unix only: elsewhere
/// there is no inode to check, and every append opens the journal.
#[derive(Debug, Default)]
struct OpenJournals(Mutex<HashMap<String, OpenJournal>>);

#[derive(Debug)]
struct OpenJournal {
    file: Box<dyn DiskFile>,
    identity: (u64, u64),
}

impl OpenJournals {
    /// Takes the open journal of `stem` if it is still the file at its path.
    fn take(&self, stem: &str, at_path: (u64, u64)) -> Option<Box<dyn DiskFile>> {
        let open = crate::lock(&self.0).remove(stem)?;
        (cfg!(unix) && open.identity == at_path).then_some(open.file)
    }

    fn keep(&self, stem: &str, file: Box<dyn DiskFile>, identity: (u64, u64)) {
        if !cfg!(unix) {
            return;
        }
        let mut map = crate::lock(&self.0);
        if map.len() >= MAX_OPEN_JOURNALS && !map.contains_key(stem) {
            // Any one: a session whose journal is closed only pays an open on its next save.
            if let Some(other) = map.keys().next().cloned() {
                map.remove(&other);
            }
        }
        map.insert(stem.to_string(), OpenJournal { file, identity });
    }

    /// Closes the journal of `stem`, before it is removed or replaced.
    fn forget(&self, stem: &str) {
        crate::lock(&self.0).remove(stem);
    }

    fn close_all(&self) {
        crate::lock(&self.0).clear();
    }
}

/// What reading a session's files found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub session: Option<NarrativeSession>,
    /// Bytes of the file the session came from.
    pub bytes: u64,
    /// That file's content.
    pub raw: Vec<u8>,
    /// True when the main file was unusable: the session came from the backup, or was lost.
    pub recovered: bool,
    /// Files moved aside because they did not parse.
    pub quarantined: Vec<PathBuf>,
}

/// The few fields `list` and cleanup need.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct StoredSummary {
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub charts: usize,
    pub beats: usize,
    pub entries: usize,
}

impl StoredSummary {
    pub fn of(session: &NarrativeSession) -> StoredSummary {
        StoredSummary {
            id: session.id.clone(),
            user_id: session.user_id.clone(),
            workspace_id: session.workspace_id.clone(),
            created_at: session.created_at.clone(),
            updated_at: session.updated_at.clone(),
            charts: session.active_charts.len(),
            beats: session.story_beats.len(),
            entries: session.conversation_history.len(),
        }
    }

    /// The summary of a session's JSON text, read without building the whole session.
    pub fn from_json(bytes: &[u8]) -> Option<StoredSummary> {
        let head: SnapshotHead = from_json_bytes(bytes).ok()?;
        Some(StoredSummary {
            id: head.id,
            user_id: head.user_id,
            workspace_id: head.workspace_id,
            created_at: head.created_at,
            updated_at: head.updated_at,
            charts: head.active_charts.len(),
            beats: head.story_beats.len(),
            entries: head.conversation_history.len(),
        })
    }
}

/// A snapshot's summary fields, read without building the whole session.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotHead {
    id: String,
    user_id: String,
    workspace_id: String,
    created_at: String,
    updated_at: String,
    #[serde(default)]
    active_charts: Vec<IgnoredAny>,
    #[serde(default)]
    story_beats: Vec<IgnoredAny>,
    #[serde(default)]
    conversation_history: Vec<IgnoredAny>,
}

/// A snapshot written and synced to a temp file, not yet in place (see
/// [`FileBackend::prepare_snapshot`]).
#[derive(Debug)]
pub struct PreparedSnapshot(PathBuf, usize);

impl PreparedSnapshot {
    /// The snapshot's size in bytes.
    pub fn size(&self) -> usize {
        self.1
    }
}

/// What a session file looked like on disk: a new write (a rename) always changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    identity: (u64, u64),
}

impl FileStamp {
    pub fn size(&self) -> u64 {
        self.len
    }

    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }
}

/// A session file as `list`'s index saw it: which file (device and inode), how long, and when it
/// last changed (its ctime, which no one can set back). A write, an append or a rename changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ChangeStamp {
    pub len: u64,
    pub identity: (u64, u64),
    pub changed: Option<i64>,
}

/// A journal as a store last saw it: which file, and how long. Another file under the same name
/// (a journal repaired or removed and started again by another process) is read from its start,
/// never from an offset that belonged to the one before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStamp {
    pub len: u64,
    pub identity: (u64, u64),
}

/// The complete records of a journal from some offset, and where they end.
#[derive(Debug, Default)]
pub struct JournalRead {
    pub patches: Vec<crate::merge::SessionPatch>,
    /// The journal after the read: where the next append goes, and which file. None when there is
    /// no journal.
    pub stamp: Option<JournalStamp>,
    /// Something in the journal was not a record (damage, or not a regular file at all): it was
    /// kept aside, and every record around it read.
    pub recovered: bool,
    pub quarantined: Vec<PathBuf>,
}

impl JournalRead {
    /// Where the next append goes.
    pub fn end(&self) -> u64 {
        self.stamp.map_or(0, |s| s.len)
    }
}

enum Parsed {
    /// The session (boxed: it is large, and the other variants are empty) and the file's bytes.
    Good(Box<NarrativeSession>, Vec<u8>),
    Missing,
    Bad,
}

impl FileBackend {
    /// Opens (creating, 0700) the sessions directory on the real file system, with the read limits
    /// of the default session size.
    pub fn open(dir: &Path) -> Result<FileBackend> {
        FileBackend::open_on(
            dir,
            Arc::new(RealDisk),
            ReadLimits::for_sessions_of(super::DEFAULT_MAX_SESSION_BYTES),
        )
    }

    /// Opens (creating, 0700) the sessions directory through `disk`. The locks are always real
    /// files in `dir` (see [`super::lock`]), whatever `disk` is.
    pub fn open_on(dir: &Path, disk: Arc<dyn Disk>, limits: ReadLimits) -> Result<FileBackend> {
        disk.create_dir(dir).map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists | ErrorKind::NotADirectory => StoreError::new(
                ErrorCode::Io,
                format!("{} exists and is not a directory", dir.display()),
            ),
            _ => StoreError::io("cannot create directory", dir, e),
        })?;
        Ok(FileBackend {
            dir: dir.to_path_buf(),
            locks: SessionLocks::open(dir)?,
            disk,
            limits,
            journals: OpenJournals::default(),
            dir_syncs: GroupSync::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, stem: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{stem}{ext}"))
    }

    pub fn session_path(&self, stem: &str) -> PathBuf {
        self.path(stem, SESSION_EXT)
    }

    /// Takes the session's lock, waiting for another holder (thread or process) to let go.
    pub fn lock(&self, stem: &str) -> Result<SessionLock> {
        self.locks.lock(stem)
    }

    /// Whether this directory's locks are byte ranges of `.locks` rather than `S.lock` files.
    pub fn has_range_locks(&self) -> bool {
        self.locks.is_range()
    }

    /// Closes every descriptor the backend keeps open (journals kept for the next append, the
    /// pooled descriptors of `.locks`): on `close()`, so that a closed store holds nothing open.
    /// Later calls open what they need again.
    pub fn release(&self) {
        self.journals.close_all();
        self.locks.release();
    }

    /// Reads a session. A main file that does not parse, fails its checksum mark, or is not a
    /// regular file is moved aside and the backup is tried; `expected` (when given) must match
    /// the ids inside, or the file counts as corrupt.
    pub fn read(
        &self,
        stem: &str,
        expected: Option<&SessionKey>,
        _lock: &SessionLock,
    ) -> Result<ReadOutcome> {
        let mut outcome = ReadOutcome::default();
        for (ext, is_backup) in [(SESSION_EXT, false), (BACKUP_EXT, true)] {
            let path = self.path(stem, ext);
            match self.parse_file(&path, stem, expected)? {
                Parsed::Good(session, raw) => {
                    outcome.session = Some(*session);
                    outcome.bytes = raw.len() as u64;
                    outcome.raw = raw;
                    outcome.recovered |= is_backup;
                    return Ok(outcome);
                }
                Parsed::Bad => {
                    outcome.quarantined.push(self.quarantine(&path)?);
                    outcome.recovered = true;
                }
                Parsed::Missing => {}
            }
        }
        Ok(outcome)
    }

    fn parse_file(&self, path: &Path, stem: &str, expected: Option<&SessionKey>) -> Result<Parsed> {
        let bytes = match self.disk.read(path, self.limits.snapshot) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Parsed::Missing),
            Err(e) if is_not_regular(&e) => return Ok(Parsed::Bad),
            Err(e) if is_too_big(&e) => return Err(StoreError::too_large(e.to_string())),
            Err(e) => return Err(StoreError::io("cannot read", path, e)),
        };
        // A checksum that no longer matches: the bytes changed since the store wrote them, even if
        // they still parse.
        let mark = self.disk.mark(path);
        if mark.is_some_and(|mark| canonical::verify(&mark, stem, &bytes) == Some(false)) {
            return Ok(Parsed::Bad);
        }
        match parse_stored(&bytes, expected) {
            Some(session) => Ok(Parsed::Good(Box::new(session), bytes)),
            None => Ok(Parsed::Bad),
        }
    }

    /// Replaces the session's file with `bytes`, crash-safely: temp file, fsync, keep the current
    /// file as the backup, rename, fsync the directory. A crash at any point leaves either the old
    /// or the new version in `S.json`, never a torn one.
    pub fn write(&self, stem: &str, bytes: &[u8], _lock: &SessionLock) -> Result<()> {
        self.write_file(stem, bytes, false)
    }

    /// `write`, marking the file as the store's own serialisation of a checked session (see
    /// [`super::canonical`]), so that a load can send it as it is. `text` must be the JSON the
    /// store serialised from a live session.
    pub fn write_canonical(&self, stem: &str, text: &[u8], _lock: &SessionLock) -> Result<()> {
        self.write_file(stem, text, true)
    }

    fn write_file(&self, stem: &str, bytes: &[u8], canonical: bool) -> Result<()> {
        let main = self.path(stem, SESSION_EXT);
        let temp = self.temp_path(stem);
        let mark = canonical.then_some(stem);
        let result = self.write_temp(&temp, bytes, mark).and_then(|()| {
            self.refresh_backup(stem, &main)?;
            self.disk
                .rename(&temp, &main)
                .map_err(|e| StoreError::io("cannot rename into", &main, e))?;
            self.sync_dir()
        });
        if result.is_err() {
            let _ = self.disk.remove(&temp);
        }
        result
    }

    /// The first half of a snapshot written without the session's lock (a compaction in the
    /// background): `text`, marked as session `stem`'s own when `canonical`, written and synced
    /// to a new temp file. [`FileBackend::install_snapshot`] puts it in place under the lock;
    /// [`FileBackend::discard_snapshot`] drops it.
    pub fn prepare_snapshot(
        &self,
        stem: &str,
        text: &[u8],
        canonical: bool,
    ) -> Result<PreparedSnapshot> {
        let temp = self.temp_path(stem);
        match self.write_temp(&temp, text, canonical.then_some(stem)) {
            Ok(()) => Ok(PreparedSnapshot(temp, text.len())),
            Err(e) => {
                let _ = self.disk.remove(&temp);
                Err(e)
            }
        }
    }

    pub fn discard_snapshot(&self, prepared: PreparedSnapshot) {
        let _ = self.disk.remove(&prepared.0);
    }

    /// The second half: under the lock, makes the prepared snapshot the session's (the current
    /// one becomes the backup), and keeps of the journal only what was appended after `covered`
    /// bytes of it (the snapshot holds those): the journal is replaced by its tail, or removed
    /// when there is none. Every step is crash-safe: at any point the files hold the session whole
    /// (a journal whose records the snapshot already holds is harmless to replay).
    pub fn install_snapshot(
        &self,
        stem: &str,
        prepared: PreparedSnapshot,
        covered: u64,
        _lock: &SessionLock,
    ) -> Result<Option<JournalStamp>> {
        let main = self.path(stem, SESSION_EXT);
        let journal = self.path(stem, JOURNAL_EXT);
        let tail = match self.disk.read(&journal, self.limits.journal) {
            Ok(bytes) => bytes
                .get(covered as usize..)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.discard_snapshot(prepared);
                return Err(StoreError::io("cannot read", &journal, e));
            }
        };
        let installed = self.refresh_backup(stem, &main).and_then(|()| {
            self.disk
                .rename(&prepared.0, &main)
                .map_err(|e| StoreError::io("cannot rename into", &main, e))
        });
        if let Err(e) = installed {
            self.discard_snapshot(prepared);
            return Err(e);
        }
        self.sync_dir()?;
        self.journals.forget(stem);
        if tail.is_empty() {
            self.remove_journal(stem, _lock)?;
            return Ok(None);
        }
        let temp = self.temp_path(stem);
        let replaced = self.write_temp(&temp, &tail, None).and_then(|()| {
            self.disk
                .rename(&temp, &journal)
                .map_err(|e| StoreError::io("cannot rename into", &journal, e))?;
            self.sync_dir()
        });
        if replaced.is_err() {
            // The whole journal stays: its first records are in the snapshot, and replaying them
            // again changes nothing.
            let _ = self.disk.remove(&temp);
        }
        Ok(self.journal_stamp(stem))
    }

    /// Writes and fsyncs a new temp file; with `mark`, marks it as session `mark`'s canonical
    /// text first, so that the mark is synced with the bytes and arrives with them in the rename.
    fn write_temp(&self, temp: &Path, bytes: &[u8], mark: Option<&str>) -> Result<()> {
        let mut file = self
            .disk
            .create_new(temp)
            .map_err(|e| StoreError::io("cannot create", temp, e))?;
        if let Some(stem) = mark {
            // Best effort: a file system without user extended attributes keeps it unmarked.
            let _ = file.set_mark(&canonical::mark_for(stem, bytes));
        }
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io("cannot write", temp, e))
    }

    /// The snapshot's text when it is marked as the store's own write and still holds what was
    /// marked (see [`super::canonical`]); None otherwise, and the caller reads it with `read`.
    pub fn read_canonical(&self, stem: &str, _lock: &SessionLock) -> Option<String> {
        let main = self.path(stem, SESSION_EXT);
        let mark = self.disk.mark(&main)?;
        let bytes = self.disk.read(&main, self.limits.snapshot).ok()?;
        if canonical::verify(&mark, stem, &bytes) != Some(true) {
            return None;
        }
        String::from_utf8(bytes).ok()
    }

    /// Marks the snapshot as the store's own write of `text`, which the caller found it holds
    /// byte for byte (a file written before marks existed, or by a copy).
    pub fn mark_canonical(&self, stem: &str, text: &[u8], _lock: &SessionLock) {
        if let Ok(mut file) = self.disk.open_write(&self.path(stem, SESSION_EXT)) {
            let _ = file.set_mark(&canonical::mark_for(stem, text));
        }
    }

    /// Make the current main file the backup, atomically, through a hard link (or a copy where the
    /// file system has no links). The main file stays in place throughout.
    fn refresh_backup(&self, stem: &str, main: &Path) -> Result<()> {
        match self.disk.entry(main) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            _ => {}
        }
        let backup = self.path(stem, BACKUP_EXT);
        let temp = self.temp_path(stem);
        let result = self
            .link_or_copy(main, &temp)
            .and_then(|()| self.disk.rename(&temp, &backup));
        // Gone after a rename, unless the backup already was the main file (a write that failed
        // after this step leaves them one file): rename then does nothing and leaves the temp.
        let _ = self.disk.remove(&temp);
        result.map_err(|e| StoreError::io("cannot keep the previous version as", &backup, e))
    }

    /// A second name for the file at `from`: a hard link, or where the file system has none, a
    /// synced copy.
    fn link_or_copy(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.disk.hard_link(from, to).or_else(|_| {
            let bytes = self.disk.read(from, self.limits.journal)?;
            let mut copy = self.disk.create_new(to)?;
            copy.write_all(&bytes)?;
            copy.sync_all()
        })
    }

    fn temp_path(&self, stem: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!(".{stem}.{}.{n}{TEMP_EXT}", std::process::id()))
    }

    /// The longest journal a read takes: appends must not make it longer.
    pub fn journal_limit(&self) -> u64 {
        self.limits.journal
    }

    /// The journal's length, or None when there is no journal file.
    pub fn journal_size(&self, stem: &str) -> Option<u64> {
        self.journal_stamp(stem).map(|s| s.len)
    }

    /// Which file the journal is and how long, or None when there is none.
    pub fn journal_stamp(&self, stem: &str) -> Option<JournalStamp> {
        let entry = self.disk.entry(&self.path(stem, JOURNAL_EXT)).ok()?;
        Some(JournalStamp {
            len: entry.len,
            identity: entry.identity,
        })
    }

    /// Reads the journal's records from `from` on. A torn tail (a crash during an append) is cut
    /// off, so the next append starts on a record boundary. Damage (a record that fails its
    /// checksum, anywhere) is repaired: the journal as it was is kept aside, and a journal of
    /// every intact record takes its place; all of its records are returned then. Anything at the
    /// journal's name that is not a regular file (a symbolic link, a FIFO) is moved aside unread.
    pub fn read_journal(&self, stem: &str, from: u64, _lock: &SessionLock) -> Result<JournalRead> {
        let path = self.path(stem, JOURNAL_EXT);
        let bytes = match self.disk.read(&path, self.limits.journal) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(JournalRead::default()),
            Err(e) if is_not_regular(&e) => {
                self.journals.forget(stem);
                return Ok(JournalRead {
                    quarantined: vec![self.quarantine(&path)?],
                    recovered: true,
                    ..JournalRead::default()
                });
            }
            Err(e) if is_too_big(&e) => return Err(StoreError::too_large(e.to_string())),
            Err(e) => return Err(StoreError::io("cannot read", &path, e)),
        };
        let start = (from as usize).min(bytes.len());
        let tail = crate::journal::decode(&bytes[start..]);
        if tail.is_damaged() {
            return self.repair_journal(stem, &path, &bytes);
        }
        let end = (start + tail.end) as u64;
        if end < bytes.len() as u64 {
            self.disk
                .open_write(&path)
                .and_then(|mut f| f.set_len(end).and_then(|()| f.sync_all()))
                .map_err(|e| StoreError::io("cannot cut the torn tail of", &path, e))?;
        }
        let identity = self
            .disk
            .entry(&path)
            .map_err(|e| StoreError::io("cannot stat", &path, e))?
            .identity;
        Ok(JournalRead {
            patches: tail.patches,
            stamp: Some(JournalStamp { len: end, identity }),
            ..JournalRead::default()
        })
    }

    /// Replaces a damaged journal with one of its intact records, keeping the damaged one aside
    /// under a second name. At every point the journal's name holds either the damaged journal or
    /// the repaired one.
    fn repair_journal(&self, stem: &str, path: &Path, bytes: &[u8]) -> Result<JournalRead> {
        let whole = crate::journal::decode(bytes);
        let mut clean = Vec::with_capacity(bytes.len());
        for record in &whole.records {
            clean.extend_from_slice(&bytes[record.clone()]);
        }
        let aside = self.aside_name(path);
        let temp = self.temp_path(stem);
        self.journals.forget(stem);
        let result = self.write_temp(&temp, &clean, None).and_then(|()| {
            self.link_or_copy(path, &aside)
                .and_then(|()| self.disk.rename(&temp, path))
                .map_err(|e| StoreError::io("cannot repair", path, e))?;
            self.sync_dir()
        });
        if result.is_err() {
            let _ = self.disk.remove(&temp);
        }
        result?;
        let identity = self
            .disk
            .entry(path)
            .map_err(|e| StoreError::io("cannot stat", path, e))?
            .identity;
        Ok(JournalRead {
            patches: whole.patches,
            stamp: Some(JournalStamp {
                len: clean.len() as u64,
                identity,
            }),
            recovered: true,
            quarantined: vec![aside],
        })
    }

    /// Appends framed records to the journal and makes them durable. Returns the journal after it.
    /// A failed append is cut back off, so that the journal ends on a record boundary.
    pub fn append_journal(
        &self,
        stem: &str,
        records: &[u8],
        _lock: &SessionLock,
    ) -> Result<JournalStamp> {
        let path = self.path(stem, JOURNAL_EXT);
        let at_path = match self.disk.entry(&path) {
            Ok(entry) => Some(entry),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io("cannot stat", &path, e)),
        };
        let kept = at_path
            .filter(|entry| entry.kind == EntryKind::File)
            .and_then(|entry| self.journals.take(stem, entry.identity));
        let mut file = match kept {
            Some(file) => file,
            // Refuses a symbolic link or anything else that is not a regular file.
            None => self
                .disk
                .open_append(&path)
                .map_err(|e| StoreError::io("cannot open", &path, e))?,
        };
        let before = file
            .entry()
            .map_err(|e| StoreError::io("cannot stat", &path, e))?
            .len;
        if let Err(e) = file.write_all(records).and_then(|()| file.sync_data()) {
            let _ = file.set_len(before);
            return Err(StoreError::io("cannot append to", &path, e));
        }
        if at_path.is_none() {
            self.sync_dir()?;
        }
        let entry = file
            .entry()
            .map_err(|e| StoreError::io("cannot stat", &path, e))?;
        self.journals.keep(stem, file, entry.identity);
        Ok(JournalStamp {
            len: entry.len,
            identity: entry.identity,
        })
    }

    /// Removes the journal once a snapshot holds everything in it.
    pub fn remove_journal(&self, stem: &str, _lock: &SessionLock) -> Result<()> {
        let path = self.path(stem, JOURNAL_EXT);
        self.journals.forget(stem);
        match self.disk.remove(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("cannot remove", &path, e)),
        }
    }

    /// Removes a session's files (quarantined copies are kept). Returns whether it existed.
    pub fn delete(&self, stem: &str, lock: SessionLock) -> Result<bool> {
        let existed = self.unlink(stem, lock, true)?;
        self.sync()?;
        Ok(existed)
    }

    /// `delete` without the directory fsync, for a sweep that removes many sessions and makes the
    /// directory durable once at the end with [`FileBackend::sync`]. `journal: false` says the
    /// caller saw no journal under this lock, so there is none to remove (appends take the lock).
    pub fn unlink(&self, stem: &str, lock: SessionLock, journal: bool) -> Result<bool> {
        let mut existed = false;
        self.journals.forget(stem);
        let journal = journal.then(|| (self.path(stem, JOURNAL_EXT), false));
        // Backup first: a crash between the two must not bring a deleted session back from it.
        for (path, is_main) in journal.into_iter().chain([
            (self.path(stem, BACKUP_EXT), false),
            (self.path(stem, SESSION_EXT), true),
        ]) {
            match self.disk.remove(&path) {
                Ok(()) => existed |= is_main,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("cannot remove", &path, e)),
            }
        }
        lock.release_deleted()?;
        Ok(existed)
    }

    /// Makes every rename and removal in the directory durable.
    pub fn sync(&self) -> Result<()> {
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        self.dir_syncs
            .sync(|| self.disk.sync_dir(&self.dir))
            .map_err(|e| StoreError::io("cannot sync directory", &self.dir, e))
    }

    /// The stems of every stored session, and which of them have a journal: one read of the
    /// directory, for a sweep that would otherwise look for each session's journal in turn.
    pub fn stems_with_journals(&self) -> Result<(Vec<String>, HashSet<String>)> {
        let mut stems = Vec::new();
        let mut journals = HashSet::new();
        for name in self.names()? {
            if let Some(stem) = name.strip_suffix(SESSION_EXT).filter(|s| is_file_stem(s)) {
                stems.push(stem.to_string());
            } else if let Some(stem) = name.strip_suffix(JOURNAL_EXT).filter(|s| is_file_stem(s)) {
                journals.insert(stem.to_string());
            }
        }
        Ok((stems, journals))
    }

    /// The stems of every stored session.
    pub fn stems(&self) -> Result<Vec<String>> {
        self.stems_with_journals().map(|(stems, _)| stems)
    }

    fn names(&self) -> Result<Vec<String>> {
        self.disk
            .list(&self.dir)
            .map_err(|e| StoreError::io("cannot list", &self.dir, e))
    }

    /// The summary fields of a stored session and the file's size, or None when unreadable.
    /// Without a journal only the summary fields are read; with one, the session is built and the
    /// journal's complete records replayed (without the lock: a record being appended is ignored).
    /// The journal is looked for only when `has_journal` (as [`FileBackend::stems_with_journals`]
    /// reported it).
    pub fn summary(&self, stem: &str, has_journal: bool) -> Option<(StoredSummary, u64)> {
        let bytes = self
            .disk
            .read(&self.path(stem, SESSION_EXT), self.limits.snapshot)
            .ok()?;
        let journal = if has_journal {
            self.disk
                .read(&self.path(stem, JOURNAL_EXT), self.limits.journal)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let size = (bytes.len() + journal.len()) as u64;
        if journal.is_empty() {
            return Some((StoredSummary::from_json(&bytes)?, size));
        }
        let mut session: NarrativeSession = from_json_bytes(&bytes).ok()?;
        for patch in &crate::journal::decode(&journal).patches {
            crate::merge::apply_patch(&mut session, patch).ok()?;
        }
        Some((StoredSummary::of(&session), size))
    }

    /// The stamp of the session's file now, or None when it is gone.
    pub fn stamp(&self, stem: &str) -> Option<FileStamp> {
        let entry = self.disk.entry(&self.path(stem, SESSION_EXT)).ok()?;
        Some(FileStamp {
            len: entry.len,
            modified: entry.modified,
            identity: entry.identity,
        })
    }

    /// The state of the session's snapshot (or, with `journal`, its journal) on disk, or None
    /// when there is none (see [`ChangeStamp`]).
    pub fn change_stamp(&self, stem: &str, journal: bool) -> Option<ChangeStamp> {
        let ext = if journal { JOURNAL_EXT } else { SESSION_EXT };
        let entry = self.disk.entry(&self.path(stem, ext)).ok()?;
        (entry.kind == EntryKind::File).then_some(ChangeStamp {
            len: entry.len,
            identity: entry.identity,
            changed: entry.changed,
        })
    }

    /// Reads `name`, a file of the store's own beside the sessions (not a session's), when it is
    /// a regular file of at most `max` bytes.
    pub fn read_own_file(&self, name: &str, max: u64) -> Option<Vec<u8>> {
        self.disk.read(&self.dir.join(name), max).ok()
    }

    /// Replaces `name`, a file of the store's own that can be rebuilt from the sessions (a cache):
    /// written whole to a temp file and renamed into place, never through a link, not synced.
    pub fn replace_own_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let temp = self.temp_path(name);
        let written = self
            .disk
            .create_new(&temp)
            .and_then(|mut file| file.write_all(bytes))
            .and_then(|()| self.disk.rename(&temp, &self.dir.join(name)));
        if let Err(e) = written {
            let _ = self.disk.remove(&temp);
            return Err(StoreError::io("cannot write", &temp, e));
        }
        Ok(())
    }

    /// When the session's journal was last written, or None when it has none.
    pub fn journal_modified(&self, stem: &str) -> Option<SystemTime> {
        self.disk
            .entry(&self.path(stem, JOURNAL_EXT))
            .ok()
            .and_then(|e| e.modified)
    }

    /// Marks a session as alive for other processes' cleanup (which skips recently modified files).
    pub fn touch(&self, stem: &str) {
        if let Ok(mut file) = self.disk.open_write(&self.path(stem, SESSION_EXT)) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Removes temp files older than `max_age`: writes that a crash interrupted. Returns how many.
    pub fn remove_stale_temp_files(&self, max_age: std::time::Duration) -> Result<usize> {
        let mut removed = 0;
        for name in self.names()? {
            if !(name.starts_with('.') && name.ends_with(TEMP_EXT)) {
                continue;
            }
            let path = self.dir.join(&name);
            let old = self
                .disk
                .entry(&path)
                .ok()
                .and_then(|e| e.modified)
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old && self.disk.remove(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A free name beside `path` for a copy kept aside: `<path>.corrupt-<ms>`.
    fn aside_name(&self, path: &Path) -> PathBuf {
        let millis = wall_clock_millis();
        (0..)
            .map(|n: u32| {
                let suffix = if n == 0 {
                    String::new()
                } else {
                    format!(".{n}")
                };
                PathBuf::from(format!("{}.corrupt-{millis}{suffix}", path.display()))
            })
            .find(|aside| self.disk.entry(aside).is_err())
            .expect("some name is free")
    }

    /// Moves a bad file (or whatever is at its name: a link, a FIFO) aside, next to where it was.
    /// Never deletes it: if it cannot be moved, the session is refused with ECORRUPT rather than
    /// overwritten.
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf> {
        let aside = self.aside_name(path);
        self.disk.rename(path, &aside).map_err(|e| {
            StoreError::new(
                ErrorCode::Corrupt,
                format!(
                    "{} is corrupt and could not be moved aside: {e}",
                    path.display()
                ),
            )
        })?;
        Ok(aside)
    }
}

/// A stored session's bytes, parsed and checked: it parses, passes the model's checks, and holds
/// the user and workspace (`expected`) its name was derived from. None when it is not good.
pub fn parse_stored(bytes: &[u8], expected: Option<&SessionKey>) -> Option<NarrativeSession> {
    let session = from_json_bytes::<NarrativeSession>(bytes).ok()?;
    let matches = expected.is_none_or(|key| {
        key.user_id == session.user_id && key.workspace_id == session.workspace_id
    });
    (matches && validate_session(&session).is_ok()).then_some(session)
}
