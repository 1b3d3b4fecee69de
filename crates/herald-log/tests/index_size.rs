//! The index stays a small fraction of the journal when every batch holds one record (the
//! shape single-event HTTP publishes produce), and idempotency keys cost index space only while
//! they are remembered. Sizes are the files' own; `examples/index_size.rs` prints where the bytes
//! go at a larger scale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use herald_log::{FsyncPolicy, IdemKey, Log, LogOptions, Record, batch};
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

const BATCHES: u64 = 50_000;
const IDEM: TableDefinition<(i64, u128), &[u8]> = TableDefinition::new("idempotency_keys");

fn log_opts(dir: &Path) -> LogOptions {
    let mut o = opts(dir);
    o.segment_bytes = 4 * 1024 * 1024;
    // Many checkpoints, each extending what the one before wrote.
    o.checkpoint_frames = 2_000;
    o.fsync = FsyncPolicy::Interval(Duration::from_millis(20));
    o
}

/// Appends `BATCHES` one-record batches of about 300 bytes, each with a timestamp one
/// millisecond after the one before, so that every batch raises the partition's maximum
/// timestamp (the worst case for the time index). With `keys`, each record has its own
/// idempotency key.
fn fill(log: &Log, keys: bool) {
    log.create_topic("events", 1, Default::default()).unwrap();
    let payload = Bytes::from(format!(
        "{{\"channel\":\"orders\",\"data\":\"{}\"}}",
        "x".repeat(270)
    ));
    let (tx, rx) = mpsc::sync_channel::<()>(1024);
    let mut in_flight = 0;
    for i in 0..BATCHES {
        let rec = Record {
            offset: 0,
            timestamp_ms: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(payload.clone()),
            headers: Vec::new(),
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
                r.unwrap();
                let _ = tx.send(());
            }),
        );
        in_flight += 1;
        if in_flight == 512 {
            rx.recv().unwrap();
            in_flight -= 1;
        }
    }
    for _ in 0..in_flight {
        rx.recv().unwrap();
    }
}

fn index_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("index.redb")).unwrap().len()
}

/// Reads back a sample of offsets and timestamps through the index.
fn check_lookups(log: &Log) {
    for at in (0..BATCHES).step_by(4_999) {
        let r = log.read("events", 0, at, 1).unwrap();
        assert_eq!(base_of(&r.batches[0]), at);
        assert_eq!(
            log.offset_for_timestamp("events", 0, 1_700_000_000_000 + at as i64)
                .unwrap(),
            Some((at, 1_700_000_000_000 + at as i64))
        );
    }
}

#[test]
fn index_of_one_record_batches_stays_under_5_percent_of_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(log_opts(dir.path())).unwrap();
    fill(&log, false);
    log.checkpoint().unwrap();
    check_lookups(&log);
    log.close().unwrap();
    drop(log);
    let (index, journal) = (index_bytes(dir.path()), journal_bytes(dir.path()));
    println!(
        "{BATCHES} batches: journal {journal} B, index {index} B ({:.2} %, {:.1} B/record)",
        100.0 * index as f64 / journal as f64,
        index as f64 / BATCHES as f64
    );
    assert!(
        index * 20 < journal,
        "index.redb is {index} B for a journal of {journal} B"
    );
    // Reopened from the index alone: nothing to replay, every lookup answered from packs.
    let log = Log::open(log_opts(dir.path())).unwrap();
    assert_eq!(log.recovery_stats().replayed_frames, 0);
    check_lookups(&log);
    log.close().unwrap();
}

#[test]
fn idempotency_keys_cost_index_space_only_while_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = log_opts(dir.path());
    let remembered = 2_000;
    o.idempotency_max_keys = remembered;
    let log = Log::open(o).unwrap();
    fill(&log, true);
    log.close().unwrap();
    drop(log);
    let (index, journal) = (index_bytes(dir.path()), journal_bytes(dir.path()));
    println!(
        "{BATCHES} batches with keys, {remembered} remembered: journal {journal} B, index {index} B ({:.2} %)",
        100.0 * index as f64 / journal as f64
    );
    let db = redb::Database::open(dir.path().join("index.redb")).unwrap();
    let rows = db
        .begin_read()
        .unwrap()
        .open_table(IDEM)
        .unwrap()
        .len()
        .unwrap();
    assert_eq!(rows, remembered as u64);
    drop(db);
    // The batch index as above, plus a bounded cost per remembered key.
    assert!(
        index < journal / 20 + 128 * remembered as u64,
        "index.redb is {index} B for a journal of {journal} B and {remembered} keys"
    );
}
