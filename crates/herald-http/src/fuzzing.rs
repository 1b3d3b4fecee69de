//! Entry points for the fuzz targets in `fuzz/`; not an API.
//!
//! The HTTP API's own parsing of a request target: axum's percent-decoding of path parameters
//! and `Query` map, then the parameter parsers the handlers run on them (known-parameter
//! checks, integers, tenant ids, topic globs, ACL filters). Routing and extraction run through
//! a real axum `Router` with the API's path patterns; only the broker is left out.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt as _;
use herald_core::TopicGlob;
use tower::ServiceExt as _;

use crate::ApiError;

/// Routes `target` (a request-target: path and optional query) through the API's path
/// patterns and parameter parsers. `None` when `target` is not a valid request-target (hyper
/// would have refused it); otherwise the status: 200 when every parameter parsed, 4xx when one
/// was refused. Never a 5xx: a parser failing on client input is a client error.
pub fn route_target(target: &str) -> Option<StatusCode> {
    let uri: Uri = target.parse().ok()?;
    uri.path_and_query()?;
    let req = Request::get(uri).body(Body::empty()).ok()?;
    let resp = router().clone().oneshot(req).now_or_never()?;
    match resp {
        Ok(r) => Some(r.status()),
        Err(never) => match never {},
    }
}

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        Router::new()
            .route("/v1/topics", get(list_topics))
            .route("/v1/topics/{topic}/events", get(read_events))
            .route("/v1/groups/{group}", get(one_path))
            .route("/v1/acls", get(acls))
            .fallback(|| async { ApiError::not_found("no such endpoint") })
    })
}

async fn list_topics(Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    crate::check_params(&q, &["tenant", "match"])?;
    if let Some(t) = q.get("tenant") {
        herald_core::TenantId::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(m) = q.get("match") {
        let glob = TopicGlob::parse(m).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Cheap property: matching never panics on the pattern's own text.
        let _ = glob.matches(m);
    }
    Ok(StatusCode::OK.into_response())
}

async fn read_events(
    Path(topic): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let _ = herald_core::validate_topic_name(&topic);
    crate::check_params(&q, &["partition", "offset", "limit", "wait_ms", "from"])?;
    crate::param::<u32>(&q, "partition")?;
    crate::param::<usize>(&q, "limit")?;
    crate::param::<u64>(&q, "wait_ms")?;
    crate::param::<u64>(&q, "offset")?;
    Ok(StatusCode::OK.into_response())
}

async fn one_path(Path(_group): Path<String>) -> StatusCode {
    StatusCode::OK
}

async fn acls(Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    crate::admin::filter_from_query(&q)?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::route_target;
    use axum::http::StatusCode;

    #[test]
    fn request_targets_are_parsed_as_the_handlers_do() {
        let ok = Some(StatusCode::OK);
        let bad = Some(StatusCode::BAD_REQUEST);
        assert_eq!(route_target("/v1/topics?match=smarteros.%2A.%3E"), ok);
        assert_eq!(route_target("/v1/topics?tenant=acme&nope=1"), bad);
        assert_eq!(route_target("/v1/topics/a.b/events?offset=-1"), bad);
        assert_eq!(route_target("/v1/topics/a%2Fb/events?limit=5"), ok);
        assert_eq!(route_target("/v1/acls?operation=fly"), bad);
        assert_eq!(route_target("/nowhere"), Some(StatusCode::NOT_FOUND));
        assert_eq!(route_target("not a target"), None);
    }
}
