//! `herald serve`: wires the log, the broker and the listeners together and shuts them down in
//! order.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use herald_broker::{Broker, BrokerConfig};
use herald_http::{HttpLimits, HttpState};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ServeArgs};

fn init_tracing() {
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    let mut s = String::with_capacity(prefix.len() + 48);
    s.push_str(prefix);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Reads a secret stored in the data directory, or generates and stores it (mode 0600).
/// Returns the secret and whether it was generated now.
fn stored_secret(dir: &Path, file: &str, prefix: &str) -> anyhow::Result<(String, bool)> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = random_secret(prefix);
    let tmp = dir.join(format!(".{file}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    Ok((secret, true))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = Config::load(&args, &env)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;

    let (admin_key, key_generated) = match &cfg.admin_api_key {
        Some(k) => (k.clone(), false),
        None => stored_secret(&cfg.data_dir, "admin-api-key", "hk_")?,
    };
    let (jwt_secret, jwt_generated) = match &cfg.jwt_secret {
        Some(s) => (s.clone(), false),
        None => stored_secret(&cfg.data_dir, "jwt-secret", "")?,
    };

    let prometheus = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .context("prometheus buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe_metrics();

    let log_opts = cfg.log_options()?;
    let log_dir = log_opts.dir.clone();
    let log = tokio::task::spawn_blocking(move || herald_log::Log::open(log_opts))
        .await?
        .map_err(|e| match e {
            herald_log::LogError::Index(msg)
                if msg.contains("already open") || msg.contains("lock") =>
            {
                anyhow::anyhow!(
                    "the data directory {} is in use by another Herald process ({msg})",
                    log_dir.display()
                )
            }
            other => anyhow::anyhow!("cannot open the log in {}: {other}", log_dir.display()),
        })?;

    let broker = Arc::new(
        Broker::new(
            Arc::new(herald_broker::storage::EmbeddedStorage::new(log.clone())),
            BrokerConfig {
                topic_prefix: cfg.topic_prefix.clone(),
                default_partitions: cfg.topics.default_partitions,
                auto_create_topics: cfg.topics.auto_create,
                strict_envelopes: cfg.topics.strict_envelopes,
                max_tenant_labels: cfg.metrics.max_tenant_labels,
                default_retention_ms: cfg.topics.default_retention_ms,
                groups: cfg.groups.coordinator(),
                superusers: cfg.security.superusers.clone(),
                quotas: cfg.quotas.clone(),
                scram_unknown_user_secret: Some(
                    stored_secret(&cfg.data_dir, "scram-secret", "")?
                        .0
                        .into_bytes(),
                ),
            },
        )
        .await?,
    );

    let _group_timers = broker.start();
    let listeners = cfg.kafka_listeners()?;
    let (tls, tls_line) = tls_setup(&cfg, &listeners)?;
    let (acceptor, kafka_acceptor) = match tls {
        Some((http, kafka)) => (
            Some(tokio_rustls::TlsAcceptor::from(http)),
            Some(tokio_rustls::TlsAcceptor::from(kafka)),
        ),
        None => (None, None),
    };
    let nofile = raise_descriptor_limit();
    let http_max_connections = http_connection_bound(cfg.http.max_connections, nofile);
    if http_max_connections < cfg.http.max_connections {
        tracing::info!(
            configured = cfg.http.max_connections,
            effective = http_max_connections,
            descriptor_limit = nofile.unwrap_or(0),
            "http.max_connections lowered to leave descriptors for Kafka and the log; \
             raise the descriptor limit (ulimit -n, LimitNOFILE=) to allow more"
        );
    }
    let http_serve_cfg = herald_http::ServeConfig {
        header_read_timeout: std::time::Duration::from_secs(
            cfg.http.header_read_timeout_secs.max(1),
        ),
        idle_timeout: std::time::Duration::from_secs(cfg.http.idle_timeout_secs.max(1)),
        max_connections: http_max_connections,
        max_body_bytes: cfg.http.max_body_bytes,
        // One drain bound for every listener.
        drain_timeout: std::time::Duration::from_secs(cfg.kafka.drain_timeout_secs),
        ..herald_http::ServeConfig::default()
    };
    let http_addr = cfg.http_addr()?;
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
    let http_local = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gateway = herald_realtime::Gateway::new(
        Arc::clone(&broker),
        cfg.realtime.clone(),
        Some(jwt_secret),
        stored_secret(&cfg.data_dir, "realtime-epoch-seed", "")?.0,
        admin_key.clone(),
        stop_rx.clone(),
    )
    .map_err(|e| anyhow::anyhow!("realtime: {e}"))?;
    let _routes = gateway
        .start_routes()
        .map_err(|e| anyhow::anyhow!("realtime routes: {e}"))?;
    let router = herald_http::router(
        HttpState {
            broker: Arc::clone(&broker),
            admin_api_key: admin_key.clone(),
            render_metrics: Box::new(move || prometheus.render()),
            limits: HttpLimits {
                max_body_bytes: cfg.http.max_body_bytes,
                max_events_per_request: cfg.http.max_events_per_request,
                ..HttpLimits::default()
            },
        },
        gateway.router(),
    );

    let kafka_ctx = Arc::new(herald_kafka::KafkaContext::new(
        Arc::clone(&broker),
        herald_kafka::KafkaConfig {
            node_id: cfg.kafka.node_id,
            cluster_id: cfg.kafka.cluster_id.clone(),
            max_request_bytes: cfg.kafka.max_request_bytes,
            max_connections: cfg.kafka.max_connections,
            idle_timeout: std::time::Duration::from_secs(cfg.kafka.idle_timeout_secs.max(1)),
            max_unauthenticated_request_bytes: cfg.kafka.max_unauthenticated_request_bytes,
            queued_max_request_bytes: cfg.kafka.queued_max_request_bytes,
            request_read_timeout: std::time::Duration::from_secs(
                cfg.kafka.request_read_timeout_secs.max(1),
            ),
            drain_timeout: std::time::Duration::from_secs(cfg.kafka.drain_timeout_secs),
            trust_unauthenticated: cfg.security.trust_unauthenticated,
            ..herald_kafka::KafkaConfig::default()
        },
    ));
    let mut kafka_lines = Vec::new();
    let mut kafka_tasks = Vec::new();
    for crate::config::KafkaListener {
        name,
        protocol,
        bind: addr,
        advertised,
    } in listeners
    {
        let bind = herald_kafka::bind_addr(&addr)
            .map_err(|e| anyhow::anyhow!("kafka listener {name}: {e}"))?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen for Kafka ({name}) on {bind}"))?;
        let local = listener.local_addr()?;
        let (host, port) = match advertised {
            Some((h, 0)) => (h, local.port()),
            Some((h, p)) => (h, p),
            None => (local.ip().to_string(), local.port()),
        };
        kafka_lines.push(if name == protocol.as_str() {
            format!("  Kafka {name:<9} {local}  (advertised as {host}:{port})")
        } else {
            format!(
                "  Kafka {name:<9} {local}  ({}, advertised as {host}:{port})",
                protocol.as_str()
            )
        });
        tracing::info!(listener = %name, addr = %local, advertised = %format!("{host}:{port}"), "kafka listener started");
        kafka_tasks.push(tokio::spawn(herald_kafka::serve(
            listener,
            herald_kafka::Advertised {
                name,
                host,
                port,
                protocol,
            },
            kafka_acceptor.clone().filter(|_| protocol.uses_tls()),
            Arc::clone(&kafka_ctx),
            stop_rx.clone(),
        )));
    }

    tracing::info!(
        http = %http_local,
        data_dir = %cfg.data_dir.display(),
        storage = broker.storage_name(),
        fsync = %cfg.log.fsync,
        topics = log.topic_count(),
        "herald started"
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Herald {} is running", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "  data directory  {}", cfg.data_dir.display());
    if key_generated {
        let _ = writeln!(out, "  admin API key   {admin_key}");
        let _ = writeln!(
            out,
            "                  generated now and stored in {}; shown only this once",
            cfg.data_dir.join("admin-api-key").display()
        );
    }
    if jwt_generated {
        let _ = writeln!(
            out,
            "  JWT secret      generated now and stored in {}",
            cfg.data_dir.join("jwt-secret").display()
        );
    }
    if let Some(line) = &tls_line {
        let _ = writeln!(out, "{line}");
    }
    // The listener lines come last, HTTP last of all: tools that start Herald wait for it.
    for line in &kafka_lines {
        let _ = writeln!(out, "{line}");
    }
    let (ws, http) = if cfg.http.tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let _ = writeln!(
        out,
        "  WebSocket       {ws}://{http_local}/connection/websocket  (Centrifugo protocol)"
    );
    let _ = writeln!(
        out,
        "  HTTP API        {http}://{http_local}  (events, topics, /api, /metrics, /health)"
    );
    let _ = out.flush();
    drop(out);

    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx.clone();
    let http_tls = acceptor.clone().filter(|_| cfg.http.tls);
    let served = herald_http::serve(listener, http_tls, router, http_serve_cfg, async move {
        let _ = http_stop.changed().await;
    })
    .await;
    // Each Kafka listener returns once its connections have answered the request they were
    // reading or handling (or its drain timeout passed), so those are durable before the log
    // closes.
    for t in kafka_tasks {
        let _ = t.await;
    }
    tracing::info!("shutting down: flushing the log");
    let closed = tokio::task::spawn_blocking(move || log.close()).await?;
    served.context("HTTP server failed")?;
    closed.context("closing the log failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard limit (every connection costs one,
/// and distributions default the soft limit to 1,024) and returns the limit now in force;
/// `None` when unlimited.
fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, soft = ?limit.current, hard = ?limit.maximum,
                "cannot raise the open-descriptor limit to its hard limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Descriptors never handed to HTTP connections, so that a flood of them leaves the Kafka
/// listener, the log's files and the listeners room to work: a quarter of the limit, at
/// least this many.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The HTTP connection bound in force: the configured one, lowered to fit the descriptor
/// limit less the reserve.
fn http_connection_bound(configured: usize, descriptor_limit: Option<u64>) -> usize {
    let Some(limit) = descriptor_limit else {
        return configured;
    };
    let reserve = (limit / 4).max(RESERVED_DESCRIPTORS);
    let available = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    configured.min(available).max(1)
}

/// Server configurations for HTTPS and for Kafka's TLS listeners.
type TlsConfigs = (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>);

/// The TLS configurations (HTTP, then Kafka with client certificates as configured), if any
/// listener needs one: the operator's certificate, or a development certificate kept in
/// `DATA_DIR/tls` (generated on first need). Also the banner line saying which.
fn tls_setup(
    cfg: &Config,
    listeners: &[crate::config::KafkaListener],
) -> anyhow::Result<(Option<TlsConfigs>, Option<String>)> {
    use herald_auth::tls;
    let needed = cfg.http.tls || listeners.iter().any(|l| l.protocol.uses_tls());
    if !needed {
        return Ok((None, None));
    }
    let (cert, key, line) = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => (
            cert.clone(),
            key.clone(),
            format!("  TLS             {}", cert.display()),
        ),
        _ => {
            let dir = cfg.data_dir.join("tls");
            let dev = tls::DevCert::in_dir(&dir);
            let generated = !dev.exists();
            if generated {
                tls::generate_dev(&dir, &tls::dev_hosts(&[])).map_err(anyhow::Error::msg)?;
            }
            let line = format!(
                "  TLS CA          {}  (development certificate{}; trust this CA in clients)",
                dev.ca.display(),
                if generated { " generated now" } else { "" }
            );
            (dev.cert, dev.key, line)
        }
    };
    let http = tls::server_config(&cert, &key).map_err(anyhow::Error::msg)?;
    let kafka = tls::server_config_with_clients(
        &cert,
        &key,
        cfg.tls.client_ca.as_deref(),
        cfg.tls.client_auth,
    )
    .map_err(anyhow::Error::msg)?;
    Ok((Some((http, kafka)), Some(line)))
}

fn describe_metrics() {
    metrics::describe_counter!(
        "events_published_total",
        "Events published, by tenant and service"
    );
    metrics::describe_histogram!(
        "event_publish_duration_seconds",
        metrics::Unit::Seconds,
        "Time from receiving a publish request to its durable acknowledgement"
    );
    metrics::describe_counter!(
        "auth_failures_total",
        "Requests refused for missing or wrong credentials"
    );
    metrics::describe_gauge!(
        "herald_log_bytes",
        metrics::Unit::Bytes,
        "Bytes stored per tenant"
    );
    metrics::describe_gauge!("herald_topics", "Topics in the log");
    metrics::describe_gauge!(
        "active_connections",
        "Open real-time connections (WebSocket and SSE)"
    );
    metrics::describe_gauge!(
        "realtime_subscriptions",
        "Channel subscriptions of open connections"
    );
    metrics::describe_counter!(
        "realtime_messages_sent_total",
        "Protocol messages written to real-time clients"
    );
    metrics::describe_counter!(
        "realtime_slow_disconnects_total",
        "Clients disconnected (3008) because their outbound queue overflowed"
    );
    metrics::describe_counter!(
        "realtime_rate_limited_total",
        "Client commands refused by the rate limits"
    );
    metrics::describe_gauge!("herald_journal_segments", "Journal segment files on disk");
    metrics::describe_counter!(
        "kafka_requests_rejected_total",
        "Kafka requests that closed their connection (malformed, too large, unknown API or version, too slow), by reason; their warnings are rate-limited"
    );
}

#[cfg(test)]
mod tests {
    use super::http_connection_bound;

    #[test]
    fn the_http_bound_leaves_a_reserve_of_descriptors() {
        // A quarter of the limit stays out of reach, at least 128.
        assert_eq!(http_connection_bound(100_000, Some(1024)), 768);
        assert_eq!(http_connection_bound(100_000, Some(256)), 128);
        assert_eq!(http_connection_bound(500, Some(1024)), 500);
        assert_eq!(http_connection_bound(100_000, Some(1_048_576)), 100_000);
        assert_eq!(http_connection_bound(100_000, None), 100_000);
        assert_eq!(http_connection_bound(100_000, Some(10)), 1);
    }
}
