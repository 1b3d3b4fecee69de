//! Kafka error codes and the mapping from Herald's errors.

use herald_broker::{BrokerError, Existing, Missing};
use kafka_protocol::error::ResponseError;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REQUEST: i16 = 42;
pub const INVALID_CONFIG: i16 = 40;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const INVALID_RECORD: i16 = 87;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

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
        BrokerError::Conflict(Existing::Tenant(_)) => ResponseError::DuplicateResource.code(),
        BrokerError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        BrokerError::TooLarge(_) => MESSAGE_TOO_LARGE,
        BrokerError::OutOfOrderSequence(_) => OUT_OF_ORDER_SEQUENCE_NUMBER,
        BrokerError::InvalidProducerEpoch(_) => INVALID_PRODUCER_EPOCH,
        BrokerError::UnknownProducerId(_) => UNKNOWN_PRODUCER_ID,
        BrokerError::Unavailable(_) => REQUEST_TIMED_OUT,
        BrokerError::Forbidden(_) => TOPIC_AUTHORIZATION_FAILED,
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
