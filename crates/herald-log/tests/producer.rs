//! Idempotent producers: retried batches are stored once, gaps and stale epochs are refused,
//! and the state survives a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{crash_copy, now_ms, opts, read_all, recs};
use herald_log::batch::build_for_producer;
use herald_log::{AppendOutcome, Log, LogError};

fn send(log: &Log, pid: i64, epoch: i16, seq: i32, n: usize) -> Result<AppendOutcome, LogError> {
    let batch = build_for_producer(&recs("p", n, now_ms()), pid, epoch, seq).unwrap();
    log.append_blocking("t", 0, batch, Vec::new())
}

#[test]
fn retries_are_stored_once_and_gaps_refused_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, Default::default()).unwrap();

    assert!(matches!(
        send(&log, 42, 0, 0, 3).unwrap(),
        AppendOutcome::Appended { base_offset: 0, .. }
    ));
    // The same batch again (a producer retry): acknowledged where it landed, not stored.
    assert_eq!(
        send(&log, 42, 0, 0, 3).unwrap(),
        AppendOutcome::DuplicateBatch {
            base_offset: 0,
            last_offset: 2
        }
    );
    assert!(matches!(
        send(&log, 42, 0, 3, 2).unwrap(),
        AppendOutcome::Appended { base_offset: 3, .. }
    ));
    assert!(matches!(
        send(&log, 42, 0, 9, 1),
        Err(LogError::OutOfOrderSequence {
            expected: 5,
            got: 9
        })
    ));
    assert!(matches!(
        send(&log, 43, 0, 7, 1),
        Err(LogError::UnknownProducerId(43))
    ));
    assert_eq!(read_all(&log, "t", 0).len(), 5);

    // State after a checkpoint and after replay of the journal past it.
    log.checkpoint().unwrap();
    assert!(matches!(
        send(&log, 42, 0, 5, 1).unwrap(),
        AppendOutcome::Appended { base_offset: 5, .. }
    ));
    log.sync().unwrap();
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    log.close().unwrap();
    drop(log);

    let log = Log::open(opts(copy.path())).unwrap();
    assert_eq!(
        send(&log, 42, 0, 5, 1).unwrap(),
        AppendOutcome::DuplicateBatch {
            base_offset: 5,
            last_offset: 5
        }
    );
    assert_eq!(
        send(&log, 42, 0, 3, 2).unwrap(),
        AppendOutcome::DuplicateBatch {
            base_offset: 3,
            last_offset: 4
        }
    );
    assert!(matches!(
        send(&log, 42, 0, 7, 1),
        Err(LogError::OutOfOrderSequence { expected: 6, .. })
    ));
    assert!(matches!(
        send(&log, 42, 0, 6, 1).unwrap(),
        AppendOutcome::Appended { base_offset: 6, .. }
    ));
    // A bumped epoch restarts at 0 and fences the old one.
    assert!(matches!(
        send(&log, 42, 1, 0, 1).unwrap(),
        AppendOutcome::Appended { base_offset: 7, .. }
    ));
    assert!(matches!(
        send(&log, 42, 0, 7, 1),
        Err(LogError::InvalidProducerEpoch { current: 1, got: 0 })
    ));
    assert_eq!(read_all(&log, "t", 0).len(), 8);
    log.close().unwrap();
}
