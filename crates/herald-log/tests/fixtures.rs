//! On-disk format fixtures: journals written by an earlier build must keep recovering to the
//! same state. A fixture is recovered from its journal alone (no index database), which is the
//! path that reads every frame kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use common::*;
use herald_log::{IdemHit, Log};

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
