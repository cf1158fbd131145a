//! The merge laws of design.md section 3, checked on random sessions.
//!
//! Every tab, window and server must converge whatever order updates arrive in, so
//! `merge_sessions` has to be a join: commutative, associative and idempotent. The generators
//! below draw ids, keys, times and clocks from small pools, so that two random sessions share
//! charts, actions, beats and entries, and clocks tie often.

use std::collections::{BTreeMap, BTreeSet};

use mia_narrative_session::clock::{Hlc, HybridClock};
use mia_narrative_session::merge::{merge_session_texts, merge_sessions, normalize};
use mia_narrative_session::model::{
    ChartStatus, ConversationEntry, NarrativeSession, Role, StcAction, StcChart, StoryBeat,
    StoryPosition, Universe, UniverseAnnotations, UniverseFocus,
};
use mia_narrative_session::raw::RawEntry;
use mia_narrative_session::text::Text;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Pools. Small on purpose: collisions are where merges go wrong.

/// RFC 3339 times. Two of them name the same instant in different text, and one has an offset.
const TIMES: [&str; 7] = [
    "2025-12-31T23:59:59.999Z",
    "2026-01-01T00:00:00.000Z",
    "2026-01-01T00:00:00.001Z",
    "2026-01-02T12:30:00.000Z",
    "2026-01-02T12:30:00Z",
    "2026-01-02T14:30:00.000+02:00",
    "2026-03-04T05:06:07.089Z",
];
const MEMORY_KEYS: [&str; 6] = ["goal", "mood", "tags", "plan", "due", "a.b"];
const CONFIG_KEYS: [&str; 3] = ["theme", "fontSize", "flags"];
const CHART_IDS: [&str; 3] = ["c1", "c2", "c.3"];
const ACTION_IDS: [&str; 4] = ["a1", "a2", "a3", "a.4"];
const BEAT_IDS: [&str; 4] = ["b1", "b2", "b3", "b4"];
const ENTRY_IDS: [&str; 4] = ["e1", "e2", "e3", "e4"];
/// Field names unknown to this server, kept round-trip on charts, actions, beats and entries.
const EXTRA_KEYS: [&str; 3] = ["colour", "priority", "x.y"];
/// Clock nodes; "" is the node of a clock implied by `updatedAt`.
const NODES: [&str; 3] = ["", "n1", "n2"];

fn millis_of(time: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .unwrap()
        .timestamp_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// Clocks whose millis are those of the time pool, so explicit versions tie with `updatedAt`.
fn hlc() -> impl Strategy<Value = Hlc> {
    (select(TIMES.to_vec()), 0u32..3, select(NODES.to_vec())).prop_map(|(time, counter, node)| {
        Hlc {
            millis: millis_of(time),
            counter,
            node: node.to_string(),
        }
    })
}

fn time() -> impl Strategy<Value = String> {
    select(TIMES.to_vec()).prop_map(str::to_string)
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (-3i32..3).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        "[a-z ]{0,8}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        // Date-like strings: the peer connect-redis turned a Date into `{}`.
        time().prop_map(Value::from),
    ]
}

/// Values that serde_json calls equal although their text differs (key order, the sign of zero),
/// next to one whose text sorts between them. JavaScript clients send objects in any key order.
const LOOKALIKES: [&str; 6] = [
    r#"{"x":1,"y":2}"#,
    r#"{"y":2,"x":1}"#,
    r#"{"xz":0}"#,
    "0.0",
    "-0.0",
    "-1",
];

fn lookalike() -> impl Strategy<Value = Value> {
    select(LOOKALIKES.to_vec()).prop_map(|text| serde_json::from_str(text).unwrap())
}

/// Any JSON value, nested objects and arrays included (null only inside them). Object keys come
/// in random order, as JavaScript would build them.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![9 => json_leaf(), 1 => Just(Value::Null)];
    let nested = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z]{1,3}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    });
    // A top-level null in memory or config is a deletion, not a value.
    prop_oneof![4 => nested, 1 => lookalike()]
        .prop_filter("a stored value is never null", |v| !v.is_null())
}

fn keyed_map(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    btree_map(select(keys.to_vec()), json_value(), 0..=keys.len())
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn extra() -> impl Strategy<Value = Map<String, Value>> {
    keyed_map(&EXTRA_KEYS).prop_map(|m| m.into_iter().take(2).collect())
}

fn action(id: &'static str) -> impl Strategy<Value = StcAction> {
    (
        "[a-z]{0,5}",
        any::<bool>(),
        proptest::option::of(time()),
        proptest::option::of(prop_oneof![
            (0u32..4).prop_map(serde_json::Number::from),
            (0u32..4).prop_map(|n| serde_json::Number::from_f64(f64::from(n) + 0.5).unwrap()),
        ]),
        extra(),
    )
        .prop_map(
            move |(title, completed, completed_at, order, extra)| StcAction {
                id: id.to_string(),
                title,
                completed,
                completed_at,
                order,
                extra,
            },
        )
}

fn chart(id: &'static str) -> impl Strategy<Value = StcChart> {
    let actions = subsequence(ACTION_IDS.to_vec(), 0..=ACTION_IDS.len())
        .prop_flat_map(|ids| ids.into_iter().map(action).collect::<Vec<_>>())
        .prop_shuffle();
    (
        ("[a-z]{0,5}", "[a-z]{0,5}", "[a-z]{0,5}"),
        actions,
        select(vec![
            ChartStatus::Active,
            ChartStatus::Resolved,
            ChartStatus::Archived,
        ]),
        (time(), time()),
        extra(),
    )
        .prop_map(
            move |(
                (title, desired_outcome, current_reality),
                actions,
                status,
                (created_at, updated_at),
                extra,
            )| StcChart {
                id: id.to_string(),
                title,
                desired_outcome,
                current_reality,
                actions,
                status,
                created_at,
                updated_at,
                extra,
            },
        )
}

fn beat(id: &'static str) -> impl Strategy<Value = StoryBeat> {
    let annotations = proptest::option::of(
        (
            proptest::option::of("[a-z]{0,4}"),
            proptest::option::of("[a-z]{0,4}"),
        )
            .prop_map(|(engineer, story)| UniverseAnnotations {
                engineer,
                ceremony: None,
                story,
                extra: Map::new(),
            }),
    );
    (
        "[a-z]{0,5}",
        select(vec!["commit", "deploy", "review", "custom"]),
        annotations,
        time(),
        extra(),
    )
        .prop_map(
            move |(description, kind, universe_annotations, created_at, extra)| StoryBeat {
                id: id.to_string(),
                description,
                kind: kind.to_string(),
                universe_annotations,
                created_at,
                extra,
            },
        )
}

fn entry(id: &'static str) -> impl Strategy<Value = ConversationEntry> {
    (
        select(vec![Role::User, Role::Assistant, Role::System, Role::Agent]),
        "[a-z ]{0,6}",
        proptest::option::of(select(vec![
            Universe::Engineer,
            Universe::Ceremony,
            Universe::Story,
        ])),
        time(),
        proptest::option::of("t[0-9]"),
        extra(),
    )
        .prop_map(
            move |(role, content, universe, timestamp, trace_id, extra)| ConversationEntry {
                id: id.to_string(),
                role,
                content,
                universe,
                timestamp,
                trace_id,
                extra,
            },
        )
}

/// A list of entries with distinct ids drawn from `ids`, in random order.
fn list<T: std::fmt::Debug + Clone, S: Strategy<Value = T>>(
    ids: &'static [&'static str],
    make: fn(&'static str) -> S,
) -> impl Strategy<Value = Vec<T>> {
    subsequence(ids.to_vec(), 0..=ids.len())
        .prop_flat_map(move |ids| ids.into_iter().map(make).collect::<Vec<_>>())
        .prop_shuffle()
}

/// Paths of last-write-wins registers that random explicit versions are given for.
fn version_paths() -> Vec<String> {
    let mut paths = vec!["universeFocus".to_string(), "storyPosition".to_string()];
    paths.extend(MEMORY_KEYS.iter().map(|k| format!("memory.{k}")));
    paths.extend(CONFIG_KEYS.iter().map(|k| format!("config.{k}")));
    for chart in ["c1", "c\\.3"] {
        for field in ["title", "status", "desiredOutcome", "colour"] {
            paths.push(format!("activeCharts.{chart}.{field}"));
        }
        for action in ["a1", "a\\.4"] {
            for field in ["title", "completed", "order", "completedAt"] {
                paths.push(format!("activeCharts.{chart}.actions.{action}.{field}"));
            }
        }
    }
    paths
}

fn story_position() -> impl Strategy<Value = StoryPosition> {
    (
        select(vec!["", "setup", "confrontation"]),
        0u32..3,
        select(vec!["", "rising", "falling"]),
    )
        .prop_map(|(arc, beat, phase)| StoryPosition {
            arc: arc.to_string(),
            beat,
            phase: phase.to_string(),
            extra: Map::new(),
        })
}

/// A realistic random session. A `versions` entry for a memory or config key the session lacks
/// is a tombstone: that key was deleted at that clock.
fn session() -> impl Strategy<Value = NarrativeSession> {
    let meta = (
        select(vec!["s1", "s2"]),
        time(),
        time(),
        select(vec![
            UniverseFocus::Engineer,
            UniverseFocus::Ceremony,
            UniverseFocus::Story,
            UniverseFocus::All,
        ]),
        story_position(),
    );
    let maps = (keyed_map(&MEMORY_KEYS), keyed_map(&CONFIG_KEYS));
    let lists = (
        list(&CHART_IDS, chart),
        list(&BEAT_IDS, beat),
        list(&ENTRY_IDS, entry),
    );
    let versions = btree_map(select(version_paths()), hlc(), 0..8);
    (meta, maps, lists, versions).prop_map(
        |(
            (id, t1, t2, universe_focus, story_position),
            (memory, config),
            (active_charts, story_beats, conversation_history),
            versions,
        )| {
            let (created_at, updated_at) = if millis_of(&t1) <= millis_of(&t2) {
                (t1, t2)
            } else {
                (t2, t1)
            };
            NarrativeSession {
                id: id.to_string(),
                user_id: "alice".into(),
                workspace_id: "/home/alice/proj".into(),
                created_at,
                updated_at,
                universe_focus,
                active_charts,
                story_beats,
                story_position,
                memory,
                conversation_history,
                config,
                versions,
            }
        },
    )
}

fn merge(a: &NarrativeSession, b: &NarrativeSession) -> NarrativeSession {
    merge_sessions(a, b).expect("merging two valid sessions never fails")
}

/// Where two sessions differ, as JSON paths, so a failing law reads as one line per difference.
fn differences(x: &NarrativeSession, y: &NarrativeSession) -> Vec<String> {
    fn walk(x: &Value, y: &Value, path: String, out: &mut Vec<String>) {
        match (x, y) {
            (Value::Object(a), Value::Object(b)) => {
                for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                    let (va, vb) = (
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                    );
                    walk(va, vb, format!("{path}/{key}"), out);
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                    walk(va, vb, format!("{path}/{i}"), out);
                }
            }
            _ if x != y => out.push(format!("{path}: {x} != {y}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        &serde_json::to_value(x).unwrap(),
        &serde_json::to_value(y).unwrap(),
        String::new(),
        &mut out,
    );
    if out.is_empty() && x != y {
        out.push("equal as JSON but not as sessions".into());
    }
    out
}

/// Asserts two sessions are equal, reporting their differences and the inputs as JSON.
fn same(
    x: &NarrativeSession,
    y: &NarrativeSession,
    inputs: &[&NarrativeSession],
) -> Result<(), TestCaseError> {
    if x == y {
        return Ok(());
    }
    let inputs: Vec<String> = inputs
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    Err(TestCaseError::fail(format!(
        "sessions differ:\n  {}\ninputs:\n  {}",
        differences(x, y).join("\n  "),
        inputs.join("\n  ")
    )))
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|x| id(x).to_string()).collect()
}

/// 256 cases a property (proptest's default); set `PROPTEST_CASES` to run more.
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

// ---------------------------------------------------------------------------------------------
// The laws.

proptest! {
    #![proptest_config(config())]

    /// Commutativity: `merge(a, b) == merge(b, a)`. Two servers that receive each other's copy
    /// end with the same session.
    #[test]
    fn merge_is_commutative(a in session(), b in session()) {
        same(&merge(&a, &b), &merge(&b, &a), &[&a, &b])?;
    }

    /// Associativity: `merge(merge(a, b), c) == merge(a, merge(b, c))`. It does not matter how
    /// updates were batched on the way.
    #[test]
    fn merge_is_associative(a in session(), b in session(), c in session()) {
        same(&merge(&merge(&a, &b), &c), &merge(&a, &merge(&b, &c)), &[&a, &b, &c])?;
    }

    /// Idempotence: `merge(a, a) == normalize(a)`, and a merged session merged with itself is
    /// unchanged: `merge(m, m) == m`. Hearing the same copy twice changes nothing.
    #[test]
    fn merge_is_idempotent(a in session(), b in session()) {
        same(&merge(&a, &a), &normalize(&a).unwrap(), &[&a])?;
        let m = merge(&a, &b);
        same(&merge(&m, &m), &m, &[&a, &b])?;
        same(&normalize(&m).unwrap(), &m, &[&a, &b])?;
    }

    /// Append-only lists: every chart, action, beat and conversation entry of either input is in
    /// the output, exactly once.
    #[test]
    fn every_list_entry_of_either_side_is_kept_exactly_once(a in session(), b in session()) {
        let m = merge(&a, &b);
        fn check(out: Vec<String>, a: Vec<String>, b: Vec<String>, what: &str) -> Result<(), TestCaseError> {
            let expected: BTreeSet<String> = a.into_iter().chain(b).collect();
            let mut sorted = out.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), out.len(), "duplicate {} ids in {:?}", what, out);
            prop_assert_eq!(out.into_iter().collect::<BTreeSet<_>>(), expected, "{} ids", what);
            Ok(())
        }
        check(ids(&m.active_charts, |c| &c.id), ids(&a.active_charts, |c| &c.id), ids(&b.active_charts, |c| &c.id), "chart")?;
        check(ids(&m.story_beats, |x| &x.id), ids(&a.story_beats, |x| &x.id), ids(&b.story_beats, |x| &x.id), "beat")?;
        check(
            ids(&m.conversation_history, |x| &x.id),
            ids(&a.conversation_history, |x| &x.id),
            ids(&b.conversation_history, |x| &x.id),
            "entry",
        )?;
        for chart in &m.active_charts {
            let actions_of = |s: &NarrativeSession| {
                s.active_charts.iter().filter(|c| c.id == chart.id).flat_map(|c| ids(&c.actions, |x| &x.id)).collect::<Vec<_>>()
            };
            check(ids(&chart.actions, |x| &x.id), actions_of(&a), actions_of(&b), &format!("action (chart {})", chart.id))?;
        }
    }

    /// Last-write-wins: for a memory key, a config key and `universeFocus` written on both sides
    /// with explicit clocks, the value of the side with the later clock wins, whichever argument
    /// it is. A deletion (a tombstone: a version with no key) wins or loses by time like any write.
    #[test]
    fn last_write_wins_picks_the_later_clock_whichever_side_it_is_on(
        mut a in session(),
        mut b in session(),
        key in select(MEMORY_KEYS.to_vec()),
        config_key in select(CONFIG_KEYS.to_vec()),
        (clock_a, clock_b) in (hlc(), hlc()).prop_filter("distinct clocks", |(x, y)| x != y),
        (value_a, value_b) in (proptest::option::of(json_value()), proptest::option::of(json_value())),
        (focus_a, focus_b) in (
            select(vec![UniverseFocus::Engineer, UniverseFocus::Ceremony, UniverseFocus::Story, UniverseFocus::All]),
            select(vec![UniverseFocus::Engineer, UniverseFocus::Ceremony, UniverseFocus::Story, UniverseFocus::All]),
        ),
    ) {
        for (s, value, clock, focus) in [(&mut a, &value_a, &clock_a, focus_a), (&mut b, &value_b, &clock_b, focus_b)] {
            match value {
                Some(v) => { s.memory.insert(key.to_string(), v.clone()); s.config.insert(config_key.to_string(), v.clone()); }
                None => { s.memory.shift_remove(key); s.config.shift_remove(config_key); }
            }
            s.versions.insert(format!("memory.{key}"), clock.clone());
            s.versions.insert(format!("config.{config_key}"), clock.clone());
            s.universe_focus = focus;
            s.versions.insert("universeFocus".into(), clock.clone());
        }
        let (winner_value, winner_focus, winner_clock) =
            if clock_a > clock_b { (&value_a, focus_a, &clock_a) } else { (&value_b, focus_b, &clock_b) };
        for m in [merge(&a, &b), merge(&b, &a)] {
            prop_assert_eq!(m.memory.get(key), winner_value.as_ref());
            prop_assert_eq!(m.config.get(config_key), winner_value.as_ref());
            prop_assert_eq!(m.universe_focus, winner_focus);
            prop_assert_eq!(m.versions.get(&format!("memory.{key}")), Some(winner_clock));
            prop_assert_eq!(m.versions.get("universeFocus"), Some(winner_clock));
        }
    }

    /// A memory or config value is the exact JSON it was (serde_json::Value equality) after a
    /// serialize/deserialize round trip of the session, and after a merge with a session that
    /// lacks that key. Nested objects, big integers, floats and date-like strings included.
    #[test]
    fn json_values_come_back_exactly(
        mut a in session(),
        mut b in session(),
        key in select(MEMORY_KEYS.to_vec()),
        value in json_value(),
    ) {
        a.memory.insert(key.to_string(), value.clone());
        a.config.insert("theme".into(), value.clone());
        a.versions.remove(&format!("memory.{key}"));
        b.memory.shift_remove(key);
        b.versions.remove(&format!("memory.{key}"));
        b.config.shift_remove("theme");
        b.versions.remove("config.theme");

        let text = serde_json::to_string(&a).unwrap();
        let back: NarrativeSession = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(back.memory.get(key), Some(&value));
        // Through the bytes of a file, too: the reparsed text is the same text.
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);

        for m in [merge(&a, &b), merge(&b, &a)] {
            prop_assert_eq!(m.memory.get(key), Some(&value));
            prop_assert_eq!(m.config.get("theme"), Some(&value));
        }
    }

    /// Ties: when writes carry the same clock, the winner is picked by value alone, so any
    /// grouping and any order of three such writes (memory and config keys, a chart field, one
    /// beat id) gives one result, even for values serde_json calls equal despite their text.
    #[test]
    fn writes_with_tied_clocks_converge_in_any_grouping_and_order(
        values in vec(prop_oneof![lookalike(), json_value()], 3),
        titles in vec(select(vec!["x", "y", "z"]), 3),
        extras in vec(lookalike(), 3),
        clock in hlc(),
    ) {
        let sessions: Vec<NarrativeSession> = (0..3)
            .map(|i| {
                let mut s = base();
                s.memory.insert("k".into(), values[i].clone());
                s.config.insert("k".into(), values[i].clone());
                s.versions.insert("memory.k".into(), clock.clone());
                s.versions.insert("config.k".into(), clock.clone());
                let mut c = plain_chart("c1", "2026-01-01T00:00:00.000Z");
                c.title = titles[i].to_string();
                c.extra.insert("colour".into(), extras[i].clone());
                s.active_charts.push(c);
                let mut extra = Map::new();
                extra.insert("sha".into(), values[i].clone());
                s.story_beats.push(StoryBeat {
                    id: "b1".into(),
                    description: String::new(),
                    kind: "commit".into(),
                    universe_annotations: None,
                    created_at: "2026-01-01T00:00:00.000Z".into(),
                    extra,
                });
                s
            })
            .collect();
        let (a, b, c) = (&sessions[0], &sessions[1], &sessions[2]);
        let reference = merge(&merge(a, b), c);
        for (x, y, z) in [(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)] {
            same(&merge(&merge(x, y), z), &reference, &[a, b, c])?;
            same(&merge(x, &merge(y, z)), &reference, &[a, b, c])?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Merging JSON texts, which keeps each conversation entry as the text it came as.

fn text_of(session: &NarrativeSession) -> Vec<u8> {
    serde_json::to_vec(session).unwrap()
}

/// The session's text with each conversation entry written differently: its keys in reverse
/// order, and the whole indented.
fn respelled(session: &NarrativeSession) -> Vec<u8> {
    let mut value = serde_json::to_value(session).unwrap();
    for entry in value["conversationHistory"].as_array_mut().unwrap() {
        let fields: Vec<(String, Value)> = entry.as_object().unwrap().clone().into_iter().collect();
        *entry = Value::Object(fields.into_iter().rev().collect());
    }
    serde_json::to_vec_pretty(&value).unwrap()
}

fn merge_texts(a: &[u8], b: &[u8]) -> String {
    let merged = merge_session_texts(Text::Utf8(a.to_vec()), Text::Utf8(b.to_vec()), usize::MAX)
        .expect("merging two valid sessions never fails");
    String::from_utf8(merged).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// `merge_session_texts` gives the session `merge_sessions` gives, whatever the order and
    /// grouping of its inputs, and keeps the same text of each entry, also when one side writes
    /// the same entries differently (then the larger text of an entry is kept).
    #[test]
    fn merging_texts_agrees_with_merging_sessions(
        a in session(),
        b in session(),
        c in session(),
        respell in any::<bool>(),
    ) {
        let (a_text, c_text) = (text_of(&a), text_of(&c));
        let b_text = if respell { respelled(&b) } else { text_of(&b) };
        let ab = merge_texts(&a_text, &b_text);
        let ba = merge_texts(&b_text, &a_text);
        same(&parsed(&ab), &merge(&a, &b), &[&a, &b])?;
        same(&parsed(&ba), &merge(&a, &b), &[&a, &b])?;
        prop_assert_eq!(entry_texts(&ab), entry_texts(&ba));

        let left = merge_texts(ab.as_bytes(), &c_text);
        let right = merge_texts(&a_text, merge_texts(&b_text, &c_text).as_bytes());
        same(&parsed(&left), &parsed(&right), &[&a, &b, &c])?;
        prop_assert_eq!(entry_texts(&left), entry_texts(&right));

        let a_again = respelled(&a);
        let aa = merge_texts(&a_text, &a_again);
        same(&parsed(&aa), &normalize(&a).unwrap(), &[&a])?;
        prop_assert_eq!(entry_texts(&aa), entry_texts(&merge_texts(&a_again, &a_text)));
    }
}

fn parsed(text: &str) -> NarrativeSession {
    serde_json::from_str(text).unwrap()
}

/// The text of each conversation entry in a session's text, as written there.
fn entry_texts(text: &str) -> Vec<String> {
    let session: NarrativeSession<RawEntry> = serde_json::from_str(text).unwrap();
    session
        .conversation_history
        .iter()
        .map(|e| e.text().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The clock.

std::thread_local! {
    static WALL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn test_wall() -> u64 {
    WALL.with(std::cell::Cell::get)
}

#[derive(Clone, Debug)]
enum ClockStep {
    /// Set the wall clock (it may jump back) and take a timestamp.
    Now(u64),
    /// Observe a timestamp from another node.
    Observe(Hlc),
}

fn clock_step() -> impl Strategy<Value = ClockStep> {
    let counter = prop_oneof![4 => 0u32..3, 1 => (u32::MAX - 1)..=u32::MAX];
    prop_oneof![
        (995u64..1010).prop_map(ClockStep::Now),
        (990u64..1015, counter, select(vec!["", "a", "zz"])).prop_map(|(millis, counter, node)| {
            ClockStep::Observe(Hlc {
                millis,
                counter,
                node: node.to_string(),
            })
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// HLC monotonicity: whatever the wall clock does and whatever is observed, every `now()` is
    /// strictly later than every earlier `now()` and than every value observed before it.
    #[test]
    fn now_is_strictly_increasing_and_after_everything_observed(steps in vec(clock_step(), 1..40)) {
        WALL.with(|w| w.set(1_000));
        let mut clock = HybridClock::with_wall_clock("me", test_wall);
        let mut issued: Option<Hlc> = None;
        let mut max_seen: Option<Hlc> = None;
        for step in steps {
            match step {
                ClockStep::Now(wall) => {
                    WALL.with(|w| w.set(wall));
                    let t = clock.now();
                    if let Some(prev) = &issued {
                        prop_assert!(t > *prev, "{} after {}", t, prev);
                    }
                    if let Some(seen) = &max_seen {
                        prop_assert!(t > *seen, "{} after observing {}", t, seen);
                    }
                    issued = Some(t);
                }
                ClockStep::Observe(seen) => {
                    clock.observe(&seen);
                    if max_seen.as_ref().is_none_or(|m| seen > *m) {
                        max_seen = Some(seen);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-picked stories next to the laws.

fn base() -> NarrativeSession {
    NarrativeSession::new(
        "s1".into(),
        "alice".into(),
        "/w".into(),
        "2026-01-01T00:00:00.000Z".into(),
    )
}

#[test]
fn a_deletion_recorded_as_a_tombstone_beats_an_older_value() {
    let mut old = base();
    old.memory.insert("goal".into(), Value::from("ship"));
    old.versions.insert(
        "memory.goal".into(),
        Hlc {
            millis: 10,
            counter: 0,
            node: "a".into(),
        },
    );
    let mut newer = base();
    newer.versions.insert(
        "memory.goal".into(),
        Hlc {
            millis: 20,
            counter: 0,
            node: "b".into(),
        },
    );
    for m in [merge(&old, &newer), merge(&newer, &old)] {
        assert!(!m.memory.contains_key("goal"));
        assert_eq!(
            m.versions["memory.goal"].millis, 20,
            "the tombstone's clock is kept"
        );
    }
}

#[test]
fn a_field_without_a_version_takes_the_sessions_updated_at() {
    let mut early = base();
    early.updated_at = "2026-01-01T00:00:00.000Z".into();
    early.memory.insert("goal".into(), Value::from("early"));
    let mut late = base();
    late.updated_at = "2026-02-01T00:00:00.000Z".into();
    late.memory.insert("goal".into(), Value::from("late"));
    for m in [merge(&early, &late), merge(&late, &early)] {
        assert_eq!(m.memory["goal"], "late");
        assert_eq!(m.updated_at, "2026-02-01T00:00:00.000Z");
    }
}

fn plain_chart(id: &str, created_at: &str) -> StcChart {
    StcChart {
        id: id.into(),
        title: String::new(),
        desired_outcome: String::new(),
        current_reality: String::new(),
        actions: Vec::new(),
        status: ChartStatus::Active,
        created_at: created_at.into(),
        updated_at: created_at.into(),
        extra: Map::new(),
    }
}

fn plain_action(id: &str) -> StcAction {
    StcAction {
        id: id.into(),
        title: String::new(),
        completed: false,
        completed_at: None,
        order: None,
        extra: Map::new(),
    }
}

#[test]
fn the_same_chart_on_both_sides_merges_field_by_field_with_actions_unioned() {
    let chart = |title: &str, actions: &[&str]| StcChart {
        title: title.into(),
        actions: actions.iter().map(|id| plain_action(id)).collect(),
        ..plain_chart("c1", "2026-01-01T00:00:00.000Z")
    };
    let mut a = base();
    a.active_charts.push(chart("old title", &["a1"]));
    a.versions.insert(
        "activeCharts.c1.title".into(),
        Hlc {
            millis: 1,
            counter: 0,
            node: "a".into(),
        },
    );
    let mut b = base();
    let mut c = chart("new title", &["a2"]);
    c.status = ChartStatus::Resolved;
    b.active_charts.push(c);
    b.versions.insert(
        "activeCharts.c1.title".into(),
        Hlc {
            millis: 2,
            counter: 0,
            node: "b".into(),
        },
    );
    b.versions.insert(
        "activeCharts.c1.status".into(),
        Hlc {
            millis: 0,
            counter: 0,
            node: "b".into(),
        },
    );
    let m = merge(&a, &b);
    assert_eq!(m, merge(&b, &a));
    assert_eq!(m.active_charts.len(), 1);
    let c = &m.active_charts[0];
    assert_eq!(c.title, "new title", "the later title clock wins");
    assert_eq!(
        c.status,
        ChartStatus::Active,
        "a's status (at updatedAt) beats b's status at the epoch"
    );
    assert_eq!(ids(&c.actions, |x| &x.id), ["a1", "a2"]);
}

#[test]
fn values_equal_but_for_key_order_do_not_make_the_merge_depend_on_grouping() {
    // Three writes with one clock: two are the same object with keys in another order, and the
    // third's plain JSON text sorts between theirs. All groupings must agree.
    let with = |text: &str| {
        let mut s = base();
        s.memory
            .insert("k".into(), serde_json::from_str(text).unwrap());
        s.versions.insert(
            "memory.k".into(),
            Hlc {
                millis: 5,
                counter: 0,
                node: "n".into(),
            },
        );
        s
    };
    let (xy, xz, yx) = (
        with(r#"{"x":1,"y":2}"#),
        with(r#"{"xz":0}"#),
        with(r#"{"y":2,"x":1}"#),
    );
    let left = merge(&merge(&xy, &yx), &xz);
    let right = merge(&xy, &merge(&yx, &xz));
    assert_eq!(left.memory["k"], right.memory["k"]);
    assert_eq!(left, right);
}

#[test]
fn actions_added_from_the_other_side_are_sorted_by_order_then_id() {
    let mut a = base();
    let mut c = plain_chart("c1", "2026-01-01T00:00:00.000Z");
    c.actions.push(plain_action("a1"));
    a.active_charts.push(c);
    let mut b = base();
    let mut c = plain_chart("c1", "2026-01-01T00:00:00.000Z");
    c.actions.push(StcAction {
        order: Some(0.into()),
        ..plain_action("a2")
    });
    b.active_charts.push(c);
    for m in [merge(&a, &b), merge(&b, &a)] {
        assert_eq!(
            ids(&m.active_charts[0].actions, |x| &x.id),
            ["a2", "a1"],
            "a2 has an order, a1 none"
        );
    }
}

#[test]
fn a_chart_moves_when_the_other_side_knows_it_was_created_earlier() {
    let mut a = base();
    a.active_charts
        .push(plain_chart("c1", "2026-01-05T00:00:00.000Z"));
    a.active_charts
        .push(plain_chart("c2", "2026-01-03T00:00:00.000Z"));
    let mut b = base();
    b.active_charts
        .push(plain_chart("c1", "2026-01-01T00:00:00.000Z"));
    for m in [merge(&a, &b), merge(&b, &a)] {
        assert_eq!(ids(&m.active_charts, |c| &c.id), ["c1", "c2"]);
        assert_eq!(m.active_charts[0].created_at, "2026-01-01T00:00:00.000Z");
    }
}

#[test]
fn versions_of_the_merge_cover_every_register() {
    let mut a = base();
    a.memory.insert("goal".into(), Value::from(1));
    let m = merge(&a, &base());
    let paths: BTreeMap<_, _> = m.versions.iter().collect();
    assert!(paths.contains_key(&"memory.goal".to_string()));
    assert!(paths.contains_key(&"universeFocus".to_string()));
    assert!(paths.contains_key(&"storyPosition".to_string()));
}

/// A replica that first hears of a chart through a partial update (one action completed) must not
/// let the defaults it fills in (an empty title) beat the chart's real fields written elsewhere.
#[test]
fn a_partial_chart_update_never_erases_the_fields_it_left_out() {
    use mia_narrative_session::merge::apply_patch;
    use mia_narrative_session::update::parse_update;

    let mut full_side = base();
    let mut early = HybridClock::with_wall_clock("a", || 1_800_000_000_000);
    let full = parse_update(r#"{"activeCharts":[{"id":"c1","title":"Ship v1","actions":[{"id":"a1","title":"write docs"}]}]}"#)
        .unwrap()
        .into_patch(&mut early)
        .unwrap();
    apply_patch(&mut full_side, &full).unwrap();

    let mut partial_side = base();
    let mut later = HybridClock::with_wall_clock("b", || 1_800_000_000_500);
    let partial =
        parse_update(r#"{"activeCharts":[{"id":"c1","actions":[{"id":"a1","completed":true}]}]}"#)
            .unwrap()
            .into_patch(&mut later)
            .unwrap();
    apply_patch(&mut partial_side, &partial).unwrap();

    for merged in [
        merge(&full_side, &partial_side),
        merge(&partial_side, &full_side),
    ] {
        let chart = &merged.active_charts[0];
        assert_eq!(chart.title, "Ship v1");
        assert_eq!(chart.actions[0].title, "write docs");
        assert!(chart.actions[0].completed);
    }
}

proptest! {
    #![proptest_config(config())]

    /// The index a live session keeps beside its lists changes nothing about the result: merging
    /// any sequence of sessions with it gives exactly what merging them without it gives.
    #[test]
    fn merging_with_the_list_index_gives_what_merging_without_it_gives(
        sessions in vec(session(), 1..6)
    ) {
        use mia_narrative_session::merge::{apply_patch, apply_patch_indexed, SessionIndex, SessionPatch};
        let mut plain = base();
        let mut indexed = base();
        let mut index = SessionIndex::default();
        for s in &sessions {
            let patch = SessionPatch::from_session(s);
            let expected = apply_patch(&mut plain, &patch).unwrap();
            let got = apply_patch_indexed(&mut indexed, &patch, &mut index).unwrap();
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(&indexed, &plain);
            // However entries arrive (late ones are moved into place, many are sorted), the
            // lists stay in order of time, then id.
            prop_assert!(in_time_order(&plain.conversation_history), "{:?}", plain.conversation_history);
            prop_assert!(in_time_order(&plain.story_beats), "{:?}", plain.story_beats);
        }
    }
}

/// Whether a list is sorted by time (as milliseconds, then as text), then by id.
fn in_time_order<T: mia_narrative_session::model::ListEntry>(list: &[T]) -> bool {
    use mia_narrative_session::clock::parse_rfc3339_millis;
    let key = |e: &T| {
        (
            parse_rfc3339_millis(e.time()),
            e.time().to_string(),
            e.id().to_string(),
        )
    };
    list.windows(2).all(|pair| key(&pair[0]) < key(&pair[1]))
}

// ---------------------------------------------------------------------------------------------
// Clocks from beyond the bound (docs/merge.md, "Clocks").

/// 2100-01-01T00:00:00Z: a clock far beyond any store's bound.
const YEAR_2100: u64 = 4_102_444_800_000;
/// The wall clock of the store that stamps the updates below: after every time of the pool.
const STORE_WALL: u64 = 1_780_000_000_000;

/// A client's update of registers only: memory and config keys (null deletes), the focus, the
/// story position, and fields of charts and actions.
fn register_update() -> impl Strategy<Value = Value> {
    let maybe_null = || prop_oneof![4 => json_value(), 1 => Just(Value::Null)];
    let keys = |keys: &'static [&'static str]| {
        btree_map(select(keys.to_vec()), maybe_null(), 0..3).prop_map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<_, _>>()
        })
    };
    let chart = (
        select(vec!["c1", "c.3"]),
        "[a-z]{0,3}",
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(id, title, completed)| {
            let mut chart = serde_json::json!({"id": id, "title": title});
            if let Some(completed) = completed {
                chart["actions"] = serde_json::json!([{"id": "a1", "completed": completed}]);
            }
            chart
        });
    (
        keys(&MEMORY_KEYS),
        keys(&CONFIG_KEYS),
        proptest::option::of(select(vec!["engineer", "ceremony", "story", "all"])),
        proptest::option::of(story_position()),
        vec(chart, 0..2),
    )
        .prop_map(|(memory, config, focus, position, charts)| {
            let mut update = serde_json::json!({"memory": memory, "config": config});
            if let Some(focus) = focus {
                update["universeFocus"] = Value::from(focus);
            }
            if let Some(position) = position {
                update["storyPosition"] = serde_json::to_value(position).unwrap();
            }
            if !charts.is_empty() {
                update["activeCharts"] = Value::Array(charts);
            }
            update
        })
}

/// Moves some of a session's clocks to 2100, as a process whose clock read 2100 would have
/// written them: those of the paths `pick` selects.
fn from_2100(mut session: NarrativeSession, pick: &[bool]) -> NarrativeSession {
    for (version, moved) in session.versions.values_mut().zip(pick.iter().cycle()) {
        if *moved {
            version.millis = YEAR_2100 + version.millis % 1000;
        }
    }
    session
}

proptest! {
    #![proptest_config(config())]

    /// A store's write wins over every value the session it writes into holds, whatever clock
    /// wrote that value: one from 2100 included, which the store refuses to take into its clock.
    /// `lost_writes` finds nothing lost, and the write's clocks never go back in time.
    #[test]
    fn a_write_lands_on_the_session_it_was_made_on_whatever_clocks_it_holds(
        session in session(),
        pick in vec(any::<bool>(), 1..4),
        update in register_update(),
    ) {
        use mia_narrative_session::merge::{apply_patch, lost_writes, settle_update};
        use mia_narrative_session::update::parse_update;

        let mut target = normalize(&from_2100(session, &pick)).unwrap();
        let mut clock = HybridClock::with_wall_clock("srv", || STORE_WALL);
        clock.observe_all(target.versions.values());
        let patch = parse_update(&update.to_string()).unwrap().into_patch(&mut clock).unwrap();
        let settled = settle_update(&target, patch).unwrap();
        let before = target.clone();
        apply_patch(&mut target, &settled).unwrap();
        let lost = lost_writes(&target, &settled).unwrap();
        prop_assert!(lost.is_empty(), "lost {:?} of {} on {}", lost, update, serde_json::to_string(&before).unwrap());
        for (path, version) in &settled.versions {
            if let Some(held) = before.versions.get(path) {
                prop_assert!(version > held, "{}: {} is not after {}", path, version, held);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a merge reports, and the rules the laws leave open (any one of them would be a join).

/// `update` applied to `session` with a clock at `millis` (node "a"); its change paths, sorted.
fn apply_update(session: &mut NarrativeSession, update: &str, millis: u64) -> (Vec<String>, bool) {
    use mia_narrative_session::merge::apply_patch;
    use mia_narrative_session::update::parse_update;
    let mut clock = HybridClock::with_wall_clock("a", move || millis);
    let patch = parse_update(update)
        .unwrap()
        .into_patch(&mut clock)
        .unwrap();
    let changes = apply_patch(session, &patch).unwrap();
    let mut paths = changes.paths;
    paths.sort();
    (paths, changes.touched)
}

#[test]
fn a_merge_reports_the_path_of_each_value_it_changed_and_nothing_more() {
    let mut session = base();
    session.memory.insert("mood".into(), Value::from("calm"));
    let update = r#"{"universeFocus":"story","memory":{"goal":"ship","mood":null},
        "storyBeats":[{"id":"b7","description":"the turn"}],
        "conversationHistory":[{"id":"e1","role":"user","content":"hi","timestamp":"2026-01-01T00:00:01.000Z"}],
        "activeCharts":[{"id":"c1","title":"Ship","actions":[{"id":"a2","title":"docs"}]}]}"#;
    let (paths, touched) = apply_update(&mut session, update, 1_800_000_000_000);
    assert!(touched);
    assert_eq!(
        paths,
        [
            "activeCharts.c1",
            "activeCharts.c1.actions.a2",
            "activeCharts.c1.actions.a2.title",
            "activeCharts.c1.title",
            "conversationHistory.e1",
            "memory.goal",
            "memory.mood",
            "storyBeats.b7",
            "universeFocus",
        ]
    );

    // The same values again, with a later clock: the clocks move, no value changes.
    let (paths, touched) = apply_update(&mut session, update, 1_800_000_001_000);
    assert!(touched, "newer clocks are a change to save");
    assert_eq!(paths, Vec::<String>::new());

    let (paths, _) = apply_update(
        &mut session,
        r#"{"activeCharts":[{"id":"c1","actions":[{"id":"a2","completed":true}]}]}"#,
        1_800_000_002_000,
    );
    assert_eq!(paths, vec!["activeCharts.c1.actions.a2.completed"]);
}

#[test]
fn ids_converge_on_the_smallest_non_empty_one() {
    let mut a = base();
    a.id = "s2".into();
    let mut b = base();
    b.id = "s1".into();
    let mut none = base();
    none.id = String::new();
    assert_eq!(merge(&a, &b).id, "s1");
    assert_eq!(merge(&b, &a).id, "s1");
    assert_eq!(merge(&none, &a).id, "s2");
}

#[test]
fn of_two_values_with_the_same_clock_the_larger_json_text_wins() {
    let clock = Hlc {
        millis: 10,
        counter: 0,
        node: "n1".into(),
    };
    let with_goal = |goal: &str| {
        let mut s = base();
        s.memory.insert("goal".into(), Value::from(goal));
        s.versions.insert("memory.goal".into(), clock.clone());
        s
    };
    let (small, large) = (with_goal("alpha"), with_goal("beta"));
    assert_eq!(merge(&small, &large).memory["goal"], "beta");
    assert_eq!(merge(&large, &small).memory["goal"], "beta");
}

#[test]
fn a_session_text_of_exactly_the_limit_is_taken_and_one_byte_more_is_refused() {
    use mia_narrative_session::error::ErrorCode;
    use mia_narrative_session::merge::parse_session_text;
    let text = text_of(&base());
    let at_limit: NarrativeSession = parse_session_text(&text, "a", text.len()).unwrap();
    assert_eq!(at_limit, base());
    let err = parse_session_text::<ConversationEntry>(&text, "a", text.len() - 1).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    let err = merge_session_texts(
        Text::Utf8(text.clone()),
        Text::Utf8(text.clone()),
        text.len() - 1,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
}

/// Copies large enough to be parsed on two threads merge as small ones do.
#[test]
fn large_copies_merge_to_what_merging_the_sessions_gives() {
    let entry = |n: usize| ConversationEntry {
        id: format!("e{n:05}"),
        role: Role::User,
        content: format!("entry {n} {}", "words ".repeat(40)),
        universe: None,
        timestamp: format!("2026-01-01T00:{:02}:{:02}.000Z", n / 60 % 60, n % 60),
        trace_id: None,
        extra: Map::new(),
    };
    let with_entries = |range: std::ops::Range<usize>| {
        let mut s = base();
        s.conversation_history = range.map(entry).collect();
        s
    };
    let (a, b) = (with_entries(0..1_200), with_entries(600..1_800));
    let (a_text, b_text) = (text_of(&a), text_of(&b));
    assert!(
        a_text.len().min(b_text.len()) > 256 * 1024,
        "over the two-thread size"
    );
    let merged = parsed(&merge_texts(&a_text, &b_text));
    assert_eq!(merged, merge(&a, &b));
    assert_eq!(merged.conversation_history.len(), 1_800);
}

/// A chart first heard of through a partial update gets a clock for every register: the lowest
/// there is for each default it fills in, so that any real write of them wins wherever it is merged.
#[test]
fn a_new_chart_gets_a_clock_for_every_register_and_its_defaults_the_lowest() {
    let mut s = base();
    apply_update(
        &mut s,
        r#"{"activeCharts":[{"id":"c1","actions":[{"id":"a1","completed":true}]}]}"#,
        1_800_000_000_000,
    );
    let lowest = Hlc {
        millis: 0,
        counter: 0,
        node: String::new(),
    };
    let written = Hlc {
        millis: 1_800_000_000_000,
        counter: 0,
        node: "a".into(),
    };
    let want: BTreeMap<String, Hlc> = [
        ("activeCharts.c1.actions.a1.completed", &written),
        ("activeCharts.c1.actions.a1.completedAt", &lowest),
        ("activeCharts.c1.actions.a1.order", &lowest),
        ("activeCharts.c1.actions.a1.title", &lowest),
        ("activeCharts.c1.currentReality", &lowest),
        ("activeCharts.c1.desiredOutcome", &lowest),
        ("activeCharts.c1.status", &lowest),
        ("activeCharts.c1.title", &lowest),
    ]
    .into_iter()
    .map(|(path, clock)| (path.to_string(), clock.clone()))
    .collect();
    assert_eq!(s.versions, want);
}

/// A client that resends entries without their times (a replay after a reconnect) neither moves
/// nor changes them; a new entry sent without a time takes the update's. Both for a few entries
/// (looked up one by one) and for many (looked up through an index).
#[test]
fn entries_resent_without_a_time_keep_the_time_they_have() {
    for count in [2usize, 12] {
        let mut session = base();
        let listed: Vec<String> = (0..count)
            .map(|n| {
                format!(r#"{{"id":"e{n}","role":"user","content":"c{n}","timestamp":"2026-01-01T00:00:{n:02}.000Z"}}"#)
            })
            .collect();
        let update = format!(r#"{{"conversationHistory":[{}]}}"#, listed.join(","));
        apply_update(&mut session, &update, 1_800_000_000_000);
        let resent: Vec<String> = (0..count)
            .rev()
            .map(|n| format!(r#"{{"id":"e{n}","role":"user","content":"c{n}"}}"#))
            .chain([r#"{"id":"new","role":"user","content":"new"}"#.to_string()])
            .collect();
        let update = format!(r#"{{"conversationHistory":[{}]}}"#, resent.join(","));
        let (paths, _) = apply_update(&mut session, &update, 1_800_000_001_000);
        assert_eq!(paths, ["conversationHistory.new"], "{count} resent");
        let times: BTreeMap<&str, &str> = session
            .conversation_history
            .iter()
            .map(|e| (e.id.as_str(), e.timestamp.as_str()))
            .collect();
        for n in 0..count {
            assert_eq!(
                times[format!("e{n}").as_str()],
                format!("2026-01-01T00:00:{n:02}.000Z")
            );
        }
        assert_eq!(times["new"], "2027-01-15T08:00:01.000Z");
    }
}

/// An update that sends values the session already holds (a client replaying its state after a
/// reconnect) writes none of them: settled, they are dropped, so that they cannot beat a real
/// change made meanwhile elsewhere with their newer clock. A changed value stays a write.
#[test]
fn values_resent_unchanged_are_not_writes() {
    use mia_narrative_session::merge::settle_update;
    use mia_narrative_session::update::parse_update;
    let state = r#"{"universeFocus":"story","storyPosition":{"arc":"one","beat":2,"phase":"rise"},
        "memory":{"goal":"ship","gone":null},"config":{"theme":"dark"},
        "activeCharts":[{"id":"c1","title":"Ship","actions":[{"id":"a2","title":"docs"}]},
                        {"id":"c2","title":"Rest"}]}"#;
    let mut session = base();
    apply_update(&mut session, state, 1_800_000_000_000);
    let settle = |update: &str| {
        let mut clock = HybridClock::with_wall_clock("b", || 1_800_000_005_000);
        let patch = parse_update(update)
            .unwrap()
            .into_patch(&mut clock)
            .unwrap();
        settle_update(&session, patch).unwrap()
    };

    let replay = settle(state);
    assert_eq!(replay.universe_focus, None);
    assert!(replay.story_position.is_none());
    assert!(
        replay.memory.is_empty() && replay.config.is_empty(),
        "{replay:?}"
    );
    // What is left of each chart: its id, its actions and its times, no register.
    let registers = |chart: &Map<String, Value>| {
        let meta = ["id", "actions", "createdAt", "updatedAt"];
        chart.keys().filter(|k| !meta.contains(&k.as_str())).count()
    };
    assert_eq!(registers(&replay.charts[0]), 0, "{:?}", replay.charts[0]);
    assert_eq!(registers(&replay.charts[1]), 0, "{:?}", replay.charts[1]);
    let actions = replay.charts[0]["actions"].as_array().unwrap();
    assert_eq!(actions[0], serde_json::json!({ "id": "a2" }));

    let changed = settle(
        r#"{"universeFocus":"engineer","memory":{"goal":"rest","gone":null},"config":{"theme":"light"},
            "activeCharts":[{"id":"c2","title":"Ship"},{"id":"c1","actions":[{"id":"a2","title":"more docs"}]}]}"#,
    );
    assert_eq!(changed.universe_focus, Some(UniverseFocus::Engineer));
    assert_eq!(
        changed.memory,
        Map::from_iter([("goal".into(), Value::from("rest"))])
    );
    assert_eq!(changed.config["theme"], "light");
    assert_eq!(changed.charts[0]["title"], "Ship");
    assert_eq!(changed.charts[1]["actions"][0]["title"], "more docs");
}

/// What a host tells a writer rests on `lost_writes`: the writes a merge took in that the session
/// does not hold afterwards (each lost to a later write), and no write that landed.
#[test]
fn a_write_that_lost_to_a_later_one_is_reported_lost_and_one_that_landed_is_not() {
    use mia_narrative_session::merge::{apply_patch, lost_writes, settle_update};
    use mia_narrative_session::update::parse_update;
    let mut session = base();
    apply_update(
        &mut session,
        r#"{"memory":{"goal":"later"},
            "activeCharts":[{"id":"c1","title":"Later","actions":[{"id":"a1","title":"later"}]}],
            "conversationHistory":[{"id":"e1","role":"user","content":"theirs, the longer one","timestamp":"2026-01-01T00:00:01.000Z"}]}"#,
        1_800_000_010_000,
    );
    // Made on a copy that had not seen those writes yet (another instance's), with a clock before
    // theirs, and merged into the session only now.
    let mut clock = HybridClock::with_wall_clock("b", || 1_800_000_000_000);
    let patch = parse_update(
        r#"{"universeFocus":"story","memory":{"goal":"earlier","fresh":1},
            "activeCharts":[{"id":"c1","title":"Earlier","actions":[{"id":"a1","title":"earlier"}]}],
            "conversationHistory":[{"id":"e1","role":"user","content":"mine","timestamp":"2026-01-01T00:00:01.000Z"},
                                   {"id":"e2","role":"user","content":"new","timestamp":"2026-01-01T00:00:02.000Z"}]}"#,
    )
    .unwrap()
    .into_patch(&mut clock)
    .unwrap();
    let settled = settle_update(&base(), patch).unwrap();
    apply_patch(&mut session, &settled).unwrap();
    let mut lost = lost_writes(&session, &settled).unwrap();
    lost.sort();
    assert_eq!(
        lost,
        [
            "activeCharts.c1.actions.a1.title",
            "activeCharts.c1.title",
            "conversationHistory.e1",
            "memory.goal"
        ]
    );
    assert_eq!(
        session.conversation_history[0].content,
        "theirs, the longer one"
    );
    assert_eq!(session.memory["fresh"], 1);
    assert_eq!(session.universe_focus, UniverseFocus::Story);
}

/// Long lists take the indexed paths of the union (more than a few items at once): each id is
/// kept once, the copy with the larger text wins, and the list stays in time order.
#[test]
fn long_lists_union_by_id_with_the_larger_copy_winning() {
    let entry = |n: usize, version: u8| ConversationEntry {
        id: format!("e{n:03}"),
        role: Role::User,
        content: format!("v{version} {n}"),
        universe: None,
        timestamp: format!("2026-01-01T{:02}:{:02}:00.000Z", n / 60, n % 60),
        trace_id: None,
        extra: Map::new(),
    };
    let version_in_b = |n: usize| if (200..250).contains(&n) { 2 } else { 1 };
    let mut a = base();
    a.conversation_history = (0..300).map(|n| entry(n, 1)).collect();
    let mut b = base();
    b.conversation_history = (150..450).map(|n| entry(n, version_in_b(n))).collect();
    let want: Vec<ConversationEntry> = (0..450).map(|n| entry(n, version_in_b(n))).collect();
    assert_eq!(merge(&a, &b).conversation_history, want);
    assert_eq!(merge(&b, &a).conversation_history, want);

    // Into a long history, an update of 20: 10 newer copies of kept entries, 10 new ones.
    let mut session = a.clone();
    let update: Vec<String> = (290..310)
        .map(|n| {
            let e = entry(n, 2);
            format!(
                r#"{{"id":"{}","role":"user","content":"{}","timestamp":"{}"}}"#,
                e.id, e.content, e.timestamp
            )
        })
        .collect();
    let (paths, _) = apply_update(
        &mut session,
        &format!(r#"{{"conversationHistory":[{}]}}"#, update.join(",")),
        1_800_000_000_000,
    );
    assert_eq!(paths.len(), 20);
    let want: Vec<ConversationEntry> = (0..310)
        .map(|n| entry(n, if n >= 290 { 2 } else { 1 }))
        .collect();
    assert_eq!(session.conversation_history, want);
}

#[test]
fn of_two_copies_of_one_id_in_one_update_the_larger_is_kept() {
    for (first, second) in [("v1", "v2"), ("v2", "v1")] {
        let mut session = base();
        let update = format!(
            r#"{{"conversationHistory":[
                {{"id":"d","role":"user","content":"{first}","timestamp":"2026-01-01T00:00:01.000Z"}},
                {{"id":"d","role":"user","content":"{second}","timestamp":"2026-01-01T00:00:01.000Z"}}]}}"#
        );
        apply_update(&mut session, &update, 1_800_000_000_000);
        let contents: Vec<&str> = session
            .conversation_history
            .iter()
            .map(|e| e.content.as_str())
            .collect();
        assert_eq!(contents, ["v2"]);
    }
}

/// A history out of time order (a file edited by hand; here reversed) comes out sorted from a
/// merge that interleaves many entries with it.
#[test]
fn a_history_out_of_order_comes_out_of_a_long_merge_sorted() {
    let line = |n: usize| {
        format!(
            r#"{{"id":"e{n:03}","role":"user","content":"c","timestamp":"2026-01-01T00:{:02}:{:02}.000Z"}}"#,
            n / 60,
            n % 60
        )
    };
    let mut session = base();
    let odd: Vec<String> = (0..40).filter(|n| n % 2 == 1).map(line).collect();
    apply_update(
        &mut session,
        &format!(r#"{{"conversationHistory":[{}]}}"#, odd.join(",")),
        1_800_000_000_000,
    );
    session.conversation_history.reverse();
    let even: Vec<String> = (0..40).filter(|n| n % 2 == 0).map(line).collect();
    apply_update(
        &mut session,
        &format!(r#"{{"conversationHistory":[{}]}}"#, even.join(",")),
        1_800_000_001_000,
    );
    let ids: Vec<String> = session
        .conversation_history
        .iter()
        .map(|e| e.id.clone())
        .collect();
    let want: Vec<String> = (0..40).map(|n| format!("e{n:03}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn of_two_copies_of_a_beat_the_larger_text_wins_whichever_side_it_is_on() {
    let with_beat = |description: &str| {
        let mut s = base();
        s.story_beats = vec![StoryBeat {
            id: "b1".into(),
            description: description.into(),
            kind: "turn".into(),
            universe_annotations: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            extra: Map::new(),
        }];
        s
    };
    let (small, large) = (with_beat("alpha"), with_beat("beta"));
    assert_eq!(merge(&small, &large).story_beats[0].description, "beta");
    assert_eq!(merge(&large, &small).story_beats[0].description, "beta");
}

/// `-0.0` and `0.0` are equal values, so they must rank as one text among tied clocks; else the
/// result of merging three copies depends on their grouping.
#[test]
fn minus_zero_ranks_as_zero_among_tied_clocks() {
    let clock = Hlc {
        millis: 10,
        counter: 0,
        node: "n1".into(),
    };
    let with_x = |x: Value| {
        let mut s = base();
        s.memory.insert("x".into(), x);
        s.versions.insert("memory.x".into(), clock.clone());
        s
    };
    let (minus_zero, minus_one, zero) = (
        with_x(serde_json::json!(-0.0)),
        with_x(Value::from(-1)),
        with_x(serde_json::json!(0.0)),
    );
    let left = merge(&merge(&minus_zero, &zero), &minus_one);
    let right = merge(&minus_zero, &merge(&zero, &minus_one));
    assert_eq!(left.memory["x"], right.memory["x"]);
    assert_eq!(left.memory["x"], serde_json::json!(0.0));
}

/// A session's list index notices a list changed without it (its length differs) and is rebuilt
/// before the next merge uses it.
#[test]
fn the_list_index_is_rebuilt_when_its_list_was_changed_without_it() {
    use mia_narrative_session::merge::{apply_patch_indexed, SessionIndex};
    use mia_narrative_session::update::parse_update;
    let mut session = base();
    let mut index = SessionIndex::default();
    let mut merge_in = |session: &mut NarrativeSession, update: &str, millis: u64| {
        let mut clock = HybridClock::with_wall_clock("a", move || millis);
        let patch = parse_update(update)
            .unwrap()
            .into_patch(&mut clock)
            .unwrap();
        apply_patch_indexed(session, &patch, &mut index).unwrap()
    };
    let line = |id: &str, content: &str, second: u32| {
        format!(
            r#"{{"id":"{id}","role":"user","content":"{content}","timestamp":"2026-01-01T00:00:{second:02}.000Z"}}"#
        )
    };
    let three = [line("e1", "a", 1), line("e2", "a", 2), line("e3", "a", 3)].join(",");
    merge_in(
        &mut session,
        &format!(r#"{{"conversationHistory":[{three}]}}"#),
        1_800_000_000_000,
    );
    session.conversation_history.remove(0);
    let changes = merge_in(
        &mut session,
        &format!(r#"{{"conversationHistory":[{}]}}"#, line("e3", "b", 3)),
        1_800_000_001_000,
    );
    assert_eq!(changes.paths, ["conversationHistory.e3"]);
    let contents: Vec<(&str, &str)> = session
        .conversation_history
        .iter()
        .map(|e| (e.id.as_str(), e.content.as_str()))
        .collect();
    assert_eq!(contents, [("e2", "a"), ("e3", "b")]);
}

/// Of two copies of one entry in one update, one is kept: the update's write of that entry landed,
/// and is not reported lost, whichever copy came first.
#[test]
fn two_copies_of_one_entry_in_one_update_are_not_reported_lost() {
    use mia_narrative_session::merge::{apply_patch, lost_writes, settle_update};
    use mia_narrative_session::update::parse_update;
    for (first, second) in [("v1", "v2"), ("v2", "v1")] {
        let mut session = base();
        let mut clock = HybridClock::with_wall_clock("a", || 1_800_000_000_000);
        let update = format!(
            r#"{{"conversationHistory":[
                {{"id":"d","role":"user","content":"{first}","timestamp":"2026-01-01T00:00:01.000Z"}},
                {{"id":"d","role":"user","content":"{second}","timestamp":"2026-01-01T00:00:01.000Z"}}]}}"#
        );
        let patch = parse_update(&update)
            .unwrap()
            .into_patch(&mut clock)
            .unwrap();
        let settled = settle_update(&session, patch).unwrap();
        apply_patch(&mut session, &settled).unwrap();
        assert_eq!(
            lost_writes(&session, &settled).unwrap(),
            Vec::<String>::new()
        );
    }
}

/// Two texts of one entry (the same entry written differently): the merged text keeps the larger,
/// as strings compare (here the compact one: `"` sorts after a newline).
#[test]
fn of_two_texts_of_one_entry_the_larger_is_kept() {
    let mut session = base();
    session.conversation_history = vec![ConversationEntry {
        id: "e1".into(),
        role: Role::User,
        content: "hello".into(),
        universe: None,
        timestamp: "2026-01-01T00:00:01.000Z".into(),
        trace_id: None,
        extra: Map::new(),
    }];
    let (compact, spaced) = (text_of(&session), respelled(&session));
    let spaced_entry = entry_texts(std::str::from_utf8(&spaced).unwrap());
    let compact_entry = entry_texts(std::str::from_utf8(&compact).unwrap());
    assert!(compact_entry[0] > spaced_entry[0]);
    assert_eq!(entry_texts(&merge_texts(&compact, &spaced)), compact_entry);
    assert_eq!(entry_texts(&merge_texts(&spaced, &compact)), compact_entry);
}
