//! The HTTP client every command uses: the server address, the key, errors as the server
//! states them.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;
use crate::Connection;

pub(super) const KEY_HINT: &str = "set HERALD_API_KEY or pass --api-key (`herald serve` prints \
                                   the admin key and keeps it in DATA_DIR/admin-api-key)";

/// Default time allowed for one request; long polls add their wait to it.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) base: Url,
    /// The server as the user gave it, for messages.
    pub(super) server: String,
    pub(super) key: String,
}

/// A non-2xx answer, carrying the server's `{"error":{"code","message"}}`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == StatusCode::UNAUTHORIZED {
            write!(f, "the server refused the API key (401): {KEY_HINT}")
        } else {
            write!(f, "{} ({})", self.message, self.status.as_u16())
        }
    }
}

impl std::error::Error for ApiError {}

/// Reads an error answer; a body that is not Herald's error JSON (a proxy's page, say) is
/// shown as text rather than hidden behind a parse error.
pub(super) fn api_error(status: StatusCode, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Envelope>(body) {
        return ApiError {
            status,
            code: e.error.code,
            message: e.error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned()
    } else {
        text.chars().take(200).collect()
    };
    ApiError {
        status,
        code: String::new(),
        message,
    }
}

/// Accepts `host:port` as well as a URL, since that is how addresses are usually typed.
pub(super) fn parse_server(s: &str) -> anyhow::Result<Url> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&with_scheme)
        .with_context(|| format!("--server {s:?} is not a URL like http://127.0.0.1:8000"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        bail!("--server {s:?} is not an http:// URL");
    }
    Ok(url)
}

impl Api {
    pub(crate) fn new(conn: &Connection) -> anyhow::Result<Api> {
        let base = parse_server(&conn.server)?;
        let key = conn
            .key()
            .ok_or_else(|| anyhow!("no API key: {KEY_HINT}"))?;
        herald_auth::tls::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
        // A server with a development certificate: trust its CA (DATA_DIR/tls/ca.pem).
        if let Some(ca) = &conn.ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Api {
            http,
            base,
            server: conn.server.trim().trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// `segments` are percent-encoded as path segments, so a topic name cannot change the path.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        // `parse_server` refused cannot-be-a-base URLs, the only case where this is `Err`.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v)));
        }
        url
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<bytes::Bytes> {
        let mut req = self
            .http
            .request(method, url.clone())
            .header("x-api-key", &self.key)
            .timeout(timeout);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(api_error(status, &body).into());
        }
        Ok(body)
    }

    pub(super) fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow!(
                "cannot reach Herald at {}: is the server running? (start it with herald serve)",
                self.server
            )
        } else if e.is_timeout() {
            anyhow!("Herald at {} did not answer in time", self.server)
        } else {
            anyhow!("request to Herald at {} failed: {e}", self.server)
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let what = format!("{method} {}", url.path());
        let bytes = self.send(method, url, body, timeout).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from the server to {what}"))
    }

    pub(super) async fn describe(&self, topic: &str) -> anyhow::Result<TopicDescription> {
        let url = self.url(&["v1", "topics", topic], &[]);
        self.call(Method::GET, url, None, REQUEST_TIMEOUT).await
    }
}
