//! A session held in memory: the session itself, its index, its text while unchanged, and what
//! the store knows of the copy stored in files or Redis. Or, until a call needs the session, only
//! the text of the snapshot the store itself wrote (`Held::Unparsed`; see `canonical.rs`).
//!
//! The session is private, so that everything that changes it goes through here: the index and
//! the kept text can then never disagree with it.

use std::sync::Arc;
use std::time::Instant;

use super::{internal, redis, DiskView};
use crate::error::{ErrorCode, Result, StoreError};
use crate::merge::{apply_patch_indexed, Changes, SessionIndex, SessionPatch};
use crate::model::NarrativeSession;

pub(super) struct Live {
    held: Held,
    /// Journal records of merges not yet on disk.
    pub(super) pending: Vec<u8>,
    /// The files lack something this session holds: the next save writes a snapshot.
    pub(super) needs_snapshot: bool,
    /// The size of the session as JSON, estimated from what was read, written and merged.
    pub(super) approx_bytes: usize,
    /// The files as this store last read or wrote them: a change that leaves them looking like
    /// this is the store's own write.
    pub(super) disk: DiskView,
    /// The same for the Redis backend: the keys as this store last read or wrote them.
    pub(super) redis: redis::RedisView,
    /// When a load or merge last used it.
    pub(super) last_used: Instant,
    /// Where durable merges stand in group commit (file backend; see `file_sessions.rs`).
    pub(super) commits: Commits,
}

/// Group commit: durable merges that arrive while a commit of this session is being written join
/// the next one, so that one `fdatasync` acknowledges them all.
#[derive(Debug, Default)]
pub(super) struct Commits {
    /// Journal records added to `pending` since the load.
    pub(super) added: u64,
    /// How many of those are durable.
    pub(super) durable: u64,
    /// A commit is appending records with the session's mutex released: only merges may change
    /// the session meanwhile (they add to `pending`); everything else that writes waits.
    pub(super) in_flight: bool,
    /// A compaction is writing a snapshot in the background (see `file_sessions.rs`): commits go
    /// on meanwhile; saves, refreshes and deletes wait for it.
    pub(super) compacting: bool,
    /// Commits that failed so far, and the last one: the records it was writing (those added up
    /// to this count) and why.
    pub(super) failures: u64,
    pub(super) last_failure: Option<(u64, StoreError)>,
}

// One per loaded session, held in place: the size of the smaller variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Held {
    Parsed {
        session: NarrativeSession,
        /// Where each beat and entry sits, so that appending to a long history costs what
        /// appending to a short one does.
        index: SessionIndex,
        /// The session's JSON text, kept from the last load until something changes the session:
        /// a reconnect then sends it again without serialising the whole session anew.
        text: Option<Arc<String>>,
    },
    /// Only the stored snapshot's text, which the store itself wrote (`super::canonical`), with
    /// nothing in a journal beside it. A load sends it as it is; the first call that needs the
    /// session parses it (`SessionStore::parse_held`).
    Unparsed(Arc<String>),
}

impl Live {
    pub(super) fn new(session: NarrativeSession) -> Live {
        Live::holding(Held::Parsed {
            session,
            index: SessionIndex::default(),
            text: None,
        })
    }

    /// A session known only by the text of its marked snapshot.
    pub(super) fn unparsed(text: String) -> Live {
        let approx_bytes = text.len();
        let mut live = Live::holding(Held::Unparsed(Arc::new(text)));
        live.approx_bytes = approx_bytes;
        live
    }

    fn holding(held: Held) -> Live {
        Live {
            held,
            pending: Vec::new(),
            needs_snapshot: false,
            approx_bytes: 0,
            disk: DiskView::default(),
            redis: redis::RedisView::default(),
            last_used: Instant::now(),
            commits: Commits::default(),
        }
    }

    /// Adds a journal record of a merge to what is to be written.
    pub(super) fn add_pending(&mut self, record: &[u8]) {
        self.pending.extend_from_slice(record);
        self.commits.added += 1;
    }

    /// Everything pending was written: it is durable.
    pub(super) fn written(&mut self) {
        self.pending.clear();
        self.commits.durable = self.commits.added;
    }

    /// The text still to parse, while the session is held only as text.
    pub(super) fn unparsed_text(&self) -> Option<Arc<String>> {
        match &self.held {
            Held::Unparsed(text) => Some(text.clone()),
            Held::Parsed { .. } => None,
        }
    }

    /// Puts the parsed session in place of its text, which stays as the session's text.
    pub(super) fn set_parsed(&mut self, session: NarrativeSession) {
        let text = self.unparsed_text();
        self.held = Held::Parsed {
            session,
            index: SessionIndex::default(),
            text,
        };
    }

    /// The session, once parsed (every call that needs it parses it first).
    pub(super) fn session(&self) -> Result<&NarrativeSession> {
        self.parsed().ok_or_else(not_parsed)
    }

    /// The session if it is parsed, without asking for it.
    pub(super) fn parsed(&self) -> Option<&NarrativeSession> {
        match &self.held {
            Held::Parsed { session, .. } => Some(session),
            Held::Unparsed(_) => None,
        }
    }

    /// Merges `patch` into the session (see `apply_patch_indexed`).
    pub(super) fn apply(&mut self, patch: &SessionPatch) -> Result<Changes> {
        let Held::Parsed {
            session,
            index,
            text,
        } = &mut self.held
        else {
            return Err(not_parsed());
        };
        let changes = apply_patch_indexed(session, patch, index);
        if !matches!(&changes, Ok(c) if !c.touched) {
            *text = None;
        }
        changes
    }

    /// Sets the session's `updatedAt`.
    pub(super) fn set_updated_at(&mut self, stamp: String) -> Result<()> {
        let Held::Parsed { session, text, .. } = &mut self.held else {
            return Err(not_parsed());
        };
        *text = None;
        session.updated_at = stamp;
        Ok(())
    }

    /// Puts `session` in place of the one held (a merge made into a copy).
    pub(super) fn replace(&mut self, session: NarrativeSession) {
        self.held = Held::Parsed {
            session,
            index: SessionIndex::default(),
            text: None,
        };
    }

    /// The session's JSON text: the kept one, or serialised now and kept.
    pub(super) fn text(&mut self) -> Result<Arc<String>> {
        match &mut self.held {
            Held::Unparsed(text) => Ok(text.clone()),
            Held::Parsed {
                text: Some(text), ..
            } => Ok(text.clone()),
            Held::Parsed { session, text, .. } => {
                let serialised = Arc::new(serde_json::to_string(session).map_err(internal)?);
                *text = Some(serialised.clone());
                Ok(serialised)
            }
        }
    }

    pub(super) fn is_dirty(&self) -> bool {
        !self.pending.is_empty() || self.needs_snapshot
    }

    /// Records wait in a journal (or Redis log) beside the snapshot.
    pub(super) fn has_journal(&self) -> bool {
        self.disk.journal_len > 0 || self.redis.log_len > 0
    }
}

fn not_parsed() -> StoreError {
    StoreError::new(
        ErrorCode::Internal,
        "the session is held as text and was not parsed first",
    )
}
