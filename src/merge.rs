//! The merge: how two copies of a session, or a session and an update, become one (design.md, section 3).
//!
//! Every part of a session is a join in a semilattice, so merging is commutative, associative and
//! idempotent, and every tab, window and server converges whatever order updates arrive in:
//!
//! - **Last-write-wins registers**: `universeFocus`, `storyPosition`, each key of `memory` and
//!   `config`, and each field of a chart or an action. The write with the later [`Hlc`] wins; on an
//!   equal clock the larger (canonical) JSON text wins, so the choice never depends on argument
//!   order. A memory or config key set to `null` is a deletion: the key goes, its clock stays in
//!   `versions`.
//! - **Append-only lists**: `activeCharts`, `storyBeats` and `conversationHistory` are unions by id,
//!   ordered by time and then id. Two copies of one chart merge field by field, with their actions
//!   unioned by id. Two different copies of one beat or entry resolve to the larger JSON text.
//! - **Meta fields**: `createdAt` is the earliest, `updatedAt` the latest.
//!
//! Clocks live in the session's `versions` map under a path: `"memory.goal"`,
//! `"activeCharts.c1.title"`, `"activeCharts.c1.actions.a1.completed"`. Ids and field names inside a
//! path are escaped (`.` as `\.`), so two different fields never share a path.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::{parse_rfc3339_millis, Hlc};
use crate::error::{Result, StoreError};
use crate::model::{
    ConversationEntry, ListEntry, NarrativeSession, StcAction, StcChart, StoryBeat, StoryPosition,
    UniverseFocus,
};
use crate::raw::RawEntry;
use crate::text::{Text, UTF8_SPARES};

/// How a patch treats a field whose value equals the target's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchMode {
    /// A lattice join: the later clock is kept even when the values are equal.
    Join,
    /// An update from a client: a field it sends unchanged, with no clock of its own, is not a write.
    /// So a client that sends back a whole chart to change one field does not overwrite the others.
    Update,
}

/// The identity fields of a session. Only a whole session carries them; an update never does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub user_id: String,
    pub workspace_id: String,
}

/// Everything one merge brings into a session. Absent parts are left alone.
#[derive(Clone, Debug)]
pub struct SessionPatch {
    pub identity: Option<Identity>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub universe_focus: Option<UniverseFocus>,
    pub story_position: Option<StoryPosition>,
    /// A `null` value deletes the key.
    pub memory: Map<String, Value>,
    /// A `null` value deletes the key.
    pub config: Map<String, Value>,
    /// Charts as JSON objects: only the fields present are written.
    pub charts: Vec<Map<String, Value>>,
    pub beats: Vec<StoryBeat>,
    pub entries: Vec<ConversationEntry>,
    /// Explicit clocks by path.
    pub versions: BTreeMap<String, Hlc>,
    /// The clock of every written field that has no explicit one.
    pub clock: Hlc,
    pub mode: PatchMode,
}

impl SessionPatch {
    /// An empty patch: writes nothing until fields are set.
    pub fn empty(clock: Hlc, mode: PatchMode) -> SessionPatch {
        SessionPatch {
            identity: None,
            created_at: None,
            updated_at: None,
            universe_focus: None,
            story_position: None,
            memory: Map::new(),
            config: Map::new(),
            charts: Vec::new(),
            beats: Vec::new(),
            entries: Vec::new(),
            versions: BTreeMap::new(),
            clock,
            mode,
        }
    }

    /// The whole of a session as a patch, deletions included.
    pub fn from_session(session: &NarrativeSession) -> SessionPatch {
        let mut patch =
            SessionPatch::empty(Hlc::from_rfc3339(&session.updated_at), PatchMode::Join);
        patch.identity = Some(Identity {
            id: session.id.clone(),
            user_id: session.user_id.clone(),
            workspace_id: session.workspace_id.clone(),
        });
        patch.created_at = Some(session.created_at.clone());
        patch.updated_at = Some(session.updated_at.clone());
        patch.universe_focus = Some(session.universe_focus);
        patch.story_position = Some(session.story_position.clone());
        patch.memory = with_tombstones(&session.memory, &session.versions, MEMORY);
        patch.config = with_tombstones(&session.config, &session.versions, CONFIG);
        patch.charts = session.active_charts.iter().map(chart_registers).collect();
        patch.beats = session.story_beats.clone();
        patch.entries = session.conversation_history.clone();
        patch.versions = session.versions.clone();
        patch
    }

    fn version_of(&self, path: &str) -> Hlc {
        self.versions
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.clock.clone())
    }
}

/// What a merge changed: the path of each value that changed, as clients see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub paths: Vec<String>,
    /// True when anything changed, a clock alone included: the session then needs saving.
    pub touched: bool,
    /// Paths are not recorded: a whole-session merge, whose caller only wants the result, would
    /// otherwise format a path for every entry.
    quiet: bool,
}

impl Changes {
    fn value(&mut self, path: String) {
        self.touched = true;
        if !self.quiet {
            self.paths.push(path);
        }
    }

    /// `value` for a path that costs something to make.
    fn value_with(&mut self, path: impl FnOnce() -> String) {
        self.touched = true;
        if !self.quiet {
            self.paths.push(path());
        }
    }
}

const UNIVERSE_FOCUS: &str = "universeFocus";
const STORY_POSITION: &str = "storyPosition";
const MEMORY: &str = "memory";
const CONFIG: &str = "config";
const CHARTS: &str = "activeCharts";
const BEATS: &str = "storyBeats";
const ENTRIES: &str = "conversationHistory";
/// Chart fields that are not last-write-wins registers.
const CHART_META: [&str; 4] = ["id", "actions", "createdAt", "updatedAt"];
/// Action fields that may be absent; absent counts as `null`, so that clearing them is a write.
const ACTION_OPTIONAL: [&str; 2] = ["completedAt", "order"];

static NULL: Value = Value::Null;

/// Merge two whole sessions. Commutative, associative and idempotent; the result is normalised
/// (every field has its clock in `versions`, lists sorted and free of duplicate ids).
pub fn merge_sessions(a: &NarrativeSession, b: &NarrativeSession) -> Result<NarrativeSession> {
    merge_owned(a.clone(), b.clone())
}

/// `merge_sessions` of sessions the caller gives up: their entries and beats move into the result
/// instead of being copied.
pub fn merge_owned<E: UnionItem>(
    a: NarrativeSession<E>,
    b: NarrativeSession<E>,
) -> Result<NarrativeSession<E>> {
    let (a, a_entries) = a.into_parts();
    let (b, b_entries) = b.into_parts();
    let mut out = blank_like(&a);
    absorb_owned(&mut out, a)?;
    absorb_owned(&mut out, b)?;
    let mut entries = Vec::new();
    let mut changes = Changes {
        quiet: true,
        ..Changes::default()
    };
    union_by_id(&mut entries, None, a_entries, ENTRIES, &mut changes)?;
    union_by_id(&mut entries, None, b_entries, ENTRIES, &mut changes)?;
    Ok(out.map_history(|_| entries))
}

/// Joins a whole session into `out`: its registers as a patch, its long lists moved in.
fn absorb_owned(out: &mut NarrativeSession, mut session: NarrativeSession) -> Result<()> {
    let beats = std::mem::take(&mut session.story_beats);
    let entries = std::mem::take(&mut session.conversation_history);
    let mut changes = apply(out, &SessionPatch::from_session(&session), None, true)?;
    union_by_id(&mut out.story_beats, None, beats, BEATS, &mut changes)?;
    union_by_id(
        &mut out.conversation_history,
        None,
        entries,
        ENTRIES,
        &mut changes,
    )
}

/// Two copies of one user's session in one workspace, merged (their entries moved, not copied);
/// copies of different sessions are refused with EINVALID rather than mixed.
pub fn merge_copies<E: UnionItem>(
    a: NarrativeSession<E>,
    b: NarrativeSession<E>,
) -> Result<NarrativeSession<E>> {
    if (&a.user_id, &a.workspace_id) != (&b.user_id, &b.workspace_id) {
        return Err(StoreError::invalid(
            "the sessions belong to different users or workspaces",
        ));
    }
    merge_owned(a, b)
}

/// [`merge_copies`] on JSON text, as sessions come from files, Redis or a socket: the two are
/// converted to UTF-8 where they are strings and parsed (large ones at once, on two threads),
/// merged, and the result serialised. Each text may be at most `max_bytes` of UTF-8.
///
/// Conversation entries stay slices of the input ([`RawEntry`]): they are checked, not copied, and
/// each is written out as it came. Where two copies of one entry differ only in how they are
/// written (key order, spacing), the larger text is kept, so the result is the same whatever the
/// order of `a` and `b`.
pub fn merge_session_texts(a: Text, b: Text, max_bytes: usize) -> Result<Vec<u8>> {
    // The merged text is about as long as both inputs together, or shorter; reserving that up
    // front saves copying it as it grows.
    let capacity = a.len() + b.len();
    let (mut a_utf8, mut b_utf8) = (Vec::new(), Vec::new());
    // Each text's UTF-8 lives in `utf8`, which the parsed session's entries borrow.
    fn parse<'a>(
        text: Text,
        utf8: &'a mut Vec<u8>,
        what: &str,
        max_bytes: usize,
    ) -> Result<NarrativeSession<RawEntry<'a>>> {
        *utf8 = text.into_utf8();
        let utf8: &'a Vec<u8> = utf8;
        parse_session_text(utf8, what, max_bytes)
    }
    let (a, b) = if a.len().min(b.len()) < PARALLEL_PARSE_BYTES {
        (
            parse(a, &mut a_utf8, "a", max_bytes),
            parse(b, &mut b_utf8, "b", max_bytes),
        )
    } else {
        std::thread::scope(|scope| {
            let second = scope.spawn(|| parse(b, &mut b_utf8, "b", max_bytes));
            let first = parse(a, &mut a_utf8, "a", max_bytes);
            let second = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (first, second)
        })
    };
    let merged = merge_copies(a?, b?)?;
    let mut out = Vec::with_capacity(capacity);
    crate::text::prefer_huge_pages(&mut out);
    serde_json::to_writer(&mut out, &merged).map_err(internal)?;
    drop(merged);
    UTF8_SPARES.give_back(a_utf8);
    UTF8_SPARES.give_back(b_utf8);
    Ok(out)
}

/// Below this size a session parses in less time than a thread takes to start.
const PARALLEL_PARSE_BYTES: usize = 256 * 1024;

/// A whole session from JSON text, checked as a stored one is. `what` names it in errors.
pub fn parse_session_text<'a, E: Deserialize<'a> + ListEntry>(
    text: &'a [u8],
    what: &str,
    max_bytes: usize,
) -> Result<NarrativeSession<E>> {
    if text.len() > max_bytes {
        return Err(session_too_large(what, text.len(), max_bytes));
    }
    if text.trim_ascii_start().first() != Some(&b'{') {
        return Err(StoreError::invalid(format!(
            "session {what} must be a JSON object"
        )));
    }
    let session: NarrativeSession<E> = crate::model::from_json_bytes(text)
        .map_err(|e| StoreError::invalid(format!("malformed session {what}: {e}")))?;
    crate::model::validate_session(&session)?;
    Ok(session)
}

/// ETOOLARGE for session `what`, `len` bytes long (or, before conversion, UTF-16 units).
pub fn session_too_large(what: &str, len: usize, max_bytes: usize) -> StoreError {
    StoreError::too_large(format!(
        "session {what} of {len} bytes is over the {max_bytes}-byte limit"
    ))
}

/// The canonical form of a session: what `merge_sessions(s, s)` returns.
pub fn normalize(session: &NarrativeSession) -> Result<NarrativeSession> {
    normalize_owned(session.clone())
}

/// [`normalize`] of a session the caller gives up (a load's: its entries move instead of being
/// copied, which for a 10 MB session saves about as much as parsing it costs).
pub fn normalize_owned(session: NarrativeSession) -> Result<NarrativeSession> {
    let mut out = blank_like(&session);
    absorb_owned(&mut out, session)?;
    Ok(out)
}

/// An empty session with the identity of `session`. Its `updatedAt` is empty, so its default
/// values carry the lowest clock there is and every real write replaces them.
fn blank_like(session: &NarrativeSession) -> NarrativeSession {
    let mut blank = NarrativeSession::new(
        session.id.clone(),
        session.user_id.clone(),
        session.workspace_id.clone(),
        session.created_at.clone(),
    );
    blank.updated_at = String::new();
    blank
}

/// Merge `patch` into `target`, returning what changed.
pub fn apply_patch(target: &mut NarrativeSession, patch: &SessionPatch) -> Result<Changes> {
    apply(target, patch, None, false)
}

/// `apply_patch` for a session that lives on, with its [`SessionIndex`]: adding to a long history
/// then costs the same as adding to a short one. Every change to `target` must go through here for
/// the index to stay true (a change of a list's length alone is noticed and repaired).
pub fn apply_patch_indexed(
    target: &mut NarrativeSession,
    patch: &SessionPatch,
    index: &mut SessionIndex,
) -> Result<Changes> {
    apply(target, patch, Some(index), false)
}

fn apply(
    target: &mut NarrativeSession,
    patch: &SessionPatch,
    mut index: Option<&mut SessionIndex>,
    quiet: bool,
) -> Result<Changes> {
    if patch.mode == PatchMode::Update {
        let settled = settle_update(target, patch.clone())?;
        return apply(target, &settled, index, quiet);
    }
    let mut changes = Changes {
        quiet,
        ..Changes::default()
    };
    // A field of the target with no clock of its own takes the target's updatedAt.
    let target_default = Hlc::from_rfc3339(&target.updated_at);
    let mut registers = Registers {
        versions: &mut target.versions,
        target_default: &target_default,
        patch,
        changes: &mut changes,
    };

    if let Some(identity) = &patch.identity {
        merge_identity(&mut target.id, &identity.id);
        merge_identity(&mut target.user_id, &identity.user_id);
        merge_identity(&mut target.workspace_id, &identity.workspace_id);
    }
    if let Some(focus) = patch.universe_focus {
        let current = serde_json::to_value(target.universe_focus).map_err(internal)?;
        let incoming = serde_json::to_value(focus).map_err(internal)?;
        if registers.resolve(UNIVERSE_FOCUS.into(), Some(&current), &incoming) {
            target.universe_focus = focus;
        }
    }
    if let Some(position) = &patch.story_position {
        let current = serde_json::to_value(&target.story_position).map_err(internal)?;
        let incoming = serde_json::to_value(position).map_err(internal)?;
        if registers.resolve(STORY_POSITION.into(), Some(&current), &incoming) {
            target.story_position = position.clone();
        }
    }
    registers.merge_keyed_map(&mut target.memory, &patch.memory, MEMORY);
    registers.merge_keyed_map(&mut target.config, &patch.config, CONFIG);
    for chart in &patch.charts {
        registers.merge_chart(&mut target.active_charts, chart)?;
    }
    union_by_id(
        &mut target.story_beats,
        index.as_deref_mut().map(|i| &mut i.beats),
        patch.beats.iter().collect(),
        BEATS,
        registers.changes,
    )?;
    union_by_id(
        &mut target.conversation_history,
        index.map(|i| &mut i.entries),
        patch.entries.iter().collect(),
        ENTRIES,
        registers.changes,
    )?;

    if let Some(created) = &patch.created_at {
        if let Some(earlier) = earliest(&target.created_at, created) {
            target.created_at = earlier.to_string();
            changes.touched = true;
        }
    }
    if let Some(updated) = &patch.updated_at {
        if let Some(later) = latest(&target.updated_at, updated) {
            target.updated_at = later.to_string();
            changes.touched = true;
        }
    }
    Ok(changes)
}

/// Identity fields converge on the smallest non-empty value.
fn merge_identity(target: &mut String, incoming: &str) {
    if !incoming.is_empty() && (target.is_empty() || incoming < target.as_str()) {
        *target = incoming.to_string();
    }
}

/// The merge state of last-write-wins registers for one `apply_patch`.
struct Registers<'a> {
    versions: &'a mut BTreeMap<String, Hlc>,
    target_default: &'a Hlc,
    patch: &'a SessionPatch,
    changes: &'a mut Changes,
}

impl Registers<'_> {
    /// Resolve one register. `current` is the target's value, or None when the target never wrote it.
    /// Returns true when the incoming value must replace the target's; the clock is updated here,
    /// and a changed value is recorded under `path`.
    fn resolve(&mut self, path: String, current: Option<&Value>, incoming: &Value) -> bool {
        let incoming_version = self.patch.version_of(&path);
        let current_version = match (self.versions.get(&path), current) {
            (Some(version), _) => Some(version.clone()),
            (None, Some(_)) => Some(self.target_default.clone()),
            (None, None) => None,
        };
        let take = match (&current_version, current) {
            (Some(version), Some(value)) => match incoming_version.cmp(version) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => incoming != value && json_text(incoming) > json_text(value),
            },
            _ => true,
        };
        if !take {
            return false;
        }
        if current_version.as_ref() != Some(&incoming_version) {
            self.versions.insert(path.clone(), incoming_version);
            self.changes.touched = true;
        }
        let changed = current.unwrap_or(&NULL) != incoming || current.is_none();
        if changed {
            self.changes.value(path);
        }
        changed
    }

    /// `memory` and `config`: each key is a register; `null` deletes the key.
    fn merge_keyed_map(
        &mut self,
        target: &mut Map<String, Value>,
        incoming: &Map<String, Value>,
        name: &str,
    ) {
        for (key, value) in incoming {
            let path = format!("{name}.{key}");
            let current = target
                .get(key)
                .or_else(|| self.versions.contains_key(&path).then_some(&NULL));
            if self.resolve(path, current, value) {
                if value.is_null() {
                    target.shift_remove(key);
                } else {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
    }

    /// The fields of a chart or an action, each a register under `prefix`.
    fn merge_fields(
        &mut self,
        target: &mut Map<String, Value>,
        incoming: &Map<String, Value>,
        skip: &[&str],
        prefix: &str,
    ) {
        for (field, value) in incoming {
            if skip.contains(&field.as_str()) {
                continue;
            }
            let path = format!("{prefix}.{}", segment(field));
            let current = target
                .get(field)
                .or_else(|| self.versions.contains_key(&path).then_some(&NULL));
            if self.resolve(path, current, value) {
                target.insert(field.clone(), value.clone());
            }
        }
    }

    fn merge_chart(
        &mut self,
        charts: &mut Vec<StcChart>,
        incoming: &Map<String, Value>,
    ) -> Result<()> {
        let id = incoming
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::invalid("a chart needs a string id"))?;
        let prefix = format!("{CHARTS}.{}", segment(id));
        let position = charts.iter().position(|c| c.id == id);
        let mut map = match position {
            Some(i) => chart_registers(&charts[i]),
            None => {
                self.changes.value(prefix.clone());
                let mut blank = Map::new();
                blank.insert("id".into(), Value::String(id.to_string()));
                blank
            }
        };
        self.merge_fields(&mut map, incoming, &CHART_META, &prefix);
        for field in ["createdAt", "updatedAt"] {
            let current = map.get(field).and_then(Value::as_str).unwrap_or("");
            let Some(candidate) = incoming.get(field).and_then(Value::as_str) else {
                continue;
            };
            let pick = if field == "createdAt" {
                earliest(current, candidate)
            } else {
                latest(current, candidate)
            };
            if let Some(value) = pick {
                map.insert(field.into(), Value::String(value.to_string()));
                self.changes.touched = true;
            }
        }
        if let Some(actions) = incoming.get("actions").and_then(Value::as_array) {
            self.merge_actions(&mut map, actions, &prefix)?;
        }
        let mut chart: StcChart = serde_json::from_value(Value::Object(map))
            .map_err(|e| StoreError::invalid(format!("chart {id:?}: {e}")))?;
        // New actions are appended and an `order` may have changed: sort, or the order of the
        // actions would depend on the order of the merges.
        sort_actions(&mut chart.actions);
        match position {
            Some(i) => {
                // An earlier createdAt from the other side moves the chart in the list.
                let moved = charts[i].created_at != chart.created_at;
                charts[i] = chart;
                if moved {
                    sort_by_time_then_id(charts);
                }
            }
            None => {
                // A new chart's fields that the patch left out still get a clock, as in a normalised session.
                self.clock_every_field(&chart_registers(&chart), &prefix);
                charts.push(chart);
                sort_by_time_then_id(charts);
            }
        }
        Ok(())
    }

    fn merge_actions(
        &mut self,
        chart: &mut Map<String, Value>,
        incoming: &[Value],
        chart_prefix: &str,
    ) -> Result<()> {
        let mut actions: Vec<Map<String, Value>> = match chart.remove("actions") {
            Some(Value::Array(items)) => items.into_iter().filter_map(into_object).collect(),
            _ => Vec::new(),
        };
        for action in incoming {
            let action = action
                .as_object()
                .ok_or_else(|| StoreError::invalid("an action must be an object"))?;
            let id = action
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| StoreError::invalid("an action needs a string id"))?;
            let prefix = format!("{chart_prefix}.actions.{}", segment(id));
            let index = match actions
                .iter()
                .position(|a| a.get("id").and_then(Value::as_str) == Some(id))
            {
                Some(i) => i,
                None => {
                    self.changes.value(prefix.clone());
                    let mut blank = Map::new();
                    blank.insert("id".into(), Value::String(id.to_string()));
                    actions.push(blank);
                    actions.len() - 1
                }
            };
            self.merge_fields(&mut actions[index], action, &["id"], &prefix);
            let typed: StcAction = serde_json::from_value(Value::Object(actions[index].clone()))
                .map_err(|e| StoreError::invalid(format!("action {id:?}: {e}")))?;
            self.clock_every_field(&action_registers(&typed), &prefix);
        }
        chart.insert(
            "actions".into(),
            Value::Array(actions.into_iter().map(Value::Object).collect()),
        );
        Ok(())
    }

    /// Give every register of a new chart (or action) a clock when it has none yet. A field the
    /// patch did not write holds only its default, so it gets the lowest clock there is: any real
    /// write of it, on any replica, wins over the default.
    fn clock_every_field(&mut self, fields: &Map<String, Value>, prefix: &str) {
        for (field, value) in fields {
            if field == "actions" {
                for action in value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                {
                    let id = action.get("id").and_then(Value::as_str).unwrap_or_default();
                    self.clock_every_field(action, &format!("{prefix}.actions.{}", segment(id)));
                }
                continue;
            }
            if CHART_META.contains(&field.as_str()) {
                continue;
            }
            let path = format!("{prefix}.{}", segment(field));
            if !self.versions.contains_key(&path) {
                let version = self.patch.versions.get(&path).cloned().unwrap_or_default();
                self.versions.insert(path, version);
                self.changes.touched = true;
            }
        }
    }
}

/// A chart as the map of its registers: absent optional action fields appear as `null`.
fn chart_registers(chart: &StcChart) -> Map<String, Value> {
    let mut map =
        into_object(serde_json::to_value(chart).unwrap_or(Value::Null)).unwrap_or_default();
    let actions = chart
        .actions
        .iter()
        .map(|a| Value::Object(action_registers(a)))
        .collect();
    map.insert("actions".into(), Value::Array(actions));
    map
}

fn action_registers(action: &StcAction) -> Map<String, Value> {
    let mut map =
        into_object(serde_json::to_value(action).unwrap_or(Value::Null)).unwrap_or_default();
    for field in ACTION_OPTIONAL {
        map.entry(field).or_insert(Value::Null);
    }
    map
}

fn into_object(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A map's keys plus a `null` for each key whose deletion is recorded in `versions`.
fn with_tombstones(
    map: &Map<String, Value>,
    versions: &BTreeMap<String, Hlc>,
    name: &str,
) -> Map<String, Value> {
    let mut out = map.clone();
    let prefix = format!("{name}.");
    for path in versions
        .range(prefix.clone()..)
        .map(|(p, _)| p)
        .take_while(|p| p.starts_with(&prefix))
    {
        let key = &path[prefix.len()..];
        if !out.contains_key(key) {
            out.insert(key.to_string(), Value::Null);
        }
    }
    out
}

/// An update's beats or entries, with a time for each one sent without: one the target already has
/// keeps its time, a new one takes the update's clock. So a client that resends its history
/// without times (a replay after a reconnect) neither moves nor changes it.
/// Give entries that came without a time the time they already have in `target`, or, for new
/// ones, the time of `clock`.
fn fill_times<T: ListEntry>(
    incoming: &mut [T],
    target: &[T],
    clock: &Hlc,
    time: fn(&mut T) -> &mut String,
) {
    if incoming.iter().all(|item| !item.time().is_empty()) {
        return;
    }
    let now = clock.to_rfc3339();
    let known: Option<IdMap<&str, &str>> = (incoming.len() > SCAN_LIMIT)
        .then(|| target.iter().map(|item| (item.id(), item.time())).collect());
    for item in incoming.iter_mut() {
        if item.time().is_empty() {
            let existing = match &known {
                Some(known) => known.get(item.id()).copied(),
                None => target
                    .iter()
                    .rfind(|e| e.id() == item.id())
                    .map(|e| e.time()),
            };
            *time(item) = existing.map_or_else(|| now.clone(), str::to_string);
        }
    }
}

/// An update as the join it amounts to against `target`. Fields it sends unchanged, with no clock of
/// their own, are dropped (they are not writes), and entries without a time get one. Applying the
/// result to any replica, in any order, has the update's effect: this is what the journal records.
pub fn settle_update(target: &NarrativeSession, mut patch: SessionPatch) -> Result<SessionPatch> {
    if patch.mode == PatchMode::Join {
        return Ok(patch);
    }
    let SessionPatch {
        universe_focus,
        story_position,
        memory,
        config,
        charts,
        beats,
        entries,
        versions,
        clock,
        ..
    } = &mut patch;
    let unchanged = |path: &str, current: Option<&Value>, incoming: &Value| {
        !versions.contains_key(path) && current == Some(incoming)
    };
    if let Some(focus) = *universe_focus {
        let current = serde_json::to_value(target.universe_focus).map_err(internal)?;
        if unchanged(
            UNIVERSE_FOCUS,
            Some(&current),
            &serde_json::to_value(focus).map_err(internal)?,
        ) {
            *universe_focus = None;
        }
    }
    if let Some(position) = story_position {
        let current = serde_json::to_value(&target.story_position).map_err(internal)?;
        if unchanged(
            STORY_POSITION,
            Some(&current),
            &serde_json::to_value(&*position).map_err(internal)?,
        ) {
            *story_position = None;
        }
    }
    for (map, current_map, name) in [
        (memory, &target.memory, MEMORY),
        (config, &target.config, CONFIG),
    ] {
        map.retain(|key, value| {
            let path = format!("{name}.{key}");
            let current = current_map
                .get(key)
                .or_else(|| target.versions.contains_key(&path).then_some(&NULL));
            !unchanged(&path, current, value)
        });
    }
    for chart in charts.iter_mut() {
        let id = chart
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(existing) = target.active_charts.iter().find(|c| c.id == id) else {
            continue;
        };
        let current = chart_registers(existing);
        let prefix = format!("{CHARTS}.{}", segment(&id));
        let keep = |fields: &Map<String, Value>, field: &str, value: &Value, prefix: &str| {
            let path = format!("{prefix}.{}", segment(field));
            let now = fields
                .get(field)
                .or_else(|| target.versions.contains_key(&path).then_some(&NULL));
            !unchanged(&path, now, value)
        };
        chart.retain(|field, value| {
            CHART_META.contains(&field.as_str()) || keep(&current, field, value, &prefix)
        });
        let Some(Value::Array(actions)) = chart.get_mut("actions") else {
            continue;
        };
        let current_actions = current.get("actions").and_then(Value::as_array);
        for action in actions.iter_mut().filter_map(Value::as_object_mut) {
            let aid = action
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(now) = current_actions
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .find(|a| a.get("id").and_then(Value::as_str) == Some(&aid))
            else {
                continue;
            };
            let action_prefix = format!("{prefix}.actions.{}", segment(&aid));
            action.retain(|field, value| field == "id" || keep(now, field, value, &action_prefix));
        }
    }
    fill_times(beats, &target.story_beats, clock, |b| &mut b.created_at);
    fill_times(entries, &target.conversation_history, clock, |e| {
        &mut e.timestamp
    });
    outrank_what_the_target_holds(target, &mut patch)?;
    patch.mode = PatchMode::Join;
    Ok(patch)
}

/// Makes every register the update writes with the store's clock win over the value `target`
/// holds for it. The store's clock has taken in every clock it read, so its stamp is later than
/// them all, except a clock it refused as too far ahead of this machine's (a process or machine
/// whose clock reads 2100, say: see [`crate::clock::MAX_CLOCK_AHEAD_MS`]). A register holding such
/// a clock gets, instead of the stamp, the smallest clock after the one it holds
/// ([`Hlc::successor`]), with the writer's node: so a write made after the value was seen wins
/// over it on every replica, the one whose clock runs ahead included (it orders by the same
/// clocks), and the writer's own clock stays where it is. The choice is recorded in the patch's
/// `versions`, so the journal replays it as it was made. Versions the client sent are its own
/// claim and are left as they are (they may lose: see [`lost_writes`]).
fn outrank_what_the_target_holds(
    target: &NarrativeSession,
    patch: &mut SessionPatch,
) -> Result<()> {
    let target_default = Hlc::from_rfc3339(&target.updated_at);
    let paths: Vec<String> = registers(patch)?.into_iter().map(|r| r.path).collect();
    for path in paths {
        if patch.versions.contains_key(&path) {
            continue;
        }
        let held = target.versions.get(&path).unwrap_or(&target_default);
        if *held >= patch.clock {
            let next = held.successor(&patch.clock.node);
            patch.versions.insert(path, next);
        }
    }
    Ok(())
}

/// One last-write-wins register a patch writes.
struct Register<'a> {
    path: String,
    value: Cow<'a, Value>,
    place: Place<'a>,
}

/// Where a register lives in a session.
enum Place<'a> {
    UniverseFocus,
    StoryPosition,
    Memory(&'a str),
    Config(&'a str),
    /// A chart's field: (chart id, field).
    Chart(&'a str, &'a str),
    /// An action's field: (chart id, action id, field).
    Action(&'a str, &'a str, &'a str),
}

/// Every register `patch` writes, with the value it writes.
fn registers(patch: &SessionPatch) -> Result<Vec<Register<'_>>> {
    let mut out = Vec::new();
    if let Some(focus) = patch.universe_focus {
        out.push(Register {
            path: UNIVERSE_FOCUS.into(),
            value: Cow::Owned(serde_json::to_value(focus).map_err(internal)?),
            place: Place::UniverseFocus,
        });
    }
    if let Some(position) = &patch.story_position {
        out.push(Register {
            path: STORY_POSITION.into(),
            value: Cow::Owned(serde_json::to_value(position).map_err(internal)?),
            place: Place::StoryPosition,
        });
    }
    for (key, value) in &patch.memory {
        out.push(Register {
            path: format!("{MEMORY}.{key}"),
            value: Cow::Borrowed(value),
            place: Place::Memory(key),
        });
    }
    for (key, value) in &patch.config {
        out.push(Register {
            path: format!("{CONFIG}.{key}"),
            value: Cow::Borrowed(value),
            place: Place::Config(key),
        });
    }
    for chart in &patch.charts {
        let Some(id) = chart.get("id").and_then(Value::as_str) else {
            continue;
        };
        let prefix = format!("{CHARTS}.{}", segment(id));
        for (field, value) in chart {
            if !CHART_META.contains(&field.as_str()) {
                out.push(Register {
                    path: format!("{prefix}.{}", segment(field)),
                    value: Cow::Borrowed(value),
                    place: Place::Chart(id, field),
                });
            }
        }
        let actions = chart.get("actions").and_then(Value::as_array);
        for action in actions.into_iter().flatten().filter_map(Value::as_object) {
            let Some(action_id) = action.get("id").and_then(Value::as_str) else {
                continue;
            };
            let action_prefix = format!("{prefix}.actions.{}", segment(action_id));
            for (field, value) in action.iter().filter(|(f, _)| *f != "id") {
                out.push(Register {
                    path: format!("{action_prefix}.{}", segment(field)),
                    value: Cow::Borrowed(value),
                    place: Place::Action(id, action_id, field),
                });
            }
        }
    }
    Ok(out)
}

/// The paths of the values `patch` (a settled update) writes that `session` does not hold after
/// the merge: each lost to a later write (or, on an equal clock, to a larger value), or, for a
/// beat or entry, to another copy of it. A host must not tell a writer these landed.
pub fn lost_writes(session: &NarrativeSession, patch: &SessionPatch) -> Result<Vec<String>> {
    let mut lost = Vec::new();
    let mut charts = HashMap::new();
    for register in registers(patch)? {
        let landed = session.versions.get(&register.path)
            == Some(&patch.version_of(&register.path))
            && register_value(session, &register.place, &mut charts)? == register.value;
        if !landed {
            lost.push(register.path);
        }
    }
    lost.extend(lost_items(&session.story_beats, &patch.beats, BEATS));
    lost.extend(lost_items(
        &session.conversation_history,
        &patch.entries,
        ENTRIES,
    ));
    Ok(lost)
}

/// The value a register holds in `session`; `null` for one it does not have. A chart's registers
/// are made once per chart, into `charts`.
fn register_value<'s>(
    session: &'s NarrativeSession,
    place: &Place<'s>,
    charts: &mut HashMap<&'s str, Map<String, Value>>,
) -> Result<Cow<'s, Value>> {
    let (chart_id, action_id, field) = match *place {
        Place::UniverseFocus => {
            return Ok(Cow::Owned(
                serde_json::to_value(session.universe_focus).map_err(internal)?,
            ))
        }
        Place::StoryPosition => {
            return Ok(Cow::Owned(
                serde_json::to_value(&session.story_position).map_err(internal)?,
            ))
        }
        Place::Memory(key) => return Ok(Cow::Borrowed(session.memory.get(key).unwrap_or(&NULL))),
        Place::Config(key) => return Ok(Cow::Borrowed(session.config.get(key).unwrap_or(&NULL))),
        Place::Chart(id, field) => (id, None, field),
        Place::Action(id, action, field) => (id, Some(action), field),
    };
    let Some(chart) = session.active_charts.iter().find(|c| c.id == chart_id) else {
        return Ok(Cow::Borrowed(&NULL));
    };
    let fields = charts
        .entry(chart_id)
        .or_insert_with(|| chart_registers(chart));
    let value = match action_id {
        None => fields.get(field),
        Some(action_id) => fields
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| a.get("id").and_then(Value::as_str) == Some(action_id))
            .and_then(|a| a.get(field)),
    };
    Ok(Cow::Owned(value.cloned().unwrap_or(Value::Null)))
}

/// The paths of the beats or entries of `incoming` of which `kept` holds no copy the update sent.
fn lost_items<T: ListEntry + PartialEq>(kept: &[T], incoming: &[T], name: &str) -> Vec<String> {
    if incoming.is_empty() {
        return Vec::new();
    }
    let index: Option<HashMap<&str, &T>> =
        (incoming.len() > SCAN_LIMIT).then(|| kept.iter().map(|k| (k.id(), k)).collect());
    let held = |id: &str| match &index {
        Some(index) => index.get(id).copied(),
        None => kept.iter().rfind(|k| k.id() == id),
    };
    let mut lost: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in incoming {
        if !seen.insert(item.id()) {
            continue;
        }
        // (Of two copies of one id in one update, only one can be kept.)
        let landed = held(item.id())
            .is_some_and(|k| k == item || incoming.iter().any(|i| i.id() == item.id() && i == k));
        if !landed {
            lost.push(format!("{name}.{}", segment(item.id())));
        }
    }
    lost
}

/// Up to this many incoming entries, `union_by_id` scans instead of building an index.
const SCAN_LIMIT: usize = 8;

/// Maps keyed by entry id, hashed with foldhash (see [`crate::model::hash_id`]).
type IdMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// An id with its hash ([`ListEntry::id_hash`]), which an item may have taken already.
#[derive(Clone, Copy)]
struct IdKey<'a> {
    hash: u64,
    id: &'a str,
}

impl<'a> IdKey<'a> {
    fn of<T: ListEntry>(item: &'a T) -> Self {
        IdKey {
            hash: item.id_hash(),
            id: item.id(),
        }
    }
}

impl PartialEq for IdKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for IdKey<'_> {}

impl std::hash::Hash for IdKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hasher of a map of [`IdKey`]s: their hash, as it is.
#[derive(Default)]
struct KeptHash(u64);

impl std::hash::Hasher for KeptHash {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called, by `IdKey`; anything else is folded in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdKeyMap<'a, V> = HashMap<IdKey<'a>, V, std::hash::BuildHasherDefault<KeptHash>>;

/// An item of a list being unioned: a borrowed one (a patch's, copied in only if it is new or wins)
/// or an owned one (a whole session's, moved in).
trait Incoming<T>: std::borrow::Borrow<T> {
    fn into_item(self) -> T;
}

impl<T: Clone> Incoming<T> for &T {
    fn into_item(self) -> T {
        self.clone()
    }
}

impl<T> Incoming<T> for T {
    fn into_item(self) -> T {
        self
    }
}

/// What becomes of one incoming item.
#[derive(Clone, Copy)]
enum Fate {
    /// Its id is kept already, and this copy does not win.
    Dropped,
    /// It wins over the kept item at this position.
    Replaces(usize),
    New,
}

/// Beats and conversation entries: a union by id, kept sorted by time and then id. Two different
/// copies of one id resolve to the one with the larger JSON text, so every replica picks the same
/// one. `target` is sorted and its ids are unique (the result of an earlier union).
fn union_by_id<T, I>(
    target: &mut Vec<T>,
    mut kept_index: Option<&mut ListIndex>,
    incoming: Vec<I>,
    name: &str,
    changes: &mut Changes,
) -> Result<()>
where
    T: UnionItem,
    I: Incoming<T>,
{
    if incoming.is_empty() {
        return Ok(());
    }
    if let Some(kept) = kept_index.as_deref_mut() {
        kept.sync(target);
    }
    let fates = fates(target, kept_index.as_deref(), &incoming);
    let mut needs_sort = false;
    let mut new = Vec::new();
    if target.is_empty() && fates.iter().all(|fate| matches!(fate, Fate::New)) {
        // A whole list into an empty one (a load, or a merge's first side): moved in as it is.
        new = incoming.into_iter().map(Incoming::into_item).collect();
    } else {
        for (item, fate) in incoming.into_iter().zip(fates) {
            match fate {
                Fate::Dropped => {}
                Fate::Replaces(i) => {
                    let item = item.into_item();
                    needs_sort |= order_key(&target[i]) != order_key(&item);
                    changes.value_with(|| format!("{name}.{}", segment(item.id())));
                    target[i] = item;
                }
                Fate::New => new.push(item.into_item()),
            }
        }
    }
    for item in &new {
        changes.value_with(|| format!("{name}.{}", segment(item.id())));
    }
    if needs_sort {
        target.extend(new);
        sort_by_time_then_id(target);
    } else if new.len() <= SCAN_LIMIT {
        append_few(target, new, kept_index);
        return Ok(());
    } else {
        sort_by_time_then_id(&mut new);
        let follows = match (target.last(), new.first()) {
            (Some(last), Some(first)) => order_key(last) <= order_key(first),
            _ => true,
        };
        if follows {
            // The usual case: every new item comes after the kept ones.
            append_sorted(target, new, kept_index);
            return Ok(());
        }
        if !merge_sorted(target, new) {
            sort_by_time_then_id(target);
        }
    }
    if let Some(kept) = kept_index {
        kept.rebuild(target);
    }
    Ok(())
}

/// For each incoming item, whether it is new, replaces a kept one, or is dropped. Among copies of
/// one id within `incoming`, only the winner is new.
fn fates<T, I>(target: &[T], kept: Option<&ListIndex>, incoming: &[I]) -> Vec<Fate>
where
    T: UnionItem,
    I: Incoming<T>,
{
    // A few new entries (the usual update) are looked up by scanning from the end, where they most
    // likely are; building an index of a long history would cost more than the whole merge.
    let index: Option<IdKeyMap<usize>> =
        (kept.is_none() && incoming.len() > SCAN_LIMIT && !target.is_empty()).then(|| {
            target
                .iter()
                .enumerate()
                .map(|(i, e)| (IdKey::of(e), i))
                .collect()
        });
    let position = |item: &T| match (kept, &index) {
        (Some(kept), _) => kept.positions.get(item.id()).copied(),
        (None, Some(index)) => index.get(&IdKey::of(item)).copied(),
        (None, None) => target.iter().rposition(|e| e.id() == item.id()),
    };
    let mut fates = vec![Fate::Dropped; incoming.len()];
    // The incoming item now winning each id that `target` does not have.
    let mut fresh: IdKeyMap<usize> = IdKeyMap::default();
    fresh.reserve(incoming.len());
    for (n, item) in incoming.iter().enumerate() {
        let item: &T = item.borrow();
        match position(item) {
            Some(i) if item.replaces(&target[i]) => fates[n] = Fate::Replaces(i),
            Some(_) => {}
            None => match fresh.insert(IdKey::of(item), n) {
                None => fates[n] = Fate::New,
                // The same id twice in one input: keep the winner of the two.
                Some(other) if item.replaces(incoming[other].borrow()) => {
                    fates[other] = Fate::Dropped;
                    fates[n] = Fate::New;
                }
                Some(other) => {
                    fresh.insert(IdKey::of(item), other);
                }
            },
        }
    }
    fates
}

/// An item of a list unioned by id.
pub trait UnionItem: ListEntry + Clone {
    /// Whether `self` wins over `kept`, another copy of the same id: the larger canonical JSON
    /// text does. Every kind of item breaks ties alike, so a merge of texts and a merge of parsed
    /// sessions keep the same copy.
    fn replaces(&self, kept: &Self) -> bool;
}

impl UnionItem for StoryBeat {
    fn replaces(&self, kept: &Self) -> bool {
        self != kept && json_text(self) > json_text(kept)
    }
}

impl UnionItem for ConversationEntry {
    fn replaces(&self, kept: &Self) -> bool {
        self != kept && json_text(self) > json_text(kept)
    }
}

impl UnionItem for RawEntry<'_> {
    /// As for the entries they parse as; between texts of one entry, the larger text.
    fn replaces(&self, kept: &Self) -> bool {
        if self.text() == kept.text() {
            return false;
        }
        match (self.parsed(), kept.parsed()) {
            (Ok(item), Ok(kept_item)) if item == kept_item => self.text() > kept.text(),
            (Ok(item), Ok(kept_item)) => item.replaces(&kept_item),
            // Both were checked when they were read; this is not reached.
            (item, _) => item.is_ok(),
        }
    }
}

/// A few new items, appended; any that is out of order is then moved back into place, which costs
/// what lies after it rather than a sort of the whole list.
fn append_few<T: ListEntry>(
    target: &mut Vec<T>,
    new: Vec<T>,
    mut kept_index: Option<&mut ListIndex>,
) {
    let first_new = target.len();
    let mut out_of_order = false;
    // The time of the list's last item, parsed once for all the appends.
    let mut last_millis = target.last().map(ListEntry::millis);
    for item in new {
        let millis = item.millis();
        if let (Some(last), Some(last_millis)) = (target.last(), last_millis) {
            out_of_order |=
                (last_millis, last.time(), last.id()) > (millis, item.time(), item.id());
        }
        last_millis = Some(millis);
        if let Some(kept) = kept_index.as_deref_mut() {
            kept.positions.insert(item.id().to_string(), target.len());
        }
        target.push(item);
    }
    if out_of_order {
        for new in first_new..target.len() {
            move_into_place(target, new, kept_index.as_deref_mut());
        }
    }
}

/// Appends `new`, which is sorted and comes after every item of `target`.
fn append_sorted<T: ListEntry>(
    target: &mut Vec<T>,
    new: Vec<T>,
    kept_index: Option<&mut ListIndex>,
) {
    let first_new = target.len();
    if target.is_empty() {
        *target = new;
    } else {
        target.extend(new);
    }
    if let Some(kept) = kept_index {
        for (i, item) in target.iter().enumerate().skip(first_new) {
            kept.positions.insert(item.id().to_string(), i);
        }
    }
}

/// Merges the sorted lists `target` and `new`, moving each item once, into one list of the right
/// size. Returns false when `target` turned out not to be sorted, and so neither is the result.
fn merge_sorted<T: ListEntry>(target: &mut Vec<T>, new: Vec<T>) -> bool {
    let target_sorted = target
        .windows(2)
        .all(|pair| order_key(&pair[0]) <= order_key(&pair[1]));
    let mut out = Vec::with_capacity(target.len() + new.len());
    let mut kept = std::mem::take(target).into_iter().peekable();
    let mut new = new.into_iter().peekable();
    while let (Some(k), Some(n)) = (kept.peek(), new.peek()) {
        let next = if order_key(k) <= order_key(n) {
            kept.next()
        } else {
            new.next()
        };
        out.extend(next);
    }
    out.extend(kept);
    out.extend(new);
    *target = out;
    target_sorted
}

/// Moves `target[at]` back to its place among the sorted items before it, shifting those after
/// that place up by one (and their positions in `index`).
fn move_into_place<T: ListEntry>(target: &mut [T], at: usize, index: Option<&mut ListIndex>) {
    let key = order_key(&target[at]);
    let place = target[..at].partition_point(|e| order_key(e) <= key);
    if place == at {
        return;
    }
    target[place..=at].rotate_right(1);
    if let Some(index) = index {
        for (i, item) in target.iter().enumerate().take(at + 1).skip(place) {
            if let Some(position) = index.positions.get_mut(item.id()) {
                *position = i;
            }
        }
    }
}

/// Where each id of a list sits, kept beside a live session.
#[derive(Clone, Debug, Default)]
pub struct ListIndex {
    positions: IdMap<String, usize>,
}

impl ListIndex {
    /// Rebuilds the index when it plainly disagrees with the list (a change made without it).
    fn sync<T: ListEntry>(&mut self, list: &[T]) {
        if self.positions.len() != list.len() {
            self.rebuild(list);
        }
    }

    fn rebuild<T: ListEntry>(&mut self, list: &[T]) {
        self.positions = list
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id().to_string(), i))
            .collect();
    }
}

/// The indexes of a live session's long lists: beats and conversation entries.
#[derive(Clone, Debug, Default)]
pub struct SessionIndex {
    beats: ListIndex,
    entries: ListIndex,
}

type OrderKey<'a> = (Option<i64>, &'a str, &'a str);

fn order_key<T: ListEntry>(item: &T) -> OrderKey<'_> {
    (item.millis(), item.time(), item.id())
}

/// Sorts by time, then id. The times are parsed once, and the items are moved once, into place:
/// a list that is two sorted runs (what a merge appends to a sorted list) sorts in one pass.
fn sort_by_time_then_id<T: ListEntry>(items: &mut Vec<T>) {
    let mut order: Vec<(Option<i64>, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (item.millis(), i))
        .collect();
    order.sort_by(|(a_ms, a), (b_ms, b)| {
        let (a, b) = (&items[*a], &items[*b]);
        a_ms.cmp(b_ms)
            .then_with(|| a.time().cmp(b.time()))
            .then_with(|| a.id().cmp(b.id()))
    });
    if order.iter().enumerate().all(|(to, (_, from))| to == *from) {
        return;
    }
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|(_, from)| slots[from].take()));
}

/// Actions sort by `order` (those without one last), then by id.
fn sort_actions(actions: &mut [StcAction]) {
    actions.sort_by(|a, b| {
        let order = |x: &StcAction| {
            x.order
                .as_ref()
                .and_then(|n| n.as_f64())
                .unwrap_or(f64::INFINITY)
        };
        order(a).total_cmp(&order(b)).then_with(|| a.id.cmp(&b.id))
    });
}

/// Of two RFC 3339 times, the earlier, when it is not already `current`. An empty or unreadable
/// time loses to a readable one.
fn earliest<'a>(current: &str, candidate: &'a str) -> Option<&'a str> {
    (time_rank(candidate, true) < time_rank(current, true)).then_some(candidate)
}

fn latest<'a>(current: &str, candidate: &'a str) -> Option<&'a str> {
    (time_rank(candidate, false) > time_rank(current, false)).then_some(candidate)
}

/// A total order on time strings; unreadable ones rank past the far end of the search direction.
fn time_rank(time: &str, for_min: bool) -> (i8, i64, &str) {
    match parse_rfc3339_millis(time) {
        Some(millis) => (0, millis, time),
        None if for_min => (1, 0, time),
        None => (-1, 0, time),
    }
}

/// Escape a path segment, so that `.` inside an id or a field name cannot fake a deeper path.
pub fn segment(raw: &str) -> Cow<'_, str> {
    if raw.contains(['.', '\\']) {
        Cow::Owned(raw.replace('\\', "\\\\").replace('.', "\\."))
    } else {
        Cow::Borrowed(raw)
    }
}

/// The JSON text that breaks ties between different values: canonical, with the keys of every
/// object sorted and `-0.0` written as `0.0`. Two values serde_json calls equal (its equality
/// ignores key order) have the same canonical text, so "the larger text wins" is a total order
/// that agrees with the `!=` checks above. With the plain text, `{"x":1,"y":2}` and
/// `{"y":2,"x":1}` would be equal yet sort around a third value, and merging three copies would
/// depend on their grouping.
fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    serde_json::to_string(&canonical(value)).unwrap_or_default()
}

fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        Value::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => Value::from(0.0),
        other => other,
    }
}

fn internal(err: serde_json::Error) -> StoreError {
    StoreError::internal(err.to_string())
}
