//! A minimal Kafka admin client over the `kafka-protocol` crate.
//!
//! [`Connection`] is one authenticated connection to one broker: TCP (or TLS), ApiVersions
//! negotiation, SASL PLAIN or SCRAM-SHA-256/512, then requests answered in order with
//! correlation ids, a bounded response size and read/write timeouts. [`Admin`] sits on top and
//! knows where requests go: ACL and SCRAM requests to any broker (Kafka forwards them to the
//! controller), retried once on the controller after NOT_CONTROLLER; group requests to the
//! group's coordinator; ListOffsets to each partition's leader.
//!
//! Properties are librdkafka's keys ([`ClientConfig::from_properties`]), so the same map
//! configures this client and the rdkafka-based parts of cluster mode.

mod admin;
mod config;
mod connection;
mod error;

pub use admin::{
    Admin, CommittedOffset, GroupDescription, GroupListing, GroupMember, OffsetSpec,
    PartitionOffset, ScramCredentialInfo, UserScramCredentials,
};
pub use config::{ClientConfig, SaslMechanism, SecurityProtocol};
pub use connection::Connection;
pub use error::WireError;

/// The ACL model Herald's admin client speaks: the same types Herald's own authorizer uses.
pub use herald_auth::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
};
pub use herald_auth::scram::Mechanism as ScramMechanism;
