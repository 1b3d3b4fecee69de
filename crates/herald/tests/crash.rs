//! Crash safety: `kill -9` the real server at random moments while clients publish; after each
//! restart every acknowledged event must be readable, and nothing unreadable or half-written may
//! be visible.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Server, read_all};
use serde_json::{Value, json};

/// Event ids acknowledged by the server, with the topic and offset it reported.
type Acked = std::sync::Mutex<Vec<(String, String, u64)>>;

const CYCLES: usize = 12;
const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Acked::default());
    let topics = [
        "smarteros.crash.shop.order_created",
        "smarteros.crash.odoo.invoice_created",
        "smarteros.other.n8n.workflow_failed",
    ];
    // A deterministic but varied schedule of kill moments.
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut attempted = 0usize;
    for cycle in 0..CYCLES {
        let server = Arc::new(Server::start(dir.path(), &[], &[]));
        verify(&server, &acked, &topics).await;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let server = Arc::clone(&server);
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let client = server.client();
                let mut sent = 0usize;
                let mut seq = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seq += 1;
                    let (tenant, service, event_type) = match (p + seq as usize) % 3 {
                        0 => ("crash", "shop", "order_created"),
                        1 => ("crash", "odoo", "invoice_created"),
                        _ => ("other", "n8n", "workflow_failed"),
                    };
                    let n = if seq.is_multiple_of(4) { 10 } else { 1 };
                    let events: Vec<Value> = (0..n)
                        .map(|i| {
                            json!({"event_id": uuid::Uuid::new_v4().to_string(), "event_type": event_type, "tenant_id": tenant,
                                   "service": service, "data": {"cycle": cycle, "publisher": p, "seq": seq, "i": i, "pad": "x".repeat(200)}})
                        })
                        .collect();
                    let body = if n == 1 { events[0].to_string() } else { Value::Array(events).to_string() };
                    sent += n;
                    let resp = client
                        .post(format!("{}/v1/events", server.url))
                        .header("X-API-Key", &server.key)
                        .body(body)
                        .send()
                        .await;
                    let Ok(resp) = resp else { break };
                    if resp.status().as_u16() != 200 {
                        break;
                    }
                    let Ok(v) = resp.json::<Value>().await else { break };
                    let results = if n == 1 { vec![v] } else { v.as_array().cloned().unwrap_or_default() };
                    let mut g = acked.lock().unwrap();
                    for r in results {
                        g.push((r["event_id"].as_str().unwrap().to_owned(), r["topic"].as_str().unwrap().to_owned(), r["offset"].as_u64().unwrap()));
                    }
                }
                sent
            }));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_ms = 150 + rng % 600;
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        // The kill lands while requests are in flight.
        server.signal_kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            attempted += t.await.unwrap();
        }
        drop(server);
    }
    let server = Server::start(dir.path(), &[], &[]);
    let n = verify(&server, &acked, &topics).await;
    let acked_count = acked.lock().unwrap().len();
    eprintln!(
        "{CYCLES} kill -9 cycles: {attempted} events attempted, {acked_count} acknowledged, {n} stored"
    );
    assert!(
        acked_count > CYCLES * 10,
        "the test must acknowledge a meaningful number of events"
    );
}

/// Every acknowledged event is where the server said; every stored record is a whole,
/// valid envelope; offsets are contiguous. Returns the number of stored events.
async fn verify(server: &Server, acked: &Acked, topics: &[&str]) -> usize {
    let mut stored: HashMap<String, (String, u64)> = HashMap::new();
    for topic in topics {
        let (status, _) = server.get(&format!("/v1/topics/{topic}")).await;
        if status == 404 {
            continue;
        }
        let events = read_all(server, topic, 0).await;
        let mut ids = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["offset"].as_u64().unwrap(),
                i as u64,
                "contiguous offsets in {topic}"
            );
            assert_eq!(e["format"], "json", "a whole JSON envelope at {topic}/{i}");
            let v = &e["value"];
            for f in [
                "event_id",
                "event_type",
                "tenant_id",
                "service",
                "timestamp",
                "data",
            ] {
                assert!(!v[f].is_null(), "field {f} present at {topic}/{i}");
            }
            let id = v["event_id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "no duplicate in {topic}");
            stored.insert(id, (topic.to_string(), i as u64));
        }
    }
    for (id, topic, offset) in acked.lock().unwrap().iter() {
        assert_eq!(
            stored.get(id),
            Some(&(topic.clone(), *offset)),
            "acknowledged event {id} must be at {topic}/{offset}"
        );
    }
    stored.len()
}
