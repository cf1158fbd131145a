//! Hybrid logical clocks: the timestamps that decide last-write-wins.
//!
//! A timestamp is wall-clock milliseconds, a counter and a node id. A clock that has *observed* a
//! timestamp never issues one that is smaller, so a write made after seeing another always wins,
//! even when two machines' wall clocks disagree. The node id breaks the remaining ties.
//!
//! Text form: `"<millis>-<counter>-<node>"`, with millis padded to 13 digits and the counter to 4,
//! so that for all practical dates the strings also sort in clock order.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, StoreError};

/// The longest node id accepted in a timestamp.
const MAX_NODE_LEN: usize = 64;

/// How far ahead of this machine's wall clock a clock read from elsewhere may be: the store's
/// *max offset*, as CockroachDB calls its own (500 ms there, between servers it keeps in sync).
/// Here the clocks come from browsers, other processes and other machines that nothing keeps in
/// sync, so the bound is one hour.
///
/// - A client's explicit version further ahead is refused (`EINVALID`).
/// - A clock further ahead read from a file, from Redis or from another process is not taken into
///   this store's clock (it would hold every later write of the store that far ahead). A write
///   over a value stamped with it still wins: see [`crate::merge::settle_update`].
/// - `updatedAt` never runs ahead of this machine's clock at all (see [`HybridClock::time_of`]),
///   and the TTL sweep never believes an `updatedAt` further than this after the file was written.
pub const MAX_CLOCK_AHEAD_MS: u64 = 60 * 60 * 1000;

/// One hybrid-logical-clock timestamp. Ordered by millis, then counter, then node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hlc {
    pub millis: u64,
    pub counter: u32,
    pub node: String,
}

impl Hlc {
    /// The clock of a write known only by its wall time (a field with no version of its own).
    /// Its empty node sorts below every real node, so any real write at the same millisecond wins.
    pub fn from_millis(millis: u64) -> Hlc {
        Hlc {
            millis,
            counter: 0,
            node: String::new(),
        }
    }

    /// The clock of an RFC 3339 time; an unreadable or pre-1970 time counts as the epoch.
    pub fn from_rfc3339(time: &str) -> Hlc {
        Hlc::from_millis(parse_rfc3339_millis(time).map_or(0, |m| m.max(0) as u64))
    }

    pub fn parse(text: &str) -> Result<Hlc> {
        let bad =
            || StoreError::invalid(format!("not a clock value (millis-counter-node): {text:?}"));
        let mut parts = text.splitn(3, '-');
        let millis = parts.next().and_then(parse_digits).ok_or_else(bad)?;
        let counter = parts.next().and_then(parse_digits).ok_or_else(bad)?;
        let node = parts.next().ok_or_else(bad)?;
        let node_ok = node.len() <= MAX_NODE_LEN
            && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !node_ok {
            return Err(bad());
        }
        Ok(Hlc {
            millis,
            counter: u32::try_from(counter).map_err(|_| bad())?,
            node: node.to_string(),
        })
    }

    /// The RFC 3339 form of the wall-clock part, as sessions store `updatedAt`.
    pub fn to_rfc3339(&self) -> String {
        millis_to_rfc3339(self.millis)
    }

    /// The smallest clock of `node` that is later than this one: one more on the counter (or the
    /// next millisecond, on the rare overflow). A write over a value stamped `self` by a clock
    /// that ran ahead of the writer's takes it, so that it wins without the writer's own clock
    /// jumping ahead.
    pub fn successor(&self, node: &str) -> Hlc {
        let (millis, counter) = match self.counter.checked_add(1) {
            Some(counter) => (self.millis, counter),
            None => (self.millis.saturating_add(1), 0),
        };
        Hlc {
            millis,
            counter,
            node: node.to_string(),
        }
    }
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:013}-{:04}-{}", self.millis, self.counter, self.node)
    }
}

impl Serialize for Hlc {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Hlc, D::Error> {
        let text = String::deserialize(deserializer)?;
        Hlc::parse(&text).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Milliseconds since the epoch of an RFC 3339 time, or None when it is not one.
pub fn parse_rfc3339_millis(time: &str) -> Option<i64> {
    utc_millis(time.as_bytes()).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(time)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

/// The usual form, `YYYY-MM-DDTHH:MM:SS.sssZ` (JavaScript's `toISOString`), read directly: merges
/// order long lists by time, and chrono's general parser is most of that cost. Anything else, and
/// any value out of range, is left to chrono (None here).
fn utc_millis(b: &[u8]) -> Option<i64> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let digit = |i: usize| {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let millis = digit(20)? * 100 + two(21)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis)
}

pub fn millis_to_rfc3339(millis: u64) -> String {
    let millis = i64::try_from(millis).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn wall_clock_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a clock reads the time: the system's wall clock, or one a test sets.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    /// The system's wall clock ([`wall_clock_millis`]).
    pub fn system() -> WallClock {
        WallClock(Arc::new(wall_clock_millis))
    }

    /// A wall clock that reads `millis()`: tests use it to make two stores' clocks disagree.
    pub fn new(millis: impl Fn() -> u64 + Send + Sync + 'static) -> WallClock {
        WallClock(Arc::new(millis))
    }

    /// Milliseconds since the epoch, as this clock reads them.
    pub fn millis(&self) -> u64 {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> WallClock {
        WallClock::system()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WallClock({})", self.millis())
    }
}

/// The clock of one store instance. Not thread-safe by itself: the store keeps it behind a mutex.
#[derive(Debug)]
pub struct HybridClock {
    node: String,
    last_millis: u64,
    last_counter: u32,
    wall: WallClock,
}

impl HybridClock {
    pub fn new(node: impl Into<String>) -> HybridClock {
        Self::from_wall_clock(node, WallClock::system())
    }

    /// A clock reading time from `wall`, so tests can make wall clocks disagree.
    pub fn with_wall_clock(
        node: impl Into<String>,
        wall: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> HybridClock {
        Self::from_wall_clock(node, WallClock::new(wall))
    }

    pub fn from_wall_clock(node: impl Into<String>, wall: WallClock) -> HybridClock {
        HybridClock {
            node: node.into(),
            last_millis: 0,
            last_counter: 0,
            wall,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// A new timestamp, later than every one this clock issued or observed.
    pub fn now(&mut self) -> Hlc {
        let wall = self.wall.millis();
        if wall > self.last_millis {
            self.last_millis = wall;
            self.last_counter = 0;
        } else {
            self.bump();
        }
        self.current()
    }

    /// Take in a timestamp seen from elsewhere, so that every later `now()` is after it. One more
    /// than [`MAX_CLOCK_AHEAD_MS`] ahead of the wall clock is refused: this clock stays where it
    /// was, and the call returns false.
    pub fn observe(&mut self, seen: &Hlc) -> bool {
        if self.is_too_far_ahead(seen) {
            return false;
        }
        match (seen.millis, seen.counter).cmp(&(self.last_millis, self.last_counter)) {
            Ordering::Greater => {
                self.last_millis = seen.millis;
                self.last_counter = seen.counter;
            }
            Ordering::Equal | Ordering::Less => {}
        }
        true
    }

    /// [`observe`](Self::observe) every clock of `seen`. Returns how many were refused as too far
    /// ahead.
    pub fn observe_all<'a>(&mut self, seen: impl IntoIterator<Item = &'a Hlc>) -> usize {
        // Only the latest one that is not too far ahead moves the clock.
        let horizon = self.horizon();
        let mut latest: Option<&Hlc> = None;
        let mut refused = 0;
        for clock in seen {
            if clock.millis > horizon {
                refused += 1;
            } else if latest.is_none_or(|l| (clock.millis, clock.counter) > (l.millis, l.counter)) {
                latest = Some(clock);
            }
        }
        if let Some(latest) = latest {
            self.observe(latest);
        }
        refused
    }

    /// Whether `seen` is more than [`MAX_CLOCK_AHEAD_MS`] ahead of this machine's wall clock.
    pub fn is_too_far_ahead(&self, seen: &Hlc) -> bool {
        seen.millis > self.horizon()
    }

    /// The latest millis a clock read from elsewhere may have.
    fn horizon(&self) -> u64 {
        self.wall.millis().saturating_add(MAX_CLOCK_AHEAD_MS)
    }

    /// The wall-clock time as this clock sees it, in milliseconds.
    pub fn wall_millis(&self) -> u64 {
        self.wall.millis()
    }

    /// The time to record as a session's `updatedAt` (RFC 3339) for a write stamped `stamp`: its
    /// time, but never later than this machine's wall clock. A clock may run ahead of the wall
    /// clock (it took in a clock from a machine up to [`MAX_CLOCK_AHEAD_MS`] ahead); `updatedAt`
    /// decides when the TTL sweep removes a session, and must not follow it.
    pub fn time_of(&self, stamp: &Hlc) -> String {
        millis_to_rfc3339(stamp.millis.min(self.wall_millis()))
    }

    /// A new timestamp's time, as a new session's `createdAt` and `updatedAt`: see `time_of`.
    pub fn now_time(&mut self) -> String {
        let stamp = self.now();
        self.time_of(&stamp)
    }

    /// `time`, an RFC 3339 time read from elsewhere, held back to this machine's wall clock: None
    /// when it is not later (or not readable), else the wall clock's time.
    pub fn cap_time(&self, time: &str) -> Option<String> {
        let wall = self.wall_millis();
        let millis = parse_rfc3339_millis(time)?;
        (millis > i64::try_from(wall).unwrap_or(i64::MAX)).then(|| millis_to_rfc3339(wall))
    }

    fn bump(&mut self) {
        match self.last_counter.checked_add(1) {
            Some(next) => self.last_counter = next,
            None => {
                self.last_millis += 1;
                self.last_counter = 0;
            }
        }
    }

    fn current(&self) -> Hlc {
        Hlc {
            millis: self.last_millis,
            counter: self.last_counter,
            node: self.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_reading_of_iso_times_agrees_with_chrono() {
        let chrono_millis = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.timestamp_millis())
        };
        // Every day of four years (a leap year and a century among them), at several times.
        let mut samples = Vec::new();
        for start in [
            -62_135_596_800_000i64,
            -86_400_000,
            946_684_800_000,
            4_102_444_800_000,
        ] {
            for day in 0..(4 * 366) {
                for offset in [0, 1, 59_999, 43_200_123, 86_399_999] {
                    let millis = start + day * 86_400_000 + offset;
                    let time = chrono::DateTime::from_timestamp_millis(millis).unwrap();
                    samples.push(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                }
            }
        }
        for time in &samples {
            assert_eq!(utc_millis(time.as_bytes()), chrono_millis(time), "{time}");
        }
        // Out of range or otherwise shaped: left to chrono, which says what it says.
        for time in [
            "2026-02-29T00:00:00.000Z",
            "2024-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-00-01T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T23:60:00.000Z",
            "2026-01-01T23:59:60.000Z",
            "2026-01-01T23:59:59.000+01:00",
            "2026-01-01t23:59:59.000z",
            "2026-01-01T23:59:5x.000Z",
        ] {
            assert_eq!(utc_millis(time.as_bytes()), None, "{time}");
            assert_eq!(parse_rfc3339_millis(time), chrono_millis(time), "{time}");
        }
    }

    fn frozen() -> u64 {
        1_000
    }

    #[test]
    fn text_form_round_trips_and_sorts_like_the_clock() {
        let a = Hlc {
            millis: 1_732_430_449_123,
            counter: 7,
            node: "n1".into(),
        };
        assert_eq!(a.to_string(), "1732430449123-0007-n1");
        assert_eq!(Hlc::parse(&a.to_string()).unwrap(), a);
        let b = Hlc {
            counter: 12,
            ..a.clone()
        };
        assert!(a < b && a.to_string() < b.to_string());
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "1-2",
            "x-1-n",
            "1-x-n",
            "1-2-a/b",
            "1-99999999999-n",
            "-1-2-n",
        ] {
            assert!(Hlc::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn a_frozen_wall_clock_still_moves_forward() {
        let mut clock = HybridClock::with_wall_clock("a", frozen);
        let t1 = clock.now();
        let t2 = clock.now();
        assert!(t2 > t1);
        assert_eq!(t2.millis, 1_000);
    }

    #[test]
    fn a_write_after_seeing_another_wins_even_with_a_clock_behind() {
        let mut ahead = HybridClock::with_wall_clock("ahead", || 9_000);
        let mut behind = HybridClock::with_wall_clock("behind", frozen);
        let seen = ahead.now();
        behind.observe(&seen);
        assert!(behind.now() > seen);
    }

    /// The counter is half of a clock: one that observes (T, 5) while its own wall clock is
    /// behind T must issue something after (T, 5), not (T, 1).
    #[test]
    fn a_clock_behind_takes_in_the_remote_counter_not_only_the_millis() {
        let seen = Hlc {
            millis: 5_000,
            counter: 5,
            node: "ahead".into(),
        };
        let mut behind = HybridClock::with_wall_clock("behind", frozen);
        assert!(behind.observe(&seen));
        let next = behind.now();
        assert_eq!((next.millis, next.counter), (5_000, 6));
        assert!(next > seen);
        // The same through observe_all, among clocks of the same millisecond.
        let mut behind = HybridClock::with_wall_clock("behind", frozen);
        let lower = Hlc {
            counter: 2,
            ..seen.clone()
        };
        assert_eq!(behind.observe_all([&lower, &seen, &lower]), 0);
        assert!(behind.now() > seen);
    }

    #[test]
    fn a_clock_more_than_the_bound_ahead_is_refused_and_leaves_the_clock_alone() {
        let mut clock = HybridClock::with_wall_clock("me", frozen);
        let within = Hlc {
            millis: 1_000 + MAX_CLOCK_AHEAD_MS,
            counter: 3,
            node: "peer".into(),
        };
        let beyond = Hlc {
            millis: within.millis + 1,
            counter: 0,
            node: "peer".into(),
        };
        assert!(clock.is_too_far_ahead(&beyond) && !clock.is_too_far_ahead(&within));
        assert!(!clock.observe(&beyond));
        assert_eq!(clock.now().millis, 1_000, "a refused clock moved this one");
        assert_eq!(clock.observe_all([&beyond, &within, &beyond]), 2);
        assert!(clock.now() > within);
    }

    #[test]
    fn updated_at_never_runs_ahead_of_the_wall_clock() {
        let mut clock = HybridClock::with_wall_clock("me", frozen);
        clock.observe(&Hlc {
            millis: 1_000 + 59 * 60 * 1000,
            counter: 0,
            node: "peer".into(),
        });
        let stamp = clock.now();
        assert!(stamp.millis > 1_000);
        assert_eq!(clock.time_of(&stamp), "1970-01-01T00:00:01.000Z");
        assert_eq!(
            clock.cap_time("2100-01-01T00:00:00.000Z").as_deref(),
            Some("1970-01-01T00:00:01.000Z")
        );
        assert_eq!(clock.cap_time("1970-01-01T00:00:00.500Z"), None);
        assert_eq!(
            clock.cap_time("1970-01-01T00:00:01.000Z"),
            None,
            "a time at the wall clock is not ahead of it"
        );
        assert_eq!(clock.cap_time("not a time"), None);
    }

    #[test]
    fn a_wall_clock_shows_its_reading_when_debugged() {
        assert_eq!(format!("{:?}", WallClock::new(|| 42)), "WallClock(42)");
    }

    #[test]
    fn a_successor_is_the_next_clock_after_it() {
        let v = Hlc {
            millis: 7,
            counter: 2,
            node: "zz".into(),
        };
        let next = v.successor("a");
        assert_eq!(next.to_string(), "0000000000007-0003-a");
        assert!(next > v);
        let full = Hlc {
            counter: u32::MAX,
            ..v.clone()
        };
        assert_eq!(full.successor("a").to_string(), "0000000000008-0000-a");
    }

    #[test]
    fn updated_at_converts_to_a_clock_below_real_writes_of_the_same_millisecond() {
        let implicit = Hlc::from_rfc3339("2026-11-24T06:40:49.123Z");
        assert_eq!(implicit.millis, 1_795_502_449_123);
        let real = Hlc {
            millis: implicit.millis,
            counter: 0,
            node: "a".into(),
        };
        assert!(implicit < real);
        assert_eq!(implicit.to_rfc3339(), "2026-11-24T06:40:49.123Z");
    }
}
