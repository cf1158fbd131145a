//! mia-narrative-session: narrative session persistence for mia-code-server.
//!
//! The core (everything but `binding`) knows nothing of Node.js:
//! - [`model`]: the session and its parts;
//! - [`clock`]: hybrid logical clocks that order writes;
//! - [`merge`]: the merge rules;
//! - [`update`]: turning a client's update into a merge patch;
//! - [`store`]: the live sessions, autosave and the file backend;
//! - [`cleanup`]: the TTL sweep;
//! - [`paths`]: where sessions live and how ids become file names;
//! - [`text`]: JSON text as it comes from JavaScript (UTF-8 or UTF-16);
//! - [`yielding`]: long copies and reads in pieces, so that Node's thread gets a core;
//! - [`error`]: errors with stable codes.
//!
//! `binding` is the thin N-API layer over [`store::SessionStore`] and [`merge::merge_sessions`].

// In `cargo test` builds napi registers nothing, so the exported functions look unused.
#[cfg_attr(test, allow(dead_code))]
mod binding;
pub mod cleanup;
pub mod clock;
pub mod error;
pub mod journal;
pub mod merge;
pub mod model;
pub mod paths;
pub mod raw;
pub mod store;
pub mod text;
pub mod update;
pub mod yielding;

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, recovering from poisoning: every critical section in this crate leaves its
/// data whole, so a panic elsewhere while one was held must not make the data unreachable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cores this process may run on (1 when the system cannot say).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
