//! Tenant identifiers.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::GrammarError;
use crate::rules::{NameRule, is_alnum, is_tenant_char};

/// Longest tenant id, in characters.
pub const MAX_TENANT_ID_LEN: usize = 64;

pub(crate) const TENANT_RULE: NameRule = NameRule {
    field: "tenant_id",
    max: MAX_TENANT_ID_LEN,
    first: is_alnum,
    rest: is_tenant_char,
    rule: "a tenant id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}: 1 to 64 letters, digits, '_' \
           or '-', starting with a letter or digit",
};

/// A validated tenant id such as `76953480-3`.
///
/// The rule `[A-Za-z0-9][A-Za-z0-9_-]{0,63}` keeps every separator Herald uses elsewhere (`.` in
/// topics, `:` in channels, `*`/`>`/`#`/`$` in patterns, `/` in URLs) out of tenant ids, so a
/// tenant id can be spliced into any of those names without escaping and without one tenant's
/// name ever reaching into another's.
///
/// Tenant ids are case-sensitive: `Acme` and `acme` are different tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates `s` against the tenant id rule.
    pub fn parse(s: &str) -> Result<TenantId, GrammarError> {
        TENANT_RULE.check(s)?;
        Ok(TenantId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = GrammarError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = GrammarError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        TENANT_RULE.check(&s)?;
        Ok(TenantId(s))
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Sound because the derived `Hash`/`Eq`/`Ord` of a one-field newtype agree with those of `str`.
impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_seed_tenant() {
        let t = TenantId::parse("76953480-3").unwrap();
        assert_eq!(t.as_str(), "76953480-3");
        assert_eq!(t.to_string(), "76953480-3");
        assert_eq!(t, "76953480-3");
    }

    #[test]
    fn accepts_edges() {
        assert!(TenantId::parse("a").is_ok());
        assert!(TenantId::parse("A_b-C").is_ok());
        assert!(TenantId::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_separators_naming_the_character() {
        for (bad, c) in [
            ("a.b", '.'),
            ("a:b", ':'),
            ("a*", '*'),
            ("a#", '#'),
            ("a$", '$'),
            ("a/b", '/'),
            ("a b", ' '),
            ("añ", 'ñ'),
            ("a>", '>'),
        ] {
            let err = TenantId::parse(bad).unwrap_err();
            match &err {
                GrammarError::InvalidChar { found, field, .. } => {
                    assert_eq!(*found, c, "{bad}");
                    assert_eq!(*field, "tenant_id");
                }
                other => panic!("{bad}: unexpected {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains("tenant_id"), "{msg}");
            assert!(msg.contains("[A-Za-z0-9][A-Za-z0-9_-]{0,63}"), "{msg}");
            assert!(msg.contains(&format!("{c:?}")), "{msg}");
        }
    }

    #[test]
    fn rejects_empty_long_and_bad_start() {
        assert!(matches!(
            TenantId::parse(""),
            Err(GrammarError::Empty {
                field: "tenant_id",
                ..
            })
        ));
        assert!(matches!(
            TenantId::parse(&"x".repeat(65)),
            Err(GrammarError::TooLong {
                len: 65,
                max: 64,
                ..
            })
        ));
        assert!(matches!(
            TenantId::parse("-abc"),
            Err(GrammarError::InvalidStart { found: '-', .. })
        ));
        assert!(matches!(
            TenantId::parse("_abc"),
            Err(GrammarError::InvalidStart { found: '_', .. })
        ));
        assert!(matches!(
            TenantId::parse(".."),
            Err(GrammarError::InvalidChar { found: '.', .. })
        ));
    }

    #[test]
    fn serde_is_a_validated_string() {
        let t = TenantId::parse("76953480-3").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"76953480-3\"");
        let back: TenantId = serde_json::from_str("\"76953480-3\"").unwrap();
        assert_eq!(back, t);
        let err = serde_json::from_str::<TenantId>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("tenant_id"), "{err}");
    }

    proptest! {
        #[test]
        fn valid_ids_parse(s in "[A-Za-z0-9][A-Za-z0-9_-]{0,63}") {
            let t = TenantId::parse(&s).unwrap();
            prop_assert_eq!(t.as_str(), s.as_str());
        }

        #[test]
        fn parse_never_panics_and_accepts_only_the_rule(s in any::<String>()) {
            if let Ok(t) = TenantId::parse(&s) {
                let mut chars = t.as_str().chars();
                prop_assert!(chars.next().is_some_and(|c| c.is_ascii_alphanumeric()));
                prop_assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
                prop_assert!(t.as_str().len() <= 64);
            }
        }
    }
}
