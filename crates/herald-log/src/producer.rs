//! Idempotent-producer state per partition: the sequence numbers a RecordBatch v2 carries in
//! its header (producer id, epoch, base sequence) are checked on append so that a producer's
//! retried batch is stored once and a gap is refused, as a Kafka broker does.
//!
//! The state is derived from stored batch headers alone, so it is checkpointed with the
//! partition and rebuilt by replay like every other index.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer for duplicate detection (Kafka keeps five in flight).
const RECENT: usize = 5;
/// Producers remembered per partition; the least recently seen is forgotten first.
pub const MAX_PRODUCERS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_seq: i32,
    /// `(first sequence, last sequence, base offset)` of the latest batches.
    pub recent: VecDeque<(i32, i32, u64)>,
    pub last_seen_ms: i64,
}

/// What the sequence check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// The batch was stored before at this base offset; nothing is written again.
    Duplicate {
        base_offset: u64,
    },
    OutOfOrder {
        expected: i32,
        got: i32,
    },
    StaleEpoch {
        current: i16,
        got: i16,
    },
    UnknownProducer,
}

fn next_seq(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

pub fn last_seq(first: i32, count: u32) -> i32 {
    let span = i64::from(count.saturating_sub(1));
    let last = i64::from(first) + span;
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

#[derive(Debug, Default, Clone)]
pub struct Producers {
    map: HashMap<i64, ProducerState>,
}

impl Producers {
    pub fn from_snapshot(states: Vec<ProducerState>) -> Producers {
        Producers {
            map: states.into_iter().map(|s| (s.producer_id, s)).collect(),
        }
    }

    pub fn snapshot(&self) -> Vec<ProducerState> {
        let mut v: Vec<ProducerState> = self.map.values().cloned().collect();
        v.sort_by_key(|s| s.producer_id);
        v
    }

    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, count: u32) -> Verdict {
        let Some(s) = self.map.get(&producer_id) else {
            return if first_seq == 0 {
                Verdict::Accept
            } else {
                Verdict::UnknownProducer
            };
        };
        if epoch < s.epoch {
            return Verdict::StaleEpoch {
                current: s.epoch,
                got: epoch,
            };
        }
        if epoch > s.epoch {
            // A bumped epoch starts its sequences again at zero.
            return if first_seq == 0 {
                Verdict::Accept
            } else {
                Verdict::OutOfOrder {
                    expected: 0,
                    got: first_seq,
                }
            };
        }
        let last = last_seq(first_seq, count);
        if let Some((_, _, base)) = s
            .recent
            .iter()
            .find(|(f, l, _)| *f == first_seq && *l == last)
        {
            return Verdict::Duplicate { base_offset: *base };
        }
        let expected = next_seq(s.last_seq);
        if first_seq == expected {
            Verdict::Accept
        } else {
            Verdict::OutOfOrder {
                expected,
                got: first_seq,
            }
        }
    }

    /// Records an accepted (or replayed) batch. Replaying a batch the state already covers
    /// changes nothing.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        count: u32,
        base_offset: u64,
        now_ms: i64,
    ) {
        let last = last_seq(first_seq, count);
        if !self.map.contains_key(&producer_id) && self.map.len() >= MAX_PRODUCERS {
            let oldest = self
                .map
                .values()
                .min_by_key(|s| s.last_seen_ms)
                .map(|s| s.producer_id);
            if let Some(id) = oldest {
                self.map.remove(&id);
            }
        }
        let s = self
            .map
            .entry(producer_id)
            .or_insert_with(|| ProducerState {
                producer_id,
                epoch,
                last_seq: -1,
                recent: VecDeque::new(),
                last_seen_ms: now_ms,
            });
        if epoch < s.epoch || (epoch == s.epoch && s.recent.iter().any(|(f, _, _)| *f == first_seq))
        {
            return;
        }
        if epoch > s.epoch {
            s.epoch = epoch;
            s.recent.clear();
        }
        s.last_seq = last;
        s.last_seen_ms = now_ms;
        s.recent.push_back((first_seq, last, base_offset));
        while s.recent.len() > RECENT {
            s.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences() {
        let mut p = Producers::default();
        assert_eq!(p.check(7, 0, 0, 3), Verdict::Accept);
        p.record(7, 0, 0, 3, 100, 0);
        assert_eq!(p.check(7, 0, 0, 3), Verdict::Duplicate { base_offset: 100 });
        assert_eq!(p.check(7, 0, 3, 2), Verdict::Accept);
        assert_eq!(
            p.check(7, 0, 5, 2),
            Verdict::OutOfOrder {
                expected: 3,
                got: 5
            }
        );
        p.record(7, 0, 3, 2, 103, 0);
        assert_eq!(p.check(7, 0, 0, 3), Verdict::Duplicate { base_offset: 100 });
        assert_eq!(p.check(7, 0, 5, 1), Verdict::Accept);
        assert_eq!(p.check(9, 0, 4, 1), Verdict::UnknownProducer);
        p.record(7, 1, 0, 1, 110, 0);
        assert_eq!(
            p.check(7, 0, 5, 1),
            Verdict::StaleEpoch { current: 1, got: 0 }
        );
        assert_eq!(
            p.check(7, 2, 3, 1),
            Verdict::OutOfOrder {
                expected: 0,
                got: 3
            }
        );
        // Replay of a covered batch is a no-op.
        let before = p.snapshot();
        p.record(7, 0, 3, 2, 103, 0);
        assert_eq!(p.snapshot(), before);
    }

    #[test]
    fn wraps_at_i32_max() {
        let mut p = Producers::default();
        p.record(1, 0, 0, 1, 0, 0);
        if let Some(s) = p.map.get_mut(&1) {
            s.last_seq = i32::MAX - 1;
        }
        assert_eq!(last_seq(i32::MAX, 2), 0);
        assert_eq!(p.check(1, 0, i32::MAX, 2), Verdict::Accept);
        p.record(1, 0, i32::MAX, 2, 5, 0);
        assert_eq!(p.check(1, 0, 1, 1), Verdict::Accept);
    }
}
