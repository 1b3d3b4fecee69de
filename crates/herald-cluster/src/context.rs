//! The librdkafka client context: routes librdkafka's logs to `tracing` and remembers the last
//! client-level error, so that a failed connection can say why (unreachable, authentication,
//! TLS) instead of only "timed out".

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A client-level error librdkafka reported (through its error callback).
#[derive(Debug, Clone)]
pub(crate) struct LastError {
    pub code: RDKafkaErrorCode,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct ClusterContext {
    /// The most telling error seen: an authentication or TLS failure is kept even when
    /// transport errors follow it (librdkafka reports "all brokers down" after either).
    last: Mutex<Option<LastError>>,
}

/// Longest reason kept: librdkafka's messages are short, but the bound keeps the context small
/// whatever a broker sends.
const MAX_REASON: usize = 512;

fn rank(code: RDKafkaErrorCode) -> u8 {
    match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => 3,
        RDKafkaErrorCode::SSL => 2,
        _ => 1,
    }
}

impl ClusterContext {
    pub(crate) fn last_error(&self) -> Option<LastError> {
        self.last.lock().clone()
    }

    pub(crate) fn clear(&self) {
        *self.last.lock() = None;
    }

    /// Remembers a client-level error (from the error callback or a consumer's event queue).
    pub(crate) fn note(&self, code: RDKafkaErrorCode, reason: &str) {
        let mut reason = reason.to_owned();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let mut last = self.last.lock();
        let keep_old = last.as_ref().is_some_and(|old| rank(old.code) > rank(code));
        if !keep_old {
            *last = Some(LastError { code, reason });
        }
    }
}

impl ClientContext for ClusterContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "Kafka cluster client: {reason}");
        if let Some(code) = error.rdkafka_error_code() {
            self.note(code, reason);
        }
    }
}

impl ConsumerContext for ClusterContext {}
