//! The idempotency-key table: which keys were seen, where they landed, and which rows the next
//! checkpoint writes or removes.

use std::collections::{HashMap, VecDeque};

use crate::store::IdemRecord;

use super::{IdemHit, Inner};

pub(super) struct IdemEntry {
    pub(super) rec: IdemRecord,
    pub(super) position: u64,
}

/// Keys in memory are exactly the keys inside the window (and under the key limit); rows in
/// redb are keyed by `(created_ms, key)`, so a checkpoint removes every row older than the
/// window with one range deletion, whether or not this process ever loaded it.
#[derive(Default)]
pub(super) struct IdemTable {
    /// By digest ([`crate::store::idem_digest`]): 16 bytes per key instead of the key itself.
    pub(super) map: HashMap<u128, IdemEntry>,
    pub(super) order: VecDeque<(i64, u128)>,
    /// Rows of keys forgotten early to stay under the key limit; the next checkpoint removes
    /// them. (Keys that age out of the window need no list: their rows go by range.)
    pub(super) evicted: Vec<(i64, u128)>,
    /// Keys added since the last checkpoint.
    pub(super) fresh: Vec<u128>,
    /// No row in redb was created before this (`i64::MAX`: the table is empty). Recovery sets
    /// it from the table's first row.
    pub(super) stored_since_ms: i64,
}

impl IdemTable {
    pub(super) fn insert(&mut self, key: u128, rec: IdemRecord, position: u64, max: usize) {
        self.order.push_back((rec.created_ms, key));
        self.fresh.push(key);
        self.map.insert(key, IdemEntry { rec, position });
        while self.map.len() > max {
            match self.pop_oldest() {
                Some(gone) => self.evicted.push(gone),
                None => break,
            }
        }
    }

    /// Forgets the oldest key in memory and returns its row key.
    pub(super) fn pop_oldest(&mut self) -> Option<(i64, u128)> {
        let (created, key) = self.order.pop_front()?;
        // A key that aged out and was published again has a newer entry of its own, which
        // stays.
        if self
            .map
            .get(&key)
            .is_some_and(|e| e.rec.created_ms == created)
        {
            self.map.remove(&key);
        }
        Some((created, key))
    }

    pub(super) fn expire(&mut self, cutoff_ms: i64) {
        while self.order.front().is_some_and(|(t, _)| *t < cutoff_ms) {
            self.pop_oldest();
        }
    }

    /// Whether a checkpoint has rows to write or remove.
    pub(super) fn dirty(&self, cutoff_ms: i64) -> bool {
        !self.fresh.is_empty() || !self.evicted.is_empty() || self.stored_since_ms < cutoff_ms
    }
}

impl Inner {
    pub(super) fn hit(&self, rec: &IdemRecord) -> Option<IdemHit> {
        let cat = self.catalog.read();
        let part = cat.streams.get(&rec.stream)?;
        Some(IdemHit {
            topic: part.topic.to_string(),
            partition: part.index,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
        })
    }
}
