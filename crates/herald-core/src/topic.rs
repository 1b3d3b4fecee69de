//! Topic names: Kafka's own rules, and Herald's tenant grammar on top of them.

use crate::error::GrammarError;
use crate::rules::{NameRule, is_lower_alnum, is_lower_token_char, is_topic_char};
use crate::tenant::TenantId;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_LEN: usize = 249;

/// Longest `service` or `event_type` token, and longest grammar prefix.
pub const MAX_TOKEN_LEN: usize = 64;

/// Topics whose names start with this belong to Herald itself (DLQs, audit, offsets).
pub const INTERNAL_TOPIC_PREFIX: &str = "_herald";

/// Streams of real-time channels: internal topics that only the gateway reads and writes, not
/// listed to Kafka or HTTP clients.
pub const CHANNEL_STREAM_PREFIX: &str = "_herald.ch.";

/// The prefix of the seed's topic naming, `smarteros.{tenant_id}.{service}.{event_type}`.
pub const DEFAULT_PREFIX: &str = "smarteros";

const TOPIC_RULE: NameRule = NameRule {
    field: "topic",
    max: MAX_TOPIC_LEN,
    first: is_topic_char,
    rest: is_topic_char,
    rule: "a Kafka topic name is 1 to 249 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
};

const TOKEN_RULE_TEXT: &str = "it must match [a-z0-9][a-z0-9_-]{0,63}: 1 to 64 lowercase \
                               letters, digits, '_' or '-', starting with a letter or digit";

/// Validates `name` against Kafka's topic name rules: 1 to 249 characters from
/// `[A-Za-z0-9._-]`, and neither `.` nor `..`.
pub fn validate_topic_name(name: &str) -> Result<(), GrammarError> {
    TOPIC_RULE.check(name)?;
    if name == "." || name == ".." {
        return Err(GrammarError::ReservedTopicName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Validates a `service` or `event_type` token (or any other lowercase token) against
/// `[a-z0-9][a-z0-9_-]{0,63}`; `field` is the name used in the error message.
pub fn validate_token(field: &'static str, value: &str) -> Result<(), GrammarError> {
    NameRule {
        field,
        max: MAX_TOKEN_LEN,
        first: is_lower_alnum,
        rest: is_lower_token_char,
        rule: TOKEN_RULE_TEXT,
    }
    .check(value)
}

/// The tenant tokens of a topic `{prefix}.{tenant}.{service}.{event_type}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantTopic {
    pub tenant: TenantId,
    pub service: String,
    pub event_type: String,
}

/// What a (valid Kafka) topic name is, according to a [`TopicGrammar`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `{prefix}.{tenant}.{service}.{event_type}`: owned by the tenant.
    Tenant(TenantTopic),
    /// Starts with `_herald`: Herald's own bookkeeping.
    Internal,
    /// Any other Kafka topic: allowed, but carries no tenant ownership.
    Other,
}

/// Herald's topic grammar `{prefix}.{tenant}.{service}.{event_type}`.
///
/// **Invariant:** a name that starts with `{prefix}.` is either a well-formed tenant topic or
/// rejected. Accepting a malformed one as [`TopicKind::Other`] would let `smarteros.acme.x` slip
/// past tenant ownership checks while still looking like Acme's data to every human reader.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicGrammar {
    prefix: String,
}

impl Default for TopicGrammar {
    fn default() -> Self {
        TopicGrammar {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl TopicGrammar {
    /// A grammar with the given prefix, which must match `[a-z0-9][a-z0-9_-]{0,63}`.
    pub fn new(prefix: &str) -> Result<Self, GrammarError> {
        validate_token("prefix", prefix)?;
        Ok(TopicGrammar {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Validates `name` as a Kafka topic name and says whose it is.
    ///
    /// Errors when the name breaks Kafka's rules, or starts with `{prefix}.` without being a
    /// well-formed tenant topic; the error then names the offending token.
    pub fn classify(&self, name: &str) -> Result<TopicKind, GrammarError> {
        validate_topic_name(name)?;
        let Some(rest) = name
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
        else {
            if name.starts_with(INTERNAL_TOPIC_PREFIX) {
                return Ok(TopicKind::Internal);
            }
            return Ok(TopicKind::Other);
        };
        let mut tokens = rest.split('.');
        let (Some(tenant), Some(service), Some(event_type), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(GrammarError::TenantTopicShape {
                name: name.to_owned(),
                prefix: self.prefix.clone(),
                tokens: name.split('.').count(),
            });
        };
        let in_topic = |error: GrammarError| GrammarError::InTopic {
            topic: name.to_owned(),
            error: Box::new(error),
        };
        let tenant = TenantId::parse(tenant).map_err(in_topic)?;
        validate_token("service", service).map_err(in_topic)?;
        validate_token("event_type", event_type).map_err(in_topic)?;
        Ok(TopicKind::Tenant(TenantTopic {
            tenant,
            service: service.to_owned(),
            event_type: event_type.to_owned(),
        }))
    }

    /// The topic `{prefix}.{tenant}.{service}.{event_type}`.
    ///
    /// Errors when `service` or `event_type` break the token rule, or when the four parts
    /// together exceed Kafka's 249-character limit (possible only with near-maximal parts).
    pub fn topic_for(
        &self,
        tenant: &TenantId,
        service: &str,
        event_type: &str,
    ) -> Result<String, GrammarError> {
        validate_token("service", service)?;
        validate_token("event_type", event_type)?;
        let name = self.join(tenant, service, event_type);
        validate_topic_name(&name)?;
        Ok(name)
    }

    /// The tenant that owns `name`, if it is a well-formed tenant topic.
    pub fn tenant_of(&self, name: &str) -> Option<TenantId> {
        match self.classify(name) {
            Ok(TopicKind::Tenant(t)) => Some(t.tenant),
            Ok(TopicKind::Internal | TopicKind::Other) | Err(_) => None,
        }
    }

    /// Formats without validation; for callers whose parts are already validated.
    pub(crate) fn join(&self, tenant: &TenantId, service: &str, event_type: &str) -> String {
        let mut name = String::with_capacity(
            self.prefix.len() + tenant.as_str().len() + service.len() + event_type.len() + 3,
        );
        for (i, part) in [self.prefix.as_str(), tenant.as_str(), service, event_type]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                name.push('.');
            }
            name.push_str(part);
        }
        name
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED_TOPICS: &[&str] = &[
        "smarteros.76953480-3.shopify.order_created",
        "smarteros.76953480-3.odoo.sale_order_confirmed",
        "smarteros.76953480-3.chatwoot.message_created",
        "smarteros.76953480-3.n8n.workflow_completed",
        "smarteros.76953480-3.botpress.handoff_triggered",
        "smarteros.76953480-3.test.event_test",
    ];

    #[test]
    fn kafka_topic_rules() {
        assert!(validate_topic_name("a").is_ok());
        assert!(validate_topic_name("a..b").is_ok());
        assert!(validate_topic_name("...").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(matches!(
            validate_topic_name(&"a".repeat(250)),
            Err(GrammarError::TooLong { max: 249, .. })
        ));
        assert!(matches!(
            validate_topic_name(""),
            Err(GrammarError::Empty { field: "topic", .. })
        ));
        assert!(matches!(
            validate_topic_name("."),
            Err(GrammarError::ReservedTopicName { .. })
        ));
        assert!(matches!(
            validate_topic_name(".."),
            Err(GrammarError::ReservedTopicName { .. })
        ));
        for bad in ["a b", "a/b", "a:b", "a*", "é"] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(GrammarError::InvalidChar { .. })
                ),
                "{bad}"
            );
        }
        // Kafka allows a leading '_' or '-' in topic names.
        assert!(validate_topic_name("_herald.dlq.x").is_ok());
        assert!(validate_topic_name("-x").is_ok());
    }

    #[test]
    fn classifies_seed_topics() {
        let g = TopicGrammar::default();
        assert_eq!(g.prefix(), "smarteros");
        for topic in SEED_TOPICS {
            let TopicKind::Tenant(t) = g.classify(topic).unwrap() else {
                panic!("{topic} is not a tenant topic");
            };
            assert_eq!(t.tenant.as_str(), "76953480-3");
            let expected = g.topic_for(&t.tenant, &t.service, &t.event_type).unwrap();
            assert_eq!(&expected, topic);
            assert_eq!(g.tenant_of(topic).unwrap().as_str(), "76953480-3");
        }
    }

    #[test]
    fn internal_and_other() {
        let g = TopicGrammar::default();
        assert_eq!(
            g.classify("_herald.dlq.audit").unwrap(),
            TopicKind::Internal
        );
        assert_eq!(g.classify("_herald").unwrap(), TopicKind::Internal);
        assert_eq!(g.classify("orders").unwrap(), TopicKind::Other);
        assert_eq!(g.classify("smarteros").unwrap(), TopicKind::Other);
        assert_eq!(g.classify("smarterosx.a.b.c").unwrap(), TopicKind::Other);
        assert_eq!(g.classify("__consumer_offsets").unwrap(), TopicKind::Other);
        assert_eq!(g.tenant_of("orders"), None);
        assert_eq!(g.tenant_of("smarteros.a.b"), None);
    }

    #[test]
    fn malformed_tenant_topics_name_the_token() {
        let g = TopicGrammar::default();
        let cases = [
            ("smarteros.a.b", "topic"),
            ("smarteros.a.b.c.d", "topic"),
            ("smarteros.", "topic"),
            ("smarteros..shopify.order_created", "tenant_id"),
            ("smarteros.-x.shopify.order_created", "tenant_id"),
            ("smarteros.acme.Shopify.order_created", "service"),
            ("smarteros.acme..order_created", "service"),
            ("smarteros.acme.shopify.Order", "event_type"),
            ("smarteros.acme.shopify._x", "event_type"),
        ];
        for (topic, field) in cases {
            let err = g.classify(topic).unwrap_err();
            assert_eq!(err.field(), field, "{topic}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(field), "{msg}");
            assert!(msg.contains(topic), "{msg}");
        }
        let msg = g
            .classify("smarteros.acme.Shopify.order_created")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("[a-z0-9][a-z0-9_-]{0,63}"), "{msg}");
        let msg = g.classify("smarteros.a.b").unwrap_err().to_string();
        assert!(
            msg.contains("smarteros.{tenant_id}.{service}.{event_type}"),
            "{msg}"
        );
    }

    #[test]
    fn custom_prefix() {
        let g = TopicGrammar::new("neo").unwrap();
        assert!(matches!(
            g.classify("neo.t1.api.deployed").unwrap(),
            TopicKind::Tenant(_)
        ));
        assert_eq!(
            g.classify("smarteros.t1.api.deployed").unwrap(),
            TopicKind::Other
        );
        for bad in ["", "Neo", "_neo", "a.b", &"a".repeat(65)] {
            let err = TopicGrammar::new(bad).unwrap_err();
            assert_eq!(err.field(), "prefix", "{bad}");
        }
    }

    #[test]
    fn topic_for_validates_parts_and_length() {
        let g = TopicGrammar::default();
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(
            g.topic_for(&t, "shopify", "order_created").unwrap(),
            "smarteros.acme.shopify.order_created"
        );
        assert_eq!(
            g.topic_for(&t, "Shopify", "order_created")
                .unwrap_err()
                .field(),
            "service"
        );
        assert_eq!(
            g.topic_for(&t, "shopify", "order.created")
                .unwrap_err()
                .field(),
            "event_type"
        );
        let long_g = TopicGrammar::new(&"p".repeat(64)).unwrap();
        let long_t = TenantId::parse(&"t".repeat(64)).unwrap();
        let err = long_g
            .topic_for(&long_t, &"s".repeat(64), &"e".repeat(64))
            .unwrap_err();
        assert!(matches!(
            err,
            GrammarError::TooLong {
                field: "topic",
                len: 259,
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn topic_for_round_trips(
            tenant in "[A-Za-z0-9][A-Za-z0-9_-]{0,20}",
            service in "[a-z0-9][a-z0-9_-]{0,20}",
            event_type in "[a-z0-9][a-z0-9_-]{0,20}",
        ) {
            let g = TopicGrammar::default();
            let tenant = TenantId::parse(&tenant).unwrap();
            let name = g.topic_for(&tenant, &service, &event_type).unwrap();
            prop_assert_eq!(
                g.classify(&name).unwrap(),
                TopicKind::Tenant(TenantTopic { tenant, service, event_type })
            );
        }

        #[test]
        fn classify_never_panics(s in any::<String>()) {
            let _ = TopicGrammar::default().classify(&s);
        }

        #[test]
        fn classify_never_panics_on_near_misses(s in "smarteros[.a-zA-Z0-9_*-]{0,30}") {
            let g = TopicGrammar::default();
            if let Ok(TopicKind::Tenant(t)) = g.classify(&s) {
                prop_assert_eq!(g.join(&t.tenant, &t.service, &t.event_type), s);
            }
        }
    }
}
