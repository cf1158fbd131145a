//! Power loss, simulated (`support::power_loss`): a scripted workload of merges, saves, flushes,
//! compactions, cleanup, new sessions and restarts runs on a disk in memory that loses power at an
//! operation; the disk as it comes back must hold every write the store acknowledged as durable.
//!
//! Unlike a kill -9 (after which the page cache still holds every write), a power loss keeps only
//! what was synced: a missing `fdatasync` on an append, or a missing directory `fsync` after a
//! rename, loses acknowledged writes here and fails these tests.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use support::power_loss::SimDisk;
use support::workload::{check, workload};

/// A fresh directory for the locks (real files) and the simulated disk's paths.
fn fresh_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sessions");
    std::fs::create_dir(&dir).unwrap();
    (root, dir)
}

/// Loses power at every operation of the workloads of `seeds`, and at each one with `draws`
/// different choices of what survives. Returns the failures.
async fn lose_power_everywhere(
    seeds: std::ops::Range<u64>,
    steps: usize,
    draws: u64,
) -> Vec<String> {
    let mut runs = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for seed in seeds {
        let (_root, dir) = fresh_dir();
        let clean = SimDisk::new();
        workload(&dir, Arc::new(clean.clone()), seed, steps).await;
        let total = clean.ops();
        for at in 1..=total {
            for draw in 0..draws {
                // A few at a time: each run waits on the blocking pool more than it computes.
                while runs.len() >= 8 {
                    failures.extend(runs.join_next().await.unwrap().unwrap());
                }
                runs.spawn(async move {
                    let (_root, dir) = fresh_dir();
                    let disk = SimDisk::new();
                    disk.lose_power_at(at, seed * 1_000_003 + at * 31 + draw);
                    let model = workload(&dir, Arc::new(disk.clone()), seed, steps).await;
                    let after = disk.after_power_loss()?;
                    let missing = check(&dir, Arc::new(after.clone()), &model, false).await;
                    (!missing.is_empty()).then(|| format!(
                        "seed {seed}, power lost at operation {at} of {total} (draw {draw}): {} wrong, e.g. {:?}; files after: {:?}",
                        missing.len(),
                        &missing[..missing.len().min(3)],
                        after.names()
                    ))
                });
            }
        }
    }
    while let Some(done) = runs.join_next().await {
        failures.extend(done.unwrap());
    }
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_a_power_loss_at_any_operation() {
    let failures = lose_power_everywhere(0..3, 30, 1).await;
    assert!(
        failures.is_empty(),
        "{} of the power losses lost acknowledged writes:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The simulation itself: a write that was never synced is lost in some draw, and one that was
/// synced never is. (Without this, a simulation that kept everything would pass every test.)
#[test]
fn the_simulated_disk_loses_what_was_not_synced_and_keeps_what_was() {
    use mia_narrative_session::store::disk::Disk;
    let dir = Path::new("/sim");
    let mut lost_unsynced = false;
    for seed in 0..20 {
        let disk = SimDisk::new();
        let mut synced = disk.create_new(&dir.join("a")).unwrap();
        synced.write_all(b"synced").unwrap();
        synced.sync_all().unwrap();
        disk.sync_dir(dir).unwrap();
        let mut unsynced = disk.create_new(&dir.join("b")).unwrap();
        unsynced.write_all(b"unsynced").unwrap();
        disk.rename(&dir.join("a"), &dir.join("c")).unwrap();
        disk.lose_power_at(1, seed);
        assert!(disk.sync_dir(dir).is_err(), "the power went");
        let after = disk.after_power_loss().unwrap();
        let a = after.read(&dir.join("a"), 100).ok();
        let c = after.read(&dir.join("c"), 100).ok();
        assert!(
            a.as_deref() == Some(b"synced".as_slice())
                || c.as_deref() == Some(b"synced".as_slice()),
            "synced data under one of its names"
        );
        let b = after.read(&dir.join("b"), 100).ok();
        lost_unsynced |= b.as_deref() != Some(b"unsynced".as_slice());
    }
    assert!(
        lost_unsynced,
        "an unsynced file is lost or torn in some draw"
    );
}
