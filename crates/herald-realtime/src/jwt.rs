//! Verification of Centrifugo-style JWTs: connection tokens and subscription tokens.
//!
//! A token is accepted only when all of the following hold:
//! - it is at most 16 KiB, has exactly three base64url parts, a JSON-object header without `crit`
//!   and a JSON-object payload;
//! - its `alg` is HS256/384/512 (needs `hmac_secret`), RS256/384/512 or PS256/384/512 (needs
//!   `rsa_public_key` or a JWKS key), or ES256/384 (needs `ecdsa_public_key` or a JWKS key).
//!   `none`, EdDSA and anything else are refused. The verifying key always belongs to the family
//!   of the token's `alg`, so an HS token is never checked against RSA/EC key material (no key
//!   confusion). A JWKS key (chosen by `kid`) must be RSA or EC and, if it names an `alg`, match it;
//! - the signature verifies; `exp` and `nbf` hold within `leeway_secs`; `aud`/`iss` match when
//!   configured;
//! - the Centrifugo claims have the right types: a subscription token carries a `channel`, a
//!   connection token does not; `b64info` is valid base64; the tenant claim (string or integer)
//!   matches `^[A-Za-z0-9_-]{1,64}$`; the roles claim is a string or a list of strings.
//!
//! With `jwks_url` set, RSA/EC tokens that carry a `kid` are checked only against the JWKS; tokens
//! without `kid` use the static PEM key of their family.
//!
//! JWKS documents are fetched lazily (5 s timeout, 1 MiB cap), cached by `kid`, and refetched on
//! an unknown `kid` at most once every 10 s. `http://` always works; `https://` needs reqwest
//! built with a TLS feature.
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

const MAX_TOKEN_LEN: usize = 16 * 1024;
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_REFETCH: Duration = Duration::from_secs(10);
const MAX_LEEWAY_SECS: u64 = 86_400;

/// Verifier configuration; at least one key source must be set. `Debug` redacts the secret.
#[derive(Clone, Default)]
pub struct JwtConfig {
    /// Shared secret for HS256/HS384/HS512.
    pub hmac_secret: Option<String>,
    /// PEM public key for RS256/384/512 and PS256/384/512.
    pub rsa_public_key: Option<String>,
    /// PEM public key for ES256 (P-256) / ES384 (P-384).
    pub ecdsa_public_key: Option<String>,
    /// JWKS document with RSA/EC keys selected by the token's `kid`.
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub tenant_claim: String,
    pub roles_claim: String,
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rsa_public_key", &self.rsa_public_key.is_some())
            .field("ecdsa_public_key", &self.ecdsa_public_key.is_some())
            .field("jwks_url", &self.jwks_url)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("tenant_claim", &self.tenant_claim)
            .field("roles_claim", &self.roles_claim)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(InvalidToken),
}

/// What is wrong with an invalid token; the kind is the metrics label.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", kind.label())]
pub struct InvalidToken {
    pub kind: Invalid,
    pub detail: String,
}

/// The kinds of invalid token, as counted in `auth_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The signature does not verify, or the key cannot verify it.
    BadSignature,
    /// Not a well-formed JWT.
    Malformed,
    /// An algorithm this server does not accept for the token's key.
    Algorithm,
    /// A claim is missing, out of range or not allowed here.
    Claims,
    /// No key to verify the token with (no `kid`, or an unknown one).
    NoKey,
    /// The JWKS could not be fetched or read.
    Jwks,
}

impl Invalid {
    pub fn label(self) -> &'static str {
        match self {
            Invalid::BadSignature => "bad_signature",
            Invalid::Malformed => "malformed",
            Invalid::Algorithm => "algorithm",
            Invalid::Claims => "claims",
            Invalid::NoKey => "no_key",
            Invalid::Jwks => "jwks",
        }
    }
}

impl TokenError {
    /// Short label for metrics: "expired", "bad_signature", "malformed", "algorithm", "claims",
    /// "no_key" or "jwks".
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            TokenError::Invalid(e) => e.kind.label(),
        }
    }
}

fn invalid(kind: Invalid, detail: impl std::fmt::Display) -> TokenError {
    TokenError::Invalid(InvalidToken {
        kind,
        detail: detail.to_string(),
    })
}

/// Per-channel options in a connection token's `subs` claim.
#[derive(Debug, Default, Deserialize)]
pub struct SubClaimOptions {
    #[serde(default)]
    pub info: Option<Box<RawValue>>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

/// Claims of a verified connection token.
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

/// Claims of a verified subscription token.
#[derive(Debug, Default)]
pub struct SubscribeClaims {
    pub sub: String,
    pub channel: String,
    pub exp: Option<i64>,
    pub expire_at: Option<i64>,
    pub info: Option<Box<RawValue>>,
    pub b64info: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

fn expiry(exp: Option<i64>, expire_at: Option<i64>) -> Option<i64> {
    match expire_at {
        Some(0) => None,
        Some(at) => Some(at),
        None => exp,
    }
}

impl ConnectClaims {
    /// Unix time (seconds) when the connection expires, `None` if never:
    /// `expire_at` if present (0 → never), else `exp`.
    pub fn expires_at(&self) -> Option<i64> {
        expiry(self.exp, self.expire_at)
    }
}

impl SubscribeClaims {
    /// Unix time (seconds) when the subscription expires, `None` if never:
    /// `expire_at` if present (0 → never), else `exp`.
    pub fn expires_at(&self) -> Option<i64> {
        expiry(self.exp, self.expire_at)
    }
}

struct JwksKey {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: parking_lot::RwLock<HashMap<String, Arc<JwksKey>>>,
    /// Serialises fetches; holds the time of the last fetch attempt.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    async fn key(&self, kid: &str, alg: Algorithm) -> Result<Arc<JwksKey>, TokenError> {
        let cached = || self.keys.read().get(kid).cloned();
        let key = match cached() {
            Some(k) => k,
            None => {
                let mut last = self.last_fetch.lock().await;
                if cached().is_none() && !last.is_some_and(|t| t.elapsed() < JWKS_REFETCH) {
                    *last = Some(Instant::now());
                    let fresh = self.fetch().await.map_err(|e| invalid(Invalid::Jwks, e))?;
                    *self.keys.write() = fresh;
                }
                cached().ok_or_else(|| invalid(Invalid::NoKey, format!("unknown kid {kid:?}")))?
            }
        };
        if key.key.family() != alg.family() || key.alg.is_some_and(|a| a != alg) {
            return Err(invalid(
                Invalid::Algorithm,
                format!("JWKS key {kid:?} does not allow {alg:?}"),
            ));
        }
        Ok(key)
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<JwksKey>>, String> {
        let too_big = || format!("document larger than {MAX_JWKS_BYTES} bytes");
        let mut resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("fetch: {}", chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("fetch: HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("read: {}", chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc = serde_json::from_slice(&body).map_err(|e| format!("bad document: {e}"))?;
        let mut keys = HashMap::new();
        // Unparseable, encryption-only, symmetric and kid-less keys are skipped.
        for jwk in doc
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        {
            let usable = matches!(
                jwk.algorithm,
                AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
            ) && jwk.common.public_key_use != Some(PublicKeyUse::Encryption);
            let alg = jwk
                .common
                .key_algorithm
                .map(|a| Algorithm::from_str(&a.to_string()));
            let alg = alg.transpose();
            if let (true, Some(kid), Ok(alg), Ok(key)) = (
                usable,
                jwk.common.key_id.clone(),
                alg,
                DecodingKey::from_jwk(&jwk),
            ) {
                keys.insert(kid, Arc::new(JwksKey { key, alg }));
            }
        }
        Ok(keys)
    }
}

/// An error with its sources, e.g. "error sending request: ...: connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

/// Verifies connection and subscription tokens. `Send + Sync`, cheap to share in an `Arc`.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    jwks: Option<Jwks>,
    cfg: JwtConfig,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

fn pem_key(pem: Option<&str>, what: &str, parse: PemParser) -> Result<Option<DecodingKey>, String> {
    match pem {
        None => Ok(None),
        Some(p) if p.contains("PRIVATE KEY") => Err(format!(
            "{what} holds a private key; configure the public key"
        )),
        Some(p) => parse(p.trim().as_bytes())
            .map(Some)
            .map_err(|e| format!("{what} is not a valid PEM public key: {e}")),
    }
}

impl Verifier {
    /// Builds a verifier; fails with a readable message on bad keys or settings.
    pub fn new(cfg: JwtConfig) -> Result<Verifier, String> {
        let hmac = match cfg.hmac_secret.as_deref() {
            Some("") => return Err("hmac_secret is empty".into()),
            secret => secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
        };
        let rsa = pem_key(
            cfg.rsa_public_key.as_deref(),
            "rsa_public_key",
            DecodingKey::from_rsa_pem,
        )?;
        let ec = pem_key(
            cfg.ecdsa_public_key.as_deref(),
            "ecdsa_public_key",
            DecodingKey::from_ec_pem,
        )?;
        let jwks = match cfg.jwks_url.as_deref() {
            None => None,
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| format!("jwks_url {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("jwks_url {url:?} must be http:// or https://"));
                }
                herald_auth::tls::install_default_provider();
                let client = reqwest::Client::builder().timeout(JWKS_TIMEOUT).build();
                let client =
                    client.map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
                let (url, keys, last_fetch) =
                    (url.to_owned(), Default::default(), Default::default());
                Some(Jwks {
                    url,
                    client,
                    keys,
                    last_fetch,
                })
            }
        };
        if hmac.is_none() && rsa.is_none() && ec.is_none() && jwks.is_none() {
            return Err("no token key configured: set hmac_secret, rsa_public_key, ecdsa_public_key or jwks_url".into());
        }
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!(
                "leeway_secs {} exceeds {MAX_LEEWAY_SECS}",
                cfg.leeway_secs
            ));
        }
        Ok(Verifier {
            hmac,
            rsa,
            ec,
            jwks,
            cfg,
        })
    }

    /// Verifies a connection token and returns its claims.
    pub async fn connect_claims(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        let c = self.verify(token).await?;
        if field::<String>(&c, "channel")?.is_some_and(|ch| !ch.is_empty()) {
            return Err(invalid(
                Invalid::Claims,
                "a connection token must not carry `channel`",
            ));
        }
        let s = self.common(&c)?;
        Ok(ConnectClaims {
            sub: s.sub,
            exp: s.exp,
            expire_at: s.expire_at,
            info: s.info,
            b64info: s.b64info,
            channels: field(&c, "channels")?.unwrap_or_default(),
            subs: field(&c, "subs")?.unwrap_or_default(),
            meta: field(&c, "meta")?,
            tenant: s.tenant,
            roles: s.roles,
        })
    }

    /// Verifies a subscription token (which must name a `channel`) and returns its claims.
    pub async fn subscribe_claims(&self, token: &str) -> Result<SubscribeClaims, TokenError> {
        let c = self.verify(token).await?;
        let channel = field::<String>(&c, "channel")?.filter(|ch| !ch.is_empty());
        let channel = channel
            .ok_or_else(|| invalid(Invalid::Claims, "subscription token without `channel`"))?;
        Ok(SubscribeClaims {
            channel,
            ..self.common(&c)?
        })
    }

    /// Claims shared by both token kinds (as subscription claims with an empty `channel`).
    fn common(&self, c: &Claims) -> Result<SubscribeClaims, TokenError> {
        let tenant = match field::<Value>(c, &self.cfg.tenant_claim)? {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            Some(_) => {
                return Err(invalid(
                    Invalid::Claims,
                    "the tenant claim must be a string or an integer",
                ));
            }
        };
        let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if tenant
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.len() > 64 || !t.bytes().all(ok_byte))
        {
            return Err(invalid(
                Invalid::Claims,
                "the tenant must match ^[A-Za-z0-9_-]{1,64}$",
            ));
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Roles {
            One(String),
            Many(Vec<String>),
        }
        let roles = match field::<Roles>(c, &self.cfg.roles_claim)? {
            None => Vec::new(),
            Some(Roles::One(r)) => vec![r],
            Some(Roles::Many(r)) => r,
        };
        let b64info = field::<String>(c, "b64info")?;
        if b64info
            .as_ref()
            .is_some_and(|b| STANDARD.decode(b).is_err())
        {
            return Err(invalid(Invalid::Claims, "`b64info` is not valid base64"));
        }
        let (sub, info) = (field(c, "sub")?.unwrap_or_default(), field(c, "info")?);
        Ok(SubscribeClaims {
            sub,
            channel: String::new(),
            exp: num(c, "exp")?,
            expire_at: num(c, "expire_at")?,
            info,
            b64info,
            tenant,
            roles,
        })
    }

    /// Checks shape, algorithm, key, signature and registered claims; returns the payload.
    async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(Invalid::Malformed, "token larger than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(head), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(
                Invalid::Malformed,
                "a JWT has three dot-separated parts",
            ));
        };
        if URL_SAFE_NO_PAD.decode(payload).is_err() {
            return Err(invalid(Invalid::Malformed, "payload is not base64url"));
        }
        #[derive(Deserialize)]
        struct Head {
            alg: String,
            kid: Option<String>,
            crit: Option<Value>,
        }
        let head = URL_SAFE_NO_PAD
            .decode(head)
            .map_err(|e| invalid(Invalid::Malformed, format!("header: {e}")))?;
        let head: Head = serde_json::from_slice(&head)
            .map_err(|e| invalid(Invalid::Malformed, format!("header: {e}")))?;
        if head.crit.is_some() {
            return Err(invalid(
                Invalid::Malformed,
                "`crit` header is not supported",
            ));
        }
        let alg = Algorithm::from_str(&head.alg).map_err(|_| {
            invalid(
                Invalid::Algorithm,
                format!("{:?} is not accepted", head.alg),
            )
        })?;
        let jwks_key;
        let key = match (alg.family(), &self.jwks, head.kid.as_deref()) {
            (AlgorithmFamily::Hmac, ..) => self.hmac.as_ref(),
            (AlgorithmFamily::Rsa | AlgorithmFamily::Ec, Some(jwks), Some(kid)) => {
                jwks_key = jwks.key(kid, alg).await?;
                Some(&jwks_key.key)
            }
            (AlgorithmFamily::Rsa, ..) => self.rsa.as_ref(),
            (AlgorithmFamily::Ec, ..) => self.ec.as_ref(),
            _ => None,
        };
        let key = key.ok_or_else(|| match (&self.jwks, alg.family()) {
            (Some(_), AlgorithmFamily::Rsa | AlgorithmFamily::Ec) => {
                invalid(Invalid::NoKey, "token has no `kid` for the JWKS")
            }
            _ => invalid(
                Invalid::Algorithm,
                format!("{alg:?} tokens are not accepted"),
            ),
        })?;
        let mut v = Validation::new(alg);
        v.leeway = self.cfg.leeway_secs;
        v.required_spec_claims.clear();
        v.validate_nbf = true;
        v.validate_aud = self.cfg.audience.is_some();
        if let Some(aud) = &self.cfg.audience {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.cfg.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        let data =
            jsonwebtoken::decode::<Box<RawValue>>(token, key, &v).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidKeyFormat => invalid(Invalid::BadSignature, e),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    invalid(Invalid::Algorithm, e)
                }
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => invalid(Invalid::Malformed, e),
                _ => invalid(Invalid::Claims, e),
            })?;
        serde_json::from_str(data.claims.get()).map_err(|e| {
            invalid(
                Invalid::Malformed,
                format!("payload is not a JSON object: {e}"),
            )
        })
    }
}

type Claims = HashMap<String, Box<RawValue>>;

/// Reads claim `name`; JSON `null` counts as absent.
fn field<T: DeserializeOwned>(c: &Claims, name: &str) -> Result<Option<T>, TokenError> {
    match c.get(name).map(|raw| raw.get()) {
        None | Some("null") => Ok(None),
        Some(raw) => serde_json::from_str(raw)
            .map(Some)
            .map_err(|e| invalid(Invalid::Claims, format!("`{name}`: {e}"))),
    }
}

/// A NumericDate claim; fractional seconds are truncated.
fn num(c: &Claims, name: &str) -> Result<Option<i64>, TokenError> {
    let Some(n) = field::<serde_json::Number>(c, name)? else {
        return Ok(None);
    };
    let secs = n
        .as_i64()
        .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64));
    secs.map(Some)
        .ok_or_else(|| invalid(Invalid::Claims, format!("`{name}` is out of range")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RSA_PRIV: &str = include_str!("../testdata/jwt/rsa_private.pem");
    const RSA_PUB: &str = include_str!("../testdata/jwt/rsa_public.pem");
    const EC_PRIV: &str = include_str!("../testdata/jwt/ec_private.pem");
    const EC_PUB: &str = include_str!("../testdata/jwt/ec_public.pem");
    const JWKS: &str = include_str!("../testdata/jwt/jwks.json");
    const SECRET: &str = "test-secret";
    use Algorithm::{ES256, HS256, PS256, RS256};

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }
    /// A config with the given key sources.
    fn cfg(hmac: Option<&str>, rsa: Option<&str>, ec: Option<&str>) -> JwtConfig {
        let s = |v: Option<&str>| v.map(String::from);
        let (tenant_claim, roles_claim) = ("tenant_id".into(), "roles".into());
        JwtConfig {
            hmac_secret: s(hmac),
            rsa_public_key: s(rsa),
            ecdsa_public_key: s(ec),
            tenant_claim,
            roles_claim,
            ..Default::default()
        }
    }
    fn ver(cfg: JwtConfig) -> Verifier {
        Verifier::new(cfg).unwrap()
    }
    /// Signs `claims` with the test key of `alg`'s family (HS: SECRET).
    fn tok(alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
        let key = match alg.family() {
            AlgorithmFamily::Hmac => EncodingKey::from_secret(SECRET.as_bytes()),
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(
            &Header {
                kid: kid.map(Into::into),
                ..Header::new(alg)
            },
            &claims,
            &key,
        )
        .unwrap()
    }
    fn hs(claims: Value) -> String {
        tok(HS256, None, claims)
    }
    /// A token with a hand-made header and payload, HS256-signed with SECRET.
    fn raw(header: &str, payload: &str) -> String {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        format!(
            "{msg}.{}",
            jsonwebtoken::crypto::sign(msg.as_bytes(), &key, HS256).unwrap()
        )
    }
    /// "ok" or the refusal reason of `token` as a connection token.
    async fn why(v: &Verifier, token: &str) -> &'static str {
        v.connect_claims(token)
            .await
            .map_or_else(|e| e.label(), |_| "ok")
    }

    #[test]
    fn verifier_is_send_sync() {
        fn check<T: Send + Sync>(_: &T) {}
        let v = ver(cfg(Some(SECRET), None, None));
        check(&v);
        fn send<T: Send>(_: T) {}
        send(v.connect_claims(""));
        send(v.subscribe_claims(""));
        assert!(!format!("{v:?}").contains(SECRET));
    }

    #[tokio::test]
    async fn connect_claims_are_parsed() {
        let v = ver(cfg(Some(SECRET), None, None));
        let claims = json!({"sub": "u1", "exp": now() + 60, "info": {"n": "x"}, "b64info": "aGk=", "channels": ["a"],
            "subs": {"c": {"info": {"k": 1}, "data": [1]}}, "meta": {"m": true}, "tenant_id": "acme_1", "roles": ["r1", "r2"]});
        let c = v.connect_claims(&hs(claims)).await.unwrap();
        assert_eq!(
            (c.sub.as_str(), c.channels.join(","), c.b64info.as_deref()),
            ("u1", "a".to_string(), Some("aGk="))
        );
        assert_eq!(
            (c.expires_at(), c.info.unwrap().get(), c.meta.unwrap().get()),
            (c.exp, r#"{"n":"x"}"#, r#"{"m":true}"#)
        );
        assert_eq!(c.subs["c"].data.as_ref().unwrap().get(), "[1]");
        assert_eq!((c.tenant.as_deref(), c.roles.len()), (Some("acme_1"), 2));
        let anon = v.connect_claims(&hs(json!({}))).await.unwrap();
        assert_eq!(
            (anon.sub.as_str(), anon.expires_at(), anon.tenant),
            ("", None, None)
        );
        assert_eq!(why(&v, &hs(json!({"b64info": "!!"}))).await, "claims");
        assert_eq!(why(&v, &hs(json!({"channels": "a"}))).await, "claims");
    }

    #[test]
    fn expiry_rules() {
        let c = |exp, expire_at| {
            ConnectClaims {
                exp,
                expire_at,
                ..Default::default()
            }
            .expires_at()
        };
        assert_eq!(
            [
                c(Some(5), None),
                c(Some(5), Some(0)),
                c(Some(5), Some(9)),
                c(None, None)
            ],
            [Some(5), None, Some(9), None]
        );
        assert_eq!(
            SubscribeClaims {
                exp: Some(5),
                expire_at: Some(0),
                ..Default::default()
            }
            .expires_at(),
            None
        );
    }

    #[tokio::test]
    async fn rsa_and_ec_tokens_verify() {
        let v = ver(cfg(None, Some(RSA_PUB), Some(EC_PUB)));
        for alg in [RS256, Algorithm::RS384, Algorithm::RS512, PS256, ES256] {
            assert_eq!(
                v.connect_claims(&tok(alg, None, json!({"sub": "u"})))
                    .await
                    .unwrap()
                    .sub,
                "u"
            );
        }
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let v = ver(cfg(Some(SECRET), None, None));
        for alg in ["none", "None", "NONE"] {
            let t = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#)),
                URL_SAFE_NO_PAD.encode("{}")
            );
            assert_eq!(why(&v, &t).await, "algorithm");
        }
        assert_eq!(why(&v, &raw(r#"{"alg":"EdDSA"}"#, "{}")).await, "algorithm");
    }

    #[tokio::test]
    async fn algorithm_must_match_key_type() {
        // Key confusion: an HS256 token "signed" with the RSA public key as HMAC secret.
        let key = EncodingKey::from_secret(RSA_PUB.as_bytes());
        let forged =
            jsonwebtoken::encode(&Header::new(HS256), &json!({"sub": "admin"}), &key).unwrap();
        assert_eq!(
            why(&ver(cfg(None, Some(RSA_PUB), Some(EC_PUB))), &forged).await,
            "algorithm"
        );
        assert_eq!(
            why(&ver(cfg(Some(SECRET), Some(RSA_PUB), None)), &forged).await,
            "bad_signature"
        );
        let (rsa_only, ec_only) = (
            ver(cfg(None, Some(RSA_PUB), None)),
            ver(cfg(None, None, Some(EC_PUB))),
        );
        assert_eq!(
            why(&rsa_only, &tok(ES256, None, json!({}))).await,
            "algorithm"
        );
        assert_eq!(
            why(&ec_only, &tok(RS256, None, json!({}))).await,
            "algorithm"
        );
        assert_eq!(why(&rsa_only, &hs(json!({}))).await, "algorithm");
        // An EC signature relabelled as RS256 does not verify against the RSA key.
        let es = tok(ES256, None, json!({}));
        let relabelled = format!(
            "{}{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            &es[es.find('.').unwrap()..]
        );
        assert_eq!(why(&rsa_only, &relabelled).await, "bad_signature");
    }

    #[tokio::test]
    async fn expiry_and_not_before() {
        let v = ver(cfg(Some(SECRET), None, None));
        let old = hs(json!({"exp": now() - 100}));
        assert!(matches!(
            v.connect_claims(&old).await,
            Err(TokenError::Expired)
        ));
        assert_eq!(why(&v, &old).await, "expired");
        assert_eq!(
            why(
                &ver(JwtConfig {
                    leeway_secs: 300,
                    ..cfg(Some(SECRET), None, None)
                }),
                &old
            )
            .await,
            "ok"
        );
        assert_eq!(why(&v, &hs(json!({"nbf": now() + 100}))).await, "claims");
        assert_eq!(
            why(&v, &hs(json!({"nbf": now() - 10, "exp": now() + 10}))).await,
            "ok"
        );
        assert_eq!(why(&v, &hs(json!({"exp": "soon"}))).await, "claims");
    }

    #[tokio::test]
    async fn wrong_signature_is_refused() {
        let v = ver(cfg(Some(SECRET), Some(RSA_PUB), None));
        let other = jsonwebtoken::encode(
            &Header::new(HS256),
            &json!({}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(why(&v, &other).await, "bad_signature");
        for t in [
            hs(json!({"sub": "x"})),
            tok(RS256, None, json!({"sub": "x"})),
        ] {
            let p: Vec<&str> = t.split('.').collect();
            let tampered = format!(
                "{}.{}.{}",
                p[0],
                URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#),
                p[2]
            );
            assert_eq!(why(&v, &tampered).await, "bad_signature");
            assert_eq!(
                why(&v, &format!("{}.{}.AAAA", p[0], p[1])).await,
                "bad_signature"
            );
        }
    }

    #[tokio::test]
    async fn malformed_tokens_are_refused() {
        let v = ver(cfg(Some(SECRET), None, None));
        let (ok, alg) = (hs(json!({})), r#"{"alg":"HS256"}"#);
        let cases = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{ok}.x"),
            "!!!.e30.c2ln".into(),
            format!("{}.%%%.c2ln", URL_SAFE_NO_PAD.encode(alg)),
            format!("{}.!", &ok[..ok.rfind('.').unwrap()]),
            hs(json!({"info": "x".repeat(MAX_TOKEN_LEN)})),
            "a".repeat(20_000),
            raw("[]", "{}"),
            raw(r#"{"alg":"HS256","crit":["x"]}"#, "{}"),
            raw(alg, "123"),
            raw(alg, "[1]"),
            raw(alg, "not json"),
        ];
        for t in &cases {
            assert_eq!(why(&v, t).await, "malformed", "token {t:.60}");
        }
    }

    #[tokio::test]
    async fn channel_claim_rules() {
        let v = ver(cfg(Some(SECRET), None, None));
        let s = v
            .subscribe_claims(&hs(
                json!({"sub": "u", "channel": "news", "expire_at": 0, "exp": now() + 9}),
            ))
            .await
            .unwrap();
        assert_eq!(
            (s.channel.as_str(), s.sub.as_str(), s.expires_at()),
            ("news", "u", None)
        );
        for bad in [
            json!({"sub": "u"}),
            json!({"channel": ""}),
            json!({"channel": 5}),
        ] {
            assert_eq!(
                v.subscribe_claims(&hs(bad)).await.unwrap_err().label(),
                "claims"
            );
        }
        assert_eq!(why(&v, &hs(json!({"channel": "news"}))).await, "claims");
    }

    #[tokio::test]
    async fn tenant_and_roles_claims() {
        let v = ver(cfg(Some(SECRET), None, None));
        let c = |claims| async { v.connect_claims(&hs(claims)).await };
        assert_eq!(
            c(json!({"tenant_id": "t-1"}))
                .await
                .unwrap()
                .tenant
                .as_deref(),
            Some("t-1")
        );
        assert_eq!(
            c(json!({"tenant_id": 42})).await.unwrap().tenant.as_deref(),
            Some("42")
        );
        assert_eq!(
            c(json!({"tenant_id": "a".repeat(64)}))
                .await
                .unwrap()
                .tenant
                .map(|t| t.len()),
            Some(64)
        );
        for bad in [
            "a:b",
            "a.b",
            "a*b",
            "a>b",
            "a b",
            "a\tb",
            "a#b",
            "",
            "é",
            &"a".repeat(65),
        ] {
            assert_eq!(
                c(json!({"tenant_id": bad})).await.unwrap_err().label(),
                "claims",
                "{bad:?}"
            );
        }
        for bad in [json!(1.5), json!(true), json!(["a"]), json!({})] {
            assert_eq!(
                c(json!({"tenant_id": bad})).await.unwrap_err().label(),
                "claims"
            );
        }
        assert_eq!(c(json!({"roles": "admin"})).await.unwrap().roles, ["admin"]);
        assert_eq!(
            c(json!({"roles": ["a", "b"]})).await.unwrap().roles,
            ["a", "b"]
        );
        assert!(c(json!({"roles": null})).await.unwrap().roles.is_empty());
        assert_eq!(
            c(json!({"roles": [1]})).await.unwrap_err().label(),
            "claims"
        );
        let s = v
            .subscribe_claims(&hs(json!({"channel": "c", "tenant_id": 7, "roles": "r"})))
            .await
            .unwrap();
        assert_eq!(
            (s.tenant.as_deref(), s.roles),
            (Some("7"), vec!["r".to_string()])
        );
    }

    #[tokio::test]
    async fn audience_and_issuer() {
        let v = ver(JwtConfig {
            audience: Some("herald".into()),
            issuer: Some("idp".into()),
            ..cfg(Some(SECRET), None, None)
        });
        assert_eq!(
            why(&v, &hs(json!({"aud": "herald", "iss": "idp"}))).await,
            "ok"
        );
        assert_eq!(
            why(&v, &hs(json!({"aud": ["x", "herald"], "iss": "idp"}))).await,
            "ok"
        );
        for bad in [
            json!({"aud": "x", "iss": "idp"}),
            json!({"aud": "herald", "iss": "x"}),
            json!({"iss": "idp"}),
            json!({"aud": "herald"}),
        ] {
            assert_eq!(why(&v, &hs(bad)).await, "claims");
        }
        // Without a configured audience, `aud` is not checked.
        assert_eq!(
            why(
                &ver(cfg(Some(SECRET), None, None)),
                &hs(json!({"aud": "any"}))
            )
            .await,
            "ok"
        );
    }

    #[test]
    fn bad_config_is_reported() {
        let err = |c: JwtConfig| Verifier::new(c).err().unwrap();
        assert!(err(cfg(None, None, None)).contains("no token key"));
        assert!(err(cfg(Some(""), None, None)).contains("hmac_secret is empty"));
        assert!(
            err(cfg(None, Some("garbage"), None)).contains("rsa_public_key is not a valid PEM")
        );
        assert!(err(cfg(None, Some(RSA_PRIV), None)).contains("private key"));
        assert!(err(cfg(None, Some(EC_PUB), None)).contains("rsa_public_key"));
        assert!(err(cfg(None, None, Some(RSA_PUB))).contains("ecdsa_public_key"));
        let jwks = |url: &str| JwtConfig {
            jwks_url: Some(url.into()),
            ..cfg(None, None, None)
        };
        assert!(err(jwks("ftp://x/keys")).contains("http"));
        assert!(err(jwks("not a url")).contains("not a URL"));
        assert!(
            err(JwtConfig {
                leeway_secs: 1 << 40,
                ..cfg(Some(SECRET), None, None)
            })
            .contains("leeway")
        );
    }

    /// Serves `body` with a hand-written HTTP/1.1 response on every connection; counts requests.
    async fn serve(body: String) -> (JwtConfig, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, SeqCst);
                let (mut req, mut buf) = (Vec::new(), [0u8; 1024]);
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let len = body.len();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        (
            JwtConfig {
                jwks_url: Some(url),
                ..cfg(None, None, None)
            },
            hits,
        )
    }

    #[tokio::test]
    async fn jwks_keys_by_kid() {
        let mut doc: Value = serde_json::from_str(JWKS).unwrap();
        let mut enc = doc["keys"][0].clone();
        (enc["kid"], enc["use"]) = (json!("enc1"), json!("enc"));
        let oct = json!({"kty": "oct", "kid": "sym", "k": URL_SAFE_NO_PAD.encode(SECRET)});
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.extend([enc, oct, json!({"kty": "weird", "kid": "w"})]);
        let (config, hits) = serve(doc.to_string()).await;
        let v = ver(config);
        let t = tok(RS256, Some("k1"), json!({"sub": "j"}));
        assert_eq!(v.connect_claims(&t).await.unwrap().sub, "j");
        assert_eq!(v.connect_claims(&t).await.unwrap().sub, "j");
        assert_eq!(why(&v, &tok(ES256, Some("e1"), json!({}))).await, "ok");
        assert_eq!(hits.load(SeqCst), 1, "keys are cached");
        // k1 pins RS256; an EC token cannot use an RSA key; symmetric and "enc" keys are ignored.
        assert_eq!(
            why(&v, &tok(PS256, Some("k1"), json!({}))).await,
            "algorithm"
        );
        assert_eq!(
            why(&v, &tok(ES256, Some("k1"), json!({}))).await,
            "algorithm"
        );
        assert_eq!(
            why(&v, &tok(HS256, Some("sym"), json!({}))).await,
            "algorithm"
        );
        assert_eq!(why(&v, &tok(RS256, None, json!({}))).await, "no_key");
        assert_eq!(
            why(&v, &tok(RS256, Some("enc1"), json!({}))).await,
            "no_key"
        );
        // Unknown kids: no refetch within 10 s of the last fetch, then exactly one.
        assert_eq!(
            why(&v, &tok(RS256, Some("nope"), json!({}))).await,
            "no_key"
        );
        assert_eq!(hits.load(SeqCst), 1);
        *v.jwks.as_ref().unwrap().last_fetch.lock().await =
            Instant::now().checked_sub(JWKS_REFETCH);
        assert_eq!(
            why(&v, &tok(RS256, Some("nope2"), json!({}))).await,
            "no_key"
        );
        assert_eq!(
            why(&v, &tok(RS256, Some("nope3"), json!({}))).await,
            "no_key"
        );
        assert_eq!(hits.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn jwks_failures() {
        let t = tok(RS256, Some("k1"), json!({}));
        let (huge, _) = serve(format!(
            r#"{{"keys":[],"pad":"{}"}}"#,
            "x".repeat(MAX_JWKS_BYTES)
        ))
        .await;
        assert_eq!(why(&ver(huge), &t).await, "jwks");
        let (bad, _) = serve("not json".into()).await;
        let err = ver(bad).connect_claims(&t).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid token: jwks: bad document"),
            "{err}"
        );
    }
}
