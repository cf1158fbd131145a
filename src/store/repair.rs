//! What the operator tools (`mia-sessions`) write: a whole session merged into the store (import,
//! migrate), a damaged session restored from its best copies (doctor --repair), and one expired
//! session removed (gc).
//!
//! Each is the protocol every writer follows (docs/storage.md): under the session's lock (with
//! Redis, a `WATCH`ed transaction retried when another instance wrote first), everything stored is
//! read and merged by the usual rules, then written whole as a snapshot. So a server with the
//! session open loses nothing: it finds the new snapshot as it finds another process's compaction,
//! and merges it into its live copy. Damaged files are moved aside, never deleted.

use std::sync::Arc;

use super::disk::Disk;
use super::file::{FileBackend, ReadLimits};
use super::file_sessions::write_snapshot;
use super::inspect::{aside_extras, mismatched, read_stem, restore, scan_dir, Copy};
use super::redis::RedisBackend;
use super::{blocking, internal, starting_session, Backend, SessionStore};
use super::{SessionSummary, StoredRow};
use crate::cleanup;
use crate::error::{ErrorCode, Result, StoreError};
use crate::merge::{apply_patch, normalize_owned, SessionPatch};
use crate::model::{from_json_bytes, validate_session, NarrativeSession};
use crate::paths::SessionKey;

/// How often a Redis write may find the session changed under it before it gives up.
const REDIS_ATTEMPTS: u32 = 64;

/// What merging a whole session into the store did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportOutcome {
    pub user_id: String,
    pub workspace_id: String,
    /// No copy was stored: the session was written as it came.
    pub created: bool,
    /// The path of every value the stored copy took from the imported one.
    pub changes: Vec<String>,
}

/// What a repair did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairOutcome {
    /// Each step, in order ("moved ... aside as ...", "wrote a snapshot from ...").
    pub actions: Vec<String>,
    /// Whether a new snapshot was written.
    pub restored: bool,
}

impl SessionStore {
    /// Merges a whole stored session (as `export` writes it) into the store by the merge rules:
    /// a session not stored yet is written as it is (same `createdAt`, `updatedAt`, clocks), and
    /// one that is stored takes only what the imported copy holds that is newer or missing. Never
    /// overwrites. Its `id` is the one its user and workspace give. `EINVALID` for a malformed
    /// session, `ETOOLARGE` past the store's limit.
    pub async fn import_session(&self, session_json: &str) -> Result<ImportOutcome> {
        let _call = self.enter()?;
        let max = self.inner.options.max_session_bytes;
        if session_json.len() > max {
            return Err(super::too_large("session", session_json.len(), max));
        }
        let mut incoming: NarrativeSession = from_json_bytes(session_json.as_bytes())
            .map_err(|e| StoreError::invalid(format!("not a session: {e}")))?;
        let key = SessionKey::new(&incoming.user_id, &incoming.workspace_id)?;
        incoming.id = key.session_id();
        validate_session(&incoming)?;
        let incoming = normalize_owned(incoming)?;
        match &self.inner.backend {
            Backend::File(backend) => {
                let backend = backend.clone();
                blocking(move || import_into_files(&backend, &key, &incoming)).await
            }
            Backend::Redis(redis) => import_into_redis(redis, &key, &incoming).await,
        }
    }

    /// Restores a session from its best copies: moves a damaged snapshot, backup or journal
    /// aside (never deleting it), then writes a snapshot merged from the good snapshot or backup,
    /// every intact journal record, every good copy kept aside, and, from copies whose checksum no
    /// longer matches, what nothing else holds. Does nothing to a session with nothing wrong.
    pub async fn repair(&self, user_id: &str, workspace_id: &str) -> Result<RepairOutcome> {
        let _call = self.enter()?;
        let key = SessionKey::new(user_id, workspace_id)?;
        match &self.inner.backend {
            Backend::File(backend) => {
                let (backend, disk, limits) = self.file_parts(backend);
                blocking(move || repair_files(&backend, disk.as_ref(), limits, &key)).await
            }
            Backend::Redis(redis) => repair_redis(redis, &key).await,
        }
    }

    /// The sessions a TTL sweep with `ttl_days` at `now_millis` would remove, read-only (sessions
    /// loaded in this store are left out). With Redis, which expires sessions itself: those whose
    /// keys have no expiry (set by hand, or an old version) and are past the TTL.
    pub async fn expired_sessions(
        &self,
        ttl_days: Option<f64>,
        now_millis: Option<i64>,
    ) -> Result<Vec<SessionSummary>> {
        let _call = self.enter()?;
        let cutoff = self.cutoff(ttl_days, now_millis)?;
        let rows: Vec<StoredRow> = match &self.inner.backend {
            Backend::File(backend) => {
                let (backend, inner) = (backend.clone(), self.inner.clone());
                blocking(move || {
                    let in_use = |stem: &str| crate::lock(&inner.live).contains_key(stem);
                    let mut rows = Vec::new();
                    for stem in cleanup::expired(&backend, cutoff, &in_use)? {
                        let journal = backend.journal_size(&stem).is_some();
                        if let Some((summary, bytes)) = backend.summary(&stem, journal) {
                            rows.push((stem, summary, bytes));
                        }
                    }
                    Ok(rows)
                })
                .await?
            }
            Backend::Redis(redis) => redis.expired(cutoff).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(_, s, bytes)| SessionSummary::stored(s, bytes))
            .collect())
    }

    /// Removes one session if a sweep with `ttl_days` at `now_millis` would: compare, then
    /// delete, under its lock (with Redis, in a `WATCH`ed transaction), so one written meanwhile
    /// stays. Returns whether it was removed.
    pub async fn remove_if_expired(
        &self,
        user_id: &str,
        workspace_id: &str,
        ttl_days: Option<f64>,
        now_millis: Option<i64>,
    ) -> Result<bool> {
        let _call = self.enter()?;
        let key = SessionKey::new(user_id, workspace_id)?;
        let cutoff = self.cutoff(ttl_days, now_millis)?;
        let stem = key.file_stem();
        match &self.inner.backend {
            Backend::File(backend) => {
                let (backend, inner) = (backend.clone(), self.inner.clone());
                blocking(move || {
                    let in_use = |stem: &str| crate::lock(&inner.live).contains_key(stem);
                    cleanup::remove_if_expired(&backend, &stem, cutoff, &in_use)
                })
                .await
            }
            Backend::Redis(redis) => redis.remove_if_expired(&key, cutoff).await,
        }
    }

    fn cutoff(&self, ttl_days: Option<f64>, now_millis: Option<i64>) -> Result<i64> {
        let ttl = ttl_days.unwrap_or(self.inner.options.ttl_days);
        super::check_ttl(ttl)?;
        Ok(cleanup::cutoff(
            now_millis.unwrap_or_else(cleanup::now_millis),
            ttl,
        ))
    }
}

fn import_into_files(
    backend: &FileBackend,
    key: &SessionKey,
    incoming: &NarrativeSession,
) -> Result<ImportOutcome> {
    let stem = key.file_stem();
    let lock = backend.lock(&stem)?;
    // As a load reads it: a damaged file is moved aside and the backup taken.
    let read = backend.read(&stem, Some(key), &lock)?;
    let journal = backend.read_journal(&stem, 0, &lock)?;
    let mut outcome = ImportOutcome {
        user_id: key.user_id.clone(),
        workspace_id: key.workspace_id.clone(),
        ..ImportOutcome::default()
    };
    let recovered = read.recovered || journal.recovered;
    let session = if read.session.is_none() && journal.patches.is_empty() {
        outcome.created = true;
        incoming.clone()
    } else {
        let mut session = starting_session(read.session, key, incoming.created_at.clone())?;
        for patch in &journal.patches {
            apply_patch(&mut session, patch)?;
        }
        let changes = apply_patch(&mut session, &SessionPatch::from_session(incoming))?;
        outcome.changes = changes.paths;
        if !changes.touched && !recovered {
            return Ok(outcome);
        }
        session
    };
    let bytes = serde_json::to_vec(&session).map_err(internal)?;
    write_snapshot(backend, key, &session.id, &bytes, &lock)?;
    Ok(outcome)
}

async fn import_into_redis(
    redis: &Arc<RedisBackend>,
    key: &SessionKey,
    incoming: &NarrativeSession,
) -> Result<ImportOutcome> {
    let stem = key.file_stem();
    for attempt in 0..REDIS_ATTEMPTS {
        // As a load reads it: a value that is not valid is moved aside.
        let loaded = redis.load(&stem, key).await?;
        let mut outcome = ImportOutcome {
            user_id: key.user_id.clone(),
            workspace_id: key.workspace_id.clone(),
            ..ImportOutcome::default()
        };
        let session = if loaded.snapshot.is_none() && loaded.patches.is_empty() {
            outcome.created = true;
            incoming.clone()
        } else {
            let mut session = starting_session(loaded.snapshot, key, incoming.created_at.clone())?;
            for patch in &loaded.patches {
                apply_patch(&mut session, patch)?;
            }
            let changes = apply_patch(&mut session, &SessionPatch::from_session(incoming))?;
            outcome.changes = changes.paths;
            if !changes.touched && loaded.invalid.is_empty() {
                return Ok(outcome);
            }
            session
        };
        if write_to_redis(redis, key, &session, loaded.view).await? {
            return Ok(outcome);
        }
        pause(attempt).await;
    }
    Err(contended(&stem))
}

/// Writes `session` as the snapshot if the keys are still as `view` saw them, and tells other
/// instances. False when another instance wrote first.
async fn write_to_redis(
    redis: &RedisBackend,
    key: &SessionKey,
    session: &NarrativeSession,
    view: super::redis::RedisView,
) -> Result<bool> {
    let stem = key.file_stem();
    let bytes = serde_json::to_vec(session).map_err(internal)?;
    let written = if session.id == key.session_id() {
        redis.write_canonical(&stem, &bytes, view).await?
    } else {
        redis.write_snapshot(&stem, &bytes, view).await?
    };
    match written {
        Some(view) => {
            // Best effort: an instance that misses it reads the session again at its next save.
            let _ = redis.publish(&stem, view.version).await;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn repair_files(
    backend: &FileBackend,
    disk: &dyn Disk,
    limits: ReadLimits,
    key: &SessionKey,
) -> Result<RepairOutcome> {
    let stem = key.file_stem();
    let lock = backend.lock(&stem)?;
    let dir = backend.dir();
    let aside = scan_dir(disk, dir)?
        .stems
        .remove(&stem)
        .map(|f| f.aside)
        .unwrap_or_default();
    let read = read_stem(dir, disk, limits, &stem, false);
    let mut outcome = RepairOutcome::default();
    for (copy, ext) in [(&read.snapshot, ".json"), (&read.backup, ".json.bak")] {
        if matches!(copy, Copy::Bad(_) | Copy::Mismatch(_)) {
            let moved = backend.quarantine(&dir.join(format!("{stem}{ext}")))?;
            outcome
                .actions
                .push(format!("moved {stem}{ext} aside as {}", file_name(&moved)));
        }
    }
    // The store's own reading of the journal keeps a damaged one aside and writes one of its
    // intact records in its place.
    let journal = backend.read_journal(&stem, 0, &lock)?;
    for moved in &journal.quarantined {
        outcome.actions.push(format!(
            "kept the damaged journal aside as {}; its {} intact record(s) are kept",
            file_name(moved),
            journal.patches.len()
        ));
    }
    let mut extras = mismatched(&read.snapshot, &read.backup);
    extras.extend(aside_extras(dir, disk, limits, &stem, &aside));
    let restored = restore(&read.snapshot, &read.backup, &journal.patches, extras);
    let Some(session) = restored.session else {
        outcome.actions.push("nothing to restore from".to_string());
        return Ok(outcome);
    };
    let needed = !outcome.actions.is_empty()
        || !restored.adding.is_empty()
        || !matches!(read.snapshot, Copy::Good(_));
    if !needed || session.user_id != key.user_id || session.workspace_id != key.workspace_id {
        return Ok(outcome);
    }
    let bytes = serde_json::to_vec(&session).map_err(internal)?;
    write_snapshot(backend, key, &session.id, &bytes, &lock)?;
    outcome.restored = true;
    outcome.actions.push(format!(
        "wrote a snapshot from {}",
        restored.sources.join(", ")
    ));
    Ok(outcome)
}

async fn repair_redis(redis: &Arc<RedisBackend>, key: &SessionKey) -> Result<RepairOutcome> {
    let stem = key.file_stem();
    let mut outcome = RepairOutcome::default();
    for attempt in 0..REDIS_ATTEMPTS {
        // A load moves every value that is not valid aside (kept, without expiry).
        let loaded = redis.load(&stem, key).await?;
        for moved in &loaded.invalid {
            outcome.actions.push(format!("moved {moved}"));
        }
        let extras = redis.aside_extras(&stem).await?;
        let snapshot = match loaded.snapshot {
            Some(s) => Copy::Good(Box::new(s)),
            None => Copy::Missing,
        };
        let restored = restore(&snapshot, &Copy::Missing, &loaded.patches, extras);
        let Some(session) = restored.session else {
            outcome.actions.push("nothing to restore from".to_string());
            return Ok(outcome);
        };
        if loaded.invalid.is_empty() && restored.adding.is_empty() {
            return Ok(outcome);
        }
        if write_to_redis(redis, key, &session, loaded.view).await? {
            outcome.restored = true;
            outcome.actions.push(format!(
                "wrote a snapshot from {}",
                restored.sources.join(", ")
            ));
            return Ok(outcome);
        }
        pause(attempt).await;
    }
    Err(contended(&stem))
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// A short pause, longer with each attempt, before trying a Redis write again.
async fn pause(attempt: u32) {
    let ms = 1u64 << attempt.min(5);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

fn contended(stem: &str) -> StoreError {
    StoreError::new(
        ErrorCode::Io,
        format!("session {stem}: other instances kept writing it; try again"),
    )
}
