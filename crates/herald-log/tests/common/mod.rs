//! Helpers shared by the integration tests: small logs, record builders, a reader that walks a
//! whole partition, and a "crash copy" of a live data directory.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_log::batch::{self, BatchHeader};
use herald_log::{AppendOutcome, IdemKey, Log, LogOptions, Record};

/// Options that roll segments often and never checkpoint on their own, so that a test decides
/// exactly what is checkpointed and what must be replayed.
pub fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.segment_bytes = 4096;
    o.checkpoint_bytes = u64::MAX;
    o.checkpoint_interval = Duration::from_secs(3600);
    o.retention_check_interval = Duration::from_secs(3600);
    o
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn rec(key: &str, value: &str, ts: i64) -> Record {
    Record {
        offset: 0,
        timestamp_ms: ts,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![
            ("h1".into(), Some(Bytes::copy_from_slice(value.as_bytes()))),
            ("h2".into(), None),
        ],
    }
}

/// Records `tag-0 .. tag-(n-1)` with timestamp `ts`.
pub fn recs(tag: &str, n: usize, ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| rec(&format!("k{i}"), &format!("{tag}-{i}"), ts))
        .collect()
}

/// Appends and returns `(base, last)`, panicking on anything but a plain append.
pub fn append(log: &Log, topic: &str, p: u32, records: &[Record]) -> (u64, u64) {
    append_keys(log, topic, p, records, Vec::new())
}

pub fn append_keys(
    log: &Log,
    topic: &str,
    p: u32,
    records: &[Record],
    keys: Vec<IdemKey>,
) -> (u64, u64) {
    match log
        .append_blocking(topic, p, batch::build(records).unwrap(), keys)
        .unwrap()
    {
        AppendOutcome::Appended {
            base_offset,
            last_offset,
            ..
        } => (base_offset, last_offset),
        other => panic!("expected an append, got {other:?}"),
    }
}

pub fn end_of(b: &[u8]) -> u64 {
    let h = BatchHeader::parse(b).unwrap();
    h.base_offset as u64 + h.last_offset_delta as u64 + 1
}

pub fn base_of(b: &[u8]) -> u64 {
    BatchHeader::parse(b).unwrap().base_offset as u64
}

/// Every record from the log start to the high watermark, checking on the way that each read
/// starts with the batch holding the requested offset and that batches are contiguous.
pub fn read_all(log: &Log, topic: &str, p: u32) -> Vec<Record> {
    let log_start = log.partition_stats(topic, p).unwrap().log_start;
    read_batches(log, topic, p)
        .iter()
        .flat_map(|b| batch::decode(b).unwrap())
        .filter(|r| r.offset >= log_start)
        .collect()
}

/// Every stored batch from the one holding the log start up to the high watermark.
pub fn read_batches(log: &Log, topic: &str, p: u32) -> Vec<Bytes> {
    let st = log.partition_stats(topic, p).unwrap();
    let mut at = st.log_start;
    let mut out = Vec::new();
    while at < st.high_watermark {
        let r = log.read(topic, p, at, 3000).unwrap();
        assert!(
            !r.batches.is_empty(),
            "{topic}/{p}: empty read at {at} below the high watermark {}",
            st.high_watermark
        );
        let first = &r.batches[0];
        assert!(
            base_of(first) <= at && at < end_of(first),
            "{topic}/{p}: read at {at} returned a batch for {}..{}",
            base_of(first),
            end_of(first)
        );
        for b in &r.batches {
            // Only the very first batch may start before the requested offset (a log start in
            // the middle of a batch); every later one continues the previous one.
            if !out.is_empty() {
                assert_eq!(base_of(b), at, "{topic}/{p}: gap or overlap");
            }
            at = end_of(b);
            out.push(b.clone());
        }
    }
    out
}

/// The model of one partition: the records expected at offsets `start..`.
pub type Model = BTreeMap<(String, u32), Vec<Record>>;

/// Compares every partition of the model with the log, by offset, key, value, headers and
/// timestamp.
pub fn assert_model(log: &Log, model: &Model) {
    for ((topic, p), all) in model {
        let st = log.partition_stats(topic, *p).unwrap();
        let got = read_all(log, topic, *p);
        let expected: Vec<&Record> = all.iter().filter(|r| r.offset >= st.log_start).collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "{topic}/{p}: record count (log start {}, hw {})",
            st.log_start,
            st.high_watermark
        );
        for (g, e) in got.iter().zip(expected) {
            assert_eq!(g, e, "{topic}/{p}");
        }
        if let Some(last) = all.last() {
            assert_eq!(st.high_watermark, last.offset + 1, "{topic}/{p}: hw");
        }
    }
}

/// Records as the log returns them: with their offsets.
pub fn at_offsets(base: u64, records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: base + i as u64,
            ..r.clone()
        })
        .collect()
}

/// What a crash leaves on disk: the journal and the index as they are right now. The log must
/// have been synced and must not be checkpointing concurrently.
pub fn crash_copy(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.join("journal")).unwrap();
    for e in fs::read_dir(src.join("journal")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join("journal").join(e.file_name())).unwrap();
    }
    fs::copy(src.join("index.redb"), dst.join("index.redb")).unwrap();
}

/// Journal segment files of a data directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hjl"))
        .collect();
    v.sort();
    v
}

pub fn journal_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// One frame found by walking a segment file with the documented frame layout.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame {
    /// Byte position inside the file.
    pub at: usize,
    pub len: usize,
    pub kind: u8,
    pub stream: u64,
    pub value: u64,
}

pub fn raw_frames(data: &[u8]) -> Vec<RawFrame> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 32 <= data.len() && data[at..at + 4] == *b"HRL1" {
        let len = 32 + u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + len > data.len() {
            break;
        }
        out.push(RawFrame {
            at,
            len,
            kind: data[at + 12],
            stream: u64::from_le_bytes(data[at + 16..at + 24].try_into().unwrap()),
            value: u64::from_le_bytes(data[at + 24..at + 32].try_into().unwrap()),
        });
        at += len;
    }
    out
}

/// Bytes of a partition as the log accounts them: every stored batch from the one holding the
/// log start to the high watermark, framed (32-byte frame header, no idempotency keys).
pub fn framed_size(log: &Log, topic: &str, p: u32) -> u64 {
    read_batches(log, topic, p)
        .iter()
        .map(|b| 32 + b.len() as u64)
        .sum()
}
