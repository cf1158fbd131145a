//! Writes. Every one is a `WATCH`/`MULTI`/`EXEC` transaction on a connection of its own (on a
//! cluster, to the primary serving the session's slot) that commits only if the session is still
//! as the caller last saw it ([`RedisView`]); otherwise `Ok(None)`, and the caller reads what
//! changed, merges it and tries again. A transaction refused because its slot moved (`MOVED`,
//! `ASK`, `TRYAGAIN`, at `WATCH` or at `MULTI` time) did not commit either: `Ok(None)` as well,
//! and the next attempt goes where the slot is now.
//!
//! With `wait_replicas` set, a write that committed is confirmed with `WAIT` on the same
//! connection before it counts as done (see [`RedisBackend::confirm`]).

use ::redis::{FromRedisValue, Pipeline, RedisError, Value};

use super::keys::{check_frame, new_generation, Keys};
use super::net::{
    migrating_pause, redirect_among, redirect_of, Redirect, TxConn, REDIRECT_ATTEMPTS,
};
use super::values::{parse_session, raw_from, read_pipeline, RawSession};
use super::{redis_error, unavailable, Loaded, Quarantined, RedisBackend, RedisView};
use crate::clock::wall_clock_millis;
use crate::error::{ErrorCode, Result, StoreError};
use crate::paths::SessionKey;
use crate::store::canonical;

/// Reads again when a session changes under a load that is moving bad values aside.
const QUARANTINE_ATTEMPTS: usize = 8;

/// The values a transaction compares before it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Current {
    version: u64,
    generation: u64,
    log_len: u64,
    /// The snapshot's length; `u64::MAX` when the key is not a string. A snapshot replaced by hand
    /// (which moves neither counter) shows here, and is read (and moved aside) before any write.
    snapshot_bytes: u64,
}

impl Current {
    fn matches(&self, view: &RedisView) -> bool {
        self.version == view.version
            && self.generation == view.generation
            && self.log_len == view.log_len
            && self.snapshot_bytes == view.snapshot_bytes
    }
}

impl RedisBackend {
    /// Appends journal frames (each one complete [`crate::journal::encode`] frame) to the
    /// session's log, if the session is still as `expect` saw it; sets the TTL of every key.
    /// `Ok(None)`: someone else wrote first (or a key was touched meanwhile, or the slot moved):
    /// read the changes, merge them, try again. Costs the records' size, not the session's.
    pub async fn append(
        &self,
        stem: &str,
        records: &[Vec<u8>],
        expect: RedisView,
    ) -> Result<Option<RedisView>> {
        let keys = self.keys(stem)?;
        for record in records {
            check_frame(record)?;
        }
        if records.is_empty() {
            return Ok(Some(expect));
        }
        let what = "cannot append to";
        let (tx, current) = self.begin(&keys, what).await?;
        if !current.matches(&expect) {
            self.end(tx, true).await;
            return Ok(None);
        }
        let mut push = ::redis::cmd("RPUSH");
        push.arg(&keys.log);
        for record in records {
            push.arg(record.as_slice());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic().add_command(push).cmd("INCR").arg(&keys.ver);
        self.expire_all(&mut pipe, &keys);
        let committed = self
            .commit::<(u64, u64)>(tx, &pipe, true, what, &keys.log)
            .await?;
        Ok(committed.map(|(log_len, version)| {
            let added: u64 = records.iter().map(|r| r.len() as u64).sum();
            RedisView {
                version,
                log_len,
                generation: expect.generation,
                snapshot_bytes: expect.snapshot_bytes,
                log_bytes: expect.log_bytes + added,
            }
        }))
    }

    /// Replaces the snapshot with `bytes` (a whole session as JSON) and drops the log it now
    /// holds, if the session is still as `expect` saw it: every record in the log must be in
    /// `bytes`. A new generation tells other instances to read everything again. `Ok(None)`:
    /// someone else wrote first: read the changes, merge them, try again.
    /// The snapshot carries no mark (one left from before is removed): a load parses it.
    pub async fn write_snapshot(
        &self,
        stem: &str,
        bytes: &[u8],
        expect: RedisView,
    ) -> Result<Option<RedisView>> {
        self.put_snapshot(stem, bytes, expect, false).await
    }

    /// [`Self::write_snapshot`] of what the store serialised from a checked session whose id is
    /// the one its key gives: the snapshot is marked as the store's own (see [`Self::load_text`]).
    pub async fn write_canonical(
        &self,
        stem: &str,
        bytes: &[u8],
        expect: RedisView,
    ) -> Result<Option<RedisView>> {
        self.put_snapshot(stem, bytes, expect, true).await
    }

    async fn put_snapshot(
        &self,
        stem: &str,
        bytes: &[u8],
        expect: RedisView,
        mark: bool,
    ) -> Result<Option<RedisView>> {
        let keys = self.keys(stem)?;
        let what = "cannot write the snapshot of";
        let (tx, current) = self.begin(&keys, what).await?;
        if !current.matches(&expect) {
            self.end(tx, true).await;
            return Ok(None);
        }
        let generation = new_generation();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&keys.snap)
            .arg(bytes)
            .ignore()
            .cmd("DEL")
            .arg(&keys.log)
            .ignore()
            .cmd("INCR")
            .arg(&keys.ver)
            .cmd("SET")
            .arg(&keys.gen)
            .arg(generation)
            .ignore();
        if mark {
            pipe.cmd("SET")
                .arg(&keys.mark)
                .arg(canonical::mark_for(stem, bytes))
                .ignore();
        } else {
            pipe.cmd("DEL").arg(&keys.mark).ignore();
        }
        self.expire_all(&mut pipe, &keys);
        let committed = self
            .commit::<(u64,)>(tx, &pipe, true, what, &keys.snap)
            .await?;
        Ok(committed.map(|(version,)| RedisView {
            version,
            log_len: 0,
            generation,
            snapshot_bytes: bytes.len() as u64,
            log_bytes: 0,
        }))
    }

    /// [`Self::load`] from what was read: moves bad values aside when there are any.
    pub(super) async fn load_from(
        &self,
        keys: &Keys,
        raw: RawSession,
        key: &SessionKey,
    ) -> Result<Loaded> {
        let parsed = parse_session(keys, raw, key);
        if parsed.is_clean() {
            return Ok(parsed.loaded);
        }
        for _ in 0..QUARANTINE_ATTEMPTS {
            if let Some(loaded) = self.quarantine(keys, key).await? {
                return Ok(loaded);
            }
        }
        Err(StoreError::new(
            ErrorCode::Io,
            format!(
                "redis: {} kept changing while its bad values were being moved aside",
                keys.snap
            ),
        ))
    }

    /// Under `WATCH`, reads the session again and moves what is not valid aside, in one
    /// transaction that also bumps the version and the generation (so every other instance reads
    /// the session again). None when the session changed meanwhile: read again.
    async fn quarantine(&self, keys: &Keys, key: &SessionKey) -> Result<Option<Loaded>> {
        let what = "cannot move bad values aside in";
        let mut tx = self.begin_raw(keys, what).await?;
        let values = match read_pipeline(keys, false)
            .query_async::<Vec<Value>>(&mut tx.conn)
            .await
        {
            Ok(values) => values,
            Err(e) => return Err(redis_error(&format!("{what} {}", keys.snap), e)),
        };
        if let Some(moved) = redirect_among(&values) {
            self.net.learn(&moved);
            self.end(tx, true).await;
            return Ok(None);
        }
        let mut parsed = parse_session(keys, raw_from(values)?, key);
        if parsed.is_clean() {
            // Someone else moved them aside (or fixed them) first.
            self.end(tx, true).await;
            return Ok(Some(parsed.loaded));
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut invalid = Vec::new();
        for (from, reason) in &parsed.bad_keys {
            let to = match self.free_aside_name(&mut tx, from).await {
                Ok(to) => to,
                Err(e) => return Err(redis_error(&format!("{what} {from}"), e)),
            };
            pipe.cmd("RENAME").arg(from).arg(&to).ignore();
            pipe.cmd("PERSIST").arg(&to).ignore();
            invalid.push(Quarantined {
                from: from.clone(),
                to,
                reason: reason.clone(),
            });
        }
        if !parsed.bad_elements.is_empty() {
            let to = match self.free_aside_name(&mut tx, &keys.log).await {
                Ok(to) => to,
                Err(e) => return Err(redis_error(&format!("{what} {}", keys.log), e)),
            };
            let mut push = ::redis::cmd("RPUSH");
            push.arg(&to);
            for (element, _) in &parsed.bad_elements {
                push.arg(element.as_slice());
            }
            pipe.add_command(push).ignore();
            pipe.cmd("PERSIST").arg(&to).ignore();
            let mut removed: Vec<&[u8]> = Vec::new();
            for (element, reason) in &parsed.bad_elements {
                if !removed.contains(&element.as_slice()) {
                    removed.push(element);
                    pipe.cmd("LREM")
                        .arg(&keys.log)
                        .arg(0)
                        .arg(element.as_slice())
                        .ignore();
                }
                invalid.push(Quarantined {
                    from: keys.log.clone(),
                    to: to.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let generation = new_generation();
        pipe.cmd("INCR").arg(&keys.ver);
        pipe.cmd("SET").arg(&keys.gen).arg(generation).ignore();
        self.expire_all(&mut pipe, keys);
        let committed = self
            .commit::<(u64,)>(tx, &pipe, false, what, &keys.snap)
            .await?;
        Ok(committed.map(|(version,)| {
            let view = &mut parsed.loaded.view;
            view.version = version;
            view.generation = generation;
            parsed.loaded.invalid = invalid;
            parsed.loaded
        }))
    }

    /// A key name for a bad value of `key` that nothing holds yet: `<key>:corrupt:<ms>`, with
    /// `.<n>` added if that is taken. Watched, so that a concurrent quarantine choosing the same
    /// name makes this transaction fail rather than overwrite it. (The name keeps `key`'s hash
    /// tag: on a cluster it is in the same slot.)
    async fn free_aside_name(&self, tx: &mut TxConn, key: &str) -> Result<String, RedisError> {
        let base = format!("{key}:corrupt:{}", wall_clock_millis());
        let mut n = 0;
        loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let (exists,): (bool,) = ::redis::pipe()
                .cmd("WATCH")
                .arg(&name)
                .ignore()
                .cmd("EXISTS")
                .arg(&name)
                .query_async(&mut tx.conn)
                .await?;
            if !exists {
                return Ok(name);
            }
            n += 1;
        }
    }

    /// Starts a transaction: `WATCH` the session's snapshot, log, version and generation on a
    /// connection of its own. Follows `MOVED`, waits out a slot being moved, and replaces an idle
    /// connection that turns out dead (Redis restarted since) once.
    pub(super) async fn begin_raw(&self, keys: &Keys, what: &str) -> Result<TxConn> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = match self.net.take(keys.slot, self.tx_timeout).await {
                Ok(tx) => tx,
                Err(e) => {
                    self.net.learn(&e);
                    return Err(redis_error(&format!("{what} {}", keys.snap), e));
                }
            };
            let watched = ::redis::cmd("WATCH")
                .arg(&keys.snap)
                .arg(&keys.log)
                .arg(&keys.ver)
                .arg(&keys.gen)
                .query_async::<()>(&mut tx.conn)
                .await;
            let error = match watched {
                Ok(()) => return Ok(tx),
                Err(e) => e,
            };
            self.net.learn(&error);
            let reused = tx.reused;
            if redirect_of(&error).is_some() {
                // The connection is sound; nothing is watched.
                self.net.give_back(tx);
            }
            if !retry_after(&error, attempt, reused).await {
                return Err(redis_error(&format!("{what} {}", keys.snap), error));
            }
        }
    }

    /// [`Self::begin_raw`], then reads what the transaction compares. A read refused because the
    /// slot moved meanwhile starts again where it is now.
    pub(super) async fn begin(&self, keys: &Keys, what: &str) -> Result<(TxConn, Current)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.begin_raw(keys, what).await?;
            let read = ::redis::pipe()
                .cmd("GET")
                .arg(&keys.ver)
                .cmd("GET")
                .arg(&keys.gen)
                .cmd("LLEN")
                .arg(&keys.log)
                .cmd("STRLEN")
                .arg(&keys.snap)
                .ignore_errors()
                .query_async::<Vec<Value>>(&mut tx.conn)
                .await
                .map_err(|e| redis_error(&format!("{what} {}", keys.snap), e))?;
            if let Some(moved) = redirect_among(&read) {
                self.net.learn(&moved);
                self.end(tx, true).await;
                if retry_after(&moved, attempt, false).await {
                    continue;
                }
                return Err(redis_error(&format!("{what} {}", keys.snap), moved));
            }
            let current =
                <(Option<u64>, Option<u64>, u64, Value)>::from_redis_value(Value::Array(read))
                    .map(|(version, generation, log_len, snapshot_bytes)| Current {
                        version: version.unwrap_or(0),
                        generation: generation.unwrap_or(0),
                        log_len,
                        snapshot_bytes: super::values::int_value(&snapshot_bytes)
                            .unwrap_or(u64::MAX),
                    })
                    .map_err(|e| redis_error(&format!("{what} {}", keys.snap), e.into()))?;
            return Ok((tx, current));
        }
    }

    /// Runs a transaction's `MULTI`/`EXEC`. `Ok(None)`: it did not commit (a watched key changed,
    /// or the slot moved). With `confirm`, a commit is then confirmed by replicas
    /// ([`Self::confirm`]). An error drops the connection, so a `WATCH` never outlives its
    /// transaction.
    async fn commit<T: FromRedisValue>(
        &self,
        mut tx: TxConn,
        pipe: &Pipeline,
        confirm: bool,
        what: &str,
        key: &str,
    ) -> Result<Option<T>> {
        match pipe.query_async::<Option<T>>(&mut tx.conn).await {
            Ok(Some(result)) => {
                if confirm {
                    self.confirm(&mut tx, what, key).await?;
                }
                self.net.give_back(tx);
                Ok(Some(result))
            }
            Ok(None) => {
                self.net.give_back(tx);
                Ok(None)
            }
            Err(e) if redirect_of(&e).is_some() => {
                // Refused at MULTI time: EXEC discarded it all (and ended the WATCH).
                self.net.learn(&e);
                self.net.give_back(tx);
                Ok(None)
            }
            Err(e) => {
                self.net.learn(&e);
                Err(redis_error(&format!("{what} {key}"), e))
            }
        }
    }

    /// With `wait_replicas` set: `WAIT` until that many replicas have every write of this
    /// connection, for at most `wait_timeout`. Fewer: an `EUNAVAILABLE` error; the write is on
    /// the primary (a replica may still get it), and the caller keeps it unsaved, so the next save
    /// writes it again (records are joins: a second copy changes nothing).
    async fn confirm(&self, tx: &mut TxConn, what: &str, key: &str) -> Result<()> {
        let Some(wait) = self.wait else {
            return Ok(());
        };
        let acked: i64 = ::redis::cmd("WAIT")
            .arg(wait.replicas)
            .arg(wait.timeout.as_millis() as u64)
            .query_async(&mut tx.conn)
            .await
            .map_err(|e| redis_error(&format!("{what} {key}"), e))?;
        if acked >= i64::from(wait.replicas) {
            return Ok(());
        }
        Err(StoreError::new(
            ErrorCode::Unavailable,
            format!(
                "{what} {key}: written on the primary, but {acked} of the {} replicas asked for \
                 (redisWaitReplicas) confirmed it within {} ms; it stays unsaved here and is \
                 written again",
                wait.replicas,
                wait.timeout.as_millis()
            ),
        ))
    }

    /// Ends a transaction and keeps its connection for the next one. `unwatch` when it ended
    /// without `EXEC` (which unwatches by itself).
    pub(super) async fn end(&self, mut tx: TxConn, unwatch: bool) {
        if unwatch
            && ::redis::cmd("UNWATCH")
                .query_async::<()>(&mut tx.conn)
                .await
                .is_err()
        {
            return;
        }
        self.net.give_back(tx);
    }
}

/// Whether to try again after `error` at attempt `attempt` (from 1), pausing first when the slot
/// is being moved: a redirect, a few times; a pooled connection found dead, once.
async fn retry_after(error: &RedisError, attempt: u32, reused: bool) -> bool {
    match redirect_of(error) {
        Some(Redirect::Moved { .. }) => attempt < REDIRECT_ATTEMPTS,
        Some(Redirect::Migrating) if attempt < REDIRECT_ATTEMPTS => {
            tokio::time::sleep(migrating_pause(attempt)).await;
            true
        }
        Some(Redirect::Migrating) => false,
        None => reused && attempt == 1 && unavailable(error),
    }
}
