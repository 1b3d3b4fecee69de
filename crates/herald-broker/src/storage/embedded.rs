//! [`Storage`] over Herald's embedded log (`herald-log`). The log is a synchronous library:
//! catalog and partition figures are answered from its memory on the calling task, appends are
//! queued with their callback, and every call that waits for the writer thread or the disk runs
//! on the blocking pool.

use std::future::ready;

use herald_log::{Log, LogError};

use super::{
    AppendDone, AppendOutcome, IdemHit, IdemKey, PartitionStats, ReadBatches, Storage,
    StorageFigures, StorageFuture, TopicConfig, TopicInfo,
};
use crate::{BrokerError, Existing, Missing};

/// The embedded log as the broker's storage.
#[derive(Clone)]
pub struct EmbeddedStorage {
    log: Log,
}

impl EmbeddedStorage {
    pub fn new(log: Log) -> EmbeddedStorage {
        EmbeddedStorage { log }
    }

    /// The log underneath, for the binary's maintenance and shutdown.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Runs a call that waits for the log's writer thread or the disk off the async workers.
    fn blocking<'a, T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> Result<T, LogError> + Send + 'static,
    ) -> StorageFuture<'a, T> {
        let log = self.log.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&log))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))?
                .map_err(BrokerError::from)
        })
    }
}

impl Storage for EmbeddedStorage {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn topic<'a>(&'a self, name: &'a str) -> StorageFuture<'a, Option<TopicInfo>> {
        Box::pin(ready(Ok(self.log.topic(name).map(TopicInfo::from))))
    }

    fn list_topics<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<TopicInfo>> {
        Box::pin(ready(Ok(self
            .log
            .list_topics(prefix)
            .into_iter()
            .map(TopicInfo::from)
            .collect())))
    }

    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        partitions: u32,
        config: TopicConfig,
    ) -> StorageFuture<'a, TopicInfo> {
        let name = name.to_owned();
        let f = self.blocking(move |log| log.create_topic(&name, partitions, config));
        Box::pin(async move { f.await.map(TopicInfo::from) })
    }

    fn delete_topic<'a>(&'a self, name: &'a str) -> StorageFuture<'a, ()> {
        let name = name.to_owned();
        self.blocking(move |log| log.delete_topic(&name))
    }

    fn set_topic_config<'a>(
        &'a self,
        name: &'a str,
        config: TopicConfig,
    ) -> StorageFuture<'a, TopicInfo> {
        let name = name.to_owned();
        let f = self.blocking(move |log| log.set_topic_config(&name, config));
        Box::pin(async move { f.await.map(TopicInfo::from) })
    }

    fn create_partitions<'a>(&'a self, name: &'a str, total: u32) -> StorageFuture<'a, TopicInfo> {
        let name = name.to_owned();
        let f = self.blocking(move |log| log.create_partitions(&name, total));
        Box::pin(async move { f.await.map(TopicInfo::from) })
    }

    fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: Vec<u8>,
        keys: Vec<IdemKey>,
        done: AppendDone,
    ) {
        let keys = keys
            .into_iter()
            .map(|k| herald_log::IdemKey {
                key: k.key,
                record_index: k.record_index,
            })
            .collect();
        self.log.append(
            topic,
            partition,
            batch,
            keys,
            Box::new(move |r| done(r.map(AppendOutcome::from).map_err(BrokerError::from))),
        );
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> StorageFuture<'a, ReadBatches> {
        let topic = topic.to_owned();
        let f = self.blocking(move |log| log.read(&topic, partition, offset, max_bytes));
        Box::pin(async move {
            f.await.map(|r| ReadBatches {
                batches: r.batches,
                high_watermark: r.high_watermark,
                log_start: r.log_start,
            })
        })
    }

    fn offset_for_timestamp<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        ts_ms: i64,
    ) -> StorageFuture<'a, Option<(u64, i64)>> {
        let topic = topic.to_owned();
        self.blocking(move |log| log.offset_for_timestamp(&topic, partition, ts_ms))
    }

    fn delete_records_before<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
    ) -> StorageFuture<'a, u64> {
        let topic = topic.to_owned();
        self.blocking(move |log| log.delete_records_before(&topic, partition, offset))
    }

    fn partition_stats<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> StorageFuture<'a, PartitionStats> {
        Box::pin(ready(
            self.log
                .partition_stats(topic, partition)
                .map(|s| PartitionStats {
                    log_start: s.log_start,
                    high_watermark: s.high_watermark,
                    size_bytes: s.size_bytes,
                    max_timestamp: s.max_timestamp,
                })
                .map_err(BrokerError::from),
        ))
    }

    fn idempotency_lookup<'a>(&'a self, key: &'a [u8]) -> StorageFuture<'a, Option<IdemHit>> {
        Box::pin(ready(Ok(self
            .log
            .idempotency_lookup(key)
            .map(IdemHit::from))))
    }

    fn probe(&self) -> StorageFuture<'_, ()> {
        Box::pin(ready(self.log.probe().map_err(BrokerError::from)))
    }

    fn figures(&self) -> StorageFuture<'_, StorageFigures> {
        Box::pin(ready(Ok(StorageFigures {
            topics: self.log.topic_count(),
            segments: Some(self.log.segment_count()),
        })))
    }
}

impl From<herald_log::TopicInfo> for TopicInfo {
    fn from(t: herald_log::TopicInfo) -> Self {
        TopicInfo {
            name: t.name,
            partitions: t.partitions,
            config: t.config,
            created_ms: t.created_ms,
        }
    }
}

impl From<herald_log::IdemHit> for IdemHit {
    fn from(h: herald_log::IdemHit) -> Self {
        IdemHit {
            topic: h.topic,
            partition: h.partition,
            offset: h.offset,
            timestamp_ms: h.timestamp_ms,
        }
    }
}

impl From<herald_log::AppendOutcome> for AppendOutcome {
    fn from(o: herald_log::AppendOutcome) -> Self {
        match o {
            herald_log::AppendOutcome::Appended {
                base_offset,
                last_offset,
                max_timestamp,
            } => AppendOutcome::Appended {
                base_offset,
                last_offset,
                max_timestamp,
            },
            herald_log::AppendOutcome::Duplicate { hits } => AppendOutcome::Duplicate {
                hits: hits.into_iter().map(|h| h.map(IdemHit::from)).collect(),
            },
            herald_log::AppendOutcome::DuplicateBatch {
                base_offset,
                last_offset,
            } => AppendOutcome::DuplicateBatch {
                base_offset,
                last_offset,
            },
        }
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::UnknownTopic(topic) => BrokerError::NotFound(Missing::Topic(topic)),
            LogError::UnknownPartition { topic, partition } => {
                BrokerError::NotFound(Missing::Partition { topic, partition })
            }
            LogError::TopicExists(topic) => BrokerError::Conflict(Existing::Topic(topic)),
            LogError::InvalidConfig(_) | LogError::InvalidBatch(_) => {
                BrokerError::Invalid(e.to_string())
            }
            LogError::OffsetOutOfRange {
                log_start,
                high_watermark,
                ..
            } => BrokerError::OffsetOutOfRange {
                message: e.to_string(),
                log_start,
                high_watermark,
            },
            LogError::BatchTooLarge { .. } => BrokerError::TooLarge(e.to_string()),
            LogError::OutOfOrderSequence { .. } => BrokerError::OutOfOrderSequence(e.to_string()),
            LogError::InvalidProducerEpoch { .. } => {
                BrokerError::InvalidProducerEpoch(e.to_string())
            }
            LogError::UnknownProducerId(_) => BrokerError::UnknownProducerId(e.to_string()),
            LogError::DiskFull { .. } => BrokerError::StorageFull(e.to_string()),
            LogError::Overloaded { .. } | LogError::Closed => {
                BrokerError::Unavailable(e.to_string())
            }
            LogError::Corrupt { .. }
            | LogError::Poisoned(_)
            | LogError::UnsupportedFormat { .. }
            | LogError::Io { .. }
            | LogError::Index(_) => BrokerError::Internal(e.to_string()),
        }
    }
}
