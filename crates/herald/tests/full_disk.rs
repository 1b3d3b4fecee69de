//! A full disk through the real binary: the data directory on an 8 MiB tmpfs. Publishing until
//! the disk is full gets HTTP 507 and Kafka KAFKA_STORAGE_ERROR; reads and `/health` keep
//! working and every acknowledged event reads back; deleting a topic over HTTP frees the space
//! and publishing resumes without a restart; a SIGTERM shutdown is clean and a restart has
//! everything acknowledged. Skips (saying why) where tmpfs cannot be mounted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, read_all};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KAFKA_STORAGE_ERROR: i16 = 56;

/// An 8 MiB tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn event(tenant: &str, event_type: &str, id: &str, pad: usize) -> Value {
    json!({"event_id": id, "event_type": event_type, "tenant_id": tenant, "service": "disk",
           "data": {"pad": "x".repeat(pad)}})
}

fn kafka_addr(server: &Server) -> String {
    server
        .stdout_lines
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some("PLAINTEXT"))
                .then(|| w.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no Kafka line in {:?}", server.stdout_lines))
}

/// A raw Produce v9 of one batch to partition 0; returns the partition's error code.
async fn kafka_produce(addr: &str, topic: &str, value: &str) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let batch = herald_log::batch::build(&[herald_log::Record {
        offset: 0,
        timestamp_ms: 1_700_000_000_000,
        key: None,
        value: Some(bytes::Bytes::from(value.to_owned())),
        headers: Vec::new(),
    }])
    .unwrap();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(bytes::Bytes::from(batch))),
                ]),
        ]);
    let (key, version) = (ApiKey::Produce, 9);
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("full-disk-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&(buf.len() as i32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&buf).await.unwrap();
    let len = s.read_i32().await.unwrap();
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut b = bytes::Bytes::from(body);
    ResponseHeader::decode(&mut b, key.response_header_version(version)).unwrap();
    let resp = ProduceResponse::decode(&mut b, version).unwrap();
    resp.responses[0].partition_responses[0].error_code
}

/// Every acknowledged (event id, offset) of `topic` reads back where the server said.
async fn assert_acked(server: &Server, topic: &str, acked: &[(String, u64)]) {
    let events = read_all(server, topic, 0).await;
    let stored: HashSet<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["value"]["event_id"].as_str().unwrap().to_owned(),
                e["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    for a in acked {
        assert!(
            stored.contains(a),
            "acknowledged event {a:?} missing from {topic}"
        );
    }
}

/// SIGTERM, and the process must exit successfully (the final checkpoint included).
fn stop_cleanly(mut server: Server) {
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "herald exited with {status} after SIGTERM"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "herald did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_keeps_reads_and_heals_after_deleting_a_topic() {
    let mount_dir = tempfile::tempdir().unwrap();
    let _tmpfs = match Tmpfs::mount(mount_dir.path()) {
        Ok(m) => m,
        Err(reason) => {
            eprintln!("SKIPPED: the full-disk test needs a small tmpfs: {reason}");
            return;
        }
    };
    let data = mount_dir.path().join("data");
    let conf_dir = tempfile::tempdir().unwrap();
    let config = conf_dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[log]\nsegment_bytes = 1048576\ncheckpoint_interval_secs = 2\nretention_check_interval_secs = 3600\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = Server::start(&data, &args, &[]);
    let client = server.client();

    // A few "keep" events, then "bulk" until the disk is full: the segments after the first
    // hold only "bulk", so deleting it frees them.
    let mut bulk_topic = String::new();
    let mut keep_topic = String::new();
    let mut bulk_acked: Vec<(String, u64)> = Vec::new();
    let mut keep_acked: Vec<(String, u64)> = Vec::new();
    let mut full_body = Value::Null;
    for i in 0..20_000 {
        let (kind, pad) = if i < 50 {
            ("keep", 500)
        } else {
            ("bulk", 3000)
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (status, body) = server
            .post("/v1/events", &event("fill", kind, &id, pad).to_string())
            .await;
        if status == 507 {
            full_body = body;
            break;
        }
        assert_eq!(status, 200, "publish {i}: {body}");
        let topic = body["topic"].as_str().unwrap().to_owned();
        let offset = body["offset"].as_u64().unwrap();
        if kind == "keep" {
            keep_topic = topic;
            keep_acked.push((id, offset));
        } else {
            bulk_topic = topic;
            bulk_acked.push((id, offset));
        }
    }
    assert_eq!(
        full_body["error"]["code"], "insufficient_storage",
        "the disk never filled up, or the answer was not 507: {full_body}"
    );
    assert!(
        full_body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no space left"),
        "{full_body}"
    );
    eprintln!(
        "disk full after {} bulk and {} keep events",
        bulk_acked.len(),
        keep_acked.len()
    );

    // Another topic is refused too: the disk, not the topic, is full.
    let (status, body) = server
        .post(
            "/v1/events",
            &event("fill", "keep", &uuid::Uuid::new_v4().to_string(), 3000).to_string(),
        )
        .await;
    assert_eq!(status, 507, "{body}");

    // Kafka says KAFKA_STORAGE_ERROR.
    let envelope = event("fill", "keep", &uuid::Uuid::new_v4().to_string(), 3000).to_string();
    assert_eq!(
        kafka_produce(&kafka_addr(&server), &keep_topic, &envelope).await,
        KAFKA_STORAGE_ERROR
    );

    // Reads and /health keep working; everything acknowledged is there.
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_acked(&server, &keep_topic, &keep_acked).await;
    assert_acked(&server, &bulk_topic, &bulk_acked).await;

    // Deleting a topic works on the full disk.
    let resp = client
        .delete(format!("{}/v1/topics/{bulk_topic}", server.url))
        .header("X-API-Key", &server.key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(
        (200..300).contains(&status),
        "DELETE answered {status}: {}",
        resp.text().await.unwrap()
    );

    // Publishing resumes by itself once the deleted topic's segments are reclaimed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let id = uuid::Uuid::new_v4().to_string();
        let (status, body) = server
            .post("/v1/events", &event("fill", "keep", &id, 3000).to_string())
            .await;
        if status == 200 {
            keep_acked.push((id, body["offset"].as_u64().unwrap()));
            break;
        }
        assert_eq!(status, 507, "{body}");
        assert!(
            Instant::now() < deadline,
            "publishing did not resume within 60 s of deleting a topic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..20 {
        let id = uuid::Uuid::new_v4().to_string();
        let (status, body) = server
            .post("/v1/events", &event("fill", "keep", &id, 3000).to_string())
            .await;
        assert_eq!(status, 200, "{body}");
        keep_acked.push((id, body["offset"].as_u64().unwrap()));
    }
    assert_eq!(
        kafka_produce(&kafka_addr(&server), &keep_topic, &envelope).await,
        0,
        "Kafka produce after the disk healed"
    );

    stop_cleanly(server);
    let server = Server::start(&data, &args, &[]);
    assert_acked(&server, &keep_topic, &keep_acked).await;
    let (status, _) = server.get(&format!("/v1/topics/{bulk_topic}")).await;
    assert_eq!(status, 404, "the deleted topic stays deleted");
    stop_cleanly(server);
}
