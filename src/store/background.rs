//! What a store does on its own: autosave, the TTL sweep, unloading idle sessions (and holding
//! small idle ones as text), and watching for changes other processes make (file events, or
//! Redis's notifications).

use std::sync::Arc;
use std::time::Duration;

use super::{free_off_thread, watcher, SessionStore, Slot};
use crate::lock;

/// How long the watcher gathers file events before acting on them.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(50);

impl SessionStore {
    /// Starts taking in changes other processes make to the store's sessions.
    pub(super) fn start_watching(&self) {
        if let Some(redis) = self.redis() {
            self.start_redis_subscription(redis);
            return;
        }
        let (changed, mut reports) = tokio::sync::mpsc::unbounded_channel();
        // Without a watcher (no inotify slots left, say) the store still works; it just learns of
        // other processes' changes at its next save instead.
        let Ok(watcher) = watcher::watch_sessions(self.data_dir(), changed) else {
            return;
        };
        *lock(&self.inner.watcher) = Some(watcher);
        let store = self.clone();
        let mut stop = self.inner.stop.subscribe();
        self.spawn_task(async move {
            loop {
                let first = tokio::select! {
                    stem = reports.recv() => match stem { Some(stem) => stem, None => break },
                    _ = stop.changed() => break,
                };
                // A write is several events (create, modify, rename): take them as one.
                tokio::time::sleep(WATCH_DEBOUNCE).await;
                if *stop.borrow() {
                    break;
                }
                let mut stems = std::collections::BTreeSet::from([first]);
                while let Ok(stem) = reports.try_recv() {
                    stems.insert(stem);
                }
                for stem in stems {
                    let _ = store.refresh(&stem).await;
                }
            }
        });
    }

    /// Starts autosave (with unloading of idle sessions) and the periodic TTL sweep.
    pub(super) fn start_timers(&self) {
        let autosave = self.inner.options.autosave_interval;
        if !autosave.is_zero() {
            let store = self.clone();
            self.spawn_task(async move {
                while store.sleep_unless_stopped(autosave).await {
                    // Failed sessions stay dirty and are retried on the next tick.
                    let _ = store.flush_dirty().await;
                    store.unload_idle().await;
                    store.fold_idle().await;
                }
            });
        }
        let sweep = self.inner.options.cleanup_interval;
        if !sweep.is_zero() {
            let store = self.clone();
            self.spawn_task(async move {
                loop {
                    let _ = store.sweep(None, None).await;
                    if !store.sleep_unless_stopped(sweep).await {
                        break;
                    }
                }
            });
        }
    }

    /// Drops from memory the sessions that no call has used for `unload_after` and that have
    /// nothing left to write. A session a call holds (or waits for) stays: a slot leaves the map
    /// only while the map is its one holder, and no call can take it from the map meanwhile.
    async fn unload_idle(&self) {
        let after = self.inner.options.unload_after;
        if after.is_zero() {
            return;
        }
        let mut unloaded = Vec::new();
        lock(&self.inner.live).retain(|_, slot| {
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            let Ok(mut state) = slot.state.try_lock() else {
                return true;
            };
            match state.as_ref() {
                Some(live) if live.is_dirty() || live.idle_for() < after => true,
                _ => {
                    unloaded.extend(state.take());
                    false
                }
            }
        });
        free_off_thread(unloaded).await;
    }

    /// Holds the small sessions no call has used for `fold_after` as their text (see
    /// `Live::fold`). A session a call holds right now is left as it is.
    async fn fold_idle(&self) {
        let after = self.inner.options.fold_after;
        let slots: Vec<Arc<Slot>> = lock(&self.inner.live).values().cloned().collect();
        for (n, slot) in slots.iter().enumerate() {
            if let Ok(mut state) = slot.state.try_lock() {
                if let Some(live) = state.as_mut().filter(|l| l.idle_for() >= after) {
                    live.fold(&slot.key.session_id());
                }
            }
            // Each fold may serialise a session: let other tasks have the worker now and then.
            if n % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
    }

    pub(super) fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.inner.tasks).push(tokio::spawn(task));
    }

    /// Sleeps for `period`; false when the store closed meanwhile.
    async fn sleep_unless_stopped(&self, period: Duration) -> bool {
        let mut stop = self.inner.stop.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => !*stop.borrow(),
            _ = stop.changed() => false,
        }
    }
}
