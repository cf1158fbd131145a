//! A file system in memory that can lose power, as SQLite's crash-test VFS and redb's fuzzer do.
//!
//! It records every write, `fsync`, `fdatasync`, rename, link, removal and directory `fsync`. At a
//! simulated power loss it keeps only what Linux and ext4 promise to have on disk:
//! - a file's data written since its last `fsync`/`fdatasync` may be gone, or torn: of the writes
//!   since then, some first ones survive and the next may survive in part;
//! - a name created, linked, renamed or removed since the directory's last `fsync` may be undone,
//!   each one independently (ext4 happens to commit them in order; nothing promises it).
//!
//! Everything is decided by a seed, so a failing case can be run again. The power goes at the
//! `crash_at`th operation: that operation and every later one fail with `EIO`, as they would on a
//! machine that is gone, and [`SimDisk::after_power_loss`] gives the disk as it comes back up.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mia_narrative_session::store::disk::{not_regular, too_big, Disk, DiskFile, Entry, EntryKind};

/// A small deterministic random source (xorshift64*), so the simulation needs no crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

#[derive(Clone, Debug)]
enum DataOp {
    Write { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    unsynced: Vec<DataOp>,
    mark: Option<String>,
    durable_mark: Option<String>,
    modified: Option<SystemTime>,
}

impl Inode {
    fn apply(data: &mut Vec<u8>, op: &DataOp) {
        match op {
            DataOp::Write { at, bytes } => {
                let at = *at as usize;
                if data.len() < at + bytes.len() {
                    data.resize(at + bytes.len(), 0);
                }
                data[at..at + bytes.len()].copy_from_slice(bytes);
            }
            DataOp::SetLen(len) => data.resize(*len as usize, 0),
        }
    }

    fn sync(&mut self) {
        self.durable = self.data.clone();
        self.unsynced.clear();
        self.durable_mark = self.mark.clone();
    }

    /// The data after a power loss: the durable data, then some first unsynced changes, the
    /// next of them possibly torn.
    fn after_power_loss(&self, rng: &mut Rng) -> Inode {
        let mut data = self.durable.clone();
        let kept = rng.below(self.unsynced.len() as u64 + 1) as usize;
        for op in &self.unsynced[..kept] {
            Inode::apply(&mut data, op);
        }
        if let Some(DataOp::Write { at, bytes }) = self.unsynced.get(kept) {
            let part = rng.below(bytes.len() as u64) as usize;
            Inode::apply(
                &mut data,
                &DataOp::Write {
                    at: *at,
                    bytes: bytes[..part].to_vec(),
                },
            );
        }
        let mark = if rng.chance() {
            self.mark.clone()
        } else {
            self.durable_mark.clone()
        };
        Inode {
            durable: data.clone(),
            data,
            unsynced: Vec::new(),
            mark: mark.clone(),
            durable_mark: mark,
            modified: self.modified,
        }
    }
}

#[derive(Clone, Debug)]
enum DirOp {
    /// A name given to an inode (a create or a link).
    Link(PathBuf, u64),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
}

#[derive(Debug, Default)]
struct Sim {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    unsynced_names: Vec<DirOp>,
    dirs: Vec<PathBuf>,
    ops: u64,
    crash_at: Option<u64>,
    /// The disk as it comes back after the power loss, once it happened.
    image: Option<Box<Sim>>,
    rng: Option<Rng>,
}

impl Sim {
    fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, op: &DirOp) {
        match op {
            DirOp::Link(name, inode) => {
                names.entry(name.clone()).or_insert(*inode);
            }
            DirOp::Rename(from, to) => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
            DirOp::Unlink(name) => {
                names.remove(name);
            }
        }
    }

    fn power_loss(&self, rng: &mut Rng) -> Sim {
        let mut names = self.durable_names.clone();
        for op in &self.unsynced_names {
            if rng.chance() {
                Sim::apply_dir_op(&mut names, op);
            }
        }
        let inodes = self
            .inodes
            .iter()
            .filter(|(inode, _)| names.values().any(|n| n == *inode))
            .map(|(n, inode)| (*n, inode.after_power_loss(rng)))
            .collect();
        Sim {
            inodes,
            next_inode: self.next_inode,
            durable_names: names.clone(),
            names,
            dirs: self.dirs.clone(),
            ..Sim::default()
        }
    }

    /// Counts an operation; the power goes at `crash_at`.
    fn tick(&mut self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(gone());
        }
        self.ops += 1;
        if Some(self.ops) == self.crash_at {
            let mut rng = self.rng.take().unwrap_or_else(|| Rng::new(self.ops));
            self.image = Some(Box::new(self.power_loss(&mut rng)));
            return Err(gone());
        }
        Ok(())
    }

    fn inode_at(&self, path: &Path) -> io::Result<u64> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn entry_of(&self, inode: u64) -> Entry {
        let node = &self.inodes[&inode];
        Entry {
            kind: EntryKind::File,
            len: node.data.len() as u64,
            modified: node.modified,
            identity: (1, inode),
            changed: None,
        }
    }
}

fn gone() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// The simulated disk. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<Sim>>);

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Makes the power go at the `n`th operation from now, the losses drawn from `seed`.
    pub fn lose_power_at(&self, n: u64, seed: u64) {
        let mut sim = self.0.lock().unwrap();
        sim.crash_at = Some(sim.ops + n);
        sim.rng = Some(Rng::new(seed));
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.0.lock().unwrap().ops
    }

    /// Whether the power went.
    pub fn lost_power(&self) -> bool {
        self.0.lock().unwrap().image.is_some()
    }

    /// The disk as it comes back after the power loss, or None if the power never went.
    pub fn after_power_loss(&self) -> Option<SimDisk> {
        let image = self.0.lock().unwrap().image.take()?;
        Some(SimDisk(Arc::new(Mutex::new(*image))))
    }

    /// The names of the files (for messages).
    pub fn names(&self) -> Vec<String> {
        let sim = self.0.lock().unwrap();
        sim.names
            .keys()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    append: bool,
    position: u64,
}

impl Disk for SimDisk {
    fn read(&self, path: &Path, max: u64) -> io::Result<Vec<u8>> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        if sim.dirs.iter().any(|d| d == path) {
            return Err(not_regular(path, EntryKind::Dir));
        }
        let inode = sim.inode_at(path)?;
        let data = &sim.inodes[&inode].data;
        if data.len() as u64 > max {
            return Err(too_big(path, data.len() as u64, max));
        }
        Ok(data.clone())
    }

    fn entry(&self, path: &Path) -> io::Result<Entry> {
        let sim = self.0.lock().unwrap();
        if sim.image.is_some() {
            return Err(gone());
        }
        if sim.dirs.iter().any(|d| d == path) {
            return Ok(Entry {
                kind: EntryKind::Dir,
                len: 0,
                modified: None,
                identity: (1, 0),
                changed: None,
            });
        }
        let inode = sim.inode_at(path)?;
        Ok(sim.entry_of(inode))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        if sim.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        sim.next_inode += 1;
        let inode = sim.next_inode;
        sim.inodes.insert(
            inode,
            Inode {
                modified: Some(SystemTime::now()),
                ..Inode::default()
            },
        );
        sim.names.insert(path.to_path_buf(), inode);
        sim.unsynced_names
            .push(DirOp::Link(path.to_path_buf(), inode));
        drop(sim);
        Ok(self.file(inode, false, 0))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let existing = {
            let mut sim = self.0.lock().unwrap();
            sim.tick()?;
            sim.names.get(path).copied()
        };
        match existing {
            Some(inode) => Ok(self.file(inode, true, 0)),
            None => {
                let mut sim = self.0.lock().unwrap();
                sim.next_inode += 1;
                let inode = sim.next_inode;
                sim.inodes.insert(
                    inode,
                    Inode {
                        modified: Some(SystemTime::now()),
                        ..Inode::default()
                    },
                );
                sim.names.insert(path.to_path_buf(), inode);
                sim.unsynced_names
                    .push(DirOp::Link(path.to_path_buf(), inode));
                drop(sim);
                Ok(self.file(inode, true, 0))
            }
        }
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        let inode = sim.inode_at(path)?;
        drop(sim);
        Ok(self.file(inode, false, 0))
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        let inode = sim.inode_at(from)?;
        if sim.names.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        sim.names.insert(to.to_path_buf(), inode);
        sim.unsynced_names
            .push(DirOp::Link(to.to_path_buf(), inode));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        let inode = sim.inode_at(from)?;
        if sim.names.get(to) == Some(&inode) {
            // Two names of one file: rename(2) then does nothing.
            return Ok(());
        }
        sim.names.remove(from);
        sim.names.insert(to.to_path_buf(), inode);
        sim.unsynced_names
            .push(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        sim.inode_at(path)?;
        sim.names.remove(path);
        sim.unsynced_names.push(DirOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        sim.tick()?;
        sim.durable_names = sim.names.clone();
        sim.unsynced_names.clear();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let sim = self.0.lock().unwrap();
        if sim.image.is_some() {
            return Err(gone());
        }
        Ok(sim
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        if !sim.dirs.iter().any(|d| d == dir) {
            sim.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn mark(&self, path: &Path) -> Option<String> {
        let sim = self.0.lock().unwrap();
        let inode = sim.names.get(path)?;
        sim.inodes[inode].mark.clone()
    }
}

impl SimDisk {
    fn file(&self, inode: u64, append: bool, position: u64) -> Box<dyn DiskFile> {
        Box::new(SimFile {
            disk: self.clone(),
            inode,
            append,
            position,
        })
    }
}

impl SimFile {
    fn with<T>(&self, change: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut sim = self.disk.0.lock().unwrap();
        sim.tick()?;
        let node = sim.inodes.get_mut(&self.inode).ok_or_else(gone)?;
        Ok(change(node))
    }
}

impl DiskFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (append, position) = (self.append, self.position);
        let end = self.with(|node| {
            let at = if append {
                node.data.len() as u64
            } else {
                position
            };
            let op = DataOp::Write {
                at,
                bytes: bytes.to_vec(),
            };
            Inode::apply(&mut node.data, &op);
            node.unsynced.push(op);
            node.modified = Some(SystemTime::now());
            at + bytes.len() as u64
        })?;
        self.position = end;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with(Inode::sync)
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.with(Inode::sync)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|node| {
            let op = DataOp::SetLen(len);
            Inode::apply(&mut node.data, &op);
            node.unsynced.push(op);
        })
    }

    fn set_modified(&mut self, time: SystemTime) -> io::Result<()> {
        self.with(|node| node.modified = Some(time))
    }

    fn entry(&self) -> io::Result<Entry> {
        let sim = self.disk.0.lock().unwrap();
        if sim.image.is_some() {
            return Err(gone());
        }
        Ok(sim.entry_of(self.inode))
    }

    fn set_mark(&mut self, value: &str) -> io::Result<()> {
        self.with(|node| node.mark = Some(value.to_string()))
    }
}
