//! Kafka RecordBatch v2: the form in which the log stores records.
//!
//! The log treats a batch as opaque bytes except for the fixed 61-byte header, which it reads to
//! learn the record count, offsets and timestamps, and whose base offset it overwrites when the
//! batch is appended. Kafka's CRC starts after the base offset, so the rewrite keeps it valid and a
//! Kafka `Fetch` can return the stored bytes as they are.
//!
//! Building batches from records and decoding them back (including decompression) goes through
//! the `kafka-protocol` crate's record codec; no Kafka request or response type is used here.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};

use crate::error::{LogError, Result};

pub const HEADER_LEN: usize = 61;
/// The smallest possible encoded record (all varints one byte, no key, value or headers).
const MIN_RECORD_LEN: usize = 7;
/// Records per batch are bounded before any decoder allocates room for them.
pub const MAX_RECORDS_PER_BATCH: usize = 1_000_000;

/// The fixed fields of a RecordBatch v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at + N)?.try_into().ok()
}

impl BatchHeader {
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        let short = || {
            LogError::InvalidBatch(format!(
                "{} bytes is shorter than a batch header",
                buf.len()
            ))
        };
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(be(buf, 0).ok_or_else(short)?),
            batch_length: i32::from_be_bytes(be(buf, 8).ok_or_else(short)?),
            magic: i8::from_be_bytes(be(buf, 16).ok_or_else(short)?),
            crc: u32::from_be_bytes(be(buf, 17).ok_or_else(short)?),
            attributes: i16::from_be_bytes(be(buf, 21).ok_or_else(short)?),
            last_offset_delta: i32::from_be_bytes(be(buf, 23).ok_or_else(short)?),
            base_timestamp: i64::from_be_bytes(be(buf, 27).ok_or_else(short)?),
            max_timestamp: i64::from_be_bytes(be(buf, 35).ok_or_else(short)?),
            producer_id: i64::from_be_bytes(be(buf, 43).ok_or_else(short)?),
            producer_epoch: i16::from_be_bytes(be(buf, 51).ok_or_else(short)?),
            base_sequence: i32::from_be_bytes(be(buf, 53).ok_or_else(short)?),
            record_count: i32::from_be_bytes(be(buf, 57).ok_or_else(short)?),
        })
    }

    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Checks that `buf` holds exactly one well-formed v2 batch with a correct CRC, and returns its
/// header. Record contents are not decoded here: compressed batches are stored as sent.
pub fn validate(buf: &[u8]) -> Result<BatchHeader> {
    let h = BatchHeader::parse(buf)?;
    if h.magic != 2 {
        return Err(LogError::InvalidBatch(format!(
            "record batch magic {} is not supported (only v2)",
            h.magic
        )));
    }
    let declared = 12usize.saturating_add(usize::try_from(h.batch_length).unwrap_or(usize::MAX));
    if declared != buf.len() {
        return Err(LogError::InvalidBatch(format!(
            "batch length field says {declared} bytes but {} were given",
            buf.len()
        )));
    }
    let count = usize::try_from(h.record_count)
        .map_err(|_| LogError::InvalidBatch(format!("negative record count {}", h.record_count)))?;
    if count == 0 {
        return Err(LogError::InvalidBatch("batch holds no records".into()));
    }
    if count > MAX_RECORDS_PER_BATCH {
        return Err(LogError::InvalidBatch(format!(
            "batch claims {count} records, more than the limit of {MAX_RECORDS_PER_BATCH}"
        )));
    }
    if h.compression() == 0 && count.saturating_mul(MIN_RECORD_LEN) > buf.len() - HEADER_LEN {
        return Err(LogError::InvalidBatch(format!(
            "batch claims {count} records but holds only {} bytes of records",
            buf.len() - HEADER_LEN
        )));
    }
    if h.last_offset_delta < 0 || (h.last_offset_delta as usize) < count - 1 {
        return Err(LogError::InvalidBatch(format!(
            "last offset delta {} does not cover {count} records",
            h.last_offset_delta
        )));
    }
    let crc = crc32c::crc32c(buf.get(21..).unwrap_or_default());
    if crc != h.crc {
        return Err(LogError::InvalidBatch("record batch CRC mismatch".into()));
    }
    Ok(h)
}

/// Overwrites the base offset of a batch in place.
pub fn set_base_offset(buf: &mut [u8], base_offset: u64) {
    if let Some(slot) = buf.get_mut(0..8) {
        slot.copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// One record as the log's users see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes records into one uncompressed RecordBatch v2 with base offset 0 (the log assigns the
/// real one on append). `offset` of each record is ignored; records get consecutive deltas.
pub fn build(records: &[Record]) -> Result<Vec<u8>> {
    build_for_producer(records, -1, -1, -1)
}

/// Like [`build`], for an idempotent producer: the batch carries the producer id, epoch and the
/// sequence number of its first record (`-1`s for none).
pub fn build_for_producer(
    records: &[Record],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<Vec<u8>> {
    if records.is_empty() {
        return Err(LogError::InvalidBatch(
            "a batch needs at least one record".into(),
        ));
    }
    let krecords: Vec<KRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence` changes, so sequences
            // advance with offsets; from `-1` this still encodes a base sequence of -1 (no
            // idempotent producer).
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &krecords,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| LogError::InvalidBatch(format!("cannot encode records: {e}")))?;
    Ok(buf.to_vec())
}

/// Decodes a stored batch (any codec) into records with absolute offsets. Control records
/// (transaction markers) are skipped. Decompression is capped and every count and length is
/// checked against the bytes present before the decoder allocates for it.
pub fn decode(batch: &[u8]) -> Result<Vec<Record>> {
    decode_shared(Bytes::copy_from_slice(batch))
}

/// [`decode`] of a batch already held in shared memory (a slice of a request frame): an
/// uncompressed batch is decoded without a copy, its keys and values slices of `batch`.
pub fn decode_shared(batch: Bytes) -> Result<Vec<Record>> {
    validate_shape(&batch)?;
    let count = usize::try_from(BatchHeader::parse(&batch)?.record_count).unwrap_or(0);
    let mut buf = batch;
    let set = RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(
            |records: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
                let plain = crate::codec::decompress(
                    compression,
                    records,
                    crate::codec::MAX_DECOMPRESSED_BYTES,
                )?;
                crate::codec::prescan_records(&plain, count)?;
                Ok(plain)
            },
        ),
    )
    .map_err(|e| LogError::InvalidBatch(format!("cannot decode record batch: {e}")))?;
    Ok(set
        .records
        .into_iter()
        .filter(|r| !r.control)
        .map(|r| Record {
            offset: u64::try_from(r.offset).unwrap_or(0),
            timestamp_ms: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect(),
        })
        .collect())
}

/// The decoder reserves room for the declared record count, so the count is bounded first.
fn validate_shape(batch: &[u8]) -> Result<()> {
    let h = BatchHeader::parse(batch)?;
    let count = usize::try_from(h.record_count).unwrap_or(usize::MAX);
    if h.magic != 2 || count > MAX_RECORDS_PER_BATCH {
        return Err(LogError::InvalidBatch(format!(
            "record batch (magic {}, {} records) cannot be decoded",
            h.magic, h.record_count
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn rec(v: &str, ts: i64) -> Record {
        Record {
            offset: 0,
            timestamp_ms: ts,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
        }
    }

    #[test]
    fn build_validate_decode() {
        let mut b = build(&[rec("a", 10), rec("b", 30), rec("c", 20)]).unwrap();
        let h = validate(&b).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.max_timestamp, 30);
        set_base_offset(&mut b, 100);
        validate(&b).unwrap();
        let recs = decode(&b).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![100, 101, 102]
        );
        assert_eq!(recs[1].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(recs[2].headers[0].0, "h");
    }

    #[test]
    fn rejects_bad_batches() {
        let b = build(&[rec("a", 1)]).unwrap();
        assert!(validate(&b[..b.len() - 1]).is_err());
        let mut c = b.clone();
        let last = c.len() - 1;
        c[last] ^= 1;
        assert!(validate(&c).is_err(), "crc");
        let mut d = b.clone();
        d[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(validate(&d).is_err(), "huge count");
        assert!(decode(&d).is_err(), "huge count is refused before decoding");
        assert!(validate(&[0u8; 10]).is_err());
    }
}
