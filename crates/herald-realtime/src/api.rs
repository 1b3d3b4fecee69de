//! HTTP endpoints of the gateway: Centrifugo's server API (`POST /api/<method>`, as `cent`
//! calls it), seed 2's `/api/events/publish` and `/api/events/history/{channel}`, and
//! `/api/metrics/summary`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::authz::{Op, Principal};
use crate::hub::Control;
use crate::proto::{Disconnect, ErrorCode, Json, StreamPosition};
use crate::streams::StreamError;

fn api_key(headers: &HeaderMap) -> Option<&str> {
    herald_auth::keys::presented_api_key(
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// What a presented API key stands for: the configured admin key or an issued key.
enum KeyHolder {
    Admin,
    Tenant(String),
}

/// Resolved by the broker's one resolver, as `/v1` resolves keys.
fn key_holder(gw: &Gateway, headers: &HeaderMap) -> Option<KeyHolder> {
    let key = api_key(headers)?;
    let subject =
        gw.broker
            .security()
            .subject_for_api_key(&gw.admin_api_key, key, String::new())?;
    match (subject.trusted, subject.tenant) {
        (true, _) => Some(KeyHolder::Admin),
        (false, Some(t)) => Some(KeyHolder::Tenant(t)),
        // Every key is an admin or a tenant key; a subject that is neither gets nothing.
        (false, None) => None,
    }
}

fn is_admin(gw: &Gateway, headers: &HeaderMap) -> bool {
    matches!(key_holder(gw, headers), Some(KeyHolder::Admin))
}

fn http_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn proto_error(code: ErrorCode) -> Value {
    json!({"error": {"code": code.code(), "message": code.message()}})
}

/// Who is calling a seed endpoint: the admin key, or a connection JWT.
enum Caller {
    Admin,
    Client(Principal),
}

async fn caller(gw: &Gateway, headers: &HeaderMap, source: &str) -> Result<Caller, Response> {
    match key_holder(gw, headers) {
        Some(KeyHolder::Admin) => return Ok(Caller::Admin),
        // A tenant key acts as its tenant's principal, held to the tenant's channels.
        Some(KeyHolder::Tenant(t)) => {
            return Ok(Caller::Client(Principal {
                user: format!("{}{t}", herald_auth::authz::TENANT_USER_PREFIX),
                tenant: Some(t),
                roles: Vec::new(),
                anonymous: false,
            }));
        }
        None => {}
    }
    if let Some(token) = bearer(headers) {
        return match gw.verifier.connect_claims(token).await {
            Ok(c) => Ok(Caller::Client(Principal {
                user: c.sub,
                tenant: c.tenant,
                roles: c.roles,
                anonymous: false,
            })),
            Err(e) => {
                gw.auth_failure("http", e.label(), source);
                Err(http_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    e.to_string(),
                ))
            }
        };
    }
    gw.auth_failure(
        "http",
        if api_key(headers).is_some() {
            "bad_key"
        } else {
            "no_credentials"
        },
        source,
    );
    Err(http_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send an API key in X-API-Key or a JWT as Authorization: Bearer",
    ))
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownChannel => StatusCode::NOT_FOUND,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest | ErrorCode::UnrecoverablePosition => StatusCode::BAD_REQUEST,
        ErrorCode::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotAvailable => StatusCode::CONFLICT,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Expired => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::MethodNotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadySubscribed => StatusCode::CONFLICT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn code_error(code: ErrorCode, what: &str) -> Response {
    http_error(
        status_of(code),
        &code.message().replace(' ', "_"),
        format!("{what}: {}", code.message()),
    )
}

/// A client's access to a channel through HTTP: it must be allowed to subscribe, and then the
/// namespace's subscriber permission for `op` applies.
#[allow(clippy::result_large_err)] // the error is the finished HTTP response
fn client_access(
    gw: &Gateway,
    who: &Principal,
    channel: &str,
    op: Op,
    source: &str,
) -> Result<(), Response> {
    let ch = gw
        .authz
        .resolve(channel)
        .map_err(|c| code_error(c, channel))?;
    let checks = [Op::Subscribe { with_token: false }, op];
    for op in checks {
        if let Err(d) = gw
            .authz
            .check(gw.broker.security().authorizer(), who, &ch, op)
        {
            gw.channel_denied("http", d.reason, who, channel, op.name(), source);
            return Err(code_error(d.code, channel));
        }
    }
    match gw.command_allowed(who) {
        crate::limits::Verdict::Allow => Ok(()),
        crate::limits::Verdict::Limited | crate::limits::Verdict::Abuse => {
            let retry = gw
                .limiter
                .retry_after(&format!("u:{}", who.user))
                .to_string();
            let mut r = code_error(ErrorCode::TooManyRequests, channel);
            if let Ok(v) = retry.parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(r)
        }
    }
}

#[derive(Deserialize)]
pub struct EventPublish {
    channel: String,
    event: Json,
}

/// Seed 2: `POST /api/events/publish {"channel":..,"event":{"type":..,"data":{..}}}`.
pub async fn events_publish(
    State(gw): State<Arc<Gateway>>,
    crate::Peer(source): crate::Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match caller(&gw, &headers, &source).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let req: EventPublish = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("expected {{\"channel\":..,\"event\":{{..}}}}: {e}"),
            );
        }
    };
    if !req.event.get().trim_start().starts_with('{') {
        return http_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "event must be a JSON object",
        );
    }
    if let Caller::Client(p) = &who
        && let Err(r) = client_access(
            &gw,
            p,
            &req.channel,
            Op::Publish { subscribed: true },
            &source,
        )
    {
        return r;
    }
    let ch = match gw.authz.resolve(&req.channel) {
        Ok(c) => c,
        Err(code) => return code_error(code, &req.channel),
    };
    match gw
        .publish(crate::Outgoing {
            channel: &req.channel,
            ns: ch.options,
            tenant: ch.tenant,
            data: &req.event,
            info: None,
            tags: None,
            idempotency_key: None,
            interface: "http",
        })
        .await
    {
        Ok(out) => axum::Json(json!({
            "success": true,
            "channel": req.channel,
            "offset": out.offset,
            "epoch": out.epoch,
        }))
        .into_response(),
        Err(code) => code_error(code, &req.channel),
    }
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<i32>,
}

/// Seed 2: `GET /api/events/history/{channel}?limit=50` — the newest `limit` publications,
/// oldest first.
pub async fn events_history(
    State(gw): State<Arc<Gateway>>,
    crate::Peer(source): crate::Peer,
    headers: HeaderMap,
    Path(channel): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let who = match caller(&gw, &headers, &source).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Caller::Client(p) = &who
        && let Err(r) = client_access(&gw, p, &channel, Op::History { subscribed: true }, &source)
    {
        return r;
    }
    let ch = match gw.authz.resolve(&channel) {
        Ok(c) => c,
        Err(code) => return code_error(code, &channel),
    };
    if !gw.keeps_history(ch.options) {
        return code_error(ErrorCode::NotAvailable, &channel);
    }
    let limit = q
        .limit
        .unwrap_or(50)
        .clamp(0, gw.cfg.history_max_limit as i32);
    match gw
        .streams
        .history(
            &channel,
            ch.options,
            limit,
            None,
            true,
            gw.cfg.history_max_limit,
        )
        .await
    {
        Ok((mut pubs, pos)) => {
            pubs.reverse();
            axum::Json(json!({
                "channel": channel,
                "epoch": pos.epoch,
                "offset": pos.offset,
                "publications": pubs,
            }))
            .into_response()
        }
        Err(code) => code_error(code, &channel),
    }
}

pub async fn metrics_summary(State(gw): State<Arc<Gateway>>) -> Response {
    let s = &gw.hub.stats;
    axum::Json(json!({
        "connections": s.connections.load(Ordering::Relaxed),
        "subscriptions": s.subscriptions.load(Ordering::Relaxed),
        "channels": gw.hub.channel_count(),
        "users": gw.hub.user_count(),
        "events_published": s.events_published.load(Ordering::Relaxed),
        "messages_sent": s.messages_sent.load(Ordering::Relaxed),
        "auth_failures": s.auth_failures.load(Ordering::Relaxed),
        "slow_disconnects": s.slow_disconnects.load(Ordering::Relaxed),
        "uptime_seconds": gw.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// Centrifugo's server API: `POST /api/<method>` with the admin key.
pub async fn server_api(
    State(gw): State<Arc<Gateway>>,
    crate::Peer(source): crate::Peer,
    headers: HeaderMap,
    Path(method): Path<String>,
    body: Bytes,
) -> Response {
    if !is_admin(&gw, &headers) {
        gw.auth_failure(
            "server_api",
            if api_key(&headers).is_some() {
                "bad_key"
            } else {
                "no_credentials"
            },
            &source,
        );
        return http_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the server API needs the admin API key in X-API-Key",
        );
    }
    let params: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return axum::Json(proto_error(ErrorCode::BadRequest)).into_response(),
        }
    };
    if method == "batch" {
        return axum::Json(batch(&gw, params).await).into_response();
    }
    match call(&gw, &method, params).await {
        Some(Ok(result)) => axum::Json(json!({ "result": result })).into_response(),
        Some(Err(code)) => axum::Json(proto_error(code)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(proto_error(ErrorCode::MethodNotFound)),
        )
            .into_response(),
    }
}

async fn batch(gw: &Arc<Gateway>, params: Value) -> Value {
    let commands = params
        .get("commands")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut replies = Vec::with_capacity(commands.len().min(1000));
    for c in commands.into_iter().take(1000) {
        let Some((method, p)) = c.as_object().and_then(|o| o.iter().next()) else {
            replies.push(proto_error(ErrorCode::BadRequest));
            continue;
        };
        let reply = match call(gw, method, p.clone()).await {
            Some(Ok(r)) => json!({ method.clone(): r }),
            Some(Err(code)) => proto_error(code),
            None => proto_error(ErrorCode::MethodNotFound),
        };
        replies.push(reply);
    }
    json!({ "replies": replies })
}

#[derive(Deserialize)]
struct PublishParams {
    channel: String,
    data: Option<Json>,
    b64data: Option<String>,
    #[serde(default)]
    skip_history: bool,
    tags: Option<BTreeMap<String, String>>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct BroadcastParams {
    channels: Vec<String>,
    data: Option<Json>,
    b64data: Option<String>,
    #[serde(default)]
    skip_history: bool,
    tags: Option<BTreeMap<String, String>>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct UserChannel {
    #[serde(default)]
    user: String,
    #[serde(default)]
    channel: String,
    client: Option<String>,
}

#[derive(Deserialize)]
struct DisconnectParams {
    #[serde(default)]
    user: String,
    client: Option<String>,
    #[serde(default)]
    whitelist: Vec<String>,
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize)]
struct DisconnectSpec {
    #[serde(default)]
    code: u16,
}

#[derive(Deserialize)]
struct ChannelParam {
    #[serde(default)]
    channel: String,
}

#[derive(Deserialize)]
struct HistoryParams {
    #[serde(default)]
    channel: String,
    #[serde(default)]
    limit: i32,
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct ChannelsParams {
    pattern: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ErrorCode> {
    serde_json::from_value(v).map_err(|_| ErrorCode::BadRequest)
}

async fn publish_one(
    gw: &Gateway,
    channel: &str,
    data: &Option<Json>,
    b64data: &Option<String>,
    skip_history: bool,
    tags: Option<&BTreeMap<String, String>>,
    idempotency_key: Option<&str>,
) -> Result<Value, ErrorCode> {
    let ch = gw.authz.resolve(channel)?;
    let data: Json = match (data, b64data) {
        (Some(d), _) => crate::proto::raw(d.get()),
        (None, Some(b)) => {
            // Binary payloads need the protobuf protocol; over JSON they must decode to JSON.
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| ErrorCode::BadRequest)?;
            let s = String::from_utf8(bytes).map_err(|_| ErrorCode::BadRequest)?;
            serde_json::value::RawValue::from_string(s).map_err(|_| ErrorCode::BadRequest)?
        }
        (None, None) => return Err(ErrorCode::BadRequest),
    };
    let mut ns = ch.options.clone();
    if skip_history {
        ns.history_size = 0;
    }
    let out = gw
        .publish(crate::Outgoing {
            channel,
            ns: &ns,
            tenant: ch.tenant,
            data: &data,
            info: None,
            tags,
            idempotency_key,
            interface: "server_api",
        })
        .await?;
    let mut r = json!({});
    if out.offset > 0 {
        r = json!({"offset": out.offset, "epoch": out.epoch});
    }
    Ok(r)
}

/// One server API method; `None` when the method does not exist.
async fn call(gw: &Arc<Gateway>, method: &str, params: Value) -> Option<Result<Value, ErrorCode>> {
    Some(match method {
        "publish" => match parse::<PublishParams>(params) {
            Ok(p) => {
                publish_one(
                    gw,
                    &p.channel,
                    &p.data,
                    &p.b64data,
                    p.skip_history,
                    p.tags.as_ref(),
                    p.idempotency_key.as_deref(),
                )
                .await
            }
            Err(e) => Err(e),
        },
        "broadcast" => match parse::<BroadcastParams>(params) {
            Ok(p) => {
                let mut responses = Vec::with_capacity(p.channels.len().min(10_000));
                for ch in p.channels.iter().take(10_000) {
                    let r = publish_one(
                        gw,
                        ch,
                        &p.data,
                        &p.b64data,
                        p.skip_history,
                        p.tags.as_ref(),
                        p.idempotency_key.as_deref(),
                    )
                    .await;
                    responses.push(match r {
                        Ok(v) => json!({ "result": v }),
                        Err(code) => proto_error(code),
                    });
                }
                Ok(json!({ "responses": responses }))
            }
            Err(e) => Err(e),
        },
        "subscribe" | "unsubscribe" => match parse::<UserChannel>(params) {
            Ok(p) if !p.user.is_empty() || p.client.is_some() => {
                if let Err(code) = gw.authz.resolve(&p.channel) {
                    return Some(Err(code));
                }
                let clients = match &p.client {
                    Some(c) if p.user.is_empty() => gw
                        .hub
                        .all_clients()
                        .into_iter()
                        .filter(|h| &*h.id == c.as_str())
                        .collect(),
                    c => gw.hub.user_clients(&p.user, c.as_deref()),
                };
                for c in clients {
                    let msg = if method == "subscribe" {
                        Control::Subscribe {
                            channel: p.channel.clone(),
                        }
                    } else {
                        Control::Unsubscribe {
                            channel: p.channel.clone(),
                        }
                    };
                    if c.control.try_send(msg).is_err() {
                        tracing::warn!(client = %c.id, "control queue full");
                    }
                }
                Ok(json!({}))
            }
            Ok(_) => Err(ErrorCode::BadRequest),
            Err(e) => Err(e),
        },
        "disconnect" => match parse::<DisconnectParams>(params) {
            Ok(p) if !p.user.is_empty() => {
                let d = match p.disconnect.map(|d| d.code) {
                    Some(code) if (3000..=4999).contains(&code) => {
                        Disconnect::new(code, "disconnect")
                    }
                    _ => Disconnect::FORCE_NO_RECONNECT,
                };
                for c in gw.hub.user_clients(&p.user, p.client.as_deref()) {
                    if p.whitelist.iter().any(|w| w.as_str() == &*c.id) {
                        continue;
                    }
                    c.disconnect(d);
                }
                Ok(json!({}))
            }
            Ok(_) => Err(ErrorCode::BadRequest),
            Err(e) => Err(e),
        },
        "presence" => match parse::<ChannelParam>(params) {
            Ok(p) => match gw.authz.resolve(&p.channel) {
                Ok(ch) if !ch.options.presence => Err(ErrorCode::NotAvailable),
                Ok(_) => {
                    let map: BTreeMap<String, Value> = gw
                        .hub
                        .presence(&p.channel)
                        .into_iter()
                        .map(|i| {
                            (
                                i.client.clone(),
                                serde_json::to_value(i).unwrap_or_default(),
                            )
                        })
                        .collect();
                    Ok(json!({ "presence": map }))
                }
                Err(code) => Err(code),
            },
            Err(e) => Err(e),
        },
        "presence_stats" => match parse::<ChannelParam>(params) {
            Ok(p) => match gw.authz.resolve(&p.channel) {
                Ok(ch) if !ch.options.presence => Err(ErrorCode::NotAvailable),
                Ok(_) => {
                    let (c, u) = gw.hub.presence_stats(&p.channel);
                    Ok(json!({"num_clients": c, "num_users": u}))
                }
                Err(code) => Err(code),
            },
            Err(e) => Err(e),
        },
        "history" => match parse::<HistoryParams>(params) {
            Ok(p) => match gw.authz.resolve(&p.channel) {
                Ok(ch) if !gw.keeps_history(ch.options) => Err(ErrorCode::NotAvailable),
                Ok(ch) => {
                    let since = p.since.as_ref().map(|s| (s.offset, s.epoch.as_str()));
                    gw.streams
                        .history(
                            &p.channel,
                            ch.options,
                            p.limit,
                            since,
                            p.reverse,
                            gw.cfg.history_max_limit,
                        )
                        .await
                        .map(|(pubs, pos)| {
                            json!({"publications": pubs, "epoch": pos.epoch, "offset": pos.offset})
                        })
                }
                Err(code) => Err(code),
            },
            Err(e) => Err(e),
        },
        "history_remove" => match parse::<ChannelParam>(params) {
            Ok(p) => match gw.authz.resolve(&p.channel) {
                Ok(_) => gw
                    .streams
                    .remove(&p.channel)
                    .await
                    .map(|()| json!({}))
                    .map_err(|e| {
                        // Both are the server's trouble, not the caller's; Centrifugo has one
                        // code for them.
                        tracing::warn!(channel = %p.channel, error = %e, "history_remove failed");
                        match e {
                            StreamError::Unavailable(_) | StreamError::Internal(_) => {
                                ErrorCode::Internal
                            }
                            StreamError::NoHistory => ErrorCode::NotAvailable,
                        }
                    }),
                Err(code) => Err(code),
            },
            Err(e) => Err(e),
        },
        "channels" => match parse::<ChannelsParams>(params) {
            Ok(p) => {
                let map: BTreeMap<String, Value> = gw
                    .hub
                    .channels()
                    .into_iter()
                    .filter(|(name, _)| {
                        p.pattern
                            .as_deref()
                            .is_none_or(|pat| pat.is_empty() || glob_match(pat, name))
                    })
                    .map(|(name, n)| (name, json!({ "num_clients": n })))
                    .collect();
                Ok(json!({ "channels": map }))
            }
            Err(e) => Err(e),
        },
        "info" => {
            let s = &gw.hub.stats;
            Ok(json!({"nodes": [{
                "uid": node_uid(),
                "name": "herald",
                "version": env!("CARGO_PKG_VERSION"),
                "num_clients": s.connections.load(Ordering::Relaxed),
                "num_users": gw.hub.user_count(),
                "num_channels": gw.hub.channel_count(),
                "num_subs": s.subscriptions.load(Ordering::Relaxed),
                "uptime": gw.started.elapsed().as_secs(),
            }]}))
        }
        _ => return None,
    })
}

fn node_uid() -> String {
    static UID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    UID.get_or_init(|| uuid::Uuid::new_v4().to_string()).clone()
}

/// Glob with `*` (any run) and `?` (one character), as Centrifugo's channel patterns.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn channel_patterns() {
        assert!(glob_match("tenant:*", "tenant:1:x"));
        assert!(glob_match("tenant:?:x", "tenant:1:x"));
        assert!(glob_match("*:x", "tenant:1:x"));
        assert!(!glob_match("admin:*", "tenant:1:x"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
