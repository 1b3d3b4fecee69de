//! Produce and InitProducerId.

use bytes::Bytes;
use futures_util::future::join_all;
use herald_broker::BrokerError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};

use herald_auth::acl::Operation;
use herald_auth::authz::Resource;

use crate::authz::{self, check};
use crate::conn::Connection;
use crate::errors::{self, code};

use super::{s, topic_name};

pub(super) async fn produce(conn: &Connection, req: ProduceRequest) -> ProduceResponse {
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    if !matches!(req.acks, -1..=1) {
        return ProduceResponse::default().with_responses(
            req.topic_data
                .into_iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(t.name)
                        .with_partition_responses(
                            t.partition_data
                                .into_iter()
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_error_code(errors::INVALID_REQUIRED_ACKS)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    }
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = topic_name(&t.name).to_owned();
        let allowed = check(conn, &who, Operation::Write, Resource::Topic(&name));
        let exists = allowed
            && (matches!(broker.topic(&name).await, Ok(Some(_)))
                || (broker.may_auto_create(&name) && broker.ensure_topic(&name).await.is_ok()));
        let parts = join_all(t.partition_data.into_iter().map(|p| {
            let name = name.clone();
            async move {
                let resp = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_log_append_time_ms(-1);
                if !allowed {
                    return resp
                        .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED)
                        .with_base_offset(-1);
                }
                if name.starts_with("_herald") {
                    return resp
                        .with_error_code(errors::INVALID_TOPIC_EXCEPTION)
                        .with_base_offset(-1)
                        .with_error_message(Some(s(format!("{name} is an internal topic"))));
                }
                if !exists {
                    let code = if broker.grammar().classify(&name).is_err() {
                        errors::INVALID_TOPIC_EXCEPTION
                    } else {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    };
                    return resp.with_error_code(code).with_base_offset(-1);
                }
                let Ok(partition) = u32::try_from(p.index) else {
                    return resp
                        .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_base_offset(-1);
                };
                let Some(records) = p.records else {
                    return resp
                        .with_error_code(errors::CORRUPT_MESSAGE)
                        .with_base_offset(-1);
                };
                produce_partition(broker, &name, partition, records, resp).await
            }
        }))
        .await;
        topics.push(
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(parts),
        );
    }
    ProduceResponse::default().with_responses(topics)
}

/// Appends the batches of one partition's records, in order.
pub(super) async fn produce_partition(
    broker: &herald_broker::Broker,
    topic: &str,
    partition: u32,
    records: Bytes,
    resp: PartitionProduceResponse,
) -> PartitionProduceResponse {
    let mut rest = records;
    let mut first: Option<i64> = None;
    let mut log_start = 0u64;
    while rest.len() >= 12 {
        let len = rest
            .get(8..12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
            .unwrap_or(-1);
        let Some(total) = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|t| *t <= rest.len())
        else {
            return resp
                .with_error_code(errors::CORRUPT_MESSAGE)
                .with_base_offset(-1)
                .with_error_message(Some(s("record batch length exceeds the request")));
        };
        let batch = rest.split_to(total);
        match broker.produce_batch(topic, partition, batch).await {
            Ok(p) => {
                first.get_or_insert(p.base_offset as i64);
                log_start = p.log_start;
            }
            Err(e) => {
                let code = match &e {
                    BrokerError::Invalid(_) => errors::CORRUPT_MESSAGE,
                    other => code(other),
                };
                metrics::counter!("kafka_produce_errors_total", "code" => code.to_string())
                    .increment(1);
                return resp
                    .with_error_code(code)
                    .with_base_offset(-1)
                    .with_error_message(Some(s(e.to_string())));
            }
        }
    }
    if !rest.is_empty() || first.is_none() {
        return resp
            .with_error_code(errors::CORRUPT_MESSAGE)
            .with_base_offset(-1)
            .with_error_message(Some(s("records hold no complete record batch")));
    }
    resp.with_base_offset(first.unwrap_or(-1))
        .with_log_start_offset(log_start as i64)
}

pub(super) fn init_producer_id(
    conn: &Connection,
    req: kafka_protocol::messages::InitProducerIdRequest,
) -> InitProducerIdResponse {
    let who = authz::subject(conn);
    let denied = match &req.transactional_id {
        Some(id) => (!check(conn, &who, Operation::Write, Resource::TransactionalId(id)))
            .then_some(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        None => (!conn
            .ctx
            .broker
            .security()
            .authorizer()
            .allows_idempotent_write(&who))
        .then(|| {
            // Counted and audited like any other denial.
            check(conn, &who, Operation::IdempotentWrite, Resource::Cluster);
            errors::CLUSTER_AUTHORIZATION_FAILED
        }),
    };
    if let Some(code) = denied {
        return InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(conn.ctx.next_producer_id()))
        .with_producer_epoch(0)
}
