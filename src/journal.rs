//! The journal: merged updates appended beside a session's snapshot, so that a save writes the
//! change, not the session.
//!
//! Each record is one settled update (a join: see [`crate::merge::settle_update`]), framed as
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of the payload | payload (JSON)
//! ```
//!
//! A record is either complete or ignored. A frame that fails its checksum or does not parse is
//! damage: reading skips to the next place a complete record starts, so the records after it are
//! kept. A last frame cut short (a crash during an append) is a torn tail, cut off by the next
//! writer. Because records are joins, replaying them in any order, or twice, or onto an older
//! snapshot, gives the same session.

use std::collections::BTreeMap;
use std::ops::Range;

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

/// What reading a journal's bytes found.
#[derive(Debug, Default)]
pub struct Decoded {
    pub patches: Vec<SessionPatch>,
    /// Where each record lies, in order: what a repaired journal is made of.
    pub records: Vec<Range<usize>>,
    /// Bytes that are not records: damage. Records after them are still read.
    pub damaged: Vec<Range<usize>>,
    /// Where the last record ends, or the damage after it: the next append goes here. Past it
    /// there is only a torn record (one a crash cut short: its length runs past the end).
    pub end: usize,
}

impl Decoded {
    /// Whether anything but complete records and a torn tail was found.
    pub fn is_damaged(&self) -> bool {
        !self.damaged.is_empty()
    }
}

/// Reads the records in `bytes`. A frame that fails its checksum or does not parse is damage: it is
/// skipped, and reading goes on at the next place where a complete record starts, so one flipped
/// byte costs one record, not every record after it. A frame at the end whose length runs past the
/// end of `bytes` is a torn write (a crash during an append, never acknowledged), and is left out.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut offset = 0;
    while offset < bytes.len() {
        match frame_at(bytes, offset) {
            Frame::Record(patch, size) => {
                decoded.patches.push(*patch);
                decoded.records.push(offset..offset + size);
                offset += size;
            }
            // A length that runs past the end is a torn write only if no record follows (a
            // flipped bit in a length field in the middle looks the same), and if the bytes to
            // the end are not the whole payload its checksum names (a flipped length in the last
            // record).
            Frame::Torn => match next_record(bytes, offset, None) {
                Some(next) => {
                    decoded.damaged.push(offset..next);
                    offset = next;
                }
                None if is_whole_payload(&bytes[offset..]) => {
                    decoded.damaged.push(offset..bytes.len());
                    offset = bytes.len();
                }
                None => break,
            },
            Frame::Bad(declared_end) => {
                let next = next_record(bytes, offset, declared_end).unwrap_or(bytes.len());
                decoded.damaged.push(offset..next);
                offset = next;
            }
        }
    }
    decoded.end = offset;
    decoded
}

/// What starts at some offset of a journal.
enum Frame {
    /// A complete record (boxed: a patch is large), and its size with its header.
    Record(Box<SessionPatch>, usize),
    /// A frame cut short: its header, or the payload its header announces, runs past the end.
    Torn,
    /// A frame of plausible length that fails its checksum or does not parse; where it would end.
    Bad(Option<usize>),
}

fn frame_at(bytes: &[u8], offset: usize) -> Frame {
    let rest = &bytes[offset..];
    let Some(header) = rest.get(..HEADER_BYTES) else {
        return Frame::Torn;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_RECORD_BYTES {
        return Frame::Bad(None);
    }
    let Some(payload) = rest.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Frame::Torn;
    };
    match decode_payload(header, payload) {
        Some(patch) => Frame::Record(Box::new(patch), HEADER_BYTES + len),
        None => Frame::Bad(Some(offset + HEADER_BYTES + len)),
    }
}

/// Whether everything after the frame header at the start of `frame` is the payload its checksum
/// names: a frame whose length alone is damaged.
fn is_whole_payload(frame: &[u8]) -> bool {
    frame.len() > HEADER_BYTES
        && crc32fast::hash(&frame[HEADER_BYTES..])
            == u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]])
}

/// The first offset after a bad frame at `bad` where a complete record starts: where the bad
/// frame says it ends (a damaged payload), or else the first such offset (a damaged header).
fn next_record(bytes: &[u8], bad: usize, declared_end: Option<usize>) -> Option<usize> {
    let is_record = |at: usize| matches!(frame_at(bytes, at), Frame::Record(..));
    declared_end
        .filter(|&end| end < bytes.len() && is_record(end))
        .or_else(|| (bad + 1..bytes.len()).find(|&at| is_record(at)))
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

fn decode_payload(header: &[u8], payload: &[u8]) -> Option<SessionPatch> {
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
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
    Some(patch)
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
            let decoded = decode(&journal[..cut]);
            let complete = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(decoded.patches.len(), complete, "cut at {cut}");
            assert!(
                !decoded.is_damaged(),
                "a torn tail is not damage: cut at {cut}"
            );
            assert_eq!(
                decoded.end,
                if complete == 0 { 0 } else { ends[complete - 1] },
                "cut at {cut}"
            );
            let mut session = base();
            for patch in &decoded.patches {
                apply_patch(&mut session, patch).unwrap();
            }
            assert_eq!(session.conversation_history.len(), complete, "cut at {cut}");
        }
    }

    /// Frames of four records, for the damage tests.
    fn four_frames() -> Vec<Vec<u8>> {
        let mut clock = HybridClock::with_wall_clock("n", || 1_800_000_000_000);
        (0..4).map(|n| record(n, &mut clock, &base()).1).collect()
    }

    /// A flipped byte that leaves the record's JSON valid (a digit changed): only the checksum can
    /// tell. The damaged record is skipped, and the records after it are read.
    #[test]
    fn a_record_whose_checksum_fails_is_skipped_and_the_records_after_it_are_kept() {
        let frames = four_frames();
        let mut journal = frames.concat();
        let second = frames[0].len();
        let payload = &journal[second + 8..second + frames[1].len()];
        let digit = payload.iter().position(|b| *b == b'1').unwrap();
        journal[second + 8 + digit] = b'7';
        let payload = &journal[second + 8..second + frames[1].len()];
        assert!(
            serde_json::from_slice::<serde_json::Value>(payload).is_ok(),
            "the damage must leave valid JSON, or the parse alone would catch it"
        );
        let decoded = decode(&journal);
        assert_eq!(decoded.patches.len(), 3, "every record but the damaged one");
        assert_eq!(
            decoded.damaged,
            vec![second..second + frames[1].len()],
            "the damaged record, exactly"
        );
        assert_eq!(decoded.end, journal.len());
        let ids: Vec<String> = decoded
            .patches
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.id.clone()))
            .collect();
        assert_eq!(ids, ["e0", "e2", "e3"]);
    }

    /// A flipped bit in a length field in the middle makes the frame look longer than the file,
    /// as a torn write does; the records after it show that it is damage.
    #[test]
    fn a_damaged_length_in_the_middle_is_damage_not_a_torn_tail() {
        let frames = four_frames();
        let mut journal = frames.concat();
        let second = frames[0].len();
        journal[second + 3] ^= 0x40; // the length's high byte: far past the end
        let decoded = decode(&journal);
        assert_eq!(decoded.patches.len(), 3);
        assert_eq!(decoded.damaged, vec![second..second + frames[1].len()]);
        assert_eq!(decoded.end, journal.len());
    }

    /// A header at the end that declares the largest allowed length, with too few bytes after it,
    /// is a torn append (left out, not damage); one length more is over the limit, so damage.
    #[test]
    fn the_largest_allowed_length_at_the_end_is_a_torn_append_and_one_more_is_damage() {
        let first = four_frames().swap_remove(0);
        for (len, torn) in [(MAX_RECORD_BYTES, true), (MAX_RECORD_BYTES + 1, false)] {
            let tail = b"{\"memory\"";
            let mut journal = first.clone();
            journal.extend_from_slice(&(len as u32).to_le_bytes());
            journal.extend_from_slice(&(!crc32fast::hash(tail)).to_le_bytes());
            journal.extend_from_slice(tail);
            let decoded = decode(&journal);
            assert_eq!(decoded.patches.len(), 1, "length {len}");
            if torn {
                assert!(decoded.damaged.is_empty(), "length {len}: torn, not damage");
                assert_eq!(
                    decoded.end,
                    first.len(),
                    "the next append overwrites the tear"
                );
            } else {
                assert_eq!(decoded.damaged, vec![first.len()..journal.len()]);
                assert_eq!(
                    decoded.end,
                    journal.len(),
                    "damage is kept, never overwritten"
                );
            }
        }
    }

    /// A record that fails its checksum is skipped to where its own length says it ends, even
    /// when its payload holds bytes that frame a record: those are not read as one.
    #[test]
    fn a_damaged_record_is_skipped_whole_even_when_its_payload_holds_a_frame() {
        let frames = four_frames();
        let inner = &frames[2];
        let mut journal = frames[0].clone();
        let bad = journal.len();
        journal.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        journal.extend_from_slice(&(!crc32fast::hash(inner)).to_le_bytes());
        journal.extend_from_slice(inner);
        let after = journal.len();
        journal.extend_from_slice(&frames[3]);
        let decoded = decode(&journal);
        assert_eq!(decoded.damaged, vec![bad..after]);
        let ids: Vec<String> = decoded
            .patches
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.id.clone()))
            .collect();
        assert_eq!(
            ids,
            ["e0", "e3"],
            "the frame inside the damaged one is not a record"
        );
        assert_eq!(decoded.end, journal.len());
    }

    /// Every single-byte change anywhere in a journal costs at most the record it falls in.
    #[test]
    fn any_flipped_byte_costs_at_most_its_own_record() {
        let frames = four_frames();
        let journal = frames.concat();
        let starts: Vec<usize> = frames
            .iter()
            .scan(0, |at, f| {
                let start = *at;
                *at += f.len();
                Some(start)
            })
            .collect();
        for at in 0..journal.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = journal.clone();
                damaged[at] ^= flip;
                let decoded = decode(&damaged);
                let hit = starts.iter().rposition(|&s| s <= at).unwrap();
                assert!(
                    decoded.patches.len() >= 3,
                    "byte {at} ^ {flip:#x}: {} records",
                    decoded.patches.len()
                );
                // Nothing that was changed is accepted: a record read is byte for byte one that
                // was written, and the damaged record is reported unless the change was undone.
                for range in &decoded.records {
                    assert_eq!(
                        &damaged[range.clone()],
                        &journal[range.clone()],
                        "byte {at}"
                    );
                }
                if decoded.patches.len() == 3 {
                    assert!(decoded.is_damaged(), "byte {at} ^ {flip:#x}: not reported");
                    assert_eq!(decoded.damaged[0].start, starts[hit], "byte {at}");
                }
            }
        }
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
