//! Which APIs and versions Herald answers, advertised in ApiVersions.

use kafka_protocol::messages::ApiKey;

/// (api, min, max) advertised to clients. The maxima stop before versions that identify topics
/// by id only (Produce 13, Fetch 13), which no client in use requires.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // Produce is advertised from v0 because librdkafka expects it; v0–2 requests are refused
    // as current Kafka does (see handlers::produce).
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    // Advertised so that librdkafka enables LZ4 (it gates the codec on this API); group
    // membership itself arrives with the consumer-group APIs.
    (ApiKey::FindCoordinator, 0, 4),
];

pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether the `kafka-protocol` crate can decode this version (its own minimum may be higher
/// than what Herald advertises, as for Produce).
pub fn decodable(key: ApiKey, version: i16) -> bool {
    let r = key.valid_versions();
    version >= r.min && version <= r.max
}
