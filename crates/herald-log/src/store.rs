//! The checkpoint store: catalog, partition states and the batch/time indexes, kept in redb.
//!
//! Record bytes never live here. Batch index entries are packed, many to a row and delta-encoded
//! (a few bytes each), so that one-record batches do not cost a row each; the time index has at
//! most one row per pack. Rows are written only by checkpoints (and topic deletion clean-up),
//! never on the append path, so redb's own write cost is paid once per checkpoint for thousands
//! of batches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::fs::Fs;

/// Version 2 packs the batch index ([`PACKS`]) and points the time index at packs ([`TIMES`]);
/// version 1 held one row per batch and is migrated when opened.
pub const FORMAT_VERSION: u32 = 2;

pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
pub const PARTS: TableDefinition<u64, &[u8]> = TableDefinition::new("partitions");
/// The batch index: `(stream, base offset of the pack's first batch)` → a pack of up to
/// [`PACK_MAX_ENTRIES`] consecutive batches of that stream (see [`encode_pack`]).
pub const PACKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("batch_packs");
/// The time index: `(stream, running maximum timestamp at the end of a pack)` → that pack's key,
/// only for packs that raise the running maximum. The first batch at or after a timestamp `t` is
/// in the pack of the first row at or after `t`.
pub const TIMES: TableDefinition<(u64, i64), u64> = TableDefinition::new("batch_times");
/// Version 1: one row per batch, `(stream, base offset)` → [`IndexEntry::encode_value`].
const BATCHES_V1: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("batches");
/// Version 1: `(stream, max timestamp)` → base offset of the batch that raised the maximum.
const TIMES_V1: TableDefinition<(u64, i64), u64> = TableDefinition::new("times");
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

/// The most batches one pack holds. A lookup decodes one pack (plus the following ones while it
/// collects), and a checkpoint rewrites the last pack of each partition it touches; 128 keeps
/// both to about a kilobyte while the row's own cost (key and redb's slot) is spread over 128
/// batches. One row per batch was the first layout: 48 bytes of payload plus redb's overhead,
/// about a quarter of the journal for one-record batches.
pub const PACK_MAX_ENTRIES: usize = 128;
/// ...and the most bytes: several packs then share a 4 KiB redb page.
pub const PACK_MAX_BYTES: usize = 1024;
/// The first entry of a pack, stored in full.
const PACK_HEAD_LEN: usize = 32;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7).max(1)
}

fn get_varint(v: &[u8], at: &mut usize) -> Result<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *v
            .get(*at)
            .ok_or_else(|| LogError::Index("short batch index pack".into()))?;
        *at += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(LogError::Index(
        "overlong number in a batch index pack".into(),
    ))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// How `next` is stored after `prev` in a pack: offset gap, last offset delta, frame length,
/// journal gap, timestamp change and byte-count gap. `None` when `next` does not follow `prev`
/// (it never happens for one partition's ascending entries; such an entry starts a new pack).
fn deltas(prev: &IndexEntry, next: &IndexEntry) -> Option<[u64; 6]> {
    Some([
        next.base_offset.checked_sub(prev.end_offset())?,
        u64::from(next.last_delta),
        u64::from(next.frame_len),
        next.position
            .checked_sub(prev.position.checked_add(u64::from(prev.frame_len))?)?,
        zigzag(next.max_ts.wrapping_sub(prev.max_ts)),
        next.cum_bytes
            .checked_sub(prev.cum_bytes.checked_add(u64::from(next.frame_len))?)?,
    ])
}

/// The bytes `next` takes after `prev` in a pack, or `None` if it cannot follow it.
pub fn packed_len(prev: &IndexEntry, next: &IndexEntry) -> Option<usize> {
    deltas(prev, next).map(|d| d.iter().map(|v| varint_len(*v)).sum())
}

/// Encodes consecutive entries of one stream: the first in full (as a version 1 row), each later
/// one as varint deltas from the one before. In one partition offsets are contiguous, frames
/// close together and timestamps near each other, so an entry takes about 7 bytes instead of 48.
/// Entries that cannot follow each other (see [`packed_len`]) cannot share a pack: an error.
pub fn encode_pack(entries: &[IndexEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(PACK_HEAD_LEN + entries.len() * 8);
    let mut prev: Option<&IndexEntry> = None;
    for e in entries {
        match prev {
            None => out.extend_from_slice(&e.encode_value()),
            Some(p) => deltas(p, e)
                .ok_or_else(|| {
                    LogError::Index(format!(
                        "batch at offset {} does not follow the one at offset {}",
                        e.base_offset, p.base_offset
                    ))
                })?
                .iter()
                .for_each(|v| put_varint(&mut out, *v)),
        }
        prev = Some(e);
    }
    Ok(out)
}

/// Decodes a pack whose first batch starts at `base_offset` (the row's key).
pub fn decode_pack(base_offset: u64, v: &[u8]) -> Result<Vec<IndexEntry>> {
    let head = v
        .get(..PACK_HEAD_LEN)
        .ok_or_else(|| LogError::Index("short batch index pack".into()))?;
    let mut prev = IndexEntry::decode_value(base_offset, head)?;
    let mut out = Vec::with_capacity(16);
    out.push(prev);
    let mut at = PACK_HEAD_LEN;
    let bad = || LogError::Index("batch index pack out of range".into());
    while at < v.len() {
        let mut d = [0u64; 6];
        for x in &mut d {
            *x = get_varint(v, &mut at)?;
        }
        let [off_gap, last_delta, frame_len, pos_gap, ts, cum_gap] = d;
        let frame_len = u32::try_from(frame_len).map_err(|_| bad())?;
        let e = IndexEntry {
            base_offset: prev.end_offset().checked_add(off_gap).ok_or_else(bad)?,
            last_delta: u32::try_from(last_delta).map_err(|_| bad())?,
            frame_len,
            position: prev
                .position
                .checked_add(u64::from(prev.frame_len))
                .and_then(|p| p.checked_add(pos_gap))
                .ok_or_else(bad)?,
            max_ts: prev.max_ts.wrapping_add(unzigzag(ts)),
            cum_bytes: prev
                .cum_bytes
                .checked_add(u64::from(frame_len))
                .and_then(|c| c.checked_add(cum_gap))
                .ok_or_else(bad)?,
        };
        out.push(e);
        prev = e;
    }
    Ok(out)
}

/// The pack being extended by a checkpoint (or built by the migration).
struct OpenPack {
    key: u64,
    entries: Vec<IndexEntry>,
    bytes: usize,
    /// The running maximum timestamp before this checkpoint added to the pack.
    max_before: i64,
    /// Whether an entry added now raised the running maximum.
    raised: bool,
    /// Entries held when it was read; an extended pack is rewritten only if it grew.
    stored: usize,
}

impl OpenPack {
    fn new(first: IndexEntry, max_before: i64) -> OpenPack {
        OpenPack {
            key: first.base_offset,
            entries: vec![first],
            bytes: PACK_HEAD_LEN,
            max_before,
            raised: false,
            stored: 0,
        }
    }

    /// Adds `e` if the pack has room and `e` can follow its last entry.
    fn try_push(&mut self, e: IndexEntry) -> bool {
        let fits = self
            .entries
            .last()
            .and_then(|p| packed_len(p, &e))
            .filter(|n| self.entries.len() < PACK_MAX_ENTRIES && self.bytes + n <= PACK_MAX_BYTES);
        match fits {
            Some(n) => {
                self.entries.push(e);
                self.bytes += n;
                true
            }
            None => false,
        }
    }

    /// Writes the pack and, if it raised the running maximum to `max_now`, its time row in place
    /// of the one it had.
    fn write(
        &self,
        stream: u64,
        max_now: i64,
        packs: &mut redb::Table<(u64, u64), &[u8]>,
        times: &mut redb::Table<(u64, i64), u64>,
    ) -> Result<()> {
        if self.entries.len() == self.stored {
            return Ok(());
        }
        packs.insert((stream, self.key), &encode_pack(&self.entries)?[..])?;
        if self.raised {
            let old = times.get((stream, self.max_before))?.map(|g| g.value());
            if old == Some(self.key) {
                times.remove((stream, self.max_before))?;
            }
            times.insert((stream, max_now), self.key)?;
        }
        Ok(())
    }
}

/// Adds checkpointed `entries` of `stream` to the batch and time indexes and to `rec` (next
/// offset, bytes, running maximum timestamp). The stream's last pack is extended while it has
/// room, so a partition costs one row per [`PACK_MAX_ENTRIES`] batches however its batches were
/// grouped into checkpoints.
pub fn index_entries(
    packs: &mut redb::Table<(u64, u64), &[u8]>,
    times: &mut redb::Table<(u64, i64), u64>,
    stream: u64,
    rec: &mut PartRecord,
    entries: &[IndexEntry],
) -> Result<()> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let last = match packs.range((stream, 0)..=(stream, u64::MAX))?.next_back() {
        Some(row) => {
            let (k, v) = row?;
            Some((k.value().1, decode_pack(k.value().1, v.value())?))
        }
        None => None,
    };
    let fresh = last.is_none();
    let mut open = match last {
        Some((key, existing)) => {
            let bytes = encode_pack(&existing)?.len();
            OpenPack {
                key,
                stored: existing.len(),
                entries: existing,
                bytes,
                max_before: rec.max_ts,
                raised: false,
            }
        }
        None => OpenPack::new(*first, rec.max_ts),
    };
    // Without a pack to extend, `first` opened a new one.
    let mut opened_by_first = fresh;
    for e in entries {
        // A batch already indexed (as a checkpoint that wrote it would have) is not added twice:
        // starting a pack at its offset would replace the pack that holds it.
        let indexed = !opened_by_first
            && open
                .entries
                .last()
                .is_some_and(|l| e.base_offset < l.end_offset());
        if indexed {
            continue;
        }
        if !std::mem::take(&mut opened_by_first) && !open.try_push(*e) {
            open.write(stream, rec.max_ts, packs, times)?;
            open = OpenPack::new(*e, rec.max_ts);
        }
        // The running maximum as version 1 kept it: the first batch of a partition sets it.
        let first_ever = rec.total_bytes == 0;
        if first_ever || e.max_ts > rec.max_ts {
            open.raised = true;
            rec.max_ts = if first_ever {
                e.max_ts
            } else {
                rec.max_ts.max(e.max_ts)
            };
        }
        rec.next_offset = rec.next_offset.max(e.end_offset());
        rec.total_bytes = rec.total_bytes.max(e.cum_bytes);
    }
    open.write(stream, rec.max_ts, packs, times)
}

/// Index entries of `stream` from the batch holding `offset` (or the first after it) on, while
/// `take` accepts them.
pub fn entries_from<T>(
    packs: &T,
    stream: u64,
    offset: u64,
    mut take: impl FnMut(&IndexEntry) -> bool,
) -> Result<()>
where
    T: ReadableTable<(u64, u64), &'static [u8]>,
{
    let start = match packs.range((stream, 0)..=(stream, offset))?.next_back() {
        Some(row) => row?.0.value().1,
        None => offset,
    };
    for row in packs.range((stream, start)..=(stream, u64::MAX))? {
        let (k, v) = row?;
        for e in decode_pack(k.value().1, v.value())? {
            if e.end_offset() > offset && !take(&e) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The base offset of the first checkpointed batch of `stream` whose timestamp is at least `ts`,
/// or an earlier offset when reclamation deleted the pack that held it (callers clamp answers
/// to the log start and read forward).
pub fn first_at_or_after<P, T>(packs: &P, times: &T, stream: u64, ts: i64) -> Result<Option<u64>>
where
    P: ReadableTable<(u64, u64), &'static [u8]>,
    T: ReadableTable<(u64, i64), u64>,
{
    let Some(row) = times.range((stream, ts)..=(stream, i64::MAX))?.next() else {
        return Ok(None);
    };
    let key = row?.1.value();
    let Some(v) = packs.get((stream, key))? else {
        return Ok(Some(key));
    };
    let found = decode_pack(key, v.value())?
        .iter()
        .find(|e| e.max_ts >= ts)
        .map_or(key, |e| e.base_offset);
    Ok(Some(found))
}

/// Deletes the packs of `stream` that hold only batches before `log_start`, and the time rows
/// naming packs before it except the last, which still answers "first at or after" for
/// timestamps between it and the next row.
pub fn prune_before(
    packs: &mut redb::Table<(u64, u64), &[u8]>,
    times: &mut redb::Table<(u64, i64), u64>,
    stream: u64,
    log_start: u64,
) -> Result<()> {
    packs.retain_in((stream, 0)..(stream, log_start), |k, v| {
        decode_pack(k.1, v)
            .ok()
            .and_then(|es| es.last().map(|e| e.end_offset() > log_start))
            .unwrap_or(false)
    })?;
    let mut stale = Vec::new();
    for row in times.range((stream, i64::MIN)..=(stream, i64::MAX))? {
        let (k, v) = row?;
        if v.value() >= log_start {
            break;
        }
        stale.push(k.value());
    }
    stale.pop();
    for k in stale {
        times.remove(k)?;
    }
    Ok(())
}

/// Moves a version 1 index (one row per batch) into packs, and points its time rows at the
/// packs holding their batches. Streamed row by row: memory stays at one pack whatever the size.
fn migrate_v1(wtx: &redb::WriteTransaction) -> Result<()> {
    let has = |name: &str| -> Result<bool> { Ok(wtx.list_tables()?.any(|t| t.name() == name)) };
    let mut packs = wtx.open_table(PACKS)?;
    if has(BATCHES_V1.name())? {
        let old = wtx.open_table(BATCHES_V1)?;
        let mut open: Option<(u64, OpenPack)> = None;
        for row in old.iter()? {
            let (k, v) = row?;
            let (stream, base) = k.value();
            let e = IndexEntry::decode_value(base, v.value())?;
            if let Some((s, p)) = open.as_mut()
                && *s == stream
                && p.try_push(e)
            {
                continue;
            }
            if let Some((s, p)) = open.replace((stream, OpenPack::new(e, 0))) {
                packs.insert((s, p.key), &encode_pack(&p.entries)?[..])?;
            }
        }
        if let Some((s, p)) = open {
            packs.insert((s, p.key), &encode_pack(&p.entries)?[..])?;
        }
        drop(old);
        wtx.delete_table(BATCHES_V1)?;
    }
    let mut times = wtx.open_table(TIMES)?;
    if has(TIMES_V1.name())? {
        let old = wtx.open_table(TIMES_V1)?;
        // Of consecutive rows naming one pack only the last (largest timestamp) is needed.
        let mut pending: Option<((u64, i64), u64)> = None;
        for row in old.iter()? {
            let (k, v) = row?;
            let (stream, ts) = k.value();
            let base = v.value();
            // The pack holding the batch; a row whose batch was reclaimed keeps its offset.
            let mut key = base;
            if let Some(r) = packs.range((stream, 0)..=(stream, base))?.next_back() {
                let (pk, pv) = r?;
                let holds = decode_pack(pk.value().1, pv.value())?
                    .last()
                    .is_some_and(|e| e.end_offset() > base);
                if holds {
                    key = pk.value().1;
                }
            }
            if let Some((pk, pv)) = pending
                && !(pk.0 == stream && pv == key)
            {
                times.insert(pk, pv)?;
            }
            pending = Some(((stream, ts), key));
        }
        if let Some((pk, pv)) = pending {
            times.insert(pk, pv)?;
        }
        drop(old);
        wtx.delete_table(TIMES_V1)?;
    }
    Ok(())
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
        let found = version.map(|v| {
            v.try_into()
                .ok()
                .map(u64::from_le_bytes)
                .unwrap_or(u64::MAX)
        });
        match found {
            None => {}
            Some(1) => {
                // Everything version 1 stored is still valid; only the batch and time indexes
                // change shape, in this same transaction, so a crash leaves either layout whole.
                migrate_v1(&wtx)?;
                tracing::info!("batch index migrated to format version {FORMAT_VERSION}");
            }
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(LogError::UnsupportedFormat {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: FORMAT_VERSION,
                });
            }
        }
        // Written only when it changes: opening an index on a full disk must not need space.
        if found != Some(u64::from(FORMAT_VERSION)) {
            meta.insert(META_VERSION, &u64::from(FORMAT_VERSION).to_le_bytes()[..])?;
        }
        wtx.open_table(TOPICS)?;
        wtx.open_table(PARTS)?;
        wtx.open_table(PACKS)?;
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
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use redb::ReadableTableMetadata;

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

    fn entry(
        base: u64,
        last_delta: u32,
        position: u64,
        frame_len: u32,
        max_ts: i64,
        cum: u64,
    ) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            last_delta,
            frame_len,
            position,
            max_ts,
            cum_bytes: cum,
        }
    }

    #[test]
    fn packs_round_trip_extreme_and_unpackable_entries() {
        let entries = vec![
            entry(5, 0, 100, 300, i64::MIN, 300),
            entry(6, 2, 400, 70_000, i64::MAX, 70_300),
            entry(
                u64::MAX / 2,
                u32::MAX,
                u64::MAX / 4,
                u32::MAX,
                -1,
                u64::MAX / 2,
            ),
        ];
        let v = encode_pack(&entries).unwrap();
        assert_eq!(decode_pack(5, &v).unwrap(), entries);
        // An entry that goes backwards cannot follow, so it cannot share a pack.
        let back = vec![entry(10, 0, 1000, 50, 7, 50), entry(11, 0, 10, 50, 7, 100)];
        assert_eq!(packed_len(&back[0], &back[1]), None);
        assert!(encode_pack(&back).is_err());
        assert!(decode_pack(5, &v[..v.len() - 1]).is_err());
        assert!(decode_pack(5, &v[..10]).is_err());
    }

    #[test]
    fn checkpoints_extend_packs_and_keep_one_time_row_per_raising_pack() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(Arc::new(crate::fs::StdFs), dir.path().join("index.redb")).unwrap();
        init(&db).unwrap();
        let all: Vec<IndexEntry> = (0..1000u64)
            .map(|i| entry(i, 0, i * 200, 150, 1_000 + (i / 10) as i64, (i + 1) * 150))
            .collect();
        let mut rec = PartRecord::default();
        // Checkpoints of uneven sizes, each extending the pack the one before left open.
        for chunk in all.chunks(37) {
            let wtx = db.begin_write().unwrap();
            {
                let mut packs = wtx.open_table(PACKS).unwrap();
                let mut times = wtx.open_table(TIMES).unwrap();
                index_entries(&mut packs, &mut times, 9, &mut rec, chunk).unwrap();
            }
            wtx.commit().unwrap();
        }
        // Batches indexed already are not added again, whichever pack holds them.
        for again in [&all[990..], &all[..5]] {
            let wtx = db.begin_write().unwrap();
            {
                let mut packs = wtx.open_table(PACKS).unwrap();
                let mut times = wtx.open_table(TIMES).unwrap();
                index_entries(&mut packs, &mut times, 9, &mut rec, again).unwrap();
            }
            wtx.commit().unwrap();
        }
        assert_eq!(
            (rec.next_offset, rec.total_bytes, rec.max_ts),
            (1000, 150_000, 1_099)
        );
        let rtx = db.begin_read().unwrap();
        let packs = rtx.open_table(PACKS).unwrap();
        let times = rtx.open_table(TIMES).unwrap();
        assert_eq!(
            packs.len().unwrap(),
            1000u64.div_ceil(PACK_MAX_ENTRIES as u64)
        );
        assert_eq!(times.len().unwrap(), packs.len().unwrap());
        let mut got = Vec::new();
        entries_from(&packs, 9, 0, |e| {
            got.push(*e);
            true
        })
        .unwrap();
        assert_eq!(got, all);
        for at in [0u64, 1, 127, 128, 500, 999] {
            let mut first = None;
            entries_from(&packs, 9, at, |e| {
                first = Some(e.base_offset);
                false
            })
            .unwrap();
            assert_eq!(first, Some(at));
        }
        for ts in [i64::MIN, 1_000, 1_001, 1_050, 1_099] {
            let want = all.iter().find(|e| e.max_ts >= ts).map(|e| e.base_offset);
            assert_eq!(
                first_at_or_after(&packs, &times, 9, ts).unwrap(),
                want,
                "{ts}"
            );
        }
        assert_eq!(first_at_or_after(&packs, &times, 9, 1_100).unwrap(), None);
        assert_eq!(first_at_or_after(&packs, &times, 8, 0).unwrap(), None);
    }

    #[test]
    fn a_version_1_index_is_packed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let raw = redb::Database::create(&path).unwrap();
        let all: Vec<IndexEntry> = (0..300u64)
            .map(|i| entry(i * 2, 1, i * 100, 90, (i / 4) as i64, (i + 1) * 90))
            .collect();
        let wtx = raw.begin_write().unwrap();
        {
            let mut meta = wtx.open_table(META).unwrap();
            meta.insert(META_VERSION, &1u64.to_le_bytes()[..]).unwrap();
            let mut batches = wtx.open_table(BATCHES_V1).unwrap();
            let mut times = wtx.open_table(TIMES_V1).unwrap();
            // Stream 4 lost its first 10 batches to reclamation; its time row for them stays.
            for e in all.iter().skip(10) {
                batches
                    .insert((4, e.base_offset), &e.encode_value()[..])
                    .unwrap();
            }
            // Reclamation kept only the last time row naming a reclaimed batch (the 9th).
            for e in all.iter().skip(8).step_by(4) {
                times.insert((4, e.max_ts), e.base_offset).unwrap();
            }
            batches.insert((5, 0), &all[0].encode_value()[..]).unwrap();
            times.insert((5, all[0].max_ts), 0).unwrap();
        }
        wtx.commit().unwrap();
        drop(raw);
        let db = Db::open(Arc::new(crate::fs::StdFs), path).unwrap();
        init(&db).unwrap();
        init(&db).unwrap();
        assert_eq!(read_u64_meta(&db, META_VERSION).unwrap(), Some(2));
        let rtx = db.begin_read().unwrap();
        assert!(
            rtx.list_tables()
                .unwrap()
                .all(|t| t.name() != BATCHES_V1.name() && t.name() != TIMES_V1.name())
        );
        let packs = rtx.open_table(PACKS).unwrap();
        let times = rtx.open_table(TIMES).unwrap();
        let mut got = Vec::new();
        entries_from(&packs, 4, 0, |e| {
            got.push(*e);
            true
        })
        .unwrap();
        assert_eq!(got, all[10..].to_vec());
        // One time row per pack after the reclaimed batches, plus the one naming them.
        assert_eq!(
            times.range((4, i64::MIN)..=(4, i64::MAX)).unwrap().count(),
            4
        );
        assert_eq!(first_at_or_after(&packs, &times, 4, 0).unwrap(), Some(16));
        for ts in [3i64, 10, 40, 74] {
            let want = all.iter().find(|e| e.max_ts >= ts).map(|e| e.base_offset);
            assert_eq!(
                first_at_or_after(&packs, &times, 4, ts).unwrap(),
                want,
                "{ts}"
            );
        }
        assert_eq!(first_at_or_after(&packs, &times, 5, -1).unwrap(), Some(0));
    }
}
