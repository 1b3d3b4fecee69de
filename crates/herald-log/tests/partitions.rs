//! Growing a topic's partition count (Kafka CreatePartitions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{append, crash_copy, now_ms, opts, read_all, recs};
use herald_log::{Log, LogError};

#[test]
fn partitions_grow_keep_data_and_survive_replay_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 2, Default::default()).unwrap();
    append(&log, "t", 1, &recs("a", 3, now_ms()));
    log.checkpoint().unwrap();

    let info = log.create_partitions("t", 5).unwrap();
    assert_eq!(info.partitions, 5);
    assert!(
        matches!(
            log.create_partitions("t", 4),
            Err(LogError::InvalidConfig(_))
        ),
        "never shrinks"
    );
    assert!(matches!(
        log.create_partitions("nope", 4),
        Err(LogError::UnknownTopic(_))
    ));
    assert_eq!(append(&log, "t", 4, &recs("b", 2, now_ms())), (0, 1));
    assert_eq!(
        read_all(&log, "t", 1).len(),
        3,
        "old partitions keep their data"
    );

    // Replay of the add-partitions frame after the checkpoint.
    log.sync().unwrap();
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    log.close().unwrap();
    drop(log);
    let replayed = Log::open(opts(copy.path())).unwrap();
    assert_eq!(replayed.topic("t").unwrap().partitions, 5);
    assert_eq!(read_all(&replayed, "t", 4).len(), 2);
    assert_eq!(read_all(&replayed, "t", 1).len(), 3);
    replayed.close().unwrap();
    drop(replayed);

    // And from the final checkpoint.
    let reopened = Log::open(opts(dir.path())).unwrap();
    assert_eq!(reopened.topic("t").unwrap().partitions, 5);
    assert_eq!(append(&reopened, "t", 4, &recs("c", 1, now_ms())), (2, 2));
    reopened.close().unwrap();
}
