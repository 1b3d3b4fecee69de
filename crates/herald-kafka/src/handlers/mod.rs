//! Request dispatch: framing checks, the pre-scan, decoding, then one handler per API. The
//! handlers live in one module per API family; groups, ACL/SCRAM administration and SASL are
//! the crate's `groups`, `admin` and `sasl` modules.

mod configs;
mod fetch;
mod metadata;
mod produce;
mod topics;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use herald_auth::quota::QuotaKind;

use crate::authz::{self};
use crate::conn::{Connection, Fatal};
use crate::errors::{self};
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
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::metadata(conn, r, version).await)
        }
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let bytes = r
                .topic_data
                .iter()
                .flat_map(|t| &t.partition_data)
                .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
                .sum();
            let mut resp = produce::produce(conn, r).await;
            resp.throttle_time_ms = throttle_ms(conn, QuotaKind::Produce, bytes);
            if acks == 0 {
                return Ok(None);
            }
            ResponseKind::Produce(resp)
        }
        RequestKind::Fetch(r) => {
            let mut resp = fetch::fetch(conn, r).await;
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
            ResponseKind::ListOffsets(fetch::list_offsets(conn, r, version).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(topics::create_topics(conn, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::delete_topics(conn, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(topics::delete_records(conn, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(conn, r).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::alter_configs(conn, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter_configs(conn, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::create_partitions(conn, r).await)
        }
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(
            metadata::describe_cluster(conn, r.include_cluster_authorized_operations),
        ),
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
            ResponseKind::FindCoordinator(metadata::find_coordinator(conn, r, version))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(produce::init_producer_id(conn, r))
        }
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
