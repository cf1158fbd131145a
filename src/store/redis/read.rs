//! Reading sessions: a whole session in one `MULTI`/`EXEC` read, its text alone when the store
//! wrote it, what changed since a view, and a summary for `list`.

use ::redis::Value;

use super::keys::{check_stem_of, Keys};
use super::values::{
    counter, decode_frame, int_value, own_text, raw_from, read_pipeline, RawSession,
};
use super::{Loaded, RedisBackend, RedisChange, RedisView};
use crate::error::Result;
use crate::merge::apply_patch;
use crate::model::{from_json_bytes, NarrativeSession};
use crate::paths::SessionKey;
use crate::store::canonical;
use crate::store::file::StoredSummary;

impl RedisBackend {
    /// A session's snapshot, log, version, generation and mark, read in one transaction.
    pub(super) async fn read_raw(&self, keys: &Keys) -> Result<RawSession> {
        let raw = self
            .with_retry("cannot read a session from", || {
                let pipe = read_pipeline(keys, true);
                async move { self.net.query::<Vec<Value>>(keys, &pipe).await }
            })
            .await?;
        raw_from(raw)
    }

    /// Reads a session: snapshot, whole log and version in one transaction. A snapshot that does
    /// not parse, fails the model's checks or holds other ids than `key`'s, and log elements that
    /// are not one complete journal frame, are moved aside (never deleted) and reported in
    /// `invalid`; the rest loads as if they were absent.
    pub async fn load(&self, stem: &str, key: &SessionKey) -> Result<Loaded> {
        let keys = self.keys(stem)?;
        check_stem_of(stem, key)?;
        let mut loaded = self
            .load_from(&keys, self.read_raw(&keys).await?, key)
            .await?;
        loaded.raw = None;
        Ok(loaded)
    }

    /// [`Self::load`], except that a snapshot the store wrote (its `mark` matches) with an empty
    /// log comes back as its text, unparsed (`Loaded::text`): a client restoring a large session
    /// then waits for a read and a checksum, not for a parse. An unmarked snapshot with an empty
    /// log comes back parsed, with its bytes (`Loaded::raw`).
    pub async fn load_text(&self, stem: &str, key: &SessionKey) -> Result<Loaded> {
        let keys = self.keys(stem)?;
        check_stem_of(stem, key)?;
        let mut raw = self.read_raw(&keys).await?;
        if let Some(loaded) = own_text(stem, &mut raw) {
            return Ok(loaded);
        }
        let mut loaded = self.load_from(&keys, raw, key).await?;
        if !loaded.invalid.is_empty() || !loaded.patches.is_empty() {
            loaded.raw = None;
        }
        Ok(loaded)
    }

    /// Marks the stored snapshot as the store's own write when it holds `bytes` (best effort: a
    /// snapshot replaced meanwhile does not match the mark, and is read the long way).
    pub async fn mark_canonical(&self, stem: &str, bytes: &[u8]) {
        let Ok(keys) = self.keys(stem) else {
            return;
        };
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(&keys.mark)
            .arg(canonical::mark_for(stem, bytes))
            .arg("PX")
            .arg(self.ttl_ms)
            .ignore();
        let _ = self.net.query::<()>(&keys, &pipe).await;
    }

    /// What changed since `known`: nothing, records appended to the log (read from
    /// `known.log_len` on), or everything (snapshot rewritten, session deleted or expired, bad
    /// values found): one round trip when nothing or only the log changed.
    pub async fn read_changes(
        &self,
        stem: &str,
        key: &SessionKey,
        known: RedisView,
    ) -> Result<RedisChange> {
        let keys = self.keys(stem)?;
        check_stem_of(stem, key)?;
        let start = known.log_len.min(i64::MAX as u64) as i64;
        let read = self
            .with_retry("cannot read the changes of", || {
                let mut pipe = ::redis::pipe();
                pipe.atomic()
                    .ignore_errors()
                    .cmd("GET")
                    .arg(&keys.ver)
                    .cmd("GET")
                    .arg(&keys.gen)
                    .cmd("LLEN")
                    .arg(&keys.log)
                    .cmd("LRANGE")
                    .arg(&keys.log)
                    .arg(start)
                    .arg(-1)
                    .cmd("STRLEN")
                    .arg(&keys.snap);
                let keys = &keys;
                async move {
                    self.net
                        .query::<(Value, Value, Value, Value, Value)>(keys, &pipe)
                        .await
                }
            })
            .await?;
        let (ver, gen, log_len, tail, snapshot_bytes) = read;
        let (Some(version), Some(generation), Value::Int(log_len), Value::Array(tail)) =
            (counter(&ver), counter(&gen), log_len, tail)
        else {
            // A key of the wrong type or a counter that is not one: load moves it aside.
            return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?)));
        };
        let log_len = log_len.max(0) as u64;
        let snapshot_replaced = int_value(&snapshot_bytes) != Some(known.snapshot_bytes);
        if generation != known.generation
            || version < known.version
            || log_len < known.log_len
            || snapshot_replaced
        {
            return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?)));
        }
        if version == known.version && log_len == known.log_len {
            return Ok(RedisChange::Unchanged);
        }
        let mut patches = Vec::with_capacity(tail.len());
        let mut tail_bytes = 0;
        for element in tail {
            match element {
                Value::BulkString(bytes) => match decode_frame(&bytes) {
                    Ok(patch) => {
                        tail_bytes += bytes.len() as u64;
                        patches.push(patch);
                    }
                    Err(_) => return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?))),
                },
                _ => return Ok(RedisChange::Full(Box::new(self.load(stem, key).await?))),
            }
        }
        let view = RedisView {
            version,
            log_len: known.log_len + patches.len() as u64,
            generation,
            snapshot_bytes: known.snapshot_bytes,
            log_bytes: known.log_bytes + tail_bytes,
        };
        Ok(RedisChange::Tail(patches, view))
    }

    /// The summary fields of a stored session and its size (snapshot and log), or None when it
    /// has no valid snapshot. Reads without moving anything aside: bad log elements are skipped.
    pub async fn summary(&self, stem: &str) -> Result<Option<(StoredSummary, u64)>> {
        let keys = self.keys(stem)?;
        let raw = self.read_raw(&keys).await?;
        let Value::BulkString(snapshot) = raw.snap else {
            return Ok(None);
        };
        let Ok(mut session) = from_json_bytes::<NarrativeSession>(&snapshot) else {
            return Ok(None);
        };
        let mut size = snapshot.len() as u64;
        if let Value::Array(elements) = raw.log {
            for element in elements {
                if let Value::BulkString(bytes) = element {
                    size += bytes.len() as u64;
                    if let Ok(patch) = decode_frame(&bytes) {
                        if apply_patch(&mut session, &patch).is_err() {
                            return Ok(None);
                        }
                    }
                }
            }
        }
        Ok(Some((StoredSummary::of(&session), size)))
    }
}
