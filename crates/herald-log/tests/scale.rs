//! Many topics: creation, memory, reopening and replay with tens of thousands of partitions.
//! Only functional facts are asserted; time and memory are printed for whoever runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use herald_log::{Log, TopicConfig};

/// `HERALD_LOG_SCALE_TOPICS` runs the same test at another size (e.g. 100000, with
/// `--release`); the default keeps the suite fast.
fn topics() -> usize {
    std::env::var("HERALD_LOG_SCALE_TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}
const THREADS: usize = 8;

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn name(i: usize) -> String {
    format!("tenant-{i:06}.events")
}

fn check_sample(log: &Log) {
    let topics = topics();
    assert_eq!(log.topic_count(), topics);
    for i in (0..topics).step_by(997) {
        let t = log.topic(&name(i)).unwrap();
        assert_eq!(t.partitions, 1);
        let st = log.partition_stats(&name(i), 0).unwrap();
        assert_eq!(st.high_watermark, if i % 1000 == 0 { 2 } else { 0 });
    }
    for i in (0..topics).step_by(1000) {
        let got = read_all(log, &name(i), 0);
        assert_eq!(got.len(), 2, "{}", name(i));
        assert_eq!(got[1].value.as_deref(), Some(format!("{i}-1").as_bytes()));
    }
    assert_eq!(log.list_topics("tenant-001").len(), 1000);
}

#[test]
fn many_topics_create_close_reopen_and_replay() {
    let topics = topics();
    let dir = tempfile::tempdir().unwrap();
    let rss0 = vm_rss_kib();
    let started = Instant::now();
    let log = Log::open(opts(dir.path())).unwrap();
    let log = Arc::new(log);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in (t..topics).step_by(THREADS) {
                    log.create_topic(&name(i), 1, TopicConfig::new()).unwrap();
                    if i % 1000 == 0 {
                        append(&log, &name(i), 0, &recs(&i.to_string(), 2, 1));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let created = started.elapsed();
    let rss1 = vm_rss_kib();
    check_sample(&log);
    log.sync().unwrap();

    // A crash copy replays every creation from the journal.
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let t = Instant::now();
    let copy = Log::open(opts(crashed.path())).unwrap();
    let replayed = t.elapsed();
    check_sample(&copy);
    copy.close().unwrap();
    drop(copy);

    let t = Instant::now();
    log.close().unwrap();
    let closed = t.elapsed();
    drop(log);
    let t = Instant::now();
    let log = Log::open(opts(dir.path())).unwrap();
    let reopened = t.elapsed();
    check_sample(&log);
    append(&log, &name(1), 0, &recs("late", 1, 1));
    assert_eq!(log.partition_stats(&name(1), 0).unwrap().high_watermark, 1);
    log.close().unwrap();
    eprintln!(
        "{topics} topics: created in {created:?} by {THREADS} threads, RSS {:?} -> {:?} KiB; \
         crash recovery (replay) {replayed:?}; close with checkpoint {closed:?}; \
         reopen from checkpoint {reopened:?}",
        rss0, rss1
    );
}
