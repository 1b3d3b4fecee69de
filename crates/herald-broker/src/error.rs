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
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
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
    /// A fault of the server, not of the request.
    #[error("{0}")]
    Internal(String),
}
