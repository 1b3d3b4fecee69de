use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Why a request to the cluster failed, in Kafka's terms.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No broker of the list could be reached; each address with what went wrong.
    #[error("no broker reachable: {}", describe_attempts(.attempts))]
    Unreachable { attempts: Vec<(String, String)> },
    /// The broker refused the SASL credentials or mechanism, or failed to prove it knows them.
    #[error("SASL authentication failed on {addr}: {reason}")]
    AuthenticationFailed { addr: String, reason: String },
    /// The broker does not offer an API this client needs in a version it speaks.
    #[error("the broker at {addr} does not support {api:?} in a version Herald speaks ({detail})")]
    Unsupported {
        addr: String,
        api: ApiKey,
        detail: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{api:?} failed: {error}{}", .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        api: ApiKey,
        error: ResponseError,
        message: Option<String>,
    },
    /// The connection broke or timed out during a request; it is not used again.
    #[error("connection to {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    /// The broker sent something this client cannot make sense of.
    #[error("protocol error from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    /// The client properties are invalid.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl WireError {
    /// The Kafka error code, if the broker answered with one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            WireError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// `Err(Kafka)` for a non-zero error code.
    pub(crate) fn check(api: ApiKey, code: i16, message: Option<&str>) -> Result<(), WireError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(error) => Err(WireError::Kafka {
                api,
                error,
                message: message.map(str::to_owned),
            }),
        }
    }
}

fn describe_attempts(attempts: &[(String, String)]) -> String {
    if attempts.is_empty() {
        return "no address given".to_owned();
    }
    attempts
        .iter()
        .map(|(addr, reason)| format!("{addr} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ")
}
