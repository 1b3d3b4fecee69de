//! API keys as HTTP clients present them, issued keys and their stored hashes, and comparing
//! secrets.
//!
//! An issued key reads `hk_<id>_<secret>`: a 16-hex-digit id, which names the key in listings
//! and revocations, and 256 random bits. Only the SHA-256 of the secret is stored; a fast hash is
//! enough because the secret is random, not chosen by a person.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

const KEY_PREFIX: &str = "hk_";
const ID_LEN: usize = 16;

/// A newly issued key: the text to hand out once, and what to store.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub id: String,
    /// The whole key as the client presents it. Shown once, never stored.
    pub key: String,
    /// Hex SHA-256 of the secret part.
    pub hash: String,
}

/// Issues a key with a fresh id and secret.
pub fn issue_key() -> IssuedKey {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_LEN / 2];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex(&id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    IssuedKey {
        key: format!("{KEY_PREFIX}{id}_{secret}"),
        hash: hash_secret(&secret),
        id,
    }
}

/// Splits a presented key into id and secret; `None` if it is not an issued key's shape.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let id = rest.get(..ID_LEN)?;
    let secret = rest.get(ID_LEN..)?.strip_prefix('_')?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty() && secret.len() <= 128)
        .then_some((id, secret))
}

/// Hex SHA-256 of a key's secret part.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    constant_time_eq(hash_secret(secret).as_bytes(), stored_hash.as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The key from an `X-API-Key` header value, else from `Authorization: apikey <key>`.
pub fn presented_api_key<'a>(
    x_api_key: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(k) = x_api_key {
        return Some(k.trim());
    }
    let (scheme, key) = authorization?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("apikey").then_some(key.trim())
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_either_header() {
        assert_eq!(
            presented_api_key(Some(" k1 "), Some("apikey k2")),
            Some("k1")
        );
        assert_eq!(presented_api_key(None, Some("ApiKey  k2 ")), Some("k2"));
        assert_eq!(presented_api_key(None, Some("Bearer t")), None);
        assert_eq!(presented_api_key(None, None), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn issued_keys_parse_and_verify() {
        let k = issue_key();
        let (id, secret) = parse_key(&k.key).unwrap_or_default();
        assert_eq!(id, k.id);
        assert!(verify_secret(secret, &k.hash));
        assert!(!verify_secret("other", &k.hash));
        assert!(!k.key.contains(&k.hash));
        let other = issue_key();
        assert_ne!(k.id, other.id);
        assert_ne!(k.key, other.key);
        for bad in [
            "",
            "hk_",
            "hk_0123",
            "hk_0123456789abcdef",
            "hk_0123456789abcdef_",
            "hk_0123456789abcdeg_x",
            "xx_0123456789abcdef_x",
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_key("hk_0123456789abcdef_s_x"),
            Some(("0123456789abcdef", "s_x"))
        );
    }
}
