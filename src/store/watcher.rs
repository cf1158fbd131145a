//! Watching the sessions directory, so that a session file changed by someone else (a second
//! mia-code-server process on the same data dir, or an operator restoring a file) reaches the live
//! session within a moment.
//!
//! The watcher only reports which session files changed. The store decides whether a change is
//! its own write (the file still has the stamp the store recorded) and merges the rest.
//!
//! On Linux the directory is watched through inotify directly, for only the events that can
//! change a session: a file created, written, or renamed into place. (notify, used elsewhere, also
//! asks Linux for every open, close, attribute change and delete, so that every file any process
//! reads or removes there, a sweep's 100,000 say, is an event for this one to read.)

use std::path::Path;

use tokio::sync::mpsc::UnboundedSender;

use crate::error::{ErrorCode, StoreError};
use crate::paths::is_file_stem;

#[cfg(target_os = "linux")]
pub use self::inotify_watch::{watch_sessions, Watch};
#[cfg(not(target_os = "linux"))]
pub use self::notify_watch::{watch_sessions, Watch};

#[cfg(target_os = "linux")]
mod inotify_watch {
    use super::*;
    use futures_util::StreamExt;
    use inotify::{Inotify, WatchMask};

    /// A running watch; dropping it stops it.
    pub struct Watch(tokio::task::JoinHandle<()>);

    impl Drop for Watch {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// Starts watching `dir` (on the current tokio runtime); the stem of every session file
    /// created, written or renamed into place there is sent to `changed`.
    pub fn watch_sessions(
        dir: &Path,
        changed: UnboundedSender<String>,
    ) -> crate::error::Result<Watch> {
        let inotify = Inotify::init().map_err(watch_error)?;
        inotify
            .watches()
            .add(
                dir,
                WatchMask::CREATE | WatchMask::MODIFY | WatchMask::MOVED_TO,
            )
            .map_err(watch_error)?;
        let mut events = inotify
            .into_event_stream(vec![0; 16 * 1024])
            .map_err(watch_error)?;
        Ok(Watch(tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                let Some(name) = event.name else { continue };
                if let Some(stem) = session_stem(Path::new(&name)) {
                    if changed.send(stem.to_string()).is_err() {
                        break;
                    }
                }
            }
        })))
    }
}

#[cfg(not(target_os = "linux"))]
mod notify_watch {
    use super::*;
    use notify::{EventKind, RecursiveMode, Watcher};

    /// A running watch; dropping it stops it.
    pub type Watch = notify::RecommendedWatcher;

    /// Starts watching `dir`; the stem of every session file created or modified there is sent to
    /// `changed`.
    pub fn watch_sessions(
        dir: &Path,
        changed: UnboundedSender<String>,
    ) -> crate::error::Result<Watch> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
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

fn watch_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        ErrorCode::Io,
        format!("cannot watch the sessions directory: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    /// What the watch reports within `wait`.
    async fn reported(
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
        wait: Duration,
    ) -> Vec<String> {
        let mut stems = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(stem)) = tokio::time::timeout_at(deadline, reports.recv()).await {
            stems.push(stem);
        }
        stems
    }

    #[tokio::test]
    async fn reports_writes_and_renames_of_session_files_and_nothing_for_reads_or_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let snapshot = dir.path().join(format!("{a}.json"));
        fs::write(&snapshot, b"{}").unwrap();
        fs::write(dir.path().join(format!("{b}.json")), b"{}").unwrap();
        let (changed, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let _watch = watch_sessions(dir.path(), changed).unwrap();

        // Reads, stats, deletes and files that are not sessions: nothing to report.
        fs::read(&snapshot).unwrap();
        fs::metadata(&snapshot).unwrap();
        fs::remove_file(dir.path().join(format!("{b}.json"))).unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(
            reported(&mut reports, Duration::from_millis(200)).await,
            Vec::<String>::new()
        );

        // A journal appended to, and a snapshot renamed into place.
        fs::write(dir.path().join(format!("{a}.journal")), b"records").unwrap();
        let temp = dir.path().join(format!(".{b}.1.tmp"));
        fs::write(&temp, b"{}").unwrap();
        fs::rename(&temp, dir.path().join(format!("{b}.json"))).unwrap();
        let mut stems = reported(&mut reports, Duration::from_millis(500)).await;
        stems.dedup();
        assert_eq!(stems, [a, b]);
    }
}
