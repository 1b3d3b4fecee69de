use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_broker::{BrokerError, Existing, Missing};
use serde_json::json;

/// An error answered as `{"error":{"code","message"}}` with the matching status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required in the X-API-Key header (or Authorization: apikey KEY)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        }
        let mut resp = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        let msg = e.to_string();
        match e {
            BrokerError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", msg)
            }
            BrokerError::InvalidEvent(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", msg)
            }
            BrokerError::NotFound(what) => {
                let code = match what {
                    Missing::Topic(_) => "topic_not_found",
                    Missing::Partition { .. } => "partition_not_found",
                    Missing::Group(_) => "group_not_found",
                    Missing::User(_) | Missing::Credential { .. } => "user_not_found",
                    Missing::ApiKey(_) => "api_key_not_found",
                    Missing::Tenant(_) => "tenant_not_found",
                };
                ApiError::new(StatusCode::NOT_FOUND, code, msg)
            }
            BrokerError::Conflict(what) => {
                let code = match what {
                    Existing::Topic(_) => "topic_exists",
                    Existing::Tenant(_) => "tenant_exists",
                };
                ApiError::new(StatusCode::CONFLICT, code, msg)
            }
            BrokerError::OffsetOutOfRange { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "offset_out_of_range", msg)
            }
            BrokerError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", msg)
            }
            BrokerError::OutOfOrderSequence(_)
            | BrokerError::InvalidProducerEpoch(_)
            | BrokerError::UnknownProducerId(_) => {
                ApiError::new(StatusCode::CONFLICT, "producer_sequence", msg)
            }
            BrokerError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg),
            BrokerError::Unsupported(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", msg)
            }
            BrokerError::Unavailable(_) => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg);
                e.retry_after = Some(1);
                e
            }
            BrokerError::StorageFull(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                msg,
            ),
            BrokerError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}
