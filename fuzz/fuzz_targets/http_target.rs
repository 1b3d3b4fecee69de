//! One HTTP request-target (path and query) through the API's path patterns, axum's
//! percent-decoding and `Query` extraction, and the handlers' parameter parsers.
//!
//! Property: no panic, and no 5xx — a parameter the parsers refuse is the client's error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(status) = herald_http::fuzzing::route_target(target) {
        assert!(!status.is_server_error(), "{target:?} answered {status}");
    }
});
