//! `herald-kafka` is Herald's Kafka wire-protocol listener: framing, version negotiation and
//! handlers that map Kafka requests onto `herald-broker`, so kafka-python, librdkafka, kcat and
//! kafkajs work against Herald unmodified.
//!
//! Message types come from the `kafka-protocol` crate. Requests on one connection are answered
//! in order, one at a time, as Kafka brokers do. What it is not: it has no storage of its own
//! and no HTTP; it speaks for a single node (Herald is never a home-made cluster).

mod admin;
mod authz;
mod conn;
mod errors;
mod groups;
mod handlers;
mod limits;
mod prescan;
pub mod sasl;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use herald_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use prescan::check_request;
pub use versions::SUPPORTED;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub node_id: i32,
    pub cluster_id: String,
    /// Largest Produce request accepted (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Largest request of any other kind: metadata and admin requests are small, and a small
    /// cap bounds what a decoder may be asked to allocate.
    pub max_small_request_bytes: usize,
    /// Largest request accepted before a SASL listener's connection has authenticated (Kafka's
    /// `sasl.server.max.receive.size`); a larger frame closes the connection unread.
    pub max_unauthenticated_request_bytes: usize,
    /// Bytes of requests all connections together may hold while reading and handling them
    /// (Kafka's `queued.max.request.bytes`). A connection whose next frame does not fit waits
    /// for room, at most `request_read_timeout`.
    pub queued_max_request_bytes: usize,
    /// Longest a request may take to arrive once its first byte has (including any wait for
    /// request memory), so a slow sender cannot hold its reservation for long.
    pub request_read_timeout: Duration,
    /// On shutdown, how long connections get to finish the request they are reading or
    /// handling and write its response.
    pub drain_timeout: Duration,
    pub max_connections: usize,
    /// Connections idle this long are closed (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// Longest a Fetch may wait for `min_bytes`.
    pub max_fetch_wait: Duration,
    /// Clients of listeners without authentication (PLAINTEXT, SSL without a client
    /// certificate) may do everything; when false they are `User:ANONYMOUS`, held to ACLs.
    pub trust_unauthenticated: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            node_id: 0,
            cluster_id: "herald".into(),
            max_request_bytes: 64 * 1024 * 1024,
            max_small_request_bytes: 1024 * 1024,
            max_unauthenticated_request_bytes: 512 * 1024,
            queued_max_request_bytes: 256 * 1024 * 1024,
            request_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(540),
            max_fetch_wait: Duration::from_secs(30),
            trust_unauthenticated: true,
        }
    }
}

/// The address clients are told to connect to for one listener.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: sasl::SecurityProtocol,
}

/// Shared by every connection of every listener.
pub struct KafkaContext {
    pub broker: Arc<Broker>,
    pub cfg: KafkaConfig,
    producer_ids: AtomicI64,
    request_memory: limits::RequestMemory,
    warnings: limits::WarnLimiter,
}

/// Warnings about refused requests and connections written per window; the rest are counted.
const WARNINGS_PER_WINDOW: u32 = 20;
const WARNING_WINDOW: Duration = Duration::from_secs(60);

impl KafkaContext {
    pub fn new(broker: Arc<Broker>, cfg: KafkaConfig) -> KafkaContext {
        // Producer ids must never repeat, also across restarts: start from the clock in
        // milliseconds times 4096, so a restart lands beyond every id handed out before unless
        // more than 4096 ids per millisecond were allocated.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        // At least one largest request must fit, or it could never be served.
        let request_memory = limits::RequestMemory::new(
            cfg.queued_max_request_bytes
                .max(cfg.max_request_bytes)
                .max(cfg.max_small_request_bytes),
        );
        KafkaContext {
            broker,
            cfg,
            producer_ids: AtomicI64::new(now_ms.saturating_mul(4096)),
            request_memory,
            warnings: limits::WarnLimiter::new(WARNINGS_PER_WINDOW, WARNING_WINDOW),
        }
    }

    pub fn next_producer_id(&self) -> i64 {
        self.producer_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true. Each connection is served by its own task;
/// past `max_connections` new connections are closed at once. With `tls`, each connection's
/// handshake runs in its own task, so a slow handshake never holds up the accept loop.
///
/// On shutdown it stops accepting, then returns once every connection has finished the request
/// it was reading or handling and closed, or after `drain_timeout`, whichever comes first.
pub async fn serve(
    listener: TcpListener,
    advertised: Advertised,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<KafkaContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_connections = u32::try_from(ctx.cfg.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    let advertised = Arc::new(advertised);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "kafka accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!("kafka_connections_refused_total").increment(1);
            if let Some(suppressed) = ctx.warnings.admit(std::time::Instant::now()) {
                tracing::warn!(%peer, limit = ctx.cfg.max_connections, suppressed, "kafka connection limit reached; closing");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let advertised = Arc::clone(&advertised);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            metrics::gauge!("kafka_connections").increment(1.0);
            let mut conn = conn::Connection::new(ctx, advertised, peer, shutdown.clone());
            match tls {
                None => conn.run(stream, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            conn.tls_user = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(herald_auth::tls::principal_of);
                            conn.run_io(tls_stream, shutdown).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("tls_handshake_failures_total", "interface" => "kafka")
                                .increment(1);
                            tracing::debug!(%peer, error = %e, "kafka TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("tls_handshake_failures_total", "interface" => "kafka")
                                .increment(1);
                            tracing::debug!(%peer, "kafka TLS handshake timed out");
                        }
                    }
                }
            }
            metrics::gauge!("kafka_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds one permit until it has closed: when all are back, all are done.
    let open = max_connections as usize - permits.available_permits();
    tracing::info!(listener = %advertised.name, open, "kafka listener draining");
    match tokio::time::timeout(ctx.cfg.drain_timeout, permits.acquire_many(max_connections)).await {
        Ok(_) => tracing::info!(listener = %advertised.name, "kafka listener drained"),
        Err(_) => tracing::warn!(
            listener = %advertised.name,
            open = max_connections as usize - permits.available_permits(),
            timeout = ?ctx.cfg.drain_timeout,
            "kafka connections still open after the drain timeout; closing them"
        ),
    }
}

/// A declared listener: name, security protocol and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub protocol: sasl::SecurityProtocol,
    pub addr: String,
}

/// Parses `NAME=PROTOCOL://HOST:PORT` (Kafka's `listeners` with the protocol map folded in),
/// `NAME://HOST:PORT` (the protocol is NAME when NAME is a protocol name, else PLAINTEXT) or
/// `HOST:PORT` (named and spoken PLAINTEXT).
pub fn parse_listener_spec(spec: &str) -> Result<ListenerSpec, String> {
    let (head, addr) = match spec.split_once("://") {
        Some((h, a)) => (h, a),
        None => ("PLAINTEXT", spec),
    };
    let (name, protocol) = match head.split_once('=') {
        Some((name, proto)) => (
            name,
            sasl::SecurityProtocol::parse(proto).ok_or_else(|| {
                format!(
                    "listener {spec:?}: unknown security protocol {proto:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                )
            })?,
        ),
        None => (head, sasl::SecurityProtocol::for_listener(head)),
    };
    let (name, addr) = parse_listener(&format!("{name}://{addr}"))?;
    Ok(ListenerSpec {
        name,
        protocol,
        addr,
    })
}

/// Parses `NAME://HOST:PORT` (or `HOST:PORT`, named `PLAINTEXT`).
pub fn parse_listener(spec: &str) -> Result<(String, String), String> {
    let (name, addr) = match spec.split_once("://") {
        Some((n, a)) => (n.to_owned(), a.to_owned()),
        None => ("PLAINTEXT".to_owned(), spec.to_owned()),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "listener name in {spec:?} must be letters, digits, _ or -"
        ));
    }
    if addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(format!("listener {spec:?} needs HOST:PORT"));
    }
    Ok((name, addr))
}

/// Resolves a bind address string.
pub fn bind_addr(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}
