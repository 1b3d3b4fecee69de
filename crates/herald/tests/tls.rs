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
