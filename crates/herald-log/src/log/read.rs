//! Reads: whole stored batches from the in-memory tail and the checkpointed batch index, and
//! timestamp lookups.

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::error::{LogError, Result};
use crate::frame::{self, Kind};
use crate::store::{self, IndexEntry, PACKS, TIMES};

use super::{Inner, Log, ReadBatches};

impl Log {
    /// Reads whole batches starting with the one that holds `offset`, until `max_bytes` is
    /// reached. The first batch is returned even if it alone is larger, so readers progress.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatches> {
        let p = self.partition(topic, partition)?;
        let (hw, log_start, tail_hit) = {
            let s = p.state.lock();
            if offset < s.log_start || offset > s.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    log_start: s.log_start,
                    high_watermark: s.next_offset,
                });
            }
            let tail_hit = if s.tail.first().is_some_and(|e| e.base_offset <= offset) {
                let i = s
                    .tail
                    .partition_point(|e| e.base_offset <= offset)
                    .saturating_sub(1);
                Some(collect_until(
                    s.tail.get(i..).unwrap_or_default(),
                    max_bytes,
                    true,
                ))
            } else {
                None
            };
            (s.next_offset, s.log_start, tail_hit)
        };
        let mut out = ReadBatches {
            batches: Vec::new(),
            high_watermark: hw,
            log_start,
        };
        if offset >= hw {
            return Ok(out);
        }
        let entries = match tail_hit {
            Some(e) => e,
            None => {
                let mut entries = self.inner.indexed_from(p.stream, offset, max_bytes)?;
                let used: usize = entries.iter().map(|e| e.frame_len as usize).sum();
                if used < max_bytes || entries.is_empty() {
                    let after = entries.last().map(|e| e.end_offset()).unwrap_or(offset);
                    let s = p.state.lock();
                    let i = s.tail.partition_point(|e| e.base_offset < after);
                    // A checkpoint may have moved entries out of the tail after the store was
                    // read; continue only if the tail picks up exactly where the store ended.
                    let rest = s.tail.get(i..).unwrap_or_default();
                    if rest.first().is_some_and(|e| e.base_offset == after) {
                        // Only the very first batch of a read may exceed `max_bytes`; once the
                        // store supplied one, tail entries are added only while they fit.
                        let room = max_bytes.saturating_sub(used);
                        entries.extend(collect_until(rest, room, entries.is_empty()));
                    }
                }
                entries
            }
        };
        let read = self.inner.read_entries(p.stream, &entries);
        let skipped = entries.first().is_some_and(|e| e.base_offset > offset);
        if read.is_err() || skipped {
            // Retention and reclamation run concurrently: between the check above and now the
            // log start may have moved past `offset` and its index rows or segment been deleted.
            // That is the reader being too slow, not damage, and the client must be told to
            // restart from the new log start.
            let s = p.state.lock();
            if offset < s.log_start {
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    log_start: s.log_start,
                    high_watermark: s.next_offset,
                });
            }
        }
        out.batches = read?;
        Ok(out)
    }

    /// The first offset whose record timestamp is at or after `ts_ms`, with that timestamp;
    /// `None` when every record is older.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts_ms: i64,
    ) -> Result<Option<(u64, i64)>> {
        let p = self.partition(topic, partition)?;
        // Every batch before the time index's answer is older than `ts_ms`; without an answer
        // from the store, only the not-yet-checkpointed tail can hold a match. The tail is looked
        // at first: a checkpoint in between moves entries from the tail into the store, where the
        // later store lookup still sees them. Looking at the store first could miss them in both.
        let tail_start = {
            let s = p.state.lock();
            s.tail.first().map_or(s.next_offset, |e| e.base_offset)
        };
        let from_store = self.inner.indexed_time(p.stream, ts_ms)?;
        let (mut at, hw) = {
            let s = p.state.lock();
            let start = from_store.unwrap_or(tail_start);
            (start.max(s.log_start), s.next_offset)
        };
        while at < hw {
            let read = match self.read(topic, partition, at, 1024 * 1024) {
                Ok(r) => r,
                Err(LogError::OffsetOutOfRange { log_start, .. }) if log_start > at => {
                    at = log_start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                break;
            }
            for b in &read.batches {
                let h = BatchHeader::parse(b)?;
                at = at.max(
                    u64::try_from(h.base_offset).unwrap_or(0)
                        + u64::from(h.last_offset_delta.unsigned_abs())
                        + 1,
                );
                if h.max_timestamp < ts_ms {
                    continue;
                }
                for r in batch::decode(b)? {
                    if r.offset >= read.log_start && r.timestamp_ms >= ts_ms {
                        return Ok(Some((r.offset, r.timestamp_ms)));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Entries from the front of `entries` while their frames fit in `max_bytes`. With
/// `first_anyway` the first entry is taken even if it alone is larger, so that readers progress.
pub(super) fn collect_until(
    entries: &[IndexEntry],
    max_bytes: usize,
    first_anyway: bool,
) -> Vec<IndexEntry> {
    let mut used = 0usize;
    let mut out = Vec::new();
    for e in entries {
        let free = first_anyway && out.is_empty();
        if !free && used + e.frame_len as usize > max_bytes {
            break;
        }
        used += e.frame_len as usize;
        out.push(*e);
    }
    out
}

impl Inner {
    /// Index entries from the checkpoint store, starting with the batch that holds `offset`.
    pub(super) fn indexed_from(
        &self,
        stream: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<IndexEntry>> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(PACKS)?;
        let mut out = Vec::new();
        let mut used = 0usize;
        store::entries_from(&t, stream, offset, |e| {
            if !out.is_empty() && used + e.frame_len as usize > max_bytes {
                return false;
            }
            used += e.frame_len as usize;
            out.push(*e);
            true
        })?;
        Ok(out)
    }

    /// The base offset of the first checkpointed batch whose timestamp raised the partition's
    /// running maximum to at least `ts`.
    ///
    /// A time row whose pack is gone still answers, with the pack's first offset: reclamation
    /// deletes packs before the log start but keeps the last such time row on purpose, and
    /// requiring the pack made every lookup answered by that row report "no checkpointed match",
    /// so callers skipped all checkpointed data. Callers clamp the answer to the log start.
    pub(super) fn indexed_time(&self, stream: u64, ts: i64) -> Result<Option<u64>> {
        let rtx = self.db.begin_read()?;
        let times = rtx.open_table(TIMES)?;
        let packs = rtx.open_table(PACKS)?;
        store::first_at_or_after(&packs, &times, stream, ts)
    }

    /// Reads the frames behind index entries, verifying each checksum, and returns the batch
    /// bytes. Entries adjacent in the journal are read with one call.
    pub(super) fn read_entries(&self, stream: u64, entries: &[IndexEntry]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut i = 0;
        while let Some(first) = entries.get(i) {
            let mut j = i + 1;
            let mut end = first.position + u64::from(first.frame_len);
            while let Some(next) = entries.get(j) {
                if next.position != end || end - first.position > 8 * 1024 * 1024 {
                    break;
                }
                end += u64::from(next.frame_len);
                j += 1;
            }
            let len = usize::try_from(end - first.position).unwrap_or(usize::MAX);
            let data = Bytes::from(self.segments.read_at(
                &self.journal_dir,
                first.position,
                len,
            )?);
            let mut at = 0usize;
            for e in entries.get(i..j).unwrap_or_default() {
                let slice = data.get(at..at + e.frame_len as usize).unwrap_or_default();
                let header = match frame::decode(slice) {
                    // The frame must be the one the index names, not merely an intact one.
                    frame::Decoded::Frame(h)
                        if h.kind == Kind::Batch
                            && h.stream == stream
                            && h.value == e.base_offset
                            && h.frame_len() == e.frame_len as usize =>
                    {
                        h
                    }
                    other => {
                        return Err(LogError::Corrupt {
                            segment: format!("{:020}", e.position),
                            position: e.position,
                            detail: format!(
                                "expected batch at offset {}: {other:?}",
                                e.base_offset
                            ),
                        });
                    }
                };
                let body_start = at + frame::HEADER_LEN;
                let body = frame::body(slice, &header);
                let batch = frame::batch_bytes(body, header.idem_count).unwrap_or_default();
                let skip = body.len() - batch.len();
                out.push(data.slice(body_start + skip..body_start + body.len()));
                at += e.frame_len as usize;
            }
            i = j;
        }
        Ok(out)
    }
}
