//! HTTP request quotas: a caller past its `http_request_rate` is answered 429 with
//! `Retry-After`, before its request is read.

use std::time::Instant;

use axum::http::StatusCode;
use herald_auth::authz::Subject;
use herald_auth::quota::QuotaKind;

use crate::{ApiError, AppState};

pub fn admit(state: &AppState, subject: &Subject) -> Result<(), ApiError> {
    let quotas = state.broker.security().quotas();
    match quotas.try_acquire(subject, QuotaKind::HttpRequests, 1, Instant::now()) {
        Ok(()) => Ok(()),
        Err(wait) => {
            metrics::counter!("quota_throttled_total", "interface" => "http").increment(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "request rate quota of {}/s exceeded for {}",
                    quotas
                        .limit(subject, QuotaKind::HttpRequests)
                        .unwrap_or_default(),
                    subject.principal
                ),
            );
            e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            Err(e)
        }
    }
}
