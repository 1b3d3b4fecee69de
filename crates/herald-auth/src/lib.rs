//! `herald-auth` is Herald's security model, shared by every interface: Kafka's ACL model and
//! the authorizer decision ([`acl`]), and SCRAM-SHA-256/512 credentials and the server side of
//! the exchange as a sans-I/O state machine ([`scram`]), and API keys ([`keys`]). It does no I/O and knows no wire
//! protocol.

pub mod acl;
pub mod authz;
pub mod keys;
pub mod quota;
pub mod scram;
pub mod tls;
