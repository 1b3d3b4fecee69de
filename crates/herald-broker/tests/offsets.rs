//! Committed offsets survive restarts and compaction keeps the newest value of every entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use herald_broker::offsets::{Committed, OFFSETS_TOPIC, OffsetStore};
use herald_broker::storage::{EmbeddedStorage, Storage};
use herald_log::{Log, LogOptions};

fn embedded(log: &Log) -> Arc<dyn Storage> {
    Arc::new(EmbeddedStorage::new(log.clone()))
}

fn committed(offset: i64) -> Committed {
    Committed {
        offset,
        metadata: Some(format!("m{offset}")),
        leader_epoch: -1,
        commit_ms: 1,
    }
}

#[tokio::test]
async fn offsets_survive_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogOptions::new(dir.path())).unwrap();
    let store = OffsetStore::open(embedded(&log))
        .await
        .unwrap()
        .with_compact_slack(10);
    for i in 0..50 {
        store
            .commit(
                "g1",
                vec![
                    ("smarteros.a.b.c".into(), 0, committed(i)),
                    ("smarteros.a.b.c".into(), 1, committed(100 + i)),
                ],
            )
            .await
            .unwrap();
    }
    store
        .commit("g2", vec![("t".into(), 3, committed(7))])
        .await
        .unwrap();
    store
        .put_group("g2", Some(serde_json::json!({"generation": 4})))
        .await
        .unwrap();
    assert_eq!(store.get("g1", "smarteros.a.b.c", 0).unwrap().offset, 49);
    assert_eq!(
        store
            .delete("g2", Some(vec![("t".into(), 3)]))
            .await
            .unwrap(),
        1
    );
    assert!(store.get("g2", "t", 3).is_none());
    let stats = log.partition_stats(OFFSETS_TOPIC, 0).unwrap();
    assert!(
        stats.log_start > 0,
        "superseded records were dropped: {stats:?}"
    );
    assert_eq!(store.groups(), vec!["g1".to_owned(), "g2".to_owned()]);
    drop(store);
    log.close().unwrap();
    drop(log);

    let log = Log::open(LogOptions::new(dir.path())).unwrap();
    let store = OffsetStore::open(embedded(&log)).await.unwrap();
    let g1 = store.group_offsets("g1");
    assert_eq!(g1.len(), 2);
    assert_eq!((g1[0].2.offset, g1[1].2.offset), (49, 149));
    assert_eq!(g1[1].2.metadata.as_deref(), Some("m149"));
    assert!(store.get("g2", "t", 3).is_none(), "deletion survives");
    assert_eq!(
        store.group_snapshots(),
        vec![("g2".to_owned(), serde_json::json!({"generation": 4}))]
    );
    store
        .commit("g1", vec![("smarteros.a.b.c".into(), 0, committed(50))])
        .await
        .unwrap();
    assert_eq!(store.get("g1", "smarteros.a.b.c", 0).unwrap().offset, 50);
    log.close().unwrap();
}

/// A timer-driven persist and a JoinGroup can finish their appends in the reverse of the order
/// their snapshots were taken in; the snapshot taken last must still be the one restored.
#[tokio::test]
async fn group_snapshot_taken_last_wins_even_if_appended_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogOptions::new(dir.path())).unwrap();
    let store = OffsetStore::open(embedded(&log)).await.unwrap();
    let older = store.stage_group("g", Some(serde_json::json!({"generation": 1})));
    let newer = store.stage_group("g", Some(serde_json::json!({"generation": 2})));
    store.store_group(newer).await.unwrap();
    store.store_group(older).await.unwrap();
    let expected = vec![("g".to_owned(), serde_json::json!({"generation": 2}))];
    assert_eq!(store.group_snapshots(), expected, "in memory");
    drop(store);
    log.close().unwrap();
    drop(log);

    let log = Log::open(LogOptions::new(dir.path())).unwrap();
    let store = OffsetStore::open(embedded(&log)).await.unwrap();
    assert_eq!(store.group_snapshots(), expected, "after a restart");
    log.close().unwrap();
}
