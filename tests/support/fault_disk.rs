//! A file system that fails on purpose: the real one, with the Nth operation (or every operation
//! of some kinds, until healed) failing with an errno of the test's choosing, as redb's fuzzer and
//! SQLite's I/O-error tests fail theirs.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mia_narrative_session::store::disk::{Disk, DiskFile, Entry, RealDisk};

/// The operations a fault can hit. Looking (`entry`, `list`, `mark`) never fails: a fault there
/// would only show that a store cannot work without looking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Create,
    OpenAppend,
    OpenWrite,
    Link,
    Rename,
    Remove,
    SyncDir,
    CreateDir,
    Write,
    SyncData,
    SyncAll,
    SetLen,
}

#[derive(Debug, Default)]
struct Plan {
    /// Operations counted so far.
    count: u64,
    /// The operation (1-based) that fails, once.
    fail_at: Option<u64>,
    /// Kinds that fail every time while set.
    failing: Vec<Op>,
    errno: i32,
    /// Every operation counted, in order, with whether it failed.
    log: Vec<(Op, bool)>,
}

/// The faults to inject, shared by a [`FaultDisk`] and the test that drives it.
#[derive(Debug, Default, Clone)]
pub struct Faults(Arc<Mutex<Plan>>);

impl Faults {
    /// Fails the `n`th operation from now (1-based) with `errno`.
    pub fn fail_nth(&self, n: u64, errno: i32) {
        let mut plan = self.0.lock().unwrap();
        plan.fail_at = Some(plan.count + n);
        plan.errno = errno;
    }

    /// Fails every operation of these kinds with `errno` until [`Faults::heal`].
    pub fn fail_every(&self, kinds: &[Op], errno: i32) {
        let mut plan = self.0.lock().unwrap();
        plan.failing = kinds.to_vec();
        plan.errno = errno;
    }

    pub fn heal(&self) {
        let mut plan = self.0.lock().unwrap();
        plan.failing.clear();
        plan.fail_at = None;
    }

    /// How many operations were counted so far.
    pub fn count(&self) -> u64 {
        self.0.lock().unwrap().count
    }

    /// How many operations of `kind` were counted so far.
    pub fn count_of(&self, kind: Op) -> usize {
        self.0
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(op, _)| *op == kind)
            .count()
    }

    /// How many operations failed so far.
    pub fn failures(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(_, f)| *f)
            .count()
    }

    fn check(&self, op: Op) -> io::Result<()> {
        let mut plan = self.0.lock().unwrap();
        plan.count += 1;
        let fail = plan.fail_at == Some(plan.count) || plan.failing.contains(&op);
        plan.log.push((op, fail));
        if fail {
            Err(io::Error::from_raw_os_error(plan.errno))
        } else {
            Ok(())
        }
    }
}

/// The real file system with [`Faults`].
#[derive(Debug)]
pub struct FaultDisk {
    real: RealDisk,
    faults: Faults,
}

impl FaultDisk {
    pub fn new(faults: Faults) -> FaultDisk {
        FaultDisk {
            real: RealDisk,
            faults,
        }
    }
}

#[derive(Debug)]
struct FaultFile {
    real: Box<dyn DiskFile>,
    faults: Faults,
}

impl Disk for FaultDisk {
    fn read(&self, path: &Path, max: u64) -> io::Result<Vec<u8>> {
        self.faults.check(Op::Read)?;
        self.real.read(path, max)
    }
    fn entry(&self, path: &Path) -> io::Result<Entry> {
        self.real.entry(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.faults.check(Op::Create)?;
        self.wrap(self.real.create_new(path)?)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.faults.check(Op::OpenAppend)?;
        self.wrap(self.real.open_append(path)?)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.faults.check(Op::OpenWrite)?;
        self.wrap(self.real.open_write(path)?)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.check(Op::Link)?;
        self.real.hard_link(from, to)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.check(Op::Rename)?;
        self.real.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.faults.check(Op::Remove)?;
        self.real.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check(Op::SyncDir)?;
        self.real.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.real.list(dir)
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check(Op::CreateDir)?;
        self.real.create_dir(dir)
    }
    fn mark(&self, path: &Path) -> Option<String> {
        self.real.mark(path)
    }
}

impl FaultDisk {
    fn wrap(&self, real: Box<dyn DiskFile>) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(FaultFile {
            real,
            faults: self.faults.clone(),
        }))
    }
}

impl DiskFile for FaultFile {
    /// A failed write writes half its bytes first, as a write cut short by a full disk does.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.faults.check(Op::Write) {
            let _ = self.real.write_all(&bytes[..bytes.len() / 2]);
            return Err(e);
        }
        self.real.write_all(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.faults.check(Op::SyncData)?;
        self.real.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.faults.check(Op::SyncAll)?;
        self.real.sync_all()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.faults.check(Op::SetLen)?;
        self.real.set_len(len)
    }
    fn set_modified(&mut self, time: SystemTime) -> io::Result<()> {
        self.real.set_modified(time)
    }
    fn entry(&self) -> io::Result<Entry> {
        self.real.entry()
    }
    fn set_mark(&mut self, value: &str) -> io::Result<()> {
        self.real.set_mark(value)
    }
}
