//! TLS listeners through the real binary: a generated development certificate, Kafka over SSL
//! and SASL_SSL, HTTPS, and `herald cert dev`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::Server;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "tls-test-admin-key-0123456789";

fn kafka_addr(server: &Server, name: &str) -> String {
    server
        .stdout_lines
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some(name))
                .then(|| w.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no Kafka {name} line in {:?}", server.stdout_lines))
}

fn connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// ApiVersions v0 request, correlation id 7.
fn api_versions_request() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&4i16.to_be_bytes());
    body.extend_from_slice(b"test");
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

async fn api_versions<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
) -> (i32, i16) {
    s.write_all(&api_versions_request()).await.unwrap();
    let len = s.read_i32().await.unwrap();
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    let correlation = i32::from_be_bytes(buf[0..4].try_into().unwrap());
    let error = i16::from_be_bytes(buf[4..6].try_into().unwrap());
    (correlation, error)
}

#[tokio::test]
async fn tls_listeners_with_a_generated_development_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--kafka-listener",
            "SECURE=SSL://127.0.0.1:0",
            "--kafka-listener",
            "SASL_SSL=SASL_SSL://127.0.0.1:0",
        ],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let ca = dir.path().join("tls/ca.pem");
    assert!(ca.is_file());
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("TLS CA") && l.contains("generated now")),
        "{:?}",
        server.stdout_lines
    );
    let tls = connector(&ca);

    // SSL: encrypted, no authentication; ApiVersions answers.
    let addr = kafka_addr(&server, "SECURE");
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut s = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(api_versions(&mut s).await, (7, 0));

    // SASL_SSL: the handshake succeeds, ApiVersions is allowed before authentication.
    let addr = kafka_addr(&server, "SASL_SSL");
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut s = tls
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(api_versions(&mut s).await, (7, 0));

    // A plaintext client on a TLS port gets no Kafka answer.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain.write_all(&api_versions_request()).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(15), plain.read(&mut buf))
        .await
        .expect("the server closes a non-TLS client");
    assert!(
        read.map(|n| n == 0 || buf[..n].first() == Some(&0x15))
            .unwrap_or(true),
        "a plaintext request must not be answered: {buf:?}"
    );

    // A restart reuses the certificate rather than generating a new one.
    let before = std::fs::read(&ca).unwrap();
    server.stop();
    let server = Server::start(
        dir.path(),
        &["--kafka-listener", "SECURE=SSL://127.0.0.1:0"],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    assert!(
        !server
            .stdout_lines
            .iter()
            .any(|l| l.contains("generated now")),
    );
    server.stop();
}

#[tokio::test]
async fn https_and_an_operator_certificate_from_herald_cert_dev() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(common::herald_bin())
        .args([
            "cert",
            "dev",
            "--out",
            certs.to_str().unwrap(),
            "--host",
            "herald.test",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("herald.test"));
    let data = dir.path().join("data");
    let mut cmd = std::process::Command::new(common::herald_bin());
    cmd.args([
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--http-tls",
        "--tls-cert",
        certs.join("cert.pem").to_str().unwrap(),
        "--tls-key",
        certs.join("key.pem").to_str().unwrap(),
        "--kafka-addr",
        "PLAINTEXT://127.0.0.1:0",
    ])
    .env("HERALD_ADMIN_API_KEY", ADMIN)
    .env("HERALD_LOG", "warn")
    .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut url = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.unwrap();
        if line.trim_start().starts_with("HTTP API") {
            url = line
                .split_whitespace()
                .find(|w| w.starts_with("https://"))
                .map(str::to_owned);
            break;
        }
    }
    let url = url.expect("an https:// HTTP API line");
    assert!(
        !data.join("tls").exists(),
        "an operator certificate needs no generated one"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let health = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // The CLI reaches an https:// server when told which CA to trust.
    let out = std::process::Command::new(common::herald_bin())
        .args(["topic", "list"])
        .env("HERALD_SERVER", &url)
        .env("HERALD_API_KEY", ADMIN)
        .env("HERALD_CA_CERT", certs.join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(url.replace("https://", "http://") + "/health")
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_key_without_its_certificate_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::herald_bin())
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls.cert and tls.key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(common::herald_bin())
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--kafka-listener",
            "X=TLS://127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown security protocol"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends one request (header v1 or v2 as the API version needs) and decodes the response.
async fn kafka_call<S, Req, Resp>(s: &mut S, key: i16, version: i16, req: &Req) -> Resp
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    kafka_call_slow(s, key, version, req, std::time::Duration::ZERO).await
}

/// [`kafka_call`], waiting `pause` before reading the response (a slow reader).
async fn kafka_call_slow<S, Req, Resp>(
    s: &mut S,
    key: i16,
    version: i16,
    req: &Req,
    pause: std::time::Duration,
) -> Resp
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let api = ApiKey::try_from(key).unwrap();
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("herald-test")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    s.write_all(&(buf.len() as i32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&buf).await.unwrap();
    tokio::time::sleep(pause).await;
    let len = s.read_i32().await.unwrap();
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut b = bytes::Bytes::from(body);
    ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
    Resp::decode(&mut b, version).unwrap()
}

/// The server refuses another principal's partitions itself, whatever the client skips: Fetch,
/// ListOffsets and OffsetCommit sent straight to the broker by a client-certificate principal.
#[tokio::test]
async fn the_broker_refuses_fetch_list_offsets_and_commits_itself() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        FetchRequest, FetchResponse, GroupId, ListOffsetsRequest, ListOffsetsResponse,
        OffsetCommitRequest, OffsetCommitResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(common::herald_bin())
        .args([
            "cert",
            "dev",
            "--out",
            certs.to_str().unwrap(),
            "--client",
            "svc-a",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\nclient_auth = \"required\"\nclient_ca = \"{0}/ca.pem\"\n",
            certs.display()
        ),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--kafka-listener",
            "MTLS=SSL://127.0.0.1:0",
        ],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let mine = "smarteros.t1.shopify.order_created";
    let theirs = "smarteros.t2.shopify.order_created";
    for tenant in ["t1", "t2"] {
        let (s, _) = server
            .post(
                "/v1/events",
                &format!(
                    r#"{{"event_type":"order_created","tenant_id":"{tenant}","service":"shopify","data":{{}}}}"#
                ),
            )
            .await;
        assert_eq!(s, 200);
    }
    let out = server.cli(
        &[
            "acl",
            "create",
            "--principal",
            "User:svc-a",
            "--operation",
            "READ",
            "--topic",
            mine,
        ],
        None,
    );
    assert!(out.status.success());
    let out = server.cli(
        &[
            "acl",
            "create",
            "--principal",
            "User:svc-a",
            "--operation",
            "READ",
            "--group",
            "g1",
        ],
        None,
    );
    assert!(out.status.success());

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("client-svc-a.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_file(certs.join("client-svc-a-key.pem")).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(kafka_addr(&server, "MTLS"))
        .await
        .unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();

    let topic = |name: &str| TopicName(StrBytes::from_string(name.to_owned()));
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(
            [mine, theirs]
                .iter()
                .map(|t| {
                    FetchTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20),
                        ])
                })
                .collect(),
        );
    let r: FetchResponse = kafka_call(&mut s, 1, 11, &fetch).await;
    let codes: Vec<(String, i16, bool)> = r
        .responses
        .iter()
        .map(|t| {
            let p = &t.partitions[0];
            (
                t.topic.0.to_string(),
                p.error_code,
                p.records.as_ref().is_some_and(|b| !b.is_empty()),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [(mine.to_owned(), 0, true), (theirs.to_owned(), 29, false)]
    );

    let list = ListOffsetsRequest::default().with_topics(
        [mine, theirs]
            .iter()
            .map(|t| {
                ListOffsetsTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ])
            })
            .collect(),
    );
    let r: ListOffsetsResponse = kafka_call(&mut s, 2, 5, &list).await;
    let got: Vec<(i16, i64)> = r
        .topics
        .iter()
        .map(|t| (t.partitions[0].error_code, t.partitions[0].offset))
        .collect();
    assert_eq!(got, [(0, 1), (29, -1)]);

    let commit = |group: &str, t: &str| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1),
                    ]),
            ])
    };
    for (group, t, want) in [("g1", mine, 0), ("g1", theirs, 29), ("g2", mine, 30)] {
        let r: OffsetCommitResponse = kafka_call(&mut s, 8, 8, &commit(group, t)).await;
        assert_eq!(
            r.topics[0].partitions[0].error_code, want,
            "commit {t} in {group}"
        );
    }
    server.stop();
}

/// A large Fetch response over TLS arrives whole without the client sending anything else: the
/// connection flushes the TLS session after each response (it once kept the tail buffered until
/// the client's next request).
#[tokio::test]
async fn large_responses_over_tls_arrive_without_a_next_request() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--kafka-listener", "SECURE=SSL://127.0.0.1:0"],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let topic = "smarteros.t1.bulk.blob";
    let big = "x".repeat(100_000);
    let mut stored = 0usize;
    for _ in 0..8 {
        let records: Vec<String> = (0..30).map(|_| format!(r#"{{"value":"{big}"}}"#)).collect();
        let (s, body) = server
            .post(
                &format!("/v1/topics/{topic}/records"),
                &format!(r#"{{"records":[{}]}}"#, records.join(",")),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        stored += 30 * big.len();
    }
    let tls = connector(&dir.path().join("tls/ca.pem"));
    let tcp = tokio::net::TcpStream::connect(kafka_addr(&server, "SECURE"))
        .await
        .unwrap();
    let mut s = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    for round in 0..5 {
        let fetch = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(topic)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(64 << 20),
                    ]),
            ]);
        let r: FetchResponse = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            // Reading late lets the server fill the socket and be told to wait mid-response.
            kafka_call_slow(&mut s, 1, 11, &fetch, std::time::Duration::from_millis(300)),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the response never completed"));
        let bytes = r.responses[0].partitions[0]
            .records
            .as_ref()
            .map_or(0, |b| b.len());
        assert!(bytes >= stored, "round {round}: {bytes} < {stored}");
    }
    server.stop();
}

/// `security.trust_unauthenticated = false`: a PLAINTEXT client is `User:ANONYMOUS`, refused
/// until an ACL names it, as in Kafka with an authorizer.
#[tokio::test]
async fn unauthenticated_clients_can_be_held_to_acls() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[security]\ntrust_unauthenticated = false\n").unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let topic = "smarteros.t1.shopify.order_created";
    let (s, _) = server
        .post(
            "/v1/events",
            r#"{"event_type":"order_created","tenant_id":"t1","service":"shopify","data":{}}"#,
        )
        .await;
    assert_eq!(s, 200);
    let list = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1),
            ]),
    ]);
    let mut s = tokio::net::TcpStream::connect(kafka_addr(&server, "PLAINTEXT"))
        .await
        .unwrap();
    let r: ListOffsetsResponse = kafka_call(&mut s, 2, 5, &list).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 29);
    let out = server.cli(
        &[
            "acl",
            "create",
            "--principal",
            "User:ANONYMOUS",
            "--operation",
            "DESCRIBE",
            "--topic",
            topic,
        ],
        None,
    );
    assert!(out.status.success());
    let r: ListOffsetsResponse = kafka_call(&mut s, 2, 5, &list).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(r.topics[0].partitions[0].offset, 1);
    server.stop();
}
