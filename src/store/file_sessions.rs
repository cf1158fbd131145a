//! The store's side of the file backend: loading a session from its files, saving it under its
//! lock (taking in what other processes wrote first), and reading what changed in them since.
//! The files themselves, and what each operation on them promises, are `file.rs`'s.

use std::sync::Arc;

use super::file::{self, FileBackend, FileStamp, JournalRead, JournalStamp};
use tokio::sync::MutexGuard;

use super::{blocking, blocking_here, internal, starting_session, Live, SessionStore, Slot, Want};
use crate::error::{Result, StoreError};
use crate::merge::apply_patch;
use crate::model::NarrativeSession;
use crate::paths::SessionKey;

/// A session's files as a store last saw them: the snapshot's stamp, and which journal file and how
/// long (its records up to there are in the live session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct DiskView {
    pub(super) snapshot: Option<FileStamp>,
    pub(super) journal_len: u64,
    /// Which file the journal was, when there was one.
    pub(super) journal_id: Option<(u64, u64)>,
}

impl DiskView {
    pub(super) fn set_journal(&mut self, journal: Option<JournalStamp>) {
        self.journal_len = journal.map_or(0, |j| j.len);
        self.journal_id = journal.map(|j| j.identity);
    }

    /// Whether `journal` is the file this view knows, so that its records up to `journal_len`
    /// are known. A journal where none was known is new: all of it is to be read.
    fn knows_journal(&self, journal: Option<JournalStamp>) -> bool {
        match (self.journal_id, journal) {
            (Some(known), Some(now)) => known == now.identity,
            (None, _) => self.journal_len == 0,
            (Some(_), None) => false,
        }
    }
}

/// The first trip of a save to the blocking pool: either it appended already (the journal after
/// it), or it looked and holds the lock for the rest of the save.
enum FirstTrip {
    Appended(Option<JournalStamp>),
    Looked(file::SessionLock, DiskChange),
}

/// What the second trip of a save wrote.
enum Written {
    /// A snapshot (how the files look after it, and its size).
    Snapshot(DiskView, usize),
    /// The records, to the journal (how it looks after, if anything was appended); with the error
    /// of a snapshot that was due but could not be written.
    Appended(Option<JournalStamp>, Option<StoreError>),
}

/// What changed in a session's files since a store last saw them.
pub(super) enum DiskChange {
    Unchanged,
    /// Records were appended to the journal.
    Tail(JournalRead),
    /// The snapshot was rewritten (or the journal replaced): everything is read again.
    Full {
        session: Option<Box<NarrativeSession>>,
        journal: JournalRead,
        snapshot: Option<FileStamp>,
    },
}

fn read_disk_changes(
    backend: &FileBackend,
    stem: &str,
    key: &SessionKey,
    known: DiskView,
    lock: &file::SessionLock,
) -> Result<DiskChange> {
    let snapshot = backend.stamp(stem);
    let journal = backend.journal_stamp(stem);
    let journal_len = journal.map_or(0, |j| j.len);
    // An offset into the journal means something only in the file it was taken from.
    if snapshot == known.snapshot && known.knows_journal(journal) {
        if journal_len == known.journal_len {
            return Ok(DiskChange::Unchanged);
        }
        if journal_len > known.journal_len {
            let tail = backend.read_journal(stem, known.journal_len, lock)?;
            return Ok(DiskChange::Tail(tail));
        }
    }
    let read = backend.read(stem, Some(key), lock)?;
    let journal = backend.read_journal(stem, 0, lock)?;
    Ok(DiskChange::Full {
        session: read.session.map(Box::new),
        journal,
        snapshot: backend.stamp(stem),
    })
}

/// Loads a session from its files, under its lock: the marked snapshot's text alone when `want`
/// allows it (see `canonical.rs`); otherwise the snapshot (or its backup), parsed and checked, with
/// its journal replayed. Returns (live, created, recovered).
pub(super) fn load_from_files(
    backend: &FileBackend,
    key: &SessionKey,
    now: String,
    want: Want,
) -> Result<(Live, bool, bool)> {
    let stem = key.file_stem();
    let lock = backend.lock(&stem)?;
    // The store's own snapshot, with no journal: its text is the session's.
    if want == Want::Text && backend.journal_size(&stem).is_none() {
        if let Some(text) = backend.read_canonical(&stem, &lock) {
            let mut live = Live::unparsed(text);
            live.disk.snapshot = backend.stamp(&stem);
            return Ok((live, false, false));
        }
    }
    let mut read = backend.read(&stem, Some(key), &lock)?;
    let created = read.session.is_none();
    let mut session = starting_session(read.session.take(), key, now)?;
    // Records are joins, so they replay onto the snapshot (or onto a recovered backup) alike.
    let journal = backend.read_journal(&stem, 0, &lock)?;
    for patch in &journal.patches {
        apply_patch(&mut session, patch)?;
    }
    let recovered = read.recovered || journal.recovered;
    let id = session.id.clone();
    let own = id == key.session_id();
    let mut live = Live::new(session);
    // A recovered session is written back over the bad files at once, and so is one rebuilt from a
    // journal alone. A new session is written by its first save (the first durable merge's
    // commit, autosave, or close): until then there is nothing in it to lose, and its first
    // durable write costs one snapshot, not a snapshot and then a journal.
    if recovered || (created && journal.end() > 0) {
        let text = live.text()?;
        live.disk = write_snapshot(backend, key, &id, text.as_bytes(), &lock)?;
        live.approx_bytes = text.len();
    } else if created {
        live.needs_snapshot = true;
    } else {
        live.disk.snapshot = backend.stamp(&stem);
        live.disk.set_journal(journal.stamp);
        live.approx_bytes = (read.bytes + journal.end()) as usize;
    }
    if want == Want::Text {
        let text = live.text()?;
        // A snapshot that holds, byte for byte, what the store would write (one written before
        // marks existed) is marked now, so that the next load is a read.
        if own && journal.end() == 0 && !created && !recovered && text.as_bytes() == read.raw {
            backend.mark_canonical(&stem, &read.raw, &lock);
        }
    }
    Ok((live, created, recovered))
}

/// Writes a full snapshot (`bytes` serialise a live session with id `session_id`) and drops the
/// journal it now contains. (A crash between the two leaves a journal whose records the snapshot
/// already holds: replaying joins twice changes nothing.) The snapshot is marked as the store's own
/// write, so that a load can send it unparsed, when the session's id is the one its key gives.
pub(super) fn write_snapshot(
    backend: &FileBackend,
    key: &SessionKey,
    session_id: &str,
    bytes: &[u8],
    lock: &file::SessionLock,
) -> Result<DiskView> {
    let stem = &key.file_stem();
    if session_id == key.session_id() {
        backend.write_canonical(stem, bytes, lock)?;
    } else {
        backend.write(stem, bytes, lock)?;
    }
    backend.remove_journal(stem, lock)?;
    // Stamped under the lock, so it is this write's stamp and no one else's.
    Ok(DiskView {
        snapshot: backend.stamp(stem),
        ..DiskView::default()
    })
}

/// What changed in the files of a loaded session since it was last read or written, or None when
/// nothing did (checked first without the lock: the usual case, a store's own write).
pub(super) async fn read_changes_from_files(
    backend: &Arc<FileBackend>,
    key: &SessionKey,
    known: DiskView,
) -> Result<Option<DiskChange>> {
    let backend = backend.clone();
    let key = key.clone();
    blocking(move || {
        let stem = key.file_stem();
        let journal = backend.journal_stamp(&stem);
        if backend.stamp(&stem) == known.snapshot
            && known.knows_journal(journal)
            && journal.map_or(0, |j| j.len) == known.journal_len
        {
            return Ok(None);
        }
        let lock = backend.lock(&stem)?;
        match read_disk_changes(&backend, &stem, &key, known, &lock)? {
            DiskChange::Unchanged => Ok(None),
            change => Ok(Some(change)),
        }
    })
    .await
}

impl SessionStore {
    /// Read-merge-write under the session's cross-process lock: take in what others wrote since
    /// this store last looked, then append this store's pending records to the journal, or, when
    /// the journal would outgrow the snapshot (or `compact` asks), write a new snapshot instead.
    ///
    /// A snapshot that cannot be written (a full disk, say) does not keep the records from being
    /// appended when they fit: they are durable then, and `Ok(Some(error))` says what could not be
    /// done (the session is folded into a snapshot by a later save).
    pub(super) async fn persist_to_files(
        &self,
        backend: &Arc<FileBackend>,
        key: &SessionKey,
        live: &mut Live,
        compact: bool,
    ) -> Result<Option<StoreError>> {
        let backend = backend.clone();
        let session_key = key;
        // Never closed, so always Ok; held until the session is written.
        let _writer = self.inner.writers.acquire().await;
        let stem = key.file_stem();
        let snapshot_len = live.disk.snapshot.map_or(0, |s| s.size());
        let journal_after = live.disk.journal_len + live.pending.len() as u64;
        // The usual save: nobody else wrote, and the records fit in the journal. Then it is one trip
        // to the blocking pool: lock, check, append. (A copy of the records: if the append fails,
        // they stay pending and are tried again.)
        let append_now = (!compact && !live.needs_snapshot && journal_after <= snapshot_len)
            .then(|| live.pending.clone());
        // A journal that outgrows its snapshot is folded in by a compaction in the background,
        // off this save's path (only past the journal's limit must this save write the snapshot).
        let append_now = append_now.or_else(|| {
            (!compact && !live.needs_snapshot && journal_after <= backend.journal_limit())
                .then(|| live.pending.clone())
        });
        let (file_lock, change) = {
            let (backend, stem, key, known) =
                (backend.clone(), stem.clone(), key.clone(), live.disk);
            let outcome = blocking_here(move || {
                let lock = backend.lock(&stem)?;
                let change = read_disk_changes(&backend, &stem, &key, known, &lock)?;
                match (change, append_now) {
                    (DiskChange::Unchanged, Some(records)) if records.is_empty() => {
                        Ok(FirstTrip::Appended(None))
                    }
                    (DiskChange::Unchanged, Some(records)) => {
                        let journal = backend.append_journal(&stem, &records, &lock)?;
                        Ok(FirstTrip::Appended(Some(journal)))
                    }
                    (change, _) => Ok(FirstTrip::Looked(lock, change)),
                }
            })
            .await?;
            match outcome {
                FirstTrip::Looked(lock, change) => (lock, change),
                FirstTrip::Appended(journal) => {
                    if journal.is_some() {
                        live.disk.set_journal(journal);
                    }
                    live.written();
                    self.compact_if_due(session_key, live);
                    return Ok(None);
                }
            }
        };
        self.absorb(key, live, change)?;
        let journal_after = live.disk.journal_len + live.pending.len() as u64;
        let must_snapshot = journal_after > backend.journal_limit();
        let snapshot = if compact || live.needs_snapshot || must_snapshot {
            let bytes = serde_json::to_vec(live.session()?).map_err(internal)?;
            Some((bytes, live.session()?.id.clone()))
        } else {
            None
        };
        let records = live.pending.clone();
        // When a snapshot is due only to fold the journal in (not because the files lack
        // something this store holds), failing to write it must not keep the records that fit
        // in the journal from being appended: they are what must be durable.
        let may_append = !live.needs_snapshot && journal_after <= backend.journal_limit();
        let key = key.clone();
        let written = blocking(move || {
            if let Some((bytes, id)) = snapshot {
                match write_snapshot(&backend, &key, &id, &bytes, &file_lock) {
                    Ok(view) => return Ok(Written::Snapshot(view, bytes.len())),
                    Err(e) if !may_append => return Err(e),
                    Err(e) if records.is_empty() => return Ok(Written::Appended(None, Some(e))),
                    Err(e) => {
                        let journal = backend.append_journal(&stem, &records, &file_lock)?;
                        return Ok(Written::Appended(Some(journal), Some(e)));
                    }
                }
            }
            if records.is_empty() {
                return Ok(Written::Appended(None, None));
            }
            let journal = backend.append_journal(&stem, &records, &file_lock)?;
            Ok(Written::Appended(Some(journal), None))
        })
        .await?;
        live.written();
        match written {
            Written::Snapshot(view, size) => {
                live.disk = view;
                live.approx_bytes = size;
                live.needs_snapshot = false;
                Ok(None)
            }
            Written::Appended(journal, not_compacted) => {
                if journal.is_some() {
                    live.disk.set_journal(journal);
                }
                if not_compacted.is_none() {
                    self.compact_if_due(session_key, live);
                }
                Ok(not_compacted)
            }
        }
    }

    /// Merges what changed in the files into the live session, and remembers how they look now
    /// (only once it is merged: a merge that fails leaves it to be read again).
    pub(super) fn absorb(
        &self,
        key: &SessionKey,
        live: &mut Live,
        change: DiskChange,
    ) -> Result<()> {
        match change {
            DiskChange::Unchanged => Ok(()),
            DiskChange::Tail(journal) => {
                self.absorb_records(key, live, &journal.patches)?;
                live.disk.set_journal(journal.stamp);
                Ok(())
            }
            DiskChange::Full {
                session,
                journal,
                snapshot,
            } => {
                self.absorb_rewrite(key, live, session.map(|s| *s), &journal.patches)?;
                live.disk.snapshot = snapshot;
                live.disk.set_journal(journal.stamp);
                Ok(())
            }
        }
    }
}

/// Group commit. A durable merge's record is durable once a commit that includes it has been
/// appended and synced. The first durable merge to find no commit in flight leads one: it looks at
/// the files under the session's lock, and when nothing else wrote and the records fit in the
/// journal, it appends every pending record with the session's mutex released. Merges that arrive
/// meanwhile add their records and wait; when the commit ends, they find theirs durable, or one
/// of them leads the next commit with every record added since. So a session that gets many
/// durable merges at once pays one `fdatasync` per commit, not one per merge, and every
/// acknowledgement still means its record is on the disk.
impl SessionStore {
    /// Waits until the record counted `mine` (see [`super::live::Commits`]) is durable, leading
    /// commits as needed. Returns the session's guard again, and Err when the commit that held
    /// this record failed (the record stays pending: a later save writes it).
    pub(super) async fn commit_durable<'a>(
        &self,
        backend: &Arc<FileBackend>,
        slot: &'a Slot,
        mut state: MutexGuard<'a, Option<Live>>,
        mine: u64,
    ) -> (MutexGuard<'a, Option<Live>>, Result<Option<StoreError>>) {
        let failures_before = state.as_ref().map_or(0, |live| live.commits.failures);
        loop {
            let Some(live) = state.as_mut() else {
                let gone = StoreError::internal("the session was deleted while it was written");
                return (state, Err(gone));
            };
            if live.commits.durable >= mine {
                return (state, Ok(None));
            }
            if live.commits.failures > failures_before {
                if let Some((upto, error)) = &live.commits.last_failure {
                    if *upto >= mine {
                        let error = error.clone();
                        return (state, Err(error));
                    }
                }
            }
            state = if live.commits.in_flight {
                wait_for_commit(slot, state).await
            } else {
                self.lead_commit(backend, slot, state).await
            };
        }
    }

    /// Commits every record pending now (see [`SessionStore::commit_durable`]).
    async fn lead_commit<'a>(
        &self,
        backend: &Arc<FileBackend>,
        slot: &'a Slot,
        mut state: MutexGuard<'a, Option<Live>>,
    ) -> MutexGuard<'a, Option<Live>> {
        let Some(live) = state.as_mut() else {
            return state;
        };
        let upto = live.commits.added;
        let journal_after = live.disk.journal_len + live.pending.len() as u64;
        // A journal that outgrew its snapshot is compacted in the background (see below).
        let appendable = !live.needs_snapshot && journal_after <= backend.journal_limit();
        // A session with no files yet (a new one) is written whole, as its first snapshot.
        let first = live.needs_snapshot && live.disk == DiskView::default();
        let outcome = if appendable || first {
            match self.write_released(backend, slot, state).await {
                Ok(back) => return back,
                Err(back) => {
                    state = back;
                    let Some(live) = state.as_mut() else {
                        return state;
                    };
                    self.persist_to_files(backend, &slot.key, live, false).await
                }
            }
        } else {
            self.persist_to_files(backend, &slot.key, live, false).await
        };
        if let (Err(error), Some(live)) = (outcome, state.as_mut()) {
            live.commits.failures += 1;
            live.commits.last_failure = Some((upto, error));
        }
        slot.committed.notify_waiters();
        state
    }

    /// The fast commit: under the session's lock, when the files are as this store left them,
    /// appends the pending records (or, for a session with no files yet, writes its first
    /// snapshot) with the session's mutex released. Err(guard) when the files changed (or could
    /// not be looked at): the caller writes the usual way, with the mutex held.
    async fn write_released<'a>(
        &self,
        backend: &Arc<FileBackend>,
        slot: &'a Slot,
        mut state: MutexGuard<'a, Option<Live>>,
    ) -> std::result::Result<MutexGuard<'a, Option<Live>>, MutexGuard<'a, Option<Live>>> {
        let Some(live) = state.as_mut() else {
            return Err(state);
        };
        // Never closed, so always Ok; held until the write is done.
        let _sync = self.inner.syncs.acquire().await;
        let upto = live.commits.added;
        let write = if live.needs_snapshot {
            let (Ok(text), Ok(session)) = (live.text(), live.session()) else {
                return Err(state);
            };
            let id = session.id.clone();
            Released::Snapshot(text, id, live.pending.len())
        } else {
            Released::Append(live.pending.clone())
        };
        // Nothing else writes the session's files from here on (saves, refreshes and compactions
        // wait for the commit in flight); merges only add to `pending`.
        live.commits.in_flight = true;
        let (files, stem, key, known) = (
            backend.clone(),
            slot.key.file_stem(),
            slot.key.clone(),
            live.disk,
        );
        drop(state);
        // One trip to the blocking pool: the session's lock, a look at its files, and the write.
        // Files that changed (or could not be looked at) are left to the usual way, below.
        let written = blocking(move || {
            let looked = files.lock(&stem).and_then(|lock| {
                let change = read_disk_changes(&files, &stem, &key, known, &lock)?;
                Ok((lock, matches!(change, DiskChange::Unchanged)))
            });
            let Ok((lock, true)) = looked else {
                return Ok(None);
            };
            match write {
                Released::Append(records) => files
                    .append_journal(&stem, &records, &lock)
                    .map(|journal| Some(Wrote::Journal(journal, records.len()))),
                Released::Snapshot(text, id, records) => {
                    write_snapshot(&files, &key, &id, text.as_bytes(), &lock)
                        .map(|view| Some(Wrote::Snapshot(view, records, text.len())))
                }
            }
        })
        .await;
        let mut state = slot.state.lock().await;
        if let Some(live) = state.as_mut() {
            live.commits.in_flight = false;
            match written {
                Ok(None) => {
                    slot.committed.notify_waiters();
                    return Err(state);
                }
                Ok(Some(Wrote::Journal(journal, records))) => {
                    live.pending.drain(..records);
                    live.disk.set_journal(Some(journal));
                    live.commits.durable = upto;
                    self.compact_if_due(&slot.key, live);
                }
                Ok(Some(Wrote::Snapshot(view, records, size))) => {
                    live.pending.drain(..records);
                    live.disk = view;
                    live.needs_snapshot = false;
                    live.approx_bytes = size;
                    live.commits.durable = upto;
                }
                Err(error) => {
                    live.commits.failures += 1;
                    live.commits.last_failure = Some((upto, error));
                }
            }
        }
        slot.committed.notify_waiters();
        Ok(state)
    }
}

/// What a released commit writes: the pending records, or a first snapshot (its text, the
/// session's id, and how many pending bytes of records it holds).
enum Released {
    Append(Vec<u8>),
    Snapshot(Arc<String>, String, usize),
}

/// What it wrote, and how many pending bytes that made durable.
enum Wrote {
    Journal(JournalStamp, usize),
    Snapshot(DiskView, usize, usize),
}

/// Releases the session's mutex until the commit in flight ends, and takes it again.
pub(super) async fn wait_for_commit<'a>(
    slot: &'a Slot,
    state: MutexGuard<'a, Option<Live>>,
) -> MutexGuard<'a, Option<Live>> {
    let ended = slot.committed.notified();
    tokio::pin!(ended);
    // Registered before the mutex is let go, so the end of the commit cannot be missed.
    ended.as_mut().enable();
    drop(state);
    ended.await;
    slot.state.lock().await
}

/// The session's guard once no commit is in flight: what writes the session's files (a save, a
/// refresh, a delete) must not run while a commit appends with the mutex released.
pub(super) async fn idle<'a>(
    slot: &'a Slot,
    mut state: MutexGuard<'a, Option<Live>>,
) -> MutexGuard<'a, Option<Live>> {
    while state
        .as_ref()
        .is_some_and(|live| live.commits.in_flight || live.commits.compacting)
    {
        state = wait_for_commit(slot, state).await;
    }
    state
}

/// [`idle`], but waiting only for a commit in flight: what a background compaction itself needs.
async fn no_commit_in_flight<'a>(
    slot: &'a Slot,
    mut state: MutexGuard<'a, Option<Live>>,
) -> MutexGuard<'a, Option<Live>> {
    while state.as_ref().is_some_and(|live| live.commits.in_flight) {
        state = wait_for_commit(slot, state).await;
    }
    state
}

/// Compaction in the background. A journal that outgrows its snapshot is folded into a new
/// snapshot off the path of the merges that made it grow, so that a durable merge costs an append
/// whatever the session's size: the session is serialised under its mutex, written and synced to a
/// temp file with the mutex released (commits go on appending meanwhile), and put in place under
/// the session's lock, keeping the journal's records appended since (see
/// [`FileBackend::install_snapshot`]). If another process wrote a snapshot meanwhile, this one is
/// dropped: theirs may hold what this one lacks.
impl SessionStore {
    /// Starts a compaction of the session if its journal has outgrown its snapshot and none runs.
    pub(super) fn compact_if_due(&self, key: &SessionKey, live: &mut Live) {
        let snapshot_len = live.disk.snapshot.map_or(0, |s| s.size());
        if live.disk.journal_len <= snapshot_len || live.commits.compacting {
            return;
        }
        live.commits.compacting = true;
        let (store, stem) = (self.clone(), key.file_stem());
        tokio::spawn(async move { store.compact_in_background(&stem).await });
    }

    async fn compact_in_background(&self, stem: &str) {
        let Some(slot) = super::lock(&self.inner.live).get(stem).cloned() else {
            return;
        };
        let mut compacted = false;
        if let Ok(_call) = self.enter() {
            if let Some(backend) = self.files() {
                // A failed compaction is tried again once the journal grows: the records are safe
                // in it meanwhile.
                compacted = self.compact_slot(&backend, &slot).await.unwrap_or(false);
            }
        }
        // Whatever happened, the session is no longer compacting: close() and saves wait for it.
        if let Some(live) = slot.state.lock().await.as_mut() {
            live.commits.compacting = false;
            // What was appended meanwhile may have outgrown the new snapshot already.
            if compacted {
                self.compact_if_due(&slot.key, live);
            }
        }
        slot.committed.notify_waiters();
    }

    /// Ok(true) when a new snapshot was put in place.
    async fn compact_slot(&self, backend: &Arc<FileBackend>, slot: &Slot) -> Result<bool> {
        let state = no_commit_in_flight(slot, slot.state.lock().await).await;
        let Some(live) = state.as_ref() else {
            return Ok(false);
        };
        let known = live.disk;
        if known.journal_len <= known.snapshot.map_or(0, |s| s.size()) {
            return Ok(false);
        }
        let session = live.session()?;
        let text = serde_json::to_vec(session).map_err(internal)?;
        let canonical = session.id == slot.key.session_id();
        drop(state);

        let (files, stem) = (backend.clone(), slot.key.file_stem());
        let prepared = {
            // Never closed, so always Ok: a snapshot write is CPU and disk, bounded as saves are.
            let _writer = self.inner.writers.acquire().await;
            blocking(move || files.prepare_snapshot(&stem, &text, canonical)).await?
        };
        let size = prepared.size();

        let mut state = no_commit_in_flight(slot, slot.state.lock().await).await;
        let Some(live) = state.as_mut() else {
            backend.discard_snapshot(prepared);
            return Ok(false);
        };
        let (files, stem, key, now) = (
            backend.clone(),
            slot.key.file_stem(),
            slot.key.clone(),
            live.disk,
        );
        let installed = blocking_here(move || {
            let lock = files.lock(&stem)?;
            // Another process compacted (or replaced the journal) since the session was serialised.
            if files.stamp(&stem) != known.snapshot
                || !known.knows_journal(files.journal_stamp(&stem))
            {
                files.discard_snapshot(prepared);
                return Ok(None);
            }
            let change = read_disk_changes(&files, &stem, &key, now, &lock)?;
            let journal = files.install_snapshot(&stem, prepared, known.journal_len, &lock)?;
            Ok(Some((change, files.stamp(&stem), journal)))
        })
        .await?;
        let Some((change, snapshot, journal)) = installed else {
            return Ok(false);
        };
        // Records other processes appended meanwhile are in the journal's tail, which stays.
        if self.absorb(&slot.key, live, change).is_err() {
            // The view is reset, so the next save reads the files whole.
            live.disk = DiskView::default();
            return Ok(false);
        }
        live.disk.snapshot = snapshot;
        live.disk.set_journal(journal);
        live.approx_bytes = size;
        Ok(true)
    }
}
