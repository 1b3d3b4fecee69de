//! The idempotency-key table: which keys were seen, where they landed, and which rows the next
//! checkpoint writes or removes.

use std::collections::{HashMap, VecDeque};

use crate::store::IdemRecord;

use super::{IdemHit, Inner};

pub(super) struct IdemEntry {
    pub(super) rec: IdemRecord,
    pub(super) position: u64,
}

#[derive(Default)]
pub(super) struct IdemTable {
    pub(super) map: HashMap<Vec<u8>, IdemEntry>,
    pub(super) order: VecDeque<(i64, Vec<u8>)>,
    /// Keys forgotten in memory whose rows the next checkpoint removes.
    pub(super) expired: Vec<Vec<u8>>,
    /// Keys added since the last checkpoint.
    pub(super) fresh: Vec<Vec<u8>>,
}

impl IdemTable {
    pub(super) fn insert(&mut self, key: Vec<u8>, rec: IdemRecord, position: u64, max: usize) {
        self.order.push_back((rec.created_ms, key.clone()));
        self.fresh.push(key.clone());
        self.map.insert(key, IdemEntry { rec, position });
        while self.map.len() > max {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    pub(super) fn pop_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else {
            return false;
        };
        self.map.remove(&key);
        self.expired.push(key);
        true
    }

    pub(super) fn expire(&mut self, cutoff_ms: i64) {
        while self.order.front().is_some_and(|(t, _)| *t < cutoff_ms) {
            self.pop_oldest();
        }
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
