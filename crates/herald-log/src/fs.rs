//! The few file operations the journal and the checkpoint store make, behind a small seam.
//!
//! Production uses [`StdFs`] (plain `std::fs`, `fallocate(2)` through rustix, redb's own file
//! backend). Tests use [`crate::simfs::SimFs`], which keeps what was synced apart from what was
//! only written, so that a simulated power cut can drop exactly what a real one could.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A directory tree holding journal segments and the index file.
pub trait Fs: Debug + Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens a file for reading and writing, creating it when `create` is set; also says
    /// whether it was created (its directory entry is then durable only after [`Fs::sync_dir`]).
    fn open(&self, path: &Path, create: bool) -> io::Result<(Arc<dyn FsFile>, bool)>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes created and removed entries of `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens (or creates) the redb database at `path`.
    fn open_index(&self, path: &Path) -> Result<redb::Database, redb::DatabaseError>;
}

/// An open file.
pub trait FsFile: Debug + Send + Sync {
    fn size(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the data and the size, not the timestamps.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves disk blocks for the first `len` bytes without changing the file's size, so that
    /// writes there cannot fail for lack of space. `Ok(false)` where the file system cannot.
    fn allocate(&self, len: u64) -> io::Result<bool>;
}

/// The memory redb may keep for index pages. Its default is 1 GiB, and recovery reads the whole
/// idempotency table through it; after that the index is read rarely (checkpointed batches, by
/// position), and the kernel's page cache serves those as well.
pub(crate) const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Whether an I/O error means the device is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<(Arc<dyn FsFile>, bool)> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if create {
            match o.clone().create_new(true).open(path) {
                Ok(f) => return Ok((Arc::new(StdFile(f)), true)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok((Arc::new(StdFile(o.open(path)?)), false))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open_index(&self, path: &Path) -> Result<redb::Database, redb::DatabaseError> {
        redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
    }
}

#[derive(Debug)]
struct StdFile(File);

impl FsFile for StdFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<bool> {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(&self.0, FallocateFlags::KEEP_SIZE, 0, len) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                Ok(false)
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }
}
