//! Journal segments on disk: append, fsync, roll, positioned reads, recovery scan.
//!
//! A segment file is named after the global journal position of its first byte, so a position
//! names a byte in the whole journal and finding its segment is a map lookup. Every segment is
//! kept open for reading; their number grows with data volume, not with topics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::error::{LogError, Result};
use crate::frame::{self, Decoded, Header};
use crate::fs::{Fs, FsFile, is_disk_full};

const SUFFIX: &str = ".hjl";

pub fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}{SUFFIX}"))
}

/// fsync of a directory, so that a created, renamed or removed file is durable.
pub fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| LogError::io(dir.display(), e))
}

/// Lists segment start positions in a journal directory, ascending.
pub fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for name in fs.list(dir).map_err(|e| LogError::io(dir.display(), e))? {
        if let Some(stem) = name.strip_suffix(SUFFIX)
            && let Ok(start) = stem.parse::<u64>()
        {
            out.push(start);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The set of segments readers can read from.
#[derive(Default)]
pub struct Segments {
    files: RwLock<BTreeMap<u64, Arc<dyn FsFile>>>,
}

impl Segments {
    pub fn insert(&self, start: u64, file: Arc<dyn FsFile>) {
        self.files.write().insert(start, file);
    }

    pub fn remove(&self, start: u64) {
        self.files.write().remove(&start);
    }

    pub fn starts(&self) -> Vec<u64> {
        self.files.read().keys().copied().collect()
    }

    pub fn count(&self) -> usize {
        self.files.read().len()
    }

    /// Reads `len` bytes at global position `pos`. A frame is never split across segments, but
    /// a read of several frames that are adjacent in the journal may cross a segment boundary
    /// (the last frame of one segment is followed by the first of the next), so the read is
    /// split at every boundary.
    pub fn read_at(&self, dir: &Path, pos: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0usize;
        while done < len {
            let at = pos + done as u64;
            let (start, file, next) = {
                let files = self.files.read();
                let (start, file) =
                    files
                        .range(..=at)
                        .next_back()
                        .ok_or_else(|| LogError::Corrupt {
                            segment: "-".into(),
                            position: at,
                            detail: "no segment holds this position".into(),
                        })?;
                let next = files.range(at + 1..).next().map(|(s, _)| *s);
                (*start, Arc::clone(file), next)
            };
            let want = len - done;
            let n = next.map_or(want, |n| {
                want.min(usize::try_from(n - at).unwrap_or(usize::MAX))
            });
            let slice = buf.get_mut(done..done + n).unwrap_or_default();
            file.read_exact_at(slice, at - start)
                .map_err(|e| LogError::io(segment_path(dir, start).display(), e))?;
            done += n;
        }
        Ok(buf)
    }
}

/// Space kept allocated past what ordinary appends may use in the newest segment, so that the
/// frames that free space (a topic deletion, a log start move) can still be written on a full
/// disk. A deletion frame lists the topic's partitions: 256 KiB holds tens of thousands.
pub const RESERVE: u64 = 256 * 1024;

/// How long a segment roll that failed for lack of space waits before it is tried again.
const ROLL_RETRY: Duration = Duration::from_secs(1);

/// The single writer of the journal: appends to the newest segment and rolls to a new one.
///
/// Segments are pre-allocated (`fallocate` without changing the size), so that running out of
/// space shows up at [`Writer::room`], before anything of a group is staged, and never as a
/// failed `write` halfway through a group.
pub struct Writer {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    file: Arc<dyn FsFile>,
    start: u64,
    len: u64,
    segment_bytes: u64,
    /// Segment-relative end of the allocated space; `u64::MAX` where the file system cannot
    /// allocate ahead (writes may then fail for lack of space, which poisons the log).
    allocated: u64,
    /// When a roll that failed for lack of space may be tried again.
    roll_after: Option<Instant>,
}

impl Writer {
    /// Opens (or creates) the segment starting at `start` for appending at `len`.
    pub fn open(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        start: u64,
        len: u64,
        segment_bytes: u64,
        segments: &Segments,
    ) -> Result<Writer> {
        let path = segment_path(dir, start);
        let (file, created) = fs
            .open(&path, true)
            .map_err(|e| LogError::io(path.display(), e))?;
        let on_disk = file.size().map_err(|e| LogError::io(path.display(), e))?;
        if on_disk > len {
            // A torn tail found by recovery: cut it off so that it can never be read.
            file.set_len(len)
                .map_err(|e| LogError::io(path.display(), e))?;
            file.sync_data()
                .map_err(|e| LogError::io(path.display(), e))?;
        }
        if created {
            sync_dir(fs.as_ref(), dir)?;
        }
        segments.insert(start, Arc::clone(&file));
        let mut w = Writer {
            fs: Arc::clone(fs),
            dir: dir.to_path_buf(),
            file,
            start,
            len,
            segment_bytes,
            allocated: len,
            roll_after: None,
        };
        // A full disk must not stop the log from opening: reads go on, and appends are refused
        // until space is freed.
        match w.allocate(len) {
            Ok(_) => {}
            Err(e) if is_disk_full(&e) => {}
            Err(e) => return Err(LogError::io(path.display(), e)),
        }
        Ok(w)
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.start)
    }

    /// Allocates the segment up to `end` plus [`RESERVE`], or to its full size if larger.
    fn allocate(&mut self, end: u64) -> std::io::Result<()> {
        let whole = end.max(self.segment_bytes) + RESERVE;
        let exact = end + RESERVE;
        for want in [whole, exact] {
            match self.file.allocate(want) {
                Ok(true) => {
                    self.allocated = self.allocated.max(want);
                    return Ok(());
                }
                Ok(false) => {
                    self.allocated = u64::MAX;
                    return Ok(());
                }
                Err(e) if is_disk_full(&e) && want != exact => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes sure `extra` more bytes fit at the end of the segment. Ordinary writes must leave
    /// [`RESERVE`] free; `use_reserve` lets a frame that frees space use it. Fails with
    /// [`LogError::DiskFull`] when the device has no room: nothing was written then.
    pub fn room(&mut self, extra: u64, use_reserve: bool) -> Result<()> {
        let end = self.len + extra;
        let needed = if use_reserve { end } else { end + RESERVE };
        if needed <= self.allocated {
            return Ok(());
        }
        match self.allocate(end) {
            Ok(()) if needed <= self.allocated => Ok(()),
            Ok(()) => Err(self.disk_full()),
            Err(e) if is_disk_full(&e) => {
                if use_reserve {
                    // Whatever fits, without the reserve: the reserve is what is being used.
                    if let Ok(true) = self.file.allocate(end) {
                        self.allocated = self.allocated.max(end);
                        return Ok(());
                    }
                }
                Err(self.disk_full())
            }
            Err(e) => Err(LogError::io(self.path().display(), e)),
        }
    }

    pub fn disk_full(&self) -> LogError {
        LogError::DiskFull {
            path: self.path().display().to_string(),
        }
    }

    /// The global position the next byte will be written at.
    pub fn position(&self) -> u64 {
        self.start + self.len
    }

    pub fn segment_start(&self) -> u64 {
        self.start
    }

    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.file
            .write_all_at(buf, self.len)
            .map_err(|e| LogError::io(self.path().display(), e))?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// fdatasync: the data and the file size, not the timestamps.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(segment_path(&self.dir, self.start).display(), e))
    }

    /// Starts a new segment when the current one is full. Call only after a sync, so that a
    /// torn write can only ever be at the end of the newest segment.
    ///
    /// On a full disk the writer stays on the current segment (and its reserve) and tries again
    /// a little later: a new segment without its reserve could not take a topic deletion.
    pub fn maybe_roll(&mut self, segments: &Segments) -> Result<bool> {
        if self.len < self.segment_bytes || self.roll_after.is_some_and(|t| Instant::now() < t) {
            return Ok(false);
        }
        let next = Writer::open(
            &self.fs,
            &self.dir,
            self.position(),
            0,
            self.segment_bytes,
            segments,
        );
        let next = match next {
            Ok(n) if n.allocated >= RESERVE => n,
            Ok(n) => {
                segments.remove(n.start);
                let path = n.path();
                drop(n);
                self.fs
                    .remove(&path)
                    .map_err(|e| LogError::io(path.display(), e))?;
                sync_dir(self.fs.as_ref(), &self.dir)?;
                self.roll_after = Some(Instant::now() + ROLL_RETRY);
                return Ok(false);
            }
            Err(LogError::Io { source, .. }) if is_disk_full(&source) => {
                self.roll_after = Some(Instant::now() + ROLL_RETRY);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        // Gives back the closed segment's allocation past its end (truncating to the same size
        // releases pre-allocated blocks). Only space is at stake, so a failure is not fatal.
        if let Err(e) = self.file.set_len(self.len) {
            tracing::warn!(error = %e, segment = %self.path().display(), "could not release a closed segment's pre-allocated space");
        }
        *self = next;
        Ok(true)
    }
}

/// One frame found by a recovery scan.
pub struct Scanned<'a> {
    pub position: u64,
    pub header: Header,
    pub frame: &'a [u8],
}

/// Scans one segment from `from` (a global position inside it) and calls `f` for every intact
/// frame. Returns the global position just past the last intact frame; anything after it is a
/// torn or never-completed write.
pub fn scan_segment(
    fs: &dyn Fs,
    dir: &Path,
    start: u64,
    from: u64,
    mut f: impl FnMut(Scanned<'_>) -> Result<()>,
) -> Result<u64> {
    let path = segment_path(dir, start);
    let (file, _) = fs
        .open(&path, false)
        .map_err(|e| LogError::io(path.display(), e))?;
    let len = file.size().map_err(|e| LogError::io(path.display(), e))?;
    // Recovery reads only what was written since the last checkpoint; segments are bounded in
    // size, so reading one whole segment into memory is bounded too.
    let mut data = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut data, 0)
        .map_err(|e| LogError::io(path.display(), e))?;
    let mut at = usize::try_from(from.saturating_sub(start)).unwrap_or(usize::MAX);
    loop {
        let rest = data.get(at..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        match frame::decode(rest) {
            Decoded::Frame(header) => {
                let len = header.frame_len();
                let frame = rest.get(..len).unwrap_or_default();
                f(Scanned {
                    position: start + at as u64,
                    header,
                    frame,
                })?;
                at += len;
            }
            Decoded::Incomplete { .. } | Decoded::Invalid(_) => break,
        }
    }
    Ok(start + at as u64)
}

pub fn remove_segment(fs: &dyn Fs, dir: &Path, start: u64) -> Result<()> {
    let path = segment_path(dir, start);
    fs.remove(&path)
        .map_err(|e| LogError::io(path.display(), e))?;
    sync_dir(fs, dir)
}
