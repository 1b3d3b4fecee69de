//! Request dispatch and one handler per API.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use herald_broker::{BrokerError, config_entries};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsResponse, BrokerId,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest,
    FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use herald_auth::acl::Operation;
use herald_auth::authz::{Resource, Subject};
use herald_auth::quota::QuotaKind;

use crate::authz::{self, check, permits};
use crate::conn::{Connection, Fatal};
use crate::errors::{self, code};
use crate::versions;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn topic_name(t: &TopicName) -> &str {
    t.0.as_str()
}

/// Decodes, handles and encodes one request. `Ok(None)` means no response is due (acks=0).
pub async fn handle(conn: &Connection, frame: Bytes) -> Result<Option<BytesMut>, Fatal> {
    let mut peek = frame.clone();
    if peek.remaining() < 8 {
        return Err(Fatal::Malformed("short request header".into()));
    }
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let key = ApiKey::try_from(raw_key).map_err(|_| Fatal::UnknownApi(raw_key))?;
    let Some((min, max)) = versions::range(key) else {
        return Err(Fatal::UnknownApi(raw_key));
    };
    if !conn.sasl.lock().admits(key) {
        crate::sasl::record_failure(conn, "unauthenticated", format!("{key:?}"));
        return Err(Fatal::Malformed(format!(
            "{key:?} request before SASL authentication"
        )));
    }
    if key == ApiKey::ApiVersions && !(min..=max).contains(&version) {
        // Kafka answers an ApiVersions it cannot parse with v0 and UNSUPPORTED_VERSION, so the
        // client can retry with a version from the list.
        return Ok(Some(encode_response(
            key,
            0,
            correlation_id,
            ResponseKind::ApiVersions(api_versions(errors::UNSUPPORTED_VERSION)),
        )?));
    }
    if !(min..=max).contains(&version) {
        return Err(Fatal::UnsupportedVersion(key, version));
    }
    if key == ApiKey::Produce && version < 3 {
        return Ok(Some(legacy_produce_rejection(
            frame,
            version,
            correlation_id,
        )?));
    }
    if !versions::decodable(key, version) {
        return Err(Fatal::UnsupportedVersion(key, version));
    }
    // Prove every count and length fits before the decoder allocates for it.
    let header_version = key.request_header_version(version);
    crate::check_request(key, version, header_version, &frame).map_err(Fatal::Malformed)?;
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| Fatal::Malformed(format!("request header: {e}")))?;
    let request = RequestKind::decode(key, &mut buf, version)
        .map_err(|e| Fatal::Malformed(format!("{key:?} v{version}: {e}")))?;
    metrics::counter!("kafka_requests_total", "api" => format!("{key:?}")).increment(1);
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(errors::NONE)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(conn, r, version).await),
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let bytes = r
                .topic_data
                .iter()
                .flat_map(|t| &t.partition_data)
                .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
                .sum();
            let mut resp = produce(conn, r).await;
            resp.throttle_time_ms = throttle_ms(conn, QuotaKind::Produce, bytes);
            if acks == 0 {
                return Ok(None);
            }
            ResponseKind::Produce(resp)
        }
        RequestKind::Fetch(r) => {
            let mut resp = fetch(conn, r).await;
            let bytes = resp
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
                .sum();
            resp.throttle_time_ms = throttle_ms(conn, QuotaKind::Fetch, bytes);
            ResponseKind::Fetch(resp)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets(conn, r, version).await)
        }
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics(conn, r).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics(conn, r).await),
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(delete_records(conn, r).await),
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(describe_configs(conn, r)),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(alter_configs(conn, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs(conn, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions(conn, r).await)
        }
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(describe_cluster(
            conn,
            r.include_cluster_authorized_operations,
        )),
        RequestKind::JoinGroup(r) => {
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default();
            ResponseKind::JoinGroup(crate::groups::join(conn, r, version, client_id).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(crate::groups::sync(conn, r).await),
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(crate::groups::heartbeat(conn, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(crate::groups::leave(conn, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(crate::groups::offset_commit(conn, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(crate::groups::offset_fetch(conn, r, version))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(crate::groups::list_groups(conn, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(crate::groups::describe_groups(conn, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(crate::groups::delete_groups(conn, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(crate::groups::offset_delete(conn, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(conn, r, version))
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(init_producer_id(conn, r)),
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(crate::admin::create_acls(conn, r).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(crate::admin::describe_acls(conn, r))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(crate::admin::delete_acls(conn, r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(
            crate::admin::describe_user_scram_credentials(conn, r),
        ),
        RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
            crate::admin::alter_user_scram_credentials(conn, r).await,
        ),
        RequestKind::SaslHandshake(r) => {
            ResponseKind::SaslHandshake(crate::sasl::handshake(conn, r))
        }
        RequestKind::SaslAuthenticate(r) => {
            ResponseKind::SaslAuthenticate(crate::sasl::authenticate(conn, r))
        }
        other => {
            return Err(Fatal::Malformed(format!(
                "no handler for {:?}",
                std::mem::discriminant(&other)
            )));
        }
    };
    Ok(Some(encode_response(
        key,
        version,
        header.correlation_id,
        response,
    )?))
}

/// Records `bytes` against the connection's byte-rate quota; returns the throttle time to
/// report and mutes the connection for it after the response (KIP-219).
fn throttle_ms(conn: &Connection, kind: QuotaKind, bytes: u64) -> i32 {
    let quotas = conn.ctx.broker.security().quotas();
    if !quotas.any() {
        return 0;
    }
    let who = authz::subject(conn);
    let d = quotas.record(&who, kind, bytes, std::time::Instant::now());
    if d.is_zero() {
        return 0;
    }
    metrics::counter!("quota_throttled_total", "interface" => "kafka").increment(1);
    *conn.throttle.lock() = d;
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn encode_response(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: ResponseKind,
) -> Result<BytesMut, Fatal> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, key.response_header_version(version))
        .map_err(|e| Fatal::Malformed(format!("encoding response header: {e}")))?;
    response
        .encode(&mut out, version)
        .map_err(|e| Fatal::Malformed(format!("encoding {key:?} v{version} response: {e}")))?;
    let len =
        i32::try_from(out.len() - 4).map_err(|_| Fatal::Malformed("response too large".into()))?;
    if let Some(slot) = out.get_mut(0..4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            versions::SUPPORTED
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

/// Produce v0–2 carry message-set formats current Kafka no longer accepts. The request is
/// parsed just far enough to answer every partition with UNSUPPORTED_VERSION in the old
/// response layout, which the crate no longer encodes.
fn legacy_produce_rejection(
    frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<BytesMut, Fatal> {
    let bad = || Fatal::Malformed("truncated produce v0-2 request".into());
    let mut b = frame;
    b.advance(8);
    let client_len = b.try_get_i16().map_err(|_| bad())?;
    if client_len > 0 {
        let n = usize::try_from(client_len).map_err(|_| bad())?;
        if b.remaining() < n {
            return Err(bad());
        }
        b.advance(n);
    }
    let _acks = b.try_get_i16().map_err(|_| bad())?;
    let _timeout = b.try_get_i32().map_err(|_| bad())?;
    let topics = b.try_get_i32().map_err(|_| bad())?;
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    let topics = usize::try_from(topics).map_err(|_| bad())?;
    // Every topic costs at least 6 bytes on the wire: bound the count by what is there.
    if topics > b.remaining() / 6 + 1 {
        return Err(bad());
    }
    out.put_i32(topics as i32);
    for _ in 0..topics {
        let name_len = usize::try_from(b.try_get_i16().map_err(|_| bad())?).map_err(|_| bad())?;
        if b.remaining() < name_len {
            return Err(bad());
        }
        let name = b.copy_to_bytes(name_len);
        out.put_i16(name_len as i16);
        out.put_slice(&name);
        let parts = usize::try_from(b.try_get_i32().map_err(|_| bad())?).map_err(|_| bad())?;
        if parts > b.remaining() / 8 + 1 {
            return Err(bad());
        }
        out.put_i32(parts as i32);
        for _ in 0..parts {
            let index = b.try_get_i32().map_err(|_| bad())?;
            let size = usize::try_from(b.try_get_i32().map_err(|_| bad())?).map_err(|_| bad())?;
            if b.remaining() < size {
                return Err(bad());
            }
            b.advance(size);
            out.put_i32(index);
            out.put_i16(errors::UNSUPPORTED_VERSION);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    let len = (out.len() - 4) as i32;
    if let Some(slot) = out.get_mut(0..4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

/// A stable id for a topic, derived from its name and creation time (a recreated topic gets a
/// new id, as in Kafka).
fn topic_id(name: &str, created_ms: i64) -> uuid::Uuid {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    uuid::Uuid::from_u64_pair(h, created_ms as u64 | 1)
}

fn broker_entry(conn: &Connection) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(conn.ctx.cfg.node_id))
        .with_host(s(conn.advertised.host.clone()))
        .with_port(i32::from(conn.advertised.port))
}

fn metadata_topic(
    conn: &Connection,
    who: &Subject,
    info: &herald_log::TopicInfo,
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

async fn metadata(conn: &Connection, req: MetadataRequest, version: i16) -> MetadataResponse {
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
        None => broker
            .log()
            .list_topics("")
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
                let mut info = broker.log().topic(&name);
                if info.is_none()
                    && allow_create
                    && broker.may_auto_create(&name)
                    && may_create(conn, &who, &name)
                {
                    info = broker
                        .ensure_topic(&name)
                        .await
                        .ok()
                        .and_then(|_| broker.log().topic(&name));
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
fn may_create(conn: &Connection, who: &Subject, name: &str) -> bool {
    permits(conn, who, Operation::Create, Resource::Cluster)
        || permits(conn, who, Operation::Create, Resource::Topic(name))
        || permits(conn, who, Operation::Write, Resource::Topic(name))
}

async fn produce(conn: &Connection, req: ProduceRequest) -> ProduceResponse {
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
            && (broker.log().topic(&name).is_some()
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
async fn produce_partition(
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
        match broker.produce_batch(topic, partition, batch.to_vec()).await {
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

async fn fetch(conn: &Connection, req: FetchRequest) -> FetchResponse {
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
                    let stats = broker.log().partition_stats(&name, partition);
                    parts.push(match stats {
                        Ok(st) => resp
                            .with_high_watermark(st.high_watermark as i64)
                            .with_last_stable_offset(st.high_watermark as i64)
                            .with_log_start_offset(st.log_start as i64),
                        Err(_) => resp.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION),
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
        if total >= min_bytes.max(1) || had_error || now >= deadline || waiters.is_empty() {
            return FetchResponse::default().with_responses(responses);
        }
        let waits = waiters
            .into_iter()
            .map(|w| Box::pin(w.wait_until(deadline)));
        futures_util::future::select_all(waits).await;
    }
}

async fn list_offsets(
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
            let stats = match broker.log().partition_stats(&name, partition) {
                Ok(s) => s,
                Err(_) => {
                    parts.push(resp.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION));
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

async fn create_topics(conn: &Connection, req: CreateTopicsRequest) -> CreateTopicsResponse {
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

async fn create_topic(
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
        let r = match (broker.log().topic(&name), broker.validate_config(&config)) {
            (Some(_), _) => result
                .with_error_code(errors::TOPIC_ALREADY_EXISTS)
                .with_error_message(Some(s(format!("topic {name} already exists")))),
            (None, Err(e)) => result
                .with_error_code(errors::INVALID_CONFIG)
                .with_error_message(Some(s(e.to_string()))),
            (None, Ok(())) => result.with_error_code(errors::NONE),
        };
        return r;
    }
    match broker.create_topic(&name, partitions, config).await {
        Ok(d) => {
            let info = broker.log().topic(&name);
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

async fn delete_topics(conn: &Connection, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
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

async fn delete_records(conn: &Connection, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
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
                match broker.log().partition_stats(&name, partition) {
                    Ok(st) => st.high_watermark,
                    Err(_) => {
                        parts.push(r.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION));
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

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn describe_configs(conn: &Connection, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
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
            RESOURCE_TOPIC => match broker.log().topic(&name) {
                None => {
                    results.push(
                        result
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(s(format!("topic {name} does not exist")))),
                    );
                    continue;
                }
                Some(info) => config_entries(&info.config, broker.config().default_retention_ms)
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
fn config_denial(
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

fn config_type(_read_only: bool) -> i8 {
    // STRING: every value is reported as text, as Redpanda does for most keys.
    2
}

fn broker_configs(conn: &Connection) -> Vec<(String, String)> {
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

async fn alter_configs(conn: &Connection, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let broker = &conn.ctx.broker;
    let who = authz::subject(conn);
    let mut out = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        if let Some(denied) = config_denial(
            conn,
            &who,
            r.resource_type,
            r.resource_name.as_str(),
            Operation::AlterConfigs,
        ) {
            out.push(
                resp.with_error_code(denied)
                    .with_error_message(Some(s("Authorization failed."))),
            );
            continue;
        }
        if r.resource_type != RESOURCE_TOPIC {
            out.push(
                resp.with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(s("only topic configurations can be altered"))),
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

fn config_error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Invalid(_) => errors::INVALID_CONFIG,
        other => code(other),
    }
}

async fn incremental_alter_configs(
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
        if let Some(denied) = config_denial(
            conn,
            &who,
            r.resource_type,
            r.resource_name.as_str(),
            Operation::AlterConfigs,
        ) {
            out.push(
                resp.with_error_code(denied)
                    .with_error_message(Some(s("Authorization failed."))),
            );
            continue;
        }
        if r.resource_type != RESOURCE_TOPIC {
            out.push(
                resp.with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(s("only topic configurations can be altered"))),
            );
            continue;
        }
        let name = r.resource_name.as_str().to_owned();
        let Some(info) = broker.log().topic(&name) else {
            out.push(
                resp.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_error_message(Some(s(format!("topic {name} does not exist")))),
            );
            continue;
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

async fn create_partitions(
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
        let current = broker.log().topic(&name).map(|i| i.partitions);
        let outcome = match current {
            None => Err((
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name} does not exist"),
            )),
            Some(c) if total <= c => Err((
                errors::INVALID_PARTITIONS,
                format!("topic {name} has {c} partitions; the count can only grow"),
            )),
            Some(_) if req.validate_only => Ok(()),
            Some(_) => broker.create_partitions(&name, total).await.map_err(|e| {
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

const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Herald is a single node, so it coordinates every group itself. Transactions are not
/// supported, so no transaction coordinator is offered.
fn find_coordinator(
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
                COORDINATOR_NOT_AVAILABLE,
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

fn describe_cluster(conn: &Connection, include_operations: bool) -> DescribeClusterResponse {
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

fn init_producer_id(
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
