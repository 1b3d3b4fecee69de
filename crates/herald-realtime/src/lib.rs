//! `herald-realtime` is Herald's real-time gateway: Centrifugo's client protocol over WebSocket
//! (`/connection/websocket`) and unidirectional SSE (`/connection/uni_sse`), Centrifugo's server
//! API (`/api/<method>`), seed 2's `/api/events/*` endpoints, and routes that carry records of
//! topics into channels.
//!
//! Channel history is behind [`streams::ChannelStore`]: channels with history are durable streams
//! in the broker's storage ([`streams::Streams`]), never in the log directly; the in-memory [`hub`]
//! holds connections and subscriptions and fans publications out. Every client-facing decision
//! goes through one [`authz::Authorizer`].

pub mod api;
pub mod authz;
pub mod config;
pub mod hub;
pub mod jwt;
pub mod limits;
pub mod proto;
pub mod routes;
pub mod session;
pub mod sse;
pub mod streams;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use herald_broker::Broker;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::authz::{Authorizer, Principal};
use crate::config::{Namespace, RealtimeConfig};
use crate::hub::Hub;
use crate::limits::{RateLimiter, Verdict};
use crate::proto::{ErrorCode, Publication};
use crate::streams::{ChannelStore, Fanout, NewPublication, Streams};

pub use config::RealtimeConfig as Config;

/// The client's address as text (`unknown` when the server did not record it), for audits.
pub struct Peer(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| herald_auth::authz::host_text(c.0.ip()))
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// Everything the gateway's connections and endpoints share.
pub struct Gateway {
    pub cfg: RealtimeConfig,
    pub authz: Authorizer,
    pub hub: Arc<Hub>,
    /// Channel history; [`streams::Streams`] over the broker's storage.
    pub streams: Box<dyn ChannelStore>,
    pub verifier: jwt::Verifier,
    pub limiter: RateLimiter,
    pub broker: Arc<Broker>,
    pub admin_api_key: String,
    pub started: Instant,
    pub shutdown: watch::Receiver<bool>,
}

/// A publication from any interface.
pub struct Outgoing<'a> {
    pub channel: &'a str,
    pub ns: &'a Namespace,
    /// The channel's tenant, for metric labels.
    pub tenant: Option<&'a str>,
    pub data: &'a RawValue,
    /// `ClientInfo` JSON of a client-side publisher.
    pub info: Option<&'a str>,
    pub tags: Option<&'a std::collections::BTreeMap<String, String>>,
    pub idempotency_key: Option<&'a str>,
    pub interface: &'static str,
}

/// The outcome of a publish through any interface.
pub struct PublishOutcome {
    pub offset: u64,
    pub epoch: String,
}

impl Gateway {
    pub fn new(
        broker: Arc<Broker>,
        cfg: RealtimeConfig,
        jwt_secret: Option<String>,
        epoch_seed: String,
        admin_api_key: String,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Gateway>, String> {
        cfg.validate()?;
        let hub = Arc::new(Hub::new());
        let fan_hub = Arc::clone(&hub);
        let streams: Box<dyn ChannelStore> = Box::new(Streams::new(
            Arc::clone(broker.storage()),
            Arc::new(move |f: Fanout| {
                let body = pub_push_body(&f.channel, &f.publication);
                fan_hub.publish(&f.channel, f.offset, &body);
            }),
            epoch_seed,
        ));
        let read_key = |v: &Option<String>| -> Result<Option<String>, String> {
            match v {
                Some(s) if !s.contains("-----BEGIN") => std::fs::read_to_string(s)
                    .map(Some)
                    .map_err(|e| format!("cannot read the key file {s}: {e}")),
                other => Ok(other.clone()),
            }
        };
        let verifier = jwt::Verifier::new(jwt::JwtConfig {
            hmac_secret: cfg.jwt.hmac_secret.clone().or(jwt_secret),
            rsa_public_key: read_key(&cfg.jwt.rsa_public_key)?,
            ecdsa_public_key: read_key(&cfg.jwt.ecdsa_public_key)?,
            jwks_url: cfg.jwt.jwks_url.clone(),
            audience: cfg.jwt.audience.clone(),
            issuer: cfg.jwt.issuer.clone(),
            tenant_claim: cfg.tenant_claim.clone(),
            roles_claim: cfg.roles_claim.clone(),
            leeway_secs: cfg.jwt.leeway_secs,
        })?;
        let authz = Authorizer::new(
            cfg.effective_namespaces(),
            cfg.admin_role.clone(),
            cfg.max_channel_length,
        );
        let limiter = RateLimiter::new(Duration::from_secs(cfg.rate_limits.window_secs.max(1)));
        // On shutdown every connection is closed with 3001, so clients reconnect elsewhere or
        // later; connection tasks do not each watch the signal.
        let mut stop = shutdown.clone();
        let stop_hub = Arc::clone(&hub);
        tokio::spawn(async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
            for c in stop_hub.all_clients() {
                c.disconnect(proto::Disconnect::SHUTDOWN);
            }
        });
        Ok(Arc::new(Gateway {
            cfg,
            authz,
            hub,
            streams,
            verifier,
            limiter,
            broker,
            admin_api_key,
            started: Instant::now(),
            shutdown,
        }))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/connection/websocket", get(session::ws_handler))
            .route(
                "/connection/uni_sse",
                get(sse::sse_get_handler).post(sse::sse_post_handler),
            )
            .route("/api/events/publish", post(api::events_publish))
            .route("/api/events/history/{channel}", get(api::events_history))
            .route("/api/metrics/summary", get(api::metrics_summary))
            .route("/api/{method}", post(api::server_api))
            .with_state(Arc::clone(self))
    }

    /// Starts the routes from log topics into channels.
    pub fn start_routes(self: &Arc<Self>) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
        routes::start(Arc::clone(self))
    }

    /// Counts a refused credential or operation: `auth_failures_total{interface,reason}`.
    /// Counts and audits a refused authentication.
    pub fn auth_failure(&self, interface: &'static str, reason: &'static str, source: &str) {
        self.denied(
            interface,
            reason,
            "User:ANONYMOUS",
            "Connection".into(),
            "AUTHENTICATE",
            source,
        );
    }

    /// Counts and audits a refused channel operation.
    pub fn channel_denied(
        &self,
        interface: &'static str,
        reason: &'static str,
        who: &Principal,
        channel: &str,
        operation: &str,
        source: &str,
    ) {
        self.denied(
            interface,
            reason,
            &format!("User:{}", who.user),
            format!("Channel:{channel}"),
            operation,
            source,
        );
    }

    /// Counts a denial and records it in the audit topic, through the same path as every
    /// interface.
    fn denied(
        &self,
        interface: &'static str,
        reason: &'static str,
        principal: &str,
        resource: String,
        operation: &str,
        source: &str,
    ) {
        self.hub.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        self.broker
            .security()
            .deny(herald_broker::security::Denial {
                interface,
                reason,
                principal: principal.to_owned(),
                resource,
                operation: operation.to_owned(),
                source: source.to_owned(),
            });
    }

    /// Applies the per-user and per-tenant command limits.
    pub fn command_allowed(&self, who: &Principal) -> Verdict {
        let rl = &self.cfg.rate_limits;
        if !rl.enabled {
            return Verdict::Allow;
        }
        let own = who.tenant.as_ref().and_then(|t| rl.tenants.get(t));
        let user = self.limiter.hit(
            &format!("u:{}", who.user),
            own.and_then(|o| o.max_requests).unwrap_or(rl.max_requests),
        );
        let tenant = match &who.tenant {
            Some(t) => self.limiter.hit(
                &format!("t:{t}"),
                own.and_then(|o| o.tenant_max_requests)
                    .unwrap_or(rl.tenant_max_requests),
            ),
            None => Verdict::Allow,
        };
        worst(user, tenant)
    }

    pub fn connect_allowed(&self, who: &Principal) -> Verdict {
        let rl = &self.cfg.rate_limits;
        if !rl.enabled {
            return Verdict::Allow;
        }
        let own = who.tenant.as_ref().and_then(|t| rl.tenants.get(t));
        let user = self.limiter.hit(
            &format!("cu:{}", who.user),
            own.and_then(|o| o.max_connects).unwrap_or(rl.max_connects),
        );
        let tenant = match &who.tenant {
            Some(t) => self.limiter.hit(
                &format!("ct:{t}"),
                own.and_then(|o| o.tenant_max_connects)
                    .unwrap_or(rl.tenant_max_connects),
            ),
            None => Verdict::Allow,
        };
        worst(user, tenant)
    }

    /// Publishes into a channel (durably when the namespace keeps history) and fans out.
    /// Whether publications of a namespace's channels are kept: it has a history size and the
    /// channel store keeps history at all.
    pub fn keeps_history(&self, ns: &Namespace) -> bool {
        ns.history_size > 0 && self.streams.keeps_history()
    }

    pub async fn publish(&self, p: Outgoing<'_>) -> Result<PublishOutcome, ErrorCode> {
        let Outgoing {
            channel,
            ns,
            tenant,
            data,
            info,
            tags,
            idempotency_key,
            interface,
        } = p;
        if data.get().len() > self.cfg.max_publication_bytes {
            return Err(ErrorCode::LimitExceeded);
        }
        let started = Instant::now();
        let out = if self.keeps_history(ns) {
            let p = self
                .streams
                .publish(
                    channel,
                    ns,
                    NewPublication {
                        data,
                        info,
                        tags,
                        idempotency_key,
                    },
                )
                .await
                .map_err(|e| {
                    tracing::warn!(%channel, error = %e, "publish failed");
                    ErrorCode::Internal
                })?;
            if p.duplicate {
                return Ok(PublishOutcome {
                    offset: p.offset,
                    epoch: p.epoch,
                });
            }
            PublishOutcome {
                offset: p.offset,
                epoch: p.epoch,
            }
        } else {
            let p = Publication {
                data: proto::raw(data.get()),
                offset: 0,
                info: info.map(proto::raw),
                tags: tags.cloned().filter(|t| !t.is_empty()),
            };
            let body = proto::push_body(channel, "pub", &p);
            self.hub.publish(&Arc::from(channel), 0, &body);
            PublishOutcome {
                offset: 0,
                epoch: String::new(),
            }
        };
        self.hub
            .stats
            .events_published
            .fetch_add(1, Ordering::Relaxed);
        let tenant = tenant.map_or_else(|| "-".to_owned(), |t| self.broker.tenant_label(t));
        metrics::counter!("events_published_total", "tenant" => tenant, "service" => "realtime")
            .increment(1);
        metrics::histogram!("event_publish_duration_seconds", "interface" => interface)
            .record(started.elapsed().as_secs_f64());
        Ok(out)
    }
}

fn worst(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Abuse, _) | (_, Verdict::Abuse) => Verdict::Abuse,
        (Verdict::Limited, _) | (_, Verdict::Limited) => Verdict::Limited,
        _ => Verdict::Allow,
    }
}

/// `{"channel":..,"pub":<publication>}` from an already encoded publication.
fn pub_push_body(channel: &str, publication: &str) -> String {
    let ch = serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".to_owned());
    let mut s = String::with_capacity(ch.len() + publication.len() + 20);
    s.push_str("{\"channel\":");
    s.push_str(&ch);
    s.push_str(",\"pub\":");
    s.push_str(publication);
    s.push('}');
    s
}
