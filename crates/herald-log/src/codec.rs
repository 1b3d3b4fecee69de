//! Bounded decompression and a structural pre-scan of RecordBatch v2 records.
//!
//! Record bytes come from clients. Before the `kafka-protocol` record decoder allocates room
//! for the record and header counts a batch declares, this module proves those counts fit in
//! the bytes actually present, and decompresses with a hard cap on output so a small
//! compressed batch cannot expand without limit.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::error::{LogError, Result};

/// The most bytes one batch may decompress to.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

fn bad(msg: impl Into<String>) -> LogError {
    LogError::InvalidBatch(msg.into())
}

fn read_capped(mut r: impl Read, cap: usize, codec: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.by_ref()
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("{codec} data does not decompress: {e}")))?;
    if out.len() > cap {
        return Err(bad(format!(
            "{codec} batch decompresses to more than {cap} bytes"
        )));
    }
    Ok(out)
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn snappy(data: &[u8], cap: usize) -> Result<Vec<u8>> {
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<()> {
        let len = snap::raw::decompress_len(b).map_err(|e| bad(format!("snappy: {e}")))?;
        if out.len() + len > cap {
            return Err(bad(format!(
                "snappy batch decompresses to more than {cap} bytes"
            )));
        }
        let start = out.len();
        out.resize(start + len, 0);
        let dst = out.get_mut(start..).unwrap_or_default();
        snap::raw::Decoder::new()
            .decompress(b, dst)
            .map_err(|e| bad(format!("snappy: {e}")))?;
        Ok(())
    };
    let mut out = Vec::new();
    if data.starts_with(XERIAL_MAGIC) {
        // Java clients frame snappy in blocks after a 16-byte header (xerial format).
        let mut rest = data.get(16..).unwrap_or_default();
        while !rest.is_empty() {
            let len = rest
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_be_bytes(b) as usize)
                .ok_or_else(|| bad("snappy: truncated block length"))?;
            let b = rest
                .get(4..4 + len)
                .ok_or_else(|| bad("snappy: truncated block"))?;
            block(b, &mut out)?;
            rest = rest.get(4 + len..).unwrap_or_default();
        }
    } else {
        block(data, &mut out)?;
    }
    Ok(out)
}

/// Decompresses the records section of a batch, refusing output beyond `cap`.
pub fn decompress(compression: Compression, data: &[u8], cap: usize) -> Result<Bytes> {
    let out = match compression {
        Compression::None => return Ok(Bytes::copy_from_slice(data)),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), cap, "gzip")?,
        Compression::Snappy => snappy(data, cap)?,
        Compression::Lz4 => {
            let d = lz4::Decoder::new(data).map_err(|e| bad(format!("lz4: {e}")))?;
            read_capped(d, cap, "lz4")?
        }
        Compression::Zstd => {
            let d =
                zstd::stream::read::Decoder::new(data).map_err(|e| bad(format!("zstd: {e}")))?;
            read_capped(d, cap, "zstd")?
        }
    };
    Ok(Bytes::from(out))
}

/// A zigzag varint, as RecordBatch v2 records use.
fn varint(buf: &[u8], at: &mut usize) -> Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf
            .get(*at)
            .ok_or_else(|| bad("record ends inside a varint"))?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift.min(63);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

fn skip_bytes(buf: &[u8], at: &mut usize, nullable: bool, what: &str) -> Result<()> {
    let len = varint(buf, at)?;
    if len == -1 && nullable {
        return Ok(());
    }
    let len = usize::try_from(len).map_err(|_| bad(format!("{what} length {len} is invalid")))?;
    if buf.len().saturating_sub(*at) < len {
        return Err(bad(format!("{what} length {len} runs past the record")));
    }
    *at += len;
    Ok(())
}

/// Walks `count` records and checks every length and count against the bytes present.
pub fn prescan_records(buf: &[u8], count: usize) -> Result<()> {
    let mut at = 0usize;
    for i in 0..count {
        let len = varint(buf, &mut at)?;
        let len =
            usize::try_from(len).map_err(|_| bad(format!("record {i} has negative length")))?;
        let end = at
            .checked_add(len)
            .filter(|e| *e <= buf.len())
            .ok_or_else(|| {
                bad(format!(
                    "record {i} of {len} bytes runs past the batch ({count} records declared)"
                ))
            })?;
        let rec = buf.get(at..end).unwrap_or_default();
        let mut p = 1usize; // attributes
        varint(rec, &mut p)?; // timestamp delta
        varint(rec, &mut p)?; // offset delta
        skip_bytes(rec, &mut p, true, "key")?;
        skip_bytes(rec, &mut p, true, "value")?;
        let headers = varint(rec, &mut p)?;
        let headers = usize::try_from(headers)
            .map_err(|_| bad(format!("record {i} has a negative header count")))?;
        // A header takes at least two bytes (two one-byte lengths).
        if headers > rec.len().saturating_sub(p) / 2 {
            return Err(bad(format!(
                "record {i} declares {headers} headers in {} bytes",
                rec.len()
            )));
        }
        for _ in 0..headers {
            skip_bytes(rec, &mut p, false, "header key")?;
            skip_bytes(rec, &mut p, true, "header value")?;
        }
        if p > rec.len() {
            return Err(bad(format!("record {i} is shorter than its fields")));
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn caps_output() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&vec![0u8; 1 << 20]).unwrap();
        let gz = e.finish().unwrap();
        assert!(decompress(Compression::Gzip, &gz, 1 << 20).is_ok());
        assert!(decompress(Compression::Gzip, &gz, (1 << 20) - 1).is_err());
        let sn = snap::raw::Encoder::new()
            .compress_vec(&vec![7u8; 4096])
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &sn, 4096).unwrap().len(),
            4096
        );
        assert!(decompress(Compression::Snappy, &sn, 4095).is_err());
        assert!(decompress(Compression::Zstd, b"garbage", 100).is_err());
        assert!(decompress(Compression::Lz4, b"garbage", 100).is_err());
    }

    #[test]
    fn prescan_refuses_impossible_counts() {
        // One record: len=7, attrs, ts=0, off=0, key=-1, value=-1, headers=0.
        let one = [14u8, 0, 0, 0, 1, 1, 0, 0];
        assert!(prescan_records(&one[..8], 1).is_ok());
        assert!(
            prescan_records(&one[..8], 2).is_err(),
            "two declared, one present"
        );
        // Header count of 2^30 in a short record.
        let huge = [16u8, 0, 0, 0, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x08];
        assert!(prescan_records(&huge, 1).is_err());
    }
}
