//! Random sequences of appends, checkpoints and log-start moves, then a crash copy and a clean
//! reopen: both must hold exactly the model. The same sequences also run on a simulated file
//! system that cuts the power after every single file operation: recovery must then hold the
//! model as of the last acknowledged operation (or the one in flight), nothing torn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use herald_log::fs::Fs;
use herald_log::simfs::SimFs;
use herald_log::{Log, PartitionStats, Record, TopicConfig};
use proptest::prelude::*;

/// Partitions the sequences pick from: (topic, partition).
const PARTS: [(&str, u32); 5] = [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1), ("p1", 2)];

#[derive(Debug, Clone)]
enum Op {
    Append {
        part: usize,
        records: usize,
        value_len: usize,
    },
    Checkpoint,
    /// Moves the log start a fraction (in percent) of the way to the high watermark.
    DeleteBefore {
        part: usize,
        percent: u64,
    },
    /// Checkpoint, retention and reclamation of dead segments.
    Maintenance,
    /// Deletes a topic and creates it again under the same name.
    Recreate {
        topic: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..PARTS.len(), 1..6usize, 0..300usize).prop_map(|(part, records, value_len)| {
            Op::Append {
                part,
                records,
                value_len,
            }
        }),
        2 => Just(Op::Checkpoint),
        2 => (0..PARTS.len(), 0..=100u64).prop_map(|(part, percent)| Op::DeleteBefore {
            part,
            percent
        }),
        1 => Just(Op::Maintenance),
        1 => (0..2usize).prop_map(|topic| Op::Recreate { topic }),
    ]
}

fn stats(log: &Log) -> BTreeMap<(String, u32), PartitionStats> {
    PARTS
        .iter()
        .map(|(t, p)| ((t.to_string(), *p), log.partition_stats(t, *p).unwrap()))
        .collect()
}

fn check(log: &Log, model: &Model, starts: &BTreeMap<usize, u64>) {
    assert_model(log, model);
    for (i, (t, p)) in PARTS.iter().enumerate() {
        let st = log.partition_stats(t, *p).unwrap();
        assert_eq!(
            st.log_start,
            starts.get(&i).copied().unwrap_or(0),
            "{t}/{p}"
        );
        assert_eq!(st.size_bytes, framed_size(log, t, *p), "{t}/{p}");
    }
}

fn run(segment_bytes: u64, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = segment_bytes;
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("p0", 2, TopicConfig::new()).unwrap();
    log.create_topic("p1", 3, TopicConfig::new()).unwrap();
    let mut model = Model::new();
    let mut starts: BTreeMap<usize, u64> = BTreeMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                part,
                records,
                value_len,
            } => {
                let (t, p) = PARTS[part];
                let batch: Vec<Record> = (0..records)
                    .map(|i| Record {
                        offset: 0,
                        timestamp_ms: (step * 10 + i) as i64,
                        key: Some(Bytes::from(format!("{step}/{i}"))),
                        value: Some(Bytes::from(vec![b'a' + (step % 26) as u8; value_len])),
                        headers: vec![("step".into(), Some(Bytes::from(step.to_string())))],
                    })
                    .collect();
                let (base, _) = append(&log, t, p, &batch);
                let m = model.entry((t.to_string(), p)).or_default();
                assert_eq!(m.last().map_or(0, |r| r.offset + 1), base);
                m.extend(at_offsets(base, &batch));
            }
            Op::Checkpoint => log.checkpoint().unwrap(),
            Op::DeleteBefore { part, percent } => {
                let (t, p) = PARTS[part];
                let st = log.partition_stats(t, p).unwrap();
                let target = st.log_start + (st.high_watermark - st.log_start) * percent / 100;
                assert_eq!(log.delete_records_before(t, p, target).unwrap(), target);
                starts.insert(part, target);
            }
            Op::Maintenance => log.run_maintenance().unwrap(),
            Op::Recreate { topic } => {
                let (name, partitions) = [("p0", 2), ("p1", 3)][topic];
                log.delete_topic(name).unwrap();
                log.create_topic(name, partitions, TopicConfig::new())
                    .unwrap();
                model.retain(|(t, _), _| t != name);
                starts.retain(|i, _| PARTS[*i].0 != name);
            }
        }
    }
    check(&log, &model, &starts);
    log.sync().unwrap();
    let before = stats(&log);

    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let mut co = o.clone();
    co.dir = crashed.path().to_path_buf();
    let copy = Log::open(co).unwrap();
    assert_eq!(stats(&copy), before);
    check(&copy, &model, &starts);
    copy.close().unwrap();

    log.close().unwrap();
    drop(log);
    let log = Log::open(o).unwrap();
    assert_eq!(stats(&log), before);
    check(&log, &model, &starts);
    log.close().unwrap();
}

/// What a reader sees of every partition that exists: log start, high watermark and records.
type View = BTreeMap<(String, u32), (u64, u64, Vec<Record>)>;

fn view(log: &Log) -> View {
    PARTS
        .iter()
        .filter_map(|(t, p)| {
            let st = log.partition_stats(t, *p).ok()?;
            Some((
                (t.to_string(), *p),
                (st.log_start, st.high_watermark, read_all(log, t, *p)),
            ))
        })
        .collect()
}

fn expected_view(model: &Model, starts: &BTreeMap<usize, u64>, exists: &[bool; 2]) -> View {
    PARTS
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| exists[usize::from(*t == "p1")])
        .map(|(i, (t, p))| {
            let all = model.get(&(t.to_string(), *p)).cloned().unwrap_or_default();
            let start = starts.get(&i).copied().unwrap_or(0);
            let hw = all.last().map_or(0, |r| r.offset + 1);
            let records = all.into_iter().filter(|r| r.offset >= start).collect();
            ((t.to_string(), *p), (start, hw, records))
        })
        .collect()
}

/// Runs `ops` on a simulated file system, then cuts the power after every file operation in
/// turn and recovers: the recovered log must show the state after the last operation
/// acknowledged before the cut, or after the one in flight at the cut.
fn run_power_cut(segment_bytes: u64, ops: Vec<Op>, seed: u64) {
    let fs = SimFs::new();
    // The directory above the data directory exists and is durable, as on a real machine.
    fs.create_dir_all(std::path::Path::new("/sim")).unwrap();
    fs.sync_dir(std::path::Path::new("/")).unwrap();
    let mut o = opts(std::path::Path::new("/sim/data"));
    o.segment_bytes = segment_bytes;
    o.fs = Arc::new(fs.clone());
    let mut model = Model::new();
    let mut starts: BTreeMap<usize, u64> = BTreeMap::new();
    let mut exists = [false, false];
    // (file-system step at acknowledgement, state after the operation); the first entry is
    // the state before anything.
    let mut acked: Vec<(usize, View)> = vec![(0, View::new())];
    let log = Log::open(o.clone()).unwrap();
    for (i, (name, partitions)) in [("p0", 2), ("p1", 3)].into_iter().enumerate() {
        log.create_topic(name, partitions, TopicConfig::new())
            .unwrap();
        exists[i] = true;
        acked.push((fs.steps(), expected_view(&model, &starts, &exists)));
    }
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                part,
                records,
                value_len,
            } => {
                let (t, p) = PARTS[part];
                let batch: Vec<Record> = (0..records)
                    .map(|i| Record {
                        offset: 0,
                        timestamp_ms: (step * 10 + i) as i64,
                        key: Some(Bytes::from(format!("{step}/{i}"))),
                        value: Some(Bytes::from(vec![b'a' + (step % 26) as u8; value_len])),
                        headers: Vec::new(),
                    })
                    .collect();
                let (base, _) = append(&log, t, p, &batch);
                model
                    .entry((t.to_string(), p))
                    .or_default()
                    .extend(at_offsets(base, &batch));
            }
            Op::Checkpoint => {
                log.checkpoint().unwrap();
                continue;
            }
            Op::DeleteBefore { part, percent } => {
                let (t, p) = PARTS[part];
                let st = log.partition_stats(t, p).unwrap();
                let target = st.log_start + (st.high_watermark - st.log_start) * percent / 100;
                if target <= st.log_start {
                    continue;
                }
                log.delete_records_before(t, p, target).unwrap();
                starts.insert(part, target);
            }
            Op::Maintenance => {
                log.run_maintenance().unwrap();
                continue;
            }
            Op::Recreate { topic } => {
                let (name, partitions) = [("p0", 2), ("p1", 3)][topic];
                log.delete_topic(name).unwrap();
                exists[topic] = false;
                model.retain(|(t, _), _| t != name);
                starts.retain(|i, _| PARTS[*i].0 != name);
                acked.push((fs.steps(), expected_view(&model, &starts, &exists)));
                log.create_topic(name, partitions, TopicConfig::new())
                    .unwrap();
                exists[topic] = true;
            }
        }
        acked.push((fs.steps(), expected_view(&model, &starts, &exists)));
    }
    log.close().unwrap();
    drop(log);

    for cut in 0..=fs.steps() {
        let n = acked.partition_point(|(at, _)| *at <= cut);
        let mut co = o.clone();
        co.fs = Arc::new(fs.cut(cut, seed ^ cut as u64));
        let copy = Log::open(co)
            .unwrap_or_else(|e| panic!("recovery after a power cut at step {cut} failed: {e}"));
        let got = view(&copy);
        let last_acked = &acked[n.saturating_sub(1)].1;
        let in_flight = acked.get(n).map(|(_, v)| v);
        assert!(
            got == *last_acked || Some(&got) == in_flight,
            "power cut at step {cut} of {}: recovered {got:#?}\nexpected the last acknowledged state {last_acked:#?}\nor the one in flight {in_flight:#?}",
            fs.steps()
        );
        copy.close().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn crash_copy_and_reopen_match_the_model(
        segment_bytes in prop_oneof![Just(1u64), 200..3000u64, Just(1u64 << 20)],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run(segment_bytes, ops);
    }
}

proptest! {
    // Each case recovers once per file operation of its run, so fewer cases.
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn power_cut_at_every_step_keeps_every_acknowledged_operation(
        segment_bytes in prop_oneof![Just(1u64), 200..3000u64, Just(1u64 << 20)],
        ops in proptest::collection::vec(op(), 1..30),
        seed in any::<u64>(),
    ) {
        run_power_cut(segment_bytes, ops, seed);
    }
}

/// The index file's directory entry must be durable: without the index, recovery replays the
/// journal from its start, and the segment holding a topic's creation may already be reclaimed.
#[test]
fn reclaimed_catalog_frames_survive_a_power_cut() {
    let fs = SimFs::new();
    fs.create_dir_all(std::path::Path::new("/sim")).unwrap();
    fs.sync_dir(std::path::Path::new("/")).unwrap();
    let mut o = opts(std::path::Path::new("/sim/data"));
    o.segment_bytes = 1;
    o.fs = Arc::new(fs.clone());
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("p0", 1, TopicConfig::new()).unwrap();
    let (base, _) = append(&log, "p0", 0, &recs("a", 3, 1));
    log.run_maintenance().unwrap();
    assert!(
        log.segment_count() < 3,
        "the creation's segment was reclaimed"
    );
    let mut co = o.clone();
    co.fs = Arc::new(fs.cut(fs.steps(), 7));
    let copy = Log::open(co).unwrap();
    assert_eq!(read_all(&copy, "p0", 0), at_offsets(base, &recs("a", 3, 1)));
    copy.close().unwrap();
    log.close().unwrap();
}
