//! Herald's cluster mode: the pieces that let stateless Herald nodes run over an existing
//! Redpanda or Apache Kafka cluster.
//!
//! [`wire`] is a small Kafka admin client speaking the wire protocol directly (through the
//! `kafka-protocol` crate) for the APIs librdkafka's admin client does not wrap: ACLs, SCRAM
//! credentials, consumer groups with full fidelity, and ListOffsets. It is not a producer or a
//! consumer, and it keeps no state beyond its connections.

pub mod wire;
