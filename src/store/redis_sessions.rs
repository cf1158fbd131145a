//! The store's side of the Redis backend: loading, saving, hearing of other instances' writes, and
//! keeping live sessions from expiring. The semantics are the file backend's: a save appends this
//! store's records (joins) to the session's log, or writes a snapshot once the log outgrows it; a
//! write that finds the keys changed since this store last looked merges what is there and tries
//! again (optimistic concurrency: `WATCH`/`MULTI`/`EXEC` in [`super::redis`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::redis::{RedisBackend, RedisChange, RedisEvent, RedisView};
use super::{internal, lock, starting_session, Live, SessionStore, StoredRow, Want};
use crate::cleanup::CleanupReport;
use crate::error::{ErrorCode, Result, StoreError};
use crate::journal;
use crate::paths::SessionKey;

/// How often a save may find the keys changed under it before it gives up (the data stays dirty).
const COMMIT_ATTEMPTS: u32 = 64;
/// The longest pause between two attempts; pauses grow from 1 ms, with jitter.
const MAX_BACKOFF_MS: u64 = 50;
/// How often the channels of sessions no longer held stop being listened to (sharded pub/sub).
const UNFOLLOW_INTERVAL: Duration = Duration::from_secs(60);

impl SessionStore {
    /// Loads a session: the marked snapshot's text alone when `want` allows it (see
    /// `canonical.rs`); otherwise the snapshot, parsed and checked, then its log. Returns (live,
    /// created, recovered).
    pub(super) async fn load_from_redis(
        &self,
        key: &SessionKey,
        want: Want,
    ) -> Result<(Live, bool, bool)> {
        let redis = self.redis_backend()?;
        let stem = key.file_stem();
        // Listened to before it is read (sharded pub/sub), so no later write goes unheard.
        redis.follow(&stem).await?;
        for _ in 0..COMMIT_ATTEMPTS {
            let mut loaded = match want {
                Want::Text => redis.load_text(&stem, key).await?,
                Want::Session => redis.load(&stem, key).await?,
            };
            if let Some(text) = loaded.text.take() {
                let mut live = Live::unparsed(text);
                live.redis = loaded.view;
                return Ok((live, false, false));
            }
            let recovered = !loaded.invalid.is_empty();
            let created = loaded.snapshot.is_none() && loaded.patches.is_empty() && !recovered;
            let now = lock(&self.inner.clock).now_time();
            let had_snapshot = loaded.snapshot.is_some();
            let session = starting_session(loaded.snapshot.take(), key, now)?;
            let mut live = Live::new(session);
            for patch in &loaded.patches {
                live.apply(patch)?;
            }
            live.redis = loaded.view;
            live.approx_bytes = (loaded.view.snapshot_bytes + loaded.view.log_bytes) as usize;
            // A new session is written by its first save, as its first snapshot (nothing in it to
            // lose until then). A recovered one, or a log with no snapshot, is rewritten whole now.
            if created {
                live.needs_snapshot = true;
            } else if !had_snapshot {
                let text = live.text()?;
                match write_snapshot(&redis, key, &live, text.as_bytes()).await? {
                    Some(view) => {
                        live.redis = view;
                        live.approx_bytes = text.len();
                        let _ = redis.publish(&stem, view.version).await;
                    }
                    // Another instance wrote meanwhile: load what it wrote.
                    None => continue,
                }
            } else if let Some(raw) = loaded.raw.take() {
                // A snapshot that holds, byte for byte, what the store would write (one written
                // before marks existed) is marked now, so that the next load is a read.
                let text = live.text()?;
                if live.session()?.id == key.session_id() && text.as_bytes() == raw {
                    redis.mark_canonical(&stem, &raw).await;
                }
            }
            return Ok((live, created, recovered));
        }
        Err(contended(&stem))
    }

    /// Writes this store's pending records (or a snapshot), merging what other instances wrote
    /// first whenever they got there before. Tells other instances after a commit.
    pub(super) async fn persist_to_redis(
        &self,
        key: &SessionKey,
        live: &mut Live,
        compact: bool,
    ) -> Result<()> {
        let redis = self.redis_backend()?;
        let stem = key.file_stem();
        // A snapshot lost to another instance's write is not tried again in this save while there
        // are records to append: writing a large snapshot takes long enough for a busy peer's
        // appends to beat it every time, and the records are what must become durable now (the
        // log is folded into a snapshot by a later save).
        let mut append_only = false;
        for attempt in 0..COMMIT_ATTEMPTS {
            let log_after = live.redis.log_bytes + live.pending.len() as u64;
            let snapshot_due = (!append_only || live.pending.is_empty())
                && (compact || live.needs_snapshot || log_after > live.redis.snapshot_bytes);
            let committed = if snapshot_due {
                let bytes = serde_json::to_vec(live.session()?).map_err(internal)?;
                let view = write_snapshot(&redis, key, live, &bytes).await?;
                if view.is_some() {
                    live.approx_bytes = bytes.len();
                }
                view
            } else {
                redis
                    .append(&stem, &journal::split_frames(&live.pending), live.redis)
                    .await?
            };
            match committed {
                Some(view) => {
                    let wrote = view != live.redis;
                    live.redis = view;
                    live.written();
                    live.needs_snapshot = false;
                    if wrote {
                        // Best effort: an instance that misses it re-reads on its next save.
                        let _ = redis.publish(&stem, view.version).await;
                    }
                    return Ok(());
                }
                None => {
                    append_only |= snapshot_due;
                    // The pause comes before the read, so that the next attempt starts from what
                    // is stored then. (Read, then pause, and a busy peer commits again meanwhile:
                    // the next attempt fails for certain, and a writer can starve so.)
                    backoff(attempt).await;
                    let change = redis.read_changes(&stem, key, live.redis).await?;
                    self.absorb_redis(key, live, change)?;
                }
            }
        }
        Err(contended(&stem))
    }

    /// Merges what another instance wrote into the live session (listeners hear `"external"`).
    pub(super) fn absorb_redis(
        &self,
        key: &SessionKey,
        live: &mut Live,
        change: RedisChange,
    ) -> Result<()> {
        match change {
            RedisChange::Unchanged => Ok(()),
            RedisChange::Tail(patches, view) => {
                live.redis = view;
                self.absorb_records(key, live, &patches)
            }
            RedisChange::Full(loaded) => {
                live.redis = loaded.view;
                self.absorb_rewrite(key, live, loaded.snapshot, &loaded.patches)
            }
        }
    }

    /// Listens for other instances' writes. After a lost subscription comes back, every live
    /// session (or, with sharded pub/sub, the one concerned) is read again (messages sent
    /// meanwhile are lost) and dirty ones are written: a session this store holds that lost a
    /// write (a primary that failed over before its replica had it) is written again then.
    /// Sessions no longer held stop being listened to (sharded pub/sub).
    pub(super) fn start_redis_subscription(&self, redis: Arc<RedisBackend>) {
        let store = self.clone();
        let mut stop = self.inner.stop.subscribe();
        self.spawn_task(async move {
            let Ok(mut events) = redis.subscribe().await else {
                return;
            };
            let mut prune = tokio::time::interval(UNFOLLOW_INTERVAL);
            prune.reset();
            loop {
                let event = tokio::select! {
                    event = events.recv() => match event { Some(event) => event, None => break },
                    _ = prune.tick() => {
                        let live: HashSet<String> = lock(&store.inner.live).keys().cloned().collect();
                        redis.unfollow_except(&live).await;
                        continue;
                    }
                    _ = stop.changed() => break,
                };
                match event {
                    RedisEvent::Changed { stem, .. } => {
                        let _ = store.refresh(&stem).await;
                    }
                    RedisEvent::Stale(stem) => {
                        let _ = store.refresh(&stem).await;
                        let _ = store.flush_dirty().await;
                    }
                    RedisEvent::Resync => {
                        let stems: Vec<String> = lock(&store.inner.live).keys().cloned().collect();
                        for stem in stems {
                            let _ = store.refresh(&stem).await;
                        }
                        let _ = store.flush_dirty().await;
                    }
                }
            }
        });
    }

    /// Every stored session's summary, found with `SCAN` (on every primary of a cluster).
    pub(super) async fn stored_in_redis(&self) -> Result<Vec<StoredRow>> {
        let redis = self.redis_backend()?;
        let mut rows = Vec::new();
        for stem in redis.stems().await? {
            if let Some((summary, bytes)) = redis.summary(&stem).await? {
                rows.push((stem, summary, bytes));
            }
        }
        Ok(rows)
    }

    /// Cleanup with Redis: expiry is Redis's own (every write sets it), so nothing is removed here;
    /// sessions loaded in this store are kept alive by renewing their expiry.
    pub(super) async fn keep_alive_in_redis(&self) -> Result<CleanupReport> {
        let redis = self.redis_backend()?;
        let stems: Vec<String> = lock(&self.inner.live).keys().cloned().collect();
        let mut report = CleanupReport::default();
        for stem in stems {
            report.scanned += 1;
            match redis.touch(&stem).await {
                Ok(_) => report.in_use += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        Ok(report)
    }

    pub(super) fn redis_backend(&self) -> Result<Arc<RedisBackend>> {
        self.redis()
            .ok_or_else(|| StoreError::internal("a Redis path ran without the Redis backend"))
    }
}

/// Writes `bytes`, the serialised `live` session, as its snapshot; marked as the store's own
/// write, so that a load can send it unparsed, when the session's id is the one its key gives.
async fn write_snapshot(
    redis: &RedisBackend,
    key: &SessionKey,
    live: &Live,
    bytes: &[u8],
) -> Result<Option<RedisView>> {
    let stem = key.file_stem();
    if live.session()?.id == key.session_id() {
        redis.write_canonical(&stem, bytes, live.redis).await
    } else {
        redis.write_snapshot(&stem, bytes, live.redis).await
    }
}

/// Busy writers of one session retry after a pause that grows, with jitter so they fall out of step.
async fn backoff(attempt: u32) {
    let ceiling = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let pause = 1 + jitter % ceiling.max(1);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

fn contended(stem: &str) -> StoreError {
    StoreError::new(
        ErrorCode::Io,
        format!("session {stem}: other instances kept writing; the changes stay unsaved and are tried again"),
    )
}
