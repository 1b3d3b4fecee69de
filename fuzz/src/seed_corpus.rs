//! Writes a seed corpus for `kafka_request`: requests of every API Herald pre-scans, at every
//! version, encoded by `kafka-protocol` as a client would — empty ones and ones with populated
//! arrays, strings, bytes and tagged fields.
//!
//! Usage: cargo run --release --bin seed_corpus -- corpus/kafka_request

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn default_request(key: ApiKey) -> Option<RequestKind> {
    macro_rules! defaults {
        ($($api:ident => $ty:ident),* $(,)?) => {
            match key {
                $(ApiKey::$api => Some(RequestKind::$api($ty::default())),)*
                _ => None,
            }
        };
    }
    defaults! {
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        InitProducerId => InitProducerIdRequest,
        DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DescribeCluster => DescribeClusterRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        ListGroups => ListGroupsRequest,
        DescribeGroups => DescribeGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        SaslHandshake => SaslHandshakeRequest,
        SaslAuthenticate => SaslAuthenticateRequest,
        CreateAcls => CreateAclsRequest,
        DescribeAcls => DescribeAclsRequest,
        DeleteAcls => DeleteAclsRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest,
        CreatePartitions => CreatePartitionsRequest,
    }
}

/// A few requests with nested arrays populated; fields a version lacks make the encoder refuse
/// that version, which the caller skips.
fn populated(key: ApiKey) -> Vec<RequestKind> {
    let topic = |n: &'static str| TopicName(s(n));
    match key {
        ApiKey::Produce => vec![RequestKind::Produce(
            ProduceRequest::default().with_acks(1).with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic("t"))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from_static(b"records"))),
                        produce_request::PartitionProduceData::default()
                            .with_index(1)
                            .with_records(None),
                    ]),
            ]),
        )],
        ApiKey::Metadata => vec![RequestKind::Metadata(
            MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic("a"))),
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic("b"))),
            ])),
        )],
        ApiKey::Fetch => vec![RequestKind::Fetch(
            FetchRequest::default()
                .with_cluster_id(Some(s("c")))
                .with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default().with_partition(0),
                        ]),
                ]),
        )],
        ApiKey::CreateTopics => vec![RequestKind::CreateTopics(
            CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic("t"))
                    .with_assignments(vec![
                        create_topics_request::CreatableReplicaAssignment::default()
                            .with_broker_ids(vec![BrokerId(0)]),
                    ])
                    .with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(s("k"))
                            .with_value(None),
                    ]),
            ]),
        )],
        ApiKey::JoinGroup => vec![RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"meta")),
                ]),
        )],
        ApiKey::DescribeConfigs => vec![RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_name(s("t"))
                    .with_configuration_keys(Some(vec![s("a"), s("b")])),
            ]),
        )],
        _ => Vec::new(),
    }
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/kafka_request".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut written = 0;
    for raw in 0..i16::MAX {
        let Ok(key) = ApiKey::try_from(raw) else {
            continue;
        };
        let Some(empty) = default_request(key) else {
            continue;
        };
        let range = key.valid_versions();
        for version in range.min..=range.max {
            let hv = key.request_header_version(version);
            for (i, req) in std::iter::once(empty.clone())
                .chain(populated(key))
                .enumerate()
            {
                let mut buf = BytesMut::new();
                let header = RequestHeader::default()
                    .with_request_api_key(raw)
                    .with_request_api_version(version)
                    .with_correlation_id(1)
                    .with_client_id(Some(s("seed")));
                if header.encode(&mut buf, hv).is_err() || req.encode(&mut buf, version).is_err() {
                    continue;
                }
                std::fs::write(dir.join(format!("{key:?}-v{version}-{i}")), &buf)?;
                written += 1;
            }
        }
    }
    println!("wrote {written} seeds to {}", dir.display());
    Ok(())
}
