//! Appending and reading: offsets, batch boundaries, byte limits, ranges, concurrency and the
//! timestamp index.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use common::*;
use herald_log::batch;
use herald_log::{AppendOutcome, Log, LogError, Record, TopicConfig};

#[test]
fn round_trip_across_topics_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("a", 3, TopicConfig::new()).unwrap();
    log.create_topic("b", 1, TopicConfig::new()).unwrap();
    let mut model = Model::new();
    let targets = [
        ("a", 0u32),
        ("b", 0),
        ("a", 2),
        ("a", 1),
        ("a", 0),
        ("b", 0),
    ];
    for round in 0..40usize {
        let (topic, p) = targets[round % targets.len()];
        let n = 1 + round % 5;
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                offset: 0,
                timestamp_ms: 1_000 + (round * 7 + i) as i64,
                key: (i % 2 == 0).then(|| Bytes::from(format!("key-{round}-{i}"))),
                value: (i % 3 != 2).then(|| Bytes::from(vec![b'v'; round * 10 + i])),
                headers: vec![
                    (format!("r{round}"), Some(Bytes::from_static(b"x"))),
                    ("empty".into(), None),
                ],
            })
            .collect();
        let expected = model.entry((topic.into(), p)).or_default();
        let next = expected.len() as u64;
        let (base, last) = append(&log, topic, p, &records);
        assert_eq!(base, next, "{topic}/{p}: offsets are contiguous");
        assert_eq!(last, base + n as u64 - 1);
        expected.extend(at_offsets(base, &records));
    }
    assert_model(&log, &model);
    assert_eq!(log.partition_stats("a", 1).unwrap().high_watermark, 24);
    assert!(log.segment_count() > 1, "small segments roll");
    log.close().unwrap();
}

#[test]
fn read_starts_with_the_batch_holding_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    append(&log, "t", 0, &recs("a", 4, 1)); // 0..=3
    append(&log, "t", 0, &recs("b", 3, 2)); // 4..=6
    append(&log, "t", 0, &recs("c", 5, 3)); // 7..=11
    let check = |log: &Log| {
        for offset in 0..12u64 {
            let r = log.read("t", 0, offset, usize::MAX).unwrap();
            let first = &r.batches[0];
            assert!(
                base_of(first) <= offset && offset < end_of(first),
                "{offset}"
            );
            let remaining = match offset {
                0..=3 => 3,
                4..=6 => 2,
                _ => 1,
            };
            assert_eq!(r.batches.len(), remaining, "{offset}");
            assert_eq!(r.high_watermark, 12);
            assert_eq!(r.log_start, 0);
        }
    };
    check(&log);
    log.checkpoint().unwrap();
    check(&log);
    append(&log, "t", 0, &recs("d", 2, 4)); // 12..=13, in the tail
    let r = log.read("t", 0, 5, usize::MAX).unwrap();
    assert_eq!(
        r.batches.iter().map(|b| base_of(b)).collect::<Vec<_>>(),
        vec![4, 7, 12],
        "checkpointed entries continue with the tail"
    );
    log.close().unwrap();
}

#[test]
fn max_bytes_limits_but_always_returns_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 1 << 20;
    let log = Log::open(o).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    let big = |tag: &str| vec![rec("k", &tag.repeat(500), 1)];
    for i in 0..4 {
        append(&log, "t", 0, &big(&format!("{i}")));
    }
    // Checkpoint the first four; the next four stay in the tail.
    log.checkpoint().unwrap();
    for i in 4..8 {
        append(&log, "t", 0, &big(&format!("{i}")));
    }
    let all = log.read("t", 0, 0, usize::MAX).unwrap().batches;
    assert_eq!(all.len(), 8);
    let one = all[0].len();
    let check = |from: u64, max_bytes: usize| {
        let r = log.read("t", 0, from, max_bytes).unwrap();
        assert!(!r.batches.is_empty(), "from {from} max {max_bytes}");
        assert_eq!(base_of(&r.batches[0]), from);
        let total: usize = r.batches.iter().map(|b| b.len()).sum();
        if r.batches.len() > 1 {
            assert!(
                total <= max_bytes,
                "from {from}: {} batches of {total} bytes exceed max_bytes {max_bytes}",
                r.batches.len()
            );
        }
        // Everything that fits is returned, give or take the per-frame overhead.
        let fit = (max_bytes / (one + 32)).max(1);
        assert!(
            r.batches.len() >= fit.min((8 - from) as usize),
            "from {from} max {max_bytes}: only {} batches",
            r.batches.len()
        );
        r.batches.len()
    };
    for from in 0..8u64 {
        assert_eq!(check(from, 0), 1);
        assert_eq!(check(from, 1), 1);
        for n in 1..=8 {
            check(from, n * (one + 32));
            check(from, n * (one + 32) + one / 2);
        }
    }
    log.close().unwrap();
}

#[test]
fn ranges_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 2, TopicConfig::new()).unwrap();
    let r = log.read("t", 1, 0, 1000).unwrap();
    assert!(r.batches.is_empty(), "an empty partition reads empty at 0");
    assert!(matches!(
        log.read("t", 1, 1, 1000),
        Err(LogError::OffsetOutOfRange { offset: 1, .. })
    ));
    append(&log, "t", 0, &recs("a", 5, 1));
    append(&log, "t", 0, &recs("b", 5, 1));
    let r = log.read("t", 0, 10, 1000).unwrap();
    assert!(
        r.batches.is_empty(),
        "reading at the high watermark is empty"
    );
    assert_eq!(r.high_watermark, 10);
    assert!(matches!(
        log.read("t", 0, 11, 1000),
        Err(LogError::OffsetOutOfRange {
            offset: 11,
            log_start: 0,
            high_watermark: 10,
            ..
        })
    ));
    assert_eq!(log.delete_records_before("t", 0, 3).unwrap(), 3);
    assert!(matches!(
        log.read("t", 0, 2, 1000),
        Err(LogError::OffsetOutOfRange {
            offset: 2,
            log_start: 3,
            ..
        })
    ));
    let r = log.read("t", 0, 3, 1000).unwrap();
    assert_eq!(r.log_start, 3);
    assert_eq!(base_of(&r.batches[0]), 0, "the batch holding the log start");
    assert!(matches!(
        log.read("nope", 0, 0, 1),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.read("t", 2, 0, 1),
        Err(LogError::UnknownPartition { partition: 2, .. })
    ));
    assert!(matches!(
        log.append_blocking("nope", 0, batch::build(&recs("x", 1, 1)).unwrap(), vec![]),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.append_blocking("t", 9, batch::build(&recs("x", 1, 1)).unwrap(), vec![]),
        Err(LogError::UnknownPartition { partition: 9, .. })
    ));
    let mut bad = batch::build(&recs("x", 2, 1)).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        log.append_blocking("t", 0, bad, vec![]),
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.create_topic("t", 1, TopicConfig::new()),
        Err(LogError::TopicExists(_))
    ));
    assert!(log.create_topic("z", 0, TopicConfig::new()).is_err());
    assert_eq!(
        log.partition_stats("t", 0).unwrap().high_watermark,
        10,
        "refused appends write nothing"
    );
    log.close().unwrap();
    assert!(matches!(
        log.append_blocking("t", 0, batch::build(&recs("x", 1, 1)).unwrap(), vec![]),
        Err(LogError::Closed)
    ));
}

#[test]
fn batch_too_large_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_batch_bytes = 1000;
    let log = Log::open(o).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    let big = batch::build(&[rec("k", &"x".repeat(2000), 1)]).unwrap();
    assert!(matches!(
        log.append_blocking("t", 0, big, vec![]),
        Err(LogError::BatchTooLarge { limit: 1000, .. })
    ));
    log.close().unwrap();
}

/// Sixteen threads append to four partitions while other threads read and checkpoint.
#[test]
fn concurrent_appends_are_acknowledged_once_with_unique_contiguous_offsets() {
    const THREADS: usize = 16;
    const APPENDS: usize = 150;
    const PARTS: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 64 * 1024;
    let log = Log::open(o).unwrap();
    log.create_topic("c", PARTS, TopicConfig::new()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A checkpointer and a reader race the appenders: reads must always start with the batch
    // holding the requested offset and never come back empty below the high watermark.
    let ckpt = {
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                log.checkpoint().unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            n
        })
    };
    let reader = {
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0usize;
            while !stop.load(Ordering::SeqCst) {
                for p in 0..PARTS {
                    let hw = log.partition_stats("c", p).unwrap().high_watermark;
                    let mut at = 0;
                    while at < hw {
                        let r = log.read("c", p, at, 2000).unwrap();
                        assert!(!r.batches.is_empty(), "empty read at {at} < {hw}");
                        let first = &r.batches[0];
                        assert!(base_of(first) <= at && at < end_of(first));
                        for b in &r.batches {
                            assert!(base_of(b) <= at);
                            batch::validate(b).unwrap();
                            at = end_of(b);
                        }
                        reads += 1;
                    }
                }
            }
            reads
        })
    };

    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let (tx, rx) = std::sync::mpsc::channel();
                let mut calls = Vec::new();
                for i in 0..APPENDS {
                    let p = ((t + i) % PARTS as usize) as u32;
                    let n = 1 + (t * 31 + i) % 4;
                    let records = recs(&format!("t{t}-i{i}"), n, (t * 1000 + i) as i64);
                    let count = Arc::new(AtomicUsize::new(0));
                    calls.push(Arc::clone(&count));
                    let tx = tx.clone();
                    log.append(
                        "c",
                        p,
                        batch::build(&records).unwrap(),
                        vec![],
                        Box::new(move |r| {
                            count.fetch_add(1, Ordering::SeqCst);
                            tx.send((t, i, p, records, r)).unwrap();
                        }),
                    );
                }
                drop(tx);
                let results: Vec<_> = rx.iter().collect();
                assert_eq!(results.len(), APPENDS);
                (calls, results)
            })
        })
        .collect();

    // Partition → (base, last, records, thread, index) of every acknowledged append.
    type Acked = (u64, u64, Vec<Record>, usize, usize);
    let mut by_part: BTreeMap<u32, Vec<Acked>> = BTreeMap::new();
    for h in handles {
        let (calls, results) = h.join().unwrap();
        for (t, i, p, records, r) in results {
            match r.unwrap() {
                AppendOutcome::Appended {
                    base_offset,
                    last_offset,
                    ..
                } => {
                    assert_eq!(last_offset - base_offset + 1, records.len() as u64);
                    by_part
                        .entry(p)
                        .or_default()
                        .push((base_offset, last_offset, records, t, i));
                }
                other => panic!("{other:?}"),
            }
        }
        log.sync().unwrap();
        for c in calls {
            assert_eq!(c.load(Ordering::SeqCst), 1, "acknowledged exactly once");
        }
    }
    stop.store(true, Ordering::SeqCst);
    assert!(ckpt.join().unwrap() > 0);
    assert!(reader.join().unwrap() > 0);

    let mut total = 0;
    let mut model = Model::new();
    for (p, mut appends) in by_part {
        appends.sort_by_key(|a| a.0);
        let mut next = 0;
        let mut last_i: BTreeMap<usize, usize> = BTreeMap::new();
        let expected = model.entry(("c".into(), p)).or_default();
        for (base, last, records, t, i) in appends {
            assert_eq!(base, next, "partition {p}: offsets unique and contiguous");
            next = last + 1;
            // One thread's appends to one partition keep their order.
            if let Some(prev) = last_i.insert(t, i) {
                assert!(prev < i);
            }
            expected.extend(at_offsets(base, &records));
            total += 1;
        }
        assert_eq!(log.partition_stats("c", p).unwrap().high_watermark, next);
    }
    assert_eq!(total, THREADS * APPENDS);
    assert_model(&log, &model);
    log.close().unwrap();
    drop(log);
    let log = Log::open(opts(dir.path())).unwrap();
    assert_model(&log, &model);
    log.close().unwrap();
}

/// The first offset at or after `ts` among `records` (which are at consecutive offsets from
/// their first one), skipping those before `log_start`.
fn expected_for(records: &[Record], log_start: u64, ts: i64) -> Option<(u64, i64)> {
    records
        .iter()
        .find(|r| r.offset >= log_start && r.timestamp_ms >= ts)
        .map(|r| (r.offset, r.timestamp_ms))
}

fn check_times(log: &Log, records: &[Record], what: &str) {
    let log_start = log.partition_stats("t", 0).unwrap().log_start;
    for ts in (-20..=520).step_by(5) {
        assert_eq!(
            log.offset_for_timestamp("t", 0, ts).unwrap(),
            expected_for(records, log_start, ts),
            "{what}: timestamp {ts} (log start {log_start})"
        );
    }
}

fn ts_records(tag: &str, stamps: &[i64]) -> Vec<Record> {
    stamps
        .iter()
        .enumerate()
        .map(|(i, ts)| rec("k", &format!("{tag}{i}"), *ts))
        .collect()
}

#[test]
fn offset_for_timestamp_with_unordered_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    // Every append ends up in its own segment, so reclamation can drop single batches.
    o.segment_bytes = 1;
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    let stamps: [&[i64]; 8] = [
        &[100, 300, 200],
        &[50, 60],
        &[400, 350],
        &[250],
        &[10, 500, 20],
        &[-10, 0],
        &[450],
        &[30],
    ];
    let mut all = Vec::new();
    let add = |log: &Log, i: usize, all: &mut Vec<Record>| {
        let r = ts_records(&format!("b{i}-"), stamps[i]);
        let (base, _) = append(log, "t", 0, &r);
        all.extend(at_offsets(base, &r));
    };
    for i in 0..4 {
        add(&log, i, &mut all);
    }
    check_times(&log, &all, "tail only");
    log.checkpoint().unwrap();
    check_times(&log, &all, "checkpointed only");
    for i in 4..8 {
        add(&log, i, &mut all);
    }
    check_times(&log, &all, "checkpointed and tail");
    log.close().unwrap();
    drop(log);

    let log = Log::open(o.clone()).unwrap();
    check_times(&log, &all, "after reopen");
    // A log start inside the second batch, then the batches before it are reclaimed.
    log.delete_records_before("t", 0, 4).unwrap();
    check_times(&log, &all, "after delete_records_before");
    let segments = log.segment_count();
    log.run_maintenance().unwrap();
    assert!(
        log.segment_count() < segments,
        "the first batch's segment is reclaimed"
    );
    check_times(&log, &all, "after reclamation");
    log.delete_records_before("t", 0, 9).unwrap();
    log.run_maintenance().unwrap();
    check_times(&log, &all, "after a second reclamation");
    log.close().unwrap();
    drop(log);
    let log = Log::open(o).unwrap();
    check_times(&log, &all, "after reclamation and reopen");
    log.close().unwrap();
}

#[test]
fn offset_for_timestamp_none_when_all_older_and_on_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    assert_eq!(log.offset_for_timestamp("t", 0, 0).unwrap(), None);
    append(&log, "t", 0, &ts_records("a", &[5, 9, 7]));
    assert_eq!(log.offset_for_timestamp("t", 0, 10).unwrap(), None);
    log.checkpoint().unwrap();
    assert_eq!(log.offset_for_timestamp("t", 0, 10).unwrap(), None);
    assert_eq!(log.offset_for_timestamp("t", 0, 8).unwrap(), Some((1, 9)));
    assert_eq!(
        log.offset_for_timestamp("t", 0, i64::MIN).unwrap(),
        Some((0, 5))
    );
    assert!(matches!(
        log.offset_for_timestamp("t", 3, 0),
        Err(LogError::UnknownPartition { .. })
    ));
    log.close().unwrap();
}

#[test]
fn max_timestamp_and_size_are_tracked() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    append(&log, "t", 0, &ts_records("a", &[5, 90, 7]));
    log.checkpoint().unwrap();
    append(&log, "t", 0, &ts_records("b", &[50]));
    let st = log.partition_stats("t", 0).unwrap();
    assert_eq!(st.max_timestamp, 90);
    assert_eq!(st.size_bytes, framed_size(&log, "t", 0));
    // Timestamps before the epoch: the maximum is the records', live and after reopening.
    log.create_topic("old", 2, TopicConfig::new()).unwrap();
    append(&log, "old", 0, &ts_records("a", &[-50, -9]));
    log.checkpoint().unwrap();
    append(&log, "old", 0, &ts_records("b", &[-20]));
    append(&log, "old", 1, &ts_records("c", &[-30]));
    let live: Vec<i64> = (0..2)
        .map(|p| log.partition_stats("old", p).unwrap().max_timestamp)
        .collect();
    assert_eq!(live, vec![-9, -30]);
    log.close().unwrap();
    drop(log);
    let log = Log::open(opts(dir.path())).unwrap();
    let reopened: Vec<i64> = (0..2)
        .map(|p| log.partition_stats("old", p).unwrap().max_timestamp)
        .collect();
    assert_eq!(reopened, live);
    assert_eq!(log.partition_stats("t", 0).unwrap().max_timestamp, 90);
    log.close().unwrap();
}
