//! `herald-cluster`, the Kafka-cluster storage client, against a real `herald serve` as the
//! cluster: connection checks and their errors, topics, produce and read, long-poll,
//! watermarks, offsets by time, record deletion and consumer groups made by librdkafka.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Server;
use herald_broker::{Existing, Missing};
use herald_cluster::{
    ClusterConfig, ClusterError, ConnectError, Header, KafkaCluster, OffsetReset, ProduceRecord,
};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};

const ADMIN: &str = "cluster-test-admin-key-0123456789";

fn kafka_listener(server: &Server, name: &str) -> String {
    server
        .stdout_lines
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some(name))
                .then(|| w.next().map(str::to_owned))
        })
        .flatten()
        .unwrap_or_else(|| panic!("no Kafka {name} line in {:?}", server.stdout_lines))
}

fn start() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let addr = kafka_listener(&server, "PLAINTEXT");
    (dir, server, addr)
}

async fn connect(addr: &str) -> KafkaCluster {
    let mut cfg = ClusterConfig::new(addr);
    cfg.limits.connect_timeout = Duration::from_secs(10);
    KafkaCluster::connect(cfg).await.expect("connect")
}

fn record(i: usize, ts: Option<i64>) -> ProduceRecord {
    ProduceRecord {
        key: Some(format!("key-{i}").into_bytes()),
        value: Some(format!("{{\"n\":{i}}}").into_bytes()),
        headers: vec![
            Header {
                key: "seq".to_owned(),
                value: Some(i.to_string().into_bytes()),
            },
            Header {
                key: "empty".to_owned(),
                value: None,
            },
        ],
        timestamp_ms: ts,
    }
}

#[tokio::test]
async fn connects_and_reports_the_cluster() {
    let (_dir, server, addr) = start();
    let cluster = connect(&addr).await;
    assert_eq!(cluster.broker_count(), 1);
    assert_eq!(cluster.bootstrap(), addr);
    if let Some(id) = cluster.cluster_id() {
        assert!(!id.is_empty());
    }
    server.stop();
}

#[tokio::test]
async fn a_closed_port_is_unreachable_and_named_within_the_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = ClusterConfig::new(&addr);
    cfg.limits.connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = KafkaCluster::connect(cfg)
        .await
        .err()
        .expect("nothing listens there");
    let took = started.elapsed();
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test]
async fn sasl_credentials_and_permissions_are_checked_on_connect() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--kafka-listener", "SASL=SASL_PLAINTEXT://127.0.0.1:0"],
        &[
            ("HERALD_ADMIN_API_KEY", ADMIN),
            ("HERALD_SUPERUSERS", "User:admin"),
        ],
    );
    let addr = kafka_listener(&server, "SASL");
    let r = server
        .client()
        .put(format!("{}/v1/users/admin", server.url))
        .header("X-API-Key", ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"password":"admin-secret-password"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (status, body) = server
        .post(
            "/v1/tenants",
            r#"{"id":"acme","password":"tenant-secret-password"}"#,
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");

    let sasl = |user: &str, password: &str| {
        let mut cfg = ClusterConfig::new(&addr)
            .property("security.protocol", "SASL_PLAINTEXT")
            .property("sasl.mechanism", "SCRAM-SHA-256")
            .property("sasl.username", user)
            .property("sasl.password", password);
        cfg.limits.connect_timeout = Duration::from_secs(5);
        cfg
    };

    let err = KafkaCluster::connect(sasl("admin", "not-the-password"))
        .await
        .err()
        .expect("wrong password");
    assert!(
        matches!(&err, ConnectError::AuthenticationFailed { user, .. } if user == "admin"),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("not-the-password"));

    let err = KafkaCluster::connect(sasl("tenant-acme", "tenant-secret-password"))
        .await
        .err()
        .expect("a tenant may not describe the cluster");
    assert!(
        matches!(&err, ConnectError::PermissionDenied { principal, .. } if principal == "User:tenant-acme"),
        "{err:?}"
    );

    let cluster = KafkaCluster::connect(sasl("admin", "admin-secret-password"))
        .await
        .expect("superuser connects");
    cluster
        .create_topic("sasl-topic", 1, &BTreeMap::new())
        .await
        .unwrap();
    assert!(
        cluster
            .list_topics()
            .await
            .unwrap()
            .contains(&"sasl-topic".to_owned())
    );
    let offsets = cluster
        .produce("sasl-topic", 0, vec![record(7, None)])
        .await
        .unwrap();
    let got = cluster
        .read(
            "sasl-topic",
            0,
            offsets[0],
            10,
            1 << 20,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].value.as_deref(), Some(&b"{\"n\":7}"[..]));
    server.stop();
}

#[tokio::test]
async fn topics_are_created_described_altered_and_deleted() {
    let (_dir, server, addr) = start();
    let cluster = connect(&addr).await;
    let configs = BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]);
    cluster.create_topic("orders", 2, &configs).await.unwrap();

    let again = cluster.create_topic("orders", 2, &configs).await;
    assert!(
        matches!(&again, Err(ClusterError::Conflict(Existing::Topic(t))) if t == "orders"),
        "{again:?}"
    );

    let d = cluster.describe_topic("orders").await.unwrap();
    assert_eq!(d.partitions, 2);
    let get = |d: &herald_cluster::TopicDescription, k: &str| {
        d.configs.iter().find(|e| e.name == k).cloned()
    };
    let retention = get(&d, "retention.ms").expect("retention.ms described");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(retention.is_set);

    // Altering one key keeps the others set on the topic.
    let change = BTreeMap::from([("max.message.bytes".to_owned(), "524288".to_owned())]);
    cluster
        .alter_topic_configs("orders", &change)
        .await
        .unwrap();
    let d = cluster.describe_topic("orders").await.unwrap();
    assert_eq!(
        get(&d, "max.message.bytes")
            .and_then(|e| e.value)
            .as_deref(),
        Some("524288")
    );
    assert_eq!(
        get(&d, "retention.ms").and_then(|e| e.value).as_deref(),
        Some("3600000")
    );

    let bad = BTreeMap::from([("retention.ms".to_owned(), "soon".to_owned())]);
    let refused = cluster.alter_topic_configs("orders", &bad).await;
    assert!(
        matches!(refused, Err(ClusterError::Invalid(_))),
        "{refused:?}"
    );

    cluster.create_partitions("orders", 4).await.unwrap();
    assert_eq!(
        cluster.describe_topic("orders").await.unwrap().partitions,
        4
    );
    let fewer = cluster.create_partitions("orders", 3).await;
    assert!(matches!(fewer, Err(ClusterError::Invalid(_))), "{fewer:?}");

    assert!(
        cluster
            .list_topics()
            .await
            .unwrap()
            .contains(&"orders".to_owned())
    );
    cluster.delete_topic("orders").await.unwrap();
    let gone = cluster.describe_topic("orders").await;
    assert!(
        matches!(&gone, Err(ClusterError::NotFound(Missing::Topic(t))) if t == "orders"),
        "{gone:?}"
    );
    let gone = cluster.delete_topic("orders").await;
    assert!(matches!(gone, Err(ClusterError::NotFound(_))), "{gone:?}");
    assert!(
        !cluster
            .list_topics()
            .await
            .unwrap()
            .contains(&"orders".to_owned())
    );
    server.stop();
}

#[tokio::test]
async fn a_thousand_records_are_produced_and_read_back_in_order() {
    let (_dir, server, addr) = start();
    let cluster = connect(&addr).await;
    cluster
        .create_topic("events", 1, &BTreeMap::new())
        .await
        .unwrap();

    let base_ts = 1_700_000_000_000i64;
    let mut offsets = Vec::new();
    for chunk in 0..4 {
        let records = (chunk * 250..(chunk + 1) * 250)
            .map(|i| record(i, Some(base_ts + i as i64 * 1000)))
            .collect();
        offsets.extend(cluster.produce("events", 0, records).await.unwrap());
    }
    assert_eq!(offsets.len(), 1000);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");

    let w = cluster.watermarks("events", 0).await.unwrap();
    assert_eq!((w.log_start, w.high_watermark), (0, 1000));

    let mut read = Vec::new();
    let mut next = 0u64;
    while next < 1000 {
        let r = cluster
            .read("events", 0, next, 300, 1 << 20, Duration::ZERO)
            .await
            .unwrap();
        assert!(!r.records.is_empty(), "stalled at {next}");
        assert!(r.records.len() <= 300);
        assert_eq!(r.high_watermark, 1000);
        next = r.records.last().unwrap().offset + 1;
        read.extend(r.records);
    }
    assert_eq!(read.len(), 1000);
    for (i, rec) in read.iter().enumerate() {
        assert_eq!(rec.offset, offsets[i]);
        assert_eq!(rec.key.as_deref(), Some(format!("key-{i}").as_bytes()));
        assert_eq!(
            rec.value.as_deref(),
            Some(format!("{{\"n\":{i}}}").as_bytes())
        );
        assert_eq!(rec.headers, record(i, None).headers);
        assert_eq!(rec.timestamp_ms, Some(base_ts + i as i64 * 1000));
    }

    // max_bytes: each value is small, so a tight byte budget returns fewer records, never none.
    let small = cluster
        .read("events", 0, 0, 1000, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(small.records.len(), 1);

    assert_eq!(
        cluster
            .offset_for_time("events", 0, base_ts + 500_500)
            .await
            .unwrap(),
        Some(501)
    );
    assert_eq!(
        cluster.offset_for_time("events", 0, base_ts).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        cluster
            .offset_for_time("events", 0, base_ts + 10_000_000)
            .await
            .unwrap(),
        None
    );

    let beyond = cluster
        .read("events", 0, 5000, 10, 1 << 20, Duration::ZERO)
        .await;
    assert!(
        matches!(
            beyond,
            Err(ClusterError::OffsetOutOfRange {
                log_start: 0,
                high_watermark: 1000,
                offset: 5000,
                ..
            })
        ),
        "{beyond:?}"
    );

    assert_eq!(
        cluster
            .delete_records_before("events", 0, 100)
            .await
            .unwrap(),
        100
    );
    let w = cluster.watermarks("events", 0).await.unwrap();
    assert_eq!((w.log_start, w.high_watermark), (100, 1000));
    let before = cluster
        .read("events", 0, 50, 10, 1 << 20, Duration::ZERO)
        .await;
    assert!(
        matches!(
            before,
            Err(ClusterError::OffsetOutOfRange { log_start: 100, .. })
        ),
        "{before:?}"
    );
    let first = cluster
        .read("events", 0, 100, 1, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.records[0].offset, 100);
    assert_eq!(first.log_start, 100);

    let missing = cluster
        .produce("no-such-topic-here", 0, vec![record(0, None)])
        .await;
    assert!(missing.is_err(), "{missing:?}");
    let missing = cluster.watermarks("events", 7).await;
    assert!(missing.is_err(), "{missing:?}");
    server.stop();
}

#[tokio::test]
async fn a_long_poll_read_returns_when_a_record_arrives() {
    let (_dir, server, addr) = start();
    let cluster = connect(&addr).await;
    cluster
        .create_topic("waits", 1, &BTreeMap::new())
        .await
        .unwrap();
    cluster
        .produce("waits", 0, vec![record(0, None)])
        .await
        .unwrap();

    // Nothing at the end yet and no wait: an empty answer at once.
    let empty = cluster
        .read("waits", 0, 1, 10, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.high_watermark, 1);

    let reader = cluster.clone();
    let started = Instant::now();
    let read = tokio::spawn(async move {
        reader
            .read("waits", 0, 1, 10, 1 << 20, Duration::from_secs(25))
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!read.is_finished(), "the read waits for a record");
    let produced = cluster
        .produce("waits", 0, vec![record(1, None)])
        .await
        .unwrap();
    let got = read.await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].offset, produced[0]);
    assert_eq!(got.records[0].key.as_deref(), Some(&b"key-1"[..]));
    assert!(
        took < Duration::from_secs(15),
        "woken, not timed out: {took:?}"
    );

    // A wait with nothing arriving ends empty after about the wait.
    let started = Instant::now();
    let none = cluster
        .read("waits", 0, 2, 10, 1 << 20, Duration::from_millis(800))
        .await
        .unwrap();
    assert!(none.records.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(700));
    server.stop();
}

#[tokio::test]
async fn consumer_groups_are_listed_described_reset_and_deleted() {
    let (_dir, server, addr) = start();
    let cluster = connect(&addr).await;
    cluster
        .create_topic("work", 2, &BTreeMap::new())
        .await
        .unwrap();
    for p in 0..2 {
        let records = (0..10).map(|i| record(i, None)).collect();
        cluster.produce("work", p, records).await.unwrap();
    }

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "workers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["work"]).unwrap();
    // Consume 15 of the 20 records and commit what was consumed.
    let mut seen = 0;
    while seen < 15 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("records arrive")
            .unwrap();
        seen += 1;
        consumer.commit_message(&m, CommitMode::Sync).unwrap();
        let _ = m.offset();
    }

    let groups = cluster.list_groups().await.unwrap();
    let g = groups.iter().find(|g| g.name == "workers").expect("listed");
    assert_eq!(g.members, 1);
    assert_eq!(g.protocol_type, "consumer");

    let d = cluster.describe_group("workers").await.unwrap();
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members.len(), 1);
    let assigned = d.members[0]
        .assignment
        .get("work")
        .cloned()
        .unwrap_or_default();
    assert_eq!(assigned, vec![0, 1]);

    let offsets = cluster.group_offsets("workers", &[]).await.unwrap();
    let committed: u64 = offsets.iter().map(|o| o.committed).sum();
    let lag: u64 = offsets.iter().map(|o| o.lag).sum();
    assert_eq!(committed, 15);
    assert_eq!(lag, 5);
    assert!(offsets.iter().all(|o| o.high_watermark == 10));

    let busy = cluster
        .reset_group_offsets("workers", "work", OffsetReset::Earliest)
        .await;
    assert!(
        matches!(&busy, Err(ClusterError::GroupNotEmpty { members: 1, .. })),
        "{busy:?}"
    );
    let busy = cluster.delete_group("workers").await;
    assert!(
        matches!(busy, Err(ClusterError::GroupNotEmpty { .. })),
        "{busy:?}"
    );

    consumer.unsubscribe();
    drop(consumer);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = cluster.describe_group("workers").await.unwrap();
        if d.members.is_empty() {
            assert_eq!(d.state, "Empty");
            break;
        }
        assert!(Instant::now() < deadline, "the member never left: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let moved = cluster
        .reset_group_offsets("workers", "work", OffsetReset::Earliest)
        .await
        .unwrap();
    assert_eq!(moved, vec![(0, 0), (1, 0)]);
    let lag: u64 = cluster
        .group_offsets("workers", &["work".to_owned()])
        .await
        .unwrap()
        .iter()
        .map(|o| o.lag)
        .sum();
    assert_eq!(lag, 20);

    let moved = cluster
        .reset_group_offsets("workers", "work", OffsetReset::Offset(4))
        .await
        .unwrap();
    assert_eq!(moved, vec![(0, 4), (1, 4)]);
    let moved = cluster
        .reset_group_offsets("workers", "work", OffsetReset::Timestamp(0))
        .await
        .unwrap();
    assert_eq!(moved, vec![(0, 0), (1, 0)]);
    let future = i64::MAX / 2;
    let moved = cluster
        .reset_group_offsets("workers", "work", OffsetReset::Timestamp(future))
        .await
        .unwrap();
    assert_eq!(moved, vec![(0, 10), (1, 10)]);
    let moved = cluster
        .reset_group_offsets("workers", "work", OffsetReset::Latest)
        .await
        .unwrap();
    assert_eq!(moved, vec![(0, 10), (1, 10)]);
    let offsets = cluster
        .group_offsets("workers", &["work".to_owned()])
        .await
        .unwrap();
    assert!(
        offsets.iter().all(|o| o.committed == 10 && o.lag == 0),
        "{offsets:?}"
    );

    cluster.delete_group("workers").await.unwrap();
    let gone = cluster.describe_group("workers").await;
    assert!(
        matches!(&gone, Err(ClusterError::NotFound(Missing::Group(g))) if g == "workers"),
        "{gone:?}"
    );
    assert!(
        !cluster
            .list_groups()
            .await
            .unwrap()
            .iter()
            .any(|g| g.name == "workers")
    );
    server.stop();
}

#[tokio::test]
async fn a_full_producer_queue_is_an_overload_error_not_a_wait() {
    let (_dir, server, addr) = start();
    let mut cfg = ClusterConfig::new(&addr);
    cfg.limits.producer_queue_messages = 10;
    let cluster = KafkaCluster::connect(cfg).await.unwrap();
    cluster
        .create_topic("small", 1, &BTreeMap::new())
        .await
        .unwrap();

    let started = Instant::now();
    let many = (0..500).map(|i| record(i, None)).collect();
    let full = cluster.produce("small", 0, many).await;
    assert!(
        matches!(&full, Err(ClusterError::Overloaded(m)) if m.contains("queue is full")),
        "{full:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // What was queued before the refusal is still written; the queue drains and takes more.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = cluster.watermarks("small", 0).await.unwrap();
        if w.high_watermark >= 10 {
            assert_eq!(w.high_watermark, 10);
            break;
        }
        assert!(Instant::now() < deadline, "queued records never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let offsets = cluster
        .produce("small", 0, (0..5).map(|i| record(i, None)).collect())
        .await
        .unwrap();
    assert_eq!(offsets, vec![10, 11, 12, 13, 14]);
    server.stop();
}
