//! Who is calling the HTTP API, and asking the shared authorizer about it.
//!
//! A request presents an API key (`X-API-Key`, or `Authorization: apikey KEY`): the configured
//! admin key or an issued key (`hk_…`, stored hashed). Admin keys are trusted; a tenant key is
//! the principal `User:tenant-{id}`, fenced into its tenant and held to its ACLs, exactly as
//! the same tenant is on the Kafka listener. The key is resolved by `herald-broker`'s
//! `Security::subject_for_api_key`, which the gateway's `/api` routes use too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_auth::acl::Operation;
use herald_auth::authz::{Interface, Resource, Subject, host_text};
use herald_broker::security::Denial;

use crate::{ApiError, AppState};

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Subject>);

impl Caller {
    /// Asks the authorizer; a denial is counted, audited and answered 403.
    pub fn allow(
        &self,
        state: &AppState,
        op: Operation,
        resource: Resource<'_>,
    ) -> Result<(), ApiError> {
        if state
            .broker
            .security()
            .authorize(Interface::Http, &self.0, op, &resource)
        {
            Ok(())
        } else {
            Err(forbidden())
        }
    }

    /// Asks quietly, for filtering listings.
    pub fn permits(&self, state: &AppState, op: Operation, resource: Resource<'_>) -> bool {
        state.broker.security().permits(&self.0, op, &resource)
    }
}

pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this API key is not authorized for this operation",
    )
}

pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    herald_auth::keys::presented_api_key(
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The client's address as ACL hosts are written, when the server recorded it.
pub fn client_host(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| host_text(c.0.ip()))
        .unwrap_or_else(|| "unknown".into())
}

/// Resolves a presented key to the subject it stands for.
pub fn subject_for_key(state: &AppState, key: &str, host: String) -> Option<Subject> {
    state
        .broker
        .security()
        .subject_for_api_key(&state.admin_api_key, key, host)
}

/// Middleware for the gateway's routes, which authenticate themselves (an API key or a JWT):
/// a request presenting a valid API key is held to that subject's request quota, as on `/v1`.
/// Anything else is left to the gateway to accept or refuse.
pub async fn admit_key_holders(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let subject =
        presented_key(req.headers()).and_then(|k| subject_for_key(&state, k, client_host(&req)));
    if let Some(subject) = subject
        && let Err(e) = crate::quota::admit(&state, &subject)
    {
        return e.into_response();
    }
    next.run(req).await
}

/// Middleware: authenticates the request and attaches its [`Caller`], or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let host = client_host(&req);
    let presented = presented_key(req.headers()).map(str::to_owned);
    let subject = presented
        .as_deref()
        .and_then(|k| subject_for_key(&state, k, host.clone()));
    let Some(subject) = subject else {
        state.broker.security().deny(Denial {
            interface: Interface::Http.as_str(),
            reason: if presented.is_some() {
                "invalid_key"
            } else {
                "missing_key"
            },
            principal: "User:ANONYMOUS".into(),
            resource: format!("Http:{}", req.uri().path()),
            operation: req.method().to_string(),
            source: host,
        });
        return ApiError::unauthorized().into_response();
    };
    if let Err(e) = crate::quota::admit(&state, &subject) {
        return e.into_response();
    }
    req.extensions_mut().insert(Caller(Arc::new(subject)));
    next.run(req).await
}
