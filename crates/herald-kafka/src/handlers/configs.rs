//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

use std::collections::BTreeMap;

use herald_broker::{BrokerError, config_entries};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use herald_auth::acl::Operation;
use herald_auth::authz::{Resource, Subject};

use crate::authz::{self, check};
use crate::conn::Connection;
use crate::errors::{self, code};

use super::s;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub(super) async fn describe_configs(
    conn: &Connection,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.as_str().to_owned();
        if let Some(denied) = config_denial(
            conn,
            &who,
            r.resource_type,
            &name,
            Operation::DescribeConfigs,
        ) {
            results.push(
                DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_error_code(denied)
                    .with_error_message(Some(s("Authorization failed."))),
            );
            continue;
        }
        let keys: Option<Vec<String>> = r
            .configuration_keys
            .map(|k| k.iter().map(|k| k.as_str().to_owned()).collect());
        let wanted = |n: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == n));
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries: Vec<DescribeConfigsResourceResult> = match r.resource_type {
            RESOURCE_TOPIC => match broker.require_topic(&name).await {
                Err(e) => {
                    results.push(
                        result
                            .with_error_code(code(&e))
                            .with_error_message(Some(s(e.to_string()))),
                    );
                    continue;
                }
                Ok(info) => config_entries(&info.config, broker.config().default_retention_ms)
                    .into_iter()
                    .filter(|e| wanted(&e.name))
                    .map(|e| {
                        DescribeConfigsResourceResult::default()
                            .with_name(s(e.name))
                            .with_value(Some(s(e.value)))
                            .with_read_only(e.read_only)
                            .with_config_source(if e.is_set {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            })
                            .with_config_type(config_type(e.read_only))
                    })
                    .collect(),
            },
            RESOURCE_BROKER => broker_configs(conn)
                .into_iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, v)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                        .with_read_only(true)
                        .with_config_source(SOURCE_STATIC_BROKER)
                })
                .collect(),
            other => {
                results.push(
                    result
                        .with_error_code(errors::INVALID_REQUEST)
                        .with_error_message(Some(s(format!(
                            "resource type {other} has no configuration in Herald"
                        )))),
                );
                continue;
            }
        };
        results.push(result.with_configs(entries));
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// The authorization error for a config operation on a topic or broker resource, if denied.
pub(super) fn config_denial(
    conn: &Connection,
    who: &Subject,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Option<i16> {
    match resource_type {
        RESOURCE_TOPIC => (!check(conn, who, op, Resource::Topic(name)))
            .then_some(errors::TOPIC_AUTHORIZATION_FAILED),
        RESOURCE_BROKER => (!check(conn, who, op, Resource::Cluster))
            .then_some(errors::CLUSTER_AUTHORIZATION_FAILED),
        _ => None,
    }
}

/// Why AlterConfigs or IncrementalAlterConfigs refuses a resource, if it does: not authorized,
/// or not a topic (only topic configurations can be changed).
fn alter_refusal(
    conn: &Connection,
    who: &Subject,
    resource_type: i8,
    name: &str,
) -> Option<(i16, &'static str)> {
    if let Some(denied) = config_denial(conn, who, resource_type, name, Operation::AlterConfigs) {
        return Some((denied, "Authorization failed."));
    }
    (resource_type != RESOURCE_TOPIC).then_some((
        errors::INVALID_REQUEST,
        "only topic configurations can be altered",
    ))
}

pub(super) fn config_type(_read_only: bool) -> i8 {
    // STRING: every value is reported as text, as Redpanda does for most keys.
    2
}

pub(super) fn broker_configs(conn: &Connection) -> Vec<(String, String)> {
    vec![
        ("broker.id".into(), conn.ctx.cfg.node_id.to_string()),
        ("auto.create.topics.enable".into(), "true".into()),
        ("default.replication.factor".into(), "1".into()),
        (
            "log.retention.ms".into(),
            conn.ctx.broker.config().default_retention_ms.to_string(),
        ),
        ("message.max.bytes".into(), "1048588".into()),
        (
            "socket.request.max.bytes".into(),
            conn.ctx.cfg.max_request_bytes.to_string(),
        ),
    ]
}

pub(super) async fn alter_configs(
    conn: &Connection,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut out = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        if let Some((code, message)) =
            alter_refusal(conn, &who, r.resource_type, r.resource_name.as_str())
        {
            out.push(
                resp.with_error_code(code)
                    .with_error_message(Some(s(message))),
            );
            continue;
        }
        let config: BTreeMap<String, String> = r
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned()))
            })
            .collect();
        let name = r.resource_name.as_str();
        let result = if req.validate_only {
            broker.validate_config(&config)
        } else {
            broker.replace_topic_config(name, config).await
        };
        out.push(match result {
            Ok(()) => resp,
            Err(e) => resp
                .with_error_code(config_error_code(&e))
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    AlterConfigsResponse::default().with_responses(out)
}

pub(super) fn config_error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Invalid(_) => errors::INVALID_CONFIG,
        other => code(other),
    }
}

pub(super) async fn incremental_alter_configs(
    conn: &Connection,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut out = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        if let Some((code, message)) =
            alter_refusal(conn, &who, r.resource_type, r.resource_name.as_str())
        {
            out.push(
                resp.with_error_code(code)
                    .with_error_message(Some(s(message))),
            );
            continue;
        }
        let name = r.resource_name.as_str().to_owned();
        let info = match broker.require_topic(&name).await {
            Ok(info) => info,
            Err(e) => {
                out.push(
                    resp.with_error_code(code(&e))
                        .with_error_message(Some(s(e.to_string()))),
                );
                continue;
            }
        };
        let mut config = info.config;
        let mut bad = None;
        for c in &r.configs {
            let key = c.name.as_str().to_owned();
            match (c.config_operation, &c.value) {
                (0, Some(v)) => {
                    config.insert(key, v.as_str().to_owned());
                }
                (1, _) => {
                    config.remove(&key);
                }
                (op, _) => {
                    bad = Some(format!(
                        "operation {op} on {key} is not supported (SET and DELETE are)"
                    ))
                }
            }
        }
        if let Some(msg) = bad {
            out.push(
                resp.with_error_code(errors::INVALID_CONFIG)
                    .with_error_message(Some(s(msg))),
            );
            continue;
        }
        let result = if req.validate_only {
            broker.validate_config(&config)
        } else {
            broker.replace_topic_config(&name, config).await
        };
        out.push(match result {
            Ok(()) => resp,
            Err(e) => resp
                .with_error_code(config_error_code(&e))
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(out)
}
