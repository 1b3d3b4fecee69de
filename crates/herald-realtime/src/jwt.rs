//! Placeholder verifier (HS256 only) until the full module lands.
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

pub struct JwtConfig {
    pub hmac_secret: Option<String>,
    pub rsa_public_key: Option<String>,
    pub ecdsa_public_key: Option<String>,
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub tenant_claim: String,
    pub roles_claim: String,
    pub leeway_secs: u64,
}

pub struct Verifier {
    key: Option<jsonwebtoken::DecodingKey>,
    tenant_claim: String,
    roles_claim: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            TokenError::Invalid(_) => "malformed",
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct SubClaimOptions {
    pub info: Option<Box<RawValue>>,
    pub data: Option<Box<RawValue>>,
}

#[derive(Debug, Default)]
pub struct ConnectClaims {
    pub sub: String,
    pub exp: Option<i64>,
    pub expire_at: Option<i64>,
    pub info: Option<Box<RawValue>>,
    pub b64info: Option<String>,
    pub channels: Vec<String>,
    pub subs: BTreeMap<String, SubClaimOptions>,
    pub meta: Option<Box<RawValue>>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, Default)]
pub struct SubscribeClaims {
    pub sub: String,
    pub channel: String,
    pub exp: Option<i64>,
    pub expire_at: Option<i64>,
    pub info: Option<Box<RawValue>>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

impl ConnectClaims {
    pub fn expires_at(&self) -> Option<i64> {
        match self.expire_at {
            Some(0) => None,
            Some(t) => Some(t),
            None => self.exp,
        }
    }
}

impl SubscribeClaims {
    pub fn expires_at(&self) -> Option<i64> {
        match self.expire_at {
            Some(0) => None,
            Some(t) => Some(t),
            None => self.exp,
        }
    }
}

impl Verifier {
    pub fn new(cfg: JwtConfig) -> Result<Verifier, String> {
        Ok(Verifier {
            key: cfg
                .hmac_secret
                .map(|s| jsonwebtoken::DecodingKey::from_secret(s.as_bytes())),
            tenant_claim: cfg.tenant_claim,
            roles_claim: cfg.roles_claim,
        })
    }

    fn decode(
        &self,
        token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| TokenError::Invalid("no key".into()))?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    fn common(
        &self,
        m: &serde_json::Map<String, serde_json::Value>,
    ) -> (Option<String>, Vec<String>) {
        let tenant = match m.get(&self.tenant_claim) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let roles = match m.get(&self.roles_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        (tenant, roles)
    }

    pub async fn connect_claims(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        let m = self.decode(token)?;
        let (tenant, roles) = self.common(&m);
        let raw = |k: &str| {
            m.get(k)
                .and_then(|v| RawValue::from_string(v.to_string()).ok())
        };
        Ok(ConnectClaims {
            sub: m
                .get("sub")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
            exp: m.get("exp").and_then(|v| v.as_i64()),
            expire_at: m.get("expire_at").and_then(|v| v.as_i64()),
            info: raw("info"),
            channels: m
                .get("channels")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default(),
            tenant,
            roles,
            ..ConnectClaims::default()
        })
    }

    pub async fn subscribe_claims(&self, token: &str) -> Result<SubscribeClaims, TokenError> {
        let m = self.decode(token)?;
        let (tenant, roles) = self.common(&m);
        Ok(SubscribeClaims {
            sub: m
                .get("sub")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
            channel: m
                .get("channel")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
            exp: m.get("exp").and_then(|v| v.as_i64()),
            expire_at: m.get("expire_at").and_then(|v| v.as_i64()),
            info: m
                .get("info")
                .and_then(|v| RawValue::from_string(v.to_string()).ok()),
            tenant,
            roles,
        })
    }
}
