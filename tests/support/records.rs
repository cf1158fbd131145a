//! Sessions and journal records as the store makes them, for tests that write them by hand.

use mia_narrative_session::clock::HybridClock;
use mia_narrative_session::journal;
use mia_narrative_session::merge::{apply_patch, normalize, settle_update};
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::update::parse_update;
use serde_json::json;

/// A new, empty session of `key`, normalised as the store holds it.
pub fn new_session(key: &SessionKey) -> NarrativeSession {
    normalize(&NarrativeSession::new(
        key.session_id(),
        key.user_id.clone(),
        key.workspace_id.clone(),
        "2026-01-01T00:00:00.000Z".into(),
    ))
    .unwrap()
}

/// The journal frame of an update that adds conversation entry `id` (letters, digits, `-`, `_`),
/// settled against `session` as a store would append it, and the session with it applied.
pub fn entry_record(session: &NarrativeSession, id: &str) -> (NarrativeSession, Vec<u8>) {
    let text = json!({"conversationHistory": [{"id": id, "role": "user", "content": id}]});
    // A clock's node id takes no `-`.
    let mut clock = HybridClock::new(id.replace('-', "_"));
    let patch = parse_update(&text.to_string())
        .unwrap()
        .into_patch(&mut clock)
        .unwrap();
    let settled = settle_update(session, patch).unwrap();
    let mut after = session.clone();
    apply_patch(&mut after, &settled).unwrap();
    (after, journal::encode(&settled).unwrap())
}

/// The ids of a session's conversation entries, in its order.
pub fn entry_ids(session: &NarrativeSession) -> Vec<String> {
    session
        .conversation_history
        .iter()
        .map(|e| e.id.clone())
        .collect()
}
