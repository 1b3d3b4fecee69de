//! Kafka RecordBatch v2, the form records take in storage: building batches from records and
//! decoding stored batches. Interfaces that need records (the gateway's channel streams and
//! routes) use this rather than a codec of their own, so the on-disk and on-wire format stays
//! the broker's concern.

pub use herald_log::Record;

use crate::BrokerError;

/// Encodes records into one uncompressed batch with base offset 0 (storage assigns the real
/// one on append). `offset` of each record is ignored. `Invalid` for an empty list.
pub fn build(records: &[Record]) -> Result<Vec<u8>, BrokerError> {
    Ok(herald_log::batch::build(records)?)
}

/// Decodes a stored batch (any compression) into records with absolute offsets, skipping
/// control records. Every count and length is checked against the bytes present, and
/// decompression is capped, before anything is allocated for them; `Invalid` if the batch is
/// malformed.
pub fn decode(batch: &[u8]) -> Result<Vec<Record>, BrokerError> {
    Ok(herald_log::batch::decode(batch)?)
}
