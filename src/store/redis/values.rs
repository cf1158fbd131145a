//! Reading a session's keys: the one pipeline that reads them all, and what its replies hold
//! (a snapshot, log frames, counters, the mark), with what is not valid set apart to be moved aside.

use ::redis::{Pipeline, Value};

use super::keys::Keys;
use super::{Loaded, RedisView};
use crate::error::{ErrorCode, Result, StoreError};
use crate::journal;
use crate::merge::SessionPatch;
use crate::model::{from_json_bytes, validate_session, NarrativeSession};
use crate::paths::SessionKey;
use crate::store::canonical;

/// What a session's keys hold, as read in one go.
pub(super) struct RawSession {
    pub(super) snap: Value,
    pub(super) log: Value,
    pub(super) ver: Value,
    pub(super) gen: Value,
    pub(super) mark: Value,
}

/// A session's keys, parsed: what is valid, and what must be moved aside.
pub(super) struct Parsed {
    pub(super) loaded: Loaded,
    /// Whole keys to move aside: (key, reason).
    pub(super) bad_keys: Vec<(String, String)>,
    /// Log elements to copy aside and remove from the log: (element, reason).
    pub(super) bad_elements: Vec<(Vec<u8>, String)>,
}

impl Parsed {
    pub(super) fn is_clean(&self) -> bool {
        self.bad_keys.is_empty() && self.bad_elements.is_empty()
    }
}

/// A non-negative integer reply, or None for anything else (an error reply included).
pub(super) fn int_value(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// One pipeline reading a whole session; `atomic` wraps it in `MULTI`/`EXEC` (not when the
/// connection has a `WATCH` running: its `EXEC` checks consistency instead). Errors (a key of
/// the wrong type) come back as values.
pub(super) fn read_pipeline(keys: &Keys, atomic: bool) -> Pipeline {
    let mut pipe = ::redis::pipe();
    if atomic {
        pipe.atomic();
    }
    pipe.ignore_errors()
        .cmd("GET")
        .arg(&keys.snap)
        .cmd("LRANGE")
        .arg(&keys.log)
        .arg(0)
        .arg(-1)
        .cmd("GET")
        .arg(&keys.ver)
        .cmd("GET")
        .arg(&keys.gen)
        .cmd("GET")
        .arg(&keys.mark);
    pipe
}

pub(super) fn raw_from(values: Vec<Value>) -> Result<RawSession> {
    let [snap, log, ver, gen, mark]: [Value; 5] = values.try_into().map_err(|v: Vec<Value>| {
        StoreError::new(
            ErrorCode::Io,
            format!("redis: a session read returned {} replies, not 5", v.len()),
        )
    })?;
    Ok(RawSession {
        snap,
        log,
        ver,
        gen,
        mark,
    })
}

/// A counter's value: 0 when missing, None when it is not a counter.
pub(super) fn counter(value: &Value) -> Option<u64> {
    match value {
        Value::Nil => Some(0),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::ServerError(e) => format!("not readable: {e}"),
        other => format!("an unexpected reply: {other:?}"),
    }
}

pub(super) fn parse_session(keys: &Keys, raw: RawSession, key: &SessionKey) -> Parsed {
    let mut parsed = Parsed {
        loaded: Loaded::default(),
        bad_keys: Vec::new(),
        bad_elements: Vec::new(),
    };
    match raw.snap {
        Value::Nil => {}
        Value::BulkString(bytes) => match parse_snapshot(&bytes, key) {
            Ok(session) => {
                parsed.loaded.snapshot = Some(session);
                parsed.loaded.view.snapshot_bytes = bytes.len() as u64;
                parsed.loaded.raw = Some(bytes);
            }
            Err(reason) => parsed.bad_keys.push((keys.snap.clone(), reason)),
        },
        other => parsed.bad_keys.push((keys.snap.clone(), describe(&other))),
    }
    match raw.log {
        Value::Array(elements) => {
            for element in elements {
                match element {
                    Value::BulkString(bytes) => match decode_frame(&bytes) {
                        Ok(patch) => {
                            parsed.loaded.patches.push(patch);
                            parsed.loaded.view.log_len += 1;
                            parsed.loaded.view.log_bytes += bytes.len() as u64;
                        }
                        Err(reason) => parsed.bad_elements.push((bytes, reason)),
                    },
                    other => {
                        // Not possible in a list; keep the log whole and let the operator look.
                        parsed.bad_keys.push((
                            keys.log.clone(),
                            format!("an element is {}", describe(&other)),
                        ));
                        break;
                    }
                }
            }
        }
        Value::Nil => {}
        other => parsed.bad_keys.push((keys.log.clone(), describe(&other))),
    }
    if parsed.bad_keys.iter().any(|(k, _)| k == &keys.log) {
        // The whole log goes aside: nothing in it counts.
        parsed.loaded.patches.clear();
        parsed.bad_elements.clear();
        parsed.loaded.view.log_len = 0;
        parsed.loaded.view.log_bytes = 0;
    }
    for (name, value, slot) in [
        (&keys.ver, &raw.ver, &mut parsed.loaded.view.version),
        (&keys.gen, &raw.gen, &mut parsed.loaded.view.generation),
    ] {
        match counter(value) {
            Some(n) => *slot = n,
            None => parsed
                .bad_keys
                .push((name.clone(), format!("not a counter: {}", describe(value)))),
        }
    }
    parsed
}

/// A snapshot is accepted only if it parses, passes the model's checks and holds `key`'s ids.
fn parse_snapshot(bytes: &[u8], key: &SessionKey) -> std::result::Result<NarrativeSession, String> {
    let session: NarrativeSession =
        from_json_bytes(bytes).map_err(|e| format!("not a session: {e}"))?;
    validate_session(&session).map_err(|e| format!("not a valid session: {}", e.message))?;
    if session.user_id != key.user_id || session.workspace_id != key.workspace_id {
        return Err("the session of another user or workspace".to_string());
    }
    Ok(session)
}

/// The session as its snapshot's text, taken out of `raw`, when the store wrote that snapshot
/// (the mark matches it), nothing is in the log and the counters are counters.
pub(super) fn own_text(stem: &str, raw: &mut RawSession) -> Option<Loaded> {
    let log_empty = match &raw.log {
        Value::Nil => true,
        Value::Array(elements) => elements.is_empty(),
        _ => false,
    };
    let (Value::BulkString(snapshot), Value::BulkString(mark), true) =
        (&raw.snap, &raw.mark, log_empty)
    else {
        return None;
    };
    if mark.as_slice() != canonical::mark_for(stem, snapshot).as_bytes() {
        return None;
    }
    let (version, generation) = (counter(&raw.ver)?, counter(&raw.gen)?);
    let Value::BulkString(bytes) = std::mem::replace(&mut raw.snap, Value::Nil) else {
        return None;
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(not_text) => {
            raw.snap = Value::BulkString(not_text.into_bytes());
            return None;
        }
    };
    Some(Loaded {
        view: RedisView {
            version,
            generation,
            snapshot_bytes: text.len() as u64,
            ..RedisView::default()
        },
        text: Some(text),
        ..Loaded::default()
    })
}

/// One log element: exactly one complete journal frame.
pub(super) fn decode_frame(bytes: &[u8]) -> std::result::Result<SessionPatch, String> {
    let mut decoded = journal::decode(bytes);
    if decoded.patches.len() == 1 && decoded.records[0] == (0..bytes.len()) {
        Ok(decoded.patches.remove(0))
    } else {
        Err("not one complete journal record".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_or_are_refused() {
        assert_eq!(counter(&Value::Nil), Some(0));
        assert_eq!(counter(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(counter(&Value::BulkString(b"x".to_vec())), None);
    }
}
