//! The log: catalog, group-committing writer thread, reads, checkpoints, retention and recovery.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use redb::{ReadableDatabase, ReadableTable};

use crate::batch::{self, BatchHeader};
use crate::error::{LogError, Result};
use crate::frame::{self, IdemKey, Kind};
use crate::journal::{self, Segments, Writer};
use crate::producer::{Producers, Verdict};
use crate::store::{
    self, BATCHES, IDEM, IdemRecord, IndexEntry, META, META_CHECKPOINT, META_NEXT_STREAM, PARTS,
    PartRecord, SEGS, TIMES, TOPICS, TopicRecord,
};

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
}

impl LogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> LogOptions {
        LogOptions {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 * 1024 * 1024,
            checkpoint_bytes: 256 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(30),
            max_pending_bytes: 256 * 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            idempotency_window: Duration::from_secs(600),
            idempotency_max_keys: 1_000_000,
            retention_check_interval: Duration::from_secs(60),
            default_retention_ms: None,
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

struct IdemEntry {
    rec: IdemRecord,
    position: u64,
}

#[derive(Default)]
struct IdemTable {
    map: HashMap<Vec<u8>, IdemEntry>,
    order: VecDeque<(i64, Vec<u8>)>,
    /// Keys forgotten in memory whose rows the next checkpoint removes.
    expired: Vec<Vec<u8>>,
    /// Keys added since the last checkpoint.
    fresh: Vec<Vec<u8>>,
}

impl IdemTable {
    fn insert(&mut self, key: Vec<u8>, rec: IdemRecord, position: u64, max: usize) {
        self.order.push_back((rec.created_ms, key.clone()));
        self.fresh.push(key.clone());
        self.map.insert(key, IdemEntry { rec, position });
        while self.map.len() > max {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else {
            return false;
        };
        self.map.remove(&key);
        self.expired.push(key);
        true
    }

    fn expire(&mut self, cutoff_ms: i64) {
        while self.order.front().is_some_and(|(t, _)| *t < cutoff_ms) {
            self.pop_oldest();
        }
    }
}

enum Op {
    Append {
        topic: String,
        partition: u32,
        batch: Vec<u8>,
        header: BatchHeader,
        keys: Vec<IdemKey>,
        done: AppendDone,
    },
    Create {
        name: String,
        partitions: u32,
        config: TopicConfig,
        done: Done<TopicInfo>,
    },
    Delete {
        name: String,
        done: Done<()>,
    },
    LogStart {
        topic: String,
        partition: u32,
        offset: u64,
        done: Done<u64>,
    },
    Config {
        name: String,
        config: TopicConfig,
        done: Done<TopicInfo>,
    },
    AddPartitions {
        name: String,
        total: u32,
        done: Done<TopicInfo>,
    },
    Sync {
        done: Done<()>,
    },
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
    db: redb::Database,
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
        inner.checkpoint()?;
    }
    Ok(())
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
        std::fs::create_dir_all(&journal_dir)
            .map_err(|e| LogError::io(journal_dir.display(), e))?;
        journal::sync_dir(&opts.dir)?;
        let db_path = opts.dir.join("index.redb");
        let db = redb::Database::create(&db_path)?;
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
            opts,
        });
        let writer = inner.recover()?;

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

    /// Reads whole batches starting with the one that holds `offset`, until `max_bytes` is
    /// reached. The first batch is returned even if it alone is larger, so readers progress.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatches> {
        let p = self.partition(topic, partition)?;
        let (hw, log_start, tail_hit) = {
            let s = p.state.lock();
            if offset < s.log_start || offset > s.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    log_start: s.log_start,
                    high_watermark: s.next_offset,
                });
            }
            let tail_hit = if s.tail.first().is_some_and(|e| e.base_offset <= offset) {
                let i = s
                    .tail
                    .partition_point(|e| e.base_offset <= offset)
                    .saturating_sub(1);
                Some(collect_until(
                    s.tail.get(i..).unwrap_or_default(),
                    max_bytes,
                    true,
                ))
            } else {
                None
            };
            (s.next_offset, s.log_start, tail_hit)
        };
        let mut out = ReadBatches {
            batches: Vec::new(),
            high_watermark: hw,
            log_start,
        };
        if offset >= hw {
            return Ok(out);
        }
        let entries = match tail_hit {
            Some(e) => e,
            None => {
                let mut entries = self.inner.indexed_from(p.stream, offset, max_bytes)?;
                let used: usize = entries.iter().map(|e| e.frame_len as usize).sum();
                if used < max_bytes || entries.is_empty() {
                    let after = entries.last().map(|e| e.end_offset()).unwrap_or(offset);
                    let s = p.state.lock();
                    let i = s.tail.partition_point(|e| e.base_offset < after);
                    // A checkpoint may have moved entries out of the tail after the store was
                    // read; continue only if the tail picks up exactly where the store ended.
                    let rest = s.tail.get(i..).unwrap_or_default();
                    if rest.first().is_some_and(|e| e.base_offset == after) {
                        // Only the very first batch of a read may exceed `max_bytes`; once the
                        // store supplied one, tail entries are added only while they fit.
                        let room = max_bytes.saturating_sub(used);
                        entries.extend(collect_until(rest, room, entries.is_empty()));
                    }
                }
                entries
            }
        };
        out.batches = self.inner.read_entries(p.stream, &entries)?;
        Ok(out)
    }

    /// The first offset whose record timestamp is at or after `ts_ms`, with that timestamp;
    /// `None` when every record is older.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts_ms: i64,
    ) -> Result<Option<(u64, i64)>> {
        let p = self.partition(topic, partition)?;
        // Every batch before the time index's answer is older than `ts_ms`; without an answer
        // from the store, only the not-yet-checkpointed tail can hold a match. The tail is looked
        // at first: a checkpoint in between moves entries from the tail into the store, where the
        // later store lookup still sees them. Looking at the store first could miss them in both.
        let tail_start = {
            let s = p.state.lock();
            s.tail.first().map_or(s.next_offset, |e| e.base_offset)
        };
        let from_store = self.inner.indexed_time(p.stream, ts_ms)?;
        let (mut at, hw) = {
            let s = p.state.lock();
            let start = from_store.unwrap_or(tail_start);
            (start.max(s.log_start), s.next_offset)
        };
        while at < hw {
            let read = match self.read(topic, partition, at, 1024 * 1024) {
                Ok(r) => r,
                Err(LogError::OffsetOutOfRange { log_start, .. }) if log_start > at => {
                    at = log_start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                break;
            }
            for b in &read.batches {
                let h = BatchHeader::parse(b)?;
                at = at.max(
                    u64::try_from(h.base_offset).unwrap_or(0)
                        + u64::from(h.last_offset_delta.unsigned_abs())
                        + 1,
                );
                if h.max_timestamp < ts_ms {
                    continue;
                }
                for r in batch::decode(b)? {
                    if r.offset >= read.log_start && r.timestamp_ms >= ts_ms {
                        return Ok(Some((r.offset, r.timestamp_ms)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Looks up idempotency keys without writing anything.
    pub fn idempotency_lookup(&self, key: &[u8]) -> Option<IdemHit> {
        let rec = self.inner.idem.lock().map.get(key).map(|e| e.rec)?;
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
        self.inner.checkpoint()?;
        self.inner.enforce_retention()?;
        self.inner.reclaim()
    }

    /// Takes a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Stops accepting work, writes what is queued, takes a final checkpoint and joins the
    /// log's threads. Other clones of this `Log` fail with [`LogError::Closed`] afterwards.
    pub fn close(&self) -> Result<()> {
        shutdown(&self.inner, &self.threads.handles)
    }
}

/// Entries from the front of `entries` while their frames fit in `max_bytes`. With
/// `first_anyway` the first entry is taken even if it alone is larger, so that readers progress.
fn collect_until(entries: &[IndexEntry], max_bytes: usize, first_anyway: bool) -> Vec<IndexEntry> {
    let mut used = 0usize;
    let mut out = Vec::new();
    for e in entries {
        let free = first_anyway && out.is_empty();
        if !free && used + e.frame_len as usize > max_bytes {
            break;
        }
        used += e.frame_len as usize;
        out.push(*e);
    }
    out
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

/// The retention of a topic: its own `retention.ms`, else the log's default; `None` keeps
/// records forever (-1).
fn retention_ms(config: &TopicConfig, default: Option<i64>) -> Option<i64> {
    let v: i64 = match config.get("retention.ms") {
        Some(v) => v.parse().ok()?,
        None => default?,
    };
    (v >= 0).then_some(v)
}

impl Op {
    fn fail(self, e: LogError) {
        match self {
            Op::Append { done, .. } => done(Err(e)),
            Op::Create { done, .. } => done(Err(e)),
            Op::Delete { done, .. } => done(Err(e)),
            Op::LogStart { done, .. } => done(Err(e)),
            Op::Config { done, .. } | Op::AddPartitions { done, .. } => done(Err(e)),
            Op::Sync { done } => done(Err(e)),
        }
    }
}

/// What the writer hands back once a group of operations is durable.
enum Completion {
    Appended {
        part: Arc<Partition>,
        entry: IndexEntry,
        done: AppendDone,
    },
    Append(AppendDone, Result<AppendOutcome>),
    Topic(Done<TopicInfo>, Result<TopicInfo>),
    Unit(Done<()>, Result<()>),
    Offset(Done<u64>, Result<u64>),
    LogStart {
        part: Arc<Partition>,
        offset: u64,
        start_bytes: u64,
        done: Done<u64>,
    },
}

impl Completion {
    /// Tells the caller the outcome of its durable operation.
    fn complete(self) {
        match self {
            Completion::Appended { entry, done, .. } => done(Ok(AppendOutcome::Appended {
                base_offset: entry.base_offset,
                last_offset: entry.end_offset() - 1,
                max_timestamp: entry.max_ts,
            })),
            Completion::Append(done, r) => done(r),
            Completion::Topic(done, r) => done(r),
            Completion::Unit(done, r) => done(r),
            Completion::Offset(done, r) => done(r),
            Completion::LogStart { part, done, .. } => done(Ok(part.state.lock().log_start)),
        }
    }

    fn fail(self, e: &str) {
        let err = || LogError::Poisoned(e.to_owned());
        match self {
            Completion::Appended { done, .. } | Completion::Append(done, _) => done(Err(err())),
            Completion::Topic(done, _) => done(Err(err())),
            Completion::Unit(done, _) => done(Err(err())),
            Completion::Offset(done, _) | Completion::LogStart { done, .. } => done(Err(err())),
        }
    }
}

impl Inner {
    fn hit(&self, rec: &IdemRecord) -> Option<IdemHit> {
        let cat = self.catalog.read();
        let part = cat.streams.get(&rec.stream)?;
        Some(IdemHit {
            topic: part.topic.to_string(),
            partition: part.index,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
        })
    }

    fn writer_loop(
        self: Arc<Self>,
        mut writer: Writer,
        acks: std::sync::mpsc::SyncSender<Vec<Completion>>,
    ) {
        let mut buf: Vec<u8> = Vec::with_capacity(4 * 1024 * 1024);
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        let mut since_ckpt: u64 = 0;
        loop {
            let ops = {
                let mut q = self.queue.lock();
                while q.ops.is_empty() && !q.closed {
                    match self.opts.fsync {
                        FsyncPolicy::Interval(iv) if unsynced => {
                            let left = iv.saturating_sub(last_sync.elapsed());
                            if left.is_zero() || self.queue_cv.wait_for(&mut q, left).timed_out() {
                                break;
                            }
                        }
                        _ => self.queue_cv.wait(&mut q),
                    }
                }
                q.pending_bytes = 0;
                (std::mem::take(&mut q.ops), q.closed)
            };
            let (ops, closed) = ops;
            if ops.is_empty() {
                if unsynced {
                    if let Err(e) = writer.sync() {
                        self.poison(&e.to_string());
                        return;
                    }
                    unsynced = false;
                    last_sync = Instant::now();
                    self.synced.store(writer.position(), Ordering::SeqCst);
                    // With `FsyncPolicy::Interval` most groups end unsynced and cannot roll, so
                    // this idle sync is the writer's chance to close a full segment; without it
                    // segments grow far past `segment_bytes` under steady light load.
                    if let Err(e) = writer.maybe_roll(&self.segments) {
                        self.poison(&e.to_string());
                        return;
                    }
                }
                if closed {
                    return;
                }
                continue;
            }
            buf.clear();
            let start_pos = writer.position();
            let mut completions = Vec::with_capacity(ops.len());
            let mut need_sync = matches!(self.opts.fsync, FsyncPolicy::Always);
            // Catalog changes take effect in memory when staged; a checkpoint must never
            // capture one whose frame is not yet written and published, so such a group holds
            // off checkpoints until it is published.
            let catalog_group = ops.iter().any(|op| {
                matches!(
                    op,
                    Op::Create { .. }
                        | Op::Delete { .. }
                        | Op::Config { .. }
                        | Op::AddPartitions { .. }
                )
            });
            let commit_guard = catalog_group.then(|| self.catalog_commit.write());
            for op in ops {
                if matches!(op, Op::Sync { .. }) {
                    need_sync = true;
                }
                completions.push(self.stage(op, start_pos, &mut buf));
            }
            if let Some(reason) = self.poisoned.lock().clone() {
                for c in completions {
                    c.fail(&reason);
                }
                return;
            }
            if !buf.is_empty()
                && let Err(e) = writer.write(&buf)
            {
                self.poison(&e.to_string());
                for c in completions {
                    c.fail(&e.to_string());
                }
                return;
            }
            since_ckpt += buf.len() as u64;
            let interval_due =
                matches!(self.opts.fsync, FsyncPolicy::Interval(iv) if last_sync.elapsed() >= iv);
            if need_sync || interval_due {
                if let Err(e) = writer.sync() {
                    self.poison(&e.to_string());
                    for c in completions {
                        c.fail(&e.to_string());
                    }
                    return;
                }
                last_sync = Instant::now();
                unsynced = false;
                self.synced.store(writer.position(), Ordering::SeqCst);
            } else if !buf.is_empty() {
                unsynced = true;
            }
            let done = self.publish(completions, writer.segment_start(), writer.position());
            if let Err(std::sync::mpsc::SendError(done)) = acks.send(done) {
                for c in done {
                    c.complete();
                }
            }
            drop(commit_guard);
            if !unsynced {
                match writer.maybe_roll(&self.segments) {
                    Ok(_) => {}
                    Err(e) => {
                        self.poison(&e.to_string());
                        return;
                    }
                }
            }
            if since_ckpt >= self.opts.checkpoint_bytes {
                since_ckpt = 0;
                let (lock, cv) = &self.ckpt_signal;
                *lock.lock() = true;
                cv.notify_all();
            }
        }
    }

    fn poison(&self, reason: &str) {
        tracing::error!(
            reason,
            "journal write failed; the log refuses further writes"
        );
        *self.poisoned.lock() = Some(reason.to_owned());
        // Closing the queue in the same critical section that empties it: an operation enqueued
        // after the writer thread returns would otherwise wait forever for its completion.
        let ops = {
            let mut q = self.queue.lock();
            q.closed = true;
            std::mem::take(&mut q.ops)
        };
        for op in ops {
            op.fail(LogError::Poisoned(reason.to_owned()));
        }
    }

    /// Turns one operation into journal bytes in `buf` and the completion to run once the
    /// bytes are durable. Catalog changes take effect here so that later operations in the same
    /// group see them.
    fn stage(&self, op: Op, start_pos: u64, buf: &mut Vec<u8>) -> Completion {
        match op {
            Op::Append {
                topic,
                partition,
                mut batch,
                header,
                keys,
                done,
            } => {
                let part = {
                    let cat = self.catalog.read();
                    match cat.topics.get(&topic) {
                        None => {
                            return Completion::Append(done, Err(LogError::UnknownTopic(topic)));
                        }
                        Some(t) => match t.partitions.get(partition as usize) {
                            None => {
                                return Completion::Append(
                                    done,
                                    Err(LogError::UnknownPartition { topic, partition }),
                                );
                            }
                            Some(p) => Arc::clone(p),
                        },
                    }
                };
                let now = now_ms();
                if !keys.is_empty() {
                    let idem = self.idem.lock();
                    let hits: Vec<Option<IdemRecord>> = keys
                        .iter()
                        .map(|k| idem.map.get(&k.key).map(|e| e.rec))
                        .collect();
                    drop(idem);
                    if hits.iter().any(Option::is_some) {
                        let hits = hits
                            .iter()
                            .map(|h| h.as_ref().and_then(|r| self.hit(r)))
                            .collect();
                        return Completion::Append(done, Ok(AppendOutcome::Duplicate { hits }));
                    }
                }
                let count = u64::from(header.last_offset_delta.unsigned_abs()) + 1;
                let idempotent = header.producer_id >= 0 && header.base_sequence >= 0;
                let records = u32::try_from(header.record_count).unwrap_or(0);
                let (base, cum) = {
                    let mut s = part.state.lock();
                    if idempotent {
                        let verdict = s.producers.check(
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            records,
                        );
                        let refused = match verdict {
                            Verdict::Accept => None,
                            Verdict::Duplicate { base_offset } => {
                                Some(Ok(AppendOutcome::DuplicateBatch {
                                    base_offset,
                                    last_offset: base_offset + count - 1,
                                }))
                            }
                            Verdict::OutOfOrder { expected, got } => {
                                Some(Err(LogError::OutOfOrderSequence { expected, got }))
                            }
                            Verdict::StaleEpoch { current, got } => {
                                Some(Err(LogError::InvalidProducerEpoch { current, got }))
                            }
                            Verdict::UnknownProducer => {
                                Some(Err(LogError::UnknownProducerId(header.producer_id)))
                            }
                        };
                        if let Some(r) = refused {
                            return Completion::Append(done, r);
                        }
                    }
                    let base = s.pending_next;
                    s.pending_next += count;
                    if idempotent {
                        s.producers.record(
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            records,
                            base,
                            now,
                        );
                    }
                    (base, s.pending_total)
                };
                batch::set_base_offset(&mut batch, base);
                let idem_bytes = frame::encode_idem(&keys);
                let position = start_pos + buf.len() as u64;
                frame::encode(
                    buf,
                    Kind::Batch,
                    keys.len() as u16,
                    part.stream,
                    base,
                    &[&idem_bytes, &batch],
                );
                let frame_len = (frame::HEADER_LEN + idem_bytes.len() + batch.len()) as u32;
                let cum_bytes = cum + u64::from(frame_len);
                part.state.lock().pending_total = cum_bytes;
                if !keys.is_empty() {
                    let mut idem = self.idem.lock();
                    for k in keys {
                        let rec = IdemRecord {
                            stream: part.stream,
                            offset: base + u64::from(k.record_index),
                            timestamp_ms: header.max_timestamp,
                            created_ms: now,
                        };
                        idem.insert(k.key, rec, position, self.opts.idempotency_max_keys);
                    }
                }
                let entry = IndexEntry {
                    base_offset: base,
                    last_delta: header.last_offset_delta.unsigned_abs(),
                    frame_len,
                    position,
                    max_ts: header.max_timestamp,
                    cum_bytes,
                };
                Completion::Appended { part, entry, done }
            }
            Op::Create {
                name,
                partitions,
                config,
                done,
            } => {
                let mut cat = self.catalog.write();
                if cat.topics.contains_key(&name) {
                    return Completion::Topic(done, Err(LogError::TopicExists(name)));
                }
                let first = cat.next_stream.max(1);
                cat.next_stream = first + u64::from(partitions);
                let rec = TopicRecord {
                    name: name.clone(),
                    streams: (first..first + u64::from(partitions)).collect(),
                    config,
                    created_ms: now_ms(),
                };
                frame::encode(buf, Kind::CreateTopic, 0, 0, 0, &[&store::to_json(&rec)]);
                let topic = install_topic(&mut cat, &rec, |_| PartRecord::default());
                drop(cat);
                self.dirty_topics.lock().insert(name);
                Completion::Topic(done, Ok(topic.info()))
            }
            Op::Delete { name, done } => {
                let mut cat = self.catalog.write();
                let Some(topic) = cat.topics.remove(&name) else {
                    return Completion::Unit(done, Err(LogError::UnknownTopic(name)));
                };
                let rec = topic.record();
                for p in &topic.partitions {
                    cat.streams.remove(&p.stream);
                }
                drop(cat);
                frame::encode(buf, Kind::DeleteTopic, 0, 0, 0, &[&store::to_json(&rec)]);
                self.dirty_topics.lock().insert(name);
                self.deleted_streams.lock().extend(rec.streams);
                Completion::Unit(done, Ok(()))
            }
            Op::Config { name, config, done } => {
                let cat = self.catalog.read();
                let Some(topic) = cat.topics.get(&name).cloned() else {
                    return Completion::Topic(done, Err(LogError::UnknownTopic(name)));
                };
                drop(cat);
                *topic.config.write() = config;
                frame::encode(
                    buf,
                    Kind::TopicConfig,
                    0,
                    0,
                    0,
                    &[&store::to_json(&topic.record())],
                );
                self.dirty_topics.lock().insert(name);
                Completion::Topic(done, Ok(topic.info()))
            }
            Op::AddPartitions { name, total, done } => {
                let mut cat = self.catalog.write();
                let Some(topic) = cat.topics.get(&name).cloned() else {
                    return Completion::Topic(done, Err(LogError::UnknownTopic(name)));
                };
                let current = topic.partitions.len() as u32;
                if total <= current {
                    return Completion::Topic(
                        done,
                        Err(LogError::InvalidConfig(format!(
                            "topic {name} has {current} partitions; the count can only grow"
                        ))),
                    );
                }
                let first = cat.next_stream.max(1);
                cat.next_stream = first + u64::from(total - current);
                let mut rec = topic.record();
                rec.streams
                    .extend(first..first + u64::from(total - current));
                frame::encode(buf, Kind::AddPartitions, 0, 0, 0, &[&store::to_json(&rec)]);
                let grown = extend_topic(&mut cat, &topic, &rec);
                drop(cat);
                self.dirty_topics.lock().insert(name);
                Completion::Topic(done, Ok(grown.info()))
            }
            Op::LogStart {
                topic,
                partition,
                offset,
                done,
            } => {
                let part = {
                    let cat = self.catalog.read();
                    let Some(t) = cat.topics.get(&topic) else {
                        return Completion::Offset(done, Err(LogError::UnknownTopic(topic)));
                    };
                    match t.partitions.get(partition as usize) {
                        Some(p) => Arc::clone(p),
                        None => {
                            return Completion::Offset(
                                done,
                                Err(LogError::UnknownPartition { topic, partition }),
                            );
                        }
                    }
                };
                // The high watermark is what readers see, not `pending_next`: batches staged in
                // this same group are not acknowledged yet, and neither the tail nor the store
                // can say where they start, so their bytes could not be accounted.
                let (hw, current) = {
                    let s = part.state.lock();
                    (s.next_offset, s.log_start)
                };
                if offset > hw {
                    return Completion::Offset(
                        done,
                        Err(LogError::OffsetOutOfRange {
                            topic,
                            partition,
                            offset,
                            log_start: current,
                            high_watermark: hw,
                        }),
                    );
                }
                if offset <= current {
                    return Completion::Offset(done, Ok(current));
                }
                let start_bytes = match self.bytes_before(&part, offset) {
                    Ok(b) => b,
                    Err(e) => return Completion::Offset(done, Err(e)),
                };
                frame::encode(buf, Kind::LogStart, 0, part.stream, offset, &[]);
                // Applied in `publish`, once the frame is durable: applied here, a checkpoint or
                // a reclamation could act on a log start whose frame a crash then loses.
                Completion::LogStart {
                    part,
                    offset,
                    start_bytes,
                    done,
                }
            }
            Op::Sync { done } => Completion::Unit(done, Ok(())),
        }
    }

    /// Cumulative bytes of the partition before the batch holding `offset`, which must be at or
    /// below the high watermark.
    fn bytes_before(&self, part: &Partition, offset: u64) -> Result<u64> {
        let from_tail = {
            let s = part.state.lock();
            if offset >= s.next_offset {
                return Ok(s.total_bytes);
            }
            // The tail answers only if it holds the batch: entries before it are in the store,
            // and "the first tail entry ending past `offset`" is then a later batch.
            if s.tail.first().is_some_and(|e| e.base_offset <= offset) {
                let i = s.tail.partition_point(|e| e.end_offset() <= offset);
                s.tail.get(i).map(|e| e.cum_bytes - u64::from(e.frame_len))
            } else {
                None
            }
        };
        if let Some(b) = from_tail {
            return Ok(b);
        }
        Ok(self
            .indexed_from(part.stream, offset, 1)?
            .first()
            .map(|e| e.cum_bytes - u64::from(e.frame_len))
            .unwrap_or(0))
    }

    /// Applies a written group to the in-memory state, marks it visible up to `end` and only
    /// then runs the completions: whoever is told an operation is done may take a checkpoint
    /// right away, and that checkpoint must include the operation.
    /// Makes a durable group visible to readers and returns its completions to run.
    fn publish(&self, completions: Vec<Completion>, segment: u64, end: u64) -> Vec<Completion> {
        let mut touched: Vec<u64> = Vec::new();
        {
            let mut stats = self.seg_stats.lock();
            for c in &completions {
                match c {
                    Completion::Appended { part, entry, .. } => {
                        {
                            let mut s = part.state.lock();
                            s.tail.push(*entry);
                            s.next_offset = s.next_offset.max(entry.end_offset());
                            s.max_ts = raise_max_ts(s.max_ts, s.total_bytes, entry.max_ts);
                            s.total_bytes = s.total_bytes.max(entry.cum_bytes);
                        }
                        touched.push(part.stream);
                        let seg = stats.entry(segment).or_default();
                        let end = seg.entry(part.stream).or_default();
                        *end = (*end).max(entry.end_offset());
                    }
                    Completion::LogStart {
                        part,
                        offset,
                        start_bytes,
                        ..
                    } => {
                        let mut s = part.state.lock();
                        if *offset > s.log_start {
                            s.log_start = *offset;
                            s.start_bytes = *start_bytes;
                            touched.push(part.stream);
                        }
                    }
                    _ => {}
                }
            }
        }
        if !touched.is_empty() {
            if completions
                .iter()
                .any(|c| matches!(c, Completion::Appended { .. }))
            {
                self.dirty_segs.lock().insert(segment);
            }
            self.dirty_streams.lock().extend(touched);
        }
        self.visible.store(end, Ordering::SeqCst);
        completions
    }

    /// Index entries from the checkpoint store, starting with the batch that holds `offset`.
    fn indexed_from(&self, stream: u64, offset: u64, max_bytes: usize) -> Result<Vec<IndexEntry>> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(BATCHES)?;
        let mut start = offset;
        if let Some(row) = t.range((stream, 0)..=(stream, offset))?.next_back() {
            let (k, v) = row?;
            let e = IndexEntry::decode_value(k.value().1, v.value())?;
            if e.end_offset() > offset {
                start = e.base_offset;
            }
        }
        let mut out = Vec::new();
        let mut used = 0usize;
        for row in t.range((stream, start)..=(stream, u64::MAX))? {
            let (k, v) = row?;
            let e = IndexEntry::decode_value(k.value().1, v.value())?;
            if !out.is_empty() && used + e.frame_len as usize > max_bytes {
                break;
            }
            used += e.frame_len as usize;
            out.push(e);
        }
        Ok(out)
    }

    /// The base offset of the first checkpointed batch whose timestamp raised the partition's
    /// running maximum to at least `ts`.
    ///
    /// Only the time row is consulted, not the batch row it names: reclamation deletes batch rows
    /// before the log start but keeps the last such time row on purpose, and requiring the batch
    /// row made every lookup answered by that row report "no checkpointed match", so callers
    /// skipped all checkpointed data. Callers clamp the answer to the log start.
    fn indexed_time(&self, stream: u64, ts: i64) -> Result<Option<u64>> {
        let rtx = self.db.begin_read()?;
        let times = rtx.open_table(TIMES)?;
        let Some(row) = times.range((stream, ts)..=(stream, i64::MAX))?.next() else {
            return Ok(None);
        };
        Ok(Some(row?.1.value()))
    }

    /// Reads the frames behind index entries, verifying each checksum, and returns the batch
    /// bytes. Entries adjacent in the journal are read with one call.
    fn read_entries(&self, stream: u64, entries: &[IndexEntry]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut i = 0;
        while let Some(first) = entries.get(i) {
            let mut j = i + 1;
            let mut end = first.position + u64::from(first.frame_len);
            while let Some(next) = entries.get(j) {
                if next.position != end || end - first.position > 8 * 1024 * 1024 {
                    break;
                }
                end += u64::from(next.frame_len);
                j += 1;
            }
            let len = usize::try_from(end - first.position).unwrap_or(usize::MAX);
            let data = Bytes::from(self.segments.read_at(
                &self.journal_dir,
                first.position,
                len,
            )?);
            let mut at = 0usize;
            for e in entries.get(i..j).unwrap_or_default() {
                let slice = data.get(at..at + e.frame_len as usize).unwrap_or_default();
                let header = match frame::decode(slice) {
                    // The frame must be the one the index names, not merely an intact one.
                    frame::Decoded::Frame(h)
                        if h.kind == Kind::Batch
                            && h.stream == stream
                            && h.value == e.base_offset
                            && h.frame_len() == e.frame_len as usize =>
                    {
                        h
                    }
                    other => {
                        return Err(LogError::Corrupt {
                            segment: format!("{:020}", e.position),
                            position: e.position,
                            detail: format!(
                                "expected batch at offset {}: {other:?}",
                                e.base_offset
                            ),
                        });
                    }
                };
                let body_start = at + frame::HEADER_LEN;
                let body = frame::body(slice, &header);
                let batch = frame::batch_bytes(body, header.idem_count).unwrap_or_default();
                let skip = body.len() - batch.len();
                out.push(data.slice(body_start + skip..body_start + body.len()));
                at += e.frame_len as usize;
            }
            i = j;
        }
        Ok(out)
    }

    fn maintenance_loop(self: Arc<Self>) {
        let mut last_retention = Instant::now();
        loop {
            {
                let (lock, cv) = &self.ckpt_signal;
                let mut flag = lock.lock();
                if !*flag {
                    cv.wait_for(&mut flag, self.opts.checkpoint_interval);
                }
                *flag = false;
            }
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if self.poisoned.lock().is_some() {
                continue;
            }
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "checkpoint failed; will retry");
                continue;
            }
            if last_retention.elapsed() >= self.opts.retention_check_interval {
                last_retention = Instant::now();
                if let Err(e) = self.enforce_retention() {
                    tracing::warn!(error = %e, "retention pass failed");
                }
                if let Err(e) = self.reclaim() {
                    tracing::warn!(error = %e, "segment reclamation failed");
                }
            }
        }
    }

    /// Moves index entries for everything durable into the checkpoint store, so that recovery
    /// only rescans the journal written after it.
    fn checkpoint(&self) -> Result<()> {
        let _one_at_a_time = self.ckpt_lock.lock();
        // Held for the whole checkpoint: the catalog snapshot then matches `pos` exactly.
        let _catalog = self.catalog_commit.read();
        let pos = self
            .synced
            .load(Ordering::SeqCst)
            .min(self.visible.load(Ordering::SeqCst));
        if pos <= self.checkpointed.load(Ordering::SeqCst)
            && self.dirty_topics.lock().is_empty()
            && self.dirty_streams.lock().is_empty()
        {
            return Ok(());
        }
        let streams: Vec<u64> = self.dirty_streams.lock().drain().collect();
        let topics: Vec<String> = self.dirty_topics.lock().drain().collect();
        let deleted: Vec<u64> = std::mem::take(&mut *self.deleted_streams.lock());
        let segs: Vec<u64> = self.dirty_segs.lock().drain().collect();
        let cutoff = now_ms() - self.opts.idempotency_window.as_millis() as i64;
        let (fresh_keys, expired_keys) = {
            let mut idem = self.idem.lock();
            idem.expire(cutoff);
            (
                std::mem::take(&mut idem.fresh),
                std::mem::take(&mut idem.expired),
            )
        };
        let mut moved: Vec<(Arc<Partition>, u64)> = Vec::new();
        let mut still_dirty: Vec<u64> = Vec::new();
        let mut fresh_later: Vec<Vec<u8>> = Vec::new();

        let wtx = self.db.begin_write()?;
        {
            let mut batches = wtx.open_table(BATCHES)?;
            let mut times = wtx.open_table(TIMES)?;
            let mut parts = wtx.open_table(PARTS)?;
            let cat = self.catalog.read();
            for stream in &streams {
                let Some(part) = cat.streams.get(stream) else {
                    continue;
                };
                let mut rec = match parts.get(*stream)? {
                    Some(v) => store::from_json::<PartRecord>("partition", v.value())?,
                    None => PartRecord::default(),
                };
                let (entries, log_start, start_bytes, more, producers) = {
                    let s = part.state.lock();
                    let n = s.tail.partition_point(|e| e.position < pos);
                    let entries: Vec<IndexEntry> = s.tail.get(..n).unwrap_or_default().to_vec();
                    // Producer state may already include batches past `pos`; replaying them
                    // later is a no-op for it.
                    (
                        entries,
                        s.log_start,
                        s.start_bytes,
                        n < s.tail.len(),
                        s.producers.snapshot(),
                    )
                };
                rec.producers = producers;
                for e in &entries {
                    batches.insert((*stream, e.base_offset), &e.encode_value()[..])?;
                    // The time index holds only batches that raise the running maximum, so a
                    // range lookup finds the first batch at or after any timestamp.
                    let first = rec.total_bytes == 0;
                    if first || e.max_ts > rec.max_ts {
                        times.insert((*stream, e.max_ts), e.base_offset)?;
                        rec.max_ts = if first {
                            e.max_ts
                        } else {
                            rec.max_ts.max(e.max_ts)
                        };
                    }
                    rec.next_offset = rec.next_offset.max(e.end_offset());
                    rec.total_bytes = rec.total_bytes.max(e.cum_bytes);
                }
                rec.log_start = rec.log_start.max(log_start);
                rec.start_bytes = rec.start_bytes.max(start_bytes);
                parts.insert(*stream, &store::to_json(&rec)[..])?;
                if !entries.is_empty() {
                    moved.push((Arc::clone(part), entries.len() as u64));
                }
                if more {
                    still_dirty.push(*stream);
                }
            }
            let mut topics_t = wtx.open_table(TOPICS)?;
            for name in &topics {
                match cat.topics.get(name) {
                    Some(t) => {
                        let rec = t.record();
                        for s in &rec.streams {
                            if parts.get(*s)?.is_none() {
                                parts.insert(*s, &store::to_json(&PartRecord::default())[..])?;
                            }
                        }
                        topics_t.insert(name.as_str(), &store::to_json(&rec)[..])?;
                    }
                    None => {
                        topics_t.remove(name.as_str())?;
                    }
                }
            }
            for s in &deleted {
                parts.remove(*s)?;
                batches.retain_in((*s, 0)..=(*s, u64::MAX), |_, _| false)?;
                times.retain_in((*s, i64::MIN)..=(*s, i64::MAX), |_, _| false)?;
            }
            let mut segs_t = wtx.open_table(SEGS)?;
            {
                let stats = self.seg_stats.lock();
                for seg in &segs {
                    if let Some(m) = stats.get(seg) {
                        segs_t.insert(*seg, &store::encode_seg_stats(m)[..])?;
                    }
                }
            }
            let mut idem_t = wtx.open_table(IDEM)?;
            {
                let idem = self.idem.lock();
                for k in &expired_keys {
                    if !idem.map.contains_key(k) {
                        idem_t.remove(k.as_slice())?;
                    }
                }
                for k in fresh_keys {
                    if let Some(e) = idem.map.get(&k) {
                        if e.position < pos {
                            idem_t.insert(k.as_slice(), &store::to_json(&e.rec)[..])?;
                        } else {
                            fresh_later.push(k);
                        }
                    }
                }
            }
            let next_stream = cat.next_stream;
            drop(cat);
            let mut meta = wtx.open_table(META)?;
            meta.insert(META_CHECKPOINT, &pos.to_le_bytes()[..])?;
            meta.insert(META_NEXT_STREAM, &next_stream.to_le_bytes()[..])?;
        }
        wtx.commit()?;
        self.checkpointed.store(pos, Ordering::SeqCst);
        for (part, n) in moved {
            let mut s = part.state.lock();
            let n = usize::try_from(n).unwrap_or(0).min(s.tail.len());
            s.tail.drain(..n);
            if s.tail.capacity() > 64 && s.tail.len() < s.tail.capacity() / 4 {
                s.tail.shrink_to_fit();
            }
        }
        self.dirty_streams.lock().extend(still_dirty);
        self.idem.lock().fresh.extend(fresh_later);
        Ok(())
    }

    /// Advances each partition's log start past records older than its topic's `retention.ms`.
    fn enforce_retention(&self) -> Result<()> {
        let now = now_ms();
        let work: Vec<(String, Vec<Arc<Partition>>, i64)> = {
            let cat = self.catalog.read();
            cat.topics
                .values()
                .filter_map(|t| {
                    let r = retention_ms(&t.config.read(), self.opts.default_retention_ms)?;
                    Some((t.name.clone(), t.partitions.clone(), r))
                })
                .collect()
        };
        for (name, parts, retention) in work {
            let cutoff = now.saturating_sub(retention);
            for part in parts {
                let (log_start, hw) = {
                    let s = part.state.lock();
                    (s.log_start, s.next_offset)
                };
                if log_start >= hw {
                    continue;
                }
                // The first batch whose max timestamp is within retention keeps its offset and
                // everything after it, as Kafka's time-based segment deletion does.
                let keep_from = self.first_batch_at_or_after(&part, cutoff)?.unwrap_or(hw);
                if keep_from > log_start {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let op = Op::LogStart {
                        topic: name.clone(),
                        partition: part.index,
                        offset: keep_from,
                        done: Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    };
                    let mut q = self.queue.lock();
                    if q.closed {
                        return Ok(());
                    }
                    q.ops.push(op);
                    drop(q);
                    self.queue_cv.notify_one();
                    match rx.recv() {
                        Ok(Ok(_)) | Ok(Err(LogError::UnknownTopic(_))) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    fn first_batch_at_or_after(&self, part: &Partition, ts: i64) -> Result<Option<u64>> {
        // The tail before the store, as in `offset_for_timestamp`: a checkpoint in between would
        // otherwise hide the entries it moves, and retention would then drop everything.
        let from_tail = {
            let s = part.state.lock();
            s.tail
                .iter()
                .find(|e| e.max_ts >= ts)
                .map(|e| e.base_offset)
        };
        Ok(self.indexed_time(part.stream, ts)?.or(from_tail))
    }

    /// Deletes journal segments that hold no live batch any more.
    fn reclaim(&self) -> Result<()> {
        let ckpt = self.checkpointed.load(Ordering::SeqCst);
        let starts = self.segments.starts();
        // Only segments that end at or before the checkpoint: their catalog frames are
        // captured in the store and their batches indexed there.
        let closed: Vec<(u64, u64)> = starts
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if *b <= ckpt => Some((*a, *b)),
                _ => None,
            })
            .collect();
        let mut dead: Vec<u64> = Vec::new();
        {
            let cat = self.catalog.read();
            let stats = self.seg_stats.lock();
            for (seg, _) in &closed {
                let live = stats.get(seg).is_some_and(|m| {
                    m.iter().any(|(stream, end)| {
                        cat.streams
                            .get(stream)
                            .is_some_and(|p| *end > p.state.lock().log_start)
                    })
                });
                if !live {
                    dead.push(*seg);
                }
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        let wtx = self.db.begin_write()?;
        {
            let mut segs_t = wtx.open_table(SEGS)?;
            let mut batches = wtx.open_table(BATCHES)?;
            let mut times = wtx.open_table(TIMES)?;
            let cat = self.catalog.read();
            let stats = self.seg_stats.lock();
            for seg in &dead {
                segs_t.remove(*seg)?;
                for stream in stats
                    .get(seg)
                    .map(|m| m.keys().copied().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let log_start = cat.streams.get(&stream).map(|p| p.state.lock().log_start);
                    if let Some(ls) = log_start {
                        // Rows for batches wholly before the log start are unreachable.
                        batches.retain_in((stream, 0)..(stream, ls), |k, v| {
                            IndexEntry::decode_value(k.1, v)
                                .map(|e| e.end_offset() > ls)
                                .unwrap_or(false)
                        })?;
                        let mut stale = Vec::new();
                        for row in times.range((stream, i64::MIN)..=(stream, i64::MAX))? {
                            let (k, v) = row?;
                            if v.value() < ls {
                                stale.push(k.value());
                            }
                        }
                        // Keep the last stale time row: it still answers "first at or after"
                        // for timestamps between it and the next row.
                        stale.pop();
                        for k in stale {
                            times.remove(k)?;
                        }
                    }
                }
            }
        }
        wtx.commit()?;
        {
            let mut stats = self.seg_stats.lock();
            for seg in &dead {
                stats.remove(seg);
            }
        }
        for seg in dead {
            self.segments.remove(seg);
            journal::remove_segment(&self.journal_dir, seg)?;
            tracing::debug!(segment = seg, "reclaimed journal segment");
        }
        Ok(())
    }

    /// Loads the checkpoint and replays the journal after it. Returns the writer positioned at
    /// the end of the last intact frame.
    fn recover(&self) -> Result<Writer> {
        let started = Instant::now();
        let ckpt = store::read_u64_meta(&self.db, META_CHECKPOINT)?.unwrap_or(0);
        let next_stream = store::read_u64_meta(&self.db, META_NEXT_STREAM)?.unwrap_or(1);
        let mut parts: HashMap<u64, PartRecord> = HashMap::new();
        store::load_all(&self.db, PARTS, |k, v| {
            parts.insert(k, store::from_json("partition", v)?);
            Ok(())
        })?;
        {
            let mut cat = self.catalog.write();
            cat.next_stream = next_stream.max(1);
            store::load_all(&self.db, TOPICS, |_, v| {
                let rec: TopicRecord = store::from_json("topic", v)?;
                install_topic(&mut cat, &rec, |s| {
                    parts.get(&s).cloned().unwrap_or_default()
                });
                Ok(())
            })?;
        }
        {
            let mut stats = self.seg_stats.lock();
            store::load_all(&self.db, SEGS, |k, v| {
                stats.insert(k, store::decode_seg_stats(v));
                Ok(())
            })?;
        }
        {
            let cutoff = now_ms() - self.opts.idempotency_window.as_millis() as i64;
            let mut rows: Vec<(Vec<u8>, IdemRecord)> = Vec::new();
            store::load_all(&self.db, IDEM, |k, v| {
                rows.push((k.to_vec(), store::from_json("idempotency", v)?));
                Ok(())
            })?;
            rows.sort_by_key(|(_, r)| r.created_ms);
            let mut idem = self.idem.lock();
            for (k, r) in rows {
                if r.created_ms >= cutoff {
                    idem.order.push_back((r.created_ms, k.clone()));
                    idem.map.insert(
                        k,
                        IdemEntry {
                            rec: r,
                            position: 0,
                        },
                    );
                } else {
                    idem.expired.push(k);
                }
            }
        }

        let segs = journal::list_segments(&self.journal_dir)?;
        let mut replayed = 0u64;
        let mut end = ckpt;
        let mut writer_seg = segs.iter().copied().rfind(|s| *s <= ckpt).unwrap_or(ckpt);
        let last = segs.last().copied();
        for (i, seg) in segs.iter().copied().enumerate() {
            let next_start = segs.get(i + 1).copied();
            if next_start.is_some_and(|n| n <= ckpt) {
                self.segments.insert(seg, self.open_ro(seg)?);
                continue;
            }
            let from = ckpt.max(seg);
            let valid_end = journal::scan_segment(&self.journal_dir, seg, from, |s| {
                replayed += 1;
                self.replay(seg, s.position, &s.header, s.frame)
            })?;
            end = valid_end;
            writer_seg = seg;
            let file_len = std::fs::metadata(journal::segment_path(&self.journal_dir, seg))
                .map(|m| m.len())
                .unwrap_or(0);
            if Some(seg) != last {
                if seg + file_len != valid_end {
                    return Err(LogError::Corrupt {
                        segment: journal::segment_path(&self.journal_dir, seg)
                            .display()
                            .to_string(),
                        position: valid_end,
                        detail:
                            "an unreadable frame precedes newer segments; refusing to drop data"
                                .into(),
                    });
                }
                self.segments.insert(seg, self.open_ro(seg)?);
            } else if seg + file_len != valid_end {
                tracing::warn!(
                    segment = seg,
                    discarded = seg + file_len - valid_end,
                    "discarding a torn write at the end of the journal"
                );
            }
        }
        let writer = Writer::open(
            &self.journal_dir,
            writer_seg,
            end - writer_seg,
            self.opts.segment_bytes,
            &self.segments,
        )?;
        self.visible.store(end, Ordering::SeqCst);
        self.synced.store(end, Ordering::SeqCst);
        self.checkpointed.store(ckpt, Ordering::SeqCst);
        tracing::info!(
            topics = self.catalog.read().topics.len(),
            replayed_frames = replayed,
            replayed_bytes = end.saturating_sub(ckpt),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log recovered"
        );
        Ok(writer)
    }

    fn open_ro(&self, seg: u64) -> Result<Arc<std::fs::File>> {
        let path = journal::segment_path(&self.journal_dir, seg);
        std::fs::File::open(&path)
            .map(Arc::new)
            .map_err(|e| LogError::io(path.display(), e))
    }

    /// Applies one journal frame found after the checkpoint. Every case is idempotent against a
    /// checkpoint that may already reflect it.
    fn replay(
        &self,
        segment: u64,
        position: u64,
        header: &frame::Header,
        frame_bytes: &[u8],
    ) -> Result<()> {
        let body = frame::body(frame_bytes, header);
        match header.kind {
            Kind::Batch => {
                let part = self.catalog.read().streams.get(&header.stream).cloned();
                let Some(part) = part else { return Ok(()) };
                let (keys, batch_bytes) = frame::split_batch_body(body, header.idem_count)?;
                let bh = BatchHeader::parse(batch_bytes)?;
                let last_delta = bh.last_offset_delta.unsigned_abs();
                {
                    let mut s = part.state.lock();
                    if header.value < s.next_offset {
                        return Ok(());
                    }
                    let cum = s.total_bytes + header.frame_len() as u64;
                    let entry = IndexEntry {
                        base_offset: header.value,
                        last_delta,
                        frame_len: header.frame_len() as u32,
                        position,
                        max_ts: bh.max_timestamp,
                        cum_bytes: cum,
                    };
                    s.tail.push(entry);
                    s.next_offset = entry.end_offset();
                    s.pending_next = s.next_offset;
                    if bh.producer_id >= 0 && bh.base_sequence >= 0 {
                        let records = u32::try_from(bh.record_count).unwrap_or(0);
                        s.producers.record(
                            bh.producer_id,
                            bh.producer_epoch,
                            bh.base_sequence,
                            records,
                            header.value,
                            now_ms(),
                        );
                    }
                    s.max_ts = raise_max_ts(s.max_ts, s.total_bytes, bh.max_timestamp);
                    s.total_bytes = cum;
                    s.pending_total = cum;
                    let seg = &mut *self.seg_stats.lock();
                    let end = seg
                        .entry(segment)
                        .or_default()
                        .entry(header.stream)
                        .or_default();
                    *end = (*end).max(entry.end_offset());
                }
                self.dirty_segs.lock().insert(segment);
                self.dirty_streams.lock().insert(header.stream);
                let cutoff = now_ms() - self.opts.idempotency_window.as_millis() as i64;
                let mut idem = self.idem.lock();
                for k in keys {
                    let rec = IdemRecord {
                        stream: header.stream,
                        offset: header.value + u64::from(k.record_index),
                        timestamp_ms: bh.max_timestamp,
                        created_ms: now_ms(),
                    };
                    if rec.created_ms >= cutoff && !idem.map.contains_key(&k.key) {
                        idem.insert(k.key, rec, position, self.opts.idempotency_max_keys);
                    }
                }
            }
            Kind::CreateTopic => {
                let rec: TopicRecord = store::from_json("create-topic frame", body)?;
                let mut cat = self.catalog.write();
                if let Some(max) = rec.streams.iter().max() {
                    cat.next_stream = cat.next_stream.max(max + 1);
                }
                let exists = cat.topics.get(&rec.name).map(|t| t.record().streams);
                match exists {
                    Some(streams) if streams == rec.streams => {}
                    Some(_) => {}
                    None => {
                        // A stream id already used by a later incarnation means the checkpoint
                        // saw this topic deleted and recreated: nothing to do.
                        if rec.streams.iter().all(|s| !cat.streams.contains_key(s)) {
                            install_topic(&mut cat, &rec, |_| PartRecord::default());
                            self.dirty_topics.lock().insert(rec.name.clone());
                        }
                    }
                }
            }
            Kind::DeleteTopic => {
                let rec: TopicRecord = store::from_json("delete-topic frame", body)?;
                let mut cat = self.catalog.write();
                let matches = cat
                    .topics
                    .get(&rec.name)
                    .is_some_and(|t| t.record().streams == rec.streams);
                if matches {
                    if let Some(t) = cat.topics.remove(&rec.name) {
                        for p in &t.partitions {
                            cat.streams.remove(&p.stream);
                        }
                    }
                    self.dirty_topics.lock().insert(rec.name.clone());
                    self.deleted_streams.lock().extend(rec.streams);
                }
            }
            Kind::TopicConfig => {
                let rec: TopicRecord = store::from_json("topic-config frame", body)?;
                let cat = self.catalog.read();
                if let Some(t) = cat.topics.get(&rec.name)
                    && t.record().streams == rec.streams
                {
                    *t.config.write() = rec.config;
                    self.dirty_topics.lock().insert(rec.name.clone());
                }
            }
            Kind::AddPartitions => {
                let rec: TopicRecord = store::from_json("add-partitions frame", body)?;
                let mut cat = self.catalog.write();
                if let Some(t) = cat.topics.get(&rec.name).cloned() {
                    let have = t.record().streams;
                    if rec.streams.len() > have.len() && rec.streams.starts_with(&have) {
                        extend_topic(&mut cat, &t, &rec);
                        self.dirty_topics.lock().insert(rec.name.clone());
                    }
                }
            }
            Kind::LogStart => {
                let part = self.catalog.read().streams.get(&header.stream).cloned();
                if let Some(part) = part {
                    let current = part.state.lock().log_start;
                    if header.value > current {
                        let bytes = self.bytes_before(&part, header.value)?;
                        let mut s = part.state.lock();
                        s.log_start = header.value;
                        s.start_bytes = bytes;
                        drop(s);
                        self.dirty_streams.lock().insert(header.stream);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Replaces `topic` in the catalog by one with the partitions `rec` lists: the existing ones
/// are kept as they are, the new ones start empty.
fn extend_topic(cat: &mut Catalog, topic: &Arc<Topic>, rec: &TopicRecord) -> Arc<Topic> {
    let mut partitions = topic.partitions.clone();
    for (i, s) in rec.streams.iter().enumerate().skip(partitions.len()) {
        let p = Arc::new(Partition {
            stream: *s,
            topic: Arc::from(rec.name.as_str()),
            index: i as u32,
            state: Mutex::new(PartState {
                next_offset: 0,
                pending_next: 0,
                log_start: 0,
                total_bytes: 0,
                pending_total: 0,
                start_bytes: 0,
                max_ts: 0,
                tail: Vec::new(),
                producers: Producers::default(),
            }),
        });
        cat.next_stream = cat.next_stream.max(s + 1);
        cat.streams.insert(*s, Arc::clone(&p));
        partitions.push(p);
    }
    let grown = Arc::new(Topic {
        name: topic.name.clone(),
        partitions,
        config: RwLock::new(topic.config.read().clone()),
        created_ms: topic.created_ms,
    });
    cat.topics.insert(rec.name.clone(), Arc::clone(&grown));
    grown
}

fn install_topic(
    cat: &mut Catalog,
    rec: &TopicRecord,
    state: impl Fn(u64) -> PartRecord,
) -> Arc<Topic> {
    let name: Arc<str> = Arc::from(rec.name.as_str());
    let partitions: Vec<Arc<Partition>> = rec
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let r = state(*s);
            Arc::new(Partition {
                stream: *s,
                topic: Arc::clone(&name),
                index: i as u32,
                state: Mutex::new(PartState {
                    next_offset: r.next_offset,
                    pending_next: r.next_offset,
                    log_start: r.log_start,
                    total_bytes: r.total_bytes,
                    pending_total: r.total_bytes,
                    start_bytes: r.start_bytes,
                    max_ts: r.max_ts,
                    tail: Vec::new(),
                    producers: Producers::from_snapshot(r.producers),
                }),
            })
        })
        .collect();
    let topic = Arc::new(Topic {
        name: rec.name.clone(),
        partitions: partitions.clone(),
        config: RwLock::new(rec.config.clone()),
        created_ms: rec.created_ms,
    });
    for p in partitions {
        cat.next_stream = cat.next_stream.max(p.stream + 1);
        cat.streams.insert(p.stream, p);
    }
    cat.topics.insert(rec.name.clone(), Arc::clone(&topic));
    topic
}
