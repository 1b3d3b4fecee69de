use std::io;

/// Everything that can go wrong in the log. Messages are written for the operator who reads them
/// in a server log or for the client who receives them through a protocol error.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("invalid topic configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "offset {offset} is out of range for {topic}/{partition} (log start {log_start}, high watermark {high_watermark})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start: u64,
        high_watermark: u64,
    },
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: usize, limit: usize },
    #[error(
        "the log is overloaded: {pending} bytes are waiting to be written (limit {limit}); retry shortly"
    )]
    Overloaded { pending: usize, limit: usize },
    #[error(
        "corrupt data in journal segment {segment} at position {position}: {detail}; the file was damaged outside Herald"
    )]
    Corrupt {
        segment: String,
        position: u64,
        detail: String,
    },
    #[error(
        "the log stopped accepting writes after an I/O failure ({0}); restart Herald once the disk is healthy"
    )]
    Poisoned(String),
    /// A write failed for lack of space before anything in it was acknowledged. The journal was
    /// cut back to its last durable position, so the log keeps serving reads and accepts writes
    /// again as soon as space is freed.
    #[error(
        "no space left on the device holding {path}: nothing was written; free disk space or delete topics, and writes resume by themselves"
    )]
    DiskFull { path: String },
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch { current: i16, got: i16 },
    #[error(
        "producer id {0} is unknown to this partition and the batch does not start at sequence 0"
    )]
    UnknownProducerId(i64),
    #[error("the log is shut down")]
    Closed,
    #[error(
        "unsupported data directory format version {found} (this Herald reads version {supported})"
    )]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("index store error: {0}")]
    Index(String),
}

impl LogError {
    pub(crate) fn io(path: impl std::fmt::Display, source: io::Error) -> Self {
        LogError::Io {
            path: path.to_string(),
            source,
        }
    }
}

impl From<redb::Error> for LogError {
    fn from(e: redb::Error) -> Self {
        LogError::Index(e.to_string())
    }
}

macro_rules! redb_err {
    ($($t:ty),*) => {$(
        impl From<$t> for LogError {
            fn from(e: $t) -> Self {
                LogError::Index(e.to_string())
            }
        }
    )*};
}
redb_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = LogError> = std::result::Result<T, E>;
