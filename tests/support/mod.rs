//! What the store's fault tests share: a file system that fails on purpose ([`fault_disk`]), one
//! that loses power ([`power_loss`]), a scripted workload with a model of what was
//! acknowledged ([`workload`]), a `redis-server` with a proxy that holds a write transaction
//! before its `EXEC` ([`redis_proxy`]), and sessions and journal records made by hand
//! ([`records`]). Each test file uses part of them.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use mia_narrative_session::store::{MergeMode, StoreOptions};

pub mod fault_disk;
pub mod power_loss;
pub mod records;
pub mod redis_proxy;
pub mod workload;

/// Options with autosave and cleanup off, so that only what a test does touches the files. Small
/// sessions are held as text after every call (`fold_after` zero), so that every test also
/// checks that a session parsed again from its text is the one it was.
pub fn quiet_options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.autosave_interval = Duration::ZERO;
    options.cleanup_interval = Duration::ZERO;
    options.fold_after = Duration::ZERO;
    options
}

/// A merge that is written (one journal append and its sync) before it resolves, without the
/// session in its result.
pub const DURABLE: MergeMode = MergeMode {
    with_session: false,
    durable: true,
};
