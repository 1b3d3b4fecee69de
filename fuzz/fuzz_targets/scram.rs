//! A SCRAM exchange as a Kafka SASL_* listener runs it: a client-first-message, then a
//! client-final-message, for either mechanism and for a known and an unknown user.
//!
//! Input: one byte choosing the mechanism, then the two messages separated by a NUL byte.
//! Properties: no panic; random client-final messages never authenticate; a finished exchange
//! refuses further messages.
#![no_main]

use std::sync::OnceLock;

use herald_auth::scram::{Mechanism, ServerExchange, Step, StoredCredential};
use libfuzzer_sys::fuzz_target;

fn credential(m: Mechanism) -> StoredCredential {
    static SHA256: OnceLock<StoredCredential> = OnceLock::new();
    static SHA512: OnceLock<StoredCredential> = OnceLock::new();
    let cell = match m {
        Mechanism::Sha256 => &SHA256,
        Mechanism::Sha512 => &SHA512,
    };
    cell.get_or_init(|| StoredCredential::derive(m, "pencil", b"fuzz-salt-0123456", 4096))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mechanism = if selector & 1 == 0 {
        Mechanism::Sha256
    } else {
        Mechanism::Sha512
    };
    let mut parts = rest.splitn(2, |&b| b == 0);
    let first = parts.next().unwrap_or_default();
    let last = parts.next().unwrap_or_default();
    let mut exchange = ServerExchange::with_nonce(mechanism, "fuzzServerNonce0123456789")
        .with_unknown_user_secret(b"fuzz-secret");
    let known = credential(mechanism);
    let Ok(_server_first) =
        exchange.client_first(first, |user| (user == "user").then(|| known.clone()))
    else {
        return;
    };
    match exchange.client_final(last) {
        Ok(Step::Done { .. }) => panic!("a fuzzed proof authenticated: {data:?}"),
        Ok(_) | Err(_) => {}
    }
    assert!(
        exchange.client_final(last).is_err(),
        "a finished exchange accepted another message"
    );
});
