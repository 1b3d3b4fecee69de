//! One published event as the HTTP API and the Kafka listener receive it: JSON bytes, parsed
//! as an event envelope, in both unknown-field modes.
//!
//! Property: whatever is accepted round-trips — the envelope written out as JSON parses back
//! to the same envelope (so what is stored is what a reader gets), and nothing panics.
#![no_main]

use herald_core::{UnknownFields, parse_envelope};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    // A fixed clock keeps runs reproducible; generated ids differ, but are read back as given.
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    for mode in [UnknownFields::Allow, UnknownFields::Reject] {
        let Ok(envelope) = parse_envelope(value.clone(), mode, now) else {
            continue;
        };
        let written = envelope.to_json_vec();
        let reread: serde_json::Value =
            serde_json::from_slice(&written).expect("an accepted envelope writes valid JSON");
        let again = parse_envelope(reread, mode, now)
            .unwrap_or_else(|e| panic!("written envelope refused: {e}; {written:?}"));
        assert_eq!(envelope, again, "envelope changed on a round trip");
    }
});
