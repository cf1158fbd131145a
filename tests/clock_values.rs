//! Clock values (src/clock.rs): their text, the times they are read from, whose they are, and a
//! clock's next value after one whose counter is at its end. A clock value
//! (`<millis>-<counter>-<node>`) is digits, then digits, then a node name, and nothing else.
//!
//! Times (`parse_rfc3339_millis`): merges order entries by time, so the
//! usual form (`2026-05-01T12:00:00.000Z`, JavaScript's `toISOString`) is read by a fast path of
//! its own and everything else by chrono. The fast path must never disagree with chrono: every
//! time it accepts, chrono reads as the same instant, and what it refuses falls to chrono. Here
//! chrono is the reference, over times near the usual form and one character off it.

use std::time::Duration;

use mia_narrative_session::clock::{parse_rfc3339_millis, Hlc, HybridClock};
use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::store::{MergeMode, SessionStore, StoreOptions};
use proptest::prelude::*;

fn chrono_millis(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` with each field drawn past its range on both sides.
fn near_usual() -> impl Strategy<Value = String> {
    (
        0u32..10_000,
        0u32..14,
        0u32..33,
        0u32..26,
        0u32..62,
        0u32..62,
        0u32..1000,
    )
        .prop_map(|(y, mo, d, h, mi, s, ms)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        })
}

/// A usual-form time with one character replaced by one of those a time is made of, or by one
/// just outside the digits (`/` and `:` border `0` and `9` in ASCII).
fn one_character_off() -> impl Strategy<Value = String> {
    (
        near_usual(),
        0usize..24,
        proptest::sample::select(b"0123456789-:T.Z/ tz+".to_vec()),
    )
        .prop_map(|(text, at, c)| {
            let mut bytes = text.into_bytes();
            bytes[at] = c;
            String::from_utf8(bytes).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_fast_path_agrees_with_chrono_near_the_usual_form(text in near_usual()) {
        prop_assert_eq!(parse_rfc3339_millis(&text), chrono_millis(&text), "{}", text);
    }

    #[test]
    fn the_fast_path_agrees_with_chrono_one_character_off(text in one_character_off()) {
        prop_assert_eq!(parse_rfc3339_millis(&text), chrono_millis(&text), "{}", text);
    }
}

/// The calendar's edges, named: month lengths, leap years by the 4, 100 and 400 rules, and the
/// separators one at a time.
#[test]
fn calendar_edges_and_separators_read_as_chrono_reads_them() {
    let cases = [
        "2026-01-31T23:59:59.999Z",
        "2026-02-28T00:00:00.000Z",
        "2026-02-29T00:00:00.000Z",
        "2024-02-29T00:00:00.000Z",
        "2000-02-29T12:00:00.000Z",
        "1900-02-29T12:00:00.000Z",
        "2100-02-29T12:00:00.000Z",
        "2026-04-31T00:00:00.000Z",
        "2026-06-31T00:00:00.000Z",
        "2026-09-31T00:00:00.000Z",
        "2026-11-31T00:00:00.000Z",
        "2026-12-31T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-00-01T00:00:00.000Z",
        "2026-01-00T00:00:00.000Z",
        "2026-01-01T24:00:00.000Z",
        "2026-01-01T00:60:00.000Z",
        "1970-01-01T00:00:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "0000-03-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "2026x01-01T00:00:00.000Z",
        "2026-01x01T00:00:00.000Z",
        "2026-01-01x00:00:00.000Z",
        "2026-01-01T00x00:00.000Z",
        "2026-01-01T00:00x00.000Z",
        "2026-01-01T00:00:00x000Z",
        "2026-01-01T00:00:00.000x",
        "2026-01-01T00:00:00.000+00:00",
        "2026-01-01T0:00:00.000Z",
        "2026-01-01T00:00:00.00:Z",
    ];
    for text in cases {
        assert_eq!(parse_rfc3339_millis(text), chrono_millis(text), "{text}");
    }
    assert_eq!(
        parse_rfc3339_millis("2026-05-01T12:00:00.000Z"),
        Some(1_777_636_800_000)
    );
}

/// A clock value's numbers are plain digits, at most 20 of them: no sign, no space, nothing a
/// looser number parser would take.
#[test]
fn a_clock_value_takes_plain_digits_only() {
    let good = Hlc::parse("1777636800000-0003-node_1").unwrap();
    assert_eq!(
        (good.millis, good.counter, good.node.as_str()),
        (1_777_636_800_000, 3, "node_1")
    );
    let twenty = Hlc::parse("00000001777636800000-0000-n").unwrap();
    assert_eq!(twenty.millis, 1_777_636_800_000);
    for bad in [
        "+1777636800000-0000-n",
        "1777636800000-+3-n",
        " 1777636800000-0000-n",
        "-0000-n",
        "1777636800000--n",
        "000000001777636800000-0000-n",
        "1777636800000-0000-n-x",
        "1777636800000-0000",
        "1777636800000-4294967296-n",
    ] {
        let error = Hlc::parse(bad).expect_err(bad);
        assert_eq!(error.code, ErrorCode::Invalid, "{bad}");
    }
}

/// A clock that took in a value whose counter is at its largest (a client may send one) still
/// stamps its next write later than that value: the next millisecond, counter 0. Otherwise the
/// write would lose to the value it was made after.
#[test]
fn after_a_value_at_the_counters_end_the_next_stamp_is_the_next_millisecond() {
    let mut clock = HybridClock::with_wall_clock("here", || 1_777_636_800_000);
    let seen = Hlc::parse("1777636800000-4294967295-there").unwrap();
    assert!(clock.observe(&seen));
    let next = clock.now();
    assert_eq!((next.millis, next.counter), (1_777_636_800_001, 0));
    assert!(next > seen);
    let after = clock.now();
    assert_eq!((after.millis, after.counter), (1_777_636_800_001, 1));
}

/// The node a store reports is the one its writes are stamped with.
#[tokio::test(flavor = "multi_thread")]
async fn a_stores_node_id_is_the_node_of_the_versions_it_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    let store = SessionStore::open(options).await.unwrap();
    let node = store.node_id();
    assert!(!node.is_empty());
    let mode = MergeMode {
        with_session: true,
        durable: false,
    };
    let outcome = store
        .merge("alice", "/w", r#"{"memory":{"goal":"ship"}}"#, None, mode)
        .await
        .unwrap();
    let session: NarrativeSession = serde_json::from_str(&outcome.session_json.unwrap()).unwrap();
    assert_eq!(session.versions["memory.goal"].node, node);
    store.close().await.unwrap();
}
