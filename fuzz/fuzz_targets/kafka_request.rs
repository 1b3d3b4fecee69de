//! One Kafka request frame (after the 4-byte size prefix), as `herald-kafka` receives it.
//!
//! The pre-scan runs first; only if it accepts does `kafka-protocol` decode the same bytes, as
//! the handler does. Two things count as findings: the decoder blowing its allocation budget
//! (a count or length the pre-scan let through unbounded) and the decoder failing on a frame
//! the pre-scan accepted (the pre-scan's schema has drifted from the crate's decoders).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

/// Refuses any single allocation above 512 MiB, which Rust turns into an abort libFuzzer
/// reports. libFuzzer's own `-malloc_limit_mb` needs a sanitizer's malloc hooks; this also
/// holds in `-s none` builds, where a huge `Vec::with_capacity` might otherwise be granted
/// lazily by the kernel and go unnoticed.
struct Capped;

const CAP: usize = 512 << 20;

// SAFETY: forwards to `System` unchanged, except that it returns null (allocation failure,
// which every caller must handle) for sizes above `CAP`.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fuzz_target!(|frame: &[u8]| {
    // The handler reads the api key and version from the frame itself.
    let Some(&[k0, k1, v0, v1]) = frame.get(..4) else {
        return;
    };
    let version = i16::from_be_bytes([v0, v1]);
    let Ok(key) = ApiKey::try_from(i16::from_be_bytes([k0, k1])) else {
        return;
    };
    let header_version = key.request_header_version(version);
    if herald_kafka::check_request(key, version, header_version, frame).is_err() {
        return;
    }
    let mut buf = Bytes::copy_from_slice(frame);
    if let Err(e) = RequestHeader::decode(&mut buf, header_version) {
        panic!("pre-scan accepted a header the crate rejects: {e:#}");
    }
    if let Err(e) = RequestKind::decode(key, &mut buf, version) {
        panic!("pre-scan accepted a {key:?} v{version} body the crate rejects: {e:#}");
    }
});
