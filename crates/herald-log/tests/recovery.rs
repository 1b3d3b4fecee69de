//! Recovery: clean reopen, crash (a copy of a live data directory), replay after the last
//! checkpoint, torn tails, corruption and checksums.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::*;
use herald_log::{Log, LogError, PartitionStats, TopicConfig, TopicInfo};

fn cfg(pairs: &[(&str, &str)]) -> TopicConfig {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Everything an observer can see of a log, for comparing two of them.
fn snapshot(log: &Log) -> (Vec<TopicInfo>, BTreeMap<(String, u32), PartitionStats>) {
    let topics = log.list_topics("");
    let mut stats = BTreeMap::new();
    for t in &topics {
        for p in 0..t.partitions {
            stats.insert(
                (t.name.clone(), p),
                log.partition_stats(&t.name, p).unwrap(),
            );
        }
    }
    (topics, stats)
}

/// Appends to the model and the log at once.
fn put(log: &Log, model: &mut Model, topic: &str, p: u32, tag: &str, n: usize, ts: i64) {
    let records = recs(tag, n, ts);
    let (base, _) = append(log, topic, p, &records);
    let m = model.entry((topic.into(), p)).or_default();
    assert_eq!(m.last().map_or(0, |r| r.offset + 1), base, "{topic}/{p}");
    m.extend(at_offsets(base, &records));
}

fn assert_sizes(log: &Log) {
    for t in log.list_topics("") {
        for p in 0..t.partitions {
            assert_eq!(
                log.partition_stats(&t.name, p).unwrap().size_bytes,
                framed_size(log, &t.name, p),
                "{}/{p}: size_bytes is the framed size from the log start to the high watermark",
                t.name
            );
        }
    }
}

#[test]
fn close_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("a", 3, cfg(&[("cleanup.policy", "delete")]))
        .unwrap();
    log.create_topic("b", 1, TopicConfig::new()).unwrap();
    for i in 0..60 {
        let (t, p) = if i % 4 == 0 { ("b", 0) } else { ("a", i % 3) };
        put(
            &log,
            &mut model,
            t,
            p,
            &format!("r{i}"),
            1 + i as usize % 4,
            i as i64,
        );
        if i % 17 == 0 {
            log.checkpoint().unwrap();
        }
    }
    log.delete_records_before("a", 1, 5).unwrap();
    log.set_topic_config("b", cfg(&[("retention.ms", "-1")]))
        .unwrap();
    assert!(log.segment_count() > 2);
    assert_sizes(&log);
    let before = snapshot(&log);
    log.close().unwrap();
    drop(log);

    let log = Log::open(opts(dir.path())).unwrap();
    assert_eq!(snapshot(&log), before);
    assert_model(&log, &model);
    assert_sizes(&log);
    put(&log, &mut model, "a", 1, "after", 3, 100);
    put(&log, &mut model, "b", 0, "after", 2, 100);
    assert_model(&log, &model);
    log.close().unwrap();
    drop(log);

    let log = Log::open(opts(dir.path())).unwrap();
    assert_model(&log, &model);
    assert_sizes(&log);
    log.close().unwrap();
}

/// The scenario of a crash: changes of every kind after the last checkpoint exist only in the
/// journal and must be replayed.
#[test]
fn crash_replays_everything_after_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("a", 2, TopicConfig::new()).unwrap();
    log.create_topic("gone", 1, TopicConfig::new()).unwrap();
    log.create_topic("re", 1, TopicConfig::new()).unwrap();
    for i in 0..20 {
        put(
            &log,
            &mut model,
            "a",
            i % 2,
            &format!("pre{i}"),
            3,
            10 + i as i64,
        );
    }
    put(&log, &mut model, "gone", 0, "gone", 4, 1);
    put(&log, &mut model, "re", 0, "old", 5, 1);
    log.checkpoint().unwrap();

    // After the checkpoint: more batches, catalog changes and a new log start.
    for i in 0..20 {
        put(
            &log,
            &mut model,
            "a",
            i % 2,
            &format!("post{i}"),
            2,
            100 + i as i64,
        );
    }
    log.create_topic("late", 2, cfg(&[("retention.ms", "123456")]))
        .unwrap();
    put(&log, &mut model, "late", 1, "late", 3, 7);
    log.delete_topic("gone").unwrap();
    model.remove(&("gone".to_string(), 0));
    log.delete_topic("re").unwrap();
    log.create_topic("re", 1, cfg(&[("x", "new")])).unwrap();
    model.remove(&("re".to_string(), 0));
    put(&log, &mut model, "re", 0, "new", 2, 1);
    log.set_topic_config("a", cfg(&[("retention.ms", "999999999")]))
        .unwrap();
    log.delete_records_before("a", 0, 31).unwrap();
    log.delete_records_before("a", 1, 4).unwrap();
    log.sync().unwrap();

    let before = snapshot(&log);
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let copy = Log::open(opts(crashed.path())).unwrap();
    assert_eq!(snapshot(&copy), before);
    assert!(copy.topic("gone").is_none());
    assert_eq!(copy.topic("re").unwrap().config, cfg(&[("x", "new")]));
    assert_eq!(copy.partition_stats("re", 0).unwrap().high_watermark, 2);
    assert_eq!(
        copy.topic("a").unwrap().config,
        cfg(&[("retention.ms", "999999999")])
    );
    assert_eq!(copy.partition_stats("a", 0).unwrap().log_start, 31);
    assert_model(&copy, &model);
    assert_sizes(&copy);

    // Appends continue where the journal ended, in both.
    let mut copy_model = model.clone();
    put(&copy, &mut copy_model, "a", 0, "copy", 2, 500);
    put(&copy, &mut copy_model, "late", 1, "copy", 1, 500);
    put(&copy, &mut copy_model, "re", 0, "copy", 1, 500);
    copy.create_topic("gone", 1, TopicConfig::new()).unwrap();
    put(&copy, &mut copy_model, "gone", 0, "again", 1, 500);
    assert_model(&copy, &copy_model);
    copy.close().unwrap();
    drop(copy);
    let copy = Log::open(opts(crashed.path())).unwrap();
    assert_model(&copy, &copy_model);
    assert_sizes(&copy);
    copy.close().unwrap();

    put(&log, &mut model, "a", 0, "orig", 1, 500);
    assert_model(&log, &model);
    log.close().unwrap();
}

#[test]
fn crash_before_any_checkpoint_rebuilds_from_the_journal_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("x", 2, TopicConfig::new()).unwrap();
    log.create_topic("y", 1, TopicConfig::new()).unwrap();
    log.create_topic("z", 1, TopicConfig::new()).unwrap();
    for i in 0..40 {
        let (t, p) = [("x", 0), ("x", 1), ("y", 0)][i % 3];
        put(
            &log,
            &mut model,
            t,
            p,
            &format!("v{i}"),
            1 + i % 3,
            i as i64,
        );
    }
    put(&log, &mut model, "z", 0, "z", 2, 0);
    log.delete_topic("z").unwrap();
    model.remove(&("z".to_string(), 0));
    log.create_topic("z", 1, TopicConfig::new()).unwrap();
    log.delete_records_before("x", 1, 7).unwrap();
    log.sync().unwrap();
    let before = snapshot(&log);
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let copy = Log::open(opts(crashed.path())).unwrap();
    assert_eq!(snapshot(&copy), before);
    assert_model(&copy, &model);
    assert_sizes(&copy);
    assert_eq!(copy.partition_stats("z", 0).unwrap().high_watermark, 0);
    // A checkpoint of the recovered state, then a clean reopen.
    copy.close().unwrap();
    drop(copy);
    let copy = Log::open(opts(crashed.path())).unwrap();
    assert_eq!(snapshot(&copy), before);
    assert_model(&copy, &model);
    copy.close().unwrap();
    log.close().unwrap();
}

/// A crash copy taken after every step, with checkpoints at irregular points, recovers exactly
/// the state at that step.
#[test]
fn crash_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 700;
    let mut model = Model::new();
    let log = Log::open(o).unwrap();
    log.create_topic("s", 2, TopicConfig::new()).unwrap();
    for step in 0..24usize {
        put(
            &log,
            &mut model,
            "s",
            (step % 2) as u32,
            &format!("s{step}"),
            1 + step % 4,
            step as i64,
        );
        if step % 5 == 3 {
            log.checkpoint().unwrap();
        }
        if step == 13 {
            log.delete_records_before("s", 1, 6).unwrap();
        }
        log.sync().unwrap();
        let before = snapshot(&log);
        let crashed = tempfile::tempdir().unwrap();
        crash_copy(dir.path(), crashed.path());
        let copy = Log::open(opts(crashed.path())).unwrap();
        assert_eq!(snapshot(&copy), before, "step {step}");
        assert_model(&copy, &model);
        assert_sizes(&copy);
        copy.close().unwrap();
    }
    log.close().unwrap();
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir).last().unwrap().clone()
}

/// Builds a log whose last append is in a non-empty newest segment, crash-copies it and returns
/// the copy's directory with the model.
fn torn_fixture() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut o = opts(dir.path());
    o.segment_bytes = 1024;
    let log = Log::open(o).unwrap();
    log.create_topic("t", 2, TopicConfig::new()).unwrap();
    for i in 0..30 {
        put(&log, &mut model, "t", i % 2, &format!("t{i}"), 2, i as i64);
        if i == 12 {
            log.checkpoint().unwrap();
        }
    }
    // Until the newest segment holds at least two batches, so that a torn tail never reaches
    // back into an older segment.
    let mut i = 30;
    while raw_frames(&fs::read(newest_segment(dir.path())).unwrap()).len() < 2 {
        put(&log, &mut model, "t", i % 2, &format!("t{i}"), 2, i as i64);
        i += 1;
    }
    log.sync().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    log.close().unwrap();
    assert!(segment_files(crashed.path()).len() > 2);
    (crashed, model)
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn reopen_and_continue(dir: &Path, model: &Model) {
    let log = Log::open(opts(dir)).unwrap();
    assert_model(&log, model);
    let mut model = model.clone();
    for i in 0..6 {
        put(&log, &mut model, "t", i % 2, &format!("after{i}"), 3, 1000);
    }
    assert_model(&log, &model);
    log.close().unwrap();
    drop(log);
    let log = Log::open(opts(dir)).unwrap();
    assert_model(&log, &model);
    log.close().unwrap();
}

#[test]
fn torn_tail_of_garbage_is_discarded() {
    let (dir, model) = torn_fixture();
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
    append_bytes(&newest_segment(dir.path()), &garbage);
    reopen_and_continue(dir.path(), &model);
}

#[test]
fn torn_tail_of_zeroes_is_discarded() {
    let (dir, model) = torn_fixture();
    append_bytes(&newest_segment(dir.path()), &[0u8; 4096]);
    reopen_and_continue(dir.path(), &model);
}

#[test]
fn torn_tail_of_a_partial_frame_is_discarded() {
    let (dir, model) = torn_fixture();
    let newest = newest_segment(dir.path());
    let data = fs::read(&newest).unwrap();
    let last = *raw_frames(&data).last().unwrap();
    let frame = &data[last.at..last.at + last.len];
    // Only the header; then the header and half the body.
    append_bytes(&newest, &frame[..32]);
    reopen_and_continue(dir.path(), &model);

    let (dir, model) = torn_fixture();
    let newest = newest_segment(dir.path());
    append_bytes(&newest, &frame[..frame.len() / 2]);
    reopen_and_continue(dir.path(), &model);
}

#[test]
fn torn_last_frame_loses_only_that_append() {
    let (dir, mut model) = torn_fixture();
    let newest = newest_segment(dir.path());
    let data = fs::read(&newest).unwrap();
    let last = *raw_frames(&data).last().unwrap();
    assert_eq!(last.kind, 1, "a batch frame");
    assert_eq!(last.at + last.len, data.len());
    // The write of the last frame was torn: a few bytes of it never reached the disk.
    let f = OpenOptions::new().write(true).open(&newest).unwrap();
    f.set_len((data.len() - 5) as u64).unwrap();
    drop(f);
    // Streams are numbered from 1 in creation order: stream 1 is t/0, stream 2 is t/1.
    let m = model
        .get_mut(&("t".to_string(), (last.stream - 1) as u32))
        .unwrap();
    let base = last.value;
    m.retain(|r| r.offset < base);
    reopen_and_continue(dir.path(), &model);
}

/// A bad frame in the newest segment is a torn tail only when no intact frame follows it: a
/// write that was cut short leaves nothing valid behind it. Intact frames after it mean the
/// damage is in the middle, and dropping everything from there would drop acknowledged data.
#[test]
fn damage_in_the_middle_of_the_newest_segment_is_an_error_on_open() {
    // Intact frames further past the damaged one than one unsynced group can span (16 MiB):
    // the damaged frame had been synced, so this is damage, not a write cut short.
    let live = tempfile::tempdir().unwrap();
    let built = tempfile::tempdir().unwrap();
    {
        let mut o = opts(live.path());
        o.segment_bytes = 256 * 1024 * 1024;
        let log = Log::open(o).unwrap();
        log.create_topic("t", 1, TopicConfig::new()).unwrap();
        let big = "x".repeat(512 * 1024);
        for i in 0..24 {
            append(&log, "t", 0, &[rec("k", &format!("{i}{big}"), i)]);
        }
        // What a crash leaves: no checkpoint covers these frames, so recovery reads them.
        crash_copy(live.path(), built.path());
        log.close().unwrap();
    }
    for (what, damage) in [
        ("a flipped body byte", 40usize),
        ("a flipped length byte", 9),
        ("a flipped magic byte", 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        crash_copy(built.path(), dir.path());
        let newest = newest_segment(dir.path());
        let mut data = fs::read(&newest).unwrap();
        let frames = raw_frames(&data);
        assert!(frames.len() >= 20 && data.len() > 20 * 1024 * 1024);
        data[frames[1].at + damage] ^= 0x5a;
        fs::write(&newest, &data).unwrap();
        let mut o = opts(dir.path());
        o.segment_bytes = 256 * 1024 * 1024;
        match Log::open(o) {
            Err(LogError::Corrupt { detail, .. }) => {
                assert!(detail.contains("intact frames follow"), "{what}: {detail}")
            }
            Err(e) => panic!("{what}: expected a corruption error, got {e}"),
            Ok(_) => panic!("{what}: opened a journal damaged before its last frame"),
        }
    }
}

/// A power cut can keep later sectors of the last, unsynced write while losing earlier ones:
/// an unreadable frame followed, within what one write spans, by intact ones. Nothing of that
/// write was acknowledged, so it is a torn tail and the log opens with everything before it.
#[test]
fn a_torn_write_that_kept_later_frames_is_a_torn_tail() {
    let (dir, mut model) = torn_fixture();
    let newest = newest_segment(dir.path());
    let mut data = fs::read(&newest).unwrap();
    let frames = raw_frames(&data);
    assert!(frames.len() >= 2);
    let first = frames[0];
    // The first frame's sectors never reached the disk (zeros); the later ones did.
    for b in &mut data[first.at..first.at + first.len] {
        *b = 0;
    }
    fs::write(&newest, &data).unwrap();
    for f in &frames {
        let m = model
            .get_mut(&("t".to_string(), (f.stream - 1) as u32))
            .unwrap();
        m.retain(|r| r.offset < f.value);
    }
    reopen_and_continue(dir.path(), &model);
}

/// The last frame damaged in place (not cut short) with nothing after it is still a torn tail.
#[test]
fn damaged_last_frame_of_the_newest_segment_is_a_torn_tail() {
    let (dir, mut model) = torn_fixture();
    let newest = newest_segment(dir.path());
    let mut data = fs::read(&newest).unwrap();
    let last = *raw_frames(&data).last().unwrap();
    data[last.at + 40] ^= 0x5a;
    fs::write(&newest, &data).unwrap();
    let m = model
        .get_mut(&("t".to_string(), (last.stream - 1) as u32))
        .unwrap();
    m.retain(|r| r.offset < last.value);
    reopen_and_continue(dir.path(), &model);
}

#[test]
fn corruption_in_an_older_segment_is_an_error_on_open() {
    for (what, damage) in [
        ("a flipped body byte", 40usize),
        ("a flipped length byte", 9),
        ("a flipped magic byte", 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::new();
        let mut o = opts(dir.path());
        o.segment_bytes = 1024;
        let log = Log::open(o).unwrap();
        log.create_topic("t", 1, TopicConfig::new()).unwrap();
        for i in 0..40 {
            put(&log, &mut model, "t", 0, &format!("c{i}"), 3, i);
        }
        log.sync().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        crash_copy(dir.path(), crashed.path());
        log.close().unwrap();
        let segments = segment_files(crashed.path());
        assert!(segments.len() >= 3);
        let victim = &segments[1];
        let mut data = fs::read(victim).unwrap();
        let frames = raw_frames(&data);
        let f = frames[frames.len() / 2];
        data[f.at + damage] ^= 0x5a;
        fs::write(victim, &data).unwrap();
        match Log::open(opts(crashed.path())) {
            Err(LogError::Corrupt { .. }) => {}
            Err(e) => panic!("{what}: expected a corruption error, got {e}"),
            Ok(_) => panic!("{what}: opened a journal with a damaged closed segment"),
        }
    }
}

#[test]
fn damaged_batches_are_reported_on_read_never_returned() {
    damaged_batches(false);
    damaged_batches(true);
}

fn damaged_batches(crash: bool) {
    let original = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let log = Log::open(opts(original.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    for i in 0..30 {
        put(&log, &mut model, "t", 0, &format!("d{i}"), 2, i);
    }
    // The checkpoint covers everything, so reopening scans nothing and the damage is found only
    // when a read touches it: after a crash (a copy of the live directory) or a clean close.
    let dir = if crash {
        log.checkpoint().unwrap();
        crash_copy(original.path(), crashed.path());
        log.close().unwrap();
        crashed.path()
    } else {
        log.close().unwrap();
        original.path()
    };
    drop(log);
    let segments = segment_files(dir);
    let victim = &segments[segments.len() / 2];
    let mut data = fs::read(victim).unwrap();
    let frames: Vec<RawFrame> = raw_frames(&data)
        .into_iter()
        .filter(|f| f.kind == 1)
        .collect();
    assert!(frames.len() >= 2);
    let (a, b) = (frames[0], frames[1]);
    // A record byte of one batch, and the base offset field of the next frame.
    data[a.at + 32 + 61 + 3] ^= 0x01;
    data[b.at + 24] ^= 0x01;
    fs::write(victim, &data).unwrap();

    let log = Log::open(opts(dir)).unwrap();
    for (frame, what) in [(a, "record byte"), (b, "frame header")] {
        for offset in [frame.value, frame.value + 1] {
            match log.read("t", 0, offset, 1 << 20) {
                Err(LogError::Corrupt { .. }) => {}
                Err(e) => panic!("{what}: expected Corrupt, got {e}"),
                Ok(r) => panic!(
                    "{what}: returned {} batches at {offset} (crash {crash}, hw {}, frames {a:?} {b:?})",
                    r.batches.len(),
                    r.high_watermark
                ),
            }
        }
    }
    // A read that would include the damaged batch fails rather than returning it.
    assert!(matches!(
        log.read("t", 0, 0, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
    // Everything before the damage is still readable in small reads.
    for offset in 0..a.value {
        let r = log.read("t", 0, offset, 1).unwrap();
        assert_eq!(r.batches.len(), 1);
    }
    // And everything after it.
    let st = log.partition_stats("t", 0).unwrap();
    let mut at = b.value + 2;
    while at < st.high_watermark {
        let r = log.read("t", 0, at, 1).unwrap();
        at = end_of(&r.batches[0]);
    }
    log.close().unwrap();
}

#[test]
fn reopening_an_open_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    assert!(Log::open(opts(dir.path())).is_err());
    log.close().unwrap();
}

#[test]
fn dropping_the_last_handle_closes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    let clone = log.clone();
    put(&log, &mut model, "t", 0, "a", 3, 1);
    drop(log);
    // A remaining clone keeps the log open and working.
    put(&clone, &mut model, "t", 0, "b", 2, 1);
    drop(clone);
    let log = Log::open(opts(dir.path())).unwrap();
    assert_model(&log, &model);
    drop(log);
    let log = Log::open(opts(dir.path())).unwrap();
    assert_model(&log, &model);
    log.close().unwrap();
}

#[test]
fn interval_fsync_recovers_acknowledged_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.fsync = herald_log::FsyncPolicy::Interval(std::time::Duration::from_millis(5));
    o.segment_bytes = 800;
    let mut model = Model::new();
    let log = Log::open(o.clone()).unwrap();
    log.create_topic("t", 2, TopicConfig::new()).unwrap();
    for i in 0..50 {
        put(&log, &mut model, "t", i % 2, &format!("i{i}"), 2, i as i64);
        if i % 20 == 7 {
            log.checkpoint().unwrap();
        }
        if i % 5 == 4 {
            // Idle long enough for the interval fsync, after which a full segment rolls.
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }
    assert!(log.segment_count() > 2);
    log.sync().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let copy = Log::open(opts(crashed.path())).unwrap();
    assert_model(&copy, &model);
    assert_sizes(&copy);
    copy.close().unwrap();
    log.close().unwrap();
    drop(log);
    let log = Log::open(o).unwrap();
    assert_model(&log, &model);
    log.close().unwrap();
}

#[test]
fn dropping_the_last_handle_inside_a_callback() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let keep = log.clone();
    log.append(
        "t",
        0,
        herald_log::batch::build(&recs("cb", 2, 1)).unwrap(),
        vec![],
        Box::new(move |r| {
            // Wait until every other handle is gone, so that this one is the last and dies on
            // the writer thread.
            go_rx.recv().unwrap();
            drop(keep);
            tx.send(r.is_ok()).unwrap();
        }),
    );
    drop(log);
    go_tx.send(()).unwrap();
    assert!(rx.recv().unwrap());
    // The log shut down and released its files: the directory opens again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        match Log::open(opts(dir.path())) {
            Ok(log) => break log,
            // The writer thread releases the files a moment after the callback returns.
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(log.partition_stats("t", 0).unwrap().high_watermark, 2);
    log.close().unwrap();
}

/// A process that crashes again before its first periodic checkpoint must not replay the same
/// journal again: recovery checkpoints what it replayed before taking new writes.
#[test]
fn a_checkpoint_is_taken_right_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let log = Log::open(opts(dir.path())).unwrap();
    log.create_topic("t", 2, TopicConfig::new()).unwrap();
    for i in 0..60 {
        put(&log, &mut model, "t", i % 2, &format!("r{i}"), 2, i as i64);
    }
    log.sync().unwrap();
    let first = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), first.path());
    log.close().unwrap();

    let log = Log::open(opts(first.path())).unwrap();
    assert!(log.recovery_stats().replayed_frames >= 60);
    assert_model(&log, &model);
    let second = tempfile::tempdir().unwrap();
    crash_copy(first.path(), second.path());
    drop(log);

    let log = Log::open(opts(second.path())).unwrap();
    assert_eq!(log.recovery_stats().replayed_frames, 0);
    assert_model(&log, &model);
    log.close().unwrap();
}

/// Many small frames call for a checkpoint long before `checkpoint_bytes` of journal: replay
/// costs per frame.
#[test]
fn a_checkpoint_is_taken_after_a_bounded_number_of_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 1024 * 1024;
    o.checkpoint_frames = 100;
    let log = Log::open(o).unwrap();
    log.create_topic("t", 1, TopicConfig::new()).unwrap();
    let mut model = Model::new();
    for i in 0..300 {
        put(&log, &mut model, "t", 0, &format!("f{i}"), 1, i);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.checkpoint_position() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        log.checkpoint_position() > 0,
        "no checkpoint after 300 frames with checkpoint_frames = 100"
    );
    assert_model(&log, &model);
    log.close().unwrap();
}
