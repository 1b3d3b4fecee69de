//! The Kafka produce path checks batches off the async workers: a large batch of envelopes
//! being parsed must not stall other tasks on the runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_broker::storage::EmbeddedStorage;
use herald_broker::{Broker, BrokerConfig};
use herald_log::batch::Record;
use herald_log::{Log, LogOptions};

const TOPIC: &str = "smarteros.76953480-3.shopify.order_created";

fn envelope(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_id":"0190f0e4-7a4e-7d6b-9c41-{i:012}","event_type":"order_created","tenant_id":"76953480-3","service":"shopify","timestamp":"2026-01-01T00:00:00Z","data":{{"order_id":{i},"total_price":"199990","lines":[{{"sku":"a","qty":1}},{{"sku":"b","qty":2}}]}}}}"#
    ))
}

// A current-thread runtime: anything the produce path does inline stalls every other task.
#[tokio::test]
async fn checking_a_large_batch_does_not_stall_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogOptions::new(dir.path())).unwrap();
    let broker = Broker::new(
        Arc::new(EmbeddedStorage::new(log.clone())),
        BrokerConfig::default(),
    )
    .await
    .unwrap();
    broker
        .create_topic(
            TOPIC,
            Some(1),
            BTreeMap::from([
                ("herald.envelope".to_owned(), "strict".to_owned()),
                ("max.message.bytes".to_owned(), "67108864".to_owned()),
            ]),
        )
        .await
        .unwrap();
    let records: Vec<Record> = (0..10_000)
        .map(|i| Record {
            offset: 0,
            timestamp_ms: 1_700_000_000_000,
            key: None,
            value: Some(envelope(i)),
            headers: Vec::new(),
        })
        .collect();
    let batch = Bytes::from(herald_log::batch::build(&records).unwrap());

    // A task that wants to run every millisecond records the longest it had to wait.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let now = Instant::now();
                longest = longest.max(now - last);
                last = now;
            }
            longest
        })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    let produced = broker.produce_batch(TOPIC, 0, batch).await.unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let longest_stall = ticker.await.unwrap();
    eprintln!("produce_batch took {took:?}; the runtime stalled at most {longest_stall:?}");
    assert_eq!(produced.base_offset, 0);
    assert!(
        took >= Duration::from_millis(60),
        "the batch is too small to tell ({took:?})"
    );
    assert!(
        longest_stall * 3 < took,
        "the runtime stalled for {longest_stall:?} of the {took:?} produce_batch took"
    );
    assert_eq!(
        log.partition_stats(TOPIC, 0).unwrap().high_watermark,
        10_000
    );
}
