//! Idempotent appends: duplicates are answered with the first result and write nothing, and the
//! keys survive checkpoints, reopening and replay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use herald_log::batch;
use herald_log::{AppendOutcome, IdemHit, IdemKey, Log, LogError, LogOptions, TopicConfig};

fn key(k: &str, record_index: u32) -> IdemKey {
    IdemKey {
        key: k.as_bytes().to_vec(),
        record_index,
    }
}

fn hit(topic: &str, partition: u32, offset: u64, timestamp_ms: i64) -> IdemHit {
    IdemHit {
        topic: topic.into(),
        partition,
        offset,
        timestamp_ms,
    }
}

fn try_append(
    log: &Log,
    topic: &str,
    p: u32,
    tag: &str,
    n: usize,
    keys: Vec<IdemKey>,
) -> AppendOutcome {
    log.append_blocking(topic, p, batch::build(&recs(tag, n, 77)).unwrap(), keys)
        .unwrap()
}

fn duplicate_hits(outcome: AppendOutcome) -> Vec<Option<IdemHit>> {
    match outcome {
        AppendOutcome::Duplicate { hits } => hits,
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[test]
fn duplicates_return_the_first_result_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 2, TopicConfig::new()).unwrap();
    log.create_topic("u", 1, TopicConfig::new()).unwrap();
    append(&log, "t", 1, &recs("pad", 4, 1));
    let first = try_append(&log, "t", 1, "a", 3, vec![key("k1", 0), key("k2", 2)]);
    assert_eq!(
        first,
        AppendOutcome::Appended {
            base_offset: 4,
            last_offset: 6,
            max_timestamp: 77
        }
    );
    log.sync().unwrap();
    let bytes = journal_bytes(dir.path());
    let hw = log.partition_stats("t", 1).unwrap();

    // The same key, even aimed at another topic, names the first append.
    for (topic, p) in [("t", 1), ("t", 0), ("u", 0)] {
        let hits = duplicate_hits(try_append(&log, topic, p, "b", 1, vec![key("k1", 0)]));
        assert_eq!(hits, vec![Some(hit("t", 1, 4, 77))]);
    }
    // Partial duplicates report each key: None where the key is new.
    let hits = duplicate_hits(try_append(
        &log,
        "t",
        1,
        "c",
        2,
        vec![key("k3", 0), key("k2", 1)],
    ));
    assert_eq!(hits, vec![None, Some(hit("t", 1, 6, 77))]);
    log.sync().unwrap();
    assert_eq!(journal_bytes(dir.path()), bytes, "duplicates write nothing");
    assert_eq!(log.partition_stats("t", 1).unwrap(), hw);
    assert_eq!(log.partition_stats("t", 0).unwrap().high_watermark, 0);
    // The new key of a refused batch was not remembered.
    assert_eq!(log.idempotency_lookup(b"k3"), None);
    assert_eq!(log.idempotency_lookup(b"k2"), Some(hit("t", 1, 6, 77)));
    match try_append(&log, "t", 1, "d", 1, vec![key("k3", 0)]) {
        AppendOutcome::Appended { base_offset: 7, .. } => {}
        other => panic!("{other:?}"),
    }
    log.close().unwrap();
}

#[test]
fn invalid_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    for k in [Vec::new(), vec![b'x'; 513]] {
        let r = log.append_blocking(
            "t",
            0,
            batch::build(&recs("a", 1, 1)).unwrap(),
            vec![IdemKey {
                key: k,
                record_index: 0,
            }],
        );
        assert!(matches!(r, Err(LogError::InvalidBatch(_))), "{r:?}");
    }
    let r = log.append_blocking(
        "t",
        0,
        batch::build(&recs("a", 1, 1)).unwrap(),
        vec![key(&"y".repeat(512), 0)],
    );
    assert!(matches!(r, Ok(AppendOutcome::Appended { .. })));
    log.close().unwrap();
}

#[test]
fn racing_appends_with_one_key_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 4, TopicConfig::new()).unwrap();
    let barrier = Arc::new(Barrier::new(12));
    let handles: Vec<_> = (0..12u32)
        .map(|i| {
            let (log, barrier) = (log.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                try_append(&log, "t", i % 4, "race", 2, vec![key("same", 1)])
            })
        })
        .collect();
    let outcomes: Vec<AppendOutcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let appended: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, AppendOutcome::Appended { .. }))
        .collect();
    assert_eq!(appended.len(), 1);
    let total: u64 = (0..4)
        .map(|p| log.partition_stats("t", p).unwrap().high_watermark)
        .sum();
    assert_eq!(total, 2, "exactly one batch was written");
    let first = log.idempotency_lookup(b"same").unwrap();
    assert_eq!(first.offset, 1);
    for o in outcomes {
        if let AppendOutcome::Duplicate { hits } = o {
            assert_eq!(hits, vec![Some(first.clone())]);
        }
    }
    log.close().unwrap();
}

#[test]
fn keys_survive_checkpoint_reopen_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 2, TopicConfig::new()).unwrap();
    try_append(&log, "t", 0, "a", 2, vec![key("before", 1)]);
    log.checkpoint().unwrap();
    try_append(
        &log,
        "t",
        1,
        "b",
        3,
        vec![key("after", 2), key("after2", 0)],
    );
    log.sync().unwrap();

    let check = |log: &Log| {
        let hits = duplicate_hits(try_append(
            log,
            "t",
            0,
            "x",
            3,
            vec![
                key("before", 0),
                key("after", 1),
                key("new", 2),
                key("after2", 0),
            ],
        ));
        assert_eq!(
            hits,
            vec![
                Some(hit("t", 0, 1, 77)),
                Some(hit("t", 1, 2, 77)),
                None,
                Some(hit("t", 1, 0, 77)),
            ]
        );
        assert_eq!(log.partition_stats("t", 0).unwrap().high_watermark, 2);
        assert_eq!(log.partition_stats("t", 1).unwrap().high_watermark, 3);
    };
    check(&log);

    // A crash: "before" comes from the checkpoint, "after" from replaying the journal.
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let copy = Log::open(opts(crashed.path())).unwrap();
    check(&copy);
    // Recovered keys are checkpointed again and survive a second reopen.
    copy.close().unwrap();
    drop(copy);
    let copy = Log::open(opts(crashed.path())).unwrap();
    check(&copy);
    copy.close().unwrap();

    log.close().unwrap();
    drop(log);
    let log = Log::open(opts(dir.path())).unwrap();
    check(&log);
    log.close().unwrap();
}

#[test]
fn keys_are_forgotten_after_the_window_and_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.idempotency_max_keys = 3;
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    for k in ["k1", "k2", "k3", "k4"] {
        try_append(&log, "t", 0, k, 1, vec![key(k, 0)]);
    }
    assert_eq!(
        log.idempotency_lookup(b"k1"),
        None,
        "the oldest is forgotten"
    );
    assert!(log.idempotency_lookup(b"k4").is_some());
    log.close().unwrap();
    drop(log);
    let log = Log::open(o).unwrap();
    assert_eq!(log.idempotency_lookup(b"k1"), None);
    assert!(log.idempotency_lookup(b"k2").is_some());
    assert!(log.idempotency_lookup(b"k4").is_some());
    log.close().unwrap();
    drop(log);

    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.idempotency_window = Duration::from_millis(50);
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    try_append(&log, "t", 0, "a", 1, vec![key("old", 0)]);
    assert!(log.idempotency_lookup(b"old").is_some());
    std::thread::sleep(Duration::from_millis(120));
    // Expiry happens at checkpoints.
    log.checkpoint().unwrap();
    assert_eq!(log.idempotency_lookup(b"old"), None);
    assert!(matches!(
        try_append(&log, "t", 0, "a", 1, vec![key("old", 0)]),
        AppendOutcome::Appended { base_offset: 1, .. }
    ));
    log.close().unwrap();
    drop(log);
    std::thread::sleep(Duration::from_millis(120));
    let log = Log::open(o).unwrap();
    assert_eq!(log.idempotency_lookup(b"old"), None, "expired while closed");
    log.close().unwrap();
}

/// Rows of the idempotency tables in a closed data directory, whatever their layout.
fn idempotency_rows(dir: &std::path::Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    let db = redb::Database::open(dir.join("index.redb")).unwrap();
    let rtx = db.begin_read().unwrap();
    rtx.list_tables()
        .unwrap()
        .filter(|t| t.name().starts_with("idempotency"))
        .map(|t| rtx.open_untyped_table(t).unwrap().len().unwrap())
        .sum()
}

/// Keys older than the window leave the index even when the process keeps crashing before its
/// periodic checkpoint: otherwise every start loads (and a crash loop keeps) them all, and
/// startup time and the index grow with total data instead of with the window.
#[test]
fn idempotency_keys_past_their_window_leave_the_index_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.idempotency_window = Duration::from_millis(1500);
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    for i in 0..200 {
        try_append(&log, "t", 0, "old", 1, vec![key(&format!("old-{i}"), 0)]);
    }
    log.checkpoint().unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    for i in 0..50 {
        try_append(&log, "t", 0, "new", 1, vec![key(&format!("new-{i}"), 0)]);
    }
    log.sync().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    log.close().unwrap();

    // Three crashes in a row, each right after recovery.
    let mut from = crashed;
    for round in 0..3 {
        let o = LogOptions {
            dir: from.path().to_path_buf(),
            ..o.clone()
        };
        let log = Log::open(o).unwrap();
        assert_eq!(log.recovery_stats().idempotency_keys, 50, "round {round}");
        assert!(log.idempotency_lookup(b"old-0").is_none());
        assert!(log.idempotency_lookup(b"new-49").is_some());
        let next = tempfile::tempdir().unwrap();
        crash_copy(from.path(), next.path());
        drop(log);
        from = next;
        assert_eq!(
            idempotency_rows(from.path()),
            50,
            "round {round}: rows in the index"
        );
    }
}
