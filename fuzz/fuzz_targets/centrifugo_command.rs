//! One WebSocket text frame of Centrifugo's JSON protocol: newline-separated commands, split
//! and decoded as the session does before running them.
//!
//! Property: decoding never panics, and only an object or array decodes as a command.
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
        // Only an object (or, serde being lenient, an array of fields) decodes as a command.
        // Not "a command is a valid `Value`": serde skips unknown fields without converting
        // their numbers, so `1e999` there is accepted.
        if serde_json::from_str::<Command>(line).is_ok() {
            assert!(
                (line.starts_with('{') && line.ends_with('}'))
                    || (line.starts_with('[') && line.ends_with(']')),
                "a command decoded from neither an object nor an array: {line}"
            );
        }
    }
});
