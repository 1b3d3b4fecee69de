//! Cluster metadata: Metadata, DescribeCluster and FindCoordinator.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use herald_auth::acl::Operation;
use herald_auth::authz::{Resource, Subject};

use crate::authz::{self, check, permits};
use crate::conn::Connection;
use crate::errors::{self};

use super::s;

/// A stable id for a topic, derived from its name and creation time (a recreated topic gets a
/// new id, as in Kafka).
pub(super) fn topic_id(name: &str, created_ms: i64) -> uuid::Uuid {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    uuid::Uuid::from_u64_pair(h, created_ms as u64 | 1)
}

pub(super) fn broker_entry(conn: &Connection) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(conn.ctx.cfg.node_id))
        .with_host(s(conn.advertised.host.clone()))
        .with_port(i32::from(conn.advertised.port))
}

pub(super) fn metadata_topic(
    conn: &Connection,
    who: &Subject,
    info: &herald_broker::storage::TopicInfo,
    with_operations: bool,
) -> MetadataResponseTopic {
    let node = BrokerId(conn.ctx.cfg.node_id);
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(info.name.clone()))))
        .with_topic_id(topic_id(&info.name, info.created_ms))
        .with_is_internal(info.name.starts_with("_herald"))
        .with_topic_authorized_operations(if with_operations {
            authz::operations_mask(conn, who, Resource::Topic(&info.name), authz::TOPIC_OPS)
        } else {
            i32::MIN
        })
        .with_partitions(
            (0..info.partitions)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p as i32)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}

pub(super) async fn metadata(
    conn: &Connection,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let broker = &conn.ctx.broker;
    let requested: Option<Vec<String>> = match req.topics {
        None => None,
        // v0 has no null: an empty list means every topic.
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.as_str().to_owned()))
                .collect(),
        ),
    };
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    let topic_ops = req.include_topic_authorized_operations;
    let who = authz::subject(conn);
    let topics = match requested {
        // Every topic the client may describe; the others are left out, not refused, so a
        // tenant's regex subscription never learns that another tenant's topics exist.
        None => match broker.list_topics(None, None).await {
            Ok(topics) => topics,
            Err(e) => {
                // Metadata has no top-level error code: answer with no topics, as a broker
                // that cannot reach its metadata does.
                tracing::warn!(error = %e, "listing topics for Metadata failed");
                Vec::new()
            }
        }
        .iter()
        .filter(|t| {
            !t.name
                .starts_with(herald_core::topic::CHANNEL_STREAM_PREFIX)
                && permits(conn, &who, Operation::Describe, Resource::Topic(&t.name))
        })
        .map(|t| metadata_topic(conn, &who, t, topic_ops))
        .collect(),
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                if !check(conn, &who, Operation::Describe, Resource::Topic(&name)) {
                    out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(s(name))))
                            .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED),
                    );
                    continue;
                }
                let mut info = broker.topic(&name).await.ok().flatten();
                if info.is_none()
                    && allow_create
                    && broker.may_auto_create(&name)
                    && may_create(conn, &who, &name)
                {
                    // Read back rather than taking what `ensure_topic` returns: a topic created
                    // just now is answered with its creation time (its topic id).
                    info = match broker.ensure_topic(&name).await {
                        Ok(_) => broker.topic(&name).await.ok().flatten(),
                        Err(_) => None,
                    };
                }
                out.push(match info {
                    Some(info) => metadata_topic(conn, &who, &info, topic_ops),
                    None => {
                        let err = match herald_core::validate_topic_name(&name)
                            .and_then(|_| broker.grammar().classify(&name))
                        {
                            Ok(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                            Err(_) => errors::INVALID_TOPIC_EXCEPTION,
                        };
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(s(name))))
                            .with_error_code(err)
                    }
                });
            }
            out
        }
    };
    MetadataResponse::default()
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            authz::operations_mask(conn, &who, Resource::Cluster, authz::CLUSTER_OPS)
        } else {
            i32::MIN
        })
        .with_brokers(vec![broker_entry(conn)])
        .with_cluster_id(Some(s(conn.ctx.cfg.cluster_id.clone())))
        .with_controller_id(BrokerId(conn.ctx.cfg.node_id))
        .with_topics(topics)
}

/// Whether `who` may have `name` created implicitly: CREATE on the cluster or the topic (Kafka's
/// rule), or WRITE on it, since publishing to a tenant topic creates it in Herald.
pub(super) fn may_create(conn: &Connection, who: &Subject, name: &str) -> bool {
    permits(conn, who, Operation::Create, Resource::Cluster)
        || permits(conn, who, Operation::Create, Resource::Topic(name))
        || permits(conn, who, Operation::Write, Resource::Topic(name))
}

/// Herald is a single node, so it coordinates every group itself. Transactions are not
/// supported, so no transaction coordinator is offered.
pub(super) fn find_coordinator(
    conn: &Connection,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    let node = BrokerId(conn.ctx.cfg.node_id);
    let host = s(conn.advertised.host.clone());
    let port = i32::from(conn.advertised.port);
    let who = authz::subject(conn);
    let group = req.key_type == 0;
    // The answer for one key: (error code, message); NONE means this node coordinates it.
    let answer = |key: &str| -> (i16, Option<StrBytes>) {
        if group {
            if check(conn, &who, Operation::Describe, Resource::Group(key)) {
                (errors::NONE, None)
            } else {
                (errors::GROUP_AUTHORIZATION_FAILED, None)
            }
        } else if !check(
            conn,
            &who,
            Operation::Describe,
            Resource::TransactionalId(key),
        ) {
            (errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None)
        } else {
            (
                errors::COORDINATOR_NOT_AVAILABLE,
                Some(s("transactions are not supported by Herald")),
            )
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (code, message) = answer(key.as_str());
                let c = Coordinator::default()
                    .with_key(key)
                    .with_error_code(code)
                    .with_error_message(message);
                if code == errors::NONE {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1))
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, message) = answer(req.key.as_str());
    let resp = FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message);
    if code == errors::NONE {
        resp.with_node_id(node).with_host(host).with_port(port)
    } else {
        resp.with_node_id(BrokerId(-1))
    }
}

pub(super) fn describe_cluster(
    conn: &Connection,
    include_operations: bool,
) -> DescribeClusterResponse {
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Describe, Resource::Cluster) {
        return DescribeClusterResponse::default()
            .with_error_code(errors::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(s("Authorization failed.")));
    }
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(if include_operations {
            authz::operations_mask(conn, &who, Resource::Cluster, authz::CLUSTER_OPS)
        } else {
            i32::MIN
        })
        .with_cluster_id(s(conn.ctx.cfg.cluster_id.clone()))
        .with_controller_id(BrokerId(conn.ctx.cfg.node_id))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(conn.ctx.cfg.node_id))
                .with_host(s(conn.advertised.host.clone()))
                .with_port(i32::from(conn.advertised.port)),
        ])
}
