//! The errors of the cluster client, and how they map onto the broker's.

use herald_broker::{BrokerError, Existing, Missing};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Why [`crate::KafkaCluster::connect`] could not reach a usable cluster. Each message says
/// what to check.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration itself is refused (an unknown or malformed client property).
    #[error("invalid Kafka cluster configuration: {0}")]
    Config(String),
    /// The client itself could not start (a thread or task of this process failed).
    #[error("the Kafka cluster client could not start: {0}")]
    Client(String),
    /// No broker answered within the timeout.
    #[error(
        "no Kafka broker answered at {bootstrap} within {timeout_secs} s ({detail}); check that \
         the addresses are right, the brokers are running and reachable from this host, and \
         that security.protocol matches the listener"
    )]
    Unreachable {
        bootstrap: String,
        timeout_secs: u64,
        detail: String,
    },
    /// A broker answered but refused the credentials.
    #[error(
        "the Kafka cluster at {bootstrap} refused the credentials of {user:?} ({mechanism}): \
         {detail}; check sasl.username, sasl.password and sasl.mechanism, and that the user \
         exists on the cluster"
    )]
    AuthenticationFailed {
        bootstrap: String,
        mechanism: String,
        user: String,
        detail: String,
    },
    /// The TLS handshake failed (certificate not trusted, wrong host name, no TLS listener).
    #[error(
        "TLS with the Kafka cluster at {bootstrap} failed: {detail}; check ssl.ca.location and \
         that the listener speaks TLS"
    )]
    Tls { bootstrap: String, detail: String },
    /// Connected and authenticated, but the principal lacks a permission Herald needs.
    #[error(
        "the Kafka cluster at {bootstrap} denies {principal} {operation}; grant it with an ACL \
         (e.g. kafka-acls --add --allow-principal {principal} --operation {acl_operation} \
         --cluster) or use a principal that has it"
    )]
    PermissionDenied {
        bootstrap: String,
        principal: String,
        operation: &'static str,
        acl_operation: &'static str,
    },
}

/// The errors of cluster operations. Converts into [`BrokerError`] for the interfaces.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The request breaks a rule of the cluster (bad config, policy, invalid partition count).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(Missing),
    #[error("{0}")]
    Conflict(Existing),
    /// A read starts outside the partition's retained offsets.
    #[error(
        "offset {offset} of {topic}/{partition} is out of range: the partition holds offsets \
         {log_start} to {high_watermark} (exclusive)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start: u64,
        high_watermark: u64,
    },
    /// Offsets of a group with active members cannot be changed.
    #[error(
        "consumer group {group} has {members} active member(s); stop its consumers before \
         changing or deleting its offsets"
    )]
    GroupNotEmpty { group: String, members: usize },
    /// The record or request exceeds a size limit of the cluster.
    #[error("{0}")]
    TooLarge(String),
    /// The cluster's ACLs deny the operation to Herald's principal.
    #[error("{0}")]
    Forbidden(String),
    /// Too much is queued already; retrying later may succeed.
    #[error("{0}")]
    Overloaded(String),
    /// The cluster did not answer in time or is unreachable; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the client or the cluster, not of the request.
    #[error("{0}")]
    Internal(String),
}

impl From<ClusterError> for BrokerError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Invalid(m) => BrokerError::Invalid(m),
            ClusterError::NotFound(m) => BrokerError::NotFound(m),
            ClusterError::Conflict(x) => BrokerError::Conflict(x),
            e @ ClusterError::OffsetOutOfRange {
                log_start,
                high_watermark,
                ..
            } => BrokerError::OffsetOutOfRange {
                message: e.to_string(),
                log_start,
                high_watermark,
            },
            e @ ClusterError::GroupNotEmpty { .. } => BrokerError::Invalid(e.to_string()),
            ClusterError::TooLarge(m) => BrokerError::TooLarge(m),
            ClusterError::Forbidden(m) => BrokerError::Forbidden(m),
            ClusterError::Overloaded(m) | ClusterError::Unavailable(m) => {
                BrokerError::Unavailable(m)
            }
            ClusterError::Internal(m) => BrokerError::Internal(m),
        }
    }
}

/// What an operation was about, so that an error code becomes the right typed error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Topic(&'a str),
    Partition(&'a str, u32),
    Group(&'a str),
    Cluster,
}

impl Subject<'_> {
    fn missing(self) -> Option<Missing> {
        match self {
            Subject::Topic(t) => Some(Missing::Topic(t.to_owned())),
            Subject::Partition(t, p) => Some(Missing::Partition {
                topic: t.to_owned(),
                partition: p,
            }),
            Subject::Group(g) => Some(Missing::Group(g.to_owned())),
            Subject::Cluster => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Subject::Topic(t) => format!("topic {t}"),
            Subject::Partition(t, p) => format!("{t}/{p}"),
            Subject::Group(g) => format!("consumer group {g}"),
            Subject::Cluster => "the cluster".to_owned(),
        }
    }
}

/// Maps a Kafka (or librdkafka) error code about `subject` to a typed error.
pub(crate) fn from_code(code: RDKafkaErrorCode, subject: Subject<'_>, op: &str) -> ClusterError {
    use RDKafkaErrorCode as C;
    let what = subject.describe();
    match code {
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownTopicId => match subject {
            Subject::Partition(t, p) => ClusterError::NotFound(Missing::Partition {
                topic: t.to_owned(),
                partition: p,
            }),
            Subject::Topic(t) | Subject::Group(t) => {
                ClusterError::NotFound(Missing::Topic(t.to_owned()))
            }
            Subject::Cluster => ClusterError::Invalid(format!("{op}: unknown topic")),
        },
        C::UnknownPartition => match subject.missing() {
            Some(m) => ClusterError::NotFound(m),
            None => ClusterError::Invalid(format!("{op}: unknown partition")),
        },
        C::GroupIdNotFound | C::UnknownGroup => match subject {
            Subject::Group(g) => ClusterError::NotFound(Missing::Group(g.to_owned())),
            _ => ClusterError::Invalid(format!("{op} on {what}: unknown consumer group")),
        },
        C::TopicAlreadyExists => match subject {
            Subject::Topic(t) | Subject::Partition(t, _) => {
                ClusterError::Conflict(Existing::Topic(t.to_owned()))
            }
            _ => ClusterError::Invalid(format!("{op} on {what}: topic already exists")),
        },
        C::NonEmptyGroup => ClusterError::Invalid(format!(
            "{op} on {what}: the group has active members; stop its consumers first"
        )),
        C::PolicyViolation
        | C::InvalidConfig
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidReplicaAssignment
        | C::InvalidTopic
        | C::InvalidRequest
        | C::InvalidTimestamp
        | C::InvalidRecord
        | C::InvalidMessage
        | C::InvalidGroupId
        | C::InvalidArgument
        | C::TopicDeletionDisabled
        | C::OffsetNotAvailable => {
            ClusterError::Invalid(format!("{op} on {what} refused by the cluster: {code}"))
        }
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            ClusterError::TooLarge(format!("{op} on {what}: {code}"))
        }
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed => ClusterError::Forbidden(format!(
            "the cluster denies Herald's principal {op} on {what} ({code}); grant it with an ACL"
        )),
        C::QueueFull => ClusterError::Overloaded(format!(
            "{op} on {what}: the producer queue is full; retry later"
        )),
        C::MessageTimedOut
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::TimedOutQueue
        | C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::Resolve
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::BrokerNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::CoordinatorLoadInProgress
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::NotController
        | C::NetworkException
        | C::RebalanceInProgress
        | C::ThrottlingQuotaExceeded
        | C::KafkaStorageError
        | C::WaitingForCoordinator => ClusterError::Unavailable(format!(
            "{op} on {what}: the cluster is not available ({code}); retry later"
        )),
        other => ClusterError::Internal(format!("{op} on {what} failed: {other}")),
    }
}

/// Maps an rdkafka error about `subject` to a typed error.
pub(crate) fn from_kafka(e: &KafkaError, subject: Subject<'_>, op: &str) -> ClusterError {
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(code) => from_code(code, subject, op),
        None => ClusterError::Internal(format!("{op} on {}: {e}", subject.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_keeps_its_bounds_in_the_broker_error() {
        let e = ClusterError::OffsetOutOfRange {
            topic: "t".to_owned(),
            partition: 2,
            offset: 9,
            log_start: 3,
            high_watermark: 7,
        };
        match BrokerError::from(e) {
            BrokerError::OffsetOutOfRange {
                message,
                log_start,
                high_watermark,
            } => {
                assert_eq!((log_start, high_watermark), (3, 7));
                assert!(message.contains("t/2"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kafka_codes_become_typed_errors() {
        let topic = Subject::Topic("orders");
        assert!(matches!(
            from_code(RDKafkaErrorCode::TopicAlreadyExists, topic, "creating"),
            ClusterError::Conflict(Existing::Topic(t)) if t == "orders"
        ));
        assert!(matches!(
            from_code(RDKafkaErrorCode::UnknownTopicOrPartition, topic, "describing"),
            ClusterError::NotFound(Missing::Topic(t)) if t == "orders"
        ));
        assert!(matches!(
            from_code(RDKafkaErrorCode::PolicyViolation, topic, "creating"),
            ClusterError::Invalid(_)
        ));
        assert!(matches!(
            from_code(RDKafkaErrorCode::GroupIdNotFound, Subject::Group("g"), "deleting"),
            ClusterError::NotFound(Missing::Group(g)) if g == "g"
        ));
        assert!(matches!(
            from_code(RDKafkaErrorCode::QueueFull, topic, "producing"),
            ClusterError::Overloaded(_)
        ));
        // A fault of the cluster is never reported as the client's.
        assert!(matches!(
            from_code(RDKafkaErrorCode::BadMessage, topic, "reading"),
            ClusterError::Internal(_)
        ));
    }
}
