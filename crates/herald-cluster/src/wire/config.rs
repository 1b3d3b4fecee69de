use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::WireError;

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka's `sasl.mechanism`, as far as this client speaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How to reach and authenticate to the cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` addresses, tried in order.
    pub bootstrap: Vec<String>,
    pub security_protocol: SecurityProtocol,
    pub sasl_mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
    /// PEM file with the CA certificates that sign the brokers' certificates.
    pub ca_location: Option<PathBuf>,
    /// TCP connect, TLS handshake, ApiVersions and SASL together, per address.
    pub connect_timeout: Duration,
    /// Writing a request and reading its response.
    pub request_timeout: Duration,
    /// Largest response frame accepted; a larger one closes the connection.
    pub max_response_bytes: usize,
    pub client_id: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("bootstrap", &self.bootstrap)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("username", &self.username)
            .field("ca_location", &self.ca_location)
            .finish_non_exhaustive()
    }
}

/// Default connect budget per address (librdkafka's `socket.connection.setup.timeout.ms` is
/// 30 s; an admin command should fail over to the next address sooner).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's `request.timeout.ms` default.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin responses are small; a describe of every ACL of a large cluster fits easily.
const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl ClientConfig {
    /// Reads librdkafka-style properties: `bootstrap.servers`, `security.protocol`,
    /// `sasl.mechanism` (or `sasl.mechanisms`), `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`, `socket.connection.setup.timeout.ms`, `request.timeout.ms`,
    /// `receive.message.max.bytes`, `client.id`. Other keys belong to the rdkafka side of the
    /// same map and are ignored here.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Self, WireError> {
        let get = |key: &str| props.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let bootstrap: Vec<String> = get("bootstrap.servers")
            .ok_or_else(|| WireError::Config("bootstrap.servers is required".to_owned()))?
            .split(',')
            .map(|a| strip_scheme(a.trim()).to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        for addr in &bootstrap {
            if split_host_port(addr).is_none() {
                return Err(WireError::Config(format!(
                    "bootstrap address {addr:?} is not host:port"
                )));
            }
        }
        let security_protocol = match get("security.protocol")
            .unwrap_or("PLAINTEXT")
            .to_ascii_uppercase()
            .as_str()
        {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            other => {
                return Err(WireError::Config(format!(
                    "security.protocol {other:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )));
            }
        };
        let mechanism = get("sasl.mechanism").or_else(|| get("sasl.mechanisms"));
        let sasl_mechanism = match mechanism.unwrap_or("PLAIN").to_ascii_uppercase().as_str() {
            "PLAIN" => SaslMechanism::Plain,
            "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
            "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
            other => {
                return Err(WireError::Config(format!(
                    "sasl.mechanism {other:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )));
            }
        };
        let username = props.get("sasl.username").cloned().unwrap_or_default();
        let password = props.get("sasl.password").cloned().unwrap_or_default();
        if security_protocol.sasl() && username.is_empty() {
            return Err(WireError::Config(
                "sasl.username is required with a SASL security.protocol".to_owned(),
            ));
        }
        let ms = |key: &str, default: Duration| -> Result<Duration, WireError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        WireError::Config(format!("{key} must be a positive number of ms"))
                    }),
            }
        };
        let max_response_bytes = match get("receive.message.max.bytes") {
            None => DEFAULT_MAX_RESPONSE_BYTES,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1024)
                .ok_or_else(|| {
                    WireError::Config("receive.message.max.bytes must be at least 1024".to_owned())
                })?,
        };
        Ok(ClientConfig {
            bootstrap,
            security_protocol,
            sasl_mechanism,
            username,
            password,
            ca_location: get("ssl.ca.location").map(PathBuf::from),
            connect_timeout: ms(
                "socket.connection.setup.timeout.ms",
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            request_timeout: ms("request.timeout.ms", DEFAULT_REQUEST_TIMEOUT)?,
            max_response_bytes,
            client_id: get("client.id").unwrap_or("herald-admin").to_owned(),
        })
    }
}

/// `PLAINTEXT://host:port` → `host:port` (Kafka's listener notation is often pasted as is).
fn strip_scheme(addr: &str) -> &str {
    addr.split_once("://").map_or(addr, |(_, rest)| rest)
}

/// Host and port of `host:port` or `[v6]:port`.
pub(crate) fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn librdkafka_properties() {
        let c = ClientConfig::from_properties(&props(&[
            ("bootstrap.servers", "a:9092, SASL_SSL://b:9093,[::1]:9094"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "admin"),
            ("sasl.password", "pw"),
            ("ssl.ca.location", "/ca.pem"),
            ("linger.ms", "5"),
        ]))
        .unwrap();
        assert_eq!(c.bootstrap, ["a:9092", "b:9093", "[::1]:9094"]);
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.sasl_mechanism, SaslMechanism::ScramSha512);
        assert_eq!(c.ca_location, Some(PathBuf::from("/ca.pem")));
        assert!(!format!("{c:?}").contains("pw"));
        assert_eq!(split_host_port("[::1]:9094"), Some(("::1", 9094)));

        for bad in [
            vec![("security.protocol", "SSL")],
            vec![("bootstrap.servers", "a")],
            vec![("bootstrap.servers", "a:1"), ("security.protocol", "TLS")],
            vec![("bootstrap.servers", "a:1"), ("sasl.mechanism", "GSSAPI")],
            vec![
                ("bootstrap.servers", "a:1"),
                ("security.protocol", "SASL_PLAINTEXT"),
            ],
        ] {
            assert!(matches!(
                ClientConfig::from_properties(&props(&bad)),
                Err(WireError::Config(_))
            ));
        }
    }
}
