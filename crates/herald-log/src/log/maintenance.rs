//! The maintenance thread: periodic checkpoints, retention and reclaiming journal segments
//! that hold no live batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::journal;
use crate::store::{self, PACKS, SEGS, TIMES};

use super::{Inner, Op, Partition, TopicConfig, now_ms};

impl Inner {
    pub(super) fn maintenance_loop(self: Arc<Self>) {
        let mut last_retention = Instant::now();
        loop {
            {
                let (lock, cv) = &self.ckpt_signal;
                let mut flag = lock.lock();
                if !*flag {
                    // On a full disk, check every second whether space came back.
                    let wait = if self.space.full.load(Ordering::SeqCst) {
                        self.opts.checkpoint_interval.min(Duration::from_secs(1))
                    } else {
                        self.opts.checkpoint_interval
                    };
                    cv.wait_for(&mut flag, wait);
                }
                *flag = false;
            }
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if self.poisoned.lock().is_some() {
                continue;
            }
            if let Err(e) = self.checkpoint_or_heal() {
                tracing::warn!(error = %e, "checkpoint failed; will retry");
                continue;
            }
            if let Err(e) = self.heal_space() {
                tracing::warn!(error = %e, "segment reclamation failed");
            }
            if last_retention.elapsed() >= self.opts.retention_check_interval {
                last_retention = Instant::now();
                if let Err(e) = self.enforce_retention() {
                    tracing::warn!(error = %e, "retention pass failed");
                }
                if let Err(e) = self.reclaim_one_at_a_time() {
                    tracing::warn!(error = %e, "segment reclamation failed");
                }
            }
        }
    }

    /// Advances each partition's log start past records older than its topic's `retention.ms`.
    pub(super) fn enforce_retention(&self) -> Result<()> {
        let now = now_ms();
        let work: Vec<(String, Vec<Arc<Partition>>, i64)> = {
            let cat = self.catalog.read();
            cat.topics
                .values()
                .filter_map(|t| {
                    let r = retention_ms(&t.config.read(), self.opts.default_retention_ms)?;
                    Some((t.name.clone(), t.partitions.clone(), r))
                })
                .collect()
        };
        for (name, parts, retention) in work {
            let cutoff = now.saturating_sub(retention);
            for part in parts {
                let (log_start, hw) = {
                    let s = part.state.lock();
                    (s.log_start, s.next_offset)
                };
                if log_start >= hw {
                    continue;
                }
                // The first batch whose max timestamp is within retention keeps its offset and
                // everything after it, as Kafka's time-based segment deletion does.
                let keep_from = self.first_batch_at_or_after(&part, cutoff)?.unwrap_or(hw);
                if keep_from > log_start {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let op = Op::LogStart {
                        topic: name.clone(),
                        partition: part.index,
                        offset: keep_from,
                        done: Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    };
                    let mut q = self.queue.lock();
                    if q.closed {
                        return Ok(());
                    }
                    q.ops.push(op);
                    drop(q);
                    self.queue_cv.notify_one();
                    match rx.recv() {
                        Ok(Ok(_)) | Ok(Err(LogError::UnknownTopic(_))) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn first_batch_at_or_after(&self, part: &Partition, ts: i64) -> Result<Option<u64>> {
        // The tail before the store, as in `offset_for_timestamp`: a checkpoint in between would
        // otherwise hide the entries it moves, and retention would then drop everything.
        let from_tail = {
            let s = part.state.lock();
            s.tail
                .iter()
                .find(|e| e.max_ts >= ts)
                .map(|e| e.base_offset)
        };
        Ok(self.indexed_time(part.stream, ts)?.or(from_tail))
    }

    /// Deletes journal segments that hold no live batch any more.
    pub(super) fn reclaim(&self) -> Result<()> {
        let ckpt = self.checkpointed.load(Ordering::SeqCst);
        let starts = self.segments.starts();
        // Only segments that end at or before the checkpoint: their catalog frames are
        // captured in the store and their batches indexed there.
        let closed: Vec<(u64, u64)> = starts
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if *b <= ckpt => Some((*a, *b)),
                _ => None,
            })
            .collect();
        let mut dead: Vec<u64> = Vec::new();
        {
            let cat = self.catalog.read();
            let stats = self.seg_stats.lock();
            for (seg, _) in &closed {
                let live = stats.get(seg).is_some_and(|m| {
                    m.iter().any(|(stream, end)| {
                        cat.streams
                            .get(stream)
                            .is_some_and(|p| *end > p.state.lock().log_start)
                    })
                });
                if !live {
                    dead.push(*seg);
                }
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        let wtx = self.db.begin_write()?;
        {
            let mut segs_t = wtx.open_table(SEGS)?;
            let mut batches = wtx.open_table(PACKS)?;
            let mut times = wtx.open_table(TIMES)?;
            let cat = self.catalog.read();
            let stats = self.seg_stats.lock();
            for seg in &dead {
                segs_t.remove(*seg)?;
                for stream in stats
                    .get(seg)
                    .map(|m| m.keys().copied().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let log_start = cat.streams.get(&stream).map(|p| p.state.lock().log_start);
                    if let Some(ls) = log_start {
                        // Packs of batches wholly before the log start are unreachable.
                        store::prune_before(&mut batches, &mut times, stream, ls)?;
                    }
                }
            }
        }
        wtx.commit()?;
        {
            let mut stats = self.seg_stats.lock();
            for seg in &dead {
                stats.remove(seg);
            }
        }
        for seg in dead {
            self.segments.remove(seg);
            journal::remove_segment(self.fs(), &self.journal_dir, seg)?;
            tracing::debug!(segment = seg, "reclaimed journal segment");
        }
        Ok(())
    }
}

/// The retention of a topic: its own `retention.ms`, else the log's default; `None` keeps
/// records forever (-1).
pub(super) fn retention_ms(config: &TopicConfig, default: Option<i64>) -> Option<i64> {
    let v: i64 = match config.get("retention.ms") {
        Some(v) => v.parse().ok()?,
        None => default?,
    };
    (v >= 0).then_some(v)
}
