//! The checkpoint store: catalog, partition states and the batch/time indexes, kept in redb.
//!
//! Record bytes never live here: each batch costs one small index row. Rows are written only by
//! checkpoints (and topic deletion clean-up), never on the append path, so redb's own write cost
//! is paid once per checkpoint for thousands of batches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::fs::Fs;

pub const FORMAT_VERSION: u32 = 1;

pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
pub const PARTS: TableDefinition<u64, &[u8]> = TableDefinition::new("partitions");
pub const BATCHES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("batches");
pub const TIMES: TableDefinition<(u64, i64), u64> = TableDefinition::new("times");
pub const SEGS: TableDefinition<u64, &[u8]> = TableDefinition::new("segments");
/// Idempotency keys by `(created_ms, digest of the key)`: ordered by age, so that recovery loads
/// only the keys inside the window and a checkpoint drops every older row with one range
/// deletion; fixed-width, so a row costs 48 bytes whatever the key's length.
pub const IDEM: TableDefinition<(i64, u128), &[u8]> = TableDefinition::new("idempotency_keys");
/// The first layout (key → JSON row), migrated into [`IDEM`] when a data directory is opened.
const IDEM_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency");

pub const META_VERSION: &str = "format_version";
pub const META_CHECKPOINT: &str = "checkpoint_position";
pub const META_NEXT_STREAM: &str = "next_stream";

/// The index database, reopened after a failed write. redb refuses every transaction after an
/// I/O error ("Previous I/O error occurred") until it is reopened; a checkpoint that failed for
/// lack of space must not leave it so for the rest of the process's life.
pub struct Db {
    db: RwLock<Option<redb::Database>>,
    fs: Arc<dyn Fs>,
    path: PathBuf,
}

impl Db {
    pub fn open(fs: Arc<dyn Fs>, path: PathBuf) -> Result<Db> {
        let db = fs.open_index(&path)?;
        Ok(Db {
            db: RwLock::new(Some(db)),
            fs,
            path,
        })
    }

    fn closed(&self) -> LogError {
        LogError::Index(format!(
            "the index {} could not be reopened after an I/O error; it is retried at the next checkpoint",
            self.path.display()
        ))
    }

    pub fn begin_read(&self) -> Result<redb::ReadTransaction> {
        let g = self.db.read();
        let db = g.as_ref().ok_or_else(|| self.closed())?;
        Ok(db.begin_read()?)
    }

    pub fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let g = self.db.read();
        let db = g.as_ref().ok_or_else(|| self.closed())?;
        Ok(db.begin_write()?)
    }

    /// Closes and reopens the database; redb repairs it on opening if the failed commit left it
    /// inconsistent. Callers must not hold a write transaction.
    pub fn reopen(&self) -> Result<()> {
        let mut g = self.db.write();
        // The old handle must be gone first: it holds the file's lock.
        drop(g.take());
        *g = Some(self.fs.open_index(&self.path)?);
        Ok(())
    }
}

/// Where one batch lives and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: u64,
    pub last_delta: u32,
    pub frame_len: u32,
    pub position: u64,
    pub max_ts: i64,
    /// Bytes of this partition from its first batch ever through this one; sizes are
    /// differences of two of these, so moving the log start never needs a scan.
    pub cum_bytes: u64,
}

impl IndexEntry {
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_delta) + 1
    }

    pub fn encode_value(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[0..8].copy_from_slice(&self.position.to_le_bytes());
        out[8..12].copy_from_slice(&self.frame_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.last_delta.to_le_bytes());
        out[16..24].copy_from_slice(&self.max_ts.to_le_bytes());
        out[24..32].copy_from_slice(&self.cum_bytes.to_le_bytes());
        out
    }

    pub fn decode_value(base_offset: u64, v: &[u8]) -> Result<IndexEntry> {
        let get8 = |at: usize| -> Result<[u8; 8]> {
            v.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| LogError::Index("short batch index row".into()))
        };
        let get4 = |at: usize| -> Result<[u8; 4]> {
            v.get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| LogError::Index("short batch index row".into()))
        };
        Ok(IndexEntry {
            base_offset,
            position: u64::from_le_bytes(get8(0)?),
            frame_len: u32::from_le_bytes(get4(8)?),
            last_delta: u32::from_le_bytes(get4(12)?),
            max_ts: i64::from_le_bytes(get8(16)?),
            cum_bytes: u64::from_le_bytes(get8(24)?),
        })
    }
}

/// A partition's state as of the last checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartRecord {
    pub next_offset: u64,
    pub log_start: u64,
    pub total_bytes: u64,
    pub start_bytes: u64,
    pub max_ts: i64,
    /// Idempotent-producer state as of the checkpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<crate::producer::ProducerState>,
}

/// A topic as stored in the catalog and in `CreateTopic` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub streams: Vec<u64>,
    pub config: BTreeMap<String, String>,
    pub created_ms: i64,
}

/// An idempotency key as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub stream: u64,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub created_ms: i64,
}

/// What the log remembers of an idempotency key: the first 128 bits of its SHA-256. Keys come
/// from clients, so the digest must resist crafted collisions; finding two keys with the same
/// digest takes about 2^64 work, and a client can only ever collide with keys of its own scope
/// (the broker prefixes keys with the tenant).
pub fn idem_digest(key: &[u8]) -> u128 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key);
    let mut first = [0u8; 16];
    first.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
    u128::from_le_bytes(first)
}

impl IdemRecord {
    /// The row value; `created_ms` is part of the row's key.
    pub fn encode_value(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&self.stream.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out
    }

    pub fn decode_value(created_ms: i64, v: &[u8]) -> Result<IdemRecord> {
        let get8 = |at: usize| -> Result<[u8; 8]> {
            v.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| LogError::Index("short idempotency row".into()))
        };
        Ok(IdemRecord {
            stream: u64::from_le_bytes(get8(0)?),
            offset: u64::from_le_bytes(get8(8)?),
            timestamp_ms: i64::from_le_bytes(get8(16)?),
            created_ms,
        })
    }
}

pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn from_json<T: for<'a> Deserialize<'a>>(what: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| LogError::Index(format!("unreadable {what} row: {e}")))
}

pub fn read_u64_meta(db: &Db, key: &str) -> Result<Option<u64>> {
    let rtx = db.begin_read()?;
    let t = match rtx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v = t.get(key)?;
    Ok(v.and_then(|g| g.value().try_into().ok().map(u64::from_le_bytes)))
}

/// Creates every table so that readers never meet a missing one.
pub fn init(db: &Db) -> Result<()> {
    let wtx = db.begin_write()?;
    {
        let mut meta = wtx.open_table(META)?;
        let version = meta.get(META_VERSION)?.map(|g| g.value().to_vec());
        match version {
            None => {
                meta.insert(META_VERSION, &u64::from(FORMAT_VERSION).to_le_bytes()[..])?;
            }
            Some(v) => {
                let found = v
                    .try_into()
                    .ok()
                    .map(u64::from_le_bytes)
                    .unwrap_or(u64::MAX);
                if found != u64::from(FORMAT_VERSION) {
                    return Err(LogError::UnsupportedFormat {
                        found: u32::try_from(found).unwrap_or(u32::MAX),
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        wtx.open_table(TOPICS)?;
        wtx.open_table(PARTS)?;
        wtx.open_table(BATCHES)?;
        wtx.open_table(TIMES)?;
        wtx.open_table(SEGS)?;
        let mut keys = wtx.open_table(IDEM)?;
        // Data directories written before keys were ordered by age hold them in the first
        // layout; move them over once.
        let v1 = wtx.list_tables()?.any(|t| t.name() == IDEM_V1.name());
        if v1 {
            let old = wtx.open_table(IDEM_V1)?;
            for row in old.iter()? {
                let (k, v) = row?;
                let rec: IdemRecord = from_json("idempotency", v.value())?;
                keys.insert(
                    (rec.created_ms, idem_digest(k.value())),
                    &rec.encode_value()[..],
                )?;
            }
        }
        drop(keys);
        if v1 {
            wtx.delete_table(IDEM_V1)?;
        }
    }
    wtx.commit()?;
    Ok(())
}

/// Segment statistics: the end offset (exclusive) of each stream's last batch in the segment.
pub fn encode_seg_stats(stats: &BTreeMap<u64, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(stats.len() * 16);
    for (stream, end) in stats {
        out.extend_from_slice(&stream.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    out
}

pub fn decode_seg_stats(v: &[u8]) -> BTreeMap<u64, u64> {
    v.chunks_exact(16)
        .filter_map(|c| {
            let s = u64::from_le_bytes(c.get(0..8)?.try_into().ok()?);
            let e = u64::from_le_bytes(c.get(8..16)?.try_into().ok()?);
            Some((s, e))
        })
        .collect()
}

pub fn load_all<K, V, F>(db: &Db, table: TableDefinition<K, V>, mut f: F) -> Result<()>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    F: FnMut(K::SelfType<'_>, V::SelfType<'_>) -> Result<()>,
{
    let rtx = db.begin_read()?;
    let t = rtx.open_table(table)?;
    for row in t.iter()? {
        let (k, v) = row?;
        f(k.value(), v.value())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn idempotency_rows_of_the_first_layout_are_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let raw = redb::Database::create(&path).unwrap();
        let rec = IdemRecord {
            stream: 3,
            offset: 7,
            timestamp_ms: 11,
            created_ms: 13,
        };
        let wtx = raw.begin_write().unwrap();
        {
            let mut old = wtx.open_table(IDEM_V1).unwrap();
            old.insert(&b"event-1"[..], &to_json(&rec)[..]).unwrap();
        }
        wtx.commit().unwrap();
        drop(raw);
        let db = Db::open(Arc::new(crate::fs::StdFs), path).unwrap();
        init(&db).unwrap();
        init(&db).unwrap();
        let rtx = db.begin_read().unwrap();
        assert!(
            rtx.list_tables()
                .unwrap()
                .all(|t| t.name() != IDEM_V1.name())
        );
        let t = rtx.open_table(IDEM).unwrap();
        let rows: Vec<_> = t
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let (created, key) = k.value();
                (key, IdemRecord::decode_value(created, v.value()).unwrap())
            })
            .collect();
        assert_eq!(rows, vec![(idem_digest(b"event-1"), rec)]);
    }
}
