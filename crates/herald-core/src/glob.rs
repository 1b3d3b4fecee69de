//! Topic selectors: `smarteros.*.*.order_*`, `smarteros.acme.>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::GrammarError;
use crate::rules::{NameRule, is_topic_char};

/// Longest topic selector, in characters. Topic names stop at 249 characters; the slack is for
/// wildcards, which may match nothing.
pub const MAX_GLOB_LEN: usize = 1024;

fn is_glob_char(c: char) -> bool {
    is_topic_char(c) || c == '*' || c == '>'
}

const GLOB_RULE: NameRule = NameRule {
    field: "topic selector",
    max: MAX_GLOB_LEN,
    first: is_glob_char,
    rest: is_glob_char,
    rule: "a topic selector is dot-separated, non-empty tokens of A-Z, a-z, 0-9, '_', '-' and \
           '*' ('*' matches any run of characters within one token), optionally ending with the \
           token '>' (which matches one or more further tokens)",
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    /// A token containing at least one `*`.
    Wild(Box<str>),
    /// The final `>`.
    Rest,
}

/// A topic selector: dot-separated tokens where `*` matches any run of characters (including
/// none) within one token, and a final `>` token matches one or more remaining tokens, as in
/// NATS.
///
/// `*` never crosses a `.`, so `smarteros.*.*.order_*` only matches four-token topics; this is
/// what keeps `smarteros.acme.*.*` from reaching a topic of another tenant whose id merely starts
/// the same way.
///
/// Matching is `O(pattern × topic)` at worst (a greedy two-pointer match per token), never
/// exponential, so selectors from untrusted users are safe to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicGlob {
    pattern: String,
    segments: Vec<Segment>,
}

impl TopicGlob {
    /// Parses and validates a selector.
    pub fn parse(pattern: &str) -> Result<Self, GrammarError> {
        GLOB_RULE.check(pattern)?;
        let glob_err = |reason: String| GrammarError::Glob {
            pattern: pattern.to_owned(),
            reason,
        };
        let token_count = pattern.split('.').count();
        let mut segments = Vec::with_capacity(token_count);
        for (i, token) in pattern.split('.').enumerate() {
            let number = i + 1;
            let segment = if token.is_empty() {
                return Err(glob_err(format!(
                    "token {number} is empty; tokens are separated by single dots, and a selector \
                     may not start or end with a dot"
                )));
            } else if token.contains('>') {
                if token != ">" {
                    return Err(glob_err(format!(
                        "token {number} {token:?} mixes '>' with other characters; '>' must be a \
                         whole token (as in \"smarteros.>\"), use '*' to match part of a token"
                    )));
                }
                if number != token_count {
                    return Err(glob_err(format!(
                        "token {number} is '>', which matches the rest of the topic and so may \
                         only be the last token; use '*' to match a single token"
                    )));
                }
                Segment::Rest
            } else if token.contains('*') {
                Segment::Wild(token.into())
            } else {
                Segment::Literal(token.into())
            };
            segments.push(segment);
        }
        Ok(TopicGlob {
            pattern: pattern.to_owned(),
            segments,
        })
    }

    /// Whether `topic` is selected. Any string may be passed; it need not be a valid topic.
    pub fn matches(&self, topic: &str) -> bool {
        let mut tokens = topic.split('.');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return tokens.next().is_some(),
                Segment::Literal(lit) => {
                    if tokens.next() != Some(&**lit) {
                        return false;
                    }
                }
                Segment::Wild(pat) => match tokens.next() {
                    Some(token) if wildcard_match(pat.as_bytes(), token.as_bytes()) => {}
                    _ => return false,
                },
            }
        }
        tokens.next().is_none()
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the selector has no wildcard and so matches exactly one topic name.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The pattern up to its first wildcard: every matching topic starts with it, so a sorted
    /// topic index can be range-scanned from here instead of tested whole.
    ///
    /// `smarteros.*.*.order_*` gives `smarteros.`; a literal selector gives itself; `*` gives "".
    pub fn literal_prefix(&self) -> &str {
        match self.pattern.find(['*', '>']) {
            Some(i) => self.pattern.get(..i).unwrap_or_default(),
            None => &self.pattern,
        }
    }
}

/// Greedy wildcard match of one token, where `*` matches any run of bytes.
///
/// On a mismatch it backtracks only to the most recent `*`, moving that star's match one byte
/// further; earlier stars never need revisiting, which bounds the work by `p.len() * t.len()`.
/// Byte-wise comparison is sound on UTF-8 because pattern bytes are ASCII and no ASCII byte
/// occurs inside a multi-byte character.
fn wildcard_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // (index of the last '*' in p, index in t where its match currently ends)
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match (p.get(pi), t.get(ti)) {
            (Some(b'*'), _) => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            (Some(pc), Some(tc)) if pc == tc => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((star, end)) => {
                    backtrack = Some((star, end + 1));
                    pi = star + 1;
                    ti = end + 1;
                }
                None => return false,
            },
        }
    }
    while p.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi == p.len()
}

impl fmt::Display for TopicGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl FromStr for TopicGlob {
    type Err = GrammarError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicGlob::parse(s)
    }
}

impl TryFrom<String> for TopicGlob {
    type Error = GrammarError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        TopicGlob::parse(&s)
    }
}

impl From<TopicGlob> for String {
    fn from(glob: TopicGlob) -> String {
        glob.pattern
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every topic in the seed's per-service lists, for tenant 76953480-3, plus one of another
    /// tenant.
    const SEED_TOPICS: &[&str] = &[
        "smarteros.76953480-3.shopify.order_created",
        "smarteros.76953480-3.shopify.order_updated",
        "smarteros.76953480-3.shopify.order_cancelled",
        "smarteros.76953480-3.shopify.product_created",
        "smarteros.76953480-3.shopify.inventory_updated",
        "smarteros.76953480-3.odoo.sale_order_created",
        "smarteros.76953480-3.odoo.sale_order_confirmed",
        "smarteros.76953480-3.odoo.invoice_created",
        "smarteros.76953480-3.odoo.payment_registered",
        "smarteros.76953480-3.odoo.stock_updated",
        "smarteros.76953480-3.chatwoot.conversation_created",
        "smarteros.76953480-3.chatwoot.message_created",
        "smarteros.76953480-3.chatwoot.agent_assigned",
        "smarteros.76953480-3.chatwoot.conversation_resolved",
        "smarteros.76953480-3.n8n.workflow_started",
        "smarteros.76953480-3.n8n.workflow_completed",
        "smarteros.76953480-3.n8n.workflow_failed",
        "smarteros.76953480-3.n8n.webhook_received",
        "smarteros.76953480-3.botpress.agent_invoked",
        "smarteros.76953480-3.botpress.handoff_triggered",
        "smarteros.76953480-3.botpress.rag_query_executed",
        "smarteros.76953480-3.botpress.intent_classified",
        "smarteros.11111111-1.shopify.order_created",
    ];

    fn selected(pattern: &str) -> Vec<&'static str> {
        let glob = TopicGlob::parse(pattern).unwrap();
        SEED_TOPICS
            .iter()
            .copied()
            .filter(|t| glob.matches(t))
            .collect()
    }

    #[test]
    fn seed_consumer_groups() {
        // audit-logger
        assert_eq!(selected("smarteros.*.*.*"), SEED_TOPICS);
        // metabase-sync: sale_order_* is Odoo's and must not be swept in.
        assert_eq!(
            selected("smarteros.*.*.order_*"),
            [
                "smarteros.76953480-3.shopify.order_created",
                "smarteros.76953480-3.shopify.order_updated",
                "smarteros.76953480-3.shopify.order_cancelled",
                "smarteros.11111111-1.shopify.order_created",
            ]
        );
        // dashboard-realtime
        assert_eq!(
            selected("smarteros.*.shopify.order_created"),
            [
                "smarteros.76953480-3.shopify.order_created",
                "smarteros.11111111-1.shopify.order_created",
            ]
        );
        // alerting-system
        assert_eq!(
            selected("smarteros.*.*.workflow_failed"),
            ["smarteros.76953480-3.n8n.workflow_failed"]
        );
        // email-notifications
        assert_eq!(
            selected("smarteros.*.odoo.invoice_created"),
            ["smarteros.76953480-3.odoo.invoice_created"]
        );
        // whatsapp-bot: the seed lists handoff events under botpress, not chatwoot, so this
        // group's selector picks none of the seed's topics, only a chatwoot one if it appears.
        assert!(selected("smarteros.*.chatwoot.handoff_*").is_empty());
        let g = TopicGlob::parse("smarteros.*.chatwoot.handoff_*").unwrap();
        assert!(g.matches("smarteros.76953480-3.chatwoot.handoff_requested"));
        assert!(!g.matches("smarteros.76953480-3.botpress.handoff_triggered"));
        // audit logger example and retention patterns
        assert_eq!(
            selected("smarteros.*.*.message_created"),
            ["smarteros.76953480-3.chatwoot.message_created"]
        );
        assert_eq!(selected("smarteros.*.*.workflow_*").len(), 3);
    }

    #[test]
    fn tail_wildcard() {
        let g = TopicGlob::parse("smarteros.76953480-3.>").unwrap();
        assert_eq!(
            selected("smarteros.76953480-3.>").len(),
            SEED_TOPICS.len() - 1
        );
        assert!(g.matches("smarteros.76953480-3.x"));
        assert!(!g.matches("smarteros.76953480-3"));
        assert!(!g.matches("smarteros.76953480-30.shopify.order_created"));
        let all = TopicGlob::parse(">").unwrap();
        assert!(all.matches("anything.at.all"));
        assert!(all.matches("x"));
    }

    #[test]
    fn star_within_a_token() {
        let g = TopicGlob::parse("a*b*c").unwrap();
        assert!(g.matches("abc"));
        assert!(g.matches("aXbYc"));
        assert!(g.matches("abbbcbc"));
        assert!(!g.matches("acb"));
        assert!(!g.matches("a.b.c"));
        assert!(
            TopicGlob::parse("*_created")
                .unwrap()
                .matches("order_created")
        );
        assert!(
            !TopicGlob::parse("*_created")
                .unwrap()
                .matches("order_created_x")
        );
        assert!(TopicGlob::parse("order_*").unwrap().matches("order_"));
        assert!(TopicGlob::parse("a.*.b").unwrap().matches("a..b"));
        assert!(TopicGlob::parse("**").unwrap().matches("x"));
    }

    #[test]
    fn no_exponential_backtracking() {
        // A classic blow-up case for naive recursive matchers.
        let pattern = format!("{}b", "a*".repeat(100));
        let g = TopicGlob::parse(&pattern).unwrap();
        assert!(!g.matches(&"a".repeat(240)));
    }

    #[test]
    fn literal_prefix_and_is_literal() {
        let cases = [
            ("smarteros.*.*.order_*", "smarteros.", false),
            ("smarteros.acme.>", "smarteros.acme.", false),
            ("smarteros.acme.shop*.x", "smarteros.acme.shop", false),
            ("*", "", false),
            ("a.b.c", "a.b.c", true),
        ];
        for (pattern, prefix, literal) in cases {
            let g = TopicGlob::parse(pattern).unwrap();
            assert_eq!(g.literal_prefix(), prefix, "{pattern}");
            assert_eq!(g.is_literal(), literal, "{pattern}");
            assert_eq!(g.as_str(), pattern);
            assert_eq!(g.to_string(), pattern);
        }
    }

    #[test]
    fn rejects_with_clear_messages() {
        let cases = [
            ("", "must not be empty"),
            ("a..b", "token 2 is empty"),
            (".a", "token 1 is empty"),
            ("a.", "token 2 is empty"),
            ("a.>.b", "may only be the last token"),
            ("a.b>", "mixes '>'"),
            ("a.>x", "mixes '>'"),
            ("a b", "contains ' '"),
            ("tenant:x", "contains ':'"),
        ];
        for (pattern, needle) in cases {
            let err = TopicGlob::parse(pattern).unwrap_err();
            assert_eq!(err.field(), "topic selector");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{pattern}: {msg}");
        }
        let long = "a".repeat(MAX_GLOB_LEN + 1);
        assert!(matches!(
            TopicGlob::parse(&long),
            Err(GrammarError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_is_a_validated_string() {
        let g = TopicGlob::parse("smarteros.*.*.order_*").unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, "\"smarteros.*.*.order_*\"");
        let back: TopicGlob = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
        assert!(serde_json::from_str::<TopicGlob>("\"a.>.b\"").is_err());
    }

    // ---- properties ----

    /// Reference semantics, written independently of the token-wise matcher: the selector as a
    /// sequence of atoms matched character by character with plain recursion.
    #[derive(Debug, Clone, Copy)]
    enum Atom {
        Char(char),
        /// `*`: any run of non-dot characters.
        Star,
        /// final `>`: anything at all (it follows a literal dot, so at least one token remains).
        Rest,
    }

    fn atoms(pattern: &str) -> Vec<Atom> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let mut out = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            if i > 0 {
                out.push(Atom::Char('.'));
            }
            if *token == ">" {
                out.push(Atom::Rest);
                continue;
            }
            for c in token.chars() {
                out.push(if c == '*' { Atom::Star } else { Atom::Char(c) });
            }
        }
        out
    }

    fn oracle(p: &[Atom], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(Atom::Rest) => true,
            Some(Atom::Char(c)) => t.first() == Some(c) && oracle(&p[1..], &t[1..]),
            Some(Atom::Star) => {
                let max = t.iter().position(|&c| c == '.').unwrap_or(t.len());
                (0..=max).any(|k| oracle(&p[1..], &t[k..]))
            }
        }
    }

    fn oracle_matches(pattern: &str, topic: &str) -> bool {
        let t: Vec<char> = topic.chars().collect();
        oracle(&atoms(pattern), &t)
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_-]{1,6}"
    }

    fn topic_tokens() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(token(), 1..6)
    }

    /// Small alphabets so that random selectors and topics actually collide.
    fn small_glob() -> impl Strategy<Value = String> {
        (prop::collection::vec("[ab*]{1,4}", 1..4), any::<bool>()).prop_map(|(tokens, rest)| {
            let mut s = tokens.join(".");
            if rest {
                s.push_str(".>");
            }
            s
        })
    }

    /// A topic built to fit `pattern` by filling each `*` and `>` with random text.
    fn instantiate(pattern: &str, fill: &[String]) -> String {
        let mut fills = fill.iter().cycle();
        let mut out = String::new();
        for c in pattern.chars() {
            match c {
                '*' => out.push_str(fills.next().map_or("", String::as_str)),
                '>' => {
                    let f = fills.next().map_or("", String::as_str);
                    out.push_str(if f.is_empty() { "x" } else { f });
                }
                c => out.push(c),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn literal_matches_exactly_itself(tokens in topic_tokens(), other in topic_tokens()) {
            let topic = tokens.join(".");
            let g = TopicGlob::parse(&topic).unwrap();
            prop_assert!(g.is_literal());
            prop_assert_eq!(g.literal_prefix(), topic.as_str());
            prop_assert!(g.matches(&topic));
            let other = other.join(".");
            prop_assert_eq!(g.matches(&other), other == topic);
        }

        #[test]
        fn star_token_still_matches(
            tokens in topic_tokens(),
            index in any::<prop::sample::Index>(),
            extra in token(),
        ) {
            let topic = tokens.join(".");
            let i = index.index(tokens.len());
            let mut pattern_tokens = tokens.clone();
            pattern_tokens[i] = "*".to_owned();
            let g = TopicGlob::parse(&pattern_tokens.join(".")).unwrap();
            prop_assert!(g.matches(&topic));

            let mut longer = tokens.clone();
            longer.push(extra);
            prop_assert!(!g.matches(&longer.join(".")));
            if tokens.len() > 1 {
                prop_assert!(!g.matches(&tokens[..tokens.len() - 1].join(".")));
            }
        }

        #[test]
        fn prefix_rest_matches_all_longer_topics(
            first in token(),
            rest in prop::collection::vec(token(), 1..5),
        ) {
            let g = TopicGlob::parse(&format!("{first}.>")).unwrap();
            let topic = format!("{first}.{}", rest.join("."));
            prop_assert!(g.matches(&topic));
            prop_assert!(!g.matches(&first));
            let sibling = format!("{first}x.{}", rest.join("."));
            prop_assert!(!g.matches(&sibling));
        }

        #[test]
        fn agrees_with_oracle_on_random_topics(pattern in small_glob(), topic in "[ab.]{0,10}") {
            let g = TopicGlob::parse(&pattern).unwrap();
            prop_assert_eq!(g.matches(&topic), oracle_matches(&pattern, &topic));
        }

        #[test]
        fn agrees_with_oracle_on_fitted_topics(
            pattern in small_glob(),
            fill in prop::collection::vec("[ab.]{0,3}", 1..4),
        ) {
            let g = TopicGlob::parse(&pattern).unwrap();
            let topic = instantiate(&pattern, &fill);
            let expected = oracle_matches(&pattern, &topic);
            prop_assert_eq!(g.matches(&topic), expected);
            if !fill.iter().any(|f| f.contains('.')) {
                prop_assert!(expected, "{} should fit {}", topic, pattern);
            }
        }

        #[test]
        fn matching_topics_start_with_literal_prefix(
            pattern in small_glob(),
            topic in "[ab.]{0,10}",
        ) {
            let g = TopicGlob::parse(&pattern).unwrap();
            if g.matches(&topic) {
                prop_assert!(topic.starts_with(g.literal_prefix()));
            }
        }

        #[test]
        fn parse_never_panics(s in any::<String>(), topic in any::<String>()) {
            if let Ok(g) = TopicGlob::parse(&s) {
                let _ = g.matches(&topic);
                let _ = g.literal_prefix();
            }
        }

        #[test]
        fn parse_never_panics_on_glob_like_input(s in "[a*>._-]{0,16}", topic in "[a._-]{0,16}") {
            if let Ok(g) = TopicGlob::parse(&s) {
                prop_assert_eq!(g.matches(&topic), oracle_matches(&s, &topic));
            }
        }
    }
}
