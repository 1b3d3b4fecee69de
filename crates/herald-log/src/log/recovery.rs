//! Recovery: loading the checkpoint from redb and replaying the journal written after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{ReadableTable, ReadableTableMetadata};
use std::time::Instant;

use crate::batch::BatchHeader;
use crate::error::{LogError, Result};
use crate::frame::{self, Kind};
use crate::fs::FsFile;
use crate::journal::{self, Writer};
use crate::store::{
    self, IDEM, IdemRecord, IndexEntry, META_CHECKPOINT, META_NEXT_STREAM, PARTS, PartRecord, SEGS,
    TOPICS, TopicRecord,
};

use super::writer::TORN_WINDOW;
use super::{
    FsyncPolicy, IdemEntry, Inner, RecoveryStats, extend_topic, install_topic, now_ms, raise_max_ts,
};

/// The global position of the first intact (checksummed) frame that starts after `bad`, the
/// position of an unreadable frame in segment `seg`. Every byte position after it is tried:
/// the bad frame's own length field cannot be trusted to say where the next frame starts (a
/// damaged length can even claim to run past the end of the file).
fn intact_frame_after(
    fs: &dyn crate::fs::Fs,
    dir: &std::path::Path,
    seg: u64,
    bad: u64,
) -> Result<Option<u64>> {
    let path = journal::segment_path(dir, seg);
    let io = |e| LogError::io(path.display(), e);
    let (file, _) = fs.open(&path, false).map_err(io)?;
    let from = bad.saturating_sub(seg);
    let len = file.size().map_err(io)?.saturating_sub(from);
    let mut rest = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut rest, from).map_err(io)?;
    let magic = frame::MAGIC.to_le_bytes();
    // The first intact frame at least TORN_WINDOW past the bad one is what decides; frames
    // nearer may belong to the same torn write.
    let skip = usize::try_from(TORN_WINDOW).unwrap_or(usize::MAX).max(1);
    let found = rest
        .windows(magic.len())
        .enumerate()
        .skip(skip)
        .filter(|(_, w)| *w == magic)
        .find(|(i, _)| {
            matches!(
                frame::decode(rest.get(*i..).unwrap_or_default()),
                frame::Decoded::Frame(_)
            )
        })
        .map(|(i, _)| bad + i as u64);
    Ok(found)
}

impl Inner {
    /// Loads the checkpoint and replays the journal after it. Returns the writer positioned at
    /// the end of the last intact frame.
    pub(super) fn recover(&self) -> Result<Writer> {
        let started = Instant::now();
        let ckpt = store::read_u64_meta(&self.db, META_CHECKPOINT)?.unwrap_or(0);
        let next_stream = store::read_u64_meta(&self.db, META_NEXT_STREAM)?.unwrap_or(1);
        let mut parts: HashMap<u64, PartRecord> = HashMap::new();
        store::load_all(&self.db, PARTS, |k, v| {
            parts.insert(k, store::from_json("partition", v)?);
            Ok(())
        })?;
        {
            let mut cat = self.catalog.write();
            cat.next_stream = next_stream.max(1);
            store::load_all(&self.db, TOPICS, |_, v| {
                let rec: TopicRecord = store::from_json("topic", v)?;
                install_topic(&mut cat, &rec, |s| {
                    parts.get(&s).cloned().unwrap_or_default()
                });
                Ok(())
            })?;
        }
        {
            let mut stats = self.seg_stats.lock();
            store::load_all(&self.db, SEGS, |k, v| {
                stats.insert(k, store::decode_seg_stats(v));
                Ok(())
            })?;
        }
        {
            // Only keys inside the window are read, already in age order; older rows are left
            // for the checkpoint taken right after recovery to delete.
            let cutoff = now_ms() - self.opts.idempotency_window.as_millis() as i64;
            let rtx = self.db.begin_read()?;
            let table = rtx.open_table(IDEM)?;
            let mut idem = self.idem.lock();
            idem.stored_since_ms = match table.first()? {
                Some((k, _)) => k.value().0,
                None => i64::MAX,
            };
            // Sized once: growing a table of a million keys rehashes it many times over.
            let rows = usize::try_from(table.len()?).unwrap_or(0);
            let room = rows.min(self.opts.idempotency_max_keys);
            idem.map.reserve(room);
            idem.order.reserve(room);
            for row in table.range((cutoff, 0u128)..)? {
                let (k, v) = row?;
                let (created, key) = k.value();
                let rec = IdemRecord::decode_value(created, v.value())?;
                idem.order.push_back((created, key));
                idem.map.insert(key, IdemEntry { rec, position: 0 });
            }
            // Rows loaded beyond the key limit are forgotten as they would have been in memory.
            while idem.map.len() > self.opts.idempotency_max_keys {
                match idem.pop_oldest() {
                    Some(gone) => idem.evicted.push(gone),
                    None => break,
                }
            }
        }

        let segs = journal::list_segments(self.fs(), &self.journal_dir)?;
        let mut replayed = 0u64;
        let mut end = ckpt;
        let mut writer_seg = segs.iter().copied().rfind(|s| *s <= ckpt).unwrap_or(ckpt);
        let last = segs.last().copied();
        for (i, seg) in segs.iter().copied().enumerate() {
            let next_start = segs.get(i + 1).copied();
            if next_start.is_some_and(|n| n <= ckpt) {
                self.segments.insert(seg, self.open_ro(seg)?);
                continue;
            }
            let from = ckpt.max(seg);
            let valid_end = journal::scan_segment(self.fs(), &self.journal_dir, seg, from, |s| {
                replayed += 1;
                self.replay(seg, s.position, &s.header, s.frame)
            })?;
            end = valid_end;
            writer_seg = seg;
            let file_len = self.open_ro(seg)?.size().unwrap_or(0);
            if Some(seg) != last {
                if seg + file_len != valid_end {
                    return Err(LogError::Corrupt {
                        segment: journal::segment_path(&self.journal_dir, seg)
                            .display()
                            .to_string(),
                        position: valid_end,
                        detail:
                            "an unreadable frame precedes newer segments; refusing to drop data"
                                .into(),
                    });
                }
                self.segments.insert(seg, self.open_ro(seg)?);
            } else if seg + file_len != valid_end {
                // Only a write cut short by the crash may be dropped. Such a write leaves no
                // intact frame after the first bad one; an intact frame further on means the bad
                // one is damage in the middle, and everything after it was acknowledged.
                //
                // "Further on" has a bound: a power cut can also keep later sectors of the last,
                // unsynced group while losing earlier ones, leaving intact frames after a torn
                // one. With every group synced, that group is the only unsynced one and spans at
                // most TORN_WINDOW, so only an intact frame beyond it proves damage. With an
                // fsync interval many groups may be unsynced at once, so nothing is proved and
                // the tail is cut as before (that mode trades the last interval away).
                let proof = match self.opts.fsync {
                    FsyncPolicy::Always => {
                        intact_frame_after(self.fs(), &self.journal_dir, seg, valid_end)?
                            .filter(|at| *at >= valid_end.saturating_add(TORN_WINDOW))
                    }
                    FsyncPolicy::Interval(_) => None,
                };
                if let Some(at) = proof {
                    return Err(LogError::Corrupt {
                        segment: journal::segment_path(&self.journal_dir, seg)
                            .display()
                            .to_string(),
                        position: valid_end,
                        detail: format!(
                            "an unreadable frame is not the torn end of the journal: intact frames \
                             follow it beyond what one unsynced write spans (one at position {at}); \
                             refusing to drop them. \
                             Restore the data directory from a backup, or truncate this segment \
                             at the position to accept losing what follows"
                        ),
                    });
                }
                tracing::warn!(
                    segment = seg,
                    discarded = seg + file_len - valid_end,
                    "discarding a torn write at the end of the journal"
                );
            }
        }
        let writer = Writer::open(
            &self.opts.fs,
            &self.journal_dir,
            writer_seg,
            end - writer_seg,
            self.opts.segment_bytes,
            &self.segments,
        )?;
        self.visible.store(end, Ordering::SeqCst);
        self.synced.store(end, Ordering::SeqCst);
        self.checkpointed.store(ckpt, Ordering::SeqCst);
        let stats = RecoveryStats {
            replayed_frames: replayed,
            replayed_bytes: end.saturating_sub(ckpt),
            idempotency_keys: self.idem.lock().map.len(),
            elapsed: started.elapsed(),
        };
        *self.recovery.lock() = stats;
        tracing::info!(
            topics = self.catalog.read().topics.len(),
            idempotency_keys = stats.idempotency_keys,
            replayed_frames = replayed,
            replayed_bytes = end.saturating_sub(ckpt),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log recovered"
        );
        Ok(writer)
    }

    pub(super) fn open_ro(&self, seg: u64) -> Result<Arc<dyn FsFile>> {
        let path = journal::segment_path(&self.journal_dir, seg);
        self.fs()
            .open(&path, false)
            .map(|(f, _)| f)
            .map_err(|e| LogError::io(path.display(), e))
    }

    /// Applies one journal frame found after the checkpoint. Every case is idempotent against a
    /// checkpoint that may already reflect it.
    pub(super) fn replay(
        &self,
        segment: u64,
        position: u64,
        header: &frame::Header,
        frame_bytes: &[u8],
    ) -> Result<()> {
        let body = frame::body(frame_bytes, header);
        match header.kind {
            Kind::Batch => {
                let part = self.catalog.read().streams.get(&header.stream).cloned();
                let Some(part) = part else { return Ok(()) };
                let (keys, batch_bytes) = frame::split_batch_body(body, header.idem_count)?;
                let bh = BatchHeader::parse(batch_bytes)?;
                let last_delta = bh.last_offset_delta.unsigned_abs();
                {
                    let mut s = part.state.lock();
                    if header.value < s.next_offset {
                        return Ok(());
                    }
                    let cum = s.total_bytes + header.frame_len() as u64;
                    let entry = IndexEntry {
                        base_offset: header.value,
                        last_delta,
                        frame_len: header.frame_len() as u32,
                        position,
                        max_ts: bh.max_timestamp,
                        cum_bytes: cum,
                    };
                    s.tail.push(entry);
                    s.next_offset = entry.end_offset();
                    s.pending_next = s.next_offset;
                    if bh.producer_id >= 0 && bh.base_sequence >= 0 {
                        let records = u32::try_from(bh.record_count).unwrap_or(0);
                        s.producers.record(
                            bh.producer_id,
                            bh.producer_epoch,
                            bh.base_sequence,
                            records,
                            header.value,
                            now_ms(),
                        );
                    }
                    s.max_ts = raise_max_ts(s.max_ts, s.total_bytes, bh.max_timestamp);
                    s.total_bytes = cum;
                    s.pending_total = cum;
                    let seg = &mut *self.seg_stats.lock();
                    let end = seg
                        .entry(segment)
                        .or_default()
                        .entry(header.stream)
                        .or_default();
                    *end = (*end).max(entry.end_offset());
                }
                self.dirty_segs.lock().insert(segment);
                self.dirty_streams.lock().insert(header.stream);
                let cutoff = now_ms() - self.opts.idempotency_window.as_millis() as i64;
                let mut idem = self.idem.lock();
                for k in keys {
                    let rec = IdemRecord {
                        stream: header.stream,
                        offset: header.value + u64::from(k.record_index),
                        timestamp_ms: bh.max_timestamp,
                        created_ms: now_ms(),
                    };
                    let digest = store::idem_digest(&k.key);
                    if rec.created_ms >= cutoff && !idem.map.contains_key(&digest) {
                        idem.insert(digest, rec, position, self.opts.idempotency_max_keys);
                    }
                }
            }
            Kind::CreateTopic => {
                let rec: TopicRecord = store::from_json("create-topic frame", body)?;
                let mut cat = self.catalog.write();
                if let Some(max) = rec.streams.iter().max() {
                    cat.next_stream = cat.next_stream.max(max + 1);
                }
                let exists = cat.topics.get(&rec.name).map(|t| t.record().streams);
                match exists {
                    Some(streams) if streams == rec.streams => {}
                    Some(_) => {}
                    None => {
                        // A stream id already used by a later incarnation means the checkpoint
                        // saw this topic deleted and recreated: nothing to do.
                        if rec.streams.iter().all(|s| !cat.streams.contains_key(s)) {
                            install_topic(&mut cat, &rec, |_| PartRecord::default());
                            self.dirty_topics.lock().insert(rec.name.clone());
                        }
                    }
                }
            }
            Kind::DeleteTopic => {
                let rec: TopicRecord = store::from_json("delete-topic frame", body)?;
                let mut cat = self.catalog.write();
                let matches = cat
                    .topics
                    .get(&rec.name)
                    .is_some_and(|t| t.record().streams == rec.streams);
                if matches {
                    if let Some(t) = cat.topics.remove(&rec.name) {
                        for p in &t.partitions {
                            cat.streams.remove(&p.stream);
                        }
                    }
                    self.dirty_topics.lock().insert(rec.name.clone());
                    self.deleted_streams.lock().extend(rec.streams);
                }
            }
            Kind::TopicConfig => {
                let rec: TopicRecord = store::from_json("topic-config frame", body)?;
                let cat = self.catalog.read();
                if let Some(t) = cat.topics.get(&rec.name)
                    && t.record().streams == rec.streams
                {
                    *t.config.write() = rec.config;
                    self.dirty_topics.lock().insert(rec.name.clone());
                }
            }
            Kind::AddPartitions => {
                let rec: TopicRecord = store::from_json("add-partitions frame", body)?;
                let mut cat = self.catalog.write();
                if let Some(t) = cat.topics.get(&rec.name).cloned() {
                    let have = t.record().streams;
                    if rec.streams.len() > have.len() && rec.streams.starts_with(&have) {
                        extend_topic(&mut cat, &t, &rec);
                        self.dirty_topics.lock().insert(rec.name.clone());
                    }
                }
            }
            Kind::LogStart => {
                let part = self.catalog.read().streams.get(&header.stream).cloned();
                if let Some(part) = part {
                    let current = part.state.lock().log_start;
                    if header.value > current {
                        let bytes = self.bytes_before(&part, header.value)?;
                        let mut s = part.state.lock();
                        s.log_start = header.value;
                        s.start_bytes = bytes;
                        drop(s);
                        self.dirty_streams.lock().insert(header.stream);
                    }
                }
            }
        }
        Ok(())
    }
}
