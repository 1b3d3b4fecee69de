//! Who may do what on which channel: namespaces and roles, on top of the shared authorizer.
//!
//! Every client-facing path (WebSocket, SSE, the seed's HTTP endpoints with a bearer token or a
//! tenant API key) asks [`Authorizer::check`]. The tenant fence is not decided here but by
//! `herald_auth::authz::Authorizer`, the one the Kafka listener and the HTTP API ask; this
//! module adds the namespace's options and required roles. The server API (admin keys)
//! bypasses it.

use std::collections::BTreeMap;

use crate::config::Namespace;
use crate::proto::ErrorCode;

/// An authenticated (or anonymous) client.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    pub user: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub anonymous: bool,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A channel name resolved against the namespaces.
#[derive(Debug, Clone)]
pub struct Channel<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub tenant: Option<&'a str>,
    pub options: &'a Namespace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `with_token`: a valid subscription token for this channel was presented.
    Subscribe {
        with_token: bool,
    },
    Publish {
        subscribed: bool,
    },
    History {
        subscribed: bool,
    },
    Presence {
        subscribed: bool,
    },
}

impl Op {
    /// The operation's name in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Op::Subscribe { .. } => "SUBSCRIBE",
            Op::Publish { .. } => "PUBLISH",
            Op::History { .. } => "HISTORY",
            Op::Presence { .. } => "PRESENCE",
        }
    }
}

/// A refusal: the client protocol's error code and a reason label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub code: ErrorCode,
    pub reason: &'static str,
}

pub struct Authorizer {
    namespaces: BTreeMap<String, Namespace>,
    admin_role: String,
    max_channel_length: usize,
}

/// Tenant ids in channel names: the same alphabet the topic grammar allows.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Authorizer {
    pub fn new(
        namespaces: BTreeMap<String, Namespace>,
        admin_role: String,
        max_channel_length: usize,
    ) -> Authorizer {
        Authorizer {
            namespaces,
            admin_role,
            max_channel_length,
        }
    }

    pub fn namespaces(&self) -> &BTreeMap<String, Namespace> {
        &self.namespaces
    }

    /// Resolves a channel name; unknown namespaces and malformed names are `UnknownChannel`
    /// (102), names that are too long or not printable are `BadRequest` (107).
    pub fn resolve<'a>(&'a self, name: &'a str) -> Result<Channel<'a>, ErrorCode> {
        if name.is_empty()
            || name.len() > self.max_channel_length
            || name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '\u{feff}')
        {
            return Err(ErrorCode::BadRequest);
        }
        let (namespace, rest) = match name.split_once(':') {
            Some((ns, rest)) => (ns, rest),
            None => ("", name),
        };
        let options = self
            .namespaces
            .get(namespace)
            .ok_or(ErrorCode::UnknownChannel)?;
        let tenant = if options.tenant_bound {
            let (tenant, resource) = rest.split_once(':').ok_or(ErrorCode::UnknownChannel)?;
            if !valid_tenant(tenant) || resource.is_empty() {
                return Err(ErrorCode::UnknownChannel);
            }
            Some(tenant)
        } else {
            None
        };
        Ok(Channel {
            name,
            namespace,
            tenant,
            options,
        })
    }

    /// Whether `who` may perform `op` on `ch`: the shared authorizer's tenant fence, then the
    /// namespace's roles and options.
    pub fn check(
        &self,
        shared: &herald_auth::authz::Authorizer,
        who: &Principal,
        ch: &Channel<'_>,
        op: Op,
    ) -> Result<(), Denied> {
        let deny = |reason| {
            Err(Denied {
                code: ErrorCode::PermissionDenied,
                reason,
            })
        };
        let admin = !who.anonymous && who.has_role(&self.admin_role);
        if let Some(role) = &ch.options.required_role
            && !who.has_role(role)
        {
            return deny("role");
        }
        let subject = if admin {
            herald_auth::authz::Subject::admin(&who.user, String::new())
        } else {
            herald_auth::authz::Subject::token(&who.user, who.tenant.clone(), String::new())
        };
        let operation = match op {
            Op::Publish { .. } => herald_auth::acl::Operation::Write,
            _ => herald_auth::acl::Operation::Read,
        };
        let resource = herald_auth::authz::Resource::Channel {
            name: ch.name,
            tenant: ch.tenant,
        };
        if let Err(reason) = shared.decide(&subject, operation, &resource) {
            return deny(reason.as_str());
        }
        let o = ch.options;
        let allowed = match op {
            Op::Subscribe { with_token } => {
                with_token
                    || if who.anonymous {
                        o.allow_subscribe_for_anonymous
                    } else {
                        o.allow_subscribe_for_client
                    }
            }
            Op::Publish { subscribed } => {
                !who.anonymous
                    && (o.allow_publish_for_client
                        || (subscribed && o.allow_publish_for_subscriber))
            }
            Op::History { subscribed } => {
                o.allow_history_for_client || (subscribed && o.allow_history_for_subscriber)
            }
            Op::Presence { subscribed } => {
                o.allow_presence_for_client || (subscribed && o.allow_presence_for_subscriber)
            }
        };
        if allowed { Ok(()) } else { deny("namespace") }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::RealtimeConfig;

    struct Both(Authorizer, herald_auth::authz::Authorizer);

    impl Both {
        fn check(&self, who: &Principal, ch: &Channel<'_>, op: Op) -> Result<(), Denied> {
            self.0.check(&self.1, who, ch, op)
        }
        fn resolve<'a>(&'a self, name: &'a str) -> Result<Channel<'a>, ErrorCode> {
            self.0.resolve(name)
        }
    }

    fn authz() -> Both {
        let cfg = RealtimeConfig::default();
        Both(
            Authorizer::new(cfg.effective_namespaces(), "admin".into(), 255),
            herald_auth::authz::Authorizer::new(Vec::new(), "smarteros"),
        )
    }

    fn user(tenant: &str, roles: &[&str]) -> Principal {
        Principal {
            user: "u".into(),
            tenant: Some(tenant.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            anonymous: false,
        }
    }

    #[test]
    fn tenant_channels_belong_to_their_tenant() {
        let a = authz();
        let sub = Op::Subscribe { with_token: false };
        let own = a.resolve("tenant:123:deployments").unwrap();
        let other = a.resolve("tenant:456:deployments").unwrap();
        assert_eq!(own.tenant, Some("123"));
        assert!(a.check(&user("123", &[]), &own, sub).is_ok());
        assert_eq!(
            a.check(&user("123", &[]), &other, sub),
            Err(Denied {
                code: ErrorCode::PermissionDenied,
                reason: "tenant_isolation"
            })
        );
        // Even a subscription token cannot cross tenants.
        assert!(
            a.check(
                &user("123", &[]),
                &other,
                Op::Subscribe { with_token: true }
            )
            .is_err()
        );
        assert!(a.check(&user("999", &["admin"]), &other, sub).is_ok());
        let no_tenant = Principal {
            tenant: None,
            ..user("x", &[])
        };
        assert!(a.check(&no_tenant, &own, sub).is_err());
    }

    #[test]
    fn admin_and_system_namespaces() {
        let a = authz();
        let admin = a.resolve("admin:alerts").unwrap();
        let system = a.resolve("system:announcements").unwrap();
        let sub = Op::Subscribe { with_token: false };
        assert!(a.check(&user("123", &[]), &admin, sub).is_err());
        assert!(a.check(&user("123", &["admin"]), &admin, sub).is_ok());
        assert!(a.check(&user("123", &[]), &system, sub).is_ok());
        assert!(
            a.check(&user("123", &[]), &system, Op::Publish { subscribed: true })
                .is_err()
        );
        assert!(
            a.check(
                &user("123", &[]),
                &a.resolve("tenant:123:x").unwrap(),
                Op::Publish { subscribed: true }
            )
            .is_ok()
        );
        assert!(
            a.check(
                &user("123", &[]),
                &a.resolve("tenant:123:x").unwrap(),
                Op::Publish { subscribed: false }
            )
            .is_err()
        );
    }

    #[test]
    fn malformed_and_unknown_channels() {
        let a = authz();
        for (name, code) in [
            ("", ErrorCode::BadRequest),
            ("tenant:1 2:x", ErrorCode::BadRequest),
            ("news", ErrorCode::UnknownChannel),
            ("nope:x", ErrorCode::UnknownChannel),
            ("tenant:123", ErrorCode::UnknownChannel),
            ("tenant:123:", ErrorCode::UnknownChannel),
            ("tenant:a.b:x", ErrorCode::UnknownChannel),
            ("tenant:*:x", ErrorCode::UnknownChannel),
        ] {
            assert_eq!(a.resolve(name).err(), Some(code), "{name:?}");
        }
        let long = format!("system:{}", "x".repeat(300));
        assert_eq!(a.resolve(&long).err(), Some(ErrorCode::BadRequest));
    }
}
