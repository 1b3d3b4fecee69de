//! On-disk format fixtures: journals written by an earlier build must keep recovering to the
//! same state. A fixture is recovered from its journal alone (no index database), which is the
//! path that reads every frame kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use common::*;
use herald_log::{IdemHit, Log, Record};

/// `tests/fixtures/journal-v1` was written by format version 1 with these calls (segments of
/// 1 MiB, records from `common::recs`/`common::rec`):
///
/// 1. `create_topic("fx.events", 2, {retention.ms: -1})`, `create_topic("fx.gone", 1, {})`;
/// 2. `fx.events/0`: `recs("a", 3, 1_700_000_000_000)`;
/// 3. `fx.events/1`: `rec("key-b", "b", 1_700_000_000_500)`, `rec("key-c", "c",
///    1_700_000_000_100)` with idempotency key `idem-1` naming record 1;
/// 4. `fx.gone/0`: `recs("g", 2, 5)`; `fx.events/0`: `recs("d", 2, 1_700_000_001_000)`;
/// 5. `delete_records_before("fx.events", 0, 2)`;
/// 6. `set_topic_config("fx.events", {retention.ms: 86400000})`;
/// 7. `delete_topic("fx.gone")`, `create_topic("fx.gone", 1, {})`, `fx.gone/0`: `recs("n", 1, 6)`.
#[test]
fn journal_v1_recovers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("journal")).unwrap();
    for e in std::fs::read_dir(src.join("journal")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("journal").join(e.file_name())).unwrap();
    }
    let check = |log: &Log| {
        let topics = log.list_topics("");
        let names: Vec<(&str, u32, i64)> = topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions, t.created_ms))
            .collect();
        assert_eq!(
            names,
            vec![
                ("fx.events", 2, 1_795_460_118_450),
                ("fx.gone", 1, 1_795_460_118_452)
            ]
        );
        assert_eq!(
            topics[0].config.get("retention.ms").map(String::as_str),
            Some("86400000")
        );
        assert!(topics[1].config.is_empty());

        let mut model = Model::new();
        let mut e0 = at_offsets(0, &recs("a", 3, 1_700_000_000_000));
        e0.extend(at_offsets(3, &recs("d", 2, 1_700_000_001_000)));
        model.insert(("fx.events".into(), 0), e0);
        model.insert(
            ("fx.events".into(), 1),
            at_offsets(
                0,
                &[
                    rec("key-b", "b", 1_700_000_000_500),
                    rec("key-c", "c", 1_700_000_000_100),
                ],
            ),
        );
        model.insert(("fx.gone".into(), 0), at_offsets(0, &recs("n", 1, 6)));
        assert_model(log, &model);

        let st = log.partition_stats("fx.events", 0).unwrap();
        assert_eq!((st.log_start, st.high_watermark), (2, 5));
        assert_eq!(st.max_timestamp, 1_700_000_001_000);
        assert_eq!(st.size_bytes, framed_size(log, "fx.events", 0));
        // Framed with its idempotency key: 2-byte length, 6-byte key, 4-byte record index.
        assert_eq!(
            log.partition_stats("fx.events", 1).unwrap().size_bytes,
            framed_size(log, "fx.events", 1) + 12
        );
        assert_eq!(
            log.idempotency_lookup(b"idem-1"),
            Some(IdemHit {
                topic: "fx.events".into(),
                partition: 1,
                offset: 1,
                timestamp_ms: 1_700_000_000_500,
            })
        );
        assert_eq!(
            log.offset_for_timestamp("fx.events", 1, 1_700_000_000_200)
                .unwrap(),
            Some((0, 1_700_000_000_500))
        );
    };
    let log = Log::open(opts(dir.path())).unwrap();
    check(&log);
    log.close().unwrap();
    drop(log);
    // Again from the checkpoint the first recovery took.
    let log = Log::open(opts(dir.path())).unwrap();
    check(&log);
    log.close().unwrap();
}

/// `tests/fixtures/index-v1` is a whole data directory (journal and `index.redb`) written by
/// format version 1, whose index held one row per batch and per time-index step. It was written
/// with segments of 8 KiB by:
///
/// 1. `create_topic("fx.idx", 2, {})`;
/// 2. `fx.idx/0`: 300 batches, batch `i` holding `rec("k{i}", "v{i}", 1_700_000_000_000 +
///    (i / 3) * 10)`;
/// 3. `fx.idx/1`: 20 batches, batch `i` holding `recs("b{i}", 3, 1_700_000_000_000 + i * 7)`
///    with idempotency key `idem-{i}` naming record 0;
/// 4. `delete_records_before("fx.idx", 0, 120)`, `run_maintenance()` (reclaiming the first
///    segment and its index rows), `close()`.
///
/// Opening it migrates the index to packs; reads, timestamp lookups, appends after the migrated
/// packs and reclamation must all keep working.
#[test]
fn index_v1_is_migrated_on_open() {
    use redb::{ReadableDatabase, TableHandle};

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/index-v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("journal")).unwrap();
    std::fs::copy(src.join("index.redb"), dir.path().join("index.redb")).unwrap();
    for e in std::fs::read_dir(src.join("journal")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("journal").join(e.file_name())).unwrap();
    }
    let ts = |i: u64| 1_700_000_000_000 + (i as i64 / 3) * 10;
    let p0 = |n: u64| -> Vec<Record> {
        let mut out = Vec::new();
        for i in 120..n {
            out.extend(at_offsets(
                i,
                &[rec(&format!("k{i}"), &format!("v{i}"), ts(i))],
            ));
        }
        out
    };
    let check = |log: &Log, n: u64, log_start: u64| {
        let st = log.partition_stats("fx.idx", 0).unwrap();
        assert_eq!((st.log_start, st.high_watermark), (log_start, n));
        let want: Vec<Record> = p0(n)
            .into_iter()
            .filter(|r| r.offset >= log_start)
            .collect();
        assert_eq!(read_all(log, "fx.idx", 0), want);
        for t in (ts(0) - 5..ts(n) + 5).step_by(5) {
            let expected = want
                .iter()
                .find(|r| r.timestamp_ms >= t)
                .map(|r| (r.offset, r.timestamp_ms));
            assert_eq!(
                log.offset_for_timestamp("fx.idx", 0, t).unwrap(),
                expected,
                "timestamp {t}"
            );
        }
        let mut p1 = Vec::new();
        for i in 0..20u64 {
            p1.extend(at_offsets(
                i * 3,
                &recs(&format!("b{i}"), 3, 1_700_000_000_000 + i as i64 * 7),
            ));
        }
        assert_eq!(read_all(log, "fx.idx", 1), p1);
    };
    let mut o = opts(dir.path());
    o.segment_bytes = 8192;
    let log = Log::open(o.clone()).unwrap();
    assert_eq!(log.recovery_stats().replayed_frames, 0);
    check(&log, 300, 120);
    // New batches extend the migrated last pack and open new ones.
    for i in 300..500u64 {
        append(
            &log,
            "fx.idx",
            0,
            &[rec(&format!("k{i}"), &format!("v{i}"), ts(i))],
        );
    }
    log.checkpoint().unwrap();
    check(&log, 500, 120);
    log.close().unwrap();
    drop(log);

    let db = redb::Database::open(dir.path().join("index.redb")).unwrap();
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "batch_packs"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "batches" || n == "times"),
        "{names:?}"
    );
    drop(db);

    let log = Log::open(o).unwrap();
    assert_eq!(log.recovery_stats().replayed_frames, 0);
    check(&log, 500, 120);
    // Reclamation over migrated packs.
    log.delete_records_before("fx.idx", 0, 400).unwrap();
    log.run_maintenance().unwrap();
    check(&log, 500, 400);
    log.close().unwrap();
}
