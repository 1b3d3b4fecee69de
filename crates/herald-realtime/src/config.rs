//! The gateway's configuration: the `[realtime]` section of `herald.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// JWT claim that carries the tenant id.
    pub tenant_claim: String,
    /// JWT claim that carries the roles (a list of strings).
    pub roles_claim: String,
    /// The role that may use `admin:*` channels and every tenant's channels.
    pub admin_role: String,
    /// Connections without a token are accepted (as anonymous users) when true.
    pub allow_anonymous: bool,
    /// Seconds between server pings; a client that does not answer within `pong_timeout_secs`
    /// is disconnected with 3012.
    pub ping_interval_secs: u64,
    pub pong_timeout_secs: u64,
    /// A connection must send its connect command within this many seconds.
    pub connect_timeout_secs: u64,
    /// Messages waiting to be written to one client; past either bound it is disconnected
    /// with 3008 (slow).
    pub client_queue_max_messages: usize,
    pub client_queue_max_bytes: usize,
    /// Largest WebSocket frame or message a client may send.
    pub max_command_bytes: usize,
    /// Largest publication payload.
    pub max_publication_bytes: usize,
    pub max_channels_per_connection: usize,
    pub max_channel_length: usize,
    /// Most publications a recovery returns; beyond it the client gets `recovered: false`.
    pub recovery_max_publications: usize,
    /// Most publications one history call returns.
    pub history_max_limit: usize,
    pub max_connections: usize,
    pub rate_limits: RateLimits,
    pub jwt: JwtSettings,
    pub namespaces: BTreeMap<String, Namespace>,
    pub routes: Vec<RouteConfig>,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            tenant_claim: "tenant_id".into(),
            roles_claim: "roles".into(),
            admin_role: "admin".into(),
            allow_anonymous: false,
            ping_interval_secs: 25,
            pong_timeout_secs: 10,
            connect_timeout_secs: 10,
            client_queue_max_messages: 4096,
            client_queue_max_bytes: 1024 * 1024,
            max_command_bytes: 64 * 1024,
            max_publication_bytes: 64 * 1024,
            max_channels_per_connection: 128,
            max_channel_length: 255,
            recovery_max_publications: 300,
            history_max_limit: 1000,
            max_connections: 100_000,
            rate_limits: RateLimits::default(),
            jwt: JwtSettings::default(),
            namespaces: BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

/// Fixed-window limits per user and per tenant, as the seed's `RATE_LIMIT_WINDOW` (seconds) and
/// `RATE_LIMIT_MAX_REQUESTS`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub enabled: bool,
    pub window_secs: u64,
    /// Client commands (subscribe, publish, history, presence, presence_stats, rpc, send) per
    /// user per window. Past it commands fail with 111; past twice it the connection is closed
    /// with 3013.
    pub max_requests: u32,
    /// The same, summed over all users of a tenant.
    pub tenant_max_requests: u32,
    /// Connection attempts per user per window.
    pub max_connects: u32,
    /// Connection attempts per tenant per window.
    pub tenant_max_connects: u32,
    /// Per-tenant overrides (`[realtime.rate_limits.tenants.ID]`), field by field.
    pub tenants: BTreeMap<String, TenantRateLimits>,
}

/// A tenant's own limits; absent fields keep the defaults above.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TenantRateLimits {
    pub max_requests: Option<u32>,
    pub tenant_max_requests: Option<u32>,
    pub max_connects: Option<u32>,
    pub tenant_max_connects: Option<u32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            enabled: true,
            window_secs: 60,
            max_requests: 100,
            tenant_max_requests: 10_000,
            max_connects: 60,
            tenant_max_connects: 10_000,
            tenants: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// HMAC secret (HS256/384/512); the server-wide `jwt_secret` when absent.
    pub hmac_secret: Option<String>,
    /// RSA public key (RS256): PEM text or a path to a PEM file.
    pub rsa_public_key: Option<String>,
    /// ECDSA public key (ES256): PEM text or a path to a PEM file.
    pub ecdsa_public_key: Option<String>,
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub leeway_secs: u64,
}

/// Channel options of one namespace (`name:` prefix of the channel), Centrifugo's names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Namespace {
    /// Channels are `ns:{tenant}:{rest}`; only that tenant (or the admin role) may use them.
    pub tenant_bound: bool,
    /// A role every user of the namespace must hold.
    pub required_role: Option<String>,
    pub presence: bool,
    pub join_leave: bool,
    pub force_push_join_leave: bool,
    /// Publications kept per channel; 0 disables history (no offsets, no recovery).
    pub history_size: usize,
    pub history_ttl_secs: u64,
    pub force_recovery: bool,
    pub force_positioning: bool,
    pub allow_subscribe_for_client: bool,
    pub allow_subscribe_for_anonymous: bool,
    pub allow_publish_for_client: bool,
    pub allow_publish_for_subscriber: bool,
    pub allow_history_for_client: bool,
    pub allow_history_for_subscriber: bool,
    pub allow_presence_for_client: bool,
    pub allow_presence_for_subscriber: bool,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            tenant_bound: false,
            required_role: None,
            presence: true,
            join_leave: true,
            force_push_join_leave: false,
            history_size: 10,
            history_ttl_secs: 3600,
            force_recovery: false,
            force_positioning: false,
            allow_subscribe_for_client: true,
            allow_subscribe_for_anonymous: false,
            allow_publish_for_client: false,
            allow_publish_for_subscriber: true,
            allow_history_for_client: false,
            allow_history_for_subscriber: true,
            allow_presence_for_client: false,
            allow_presence_for_subscriber: true,
        }
    }
}

/// `from` is a topic pattern with `{tenant}` and globs; `to` a channel with `{tenant}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub from: String,
    pub to: String,
}

impl RealtimeConfig {
    /// The namespaces in force: seed 2's `tenant`, `admin` and `system`, replaced or extended
    /// by the configured ones.
    pub fn effective_namespaces(&self) -> BTreeMap<String, Namespace> {
        let mut out = BTreeMap::new();
        out.insert(
            "tenant".to_owned(),
            Namespace {
                tenant_bound: true,
                ..Namespace::default()
            },
        );
        out.insert(
            "admin".to_owned(),
            Namespace {
                required_role: Some(self.admin_role.clone()),
                ..Namespace::default()
            },
        );
        out.insert(
            "system".to_owned(),
            Namespace {
                allow_publish_for_subscriber: false,
                ..Namespace::default()
            },
        );
        for (k, v) in &self.namespaces {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, ns) in &self.effective_namespaces() {
            if name.contains(':') || name.len() > 64 {
                return Err(format!(
                    "realtime.namespaces: {name:?} must be at most 64 bytes without ':'"
                ));
            }
            if ns.history_size > 1_000_000 {
                return Err(format!(
                    "realtime.namespaces.{name}.history_size {} is above 1000000",
                    ns.history_size
                ));
            }
            if ns.history_size > 0 && ns.history_ttl_secs == 0 {
                return Err(format!(
                    "realtime.namespaces.{name}: history_size needs a history_ttl_secs above 0"
                ));
            }
        }
        if self.rate_limits.enabled && self.rate_limits.window_secs == 0 {
            return Err("realtime.rate_limits.window_secs must be above 0".into());
        }
        if self.client_queue_max_messages == 0 || self.client_queue_max_bytes == 0 {
            return Err("realtime.client_queue_max_messages and _bytes must be above 0".into());
        }
        for r in &self.routes {
            crate::routes::Route::parse(r)?;
        }
        Ok(())
    }
}
