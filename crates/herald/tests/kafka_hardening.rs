//! The Kafka listener against hostile and unusual clients, through the real binary and raw
//! frames over TCP: what unauthenticated clients may send, the memory all connections together
//! may hold, how much a flood of garbage may make the server log, and the drain on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{Server, herald_bin};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "kafka-hardening-admin-key-0123456789";

/// A `herald serve` whose stdout and stderr are both captured: the Kafka listener addresses
/// come from stdout, the log lines from stderr.
struct Proc {
    child: Child,
    url: String,
    stdout: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn start(dir: &std::path::Path, toml: &str, listeners: &[&str]) -> Proc {
        let config = dir.join("herald.toml");
        std::fs::write(&config, toml).unwrap();
        let mut cmd = Command::new(herald_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--http-addr", "127.0.0.1:0"]);
        for l in listeners {
            cmd.args(["--kafka-listener", l]);
        }
        let mut child = cmd
            .env("HERALD_ADMIN_API_KEY", ADMIN)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = Vec::new();
        let url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("herald did not start: {stdout:?} {stderr:?}"));
            let url = line
                .trim_start()
                .starts_with("HTTP API")
                .then(|| line.split_whitespace().find(|w| w.starts_with("http://")))
                .flatten()
                .map(str::to_owned);
            stdout.push(line);
            if let Some(u) = url {
                break u;
            }
        };
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Proc {
            child,
            url,
            stdout,
            stderr,
        }
    }

    fn kafka(&self, name: &str) -> String {
        kafka_addr(&self.stdout, name)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    fn stderr_lines(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    async fn metrics(&self) -> String {
        herald_auth::tls::install_default_provider();
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kafka_addr(stdout: &[String], name: &str) -> String {
    stdout
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some(name))
                .then(|| w.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no Kafka {name} line in {stdout:?}"))
}

/// ApiVersions v0, correlation id 7.
fn api_versions_request() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&4i16.to_be_bytes());
    body.extend_from_slice(b"test");
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// The first 12 bytes of a Produce v9 frame declaring `len` bytes: size, api key, version,
/// correlation id. The rest is never needed to tell what the server does with the size.
fn produce_header(len: i32) -> Vec<u8> {
    let mut b = len.to_be_bytes().to_vec();
    b.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    b.extend_from_slice(&9i16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b
}

/// Whether the server closes the connection (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn answers_api_versions(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(&api_versions_request()).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(20), s.read_i32()).await,
        Ok(Ok(n)) if n > 0
    )
}

#[tokio::test]
async fn an_unauthenticated_oversize_frame_on_a_sasl_listener_closes_the_connection_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(dir.path(), "", &["SASL=SASL_PLAINTEXT://127.0.0.1:0"]);
    let addr = server.kafka("SASL");

    // 1 MiB, far below max_request_bytes but above what a SASL exchange needs: refused on its
    // header alone, without waiting for (or buffering) the body.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&produce_header(1024 * 1024)).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "a 1 MiB frame before authentication must close the connection at once"
    );
    // The same on a SaslAuthenticate frame: the exchange itself is small.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut head = (1024 * 1024i32).to_be_bytes().to_vec();
    head.extend_from_slice(&(ApiKey::SaslAuthenticate as i16).to_be_bytes());
    s.write_all(&head).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);

    // Requests that fit are still served before authentication.
    assert!(answers_api_versions(&addr).await);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"kafka_requests_rejected_total{reason="too_large"} 2"#),
        "{metrics}"
    );
}

static BODY: [u8; 1024 * 1024] = [0u8; 1024 * 1024];

#[tokio::test]
async fn request_memory_across_connections_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(
        dir.path(),
        "[kafka]\nmax_request_bytes = 8388608\nqueued_max_request_bytes = 16777216\nrequest_read_timeout_secs = 6\n",
        &["PLAINTEXT=PLAINTEXT://127.0.0.1:0"],
    );
    let addr = server.kafka("PLAINTEXT");
    assert!(answers_api_versions(&addr).await);
    let before = server.rss_kib();

    // 200 connections each declare an 8 MiB Produce and send 1 MiB of it: without a shared
    // bound the server holds 200 MiB of partial requests.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let addr = addr.clone();
        conns.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(&produce_header(8 * 1024 * 1024)).await.unwrap();
            // Blocks once the server stops reading; the socket is kept open until the end.
            let _ = tokio::time::timeout(Duration::from_secs(4), s.write_all(&BODY)).await;
            s
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = server.rss_kib();
    let grown_mib = during.saturating_sub(before) / 1024;
    eprintln!("RSS before {before} KiB, with 200 partial 8 MiB requests {during} KiB");
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB with queued_max_request_bytes = 16 MiB"
    );

    // Waiting connections are not held forever: once the stalled requests time out, a new
    // client is answered.
    let mut held = Vec::new();
    for c in conns {
        held.push(c.await.unwrap());
    }
    assert!(answers_api_versions(&addr).await);
    drop(held);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"kafka_requests_rejected_total{reason="read_timeout"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn garbage_requests_are_counted_and_their_warnings_capped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(dir.path(), "", &["PLAINTEXT=PLAINTEXT://127.0.0.1:0"]);
    let addr = server.kafka("PLAINTEXT");
    // 5,000 requests with an API key Kafka does not have, 50 connections at a time.
    let garbage = {
        let mut f = 12i32.to_be_bytes().to_vec();
        f.extend_from_slice(&999i16.to_be_bytes());
        f.extend_from_slice(&[0u8; 10]);
        f
    };
    let garbage = Arc::new(garbage);
    let mut workers = Vec::new();
    for _ in 0..50 {
        let addr = addr.clone();
        let garbage = Arc::clone(&garbage);
        workers.push(tokio::spawn(async move {
            for _ in 0..100 {
                let mut s = TcpStream::connect(&addr).await.unwrap();
                s.write_all(&garbage).await.unwrap();
                assert!(closed_within(&mut s, Duration::from_secs(10)).await);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    // Give the last log lines time to be written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = server.stderr_lines("closing kafka connection");
    eprintln!("5000 garbage requests wrote {lines} warnings");
    assert!(lines >= 1, "the first rejections are still logged");
    assert!(lines <= 40, "5000 garbage requests wrote {lines} warnings");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"kafka_requests_rejected_total{reason="unknown_api"} 5000"#),
        "{metrics}"
    );
    assert!(answers_api_versions(&addr).await);
}

fn produce_frame(topic: &str, value: &[u8]) -> Vec<u8> {
    let batch = herald_log::batch::build(&[herald_log::batch::Record {
        offset: 0,
        timestamp_ms: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::copy_from_slice(value)),
        headers: Vec::new(),
    }])
    .unwrap();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("drain-test")))
        .encode(&mut body, ApiKey::Produce.request_header_version(9))
        .unwrap();
    req.encode(&mut body, 9).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    frame.to_vec()
}

/// Fetch v11 of partition 0 of `topic` from offset 0, waiting up to 30 s for a byte.
fn long_poll_frame(topic: &str) -> Vec<u8> {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let req = FetchRequest::default()
        .with_max_wait_ms(30_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(11)
        .with_correlation_id(43)
        .encode(&mut body, ApiKey::Fetch.request_header_version(11))
        .unwrap();
    req.encode(&mut body, 11).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    frame.to_vec()
}

#[tokio::test]
async fn sigterm_answers_a_produce_in_flight_and_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let (status, body) = server
        .post("/v1/topics", r#"{"name":"drain-test","partitions":1}"#)
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let (status, body) = server
        .post("/v1/topics", r#"{"name":"drain-quiet","partitions":1}"#)
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let addr = kafka_addr(&server.stdout_lines, "PLAINTEXT");

    // A consumer long-polling an empty partition for 30 s: the drain ends its wait.
    let mut poll = TcpStream::connect(&addr).await.unwrap();
    poll.write_all(&long_poll_frame("drain-quiet"))
        .await
        .unwrap();
    // An idle connection, which the drain closes at once.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    // A produce whose first half has arrived when SIGTERM does.
    let frame = produce_frame("drain-test", br#"{"n":1}"#);
    let (first, rest) = frame.split_at(frame.len() / 2);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    s.write_all(rest).await.unwrap();

    let len = tokio::time::timeout(Duration::from_secs(10), s.read_i32())
        .await
        .expect("the produce in flight is answered")
        .expect("the produce in flight is answered, not dropped");
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    let mut buf = Bytes::from(buf);
    let header =
        ResponseHeader::decode(&mut buf, ApiKey::Produce.response_header_version(9)).unwrap();
    assert_eq!(header.correlation_id, 42);
    let resp = ProduceResponse::decode(&mut buf, 9).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "{resp:?}");
    assert_eq!(p.base_offset, 0);
    // The long-poll was answered (with nothing) instead of being cut off or holding the drain.
    let len = tokio::time::timeout(Duration::from_secs(5), poll.read_i32())
        .await
        .expect("the long-poll is answered within the drain")
        .expect("the long-poll is answered, not dropped");
    let mut buf = vec![0u8; len as usize];
    poll.read_exact(&mut buf).await.unwrap();
    assert_eq!(i32::from_be_bytes(buf[0..4].try_into().unwrap()), 43);
    // After the response the connection is closed and the process exits.
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "herald did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);

    // Durable: a restart on the same data directory has the record.
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let events = common::read_all(&server, "drain-test", 0).await;
    assert_eq!(events.len(), 1, "{events:?}");
}
