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
    tap: std::sync::OnceLock<Arc<AppendTap>>,
}

/// Partitions that received records since the tap's owner last looked: a set (bounded by the
/// number of partitions) and a wake-up. Used by in-process consumers such as channel routes.
#[derive(Default)]
pub struct AppendTap {
    dirty: Mutex<std::collections::HashSet<PartitionKey>>,
    pub wake: tokio::sync::Notify,
}

impl AppendTap {
    /// The partitions appended to since the last call.
    pub fn take(&self) -> Vec<(Arc<str>, u32)> {
        self.dirty.lock().drain().collect()
    }
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

    /// Installs the append tap (one per process) and returns it.
    pub fn tap(&self) -> Arc<AppendTap> {
        Arc::clone(self.tap.get_or_init(Default::default))
    }

    pub fn notify(&self, topic: &str, partition: u32) {
        // Read without a lock: every append passes here.
        if let Some(tap) = self.tap.get() {
            tap.dirty.lock().insert((Arc::from(topic), partition));
            tap.wake.notify_one();
        }
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
