//! How big `index.redb` grows next to the journal when every batch holds one record, the shape
//! single-event HTTP publishes produce. Prints journal bytes, index bytes and index bytes per
//! record, then where the index bytes go, table by table.
//!
//! `cargo run --release -p herald-log --example index_size -- [batches] [keys] [checkpoint_frames]`
//! (defaults: 200000 batches, no idempotency keys, a checkpoint every 20000 frames). With
//! `keys`, every record carries an idempotency key, remembered for the default window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_log::{FsyncPolicy, IdemKey, Log, LogOptions, Record, batch};
use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batches: u64 = args.first().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let keys = args.get(1).is_some_and(|v| v == "keys");
    let ckpt_frames: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(20_000);

    let dir = tempfile::tempdir().unwrap();
    let mut o = LogOptions::new(dir.path());
    o.fsync = FsyncPolicy::Interval(Duration::from_millis(50));
    o.checkpoint_frames = ckpt_frames;
    let log = Log::open(o).unwrap();
    log.create_topic("events", 1, Default::default()).unwrap();

    // An HTTP publish envelope is about 300 bytes of JSON.
    let payload = format!(
        "{{\"channel\":\"orders\",\"data\":{{\"id\":0,\"body\":\"{}\"}}}}",
        "x".repeat(240)
    );
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<()>(4096);
    let mut in_flight = 0usize;
    for i in 0..batches {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let rec = Record {
            offset: 0,
            timestamp_ms: now,
            key: None,
            value: Some(Bytes::from(payload.clone())),
            headers: vec![(
                "content-type".into(),
                Some(Bytes::from_static(b"application/json")),
            )],
        };
        let k = if keys {
            vec![IdemKey {
                key: format!("tenant-1/publish-{i:012}").into_bytes(),
                record_index: 0,
            }]
        } else {
            Vec::new()
        };
        let tx = tx.clone();
        log.append(
            "events",
            0,
            batch::build(&[rec]).unwrap(),
            k,
            Box::new(move |r| {
                r.expect("append");
                let _ = tx.send(());
            }),
        );
        in_flight += 1;
        if in_flight >= 2048 {
            rx.recv().unwrap();
            in_flight -= 1;
        }
    }
    for _ in 0..in_flight {
        rx.recv().unwrap();
    }
    log.close().unwrap();
    drop(log);
    let elapsed = started.elapsed();

    let journal: u64 = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let index = std::fs::metadata(dir.path().join("index.redb"))
        .unwrap()
        .len();
    println!(
        "{batches} single-record batches{}, checkpoint every {ckpt_frames} frames, {:.1} s",
        if keys { " with idempotency keys" } else { "" },
        elapsed.as_secs_f64()
    );
    println!(
        "journal {journal} B ({:.1} B/record), index.redb {index} B ({:.1} B/record), index/journal {:.2} %",
        journal as f64 / batches as f64,
        index as f64 / batches as f64,
        100.0 * index as f64 / journal as f64
    );

    let db = redb::Database::open(dir.path().join("index.redb")).unwrap();
    let rtx = db.begin_read().unwrap();
    println!(
        "{:<20} {:>9} {:>12} {:>12} {:>12} {:>12}",
        "table", "rows", "leaf pages", "stored B", "metadata B", "fragmented B"
    );
    for t in rtx.list_tables().unwrap() {
        let name = t.name().to_owned();
        let table = rtx.open_untyped_table(t).unwrap();
        let s = table.stats().unwrap();
        println!(
            "{:<20} {:>9} {:>12} {:>12} {:>12} {:>12}",
            name,
            table.len().unwrap(),
            s.leaf_pages(),
            s.stored_bytes(),
            s.metadata_bytes(),
            s.fragmented_bytes()
        );
    }
    drop(rtx);
    let wtx = db.begin_write().unwrap();
    let s = wtx.stats().unwrap();
    println!(
        "database: tree height {}, allocated pages {}, leaf pages {}, branch pages {}, stored {} B, metadata {} B, fragmented {} B, page size {} B",
        s.tree_height(),
        s.allocated_pages(),
        s.leaf_pages(),
        s.branch_pages(),
        s.stored_bytes(),
        s.metadata_bytes(),
        s.fragmented_bytes(),
        s.page_size()
    );
    wtx.abort().unwrap();
}
