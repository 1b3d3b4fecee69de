//! Consumer-group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete — mapped onto the
//! broker's group service.

use bytes::Bytes;
use herald_broker::groups::AdminError;
use herald_broker::offsets::Committed;
use herald_core::group::{
    GroupError, HeartbeatRequest as CoreHeartbeat, JoinProtocol, JoinRequest as CoreJoin,
    LeaveRequest as CoreLeave, LeavingMember, MemberAssignment, SyncRequest as CoreSync,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use herald_auth::acl::Operation;
use herald_auth::authz::Resource;

use crate::authz::{self, check, permits};
use crate::conn::Connection;
use crate::errors;

/// Whether this connection may `op` the group, counting and auditing a denial.
fn group_allowed(conn: &Connection, group: &str, op: Operation) -> bool {
    let who = authz::subject(conn);
    check(conn, &who, op, Resource::Group(group))
}

use crate::errors::{GROUP_SUBSCRIBED_TO_TOPIC, NON_EMPTY_GROUP};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.as_str().to_owned())
}

fn admin_code(e: &AdminError) -> i16 {
    match e {
        AdminError::GroupActive(_) => NON_EMPTY_GROUP,
        AdminError::Group(g) => g.kafka_code(),
        AdminError::Broker(b) => errors::code(b),
    }
}

pub async fn join(
    conn: &Connection,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
) -> JoinGroupResponse {
    if !group_allowed(conn, req.group_id.0.as_str(), Operation::Read) {
        return JoinGroupResponse::default()
            .with_generation_id(-1)
            .with_member_id(req.member_id)
            .with_error_code(errors::GROUP_AUTHORIZATION_FAILED);
    }
    let resp = conn
        .ctx
        .broker
        .groups()
        .join(CoreJoin {
            group_id: req.group_id.0.as_str().to_owned(),
            member_id: req.member_id.as_str().to_owned(),
            group_instance_id: opt(&req.group_instance_id),
            client_id,
            client_host: format!("/{}", conn.peer.ip()),
            session_timeout_ms: req.session_timeout_ms,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if version == 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            protocol_type: req.protocol_type.as_str().to_owned(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| JoinProtocol {
                    name: p.name.as_str().to_owned(),
                    metadata: p.metadata.to_vec(),
                })
                .collect(),
            // KIP-394: from v4 a new member first learns its id from MEMBER_ID_REQUIRED.
            require_known_member_id: version >= 4,
        })
        .await;
    let base = JoinGroupResponse::default()
        .with_member_id(s(resp.member_id))
        .with_generation_id(-1);
    match resp.result {
        Ok(j) => {
            let members = if j.skip_assignment && version < 9 {
                Vec::new()
            } else {
                j.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(m.group_instance_id.map(s))
                            .with_metadata(Bytes::from(m.metadata))
                    })
                    .collect()
            };
            base.with_generation_id(j.generation_id)
                .with_protocol_type(Some(s(j.protocol_type)))
                .with_protocol_name(Some(s(j.protocol_name)))
                .with_leader(s(j.leader_id))
                .with_skip_assignment(j.skip_assignment && version >= 9)
                .with_members(members)
        }
        Err(e) => base.with_error_code(e.kafka_code()),
    }
}

pub async fn sync(conn: &Connection, req: SyncGroupRequest) -> SyncGroupResponse {
    if !group_allowed(conn, req.group_id.0.as_str(), Operation::Read) {
        return SyncGroupResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED);
    }
    let resp = conn
        .ctx
        .broker
        .groups()
        .sync(CoreSync {
            group_id: req.group_id.0.as_str().to_owned(),
            member_id: req.member_id.as_str().to_owned(),
            generation_id: req.generation_id,
            group_instance_id: opt(&req.group_instance_id),
            protocol_type: opt(&req.protocol_type),
            protocol_name: opt(&req.protocol_name),
            assignments: req
                .assignments
                .into_iter()
                .map(|a| MemberAssignment {
                    member_id: a.member_id.as_str().to_owned(),
                    assignment: a.assignment.to_vec(),
                })
                .collect(),
        })
        .await;
    match resp {
        Ok(sy) => SyncGroupResponse::default()
            .with_protocol_type(Some(s(sy.protocol_type)))
            .with_protocol_name(Some(s(sy.protocol_name)))
            .with_assignment(Bytes::from(sy.assignment)),
        Err(e) => SyncGroupResponse::default().with_error_code(e.kafka_code()),
    }
}

pub async fn heartbeat(conn: &Connection, req: HeartbeatRequest) -> HeartbeatResponse {
    if !group_allowed(conn, req.group_id.0.as_str(), Operation::Read) {
        return HeartbeatResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED);
    }
    let r = conn
        .ctx
        .broker
        .groups()
        .heartbeat(CoreHeartbeat {
            group_id: req.group_id.0.as_str().to_owned(),
            member_id: req.member_id.as_str().to_owned(),
            generation_id: req.generation_id,
            group_instance_id: opt(&req.group_instance_id),
        })
        .await;
    HeartbeatResponse::default()
        .with_error_code(r.err().map(|e| e.kafka_code()).unwrap_or(errors::NONE))
}

pub async fn leave(conn: &Connection, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if !group_allowed(conn, req.group_id.0.as_str(), Operation::Read) {
        return LeaveGroupResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED);
    }
    // v0–2 name one member; v3+ a batch.
    let members: Vec<LeavingMember> = if version < 3 {
        vec![LeavingMember {
            member_id: req.member_id.as_str().to_owned(),
            group_instance_id: None,
        }]
    } else {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.as_str().to_owned(),
                group_instance_id: opt(&m.group_instance_id),
            })
            .collect()
    };
    let r = conn
        .ctx
        .broker
        .groups()
        .leave(CoreLeave {
            group_id: req.group_id.0.as_str().to_owned(),
            members,
        })
        .await;
    match r {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.kafka_code()),
        Ok(results) if version < 3 => {
            let code = results
                .first()
                .and_then(|r| r.result.as_ref().err().map(GroupError::kafka_code))
                .unwrap_or(errors::NONE);
            LeaveGroupResponse::default().with_error_code(code)
        }
        Ok(results) => LeaveGroupResponse::default().with_members(
            results
                .into_iter()
                .map(|r| {
                    MemberResponse::default()
                        .with_member_id(s(r.member_id))
                        .with_group_instance_id(r.group_instance_id.map(s))
                        .with_error_code(
                            r.result
                                .err()
                                .map(|e| e.kafka_code())
                                .unwrap_or(errors::NONE),
                        )
                })
                .collect(),
        ),
    }
}

pub async fn offset_commit(conn: &Connection, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let broker = &conn.ctx.broker;
    let group = req.group_id.0.as_str().to_owned();
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Read, Resource::Group(&group)) {
        return OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // Partitions of unknown topics are answered individually; the rest commit as one batch.
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
    let mut batch = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        if !check(conn, &who, Operation::Read, Resource::Topic(name)) {
            codes.push(vec![errors::TOPIC_AUTHORIZATION_FAILED; t.partitions.len()]);
            continue;
        }
        let partitions = match broker.topic(name).await {
            Ok(info) => info.map(|i| i.partitions),
            Err(e) => {
                codes.push(vec![crate::errors::code(&e); t.partitions.len()]);
                continue;
            }
        };
        let mut row = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            match (partitions, u32::try_from(p.partition_index)) {
                (Some(n), Ok(idx)) if idx < n => {
                    row.push(errors::NONE);
                    batch.push((
                        name.to_owned(),
                        idx,
                        Committed {
                            offset: p.committed_offset,
                            metadata: opt(&p.committed_metadata),
                            leader_epoch: p.committed_leader_epoch,
                            commit_ms: now_ms,
                        },
                    ));
                }
                _ => row.push(errors::UNKNOWN_TOPIC_OR_PARTITION),
            }
        }
        codes.push(row);
    }
    let result = broker
        .groups()
        .commit(
            &group,
            req.member_id.as_str(),
            req.generation_id_or_member_epoch,
            req.group_instance_id.as_ref().map(|x| x.as_str()),
            batch,
        )
        .await;
    let failure = result.err().map(|e| admin_code(&e));
    let topics = req
        .topics
        .iter()
        .zip(codes)
        .map(|(t, row)| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(row)
                        .map(|(p, code)| {
                            let code = if code == errors::NONE {
                                failure.unwrap_or(code)
                            } else {
                                code
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A topic's partitions with their committed offsets.
type TopicOffsets = (TopicName, Vec<(i32, Option<Committed>)>);

/// A group's committed offsets: `Err` with GROUP_AUTHORIZATION_FAILED if the group may not be
/// described; topics the client may not describe are refused when named (their partitions
/// answer TOPIC_AUTHORIZATION_FAILED) and left out when all are asked for.
fn fetch_group(
    conn: &Connection,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<(TopicOffsets, i16)>, i16> {
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Describe, Resource::Group(group)) {
        return Err(errors::GROUP_AUTHORIZATION_FAILED);
    }
    let groups = conn.ctx.broker.groups();
    Ok(match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, parts)| {
                if !check(
                    conn,
                    &who,
                    Operation::Describe,
                    Resource::Topic(name.0.as_str()),
                ) {
                    let rows = parts.into_iter().map(|p| (p, None)).collect();
                    return ((name, rows), errors::TOPIC_AUTHORIZATION_FAILED);
                }
                let rows = parts
                    .into_iter()
                    .map(|p| {
                        let c = u32::try_from(p).ok().and_then(|idx| {
                            groups
                                .fetch(group, Some(&[(name.0.as_str().to_owned(), idx)]))
                                .into_iter()
                                .next()
                                .and_then(|(_, _, c)| c)
                        });
                        (p, c)
                    })
                    .collect();
                ((name, rows), errors::NONE)
            })
            .collect(),
        None => {
            let mut out: Vec<(TopicOffsets, i16)> = Vec::new();
            for (t, p, c) in groups.fetch(group, None) {
                let idx = p as i32;
                match out.last_mut() {
                    Some(((name, rows), _)) if name.0.as_str() == t => rows.push((idx, c)),
                    _ if !permits(conn, &who, Operation::Describe, Resource::Topic(&t)) => {}
                    _ => out.push(((TopicName(s(t)), vec![(idx, c)]), errors::NONE)),
                }
            }
            out
        }
    })
}

pub fn offset_fetch(
    conn: &Connection,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let rows = match fetch_group(conn, g.group_id.0.as_str(), topics) {
                    Ok(rows) => rows,
                    Err(code) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id)
                            .with_error_code(code);
                    }
                };
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(
                        rows.into_iter()
                            .map(|((name, parts), code)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(name)
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, c)| {
                                                let (offset, epoch, meta) = committed_fields(c);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(meta)
                                                    .with_error_code(code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let rows = match fetch_group(conn, req.group_id.0.as_str(), topics) {
        Ok(rows) => rows,
        // v2+ has a top-level error code; v1 clients see it on no partition at all.
        Err(code) => return OffsetFetchResponse::default().with_error_code(code),
    };
    OffsetFetchResponse::default().with_topics(
        rows.into_iter()
            .map(|((name, parts), code)| {
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, c)| {
                                let (offset, epoch, meta) = committed_fields(c);
                                let mut r = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_metadata(meta)
                                    .with_error_code(code);
                                if version >= 5 {
                                    r = r.with_committed_leader_epoch(epoch);
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn committed_fields(c: Option<Committed>) -> (i64, i32, Option<StrBytes>) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(s(c.metadata.unwrap_or_default())),
        ),
        // Kafka answers a partition without a committed offset with -1 and empty metadata.
        None => (-1, -1, Some(s(""))),
    }
}

pub fn list_groups(conn: &Connection, req: ListGroupsRequest) -> ListGroupsResponse {
    let wanted: Vec<String> = req
        .states_filter
        .iter()
        .map(|x| x.as_str().to_owned())
        .collect();
    let who = authz::subject(conn);
    let all = permits(conn, &who, Operation::Describe, Resource::Cluster);
    let groups = conn
        .ctx
        .broker
        .groups()
        .list()
        .into_iter()
        .filter(|g| {
            all || permits(
                conn,
                &who,
                Operation::Describe,
                Resource::Group(&g.group_id),
            )
        })
        .filter(|g| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(g.state.as_str()))
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(s(g.group_id)))
                .with_protocol_type(s(g.protocol_type))
                .with_group_state(s(g.state.as_str()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(conn: &Connection, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let include_operations = req.include_authorized_operations;
    let who = authz::subject(conn);
    let groups = req
        .groups
        .into_iter()
        .map(|g| {
            if !check(
                conn,
                &who,
                Operation::Describe,
                Resource::Group(g.0.as_str()),
            ) {
                return DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
                    .with_authorized_operations(i32::MIN);
            }
            let d = conn.ctx.broker.groups().describe(g.0.as_str());
            let operations = if include_operations {
                authz::operations_mask(conn, &who, Resource::Group(g.0.as_str()), authz::GROUP_OPS)
            } else {
                i32::MIN
            };
            DescribedGroup::default()
                .with_authorized_operations(operations)
                .with_group_id(g)
                .with_group_state(s(d.state.as_str()))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol_name))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(s))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(Bytes::from(m.metadata))
                                .with_member_assignment(Bytes::from(m.assignment))
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(conn: &Connection, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let who = authz::subject(conn);
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        if !check(conn, &who, Operation::Delete, Resource::Group(g.0.as_str())) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(errors::GROUP_AUTHORIZATION_FAILED),
            );
            continue;
        }
        let code = match conn.ctx.broker.groups().delete(g.0.as_str()).await {
            Ok(()) => errors::NONE,
            Err(e) => admin_code(&e),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(conn: &Connection, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.as_str();
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Delete, Resource::Group(group)) {
        return OffsetDeleteResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED);
    }
    let allowed: Vec<bool> = req
        .topics
        .iter()
        .map(|t| {
            check(
                conn,
                &who,
                Operation::Read,
                Resource::Topic(t.name.0.as_str()),
            )
        })
        .collect();
    let partitions: Vec<(String, u32)> = req
        .topics
        .iter()
        .zip(&allowed)
        .filter(|(_, ok)| **ok)
        .flat_map(|(t, _)| {
            t.partitions.iter().filter_map(move |p| {
                u32::try_from(p.partition_index)
                    .ok()
                    .map(|i| (t.name.0.as_str().to_owned(), i))
            })
        })
        .collect();
    let result = conn
        .ctx
        .broker
        .groups()
        .delete_offsets(group, partitions)
        .await;
    let (top, per_partition) = match &result {
        Ok(_) => (errors::NONE, errors::NONE),
        Err(AdminError::GroupActive(_)) => (errors::NONE, GROUP_SUBSCRIBED_TO_TOPIC),
        Err(AdminError::Group(e)) => (e.kafka_code(), errors::NONE),
        Err(AdminError::Broker(e)) => (errors::code(e), errors::NONE),
    };
    let topics = req
        .topics
        .into_iter()
        .zip(allowed)
        .map(|(t, ok)| {
            let code = if ok {
                per_partition
            } else {
                errors::TOPIC_AUTHORIZATION_FAILED
            };
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default()
        .with_error_code(top)
        .with_topics(topics)
}
