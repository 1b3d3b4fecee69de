//! Checkpoints: moving durable index entries, catalog changes, segment statistics and
//! idempotency keys into redb, so that recovery only rescans the journal written after them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::ReadableTable;

use crate::error::Result;
use crate::store::{
    self, IDEM, IndexEntry, META, META_CHECKPOINT, META_NEXT_STREAM, PACKS, PARTS, PartRecord,
    SEGS, TIMES, TOPICS,
};

use super::{Inner, Partition, now_ms};

impl Inner {
    /// Moves index entries for everything durable into the checkpoint store, so that recovery
    /// only rescans the journal written after it.
    pub(super) fn checkpoint(&self) -> Result<()> {
        let _one_at_a_time = self.ckpt_lock.lock();
        // Held for the whole checkpoint: the catalog snapshot then matches `pos` exactly.
        let _catalog = self.catalog_commit.read();
        let pos = self
            .synced
            .load(Ordering::SeqCst)
            .min(self.visible.load(Ordering::SeqCst));
        let cutoff = now_ms() - self.opts.idempotency_window.as_millis() as i64;
        if pos <= self.checkpointed.load(Ordering::SeqCst)
            && self.dirty_topics.lock().is_empty()
            && self.dirty_streams.lock().is_empty()
            && !self.idem.lock().dirty(cutoff)
        {
            return Ok(());
        }
        let streams: Vec<u64> = self.dirty_streams.lock().drain().collect();
        let topics: Vec<String> = self.dirty_topics.lock().drain().collect();
        let deleted: Vec<u64> = std::mem::take(&mut *self.deleted_streams.lock());
        let segs: Vec<u64> = self.dirty_segs.lock().drain().collect();
        let (fresh_keys, evicted_keys) = {
            let mut idem = self.idem.lock();
            idem.expire(cutoff);
            (
                std::mem::take(&mut idem.fresh),
                std::mem::take(&mut idem.evicted),
            )
        };
        // Should this checkpoint fail, the next one must still write what was taken here, or
        // it would record a journal position past index entries it never wrote.
        let mut undo = Undo {
            armed: true,
            inner: self,
            streams: streams.clone(),
            topics: topics.clone(),
            deleted: deleted.clone(),
            segs: segs.clone(),
            fresh: fresh_keys.clone(),
        };
        let mut moved: Vec<(Arc<Partition>, u64)> = Vec::new();
        let mut still_dirty: Vec<u64> = Vec::new();
        let mut fresh_later: Vec<u128> = Vec::new();
        let mut oldest_written = i64::MAX;

        let wtx = self.db.begin_write()?;
        {
            let mut batches = wtx.open_table(PACKS)?;
            let mut times = wtx.open_table(TIMES)?;
            let mut parts = wtx.open_table(PARTS)?;
            let cat = self.catalog.read();
            for stream in &streams {
                let Some(part) = cat.streams.get(stream) else {
                    continue;
                };
                let mut rec = match parts.get(*stream)? {
                    Some(v) => store::from_json::<PartRecord>("partition", v.value())?,
                    None => PartRecord::default(),
                };
                let (entries, log_start, start_bytes, more, producers) = {
                    let s = part.state.lock();
                    let n = s.tail.partition_point(|e| e.position < pos);
                    let entries: Vec<IndexEntry> = s.tail.get(..n).unwrap_or_default().to_vec();
                    // Producer state may already include batches past `pos`; replaying them
                    // later is a no-op for it.
                    (
                        entries,
                        s.log_start,
                        s.start_bytes,
                        n < s.tail.len(),
                        s.producers.snapshot(),
                    )
                };
                rec.producers = producers;
                store::index_entries(&mut batches, &mut times, *stream, &mut rec, &entries)?;
                rec.log_start = rec.log_start.max(log_start);
                rec.start_bytes = rec.start_bytes.max(start_bytes);
                parts.insert(*stream, &store::to_json(&rec)[..])?;
                if !entries.is_empty() {
                    moved.push((Arc::clone(part), entries.len() as u64));
                }
                if more {
                    still_dirty.push(*stream);
                }
            }
            let mut topics_t = wtx.open_table(TOPICS)?;
            for name in &topics {
                match cat.topics.get(name) {
                    Some(t) => {
                        let rec = t.record();
                        for s in &rec.streams {
                            if parts.get(*s)?.is_none() {
                                parts.insert(*s, &store::to_json(&PartRecord::default())[..])?;
                            }
                        }
                        topics_t.insert(name.as_str(), &store::to_json(&rec)[..])?;
                    }
                    None => {
                        topics_t.remove(name.as_str())?;
                    }
                }
            }
            for s in &deleted {
                parts.remove(*s)?;
                batches.retain_in((*s, 0)..=(*s, u64::MAX), |_, _| false)?;
                times.retain_in((*s, i64::MIN)..=(*s, i64::MAX), |_, _| false)?;
            }
            let mut segs_t = wtx.open_table(SEGS)?;
            {
                let stats = self.seg_stats.lock();
                for seg in &segs {
                    if let Some(m) = stats.get(seg) {
                        segs_t.insert(*seg, &store::encode_seg_stats(m)[..])?;
                    }
                }
            }
            let mut idem_t = wtx.open_table(IDEM)?;
            // Rows older than the window, including any a crashed run loaded or wrote and
            // never removed, so that the table never outgrows the window.
            idem_t.retain_in((i64::MIN, 0u128)..(cutoff, 0u128), |_, _| false)?;
            {
                let idem = self.idem.lock();
                for (created, k) in &evicted_keys {
                    idem_t.remove((*created, *k))?;
                }
                let mut rows = Vec::with_capacity(fresh_keys.len());
                for k in fresh_keys {
                    if let Some(e) = idem.map.get(&k) {
                        if e.position < pos {
                            rows.push(((e.rec.created_ms, k), e.rec));
                        } else {
                            fresh_later.push(k);
                        }
                    }
                }
                // In key order: appended at the table's end, redb fills its pages; in the map's
                // order keys of one millisecond land at random and leave pages a third empty.
                rows.sort_unstable_by_key(|(k, _)| *k);
                for ((created, k), rec) in rows {
                    oldest_written = oldest_written.min(created);
                    idem_t.insert((created, k), &rec.encode_value()[..])?;
                }
            }
            let next_stream = cat.next_stream;
            drop(cat);
            let mut meta = wtx.open_table(META)?;
            meta.insert(META_CHECKPOINT, &pos.to_le_bytes()[..])?;
            meta.insert(META_NEXT_STREAM, &next_stream.to_le_bytes()[..])?;
        }
        wtx.commit()?;
        undo.armed = false;
        self.checkpointed.store(pos, Ordering::SeqCst);
        for (part, n) in moved {
            let mut s = part.state.lock();
            let n = usize::try_from(n).unwrap_or(0).min(s.tail.len());
            s.tail.drain(..n);
            if s.tail.capacity() > 64 && s.tail.len() < s.tail.capacity() / 4 {
                s.tail.shrink_to_fit();
            }
        }
        self.dirty_streams.lock().extend(still_dirty);
        {
            let mut idem = self.idem.lock();
            idem.fresh.extend(fresh_later);
            idem.stored_since_ms = idem.stored_since_ms.max(cutoff).min(oldest_written);
        }
        Ok(())
    }
}

/// Puts back what a failed checkpoint took from the dirty sets.
struct Undo<'a> {
    armed: bool,
    inner: &'a Inner,
    streams: Vec<u64>,
    topics: Vec<String>,
    deleted: Vec<u64>,
    segs: Vec<u64>,
    fresh: Vec<u128>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let i = self.inner;
        i.dirty_streams.lock().extend(self.streams.drain(..));
        i.dirty_topics.lock().extend(self.topics.drain(..));
        i.deleted_streams.lock().append(&mut self.deleted);
        i.dirty_segs.lock().extend(self.segs.drain(..));
        i.idem.lock().fresh.append(&mut self.fresh);
    }
}
