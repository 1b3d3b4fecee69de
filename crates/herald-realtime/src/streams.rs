//! Channels with history are durable streams in the embedded log: one single-partition topic
//! per channel (`_herald.ch.<channel>`, hidden from Kafka clients), whose offsets are the
//! channel's offsets (log offset + 1, so the first publication is 1, as in Centrifugo) and whose
//! epoch is stored in the topic's configuration when it is created — it survives restarts and
//! changes only when the history is removed.
//!
//! Publications are fanned out from the log's acknowledgement callback, which runs in offset
//! order per partition, so subscribers see a channel's publications in offset order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_log::batch::Record;
use herald_log::{AppendOutcome, IdemKey, Log, LogError, TopicConfig};
use parking_lot::Mutex;
use serde_json::value::RawValue;

use crate::config::Namespace;
use crate::proto::{ErrorCode, Json, Publication};

pub const CHANNEL_TOPIC_PREFIX: &str = herald_core::topic::CHANNEL_STREAM_PREFIX;
const INFO_HEADER: &str = "i";
const TAGS_HEADER: &str = "t";

pub fn topic_of(channel: &str) -> String {
    let mut s = String::with_capacity(CHANNEL_TOPIC_PREFIX.len() + channel.len());
    s.push_str(CHANNEL_TOPIC_PREFIX);
    s.push_str(channel);
    s
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The offset of the newest publication (0 when there is none).
    pub offset: u64,
    pub epoch: String,
}

/// A publication ready for fan-out: its offset and the encoded `Publication`.
pub struct Fanout {
    pub channel: Arc<str>,
    pub offset: u64,
    pub publication: String,
}

pub type FanoutFn = Arc<dyn Fn(Fanout) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<LogError> for StreamError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Overloaded { .. } | LogError::Closed => {
                StreamError::Unavailable(e.to_string())
            }
            other => StreamError::Internal(other.to_string()),
        }
    }
}

pub struct Published {
    pub offset: u64,
    pub epoch: String,
    /// An earlier publication with the same idempotency key; nothing new was delivered.
    pub duplicate: bool,
}

pub struct Streams {
    log: Log,
    fanout: FanoutFn,
    trimming: Arc<Mutex<HashSet<String>>>,
    epoch_seed: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, StreamError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))?
        .map_err(StreamError::from)
}

impl Streams {
    /// `epoch_seed` is a value stored with the data directory: a channel's epoch is derived from
    /// it and the channel's name, so a channel has its epoch before its first publication (a
    /// subscribe writes nothing) and a new data directory means new epochs.
    pub fn new(log: Log, fanout: FanoutFn, epoch_seed: String) -> Streams {
        Streams {
            log,
            fanout,
            trimming: Arc::default(),
            epoch_seed,
        }
    }

    fn epoch_for(&self, channel: &str) -> String {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self
            .epoch_seed
            .as_bytes()
            .iter()
            .chain(&[0u8])
            .chain(channel.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:08x}", (h >> 32) as u32 ^ h as u32)
    }

    /// The stream's position; offset 0 when nothing was published yet.
    pub fn position(&self, channel: &str) -> Position {
        Position {
            offset: self
                .log
                .partition_stats(&topic_of(channel), 0)
                .map_or(0, |s| s.high_watermark),
            epoch: self.epoch_for(channel),
        }
    }

    /// Creates the stream on the first publication.
    async fn ensure(&self, channel: &str, ns: &Namespace) -> Result<(), StreamError> {
        let topic = topic_of(channel);
        if self.log.partition_stats(&topic, 0).is_ok() {
            return Ok(());
        }
        let mut config = TopicConfig::new();
        config.insert(
            "retention.ms".to_owned(),
            (ns.history_ttl_secs.saturating_mul(1000)).to_string(),
        );
        let log = self.log.clone();
        match blocking(move || log.create_topic(&topic, 1, config)).await {
            Ok(_) | Err(StreamError::Internal(_)) => {}
            Err(e) => return Err(e),
        }
        // Created now or by a concurrent caller: either way it exists unless creation failed.
        if self.log.partition_stats(&topic_of(channel), 0).is_err() {
            return Err(StreamError::Internal(format!(
                "cannot create the stream of {channel}"
            )));
        }
        Ok(())
    }

    /// Appends a publication and fans it out once it is durable. `data` must be JSON.
    pub async fn publish(
        &self,
        channel: &str,
        ns: &Namespace,
        data: &RawValue,
        info: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
        idempotency_key: Option<&str>,
    ) -> Result<Published, StreamError> {
        self.ensure(channel, ns).await?;
        let mut headers = Vec::new();
        if let Some(i) = info {
            headers.push((INFO_HEADER.to_owned(), Some(Bytes::from(i.to_owned()))));
        }
        if let Some(t) = tags.filter(|t| !t.is_empty()) {
            let s = serde_json::to_string(t).map_err(|e| StreamError::Internal(e.to_string()))?;
            headers.push((TAGS_HEADER.to_owned(), Some(Bytes::from(s))));
        }
        let record = Record {
            offset: 0,
            timestamp_ms: now_ms(),
            key: None,
            value: Some(Bytes::from(data.get().to_owned())),
            headers,
        };
        let batch = herald_log::batch::build(std::slice::from_ref(&record))?;
        let keys = match idempotency_key {
            Some(k) if !k.is_empty() => {
                let mut key = Vec::with_capacity(3 + channel.len() + k.len() + 1);
                key.extend_from_slice(b"ch:");
                key.extend_from_slice(channel.as_bytes());
                key.push(0);
                key.extend_from_slice(k.as_bytes());
                if key.len() > herald_log::frame::MAX_IDEM_KEY_LEN {
                    return Err(StreamError::Internal(
                        "idempotency_key is too long".to_owned(),
                    ));
                }
                vec![IdemKey {
                    key,
                    record_index: 0,
                }]
            }
            _ => Vec::new(),
        };
        let topic = topic_of(channel);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fanout = Arc::clone(&self.fanout);
        let channel_arc: Arc<str> = Arc::from(channel);
        let encoded = PublicationParts {
            data: data.get().to_owned(),
            info: info.map(str::to_owned),
            tags: tags.cloned().filter(|t| !t.is_empty()),
        };
        self.log.append(
            &topic,
            0,
            batch,
            keys,
            Box::new(move |r| {
                // Runs on the log's acknowledgement thread, in offset order: fan out first so
                // that order is kept, then answer the publisher.
                if let Ok(AppendOutcome::Appended { base_offset, .. }) = &r {
                    let offset = base_offset + 1;
                    fanout(Fanout {
                        channel: channel_arc,
                        offset,
                        publication: encoded.encode(offset),
                    });
                }
                let _ = tx.send(r);
            }),
        );
        let outcome = rx
            .await
            .map_err(|_| StreamError::Unavailable("the log closed".into()))??;
        let (offset, duplicate) = match outcome {
            AppendOutcome::Appended { base_offset, .. } => (base_offset + 1, false),
            AppendOutcome::Duplicate { hits } => {
                let hit = hits.into_iter().flatten().next().ok_or_else(|| {
                    StreamError::Internal("duplicate without a previous position".into())
                })?;
                (hit.offset + 1, true)
            }
            AppendOutcome::DuplicateBatch { base_offset, .. } => (base_offset + 1, true),
        };
        let published = Published {
            offset,
            epoch: self.epoch_for(channel),
            duplicate,
        };
        self.maybe_trim(channel, ns);
        Ok(published)
    }

    /// Keeps at most `history_size` publications: once twice that many are stored, the older
    /// ones are deleted in the background (reads never return more than `history_size`).
    fn maybe_trim(&self, channel: &str, ns: &Namespace) {
        let topic = topic_of(channel);
        let Ok(stats) = self.log.partition_stats(&topic, 0) else {
            return;
        };
        let size = ns.history_size as u64;
        if stats.high_watermark - stats.log_start <= size.saturating_mul(2).max(16) {
            return;
        }
        if !self.trimming.lock().insert(topic.clone()) {
            return;
        }
        let log = self.log.clone();
        let before = stats.high_watermark.saturating_sub(size);
        let guard = TrimGuard {
            set: Arc::clone(&self.trimming),
            topic: topic.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            if let Err(e) = log.delete_records_before(&topic, 0, before) {
                tracing::debug!(%topic, error = %e, "history trim failed");
            }
        });
    }

    /// The retained window of a stream: log offsets `[first, top)`, and the epoch.
    fn window(&self, channel: &str, ns: &Namespace) -> (u64, u64, String) {
        let pos = self.position(channel);
        let log_start = self
            .log
            .partition_stats(&topic_of(channel), 0)
            .map(|s| s.log_start)
            .unwrap_or(0);
        let first = log_start.max(pos.offset.saturating_sub(ns.history_size as u64));
        (first, pos.offset, pos.epoch)
    }

    /// Publications with log offsets in `[from, to)`, skipping those older than the TTL.
    async fn read_range(
        &self,
        channel: &str,
        ns: &Namespace,
        from: u64,
        to: u64,
    ) -> Result<Vec<Publication>, StreamError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let topic = topic_of(channel);
        let oldest = now_ms() - (ns.history_ttl_secs.saturating_mul(1000)) as i64;
        let mut at = from;
        while at < to {
            let log = self.log.clone();
            let t = topic.clone();
            let read = match blocking(move || log.read(&t, 0, at, 1024 * 1024)).await {
                Ok(r) => r,
                Err(StreamError::Internal(m)) if m.contains("out of range") => break,
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                break;
            }
            let mut progressed = false;
            for b in &read.batches {
                for r in herald_log::batch::decode(b)? {
                    if r.offset < at || r.offset >= to {
                        continue;
                    }
                    at = r.offset + 1;
                    progressed = true;
                    if r.timestamp_ms < oldest {
                        continue;
                    }
                    out.push(publication_of(&r));
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(out)
    }

    /// Centrifugo history: `since` (offset, epoch) selects publications after it (before it
    /// with `reverse`); `limit` 0 returns only the position, negative means all retained.
    pub async fn history(
        &self,
        channel: &str,
        ns: &Namespace,
        limit: i32,
        since: Option<(u64, &str)>,
        reverse: bool,
        max_limit: usize,
    ) -> Result<(Vec<Publication>, Position), ErrorCode> {
        let (first, top, epoch) = self.window(channel, ns);
        let pos = Position { offset: top, epoch };
        if limit == 0 {
            return Ok((Vec::new(), pos));
        }
        let limit = if limit < 0 {
            max_limit
        } else {
            (limit as usize).min(max_limit)
        } as u64;
        let (from, to) = match (since, reverse) {
            (Some((_, ep)), _) if ep != pos.epoch && !ep.is_empty() => {
                return Err(ErrorCode::UnrecoverablePosition);
            }
            (Some((off, _)), false) => {
                let from = off.max(first).min(top);
                (from, from.saturating_add(limit).min(top))
            }
            (Some((off, _)), true) => {
                let to = off.saturating_sub(1).min(top);
                (to.saturating_sub(limit).max(first), to)
            }
            (None, false) => (first, (first + limit).min(top)),
            (None, true) => (top.saturating_sub(limit).max(first), top),
        };
        let mut pubs = self
            .read_range(channel, ns, from, to)
            .await
            .map_err(|_| ErrorCode::Internal)?;
        if reverse {
            pubs.reverse();
        }
        Ok((pubs, pos))
    }

    /// Recovery for a (re)subscribing client at `offset`/`epoch`: the missed publications and
    /// whether they are all of them.
    pub async fn recover(
        &self,
        channel: &str,
        ns: &Namespace,
        offset: u64,
        epoch: &str,
        max: usize,
    ) -> Result<(Vec<Publication>, Position, bool), StreamError> {
        let (first, top, cur_epoch) = self.window(channel, ns);
        let pos = Position {
            offset: top,
            epoch: cur_epoch,
        };
        // The client has seen everything up to `offset` (log offset offset-1); it needs log
        // offsets [offset, top).
        let recoverable = epoch == pos.epoch
            && offset <= top
            && offset >= first
            && (top - offset) as usize <= max;
        if !recoverable {
            return Ok((Vec::new(), pos, false));
        }
        let pubs = self.read_range(channel, ns, offset, top).await?;
        // Publications dropped by the TTL inside the range make the recovery incomplete.
        let complete = pubs.len() as u64 == top - offset;
        Ok((pubs, pos, complete))
    }

    /// Deletes the channel's history (Centrifugo's `history_remove`): the publications go, the
    /// position stays — the next publication continues the same epoch at the next offset, so
    /// subscribers' positions remain valid.
    pub async fn remove(&self, channel: &str) -> Result<(), StreamError> {
        let topic = topic_of(channel);
        let Ok(stats) = self.log.partition_stats(&topic, 0) else {
            return Ok(());
        };
        if stats.log_start >= stats.high_watermark {
            return Ok(());
        }
        let log = self.log.clone();
        blocking(move || log.delete_records_before(&topic, 0, stats.high_watermark))
            .await
            .map(|_| ())
    }
}

struct TrimGuard {
    set: Arc<Mutex<HashSet<String>>>,
    topic: String,
}

impl Drop for TrimGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.topic);
    }
}

struct PublicationParts {
    data: String,
    info: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

impl PublicationParts {
    fn encode(&self, offset: u64) -> String {
        let p = Publication {
            data: crate::proto::raw(&self.data),
            offset,
            info: self.info.as_deref().map(crate::proto::raw),
            tags: self.tags.clone(),
        };
        serde_json::to_string(&p).unwrap_or_else(|_| "{}".to_owned())
    }
}

fn publication_of(r: &Record) -> Publication {
    let data: Json = r
        .value
        .as_ref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(crate::proto::raw)
        .unwrap_or_else(crate::proto::null);
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    Publication {
        data,
        offset: r.offset + 1,
        info: header(INFO_HEADER).map(crate::proto::raw),
        tags: header(TAGS_HEADER).and_then(|t| serde_json::from_str(t).ok()),
    }
}
