//! One WebSocket text frame of Centrifugo's JSON protocol: newline-separated commands, split
//! and decoded as the session does before running them.
//!
//! Property: decoding never panics, and a line that decodes as a command is a JSON object.
#![no_main]

use herald_realtime::proto::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if serde_json::from_str::<Command>(line).is_ok() {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("a decoded command is valid JSON");
            assert!(v.is_object(), "a command decoded from a non-object: {line}");
        }
    }
});
