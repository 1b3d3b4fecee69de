//! Committed consumer-group offsets and group metadata, kept in memory and made durable in the
//! internal topic `_herald.consumer_offsets`.
//!
//! Every change is one record: the key names what changed (an offset of a group's partition,
//! or a group's metadata snapshot), the value is the new state or null for a deletion, and each
//! carries a sequence number. Recovery reads the topic and keeps, per key, the record with the
//! highest sequence — so compaction may rewrite live entries at the end of the topic and drop
//! everything before them without any ordering hazard against concurrent commits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::BrokerError;
use crate::records::{self, Record};
use crate::storage::{AppendOutcome, Storage};

pub const OFFSETS_TOPIC: &str = "_herald.consumer_offsets";

/// By default, live entries are rewritten and older records dropped once the topic holds this
/// many records more than there are live entries.
const COMPACT_SLACK: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    #[serde(default)]
    pub metadata: Option<String>,
    #[serde(default = "no_epoch")]
    pub leader_epoch: i32,
    pub commit_ms: i64,
}

fn no_epoch() -> i32 {
    -1
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "k")]
enum Key {
    #[serde(rename = "o")]
    Offset { g: String, t: String, p: u32 },
    #[serde(rename = "g")]
    Group { g: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Value {
    seq: u64,
    #[serde(default)]
    offset: Option<Committed>,
    #[serde(default)]
    group: Option<serde_json::Value>,
}

/// Entries keep the sequence of their last change; a deletion stays as `None` so that an
/// older record arriving later can never bring the entry back.
#[derive(Default)]
struct State {
    offsets: BTreeMap<(String, String, u32), (u64, Option<Committed>)>,
    groups: HashMap<String, (u64, Option<serde_json::Value>)>,
}

/// A group snapshot with its sequence number taken, waiting to be appended.
#[derive(Debug)]
pub struct StagedGroup {
    key: Key,
    value: Value,
}

pub struct OffsetStore {
    storage: Arc<dyn Storage>,
    state: Mutex<State>,
    seq: AtomicU64,
    compacting: tokio::sync::Mutex<()>,
    compact_slack: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn record(key: &Key, value: Option<&Value>) -> Record {
    Record {
        offset: 0,
        timestamp_ms: now_ms(),
        key: Some(Bytes::from(serde_json::to_vec(key).unwrap_or_default())),
        value: value.map(|v| Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
        headers: Vec::new(),
    }
}

impl OffsetStore {
    /// Opens the store, creating the internal topic on first use and loading every live entry.
    pub async fn open(storage: Arc<dyn Storage>) -> Result<OffsetStore, BrokerError> {
        storage.ensure_internal_topic(OFFSETS_TOPIC).await?;
        let store = OffsetStore {
            storage,
            state: Mutex::new(State::default()),
            seq: AtomicU64::new(1),
            compacting: tokio::sync::Mutex::new(()),
            compact_slack: COMPACT_SLACK,
        };
        store.load().await?;
        Ok(store)
    }

    /// Compacts after `slack` superseded records instead of the default.
    pub fn with_compact_slack(mut self, slack: u64) -> OffsetStore {
        self.compact_slack = slack;
        self
    }

    async fn load(&self) -> Result<(), BrokerError> {
        let stats = self.storage.partition_stats(OFFSETS_TOPIC, 0).await?;
        let mut at = stats.log_start;
        let mut state = State::default();
        let mut max_seq = 0u64;
        while at < stats.high_watermark {
            let read = self
                .storage
                .read(OFFSETS_TOPIC, 0, at, 4 * 1024 * 1024)
                .await?;
            if read.batches.is_empty() {
                break;
            }
            for b in &read.batches {
                for r in records::decode(b)? {
                    at = at.max(r.offset + 1);
                    let Some(key) = r
                        .key
                        .as_deref()
                        .and_then(|k| serde_json::from_slice::<Key>(k).ok())
                    else {
                        tracing::warn!(
                            offset = r.offset,
                            "unreadable key in {OFFSETS_TOPIC}; skipped"
                        );
                        continue;
                    };
                    let value = r
                        .value
                        .as_deref()
                        .and_then(|v| serde_json::from_slice::<Value>(v).ok());
                    let seq = value.as_ref().map(|v| v.seq).unwrap_or(0);
                    max_seq = max_seq.max(seq);
                    apply(&mut state, key, value);
                }
            }
        }
        self.seq.store(max_seq + 1, Ordering::SeqCst);
        tracing::info!(
            offsets = state.offsets.len(),
            groups = state.groups.len(),
            "consumer group offsets loaded"
        );
        *self.state.lock() = state;
        Ok(())
    }

    async fn append(&self, records: Vec<Record>) -> Result<(), BrokerError> {
        let batch = records::build(&records)?;
        match self
            .storage
            .append_async(OFFSETS_TOPIC, 0, batch, Vec::new())
            .await?
        {
            AppendOutcome::Appended { .. } => Ok(()),
            AppendOutcome::Duplicate { .. } | AppendOutcome::DuplicateBatch { .. } => Err(
                BrokerError::Internal("unexpected duplicate in the offsets topic".into()),
            ),
        }
    }

    /// Durably commits offsets of one group; returns once they are stored.
    pub async fn commit(
        &self,
        group: &str,
        offsets: Vec<(String, u32, Committed)>,
    ) -> Result<(), BrokerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(offsets.len());
        let mut staged = Vec::with_capacity(offsets.len());
        for (topic, partition, c) in offsets {
            let seq = self.seq.fetch_add(1, Ordering::SeqCst);
            let key = Key::Offset {
                g: group.to_owned(),
                t: topic,
                p: partition,
            };
            let value = Value {
                seq,
                offset: Some(c),
                group: None,
            };
            records.push(record(&key, Some(&value)));
            staged.push((key, value));
        }
        self.append(records).await?;
        {
            let mut state = self.state.lock();
            for (key, value) in staged {
                apply(&mut state, key, Some(value));
            }
        }
        self.maybe_compact().await;
        Ok(())
    }

    /// Deletes committed offsets: the given partitions, or every offset of the group.
    pub async fn delete(
        &self,
        group: &str,
        partitions: Option<Vec<(String, u32)>>,
    ) -> Result<usize, BrokerError> {
        let keys: Vec<(String, String, u32)> = {
            let state = self.state.lock();
            match partitions {
                Some(ps) => ps
                    .into_iter()
                    .map(|(t, p)| (group.to_owned(), t, p))
                    .filter(|k| state.offsets.get(k).is_some_and(|(_, c)| c.is_some()))
                    .collect(),
                None => state
                    .offsets
                    .range((group.to_owned(), String::new(), 0)..)
                    .take_while(|((g, _, _), _)| g == group)
                    .filter(|(_, (_, c))| c.is_some())
                    .map(|(k, _)| k.clone())
                    .collect(),
            }
        };
        let mut records = Vec::with_capacity(keys.len() + 1);
        let mut staged = Vec::new();
        for (g, t, p) in &keys {
            let key = Key::Offset {
                g: g.clone(),
                t: t.clone(),
                p: *p,
            };
            let value = Value {
                seq: self.seq.fetch_add(1, Ordering::SeqCst),
                offset: None,
                group: None,
            };
            records.push(record(&key, Some(&value)));
            staged.push((key, value));
        }
        if records.is_empty() {
            return Ok(0);
        }
        self.append(records).await?;
        let mut state = self.state.lock();
        for (key, value) in staged {
            apply(&mut state, key, Some(value));
        }
        Ok(keys.len())
    }

    /// Deletes every group's committed offsets for a topic (the topic was deleted).
    pub async fn forget_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let mut by_group: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
        {
            let state = self.state.lock();
            for ((g, t, p), (_, c)) in &state.offsets {
                if t == topic && c.is_some() {
                    by_group.entry(g.clone()).or_default().push((t.clone(), *p));
                }
            }
        }
        for (group, partitions) in by_group {
            self.delete(&group, Some(partitions)).await?;
        }
        Ok(())
    }

    /// Stores (or with `None` removes) a group's metadata snapshot.
    pub async fn put_group(
        &self,
        group: &str,
        snapshot: Option<serde_json::Value>,
    ) -> Result<(), BrokerError> {
        self.store_group(self.stage_group(group, snapshot)).await
    }

    /// Takes the next sequence number for a group's snapshot without storing it yet. Call this
    /// where the snapshot is taken, under the lock that orders the group's changes: recovery
    /// keeps the highest sequence, so the snapshot taken last wins whatever order the appends
    /// of [`OffsetStore::store_group`] finish in.
    pub fn stage_group(&self, group: &str, snapshot: Option<serde_json::Value>) -> StagedGroup {
        StagedGroup {
            key: Key::Group {
                g: group.to_owned(),
            },
            value: Value {
                seq: self.seq.fetch_add(1, Ordering::SeqCst),
                offset: None,
                group: snapshot,
            },
        }
    }

    /// Durably stores a staged group snapshot. An older snapshot stored after a newer one is
    /// kept in the topic but never wins, in memory or at recovery.
    pub async fn store_group(&self, staged: StagedGroup) -> Result<(), BrokerError> {
        let StagedGroup { key, value } = staged;
        self.append(vec![record(&key, Some(&value))]).await?;
        apply(&mut self.state.lock(), key, Some(value));
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<Committed> {
        self.state
            .lock()
            .offsets
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .and_then(|(_, c)| c.clone())
    }

    /// Every committed offset of a group, ordered by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, u32, Committed)> {
        self.state
            .lock()
            .offsets
            .range((group.to_owned(), String::new(), 0)..)
            .take_while(|((g, _, _), _)| g == group)
            .filter_map(|((_, t, p), (_, c))| Some((t.clone(), *p, c.clone()?)))
            .collect()
    }

    /// Every (group, topic, partition, offset), for lag reporting.
    pub fn all(&self) -> Vec<(String, String, u32, i64)> {
        self.state
            .lock()
            .offsets
            .iter()
            .filter_map(|((g, t, p), (_, c))| Some((g.clone(), t.clone(), *p, c.as_ref()?.offset)))
            .collect()
    }

    /// Groups with committed offsets or stored metadata.
    pub fn groups(&self) -> Vec<String> {
        let state = self.state.lock();
        let mut out: Vec<String> = state
            .groups
            .iter()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(g, _)| g.clone())
            .collect();
        let mut last: Option<&String> = None;
        for ((g, _, _), (_, c)) in &state.offsets {
            if c.is_some() && last != Some(g) {
                out.push(g.clone());
                last = Some(g);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn group_snapshots(&self) -> Vec<(String, serde_json::Value)> {
        self.state
            .lock()
            .groups
            .iter()
            .filter_map(|(g, (_, v))| Some((g.clone(), v.clone()?)))
            .collect()
    }

    /// Rewrites the live entries at the end of the topic and drops the records before them,
    /// once enough superseded records have accumulated.
    async fn maybe_compact(&self) {
        let Ok(stats) = self.storage.partition_stats(OFFSETS_TOPIC, 0).await else {
            return;
        };
        let live = {
            let s = self.state.lock();
            (s.offsets.values().filter(|(_, c)| c.is_some()).count()
                + s.groups.values().filter(|(_, v)| v.is_some()).count()) as u64
        };
        if stats.high_watermark - stats.log_start < live + self.compact_slack {
            return;
        }
        let Ok(_guard) = self.compacting.try_lock() else {
            return;
        };
        let (records, start) = {
            let s = self.state.lock();
            let mut records = Vec::with_capacity(s.offsets.len() + s.groups.len());
            for ((g, t, p), (seq, c)) in &s.offsets {
                let Some(c) = c else { continue };
                let key = Key::Offset {
                    g: g.clone(),
                    t: t.clone(),
                    p: *p,
                };
                records.push(record(
                    &key,
                    Some(&Value {
                        seq: *seq,
                        offset: Some(c.clone()),
                        group: None,
                    }),
                ));
            }
            for (g, (seq, v)) in &s.groups {
                let Some(v) = v else { continue };
                let key = Key::Group { g: g.clone() };
                records.push(record(
                    &key,
                    Some(&Value {
                        seq: *seq,
                        offset: None,
                        group: Some(v.clone()),
                    }),
                ));
            }
            (records, stats.high_watermark)
        };
        for chunk in records.chunks(5000) {
            if let Err(e) = self.append(chunk.to_vec()).await {
                tracing::warn!(error = %e, "compacting {OFFSETS_TOPIC} failed");
                return;
            }
        }
        let result = self
            .storage
            .delete_records_before(OFFSETS_TOPIC, 0, start)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "dropping superseded offset records failed");
        }
    }
}

fn apply(state: &mut State, key: Key, value: Option<Value>) {
    let seq = value.as_ref().map(|v| v.seq).unwrap_or(0);
    match key {
        Key::Offset { g, t, p } => {
            let k = (g, t, p);
            if state.offsets.get(&k).is_some_and(|(s, _)| *s > seq) {
                return;
            }
            state.offsets.insert(k, (seq, value.and_then(|v| v.offset)));
        }
        Key::Group { g } => {
            if state.groups.get(&g).is_some_and(|(s, _)| *s > seq) {
                return;
            }
            state.groups.insert(g, (seq, value.and_then(|v| v.group)));
        }
    }
}
