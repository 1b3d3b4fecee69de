//! SASL on SASL_PLAINTEXT and SASL_SSL listeners: SaslHandshake (v0–1) then SaslAuthenticate (v0–2)
//! carrying a SCRAM-SHA-256/512 exchange (KIP-84). Until a connection has authenticated it may
//! send only ApiVersions, SaslHandshake and SaslAuthenticate; anything else closes it, as Kafka
//! does. A failed exchange is answered with SASL_AUTHENTICATION_FAILED and then closed.

use bytes::Bytes;
use herald_auth::scram::{Mechanism, ScramError, ServerExchange, Step};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Connection;

pub use crate::errors::{
    ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
};

/// A listener's security protocol, as Kafka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses a protocol name (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`).
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// The protocol of a listener declared without one: its name when that is a protocol
    /// name, else PLAINTEXT (Kafka's default `listener.security.protocol.map`).
    pub fn for_listener(name: &str) -> SecurityProtocol {
        SecurityProtocol::parse(name).unwrap_or(SecurityProtocol::Plaintext)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn requires_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// Where a connection is in its authentication.
#[derive(Default)]
pub enum SaslState {
    /// A PLAINTEXT listener: nothing to do.
    #[default]
    NotRequired,
    AwaitingHandshake,
    Handshaken(Mechanism),
    Exchanging(Mechanism, Box<ServerExchange>),
    Authenticated(String),
    /// The exchange failed; the connection is closed after the response.
    Failed,
}

impl SaslState {
    pub fn for_protocol(p: SecurityProtocol) -> SaslState {
        if p.requires_sasl() {
            SaslState::AwaitingHandshake
        } else {
            SaslState::NotRequired
        }
    }

    /// Whether requests of `key` may be served in this state.
    pub fn admits(&self, key: ApiKey) -> bool {
        match self {
            SaslState::NotRequired | SaslState::Authenticated(_) => true,
            SaslState::Failed => false,
            _ => matches!(
                key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            ),
        }
    }

    /// Whether the connection must still authenticate before it may do anything else.
    pub fn is_pending(&self) -> bool {
        !matches!(self, SaslState::NotRequired | SaslState::Authenticated(_))
    }

    /// The authenticated principal (`User:<name>`), if any.
    pub fn principal(&self) -> Option<String> {
        match self {
            SaslState::Authenticated(u) => Some(format!("User:{u}")),
            _ => None,
        }
    }
}

fn mechanisms() -> Vec<StrBytes> {
    Mechanism::ALL
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect()
}

pub fn handshake(conn: &Connection, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mut state = conn.sasl.lock();
    let code = match &*state {
        SaslState::NotRequired => UNSUPPORTED_SASL_MECHANISM,
        SaslState::AwaitingHandshake => match Mechanism::from_name(req.mechanism.as_str()) {
            Some(m) => {
                *state = SaslState::Handshaken(m);
                0
            }
            None => UNSUPPORTED_SASL_MECHANISM,
        },
        _ => ILLEGAL_SASL_STATE,
    };
    SaslHandshakeResponse::default()
        .with_error_code(code)
        .with_mechanisms(if matches!(*state, SaslState::NotRequired) {
            Vec::new()
        } else {
            mechanisms()
        })
}

/// Counts and audits a refused authentication (`operation` says what was attempted).
pub fn record_failure(conn: &Connection, reason: &'static str, operation: String) {
    conn.ctx
        .broker
        .security()
        .deny(herald_broker::security::Denial {
            interface: "kafka",
            reason,
            principal: "User:ANONYMOUS".into(),
            resource: format!("Listener:{}", conn.advertised.name),
            operation,
            source: herald_auth::authz::host_text(conn.peer.ip()),
        });
}

fn failed(conn: &Connection, mech: Mechanism, reason: &'static str) -> SaslAuthenticateResponse {
    *conn.sasl.lock() = SaslState::Failed;
    record_failure(conn, reason, format!("AUTHENTICATE {}", mech.name()));
    tracing::info!(peer = %conn.peer, reason, "kafka SASL authentication failed");
    SaslAuthenticateResponse::default()
        .with_error_code(SASL_AUTHENTICATION_FAILED)
        .with_error_message(Some(StrBytes::from_string(format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            mech.name()
        ))))
}

fn reason(e: &ScramError) -> &'static str {
    match e {
        ScramError::UnknownUser | ScramError::InvalidProof => "bad_credentials",
        ScramError::InvalidNonce => "bad_nonce",
        ScramError::ChannelBinding | ScramError::UnsupportedExtension(_) => "unsupported",
        ScramError::Malformed(_) => "malformed",
        ScramError::Done => "replay",
    }
}

pub fn authenticate(conn: &Connection, req: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    let state = std::mem::take(&mut *conn.sasl.lock());
    match state {
        SaslState::Handshaken(mech) => {
            let users = conn.ctx.broker.security();
            let mut ex = users.scram_exchange(mech);
            match ex.client_first(&req.auth_bytes, |name| users.credential(name, mech)) {
                Ok(first) => {
                    *conn.sasl.lock() = SaslState::Exchanging(mech, Box::new(ex));
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(first))
                }
                Err(e) => failed(conn, mech, reason(&e)),
            }
        }
        SaslState::Exchanging(mech, mut ex) => match ex.client_final(&req.auth_bytes) {
            Ok(Step::Done {
                username,
                final_message,
            }) => {
                tracing::debug!(peer = %conn.peer, user = %username, "kafka client authenticated");
                *conn.sasl.lock() = SaslState::Authenticated(username);
                crate::authz::forget_subject(conn);
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(final_message))
            }
            Ok(Step::Continue(_)) => failed(conn, mech, "malformed"),
            Err(e) => failed(conn, mech, reason(&e)),
        },
        other => {
            let illegal = !matches!(other, SaslState::NotRequired);
            *conn.sasl.lock() = if illegal { SaslState::Failed } else { other };
            SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate needs a successful SaslHandshake first",
                )))
        }
    }
}
