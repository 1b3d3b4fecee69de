//! Random sequences of appends, checkpoints and log-start moves, then a crash copy and a clean
//! reopen: both must hold exactly the model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
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
