//! A session held in memory: the session itself, its index, its text while unchanged, and what
//! the store knows of the copy stored in files or Redis. Or, until a call needs the session, only
//! the text of the snapshot the store itself wrote (`Held::Unparsed`; see `canonical.rs`). Or,
//! between calls, a small session's text alone (`Held::Folded`): parsed, a session takes about
//! three times its JSON in memory (docs/performance.md), and a small one parses again in
//! microseconds.
//!
//! The session is private, so that everything that changes it goes through here: the index and
//! the kept text can then never disagree with it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::file::StoredSummary;
use super::{internal, redis, DiskView};
use crate::error::{ErrorCode, Result, StoreError};
use crate::merge::{apply_patch_indexed, Changes, SessionIndex, SessionPatch};
use crate::model::NarrativeSession;

/// Sessions whose JSON is at most this long are held as their text between calls
/// ([`Live::fold`]). Parsing one again costs a call tens of µs; a parsed session of this size
/// would take about 3 times its JSON in memory.
pub(super) const FOLD_MAX_BYTES: usize = 16 * 1024;

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
    /// When a load or merge last used it (None: no call has yet).
    last_used: Option<Instant>,
    /// The call using it now came within the store's `fold_after` of the one before: it is in
    /// steady use, and stays parsed between calls (a burst of merges parses it once).
    steady: bool,
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

// One per loaded session. The session is boxed, so that one held as text takes no room for it.
enum Held {
    Parsed {
        session: Box<NarrativeSession>,
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
    /// A small session between calls: its JSON text, which is all it holds. `parsed` keeps the
    /// session once a call that only reads it has parsed it; a change makes it `Parsed` again.
    /// Only a session whose id is the one its key gives is folded.
    Folded {
        text: Arc<String>,
        parsed: OnceLock<Box<NarrativeSession>>,
    },
}

impl Live {
    pub(super) fn new(session: NarrativeSession) -> Live {
        Live::holding(Held::Parsed {
            session: Box::new(session),
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
            last_used: None,
            steady: false,
            commits: Commits::default(),
        }
    }

    /// Marks the session as used by a call now; `fold_after` is the store's option.
    pub(super) fn mark_used(&mut self, fold_after: Duration) {
        self.steady = self.last_used.is_some_and(|t| t.elapsed() < fold_after);
        self.last_used = Some(Instant::now());
    }

    /// How long no call has used it (zero before the first).
    pub(super) fn idle_for(&self) -> Duration {
        self.last_used.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// At the end of a call: a small session not in steady use is held as its text until the
    /// next call (see [`Live::fold`]).
    pub(super) fn rest(&mut self, own_id: &str) {
        if !self.steady {
            self.fold(own_id);
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
            Held::Parsed { .. } | Held::Folded { .. } => None,
        }
    }

    /// Puts the parsed session in place of its text, which stays as the session's text.
    pub(super) fn set_parsed(&mut self, session: NarrativeSession) {
        let text = self.unparsed_text();
        self.held = Held::Parsed {
            session: Box::new(session),
            index: SessionIndex::default(),
            text,
        };
    }

    /// The session, once parsed (every call that needs it parses an unparsed one first; a
    /// folded one is parsed here).
    pub(super) fn session(&self) -> Result<&NarrativeSession> {
        match &self.held {
            Held::Folded { text, parsed } => match parsed.get() {
                Some(session) => Ok(session),
                None => {
                    let session = Box::new(parse_folded(text)?);
                    Ok(parsed.get_or_init(|| session))
                }
            },
            _ => self.parsed().ok_or_else(not_parsed),
        }
    }

    /// The session if it is parsed, without parsing it.
    pub(super) fn parsed(&self) -> Option<&NarrativeSession> {
        match &self.held {
            Held::Parsed { session, .. } => Some(session),
            Held::Folded { parsed, .. } => parsed.get().map(|session| &**session),
            Held::Unparsed(_) => None,
        }
    }

    /// What `list()` shows of the session as held here, or None while only the stored text is
    /// held (the stored summary is the same).
    pub(super) fn summary(&self) -> Option<StoredSummary> {
        match (&self.held, self.parsed()) {
            (Held::Unparsed(_), _) => None,
            (_, Some(session)) => Some(StoredSummary::of(session)),
            (Held::Folded { text, .. }, None) => StoredSummary::from_json(text.as_bytes()),
            (Held::Parsed { .. }, None) => None,
        }
    }

    /// Holds a small session (see [`FOLD_MAX_BYTES`]) as its text alone until a call needs it
    /// again. `own_id` is the id its key gives: a session with another id is not folded, so that
    /// whatever is held as text has the key's id.
    pub(super) fn fold(&mut self, own_id: &str) {
        let text = match &mut self.held {
            Held::Folded { parsed, .. } => {
                parsed.take();
                return;
            }
            Held::Parsed { session, text, .. }
                if session.id == own_id && self.approx_bytes <= FOLD_MAX_BYTES =>
            {
                match text.take() {
                    Some(text) => text,
                    None => match to_text(session) {
                        Ok(text) => text,
                        Err(_) => return,
                    },
                }
            }
            _ => return,
        };
        self.approx_bytes = text.len();
        self.held = Held::Folded {
            text,
            parsed: OnceLock::new(),
        };
    }

    /// A folded session parsed again, so that it can change.
    fn unfold(&mut self) -> Result<()> {
        if let Held::Folded { text, parsed } = &mut self.held {
            let session = match parsed.take() {
                Some(session) => session,
                None => Box::new(parse_folded(text)?),
            };
            let text = Some(text.clone());
            self.held = Held::Parsed {
                session,
                index: SessionIndex::default(),
                text,
            };
        }
        Ok(())
    }

    /// Merges `patch` into the session (see `apply_patch_indexed`).
    pub(super) fn apply(&mut self, patch: &SessionPatch) -> Result<Changes> {
        self.unfold()?;
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
        self.unfold()?;
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
            session: Box::new(session),
            index: SessionIndex::default(),
            text: None,
        };
    }

    /// The session's JSON text: the kept one, or serialised now and kept.
    pub(super) fn text(&mut self) -> Result<Arc<String>> {
        match &mut self.held {
            Held::Unparsed(text) | Held::Folded { text, .. } => Ok(text.clone()),
            Held::Parsed {
                text: Some(text), ..
            } => Ok(text.clone()),
            Held::Parsed { session, text, .. } => {
                let serialised = to_text(session)?;
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

/// The session's JSON text, as long as it is: a text serialised into a growing buffer may have
/// up to twice its length allocated, and a held text stays for as long as the session is held.
fn to_text(session: &NarrativeSession) -> Result<Arc<String>> {
    let mut text = serde_json::to_string(session).map_err(internal)?;
    text.shrink_to_fit();
    Ok(Arc::new(text))
}

/// The session a folded text holds. The store wrote that text from the session itself.
fn parse_folded(text: &str) -> Result<NarrativeSession> {
    serde_json::from_str(text).map_err(internal)
}

fn not_parsed() -> StoreError {
    StoreError::new(
        ErrorCode::Internal,
        "the session is held as text and was not parsed first",
    )
}
