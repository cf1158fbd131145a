//! Watching the sessions directory, so that a session file changed by someone else (a second
//! mia-code-server process on the same data dir, or an operator restoring a file) reaches the live
//! session within a moment.
//!
//! The watcher only reports which session files changed. The store decides whether a change is
//! its own write (the file still has the stamp the store recorded) and merges the rest.

use std::path::Path;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{ErrorCode, Result, StoreError};
use crate::paths::is_file_stem;

/// Starts watching `dir`; the stem of every session file created or modified there is sent to
/// `changed`. The watch stops when the returned watcher is dropped.
pub fn watch_sessions(dir: &Path, changed: UnboundedSender<String>) -> Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
            return;
        }
        for path in &event.paths {
            if let Some(stem) = session_stem(path) {
                let _ = changed.send(stem.to_string());
            }
        }
    })
    .map_err(watch_error)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    Ok(watcher)
}

/// The stem of a session's snapshot (`<stem>.json`) or journal (`<stem>.journal`), or None for
/// any other file.
fn session_stem(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".json")
        .or_else(|| name.strip_suffix(".journal"))?;
    is_file_stem(stem).then_some(stem)
}

fn watch_error(err: notify::Error) -> StoreError {
    StoreError::new(
        ErrorCode::Io,
        format!("cannot watch the sessions directory: {err}"),
    )
}
