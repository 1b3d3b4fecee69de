//! Topic administration: CreateTopics, DeleteTopics, DeleteRecords, CreatePartitions.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use herald_broker::{BrokerError, config_entries};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};

use herald_auth::acl::Operation;
use herald_auth::authz::Resource;

use crate::authz::{self, check, permits};
use crate::conn::Connection;
use crate::errors::{self, code};

use super::metadata::topic_id;
use super::{s, topic_name};

pub(super) async fn create_topics(
    conn: &Connection,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    // Topics are created concurrently so that their journal frames share fsyncs.
    let validate_only = req.validate_only;
    let results = join_all(
        req.topics
            .into_iter()
            .map(|t| create_topic(conn, t, validate_only)),
    )
    .await;
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) async fn create_topic(
    conn: &Connection,
    t: kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> CreatableTopicResult {
    let broker = &conn.ctx.broker;
    let name = topic_name(&t.name).to_owned();
    let result = CreatableTopicResult::default()
        .with_name(t.name.clone())
        .with_num_partitions(-1)
        .with_replication_factor(-1);
    let who = authz::subject(conn);
    if !permits(conn, &who, Operation::Create, Resource::Cluster)
        && !check(conn, &who, Operation::Create, Resource::Topic(&name))
    {
        return result
            .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED)
            .with_error_message(Some(s("Authorization failed.")));
    }
    let config: BTreeMap<String, String> = t
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned()))
        })
        .collect();
    if t.replication_factor > 1 {
        return result
            .with_error_code(errors::INVALID_REPLICATION_FACTOR)
            .with_error_message(Some(s(format!(
                "replication factor {} is larger than the number of brokers (1)",
                t.replication_factor
            ))));
    }
    if !t.assignments.is_empty() {
        return result
            .with_error_code(errors::INVALID_REQUEST)
            .with_error_message(Some(s("manual replica assignment is not supported")));
    }
    let partitions = match t.num_partitions {
        -1 => None,
        n if n >= 1 => Some(n as u32),
        n => {
            return result
                .with_error_code(errors::INVALID_PARTITIONS)
                .with_error_message(Some(s(format!("{n} partitions is not a valid count"))));
        }
    };
    if let Err(e) =
        herald_core::validate_topic_name(&name).and_then(|_| broker.grammar().classify(&name))
    {
        return result
            .with_error_code(errors::INVALID_TOPIC_EXCEPTION)
            .with_error_message(Some(s(e.to_string())));
    }
    if validate_only {
        let r = match (broker.topic(&name).await, broker.validate_config(&config)) {
            (Err(e), _) => result
                .with_error_code(code(&e))
                .with_error_message(Some(s(e.to_string()))),
            (Ok(Some(_)), _) => result
                .with_error_code(errors::TOPIC_ALREADY_EXISTS)
                .with_error_message(Some(s(format!("topic {name} already exists")))),
            (Ok(None), Err(e)) => result
                .with_error_code(errors::INVALID_CONFIG)
                .with_error_message(Some(s(e.to_string()))),
            (Ok(None), Ok(())) => result.with_error_code(errors::NONE),
        };
        return r;
    }
    match broker.create_topic(&name, partitions, config).await {
        Ok(d) => {
            let info = broker.topic(&name).await.ok().flatten();
            let configs = config_entries(
                &info.as_ref().map(|i| i.config.clone()).unwrap_or_default(),
                broker.config().default_retention_ms,
            )
            .into_iter()
            .map(|e| {
                CreatableTopicConfigs::default()
                    .with_name(s(e.name))
                    .with_value(Some(s(e.value)))
                    .with_read_only(e.read_only)
                    .with_config_source(if e.is_set { 1 } else { 5 })
            })
            .collect();

            result
                .with_topic_id(
                    info.map(|i| topic_id(&name, i.created_ms))
                        .unwrap_or_default(),
                )
                .with_num_partitions(d.partitions.len() as i32)
                .with_replication_factor(1)
                .with_configs(Some(configs))
        }
        Err(e) => {
            let code = match &e {
                BrokerError::Conflict(_) => errors::TOPIC_ALREADY_EXISTS,
                BrokerError::Invalid(_) => errors::INVALID_CONFIG,
                other => code(other),
            };

            result
                .with_error_code(code)
                .with_error_message(Some(s(e.to_string())))
        }
    }
}

pub(super) async fn delete_topics(
    conn: &Connection,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let broker = &conn.ctx.broker;
    let mut names: Vec<TopicName> = req.topic_names;
    names.extend(req.topics.into_iter().filter_map(|t| t.name));
    let who = authz::subject(conn);
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let r = DeletableTopicResult::default().with_name(Some(n.clone()));
        if !check(
            conn,
            &who,
            Operation::Delete,
            Resource::Topic(topic_name(&n)),
        ) {
            out.push(r.with_error_code(errors::TOPIC_AUTHORIZATION_FAILED));
            continue;
        }
        out.push(match broker.delete_topic(topic_name(&n)).await {
            Ok(()) => r,
            Err(e) => r
                .with_error_code(code(&e))
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(out)
}

pub(super) async fn delete_records(
    conn: &Connection,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = topic_name(&t.name).to_owned();
        let allowed = check(conn, &who, Operation::Delete, Resource::Topic(&name));
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            if !allowed {
                parts.push(r.with_error_code(errors::TOPIC_AUTHORIZATION_FAILED));
                continue;
            }
            let Ok(partition) = u32::try_from(p.partition_index) else {
                parts.push(r.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let offset = if p.offset == -1 {
                match broker.partition_stats(&name, partition).await {
                    Ok(st) => st.high_watermark,
                    Err(e) => {
                        parts.push(r.with_error_code(code(&e)));
                        continue;
                    }
                }
            } else if let Ok(o) = u64::try_from(p.offset) {
                o
            } else {
                parts.push(r.with_error_code(errors::OFFSET_OUT_OF_RANGE));
                continue;
            };
            parts.push(
                match broker.delete_records(&name, partition, offset).await {
                    Ok(low) => r.with_low_watermark(low as i64),
                    Err(e) => r.with_error_code(code(&e)),
                },
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

pub(super) async fn create_partitions(
    conn: &Connection,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = topic_name(&t.name).to_owned();
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if !check(conn, &who, Operation::Alter, Resource::Topic(&name)) {
            results.push(
                r.with_error_code(errors::TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(Some(s("Authorization failed."))),
            );
            continue;
        }
        if t.assignments.is_some() {
            results.push(
                r.with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(s("manual replica assignment is not supported"))),
            );
            continue;
        }
        let Ok(total) = u32::try_from(t.count) else {
            results.push(
                r.with_error_code(errors::INVALID_PARTITIONS)
                    .with_error_message(Some(s(format!(
                        "{} partitions is not a valid count",
                        t.count
                    )))),
            );
            continue;
        };
        let current = broker.topic(&name).await.map(|i| i.map(|i| i.partitions));
        let outcome = match current {
            Err(e) => Err((code(&e), e.to_string())),
            Ok(None) => Err((
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name} does not exist"),
            )),
            Ok(Some(c)) if total <= c => Err((
                errors::INVALID_PARTITIONS,
                format!("topic {name} has {c} partitions; the count can only grow"),
            )),
            Ok(Some(_)) if req.validate_only => Ok(()),
            Ok(Some(_)) => broker.create_partitions(&name, total).await.map_err(|e| {
                (
                    match &e {
                        BrokerError::Invalid(_) => errors::INVALID_PARTITIONS,
                        other => code(other),
                    },
                    e.to_string(),
                )
            }),
        };
        results.push(match outcome {
            Ok(()) => r,
            Err((code, msg)) => r.with_error_code(code).with_error_message(Some(s(msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
