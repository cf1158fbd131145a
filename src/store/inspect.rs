//! What the operator tools (`mia-sessions`) read: a session without creating or repairing it, and
//! a check of every stored session and every copy kept aside, all read-only.
//!
//! Nothing here writes: a damaged file is reported, never moved; a torn journal tail is reported,
//! never cut. Each session's files are read under its lock (the lock every writer takes), so what
//! is read is never half of another process's write. What a repair would do is worked out from the
//! same reading ([`SessionCheck::repair`]); `repair.rs` does it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::disk::{is_not_regular, is_too_big, Disk};
use super::file::{parse_stored, FileBackend, ReadLimits};
use super::{blocking, canonical, Backend, SessionStore};
use crate::error::Result;
use crate::merge::{apply_patch, normalize_owned, segment, SessionPatch};
use crate::model::{from_json_bytes, NarrativeSession};
use crate::paths::{is_file_stem, SessionKey};

/// A session read without creating it, and from where.
#[derive(Debug)]
pub struct Peeked {
    pub session: NarrativeSession,
    /// What it was read from, and what was wrong: `"backup (the snapshot is damaged: ...)"`.
    pub notes: Vec<String>,
}

/// One copy of a session's data kept aside (a file `*.corrupt-<ms>`, or a Redis key
/// `...:corrupt:<ms>`): moved there by a load that found it damaged, never deleted.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AsideCopy {
    /// The file's name in the data dir, or the Redis key.
    pub name: String,
    pub stem: String,
    /// `snapshot`, `backup`, `journal` (files) or `snap`, `log`, `ver`, `gen`, `mark` (Redis).
    pub kind: String,
    pub bytes: u64,
    /// When it was moved aside (milliseconds since the epoch, from its name).
    pub moved_at: Option<i64>,
}

/// What the check found wrong with one session, and what a repair would do about it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCheck {
    pub stem: String,
    /// Known when some copy of the session could be read.
    pub user_id: Option<String>,
    pub workspace_id: Option<String>,
    pub problems: Vec<String>,
    /// What `repair` would do, in order.
    pub repair: Vec<String>,
    /// Whether a repair can restore anything (some copy or record is readable and its ids known).
    pub repairable: bool,
}

impl SessionCheck {
    /// Adds what a restore found (copies kept aside that hold what the session lacks, whose the
    /// session is) and the repair's last step.
    pub(super) fn conclude(&mut self, restored: &Restore) {
        for name in restored.adding.iter().filter(|n| !n.starts_with("the ")) {
            self.problems
                .push(format!("{name}, kept aside, holds what the session lacks"));
        }
        if let Some(session) = &restored.session {
            self.user_id = Some(session.user_id.clone());
            self.workspace_id = Some(session.workspace_id.clone());
        }
        if self.problems.is_empty() {
            return;
        }
        self.repairable = restored.session.is_some();
        if self.repairable {
            self.repair.push(format!(
                "write a snapshot from {}",
                restored.sources.join(", ")
            ));
        } else {
            self.repair = vec![
                "nothing: no copy of the session can be read, so whose it is is unknown; what is stored stays as it is"
                    .to_string(),
            ];
        }
    }
}

/// The check of a whole store.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreCheck {
    /// Sessions looked at (stems with a snapshot, backup or journal; on Redis, with any key).
    pub sessions: usize,
    /// Sessions with something wrong, or with copies kept aside that hold what they lack.
    pub damaged: Vec<SessionCheck>,
    pub quarantined: Vec<AsideCopy>,
    /// Leftover temp files of interrupted writes (the TTL sweep removes those older than an hour).
    pub temp_files: Vec<String>,
}

/// One snapshot-like copy (snapshot, backup, or one kept aside), as read.
#[derive(Debug)]
pub(super) enum Copy {
    Missing,
    /// Parses, passes the checks, holds the ids its name was derived from, and its checksum mark
    /// (if any) matches.
    Good(Box<NarrativeSession>),
    /// As `Good`, but the bytes no longer match the checksum mark the store set when it wrote
    /// them: some value in it may be wrong. A repair takes from it only what no good copy holds.
    Mismatch(Box<NarrativeSession>),
    Bad(String),
}

impl Copy {
    fn problem(&self) -> Option<String> {
        match self {
            Copy::Mismatch(_) => Some(
                "its bytes no longer match the checksum the store wrote with them (changed since)"
                    .to_string(),
            ),
            Copy::Bad(reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

/// The files of one stem in a data dir, from one listing.
#[derive(Debug, Default)]
pub(super) struct StemFiles {
    pub snapshot: bool,
    pub backup: bool,
    pub journal: bool,
    /// Names of copies kept aside, with their kind.
    pub aside: Vec<(String, &'static str)>,
}

/// A data dir from one listing.
pub(super) struct DirScan {
    /// Every stem with its files.
    pub stems: BTreeMap<String, StemFiles>,
    pub aside: Vec<AsideCopy>,
    /// Temp files of writes under way or interrupted.
    pub temps: Vec<String>,
}

/// Every stem of the data dir with its files, the copies kept aside, and the temp files.
pub(super) fn scan_dir(disk: &dyn Disk, dir: &Path) -> Result<DirScan> {
    let names = disk
        .list(dir)
        .map_err(|e| crate::error::StoreError::io("cannot list", dir, e))?;
    let mut stems: BTreeMap<String, StemFiles> = BTreeMap::new();
    let mut aside = Vec::new();
    let mut temps = Vec::new();
    for name in names {
        if name.starts_with('.') && name.ends_with(".tmp") {
            temps.push(name);
            continue;
        }
        let Some(stem) = name.get(..64).filter(|s| is_file_stem(s)) else {
            continue;
        };
        let rest = &name[64..];
        let files = stems.entry(stem.to_string()).or_default();
        match rest {
            ".json" => files.snapshot = true,
            ".json.bak" => files.backup = true,
            ".journal" => files.journal = true,
            _ => {
                let kind = [
                    (".json.bak.corrupt-", "backup"),
                    (".json.corrupt-", "snapshot"),
                    (".journal.corrupt-", "journal"),
                ]
                .into_iter()
                .find(|(prefix, _)| rest.starts_with(prefix));
                if let Some((prefix, kind)) = kind {
                    let bytes = disk.entry(&dir.join(&name)).map_or(0, |e| e.len);
                    aside.push(AsideCopy {
                        name: name.clone(),
                        stem: stem.to_string(),
                        kind: kind.to_string(),
                        bytes,
                        moved_at: millis_in(&rest[prefix.len()..]),
                    });
                    files.aside.push((name, kind));
                }
            }
        }
    }
    // A stem with only a lock file or copies kept aside has no session files.
    Ok(DirScan {
        stems,
        aside,
        temps,
    })
}

/// The milliseconds at the start of `<ms>` or `<ms>.<n>`.
pub(super) fn millis_in(text: &str) -> Option<i64> {
    text.split('.').next()?.parse().ok()
}

/// Reads a snapshot-like file of session `stem`, read-only.
pub(super) fn examine_snapshot(disk: &dyn Disk, path: &Path, stem: &str, max: u64) -> Copy {
    let bytes = match disk.read(path, max) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Copy::Missing,
        Err(e) if is_not_regular(&e) || is_too_big(&e) => return Copy::Bad(e.to_string()),
        Err(e) => return Copy::Bad(format!("cannot be read: {e}")),
    };
    let mismatch = disk
        .mark(path)
        .is_some_and(|mark| canonical::verify(&mark, stem, &bytes) == Some(false));
    examine_bytes(&bytes, stem, mismatch)
}

/// A snapshot's bytes (from a file or a Redis key) as a copy of session `stem`.
pub(super) fn examine_bytes(bytes: &[u8], stem: &str, mismatch: bool) -> Copy {
    let session = match from_json_bytes::<NarrativeSession>(bytes) {
        Ok(session) => session,
        Err(e) => return Copy::Bad(format!("is not a session: {e}")),
    };
    let Ok(key) = SessionKey::new(&session.user_id, &session.workspace_id) else {
        return Copy::Bad("holds invalid ids".to_string());
    };
    if key.file_stem() != stem {
        return Copy::Bad("holds another session's ids".to_string());
    }
    let Some(session) = parse_stored(bytes, Some(&key)) else {
        return Copy::Bad("fails the checks of a session (ids, times)".to_string());
    };
    if mismatch {
        Copy::Mismatch(Box::new(session))
    } else {
        Copy::Good(Box::new(session))
    }
}

/// What a journal's bytes hold: its intact records, and a description of any damage.
pub(super) struct JournalLook {
    pub patches: Vec<SessionPatch>,
    pub damage: Option<String>,
}

pub(super) fn examine_journal(bytes: &[u8]) -> JournalLook {
    let decoded = crate::journal::decode(bytes);
    let damaged: usize = decoded.damaged.iter().map(|r| r.len()).sum();
    let damage = decoded.is_damaged().then(|| {
        format!(
            "{damaged} damaged bytes in {} place(s); {} intact record(s)",
            decoded.damaged.len(),
            decoded.patches.len()
        )
    });
    JournalLook {
        patches: decoded.patches,
        damage,
    }
}

/// The part of `copy` that `current` lacks altogether: charts, beats and entries whose ids it does
/// not have, and memory and config keys it has no value or deletion for. Nothing `current` holds is
/// touched, so a copy whose checksum no longer matches (one value in it may be wrong) can fill gaps
/// without overwriting a good value.
pub(super) fn gaps_of(copy: &NarrativeSession, current: &NarrativeSession) -> SessionPatch {
    let mut patch = SessionPatch::from_session(copy);
    patch.identity = None;
    patch.created_at = None;
    patch.updated_at = None;
    patch.universe_focus = None;
    patch.story_position = None;
    let known = |name: &str, key: &str| {
        current
            .versions
            .contains_key(&format!("{name}.{}", segment(key)))
    };
    patch
        .memory
        .retain(|k, v| !v.is_null() && !current.memory.contains_key(k) && !known("memory", k));
    patch
        .config
        .retain(|k, v| !v.is_null() && !current.config.contains_key(k) && !known("config", k));
    let has_chart = |id: &str| current.active_charts.iter().any(|c| c.id == id);
    patch.charts.retain(|chart| {
        chart
            .get("id")
            .and_then(|id| id.as_str())
            .is_some_and(|id| !has_chart(id))
    });
    patch
        .beats
        .retain(|b| !current.story_beats.iter().any(|c| c.id == b.id));
    patch
        .entries
        .retain(|e| !current.conversation_history.iter().any(|c| c.id == e.id));
    let kept_charts: Vec<String> = patch
        .charts
        .iter()
        .filter_map(|c| c.get("id").and_then(|id| id.as_str()))
        .map(|id| format!("activeCharts.{}.", segment(id)))
        .collect();
    let kept_keys: Vec<String> = (patch
        .memory
        .keys()
        .map(|k| format!("memory.{}", segment(k))))
    .chain(
        patch
            .config
            .keys()
            .map(|k| format!("config.{}", segment(k))),
    )
    .collect();
    patch.versions.retain(|path, _| {
        kept_keys.iter().any(|k| k == path) || kept_charts.iter().any(|c| path.starts_with(c))
    });
    patch
}

/// Whether applying `patch` to `session` would change anything.
pub(super) fn adds_to(session: &NarrativeSession, patch: &SessionPatch) -> bool {
    let mut copy = session.clone();
    apply_patch(&mut copy, patch).is_ok_and(|c| c.touched)
}

/// Something beside a session's snapshot and backup that a restore may take from.
pub(super) enum Extra {
    /// A snapshot-like copy: a mismatched snapshot or backup, or a copy kept aside.
    Copy(Copy),
    /// The intact records of a journal kept aside.
    Records(Vec<SessionPatch>),
}

/// The best a session can be restored to from what was read, and what that takes.
pub(super) struct Restore {
    pub session: Option<NarrativeSession>,
    /// Where it comes from, for a plan: "the backup", "3 journal record(s)", a name.
    pub sources: Vec<String>,
    /// Names of the extras that add something to the session.
    pub adding: Vec<String>,
}

/// Restores a session: its good snapshot (else its good backup), its journal's records, then what
/// each extra adds: good copies merged whole, records of journals kept aside, and from copies whose
/// checksum no longer matches only what nothing else holds ([`gaps_of`]). Every step is a merge by
/// the usual rules, so nothing any copy holds that is newer is lost. With no good snapshot or
/// backup, the first good copy (else a mismatched one) is the base.
pub(super) fn restore(
    snapshot: &Copy,
    backup: &Copy,
    records: &[SessionPatch],
    mut extras: Vec<(String, Extra)>,
) -> Restore {
    let mut out = Restore {
        session: None,
        sources: Vec::new(),
        adding: Vec::new(),
    };
    let base = match (snapshot, backup) {
        (Copy::Good(s), _) => Some((s, "the snapshot")),
        (_, Copy::Good(s)) => Some((s, "the backup")),
        _ => None,
    };
    if let Some((session, source)) = base {
        out.session = normalize_owned((**session).clone()).ok();
        out.sources.push(source.to_string());
    }
    let rank = |extra: &Extra| match extra {
        Extra::Copy(Copy::Good(_)) => 0,
        Extra::Records(_) => 1,
        _ => 2,
    };
    extras.sort_by_key(|(_, extra)| rank(extra));
    let mut records_applied = false;
    for (name, extra) in extras {
        if out.session.is_none() {
            if let Extra::Copy(Copy::Good(s) | Copy::Mismatch(s)) = &extra {
                out.session = normalize_owned((**s).clone()).ok();
                out.sources.push(name.clone());
                out.adding.push(name);
                continue;
            }
        }
        if !records_applied {
            apply_all(&mut out, records);
            records_applied = true;
        }
        let Some(session) = out.session.as_mut() else {
            continue;
        };
        let patches = match &extra {
            Extra::Copy(Copy::Good(s)) => vec![SessionPatch::from_session(s)],
            Extra::Copy(Copy::Mismatch(s)) => vec![gaps_of(s, session)],
            Extra::Records(patches) => patches.clone(),
            Extra::Copy(_) => continue,
        };
        if patches.iter().any(|p| adds_to(session, p)) {
            for patch in &patches {
                let _ = apply_patch(session, patch);
            }
            out.sources.push(match extra {
                Extra::Copy(Copy::Mismatch(_)) => format!("what only {name} holds"),
                Extra::Records(p) => format!("{} record(s) of {name}", p.len()),
                _ => name.clone(),
            });
            out.adding.push(name);
        }
    }
    if !records_applied {
        apply_all(&mut out, records);
    }
    out
}

fn apply_all(out: &mut Restore, records: &[SessionPatch]) {
    if let Some(session) = out.session.as_mut() {
        if !records.is_empty() {
            for patch in records {
                let _ = apply_patch(session, patch);
            }
            out.sources
                .push(format!("{} journal record(s)", records.len()));
        }
    }
}

impl SessionStore {
    /// The stored session of `user_id` in `workspace_id`, or None when none is stored: nothing is
    /// created, moved or repaired, and the session is not kept in memory. A damaged snapshot is
    /// skipped for its backup (said in `notes`), a damaged journal record for the next. A session
    /// loaded in this store is read from its files all the same (what they hold now).
    pub async fn peek(&self, user_id: &str, workspace_id: &str) -> Result<Option<Peeked>> {
        let _call = self.enter()?;
        let key = SessionKey::new(user_id, workspace_id)?;
        match &self.inner.backend {
            Backend::File(backend) => {
                let (backend, disk, limits) = self.file_parts(backend);
                blocking(move || peek_files(&backend, disk.as_ref(), limits, &key)).await
            }
            Backend::Redis(redis) => redis.peek(&key).await,
        }
    }

    /// Checks every stored session and every copy kept aside, read-only: snapshots and backups
    /// (parse, checks, ids, checksum mark), journals (record checksums), and whether a copy kept
    /// aside holds anything the session lacks. `progress(done, total)` is called as it goes.
    pub async fn check(
        &self,
        progress: Arc<dyn Fn(usize, usize) + Send + Sync>,
    ) -> Result<StoreCheck> {
        let _call = self.enter()?;
        match &self.inner.backend {
            Backend::File(backend) => {
                let (backend, disk, limits) = self.file_parts(backend);
                blocking(move || check_files(&backend, disk.as_ref(), limits, progress.as_ref()))
                    .await
            }
            Backend::Redis(redis) => redis.check(progress.as_ref()).await,
        }
    }

    /// The file backend, with the disk it reads through and its read limits, for blocking work.
    pub(super) fn file_parts(
        &self,
        backend: &Arc<FileBackend>,
    ) -> (Arc<FileBackend>, Arc<dyn Disk>, ReadLimits) {
        let limits = ReadLimits::for_sessions_of(self.inner.options.max_session_bytes);
        (backend.clone(), self.inner.options.disk.clone(), limits)
    }

    /// The copies kept aside (damaged files or Redis values moved there by a load), from one
    /// listing: nothing is read.
    pub async fn quarantined(&self) -> Result<Vec<AsideCopy>> {
        let _call = self.enter()?;
        match &self.inner.backend {
            Backend::File(backend) => {
                let (backend, disk, _) = self.file_parts(backend);
                blocking(move || Ok(scan_dir(disk.as_ref(), backend.dir())?.aside)).await
            }
            Backend::Redis(redis) => redis.aside_keys().await,
        }
    }
}

fn peek_files(
    backend: &FileBackend,
    disk: &dyn Disk,
    limits: ReadLimits,
    key: &SessionKey,
) -> Result<Option<Peeked>> {
    let stem = key.file_stem();
    let _lock = backend.lock(&stem)?;
    let read = read_stem(backend.dir(), disk, limits, &stem, true);
    let mut notes = Vec::new();
    if let Some(problem) = read.snapshot.problem() {
        notes.push(format!("the snapshot {problem}"));
    }
    if let Some(damage) = &read.journal.damage {
        notes.push(format!("the journal has {damage}"));
    }
    let extras = mismatched(&read.snapshot, &read.backup);
    let restored = restore(&read.snapshot, &read.backup, &read.journal.patches, extras);
    let Some(session) = restored.session else {
        return Ok(None);
    };
    if restored.sources.first().map(String::as_str) != Some("the snapshot") {
        notes.push(format!("read from {}", restored.sources.join(", ")));
    }
    Ok(Some(Peeked { session, notes }))
}

/// A session's snapshot, backup and journal, as read.
pub(super) struct StemRead {
    pub snapshot: Copy,
    pub backup: Copy,
    pub journal: JournalLook,
}

pub(super) fn read_stem(
    dir: &Path,
    disk: &dyn Disk,
    limits: ReadLimits,
    stem: &str,
    journal: bool,
) -> StemRead {
    let snapshot = examine_snapshot(
        disk,
        &dir.join(format!("{stem}.json")),
        stem,
        limits.snapshot,
    );
    let backup = examine_snapshot(
        disk,
        &dir.join(format!("{stem}.json.bak")),
        stem,
        limits.snapshot,
    );
    let journal =
        match journal.then(|| disk.read(&dir.join(format!("{stem}.journal")), limits.journal)) {
            Some(Ok(bytes)) => examine_journal(&bytes),
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => JournalLook {
                patches: Vec::new(),
                damage: Some(e.to_string()),
            },
            _ => JournalLook {
                patches: Vec::new(),
                damage: None,
            },
        };
    StemRead {
        snapshot,
        backup,
        journal,
    }
}

/// The snapshot and backup as extras when their checksum no longer matches: a restore takes from
/// them only what nothing else holds.
pub(super) fn mismatched(snapshot: &Copy, backup: &Copy) -> Vec<(String, Extra)> {
    [(snapshot, "the snapshot"), (backup, "the backup")]
        .into_iter()
        .filter_map(|(copy, name)| match copy {
            Copy::Mismatch(s) => Some((name.to_string(), Extra::Copy(Copy::Mismatch(s.clone())))),
            _ => None,
        })
        .collect()
}

/// The copies kept aside of a stem, read as extras for [`restore`].
pub(super) fn aside_extras(
    dir: &Path,
    disk: &dyn Disk,
    limits: ReadLimits,
    stem: &str,
    aside: &[(String, &'static str)],
) -> Vec<(String, Extra)> {
    aside
        .iter()
        .map(|(name, kind)| {
            let path = dir.join(name);
            let extra = if *kind == "journal" {
                match disk.read(&path, limits.journal) {
                    Ok(bytes) => Extra::Records(examine_journal(&bytes).patches),
                    Err(_) => Extra::Records(Vec::new()),
                }
            } else {
                Extra::Copy(examine_snapshot(disk, &path, stem, limits.snapshot))
            };
            (name.clone(), extra)
        })
        .collect()
}

fn check_files(
    backend: &FileBackend,
    disk: &dyn Disk,
    limits: ReadLimits,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<StoreCheck> {
    let dir = backend.dir().to_path_buf();
    let DirScan {
        stems,
        aside: quarantined,
        temps: temp_files,
    } = scan_dir(disk, &dir)?;
    let mut report = StoreCheck {
        quarantined,
        temp_files,
        ..StoreCheck::default()
    };
    let total = stems.len();
    for (done, (stem, files)) in stems.iter().enumerate() {
        // Copies kept aside of a session that is gone (removed by the TTL sweep) are not
        // brought back.
        if files.snapshot || files.backup || files.journal {
            report.sessions += 1;
            let _lock = backend.lock(stem)?;
            let check = check_stem(&dir, disk, limits, stem, files);
            if !check.problems.is_empty() {
                report.damaged.push(check);
            }
        }
        if done % 64 == 63 || done + 1 == total {
            progress(done + 1, total);
        }
    }
    Ok(report)
}

/// Checks one session's files (the caller holds its lock) and works out what a repair would do.
pub(super) fn check_stem(
    dir: &Path,
    disk: &dyn Disk,
    limits: ReadLimits,
    stem: &str,
    files: &StemFiles,
) -> SessionCheck {
    let read = read_stem(dir, disk, limits, stem, files.journal);
    let mut check = SessionCheck {
        stem: stem.to_string(),
        ..SessionCheck::default()
    };
    if let Some(problem) = read.snapshot.problem() {
        check
            .problems
            .push(format!("snapshot {stem}.json {problem}"));
        check.repair.push(format!("move {stem}.json aside"));
    } else if matches!(read.snapshot, Copy::Missing) {
        check.problems.push(format!("no snapshot {stem}.json"));
    }
    if let Some(problem) = read.backup.problem() {
        check
            .problems
            .push(format!("backup {stem}.json.bak {problem}"));
        check.repair.push(format!("move {stem}.json.bak aside"));
    }
    if let Some(damage) = &read.journal.damage {
        check
            .problems
            .push(format!("journal {stem}.journal: {damage}"));
        check.repair.push(format!(
            "keep {stem}.journal aside and write a journal of its intact records"
        ));
    }
    let mut extras = mismatched(&read.snapshot, &read.backup);
    extras.extend(aside_extras(dir, disk, limits, stem, &files.aside));
    let restored = restore(&read.snapshot, &read.backup, &read.journal.patches, extras);
    check.conclude(&restored);
    check
}
