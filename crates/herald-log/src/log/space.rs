//! Running out of disk space, and getting it back without a restart.
//!
//! - Journal segments are pre-allocated (see `journal::Writer::room`), so a full disk is
//!   noticed before an operation is staged: the operation is refused with
//!   [`LogError::DiskFull`], nothing of it is written, and the log keeps going. Only a failed
//!   `fdatasync` (or a failed `write` where the file system cannot pre-allocate) still poisons
//!   the log: after those the page cache can no longer be trusted.
//! - The newest segment keeps `journal::RESERVE` allocated that ordinary appends may not use,
//!   so deleting a topic or moving a log start (the operations that free space) can still be
//!   written.
//! - A ballast file, `space.reserve` in the data directory, holds back some more space. It is
//!   released when a space-freeing frame does not fit even in the reserve, or when a
//!   checkpoint fails on a full disk: reclaiming a deleted topic's segments needs a checkpoint
//!   first, and redb needs room to write one. While it is released, ordinary appends are
//!   refused, so that the space it gave back goes to the checkpoint; it is put back (and
//!   appends resume) as soon as the device has room again.
//! - A failed checkpoint reopens redb, which refuses every transaction after an I/O error.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{LogError, Result};
use crate::journal::{self, Writer};

use super::Inner;

const BALLAST: &str = "space.reserve";
/// How often a missing ballast is tried again while the disk stays full.
const BALLAST_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Space {
    ballast: Mutex<Ballast>,
    /// An ordinary write was refused for lack of space, and none has fitted since.
    pub(super) full: AtomicBool,
    /// A topic was deleted: reclaim its segments at the next maintenance round.
    pub(super) reclaim_due: AtomicBool,
    /// Reclamation runs from the maintenance thread and from `Log::run_maintenance`; two at
    /// once would both delete the same segments.
    reclaiming: Mutex<()>,
}

#[derive(Default)]
struct Ballast {
    /// The ballast is in place (or the file system cannot pre-allocate, and there is none).
    present: bool,
    /// Whether a file holds it.
    file: bool,
    next_try: Option<Instant>,
}

impl Inner {
    fn ballast_path(&self) -> PathBuf {
        self.opts.dir.join(BALLAST)
    }

    fn ballast_bytes(&self) -> u64 {
        self.opts.segment_bytes.clamp(64 * 1024, 16 * 1024 * 1024)
    }

    /// Puts the ballast in place if it is missing; returns whether it is. Without `now`, a
    /// failed attempt is not repeated for a second, as every refused append would retry it.
    pub(super) fn restore_ballast(&self, now: bool) -> bool {
        let mut b = self.space.ballast.lock();
        if b.present {
            return true;
        }
        if !now && b.next_try.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        b.next_try = Some(Instant::now() + BALLAST_RETRY);
        let path = self.ballast_path();
        let (file, created) = match self.fs().open(&path, true) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "could not create the space reserve");
                return false;
            }
        };
        match file.allocate(self.ballast_bytes()) {
            Ok(true) => {
                if created && let Err(e) = journal::sync_dir(self.fs(), &self.opts.dir) {
                    tracing::warn!(error = %e, "could not fsync the data directory");
                }
                b.present = true;
                b.file = true;
                true
            }
            Ok(false) => {
                drop(file);
                let _ = self.fs().remove(&path);
                b.present = true;
                b.file = false;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "no room for the space reserve yet");
                drop(file);
                let _ = self.fs().remove(&path);
                false
            }
        }
    }

    /// Gives the ballast's space back to the device; returns whether there was any.
    pub(super) fn release_ballast(&self) -> bool {
        let mut b = self.space.ballast.lock();
        if !b.present || !b.file {
            return false;
        }
        b.present = false;
        b.file = false;
        b.next_try = Some(Instant::now() + BALLAST_RETRY);
        let path = self.ballast_path();
        if let Err(e) = self.fs().remove(&path) {
            tracing::warn!(error = %e, path = %path.display(), "could not remove the space reserve");
            return false;
        }
        if let Err(e) = journal::sync_dir(self.fs(), &self.opts.dir) {
            tracing::warn!(error = %e, "could not fsync the data directory");
        }
        tracing::warn!(
            bytes = self.ballast_bytes(),
            "the disk is full: released the space reserve so that checkpoints and topic deletions can proceed; appends resume once space is freed"
        );
        true
    }

    /// Makes sure a frame of `bytes` (after what the group already holds) fits in the journal.
    /// `frees_space` marks a topic deletion or a log start move, which may use the reserves.
    pub(super) fn room(&self, writer: &mut Writer, bytes: usize, frees_space: bool) -> Result<()> {
        let bytes = bytes as u64;
        if !frees_space && !self.restore_ballast(false) {
            self.space.full.store(true, Ordering::SeqCst);
            return Err(writer.disk_full());
        }
        match writer.room(bytes, frees_space) {
            Ok(()) => {
                if !frees_space {
                    self.space.full.store(false, Ordering::SeqCst);
                }
                Ok(())
            }
            Err(LogError::DiskFull { .. }) if frees_space && self.release_ballast() => {
                writer.room(bytes, true)
            }
            Err(e) => {
                if matches!(e, LogError::DiskFull { .. }) {
                    self.space.full.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }

    /// A checkpoint that, when it fails, reopens redb (which refuses every transaction after an
    /// I/O error, reads included) and tries once more with the ballast released. A failed
    /// checkpoint is most likely a full disk, as journal segments are pre-allocated and the
    /// index file is not: appends are then held back until the ballast is back in place, so
    /// that the journal does not take the space the next checkpoint needs.
    pub(super) fn checkpoint_or_heal(&self) -> Result<()> {
        let Err(e) = self.checkpoint() else {
            return Ok(());
        };
        tracing::warn!(error = %e, "checkpoint failed; reopening the index and trying again");
        self.space.full.store(true, Ordering::SeqCst);
        self.release_ballast();
        self.db.reopen()?;
        self.checkpoint().inspect_err(|_| {
            // Leaves the index readable until the next attempt.
            if let Err(e) = self.db.reopen() {
                tracing::warn!(error = %e, "could not reopen the index");
            }
        })
    }

    /// After a checkpoint on a disk that filled up, or after a topic deletion: reclaim dead
    /// segments now rather than at the next retention pass, and put the ballast back.
    pub(super) fn heal_space(&self) -> Result<()> {
        let full = self.space.full.load(Ordering::SeqCst);
        if self.space.reclaim_due.swap(false, Ordering::SeqCst) || full {
            self.reclaim_one_at_a_time()?;
        }
        self.restore_ballast(true);
        Ok(())
    }

    pub(super) fn reclaim_one_at_a_time(&self) -> Result<()> {
        let _one = self.space.reclaiming.lock();
        self.reclaim()
    }
}
