//! The journal's frame format: every entry in every segment is one frame.
//!
//! ```text
//!  0  magic       u32 LE  "HRL1"
//!  4  crc32c      u32 LE  over bytes 8..32+len
//!  8  len         u32 LE  body length
//! 12  kind        u8      1 batch, 2 create topic, 3 delete topic, 4 log start, 5 topic config,
//!                         6 add partitions
//! 13  flags       u8      reserved, 0
//! 14  idem_count  u16 LE  idempotency keys at the start of a batch body
//! 16  stream      u64 LE  partition stream id (0 for catalog frames)
//! 24  value       u64 LE  batch: base offset; log start: the new log start offset
//! 32  body        len bytes
//! ```
//!
//! A batch body is the idempotency keys (`u16 len, key, u32 record index` each) followed by a
//! Kafka RecordBatch v2, stored exactly as a Fetch returns it. The frame is self-describing so
//! that recovery can rebuild every index from the journal alone.
//!
//! Decoding is sans-I/O: [`decode`] looks at a buffer and says whether a whole, intact frame is
//! there.

use crate::error::{LogError, Result};

pub const MAGIC: u32 = u32::from_le_bytes(*b"HRL1");
pub const HEADER_LEN: usize = 32;
/// A frame body larger than this is rejected before any allocation, on write and on read.
pub const MAX_BODY_LEN: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Batch = 1,
    CreateTopic = 2,
    DeleteTopic = 3,
    LogStart = 4,
    TopicConfig = 5,
    AddPartitions = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Batch,
            2 => Kind::CreateTopic,
            3 => Kind::DeleteTopic,
            4 => Kind::LogStart,
            5 => Kind::TopicConfig,
            6 => Kind::AddPartitions,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub idem_count: u16,
    pub stream: u64,
    pub value: u64,
    pub body_len: u32,
}

impl Header {
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}

/// Appends one frame to `out`. `body` is given in pieces so that a batch can be framed without
/// first being copied into a temporary buffer.
pub fn encode(
    out: &mut Vec<u8>,
    kind: Kind,
    idem_count: u16,
    stream: u64,
    value: u64,
    body: &[&[u8]],
) {
    let body_len: usize = body.iter().map(|b| b.len()).sum();
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&idem_count.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    for piece in body {
        out.extend_from_slice(piece);
    }
    let crc = crc32c::crc32c(out.get(start + 8..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Outcome of looking for a frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame with a valid checksum.
    Frame(Header),
    /// The buffer ends before the frame does; more bytes may complete it.
    Incomplete { needed: usize },
    /// Not a frame: zeroes, garbage or a torn write. Recovery stops here.
    Invalid(&'static str),
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the header only, without checking the body's checksum.
pub fn peek_header(buf: &[u8]) -> Result<Header, Decoded> {
    if buf.len() < HEADER_LEN {
        return Err(Decoded::Incomplete { needed: HEADER_LEN });
    }
    let magic = u32_at(buf, 0).ok_or(Decoded::Invalid("short header"))?;
    if magic != MAGIC {
        return Err(Decoded::Invalid("bad magic"));
    }
    let body_len = u32_at(buf, 8).ok_or(Decoded::Invalid("short header"))?;
    if body_len as usize > MAX_BODY_LEN {
        return Err(Decoded::Invalid("frame length exceeds the limit"));
    }
    let kind = buf
        .get(12)
        .copied()
        .and_then(Kind::from_u8)
        .ok_or(Decoded::Invalid("unknown frame kind"))?;
    let idem_count = u16_at(buf, 14).ok_or(Decoded::Invalid("short header"))?;
    Ok(Header {
        kind,
        idem_count,
        stream: u64_at(buf, 16).ok_or(Decoded::Invalid("short header"))?,
        value: u64_at(buf, 24).ok_or(Decoded::Invalid("short header"))?,
        body_len,
    })
}

/// Looks for one whole, checksummed frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    let header = match peek_header(buf) {
        Ok(h) => h,
        Err(d) => return d,
    };
    let total = header.frame_len();
    let Some(frame) = buf.get(..total) else {
        return Decoded::Incomplete { needed: total };
    };
    let stored = u32_at(frame, 4).unwrap_or(0);
    if crc32c::crc32c(frame.get(8..).unwrap_or_default()) != stored {
        return Decoded::Invalid("checksum mismatch");
    }
    Decoded::Frame(header)
}

/// The body of a frame whose header was decoded from the same buffer.
pub fn body<'a>(frame: &'a [u8], header: &Header) -> &'a [u8] {
    frame
        .get(HEADER_LEN..header.frame_len())
        .unwrap_or_default()
}

/// An idempotency key stored in a batch frame: the key and the index of the record it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemKey {
    pub key: Vec<u8>,
    pub record_index: u32,
}

pub const MAX_IDEM_KEY_LEN: usize = 512;

pub fn encode_idem(keys: &[IdemKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.iter().map(|k| k.key.len() + 6).sum());
    for k in keys {
        out.extend_from_slice(&(k.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&k.key);
        out.extend_from_slice(&k.record_index.to_le_bytes());
    }
    out
}

/// Splits a batch body into its idempotency keys and the RecordBatch bytes.
pub fn split_batch_body(body: &[u8], idem_count: u16) -> Result<(Vec<IdemKey>, &[u8])> {
    let mut keys = Vec::with_capacity(usize::from(idem_count).min(1024));
    let mut at = 0usize;
    let bad = || LogError::InvalidBatch("truncated idempotency key section".into());
    for _ in 0..idem_count {
        let len = usize::from(u16_at(body, at).ok_or_else(bad)?);
        at += 2;
        let key = body.get(at..at + len).ok_or_else(bad)?.to_vec();
        at += len;
        let record_index = u32_at(body, at).ok_or_else(bad)?;
        at += 4;
        keys.push(IdemKey { key, record_index });
    }
    Ok((keys, body.get(at..).unwrap_or_default()))
}

/// Skips the idempotency section without allocating.
pub fn batch_bytes(body: &[u8], idem_count: u16) -> Option<&[u8]> {
    let mut at = 0usize;
    for _ in 0..idem_count {
        at += 2 + usize::from(u16_at(body, at)?) + 4;
    }
    body.get(at..)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, Kind::Batch, 0, 7, 42, &[body]);
        out
    }

    #[test]
    fn round_trip() {
        let f = frame(b"hello");
        match decode(&f) {
            Decoded::Frame(h) => {
                assert_eq!(h.kind, Kind::Batch);
                assert_eq!(h.stream, 7);
                assert_eq!(h.value, 42);
                assert_eq!(body(&f, &h), b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let f = frame(b"some body bytes");
        for cut in 0..f.len() {
            assert!(
                matches!(decode(&f[..cut]), Decoded::Incomplete { .. }),
                "cut {cut}"
            );
        }
        for byte in 0..f.len() {
            let mut g = f.clone();
            g[byte] ^= 0x10;
            assert!(
                !matches!(decode(&g), Decoded::Frame(h) if body(&g, &h) == b"some body bytes"),
                "flip {byte}"
            );
        }
    }

    #[test]
    fn zeroes_are_invalid() {
        assert!(matches!(decode(&[0u8; 64]), Decoded::Invalid(_)));
    }

    #[test]
    fn idem_section_round_trips() {
        let keys = vec![
            IdemKey {
                key: b"a".to_vec(),
                record_index: 0,
            },
            IdemKey {
                key: b"bcd".to_vec(),
                record_index: 3,
            },
        ];
        let mut body = encode_idem(&keys);
        body.extend_from_slice(b"BATCH");
        let (back, rest) = split_batch_body(&body, 2).unwrap();
        assert_eq!(back, keys);
        assert_eq!(rest, b"BATCH");
        assert_eq!(batch_bytes(&body, 2).unwrap(), b"BATCH");
        assert!(split_batch_body(&body[..3], 2).is_err());
    }
}
