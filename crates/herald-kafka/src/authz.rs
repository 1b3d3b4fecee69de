//! The Kafka listener's questions to the shared authorizer, in Kafka's terms.

use std::sync::Arc;

use herald_auth::acl::Operation;
use herald_auth::authz::{Interface, Resource, Subject, host_text};

use crate::conn::Connection;
use crate::sasl::SaslState;

/// Who is asking on this connection: the authenticated SCRAM user, else the principal of its
/// TLS client certificate, else (a listener without authentication) the trusted anonymous
/// principal. Computed once and kept until the
/// authentication state changes (`forget_subject`).
pub fn subject(conn: &Connection) -> Arc<Subject> {
    let mut cached = conn.subject.lock();
    if let Some(s) = &*cached {
        return Arc::clone(s);
    }
    let host = host_text(conn.peer.ip());
    let s = Arc::new(match &*conn.sasl.lock() {
        SaslState::Authenticated(user) => Subject::user(user, host),
        _ => match &conn.tls_user {
            Some(user) => Subject::user(user, host),
            None if conn.ctx.cfg.trust_unauthenticated => Subject::anonymous_trusted(host),
            None => Subject::user("ANONYMOUS", host),
        },
    });
    *cached = Some(Arc::clone(&s));
    s
}

/// Drops the cached subject (after a SASL state change).
pub fn forget_subject(conn: &Connection) {
    *conn.subject.lock() = None;
}

/// Asks, counting and auditing a denial.
pub fn check(conn: &Connection, who: &Subject, op: Operation, resource: Resource<'_>) -> bool {
    conn.ctx
        .broker
        .security()
        .authorize(Interface::Kafka, who, op, &resource)
}

/// Asks quietly: for filtering what a listing shows.
pub fn permits(conn: &Connection, who: &Subject, op: Operation, resource: Resource<'_>) -> bool {
    conn.ctx.broker.security().permits(who, op, &resource)
}

/// Kafka's authorized-operations bitmask (bit = operation code) over `ops`.
pub fn operations_mask(
    conn: &Connection,
    who: &Subject,
    resource: Resource<'_>,
    ops: &[Operation],
) -> i32 {
    ops.iter()
        .filter(|op| permits(conn, who, **op, resource))
        .fold(0i32, |m, op| m | (1 << op.to_kafka()))
}

/// The operations Kafka reports for topics, groups and the cluster.
pub const TOPIC_OPS: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];
pub const GROUP_OPS: &[Operation] = &[Operation::Read, Operation::Delete, Operation::Describe];
pub const CLUSTER_OPS: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];
