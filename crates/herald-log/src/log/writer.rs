//! The writer thread: turns queued operations into journal frames, writes each group with one
//! `write` and one `fdatasync`, publishes it to readers and hands back the completions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::batch::{self, BatchHeader};
use crate::error::{LogError, Result};
use crate::frame::{self, IdemKey, Kind};
use crate::journal::Writer;
use crate::producer::Verdict;
use crate::store::{self, IdemRecord, IndexEntry, PartRecord, TopicRecord};

use super::{
    AppendDone, AppendOutcome, Done, FsyncPolicy, Inner, Partition, TopicConfig, TopicInfo,
    extend_topic, install_topic, now_ms, raise_max_ts,
};

/// The most bytes of appends one group writes before its `fdatasync` (a single larger batch is
/// a group of its own). Besides keeping the first append of a group from waiting behind a huge
/// write, it bounds what a power cut can tear when every group is synced: only the last group
/// is ever unsynced, so an intact frame further than [`TORN_WINDOW`] past an unreadable one
/// proves the unreadable one had been synced — damage, not a write cut short.
pub(crate) const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// How far past an unreadable frame in the newest segment an intact frame may lie and still be
/// part of the same torn, unsynced group: a group's appends plus generous room for frame
/// headers and catalog frames.
pub(crate) const TORN_WINDOW: u64 = 2 * MAX_GROUP_BYTES as u64;

pub(super) enum Op {
    Append {
        topic: String,
        partition: u32,
        batch: Vec<u8>,
        header: BatchHeader,
        keys: Vec<IdemKey>,
        done: AppendDone,
    },
    Create {
        name: String,
        partitions: u32,
        config: TopicConfig,
        done: Done<TopicInfo>,
    },
    Delete {
        name: String,
        done: Done<()>,
    },
    LogStart {
        topic: String,
        partition: u32,
        offset: u64,
        done: Done<u64>,
    },
    Config {
        name: String,
        config: TopicConfig,
        done: Done<TopicInfo>,
    },
    AddPartitions {
        name: String,
        total: u32,
        done: Done<TopicInfo>,
    },
    Sync {
        done: Done<()>,
    },
}

impl Op {
    /// The bytes this operation counts against the queue's bound.
    fn queued_bytes(&self) -> usize {
        match self {
            Op::Append { batch, .. } => batch.len(),
            _ => 0,
        }
    }

    pub(super) fn fail(self, e: LogError) {
        match self {
            Op::Append { done, .. } => done(Err(e)),
            Op::Create { done, .. } => done(Err(e)),
            Op::Delete { done, .. } => done(Err(e)),
            Op::LogStart { done, .. } => done(Err(e)),
            Op::Config { done, .. } | Op::AddPartitions { done, .. } => done(Err(e)),
            Op::Sync { done } => done(Err(e)),
        }
    }
}

/// What the writer hands back once a group of operations is durable.
pub(super) enum Completion {
    Appended {
        part: Arc<Partition>,
        entry: IndexEntry,
        done: AppendDone,
    },
    Append(AppendDone, Result<AppendOutcome>),
    Topic(Done<TopicInfo>, Result<TopicInfo>),
    Unit(Done<()>, Result<()>),
    Offset(Done<u64>, Result<u64>),
    LogStart {
        part: Arc<Partition>,
        offset: u64,
        start_bytes: u64,
        done: Done<u64>,
    },
}

impl Completion {
    /// Tells the caller the outcome of its durable operation.
    pub(super) fn complete(self) {
        match self {
            Completion::Appended { entry, done, .. } => done(Ok(AppendOutcome::Appended {
                base_offset: entry.base_offset,
                last_offset: entry.end_offset() - 1,
                max_timestamp: entry.max_ts,
            })),
            Completion::Append(done, r) => done(r),
            Completion::Topic(done, r) => done(r),
            Completion::Unit(done, r) => done(r),
            Completion::Offset(done, r) => done(r),
            Completion::LogStart { part, done, .. } => done(Ok(part.state.lock().log_start)),
        }
    }

    pub(super) fn fail(self, e: &str) {
        let err = || LogError::Poisoned(e.to_owned());
        match self {
            Completion::Appended { done, .. } | Completion::Append(done, _) => done(Err(err())),
            Completion::Topic(done, _) => done(Err(err())),
            Completion::Unit(done, _) => done(Err(err())),
            Completion::Offset(done, _) | Completion::LogStart { done, .. } => done(Err(err())),
        }
    }
}

impl Inner {
    pub(super) fn writer_loop(
        self: Arc<Self>,
        mut writer: Writer,
        acks: std::sync::mpsc::SyncSender<Vec<Completion>>,
    ) {
        let mut buf: Vec<u8> = Vec::with_capacity(4 * 1024 * 1024);
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        let mut since_ckpt: u64 = 0;
        // Recovery replays frame by frame, so a journal of many small frames needs a checkpoint
        // sooner than its size alone would call for.
        let mut frames_since_ckpt: u64 = 0;
        loop {
            let ops = {
                let mut q = self.queue.lock();
                while q.ops.is_empty() && !q.closed {
                    match self.opts.fsync {
                        FsyncPolicy::Interval(iv) if unsynced => {
                            let left = iv.saturating_sub(last_sync.elapsed());
                            if left.is_zero() || self.queue_cv.wait_for(&mut q, left).timed_out() {
                                break;
                            }
                        }
                        _ => self.queue_cv.wait(&mut q),
                    }
                }
                // One group at most MAX_GROUP_BYTES of appends (at least one operation); the
                // rest waits for the next group.
                let mut taken = 0usize;
                let mut n = 0usize;
                for op in &q.ops {
                    let b = op.queued_bytes();
                    if n > 0 && taken.saturating_add(b) > MAX_GROUP_BYTES {
                        break;
                    }
                    taken = taken.saturating_add(b);
                    n += 1;
                }
                q.pending_bytes = q.pending_bytes.saturating_sub(taken);
                let keep = n.min(q.ops.len());
                let rest = q.ops.split_off(keep);
                (std::mem::replace(&mut q.ops, rest), q.closed)
            };
            let (ops, closed) = ops;
            if ops.is_empty() {
                if unsynced {
                    if let Err(e) = writer.sync() {
                        self.poison(&e.to_string());
                        return;
                    }
                    unsynced = false;
                    last_sync = Instant::now();
                    self.synced.store(writer.position(), Ordering::SeqCst);
                    // With `FsyncPolicy::Interval` most groups end unsynced and cannot roll, so
                    // this idle sync is the writer's chance to close a full segment; without it
                    // segments grow far past `segment_bytes` under steady light load.
                    if let Err(e) = writer.maybe_roll(&self.segments) {
                        self.poison(&e.to_string());
                        return;
                    }
                }
                if closed {
                    return;
                }
                continue;
            }
            buf.clear();
            let start_pos = writer.position();
            let mut completions = Vec::with_capacity(ops.len());
            let mut need_sync = matches!(self.opts.fsync, FsyncPolicy::Always);
            // Catalog changes take effect in memory when staged; a checkpoint must never
            // capture one whose frame is not yet written and published, so such a group holds
            // off checkpoints until it is published.
            let catalog_group = ops.iter().any(|op| {
                matches!(
                    op,
                    Op::Create { .. }
                        | Op::Delete { .. }
                        | Op::Config { .. }
                        | Op::AddPartitions { .. }
                )
            });
            let commit_guard = catalog_group.then(|| self.catalog_commit.write());
            for op in ops {
                if matches!(op, Op::Sync { .. }) {
                    need_sync = true;
                }
                completions.push(self.stage(op, start_pos, &mut buf, &mut writer));
            }
            if let Some(reason) = self.poisoned.lock().clone() {
                for c in completions {
                    c.fail(&reason);
                }
                return;
            }
            if !buf.is_empty()
                && let Err(e) = writer.write(&buf)
            {
                self.poison(&e.to_string());
                for c in completions {
                    c.fail(&e.to_string());
                }
                return;
            }
            since_ckpt += buf.len() as u64;
            frames_since_ckpt += completions
                .iter()
                .filter(|c| matches!(c, Completion::Appended { .. } | Completion::LogStart { .. }))
                .count() as u64;
            let interval_due =
                matches!(self.opts.fsync, FsyncPolicy::Interval(iv) if last_sync.elapsed() >= iv);
            if need_sync || interval_due {
                if let Err(e) = writer.sync() {
                    self.poison(&e.to_string());
                    for c in completions {
                        c.fail(&e.to_string());
                    }
                    return;
                }
                last_sync = Instant::now();
                unsynced = false;
                self.synced.store(writer.position(), Ordering::SeqCst);
            } else if !buf.is_empty() {
                unsynced = true;
            }
            let done = self.publish(completions, writer.segment_start(), writer.position());
            if let Err(std::sync::mpsc::SendError(done)) = acks.send(done) {
                for c in done {
                    c.complete();
                }
            }
            drop(commit_guard);
            if self.space.reclaim_due.load(Ordering::SeqCst) {
                let (lock, cv) = &self.ckpt_signal;
                *lock.lock() = true;
                cv.notify_all();
            }
            if !unsynced {
                match writer.maybe_roll(&self.segments) {
                    Ok(_) => {}
                    Err(e) => {
                        self.poison(&e.to_string());
                        return;
                    }
                }
            }
            if since_ckpt >= self.opts.checkpoint_bytes
                || frames_since_ckpt >= self.opts.checkpoint_frames
            {
                since_ckpt = 0;
                frames_since_ckpt = 0;
                let (lock, cv) = &self.ckpt_signal;
                *lock.lock() = true;
                cv.notify_all();
            }
        }
    }

    pub(super) fn poison(&self, reason: &str) {
        tracing::error!(
            reason,
            "journal write failed; the log refuses further writes"
        );
        *self.poisoned.lock() = Some(reason.to_owned());
        // Closing the queue in the same critical section that empties it: an operation enqueued
        // after the writer thread returns would otherwise wait forever for its completion.
        let ops = {
            let mut q = self.queue.lock();
            q.closed = true;
            std::mem::take(&mut q.ops)
        };
        for op in ops {
            op.fail(LogError::Poisoned(reason.to_owned()));
        }
    }

    /// Turns one operation into journal bytes in `buf` and the completion to run once the
    /// bytes are durable. Catalog changes take effect here so that later operations in the same
    /// group see them.
    pub(super) fn stage(
        &self,
        op: Op,
        start_pos: u64,
        buf: &mut Vec<u8>,
        writer: &mut Writer,
    ) -> Completion {
        match op {
            Op::Append {
                topic,
                partition,
                mut batch,
                header,
                keys,
                done,
            } => {
                let part = {
                    let cat = self.catalog.read();
                    match cat.topics.get(&topic) {
                        None => {
                            return Completion::Append(done, Err(LogError::UnknownTopic(topic)));
                        }
                        Some(t) => match t.partitions.get(partition as usize) {
                            None => {
                                return Completion::Append(
                                    done,
                                    Err(LogError::UnknownPartition { topic, partition }),
                                );
                            }
                            Some(p) => Arc::clone(p),
                        },
                    }
                };
                let now = now_ms();
                if !keys.is_empty() {
                    let idem = self.idem.lock();
                    let hits: Vec<Option<IdemRecord>> = keys
                        .iter()
                        .map(|k| idem.map.get(&store::idem_digest(&k.key)).map(|e| e.rec))
                        .collect();
                    drop(idem);
                    if hits.iter().any(Option::is_some) {
                        let hits = hits
                            .iter()
                            .map(|h| h.as_ref().and_then(|r| self.hit(r)))
                            .collect();
                        return Completion::Append(done, Ok(AppendOutcome::Duplicate { hits }));
                    }
                }
                let count = u64::from(header.last_offset_delta.unsigned_abs()) + 1;
                let idempotent = header.producer_id >= 0 && header.base_sequence >= 0;
                let records = u32::try_from(header.record_count).unwrap_or(0);
                let idem_bytes = frame::encode_idem(&keys);
                let frame_len = frame::HEADER_LEN + idem_bytes.len() + batch.len();
                let (base, cum) = {
                    let mut s = part.state.lock();
                    if idempotent {
                        let verdict = s.producers.check(
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            records,
                        );
                        let refused = match verdict {
                            Verdict::Accept => None,
                            Verdict::Duplicate { base_offset } => {
                                Some(Ok(AppendOutcome::DuplicateBatch {
                                    base_offset,
                                    last_offset: base_offset + count - 1,
                                }))
                            }
                            Verdict::OutOfOrder { expected, got } => {
                                Some(Err(LogError::OutOfOrderSequence { expected, got }))
                            }
                            Verdict::StaleEpoch { current, got } => {
                                Some(Err(LogError::InvalidProducerEpoch { current, got }))
                            }
                            Verdict::UnknownProducer => {
                                Some(Err(LogError::UnknownProducerId(header.producer_id)))
                            }
                        };
                        if let Some(r) = refused {
                            return Completion::Append(done, r);
                        }
                    }
                    // Before any state changes: a batch refused for lack of space leaves no trace.
                    if let Err(e) = self.room(writer, buf.len() + frame_len, false) {
                        return Completion::Append(done, Err(e));
                    }
                    let base = s.pending_next;
                    s.pending_next += count;
                    if idempotent {
                        s.producers.record(
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            records,
                            base,
                            now,
                        );
                    }
                    (base, s.pending_total)
                };
                batch::set_base_offset(&mut batch, base);
                let position = start_pos + buf.len() as u64;
                frame::encode(
                    buf,
                    Kind::Batch,
                    keys.len() as u16,
                    part.stream,
                    base,
                    &[&idem_bytes, &batch],
                );
                let frame_len = frame_len as u32;
                let cum_bytes = cum + u64::from(frame_len);
                part.state.lock().pending_total = cum_bytes;
                if !keys.is_empty() {
                    let mut idem = self.idem.lock();
                    for k in keys {
                        let rec = IdemRecord {
                            stream: part.stream,
                            offset: base + u64::from(k.record_index),
                            timestamp_ms: header.max_timestamp,
                            created_ms: now,
                        };
                        idem.insert(
                            store::idem_digest(&k.key),
                            rec,
                            position,
                            self.opts.idempotency_max_keys,
                        );
                    }
                }
                let entry = IndexEntry {
                    base_offset: base,
                    last_delta: header.last_offset_delta.unsigned_abs(),
                    frame_len,
                    position,
                    max_ts: header.max_timestamp,
                    cum_bytes,
                };
                Completion::Appended { part, entry, done }
            }
            Op::Create {
                name,
                partitions,
                config,
                done,
            } => {
                let mut cat = self.catalog.write();
                if cat.topics.contains_key(&name) {
                    return Completion::Topic(done, Err(LogError::TopicExists(name)));
                }
                let first = cat.next_stream.max(1);
                let rec = TopicRecord {
                    name: name.clone(),
                    streams: (first..first + u64::from(partitions)).collect(),
                    config,
                    created_ms: now_ms(),
                };
                let json = store::to_json(&rec);
                if let Err(e) = self.room(writer, buf.len() + frame::HEADER_LEN + json.len(), false)
                {
                    return Completion::Topic(done, Err(e));
                }
                cat.next_stream = first + u64::from(partitions);
                frame::encode(buf, Kind::CreateTopic, 0, 0, 0, &[&json]);
                let topic = install_topic(&mut cat, &rec, |_| PartRecord::default());
                drop(cat);
                self.dirty_topics.lock().insert(name);
                Completion::Topic(done, Ok(topic.info()))
            }
            Op::Delete { name, done } => {
                let mut cat = self.catalog.write();
                let Some(topic) = cat.topics.get(&name).cloned() else {
                    return Completion::Unit(done, Err(LogError::UnknownTopic(name)));
                };
                let rec = topic.record();
                let json = store::to_json(&rec);
                // Deleting a topic is how an operator frees space, so it may use the reserve.
                if let Err(e) = self.room(writer, buf.len() + frame::HEADER_LEN + json.len(), true)
                {
                    return Completion::Unit(done, Err(e));
                }
                cat.topics.remove(&name);
                for p in &topic.partitions {
                    cat.streams.remove(&p.stream);
                }
                drop(cat);
                frame::encode(buf, Kind::DeleteTopic, 0, 0, 0, &[&json]);
                self.space.reclaim_due.store(true, Ordering::SeqCst);
                self.dirty_topics.lock().insert(name);
                self.deleted_streams.lock().extend(rec.streams);
                Completion::Unit(done, Ok(()))
            }
            Op::Config { name, config, done } => {
                let cat = self.catalog.read();
                let Some(topic) = cat.topics.get(&name).cloned() else {
                    return Completion::Topic(done, Err(LogError::UnknownTopic(name)));
                };
                drop(cat);
                let mut rec = topic.record();
                rec.config = config;
                let json = store::to_json(&rec);
                if let Err(e) = self.room(writer, buf.len() + frame::HEADER_LEN + json.len(), false)
                {
                    return Completion::Topic(done, Err(e));
                }
                *topic.config.write() = rec.config;
                frame::encode(buf, Kind::TopicConfig, 0, 0, 0, &[&json]);
                self.dirty_topics.lock().insert(name);
                Completion::Topic(done, Ok(topic.info()))
            }
            Op::AddPartitions { name, total, done } => {
                let mut cat = self.catalog.write();
                let Some(topic) = cat.topics.get(&name).cloned() else {
                    return Completion::Topic(done, Err(LogError::UnknownTopic(name)));
                };
                let current = topic.partitions.len() as u32;
                if total <= current {
                    return Completion::Topic(
                        done,
                        Err(LogError::InvalidConfig(format!(
                            "topic {name} has {current} partitions; the count can only grow"
                        ))),
                    );
                }
                let first = cat.next_stream.max(1);
                let mut rec = topic.record();
                rec.streams
                    .extend(first..first + u64::from(total - current));
                let json = store::to_json(&rec);
                if let Err(e) = self.room(writer, buf.len() + frame::HEADER_LEN + json.len(), false)
                {
                    return Completion::Topic(done, Err(e));
                }
                cat.next_stream = first + u64::from(total - current);
                frame::encode(buf, Kind::AddPartitions, 0, 0, 0, &[&json]);
                let grown = extend_topic(&mut cat, &topic, &rec);
                drop(cat);
                self.dirty_topics.lock().insert(name);
                Completion::Topic(done, Ok(grown.info()))
            }
            Op::LogStart {
                topic,
                partition,
                offset,
                done,
            } => {
                let part = {
                    let cat = self.catalog.read();
                    let Some(t) = cat.topics.get(&topic) else {
                        return Completion::Offset(done, Err(LogError::UnknownTopic(topic)));
                    };
                    match t.partitions.get(partition as usize) {
                        Some(p) => Arc::clone(p),
                        None => {
                            return Completion::Offset(
                                done,
                                Err(LogError::UnknownPartition { topic, partition }),
                            );
                        }
                    }
                };
                // The high watermark is what readers see, not `pending_next`: batches staged in
                // this same group are not acknowledged yet, and neither the tail nor the store
                // can say where they start, so their bytes could not be accounted.
                let (hw, current) = {
                    let s = part.state.lock();
                    (s.next_offset, s.log_start)
                };
                if offset > hw {
                    return Completion::Offset(
                        done,
                        Err(LogError::OffsetOutOfRange {
                            topic,
                            partition,
                            offset,
                            log_start: current,
                            high_watermark: hw,
                        }),
                    );
                }
                if offset <= current {
                    return Completion::Offset(done, Ok(current));
                }
                let start_bytes = match self.bytes_before(&part, offset) {
                    Ok(b) => b,
                    Err(e) => return Completion::Offset(done, Err(e)),
                };
                // Moving the log start frees space, so it may use the reserve.
                if let Err(e) = self.room(writer, buf.len() + frame::HEADER_LEN, true) {
                    return Completion::Offset(done, Err(e));
                }
                frame::encode(buf, Kind::LogStart, 0, part.stream, offset, &[]);
                // Applied in `publish`, once the frame is durable: applied here, a checkpoint or
                // a reclamation could act on a log start whose frame a crash then loses.
                Completion::LogStart {
                    part,
                    offset,
                    start_bytes,
                    done,
                }
            }
            Op::Sync { done } => Completion::Unit(done, Ok(())),
        }
    }

    /// Cumulative bytes of the partition before the batch holding `offset`, which must be at or
    /// below the high watermark.
    pub(super) fn bytes_before(&self, part: &Partition, offset: u64) -> Result<u64> {
        let from_tail = {
            let s = part.state.lock();
            if offset >= s.next_offset {
                return Ok(s.total_bytes);
            }
            // The tail answers only if it holds the batch: entries before it are in the store,
            // and "the first tail entry ending past `offset`" is then a later batch.
            if s.tail.first().is_some_and(|e| e.base_offset <= offset) {
                let i = s.tail.partition_point(|e| e.end_offset() <= offset);
                s.tail.get(i).map(|e| e.cum_bytes - u64::from(e.frame_len))
            } else {
                None
            }
        };
        if let Some(b) = from_tail {
            return Ok(b);
        }
        Ok(self
            .indexed_from(part.stream, offset, 1)?
            .first()
            .map(|e| e.cum_bytes - u64::from(e.frame_len))
            .unwrap_or(0))
    }

    /// Applies a written group to the in-memory state, marks it visible up to `end` and only
    /// then runs the completions: whoever is told an operation is done may take a checkpoint
    /// right away, and that checkpoint must include the operation.
    /// Makes a durable group visible to readers and returns its completions to run.
    pub(super) fn publish(
        &self,
        completions: Vec<Completion>,
        segment: u64,
        end: u64,
    ) -> Vec<Completion> {
        let mut touched: Vec<u64> = Vec::new();
        {
            let mut stats = self.seg_stats.lock();
            for c in &completions {
                match c {
                    Completion::Appended { part, entry, .. } => {
                        {
                            let mut s = part.state.lock();
                            s.tail.push(*entry);
                            s.next_offset = s.next_offset.max(entry.end_offset());
                            s.max_ts = raise_max_ts(s.max_ts, s.total_bytes, entry.max_ts);
                            s.total_bytes = s.total_bytes.max(entry.cum_bytes);
                        }
                        touched.push(part.stream);
                        let seg = stats.entry(segment).or_default();
                        let end = seg.entry(part.stream).or_default();
                        *end = (*end).max(entry.end_offset());
                    }
                    Completion::LogStart {
                        part,
                        offset,
                        start_bytes,
                        ..
                    } => {
                        let mut s = part.state.lock();
                        if *offset > s.log_start {
                            s.log_start = *offset;
                            s.start_bytes = *start_bytes;
                            touched.push(part.stream);
                        }
                    }
                    _ => {}
                }
            }
        }
        if !touched.is_empty() {
            if completions
                .iter()
                .any(|c| matches!(c, Completion::Appended { .. }))
            {
                self.dirty_segs.lock().insert(segment);
            }
            self.dirty_streams.lock().extend(touched);
        }
        self.visible.store(end, Ordering::SeqCst);
        completions
    }
}
