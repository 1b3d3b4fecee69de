//! A minimal Kafka admin client over the `kafka-protocol` crate.
//!
//! [`Connection`] is one authenticated connection to one broker: TCP (or TLS), ApiVersions
//! negotiation, SASL PLAIN or SCRAM-SHA-256/512, then requests answered in order with
//! correlation ids, a bounded response size and read/write timeouts. [`Admin`] sits on top and
//! knows where requests go: ACL and SCRAM requests to any broker (Kafka forwards them to the
//! controller), retried once on the controller after NOT_CONTROLLER; group requests to the
//! group's coordinator; ListOffsets to each partition's leader.
//!
//! Trust: responses come from the cluster the operator configured. Their frames are bounded
//! (`receive.message.max.bytes`) before they are read, but inside a frame the `kafka-protocol`
//! decoder reserves room for each array count it reads before checking that the bytes are
//! there, so a hostile broker could still make it allocate far more than the frame; Herald's
//! server side guards against that with its pre-scan, which this client does not run.
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
