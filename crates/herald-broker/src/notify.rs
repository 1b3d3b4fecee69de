use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Wakes long-polling readers when a partition receives records.
///
/// A channel exists only while someone waits on the partition, so 100,000 idle topics cost
/// nothing here.
#[derive(Default)]
pub struct Notifier {
    channels: Mutex<HashMap<PartitionKey, watch::Sender<u64>>>,
}

type PartitionKey = (Arc<str>, u32);

pub struct Waiter {
    rx: watch::Receiver<u64>,
}

impl Notifier {
    /// Registers interest before the caller reads, so that an append between the read and the
    /// wait is not missed.
    pub fn subscribe(&self, topic: &str, partition: u32) -> Waiter {
        let mut map = self.channels.lock();
        if map.len() >= 4096 {
            // Waiters that timed out on idle partitions leave channels behind; drop them.
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        let key = (Arc::from(topic), partition);
        let tx = map.entry(key).or_insert_with(|| watch::channel(0).0);
        Waiter { rx: tx.subscribe() }
    }

    pub fn notify(&self, topic: &str, partition: u32) {
        let mut map = self.channels.lock();
        let key: PartitionKey = (Arc::from(topic), partition);
        if let Some(tx) = map.get(&key) {
            if tx.receiver_count() == 0 {
                map.remove(&key);
            } else {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }

    pub fn notify_topic_deleted(&self, topic: &str) {
        let map = self.channels.lock();
        for ((t, _), tx) in map.iter() {
            if &**t == topic {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }
}

impl Waiter {
    /// Returns on the next notification or at the deadline, whichever is first.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) {
        let _ = tokio::time::timeout_at(deadline, self.rx.changed()).await;
    }
}
