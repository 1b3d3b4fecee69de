//! Reads through a small pool of reused consumers, watermarks, offsets by time and record
//! deletion.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::context::ClusterContext;
use crate::error::{Subject, from_kafka};
use crate::produce::Header;
use crate::{ClusterError, Inner, KafkaCluster, consumer_config};

/// A record as stored in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    /// Milliseconds since the Unix epoch (create or log-append time, as the topic keeps it).
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// The bounds of a partition: records live at `log_start..high_watermark`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub log_start: u64,
    pub high_watermark: u64,
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Vec<StoredRecord>,
    pub log_start: u64,
    pub high_watermark: u64,
}

impl KafkaCluster {
    /// Reads up to `max_records` records (and about `max_bytes`: at least one record is
    /// returned whatever its size) from `offset` on. When there is nothing at `offset` yet, waits
    /// up to `wait` for a record to arrive and returns as soon as one does.
    ///
    /// At most `read_concurrency` reads run at once; the others wait for a turn.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<ReadResult, ClusterError> {
        let limits = &self.inner.cfg.limits;
        let req = ReadRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_records: max_records.clamp(1, limits.max_read_records.max(1)),
            max_bytes: max_bytes.clamp(1, limits.max_read_bytes.max(1)),
            wait: wait.min(limits.max_read_wait),
        };
        let permit = self
            .inner
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClusterError::Unavailable("the cluster client is closed".to_owned()))?;
        let pooled = self.inner.readers.lock().pop();
        let consumer = match pooled {
            Some(c) => c,
            None => consumer_config(
                &crate::base_config(&self.inner.cfg),
                &self.inner.cfg.limits,
                Some(crate::READER_GROUP),
            )
            .create_with_context(ClusterContext::default())
            .map_err(|e| ClusterError::Internal(format!("cannot create a consumer: {e}")))?,
        };
        let inner = std::sync::Arc::clone(&self.inner);
        // The permit goes with the task: a caller that stops waiting does not free a slot while
        // the read still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let result = read_blocking(&inner, &consumer, &req);
            // Stop fetching before the consumer goes back to the pool, so that an idle pooled
            // consumer holds no prefetched records.
            if consumer.unassign().is_ok() {
                let mut pool = inner.readers.lock();
                if pool.len() < inner.cfg.limits.read_concurrency {
                    pool.push(consumer);
                }
            }
            result
        })
        .await
        .map_err(|e| ClusterError::Internal(format!("read task failed: {e}")))?
    }

    /// A partition's log start and high watermark.
    pub async fn watermarks(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Watermarks, ClusterError> {
        let topic = topic.to_owned();
        self.blocking(move |inner| watermarks_with(&inner.meta, inner, &topic, partition))
            .await
    }

    /// The first offset whose timestamp is at or after `timestamp_ms`, or `None` when no record
    /// is that recent.
    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, ClusterError> {
        let topic = topic.to_owned();
        self.blocking(move |inner| offset_for_time_with(inner, &topic, partition, timestamp_ms))
            .await
    }

    /// Deletes the records of a partition before `before` (Kafka's DeleteRecords) and returns
    /// the new log start.
    pub async fn delete_records_before(
        &self,
        topic: &str,
        partition: u32,
        before: u64,
    ) -> Result<u64, ClusterError> {
        let subject = Subject::Partition(topic, partition);
        let part = part_i32(partition)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, part, Offset::Offset(off_i64(before)?))
            .map_err(|e| from_kafka(&e, subject, "deleting records"))?;
        let out = self
            .inner
            .admin
            .delete_records(&tpl, &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, subject, "deleting records"))?;
        let elem = out
            .elements()
            .into_iter()
            .find(|e| e.topic() == topic && e.partition() == part)
            .map(|e| (e.error(), e.offset()));
        match elem {
            Some((Err(e), _)) => Err(from_kafka(&e, subject, "deleting records")),
            Some((Ok(()), Offset::Offset(n))) => Ok(u64::try_from(n).unwrap_or(0)),
            Some((Ok(()), _)) | None => Err(ClusterError::Internal(format!(
                "DeleteRecords answered no log start for {topic}/{partition}"
            ))),
        }
    }
}

struct ReadRequest {
    topic: String,
    partition: u32,
    offset: u64,
    max_records: usize,
    max_bytes: usize,
    wait: Duration,
}

pub(crate) fn part_i32(partition: u32) -> Result<i32, ClusterError> {
    i32::try_from(partition)
        .map_err(|_| ClusterError::Invalid(format!("invalid partition {partition}")))
}

pub(crate) fn off_i64(offset: u64) -> Result<i64, ClusterError> {
    i64::try_from(offset).map_err(|_| ClusterError::Invalid(format!("invalid offset {offset}")))
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn watermarks_with(
    client: &BaseConsumer<ClusterContext>,
    inner: &Inner,
    topic: &str,
    partition: u32,
) -> Result<Watermarks, ClusterError> {
    let (low, high) = client
        .fetch_watermarks(
            topic,
            part_i32(partition)?,
            inner.cfg.limits.request_timeout,
        )
        .map_err(|e| {
            from_kafka(
                &e,
                Subject::Partition(topic, partition),
                "reading watermarks",
            )
        })?;
    Ok(Watermarks {
        log_start: non_negative(low),
        high_watermark: non_negative(high),
    })
}

pub(crate) fn offset_for_time_with(
    inner: &Inner,
    topic: &str,
    partition: u32,
    timestamp_ms: i64,
) -> Result<Option<u64>, ClusterError> {
    let subject = Subject::Partition(topic, partition);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        topic,
        part_i32(partition)?,
        Offset::Offset(timestamp_ms.max(0)),
    )
    .map_err(|e| from_kafka(&e, subject, "looking up offsets by time"))?;
    let out = inner
        .meta
        .offsets_for_times(tpl, inner.cfg.limits.request_timeout)
        .map_err(|e| from_kafka(&e, subject, "looking up offsets by time"))?;
    let elem = out
        .elements()
        .into_iter()
        .find(|e| e.topic() == topic)
        .map(|e| (e.error(), e.offset()));
    match elem {
        Some((Err(e), _)) => Err(from_kafka(&e, subject, "looking up offsets by time")),
        Some((Ok(()), Offset::Offset(n))) if n >= 0 => Ok(Some(non_negative(n))),
        Some((Ok(()), _)) => Ok(None),
        None => Err(ClusterError::Internal(format!(
            "ListOffsets answered nothing for {topic}/{partition}"
        ))),
    }
}

fn out_of_range(req: &ReadRequest, w: Watermarks) -> ClusterError {
    ClusterError::OffsetOutOfRange {
        topic: req.topic.clone(),
        partition: req.partition,
        offset: req.offset,
        log_start: w.log_start,
        high_watermark: w.high_watermark,
    }
}

/// Errors a read outlives: librdkafka retries the connection or the leader lookup itself, and
/// the readers' group is only a name librdkafka requires for assigning partitions — its
/// coordinator (which the principal may not even be allowed to look up) plays no part in a read.
fn transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException
    )
}

fn read_blocking(
    inner: &Inner,
    consumer: &BaseConsumer<ClusterContext>,
    req: &ReadRequest,
) -> Result<ReadResult, ClusterError> {
    let subject = Subject::Partition(&req.topic, req.partition);
    let part = part_i32(req.partition)?;
    let w = watermarks_with(consumer, inner, &req.topic, req.partition)?;
    if req.offset < w.log_start || req.offset > w.high_watermark {
        return Err(out_of_range(req, w));
    }
    let mut result = ReadResult {
        records: Vec::new(),
        log_start: w.log_start,
        high_watermark: w.high_watermark,
    };
    if req.offset == w.high_watermark && req.wait.is_zero() {
        return Ok(result);
    }
    // Errors queued while the consumer sat in the pool belong to no read.
    crate::drain_events(consumer);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&req.topic, part, Offset::Offset(off_i64(req.offset)?))
        .map_err(|e| from_kafka(&e, subject, "reading"))?;
    consumer
        .assign(&tpl)
        .map_err(|e| from_kafka(&e, subject, "reading"))?;

    // Waits up to the long-poll deadline for the first record (or, with nothing to wait for,
    // up to the request timeout for records known to exist); after that takes only what has
    // already been fetched.
    let first_deadline = Instant::now()
        + if req.offset < w.high_watermark {
            inner.cfg.limits.request_timeout
        } else {
            req.wait
        };
    let mut bytes = 0usize;
    let mut waited_for_existing = false;
    loop {
        let timeout = if result.records.is_empty() {
            first_deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let Some(polled) = consumer.poll(timeout) else {
            waited_for_existing = result.records.is_empty() && req.offset < w.high_watermark;
            break;
        };
        let msg = match polled {
            Ok(m) => m,
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
            )) => {
                // Retention moved the log start between the check and the fetch.
                let now = watermarks_with(consumer, inner, &req.topic, req.partition)?;
                return Err(out_of_range(req, now));
            }
            // librdkafka reconnects by itself; the read goes on until its deadline.
            Err(KafkaError::MessageConsumption(code)) if transient(code) => {
                consumer
                    .context()
                    .note(code, "transient error while reading");
                continue;
            }
            Err(e) => return Err(from_kafka(&e, subject, "reading")),
        };
        let Ok(offset) = u64::try_from(msg.offset()) else {
            continue;
        };
        // A pooled consumer may still deliver a record of its previous assignment.
        if msg.topic() != req.topic || msg.partition() != part || offset < req.offset {
            continue;
        }
        let headers: Vec<Header> = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| Header {
                        key: h.key.to_owned(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let size = msg.key().map_or(0, <[u8]>::len)
            + msg.payload().map_or(0, <[u8]>::len)
            + headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        if !result.records.is_empty() && bytes.saturating_add(size) > req.max_bytes {
            break;
        }
        bytes = bytes.saturating_add(size);
        result.records.push(StoredRecord {
            offset,
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
        });
        result.high_watermark = result.high_watermark.max(offset.saturating_add(1));
        if result.records.len() >= req.max_records {
            break;
        }
    }
    if waited_for_existing {
        return Err(ClusterError::Unavailable(format!(
            "{}/{} holds offsets up to {} but none arrived from {} within {} s; retry later",
            req.topic,
            req.partition,
            w.high_watermark,
            req.offset,
            inner.cfg.limits.request_timeout.as_secs()
        )));
    }
    Ok(result)
}
