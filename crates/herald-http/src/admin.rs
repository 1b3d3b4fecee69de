//! Security administration: users (SCRAM credentials), tenants, ACLs and API keys. Reading
//! needs DESCRIBE on the cluster, changing needs ALTER, as Kafka's own admin APIs do.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Extension, Json, Router};
use herald_auth::acl::{AclBinding, AclFilter, Operation, PatternFilter, Permission, ResourceType};
use herald_auth::authz::{Resource, TENANT_USER_PREFIX};
use herald_broker::security::{ApiKeyRecord, validate_user_name};
use herald_broker::{BrokerError, Missing};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::{ApiError, AppState, check_params, parse_body};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list_users))
        .route("/v1/users/{user}", put(put_user).delete(delete_user))
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/{tenant}",
            get(describe_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/acls",
            get(list_acls).post(create_acls).delete(delete_acls),
        )
        .route("/v1/api-keys", get(list_keys).post(create_key))
        .route("/v1/api-keys/{id}", delete(revoke_key))
}

fn may_describe(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller.allow(state, Operation::Describe, Resource::Cluster)
}

fn may_alter(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller.allow(state, Operation::Alter, Resource::Cluster)
}

// ---- users ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    password: String,
    /// Defaults to both SCRAM-SHA-256 and SCRAM-SHA-512.
    mechanisms: Option<Vec<String>>,
    iterations: Option<u32>,
}

/// Creates or replaces a Kafka user's SCRAM credentials; the password is salted and hashed
/// here and never stored.
async fn put_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    use herald_auth::scram::{DEFAULT_ITERATIONS, Mechanism, StoredCredential};
    may_alter(&state, &caller)?;
    let req: UserRequest = parse_body(body)?;
    validate_user_name(&user)?;
    if req.password.len() < 8 || req.password.len() > 1024 {
        return Err(ApiError::bad_request(
            "password must be 8 to 1024 characters".to_owned(),
        ));
    }
    let mechs: Vec<Mechanism> = match &req.mechanisms {
        None => Mechanism::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                Mechanism::from_name(n).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown mechanism {n:?} (SCRAM-SHA-256 or SCRAM-SHA-512)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    if mechs.is_empty() {
        return Err(ApiError::bad_request("no mechanism given".to_owned()));
    }
    let iterations = req.iterations.unwrap_or(DEFAULT_ITERATIONS);
    for m in &mechs {
        let password = req.password.clone();
        let m = *m;
        let cred = tokio::task::spawn_blocking(move || {
            StoredCredential::generate(m, &password, iterations)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        state.broker.security().upsert_user(&user, cred).await?;
    }
    let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
    Ok(
        Json(json!({"user": user, "principal": format!("User:{user}"), "mechanisms": names}))
            .into_response(),
    )
}

async fn list_users(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    may_describe(&state, &caller)?;
    let users: Vec<Value> = state
        .broker
        .security()
        .list_users()
        .into_iter()
        .map(|(name, mechs)| {
            json!({
                "user": name,
                "mechanisms": mechs.iter().map(|(m, i)| json!({"mechanism": m.name(), "iterations": i})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "users": users })))
}

async fn delete_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    may_alter(&state, &caller)?;
    state.broker.security().delete_user(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- tenants ----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantRequest {
    id: String,
    /// The Kafka password of `User:tenant-{id}`; generated (and returned once) when absent.
    password: Option<String>,
}

fn key_json(k: &ApiKeyRecord) -> Value {
    json!({"id": k.id, "name": k.name, "tenant": k.tenant, "created_ms": k.created_ms})
}

fn binding_json(b: &AclBinding) -> Value {
    serde_json::to_value(b).unwrap_or(Value::Null)
}

async fn create_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    may_alter(&state, &caller)?;
    let req: TenantRequest = parse_body(body)?;
    let id =
        herald_core::TenantId::parse(&req.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let created = state
        .broker
        .security()
        .create_tenant(&id, req.password)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "tenant": created.tenant,
            "principal": created.principal,
            "password": created.generated_password,
            "api_key": created.api_key.key,
            "api_key_id": created.api_key.id,
            "acls": created.acls.iter().map(binding_json).collect::<Vec<_>>(),
        })),
    )
        .into_response())
}

async fn list_tenants(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    may_describe(&state, &caller)?;
    let mut tenants: Vec<Value> = Vec::new();
    for t in state.broker.security().list_tenants() {
        let topics = state.broker.list_topics(Some(&t.id), None).await?.len();
        tenants.push(json!({
            "tenant": t.id,
            "principal": format!("User:{TENANT_USER_PREFIX}{}", t.id),
            "created_ms": t.created_ms,
            "topics": topics,
        }));
    }
    Ok(Json(json!({ "tenants": tenants })))
}

async fn describe_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    may_describe(&state, &caller)?;
    let security = state.broker.security();
    let Some(t) = security.tenant(&tenant) else {
        return Err(BrokerError::NotFound(Missing::Tenant(tenant)).into());
    };
    let user = format!("{TENANT_USER_PREFIX}{tenant}");
    let principal = format!("User:{user}");
    let mechanisms: Vec<&str> = security
        .list_users()
        .get(&user)
        .map(|m| m.iter().map(|(m, _)| m.name()).collect())
        .unwrap_or_default();
    let acls: Vec<Value> = security
        .describe_acls(&AclFilter {
            principal: Some(principal.clone()),
            ..AclFilter::any()
        })
        .iter()
        .map(binding_json)
        .collect();
    let keys: Vec<Value> = security
        .list_api_keys()
        .iter()
        .filter(|k| k.tenant.as_deref() == Some(tenant.as_str()))
        .map(key_json)
        .collect();
    let topics: Vec<String> = state
        .broker
        .list_topics(Some(&tenant), None)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    Ok(Json(json!({
        "tenant": t.id,
        "principal": principal,
        "created_ms": t.created_ms,
        "mechanisms": mechanisms,
        "acls": acls,
        "api_keys": keys,
        "topics": topics,
    })))
}

async fn delete_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    may_alter(&state, &caller)?;
    state.broker.security().delete_tenant(&tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- ACLs -------------------------------------------------------------------------------

/// Parses one of Kafka's upper-case names case-insensitively (`topic`, `TOPIC`).
fn by_name<T: Copy + std::fmt::Display>(
    values: &[T],
    what: &str,
    text: &str,
) -> Result<T, ApiError> {
    let wanted = text.replace('-', "_");
    values
        .iter()
        .copied()
        .find(|v| v.to_string().eq_ignore_ascii_case(&wanted))
        .ok_or_else(|| {
            let names: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            ApiError::bad_request(format!(
                "unknown {what} {text:?} (one of {})",
                names.join(", ")
            ))
        })
}

/// An ACL filter from query parameters; absent parameters match anything.
pub(crate) fn filter_from_query(q: &HashMap<String, String>) -> Result<AclFilter, ApiError> {
    check_params(
        q,
        &[
            "resource_type",
            "name",
            "pattern",
            "principal",
            "host",
            "operation",
            "permission",
        ],
    )?;
    let opt = |k: &str| {
        q.get(k)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("any"))
    };
    Ok(AclFilter {
        resource_type: opt("resource_type")
            .map(|v| by_name(ResourceType::VALUES, "resource type", v))
            .transpose()?,
        name: q.get("name").cloned(),
        pattern: match q.get("pattern") {
            None => PatternFilter::Any,
            Some(v) => by_name(PatternFilter::VALUES, "pattern type", v)?,
        },
        principal: q.get("principal").cloned(),
        host: q.get("host").cloned(),
        operation: opt("operation")
            .map(|v| by_name(herald_auth::acl::Operation::VALUES, "operation", v))
            .transpose()?,
        permission: opt("permission")
            .map(|v| by_name(Permission::VALUES, "permission", v))
            .transpose()?,
    })
}

async fn list_acls(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    may_describe(&state, &caller)?;
    let filter = filter_from_query(&q)?;
    let acls: Vec<Value> = state
        .broker
        .security()
        .describe_acls(&filter)
        .iter()
        .map(binding_json)
        .collect();
    Ok(Json(json!({ "acls": acls })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAcls {
    acls: Vec<AclBinding>,
}

async fn create_acls(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    may_alter(&state, &caller)?;
    let req: CreateAcls = parse_body(body)?;
    for b in &req.acls {
        b.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let created = state.broker.security().create_acls(req.acls).await?;
    Ok((StatusCode::CREATED, Json(json!({ "created": created }))).into_response())
}

async fn delete_acls(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    may_alter(&state, &caller)?;
    let filter = filter_from_query(&q)?;
    let removed = state
        .broker
        .security()
        .delete_acls(std::slice::from_ref(&filter))
        .await?;
    let deleted: Vec<Value> = removed.iter().flatten().map(binding_json).collect();
    Ok(Json(json!({ "deleted": deleted })))
}

// ---- API keys ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct KeyRequest {
    /// Fences the key into this tenant; absent makes an admin key.
    tenant: Option<String>,
    name: String,
}

async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    may_alter(&state, &caller)?;
    let req: KeyRequest = parse_body(body)?;
    let tenant = req
        .tenant
        .as_deref()
        .map(herald_core::TenantId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let issued = state
        .broker
        .security()
        .create_api_key(tenant.as_ref(), &req.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": issued.id, "key": issued.key, "tenant": req.tenant, "name": req.name})),
    )
        .into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    may_describe(&state, &caller)?;
    let keys: Vec<Value> = state
        .broker
        .security()
        .list_api_keys()
        .iter()
        .map(key_json)
        .collect();
    Ok(Json(json!({ "api_keys": keys })))
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    may_alter(&state, &caller)?;
    state.broker.security().revoke_api_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
