//! `herald-auth` is Herald's security model, shared by every interface: Kafka's ACL model and
//! the authorizer decision ([`acl`]). It does no I/O and knows no wire protocol.

pub mod acl;
