//! A full disk on the simulated file system: appends are refused with `DiskFull` and leave no
//! trace, reads go on, deleting a topic still works and gives the space back, appends resume
//! by themselves, and nothing acknowledged is lost across a restart or a power cut.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use herald_log::batch;
use herald_log::fs::Fs;
use herald_log::simfs::SimFs;
use herald_log::{Log, LogError, LogOptions, Record, TopicConfig};

fn sim() -> (SimFs, LogOptions) {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/sim")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let mut o = opts(Path::new("/sim/data"));
    o.segment_bytes = 64 * 1024;
    o.fs = Arc::new(fs.clone());
    (fs, o)
}

fn try_append(log: &Log, topic: &str, records: &[Record]) -> Result<u64, LogError> {
    match log.append_blocking(topic, 0, batch::build(records).unwrap(), Vec::new())? {
        herald_log::AppendOutcome::Appended { base_offset, .. } => Ok(base_offset),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_full_disk_refuses_appends_then_heals_after_a_topic_deletion() {
    let (fs, o) = sim();
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("big", 1, TopicConfig::new()).unwrap();
    log.create_topic("keep", 1, TopicConfig::new()).unwrap();
    fs.set_capacity(Some(fs.used() + 1024 * 1024));

    let mut kept: Vec<Record> = Vec::new();
    let mut refused = None;
    for i in 0..10_000 {
        let (topic, value) = if i % 10 == 0 {
            ("keep", format!("keep-{i}"))
        } else {
            ("big", "x".repeat(4000))
        };
        let records = vec![rec("k", &value, i)];
        match try_append(&log, topic, &records) {
            Ok(base) => {
                if topic == "keep" {
                    kept.extend(at_offsets(base, &records));
                }
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert!(
        matches!(refused, LogError::DiskFull { .. }),
        "expected DiskFull, got {refused:?}"
    );
    assert!(!kept.is_empty());
    // Reads and the write probe go on; every acknowledged record is there.
    assert_eq!(read_all(&log, "keep", 0), kept);
    log.probe().unwrap();
    assert!(matches!(
        try_append(&log, "keep", &[rec("k", &"x".repeat(4000), 1)]),
        Err(LogError::DiskFull { .. })
    ));

    // Deleting a topic works on the full disk and its space comes back without a restart.
    log.delete_topic("big").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = vec![rec("k", "after", 99)];
    let base = loop {
        match try_append(&log, "keep", &records) {
            Ok(base) => break base,
            Err(LogError::DiskFull { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("appends did not resume after deleting a topic: {e}"),
        }
    };
    kept.extend(at_offsets(base, &records));
    assert_eq!(read_all(&log, "keep", 0), kept);
    log.close().unwrap();
    drop(log);

    // A power cut now, and a clean restart: everything acknowledged is there.
    let mut cut = o.clone();
    cut.fs = Arc::new(fs.cut(fs.steps(), 1));
    let after_cut = Log::open(cut).unwrap();
    assert_eq!(read_all(&after_cut, "keep", 0), kept);
    assert!(after_cut.topic("big").is_none());
    after_cut.close().unwrap();
    let log = Log::open(o).unwrap();
    assert_eq!(read_all(&log, "keep", 0), kept);
    log.close().unwrap();
}

#[test]
fn appends_resume_when_the_disk_grows() {
    let (fs, o) = sim();
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    fs.set_capacity(Some(fs.used()));
    let mut kept = Vec::new();
    let mut full = false;
    for i in 0..1000 {
        let records = vec![rec("k", &"y".repeat(1000), i)];
        match try_append(&log, "t", &records) {
            Ok(base) => kept.extend(at_offsets(base, &records)),
            Err(LogError::DiskFull { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full, "the disk never filled up");
    fs.set_capacity(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = vec![rec("k", "grown", 5)];
    let base = loop {
        match try_append(&log, "t", &records) {
            Ok(base) => break base,
            Err(LogError::DiskFull { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    };
    kept.extend(at_offsets(base, &records));
    log.close().unwrap();
    drop(log);
    let log = Log::open(o).unwrap();
    assert_eq!(read_all(&log, "t", 0), kept);
    log.close().unwrap();
}

/// A checkpoint that fails for lack of space must not lose the index entries it was about to
/// write: a later checkpoint records a journal position past them.
#[test]
fn a_failed_checkpoint_loses_nothing() {
    let (fs, o) = sim();
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("a", 1, TopicConfig::new()).unwrap();
    log.create_topic("b", 1, TopicConfig::new()).unwrap();
    log.checkpoint().unwrap();
    let mut kept = Vec::new();
    for i in 0..2000 {
        let records = vec![rec(&format!("k{i}"), "v", i)];
        let base = try_append(&log, "a", &records).unwrap();
        kept.extend(at_offsets(base, &records));
    }
    fs.set_capacity(Some(fs.used()));
    // Fails, or succeeds on the retry after redb is reopened (which may free pages).
    let _ = log.checkpoint();
    assert!(
        fs.refused() > 0,
        "the checkpoint should have run out of space"
    );
    fs.set_capacity(None);
    // Appends wait for the space reserve to be back after a failed checkpoint.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = try_append(&log, "b", &[rec("k", "v", 1)]) {
        assert!(matches!(e, LogError::DiskFull { .. }), "{e}");
        assert!(Instant::now() < deadline, "appends did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    log.checkpoint().unwrap();
    log.close().unwrap();
    drop(log);
    let log = Log::open(o).unwrap();
    assert_eq!(read_all(&log, "a", 0), kept);
    log.close().unwrap();
}
