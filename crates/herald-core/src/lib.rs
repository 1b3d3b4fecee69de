//! Herald's domain model: tenant ids, the topic grammar
//! `{prefix}.{tenant_id}.{service}.{event_type}`, topic selectors (globs such as
//! `smarteros.*.*.order_*`), and the event envelope every interface validates.
//!
//! This crate is pure domain logic, shared by the Kafka listener, the HTTP API, the realtime
//! gateway and the pipelines so that they all accept and reject exactly the same names and
//! events. It is not a codec or a server: it does no I/O, has no async runtime, reads no clock
//! (callers pass `now`; the only outside input is the randomness behind generated v4 event ids)
//! and knows no wire protocol. Callers map [`GrammarError`] and
//! [`EnvelopeError`] onto their own protocol's error codes; the messages are written to be shown
//! to the user as they are.

pub mod envelope;
mod error;
pub mod glob;
pub mod group;
mod rules;
pub mod tenant;
pub mod topic;

pub use envelope::{
    Envelope, EnvelopeMetadata, UnknownFields, check_value_against_tenant_topic,
    check_value_against_topic, parse_envelope,
};
pub use error::{EnvelopeError, GrammarError};
pub use glob::TopicGlob;
pub use tenant::TenantId;
pub use topic::{TenantTopic, TopicGrammar, TopicKind, validate_topic_name};
