//! A connection or subscription JWT as the gateway verifies it, header and claims included.
//!
//! Input: the token's header and claims, separated by a NUL byte. They are signed with the
//! verifier's HS256 secret, so the fuzzer reaches the header and claims handling past the
//! signature check; the raw input is also tried as a token as given.
//! Properties: no panic; a token signed with another secret is never accepted.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_realtime::jwt::{JwtConfig, Verifier};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-jwt-secret-0123456789abcdef";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::new(JwtConfig {
            hmac_secret: Some(SECRET.into()),
            rsa_public_key: None,
            ecdsa_public_key: None,
            jwks_url: None,
            audience: None,
            issuer: None,
            tenant_claim: "tenant_id".into(),
            roles_claim: "roles".into(),
            leeway_secs: 0,
        })
        .expect("an HMAC-only verifier")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

fuzz_target!(|data: &[u8]| {
    let v = verifier();
    let mut parts = data.splitn(2, |&b| b == 0);
    let header = parts.next().unwrap_or_default();
    let claims = parts.next().unwrap_or_default();
    let signed = sign(header, claims, SECRET.as_bytes());
    let forged = sign(header, claims, b"another secret");
    runtime().block_on(async {
        let _ = v.connect_claims(&signed).await;
        let _ = v.subscribe_claims(&signed).await;
        assert!(
            v.connect_claims(&forged).await.is_err(),
            "a token signed with another secret was accepted"
        );
        assert!(v.subscribe_claims(&forged).await.is_err());
        if let Ok(raw) = std::str::from_utf8(data) {
            let _ = v.connect_claims(raw).await;
            let _ = v.subscribe_claims(raw).await;
        }
    });
});
