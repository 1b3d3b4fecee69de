//! The storage seam: everything the broker needs from where records live.
//!
//! Every interface reaches storage through the broker, and the broker reaches it only through
//! [`Storage`]. [`EmbeddedStorage`] is the first backend, over Herald's embedded log; a backend
//! over an existing Kafka-compatible cluster implements the same trait. The vocabulary types
//! here belong to the broker: a backend converts its own into them.
//!
//! Records travel as Kafka RecordBatch v2 bytes in both directions, so a Kafka `Fetch` returns
//! stored batches as they are and a Kafka `Produce` stores the client's batch; [`crate::records`]
//! builds and decodes them.
//!
//! Methods return boxed futures ([`StorageFuture`]) rather than `async fn` so that the trait is
//! object-safe (`Arc<dyn Storage>`) without a procedural-macro dependency; the one allocation
//! per call is small next to an append or a read. Appends keep a completion callback
//! ([`Storage::append`]) because channel fan-out relies on it running in offset order.

mod embedded;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::BrokerError;

pub use embedded::EmbeddedStorage;

/// The future a [`Storage`] method returns.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// Per-topic settings, Kafka-style keys (`retention.ms`, `max.message.bytes`, …).
pub type TopicConfig = BTreeMap<String, String>;

/// Longest idempotency key a backend must accept, in bytes.
pub const MAX_IDEM_KEY_LEN: usize = 512;

/// A topic as storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// Creation time in milliseconds since the epoch; 0 when the backend does not know it.
    pub created_ms: i64,
}

/// One partition's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// The first readable offset.
    pub log_start: u64,
    /// The offset the next append will get (one past the last readable record).
    pub high_watermark: u64,
    /// Bytes held by readable batches.
    pub size_bytes: u64,
    /// The largest record timestamp stored, -1 when none.
    pub max_timestamp: i64,
}

/// An idempotency key naming one record of an appended batch (its index in the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemKey {
    pub key: Vec<u8>,
    pub record_index: u32,
}

/// Where an earlier append with the same idempotency key landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemHit {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was stored at `base_offset..=last_offset`.
    Appended {
        base_offset: u64,
        last_offset: u64,
        /// The batch's largest record timestamp.
        max_timestamp: i64,
    },
    /// At least one idempotency key was seen before; nothing was written. One entry per key,
    /// in the order given, `None` where that key is new.
    Duplicate { hits: Vec<Option<IdemHit>> },
    /// An idempotent producer resent a batch already stored at `base_offset`; nothing was
    /// written.
    DuplicateBatch { base_offset: u64, last_offset: u64 },
}

/// Batches read from one partition, as stored (Kafka RecordBatch v2 bytes).
#[derive(Debug, Clone, Default)]
pub struct ReadBatches {
    pub batches: Vec<Bytes>,
    pub high_watermark: u64,
    pub log_start: u64,
}

/// Figures an operator sees in `/metrics`. Fields a backend cannot count are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageFigures {
    pub topics: usize,
    /// Journal segment files (the embedded log); `None` for backends without any.
    pub segments: Option<usize>,
}

/// Called exactly once with the outcome of an append.
pub type AppendDone = Box<dyn FnOnce(Result<AppendOutcome, BrokerError>) + Send>;

/// Where topics and records live. Implementations must be cheap to share (`Arc<dyn Storage>`)
/// and safe to call from any task; none of the methods may block an async worker thread.
///
/// Errors are [`BrokerError`]s in the broker's terms: `NotFound(Missing::Topic | Partition)`
/// for an unknown topic or partition, `Conflict(Existing::Topic)` for a topic that exists,
/// `OffsetOutOfRange` for reads outside the partition, `Unavailable` for a transient refusal
/// (overload, shutdown, a cluster out of reach), `StorageFull` when nothing can be written,
/// `Unsupported` for what the backend cannot do at all, `Internal` for its faults.
pub trait Storage: Send + Sync + 'static {
    /// A short name for startup banners and logs, e.g. `"embedded"`.
    fn name(&self) -> &'static str;

    /// The topic, or `None` if it does not exist. A backend may answer from a cache and go to
    /// its metadata source on a miss.
    fn topic<'a>(&'a self, name: &'a str) -> StorageFuture<'a, Option<TopicInfo>>;

    /// Topics whose names start with `prefix` ("" for all), in name order.
    fn list_topics<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<TopicInfo>>;

    /// Creates a topic with `partitions` partitions and `config`; resolves once the creation is
    /// durable. `Conflict(Existing::Topic)` if it exists, `Invalid` for a partition count
    /// outside 1..=10000 or a configuration the backend refuses.
    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        partitions: u32,
        config: TopicConfig,
    ) -> StorageFuture<'a, TopicInfo>;

    /// Deletes a topic and its records; its space is reclaimed in the background.
    fn delete_topic<'a>(&'a self, name: &'a str) -> StorageFuture<'a, ()>;

    /// Replaces a topic's whole configuration.
    fn set_topic_config<'a>(
        &'a self,
        name: &'a str,
        config: TopicConfig,
    ) -> StorageFuture<'a, TopicInfo>;

    /// Grows a topic to `total` partitions; the count never shrinks (`Invalid` if `total` is
    /// below the current count).
    fn create_partitions<'a>(&'a self, name: &'a str, total: u32) -> StorageFuture<'a, TopicInfo>;

    /// Appends one RecordBatch v2 to a partition; the storage assigns the offsets. `keys` name
    /// records of the batch for idempotent publishing: if any key was seen within the
    /// idempotency window nothing is written and the outcome is `Duplicate`. An idempotent
    /// producer's retried batch (producer id, epoch and sequence in the batch header) is
    /// `DuplicateBatch`.
    ///
    /// `done` is called exactly once, after the batch is durable (or refused), possibly on a
    /// thread of the storage's own and possibly before `append` returns. For the appends of one
    /// partition it is called in offset order, and must not block: subscribers of channel
    /// streams are fanned out from it, in that order.
    ///
    /// This method itself must not block or wait: it queues the append.
    fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: Vec<u8>,
        keys: Vec<IdemKey>,
        done: AppendDone,
    );

    /// Reads stored batches of a partition from the one holding `offset`, up to about
    /// `max_bytes` (at least one batch if any is there). Batches are returned as stored, so the
    /// first may start before `offset`. `OffsetOutOfRange` if `offset` is below the log start
    /// or past the high watermark.
    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> StorageFuture<'a, ReadBatches>;

    /// The first offset whose timestamp is at or after `ts_ms`, with that timestamp, or `None`.
    fn offset_for_timestamp<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        ts_ms: i64,
    ) -> StorageFuture<'a, Option<(u64, i64)>>;

    /// Makes every record before `offset` unreadable (Kafka DeleteRecords); returns the new log
    /// start. `OffsetOutOfRange` if `offset` is past the high watermark.
    fn delete_records_before<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
    ) -> StorageFuture<'a, u64>;

    /// A partition's log start, high watermark, size and largest timestamp.
    fn partition_stats<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> StorageFuture<'a, PartitionStats>;

    /// Where an idempotency key was first appended, without writing anything.
    fn idempotency_lookup<'a>(&'a self, key: &'a [u8]) -> StorageFuture<'a, Option<IdemHit>>;

    /// Whether storage accepts writes now (`/ready`); the error says why not.
    fn probe(&self) -> StorageFuture<'_, ()>;

    /// Counts for `/metrics`.
    fn figures(&self) -> StorageFuture<'_, StorageFigures>;
}

impl dyn Storage {
    /// [`Storage::append`] awaited: resolves with the outcome once `done` would have run.
    pub async fn append_async(
        &self,
        topic: &str,
        partition: u32,
        batch: Vec<u8>,
        keys: Vec<IdemKey>,
    ) -> Result<AppendOutcome, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.append(
            topic,
            partition,
            batch,
            keys,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await
            .map_err(|_| BrokerError::Unavailable("storage shut down".into()))?
    }

    /// Creates one of Herald's single-partition internal topics (kept forever) if it is
    /// missing; a concurrent creation counts as success.
    pub async fn ensure_internal_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.ensure_topic_with(
            name,
            TopicConfig::from([("retention.ms".to_owned(), "-1".to_owned())]),
        )
        .await
    }

    /// Creates a single-partition topic with `config` if it is missing; a concurrent creation
    /// counts as success.
    pub async fn ensure_topic_with(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<(), BrokerError> {
        if self.topic(name).await?.is_some() {
            return Ok(());
        }
        match self.create_topic(name, 1, config).await {
            Ok(_) | Err(BrokerError::Conflict(crate::Existing::Topic(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
