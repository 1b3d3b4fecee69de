//! The one authorizer every interface asks: the Kafka listener, the HTTP API and the WebSocket
//! gateway describe who is asking ([`Subject`]), what they want to do ([`Operation`]) and to what
//! ([`Resource`]), and get the same answer.
//!
//! The decision, in order:
//!
//! 1. a trusted subject (an unauthenticated listener the operator left open, the admin API key)
//!    or a principal in `super.users` is allowed;
//! 2. the tenant fence: a subject bound to a tenant (principal `User:tenant-{id}`, a tenant API
//!    key, a connection token with a tenant claim) is denied anything another tenant owns,
//!    whatever the ACLs say, so a too-wide ACL cannot open one tenant to another;
//! 3. topics, groups, the cluster and transactional ids are decided by the Kafka ACLs
//!    ([`Acls::authorize`]: DENY wins, no ACL means no access);
//! 4. channels belong to tenants, not to ACLs: a tenant's channels are open to that tenant's
//!    subjects only, channels of no tenant to everyone; namespace options and roles are the
//!    gateway's policy on top of this answer.
//!
//! Resources are owned by a tenant when their name says so: topics and groups named
//! `{prefix}.{tenant}.…` and channels whose tenant the gateway has parsed.

use std::net::IpAddr;

use parking_lot::RwLock;

use crate::acl::{AclBinding, AclFilter, Acls, Operation, Request, ResourceType, is_superuser};

/// The interface a request arrived on (the `interface` label of `auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interface {
    Kafka,
    Http,
    WebSocket,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Kafka => "kafka",
            Interface::Http => "http",
            Interface::WebSocket => "websocket",
        }
    }
}

/// Topics no ACL can open: the security state (salted credentials, key hashes). Only trusted
/// subjects and superusers reach them.
pub const PROTECTED_TOPICS: &[&str] = &["_herald.security"];

/// The principal name prefix of tenant users: `User:tenant-{id}`.
pub const TENANT_USER_PREFIX: &str = "tenant-";

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `User:<name>`; `User:ANONYMOUS` on unauthenticated listeners.
    pub principal: String,
    /// The client's address as text (ACL hosts compare against it).
    pub host: String,
    /// The tenant the subject is fenced into.
    pub tenant: Option<String>,
    /// Allowed everything without consulting ACLs.
    pub trusted: bool,
}

/// Textual form of an address as ACL hosts are written (IPv4-mapped IPv6 shown as IPv4).
pub fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl Subject {
    /// The SCRAM (or other authenticated) user `name`; tenant users are fenced into their tenant.
    pub fn user(name: &str, host: String) -> Subject {
        Subject {
            principal: format!("User:{name}"),
            host,
            tenant: name.strip_prefix(TENANT_USER_PREFIX).map(str::to_owned),
            trusted: false,
        }
    }

    /// A client of a listener without authentication, which the operator chose to trust.
    pub fn anonymous_trusted(host: String) -> Subject {
        Subject {
            principal: "User:ANONYMOUS".into(),
            host,
            tenant: None,
            trusted: true,
        }
    }

    /// The holder of an admin credential.
    pub fn admin(name: &str, host: String) -> Subject {
        Subject {
            principal: format!("User:{name}"),
            host,
            tenant: None,
            trusted: true,
        }
    }

    /// A connection token holder with a tenant claim (no ACL principal of its own).
    pub fn token(sub: &str, tenant: Option<String>, host: String) -> Subject {
        Subject {
            principal: format!("User:{sub}"),
            host,
            tenant,
            trusted: false,
        }
    }
}

/// What is being accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
    TransactionalId(&'a str),
    /// A channel and the tenant that owns it, if any (the gateway parses channel names).
    Channel {
        name: &'a str,
        tenant: Option<&'a str>,
    },
}

impl Resource<'_> {
    /// `Topic:name`, as audit records and logs show resources.
    pub fn describe(&self) -> String {
        match self {
            Resource::Topic(n) => format!("Topic:{n}"),
            Resource::Group(n) => format!("Group:{n}"),
            Resource::Cluster => format!("Cluster:{}", crate::acl::CLUSTER_NAME),
            Resource::TransactionalId(n) => format!("TransactionalId:{n}"),
            Resource::Channel { name, .. } => format!("Channel:{name}"),
        }
    }
}

/// Why a request was denied (the `reason` label of `auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The resource belongs to another tenant.
    TenantIsolation,
    /// No ACL allows it, or one denies it.
    Acl,
    /// The subject has no tenant and the resource is a tenant's channel.
    NotPermitted,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::TenantIsolation => "tenant_isolation",
            DenyReason::Acl => "acl",
            DenyReason::NotPermitted => "not_permitted",
        }
    }
}

/// The Kafka ACLs, the superusers and the tenant grammar, behind one decision function.
pub struct Authorizer {
    acls: RwLock<Acls>,
    superusers: Vec<String>,
    /// Topics and groups named `{prefix}.{tenant}.…` belong to `tenant`.
    tenant_prefix: String,
}

impl Authorizer {
    /// `superusers` are principals (`User:admin`); `topic_prefix` is the tenant grammar's prefix.
    pub fn new(superusers: Vec<String>, topic_prefix: &str) -> Authorizer {
        Authorizer {
            acls: RwLock::new(Acls::new()),
            superusers,
            tenant_prefix: format!("{topic_prefix}."),
        }
    }

    pub fn superusers(&self) -> &[String] {
        &self.superusers
    }

    /// The tenant owning a topic or group name, from its `{prefix}.{tenant}.` start.
    pub fn owner_of_name<'n>(&self, name: &'n str) -> Option<&'n str> {
        let rest = name.strip_prefix(self.tenant_prefix.as_str())?;
        let tenant = rest.split('.').next()?;
        (!tenant.is_empty()).then_some(tenant)
    }

    fn owner<'r>(&self, resource: &Resource<'r>) -> Option<&'r str> {
        match *resource {
            Resource::Topic(n) | Resource::Group(n) => self.owner_of_name(n),
            Resource::Channel { tenant, .. } => tenant,
            Resource::Cluster | Resource::TransactionalId(_) => None,
        }
    }

    /// The decision; see the module documentation.
    pub fn decide(
        &self,
        subject: &Subject,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> Result<(), DenyReason> {
        if subject.trusted || is_superuser(&subject.principal, &self.superusers) {
            return Ok(());
        }
        if let Resource::Topic(name) = resource
            && PROTECTED_TOPICS.contains(name)
        {
            return Err(DenyReason::Acl);
        }
        let owner = self.owner(resource);
        if let (Some(mine), Some(theirs)) = (subject.tenant.as_deref(), owner)
            && mine != theirs
        {
            return Err(DenyReason::TenantIsolation);
        }
        let (resource_type, name) = match *resource {
            Resource::Topic(n) => (ResourceType::Topic, n),
            Resource::Group(n) => (ResourceType::Group, n),
            Resource::Cluster => (ResourceType::Cluster, crate::acl::CLUSTER_NAME),
            Resource::TransactionalId(n) => (ResourceType::TransactionalId, n),
            Resource::Channel { .. } => {
                // The fence above has refused other tenants' channels. A tenant's channel is
                // open to its own subjects only; a channel of no tenant is left to the
                // gateway's namespace policy.
                return match (subject.tenant.as_deref(), owner) {
                    (None, Some(_)) => Err(DenyReason::NotPermitted),
                    _ => Ok(()),
                };
            }
        };
        let req = Request {
            principal: &subject.principal,
            host: &subject.host,
            operation,
            resource_type,
            name,
        };
        if self.acls.read().authorize(&req, &self.superusers) {
            Ok(())
        } else {
            Err(DenyReason::Acl)
        }
    }

    /// Whether `subject` may use idempotent producers (InitProducerId): IDEMPOTENT_WRITE on the
    /// cluster, or WRITE on any topic (Kafka 3.0's rule).
    pub fn allows_idempotent_write(&self, subject: &Subject) -> bool {
        subject.trusted
            || self.acls.read().allows_idempotent_write(
                &subject.principal,
                &subject.host,
                &self.superusers,
            )
    }

    /// Stores bindings (already validated); returns how many were new.
    pub fn add(&self, bindings: impl IntoIterator<Item = AclBinding>) -> usize {
        let mut acls = self.acls.write();
        bindings.into_iter().filter(|b| acls.add(b.clone())).count()
    }

    /// Removes and returns what `filter` matches.
    pub fn remove(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.acls.write().remove(filter)
    }

    /// The bindings `filter` matches.
    pub fn list(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.acls.read().list(filter)
    }

    /// Replaces every binding (loading from storage).
    pub fn replace(&self, bindings: impl IntoIterator<Item = AclBinding>) {
        *self.acls.write() = bindings.into_iter().collect();
    }
}

/// The ACLs `herald tenant create` grants: the seed's defaults — READ, WRITE and DESCRIBE on the
/// tenant's topics, READ and DESCRIBE on its groups (groups have no WRITE), all `{prefix}.{tenant}.`
/// PREFIXED, from any host — plus DESCRIBE_CONFIGS on its topics, so that a tenant can read its
/// own topics' retention and policies.
pub fn tenant_default_acls(tenant: &str, topic_prefix: &str) -> Vec<AclBinding> {
    use crate::acl::{PatternType, Permission};
    let principal = format!("User:{TENANT_USER_PREFIX}{tenant}");
    let name = format!("{topic_prefix}.{tenant}.");
    let mut out = Vec::new();
    for resource_type in [ResourceType::Topic, ResourceType::Group] {
        for operation in [
            Operation::Read,
            Operation::Write,
            Operation::Describe,
            Operation::DescribeConfigs,
        ] {
            if resource_type == ResourceType::Group
                && matches!(operation, Operation::Write | Operation::DescribeConfigs)
            {
                continue;
            }
            out.push(AclBinding {
                resource_type,
                name: name.clone(),
                pattern: PatternType::Prefixed,
                principal: principal.clone(),
                host: crate::acl::WILDCARD.into(),
                operation,
                permission: Permission::Allow,
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::acl::{PatternType, Permission};

    fn authorizer() -> Authorizer {
        let a = Authorizer::new(vec!["User:root".into()], "smarteros");
        a.add(tenant_default_acls("A", "smarteros"));
        a.add(tenant_default_acls("B", "smarteros"));
        a
    }

    #[test]
    fn tenants_reach_their_own_topics_and_groups_only() {
        let a = authorizer();
        let alice = Subject::user("tenant-A", "10.0.0.1".into());
        let t_a = Resource::Topic("smarteros.A.shopify.order_created");
        let t_b = Resource::Topic("smarteros.B.shopify.order_created");
        for op in [Operation::Read, Operation::Write, Operation::Describe] {
            assert_eq!(a.decide(&alice, op, &t_a), Ok(()));
            assert_eq!(a.decide(&alice, op, &t_b), Err(DenyReason::TenantIsolation));
        }
        assert_eq!(
            a.decide(&alice, Operation::Delete, &t_a),
            Err(DenyReason::Acl)
        );
        assert_eq!(
            a.decide(
                &alice,
                Operation::Read,
                &Resource::Group("smarteros.A.audit")
            ),
            Ok(())
        );
        assert_eq!(
            a.decide(
                &alice,
                Operation::Read,
                &Resource::Group("smarteros.B.audit")
            ),
            Err(DenyReason::TenantIsolation)
        );
        assert_eq!(
            a.decide(&alice, Operation::Read, &Resource::Group("audit-logger")),
            Err(DenyReason::Acl)
        );
        assert_eq!(
            a.decide(&alice, Operation::Describe, &Resource::Cluster),
            Err(DenyReason::Acl)
        );
        assert!(a.allows_idempotent_write(&alice));
    }

    #[test]
    fn the_fence_holds_against_a_wide_acl() {
        let a = authorizer();
        a.add([AclBinding {
            resource_type: ResourceType::Topic,
            name: "*".into(),
            pattern: PatternType::Literal,
            principal: "User:*".into(),
            host: "*".into(),
            operation: Operation::All,
            permission: Permission::Allow,
        }]);
        let alice = Subject::user("tenant-A", "h".into());
        assert_eq!(
            a.decide(&alice, Operation::Read, &Resource::Topic("smarteros.B.x.y")),
            Err(DenyReason::TenantIsolation)
        );
        // A service principal is not fenced; the wide ACL applies to it — but not to the
        // security topic.
        let svc = Subject::user("service-api-gateway", "h".into());
        assert_eq!(
            a.decide(&svc, Operation::Read, &Resource::Topic("smarteros.B.x.y")),
            Ok(())
        );
        assert_eq!(
            a.decide(&svc, Operation::Read, &Resource::Topic("_herald.security")),
            Err(DenyReason::Acl)
        );
        let root = Subject::user("root", "h".into());
        assert_eq!(
            a.decide(&root, Operation::Read, &Resource::Topic("_herald.security")),
            Ok(())
        );
    }

    #[test]
    fn superusers_and_trusted_subjects_pass() {
        let a = authorizer();
        let root = Subject::user("root", "h".into());
        assert_eq!(
            a.decide(&root, Operation::Alter, &Resource::Cluster),
            Ok(())
        );
        let anon = Subject::anonymous_trusted("h".into());
        assert_eq!(
            a.decide(
                &anon,
                Operation::Delete,
                &Resource::Topic("smarteros.B.x.y")
            ),
            Ok(())
        );
        assert_eq!(a.owner_of_name("smarteros.B"), Some("B"));
        assert_eq!(a.owner_of_name("smarteros."), None);
        assert_eq!(a.owner_of_name("other.B.x.y"), None);
    }

    #[test]
    fn channels_follow_the_tenant() {
        let a = authorizer();
        let token = Subject::token("u1", Some("A".into()), "h".into());
        let own = Resource::Channel {
            name: "tenant:A:orders",
            tenant: Some("A"),
        };
        let other = Resource::Channel {
            name: "tenant:B:orders",
            tenant: Some("B"),
        };
        let shared = Resource::Channel {
            name: "system:status",
            tenant: None,
        };
        assert_eq!(a.decide(&token, Operation::Read, &own), Ok(()));
        assert_eq!(
            a.decide(&token, Operation::Read, &other),
            Err(DenyReason::TenantIsolation)
        );
        assert_eq!(a.decide(&token, Operation::Read, &shared), Ok(()));
        let svc = Subject::user("service-x", "h".into());
        assert_eq!(
            a.decide(&svc, Operation::Read, &own),
            Err(DenyReason::NotPermitted)
        );
    }

    #[test]
    fn hosts_are_written_as_acls_expect() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(host_text(v4), "10.1.2.3");
        assert_eq!(host_text(mapped), "10.1.2.3");
    }
}
