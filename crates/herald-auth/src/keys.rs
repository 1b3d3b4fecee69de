//! API keys as HTTP clients present them, and comparing secrets.

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
}
