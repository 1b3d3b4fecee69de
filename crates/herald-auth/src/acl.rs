//! Kafka's ACL model and authorizer decision, shared by every Herald interface (Kafka listener,
//! HTTP API, WebSocket gateway).
//!
//! The model mirrors Kafka's `AclBinding` / `AclBindingFilter` (with Kafka's wire codes), and the
//! decision mirrors `StandardAuthorizer` (KRaft) and `AclAuthorizer` (ZooKeeper):
//!
//! 1. a principal listed in `super.users` is always allowed;
//! 2. otherwise the bindings that apply are those whose resource pattern matches the requested
//!    resource (LITERAL with the same name, LITERAL `*`, or PREFIXED where the name starts with
//!    the prefix), whose principal is the requester or `User:*`, and whose host is the
//!    requester's address or `*`;
//! 3. an applying DENY for the operation (or for ALL) denies: DENY always wins;
//! 4. otherwise an applying ALLOW for the operation, for ALL, or for an operation implying it
//!    (READ, WRITE, DELETE, ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows;
//! 5. otherwise the request is denied (`allow.everyone.if.no.acl.found=false`).
//!
//! Implied operations only widen ALLOWs: a DENY READ does not deny DESCRIBE, as in Kafka.
//! Idempotent producers follow Kafka's newer rule, see [`Acls::allows_idempotent_write`].
//!
//! [`Acls`] indexes bindings so that a decision costs O(length of the name) however many
//! bindings exist: per resource type, LITERAL bindings by name (plus one probe for `*`) and
//! PREFIXED bindings by prefix, probed only at the prefix lengths in use.
//!
//! Strings compare exactly: principals as `User:<name>`, hosts as the textual IP address the
//! listener reports (normalise IPv6 text before building a [`Request`]). [`Acls::add`] does not
//! validate; call [`AclBinding::validate`] on anything coming from a client.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The only valid name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL resource name (or host) meaning "every one".
pub const WILDCARD: &str = "*";
/// The principal matching every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// Kafka's ANY code, valid only in filters.
pub const ANY_CODE: i8 = 1;

/// Why a code, name or binding was refused (Kafka answers these with INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unknown {kind} code {code}")]
    UnknownCode { kind: &'static str, code: i8 },
    #[error("{kind} code {code} (ANY/MATCH) is only valid in a filter")]
    FilterOnly { kind: &'static str, code: i8 },
    #[error("unsupported {kind} code {code}")]
    Unsupported { kind: &'static str, code: i8 },
    #[error("invalid principal {0:?}: expected User:<name> or User:*")]
    InvalidPrincipal(String),
    #[error("resource name must not be empty")]
    EmptyName,
    #[error("host must not be empty")]
    EmptyHost,
    #[error("a PREFIXED binding cannot use the name \"*\"")]
    PrefixedWildcard,
    #[error("the only valid name for the CLUSTER resource is kafka-cluster, not {0:?}")]
    InvalidClusterName(String),
}

/// Defines a Kafka enum with its wire codes and upper-case names.
macro_rules! kafka_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal,
     filter_only: [$($fo:literal),*], unsupported: [$($un:literal),*],
     { $($(#[$vmeta:meta])* $var:ident = $code:literal, $text:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $var,)+ }

        impl $name {
            /// Every value, in code order.
            pub const VALUES: &'static [Self] = &[$(Self::$var),+];

            /// Kafka's wire code.
            pub fn to_kafka(self) -> i8 {
                match self { $(Self::$var => $code,)+ }
            }

            /// Parses a wire code; unknown, unsupported and filter-only (ANY/MATCH) codes are refused.
            pub fn from_kafka(code: i8) -> Result<Self, AclError> {
                match code {
                    $($code => Ok(Self::$var),)+
                    c if [$($fo),*].contains(&c) => Err(AclError::FilterOnly { kind: $kind, code: c }),
                    c if [$($un),*].contains(&c) => Err(AclError::Unsupported { kind: $kind, code: c }),
                    c => Err(AclError::UnknownCode { kind: $kind, code: c }),
                }
            }

            /// Kafka's upper-case name, e.g. `TRANSACTIONAL_ID`.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$var => $text,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Adds the filter codecs of enums whose filters accept ANY (code 1), represented as `None`.
macro_rules! any_filter {
    ($($name:ident),+) => {$(
        impl $name {
            /// Parses a filter code; ANY (1) is `None`.
            pub fn filter_from_kafka(code: i8) -> Result<Option<Self>, AclError> {
                if code == ANY_CODE { Ok(None) } else { Self::from_kafka(code).map(Some) }
            }
            /// Encodes a filter field; `None` is ANY (1).
            pub fn filter_to_kafka(value: Option<Self>) -> i8 {
                value.map_or(ANY_CODE, Self::to_kafka)
            }
        }
    )+};
}

kafka_enum!(
    /// The kind of resource a binding protects.
    ResourceType, "resource type", filter_only: [1], unsupported: [6, 7], {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

kafka_enum!(
    /// How a stored binding's name is matched against a resource name.
    PatternType, "pattern type", filter_only: [1, 2], unsupported: [], {
        /// The name equals the resource name, or is `*`.
        Literal = 3, "LITERAL";
        /// The resource name starts with the name.
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// An operation on a resource.
    Operation, "operation", filter_only: [1], unsupported: [13, 14], {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

kafka_enum!(
    /// Whether a binding allows or denies.
    Permission, "permission", filter_only: [1], unsupported: [], {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

any_filter!(ResourceType, Operation, Permission);

impl Operation {
    /// Whether an ALLOW binding for `self` permits `requested`: the same operation, ALL, or an
    /// operation implying it (READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS implies
    /// DESCRIBE_CONFIGS).
    pub fn allows(self, requested: Operation) -> bool {
        self.denies(requested)
            || match requested {
                Operation::Describe => matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ),
                Operation::DescribeConfigs => self == Operation::AlterConfigs,
                _ => false,
            }
    }

    /// Whether a DENY binding for `self` forbids `requested`: the same operation or ALL, with no
    /// implication.
    pub fn denies(self, requested: Operation) -> bool {
        self == requested || self == Operation::All
    }
}

kafka_enum!(
    /// The pattern part of a DescribeAcls / DeleteAcls filter.
    #[derive(Default)]
    PatternFilter, "pattern type", filter_only: [], unsupported: [], {
        /// Any pattern type; a given name must equal the binding's name.
        #[default]
        Any = 1, "ANY";
        /// Every binding that would apply to the named resource (LITERAL with that name,
        /// LITERAL `*`, or PREFIXED with a prefix of it).
        Match = 2, "MATCH";
        /// LITERAL bindings only, exact name.
        Literal = 3, "LITERAL";
        /// PREFIXED bindings only, exact name.
        Prefixed = 4, "PREFIXED";
    }
);

impl From<PatternType> for PatternFilter {
    fn from(p: PatternType) -> Self {
        match p {
            PatternType::Literal => Self::Literal,
            PatternType::Prefixed => Self::Prefixed,
        }
    }
}

/// One stored ACL: `principal` from `host` is `permission`ed `operation` on the resources
/// matching (`resource_type`, `name`, `pattern`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:<name>`, or `User:*` for every user.
    pub principal: String,
    /// An IP address, or `*` for every host.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Checks what Kafka's CreateAcls checks. ANY/MATCH codes cannot be represented here;
    /// [`ResourceType::from_kafka`] and friends refuse them while decoding.
    pub fn validate(&self) -> Result<(), AclError> {
        match self.principal.strip_prefix("User:") {
            Some(user) if !user.is_empty() => {}
            _ => return Err(AclError::InvalidPrincipal(self.principal.clone())),
        }
        if self.host.is_empty() {
            return Err(AclError::EmptyHost);
        }
        if self.name.is_empty() {
            return Err(AclError::EmptyName);
        }
        if self.pattern == PatternType::Prefixed && self.name == WILDCARD {
            return Err(AclError::PrefixedWildcard);
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(AclError::InvalidClusterName(self.name.clone()));
        }
        Ok(())
    }

    /// Whether this binding's pattern applies to the resource called `name` (of the same type).
    fn pattern_applies(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(self.name.as_str()),
        }
    }
}

/// A DescribeAcls / DeleteAcls filter; `None` fields are ANY. Principal and host compare exactly
/// (a filter for `User:alice` does not return `User:*` bindings), as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter matching every binding.
    pub fn any() -> Self {
        Self::default()
    }

    /// Whether `b` is selected, with Kafka's `ResourcePatternFilter` / `AccessControlEntryFilter`
    /// semantics.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let pattern_ok = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Literal => b.pattern == PatternType::Literal,
            PatternFilter::Prefixed => b.pattern == PatternType::Prefixed,
        };
        let name_ok = match &self.name {
            None => true,
            Some(name) if self.pattern == PatternFilter::Match => b.pattern_applies(name),
            Some(name) => *name == b.name,
        };
        pattern_ok
            && name_ok
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

impl From<&AclBinding> for AclFilter {
    /// The filter selecting exactly `b`.
    fn from(b: &AclBinding) -> Self {
        Self {
            resource_type: Some(b.resource_type),
            name: Some(b.name.clone()),
            pattern: b.pattern.into(),
            principal: Some(b.principal.clone()),
            host: Some(b.host.clone()),
            operation: Some(b.operation),
            permission: Some(b.permission),
        }
    }
}

/// One authorization question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request<'a> {
    /// `User:<name>`.
    pub principal: &'a str,
    /// The client's IP address as text.
    pub host: &'a str,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub name: &'a str,
}

/// Whether `principal` is listed in `super.users` (entries like `User:admin`).
pub fn is_superuser(principal: &str, superusers: &[String]) -> bool {
    superusers.iter().any(|s| s == principal)
}

fn principal_matches(acl: &str, requester: &str) -> bool {
    acl == requester || acl == WILDCARD_PRINCIPAL
}

fn host_matches(acl: &str, requester: &str) -> bool {
    acl == requester || acl == WILDCARD
}

type Bucket = Vec<Arc<AclBinding>>;

/// Removes `b` from the bucket under `key`; true if that emptied (and dropped) the bucket.
fn remove_keyed(map: &mut HashMap<String, Bucket>, key: &str, b: &AclBinding) -> bool {
    let Some(bucket) = map.get_mut(key) else {
        return false;
    };
    bucket.retain(|x| **x != *b);
    let emptied = bucket.is_empty();
    if emptied {
        map.remove(key);
    }
    emptied
}

/// The decision index of one resource type.
#[derive(Debug, Clone, Default)]
struct TypeIndex {
    /// LITERAL bindings by name; those named `*` are probed for every name.
    literal: HashMap<String, Bucket>,
    /// PREFIXED bindings by prefix.
    prefixed: HashMap<String, Bucket>,
    /// Byte length of each key of `prefixed` → how many keys have it.
    prefix_lens: BTreeMap<usize, usize>,
}

impl TypeIndex {
    fn map(&mut self, pattern: PatternType) -> &mut HashMap<String, Bucket> {
        match pattern {
            PatternType::Literal => &mut self.literal,
            PatternType::Prefixed => &mut self.prefixed,
        }
    }

    fn insert(&mut self, b: &Arc<AclBinding>) {
        if b.pattern == PatternType::Prefixed && !self.prefixed.contains_key(&b.name) {
            *self.prefix_lens.entry(b.name.len()).or_default() += 1;
        }
        let bucket = self.map(b.pattern).entry(b.name.clone()).or_default();
        bucket.push(Arc::clone(b));
    }

    fn remove(&mut self, b: &AclBinding) {
        if remove_keyed(self.map(b.pattern), &b.name, b)
            && b.pattern == PatternType::Prefixed
            && let Entry::Occupied(mut e) = self.prefix_lens.entry(b.name.len())
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// The bindings whose pattern applies to `name`, each once.
    fn candidates<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s AclBinding> {
        let literal = self.literal.get(name);
        let wildcard = (name != WILDCARD)
            .then(|| self.literal.get(WILDCARD))
            .flatten();
        let prefixed = self
            .prefix_lens
            .range(..=name.len())
            .filter_map(move |(&len, _)| name.get(..len))
            .filter_map(|prefix| self.prefixed.get(prefix));
        literal
            .into_iter()
            .chain(wildcard)
            .chain(prefixed)
            .flatten()
            .map(|b| &**b)
    }
}

/// The in-memory ACL store and authorizer.
#[derive(Debug, Clone, Default)]
pub struct Acls {
    all: BTreeSet<Arc<AclBinding>>,
    types: HashMap<ResourceType, TypeIndex>,
    by_principal: HashMap<String, Bucket>,
}

impl Acls {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bindings are stored.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether no binding is stored.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every binding, in order.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.all.iter().map(|b| &**b)
    }

    /// Stores `binding`; false if it was already present. Does not validate.
    pub fn add(&mut self, binding: AclBinding) -> bool {
        if self.all.contains(&binding) {
            return false;
        }
        let b = Arc::new(binding);
        self.types.entry(b.resource_type).or_default().insert(&b);
        self.by_principal
            .entry(b.principal.clone())
            .or_default()
            .push(Arc::clone(&b));
        self.all.insert(b);
        true
    }

    /// Removes and returns every binding `filter` matches (DeleteAcls).
    pub fn remove(&mut self, filter: &AclFilter) -> Vec<AclBinding> {
        let doomed: Vec<Arc<AclBinding>> = self
            .all
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect();
        for b in &doomed {
            self.all.remove(&**b);
            if let Some(index) = self.types.get_mut(&b.resource_type) {
                index.remove(b);
            }
            remove_keyed(&mut self.by_principal, &b.principal, b);
        }
        doomed.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    /// Every binding `filter` matches, in order (DescribeAcls).
    pub fn list(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.iter().filter(|b| filter.matches(b)).cloned().collect()
    }

    /// The decision for `req`; see the module documentation for the rules.
    pub fn authorize(&self, req: &Request<'_>, superusers: &[String]) -> bool {
        if is_superuser(req.principal, superusers) {
            return true;
        }
        let Some(index) = self.types.get(&req.resource_type) else {
            return false;
        };
        let mut allowed = false;
        let applying = index
            .candidates(req.name)
            .filter(|b| principal_matches(&b.principal, req.principal))
            .filter(|b| host_matches(&b.host, req.host));
        for b in applying {
            match b.permission {
                Permission::Deny if b.operation.denies(req.operation) => return false,
                Permission::Allow if b.operation.allows(req.operation) => allowed = true,
                _ => {}
            }
        }
        allowed
    }

    /// Kafka's `authorizeByResourceType`: whether `principal` from `host` may perform `operation`
    /// on at least one resource of `resource_type` — some ALLOW (for the operation or ALL, no
    /// implication) whose pattern no matching DENY dominates. A DENY on LITERAL `*` denies; a
    /// LITERAL allow is dominated by a DENY of the same name or of a PREFIXED prefix of it; a
    /// PREFIXED allow by a PREFIXED DENY on a prefix of it.
    pub fn authorize_by_resource_type(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        superusers: &[String],
    ) -> bool {
        if is_superuser(principal, superusers) {
            return true;
        }
        let wild = (principal != WILDCARD_PRINCIPAL)
            .then(|| self.by_principal.get(WILDCARD_PRINCIPAL))
            .flatten();
        let applying = self
            .by_principal
            .get(principal)
            .into_iter()
            .chain(wild)
            .flatten()
            .filter(|b| b.resource_type == resource_type && host_matches(&b.host, host))
            .filter(|b| b.operation.denies(operation));
        let mut deny_literal = HashSet::new();
        let mut deny_prefixed = HashSet::new();
        let mut allows = Vec::new();
        for b in applying {
            match (b.permission, b.pattern) {
                (Permission::Deny, PatternType::Literal) if b.name == WILDCARD => return false,
                (Permission::Deny, PatternType::Literal) => deny_literal.insert(b.name.as_str()),
                (Permission::Deny, PatternType::Prefixed) => deny_prefixed.insert(b.name.as_str()),
                (Permission::Allow, _) => {
                    allows.push(b);
                    true
                }
            };
        }
        allows.iter().any(|b| {
            if b.pattern == PatternType::Literal {
                if b.name == WILDCARD {
                    return true;
                }
                if deny_literal.contains(b.name.as_str()) {
                    return false;
                }
            }
            !b.name
                .char_indices()
                .filter_map(|(i, c)| b.name.get(..i + c.len_utf8()))
                .any(|prefix| deny_prefixed.contains(prefix))
        })
    }

    /// Kafka's newer rule for idempotent producers (InitProducerId without a transactional id):
    /// allowed if the principal has IDEMPOTENT_WRITE on the cluster, or WRITE on any topic
    /// ([`Acls::authorize_by_resource_type`]). Superusers are allowed.
    pub fn allows_idempotent_write(
        &self,
        principal: &str,
        host: &str,
        superusers: &[String],
    ) -> bool {
        let cluster = Request {
            principal,
            host,
            operation: Operation::IdempotentWrite,
            resource_type: ResourceType::Cluster,
            name: CLUSTER_NAME,
        };
        self.authorize(&cluster, superusers)
            || self.authorize_by_resource_type(
                principal,
                host,
                Operation::Write,
                ResourceType::Topic,
                superusers,
            )
    }
}

impl FromIterator<AclBinding> for Acls {
    fn from_iter<I: IntoIterator<Item = AclBinding>>(iter: I) -> Self {
        let mut acls = Self::new();
        for b in iter {
            acls.add(b);
        }
        acls
    }
}
#[cfg(test)]
mod tests {
    use super::AclError::*;
    use super::Operation::*;
    use super::PatternType::{Literal, Prefixed};
    use super::Permission::{Allow, Deny};
    use super::ResourceType::*;
    use super::*;
    use proptest::prelude::*;

    const TEN: &str = "User:tenant-76953480-3";
    const OTH: &str = "User:tenant-11111111-1";
    const GW: &str = "User:service-api-gateway";
    const HOST: &str = "10.0.0.1";
    const TOPIC: &str = "smarteros.76953480-3.orders";
    const OTH_TOPIC: &str = "smarteros.11111111-1.orders";
    const GROUP: &str = "76953480-3.workers";

    type Case<'a> = (&'a str, Operation, ResourceType, &'a str, bool);

    fn acl(t: ResourceType, name: &str, p: PatternType, who: &str, op: Operation) -> AclBinding {
        AclBinding {
            resource_type: t,
            name: name.to_owned(),
            pattern: p,
            principal: who.to_owned(),
            host: WILDCARD.to_owned(),
            operation: op,
            permission: Allow,
        }
    }

    fn deny(t: ResourceType, name: &str, p: PatternType, who: &str, op: Operation) -> AclBinding {
        let mut b = acl(t, name, p, who, op);
        b.permission = Deny;
        b
    }

    fn on_host(host: &str, mut b: AclBinding) -> AclBinding {
        b.host = host.to_owned();
        b
    }

    /// The seed's bindings, plus a second tenant.
    fn seed() -> Acls {
        let mut acls = Acls::new();
        for op in [Write, Read, Describe] {
            acls.add(acl(Topic, "smarteros.76953480-3.", Prefixed, TEN, op));
            acls.add(acl(Group, "76953480-3.", Prefixed, TEN, op));
            acls.add(acl(Topic, "smarteros.11111111-1.", Prefixed, OTH, op));
            acls.add(acl(Group, "11111111-1.", Prefixed, OTH, op));
        }
        acls.add(acl(Topic, "smarteros.", Prefixed, GW, Write));
        acls
    }

    fn req<'a>(
        who: &'a str,
        host: &'a str,
        op: Operation,
        t: ResourceType,
        name: &'a str,
    ) -> Request<'a> {
        Request {
            principal: who,
            host,
            operation: op,
            resource_type: t,
            name,
        }
    }

    fn may(acls: &Acls, who: &str, host: &str, op: Operation, t: ResourceType, name: &str) -> bool {
        acls.authorize(&req(who, host, op, t, name), &[])
    }

    fn check(acls: &Acls, cases: &[Case<'_>]) {
        for &(who, op, t, name, want) in cases {
            assert_eq!(
                may(acls, who, HOST, op, t, name),
                want,
                "{who} {op} {t} {name}"
            );
        }
    }

    #[test]
    fn kafka_codes_round_trip_and_any_is_filter_only() {
        let types = [Topic, Group, Cluster, TransactionalId];
        assert_eq!(types.map(ResourceType::to_kafka), [2, 3, 4, 5]);
        assert!(Operation::VALUES.iter().map(|o| o.to_kafka()).eq(2..=12));
        assert_eq!([Deny, Allow].map(Permission::to_kafka), [2, 3]);
        assert_eq!([Literal, Prefixed].map(PatternType::to_kafka), [3, 4]);
        for code in 2..=12 {
            assert_eq!(
                Operation::from_kafka(code).map(Operation::to_kafka),
                Ok(code)
            );
        }
        for code in 1..=4 {
            assert_eq!(
                PatternFilter::from_kafka(code).map(PatternFilter::to_kafka),
                Ok(code)
            );
        }
        let filter_only = |kind, code| Some(FilterOnly { kind, code });
        assert_eq!(
            ResourceType::from_kafka(1).err(),
            filter_only("resource type", 1)
        );
        assert_eq!(Operation::from_kafka(1).err(), filter_only("operation", 1));
        assert_eq!(
            Permission::from_kafka(1).err(),
            filter_only("permission", 1)
        );
        assert_eq!(
            PatternType::from_kafka(2).err(),
            filter_only("pattern type", 2)
        );
        let delegation_token = ResourceType::from_kafka(6).map_err(|e| e.to_string());
        assert_eq!(
            delegation_token,
            Err("unsupported resource type code 6".into())
        );
        assert_eq!(Operation::filter_from_kafka(1), Ok(None));
        assert_eq!(Operation::filter_from_kafka(4), Ok(Some(Write)));
        assert_eq!(Permission::filter_to_kafka(None), 1);
        assert_eq!(TransactionalId.to_string(), "TRANSACTIONAL_ID");
    }

    #[test]
    fn validate_follows_create_acls_rules() {
        let good = acl(Topic, "smarteros.", Prefixed, GW, All);
        let wildcard = acl(Topic, "*", Literal, "User:*", Read);
        let cluster = acl(Cluster, CLUSTER_NAME, Literal, TEN, IdempotentWrite);
        assert!(
            [&good, &wildcard, &cluster]
                .iter()
                .all(|b| b.validate().is_ok())
        );
        let bad = |edit: &dyn Fn(&mut AclBinding)| {
            let mut b = good.clone();
            edit(&mut b);
            b.validate()
        };
        for p in ["alice", "User:", "Group:ops", ""] {
            assert_eq!(
                bad(&|b| b.principal = p.into()),
                Err(InvalidPrincipal(p.into()))
            );
        }
        assert_eq!(bad(&|b| b.name.clear()), Err(EmptyName));
        assert_eq!(bad(&|b| b.host.clear()), Err(EmptyHost));
        assert_eq!(bad(&|b| b.name = "*".into()), Err(PrefixedWildcard));
        let in_cluster = |b: &mut AclBinding| b.resource_type = Cluster;
        assert_eq!(
            bad(&in_cluster),
            Err(InvalidClusterName("smarteros.".into()))
        );
    }

    #[test]
    fn superusers_are_always_allowed() {
        let mut acls = seed();
        acls.add(deny(Topic, "*", Literal, "User:*", All));
        let supers = ["User:admin".to_owned()];
        let admin = req("User:admin", HOST, Delete, Topic, TOPIC);
        assert!(acls.authorize(&admin, &supers) && Acls::new().authorize(&admin, &supers));
        assert!(!acls.authorize(&admin, &[]));
        assert!(!acls.authorize(&req(TEN, HOST, Read, Topic, TOPIC), &supers));
        assert!(Acls::new().allows_idempotent_write("User:admin", HOST, &supers));
    }

    #[test]
    fn seed_tenant_and_gateway_use_their_prefixes_and_nothing_else() {
        let mut cases: Vec<Case<'_>> = vec![
            (TEN, Read, Topic, "smarteros.76953480-3", false), // the prefix ends with '.'
            (TEN, Read, Topic, "smarteros.76953480-30.orders", false),
            (TEN, Read, Group, "smarteros.76953480-3.x", false),
            (TEN, IdempotentWrite, Cluster, CLUSTER_NAME, false),
            (TEN, Write, TransactionalId, "76953480-3.tx", false),
            ("User:nobody", Describe, Topic, TOPIC, false),
            (GW, Write, Topic, "other.topic", false),
            (GW, Write, Group, "smarteros.x", false),
        ];
        for op in [Write, Read, Describe] {
            cases.extend([(TEN, op, Topic, TOPIC, true), (TEN, op, Group, GROUP, true)]);
            // Tenant A is denied on tenant B's resources, and the other way round.
            cases.extend([
                (TEN, op, Topic, OTH_TOPIC, false),
                (OTH, op, Topic, TOPIC, false),
            ]);
            cases.extend([
                (TEN, op, Group, "11111111-1.w", false),
                (OTH, op, Group, GROUP, false),
            ]);
            cases.push((OTH, op, Topic, OTH_TOPIC, true));
        }
        for op in [Create, Delete, Alter, DescribeConfigs, AlterConfigs, All] {
            cases.push((TEN, op, Topic, TOPIC, false));
        }
        for name in [TOPIC, OTH_TOPIC, "smarteros."] {
            cases.push((GW, Write, Topic, name, true));
            cases.push((GW, Describe, Topic, name, true)); // implied by WRITE
            cases.push((GW, Read, Topic, name, false));
        }
        check(&seed(), &cases);
        check(&Acls::new(), &[(TEN, Read, Topic, TOPIC, false)]);
    }

    #[test]
    fn deny_overrides_allow() {
        let secret = "smarteros.76953480-3.secret";
        let mut acls = seed();
        acls.add(deny(Topic, secret, Literal, TEN, Read));
        let cases = [
            (TEN, Read, Topic, secret, false),
            (TEN, Write, Topic, secret, true),
            (TEN, Read, Topic, TOPIC, true),
        ];
        check(&acls, &cases);
        // DENY ALL covers every operation, including the explicitly allowed DESCRIBE.
        acls.add(deny(Topic, "smarteros.76953480-3.o", Prefixed, TEN, All));
        let cases = [
            (TEN, Read, Topic, TOPIC, false),
            (TEN, Describe, Topic, TOPIC, false),
            (TEN, Write, Topic, secret, true),
        ];
        check(&acls, &cases);
        // A DENY for User:* on the wildcard topic beats everyone's ALLOW.
        acls.add(deny(Topic, "*", Literal, "User:*", Write));
        let cases = [
            (GW, Write, Topic, OTH_TOPIC, false),
            (OTH, Read, Topic, OTH_TOPIC, true),
        ];
        check(&acls, &cases);
        // ALLOW ALL with a narrower DENY; a DENY does not spread through implication.
        let acls = Acls::from_iter([
            acl(Topic, "t", Literal, "User:a", All),
            deny(Topic, "t", Literal, "User:a", Write),
            acl(Topic, "u", Literal, "User:a", Read),
            deny(Topic, "u", Literal, "User:a", Read),
        ]);
        let cases = [
            ("User:a", Write, Topic, "t", false),
            ("User:a", Delete, Topic, "t", true),
            ("User:a", Read, Topic, "u", false),
            ("User:a", Describe, Topic, "u", true),
        ];
        check(&acls, &cases);
    }

    #[test]
    fn implied_operations() {
        let implies = |granted, op| {
            let acls = Acls::from_iter([acl(Topic, "t", Literal, "User:a", granted)]);
            may(&acls, "User:a", HOST, op, Topic, "t")
        };
        for op in [Read, Write, Delete, Alter, Describe, All] {
            assert!(implies(op, Describe), "{op} implies DESCRIBE");
        }
        for op in [
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ] {
            assert!(!implies(op, Describe), "{op} does not imply DESCRIBE");
        }
        assert!(implies(AlterConfigs, DescribeConfigs) && !implies(DescribeConfigs, AlterConfigs));
        assert!(!implies(Describe, Read) && !implies(Write, Read) && !implies(Read, Write));
        assert!(Operation::VALUES.iter().all(|&op| implies(All, op)));
    }

    #[test]
    fn host_specific_bindings() {
        let acls = Acls::from_iter([on_host("10.0.0.1", acl(Topic, TOPIC, Literal, TEN, Read))]);
        assert!(may(&acls, TEN, "10.0.0.1", Read, Topic, TOPIC));
        assert!(!may(&acls, TEN, "10.0.0.2", Read, Topic, TOPIC));
        let mut acls = seed();
        acls.add(on_host("10.0.0.9", deny(Topic, "*", Literal, TEN, All)));
        assert!(!may(&acls, TEN, "10.0.0.9", Read, Topic, TOPIC));
        assert!(may(&acls, TEN, "10.0.0.2", Read, Topic, TOPIC));
        assert!(may(&acls, GW, "10.0.0.9", Write, Topic, TOPIC));
    }

    #[test]
    fn wildcard_resource_principal_and_multibyte_prefix() {
        let acls = Acls::from_iter([acl(Topic, "*", Literal, "User:*", Describe)]);
        let cases = [
            (TEN, Describe, Topic, TOPIC, true),
            ("User:x", Describe, Topic, "*", true),
            (TEN, Read, Topic, TOPIC, false),
            (TEN, Describe, Group, GROUP, false),
        ];
        check(&acls, &cases);
        let acls = Acls::from_iter([acl(Topic, "é", Prefixed, TEN, Read)]);
        check(
            &acls,
            &[
                (TEN, Read, Topic, "éa", true),
                (TEN, Read, Topic, "aé", false),
            ],
        );
    }

    #[test]
    fn idempotent_write_from_any_topic_write_or_cluster_grant() {
        let idem = |acls: &Acls, who| acls.allows_idempotent_write(who, HOST, &[]);
        let mut acls = seed();
        assert!(idem(&acls, TEN) && idem(&acls, GW) && !idem(&acls, "User:nobody"));
        acls.add(deny(Topic, "smarteros.76953480-3.x", Literal, TEN, Write));
        assert!(
            idem(&acls, TEN),
            "a LITERAL DENY does not dominate a PREFIXED grant"
        );
        acls.add(deny(Topic, "smarteros.", Prefixed, TEN, Write));
        assert!(
            !idem(&acls, TEN),
            "a PREFIXED DENY on a prefix of the grant dominates it"
        );
        acls.add(deny(Topic, "*", Literal, "User:*", All));
        assert!(
            !idem(&acls, GW),
            "a DENY on the wildcard topic denies WRITE everywhere"
        );
        let mut acls = Acls::from_iter([acl(Topic, "x", Literal, "User:r", Read)]);
        assert!(!idem(&acls, "User:r"));
        acls.add(acl(
            Cluster,
            CLUSTER_NAME,
            Literal,
            "User:r",
            IdempotentWrite,
        ));
        assert!(idem(&acls, "User:r"));
        let acls = Acls::from_iter([on_host(
            "10.0.0.2",
            acl(Topic, "t", Literal, "User:h", Write),
        )]);
        assert!(!idem(&acls, "User:h"));
        assert!(acls.allows_idempotent_write("User:h", "10.0.0.2", &[]));
    }

    fn topic_filter(name: Option<&str>, pattern: PatternFilter) -> AclFilter {
        let name = name.map(str::to_owned);
        AclFilter {
            resource_type: Some(Topic),
            name,
            pattern,
            ..AclFilter::any()
        }
    }

    #[test]
    fn filter_semantics_follow_describe_and_delete_acls() {
        let acls = Acls::from_iter([
            acl(Topic, TOPIC, Literal, TEN, Read),
            acl(Topic, "*", Literal, "User:*", Describe),
            acl(Topic, "smarteros.", Prefixed, GW, Write),
            acl(Topic, "smarteros.76953480-3.", Prefixed, TEN, Write),
            acl(Topic, TOPIC, Prefixed, TEN, Read),
            acl(
                Topic,
                "smarteros.76953480-3.orders.dlq",
                Prefixed,
                TEN,
                Read,
            ),
            acl(Topic, "smarteros.76953480-3.payments", Literal, TEN, Read),
            acl(Group, TOPIC, Literal, TEN, Read),
        ]);
        let select = |f: &AclFilter| -> Vec<String> {
            let list = acls.list(f).into_iter();
            list.map(|b| format!("{} {}", b.pattern, b.name)).collect()
        };
        let on = |pattern| topic_filter(Some(TOPIC), pattern);
        let matching = [
            "LITERAL *",
            "PREFIXED smarteros.",
            "PREFIXED smarteros.76953480-3.",
            "LITERAL smarteros.76953480-3.orders",
            "PREFIXED smarteros.76953480-3.orders",
        ];
        assert_eq!(select(&on(PatternFilter::Match)), matching);
        let exact = [
            "LITERAL smarteros.76953480-3.orders",
            "PREFIXED smarteros.76953480-3.orders",
        ];
        assert_eq!(select(&on(PatternFilter::Any)), exact);
        assert_eq!(select(&on(PatternFilter::Literal)), exact[..1]);
        assert_eq!(select(&on(PatternFilter::Prefixed)), exact[1..]);
        let count = |f: &AclFilter| acls.list(f).len();
        assert_eq!(count(&topic_filter(None, PatternFilter::Any)), 7);
        assert_eq!(count(&topic_filter(None, PatternFilter::Match)), 7);
        assert_eq!(count(&topic_filter(None, PatternFilter::Prefixed)), 4);
        assert_eq!(count(&AclFilter::any()), 8);
        // Principal, host, operation and permission compare exactly: no wildcard, no implication.
        let mut f = on(PatternFilter::Match);
        f.principal = Some(TEN.to_owned());
        assert_eq!(count(&f), 3);
        f.principal = None;
        f.operation = Some(Describe);
        assert_eq!(select(&f), ["LITERAL *"]);
        f.host = Some(HOST.to_owned());
        assert_eq!(count(&f), 0);
        let exact = acl(Topic, "smarteros.", Prefixed, GW, Write);
        assert_eq!(acls.list(&AclFilter::from(&exact)), [exact]);
    }

    #[test]
    fn add_remove_and_list() {
        let mut acls = seed();
        assert_eq!(acls.len(), 13);
        assert!(!acls.add(acl(Topic, "smarteros.", Prefixed, GW, Write)));
        assert_eq!(acls.len(), 13);
        let on_topic = topic_filter(Some(TOPIC), PatternFilter::Match);
        let removed = acls.remove(&on_topic);
        assert_eq!((removed.len(), acls.len()), (4, 9));
        let cases = [
            (TEN, Read, Topic, TOPIC, false),
            (GW, Write, Topic, TOPIC, false),
            (TEN, Read, Group, GROUP, true),
            (OTH, Read, Topic, OTH_TOPIC, true),
        ];
        check(&acls, &cases);
        assert!(!acls.allows_idempotent_write(TEN, HOST, &[]));
        assert!(acls.remove(&on_topic).is_empty());
        for b in removed {
            assert!(acls.add(b));
        }
        check(&acls, &[(TEN, Read, Topic, TOPIC, true)]);
        assert_eq!(acls.remove(&AclFilter::any()).len(), 13);
        assert!(acls.is_empty() && acls.list(&AclFilter::any()).is_empty());
        check(&acls, &[(TEN, Read, Group, GROUP, false)]);
    }

    // ---- property test against a linear scan ----

    fn ref_authorize(bindings: &[AclBinding], req: &Request<'_>, supers: &[String]) -> bool {
        let op = req.operation;
        let applies = |b: &&AclBinding| {
            let resource = match b.pattern {
                Literal => b.name == req.name || b.name == "*",
                Prefixed => req.name.starts_with(&b.name),
            };
            let principal = b.principal == req.principal || b.principal == "User:*";
            let host = b.host == req.host || b.host == "*";
            b.resource_type == req.resource_type && resource && principal && host
        };
        let implied = |g: Operation| match op {
            Describe => [Read, Write, Delete, Alter].contains(&g),
            DescribeConfigs => g == AlterConfigs,
            _ => false,
        };
        let direct = |b: &&AclBinding| b.operation == op || b.operation == All;
        let applying: Vec<&AclBinding> = bindings.iter().filter(applies).collect();
        let denied = applying.iter().any(|b| b.permission == Deny && direct(b));
        let allows = |b: &&&AclBinding| direct(b) || implied(b.operation);
        let allowed = applying
            .iter()
            .filter(allows)
            .any(|b| b.permission == Allow);
        supers.iter().any(|s| s == req.principal) || (!denied && allowed)
    }

    /// Kafka's `authorizeByResourceType`, stated as "some ALLOW no DENY dominates".
    fn ref_by_type(
        acls: &[AclBinding],
        who: &str,
        host: &str,
        op: Operation,
        t: ResourceType,
    ) -> bool {
        let relevant: Vec<&AclBinding> = acls
            .iter()
            .filter(|b| b.resource_type == t && (b.operation == op || b.operation == All))
            .filter(|b| b.principal == who || b.principal == "User:*")
            .filter(|b| b.host == host || b.host == "*")
            .collect();
        let dominates = |d: &AclBinding, a: &AclBinding| match (d.pattern, a.pattern) {
            (Literal, _) if d.name == "*" => true,
            (_, Literal) if a.name == "*" => false,
            (Literal, Literal) => d.name == a.name,
            (Literal, Prefixed) => false,
            (Prefixed, _) => a.name.starts_with(&d.name),
        };
        let (denies, allows): (Vec<_>, Vec<_>) =
            relevant.into_iter().partition(|b| b.permission == Deny);
        allows
            .iter()
            .any(|a| !denies.iter().any(|d| dominates(d, a)))
    }

    const PRINCIPALS: &[&str] = &["User:alice", "User:bob", "User:*"];
    const ASKERS: &[&str] = &["User:alice", "User:bob", "User:carol", "User:*"];
    const HOSTS: &[&str] = &["*", "10.0.0.1", "10.0.0.2"];
    const CLIENTS: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.3"];

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            Just(CLUSTER_NAME.to_owned()),
            "[abé]{1,3}"
        ]
    }

    fn binding() -> impl Strategy<Value = AclBinding> {
        use prop::sample::select;
        let resource = (
            select(ResourceType::VALUES),
            name(),
            select(PatternType::VALUES),
        );
        let entry = (select(PRINCIPALS), select(HOSTS), select(Operation::VALUES));
        (resource, entry, select(Permission::VALUES)).prop_map(|((t, n, p), (who, h, op), perm)| {
            let mut b = on_host(h, acl(t, &n, p, who, op));
            b.permission = perm;
            b
        })
    }

    /// A MATCH filter on a name plus an optional principal, or an exact one for a binding.
    fn filter() -> impl Strategy<Value = AclFilter> {
        let exact = binding().prop_map(|b| AclFilter::from(&b));
        let by_name = (name(), prop::option::of(prop::sample::select(PRINCIPALS)));
        let matching = by_name.prop_map(|(n, who)| AclFilter {
            principal: who.map(str::to_owned),
            ..topic_filter(Some(&n), PatternFilter::Match)
        });
        prop_oneof![exact, matching]
    }

    type Ask = (
        (&'static str, &'static str),
        (Operation, ResourceType, String),
    );

    fn ask() -> impl Strategy<Value = Ask> {
        use prop::sample::select;
        let name = prop_oneof![
            "[abé]{0,4}",
            Just("*".to_owned()),
            Just(CLUSTER_NAME.to_owned())
        ];
        let what = (
            select(Operation::VALUES),
            select(ResourceType::VALUES),
            name,
        );
        ((select(ASKERS), select(CLIENTS)), what)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn authorize_matches_linear_reference(
            bindings in prop::collection::vec(binding(), 0..40),
            deletes in prop::collection::vec(filter(), 0..4),
            asks in prop::collection::vec(ask(), 1..30),
            with_superuser in any::<bool>(),
        ) {
            let mut acls = Acls::from_iter(bindings.iter().cloned());
            let mut reference: Vec<AclBinding> = bindings.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
            prop_assert_eq!(acls.list(&AclFilter::any()), reference.clone());
            for f in &deletes {
                let gone: Vec<AclBinding> = reference.iter().filter(|b| f.matches(b)).cloned().collect();
                reference.retain(|b| !f.matches(b));
                prop_assert_eq!(acls.remove(f), gone);
            }
            prop_assert_eq!(acls.len(), reference.len());
            let supers = if with_superuser { vec!["User:carol".to_owned()] } else { Vec::new() };
            for ((principal, host), (operation, resource_type, name)) in &asks {
                let r = req(principal, host, *operation, *resource_type, name);
                prop_assert_eq!(acls.authorize(&r, &supers), ref_authorize(&reference, &r, &supers), "{:?}", r);
                let cluster = req(principal, host, IdempotentWrite, Cluster, CLUSTER_NAME);
                let superuser = supers.iter().any(|s| s == principal);
                let idem = ref_authorize(&reference, &cluster, &supers)
                    || superuser
                    || ref_by_type(&reference, principal, host, Write, Topic);
                prop_assert_eq!(acls.allows_idempotent_write(principal, host, &supers), idem, "{:?}", r);
                let by_type = superuser || ref_by_type(&reference, principal, host, *operation, *resource_type);
                let got = acls.authorize_by_resource_type(principal, host, *operation, *resource_type, &supers);
                prop_assert_eq!(got, by_type, "{:?}", r);
            }
        }
    }
}
