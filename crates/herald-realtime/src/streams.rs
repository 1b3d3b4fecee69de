//! Channel history behind [`ChannelStore`]: publish with an idempotency key and ordered
//! fan-out, the position, history and recovery ranges, removal and trimming.
//!
//! [`Streams`] keeps channels with history as durable streams in the broker's storage: one
//! single-partition topic per channel (`_herald.ch.<channel>`, hidden from Kafka clients), whose
//! offsets are the channel's offsets (storage offset + 1, so the first publication is 1, as in
//! Centrifugo). The epoch is derived from the channel's name and a seed kept with the data
//! directory, so it is stable across restarts and known before the first publication.
//! Publications are fanned out from storage's acknowledgement callback, which runs in offset
//! order per partition, so subscribers see a channel's publications in offset order.
//!
//! [`NoHistory`] keeps nothing: every channel behaves as a namespace without history
//! (publications go to current subscribers only, history answers "not available").

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_broker::BrokerError;
use herald_broker::records::{self, Record};
use herald_broker::storage::{AppendOutcome, IdemKey, MAX_IDEM_KEY_LEN, Storage, TopicConfig};
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
    /// The store keeps no history ([`NoHistory`]).
    #[error("history is not available")]
    NoHistory,
}

impl From<BrokerError> for StreamError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(_) => StreamError::Unavailable(e.to_string()),
            other => StreamError::Internal(other.to_string()),
        }
    }
}

/// The future a [`ChannelStore`] method returns (boxed, so the gateway can hold any store as
/// `Box<dyn ChannelStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What recovery found: the missed publications, the current position, and whether they are
/// all that was missed.
pub type Recovery = (Vec<Publication>, Position, bool);

/// One publication to store.
pub struct NewPublication<'a> {
    /// JSON.
    pub data: &'a RawValue,
    pub info: Option<&'a str>,
    pub tags: Option<&'a BTreeMap<String, String>>,
    /// Centrifugo's `idempotency_key`: a repeat within the idempotency window is answered with
    /// the first publication's position and stored and delivered nothing.
    pub idempotency_key: Option<&'a str>,
}

/// Where channels with history keep their publications.
///
/// Channel offsets start at 1 and are contiguous; the epoch changes only when a channel's
/// history is lost, never when it is removed (`remove` keeps offset and epoch). Stores are given
/// the fan-out function when they are built and call it for every stored publication, in offset
/// order per channel, before the publisher's `publish` resolves.
pub trait ChannelStore: Send + Sync + 'static {
    /// Whether this store keeps history at all. When `false`, every namespace is treated as one
    /// without history: the gateway publishes straight to subscribers, `history` answers
    /// [`ErrorCode::NotAvailable`] and recovery never succeeds.
    fn keeps_history(&self) -> bool;

    /// The channel's position: the offset of its newest publication (0 when there is none) and
    /// its epoch.
    fn position<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Position>;

    /// Stores a publication and fans it out once it is durable. Resolves with its offset, or
    /// with the first one's if the idempotency key was seen before (`duplicate`, nothing fanned
    /// out).
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        ns: &'a Namespace,
        publication: NewPublication<'a>,
    ) -> StoreFuture<'a, Result<Published, StreamError>>;

    /// Centrifugo history: `since` (offset, epoch) selects publications after it (before it
    /// with `reverse`); `limit` 0 returns only the position, negative means all retained, never
    /// more than `max_limit`. A `since` of another epoch is `UnrecoverablePosition`.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        ns: &'a Namespace,
        limit: i32,
        since: Option<(u64, &'a str)>,
        reverse: bool,
        max_limit: usize,
    ) -> StoreFuture<'a, Result<(Vec<Publication>, Position), ErrorCode>>;

    /// Recovery for a (re)subscribing client that has seen everything up to `offset` in
    /// `epoch`: the publications after it (at most `max`), the current position, and whether
    /// they are all that was missed.
    fn recover<'a>(
        &'a self,
        channel: &'a str,
        ns: &'a Namespace,
        offset: u64,
        epoch: &'a str,
        max: usize,
    ) -> StoreFuture<'a, Result<Recovery, StreamError>>;

    /// Deletes the channel's publications (Centrifugo's `history_remove`), keeping its offset and
    /// epoch so subscribers' positions remain valid.
    fn remove<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Result<(), StreamError>>;

    /// Drops publications beyond the namespace's `history_size` (in the background; returns at
    /// once).
    fn trim<'a>(&'a self, channel: &'a str, ns: &'a Namespace) -> StoreFuture<'a, ()>;
}

pub struct Published {
    pub offset: u64,
    pub epoch: String,
    /// An earlier publication with the same idempotency key; nothing new was delivered.
    pub duplicate: bool,
}

/// [`ChannelStore`] over the broker's storage.
pub struct Streams {
    storage: Arc<dyn Storage>,
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

impl Streams {
    /// `epoch_seed` is a value stored with the data directory: a channel's epoch is derived from
    /// it and the channel's name, so a channel has its epoch before its first publication (a
    /// subscribe writes nothing) and a new data directory means new epochs.
    pub fn new(storage: Arc<dyn Storage>, fanout: FanoutFn, epoch_seed: String) -> Streams {
        Streams {
            storage,
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
    async fn position_of(&self, channel: &str) -> Position {
        Position {
            offset: self
                .storage
                .partition_stats(&topic_of(channel), 0)
                .await
                .map_or(0, |s| s.high_watermark),
            epoch: self.epoch_for(channel),
        }
    }

    /// Creates the stream on the first publication.
    async fn ensure(&self, channel: &str, ns: &Namespace) -> Result<(), StreamError> {
        let topic = topic_of(channel);
        if self.storage.partition_stats(&topic, 0).await.is_ok() {
            return Ok(());
        }
        let mut config = TopicConfig::new();
        config.insert(
            "retention.ms".to_owned(),
            (ns.history_ttl_secs.saturating_mul(1000)).to_string(),
        );
        // A concurrent creation counts as success.
        self.storage.ensure_topic_with(&topic, config).await?;
        if self.storage.partition_stats(&topic, 0).await.is_err() {
            return Err(StreamError::Internal(format!(
                "cannot create the stream of {channel}"
            )));
        }
        Ok(())
    }

    /// Appends a publication and fans it out once it is durable. `data` must be JSON.
    async fn publish_one(
        &self,
        channel: &str,
        ns: &Namespace,
        p: NewPublication<'_>,
    ) -> Result<Published, StreamError> {
        let NewPublication {
            data,
            info,
            tags,
            idempotency_key,
        } = p;
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
        let batch = records::build(std::slice::from_ref(&record))?;
        let keys = match idempotency_key {
            Some(k) if !k.is_empty() => {
                let mut key = Vec::with_capacity(3 + channel.len() + k.len() + 1);
                key.extend_from_slice(b"ch:");
                key.extend_from_slice(channel.as_bytes());
                key.push(0);
                key.extend_from_slice(k.as_bytes());
                if key.len() > MAX_IDEM_KEY_LEN {
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
        self.storage.append(
            &topic,
            0,
            batch,
            keys,
            Box::new(move |r| {
                // Runs where storage acknowledges, in offset order: fan out first so that order
                // is kept, then answer the publisher.
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
            .map_err(|_| StreamError::Unavailable("storage shut down".into()))??;
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
        self.maybe_trim(channel, ns).await;
        Ok(published)
    }

    /// Keeps at most `history_size` publications: once twice that many are stored, the older
    /// ones are deleted in the background (reads never return more than `history_size`).
    async fn maybe_trim(&self, channel: &str, ns: &Namespace) {
        let topic = topic_of(channel);
        let Ok(stats) = self.storage.partition_stats(&topic, 0).await else {
            return;
        };
        let size = ns.history_size as u64;
        if stats.high_watermark - stats.log_start <= size.saturating_mul(2).max(16) {
            return;
        }
        if !self.trimming.lock().insert(topic.clone()) {
            return;
        }
        let storage = Arc::clone(&self.storage);
        let before = stats.high_watermark.saturating_sub(size);
        let guard = TrimGuard {
            set: Arc::clone(&self.trimming),
            topic: topic.clone(),
        };
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = storage.delete_records_before(&topic, 0, before).await {
                tracing::debug!(%topic, error = %e, "history trim failed");
            }
        });
    }

    /// The retained window of a stream: log offsets `[first, top)`, and the epoch.
    async fn window(&self, channel: &str, ns: &Namespace) -> (u64, u64, String) {
        let pos = self.position_of(channel).await;
        let log_start = self
            .storage
            .partition_stats(&topic_of(channel), 0)
            .await
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
            let read = match self.storage.read(&topic, 0, at, 1024 * 1024).await {
                Ok(r) => r,
                // Trimmed or removed while reading: what remains is returned.
                Err(BrokerError::OffsetOutOfRange { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            if read.batches.is_empty() {
                break;
            }
            let mut progressed = false;
            for b in &read.batches {
                for r in records::decode(b)? {
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
    async fn history_of(
        &self,
        channel: &str,
        ns: &Namespace,
        limit: i32,
        since: Option<(u64, &str)>,
        reverse: bool,
        max_limit: usize,
    ) -> Result<(Vec<Publication>, Position), ErrorCode> {
        let (first, top, epoch) = self.window(channel, ns).await;
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
    async fn recover_of(
        &self,
        channel: &str,
        ns: &Namespace,
        offset: u64,
        epoch: &str,
        max: usize,
    ) -> Result<(Vec<Publication>, Position, bool), StreamError> {
        let (first, top, cur_epoch) = self.window(channel, ns).await;
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
    async fn remove_of(&self, channel: &str) -> Result<(), StreamError> {
        let topic = topic_of(channel);
        let Ok(stats) = self.storage.partition_stats(&topic, 0).await else {
            return Ok(());
        };
        if stats.log_start >= stats.high_watermark {
            return Ok(());
        }
        self.storage
            .delete_records_before(&topic, 0, stats.high_watermark)
            .await
            .map(|_| ())
            .map_err(StreamError::from)
    }
}

impl ChannelStore for Streams {
    fn keeps_history(&self) -> bool {
        true
    }

    fn position<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Position> {
        Box::pin(self.position_of(channel))
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        ns: &'a Namespace,
        publication: NewPublication<'a>,
    ) -> StoreFuture<'a, Result<Published, StreamError>> {
        Box::pin(self.publish_one(channel, ns, publication))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        ns: &'a Namespace,
        limit: i32,
        since: Option<(u64, &'a str)>,
        reverse: bool,
        max_limit: usize,
    ) -> StoreFuture<'a, Result<(Vec<Publication>, Position), ErrorCode>> {
        Box::pin(self.history_of(channel, ns, limit, since, reverse, max_limit))
    }

    fn recover<'a>(
        &'a self,
        channel: &'a str,
        ns: &'a Namespace,
        offset: u64,
        epoch: &'a str,
        max: usize,
    ) -> StoreFuture<'a, Result<Recovery, StreamError>> {
        Box::pin(self.recover_of(channel, ns, offset, epoch, max))
    }

    fn remove<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Result<(), StreamError>> {
        Box::pin(self.remove_of(channel))
    }

    fn trim<'a>(&'a self, channel: &'a str, ns: &'a Namespace) -> StoreFuture<'a, ()> {
        Box::pin(self.maybe_trim(channel, ns))
    }
}

/// A [`ChannelStore`] that keeps nothing, for nodes without a history backend: channels behave
/// as in a Centrifugo namespace without history.
pub struct NoHistory;

impl ChannelStore for NoHistory {
    fn keeps_history(&self) -> bool {
        false
    }

    fn position<'a>(&'a self, _channel: &'a str) -> StoreFuture<'a, Position> {
        Box::pin(std::future::ready(Position {
            offset: 0,
            epoch: String::new(),
        }))
    }

    fn publish<'a>(
        &'a self,
        _channel: &'a str,
        _ns: &'a Namespace,
        _publication: NewPublication<'a>,
    ) -> StoreFuture<'a, Result<Published, StreamError>> {
        Box::pin(std::future::ready(Err(StreamError::NoHistory)))
    }

    fn history<'a>(
        &'a self,
        _channel: &'a str,
        _ns: &'a Namespace,
        _limit: i32,
        _since: Option<(u64, &'a str)>,
        _reverse: bool,
        _max_limit: usize,
    ) -> StoreFuture<'a, Result<(Vec<Publication>, Position), ErrorCode>> {
        Box::pin(std::future::ready(Err(ErrorCode::NotAvailable)))
    }

    fn recover<'a>(
        &'a self,
        channel: &'a str,
        _ns: &'a Namespace,
        _offset: u64,
        _epoch: &'a str,
        _max: usize,
    ) -> StoreFuture<'a, Result<Recovery, StreamError>> {
        Box::pin(async move { Ok((Vec::new(), self.position(channel).await, false)) })
    }

    fn remove<'a>(&'a self, _channel: &'a str) -> StoreFuture<'a, Result<(), StreamError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn trim<'a>(&'a self, _channel: &'a str, _ns: &'a Namespace) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(()))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A store without history stores and delivers nothing itself, and answers history and
    /// recovery as Centrifugo does for a namespace without history.
    #[tokio::test]
    async fn no_history_keeps_nothing() {
        let store: Box<dyn ChannelStore> = Box::new(NoHistory);
        let ns = Namespace {
            history_size: 10,
            ..Namespace::default()
        };
        assert!(!store.keeps_history());
        let data = RawValue::from_string("{\"a\":1}".to_owned()).unwrap();
        let published = store
            .publish(
                "news",
                &ns,
                NewPublication {
                    data: &data,
                    info: None,
                    tags: None,
                    idempotency_key: Some("k"),
                },
            )
            .await;
        assert!(matches!(published, Err(StreamError::NoHistory)));
        assert_eq!(store.position("news").await.offset, 0);
        assert!(matches!(
            store.history("news", &ns, 10, None, false, 100).await,
            Err(ErrorCode::NotAvailable)
        ));
        let recovered = store.recover("news", &ns, 0, "", 100).await;
        assert!(matches!(recovered, Ok((ref p, _, false)) if p.is_empty()));
    }
}
