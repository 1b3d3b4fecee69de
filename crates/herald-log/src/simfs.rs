//! A simulated file system for power-cut and full-disk tests.
//!
//! Every operation is recorded. [`SimFs::cut`] rebuilds the state after the first `step`
//! operations and then "cuts the power": what was synced survives; what was only written may be
//! lost entirely or survive sector by sector (a torn write); a created or removed directory entry
//! survives only if its directory was synced afterwards. An optional capacity makes writes and
//! allocations past it fail with `ENOSPC`, as a full disk does.
//!
//! Not for production use: it keeps everything in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fs::{Fs, FsFile};

/// The granularity at which an unsynced write may survive a power cut partly.
pub const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum Event {
    Mkdir(PathBuf),
    Create(PathBuf, u64),
    Remove(PathBuf),
    Write(u64, u64, Vec<u8>),
    SetLen(u64, u64),
    Sync(u64),
    SyncDir(PathBuf),
}

#[derive(Debug, Default, Clone)]
struct Node {
    data: Vec<u8>,
    durable: Vec<u8>,
    allocated: u64,
}

#[derive(Debug, Default, Clone)]
struct State {
    nodes: HashMap<u64, Node>,
    entries: BTreeMap<PathBuf, u64>,
    durable_entries: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    next_ino: u64,
}

impl State {
    fn apply(&mut self, ev: &Event) {
        match ev {
            Event::Mkdir(p) => {
                self.dirs.insert(p.clone());
            }
            Event::Create(p, ino) => {
                self.nodes.insert(*ino, Node::default());
                self.entries.insert(p.clone(), *ino);
                self.next_ino = self.next_ino.max(ino + 1);
            }
            Event::Remove(p) => {
                self.entries.remove(p);
            }
            Event::Write(ino, off, data) => {
                if let Some(n) = self.nodes.get_mut(ino) {
                    let off = usize::try_from(*off).unwrap_or(usize::MAX);
                    let end = off.saturating_add(data.len());
                    if n.data.len() < end {
                        n.data.resize(end, 0);
                    }
                    if let Some(dst) = n.data.get_mut(off..end) {
                        dst.copy_from_slice(data);
                    }
                }
            }
            Event::SetLen(ino, len) => {
                if let Some(n) = self.nodes.get_mut(ino) {
                    n.data
                        .resize(usize::try_from(*len).unwrap_or(usize::MAX), 0);
                    // Truncating frees the blocks past the new end, pre-allocated ones too.
                    n.allocated = n.allocated.min(*len);
                }
            }
            Event::Sync(ino) => {
                if let Some(n) = self.nodes.get_mut(ino) {
                    n.durable = n.data.clone();
                }
            }
            Event::SyncDir(dir) => {
                let inside = |p: &Path| p.parent() == Some(dir.as_path());
                self.durable_entries.retain(|p, _| !inside(p));
                for (p, ino) in &self.entries {
                    if inside(p) {
                        self.durable_entries.insert(p.clone(), *ino);
                    }
                }
                self.durable_dirs.retain(|p| !inside(p));
                for p in &self.dirs {
                    if inside(p) {
                        self.durable_dirs.insert(p.clone());
                    }
                }
            }
        }
    }

    /// A directory survives a cut if it was made durable or nothing above it was ever created.
    fn dir_survives(&self, dir: &Path) -> bool {
        let mut at = Some(dir);
        while let Some(d) = at {
            if self.dirs.contains(d) && !self.durable_dirs.contains(d) {
                return false;
            }
            at = d.parent();
        }
        true
    }

    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self.entries.values().copied().collect();
        live.iter()
            .filter_map(|i| self.nodes.get(i))
            .map(|n| (n.data.len() as u64).max(n.allocated))
            .sum()
    }

    /// What a power cut leaves: synced data, plus any sectors of unsynced writes that happened
    /// to reach the disk.
    fn cut(&self, rng: &mut StdRng) -> State {
        let mut out = State {
            next_ino: self.next_ino,
            ..State::default()
        };
        for d in &self.dirs {
            if self.dir_survives(d) {
                out.dirs.insert(d.clone());
                out.durable_dirs.insert(d.clone());
            }
        }
        for (p, ino) in &self.durable_entries {
            if !p.parent().is_none_or(|d| self.dir_survives(d)) {
                continue;
            }
            let Some(n) = self.nodes.get(ino) else {
                continue;
            };
            let data = if n.data == n.durable || rng.random_bool(0.5) {
                n.durable.clone()
            } else {
                torn(&n.durable, &n.data, rng)
            };
            out.nodes.insert(
                *ino,
                Node {
                    durable: data.clone(),
                    data,
                    allocated: 0,
                },
            );
            out.entries.insert(p.clone(), *ino);
            out.durable_entries.insert(p.clone(), *ino);
        }
        out
    }
}

/// Unsynced contents surviving sector by sector: each sector where `new` differs from `old` is
/// either the new or the old one (zeros past the old end), and the size is either.
fn torn(old: &[u8], new: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.random_bool(0.5) {
        new.len()
    } else {
        old.len()
    };
    let mut out = vec![0u8; len];
    for (i, chunk) in out.chunks_mut(SECTOR).enumerate() {
        let at = i * SECTOR;
        let pick_new = rng.random_bool(0.5);
        for (j, b) in chunk.iter_mut().enumerate() {
            let src = if pick_new { new } else { old };
            *b = src.get(at + j).copied().unwrap_or(0);
        }
    }
    out
}

#[derive(Debug, Default)]
struct Shared {
    state: State,
    events: Vec<Event>,
    capacity: Option<u64>,
    refused: u64,
}

/// The simulated file system. Cheap to clone; clones share one state.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    shared: Arc<Mutex<Shared>>,
}

fn full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated disk is full")
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Refuses writes and allocations that would take the live files past `bytes`
    /// (`None`: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.shared.lock().capacity = bytes;
    }

    /// Bytes held by live files (their size or their allocation, whichever is larger).
    pub fn used(&self) -> u64 {
        self.shared.lock().state.used()
    }

    /// How many writes and allocations were refused for lack of space.
    pub fn refused(&self) -> u64 {
        self.shared.lock().refused
    }

    /// Operations recorded so far; a cut at this step loses nothing that was synced.
    pub fn steps(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// A new file system holding what a power cut after the first `step` operations leaves.
    /// `seed` chooses which unsynced sectors survive.
    pub fn cut(&self, step: usize, seed: u64) -> SimFs {
        let events: Vec<Event> = {
            let s = self.shared.lock();
            s.events.get(..step).unwrap_or(&s.events).to_vec()
        };
        let mut state = State::default();
        for ev in &events {
            state.apply(ev);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        SimFs {
            shared: Arc::new(Mutex::new(Shared {
                state: state.cut(&mut rng),
                events: Vec::new(),
                capacity: None,
                refused: 0,
            })),
        }
    }

    fn record(&self, ev: Event) {
        let mut s = self.shared.lock();
        s.state.apply(&ev);
        s.events.push(ev);
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        {
            let s = self.shared.lock();
            let mut at = Some(dir);
            while let Some(d) = at {
                // The root and the directories given by the test exist already.
                if d.parent().is_none() || d.as_os_str().is_empty() || s.state.dirs.contains(d) {
                    break;
                }
                missing.push(d.to_path_buf());
                at = d.parent();
            }
        }
        for d in missing.into_iter().rev() {
            self.record(Event::Mkdir(d));
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<(Arc<dyn FsFile>, bool)> {
        let mut s = self.shared.lock();
        if let Some(ino) = s.state.entries.get(path).copied() {
            drop(s);
            return Ok((
                Arc::new(SimFile {
                    fs: self.clone(),
                    ino,
                }),
                false,
            ));
        }
        if !create {
            return Err(not_found(path));
        }
        let ino = s.state.next_ino.max(1);
        let ev = Event::Create(path.to_path_buf(), ino);
        s.state.apply(&ev);
        s.events.push(ev);
        drop(s);
        Ok((
            Arc::new(SimFile {
                fs: self.clone(),
                ino,
            }),
            true,
        ))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.shared.lock();
        Ok(s.state
            .entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        if !self.shared.lock().state.entries.contains_key(path) {
            return Err(not_found(path));
        }
        self.record(Event::Remove(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.record(Event::SyncDir(dir.to_path_buf()));
        Ok(())
    }

    fn open_index(&self, path: &Path) -> Result<redb::Database, redb::DatabaseError> {
        let (file, _) = self.open(path, true)?;
        redb::Builder::new()
            .set_cache_size(crate::fs::REDB_CACHE_BYTES)
            .create_with_backend(SimBackend(file))
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&Node) -> T) -> io::Result<T> {
        let s = self.fs.shared.lock();
        s.state
            .nodes
            .get(&self.ino)
            .map(f)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "simulated file vanished"))
    }

    /// Refuses growth past the capacity.
    fn check_room(&self, new_len: u64) -> io::Result<()> {
        let mut s = self.fs.shared.lock();
        let Some(cap) = s.capacity else {
            return Ok(());
        };
        let Some(n) = s.state.nodes.get(&self.ino) else {
            return Ok(());
        };
        let now = (n.data.len() as u64).max(n.allocated);
        if new_len > now && s.state.used() + (new_len - now) > cap {
            s.refused += 1;
            return Err(full());
        }
        Ok(())
    }
}

impl FsFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        self.with(|n| n.data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|n| {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            match n.data.get(at..at.saturating_add(buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of a simulated file",
                )),
            }
        })?
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_room(offset + buf.len() as u64)?;
        self.fs.record(Event::Write(self.ino, offset, buf.to_vec()));
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_room(len)?;
        self.fs.record(Event::SetLen(self.ino, len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.record(Event::Sync(self.ino));
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<bool> {
        self.check_room(len)?;
        let mut s = self.fs.shared.lock();
        if let Some(n) = s.state.nodes.get_mut(&self.ino) {
            n.allocated = n.allocated.max(len);
        }
        Ok(true)
    }
}

/// redb's storage on a simulated file.
#[derive(Debug)]
struct SimBackend(Arc<dyn FsFile>);

impl redb::StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.size()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write_all_at(data, offset)
    }
}
