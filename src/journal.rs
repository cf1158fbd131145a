//! The journal: merged updates appended beside a session's snapshot, so that a save writes the
//! change, not the session.
//!
//! Each record is one settled update (a join: see [`crate::merge::settle_update`]), framed as
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of the payload | payload (JSON)
//! ```
//!
//! A record is either complete or ignored: reading stops at the first frame that is cut short, fails
//! its checksum or does not parse, and every complete record before it is kept. Because records are
//! joins, replaying them in any order, or twice, or onto an older snapshot, gives the same session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Hlc;
use crate::error::{Result, StoreError};
use crate::merge::{PatchMode, SessionPatch};
use crate::model::{ConversationEntry, StoryBeat, StoryPosition, UniverseFocus};

const HEADER_BYTES: usize = 8;
/// A frame claiming more than this is damage, not a record.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    clock: Hlc,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    universe_focus: Option<UniverseFocus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    story_position: Option<StoryPosition>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    memory: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    config: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    active_charts: Vec<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    story_beats: Vec<StoryBeat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    conversation_history: Vec<ConversationEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<String, Hlc>,
}

/// One framed record for a settled (join) patch.
pub fn encode(patch: &SessionPatch) -> Result<Vec<u8>> {
    if patch.mode != PatchMode::Join {
        return Err(StoreError::internal("only settled patches are journaled"));
    }
    let record = Record {
        clock: patch.clock.clone(),
        updated_at: patch.updated_at.clone(),
        universe_focus: patch.universe_focus,
        story_position: patch.story_position.clone(),
        memory: patch.memory.clone(),
        config: patch.config.clone(),
        active_charts: patch.charts.clone(),
        story_beats: patch.beats.clone(),
        conversation_history: patch.entries.clone(),
        versions: patch.versions.clone(),
    };
    let payload = serde_json::to_vec(&record).map_err(|e| StoreError::internal(e.to_string()))?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The complete records at the start of `bytes`, and how many bytes they span. Anything after them
/// (a torn or damaged tail) is not a record.
pub fn decode(bytes: &[u8]) -> (Vec<SessionPatch>, usize) {
    let mut patches = Vec::new();
    let mut offset = 0;
    while let Some((patch, size)) = decode_one(&bytes[offset..]) {
        patches.push(patch);
        offset += size;
    }
    (patches, offset)
}

/// Framed records, concatenated, split into one frame each (as the Redis backend stores them).
pub fn split_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + HEADER_BYTES) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(frame) = bytes.get(offset..offset + HEADER_BYTES + len) else {
            break;
        };
        frames.push(frame.to_vec());
        offset += HEADER_BYTES + len;
    }
    frames
}

fn decode_one(bytes: &[u8]) -> Option<(SessionPatch, usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let record: Record = crate::model::from_json_bytes(payload).ok()?;
    let mut patch = SessionPatch::empty(record.clock, PatchMode::Join);
    patch.updated_at = record.updated_at;
    patch.universe_focus = record.universe_focus;
    patch.story_position = record.story_position;
    patch.memory = record.memory;
    patch.config = record.config;
    patch.charts = record.active_charts;
    patch.beats = record.story_beats;
    patch.entries = record.conversation_history;
    patch.versions = record.versions;
    Some((patch, HEADER_BYTES + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::HybridClock;
    use crate::merge::{apply_patch, settle_update};
    use crate::model::NarrativeSession;
    use crate::update::parse_update;

    fn record(
        n: usize,
        clock: &mut HybridClock,
        base: &NarrativeSession,
    ) -> (SessionPatch, Vec<u8>) {
        let text = format!(
            r#"{{"memory":{{"k{n}":{n}}},"conversationHistory":[{{"id":"e{n}","role":"user","content":"entry {n}"}}]}}"#
        );
        let patch = parse_update(&text).unwrap().into_patch(clock).unwrap();
        let settled = settle_update(base, patch).unwrap();
        let frame = encode(&settled).unwrap();
        (settled, frame)
    }

    fn base() -> NarrativeSession {
        NarrativeSession::new(
            "s".into(),
            "u".into(),
            "/w".into(),
            "2026-01-01T00:00:00.000Z".into(),
        )
    }

    /// Every complete record survives a journal torn at any byte; nothing after the tear is read.
    #[test]
    fn a_journal_cut_at_any_offset_of_its_last_two_records_keeps_every_complete_record() {
        let mut clock = HybridClock::with_wall_clock("n", || 1_800_000_000_000);
        let frames: Vec<Vec<u8>> = (0..4).map(|n| record(n, &mut clock, &base()).1).collect();
        let journal: Vec<u8> = frames.concat();
        let ends: Vec<usize> = frames
            .iter()
            .scan(0, |end, f| {
                *end += f.len();
                Some(*end)
            })
            .collect();
        let start_of_last_two = ends[1];
        for cut in start_of_last_two..=journal.len() {
            let (patches, used) = decode(&journal[..cut]);
            let complete = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(patches.len(), complete, "cut at {cut}");
            assert_eq!(
                used,
                if complete == 0 { 0 } else { ends[complete - 1] },
                "cut at {cut}"
            );
            let mut session = base();
            for patch in &patches {
                apply_patch(&mut session, patch).unwrap();
            }
            assert_eq!(session.conversation_history.len(), complete, "cut at {cut}");
        }
    }

    #[test]
    fn a_damaged_record_ends_the_journal_there() {
        let mut clock = HybridClock::with_wall_clock("n", || 1_800_000_000_000);
        let mut journal: Vec<u8> = (0..3)
            .flat_map(|n| record(n, &mut clock, &base()).1)
            .collect();
        let first_len = record(9, &mut clock, &base()).1.len();
        journal[first_len + 12] ^= 0xff; // a flipped byte inside the second record's payload
        let (patches, used) = decode(&journal);
        assert_eq!(patches.len(), 1);
        assert!(used < journal.len());
    }

    #[test]
    fn replaying_records_in_any_order_gives_the_same_session() {
        let mut clock = HybridClock::with_wall_clock("n", || 1_800_000_000_000);
        let patches: Vec<SessionPatch> = (0..5).map(|n| record(n, &mut clock, &base()).0).collect();
        let mut forward = base();
        let mut backward = base();
        for p in &patches {
            apply_patch(&mut forward, p).unwrap();
        }
        for p in patches.iter().rev() {
            apply_patch(&mut backward, p).unwrap();
        }
        assert_eq!(forward, backward);
    }
}
