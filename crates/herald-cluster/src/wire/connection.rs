use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use herald_auth::scram::{ClientExchange, Mechanism};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::config::split_host_port;
use super::{ClientConfig, SaslMechanism, WireError};

/// The versions this client speaks, per API: (min, max). Maxima stop where a later version
/// changes the request's shape (OffsetFetch 8 batches groups, FindCoordinator 4 batches keys,
/// OffsetCommit 9 and ListOffsets 8 belong to newer protocols) — the highest version both sides
/// support within these is used. ACL minima are 1: version 0 cannot express PREFIXED patterns.
const SPOKEN: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ListOffsets, 1, 7),
];

/// The ApiVersions version sent first; a broker that does not know it answers in version 0.
const API_VERSIONS_VERSION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One authenticated connection to one broker. Requests are answered in order, one at a time
/// (`&mut self`). After a timeout, an I/O error or a malformed response the connection is
/// broken and every later request fails at once: the stream may hold half a response.
pub struct Connection {
    stream: Box<dyn Stream>,
    addr: String,
    /// The broker's advertised (min, max) per API key.
    offered: BTreeMap<i16, (i16, i16)>,
    next_correlation: i32,
    request_timeout: Duration,
    max_response_bytes: usize,
    client_id: StrBytes,
    broken: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the first address of `config.bootstrap` that answers, authenticating as
    /// configured. An authentication failure is final (the next broker would refuse the same
    /// credentials); unreachable addresses are tried in turn and all named in the error.
    pub async fn connect(config: &ClientConfig) -> Result<Connection, WireError> {
        let mut attempts = Vec::new();
        for addr in &config.bootstrap {
            match Self::connect_to(config, addr).await {
                Ok(conn) => return Ok(conn),
                Err(WireError::Io { addr, reason }) => attempts.push((addr, reason)),
                Err(WireError::Unreachable { attempts: more }) => attempts.extend(more),
                Err(other) => return Err(other),
            }
        }
        Err(WireError::Unreachable { attempts })
    }

    /// Connects to one broker, within `config.connect_timeout` for everything up to and
    /// including authentication.
    pub async fn connect_to(config: &ClientConfig, addr: &str) -> Result<Connection, WireError> {
        let setup = Self::setup(config, addr);
        match tokio::time::timeout(config.connect_timeout, setup).await {
            Ok(result) => result,
            Err(_) => Err(WireError::Io {
                addr: addr.to_owned(),
                reason: format!(
                    "no connection within {} ms",
                    config.connect_timeout.as_millis()
                ),
            }),
        }
    }

    async fn setup(config: &ClientConfig, addr: &str) -> Result<Connection, WireError> {
        let io = |reason: String| WireError::Io {
            addr: addr.to_owned(),
            reason,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| io(e.to_string()))?;
        // Admin requests are small and answered one at a time: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if config.security_protocol.tls() {
            let connector = tls_connector(config)?;
            let (host, _) = split_host_port(addr)
                .ok_or_else(|| WireError::Config(format!("{addr:?} is not host:port")))?;
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| WireError::Config(format!("{host:?} is not a server name: {e}")))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| io(format!("TLS handshake: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut conn = Connection {
            stream,
            addr: addr.to_owned(),
            offered: BTreeMap::new(),
            next_correlation: 0,
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            client_id: StrBytes::from_string(config.client_id.clone()),
            broken: false,
        };
        conn.negotiate_versions().await?;
        if config.security_protocol.sasl() {
            conn.authenticate(config).await?;
        }
        tracing::debug!(addr, "connected to Kafka broker");
        Ok(conn)
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an earlier failure left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The version used for `api`: the highest both this client and the broker support.
    pub fn version(&self, api: ApiKey) -> Result<i16, WireError> {
        let unsupported = |detail: String| WireError::Unsupported {
            addr: self.addr.clone(),
            api,
            detail,
        };
        let (_, our_min, our_max) = SPOKEN
            .iter()
            .find(|(k, _, _)| *k == api)
            .copied()
            .ok_or_else(|| unsupported("not an API of this client".to_owned()))?;
        let crate_range = api.valid_versions();
        let (their_min, their_max) = self
            .offered
            .get(&(api as i16))
            .copied()
            .ok_or_else(|| unsupported("the broker does not offer it".to_owned()))?;
        let max = our_max.min(their_max).min(crate_range.max);
        let min = our_min.max(their_min).max(crate_range.min);
        if max < min {
            return Err(unsupported(format!(
                "broker versions {their_min}..={their_max}, client versions {our_min}..={our_max}"
            )));
        }
        Ok(max)
    }

    /// Sends `request` and returns the broker's response, in the negotiated version.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, WireError> {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|_| WireError::Config(format!("unknown API key {}", R::KEY)))?;
        let version = self.version(api)?;
        self.send_version(api, version, request).await
    }

    async fn send_version<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, WireError> {
        let mut body = self.round_trip(api, version, request).await?;
        self.decode(&mut body, version)
    }

    fn decode<Resp: Decodable>(
        &mut self,
        body: &mut Bytes,
        version: i16,
    ) -> Result<Resp, WireError> {
        Resp::decode(body, version).map_err(|e| {
            self.broken = true;
            self.protocol(format!("undecodable response: {e}"))
        })
    }

    fn protocol(&self, reason: String) -> WireError {
        WireError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Writes one request and reads its response frame; returns the body after the header.
    async fn round_trip<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Bytes, WireError> {
        if self.broken {
            return Err(WireError::Io {
                addr: self.addr.clone(),
                reason: "the connection failed earlier and was not reopened".to_owned(),
            });
        }
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        header
            .encode(&mut frame, api.request_header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| WireError::Protocol {
                addr: self.addr.clone(),
                reason: format!("cannot encode {api:?} v{version}: {e}"),
            })?;
        let len = i32::try_from(frame.len() - 4).map_err(|_| WireError::Protocol {
            addr: self.addr.clone(),
            reason: format!("{api:?} request too large"),
        })?;
        if let Some(prefix) = frame.get_mut(..4) {
            prefix.copy_from_slice(&len.to_be_bytes());
        }

        let timeout = self.request_timeout;
        let max = self.max_response_bytes;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            let size = self.stream.read_i32().await?;
            let size = usize::try_from(size)
                .ok()
                .filter(|s| (4..=max).contains(s))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("response frame of {size} bytes (limit {max})"),
                    )
                })?;
            let mut buf = vec![0u8; size];
            self.stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => {
                self.broken = true;
                return Err(WireError::Io {
                    addr: self.addr.clone(),
                    reason: format!("{api:?}: {e}"),
                });
            }
            Err(_) => {
                self.broken = true;
                return Err(WireError::Io {
                    addr: self.addr.clone(),
                    reason: format!("{api:?}: no response within {} ms", timeout.as_millis()),
                });
            }
        };
        let mut body = Bytes::from(buf);
        let header: ResponseHeader =
            ResponseHeader::decode(&mut body, api.response_header_version(version)).map_err(
                |e| {
                    self.broken = true;
                    self.protocol(format!("undecodable response header: {e}"))
                },
            )?;
        if header.correlation_id != correlation {
            self.broken = true;
            return Err(self.protocol(format!(
                "response correlation id {} for request {correlation}",
                header.correlation_id
            )));
        }
        Ok(body)
    }

    /// ApiVersions: records what the broker offers. A broker that does not know our version
    /// answers UNSUPPORTED_VERSION in version 0 with its own list, which is enough.
    async fn negotiate_versions(&mut self) -> Result<(), WireError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("herald"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self
            .round_trip(ApiKey::ApiVersions, API_VERSIONS_VERSION, &request)
            .await?;
        let error = body
            .get(..2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(i16::from_be_bytes);
        let version = if error == Some(UNSUPPORTED_VERSION) {
            0
        } else {
            API_VERSIONS_VERSION
        };
        let response: ApiVersionsResponse = self.decode(&mut body, version)?;
        if response.error_code != 0 && response.error_code != UNSUPPORTED_VERSION {
            WireError::check(ApiKey::ApiVersions, response.error_code, None)?;
        }
        self.offered = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// SaslHandshake v1, then SaslAuthenticate with PLAIN or SCRAM.
    async fn authenticate(&mut self, config: &ClientConfig) -> Result<(), WireError> {
        let mechanism = config.sasl_mechanism;
        let failed = |addr: &str, reason: String| WireError::AuthenticationFailed {
            addr: addr.to_owned(),
            reason,
        };
        let handshake: SaslHandshakeResponse = self
            .send(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism.name())),
            )
            .await?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(failed(
                &self.addr,
                format!(
                    "the broker does not enable {} (it offers {})",
                    mechanism.name(),
                    offered.join(", ")
                ),
            ));
        }
        let scram = match mechanism {
            SaslMechanism::Plain => {
                let token = format!("\0{}\0{}", config.username, config.password);
                self.sasl_round(Bytes::from(token)).await?;
                return Ok(());
            }
            SaslMechanism::ScramSha256 => Mechanism::Sha256,
            SaslMechanism::ScramSha512 => Mechanism::Sha512,
        };
        let mut exchange = ClientExchange::new(scram, &config.username, &config.password);
        let server_first = self
            .sasl_round(Bytes::from(exchange.client_first()))
            .await?;
        let client_final = exchange
            .server_first(&server_first)
            .map_err(|e| failed(&self.addr, e.to_string()))?;
        let server_final = self.sasl_round(Bytes::from(client_final)).await?;
        exchange
            .server_final(&server_final)
            .map_err(|e| failed(&self.addr, e.to_string()))
    }

    /// One SaslAuthenticate round; an error code is an authentication failure.
    async fn sasl_round(&mut self, auth_bytes: Bytes) -> Result<Bytes, WireError> {
        let response: SaslAuthenticateResponse = self
            .send(&SaslAuthenticateRequest::default().with_auth_bytes(auth_bytes))
            .await
            .map_err(|e| match e {
                // Some brokers close the connection instead of answering a failed attempt.
                WireError::Io { addr, reason } => WireError::AuthenticationFailed {
                    addr,
                    reason: format!("the broker closed the connection ({reason})"),
                },
                other => other,
            })?;
        if response.error_code != 0 {
            let error = ResponseError::try_from_code(response.error_code)
                .map(|e| e.to_string())
                .unwrap_or_default();
            let message = response
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_default();
            return Err(WireError::AuthenticationFailed {
                addr: self.addr.clone(),
                reason: format!("{error}: {message}"),
            });
        }
        Ok(response.auth_bytes)
    }
}

fn tls_connector(config: &ClientConfig) -> Result<tokio_rustls::TlsConnector, WireError> {
    let tls = |e: String| WireError::Config(e);
    let ca = config.ca_location.as_ref().ok_or_else(|| {
        tls(
            "ssl.ca.location is required with SSL and SASL_SSL (no system trust store is built in)"
                .to_owned(),
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| tls(format!("ssl.ca.location {}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| tls(format!("ssl.ca.location {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| tls(format!("ssl.ca.location {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(tls(format!(
            "ssl.ca.location {} holds no certificate",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fake broker that reads one request frame and answers with `answer` (raw bytes).
    async fn fake_broker(answer: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_i32().await.unwrap();
            let mut buf = vec![0u8; usize::try_from(len).unwrap()];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&answer).await.unwrap();
            // Hold the connection open so the client sees silence, not a close.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        addr
    }

    fn config(addr: &str) -> ClientConfig {
        let props = [("bootstrap.servers", addr), ("request.timeout.ms", "300")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ClientConfig::from_properties(&props).unwrap()
    }

    fn reason(err: WireError) -> String {
        match err {
            WireError::Unreachable { attempts } => attempts.into_iter().next().unwrap().1,
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn oversized_silent_and_mismatched_responses_fail_cleanly() {
        // A frame announcing more than the limit is refused before anything is allocated.
        let addr = fake_broker(i32::MAX.to_be_bytes().to_vec()).await;
        let err = Connection::connect(&config(&addr)).await.unwrap_err();
        assert!(reason(err).contains("limit"));

        // No answer: the request timeout ends the wait.
        let addr = fake_broker(Vec::new()).await;
        let err = Connection::connect(&config(&addr)).await.unwrap_err();
        assert!(reason(err).contains("no response within 300 ms"));

        // An answer to another request is a protocol error, not a response.
        let mut frame = 8i32.to_be_bytes().to_vec();
        frame.extend(77i32.to_be_bytes());
        frame.extend(0i32.to_be_bytes());
        let addr = fake_broker(frame).await;
        let err = Connection::connect(&config(&addr)).await.unwrap_err();
        assert!(
            matches!(&err, WireError::Protocol { reason, .. } if reason.contains("correlation")),
            "{err}"
        );
    }

    #[test]
    fn every_spoken_version_is_one_the_crate_encodes() {
        for (api, min, max) in SPOKEN {
            let r = api.valid_versions();
            assert!(
                r.min <= *min && *max <= r.max,
                "{api:?} {min}..={max} vs {r}"
            );
        }
    }
}
