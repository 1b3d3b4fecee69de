//! Fetch (long-polling on the broker's notifier) and ListOffsets.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use herald_broker::BrokerError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};

use herald_auth::acl::Operation;
use herald_auth::authz::Resource;

use crate::authz::{self, check};
use crate::conn::Connection;
use crate::errors::{self, code};

use super::topic_name;

pub(super) async fn fetch(conn: &Connection, req: FetchRequest) -> FetchResponse {
    let broker = &conn.ctx.broker;
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0))
        .min(conn.ctx.cfg.max_fetch_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0).max(1);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let who = authz::subject(conn);
    // Decided once per request, not per long-poll pass: a denial is recorded once.
    let allowed: Vec<bool> = req
        .topics
        .iter()
        .map(|t| {
            check(
                conn,
                &who,
                Operation::Read,
                Resource::Topic(topic_name(&t.topic)),
            )
        })
        .collect();
    loop {
        // Subscribe before reading so that an append in between wakes this fetch.
        let waiters: Vec<_> = req
            .topics
            .iter()
            .zip(&allowed)
            .filter(|(_, ok)| **ok)
            .map(|(t, _)| t)
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (topic_name(&t.topic).to_owned(), p.partition))
            })
            .filter_map(|(t, p)| {
                u32::try_from(p)
                    .ok()
                    .map(|p| broker.notifier().subscribe(&t, p))
            })
            .collect();
        let mut total = 0usize;
        let mut had_error = false;
        let mut responses = Vec::with_capacity(req.topics.len());
        for (t, allowed) in req.topics.iter().zip(&allowed) {
            let name = topic_name(&t.topic).to_owned();
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let resp = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_high_watermark(-1)
                    .with_preferred_read_replica(BrokerId(-1));
                if !*allowed {
                    had_error = true;
                    parts.push(resp.with_error_code(errors::TOPIC_AUTHORIZATION_FAILED));
                    continue;
                }
                let (Ok(partition), Ok(offset)) =
                    (u32::try_from(p.partition), u64::try_from(p.fetch_offset))
                else {
                    had_error = true;
                    parts.push(resp.with_error_code(errors::OFFSET_OUT_OF_RANGE));
                    continue;
                };
                let budget = usize::try_from(p.partition_max_bytes)
                    .unwrap_or(0)
                    .min(max_bytes.saturating_sub(total));
                // The first partition with data may exceed the budget by one batch so that
                // consumers always progress (KIP-74).
                if budget == 0 && total > 0 {
                    let stats = broker.partition_stats(&name, partition).await;
                    parts.push(match stats {
                        Ok(st) => resp
                            .with_high_watermark(st.high_watermark as i64)
                            .with_last_stable_offset(st.high_watermark as i64)
                            .with_log_start_offset(st.log_start as i64),
                        Err(e) => resp.with_error_code(code(&e)),
                    });
                    continue;
                }
                match broker
                    .read_batches(&name, partition, offset, budget.max(1))
                    .await
                {
                    Ok(read) => {
                        let bytes: usize = read.batches.iter().map(|b| b.len()).sum();
                        total += bytes;
                        let records = match read.batches.len() {
                            0 => Bytes::new(),
                            1 => read.batches.into_iter().next().unwrap_or_default(),
                            _ => {
                                let mut buf = BytesMut::with_capacity(bytes);
                                for b in &read.batches {
                                    buf.put_slice(b);
                                }
                                buf.freeze()
                            }
                        };
                        parts.push(
                            resp.with_high_watermark(read.high_watermark as i64)
                                .with_last_stable_offset(read.high_watermark as i64)
                                .with_log_start_offset(read.log_start as i64)
                                .with_records(Some(records)),
                        );
                    }
                    Err(e) => {
                        had_error = true;
                        let mut r = resp.with_error_code(code(&e));
                        if let BrokerError::OffsetOutOfRange {
                            log_start,
                            high_watermark,
                            ..
                        } = e
                        {
                            r = r
                                .with_high_watermark(high_watermark as i64)
                                .with_log_start_offset(log_start as i64);
                        }
                        parts.push(r);
                    }
                }
            }
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(parts),
            );
        }
        let now = tokio::time::Instant::now();
        let stopping = *conn.shutdown.borrow();
        if total >= min_bytes.max(1)
            || had_error
            || now >= deadline
            || waiters.is_empty()
            || stopping
        {
            return FetchResponse::default().with_responses(responses);
        }
        let waits = waiters
            .into_iter()
            .map(|w| Box::pin(w.wait_until(deadline)));
        // A shutdown ends the wait early, so the drain is not held up by long-polls.
        let mut shutdown = conn.shutdown.clone();
        tokio::select! {
            _ = futures_util::future::select_all(waits) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

pub(super) async fn list_offsets(
    conn: &Connection,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = topic_name(&t.name).to_owned();
        let allowed = check(conn, &who, Operation::Describe, Resource::Topic(&name));
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut resp = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if version >= 4 {
                resp = resp.with_leader_epoch(0);
            }
            if !allowed {
                parts.push(resp.with_error_code(errors::TOPIC_AUTHORIZATION_FAILED));
                continue;
            }
            let Ok(partition) = u32::try_from(p.partition_index) else {
                parts.push(resp.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let stats = match broker.partition_stats(&name, partition).await {
                Ok(s) => s,
                Err(e) => {
                    parts.push(resp.with_error_code(code(&e)));
                    continue;
                }
            };
            let r = match p.timestamp {
                -2 => resp.with_offset(stats.log_start as i64),
                -1 => resp.with_offset(stats.high_watermark as i64),
                // -3: the record with the largest timestamp (KIP-734).
                -3 => match broker
                    .offset_for_timestamp(&name, partition, stats.max_timestamp)
                    .await
                {
                    Ok(Some((o, ts))) => resp.with_offset(o as i64).with_timestamp(ts),
                    Ok(None) => resp,
                    Err(e) => resp.with_error_code(code(&e)),
                },
                ts if ts >= 0 => match broker.offset_for_timestamp(&name, partition, ts).await {
                    Ok(Some((o, found))) => resp.with_offset(o as i64).with_timestamp(found),
                    Ok(None) => resp,
                    Err(e) => resp.with_error_code(code(&e)),
                },
                _ => resp.with_error_code(errors::INVALID_REQUEST),
            };
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
