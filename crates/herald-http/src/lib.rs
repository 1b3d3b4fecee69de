//! `herald-http` is Herald's HTTP API: event publishing, topic administration and reads,
//! health, readiness and Prometheus metrics.
//!
//! It maps requests onto `herald-broker` and every `BrokerError` onto a status with an
//! exhaustive match; errors are always `{"error":{"code","message"}}`. It is not the WebSocket
//! gateway and speaks no Kafka.

mod admin;
mod auth;
mod body;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod listener;
mod quota;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use herald_auth::acl::Operation;
use herald_auth::authz::Resource;

use auth::Caller;
use base64::Engine as _;
use bytes::Bytes;
use herald_broker::{Broker, BrokerError, Missing, RawRecord};
use herald_core::TopicGlob;
use serde::Deserialize;
use serde_json::{Value, json};

pub use body::BodyLimit;
use body::JsonBody;
pub use error::ApiError;
pub use listener::{ServeConfig, serve};

/// Everything the HTTP handlers share.
pub struct HttpState {
    pub broker: Arc<Broker>,
    pub admin_api_key: String,
    /// Renders the Prometheus exposition; installed by the binary, which owns the recorder.
    pub render_metrics: Box<dyn Fn() -> String + Send + Sync>,
    pub limits: HttpLimits,
}

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    pub max_read_records: usize,
    pub max_wait: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 4 * 1024 * 1024,
            max_events_per_request: 1000,
            max_read_records: 1000,
            max_wait: Duration::from_secs(30),
        }
    }
}

type AppState = Arc<HttpState>;

/// The HTTP API with `extra` (the real-time gateway's routes) merged in. The body limit and
/// the panic guard wrap every route, the gateway's included, and requests to the gateway that
/// present an API key are held to the same request quota as `/v1`.
pub fn router(state: HttpState, extra: Router) -> Router {
    let limit = BodyLimit(state.limits.max_body_bytes);
    let state = Arc::new(state);
    let api = Router::new()
        .route("/v1/events", post(publish_events))
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route(
            "/v1/topics/{topic}",
            get(describe_topic).delete(delete_topic),
        )
        .route(
            "/v1/topics/{topic}/config",
            axum::routing::patch(alter_config),
        )
        .route("/v1/topics/{topic}/records", post(produce_records))
        .route("/v1/topics/{topic}/events", get(read_events))
        .route("/v1/groups", get(list_groups))
        .route(
            "/v1/groups/{group}",
            get(describe_group).delete(delete_group),
        )
        .route("/v1/groups/{group}/reset-offsets", post(reset_offsets))
        .merge(admin::routes())
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authenticate,
        ));
    let extra = extra.layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        auth::admit_key_holders,
    ));
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Layers go on after the merge so that they wrap the merged routes too.
        .merge(extra)
        .layer(axum::Extension(limit))
        .layer(middleware::from_fn(catch_panics))
}

async fn catch_panics(req: Request, next: Next) -> Response {
    // Handlers are written not to panic; if one ever does, the client still gets a JSON 500
    // and the connection survives.
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.broker.probe().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string())
            .into_response(),
    }
}

/// Most `kafka_consumer_lag` series exported; the per-group sums are always complete.
const MAX_LAG_SERIES: usize = 10_000;

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Consumer lag as Prometheus text, computed at scrape time from the committed offsets, so a
/// deleted group or topic leaves no stale series behind.
async fn lag_exposition(broker: &Broker) -> String {
    use std::fmt::Write as _;
    let lags = broker.groups().lag().await;
    let mut out = String::new();
    let mut per_group: BTreeMap<&str, u64> = BTreeMap::new();
    let _ = writeln!(
        out,
        "# HELP kafka_consumer_lag High watermark minus committed offset, per group and partition"
    );
    let _ = writeln!(out, "# TYPE kafka_consumer_lag gauge");
    for (i, l) in lags.iter().enumerate() {
        *per_group.entry(&l.group).or_default() += l.lag;
        if i < MAX_LAG_SERIES {
            let _ = writeln!(
                out,
                "kafka_consumer_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                label(&l.group),
                label(&l.topic),
                l.partition,
                l.lag
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kafka_consumer_group_lag Sum of kafka_consumer_lag over a group's partitions"
    );
    let _ = writeln!(out, "# TYPE kafka_consumer_group_lag gauge");
    for (group, lag) in per_group {
        let _ = writeln!(
            out,
            "kafka_consumer_group_lag{{group=\"{}\"}} {lag}",
            label(group)
        );
    }
    out
}

async fn metrics(State(state): State<AppState>) -> Response {
    // A storage failure leaves these gauges at their last values rather than failing the
    // scrape: the other metrics are what an operator needs to see it.
    match state.broker.bytes_per_tenant().await {
        Ok(per_tenant) => {
            for (tenant, bytes) in per_tenant {
                metrics::gauge!("herald_log_bytes", "tenant" => tenant).set(bytes as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "storage figures for /metrics failed"),
    }
    match state.broker.storage_figures().await {
        Ok(f) => {
            metrics::gauge!("herald_topics").set(f.topics as f64);
            if let Some(segments) = f.segments {
                metrics::gauge!("herald_journal_segments").set(segments as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "storage figures for /metrics failed"),
    }
    let mut body = (state.render_metrics)();
    body.push_str(&lag_exposition(&state.broker).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn publish_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (events, single) = match body {
        Value::Array(items) => (items, false),
        v @ Value::Object(_) => (vec![v], true),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                "the body must be one event object or an array of event objects",
            ));
        }
    };
    if events.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            "the event array is empty",
        ));
    }
    if events.len() > state.limits.max_events_per_request {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{} events in one request exceeds the limit of {}",
                events.len(),
                state.limits.max_events_per_request
            ),
        ));
    }
    let published = state
        .broker
        .publish_events_checked(events, &|topic| {
            caller
                .allow(&state, Operation::Write, Resource::Topic(topic))
                .is_ok()
        })
        .await?;
    if single {
        let first = published.into_iter().next().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "publish returned no result",
            )
        })?;
        Ok(Json(first).into_response())
    } else {
        Ok(Json(published).into_response())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    partitions: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

fn parse_body<T: for<'a> Deserialize<'a>>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    })
}

async fn create_topic(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let req: CreateTopic = parse_body(body)?;
    if !caller.permits(&state, Operation::Create, Resource::Cluster) {
        caller.allow(&state, Operation::Create, Resource::Topic(&req.name))?;
    }
    let d = state
        .broker
        .create_topic(&req.name, req.partitions, req.config)
        .await?;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

async fn delete_topic(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.allow(&state, Operation::Delete, Resource::Topic(&topic))?;
    state.broker.delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn describe_topic(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(&state, Operation::Describe, Resource::Topic(&topic))?;
    Ok(Json(state.broker.describe_topic(&topic).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlterConfig {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

async fn alter_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.allow(&state, Operation::AlterConfigs, Resource::Topic(&topic))?;
    let req: AlterConfig = parse_body(body)?;
    Ok(Json(
        state
            .broker
            .alter_topic_config(&topic, req.set, req.delete)
            .await?,
    )
    .into_response())
}

async fn list_topics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_params(&q, &["tenant", "match"])?;
    let tenant = match q.get("tenant") {
        Some(t) => Some(
            herald_core::TenantId::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let glob = match q.get("match") {
        Some(m) => Some(TopicGlob::parse(m).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    let topics: Vec<Value> = state
        .broker
        .list_topics(tenant.as_ref().map(|t| t.as_str()), glob.as_ref())
        .await?
        .into_iter()
        .filter(|t| caller.permits(&state, Operation::Describe, Resource::Topic(&t.name)))
        .map(|t| json!({"name": t.name, "partitions": t.partitions}))
        .collect();
    Ok(Json(json!({"topics": topics})).into_response())
}

fn check_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {k:?}; accepted: {}",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter {name}={v:?} is not a valid non-negative integer"
                ))
            })
        })
        .transpose()
}

/// A key or value as returned by reads: JSON values are embedded byte for byte (never
/// re-serialized, so key order and number precision are kept), other UTF-8 as a string, other
/// bytes as base64.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Payload {
    Json(Box<serde_json::value::RawValue>),
    Text(String),
    Null,
}

fn encode_bytes(b: &Option<Bytes>) -> (Payload, &'static str) {
    let Some(b) = b else {
        return (Payload::Null, "null");
    };
    match std::str::from_utf8(b) {
        Ok(s) => match serde_json::value::RawValue::from_string(s.trim().to_owned()) {
            Ok(raw) if !s.trim().is_empty() => (Payload::Json(raw), "json"),
            _ => (Payload::Text(s.to_owned()), "utf8"),
        },
        Err(_) => (
            Payload::Text(base64::engine::general_purpose::STANDARD.encode(b)),
            "base64",
        ),
    }
}

#[derive(serde::Serialize)]
struct EventOut {
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Payload,
    key_format: &'static str,
    value: Payload,
    format: &'static str,
    headers: serde_json::Map<String, Value>,
}

#[derive(serde::Serialize)]
struct EventsOut {
    topic: String,
    partition: u32,
    events: Vec<EventOut>,
    next_offset: u64,
    high_watermark: u64,
    log_start_offset: u64,
}

async fn read_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.allow(&state, Operation::Read, Resource::Topic(&topic))?;
    check_params(&q, &["partition", "offset", "limit", "wait_ms", "from"])?;
    let partition: u32 = param(&q, "partition")?.unwrap_or(0);
    let limit: usize = param::<usize>(&q, "limit")?
        .unwrap_or(100)
        .clamp(1, state.limits.max_read_records);
    let wait_ms: u64 = param(&q, "wait_ms")?.unwrap_or(0);
    let wait = Duration::from_millis(wait_ms).min(state.limits.max_wait);
    let desc = state.broker.describe_topic(&topic).await?;
    let p = desc.partitions.get(partition as usize).ok_or_else(|| {
        ApiError::from(BrokerError::NotFound(Missing::Partition {
            topic: topic.clone(),
            partition,
        }))
    })?;
    let offset: u64 = match (
        param::<u64>(&q, "offset")?,
        q.get("from").map(String::as_str),
    ) {
        (Some(o), None) => o,
        (None, None) | (None, Some("beginning")) => p.log_start_offset,
        (None, Some("end")) => p.high_watermark,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either offset or from, not both",
            ));
        }
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "from={other:?} must be \"beginning\" or \"end\""
            )));
        }
    };
    let read = state
        .broker
        .read(&topic, partition, offset, limit, 4 * 1024 * 1024, wait)
        .await?;
    let events: Vec<EventOut> = read
        .records
        .iter()
        .map(|r| {
            let (value, format) = encode_bytes(&r.value);
            let (key, key_format) = encode_bytes(&r.key);
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_ref()
                        .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                        .unwrap_or(Value::Null);
                    (k.clone(), v)
                })
                .collect();
            EventOut {
                partition,
                offset: r.offset,
                timestamp: r.timestamp_ms,
                key,
                key_format,
                value,
                format,
                headers,
            }
        })
        .collect();
    Ok(Json(EventsOut {
        topic,
        partition,
        events,
        next_offset: read.next_offset,
        high_watermark: read.high_watermark,
        log_start_offset: read.log_start_offset,
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRequest {
    partition: Option<u32>,
    records: Vec<ProduceRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRecord {
    key: Option<String>,
    value: Option<Value>,
    value_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

async fn produce_records(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.allow(&state, Operation::Write, Resource::Topic(&topic))?;
    let req: ProduceRequest = parse_body(body)?;
    if req.records.len() > state.limits.max_events_per_request {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{} records exceeds the limit of {}",
                req.records.len(),
                state.limits.max_events_per_request
            ),
        ));
    }
    let mut records = Vec::with_capacity(req.records.len());
    for (i, r) in req.records.into_iter().enumerate() {
        let value = match (r.value, r.value_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "record [{i}]: give value or value_base64, not both"
                )));
            }
            (Some(Value::String(s)), None) => Some(Bytes::from(s)),
            (Some(Value::Null), None) | (None, None) => None,
            (Some(v), None) => Some(Bytes::from(serde_json::to_vec(&v).unwrap_or_default())),
            (None, Some(b)) => Some(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "record [{i}]: value_base64 is not base64: {e}"
                        ))
                    })?,
            )),
        };
        records.push(RawRecord {
            key: r.key.map(Bytes::from),
            value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k, Some(Bytes::from(v))))
                .collect(),
            timestamp_ms: None,
        });
    }
    let offsets = state
        .broker
        .produce_records(&topic, req.partition, records)
        .await?;
    let out: Vec<Value> = offsets
        .into_iter()
        .map(|(p, o)| json!({"partition": p, "offset": o}))
        .collect();
    Ok(Json(json!({"topic": topic, "records": out})).into_response())
}

fn group_error(e: herald_broker::groups::AdminError) -> ApiError {
    use herald_broker::groups::AdminError;
    use herald_core::group::GroupError;
    match e {
        AdminError::GroupActive(_) => {
            ApiError::new(StatusCode::CONFLICT, "group_active", e.to_string())
        }
        AdminError::Group(GroupError::GroupIdNotFound) => {
            ApiError::new(StatusCode::NOT_FOUND, "group_not_found", e.to_string())
        }
        AdminError::Group(g) => ApiError::new(StatusCode::CONFLICT, "group_state", g.to_string()),
        AdminError::Broker(b) => b.into(),
    }
}

async fn list_groups(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let groups: Vec<Value> = state
        .broker
        .groups()
        .list()
        .into_iter()
        .filter(|g| caller.permits(&state, Operation::Describe, Resource::Group(&g.group_id)))
        .map(|g| json!({"group": g.group_id, "state": g.state.as_str(), "protocol_type": g.protocol_type}))
        .collect();
    Json(json!({"groups": groups}))
}

async fn describe_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.allow(&state, Operation::Describe, Resource::Group(&group))?;
    let groups = state.broker.groups();
    let d = groups.describe(&group);
    let committed = groups.fetch(&group, None);
    if d.state == herald_core::group::GroupState::Dead && committed.is_empty() {
        return Err(BrokerError::NotFound(Missing::Group(group)).into());
    }
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<Value> = herald_broker::groups::decode_assignment(&m.assignment)
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| json!({"topic": t, "partitions": p}))
                .collect();
            json!({
                "member_id": m.member_id, "group_instance_id": m.group_instance_id,
                "client_id": m.client_id, "client_host": m.client_host, "assignment": assignment,
            })
        })
        .collect();
    let mut total = 0u64;
    let mut offsets: Vec<Value> = Vec::new();
    for (t, p, c) in committed {
        let Some(c) = c else { continue };
        let hw = state
            .broker
            .partition_stats(&t, p)
            .await
            .ok()
            .map(|s| s.high_watermark);
        let lag = hw.map(|hw| hw.saturating_sub(u64::try_from(c.offset).unwrap_or(0)));
        total += lag.unwrap_or(0);
        offsets.push(
            json!({"topic": t, "partition": p, "committed": c.offset, "metadata": c.metadata,
                    "high_watermark": hw, "lag": lag}),
        );
    }
    Ok(Json(json!({
        "group": group, "state": d.state.as_str(), "protocol_type": d.protocol_type,
        "protocol": d.protocol_name, "members": members, "offsets": offsets, "lag": total,
    })))
}

async fn delete_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.allow(&state, Operation::Delete, Resource::Group(&group))?;
    state
        .broker
        .groups()
        .delete(&group)
        .await
        .map_err(group_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    /// Topic selector (glob).
    topics: String,
    /// earliest | latest | offset | datetime | shift-by
    strategy: String,
    value: Option<Value>,
    #[serde(default)]
    dry_run: bool,
}

async fn reset_offsets(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.allow(&state, Operation::Read, Resource::Group(&group))?;
    use herald_broker::groups::ResetTo;
    let req: ResetRequest = parse_body(body)?;
    let glob = TopicGlob::parse(&req.topics).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let int = |what: &str| -> Result<i64, ApiError> {
        req.value
            .as_ref()
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .ok_or_else(|| ApiError::bad_request(format!("strategy {what} needs an integer value")))
    };
    let to = match req.strategy.as_str() {
        "earliest" => ResetTo::Earliest,
        "latest" => ResetTo::Latest,
        "offset" => ResetTo::Offset(
            u64::try_from(int("offset")?)
                .map_err(|_| ApiError::bad_request("offset must not be negative"))?,
        ),
        "shift-by" => ResetTo::ShiftBy(int("shift-by")?),
        "datetime" => {
            let text = req
                .value
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or_default();
            let t =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                    ApiError::bad_request(format!(
                        "datetime {text:?} is not RFC 3339 (e.g. 2025-11-23T12:00:00Z)"
                    ))
                })?;
            ResetTo::Datetime((t.unix_timestamp_nanos() / 1_000_000) as i64)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "strategy {other:?} must be earliest, latest, offset, datetime or shift-by"
            )));
        }
    };
    let partitions: Vec<(String, u32)> = state
        .broker
        .list_topics(None, Some(&glob))
        .await?
        .into_iter()
        .filter(|t| caller.permits(&state, Operation::Read, Resource::Topic(&t.name)))
        .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
        .collect();
    if partitions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no topic matches {}",
            req.topics
        )));
    }
    let groups = state.broker.groups();
    let d = groups.describe(&group);
    if !matches!(
        d.state,
        herald_core::group::GroupState::Empty | herald_core::group::GroupState::Dead
    ) {
        return Err(group_error(herald_broker::groups::AdminError::GroupActive(
            group,
        )));
    }
    let plan = groups
        .plan_reset(&group, partitions, to)
        .await
        .map_err(group_error)?;
    if !req.dry_run {
        let offsets = plan
            .iter()
            .map(|r| (r.topic.clone(), r.partition, r.new))
            .collect();
        groups
            .reset_offsets(&group, offsets)
            .await
            .map_err(group_error)?;
    }
    Ok(Json(
        json!({"group": group, "dry_run": req.dry_run, "partitions": plan}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use auth::presented_key;
    use axum::http::HeaderMap;
    use herald_auth::keys::constant_time_eq;

    #[test]
    fn api_key_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(
            header::AUTHORIZATION,
            "apikey abc"
                .parse()
                .unwrap_or(axum::http::HeaderValue::from_static("")),
        );
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert("x-api-key", axum::http::HeaderValue::from_static("xyz"));
        assert_eq!(presented_key(&h), Some("xyz"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    /// The gateway's routes are merged into the HTTP API's router; a panic in one of them is
    /// still answered with a JSON 500 by the guard every route sits behind.
    #[tokio::test]
    async fn merged_routes_are_behind_the_panic_guard() -> Result<(), Box<dyn std::error::Error>> {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir()?;
        let broker = Arc::new(
            Broker::open_embedded(dir.path(), herald_broker::BrokerConfig::default()).await?,
        );
        let state = HttpState {
            broker,
            admin_api_key: "panic-guard-admin-key".into(),
            render_metrics: Box::new(String::new),
            limits: HttpLimits::default(),
        };
        async fn buggy() -> &'static str {
            panic!("a handler bug")
        }
        let gateway = Router::new().route("/api/boom", post(buggy));
        let resp = router(state, gateway)
            .oneshot(axum::http::Request::post("/api/boom").body(axum::body::Body::empty())?)
            .await?;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await?;
        let v: Value = serde_json::from_slice(&body)?;
        assert_eq!(v.pointer("/error/code"), Some(&json!("internal")));
        Ok(())
    }
}
