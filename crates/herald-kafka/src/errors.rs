//! Kafka error codes and the mapping from Herald's errors.

use herald_broker::BrokerError;

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
        BrokerError::NotFound(_) => UNKNOWN_TOPIC_OR_PARTITION,
        BrokerError::Conflict(_) => TOPIC_ALREADY_EXISTS,
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
