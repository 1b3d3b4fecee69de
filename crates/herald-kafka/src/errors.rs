//! Kafka error codes and the mapping from Herald's errors. The codes are `kafka-protocol`'s
//! `ResponseError`s, named once here so handlers read as Kafka's documentation does.

use herald_broker::{BrokerError, Existing, Missing};
use kafka_protocol::error::ResponseError;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = ResponseError::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
pub const REQUEST_TIMED_OUT: i16 = ResponseError::RequestTimedOut.code();
pub const MESSAGE_TOO_LARGE: i16 = ResponseError::MessageTooLarge.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = ResponseError::InvalidTopicException.code();
pub const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
pub const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
pub const TOPIC_ALREADY_EXISTS: i16 = ResponseError::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = ResponseError::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = ResponseError::InvalidReplicationFactor.code();
pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
pub const INVALID_CONFIG: i16 = ResponseError::InvalidConfig.code();
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
pub const UNKNOWN_PRODUCER_ID: i16 = ResponseError::UnknownProducerId.code();
pub const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();
pub const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
pub const TOPIC_AUTHORIZATION_FAILED: i16 = ResponseError::TopicAuthorizationFailed.code();
pub const GROUP_AUTHORIZATION_FAILED: i16 = ResponseError::GroupAuthorizationFailed.code();
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = ResponseError::ClusterAuthorizationFailed.code();
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 =
    ResponseError::TransactionalIdAuthorizationFailed.code();
pub const RESOURCE_NOT_FOUND: i16 = ResponseError::ResourceNotFound.code();
pub const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
pub const ILLEGAL_SASL_STATE: i16 = ResponseError::IllegalSaslState.code();
pub const SASL_AUTHENTICATION_FAILED: i16 = ResponseError::SaslAuthenticationFailed.code();
pub const DUPLICATE_RESOURCE: i16 = ResponseError::DuplicateResource.code();
pub const UNACCEPTABLE_CREDENTIAL: i16 = ResponseError::UnacceptableCredential.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = ResponseError::GroupSubscribedToTopic.code();
pub const NON_EMPTY_GROUP: i16 = ResponseError::NonEmptyGroup.code();

/// The Kafka error code for a broker error, and whether its message should be passed on.
/// `UNKNOWN_TOPIC_OR_PARTITION` is retriable for clients, which is what a Kafka broker answers
/// for a topic it does not have.
pub fn code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Invalid(_) => INVALID_REQUEST,
        BrokerError::InvalidEvent(_) => INVALID_RECORD,
        BrokerError::NotFound(Missing::Topic(_) | Missing::Partition { .. }) => {
            UNKNOWN_TOPIC_OR_PARTITION
        }
        BrokerError::NotFound(Missing::Group(_)) => ResponseError::GroupIdNotFound.code(),
        // Kafka's answer for a SCRAM credential or another named resource that is not there.
        BrokerError::NotFound(
            Missing::User(_) | Missing::Credential { .. } | Missing::ApiKey(_) | Missing::Tenant(_),
        ) => RESOURCE_NOT_FOUND,
        BrokerError::Conflict(Existing::Topic(_)) => TOPIC_ALREADY_EXISTS,
        // No Kafka API creates tenants; the nearest code says the resource is already there.
        BrokerError::Conflict(Existing::Tenant(_)) => DUPLICATE_RESOURCE,
        BrokerError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        BrokerError::TooLarge(_) => MESSAGE_TOO_LARGE,
        BrokerError::OutOfOrderSequence(_) => OUT_OF_ORDER_SEQUENCE_NUMBER,
        BrokerError::InvalidProducerEpoch(_) => INVALID_PRODUCER_EPOCH,
        BrokerError::UnknownProducerId(_) => UNKNOWN_PRODUCER_ID,
        BrokerError::Unavailable(_) => REQUEST_TIMED_OUT,
        BrokerError::Forbidden(_) => TOPIC_AUTHORIZATION_FAILED,
        // Not retriable: the storage backend cannot do this at all.
        BrokerError::Unsupported(_) => INVALID_REQUEST,
        BrokerError::StorageFull(_) | BrokerError::Internal(_) => KAFKA_STORAGE_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use herald_broker::{BrokerError, Existing, Missing};

    use super::*;

    /// What was not found decides the code: a client told UNKNOWN_TOPIC_OR_PARTITION about a
    /// group or a user would retry, or look for a topic.
    #[test]
    fn not_found_and_conflict_name_what() {
        let nf = |m| code(&BrokerError::NotFound(m));
        assert_eq!(nf(Missing::Topic("t".into())), UNKNOWN_TOPIC_OR_PARTITION);
        assert_eq!(
            nf(Missing::Partition {
                topic: "t".into(),
                partition: 3
            }),
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(nf(Missing::Group("g".into())), 69, "GROUP_ID_NOT_FOUND");
        assert_eq!(nf(Missing::User("u".into())), RESOURCE_NOT_FOUND);
        assert_eq!(
            nf(Missing::Credential {
                user: "u".into(),
                mechanism: "SCRAM-SHA-256"
            }),
            RESOURCE_NOT_FOUND
        );
        assert_eq!(nf(Missing::ApiKey("k".into())), RESOURCE_NOT_FOUND);
        assert_eq!(nf(Missing::Tenant("t".into())), RESOURCE_NOT_FOUND);
        let ex = |e| code(&BrokerError::Conflict(e));
        assert_eq!(ex(Existing::Topic("t".into())), TOPIC_ALREADY_EXISTS);
        assert_eq!(ex(Existing::Tenant("t".into())), 92, "DUPLICATE_RESOURCE");
    }
}
