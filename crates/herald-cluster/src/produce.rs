//! Producing through the one shared idempotent producer.

use herald_broker::Missing;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use crate::error::{Subject, from_kafka};
use crate::{ClusterError, KafkaCluster};

/// One record header. Kafka header values may be null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; the producer's clock when `None`.
    pub timestamp_ms: Option<i64>,
}

impl KafkaCluster {
    /// Produces `records` to one partition and returns each record's offset, in the order
    /// given, once the cluster has acknowledged all of them (`acks=all`).
    ///
    /// The offsets of one call are increasing but not necessarily contiguous: other producers
    /// write to the same partition in between. When the producer's queue is full the call
    /// fails at once with [`ClusterError::Overloaded`]; records of the call queued before that
    /// point are still delivered, as with any Kafka producer that gives up on a batch.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<ProduceRecord>,
    ) -> Result<Vec<u64>, ClusterError> {
        let max = self.inner.cfg.limits.max_records_per_produce;
        if records.len() > max {
            return Err(ClusterError::TooLarge(format!(
                "{} records in one produce call; at most {max}",
                records.len()
            )));
        }
        // Checked first (from the metadata cache): librdkafka would hold records for an unknown
        // topic or partition until the delivery timeout, hoping it appears.
        let partitions = self.partition_count(topic).await?;
        if partition >= partitions {
            return Err(ClusterError::NotFound(Missing::Partition {
                topic: topic.to_owned(),
                partition,
            }));
        }
        let part = i32::try_from(partition)
            .map_err(|_| ClusterError::Invalid(format!("invalid partition {partition}")))?;
        let subject = Subject::Partition(topic, partition);
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).partition(part);
            if let Some(k) = r.key.as_deref() {
                rec = rec.key(k);
            }
            if let Some(v) = r.value.as_deref() {
                rec = rec.payload(v);
            }
            if let Some(ts) = r.timestamp_ms {
                rec = rec.timestamp(ts);
            }
            if !r.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
                for header in &r.headers {
                    h = h.insert(rdkafka::message::Header {
                        key: &header.key,
                        value: header.value.as_deref(),
                    });
                }
                rec = rec.headers(h);
            }
            match self.inner.producer.send_result(rec) {
                Ok(f) => pending.push(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(ClusterError::Overloaded(format!(
                        "the producer queue is full ({} records or {} KiB unacknowledged); {i} of \
                         {} records of this call were queued and will still be written; retry \
                         the rest later",
                        self.inner.cfg.limits.producer_queue_messages,
                        self.inner.cfg.limits.producer_queue_kbytes,
                        records.len()
                    )));
                }
                Err((e, _)) => return Err(from_kafka(&e, subject, "producing")),
            }
        }
        let mut offsets = Vec::with_capacity(pending.len());
        for f in pending {
            match f.await {
                Ok(Ok(delivery)) => {
                    let offset = u64::try_from(delivery.offset).map_err(|_| {
                        ClusterError::Internal(format!(
                            "the cluster acknowledged a record to {topic}/{partition} without \
                             an offset"
                        ))
                    })?;
                    offsets.push(offset);
                }
                Ok(Err((e, _))) => return Err(from_kafka(&e, subject, "producing")),
                Err(_) => {
                    return Err(ClusterError::Unavailable(
                        "the producer shut down before the record was acknowledged".to_owned(),
                    ));
                }
            }
        }
        Ok(offsets)
    }
}
