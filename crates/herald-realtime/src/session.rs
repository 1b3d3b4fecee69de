//! One client connection: the command state machine shared by the WebSocket and SSE transports,
//! and the WebSocket driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Gateway;
use crate::authz::{Op, Principal};
use crate::hub::{ClientHandle, Control, NewClient, Outbound};
use crate::jwt::TokenError;
use crate::limits::Verdict;
use crate::proto::{
    self, ClientInfo, Command, ConnectRequest, Disconnect, ErrorCode, HistoryRequest,
    SubscribeRequest, SubscribeResult,
};

pub const VERSION: &str = concat!("herald ", env!("CARGO_PKG_VERSION"));

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds from now until a unix-seconds deadline, for the protocol's `ttl` (at least 1).
fn ttl_secs(unix: i64) -> u32 {
    unix.saturating_sub(unix_now())
        .clamp(1, i64::from(u32::MAX)) as u32
}

/// The time left until a unix-seconds deadline, as a tokio instant.
fn instant_at(unix: i64) -> Instant {
    // Capped at ten years: an `exp` near i64::MAX must not overflow the clock.
    let left = (unix.saturating_sub(unix_now()).max(0) as u64).min(10 * 365 * 86_400);
    Instant::now() + Duration::from_secs(left)
}

fn set(v: &mut serde_json::Value, key: &str, value: impl Into<serde_json::Value>) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value.into());
    }
}

struct SubState {
    /// The newest offset the client has (or was told it has); older publications are dropped.
    last_offset: u64,
    expires_at: Option<i64>,
    chan_info: Option<Arc<RawValue>>,
}

/// What a command asks of the transport besides its reply.
pub enum Outcome {
    Reply(String),
    None,
    /// Reply (if any), then close.
    Close(Option<String>, Disconnect),
}

pub struct Session {
    gw: Arc<Gateway>,
    pub client: Option<Arc<ClientHandle>>,
    pub outbound: Option<mpsc::Receiver<Outbound>>,
    pub control: Option<mpsc::Receiver<Control>>,
    principal: Principal,
    subs: HashMap<String, SubState>,
    expires_at: Option<i64>,
    interface: &'static str,
    unidirectional: bool,
    /// The client's address, for audit records.
    source: String,
}

impl Session {
    pub fn new(gw: Arc<Gateway>, unidirectional: bool, source: String) -> Session {
        Session {
            gw,
            client: None,
            outbound: None,
            control: None,
            principal: Principal::default(),
            subs: HashMap::new(),
            expires_at: None,
            interface: if unidirectional { "sse" } else { "websocket" },
            unidirectional,
            source,
        }
    }

    fn auth_failure(&self, reason: &'static str) {
        self.gw.auth_failure(self.interface, reason, &self.source);
    }

    fn channel_denied(&self, reason: &'static str, who: &Principal, channel: &str, op: &str) {
        self.gw
            .channel_denied(self.interface, reason, who, channel, op, &self.source);
    }

    /// The earliest connection or subscription expiry.
    pub fn next_expiry(&self) -> Option<i64> {
        self.subs
            .values()
            .filter_map(|s| s.expires_at)
            .chain(self.expires_at)
            .min()
    }

    /// Closes the connection or unsubscribes expired subscriptions.
    pub fn on_expiry(&mut self) -> Option<Disconnect> {
        let now = unix_now();
        if self.expires_at.is_some_and(|t| t <= now) {
            return Some(Disconnect::EXPIRED);
        }
        let expired: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for ch in expired {
            self.server_unsubscribe(&ch, 2501, "subscription expired");
        }
        None
    }

    fn fail(&self, id: u32, code: ErrorCode) -> Outcome {
        Outcome::Reply(proto::error_reply(id, &code.to_error()))
    }

    fn token_failure(&self, id: u32, e: &TokenError) -> Outcome {
        self.auth_failure(e.label());
        match e {
            TokenError::Expired => self.fail(id, ErrorCode::TokenExpired),
            TokenError::Invalid(msg) => {
                tracing::debug!(error = %msg, "invalid token");
                Outcome::Close(
                    Some(proto::error_reply(id, &ErrorCode::Unauthorized.to_error())),
                    Disconnect::INVALID_TOKEN,
                )
            }
        }
    }

    /// Executes one command.
    pub async fn handle(&mut self, cmd: Command) -> Outcome {
        let id = cmd.id;
        if let Some(req) = cmd.connect {
            return self.connect(id, req).await;
        }
        if self.client.is_none() {
            // Everything before a successful connect is a protocol violation.
            return Outcome::Close(None, Disconnect::BAD_REQUEST);
        }
        let counted = cmd.subscribe.is_some()
            || cmd.publish.is_some()
            || cmd.history.is_some()
            || cmd.presence.is_some()
            || cmd.presence_stats.is_some()
            || cmd.rpc.is_some()
            || cmd.send.is_some();
        if counted {
            match self.gw.command_allowed(&self.principal) {
                Verdict::Allow => {}
                Verdict::Limited => {
                    metrics::counter!("realtime_rate_limited_total", "interface" => self.interface)
                        .increment(1);
                    return self.fail(id, ErrorCode::TooManyRequests);
                }
                Verdict::Abuse => {
                    metrics::counter!("realtime_rate_limited_total", "interface" => self.interface)
                        .increment(1);
                    return Outcome::Close(
                        Some(proto::error_reply(
                            id,
                            &ErrorCode::TooManyRequests.to_error(),
                        )),
                        Disconnect::TOO_MANY_REQUESTS,
                    );
                }
            }
        }
        if let Some(req) = cmd.subscribe {
            return self.subscribe(id, req).await;
        }
        if let Some(req) = cmd.unsubscribe {
            if self.subs.contains_key(&req.channel) {
                self.unsubscribe_local(&req.channel);
            }
            return Outcome::Reply(proto::reply(id, "unsubscribe", &serde_json::json!({})));
        }
        if let Some(req) = cmd.publish {
            return self.publish(id, req).await;
        }
        if let Some(req) = cmd.presence {
            return self.presence(id, &req.channel, false);
        }
        if let Some(req) = cmd.presence_stats {
            return self.presence(id, &req.channel, true);
        }
        if let Some(req) = cmd.history {
            return self.history(id, req).await;
        }
        if let Some(req) = cmd.refresh {
            return self.refresh(id, &req.token).await;
        }
        if let Some(req) = cmd.sub_refresh {
            return self.sub_refresh(id, &req.channel, &req.token).await;
        }
        if cmd.rpc.is_some() {
            return self.fail(id, ErrorCode::MethodNotFound);
        }
        if cmd.send.is_some() {
            // Asynchronous messages need a handler; none is configured, so they are dropped.
            return Outcome::None;
        }
        if cmd.ping.is_some() {
            return Outcome::Reply(proto::reply(id, "ping", &serde_json::json!({})));
        }
        if id == 0 {
            // `{}`: the client's pong.
            return Outcome::None;
        }
        self.fail(id, ErrorCode::MethodNotFound)
    }

    async fn connect(&mut self, id: u32, req: ConnectRequest) -> Outcome {
        if self.client.is_some() {
            return Outcome::Close(None, Disconnect::BAD_REQUEST);
        }
        let claims = if req.token.is_empty() {
            if !self.gw.cfg.allow_anonymous {
                self.auth_failure("no_token");
                return Outcome::Close(
                    Some(proto::error_reply(id, &ErrorCode::Unauthorized.to_error())),
                    Disconnect::INVALID_TOKEN,
                );
            }
            None
        } else {
            match self.gw.verifier.connect_claims(&req.token).await {
                Ok(c) => Some(c),
                Err(e) => return self.token_failure(id, &e),
            }
        };
        let now = unix_now();
        let (principal, conn_info, expires_at, channels, sub_opts) = match claims {
            Some(c) => {
                let exp = c.expires_at();
                let mut channels = c.channels.clone();
                for k in c.subs.keys() {
                    if !channels.contains(k) {
                        channels.push(k.clone());
                    }
                }
                (
                    Principal {
                        user: c.sub.clone(),
                        tenant: c.tenant.clone(),
                        roles: c.roles.clone(),
                        anonymous: false,
                    },
                    c.info.as_ref().map(|i| Arc::from(proto::raw(i.get()))),
                    exp,
                    channels,
                    c.subs,
                )
            }
            None => (
                Principal {
                    anonymous: true,
                    ..Principal::default()
                },
                None,
                None,
                Vec::new(),
                BTreeMap::new(),
            ),
        };
        if expires_at.is_some_and(|t| t <= now) {
            self.auth_failure("expired");
            return self.fail(id, ErrorCode::TokenExpired);
        }
        match self.gw.connect_allowed(&principal) {
            Verdict::Allow => {}
            _ => {
                return Outcome::Close(
                    Some(proto::error_reply(
                        id,
                        &ErrorCode::TooManyRequests.to_error(),
                    )),
                    Disconnect::TOO_MANY_REQUESTS,
                );
            }
        }
        if self
            .gw
            .hub
            .stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= self.gw.cfg.max_connections as u64
        {
            return Outcome::Close(None, Disconnect::CONNECTION_LIMIT);
        }
        let (handle, rx, ctl) = self.gw.hub.register(NewClient {
            user: principal.user.clone(),
            tenant: principal.tenant.clone(),
            conn_info,
            unidirectional: self.unidirectional,
            queue_messages: self.gw.cfg.client_queue_max_messages,
            queue_bytes: self.gw.cfg.client_queue_max_bytes,
        });
        self.client = Some(Arc::clone(&handle));
        self.outbound = Some(rx);
        self.control = Some(ctl);
        self.principal = principal;
        self.expires_at = expires_at;

        // Server-side subscriptions from the token's `channels` and `subs` claims.
        let mut subs = BTreeMap::new();
        for ch in channels {
            if self.subs.len() >= self.gw.cfg.max_channels_per_connection {
                break;
            }
            let chan_info = sub_opts
                .get(&ch)
                .and_then(|o| o.info.as_ref())
                .map(|i| Arc::from(proto::raw(i.get())));
            let recover = req.subs.get(&ch).cloned().unwrap_or_default();
            let allowed = match self.gw.authz.resolve(&ch) {
                Ok(c) => self
                    .gw
                    .authz
                    .check(
                        self.gw.broker.security().authorizer(),
                        &self.principal,
                        &c,
                        Op::Subscribe { with_token: true },
                    )
                    .map_err(|d| d.reason),
                Err(_) => Err("channel"),
            };
            if let Err(reason) = allowed {
                self.channel_denied(reason, &self.principal, &ch, "SUBSCRIBE");
                tracing::info!(channel = %ch, user = %self.principal.user, "token channel refused");
                continue;
            }
            let mut r = recover;
            r.channel = ch.clone();
            r.recoverable = r.recoverable || r.recover;
            if let Ok(res) = self.do_subscribe(&ch, &r, chan_info, None).await {
                subs.insert(ch, res);
            }
        }
        let ttl = expires_at.map(ttl_secs).unwrap_or(0);
        let mut result = serde_json::json!({
            "client": handle.id.to_string(),
            "version": VERSION,
            "ping": self.gw.cfg.ping_interval_secs,
            "pong": !self.unidirectional,
        });
        if expires_at.is_some() {
            set(&mut result, "expires", true);
            set(&mut result, "ttl", ttl);
        }
        if !subs.is_empty() {
            set(
                &mut result,
                "subs",
                serde_json::to_value(&subs).unwrap_or_default(),
            );
        }
        if self.unidirectional {
            return Outcome::Reply(format!("{{\"connect\":{result}}}"));
        }
        Outcome::Reply(proto::reply(id, "connect", &result))
    }

    /// Registers the subscription and computes its result (position, recovery).
    async fn do_subscribe(
        &mut self,
        channel: &str,
        req: &SubscribeRequest,
        chan_info: Option<Arc<RawValue>>,
        expires_at: Option<i64>,
    ) -> Result<SubscribeResult, ErrorCode> {
        let Some(client) = self.client.clone() else {
            return Err(ErrorCode::Internal);
        };
        let gw = Arc::clone(&self.gw);
        let ch = gw.authz.resolve(channel)?;
        let ns = ch.options;
        let history = gw.keeps_history(ns);
        let recoverable = history && (req.recoverable || ns.force_recovery);
        let positioned = history && (req.positioned || ns.force_positioning || recoverable);
        let join_leave = ns.join_leave && (req.join_leave || ns.force_push_join_leave);
        gw.hub
            .subscribe(channel, &client, chan_info.clone(), join_leave);
        let mut result = SubscribeResult {
            recoverable,
            positioned,
            ..SubscribeResult::default()
        };
        if history {
            if req.recover && recoverable {
                let (pubs, pos, recovered) = gw
                    .streams
                    .recover(
                        channel,
                        ns,
                        req.offset,
                        &req.epoch,
                        gw.cfg.recovery_max_publications,
                    )
                    .await
                    .map_err(|_| ErrorCode::Internal)?;
                result.was_recovering = true;
                result.recovered = recovered;
                result.publications = pubs;
                result.offset = pos.offset;
                result.epoch = pos.epoch;
                metrics::counter!("realtime_recoveries_total", "recovered" => if recovered { "yes" } else { "no" }).increment(1);
            } else {
                let pos = gw.streams.position(channel).await;
                result.offset = pos.offset;
                result.epoch = pos.epoch;
            }
        }
        if let Some(t) = expires_at {
            result.expires = true;
            result.ttl = ttl_secs(t);
        }
        self.subs.insert(
            channel.to_owned(),
            SubState {
                last_offset: result.offset,
                expires_at,
                chan_info: chan_info.clone(),
            },
        );
        if ns.presence && ns.join_leave {
            gw.hub.join_leave(
                channel,
                "join",
                &client.info(chan_info),
                &client.id,
                ns.force_push_join_leave,
            );
        }
        Ok(result)
    }

    async fn subscribe(&mut self, id: u32, req: SubscribeRequest) -> Outcome {
        let channel = req.channel.clone();
        let gw = Arc::clone(&self.gw);
        let ch = match gw.authz.resolve(&channel) {
            Ok(c) => c,
            Err(code) => return self.fail(id, code),
        };
        if self.subs.contains_key(&channel) {
            return self.fail(id, ErrorCode::AlreadySubscribed);
        }
        if self.subs.len() >= gw.cfg.max_channels_per_connection {
            return self.fail(id, ErrorCode::LimitExceeded);
        }
        let mut chan_info = None;
        let mut expires_at = None;
        let with_token = !req.token.is_empty();
        if with_token {
            match gw.verifier.subscribe_claims(&req.token).await {
                Ok(c) => {
                    if c.channel != channel || c.sub != self.principal.user {
                        self.auth_failure("subscription_token");
                        return self.fail(id, ErrorCode::PermissionDenied);
                    }
                    expires_at = c.expires_at();
                    if expires_at.is_some_and(|t| t <= unix_now()) {
                        self.auth_failure("expired");
                        return self.fail(id, ErrorCode::TokenExpired);
                    }
                    chan_info = c.info.as_ref().map(|i| Arc::from(proto::raw(i.get())));
                }
                Err(TokenError::Expired) => {
                    self.auth_failure("expired");
                    return self.fail(id, ErrorCode::TokenExpired);
                }
                Err(e) => {
                    self.auth_failure(e.label());
                    return self.fail(id, ErrorCode::PermissionDenied);
                }
            }
        }
        if let Err(d) = gw.authz.check(
            gw.broker.security().authorizer(),
            &self.principal,
            &ch,
            Op::Subscribe { with_token },
        ) {
            self.channel_denied(d.reason, &self.principal, ch.name, "SUBSCRIBE");
            return self.fail(id, d.code);
        }
        match self
            .do_subscribe(&channel, &req, chan_info, expires_at)
            .await
        {
            Ok(res) => Outcome::Reply(proto::reply(id, "subscribe", &res)),
            Err(code) => self.fail(id, code),
        }
    }

    fn unsubscribe_local(&mut self, channel: &str) {
        self.subs.remove(channel);
        let Some(client) = self.client.clone() else {
            return;
        };
        if let Some(chan_info) = self.gw.hub.unsubscribe(channel, &client.id)
            && let Ok(ch) = self.gw.authz.resolve(channel)
            && ch.options.presence
            && ch.options.join_leave
        {
            self.gw.hub.join_leave(
                channel,
                "leave",
                &client.info(chan_info),
                &client.id,
                ch.options.force_push_join_leave,
            );
        }
    }

    /// Unsubscribes on the server's initiative and tells the client.
    pub fn server_unsubscribe(&mut self, channel: &str, code: u32, reason: &str) {
        if !self.subs.contains_key(channel) {
            return;
        }
        self.unsubscribe_local(channel);
        if let Some(c) = &self.client {
            let body = proto::push_body(
                channel,
                "unsubscribe",
                &serde_json::json!({"code": code, "reason": reason}),
            );
            let line = if self.unidirectional {
                body
            } else {
                proto::wrap_push(&body)
            };
            c.push(Outbound::Line(Arc::from(line)));
        }
    }

    /// A server-side subscription (server API `subscribe`): no permission checks.
    pub async fn server_subscribe(&mut self, channel: &str) {
        if self.subs.contains_key(channel)
            || self.subs.len() >= self.gw.cfg.max_channels_per_connection
        {
            return;
        }
        let req = SubscribeRequest {
            channel: channel.to_owned(),
            ..SubscribeRequest::default()
        };
        let Ok(res) = self.do_subscribe(channel, &req, None, None).await else {
            return;
        };
        if let Some(c) = &self.client {
            let body = proto::push_body(
                channel,
                "subscribe",
                &serde_json::json!({
                    "recoverable": res.recoverable,
                    "epoch": res.epoch,
                    "offset": res.offset,
                    "positioned": res.positioned,
                }),
            );
            let line = if self.unidirectional {
                body
            } else {
                proto::wrap_push(&body)
            };
            c.push(Outbound::Line(Arc::from(line)));
        }
    }

    async fn publish(&mut self, id: u32, req: proto::PublishRequest) -> Outcome {
        let gw = Arc::clone(&self.gw);
        let ch = match gw.authz.resolve(&req.channel) {
            Ok(c) => c,
            Err(code) => return self.fail(id, code),
        };
        let sub = self.subs.get(&req.channel);
        if let Err(d) = gw.authz.check(
            gw.broker.security().authorizer(),
            &self.principal,
            &ch,
            Op::Publish {
                subscribed: sub.is_some(),
            },
        ) {
            self.channel_denied(d.reason, &self.principal, ch.name, "PUBLISH");
            return self.fail(id, d.code);
        }
        let Some(data) = req.data else {
            return self.fail(id, ErrorCode::BadRequest);
        };
        let Some(client) = &self.client else {
            return self.fail(id, ErrorCode::Internal);
        };
        let info: ClientInfo = client.info(sub.and_then(|s| s.chan_info.clone()));
        let info = serde_json::to_string(&info).ok();
        match gw
            .publish(crate::Outgoing {
                channel: &req.channel,
                ns: ch.options,
                tenant: ch.tenant,
                data: &data,
                info: info.as_deref(),
                tags: None,
                idempotency_key: None,
                interface: self.interface,
            })
            .await
        {
            Ok(_) => Outcome::Reply(proto::reply(id, "publish", &serde_json::json!({}))),
            Err(code) => self.fail(id, code),
        }
    }

    fn presence(&mut self, id: u32, channel: &str, stats: bool) -> Outcome {
        let gw = Arc::clone(&self.gw);
        let ch = match gw.authz.resolve(channel) {
            Ok(c) => c,
            Err(code) => return self.fail(id, code),
        };
        if !ch.options.presence {
            return self.fail(id, ErrorCode::NotAvailable);
        }
        if let Err(d) = gw.authz.check(
            gw.broker.security().authorizer(),
            &self.principal,
            &ch,
            Op::Presence {
                subscribed: self.subs.contains_key(channel),
            },
        ) {
            self.channel_denied(d.reason, &self.principal, ch.name, "PRESENCE");
            return self.fail(id, d.code);
        }
        if stats {
            let (clients, users) = gw.hub.presence_stats(channel);
            return Outcome::Reply(proto::reply(
                id,
                "presence_stats",
                &serde_json::json!({"num_clients": clients, "num_users": users}),
            ));
        }
        let map: BTreeMap<String, ClientInfo> = gw
            .hub
            .presence(channel)
            .into_iter()
            .map(|i| (i.client.clone(), i))
            .collect();
        Outcome::Reply(proto::reply(
            id,
            "presence",
            &serde_json::json!({ "presence": map }),
        ))
    }

    async fn history(&mut self, id: u32, req: HistoryRequest) -> Outcome {
        let gw = Arc::clone(&self.gw);
        let ch = match gw.authz.resolve(&req.channel) {
            Ok(c) => c,
            Err(code) => return self.fail(id, code),
        };
        if !gw.keeps_history(ch.options) {
            return self.fail(id, ErrorCode::NotAvailable);
        }
        if let Err(d) = gw.authz.check(
            gw.broker.security().authorizer(),
            &self.principal,
            &ch,
            Op::History {
                subscribed: self.subs.contains_key(&req.channel),
            },
        ) {
            self.channel_denied(d.reason, &self.principal, ch.name, "HISTORY");
            return self.fail(id, d.code);
        }
        let since = req.since.as_ref().map(|s| (s.offset, s.epoch.as_str()));
        match gw
            .streams
            .history(
                &req.channel,
                ch.options,
                req.limit,
                since,
                req.reverse,
                gw.cfg.history_max_limit,
            )
            .await
        {
            Ok((pubs, pos)) => Outcome::Reply(proto::reply(
                id,
                "history",
                &serde_json::json!({"publications": pubs, "epoch": pos.epoch, "offset": pos.offset}),
            )),
            Err(code) => self.fail(id, code),
        }
    }

    async fn refresh(&mut self, id: u32, token: &str) -> Outcome {
        let claims = match self.gw.verifier.connect_claims(token).await {
            Ok(c) => c,
            Err(e) => return self.token_failure(id, &e),
        };
        if claims.sub != self.principal.user {
            self.auth_failure("refresh_user");
            return Outcome::Close(None, Disconnect::INVALID_TOKEN);
        }
        let exp = claims.expires_at();
        if exp.is_some_and(|t| t <= unix_now()) {
            self.auth_failure("expired");
            return self.fail(id, ErrorCode::TokenExpired);
        }
        self.expires_at = exp;
        let client = self.client.as_ref().map(|c| c.id.to_string());
        let mut result = serde_json::json!({"client": client, "version": VERSION});
        if let Some(t) = exp {
            set(&mut result, "expires", true);
            set(&mut result, "ttl", ttl_secs(t));
        }
        Outcome::Reply(proto::reply(id, "refresh", &result))
    }

    async fn sub_refresh(&mut self, id: u32, channel: &str, token: &str) -> Outcome {
        if !self.subs.contains_key(channel) {
            return self.fail(id, ErrorCode::BadRequest);
        }
        let claims = match self.gw.verifier.subscribe_claims(token).await {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                self.auth_failure("expired");
                return self.fail(id, ErrorCode::TokenExpired);
            }
            Err(e) => {
                self.auth_failure(e.label());
                return self.fail(id, ErrorCode::PermissionDenied);
            }
        };
        if claims.channel != channel || claims.sub != self.principal.user {
            self.auth_failure("subscription_token");
            return self.fail(id, ErrorCode::PermissionDenied);
        }
        let exp = claims.expires_at();
        if let Some(s) = self.subs.get_mut(channel) {
            s.expires_at = exp;
        }
        let mut result = serde_json::json!({});
        if let Some(t) = exp {
            set(&mut result, "expires", true);
            set(&mut result, "ttl", ttl_secs(t));
        }
        Outcome::Reply(proto::reply(id, "sub_refresh", &result))
    }

    /// Filters a queued message: publications the client already has, or of channels it left,
    /// are dropped.
    pub fn admit(&mut self, msg: &Outbound) -> Option<Arc<str>> {
        match msg {
            Outbound::Line(l) => Some(Arc::clone(l)),
            Outbound::Pub {
                channel,
                offset,
                line,
            } => {
                let s = self.subs.get_mut(&**channel)?;
                if *offset <= s.last_offset {
                    return None;
                }
                s.last_offset = *offset;
                Some(Arc::clone(line))
            }
        }
    }

    /// Applies a server-side request; returns a disconnect to perform.
    pub async fn on_control(&mut self, c: Control) -> Option<Disconnect> {
        match c {
            Control::Subscribe { channel } => {
                self.server_subscribe(&channel).await;
                None
            }
            Control::Unsubscribe { channel } => {
                self.server_unsubscribe(&channel, 2000, "server unsubscribe");
                None
            }
            Control::Disconnect(d) => Some(d),
            Control::Wake => None,
        }
        .or_else(|| self.client.as_ref().and_then(|c| c.kill_reason()))
    }

    /// Leaves every channel and the registry.
    pub fn close(&mut self) {
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for ch in channels {
            self.unsubscribe_local(&ch);
        }
        if let Some(c) = self.client.take() {
            self.gw.hub.unregister(&c);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

pub async fn ws_handler(
    State(gw): State<Arc<Gateway>>,
    crate::Peer(source): crate::Peer,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !valid_websocket_key(headers.get("sec-websocket-key")) {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be the base64 encoding of 16 bytes (RFC 6455 section 4.1)",
        )
            .into_response();
    }
    let protocols = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if protocols.contains("centrifuge-protobuf") {
        return (
            StatusCode::BAD_REQUEST,
            "the protobuf encoding is not supported; connect with the JSON encoding",
        )
            .into_response();
    }
    let max = gw.cfg.max_command_bytes;
    ws.read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run_ws(gw, socket, source))
}

/// RFC 6455 §4.2.1: the key is a base64-encoded 16-byte value; anything else is not a
/// WebSocket client's handshake and is refused before upgrading.
pub fn valid_websocket_key(key: Option<&axum::http::HeaderValue>) -> bool {
    use base64::Engine as _;
    key.and_then(|k| {
        base64::engine::general_purpose::STANDARD
            .decode(k.as_bytes().trim_ascii())
            .ok()
    })
    .is_some_and(|raw| raw.len() == 16)
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BATCH_BYTES: usize = 64 * 1024;

async fn send_text(ws: &mut WebSocket, text: String) -> Result<(), Disconnect> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Disconnect::WRITE_ERROR),
        Err(_) => Err(Disconnect::SLOW),
    }
}

async fn close(ws: &mut WebSocket, d: Disconnect) {
    let frame = CloseFrame {
        code: d.code,
        reason: d.reason.into(),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
}

/// Runs the commands of one text frame (newline-separated JSON) in order.
async fn run_frame(s: &mut Session, text: &str) -> (Vec<String>, Option<Disconnect>) {
    let mut replies = Vec::new();
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cmd: Command = match serde_json::from_str(line) {
            Ok(c) => c,
            Err(_) => return (replies, Some(Disconnect::BAD_REQUEST)),
        };
        match s.handle(cmd).await {
            Outcome::Reply(r) => replies.push(r),
            Outcome::None => {}
            Outcome::Close(r, d) => {
                replies.extend(r);
                return (replies, Some(d));
            }
        }
    }
    (replies, None)
}

/// Handles one incoming WebSocket message; `Some(end)` ends the connection (with a close code
/// or without one when the client went away).
async fn on_message(
    s: &mut Session,
    ws: &mut WebSocket,
    msg: Option<Result<Message, axum::Error>>,
) -> Option<Option<Disconnect>> {
    match msg {
        Some(Ok(Message::Text(t))) => {
            // Boxed: the command futures are large and a connection is idle most of the time;
            // keeping them out of the task keeps idle connections small.
            let (replies, d) = Box::pin(run_frame(s, t.as_str())).await;
            if !replies.is_empty()
                && let Err(e) = send_text(ws, replies.join("\n")).await
            {
                return Some(Some(e));
            }
            d.map(Some)
        }
        Some(Ok(Message::Binary(_))) => Some(Some(Disconnect::BAD_REQUEST)),
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Some(None),
        Some(Ok(_)) => None,
    }
}

async fn run_ws(gw: Arc<Gateway>, mut ws: WebSocket, source: String) {
    let mut s = Session::new(Arc::clone(&gw), false, source);
    let d = drive_ws(&gw, &mut s, &mut ws).await;
    if let Some(d) = d {
        close(&mut ws, d).await;
    }
    s.close();
}

async fn drive_ws(gw: &Arc<Gateway>, s: &mut Session, ws: &mut WebSocket) -> Option<Disconnect> {
    let mut shutdown = gw.shutdown.clone();
    // The connect command must arrive first and soon.
    let deadline = Instant::now() + Duration::from_secs(gw.cfg.connect_timeout_secs.max(1));
    while s.client.is_none() {
        let msg = tokio::select! {
            m = ws.recv() => m,
            _ = tokio::time::sleep_until(deadline) => return Some(Disconnect::BAD_REQUEST),
            _ = shutdown.changed() => return Some(Disconnect::SHUTDOWN),
        };
        if let Some(end) = on_message(s, ws, msg).await {
            return end;
        }
    }
    let (Some(client), Some(mut rx), Some(mut ctl)) =
        (s.client.clone(), s.outbound.take(), s.control.take())
    else {
        return Some(Disconnect::INTERNAL);
    };
    let ping_every = Duration::from_secs(gw.cfg.ping_interval_secs.max(1));
    let pong_wait = Duration::from_secs(gw.cfg.pong_timeout_secs.max(1));
    let mut next_ping = Instant::now() + ping_every;
    let mut awaiting_pong: Option<Instant> = None;
    // One timer for pings, pong deadlines and expiries, moved only when its deadline changes.
    let sleep = tokio::time::sleep_until(next_ping);
    tokio::pin!(sleep);
    loop {
        let mut wake = next_ping;
        if let Some(t) = awaiting_pong {
            wake = wake.min(t + pong_wait);
        }
        if let Some(t) = s.next_expiry() {
            wake = wake.min(instant_at(t));
        }
        if sleep.deadline() != wake {
            sleep.as_mut().reset(wake);
        }
        tokio::select! {
            biased;
            c = ctl.recv() => {
                // Kills (slow client, server API, shutdown) and server-side subscriptions.
                if let Some(d) = client.kill_reason() {
                    return Some(d);
                }
                if let Some(c) = c
                    && let Some(d) = Box::pin(s.on_control(c)).await
                {
                    return Some(d);
                }
            }
            m = ws.recv() => {
                // Any frame from the client counts as its pong.
                awaiting_pong = None;
                if let Some(end) = on_message(s, ws, m).await {
                    return end;
                }
            }
            m = rx.recv() => {
                let first = m?;
                let mut batch = String::new();
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    client.taken(&msg);
                    if let Some(line) = s.admit(&msg) {
                        if !batch.is_empty() {
                            batch.push('\n');
                        }
                        batch.push_str(&line);
                    }
                    if batch.len() < MAX_BATCH_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    let n = batch.split('\n').count() as u64;
                    if let Err(e) = send_text(ws, batch).await {
                        return Some(e);
                    }
                    client.sent(n);
                }
            }
            _ = &mut sleep => {
                let now = Instant::now();
                if awaiting_pong.is_some_and(|t| now >= t + pong_wait) {
                    return Some(Disconnect::NO_PONG);
                }
                if let Some(d) = s.on_expiry() {
                    return Some(d);
                }
                if now >= next_ping {
                    if let Err(e) = send_text(ws, "{}".to_owned()).await {
                        return Some(e);
                    }
                    if awaiting_pong.is_none() {
                        awaiting_pong = Some(now);
                    }
                    next_ping = now + ping_every;
                }
            }
        }
    }
}

#[cfg(test)]
mod websocket_key_tests {
    use super::valid_websocket_key;
    use axum::http::HeaderValue;

    #[test]
    fn only_base64_of_sixteen_bytes_is_a_key() {
        // RFC 6455's example key.
        let good = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert!(valid_websocket_key(Some(&good)));
        for bad in [
            "",
            "not base64!",
            "dGhlIHNhbXBsZQ==",             // 10 bytes
            "dGhlIHNhbXBsZSBub25jZSEhIQ==", // 19 bytes
            "dGhlIHNhbXBsZSBub25jZQ",       // unpadded
        ] {
            let v = HeaderValue::from_static(bad);
            assert!(!valid_websocket_key(Some(&v)), "{bad:?} accepted");
        }
        assert!(!valid_websocket_key(None));
    }
}
