//! End-to-end tests of the HTTP API against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{SEED_EVENT, Server, read_all};
use serde_json::{Value, json};

const SEED_TOPIC: &str = "smarteros.76953480-3.shopify.order_created";

#[tokio::test]
async fn seed_event_round_trip_over_http_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("admin API key")),
        "the generated key is printed at first start: {:?}",
        server.stdout_lines
    );

    let (status, body) = server.post("/v1/events", SEED_EVENT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], SEED_TOPIC);
    assert_eq!(body["partition"], 0);
    assert_eq!(body["offset"], 0);
    let event_id = body["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&event_id).unwrap().get_version_num(),
        4
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    let events = read_all(&server, SEED_TOPIC, 0).await;
    assert_eq!(events.len(), 1);
    let v = &events[0]["value"];
    assert_eq!(events[0]["format"], "json");
    assert_eq!(v["event_id"], event_id.as_str());
    assert_eq!(v["tenant_id"], "76953480-3");
    assert_eq!(v["data"]["order_id"], 450789469);
    assert_eq!(v["data"]["total_price"], "199990");

    let out = server.cli(&["topic", "consume", SEED_TOPIC, "--num", "1"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["offset"], 0);
    assert_eq!(line["value"]["event_id"], event_id.as_str());

    let out = server.cli(&["topic", "list"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(SEED_TOPIC));

    // A restart keeps the data and does not print the key again.
    let data = server.data_dir.clone();
    server.stop();
    let server = Server::start(&data, &[], &[]);
    assert!(
        !server
            .stdout_lines
            .iter()
            .any(|l| l.contains("admin API key"))
    );
    let (status, body) = server.post("/v1/events", SEED_EVENT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 1, "appends continue after the restart");
    assert_eq!(read_all(&server, SEED_TOPIC, 0).await.len(), 2);
}

#[tokio::test]
async fn ten_thousand_events_from_sixteen_clients_read_back_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(dir.path(), &[], &[]));
    let topic = "smarteros.acme.shop.order_created";
    let (status, body) = server
        .post(
            "/v1/topics",
            &json!({"name": topic, "partitions": 4}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let mut tasks = Vec::new();
    for client in 0..16 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            // Mix single events and arrays of 25.
            let mut sent = 0;
            while sent < 625 {
                let n = if sent % 50 == 0 {
                    1
                } else {
                    25.min(625 - sent)
                };
                let events: Vec<Value> = (0..n)
                    .map(|i| {
                        json!({
                            "event_id": uuid::Uuid::new_v4().to_string(),
                            "event_type": "order_created", "tenant_id": "acme", "service": "shop",
                            "data": {"client": client, "seq": sent + i}
                        })
                    })
                    .collect();
                let body = if n == 1 {
                    events[0].to_string()
                } else {
                    Value::Array(events).to_string()
                };
                let (status, resp) = server.post("/v1/events", &body).await;
                assert_eq!(status, 200, "{resp}");
                let results = if n == 1 {
                    vec![resp]
                } else {
                    resp.as_array().unwrap().clone()
                };
                assert_eq!(results.len(), n);
                for r in results {
                    acked.push((
                        r["event_id"].as_str().unwrap().to_owned(),
                        r["partition"].as_u64().unwrap(),
                        r["offset"].as_u64().unwrap(),
                    ));
                }
                sent += n;
            }
            acked
        }));
    }
    let mut acked: HashMap<String, (u64, u64)> = HashMap::new();
    for t in tasks {
        for (id, p, o) in t.await.unwrap() {
            assert!(
                acked.insert(id, (p, o)).is_none(),
                "event id acknowledged twice"
            );
        }
    }
    assert_eq!(acked.len(), 10_000);

    let mut seen = HashSet::new();
    let mut total = 0;
    for p in 0..4u32 {
        let events = read_all(&server, topic, p).await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["offset"].as_u64().unwrap(),
                i as u64,
                "offsets are contiguous in partition {p}"
            );
            let id = e["value"]["event_id"].as_str().unwrap().to_owned();
            assert_eq!(
                acked.get(&id),
                Some(&(u64::from(p), i as u64)),
                "read where it was acknowledged"
            );
            assert!(seen.insert(id), "each event appears once");
        }
        total += events.len();
    }
    assert_eq!(total, 10_000);
    // Each client's events keep their publish order within a partition.
    for p in 0..4u32 {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for e in read_all(&server, topic, p).await {
            let c = e["value"]["data"]["client"].as_u64().unwrap();
            let s = e["value"]["data"]["seq"].as_u64().unwrap();
            if let Some(prev) = last.insert(c, s) {
                assert!(s > prev, "client {c} order kept in partition {p}");
            }
        }
    }
}

#[tokio::test]
async fn malformed_input_gets_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[],
        &[
            ("HERALD_STRICT_ENVELOPES", "true"),
            ("HERALD_ADMIN_API_KEY", "test-admin-key-0123456789"),
        ],
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not json", "{".into(), 400, "not valid JSON"),
        ("empty body", "".into(), 400, "empty"),
        ("a number", "42".into(), 422, "object"),
        ("empty array", "[]".into(), 422, "empty"),
        ("missing tenant", r#"{"event_type":"a","service":"s","data":{}}"#.into(), 422, "tenant_id"),
        ("tenant with dot", r#"{"event_type":"a","tenant_id":"a.b","service":"s","data":{}}"#.into(), 422, "tenant_id"),
        ("tenant with star", r#"{"event_type":"a","tenant_id":"a*","service":"s","data":{}}"#.into(), 422, "tenant_id"),
        ("tenant dotdot", r#"{"event_type":"a","tenant_id":"..","service":"s","data":{}}"#.into(), 422, "tenant_id"),
        ("tenant slash", r#"{"event_type":"a","tenant_id":"a/b","service":"s","data":{}}"#.into(), 422, "tenant_id"),
        ("uppercase service", r#"{"event_type":"a","tenant_id":"t","service":"Shop","data":{}}"#.into(), 422, "service"),
        ("event_type wrong type", r#"{"event_type":7,"tenant_id":"t","service":"s","data":{}}"#.into(), 422, "event_type"),
        ("data not object", r#"{"event_type":"a","tenant_id":"t","service":"s","data":[1]}"#.into(), 422, "data"),
        ("bad uuid", r#"{"event_id":"nope","event_type":"a","tenant_id":"t","service":"s","data":{}}"#.into(), 422, "event_id"),
        ("bad timestamp", r#"{"timestamp":"yesterday","event_type":"a","tenant_id":"t","service":"s","data":{}}"#.into(), 422, "timestamp"),
        ("unknown field (strict)", r#"{"event_type":"a","tenant_id":"t","service":"s","data":{},"colour":"red"}"#.into(), 422, "colour"),
        ("bad element in array", r#"[{"event_type":"a","tenant_id":"t","service":"s","data":{}},{"event_type":"a","tenant_id":"t","service":"s"}]"#.into(), 422, "[1]"),
        ("oversized body", format!(r#"{{"event_type":"a","tenant_id":"t","service":"s","data":{{"x":"{}"}}}}"#, "x".repeat(5 * 1024 * 1024)), 413, "limit"),
    ];
    for (name, body, status, needle) in cases {
        let (got, resp) = server.post("/v1/events", &body).await;
        assert_eq!(got, status, "{name}: {resp}");
        let msg = resp["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error message in {resp}"));
        assert!(
            msg.contains(needle),
            "{name}: {msg:?} should mention {needle:?}"
        );
        assert!(resp["error"]["code"].is_string(), "{name}");
    }
    // Too many events in one request.
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"event_type":"a","tenant_id":"t","service":"s","data":{}}))
        .collect();
    let (got, resp) = server
        .post("/v1/events", &Value::Array(many).to_string())
        .await;
    assert_eq!(got, 413, "{resp}");

    // Wrong content type.
    let r = server
        .client()
        .post(format!("{}/v1/events", server.url))
        .header("X-API-Key", &server.key)
        .header("content-type", "application/xml")
        .body("<event/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);

    // Authentication.
    let r = server
        .client()
        .post(format!("{}/v1/events", server.url))
        .body(common::SEED_EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = server
        .client()
        .post(format!("{}/v1/events", server.url))
        .header("Authorization", "apikey wrong-key-wrong-key")
        .body(common::SEED_EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = server
        .client()
        .post(format!("{}/v1/events", server.url))
        .header("Authorization", format!("apikey {}", server.key))
        .body(common::SEED_EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "Authorization: apikey works");
    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("auth_failures_total"),
        "denials are counted"
    );

    // Topic names and read parameters.
    let (got, resp) = server
        .post("/v1/topics", r#"{"name":"smarteros.bad..topic"}"#)
        .await;
    assert_eq!(got, 400, "{resp}");
    let (got, resp) = server
        .post("/v1/topics", r#"{"name":"smarteros.t.s.e","partitions":0}"#)
        .await;
    assert_eq!(got, 400, "{resp}");
    let (got, resp) = server
        .post("/v1/topics", r#"{"name":"x","retention":"1d"}"#)
        .await;
    assert_eq!(got, 422, "unknown field: {resp}");
    let (got, _) = server.get("/v1/topics/nope/events").await;
    assert_eq!(got, 404);
    let (got, resp) = server.get("/v1/topics?match=smarteros.>.x").await;
    assert_eq!(got, 400, "{resp}");
    let (got, _) = server
        .get(&format!("/v1/topics/{SEED_TOPIC}/events?offset=-1"))
        .await;
    assert_eq!(got, 400);
    let (got, resp) = server
        .get(&format!("/v1/topics/{SEED_TOPIC}/events?offset=99"))
        .await;
    assert_eq!(got, 400, "{resp}");
    assert_eq!(resp["error"]["code"], "offset_out_of_range");
    let (got, _) = server.get("/v1/nothing-here").await;
    assert_eq!(got, 404);
}

#[tokio::test]
async fn idempotent_publish_and_topic_administration() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let event = json!({
        "event_id": "0b7e1f0e-6c1a-4d5e-9f00-3c2b1a0d9e8f",
        "event_type": "invoice_created", "tenant_id": "76953480-3", "service": "odoo",
        "data": {"invoice": 1}
    })
    .to_string();
    let (s1, first) = server.post("/v1/events", &event).await;
    let (s2, second) = server.post("/v1/events", &event).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["offset"], second["offset"]);
    assert_eq!(second["duplicate"], true);
    let topic = "smarteros.76953480-3.odoo.invoice_created";
    assert_eq!(read_all(&server, topic, 0).await.len(), 1, "stored once");

    // Listing by tenant and by glob.
    for t in [
        "smarteros.76953480-3.shopify.order_updated",
        "smarteros.other.shopify.order_created",
        "smarteros.other.n8n.workflow_failed",
    ] {
        let (s, b) = server
            .post("/v1/topics", &json!({"name": t}).to_string())
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = server
        .post("/v1/topics", &json!({"name": topic}).to_string())
        .await;
    assert_eq!(s, 409, "{b}");
    let names = |b: &Value| -> Vec<String> {
        b["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, b) = server.get("/v1/topics?tenant=76953480-3").await;
    assert_eq!(
        names(&b),
        vec![
            topic.to_owned(),
            "smarteros.76953480-3.shopify.order_updated".to_owned()
        ]
    );
    let (_, b) = server.get("/v1/topics?match=smarteros.*.*.order_*").await;
    assert_eq!(
        names(&b),
        vec![
            "smarteros.76953480-3.shopify.order_updated".to_owned(),
            "smarteros.other.shopify.order_created".to_owned()
        ]
    );
    let (_, b) = server.get("/v1/topics?match=smarteros.other.>").await;
    assert_eq!(names(&b).len(), 2);

    let (s, d) = server.get(&format!("/v1/topics/{topic}")).await;
    assert_eq!(s, 200);
    assert_eq!(d["tenant"], "76953480-3");
    assert_eq!(d["partitions"][0]["high_watermark"], 1);
    assert!(d["partitions"][0]["size_bytes"].as_u64().unwrap() > 0);

    let r = server
        .client()
        .delete(format!("{}/v1/topics/{topic}", server.url))
        .header("X-API-Key", &server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, _) = server.get(&format!("/v1/topics/{topic}")).await;
    assert_eq!(s, 404);

    // Health, readiness and metrics need no key.
    for path in ["/health", "/ready", "/metrics"] {
        let r = server
            .client()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"events_published_total{tenant="76953480-3",service="odoo"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("event_publish_duration_seconds_bucket"));
    assert!(metrics.contains("herald_log_bytes{tenant="));
}

#[tokio::test]
async fn long_poll_wakes_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(dir.path(), &[], &[]));
    let (s, _) = server.post("/v1/events", SEED_EVENT).await;
    assert_eq!(s, 200);
    let s2 = std::sync::Arc::clone(&server);
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let (status, body) = s2
            .get(&format!(
                "/v1/topics/{SEED_TOPIC}/events?offset=1&wait_ms=20000"
            ))
            .await;
        (status, body, started.elapsed())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (s, _) = server.post("/v1/events", SEED_EVENT).await;
    assert_eq!(s, 200);
    let (status, body, elapsed) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["events"][0]["offset"], 1);
    assert!(
        elapsed < std::time::Duration::from_secs(15),
        "woken by the append, not the timeout"
    );
}

#[tokio::test]
async fn group_cli_lists_describes_resets_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    for _ in 0..5 {
        let (s, b) = server.post("/v1/events", SEED_EVENT).await;
        assert_eq!(s, 200, "{b}");
    }
    // A group that only has committed offsets: set them with a reset (the group has no members).
    let out = server.cli(
        &[
            "group",
            "reset-offsets",
            "audit-logger",
            "--topic",
            "smarteros.*.*.*",
            "--to-offset",
            "2",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(SEED_TOPIC) && text.contains(" 2"), "{text}");

    let out = server.cli(&["group", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit-logger"));

    let out = server.cli(&["group", "describe", "audit-logger", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["offsets"][0]["committed"], 2);
    assert_eq!(d["offsets"][0]["high_watermark"], 5);
    assert_eq!(d["lag"], 3, "lag is high watermark minus committed");
    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            r#"kafka_consumer_lag{{group="audit-logger",topic="{SEED_TOPIC}",partition="0"}} 3"#
        )),
        "{metrics}"
    );

    let out = server.cli(
        &[
            "group",
            "reset-offsets",
            "audit-logger",
            "--topic",
            SEED_TOPIC,
            "--shift-by",
            "-1",
            "--dry-run",
        ],
        None,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    let (_, d) = server.get("/v1/groups/audit-logger").await;
    assert_eq!(d["offsets"][0]["committed"], 2, "a dry run changes nothing");

    let out = server.cli(&["group", "delete", "audit-logger"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, _) = server.get("/v1/groups/audit-logger").await;
    assert_eq!(s, 404);
    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("group=\"audit-logger\""),
        "no stale lag series"
    );
}

#[tokio::test]
async fn topic_cli_creates_describes_alters_produces_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let topic = "smarteros.76953480-3.test.event_test";
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let out = server.cli(&["topic", "create", topic, "--partitions", "3"], None);
    ok(&out);
    let out = server.cli(&["topic", "create", topic], None);
    assert!(!out.status.success(), "creating it twice fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // The seed's rpk test: one record per stdin line.
    let out = server.cli(
        &["topic", "produce", topic, "--partition", "1"],
        Some("{\"test\": \"event\"}\nsecond line\n"),
    );
    ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("Produced to partition 1")
            .count(),
        2
    );

    let out = server.cli(
        &[
            "topic",
            "alter-config",
            topic,
            "--set",
            "retention.ms=7776000000",
        ],
        None,
    );
    ok(&out);
    let out = server.cli(&["topic", "describe", topic, "--json"], None);
    ok(&out);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["config"]["retention.ms"], "7776000000");
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["partitions"][1]["high_watermark"], 2);

    let out = server.cli(
        &[
            "topic",
            "consume",
            topic,
            "--partition",
            "1",
            "--format",
            "value",
        ],
        None,
    );
    ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"test\": \"event\"}\nsecond line\n",
        "values come back byte for byte"
    );

    let out = server.cli(
        &["topic", "alter-config", topic, "--set", "retention.ms=soon"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.ms"));

    let out = server.cli(&["topic", "delete", topic], None);
    ok(&out);
    let out = server.cli(&["topic", "describe", topic], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// A 404 or 409 names what is missing or already there, so a client can tell a missing topic
/// from a missing group, user, key or tenant without reading the message.
#[tokio::test]
async fn not_found_and_conflict_say_what() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let client = server.client();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = client
            .request(method, format!("{}{path}", server.url))
            .header("X-API-Key", &server.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    use reqwest::Method;
    let topic = "smarteros.t1.shop.order_created";
    let cases = [
        (
            Method::GET,
            format!("/v1/topics/{topic}"),
            404,
            "topic_not_found",
        ),
        (
            Method::GET,
            "/v1/groups/never-seen".to_owned(),
            404,
            "group_not_found",
        ),
        (
            Method::DELETE,
            "/v1/users/nobody".to_owned(),
            404,
            "user_not_found",
        ),
        (
            Method::DELETE,
            "/v1/api-keys/nokey".to_owned(),
            404,
            "api_key_not_found",
        ),
        (
            Method::GET,
            "/v1/tenants/t9".to_owned(),
            404,
            "tenant_not_found",
        ),
        (
            Method::DELETE,
            "/v1/tenants/t9".to_owned(),
            404,
            "tenant_not_found",
        ),
    ];
    for (method, path, status, code) in cases {
        assert_eq!(
            call(method.clone(), &path, None).await,
            (status, code.to_owned()),
            "{method} {path}"
        );
    }
    let (s, _) = call(Method::POST, "/v1/topics", Some(json!({"name": topic}))).await;
    assert_eq!(s, 201);
    assert_eq!(
        call(Method::POST, "/v1/topics", Some(json!({"name": topic}))).await,
        (409, "topic_exists".to_owned())
    );
    assert_eq!(
        call(
            Method::GET,
            &format!("/v1/topics/{topic}/events?partition=7"),
            None
        )
        .await,
        (404, "partition_not_found".to_owned())
    );
    let (s, _) = call(Method::POST, "/v1/tenants", Some(json!({"id": "t9"}))).await;
    assert_eq!(s, 201);
    assert_eq!(
        call(Method::POST, "/v1/tenants", Some(json!({"id": "t9"}))).await,
        (409, "tenant_exists".to_owned())
    );
    server.stop();
}
