//! The Redis side of the operator tools (`mia-sessions`): a session read without creating or
//! moving anything, a read-only check of every session's keys and of the values kept aside, and
//! the removal of sessions that would never expire.
//!
//! Every key of the prefix is found with `SCAN` (never `KEYS`); each session's keys are read in one
//! transaction, as a load reads them.

use ::redis::Value;

use super::keys::glob_escape;
use super::values::{counter, decode_frame, describe};
use super::RedisBackend;
use crate::clock::parse_rfc3339_millis;
use crate::error::Result;
use crate::merge::SessionPatch;
use crate::paths::{is_file_stem, SessionKey};
use crate::store::inspect::{
    examine_bytes, millis_in, restore, AsideCopy, Copy, Extra, Peeked, SessionCheck, StoreCheck,
};
use crate::store::StoredRow;

/// A session's keys as read: the snapshot as a copy, the log's intact records, and what is wrong.
struct KeysRead {
    snapshot: Copy,
    patches: Vec<SessionPatch>,
    problems: Vec<String>,
    /// Whether any of the session's own keys exists.
    exists: bool,
}

impl RedisBackend {
    /// The stored session of `key`, read-only: a value that is not valid is skipped (and said in
    /// the notes), never moved. None when nothing is stored.
    pub async fn peek(&self, key: &SessionKey) -> Result<Option<Peeked>> {
        let stem = key.file_stem();
        let read = self.read_keys(&stem).await?;
        let restored = restore(&read.snapshot, &Copy::Missing, &read.patches, Vec::new());
        let Some(session) = restored.session else {
            return Ok(None);
        };
        if session.user_id != key.user_id || session.workspace_id != key.workspace_id {
            return Ok(None);
        }
        Ok(Some(Peeked {
            session,
            notes: read.problems,
        }))
    }

    /// Checks every session under this prefix and the values kept aside, read-only.
    pub async fn check(
        &self,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<StoreCheck> {
        let (stems, quarantined) = self.scan_all().await?;
        let mut report = StoreCheck {
            quarantined,
            ..StoreCheck::default()
        };
        let total = stems.len();
        for (done, stem) in stems.iter().enumerate() {
            let read = self.read_keys(stem).await?;
            if read.exists {
                report.sessions += 1;
                let extras = self.aside_extras(stem).await?;
                let check = check_keys(self, stem, read, extras);
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

    /// The values kept aside (`...:corrupt:<ms>` keys), found with `SCAN`.
    pub async fn aside_keys(&self) -> Result<Vec<AsideCopy>> {
        Ok(self.scan_all().await?.1)
    }

    /// The values kept aside of one session, read as extras for a restore: snapshots as copies,
    /// logs as their intact records. Other kinds (counters, marks) are of no use to it.
    pub(in crate::store) async fn aside_extras(&self, stem: &str) -> Result<Vec<(String, Extra)>> {
        let pattern = format!("{}{{{stem}}}:*:corrupt:*", glob_escape(&self.prefix));
        let mut extras = Vec::new();
        for name in self.scan(&pattern).await? {
            let value: Value = if name.contains("}:snap:corrupt:") {
                self.query(::redis::cmd("GET").arg(&name)).await?
            } else if name.contains("}:log:corrupt:") {
                self.query(::redis::cmd("LRANGE").arg(&name).arg(0).arg(-1))
                    .await?
            } else {
                continue;
            };
            let extra = match value {
                Value::BulkString(bytes) => Extra::Copy(examine_bytes(&bytes, stem, false)),
                Value::Array(elements) => Extra::Records(
                    elements
                        .into_iter()
                        .filter_map(|e| match e {
                            Value::BulkString(bytes) => decode_frame(&bytes).ok(),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => continue,
            };
            extras.push((name, extra));
        }
        Ok(extras)
    }

    /// Sessions whose keys have no expiry (Redis would keep them forever) and whose `updatedAt`
    /// is before `cutoff_millis`.
    pub async fn expired(&self, cutoff_millis: i64) -> Result<Vec<StoredRow>> {
        let mut rows = Vec::new();
        for stem in self.stems().await? {
            let ttl: i64 = self
                .query(::redis::cmd("PTTL").arg(self.key_name(&stem, "snap")))
                .await?;
            if ttl != -1 {
                continue;
            }
            if let Some((summary, bytes)) = self.summary(&stem).await? {
                if parse_rfc3339_millis(&summary.updated_at).is_some_and(|t| t < cutoff_millis) {
                    rows.push((stem, summary, bytes));
                }
            }
        }
        Ok(rows)
    }

    /// Removes a session that has no expiry and is past `cutoff_millis`, in a transaction that
    /// fails if anyone writes it meanwhile (then it is read again). Returns whether it was removed.
    pub async fn remove_if_expired(&self, key: &SessionKey, cutoff_millis: i64) -> Result<bool> {
        let stem = key.file_stem();
        let keys = self.keys(&stem)?;
        for _ in 0..8 {
            let what = "cannot remove";
            let mut tx = self.begin_raw(&keys, what).await?;
            let read = ::redis::pipe()
                .cmd("GET")
                .arg(&keys.snap)
                .cmd("PTTL")
                .arg(&keys.snap)
                .ignore_errors()
                .query_async::<(Value, Value)>(&mut tx.conn)
                .await;
            let (snap, ttl) = match read {
                Ok(values) => values,
                Err(e) => return Err(super::redis_error(&format!("{what} {}", keys.snap), e)),
            };
            let expired = match (&snap, ttl) {
                (Value::BulkString(bytes), Value::Int(-1)) => {
                    match examine_bytes(bytes, &stem, false) {
                        Copy::Good(session) => parse_rfc3339_millis(&session.updated_at)
                            .is_some_and(|t| t < cutoff_millis),
                        _ => false,
                    }
                }
                _ => false,
            };
            if !expired {
                self.end(tx, true).await;
                return Ok(false);
            }
            let mut pipe = ::redis::pipe();
            pipe.atomic().cmd("DEL");
            for name in keys.all() {
                pipe.arg(name);
            }
            match pipe.query_async::<Option<(u64,)>>(&mut tx.conn).await {
                Ok(Some(_)) => {
                    self.end(tx, false).await;
                    return Ok(true);
                }
                Ok(None) => self.end(tx, false).await,
                Err(e) => return Err(super::redis_error(&format!("{what} {}", keys.snap), e)),
            }
        }
        Ok(false)
    }

    /// Every session stem under this prefix (with any key of its own) and every value kept aside.
    async fn scan_all(&self) -> Result<(Vec<String>, Vec<AsideCopy>)> {
        let pattern = format!("{}{{*}}:*", glob_escape(&self.prefix));
        let mut stems = std::collections::BTreeSet::new();
        let mut aside = Vec::new();
        for name in self.scan(&pattern).await? {
            let Some((stem, rest)) = self.split_key(&name) else {
                continue;
            };
            match rest.split_once(":corrupt:") {
                Some((kind, moved)) => {
                    let bytes = self.size_of(&name).await?;
                    aside.push(AsideCopy {
                        name: name.clone(),
                        stem: stem.clone(),
                        kind: kind.to_string(),
                        bytes,
                        moved_at: millis_in(moved),
                    });
                }
                None if rest != "events" => {
                    stems.insert(stem);
                }
                None => {}
            }
        }
        Ok((stems.into_iter().collect(), aside))
    }

    /// (stem, what follows `}:`) of one of this prefix's keys.
    fn split_key(&self, name: &str) -> Option<(String, String)> {
        let rest = name.strip_prefix(self.prefix.as_str())?.strip_prefix('{')?;
        let (stem, rest) = rest.split_once("}:")?;
        is_file_stem(stem).then(|| (stem.to_string(), rest.to_string()))
    }

    /// The bytes a key holds (`MEMORY USAGE` is not everywhere: a string's length, or the sum of a
    /// list's elements).
    async fn size_of(&self, name: &str) -> Result<u64> {
        let kind: String = self.query(::redis::cmd("TYPE").arg(name)).await?;
        Ok(match kind.as_str() {
            "string" => self.query(::redis::cmd("STRLEN").arg(name)).await?,
            "list" => {
                let elements: Vec<Vec<u8>> = self
                    .query(::redis::cmd("LRANGE").arg(name).arg(0).arg(-1))
                    .await?;
                elements.iter().map(|e| e.len() as u64).sum()
            }
            _ => 0,
        })
    }

    /// Every key matching `pattern`, with `SCAN` (on every primary of a cluster).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let mut names = self
            .with_retry("cannot list keys in", || self.net.scan(pattern))
            .await?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// One command on the shared connection (which a cluster routes by the command's key).
    async fn query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T> {
        self.with_retry("cannot read from", || {
            let mut conn = self.net.shared();
            let cmd = cmd.clone();
            async move { cmd.query_async(&mut conn).await }
        })
        .await
    }

    /// A session's keys, read in one transaction and examined without moving anything.
    async fn read_keys(&self, stem: &str) -> Result<KeysRead> {
        let keys = self.keys(stem)?;
        let raw = self.read_raw(&keys).await?;
        let mut read = KeysRead {
            snapshot: Copy::Missing,
            patches: Vec::new(),
            problems: Vec::new(),
            exists: false,
        };
        match &raw.snap {
            Value::Nil => {}
            Value::BulkString(bytes) => {
                read.exists = true;
                read.snapshot = examine_bytes(bytes, stem, false);
                if let Copy::Bad(reason) = &read.snapshot {
                    read.problems.push(format!("{} {reason}", keys.snap));
                }
            }
            other => {
                read.exists = true;
                read.problems
                    .push(format!("{} is {}", keys.snap, describe(other)));
            }
        }
        match &raw.log {
            Value::Nil => {}
            Value::Array(elements) => {
                read.exists |= !elements.is_empty();
                let mut bad = 0;
                for element in elements {
                    match element {
                        Value::BulkString(bytes) => match decode_frame(bytes) {
                            Ok(patch) => read.patches.push(patch),
                            Err(_) => bad += 1,
                        },
                        _ => bad += 1,
                    }
                }
                if bad > 0 {
                    read.problems.push(format!(
                        "{}: {bad} element(s) are not intact records; {} are",
                        keys.log,
                        read.patches.len()
                    ));
                }
            }
            other => {
                read.exists = true;
                read.problems
                    .push(format!("{} is {}", keys.log, describe(other)));
            }
        }
        for (name, value) in [(&keys.ver, &raw.ver), (&keys.gen, &raw.gen)] {
            if !matches!(value, Value::Nil) {
                read.exists = true;
            }
            if counter(value).is_none() {
                read.problems
                    .push(format!("{name} is not a counter: {}", describe(value)));
            }
        }
        if matches!(read.snapshot, Copy::Missing) && !read.patches.is_empty() {
            read.problems.push(format!("no snapshot {}", keys.snap));
        }
        Ok(read)
    }
}

/// One session's check from its keys and the values kept aside.
fn check_keys(
    redis: &RedisBackend,
    stem: &str,
    read: KeysRead,
    extras: Vec<(String, Extra)>,
) -> SessionCheck {
    let mut check = SessionCheck {
        stem: stem.to_string(),
        problems: read.problems,
        ..SessionCheck::default()
    };
    if !check.problems.is_empty() {
        check.repair.push(format!(
            "move the values that are not valid aside (as {}...:corrupt:<ms>)",
            redis.key_name(stem, "")
        ));
    }
    let restored = restore(&read.snapshot, &Copy::Missing, &read.patches, extras);
    check.conclude(&restored);
    check
}
