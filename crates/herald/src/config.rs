//! Server configuration: defaults < `herald.toml` < `HERALD_*` environment < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Flags of `herald serve`. Each overrides the file and the environment.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory [env: HERALD_DATA_DIR] [default: ./herald-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [env: HERALD_HTTP_ADDR] [default: 127.0.0.1:8000]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// Topic prefix of the tenant grammar [env: HERALD_TOPIC_PREFIX] [default: smarteros]
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Kafka listeners, NAME://HOST:PORT, comma-separated [env: HERALD_KAFKA_ADDR]
    /// [default: PLAINTEXT://127.0.0.1:9092]
    #[arg(long, value_name = "LISTENERS")]
    pub kafka_addr: Option<String>,
    /// A Kafka listener, NAME=PROTOCOL://HOST:PORT with PROTOCOL one of PLAINTEXT, SSL,
    /// SASL_PLAINTEXT, SASL_SSL; repeatable, replaces the configured listeners
    #[arg(long = "kafka-listener", value_name = "NAME=PROTOCOL://HOST:PORT")]
    pub kafka_listeners: Vec<String>,
    /// TLS certificate chain (PEM) for TLS listeners [env: HERALD_TLS_CERT] [default: a
    /// development certificate generated in DATA_DIR/tls]
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [env: HERALD_TLS_KEY]
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Serve the HTTP API and WebSocket gateway over TLS (https://, wss://) [env: HERALD_HTTP_TLS]
    #[arg(long)]
    pub http_tls: bool,
    /// Addresses given to Kafka clients, NAME://HOST:PORT by listener name
    /// [env: HERALD_ADVERTISE_KAFKA_ADDR] [default: the listen address]
    #[arg(long, value_name = "LISTENERS")]
    pub advertise_kafka_addr: Option<String>,
    /// "always" (acknowledge after fsync) or "interval" [env: HERALD_FSYNC]
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<String>,
    /// Partitions of topics created without a count [env: HERALD_DEFAULT_PARTITIONS]
    #[arg(long, value_name = "N")]
    pub default_partitions: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub topic_prefix: String,
    /// Admin API key; generated and stored in the data directory when absent.
    pub admin_api_key: Option<String>,
    /// HMAC secret for JWTs; generated and stored in the data directory when absent.
    pub jwt_secret: Option<String>,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub log: LogConfig,
    pub topics: TopicsConfig,
    pub groups: GroupsConfig,
    pub metrics: MetricsConfig,
    /// The real-time gateway: JWT, namespaces, limits, routes.
    pub realtime: herald_realtime::Config,
    pub security: SecurityConfig,
    pub tls: TlsConfig,
    /// Byte and request rates per principal: `[quotas.defaults]`, `[quotas.tenants.ID]`,
    /// `[quotas.users.NAME]`.
    pub quotas: herald_auth::quota::QuotaConfig,
}

/// The certificate of TLS listeners; a development certificate is generated in
/// `DATA_DIR/tls` when a TLS listener is declared and none is given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Kafka TLS listeners ask for client certificates: "none", "requested" or "required"
    /// (Kafka's `ssl.client.auth`). A client with a certificate is the principal `User:<CN>`.
    pub client_auth: herald_auth::tls::ClientAuth,
    /// The CA that signs client certificates.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Principals allowed everything on every interface (`User:admin`), as Kafka's
    /// `super.users`.
    pub superusers: Vec<String>,
    /// Kafka clients of listeners without authentication may do everything (the zero-config
    /// default). Set false to hold them to ACLs as `User:ANONYMOUS`.
    pub trust_unauthenticated: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            superusers: Vec::new(),
            trust_unauthenticated: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: String,
    /// HTTPS and WSS with the `[tls]` certificate.
    pub tls: bool,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    /// Open HTTP connections (WebSockets included); more are closed at once. Lowered at
    /// startup to leave descriptors for Kafka and the log when the descriptor limit is low.
    pub max_connections: usize,
    /// From waiting for a request until its headers are complete.
    pub header_read_timeout_secs: u64,
    /// No byte in either direction for this long closes an HTTP connection.
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `NAME://HOST:PORT` or `NAME=PROTOCOL://HOST:PORT` listeners; an empty list disables the
    /// Kafka interface.
    pub listeners: Vec<String>,
    /// `NAME://HOST:PORT` per listener name, as told to clients in Metadata.
    pub advertised_listeners: Vec<String>,
    pub node_id: i32,
    pub cluster_id: String,
    pub max_request_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout_secs: u64,
    /// Largest request before a SASL connection has authenticated.
    pub max_unauthenticated_request_bytes: usize,
    /// Bytes of requests all Kafka connections together may hold (Kafka's
    /// `queued.max.request.bytes`).
    pub queued_max_request_bytes: usize,
    /// Longest a request may take to arrive, including any wait for request memory.
    pub request_read_timeout_secs: u64,
    /// On shutdown, how long connections get to finish their request.
    pub drain_timeout_secs: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            listeners: vec!["PLAINTEXT://127.0.0.1:9092".into()],
            advertised_listeners: Vec::new(),
            node_id: 0,
            cluster_id: "herald".into(),
            max_request_bytes: 64 * 1024 * 1024,
            max_connections: 10_000,
            idle_timeout_secs: 540,
            max_unauthenticated_request_bytes: 512 * 1024,
            queued_max_request_bytes: 256 * 1024 * 1024,
            request_read_timeout_secs: 30,
            drain_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "always" or "interval".
    pub fsync: String,
    pub fsync_interval_ms: u64,
    pub segment_bytes: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_interval_secs: u64,
    pub retention_check_interval_secs: u64,
    pub max_pending_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub default_partitions: u32,
    /// `retention.ms` of topics that set none (7 days, as Kafka and Redpanda); -1 keeps forever.
    pub default_retention_ms: i64,
    pub auto_create: bool,
    pub strict_envelopes: bool,
    pub idempotency_window_secs: u64,
}

/// Consumer-group coordinator settings (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        let d = herald_core::group::GroupConfig::default();
        GroupsConfig {
            initial_rebalance_delay_ms: d.initial_rebalance_delay_ms,
            min_session_timeout_ms: d.min_session_timeout_ms,
            max_session_timeout_ms: d.max_session_timeout_ms,
        }
    }
}

impl GroupsConfig {
    pub fn coordinator(&self) -> herald_core::group::GroupConfig {
        herald_core::group::GroupConfig {
            initial_rebalance_delay_ms: self.initial_rebalance_delay_ms,
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            ..herald_core::group::GroupConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub max_tenant_labels: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./herald-data"),
            topic_prefix: "smarteros".into(),
            admin_api_key: None,
            jwt_secret: None,
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            log: LogConfig::default(),
            topics: TopicsConfig::default(),
            groups: GroupsConfig::default(),
            metrics: MetricsConfig::default(),
            realtime: herald_realtime::Config::default(),
            security: SecurityConfig::default(),
            tls: TlsConfig::default(),
            quotas: herald_auth::quota::QuotaConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8000".into(),
            tls: false,
            max_body_bytes: 4 * 1024 * 1024,
            max_events_per_request: 1000,
            // As many as the gateway's WebSocket limit; the descriptor limit usually binds first.
            max_connections: 100_000,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 120,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: "always".into(),
            fsync_interval_ms: 50,
            segment_bytes: 128 * 1024 * 1024,
            checkpoint_bytes: 256 * 1024 * 1024,
            checkpoint_interval_secs: 30,
            retention_check_interval_secs: 60,
            max_pending_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            default_partitions: 1,
            default_retention_ms: 604_800_000,
            auto_create: true,
            strict_envelopes: false,
            idempotency_window_secs: 600,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_tenant_labels: 1000,
        }
    }
}

/// Variables read by client commands or logging, not by the server's configuration.
const OTHER_ENV_VARS: &[&str] = &["HERALD_SERVER", "HERALD_API_KEY", "HERALD_LOG"];

/// One Kafka listener: its name, bind address and, if configured, the host and port clients
/// are told (port 0: the port actually bound).
#[derive(Debug, Clone)]
pub struct KafkaListener {
    pub name: String,
    pub protocol: herald_kafka::sasl::SecurityProtocol,
    pub bind: String,
    pub advertised: Option<(String, u16)>,
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_env<T: std::str::FromStr>(name: &str, v: &str) -> anyhow::Result<T> {
    v.parse()
        .map_err(|_| anyhow::anyhow!("environment variable {name}={v:?} has the wrong type"))
}

impl Config {
    /// Builds the effective configuration from every layer.
    pub fn load(args: &ServeArgs, env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut cfg = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        for (k, v) in env {
            if !k.starts_with("HERALD_") {
                continue;
            }
            match k.as_str() {
                "HERALD_DATA_DIR" => cfg.data_dir = PathBuf::from(v),
                "HERALD_HTTP_ADDR" => cfg.http.addr = v.clone(),
                "HERALD_KAFKA_ADDR" => cfg.kafka.listeners = split_list(v),
                "HERALD_ADVERTISE_KAFKA_ADDR" => cfg.kafka.advertised_listeners = split_list(v),
                "HERALD_TOPIC_PREFIX" => cfg.topic_prefix = v.clone(),
                "HERALD_SUPERUSERS" => cfg.security.superusers = split_list(v),
                "HERALD_TRUST_UNAUTHENTICATED" => {
                    cfg.security.trust_unauthenticated = parse_env(k, v)?
                }
                "HERALD_TLS_CERT" => cfg.tls.cert = Some(PathBuf::from(v)),
                "HERALD_TLS_KEY" => cfg.tls.key = Some(PathBuf::from(v)),
                "HERALD_TLS_CLIENT_CA" => cfg.tls.client_ca = Some(PathBuf::from(v)),
                "HERALD_TLS_CLIENT_AUTH" => {
                    cfg.tls.client_auth = match v.as_str() {
                        "none" => herald_auth::tls::ClientAuth::None,
                        "requested" => herald_auth::tls::ClientAuth::Requested,
                        "required" => herald_auth::tls::ClientAuth::Required,
                        other => bail!(
                            "HERALD_TLS_CLIENT_AUTH must be none, requested or required, not {other:?}"
                        ),
                    }
                }
                "HERALD_HTTP_TLS" => cfg.http.tls = parse_env(k, v)?,
                "HERALD_ADMIN_API_KEY" => {
                    cfg.admin_api_key = Some(v.clone()).filter(|v| !v.is_empty())
                }
                "HERALD_JWT_SECRET" => cfg.jwt_secret = Some(v.clone()).filter(|v| !v.is_empty()),
                "HERALD_FSYNC" => cfg.log.fsync = v.clone(),
                "HERALD_FSYNC_INTERVAL_MS" => cfg.log.fsync_interval_ms = parse_env(k, v)?,
                "HERALD_DEFAULT_PARTITIONS" => cfg.topics.default_partitions = parse_env(k, v)?,
                "HERALD_AUTO_CREATE_TOPICS" => cfg.topics.auto_create = parse_env(k, v)?,
                "HERALD_STRICT_ENVELOPES" => cfg.topics.strict_envelopes = parse_env(k, v)?,
                "HERALD_GROUP_INITIAL_REBALANCE_DELAY_MS" => {
                    cfg.groups.initial_rebalance_delay_ms = parse_env(k, v)?
                }
                "HERALD_IDEMPOTENCY_WINDOW_SECS" => {
                    cfg.topics.idempotency_window_secs = parse_env(k, v)?
                }
                "HERALD_RATE_LIMIT_WINDOW" => {
                    cfg.realtime.rate_limits.window_secs = parse_env(k, v)?
                }
                "HERALD_RATE_LIMIT_MAX_REQUESTS" => {
                    cfg.realtime.rate_limits.max_requests = parse_env(k, v)?
                }
                "HERALD_ENABLE_RATE_LIMIT" => cfg.realtime.rate_limits.enabled = parse_env(k, v)?,
                other if OTHER_ENV_VARS.contains(&other) => {}
                other => tracing::warn!(
                    variable = other,
                    "unknown HERALD_ environment variable ignored"
                ),
            }
        }
        if let Some(d) = &args.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(a) = &args.http_addr {
            cfg.http.addr = a.clone();
        }
        if let Some(k) = &args.kafka_addr {
            cfg.kafka.listeners = split_list(k);
        }
        if !args.kafka_listeners.is_empty() {
            cfg.kafka.listeners = args.kafka_listeners.clone();
        }
        if let Some(p) = &args.tls_cert {
            cfg.tls.cert = Some(p.clone());
        }
        if let Some(p) = &args.tls_key {
            cfg.tls.key = Some(p.clone());
        }
        if args.http_tls {
            cfg.http.tls = true;
        }
        if let Some(k) = &args.advertise_kafka_addr {
            cfg.kafka.advertised_listeners = split_list(k);
        }
        if let Some(p) = &args.topic_prefix {
            cfg.topic_prefix = p.clone();
        }
        if let Some(f) = &args.fsync {
            cfg.log.fsync = f.clone();
        }
        if let Some(n) = args.default_partitions {
            cfg.topics.default_partitions = n;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.http_addr()?;
        self.realtime.validate().map_err(anyhow::Error::msg)?;
        self.kafka_listeners()?;
        self.fsync_policy()?;
        herald_core::TopicGrammar::new(&self.topic_prefix)
            .map_err(|e| anyhow::anyhow!("topic_prefix: {e}"))?;
        if self.topics.default_retention_ms < -1 {
            bail!("topics.default_retention_ms must be -1 (forever) or a number of milliseconds");
        }
        if !(1..=10_000).contains(&self.topics.default_partitions) {
            bail!("topics.default_partitions must be between 1 and 10000");
        }
        if self.log.segment_bytes < 1024 * 1024 {
            bail!("log.segment_bytes must be at least 1 MiB");
        }
        if let Some(k) = &self.admin_api_key
            && k.len() < 16
        {
            bail!("admin_api_key must be at least 16 characters");
        }
        if self.tls.client_auth != herald_auth::tls::ClientAuth::None
            && self.tls.client_ca.is_none()
        {
            bail!("tls.client_auth needs tls.client_ca, the CA that signs client certificates");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!(
                "tls.cert and tls.key go together: give both, or neither for a development certificate"
            );
        }
        for s in &self.security.superusers {
            if s.strip_prefix("User:").is_none_or(|n| n.is_empty()) {
                bail!("security.superusers entry {s:?} must be a principal like User:admin");
            }
        }
        Ok(())
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "http.addr {:?} is not HOST:PORT (e.g. 127.0.0.1:8000)",
                self.http.addr
            )
        })
    }

    /// Kafka listeners as (name, bind address, advertised host, advertised port); an advertised
    /// port of 0 means "the port actually bound".
    pub fn kafka_listeners(&self) -> anyhow::Result<Vec<KafkaListener>> {
        let mut out = Vec::new();
        for spec in &self.kafka.listeners {
            let l = herald_kafka::parse_listener_spec(spec)
                .map_err(|e| anyhow::anyhow!("kafka listener: {e}"))?;
            if out.iter().any(|x: &KafkaListener| x.name == l.name) {
                bail!("kafka listener name {} is used twice", l.name);
            }
            out.push(KafkaListener {
                name: l.name,
                protocol: l.protocol,
                bind: l.addr,
                advertised: None,
            });
        }
        for spec in &self.kafka.advertised_listeners {
            let (name, addr) = herald_kafka::parse_listener(spec)
                .map_err(|e| anyhow::anyhow!("advertised kafka listener: {e}"))?;
            let Some(entry) = out.iter_mut().find(|l| l.name == name) else {
                bail!(
                    "advertised kafka listener {name} matches no listener (listeners: {})",
                    self.kafka.listeners.join(", ")
                );
            };
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    p.parse::<u16>()
                        .ok()
                        .map(|p| (h.trim_matches(['[', ']']).to_owned(), p))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!("advertised kafka listener {spec:?} needs HOST:PORT")
                })?;
            entry.advertised = Some((host, port));
        }
        Ok(out)
    }

    pub fn fsync_policy(&self) -> anyhow::Result<herald_log::FsyncPolicy> {
        match self.log.fsync.as_str() {
            "always" => Ok(herald_log::FsyncPolicy::Always),
            "interval" => Ok(herald_log::FsyncPolicy::Interval(Duration::from_millis(
                self.log.fsync_interval_ms.max(1),
            ))),
            other => bail!("log.fsync must be \"always\" or \"interval\", got {other:?}"),
        }
    }

    pub fn log_options(&self) -> anyhow::Result<herald_log::LogOptions> {
        let mut o = herald_log::LogOptions::new(self.data_dir.join("log"));
        o.fsync = self.fsync_policy()?;
        o.segment_bytes = self.log.segment_bytes;
        o.checkpoint_bytes = self.log.checkpoint_bytes;
        o.checkpoint_interval = Duration::from_secs(self.log.checkpoint_interval_secs.max(1));
        o.retention_check_interval =
            Duration::from_secs(self.log.retention_check_interval_secs.max(1));
        o.max_pending_bytes = self.log.max_pending_bytes;
        o.idempotency_window = Duration::from_secs(self.topics.idempotency_window_secs);
        o.default_retention_ms =
            (self.topics.default_retention_ms >= 0).then_some(self.topics.default_retention_ms);
        Ok(o)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "topic_prefix = \"fromfile\"\n[http]\naddr = \"127.0.0.1:1111\"\n[topics]\ndefault_partitions = 3\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            http_addr: Some("127.0.0.1:3333".into()),
            ..Default::default()
        };
        let cfg = Config::load(
            &args,
            &env(&[
                ("HERALD_HTTP_ADDR", "127.0.0.1:2222"),
                ("HERALD_TOPIC_PREFIX", "fromenv"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.http.addr, "127.0.0.1:3333", "flag beats env and file");
        assert_eq!(cfg.topic_prefix, "fromenv", "env beats file");
        assert_eq!(cfg.topics.default_partitions, 3, "file beats default");
        assert_eq!(cfg.log.fsync, "always", "default");
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "[log]\nfsinc = \"always\"\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("fsinc"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let args = ServeArgs {
            fsync: Some("sometimes".into()),
            ..Default::default()
        };
        assert!(
            Config::load(&args, &[])
                .unwrap_err()
                .to_string()
                .contains("log.fsync")
        );
        let err = Config::load(
            &ServeArgs::default(),
            &env(&[("HERALD_DEFAULT_PARTITIONS", "many")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("HERALD_DEFAULT_PARTITIONS"));
    }
}
