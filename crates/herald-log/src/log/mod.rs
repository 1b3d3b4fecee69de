//! The log: catalog, group-committing writer thread, reads, checkpoints, retention and recovery.
//!
//! The public API (`Log`) and the shared state (`Inner`) live here; each concern is a child
//! module that adds methods to them:
//! - `writer`: the writer thread — staging operations into frames, group commit, publishing;
//! - `read`: reads from the in-memory tail and the checkpoint store;
//! - `checkpoint`: moving index entries and catalog changes into redb;
//! - `recovery`: loading the checkpoint and replaying the journal after it;
//! - `maintenance`: the maintenance thread, retention and segment reclamation;
//! - `idem`: the idempotency-key table;
//! - `space`: refusing writes on a full disk, the space reserve, healing once space is freed;
//! - `catalog`: installing and growing topics in the in-memory catalog.
//!
//! # Lock order
//!
//! A thread that holds a lock may only take locks further down this list:
//!
//! 1. `Inner::ckpt_lock` (one checkpoint at a time), or the space module's reclamation lock
//!    (one reclamation at a time) — never both;
//! 2. `Inner::catalog_commit` (write-held by the writer around a group with catalog changes,
//!    read-held by a checkpoint);
//! 3. a redb write transaction (checkpoint, reclamation; redb runs one at a time);
//! 4. `Inner::catalog`;
//! 5. `Inner::seg_stats`;
//! 6. `Partition::state`, `Topic::config`, `Inner::idem` — never two of them at once, and
//!    never two partitions' states at once.
//!
//! `Inner::queue` may be held while taking `Inner::poisoned` (refusing an operation), never
//! the reverse. `Inner::dirty_segs`, `dirty_streams`, `dirty_topics`, `deleted_streams`, the
//! `ckpt_signal` mutex, `Segments`' map, the space reserve's mutex (`space::Space`, taken by
//! the writer's space check inside a partition's state) and the index handle's lock
//! (`store::Db`, held only to begin a transaction or to reopen) are leaves: nothing is taken
//! while holding them.
//! One exception: recovery's `replay` takes `seg_stats` inside a partition's state; it runs in
//! `Log::open` before any other thread of the log exists, so it cannot deadlock.

mod catalog;
mod checkpoint;
mod idem;
mod maintenance;
mod read;
mod recovery;
mod space;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch;
use crate::error::{LogError, Result};
use crate::frame::{self, IdemKey};
use crate::fs::{Fs, StdFs};
use crate::journal::{self, Segments};
use crate::producer::Producers;
use crate::store::{self, IndexEntry, TopicRecord};

use catalog::{extend_topic, install_topic};
use idem::{IdemEntry, IdemTable};
use writer::{Completion, Op};

/// When an append is acknowledged relative to its fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after the data is on disk. Concurrent appends share one fsync.
    Always,
    /// Acknowledge after the write reaches the page cache and fsync at most this long after.
    /// A machine crash can lose up to this much acknowledged data; a process crash cannot.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A journal segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// A checkpoint is taken after this much journal, bounding recovery work.
    pub checkpoint_bytes: u64,
    /// ...or after this many frames (recovery cost is per frame as well as per byte)...
    pub checkpoint_frames: u64,
    /// ...or after this long, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Appends waiting for the writer are refused past this many bytes.
    pub max_pending_bytes: usize,
    /// The largest batch one append may carry.
    pub max_batch_bytes: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// The most idempotency keys remembered; the oldest are forgotten first.
    pub idempotency_max_keys: usize,
    /// How often retention and segment reclamation run.
    pub retention_check_interval: Duration,
    /// `retention.ms` of topics that do not set their own; `None` keeps records forever.
    pub default_retention_ms: Option<i64>,
    /// The file system holding `dir`: the real one, or a simulated one in tests.
    pub fs: Arc<dyn Fs>,
}

impl LogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> LogOptions {
        LogOptions {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 * 1024 * 1024,
            checkpoint_bytes: 256 * 1024 * 1024,
            checkpoint_frames: 100_000,
            checkpoint_interval: Duration::from_secs(30),
            max_pending_bytes: 256 * 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            idempotency_window: Duration::from_secs(600),
            idempotency_max_keys: 1_000_000,
            retention_check_interval: Duration::from_secs(60),
            default_retention_ms: None,
            fs: Arc::new(StdFs),
        }
    }
}

/// Per-topic settings, Kafka-style keys. The log itself interprets `retention.ms`.
pub type TopicConfig = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    pub log_start: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
}

/// Where an earlier append with the same idempotency key landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemHit {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        base_offset: u64,
        last_offset: u64,
        /// The batch's largest record timestamp.
        max_timestamp: i64,
    },
    /// At least one idempotency key was seen before; nothing was written. One entry per key,
    /// `None` where that key is new.
    Duplicate { hits: Vec<Option<IdemHit>> },
    /// An idempotent producer resent a batch already stored at `base_offset`; nothing was
    /// written.
    DuplicateBatch { base_offset: u64, last_offset: u64 },
}

/// What opening the log found and did; recovery's cost is bounded by the checkpoint bounds
/// (`checkpoint_bytes`, `checkpoint_frames`) and the idempotency window, not by total data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryStats {
    /// Journal frames after the checkpoint, replayed.
    pub replayed_frames: u64,
    pub replayed_bytes: u64,
    /// Idempotency keys inside the window, loaded.
    pub idempotency_keys: usize,
    pub elapsed: Duration,
}

/// Batches read from one partition, as stored (Kafka RecordBatch v2 bytes).
#[derive(Debug, Clone, Default)]
pub struct ReadBatches {
    pub batches: Vec<Bytes>,
    pub high_watermark: u64,
    pub log_start: u64,
}

pub type AppendDone = Box<dyn FnOnce(Result<AppendOutcome>) + Send>;
type Done<T> = Box<dyn FnOnce(Result<T>) + Send>;

struct PartState {
    next_offset: u64,
    pending_next: u64,
    log_start: u64,
    total_bytes: u64,
    pending_total: u64,
    start_bytes: u64,
    max_ts: i64,
    /// Batches published since the last checkpoint, ascending.
    tail: Vec<IndexEntry>,
    /// Idempotent producers seen on this partition (empty, and allocation-free, for most).
    producers: Producers,
}

struct Partition {
    stream: u64,
    topic: Arc<str>,
    index: u32,
    state: Mutex<PartState>,
}

struct Topic {
    name: String,
    partitions: Vec<Arc<Partition>>,
    config: RwLock<TopicConfig>,
    created_ms: i64,
}

impl Topic {
    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.clone(),
            streams: self.partitions.iter().map(|p| p.stream).collect(),
            config: self.config.read().clone(),
            created_ms: self.created_ms,
        }
    }

    fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            partitions: self.partitions.len() as u32,
            config: self.config.read().clone(),
            created_ms: self.created_ms,
        }
    }
}

#[derive(Default)]
struct Catalog {
    topics: BTreeMap<String, Arc<Topic>>,
    streams: HashMap<u64, Arc<Partition>>,
    next_stream: u64,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    pending_bytes: usize,
    closed: bool,
}

struct Inner {
    opts: LogOptions,
    journal_dir: PathBuf,
    db: store::Db,
    segments: Segments,
    catalog: RwLock<Catalog>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    /// Everything before this journal position is published to readers.
    visible: AtomicU64,
    /// Everything before this journal position is on disk.
    synced: AtomicU64,
    checkpointed: AtomicU64,
    poisoned: Mutex<Option<String>>,
    idem: Mutex<IdemTable>,
    /// Segment start → stream → end offset of the stream's last batch in that segment.
    seg_stats: Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    dirty_segs: Mutex<HashSet<u64>>,
    dirty_streams: Mutex<HashSet<u64>>,
    dirty_topics: Mutex<HashSet<String>>,
    deleted_streams: Mutex<Vec<u64>>,
    shutdown: AtomicBool,
    ckpt_signal: (Mutex<bool>, Condvar),
    /// Checkpoints of one log run one at a time. (A process-wide lock would make independent
    /// logs in one process wait for each other.)
    /// Write-held by the writer from staging to publishing a group with catalog changes;
    /// read-held by checkpoints.
    catalog_commit: RwLock<()>,
    ckpt_lock: Mutex<()>,
    space: space::Space,
    recovery: Mutex<RecoveryStats>,
}

/// The embedded durable log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    threads: Arc<Threads>,
}

/// The log's threads, shared by all clones. The threads hold the `Inner` themselves, so `Inner`
/// can never be dropped while they run: dropping the last clone must stop them, or the writer
/// and checkpoint threads would live on and keep the index database locked.
struct Threads {
    inner: Arc<Inner>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        if let Err(e) = shutdown(&self.inner, &self.handles) {
            tracing::warn!(error = %e, "final checkpoint failed while dropping the log");
        }
    }
}

/// Stops accepting work, writes what is queued, joins the threads and takes a final checkpoint.
fn shutdown(inner: &Inner, handles: &Mutex<Vec<JoinHandle<()>>>) -> Result<()> {
    {
        let mut q = inner.queue.lock();
        q.closed = true;
    }
    inner.queue_cv.notify_all();
    inner.shutdown.store(true, Ordering::SeqCst);
    {
        let (lock, cv) = &inner.ckpt_signal;
        *lock.lock() = true;
        cv.notify_all();
    }
    let threads: Vec<_> = handles.lock().drain(..).collect();
    let me = std::thread::current().id();
    for t in threads {
        // The last handle may be dropped inside an append callback, which runs on the writer
        // thread; that thread cannot join itself and exits on its own once it sees the queue
        // closed.
        if t.thread().id() != me {
            let _ = t.join();
        }
    }
    if inner.poisoned.lock().is_none() {
        inner.checkpoint_or_heal()?;
    }
    Ok(())
}

impl Inner {
    fn fs(&self) -> &dyn Fs {
        self.opts.fs.as_ref()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Log {
    /// Opens the log in `opts.dir`, creating it if needed, and recovers whatever the journal
    /// holds past the last checkpoint.
    pub fn open(opts: LogOptions) -> Result<Log> {
        let journal_dir = opts.dir.join("journal");
        let fs = Arc::clone(&opts.fs);
        fs.create_dir_all(&journal_dir)
            .map_err(|e| LogError::io(journal_dir.display(), e))?;
        // The data directory may have just been created: its own entry must be durable too.
        // Best effort, as the parent may not be readable by Herald's user.
        if let Some(parent) = opts.dir.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(e) = fs.sync_dir(parent)
        {
            tracing::debug!(error = %e, dir = %parent.display(), "could not fsync the data directory's parent");
        }
        let db_path = opts.dir.join("index.redb");
        let db = store::Db::open(Arc::clone(&fs), db_path)?;
        // After creating the index file, so that its directory entry survives a power cut:
        // without the index, recovery would start from a journal whose oldest segments were
        // already reclaimed.
        journal::sync_dir(fs.as_ref(), &opts.dir)?;
        store::init(&db)?;

        let inner = Arc::new(Inner {
            journal_dir: journal_dir.clone(),
            db,
            segments: Segments::default(),
            catalog: RwLock::new(Catalog::default()),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            visible: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            checkpointed: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            idem: Mutex::new(IdemTable::default()),
            seg_stats: Mutex::new(BTreeMap::new()),
            dirty_segs: Mutex::new(HashSet::new()),
            dirty_streams: Mutex::new(HashSet::new()),
            dirty_topics: Mutex::new(HashSet::new()),
            deleted_streams: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            ckpt_signal: (Mutex::new(false), Condvar::new()),
            ckpt_lock: Mutex::new(()),
            catalog_commit: RwLock::new(()),
            space: space::Space::default(),
            recovery: Mutex::new(RecoveryStats::default()),
            opts,
        });
        let writer = inner.recover()?;
        // Whatever was replayed is checkpointed before any new write: a process that keeps
        // crashing before its first periodic checkpoint would otherwise replay an ever longer
        // journal at every start. This also drops idempotency rows that aged out meanwhile.
        // On a full disk this may fail; the log still opens (reads work, appends wait for
        // space) and the periodic checkpoint tries again.
        if let Err(e) = inner.checkpoint_or_heal() {
            tracing::warn!(error = %e, "checkpoint after recovery failed; retried periodically");
        }
        inner.restore_ballast(true);

        let mut threads = Vec::new();
        // Acknowledgements run on their own thread: waking the callers of a group is then off
        // the writer's path, which goes straight on to the next group.
        let (acks, ack_rx) = std::sync::mpsc::sync_channel::<Vec<Completion>>(1024);
        let w = Arc::clone(&inner);
        threads.push(
            std::thread::Builder::new()
                .name("herald-log-writer".into())
                .spawn(move || w.writer_loop(writer, acks))
                .map_err(|e| LogError::io("writer thread", e))?,
        );
        threads.push(
            std::thread::Builder::new()
                .name("herald-log-acks".into())
                .spawn(move || {
                    for group in ack_rx {
                        for c in group {
                            c.complete();
                        }
                    }
                })
                .map_err(|e| LogError::io("acknowledgement thread", e))?,
        );
        let c = Arc::clone(&inner);
        threads.push(
            std::thread::Builder::new()
                .name("herald-log-checkpoint".into())
                .spawn(move || c.maintenance_loop())
                .map_err(|e| LogError::io("checkpoint thread", e))?,
        );
        Ok(Log {
            threads: Arc::new(Threads {
                inner: Arc::clone(&inner),
                handles: Mutex::new(threads),
            }),
            inner,
        })
    }

    /// Queues `op` for the writer thread, or completes it at once with the reason it is refused.
    fn enqueue(&self, op: Op, bytes: usize) {
        let mut q = self.inner.queue.lock();
        let refusal = if q.closed {
            // A poisoned log closes its queue (see `Inner::poison`), so checking under the queue
            // lock cannot race with the writer thread exiting.
            Some(match self.inner.poisoned.lock().clone() {
                Some(reason) => LogError::Poisoned(reason),
                None => LogError::Closed,
            })
        } else if bytes > 0 && q.pending_bytes + bytes > self.inner.opts.max_pending_bytes {
            Some(LogError::Overloaded {
                pending: q.pending_bytes,
                limit: self.inner.opts.max_pending_bytes,
            })
        } else {
            None
        };
        match refusal {
            Some(e) => {
                drop(q);
                op.fail(e);
            }
            None => {
                q.pending_bytes += bytes;
                q.ops.push(op);
                drop(q);
                self.inner.queue_cv.notify_one();
            }
        }
    }

    /// Appends one RecordBatch v2 to a partition. `done` is called exactly once, from the writer
    /// thread (or inline when the append is refused up front), after the batch is durable under
    /// the configured fsync policy. `keys` name records of the batch for idempotent publishing.
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: Vec<u8>,
        keys: Vec<IdemKey>,
        done: AppendDone,
    ) {
        if batch.len() > self.inner.opts.max_batch_bytes {
            return done(Err(LogError::BatchTooLarge {
                size: batch.len(),
                limit: self.inner.opts.max_batch_bytes,
            }));
        }
        let header = match batch::validate(&batch) {
            Ok(h) => h,
            Err(e) => return done(Err(e)),
        };
        if let Some(k) = keys
            .iter()
            .find(|k| k.key.len() > frame::MAX_IDEM_KEY_LEN || k.key.is_empty())
        {
            return done(Err(LogError::InvalidBatch(format!(
                "idempotency key of {} bytes is outside 1..={}",
                k.key.len(),
                frame::MAX_IDEM_KEY_LEN
            ))));
        }
        if keys.len() > usize::from(u16::MAX) {
            return done(Err(LogError::InvalidBatch(
                "too many idempotency keys".into(),
            )));
        }
        let bytes = batch.len();
        let op = Op::Append {
            topic: topic.to_owned(),
            partition,
            batch,
            header,
            keys,
            done,
        };
        self.enqueue(op, bytes);
    }

    /// Blocking form of [`Log::append`], for tools and tests.
    pub fn append_blocking(
        &self,
        topic: &str,
        partition: u32,
        batch: Vec<u8>,
        keys: Vec<IdemKey>,
    ) -> Result<AppendOutcome> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.append(
            topic,
            partition,
            batch,
            keys,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    fn call<T: Send + 'static>(&self, make: impl FnOnce(Done<T>) -> Op) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let op = make(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        self.enqueue(op, 0);
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    /// Creates a topic. Blocks until the creation is durable.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<TopicInfo> {
        if partitions == 0 || partitions > 10_000 {
            return Err(LogError::InvalidConfig(format!(
                "partition count {partitions} is outside 1..=10000"
            )));
        }
        validate_config(&config)?;
        let name = name.to_owned();
        self.call(|done| Op::Create {
            name,
            partitions,
            config,
            done,
        })
    }

    /// Deletes a topic and, in the background, the space its records used.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.call(|done| Op::Delete { name, done })
    }

    /// Replaces a topic's configuration.
    pub fn set_topic_config(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        validate_config(&config)?;
        let name = name.to_owned();
        self.call(|done| Op::Config { name, config, done })
    }

    /// Grows a topic to `total` partitions (Kafka CreatePartitions); the count never shrinks.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<TopicInfo> {
        if total > 10_000 {
            return Err(LogError::InvalidConfig(format!(
                "partition count {total} is outside 1..=10000"
            )));
        }
        let name = name.to_owned();
        self.call(|done| Op::AddPartitions { name, total, done })
    }

    /// Makes every record before `offset` unreadable (Kafka DeleteRecords); returns the new log
    /// start offset. `offset` past the high watermark is refused.
    pub fn delete_records_before(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        let topic = topic.to_owned();
        self.call(|done| Op::LogStart {
            topic,
            partition,
            offset,
            done,
        })
    }

    /// Returns once everything enqueued before this call is on disk.
    pub fn sync(&self) -> Result<()> {
        self.call(|done| Op::Sync { done })
    }

    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.inner.catalog.read().topics.get(name).map(|t| t.info())
    }

    /// Topic names in order, optionally only those starting with `prefix`.
    pub fn list_topics(&self, prefix: &str) -> Vec<TopicInfo> {
        let cat = self.inner.catalog.read();
        cat.topics
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, t)| t.info())
            .collect()
    }

    pub fn topic_count(&self) -> usize {
        self.inner.catalog.read().topics.len()
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let cat = self.inner.catalog.read();
        let t = cat
            .topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
    }

    pub fn partition_stats(&self, topic: &str, partition: u32) -> Result<PartitionStats> {
        let p = self.partition(topic, partition)?;
        let s = p.state.lock();
        Ok(PartitionStats {
            log_start: s.log_start,
            high_watermark: s.next_offset,
            size_bytes: s.total_bytes.saturating_sub(s.start_bytes),
            max_timestamp: s.max_ts,
        })
    }

    /// Looks up idempotency keys without writing anything.
    pub fn idempotency_lookup(&self, key: &[u8]) -> Option<IdemHit> {
        let digest = store::idem_digest(key);
        let rec = self.inner.idem.lock().map.get(&digest).map(|e| e.rec)?;
        self.inner.hit(&rec)
    }

    /// Whether the log accepts writes: not poisoned by an I/O failure and not closed.
    pub fn probe(&self) -> Result<()> {
        if let Some(reason) = self.inner.poisoned.lock().clone() {
            return Err(LogError::Poisoned(reason));
        }
        if self.inner.queue.lock().closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    /// Files and counters an operator may want to see.
    pub fn segment_count(&self) -> usize {
        self.inner.segments.count()
    }

    /// Runs retention and reclamation now instead of at the next interval.
    pub fn run_maintenance(&self) -> Result<()> {
        self.inner.checkpoint_or_heal()?;
        self.inner.enforce_retention()?;
        self.inner.reclaim_one_at_a_time()
    }

    /// Takes a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint_or_heal()
    }

    /// The journal position up to which the last checkpoint made recovery unnecessary.
    pub fn checkpoint_position(&self) -> u64 {
        self.inner.checkpointed.load(Ordering::SeqCst)
    }

    /// What recovery did when this log was opened.
    pub fn recovery_stats(&self) -> RecoveryStats {
        *self.inner.recovery.lock()
    }

    /// Stops accepting work, writes what is queued, takes a final checkpoint and joins the
    /// log's threads. Other clones of this `Log` fail with [`LogError::Closed`] afterwards.
    pub fn close(&self) -> Result<()> {
        shutdown(&self.inner, &self.threads.handles)
    }
}

/// A partition's largest timestamp once a batch whose largest is `batch_max` is added. The 0 an
/// empty partition reports is a placeholder, not a timestamp: the first batch replaces it even if
/// its records predate 1970, as the checkpoint's own running maximum does, so that the value is
/// the same before and after reopening.
fn raise_max_ts(current: i64, total_bytes: u64, batch_max: i64) -> i64 {
    if total_bytes == 0 {
        batch_max
    } else {
        current.max(batch_max)
    }
}

fn validate_config(config: &TopicConfig) -> Result<()> {
    if let Some(v) = config.get("retention.ms") {
        v.parse::<i64>().ok().filter(|v| *v >= -1).ok_or_else(|| {
            LogError::InvalidConfig(format!(
                "retention.ms must be -1 or a non-negative integer, got {v:?}"
            ))
        })?;
    }
    Ok(())
}
