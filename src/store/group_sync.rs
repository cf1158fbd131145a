//! Directory fsyncs shared by the writers that wait for one at the same time.
//!
//! A new file (a new session's snapshot, a new journal) is durable only once the directory that
//! names it is synced. When many sessions are created at once, each would sync the directory in
//! turn, although one sync covers every rename made before it started. So a writer that asks for
//! a sync while one is running waits for it to end, and then either finds its rename covered by a
//! sync that started after it asked, or leads the next sync itself, for everyone who asked
//! meanwhile. A failed sync covers nobody: each waiter tries again and gets its own result.

use std::io;
use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out: one per call, taken after the caller's changes were made.
    asked: u64,
    /// Every ticket up to this one is covered by a sync that succeeded.
    covered: u64,
    /// A sync is running.
    running: bool,
}

impl GroupSync {
    /// Returns once a call of `sync` that started after this call did has succeeded (this
    /// caller's own, or another's), or with this caller's own error.
    pub fn sync(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.asked += 1;
        let ticket = state.asked;
        loop {
            if state.covered >= ticket {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                let covers = state.asked;
                drop(state);
                let result = sync();
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.running = false;
                if result.is_ok() {
                    state.covered = state.covered.max(covers);
                }
                self.ended.notify_all();
                return result;
            }
            state = self
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn a_lone_caller_runs_its_own_sync() {
        let group = GroupSync::default();
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            group
                .sync(|| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// Callers that ask while a sync runs share one later sync; none returns before a sync that
    /// started after it asked has ended.
    #[test]
    fn callers_waiting_on_a_running_sync_share_the_next_one() {
        let group = Arc::new(GroupSync::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Barrier::new(2));
        let leader = {
            let (group, runs, release) = (group.clone(), runs.clone(), release.clone());
            std::thread::spawn(move || {
                group.sync(|| {
                    release.wait();
                    std::thread::sleep(Duration::from_millis(200));
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        release.wait();
        // The first sync is running: these callers' changes came after it started.
        let followers: Vec<_> = (0..8)
            .map(|_| {
                let (group, runs) = (group.clone(), runs.clone());
                std::thread::spawn(move || {
                    group.sync(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })?;
                    Ok::<_, io::Error>(runs.load(Ordering::SeqCst))
                })
            })
            .collect();
        leader.join().unwrap().unwrap();
        for follower in followers {
            // Returned only after a second sync (one begun after it asked) ended.
            assert!(follower.join().unwrap().unwrap() >= 2);
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!(runs < 9, "{runs} syncs for 9 callers: none was shared");
    }

    /// A sync that fails covers nobody: callers that were waiting for it each sync again (here
    /// every later sync fails too, so every one of them must get an error).
    #[test]
    fn a_failed_sync_covers_nobody() {
        let group = Arc::new(GroupSync::default());
        let release = Arc::new(Barrier::new(2));
        let leader = {
            let (group, release) = (group.clone(), release.clone());
            std::thread::spawn(move || {
                group.sync(|| {
                    release.wait();
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(())
                })
            })
        };
        release.wait();
        // These ask while the first sync runs: the next sync covers them all, and it fails.
        let followers: Vec<_> = (0..4)
            .map(|_| {
                let group = group.clone();
                std::thread::spawn(move || group.sync(|| Err(io::Error::other("disk gone"))))
            })
            .collect();
        leader.join().unwrap().unwrap();
        for follower in followers {
            let result = follower.join().unwrap();
            assert_eq!(result.unwrap_err().to_string(), "disk gone");
        }
    }
}
