//! `herald-log` is Herald's embedded durable log.
//!
//! Every partition of every topic appends to **one** shared, segmented journal. Concurrent
//! appends are group-committed: the writer thread takes everything queued, writes it with one
//! `write` and makes it durable with one `fdatasync`, then acknowledges each append. Each journal
//! frame is self-describing (kind, partition stream, base offset, length, CRC32C), so the
//! per-partition offset and time indexes can always be rebuilt from the journal; they are
//! checkpointed into a redb database so that recovery rescans only the journal written since the
//! last checkpoint. Records are stored as Kafka RecordBatch v2 bytes, so a Kafka `Fetch` can
//! return them without re-encoding.
//!
//! What it is not: it knows nothing of tokio, HTTP, Kafka requests, tenants or envelopes. It is
//! a synchronous library; async callers use the completion callback of [`Log::append`]. It does
//! not replicate: durability is one machine's disk.
//!
//! Files in the data directory:
//! - `journal/<position>.hjl`: journal segments, named by the global position of their first byte;
//! - `index.redb`: catalog, partition states, batch and time indexes, idempotency keys, and the
//!   journal position up to which they are complete.
//! - `space.reserve`: space held back for checkpoints and topic deletions on a full disk
//!   (pre-allocated, size 0; see `log/space.rs`).
//!
//! Every file operation goes through [`fs::Fs`]; [`simfs::SimFs`] simulates power cuts and full
//! disks for tests.

pub mod batch;
mod codec;
mod error;
pub mod frame;
pub mod fs;
mod journal;
mod log;
mod producer;
pub mod simfs;
mod store;

pub use batch::Record;
pub use error::{LogError, Result};
pub use frame::IdemKey;
pub use log::{
    AppendDone, AppendOutcome, FsyncPolicy, IdemHit, Log, LogOptions, PartitionStats, ReadBatches,
    RecoveryStats, TopicConfig, TopicInfo,
};
pub use store::FORMAT_VERSION;
