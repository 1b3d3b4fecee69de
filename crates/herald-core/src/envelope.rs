//! The event envelope: the seed's base event, validated.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::error::{EnvelopeError, preview};
use crate::tenant::TenantId;
use crate::topic::{TenantTopic, TopicGrammar, TopicKind, validate_token};

/// Longest `user_id`, in characters.
pub const MAX_USER_ID_LEN: usize = 256;

/// Longest `metadata.ip_address`, `metadata.user_agent` or `metadata.trace_id`, in characters.
pub const MAX_METADATA_FIELD_LEN: usize = 1024;

/// The top-level fields of an envelope, in the order they are written.
pub const ENVELOPE_FIELDS: [&str; 8] = [
    "event_id",
    "event_type",
    "tenant_id",
    "service",
    "timestamp",
    "user_id",
    "data",
    "metadata",
];

const METADATA_FIELDS: [&str; 3] = ["ip_address", "user_agent", "trace_id"];

/// A validated event:
///
/// ```json
/// {"event_id":"…","event_type":"order_created","tenant_id":"76953480-3","service":"shopify",
///  "timestamp":"2025-11-23T12:00:00Z","user_id":"user_abc","data":{},
///  "metadata":{"ip_address":"190.45.12.34","user_agent":"Mozilla/5.0...","trace_id":"trace_xyz"}}
/// ```
///
/// Values made by [`parse_envelope`] (or by deserializing) hold these invariants; the fields are
/// public for reading and for building envelopes in code, and whoever builds one by hand keeps
/// them:
/// - `event_id` is a lowercase hyphenated UUID;
/// - `event_type` and `service` match `[a-z0-9][a-z0-9_-]{0,63}`;
/// - `timestamp` is RFC 3339 in UTC with a `Z` suffix, fractional seconds only when non-zero;
/// - `user_id`, when present, is 1 to 256 characters;
/// - `extra` holds no key from [`ENVELOPE_FIELDS`] (such keys are skipped when serializing).
///
/// Serializes with the fields in the order above, `user_id` and `metadata` omitted when `None`,
/// then the `extra` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: TenantId,
    pub service: String,
    pub timestamp: String,
    pub user_id: Option<String>,
    pub data: Map<String, Value>,
    pub metadata: Option<EnvelopeMetadata>,
    /// Top-level fields beyond the envelope's own, kept under [`UnknownFields::Allow`].
    pub extra: Map<String, Value>,
}

/// The envelope's `metadata` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnvelopeMetadata {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
    /// Any other metadata keys; metadata is free-form beyond the three known ones.
    pub extra: Map<String, Value>,
}

/// What [`parse_envelope`] does with top-level fields that are not part of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UnknownFields {
    /// Keep them in [`Envelope::extra`] and write them back out.
    #[default]
    Allow,
    /// Refuse the event, naming the first unknown top-level field. Keys inside `metadata` stay
    /// free-form in both modes.
    Reject,
}

impl Envelope {
    /// The topic this event belongs to: `{prefix}.{tenant_id}.{service}.{event_type}`.
    ///
    /// Not re-validated: with a 64-character prefix, tenant id, service and event type the name
    /// exceeds Kafka's 249 characters, and the broker's own topic validation reports that. Use
    /// [`TopicGrammar::topic_for`] where the error is wanted here.
    pub fn topic(&self, g: &TopicGrammar) -> String {
        g.join(&self.tenant_id, &self.service, &self.event_type)
    }

    /// The envelope as compact JSON.
    pub fn to_json_vec(&self) -> Vec<u8> {
        // serde_json fails only on non-string map keys or a failing writer; every key here is a
        // string and `Vec` never fails, so the fallback is unreachable.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event_id", &self.event_id)?;
        map.serialize_entry("event_type", &self.event_type)?;
        map.serialize_entry("tenant_id", self.tenant_id.as_str())?;
        map.serialize_entry("service", &self.service)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        if let Some(user_id) = &self.user_id {
            map.serialize_entry("user_id", user_id)?;
        }
        map.serialize_entry("data", &self.data)?;
        if let Some(metadata) = &self.metadata {
            map.serialize_entry("metadata", metadata)?;
        }
        // A duplicate key would be read back differently by different JSON parsers (first
        // wins vs last wins), so a colliding extra key is dropped rather than written twice.
        for (k, v) in &self.extra {
            if !ENVELOPE_FIELDS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl Serialize for EnvelopeMetadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in
            METADATA_FIELDS
                .iter()
                .zip([&self.ip_address, &self.user_agent, &self.trace_id])
        {
            if let Some(v) = value {
                map.serialize_entry(key, v)?;
            }
        }
        for (k, v) in &self.extra {
            if !METADATA_FIELDS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// Reads a stored envelope. Unlike [`parse_envelope`], `event_id` and `timestamp` are required
/// (a stored event always has them, and deserializing must not invent them); unknown fields are
/// kept.
impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        parse(value, UnknownFields::Allow, None).map_err(de::Error::custom)
    }
}

/// Validates a JSON value as an event envelope and normalises it.
///
/// - `event_id`: UUID in any form `uuid` accepts, normalised to lowercase hyphenated; a v4 id
///   is generated when it is absent or `null`.
/// - `timestamp`: RFC 3339 with any offset, or a naive `YYYY-MM-DDTHH:MM:SS[.fraction]` as
///   Python's `datetime.utcnow().isoformat()` writes it (taken as UTC); normalised to UTC with
///   `Z`. Taken from `now` when absent or `null`.
/// - `user_id` and `metadata` may be absent or `null`.
///
/// Fields are checked in [`ENVELOPE_FIELDS`] order and the first failure is returned.
pub fn parse_envelope(
    value: Value,
    unknown: UnknownFields,
    now: OffsetDateTime,
) -> Result<Envelope, EnvelopeError> {
    parse(value, unknown, Some(now))
}

/// `now` is `None` when missing ids and timestamps must be an error rather than generated.
fn parse(
    value: Value,
    unknown: UnknownFields,
    now: Option<OffsetDateTime>,
) -> Result<Envelope, EnvelopeError> {
    let Value::Object(mut obj) = value else {
        return Err(EnvelopeError::new(
            "event",
            format!("event must be a JSON object, got {}", kind(&value)),
        ));
    };

    let event_id = match obj.remove("event_id") {
        None | Some(Value::Null) if now.is_some() => uuid::Uuid::new_v4().hyphenated().to_string(),
        None | Some(Value::Null) => return Err(missing("event_id", "a UUID string")),
        Some(Value::String(s)) => parse_uuid(&s)?,
        Some(other) => return Err(wrong_type("event_id", "a UUID string", &other)),
    };
    let event_type = required_string(&mut obj, "event_type")?;
    validate_token("event_type", &event_type)?;
    let tenant_id = TenantId::try_from(required_string(&mut obj, "tenant_id")?)?;
    let service = required_string(&mut obj, "service")?;
    validate_token("service", &service)?;
    let timestamp = match (obj.remove("timestamp"), now) {
        (None | Some(Value::Null), Some(now)) => format_utc("timestamp", now)?,
        (None | Some(Value::Null), None) => {
            return Err(missing("timestamp", "an RFC 3339 timestamp string"));
        }
        (Some(Value::String(s)), _) => parse_timestamp(&s)?,
        (Some(other), _) => {
            return Err(wrong_type(
                "timestamp",
                "an RFC 3339 timestamp string",
                &other,
            ));
        }
    };
    let user_id = match obj.remove("user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let len = s.chars().count();
            if len == 0 || len > MAX_USER_ID_LEN {
                return Err(EnvelopeError::new(
                    "user_id",
                    format!(
                        "must be 1 to {MAX_USER_ID_LEN} characters long, got {len}; omit the field \
                         when there is no user"
                    ),
                ));
            }
            Some(s)
        }
        Some(other) => return Err(wrong_type("user_id", "a string", &other)),
    };
    let data = match obj.remove("data") {
        Some(Value::Object(m)) => m,
        None => return Err(missing("data", "a JSON object")),
        Some(other) => return Err(wrong_type("data", "a JSON object", &other)),
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(parse_metadata(m)?),
        Some(other) => return Err(wrong_type("metadata", "a JSON object", &other)),
    };

    if unknown == UnknownFields::Reject
        && let Some(key) = obj.keys().next()
    {
        return Err(EnvelopeError::new(
            preview(key),
            format!(
                "is not an envelope field (known fields: {}); put event-specific values inside \
                 \"data\"",
                ENVELOPE_FIELDS.join(", ")
            ),
        ));
    }

    Ok(Envelope {
        event_id,
        event_type,
        tenant_id,
        service,
        timestamp,
        user_id,
        data,
        metadata,
        extra: obj,
    })
}

fn parse_metadata(mut m: Map<String, Value>) -> Result<EnvelopeMetadata, EnvelopeError> {
    let mut field = |name: &'static str| -> Result<Option<String>, EnvelopeError> {
        let path = || format!("metadata.{name}");
        match m.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let len = s.chars().count();
                if len > MAX_METADATA_FIELD_LEN {
                    return Err(EnvelopeError::new(
                        path(),
                        format!(
                            "is {len} characters long, more than the \
                             {MAX_METADATA_FIELD_LEN} allowed"
                        ),
                    ));
                }
                Ok(Some(s))
            }
            Some(other) => Err(EnvelopeError::new(
                path(),
                format!("must be a string, got {}", kind(&other)),
            )),
        }
    };
    let ip_address = field("ip_address")?;
    let user_agent = field("user_agent")?;
    let trace_id = field("trace_id")?;
    Ok(EnvelopeMetadata {
        ip_address,
        user_agent,
        trace_id,
        extra: m,
    })
}

fn required_string(
    obj: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, EnvelopeError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None => Err(missing(field, "a string")),
        Some(other) => Err(wrong_type(field, "a string", &other)),
    }
}

fn missing(field: &str, expected: &str) -> EnvelopeError {
    EnvelopeError::new(field, format!("is required and must be {expected}"))
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> EnvelopeError {
    EnvelopeError::new(field, format!("must be {expected}, got {}", kind(got)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a JSON object",
    }
}

fn parse_uuid(s: &str) -> Result<String, EnvelopeError> {
    match uuid::Uuid::try_parse(s) {
        Ok(id) => Ok(id.hyphenated().to_string()),
        Err(_) => Err(EnvelopeError::new(
            "event_id",
            format!(
                "{:?} is not a UUID; expected the form 8-4-4-4-12 hex digits, e.g. \
                 \"0f8fad5b-d9cb-469f-a165-70867728950e\", or omit the field to have one generated",
                preview(s)
            ),
        )),
    }
}

fn parse_timestamp(s: &str) -> Result<String, EnvelopeError> {
    let naive = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let parsed = OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| {
            PrimitiveDateTime::parse(s, naive)
                .ok()
                .map(PrimitiveDateTime::assume_utc)
        })
        .ok_or_else(|| {
            EnvelopeError::new(
                "timestamp",
                format!(
                    "{:?} is not an RFC 3339 timestamp; expected e.g. \"2025-11-23T12:00:00Z\" or \
                     \"2025-11-23T09:00:00.250-03:00\" (a timestamp without offset, as Python's \
                     isoformat() writes it, is taken as UTC), or omit the field to use the \
                     time of receipt",
                    preview(s)
                ),
            )
        })?;
    format_utc("timestamp", parsed)
}

fn format_utc(field: &str, t: OffsetDateTime) -> Result<String, EnvelopeError> {
    // Converting can cross a year boundary, and RFC 3339 only has years 0000 to 9999.
    t.checked_to_offset(UtcOffset::UTC)
        .and_then(|utc| utc.format(&Rfc3339).ok())
        .ok_or_else(|| {
            EnvelopeError::new(
                field,
                "is outside the range RFC 3339 can express in UTC (years 0000 to 9999)",
            )
        })
}

/// On the Kafka produce path: refuses a record whose JSON value claims a `tenant_id`, `service`
/// or `event_type` other than the tenant topic it is produced to.
///
/// Everything else passes: non-tenant topics (and names that are not valid topics, which the
/// caller rejects on its own), values that are not JSON or not a JSON object, and objects
/// without those fields as strings. Only string values are compared. Every occurrence of a
/// duplicated key is checked, because JSON readers disagree on which occurrence wins.
pub fn check_value_against_topic(
    g: &TopicGrammar,
    topic: &str,
    value: &[u8],
) -> Result<(), EnvelopeError> {
    // Raw (non-JSON) records are the common non-envelope case; looking at one byte keeps them
    // from costing a parse.
    if !looks_like_object(value) {
        return Ok(());
    }
    let Ok(TopicKind::Tenant(t)) = g.classify(topic) else {
        return Ok(());
    };
    check_value_against_tenant_topic(&t, topic, value)
}

fn looks_like_object(value: &[u8]) -> bool {
    let first = value
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    first == Some(&b'{')
}

/// [`check_value_against_topic`] for a topic already classified, so that checking every record
/// of a batch parses the topic name once.
pub fn check_value_against_tenant_topic(
    t: &TenantTopic,
    topic: &str,
    value: &[u8],
) -> Result<(), EnvelopeError> {
    if !looks_like_object(value) {
        return Ok(());
    }
    let expected = Expected {
        topic,
        tenant_id: t.tenant.as_str(),
        service: &t.service,
        event_type: &t.event_type,
    };
    let mut de = serde_json::Deserializer::from_slice(value);
    match de.deserialize_map(ProbeVisitor(&expected)) {
        Ok(Some(mismatch)) if de.end().is_ok() => Err(mismatch),
        // Not JSON after all: stored raw, and readers will not take it for an envelope.
        Ok(_) | Err(_) => Ok(()),
    }
}

struct Expected<'a> {
    topic: &'a str,
    tenant_id: &'a str,
    service: &'a str,
    event_type: &'a str,
}

/// Walks a JSON object's keys, decoding only the three checked fields and skipping the rest.
struct ProbeVisitor<'e, 'a>(&'e Expected<'a>);

impl<'de> Visitor<'de> for ProbeVisitor<'_, '_> {
    type Value = Option<EnvelopeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut first_mismatch = None;
        while let Some(key) = map.next_key::<ProbeKey>()? {
            let (field, want) = match key {
                ProbeKey::TenantId => ("tenant_id", self.0.tenant_id),
                ProbeKey::Service => ("service", self.0.service),
                ProbeKey::EventType => ("event_type", self.0.event_type),
                ProbeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            // The whole document must still be read to know it is JSON at all.
            if let Value::String(got) = map.next_value::<Value>()?
                && got != want
                && first_mismatch.is_none()
            {
                first_mismatch = Some(EnvelopeError::new(
                    field,
                    format!("{:?} disagrees with topic {}", preview(&got), self.0.topic),
                ));
            }
        }
        Ok(first_mismatch)
    }
}

enum ProbeKey {
    TenantId,
    Service,
    EventType,
    Other,
}

impl<'de> Deserialize<'de> for ProbeKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ProbeKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<ProbeKey, E> {
                Ok(match key {
                    "tenant_id" => ProbeKey::TenantId,
                    "service" => ProbeKey::Service,
                    "event_type" => ProbeKey::EventType,
                    _ => ProbeKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-11-23 12:34:56.5 UTC);
    const ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn seed() -> Value {
        json!({
            "event_id": ID,
            "event_type": "order_created",
            "tenant_id": "76953480-3",
            "service": "shopify",
            "timestamp": "2025-11-23T12:00:00Z",
            "user_id": "user_abc",
            "data": {},
            "metadata": {
                "ip_address": "190.45.12.34",
                "user_agent": "Mozilla/5.0...",
                "trace_id": "trace_xyz"
            }
        })
    }

    fn parse_ok(v: Value) -> Envelope {
        parse_envelope(v, UnknownFields::Reject, NOW).unwrap()
    }

    fn parse_err(v: Value) -> EnvelopeError {
        parse_envelope(v, UnknownFields::Reject, NOW).unwrap_err()
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = seed();
        v.as_object_mut().unwrap().insert(field.to_owned(), value);
        v
    }

    fn without(field: &str) -> Value {
        let mut v = seed();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    /// Found by the `envelope` fuzz target: a long decimal in `data` parsed to a float one
    /// unit in the last place off, so the stored text read back as a different number.
    #[test]
    fn numbers_in_data_survive_being_stored_and_read_back() {
        let text = br#"{"event_type":"order_created","tenant_id":"76953480-3","service":"shop","data":{"n":4507999999999999999999999999999999999999999999999999997999999999999999999999999999999999999999999989469}}"#;
        let env = parse_envelope(
            serde_json::from_slice(text).unwrap(),
            UnknownFields::Reject,
            NOW,
        )
        .unwrap();
        let stored = env.to_json_vec();
        let back = parse_envelope(
            serde_json::from_slice(&stored).unwrap(),
            UnknownFields::Reject,
            NOW,
        )
        .unwrap();
        assert_eq!(env, back, "stored as {}", String::from_utf8_lossy(&stored));
    }

    #[test]
    fn seed_example_round_trips() {
        let env = parse_ok(seed());
        assert_eq!(env.event_id, ID);
        assert_eq!(env.tenant_id.as_str(), "76953480-3");
        assert_eq!(env.user_id.as_deref(), Some("user_abc"));
        let meta = env.metadata.as_ref().unwrap();
        assert_eq!(meta.trace_id.as_deref(), Some("trace_xyz"));
        assert_eq!(
            env.topic(&TopicGrammar::default()),
            "smarteros.76953480-3.shopify.order_created"
        );

        let bytes = env.to_json_vec();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"event_id":"{ID}","event_type":"order_created","tenant_id":"76953480-3","service":"shopify","timestamp":"2025-11-23T12:00:00Z","user_id":"user_abc","data":{{}},"metadata":{{"ip_address":"190.45.12.34","user_agent":"Mozilla/5.0...","trace_id":"trace_xyz"}}}}"#
            )
        );
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, seed());
        let typed: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(typed, env);
    }

    #[test]
    fn seed_payload_examples_parse() {
        // The seed's Shopify and Chatwoot payloads carry no id or timestamp.
        let shopify = json!({
            "event_type": "order_created",
            "tenant_id": "76953480-3",
            "service": "shopify",
            "data": {"order_id": 450789469, "order_number": "#1234", "total_price": "199990",
                     "customer_email": "cliente@example.com", "line_items": []}
        });
        let env = parse_ok(shopify);
        assert_eq!(env.data["order_id"], 450789469);
        let chatwoot = json!({
            "event_type": "message_created",
            "tenant_id": "76953480-3",
            "service": "chatwoot",
            "data": {"conversation_id": 123, "message": "Necesito ayuda", "confidence": 0.89}
        });
        assert_eq!(parse_ok(chatwoot).service, "chatwoot");
    }

    #[test]
    fn generates_event_id_and_timestamp() {
        let mut v = without("event_id");
        v.as_object_mut().unwrap().remove("timestamp");
        let a = parse_ok(v.clone());
        let b = parse_ok(v);
        assert_ne!(a.event_id, b.event_id);
        let id = uuid::Uuid::parse_str(&a.event_id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(a.event_id, id.hyphenated().to_string());
        assert_eq!(a.timestamp, "2025-11-23T12:34:56.5Z");

        let nulls = with("event_id", Value::Null);
        let nulls = {
            let mut n = nulls;
            n.as_object_mut()
                .unwrap()
                .insert("timestamp".into(), Value::Null);
            n
        };
        let c = parse_ok(nulls);
        assert_eq!(c.timestamp, "2025-11-23T12:34:56.5Z");
        assert_eq!(
            uuid::Uuid::parse_str(&c.event_id)
                .unwrap()
                .get_version_num(),
            4
        );

        let offset_now = datetime!(2025-11-23 09:00:00 -3);
        let d = parse_envelope(without("timestamp"), UnknownFields::Allow, offset_now).unwrap();
        assert_eq!(d.timestamp, "2025-11-23T12:00:00Z");
    }

    #[test]
    fn deserialize_requires_id_and_timestamp() {
        let err = serde_json::from_value::<Envelope>(without("event_id")).unwrap_err();
        assert!(err.to_string().contains("event_id"), "{err}");
        let err = serde_json::from_value::<Envelope>(without("timestamp")).unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
    }

    #[test]
    fn normalises_event_id() {
        let upper = ID.to_uppercase();
        assert_eq!(parse_ok(with("event_id", json!(upper))).event_id, ID);
        let simple = ID.replace('-', "");
        assert_eq!(parse_ok(with("event_id", json!(simple))).event_id, ID);
    }

    #[test]
    fn timestamps() {
        let cases = [
            ("2025-11-23T12:00:00Z", "2025-11-23T12:00:00Z"),
            ("2025-11-23T12:00:00.123Z", "2025-11-23T12:00:00.123Z"),
            ("2025-11-23T09:00:00-03:00", "2025-11-23T12:00:00Z"),
            ("2025-11-23T21:30:00.5+09:30", "2025-11-23T12:00:00.5Z"),
            ("2025-11-23T12:00:00+00:00", "2025-11-23T12:00:00Z"),
            // datetime.utcnow().isoformat(), with and without microseconds
            ("2025-11-23T12:00:00.123456", "2025-11-23T12:00:00.123456Z"),
            ("2025-11-23T12:00:00", "2025-11-23T12:00:00Z"),
            ("2025-12-31T23:30:00-01:00", "2026-01-01T00:30:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_ok(with("timestamp", json!(input))).timestamp,
                expected,
                "{input}"
            );
        }
        for bad in [
            "",
            "yesterday",
            "2025-11-23",
            "2025-11-23 12:00:00",
            "2025-13-01T00:00:00Z",
            "2025-11-23T25:00:00Z",
            "9999-12-31T23:00:00-05:00",
            "1700000000",
        ] {
            let err = parse_err(with("timestamp", json!(bad)));
            assert_eq!(err.field, "timestamp", "{bad}: {err}");
        }
        let err = parse_err(with("timestamp", json!(1_700_000_000)));
        assert_eq!(
            err.to_string(),
            "field \"timestamp\": must be an RFC 3339 timestamp string, got a number"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (with("event_id", json!("uuid")), "event_id"),
            (with("event_id", json!(42)), "event_id"),
            (with("event_type", json!(1)), "event_type"),
            (with("event_type", json!("Order_Created")), "event_type"),
            (with("event_type", json!("order.created")), "event_type"),
            (without("event_type"), "event_type"),
            (with("tenant_id", json!("a.b")), "tenant_id"),
            (with("tenant_id", json!("a*")), "tenant_id"),
            (with("tenant_id", json!("..")), "tenant_id"),
            (with("tenant_id", json!("a/b")), "tenant_id"),
            (with("tenant_id", json!("a:b")), "tenant_id"),
            (with("tenant_id", json!("")), "tenant_id"),
            (with("tenant_id", json!("x".repeat(65))), "tenant_id"),
            (with("tenant_id", json!(76953480)), "tenant_id"),
            (with("tenant_id", Value::Null), "tenant_id"),
            (without("tenant_id"), "tenant_id"),
            (with("service", json!("Shopify")), "service"),
            (with("service", json!(["shopify"])), "service"),
            (without("service"), "service"),
            (with("data", json!([])), "data"),
            (with("data", json!("x")), "data"),
            (with("data", Value::Null), "data"),
            (without("data"), "data"),
            (with("user_id", json!("")), "user_id"),
            (with("user_id", json!("u".repeat(257))), "user_id"),
            (with("user_id", json!(7)), "user_id"),
            (with("metadata", json!("x")), "metadata"),
            (
                with("metadata", json!({"trace_id": 1})),
                "metadata.trace_id",
            ),
            (
                with("metadata", json!({"user_agent": "a".repeat(1025)})),
                "metadata.user_agent",
            ),
            (json!([seed()]), "event"),
            (json!("event"), "event"),
        ];
        for (value, field) in cases {
            let err = parse_err(value.clone());
            assert_eq!(err.field, field, "{value}: {err}");
            assert!(
                err.to_string().starts_with(&format!("field \"{field}\": ")),
                "{err}"
            );
        }
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(
            parse_err(with("data", json!("x"))).to_string(),
            "field \"data\": must be a JSON object, got a string"
        );
        assert_eq!(
            parse_err(json!([])).to_string(),
            "field \"event\": event must be a JSON object, got an array"
        );
        let msg = parse_err(with("tenant_id", json!("a.b"))).to_string();
        assert!(msg.contains("'.'"), "{msg}");
        assert!(msg.contains("[A-Za-z0-9][A-Za-z0-9_-]{0,63}"), "{msg}");
        let msg = parse_err(with("service", json!("Shopify"))).to_string();
        assert!(msg.contains("[a-z0-9][a-z0-9_-]{0,63}"), "{msg}");
        let msg = parse_err(with("event_id", json!("uuid"))).to_string();
        assert!(msg.contains("not a UUID"), "{msg}");
    }

    #[test]
    fn unknown_fields() {
        let v = with("source", json!("pos"));
        let err = parse_envelope(v.clone(), UnknownFields::Reject, NOW).unwrap_err();
        assert_eq!(err.field, "source");
        assert!(err.message.contains("data"), "{err}");

        let env = parse_envelope(v, UnknownFields::Allow, NOW).unwrap();
        assert_eq!(env.extra.get("source"), Some(&json!("pos")));
        let text = String::from_utf8(env.to_json_vec()).unwrap();
        assert!(text.ends_with(r#","source":"pos"}"#), "{text}");

        // Metadata is free-form in both modes.
        let v = with("metadata", json!({"trace_id": "t", "region": "cl"}));
        let env = parse_ok(v);
        let meta = env.metadata.unwrap();
        assert_eq!(meta.extra.get("region"), Some(&json!("cl")));
    }

    #[test]
    fn serialization_omits_absent_optionals_and_colliding_extras() {
        let mut env = parse_ok(without("user_id"));
        env.metadata = None;
        env.extra.insert("tenant_id".into(), json!("other"));
        env.extra.insert("z".into(), json!(1));
        let v: Value = serde_json::from_slice(&env.to_json_vec()).unwrap();
        let obj = v.as_object().unwrap();
        assert!(!obj.contains_key("user_id"));
        assert!(!obj.contains_key("metadata"));
        assert_eq!(obj["tenant_id"], "76953480-3");
        assert_eq!(obj["z"], 1);
        let text = String::from_utf8(env.to_json_vec()).unwrap();
        assert_eq!(text.matches("tenant_id").count(), 1);
    }

    #[test]
    fn check_value_against_topic_cases() {
        let g = TopicGrammar::default();
        let topic = "smarteros.456.shopify.order_created";
        let check = |v: &[u8]| check_value_against_topic(&g, topic, v);

        assert!(
            check(br#"{"tenant_id":"456","service":"shopify","event_type":"order_created"}"#)
                .is_ok()
        );
        assert!(check(br#"{"test": "event"}"#).is_ok());
        assert!(check(b"plain text").is_ok());
        assert!(check(b"").is_ok());
        assert!(check(br#"["tenant_id","123"]"#).is_ok());
        assert!(check(br#""tenant_id""#).is_ok());
        assert!(check(br#"{"tenant_id": 123}"#).is_ok());
        assert!(check(br#"{"tenant_id": "123", broken"#).is_ok());
        assert!(check(br#"{"data": {"tenant_id": "123"}}"#).is_ok());

        let err = check(br#"{"tenant_id":"123","data":{}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field \"tenant_id\": \"123\" disagrees with topic smarteros.456.shopify.order_created"
        );
        let err = check(b"  \n {\"service\": \"odoo\"}").unwrap_err();
        assert_eq!(err.field, "service");
        let err = check(br#"{"event_type":"order_updated"}"#).unwrap_err();
        assert_eq!(err.field, "event_type");
        // Escaped keys are the same key to every JSON reader.
        let err = check(br#"{"tenant\u005fid":"123"}"#).unwrap_err();
        assert_eq!(err.field, "tenant_id");
        // A duplicate must not hide a mismatch, whichever occurrence a reader keeps.
        assert!(check(br#"{"tenant_id":"456","tenant_id":"123"}"#).is_err());
        assert!(check(br#"{"tenant_id":"123","tenant_id":"456"}"#).is_err());

        // Non-tenant topics are not checked.
        let bad = br#"{"tenant_id":"123"}"#;
        assert!(check_value_against_topic(&g, "orders", bad).is_ok());
        assert!(check_value_against_topic(&g, "_herald.dlq.x", bad).is_ok());
        assert!(check_value_against_topic(&g, "smarteros.bad", bad).is_ok());
    }

    #[test]
    fn check_value_never_panics_on_junk() {
        let g = TopicGrammar::default();
        let deep = "{\"a\":".repeat(10_000);
        for v in [
            deep.as_bytes(),
            b"{",
            b"{\"tenant_id\"",
            b"{\xff\xfe}",
            b"{}",
        ] {
            let _ = check_value_against_topic(&g, "smarteros.a.b.c", v);
        }
    }
}
