//! A client's update: any subset of a session's fields, checked and turned into a merge patch.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::clock::{Hlc, HybridClock};
use crate::error::{Result, StoreError};
use crate::merge::{PatchMode, SessionPatch};
use crate::model::{
    check_id, check_time, validate_chart, ConversationEntry, StcChart, StoryBeat, StoryPosition,
    UniverseFocus,
};

/// How far ahead of this server's clock a client's explicit version may be (the store's bound on
/// every clock it reads). A version further ahead would win every later write for that long; it
/// is refused instead.
pub use crate::clock::MAX_CLOCK_AHEAD_MS;

/// The fields a client may send. Server-owned fields are accepted, so that a client may send back a
/// whole session, and ignored: the server never takes identity from a client.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionUpdate {
    #[serde(default, alias = "universFocus")]
    universe_focus: Option<UniverseFocus>,
    #[serde(default)]
    story_position: Option<StoryPosition>,
    #[serde(default)]
    memory: Option<Map<String, Value>>,
    #[serde(default)]
    config: Option<Map<String, Value>>,
    #[serde(default)]
    active_charts: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    story_beats: Option<Vec<StoryBeat>>,
    #[serde(default)]
    conversation_history: Option<Vec<ConversationEntry>>,
    #[serde(default)]
    versions: Option<BTreeMap<String, Hlc>>,
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "userId")]
    _user_id: Option<IgnoredAny>,
    #[serde(default, rename = "workspaceId")]
    _workspace_id: Option<IgnoredAny>,
    #[serde(default, rename = "createdAt")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updatedAt")]
    _updated_at: Option<IgnoredAny>,
}

/// A client's update, parsed and checked but not yet stamped with a clock.
pub struct ClientUpdate(SessionUpdate);

/// Parse and check an update (JSON text). Nothing here needs the store's clock, so a large update
/// is parsed without holding it.
pub fn parse_update(text: &str) -> Result<ClientUpdate> {
    // serde would also read a struct from an array; an update must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(StoreError::invalid("an update must be a JSON object"));
    }
    let update: SessionUpdate = serde_json::from_str(text)
        .map_err(|e| StoreError::invalid(format!("malformed update: {e}")))?;
    for chart in update.active_charts.iter().flatten() {
        check_chart_patch(chart)?;
    }
    for beat in update.story_beats.iter().flatten() {
        check_id("story beat id", &beat.id)?;
        check_time("story beat createdAt", &beat.created_at)?;
    }
    for entry in update.conversation_history.iter().flatten() {
        check_id("conversation entry id", &entry.id)?;
        check_time("conversation entry timestamp", &entry.timestamp)?;
    }
    Ok(ClientUpdate(update))
}

impl ClientUpdate {
    /// Stamp the update with `clock` and make it a merge patch.
    ///
    /// Fields without an explicit version take a fresh clock tick; explicit versions are observed
    /// first, so the tick is later than all of them. New charts with no times get the tick's time;
    /// beats and entries with no time get theirs in [`crate::merge::apply_patch`], which knows
    /// whether they are new.
    pub fn into_patch(self, clock: &mut HybridClock) -> Result<SessionPatch> {
        let update = self.0;
        let versions = update.versions.unwrap_or_default();
        if let Some((path, _)) = versions.iter().find(|(_, v)| clock.is_too_far_ahead(v)) {
            return Err(StoreError::invalid(format!(
                "version of {path:?} is more than an hour ahead of the server clock"
            )));
        }
        clock.observe_all(versions.values());
        let stamp = clock.now();
        // Charts are stamped as `updatedAt` is: never later than this machine's clock.
        let now = clock.time_of(&stamp);

        let mut patch = SessionPatch::empty(stamp, PatchMode::Update);
        patch.versions = versions;
        patch.universe_focus = update.universe_focus;
        patch.story_position = update.story_position;
        patch.memory = update.memory.unwrap_or_default();
        patch.config = update.config.unwrap_or_default();
        for mut chart in update.active_charts.unwrap_or_default() {
            for field in ["createdAt", "updatedAt"] {
                chart
                    .entry(field)
                    .or_insert_with(|| Value::String(now.clone()));
            }
            patch.charts.push(chart);
        }
        patch.beats = update.story_beats.unwrap_or_default();
        patch.entries = update.conversation_history.unwrap_or_default();
        Ok(patch)
    }
}

/// A partial chart must still read as a chart: an id, and every field it has of the right type.
fn check_chart_patch(chart: &Map<String, Value>) -> Result<()> {
    let typed = StcChart::deserialize(&Value::Object(chart.clone()))
        .map_err(|e| StoreError::invalid(format!("malformed chart: {e}")))?;
    validate_chart(&typed)?;
    if let Some(actions) = chart.get("actions") {
        // Each action is merged on its own, so each must carry an id of its own.
        let all_have_ids = actions.as_array().is_some_and(|list| {
            list.iter()
                .all(|a| a.get("id").is_some_and(Value::is_string))
        });
        if !all_have_ids {
            return Err(StoreError::invalid("every action needs a string id"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> HybridClock {
        HybridClock::with_wall_clock("srv", || 1_800_000_000_000)
    }

    fn parse_update(text: &str, clock: &mut HybridClock) -> Result<SessionPatch> {
        super::parse_update(text)?.into_patch(clock)
    }

    #[test]
    fn an_update_takes_a_fresh_server_clock() {
        let patch = parse_update(
            r#"{"universeFocus":"story","memory":{"k":1}}"#,
            &mut clock(),
        )
        .unwrap();
        assert_eq!(patch.universe_focus, Some(UniverseFocus::Story));
        assert_eq!(patch.clock.node, "srv");
        assert_eq!(patch.mode, PatchMode::Update);
    }

    #[test]
    fn new_entries_without_a_time_get_the_stamp() {
        let patch = parse_update(
            r#"{"conversationHistory":[{"id":"e1","role":"user","content":"hi"}],"activeCharts":[{"id":"c"}]}"#,
            &mut clock(),
        )
        .unwrap();
        assert_eq!(patch.charts[0]["createdAt"], "2027-01-15T08:00:00.000Z");
        let mut session =
            crate::model::NarrativeSession::new("s".into(), "u".into(), "w".into(), String::new());
        crate::merge::apply_patch(&mut session, &patch).unwrap();
        assert_eq!(
            session.conversation_history[0].timestamp,
            "2027-01-15T08:00:00.000Z"
        );
    }

    #[test]
    fn malformed_updates_are_refused_with_einvalid() {
        for bad in [
            "[]",
            "{",
            r#"{"universeFocus":"galaxy"}"#,
            r#"{"unknownField":1}"#,
            r#"{"activeCharts":[{"title":"no id"}]}"#,
            r#"{"activeCharts":[{"id":"c","title":null}]}"#,
            r#"{"activeCharts":[{"id":"c","actions":[{"title":"no id"}]}]}"#,
            r#"{"storyBeats":[{"id":"","description":"x"}]}"#,
            r#"{"conversationHistory":[{"id":"e","role":"user","timestamp":"yesterday"}]}"#,
            r#"{"versions":{"memory.k":"garbage"}}"#,
            r#"{"versions":{"memory.k":"9999999999999-0000-x"}}"#,
        ] {
            let err = parse_update(bad, &mut clock())
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            assert_eq!(err.code, crate::error::ErrorCode::Invalid, "{bad}");
        }
    }

    /// JSON text whose number is too large for a double (the socket's text, a Rust caller's) is
    /// refused: serde_json reads `1e309` as out of range, never as infinity or null.
    #[test]
    fn a_number_json_cannot_hold_is_refused_and_not_read_as_a_deletion() {
        for bad in [
            r#"{"memory":{"keep":1e309}}"#,
            r#"{"memory":{"keep":-1e309}}"#,
            r#"{"config":{"list":[1,2e400]}}"#,
            r#"{"memory":{"keep":NaN}}"#,
            r#"{"memory":{"keep":Infinity}}"#,
        ] {
            let err = parse_update(bad, &mut clock())
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            assert_eq!(err.code, crate::error::ErrorCode::Invalid, "{bad}");
        }
        // The largest double is a number like any other.
        let patch = parse_update(
            r#"{"memory":{"keep":1.7976931348623157e308}}"#,
            &mut clock(),
        );
        assert_eq!(patch.unwrap().memory["keep"], 1.7976931348623157e308);
    }

    #[test]
    fn identity_fields_from_a_client_are_ignored() {
        let patch =
            parse_update(r#"{"userId":"mallory","id":"x","memory":{}}"#, &mut clock()).unwrap();
        assert!(patch.identity.is_none());
    }
}
