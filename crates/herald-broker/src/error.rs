/// Errors of the service layer. Each interface maps every variant to its own protocol's terms
/// with an exhaustive match.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The request is malformed or breaks a naming or configuration rule.
    #[error("{0}")]
    Invalid(String),
    /// An event or record fails envelope validation.
    #[error("{0}")]
    InvalidEvent(String),
    /// What the request names does not exist; which kind of thing decides the protocol's answer
    /// (Kafka's UNKNOWN_TOPIC_OR_PARTITION, GROUP_ID_NOT_FOUND or RESOURCE_NOT_FOUND, HTTP's
    /// error code).
    #[error("{0}")]
    NotFound(Missing),
    /// What the request would create exists already.
    #[error("{0}")]
    Conflict(Existing),
    #[error("{message}")]
    OffsetOutOfRange {
        message: String,
        log_start: u64,
        high_watermark: u64,
    },
    #[error("{0}")]
    TooLarge(String),
    /// An idempotent producer's batch does not follow its last sequence number.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer was fenced by a newer epoch.
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// An idempotent producer the partition has no state for sent a batch not starting at 0.
    #[error("{0}")]
    UnknownProducerId(String),
    /// The caller may not do this (the authorizer said no).
    #[error("{0}")]
    Forbidden(String),
    /// Temporarily unable to serve: overloaded or shutting down. Retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The data directory's disk is full; nothing was stored. Writes resume once space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// The storage backend cannot do this at all (not a transient condition): each interface
    /// answers with its protocol's non-retriable refusal.
    #[error("{0}")]
    Unsupported(String),
    /// A fault of the server, not of the request.
    #[error("{0}")]
    Internal(String),
}

/// The thing a request named that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("topic {0} does not exist")]
    Topic(String),
    #[error("topic {topic} has no partition {partition}")]
    Partition { topic: String, partition: u32 },
    #[error("consumer group {0} does not exist")]
    Group(String),
    #[error("user {0} does not exist")]
    User(String),
    #[error("user {user} has no {mechanism} credential")]
    Credential {
        user: String,
        mechanism: &'static str,
    },
    #[error("API key {0} does not exist")]
    ApiKey(String),
    #[error("tenant {0} does not exist")]
    Tenant(String),
}

/// The thing a request would create that exists already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Existing {
    #[error("topic {0} already exists")]
    Topic(String),
    #[error("tenant {0} already exists")]
    Tenant(String),
}
