use thiserror::Error;

/// A name (tenant id, topic, topic token, topic selector, grammar prefix) broke its rule.
///
/// Every message names the field, says what was wrong and restates the rule, so that it can be
/// shown to the person who typed the name without further translation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GrammarError {
    #[error("{field} must not be empty; {rule}")]
    Empty {
        field: &'static str,
        rule: &'static str,
    },

    #[error("{field} is {len} characters long, more than the {max} allowed; {rule}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
        rule: &'static str,
    },

    #[error(
        "{field} {value:?} contains {found:?} at position {position}, which is not allowed; {rule}"
    )]
    InvalidChar {
        field: &'static str,
        value: String,
        found: char,
        /// Zero-based character position of `found`.
        position: usize,
        rule: &'static str,
    },

    #[error("{field} {value:?} must not start with {found:?}; {rule}")]
    InvalidStart {
        field: &'static str,
        value: String,
        found: char,
        rule: &'static str,
    },

    #[error("topic {name:?} is reserved: Kafka does not allow a topic named \".\" or \"..\"")]
    ReservedTopicName { name: String },

    #[error(
        "topic {name:?} starts with \"{prefix}.\", so it must have exactly four dot-separated \
         tokens {prefix}.{{tenant_id}}.{{service}}.{{event_type}}; it has {tokens}"
    )]
    TenantTopicShape {
        name: String,
        prefix: String,
        tokens: usize,
    },

    /// One token of a tenant topic broke its rule; `error` says which token and why.
    #[error("topic {topic:?}: {error}")]
    InTopic {
        topic: String,
        // Deliberately not a `#[source]`: the message already includes it, and error-chain
        // printers would otherwise repeat it.
        error: Box<GrammarError>,
    },

    #[error("topic selector {pattern:?}: {reason}")]
    Glob { pattern: String, reason: String },
}

impl GrammarError {
    /// The field the error is about: `tenant_id`, `service`, `event_type`, `topic`, `prefix` or
    /// `topic selector`. For an error inside a tenant topic this is the offending token's field.
    pub fn field(&self) -> &'static str {
        match self {
            GrammarError::Empty { field, .. }
            | GrammarError::TooLong { field, .. }
            | GrammarError::InvalidChar { field, .. }
            | GrammarError::InvalidStart { field, .. } => field,
            GrammarError::ReservedTopicName { .. } | GrammarError::TenantTopicShape { .. } => {
                "topic"
            }
            GrammarError::InTopic { error, .. } => error.field(),
            GrammarError::Glob { .. } => "topic selector",
        }
    }
}

/// An event envelope (or a record produced to a tenant topic) is not acceptable.
///
/// `field` is the JSON field at fault, or `event` when the problem is the whole value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("field \"{field}\": {message}")]
pub struct EnvelopeError {
    pub field: String,
    pub message: String,
}

impl EnvelopeError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        EnvelopeError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<GrammarError> for EnvelopeError {
    fn from(err: GrammarError) -> Self {
        EnvelopeError {
            field: err.field().to_owned(),
            message: err.to_string(),
        }
    }
}

/// Shortens untrusted text before it is echoed in an error, so that a megabyte-long value cannot
/// turn into a megabyte-long log line.
pub(crate) fn preview(s: &str) -> String {
    const MAX: usize = 100;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((cut, _)) => {
            let mut out = s.get(..cut).unwrap_or_default().to_owned();
            out.push('…');
            out
        }
    }
}
