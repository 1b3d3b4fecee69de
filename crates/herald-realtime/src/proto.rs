//! Centrifugo client protocol v2, JSON encoding: commands, replies, pushes, error and
//! disconnect codes. `bytes` fields of `client.proto` are embedded JSON values here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub type Json = Box<RawValue>;

/// Client protocol error codes (replies to commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Internal,
    Unauthorized,
    UnknownChannel,
    PermissionDenied,
    MethodNotFound,
    AlreadySubscribed,
    LimitExceeded,
    BadRequest,
    NotAvailable,
    TokenExpired,
    Expired,
    TooManyRequests,
    UnrecoverablePosition,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::MethodNotFound => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::Expired => 110,
            ErrorCode::TooManyRequests => 111,
            ErrorCode::UnrecoverablePosition => 112,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::Expired => "expired",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::UnrecoverablePosition => "unrecoverable position",
        }
    }

    /// Temporary errors make clients retry.
    pub fn temporary(self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::TooManyRequests)
    }

    pub fn to_error(self) -> ProtoError {
        ProtoError {
            code: self.code(),
            message: self.message().to_owned(),
            temporary: self.temporary(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProtoError {
    pub code: u32,
    pub message: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

/// WebSocket close codes with their reconnect advice (3000–3499 reconnect, 3500+ do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: &'static str,
}

impl Disconnect {
    pub const NORMAL: Disconnect = Disconnect::new(3000, "connection closed");
    pub const SHUTDOWN: Disconnect = Disconnect::new(3001, "shutdown");
    pub const INTERNAL: Disconnect = Disconnect::new(3004, "internal server error");
    pub const EXPIRED: Disconnect = Disconnect::new(3005, "connection expired");
    pub const SLOW: Disconnect = Disconnect::new(3008, "slow");
    pub const WRITE_ERROR: Disconnect = Disconnect::new(3009, "write error");
    pub const NO_PONG: Disconnect = Disconnect::new(3012, "no pong");
    pub const TOO_MANY_REQUESTS: Disconnect = Disconnect::new(3013, "too many requests");
    pub const INVALID_TOKEN: Disconnect = Disconnect::new(3500, "invalid token");
    pub const BAD_REQUEST: Disconnect = Disconnect::new(3501, "bad request");
    pub const FORCE_NO_RECONNECT: Disconnect = Disconnect::new(3503, "force disconnect");
    pub const CONNECTION_LIMIT: Disconnect = Disconnect::new(3504, "connection limit");
    pub const PERMISSION_DENIED: Disconnect = Disconnect::new(3507, "permission denied");

    pub const fn new(code: u16, reason: &'static str) -> Disconnect {
        Disconnect { code, reason }
    }

    pub fn reconnect(self) -> bool {
        self.code < 3500
    }
}

/// One command of a frame. Unknown fields are ignored, as Centrifugo does.
#[derive(Debug, Deserialize, Default)]
pub struct Command {
    #[serde(default)]
    pub id: u32,
    pub connect: Option<ConnectRequest>,
    pub subscribe: Option<SubscribeRequest>,
    pub unsubscribe: Option<ChannelRequest>,
    pub publish: Option<PublishRequest>,
    pub presence: Option<ChannelRequest>,
    pub presence_stats: Option<ChannelRequest>,
    pub history: Option<HistoryRequest>,
    pub ping: Option<serde::de::IgnoredAny>,
    pub send: Option<SendRequest>,
    pub rpc: Option<RpcRequest>,
    pub refresh: Option<RefreshRequest>,
    pub sub_refresh: Option<SubRefreshRequest>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ConnectRequest {
    #[serde(default)]
    pub token: String,
    pub data: Option<Json>,
    #[serde(default)]
    pub subs: BTreeMap<String, SubscribeRequest>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct SubscribeRequest {
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub recover: bool,
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub positioned: bool,
    #[serde(default)]
    pub recoverable: bool,
    #[serde(default)]
    pub join_leave: bool,
}

#[derive(Debug, Deserialize, Default)]
pub struct ChannelRequest {
    #[serde(default)]
    pub channel: String,
}

#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    #[serde(default)]
    pub channel: String,
    pub data: Option<Json>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct StreamPosition {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct HistoryRequest {
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub limit: i32,
    pub since: Option<StreamPosition>,
    #[serde(default)]
    pub reverse: bool,
}

#[derive(Debug, Deserialize)]
pub struct SendRequest {
    #[allow(dead_code)]
    pub data: Option<Json>,
}

#[derive(Debug, Deserialize)]
pub struct RpcRequest {
    #[serde(default)]
    pub method: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct RefreshRequest {
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct SubRefreshRequest {
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub token: String,
}

/// `ClientInfo` of presence, join/leave and client-side publications.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub user: String,
    pub client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<std::sync::Arc<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<std::sync::Arc<RawValue>>,
}

/// A publication as sent to clients and the server API.
#[derive(Debug, Clone, Serialize)]
pub struct Publication {
    pub data: Json,
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SubscribeResult {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero32")]
    pub ttl: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recoverable: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub positioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub was_recovering: bool,
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

/// Serializes `{"id":N,"<method>":<result>}` (a reply without id is a push or a ping).
pub fn reply<T: Serialize>(id: u32, method: &str, result: &T) -> String {
    let body = serde_json::to_string(result).unwrap_or_else(|_| "{}".to_owned());
    let mut s = String::with_capacity(body.len() + method.len() + 24);
    s.push_str("{\"id\":");
    s.push_str(&id.to_string());
    s.push_str(",\"");
    s.push_str(method);
    s.push_str("\":");
    s.push_str(&body);
    s.push('}');
    s
}

pub fn error_reply(id: u32, err: &ProtoError) -> String {
    serde_json::json!({"id": id, "error": err}).to_string()
}

/// The body of a push (`{"channel":..,"<kind>":..}`); bidirectional clients get it wrapped as
/// `{"push":<body>}`, unidirectional ones as it is.
pub fn push_body<T: Serialize>(channel: &str, kind: &str, value: &T) -> String {
    let ch = serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".to_owned());
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    let mut s = String::with_capacity(ch.len() + body.len() + kind.len() + 20);
    s.push_str("{\"channel\":");
    s.push_str(&ch);
    s.push_str(",\"");
    s.push_str(kind);
    s.push_str("\":");
    s.push_str(&body);
    s.push('}');
    s
}

pub fn wrap_push(body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 9);
    s.push_str("{\"push\":");
    s.push_str(body);
    s.push('}');
    s
}

pub fn raw(s: &str) -> Json {
    RawValue::from_string(s.to_owned()).unwrap_or_else(|_| null())
}

pub fn null() -> Json {
    // "null" is valid JSON; from_string cannot fail on it, but never panic anyway.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| Box::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_unknown_fields_and_raw_data() {
        let c: Command = serde_json::from_str(
            r#"{"id":3,"publish":{"channel":"tenant:1:x","data":{"a":[1,2]}},"extra":1}"#,
        )
        .unwrap();
        let p = c.publish.unwrap();
        assert_eq!(c.id, 3);
        assert_eq!(p.channel, "tenant:1:x");
        assert_eq!(p.data.unwrap().get(), r#"{"a":[1,2]}"#);
        let empty: Command = serde_json::from_str("{}").unwrap();
        assert!(empty.connect.is_none() && empty.id == 0);
    }

    #[test]
    fn replies_and_pushes_have_the_wire_shape() {
        assert_eq!(
            reply(7, "publish", &serde_json::json!({})),
            r#"{"id":7,"publish":{}}"#
        );
        let e = ErrorCode::PermissionDenied.to_error();
        assert_eq!(
            error_reply(2, &e),
            r#"{"error":{"code":103,"message":"permission denied"},"id":2}"#
        );
        let body = push_body(
            "tenant:1:x",
            "pub",
            &Publication {
                data: raw(r#"{"k":1}"#),
                offset: 4,
                info: None,
                tags: None,
            },
        );
        assert_eq!(
            wrap_push(&body),
            r#"{"push":{"channel":"tenant:1:x","pub":{"data":{"k":1},"offset":4}}}"#
        );
        assert!(ErrorCode::TooManyRequests.to_error().temporary);
        assert!(Disconnect::SLOW.reconnect() && !Disconnect::INVALID_TOKEN.reconnect());
    }
}
