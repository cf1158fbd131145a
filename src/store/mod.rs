//! The session store: live sessions in memory, persisted by the file backend.
//!
//! - **Load** brings a session into memory (creating it on first access; a new session is written
//!   by its first save, as one snapshot).
//! - **Merge** applies a client's update in memory and marks the session dirty.
//! - **Save**, autosave and close write dirty sessions: under the session's cross-process lock, the
//!   store reads the file, merges what another process wrote into its own copy, and writes the
//!   result. So two processes on one data dir never lose each other's updates.
//!
//! - **Unload**: a session no call has used for `unload_after`, and with nothing left to write, is
//!   dropped from memory at an autosave tick; the next call loads it again.
//!
//! Calls on one session are serialised by that session's mutex; calls on different sessions run in
//! parallel. Blocking file work runs on tokio's blocking pool; a save's short first step (lock, look,
//! append) runs in place on its tokio worker instead (`blocking_here`).
//!
//! This file holds the calls (load, merge, save, delete, list, close) and the slots of loaded
//! sessions. Beside it: `types.rs` (options and outcomes), `background.rs` (autosave, the sweep,
//! unloading, watching), `live.rs` (a session in memory), `file_sessions.rs` and
//! `redis_sessions.rs` (each backend's side of a load and a save), `list_index.rs` (what makes
//! `list()` cheap on files), `inspect.rs` and `repair.rs` (what the operator tools read and write).

mod background;
mod canonical;
pub mod disk;
pub mod file;
mod file_sessions;
mod group_sync;
mod inspect;
pub mod list_index;
mod live;
pub mod lock;
pub mod redis;
mod redis_sessions;
mod repair;
mod types;
pub mod watcher;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::cleanup::{self, CleanupReport};
use crate::clock::{parse_rfc3339_millis, HybridClock};
use crate::error::{ErrorCode, Result, StoreError};
use crate::journal;
use crate::lock;
use crate::merge::{apply_patch, lost_writes, normalize_owned, settle_update, SessionPatch};
use crate::model::{check_id, peek_updated_at, NarrativeSession};
use crate::paths::SessionKey;
use crate::update::parse_update;
use file::{FileBackend, ReadLimits};
use file_sessions::{idle, load_from_files, read_changes_from_files, DiskView};
use live::Live;

/// The origin of merge events for changes found on disk (another process, or an operator).
pub const EXTERNAL_ORIGIN: &str = "external";
/// How many times its own size a merged update may add to a session, at most in practice.
const MERGE_GROWTH: usize = 64;
/// The origin of merge events when the caller names none.
pub const DEFAULT_ORIGIN: &str = "local";

/// A stored session as `list` finds it: its stem, summary and size.
pub type StoredRow = (String, file::StoredSummary, u64);

pub use types::*;

/// A store handle; clones share one store.
#[derive(Clone)]
pub struct SessionStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    options: StoreOptions,
    backend: Backend,
    clock: Mutex<HybridClock>,
    /// Sessions loaded in this store, by file stem. A slot is present from the start of its load.
    live: Mutex<HashMap<String, Arc<Slot>>>,
    listeners: Mutex<Vec<(u64, MergeListener)>>,
    next_listener: AtomicU64,
    closed: AtomicBool,
    /// Calls in progress, and a signal when one ends: close waits for them before it flushes.
    calls: AtomicUsize,
    call_ended: tokio::sync::Notify,
    stop: watch::Sender<bool>,
    /// Reports session files that change on disk; dropped at close.
    watcher: Mutex<Option<watcher::Watch>>,
    /// Places for sessions being written to files at once (see [`writers_for`]).
    writers: tokio::sync::Semaphore,
    /// Places for group commits appending and syncing at once (see [`MAX_SYNCS`]).
    syncs: tokio::sync::Semaphore,
    /// Autosave, cleanup and watcher tasks; close waits for them, so nothing touches the
    /// directory once close has resolved.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

enum Backend {
    File(Arc<FileBackend>),
    Redis(Arc<redis::RedisBackend>),
}

/// A call in progress (see [`SessionStore::enter`]).
struct Call<'a>(&'a StoreInner);

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.0.calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.call_ended.notify_waiters();
        }
    }
}

struct Slot {
    key: SessionKey,
    /// None until loaded (and after a delete).
    state: tokio::sync::Mutex<Option<Live>>,
    /// Wakes the durable merges (and other writers) waiting for a commit of this session to end.
    committed: tokio::sync::Notify,
}

/// The session a load starts from: the stored one in canonical form, or a new one created at `now`.
fn starting_session(
    stored: Option<NarrativeSession>,
    key: &SessionKey,
    now: String,
) -> Result<NarrativeSession> {
    normalize_owned(stored.unwrap_or_else(|| {
        NarrativeSession::new(
            key.session_id(),
            key.user_id.clone(),
            key.workspace_id.clone(),
            now,
        )
    }))
}

impl SessionStore {
    /// Opens the store on `options.data_dir` (created 0700 when missing) and starts autosave and
    /// cleanup on the current tokio runtime.
    pub async fn open(options: StoreOptions) -> Result<SessionStore> {
        options.check()?;
        let node_id = new_node_id();
        let backend = match &options.backend {
            BackendChoice::File => {
                let dir = options.data_dir.clone();
                let disk = options.disk.clone();
                let limits = ReadLimits::for_sessions_of(options.max_session_bytes);
                let files = blocking(move || FileBackend::open_on(&dir, disk, limits)).await?;
                Backend::File(Arc::new(files))
            }
            BackendChoice::Redis(config) => {
                let ttl = Duration::from_secs_f64((options.ttl_days * 86_400.0).min(1e12));
                let redis = redis::RedisBackend::open(config, ttl, node_id.clone()).await?;
                Backend::Redis(Arc::new(redis))
            }
        };
        let (stop, _) = watch::channel(false);
        let wall_clock = options.wall_clock.clone();
        let store = SessionStore {
            inner: Arc::new(StoreInner {
                options,
                backend,
                clock: Mutex::new(HybridClock::from_wall_clock(node_id, wall_clock)),
                live: Mutex::new(HashMap::new()),
                listeners: Mutex::new(Vec::new()),
                next_listener: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                calls: AtomicUsize::new(0),
                call_ended: tokio::sync::Notify::new(),
                stop,
                watcher: Mutex::new(None),
                writers: tokio::sync::Semaphore::new(writers_for(crate::cores())),
                syncs: tokio::sync::Semaphore::new(MAX_SYNCS),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        store.start_timers();
        store.start_watching();
        Ok(store)
    }

    /// The sessions directory (with the Redis backend: the one it would use, unused).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.options.data_dir
    }

    /// Whether sessions are kept in files (rather than in Redis).
    pub fn is_file_backed(&self) -> bool {
        matches!(self.inner.backend, Backend::File(_))
    }

    /// The file backend, or None with Redis.
    fn files(&self) -> Option<Arc<FileBackend>> {
        match &self.inner.backend {
            Backend::File(files) => Some(files.clone()),
            Backend::Redis(_) => None,
        }
    }

    fn redis(&self) -> Option<Arc<redis::RedisBackend>> {
        match &self.inner.backend {
            Backend::Redis(redis) => Some(redis.clone()),
            Backend::File(_) => None,
        }
    }

    /// How many sessions this store holds in memory.
    pub fn loaded_sessions(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// This store's clock node id, which tags the versions of the writes it stamps.
    pub fn node_id(&self) -> String {
        lock(&self.inner.clock).node().to_string()
    }

    /// The session of `user_id` in `workspace_id`, created on first access (and written by its
    /// first save).
    pub async fn load(&self, user_id: &str, workspace_id: &str) -> Result<LoadOutcome> {
        let _call = self.enter()?;
        let slot = self.slot(SessionKey::new(user_id, workspace_id)?);
        let mut state = slot.state.lock().await;
        let (created, recovered) = self
            .ensure_loaded(&slot.key, &mut state, Want::Text)
            .await?;
        let live = loaded(&mut state, self.inner.options.fold_after)?;
        let outcome = LoadOutcome {
            session_json: live.text()?,
            // (Only a session whose id is the one its key gives is ever held as text.)
            session_id: live
                .parsed()
                .map_or_else(|| slot.key.session_id(), |s| s.id.clone()),
            created,
            recovered,
        };
        live.rest(&outcome.session_id);
        Ok(outcome)
    }

    /// Merges a client's update (JSON text of any subset of a session's fields) into the session.
    /// Nothing changes when the update is refused. See [`MergeMode`] for what comes back and when
    /// the change is durable.
    pub async fn merge(
        &self,
        user_id: &str,
        workspace_id: &str,
        update_json: &str,
        origin: Option<&str>,
        options: MergeMode,
    ) -> Result<MergeOutcome> {
        let _call = self.enter()?;
        let key = SessionKey::new(user_id, workspace_id)?;
        let origin = origin.unwrap_or(DEFAULT_ORIGIN);
        check_id("origin", origin)?;
        let max = self.inner.options.max_session_bytes;
        if update_json.len() > max {
            return Err(too_large("update", update_json.len(), max));
        }
        let update = parse_update(update_json)?;

        let slot = self.slot(key);
        let mut state = slot.state.lock().await;
        self.ensure_loaded(&slot.key, &mut state, Want::Session)
            .await?;
        let live = loaded(&mut state, self.inner.options.fold_after)?;
        // The update as the join it amounts to: what is applied here is what the journal replays.
        let mut patch = settle_update(
            live.session()?,
            update.into_patch(&mut lock(&self.inner.clock))?,
        )?;
        // Near the limit, merge into a copy, so a refused update leaves the session as it was.
        // (Clocks and defaults make a merged update larger than its text; the margin covers that.)
        let near_limit = live.approx_bytes + MERGE_GROWTH * update_json.len() + 64 * 1024 > max;
        let mut copy = near_limit.then(|| live.session().cloned()).transpose()?;
        let changes = match copy.as_mut() {
            Some(copy) => apply_patch(copy, &patch)?,
            None => live.apply(&patch)?,
        };
        if changes.touched {
            let stamp = lock(&self.inner.clock).time_of(&patch.clock);
            let current = match copy.as_ref() {
                Some(copy) => &copy.updated_at,
                None => &live.session()?.updated_at,
            };
            if parse_rfc3339_millis(&stamp) > parse_rfc3339_millis(current) {
                match copy.as_mut() {
                    Some(copy) => copy.updated_at = stamp.clone(),
                    None => live.set_updated_at(stamp.clone())?,
                }
            }
            patch.updated_at = Some(stamp);
        }
        if let Some(merged) = copy {
            let size = serde_json::to_vec(&merged).map_err(internal)?.len();
            if size > max {
                return Err(too_large("session", size, max));
            }
            live.approx_bytes = size;
            live.replace(merged);
        }
        if changes.touched {
            let record = journal::encode(&patch)?;
            if !near_limit {
                live.approx_bytes += record.len();
            }
            live.add_pending(&record);
        }
        let persisted = match self.files() {
            Some(backend) if options.durable && live.is_dirty() => {
                let mine = live.commits.added;
                let (back, persisted) = self.commit_durable(&backend, &slot, state, mine).await;
                state = back;
                persisted
            }
            _ if options.durable && live.is_dirty() => self.persist(&slot.key, live, false).await,
            _ => Ok(None),
        };
        let live = held(&mut state)?;
        // Checked after the save: what it took in from other writers may have won.
        let lost = lost_writes(live.session()?, &patch)?;
        let mut paths = changes.paths;
        paths.retain(|path| !lost.contains(path));
        let session_json = match (&persisted, options.with_session) {
            (Ok(_), true) => Some(to_json(live.session()?)?),
            _ => None,
        };
        live.rest(&slot.key.session_id());
        drop(state);
        // The change is in the live session whether or not it could be written: listeners hear
        // of it either way, and a failed durable merge says it was applied.
        self.emit(&slot.key, origin, &paths);
        persisted.map_err(StoreError::applied_not_durable)?;
        Ok(MergeOutcome {
            session_json,
            changes: paths,
            lost,
        })
    }

    /// Writes the session durably now, if it has unsaved changes. Returns whether it wrote.
    pub async fn save(&self, user_id: &str, workspace_id: &str) -> Result<bool> {
        let _call = self.enter()?;
        let key = SessionKey::new(user_id, workspace_id)?;
        let Some(slot) = lock(&self.inner.live).get(&key.file_stem()).cloned() else {
            return Ok(false);
        };
        let mut state = idle(&slot, slot.state.lock().await).await;
        match state.as_mut() {
            Some(live) if live.is_dirty() => {
                self.persist(&slot.key, live, false).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes the session from memory and disk. Returns whether it was stored.
    pub async fn delete(&self, user_id: &str, workspace_id: &str) -> Result<bool> {
        let _call = self.enter()?;
        let key = SessionKey::new(user_id, workspace_id)?;
        let stem = key.file_stem();
        let slot = lock(&self.inner.live).get(&stem).cloned();
        // Hold the session's mutex through the delete, so no call on it interleaves. The live copy
        // goes only once the stored one is gone: a failed delete loses nothing.
        let mut guard = match &slot {
            Some(slot) => Some(idle(slot, slot.state.lock().await).await),
            None => None,
        };
        let deleted = match self.files() {
            Some(backend) => {
                let stem = stem.clone();
                blocking(move || {
                    let lock = backend.lock(&stem)?;
                    backend.delete(&stem, lock)
                })
                .await?
            }
            None => self.redis_backend()?.delete(&stem).await?,
        };
        lock(&self.inner.live).remove(&stem);
        // A session created here and never saved has no files: dropping it is its delete.
        let mut dropped = false;
        if let Some(state) = guard.as_mut() {
            dropped = state.as_ref().is_some_and(Live::is_dirty);
            **state = None;
        }
        Ok(deleted || dropped)
    }

    /// A summary of every stored session, and of every session created here and not saved yet.
    pub async fn list(&self) -> Result<Vec<SessionSummary>> {
        let _call = self.enter()?;
        let stored = match self.files() {
            Some(backend) => {
                let use_index = self.inner.options.list_index;
                blocking(move || {
                    list_index::stored_summaries(&backend, use_index).map(|(found, _)| found)
                })
                .await?
            }
            None => self.stored_in_redis().await?,
        };
        let mut live = lock(&self.inner.live).clone();
        let mut out = Vec::with_capacity(stored.len());
        for (stem, s, bytes) in stored {
            let Some(slot) = live.remove(&stem) else {
                out.push(SessionSummary::stored(s, bytes));
                continue;
            };
            // A loaded session's memory copy is newer than its file. (One held only as its stored
            // text is what the file holds; one busy in a call right now is listed from the file.)
            let state = slot.state.try_lock().ok();
            let held = state.as_ref().and_then(|state| state.as_ref());
            let summary = SessionSummary::stored(held.and_then(Live::summary).unwrap_or(s), bytes);
            out.push(summary.loaded(held.is_some_and(Live::is_dirty)));
        }
        // A session created by a load here and not saved yet has no file: it is listed from memory.
        // (One busy in a call right now is left out; its next save stores it.)
        for slot in live.values() {
            let Ok(state) = slot.state.try_lock() else {
                continue;
            };
            if let Some(summary) = state
                .as_ref()
                .filter(|l| l.is_dirty())
                .and_then(Live::summary)
            {
                out.push(SessionSummary::stored(summary, 0).loaded(true));
            }
        }
        out.sort_by(|a, b| (&a.user_id, &a.workspace_id).cmp(&(&b.user_id, &b.workspace_id)));
        Ok(out)
    }

    /// Removes sessions not updated for `ttl_days` (default: the store's TTL) before `now_millis`
    /// (default: now). Sessions loaded in this store are kept.
    pub async fn cleanup(
        &self,
        ttl_days: Option<f64>,
        now_millis: Option<i64>,
    ) -> Result<CleanupReport> {
        let _call = self.enter()?;
        self.sweep(ttl_days, now_millis).await
    }

    async fn sweep(&self, ttl_days: Option<f64>, now_millis: Option<i64>) -> Result<CleanupReport> {
        let ttl = ttl_days.unwrap_or(self.inner.options.ttl_days);
        check_ttl(ttl)?;
        let cutoff = cleanup::cutoff(now_millis.unwrap_or_else(cleanup::now_millis), ttl);
        let Some(backend) = self.files() else {
            return self.keep_alive_in_redis().await;
        };
        let inner = self.inner.clone();
        blocking(move || {
            let in_use = |stem: &str| lock(&inner.live).contains_key(stem);
            cleanup::sweep(&backend, cutoff, &in_use, &|_| {})
        })
        .await
    }

    /// Calls `listener` for every merge that changes something. Returns an id for `remove_listener`.
    pub fn on_merge(&self, listener: MergeListener) -> u64 {
        let id = self.inner.next_listener.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.listeners).push((id, listener));
        id
    }

    pub fn remove_listener(&self, id: u64) -> bool {
        let mut listeners = lock(&self.inner.listeners);
        let before = listeners.len();
        listeners.retain(|(i, _)| *i != id);
        listeners.len() != before
    }

    /// Writes every dirty session, stops the timers, closes every descriptor, and frees the
    /// sessions' memory. Later calls fail with ECLOSED, except close: when a write failed, the
    /// sessions stay in memory and another close tries again. Every session's changes are written
    /// even when another's fail. Sessions whose changes are durable but could not be folded into a
    /// snapshot (a nearly full disk) are named in the report.
    pub async fn close(&self) -> Result<CloseReport> {
        if !self.inner.closed.swap(true, Ordering::SeqCst) {
            let _ = self.inner.stop.send(true);
            lock(&self.inner.watcher).take();
            let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
            for task in tasks {
                let _ = task.await;
            }
        }
        // A merge that began before the flag was set may not have reached its session yet.
        self.calls_finished().await;
        let flushed = self.flush(true).await;
        if let Some(files) = self.files() {
            files.release();
        }
        let report = flushed?;
        // Freed now rather than wherever the last handle goes: for an addon, that is Node's
        // thread, when its garbage collector gets to the store.
        let live = std::mem::take(&mut *lock(&self.inner.live));
        free_off_thread(live).await;
        Ok(report)
    }

    /// Writes every dirty session. Returns how many were written; on failures, the first error
    /// (the failed sessions stay dirty and are tried again next time). ECLOSED after `close`.
    /// One session at a time: the tick then never competes with Node's thread for the cores.
    pub async fn flush_dirty(&self) -> Result<usize> {
        let _call = self.enter()?;
        self.flush(false).await.map(|report| report.written)
    }

    /// Writes every dirty session; with `compact`, also folds every journal into its snapshot.
    /// A session that fails does not keep the others from being written; the first failure is
    /// the error.
    async fn flush(&self, compact: bool) -> Result<CloseReport> {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.live).values().cloned().collect();
        let mut report = CloseReport::default();
        let mut first_error = None;
        for slot in slots {
            let mut state = idle(&slot, slot.state.lock().await).await;
            let due = |l: &Live| l.is_dirty() || (compact && l.has_journal());
            if let Some(live) = state.as_mut().filter(|l| due(l)) {
                match self.persist(&slot.key, live, compact).await {
                    Ok(not_compacted) => {
                        report.written += 1;
                        if let Some(e) = not_compacted {
                            report
                                .not_compacted
                                .push((slot.key.session_id(), e.message));
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(report), Err)
    }

    /// Starts a call: ECLOSED once `close()` has begun; otherwise `close()` waits until the call
    /// is over, so that whatever it changed is flushed.
    fn enter(&self) -> Result<Call<'_>> {
        // Counted first, then the flag read; close sets the flag, then reads the count. (SeqCst
        // both ways: either the call sees the flag, or close sees the call.)
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        let call = Call(&self.inner);
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::closed());
        }
        Ok(call)
    }

    /// Waits until no call that started before `close()` is still running.
    async fn calls_finished(&self) {
        loop {
            let finished = self.inner.call_ended.notified();
            if self.inner.calls.load(Ordering::SeqCst) == 0 {
                return;
            }
            finished.await;
        }
    }

    fn slot(&self, key: SessionKey) -> Arc<Slot> {
        let mut live = lock(&self.inner.live);
        live.entry(key.file_stem())
            .or_insert_with(|| {
                Arc::new(Slot {
                    key,
                    state: tokio::sync::Mutex::new(None),
                    committed: tokio::sync::Notify::new(),
                })
            })
            .clone()
    }

    /// Loads the session into `state` when it is not there yet, and parses it when `want` asks
    /// for the session and only its text is held. Returns (created, recovered).
    async fn ensure_loaded(
        &self,
        key: &SessionKey,
        state: &mut Option<Live>,
        want: Want,
    ) -> Result<(bool, bool)> {
        if let Some(live) = state.as_mut() {
            let Some(text) = live.unparsed_text().filter(|_| want == Want::Session) else {
                return Ok((false, false));
            };
            let key = key.clone();
            match blocking(move || parse_marked(&text, &key)).await {
                Ok(session) => {
                    live.set_parsed(session);
                    self.take_in_clocks(live)?;
                    return Ok((false, false));
                }
                // The mark matched, yet the text is not a good session: read it the long way,
                // which moves a bad file aside and recovers the backup.
                Err(_) => *state = None,
            }
        }
        let Some(backend) = self.files() else {
            let (mut live, created, recovered) = self.load_from_redis(key, want).await?;
            self.take_in_loaded(key, &mut live).await?;
            *state = Some(live);
            return Ok((created, recovered));
        };
        let owned_key = key.clone();
        let now = lock(&self.inner.clock).now_time();
        let (mut live, created, recovered) =
            blocking(move || load_from_files(&backend, &owned_key, now, want)).await?;
        self.take_in_loaded(key, &mut live).await?;
        *state = Some(live);
        Ok((created, recovered))
    }

    /// Writes the session's pending changes (see `persist_to_files` and `persist_to_redis`).
    /// `Ok(Some(error))`: the changes are durable, but a snapshot that was due could not be
    /// written (the session is folded into one by a later save).
    async fn persist(
        &self,
        key: &SessionKey,
        live: &mut Live,
        compact: bool,
    ) -> Result<Option<StoreError>> {
        match self.files() {
            Some(backend) => self.persist_to_files(&backend, key, live, compact).await,
            None => self
                .persist_to_redis(key, live, compact)
                .await
                .map(|()| None),
        }
    }

    /// Merges records another writer appended. Listeners hear of it with origin `"external"`.
    /// (Shared by both backends: their records are the same joins.)
    fn absorb_records(
        &self,
        key: &SessionKey,
        live: &mut Live,
        patches: &[SessionPatch],
    ) -> Result<()> {
        let mut paths = Vec::new();
        for patch in patches {
            paths.extend(live.apply(patch)?.paths);
        }
        self.take_in_clocks(live)?;
        self.emit(key, EXTERNAL_ORIGIN, &paths);
        Ok(())
    }

    /// Merges a stored session that someone rewrote (another store compacted, or an operator
    /// restored an old copy), with the records stored after it. If the stored copy lacks anything
    /// this store holds, the next save writes a snapshot; only then, or two stores would rewrite
    /// each other's copies forever.
    fn absorb_rewrite(
        &self,
        key: &SessionKey,
        live: &mut Live,
        stored: Option<NarrativeSession>,
        patches: &[SessionPatch],
    ) -> Result<()> {
        let mut paths = Vec::new();
        // No stored session at all (deleted by another store, say): the files lack everything
        // this store holds, so the next save writes it whole.
        live.needs_snapshot |= stored.is_none();
        let mut stored_copy = match stored {
            Some(stored) => {
                let patch = SessionPatch::from_session(&stored);
                paths.extend(live.apply(&patch)?.paths);
                stored
            }
            None => live.session()?.clone(),
        };
        for patch in patches {
            paths.extend(live.apply(patch)?.paths);
            apply_patch(&mut stored_copy, patch)?;
        }
        let lacking = apply_patch(
            &mut stored_copy,
            &SessionPatch::from_session(live.session()?),
        )?;
        live.needs_snapshot |= lacking.touched;
        self.take_in_clocks(live)?;
        self.emit(key, EXTERNAL_ORIGIN, &paths);
        Ok(())
    }

    /// Takes the clocks of a session read from elsewhere (files, Redis, other writers' records)
    /// into the store's clock, each up to the bound of `clock::MAX_CLOCK_AHEAD_MS`, so that every
    /// later write of this store is stamped after them; and holds the session's `updatedAt` back
    /// to this machine's clock, so that neither it nor the TTL follows a clock that runs ahead.
    fn take_in_clocks(&self, live: &mut Live) -> Result<()> {
        let Some(session) = live.parsed() else {
            return Ok(());
        };
        let capped = {
            let mut clock = lock(&self.inner.clock);
            clock.observe_all(session.versions.values());
            clock.cap_time(&session.updated_at)
        };
        capped.map_or(Ok(()), |time| live.set_updated_at(time))
    }

    /// [`take_in_clocks`](Self::take_in_clocks) for a session just loaded. One held as its stored
    /// text whose `updatedAt` runs ahead of this machine's clock is parsed first, so that what a
    /// load sends has it held back too.
    async fn take_in_loaded(&self, key: &SessionKey, live: &mut Live) -> Result<()> {
        let ahead = |text: &str| {
            peek_updated_at(text).is_some_and(|t| lock(&self.inner.clock).cap_time(t).is_some())
        };
        if let Some(text) = live.unparsed_text().filter(|t| ahead(t)) {
            let key = key.clone();
            live.set_parsed(blocking(move || parse_marked(&text, &key)).await?);
        }
        self.take_in_clocks(live)
    }

    /// Takes in now what other processes (or instances) wrote to a session loaded here, as the
    /// directory watcher (or the Redis subscription) does when it hears of it.
    pub async fn reread(&self, user_id: &str, workspace_id: &str) -> Result<()> {
        self.refresh(&SessionKey::new(user_id, workspace_id)?.file_stem())
            .await
    }

    /// Merges what another process or instance wrote to a session into its live copy, if the
    /// session is loaded here. The store's own writes are recognised (the files still look as it
    /// left them; Redis's counters are where it left them) and change nothing. Listeners hear of
    /// the rest with origin `"external"`.
    async fn refresh(&self, stem: &str) -> Result<()> {
        let Ok(_call) = self.enter() else {
            return Ok(());
        };
        let Some(slot) = lock(&self.inner.live).get(stem).cloned() else {
            return Ok(());
        };
        let mut state = idle(&slot, slot.state.lock().await).await;
        let Some(live) = state.as_mut() else {
            return Ok(());
        };
        match &self.inner.backend {
            Backend::File(backend) => {
                let Some(change) = read_changes_from_files(backend, &slot.key, live.disk).await?
                else {
                    return Ok(());
                };
                let live = self.parsed(&slot.key, &mut state).await?;
                self.absorb(&slot.key, live, change)
            }
            Backend::Redis(redis) => {
                let change = redis.read_changes(stem, &slot.key, live.redis).await?;
                if matches!(change, redis::RedisChange::Unchanged) {
                    return Ok(());
                }
                let live = self.parsed(&slot.key, &mut state).await?;
                self.absorb_redis(&slot.key, live, change)
            }
        }
    }

    /// The loaded session in `state`, parsed first if it is held as its stored text (to take a
    /// change in).
    async fn parsed<'a>(
        &self,
        key: &SessionKey,
        state: &'a mut Option<Live>,
    ) -> Result<&'a mut Live> {
        self.ensure_loaded(key, state, Want::Session).await?;
        state
            .as_mut()
            .ok_or_else(|| StoreError::internal("session vanished while loading"))
    }

    fn emit(&self, key: &SessionKey, origin: &str, changes: &[String]) {
        if changes.is_empty() {
            return;
        }
        let listeners: Vec<MergeListener> = lock(&self.inner.listeners)
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        if listeners.is_empty() {
            return;
        }
        let event = MergeEvent {
            user_id: key.user_id.clone(),
            workspace_id: key.workspace_id.clone(),
            session_id: key.session_id(),
            origin: origin.to_string(),
            changes: changes.to_vec(),
        };
        for listener in listeners {
            // A listener's panic is its own problem; it must not poison the store.
            let _ = catch_unwind(AssertUnwindSafe(|| listener(&event)));
        }
    }
}

/// What a call needs of a loaded session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Its JSON text only (a load): a marked snapshot is sent as it is, unparsed.
    Text,
    /// The session itself (a merge, or a change from elsewhere to take in).
    Session,
}

/// A marked snapshot's text, parsed and checked as any stored session is.
fn parse_marked(text: &str, key: &SessionKey) -> Result<NarrativeSession> {
    let session = file::parse_stored(text.as_bytes(), Some(key))
        .ok_or_else(|| StoreError::internal("a marked snapshot is not a good session"))?;
    normalize_owned(session)
}

/// The loaded session of a load or merge, marked as used now.
fn loaded(state: &mut Option<Live>, fold_after: Duration) -> Result<&mut Live> {
    let live = held(state)?;
    live.mark_used(fold_after);
    Ok(live)
}

/// The loaded session, again within the call that loaded it.
fn held(state: &mut Option<Live>) -> Result<&mut Live> {
    state
        .as_mut()
        .ok_or_else(|| StoreError::internal("session vanished while loading"))
}

/// Frees sessions on tokio's blocking pool: a 10 MB session takes ~15 ms to free, which no tokio
/// worker (and never Node's thread) should spend.
async fn free_off_thread<T: Send + 'static>(sessions: T) {
    let _ = blocking(move || {
        drop(sessions);
        Ok(())
    })
    .await;
}

/// How many sessions one store writes to files at once, on a machine with `cores` cores. A host
/// that saves 100 sessions in a loop would otherwise have as many threads writing at once (each
/// save blocks a thread of its own on its write and fsync), all ready to run when Node's thread
/// is. On 2 cores (`bench`, W3, host saves): unlimited, Node's thread blocked up to 6.3–8.4 ms for
/// 15–43 ms of saving; 2 at a time, 2.0–2.3 ms for 50–56 ms; 1 at a time, 1.3–1.6 ms for 60–77 ms.
/// How many group commits (an append and its `fdatasync`, one session each) are in flight at once.
/// Not tied to the cores: a commit spends its time waiting for the disk, which takes many syncs
/// at once and completes them together.
const MAX_SYNCS: usize = 64;

fn writers_for(cores: usize) -> usize {
    cores.clamp(2, 8)
}

/// Runs blocking work on tokio's blocking pool. A panic there becomes EINTERNAL.
async fn blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::internal(format!("blocking task failed: {e}")))?
}

/// Runs short blocking work that a caller waits on (a save's lock, look and append) on this thread.
/// On a tokio worker, the worker hands its other tasks to another thread meanwhile. That saves
/// waking a blocking-pool thread and waking this one again, a good part of a small save's time on a
/// VM. On a blocking-pool thread (where the binding runs durable merges and saves) it just runs.
/// Off a multi-threaded runtime (as in `#[tokio::test]`) it goes to the blocking pool instead.
async fn blocking_here<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => blocking(work).await,
    }
}

fn to_json(session: &NarrativeSession) -> Result<String> {
    serde_json::to_string(session).map_err(internal)
}

fn internal(err: serde_json::Error) -> StoreError {
    StoreError::internal(err.to_string())
}

fn too_large(what: &str, size: usize, max: usize) -> StoreError {
    StoreError::new(
        ErrorCode::TooLarge,
        format!("the {what} would be {size} bytes; the limit is {max}"),
    )
}

/// A node id unique enough to break clock ties between store instances.
fn new_node_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = Sha256::new();
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.update(nanos.to_le_bytes());
    hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
