//! The journal's frames at their edges (src/journal.rs): where a torn tail ends and damage begins,
//! and how the Redis backend splits a store's pending records into one frame a log element. The
//! unit tests in src/journal.rs cover torn tails and damage in the middle; these cover what
//! mutation testing found unchecked (docs/mutation/rust.md).

mod support;

use mia_narrative_session::journal::{self, MAX_RECORD_BYTES};
use mia_narrative_session::paths::SessionKey;
use support::records::{entry_ids, entry_record, new_session};

/// Frames of `n` records, each adding one entry, and the entries' ids. Their ids grow in length,
/// so the frames differ in length too.
fn frames(n: usize) -> (Vec<Vec<u8>>, Vec<String>) {
    let session = new_session(&SessionKey::new("alice", "/w").unwrap());
    let ids: Vec<String> = (0..n).map(|i| format!("e{}", "x".repeat(i * 7))).collect();
    let frames = ids.iter().map(|id| entry_record(&session, id).1).collect();
    (frames, ids)
}

fn ids_of(decoded: &journal::Decoded) -> Vec<String> {
    let mut session = new_session(&SessionKey::new("alice", "/w").unwrap());
    for patch in &decoded.patches {
        mia_narrative_session::merge::apply_patch(&mut session, patch).unwrap();
    }
    entry_ids(&session)
}

/// A frame header: payload length and checksum, little-endian.
fn header(len: u32, crc: u32) -> Vec<u8> {
    [len.to_le_bytes(), crc.to_le_bytes()].concat()
}

#[test]
fn split_frames_gives_back_each_frame_exactly_and_drops_a_torn_last_one() {
    let (frames, _) = frames(4);
    let joined = frames.concat();
    assert_eq!(journal::split_frames(&joined), frames);
    assert_eq!(journal::split_frames(&frames[2]), vec![frames[2].clone()]);
    assert!(journal::split_frames(&[]).is_empty());
    // Cut anywhere inside the last frame (its header included): the others, whole.
    let last_start = joined.len() - frames[3].len();
    for cut in last_start..joined.len() {
        assert_eq!(
            journal::split_frames(&joined[..cut]),
            frames[..3],
            "cut at {cut}"
        );
    }
}

/// A length over the limit is never written: such a frame is damage, even as the last frame of
/// the journal, and is kept aside by a repair rather than cut off as a torn write.
#[test]
fn a_last_frame_claiming_more_than_the_limit_is_damage_not_a_torn_tail() {
    let (frames, ids) = frames(2);
    let good = frames.concat();
    for claimed in [MAX_RECORD_BYTES as u32 + 1, u32::MAX] {
        let mut journal = good.clone();
        journal.extend_from_slice(&header(claimed, 0));
        journal.extend_from_slice(b"{\"clock\":");
        let decoded = journal::decode(&journal);
        assert_eq!(ids_of(&decoded), ids);
        assert_eq!(
            decoded.damaged,
            vec![good.len()..journal.len()],
            "claimed {claimed}"
        );
        assert_eq!(decoded.end, journal.len());
    }
}

/// A crash that leaves only the last frame's header is a torn tail, whatever its checksum field
/// holds: the empty payload after it is not a payload whose checksum matches (the checksum of no
/// bytes is 0).
#[test]
fn a_torn_tail_of_just_a_header_is_torn_even_with_a_zero_checksum() {
    let (frames, ids) = frames(2);
    let good = frames.concat();
    for crc in [0, 0x1234_5678] {
        let mut journal = good.clone();
        journal.extend_from_slice(&header(40, crc));
        let decoded = journal::decode(&journal);
        assert_eq!(ids_of(&decoded), ids);
        assert!(!decoded.is_damaged(), "crc {crc:#x}: {:?}", decoded.damaged);
        assert_eq!(decoded.end, good.len(), "crc {crc:#x}");
    }
}
