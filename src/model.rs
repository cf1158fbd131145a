//! The narrative session: what is stored, merged and sent to clients (design.md, section 2).
//!
//! Charts, actions, beats and conversation entries keep any field they do not know in `extra`, so a
//! newer client's data survives a round trip through an older server untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::{parse_rfc3339_millis, Hlc};
use crate::error::{Result, StoreError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UniverseFocus {
    Engineer,
    Ceremony,
    Story,
    #[default]
    All,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartStatus {
    #[default]
    Active,
    Resolved,
    Archived,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Agent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Universe {
    Engineer,
    Ceremony,
    Story,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoryPosition {
    #[serde(default)]
    pub arc: String,
    #[serde(default)]
    pub beat: u32,
    #[serde(default)]
    pub phase: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A Structural Tension Chart: the desired outcome, the current reality, and the actions between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StcChart {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub desired_outcome: String,
    #[serde(default)]
    pub current_reality: String,
    #[serde(default)]
    pub actions: Vec<StcAction>,
    #[serde(default)]
    pub status: ChartStatus,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StcAction {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub completed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Position among the chart's actions; actions sort by `order`, then by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<serde_json::Number>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UniverseAnnotations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engineer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceremony: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoryBeat {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// Free text; upstream uses commit, deploy, review, chart-complete, analysis, custom, …
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universe_annotations: Option<UniverseAnnotations>,
    #[serde(default)]
    pub created_at: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationEntry {
    pub id: String,
    pub role: Role,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universe: Option<Universe>,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One user's narrative context in one workspace. Its conversation entries are parsed
/// [`ConversationEntry`]s, or, in a merge of JSON texts, [`RawEntry`](crate::raw::RawEntry)s that
/// keep the text they came as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NarrativeSession<E = ConversationEntry> {
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub created_at: String,
    pub updated_at: String,
    /// The request spells it `universFocus`; that spelling is accepted on input.
    #[serde(default, alias = "universFocus")]
    pub universe_focus: UniverseFocus,
    #[serde(default)]
    pub active_charts: Vec<StcChart>,
    #[serde(default)]
    pub story_beats: Vec<StoryBeat>,
    #[serde(default)]
    pub story_position: StoryPosition,
    #[serde(default)]
    pub memory: Map<String, Value>,
    #[serde(default = "Vec::new")]
    pub conversation_history: Vec<E>,
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The clock of each last-write-wins field, by path (`"memory.goal"`). A path whose value is
    /// absent records a deletion. A field with no entry takes `updatedAt` as its clock.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, Hlc>,
}

impl NarrativeSession {
    /// A new, empty session created at `now` (RFC 3339).
    pub fn new(id: String, user_id: String, workspace_id: String, now: String) -> Self {
        NarrativeSession {
            id,
            user_id,
            workspace_id,
            created_at: now.clone(),
            updated_at: now,
            universe_focus: UniverseFocus::All,
            active_charts: Vec::new(),
            story_beats: Vec::new(),
            story_position: StoryPosition::default(),
            memory: Map::new(),
            conversation_history: Vec::new(),
            config: Map::new(),
            versions: BTreeMap::new(),
        }
    }
}

impl<E> NarrativeSession<E> {
    /// The session without its conversation history, and the history.
    pub fn into_parts(self) -> (NarrativeSession, Vec<E>) {
        let mut history = Vec::new();
        let rest = self.map_history(|entries| {
            history = entries;
            Vec::new()
        });
        (rest, history)
    }

    /// The session with its conversation history made by `f` from the one it has.
    pub fn map_history<F>(self, f: impl FnOnce(Vec<E>) -> Vec<F>) -> NarrativeSession<F> {
        NarrativeSession {
            id: self.id,
            user_id: self.user_id,
            workspace_id: self.workspace_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            universe_focus: self.universe_focus,
            active_charts: self.active_charts,
            story_beats: self.story_beats,
            story_position: self.story_position,
            memory: self.memory,
            conversation_history: f(self.conversation_history),
            config: self.config,
            versions: self.versions,
        }
    }
}

/// Something with a stable id, kept in an append-only list.
pub trait ListEntry {
    fn id(&self) -> &str;
    /// The time the list is ordered by (RFC 3339).
    fn time(&self) -> &str;
    /// That time in milliseconds since 1970, if it is readable.
    fn millis(&self) -> Option<i64> {
        parse_rfc3339_millis(self.time())
    }
    /// [`hash_id`] of the id.
    fn id_hash(&self) -> u64 {
        hash_id(self.id())
    }
}

/// The hash of an entry id that the merge's maps use: foldhash, several times faster than std's
/// SipHash on short keys, and seeded at random per process, so ids that collide cannot be prepared
/// in advance.
pub fn hash_id(id: &str) -> u64 {
    static STATE: std::sync::LazyLock<foldhash::quality::RandomState> =
        std::sync::LazyLock::new(Default::default);
    std::hash::BuildHasher::hash_one(&*STATE, id)
}

impl ListEntry for StcChart {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> &str {
        &self.created_at
    }
}

impl ListEntry for StoryBeat {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> &str {
        &self.created_at
    }
}

impl ListEntry for ConversationEntry {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> &str {
        &self.timestamp
    }
}

/// `serde_json::from_slice`, but faster for sessions: the text's UTF-8 is checked once, in one pass,
/// instead of string by string (a 3 MB session parses in about 35% less time).
pub fn from_json_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    let text = std::str::from_utf8(bytes).map_err(serde::de::Error::custom)?;
    serde_json::from_str(text)
}

/// The `updatedAt` of a session's JSON text as the store writes it (fields in declaration order:
/// it follows `id`, `userId`, `workspaceId` and `createdAt`), read without parsing the text; None
/// when it is not within the first few KiB or not a plain string. For looking, not for trusting:
/// a text read this way is parsed in full before anything depends on it.
pub fn peek_updated_at(text: &str) -> Option<&str> {
    // Ids are at most 1 KiB, and JSON escapes make a byte at most 6.
    const HEAD: usize = 4 * 6 * MAX_ID_BYTES + 256;
    const KEY: &str = r#","updatedAt":""#;
    let head = &text.as_bytes()[..text.len().min(HEAD)];
    let start = head.windows(KEY.len()).position(|w| w == KEY.as_bytes())? + KEY.len();
    let len = text.as_bytes()[start..]
        .iter()
        .take(64)
        .position(|&b| b == b'"')?;
    text.get(start..start + len)
}

/// The longest id (user, workspace, chart, action, beat or entry) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// Check the rules serde cannot: ids present and of sane length, times in RFC 3339.
pub fn validate_session<E: ListEntry>(session: &NarrativeSession<E>) -> Result<()> {
    check_id("session id", &session.id)?;
    check_id("userId", &session.user_id)?;
    check_id("workspaceId", &session.workspace_id)?;
    check_time("createdAt", &session.created_at)?;
    check_time("updatedAt", &session.updated_at)?;
    for chart in &session.active_charts {
        validate_chart(chart)?;
    }
    for beat in &session.story_beats {
        check_id("story beat id", &beat.id)?;
        check_time("story beat createdAt", &beat.created_at)?;
    }
    for entry in &session.conversation_history {
        check_id("conversation entry id", entry.id())?;
        check_read_time("conversation entry timestamp", entry.time(), entry.millis())?;
    }
    Ok(())
}

pub fn validate_chart(chart: &StcChart) -> Result<()> {
    check_id("chart id", &chart.id)?;
    check_time("chart createdAt", &chart.created_at)?;
    check_time("chart updatedAt", &chart.updated_at)?;
    for action in &chart.actions {
        check_id("action id", &action.id)?;
        if let Some(done) = &action.completed_at {
            check_time("action completedAt", done)?;
        }
    }
    Ok(())
}

/// An id must be non-empty and at most [`MAX_ID_BYTES`] long.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(StoreError::invalid(format!("{what} is empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(StoreError::invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        )));
    }
    Ok(())
}

/// A time must be RFC 3339, or empty (unknown).
pub fn check_time(what: &str, time: &str) -> Result<()> {
    check_read_time(what, time, parse_rfc3339_millis(time))
}

/// [`check_time`] of a time already read as `millis`.
fn check_read_time(what: &str, time: &str, millis: Option<i64>) -> Result<()> {
    if time.is_empty() || millis.is_some() {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "{what} is not an RFC 3339 time: {time:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_session_round_trips_with_unknown_fields_kept() {
        let text = json!({
            "id": "s1", "userId": "u", "workspaceId": "/w",
            "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-02T00:00:00.000Z",
            "universeFocus": "story",
            "activeCharts": [{
                "id": "c1", "title": "Ship", "desiredOutcome": "shipped", "currentReality": "not yet",
                "actions": [{"id": "a1", "title": "write", "completed": true,
                             "completedAt": "2026-01-01T01:00:00.000Z", "order": 1, "effort": "S"}],
                "status": "active", "createdAt": "2026-01-01T00:00:00.000Z",
                "updatedAt": "2026-01-01T00:00:00.000Z", "colour": {"r": 1}
            }],
            "storyBeats": [{"id": "b1", "description": "d", "type": "commit",
                            "universeAnnotations": {"engineer": "e", "mood": "calm"},
                            "createdAt": "2026-01-01T00:00:00.000Z", "sha": "abc"}],
            "storyPosition": {"arc": "a", "beat": 2, "phase": "rising"},
            "memory": {"z": 1, "a": [1, 2.5, "2026-01-01T00:00:00.000Z"], "nested": {"b": null, "a": true}},
            "conversationHistory": [{"id": "e1", "role": "agent", "content": "hi", "universe": "ceremony",
                                     "timestamp": "2026-01-01T00:00:00.000Z", "traceId": "t", "tokens": 3}],
            "config": {"theme": "dark"}
        });
        let session: NarrativeSession = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(session.active_charts[0].extra["colour"], json!({"r": 1}));
        assert_eq!(serde_json::to_value(&session).unwrap(), text);
        // Key order inside memory is kept too, as JavaScript would keep it.
        let out = serde_json::to_string(&session.memory).unwrap();
        assert!(out.starts_with(r#"{"z":1,"a":"#), "{out}");
    }

    #[test]
    fn the_updated_at_of_a_stored_text_is_found_without_parsing_it() {
        let mut session = NarrativeSession::new(
            "s".into(),
            r#"a "user" with ,"updatedAt":" in it"#.into(),
            "w".into(),
            "2026-01-01T00:00:00.000Z".into(),
        );
        session.updated_at = "2100-01-01T00:00:00.000Z".into();
        let text = serde_json::to_string(&session).unwrap();
        assert_eq!(peek_updated_at(&text), Some("2100-01-01T00:00:00.000Z"));
        assert_eq!(peek_updated_at(r#"{"id":"s"}"#), None);
    }

    #[test]
    fn the_requests_spelling_univers_focus_is_accepted() {
        let text = json!({"id": "s", "userId": "u", "workspaceId": "w", "createdAt": "", "updatedAt": "",
                          "universFocus": "ceremony"});
        let session: NarrativeSession = serde_json::from_value(text).unwrap();
        assert_eq!(session.universe_focus, UniverseFocus::Ceremony);
        let out = serde_json::to_value(&session).unwrap();
        assert_eq!(out["universeFocus"], "ceremony");
        assert!(out.get("universFocus").is_none());
    }
}
