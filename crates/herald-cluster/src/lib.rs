//! `herald-cluster` is Herald's client for an existing Kafka or Redpanda cluster (librdkafka
//! through the `rdkafka` crate): the storage operations a cluster backend of the broker needs,
//! as a typed async API — topics, idempotent produce, reads with long-poll, watermarks and
//! offsets by time, record deletion, and consumer-group inspection and offset resets.
//!
//! Every operation is bounded: a timeout on each request, a bounded producer queue (a full
//! queue is an `Overloaded` error, never a wait), a bounded number of concurrent reads over a
//! small pool of reused consumers, and a bounded topic-metadata cache.
//!
//! What it is not: it does not implement the broker's storage trait itself (that is a thin
//! adapter over this API), speaks no wire protocol of its own and keeps no data on local disk.
//! It depends on `herald-core`, `herald-auth` and `herald-broker` only — never on `herald-log`.
//! ACL and SCRAM administration, which the `rdkafka` crate does not wrap, are in [`wire`]: a
//! small admin client over the Kafka protocol itself.

mod context;
mod error;
mod groups;
mod produce;
mod read;
mod topics;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use tokio::sync::Semaphore;

use context::ClusterContext;
pub use error::{ClusterError, ConnectError};
pub use groups::{GroupMember, GroupOffset, GroupState, GroupSummary, OffsetReset};
pub use produce::{Header, ProduceRecord};
pub use read::{ReadResult, StoredRecord, Watermarks};
pub use topics::{TopicConfigEntry, TopicDescription};

/// How to reach the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `host:port[,host:port…]`, librdkafka's `bootstrap.servers`.
    pub bootstrap: String,
    /// Client properties passed to librdkafka as they are: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, …
    pub properties: BTreeMap<String, String>,
    /// Timeouts and bounds.
    pub limits: ClusterLimits,
}

impl ClusterConfig {
    pub fn new(bootstrap: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            bootstrap: bootstrap.into(),
            properties: BTreeMap::new(),
            limits: ClusterLimits::default(),
        }
    }

    /// Adds a librdkafka client property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> ClusterConfig {
        self.properties.insert(key.into(), value.into());
        self
    }

    fn principal(&self) -> String {
        match self.properties.get("sasl.username") {
            Some(user) => format!("User:{user}"),
            None => "Herald's principal".to_owned(),
        }
    }
}

/// Secrets never reach logs: property values whose names mark them as secret are redacted.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("password") || k.contains("secret") || k.ends_with(".pem");
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("ClusterConfig")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &props)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Timeouts and bounds of the client.
#[derive(Debug, Clone)]
pub struct ClusterLimits {
    /// How long `connect` waits for a broker to answer.
    pub connect_timeout: Duration,
    /// Timeout of each metadata, admin and offset request.
    pub request_timeout: Duration,
    /// How long a produced record may take to be acknowledged (librdkafka's
    /// `delivery.timeout.ms`, retries included).
    pub delivery_timeout: Duration,
    /// Records the producer may hold unacknowledged (`queue.buffering.max.messages`).
    pub producer_queue_messages: u32,
    /// KiB the producer may hold unacknowledged (`queue.buffering.max.kbytes`).
    pub producer_queue_kbytes: u32,
    /// Records one `produce` call may carry.
    pub max_records_per_produce: usize,
    /// Reads served at once; also the size of the consumer pool.
    pub read_concurrency: usize,
    /// Blocking metadata, offset and group requests served at once.
    pub admin_concurrency: usize,
    /// Longest long-poll wait a read may ask for.
    pub max_read_wait: Duration,
    /// Most records and bytes one read returns.
    pub max_read_records: usize,
    pub max_read_bytes: usize,
    /// KiB each pooled consumer may prefetch (`queued.max.messages.kbytes`).
    pub reader_prefetch_kbytes: u32,
    /// How long listed topic metadata is trusted.
    pub metadata_ttl: Duration,
    /// Most topics the metadata cache holds.
    pub metadata_max_topics: usize,
}

impl Default for ClusterLimits {
    fn default() -> Self {
        ClusterLimits {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            producer_queue_messages: 100_000,
            producer_queue_kbytes: 64 * 1024,
            max_records_per_produce: 10_000,
            read_concurrency: 8,
            admin_concurrency: 4,
            max_read_wait: Duration::from_secs(30),
            max_read_records: 10_000,
            max_read_bytes: 16 * 1024 * 1024,
            reader_prefetch_kbytes: 4 * 1024,
            metadata_ttl: Duration::from_secs(30),
            metadata_max_topics: 10_000,
        }
    }
}

/// A connected cluster. Cheap to clone; all clones share the producer, the consumer pool and
/// the metadata cache.
#[derive(Clone)]
pub struct KafkaCluster {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClusterConfig,
    /// Metadata, watermarks, offsets by time and group listings. A consumer handle, so that
    /// asking for a topic's metadata never auto-creates it (`allow.auto.create.topics=false`).
    meta: BaseConsumer<ClusterContext>,
    admin: AdminClient<ClusterContext>,
    producer: FutureProducer<ClusterContext>,
    readers: Mutex<Vec<BaseConsumer<ClusterContext>>>,
    read_permits: Arc<Semaphore>,
    admin_permits: Arc<Semaphore>,
    topics: Mutex<topics::TopicCache>,
    cluster_id: Option<String>,
    broker_count: usize,
}

impl KafkaCluster {
    /// Connects and checks that the cluster answers, accepts the credentials and lets Herald's
    /// principal describe the cluster's configuration and create topics.
    pub async fn connect(cfg: ClusterConfig) -> Result<KafkaCluster, ConnectError> {
        if cfg.bootstrap.trim().is_empty() {
            return Err(ConnectError::Config(
                "no bootstrap servers given (host:port[,host:port…])".to_owned(),
            ));
        }
        let base = base_config(&cfg);
        let meta: BaseConsumer<ClusterContext> = consumer_config(&base, &cfg.limits, None)
            .create_with_context(ClusterContext::default())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let timeout = cfg.limits.connect_timeout;
        let bootstrap = cfg.bootstrap.clone();
        let (meta, probe) = tokio::task::spawn_blocking(move || {
            let probe = probe_metadata(&meta, timeout);
            (meta, probe)
        })
        .await
        .map_err(|e| ConnectError::Client(format!("the connection check did not finish: {e}")))?;
        let (broker_count, first_broker, cluster_id) = match probe {
            Ok(found) => found,
            Err(last) => return Err(connect_failure(&cfg, last)),
        };

        let admin: AdminClient<ClusterContext> = base
            .clone()
            .create_with_context(ClusterContext::default())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        check_permissions(&cfg, &admin, first_broker).await?;

        let producer: FutureProducer<ClusterContext> = producer_config(&base, &cfg.limits)
            .create_with_context(ClusterContext::default())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        tracing::info!(
            bootstrap = %bootstrap,
            cluster_id = cluster_id.as_deref().unwrap_or("unknown"),
            brokers = broker_count,
            "connected to the Kafka cluster"
        );
        let limits = cfg.limits.clone();
        let inner = Arc::new(Inner {
            meta,
            admin,
            producer,
            readers: Mutex::new(Vec::new()),
            read_permits: Arc::new(Semaphore::new(limits.read_concurrency.max(1))),
            admin_permits: Arc::new(Semaphore::new(limits.admin_concurrency.max(1))),
            topics: Mutex::new(topics::TopicCache::default()),
            cluster_id,
            broker_count,
            cfg,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("herald-cluster-events".to_owned())
            .spawn(move || drain_loop(&weak))
            .map_err(|e| ConnectError::Client(format!("cannot start the event thread: {e}")))?;
        Ok(KafkaCluster { inner })
    }

    /// The cluster id the brokers report (Kafka's `cluster.id`), if they report one.
    pub fn cluster_id(&self) -> Option<&str> {
        self.inner.cluster_id.as_deref()
    }

    /// How many brokers the cluster had when connecting.
    pub fn broker_count(&self) -> usize {
        self.inner.broker_count
    }

    /// The bootstrap servers, for a startup banner.
    pub fn bootstrap(&self) -> &str {
        &self.inner.cfg.bootstrap
    }

    /// Runs a blocking librdkafka call on the blocking pool, at most `admin_concurrency` at once.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, ClusterError> + Send + 'static,
    {
        let permit = self
            .inner
            .admin_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClusterError::Unavailable("the cluster client is closed".to_owned()))?;
        let inner = Arc::clone(&self.inner);
        // The permit goes with the task: a caller that stops waiting does not free a slot
        // while the blocking call still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&inner)
        })
        .await
        .map_err(|e| ClusterError::Internal(format!("cluster request task failed: {e}")))?
    }

    fn admin_options(&self) -> AdminOptions {
        let t = self.inner.cfg.limits.request_timeout;
        AdminOptions::new()
            .request_timeout(Some(t))
            .operation_timeout(Some(t))
    }
}

/// Properties every client shares: the user's, then the bootstrap servers.
fn base_config(cfg: &ClusterConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &cfg.bootstrap);
    c.set(
        "socket.connection.setup.timeout.ms",
        millis(cfg.limits.connect_timeout).to_string(),
    );
    c
}

/// The group id of pooled readers. librdkafka assigns partitions only to a consumer with a
/// group id; the readers never subscribe or commit, so they never join this group.
pub(crate) const READER_GROUP: &str = "herald-cluster-reader";

fn consumer_config(
    base: &ClientConfig,
    limits: &ClusterLimits,
    group: Option<&str>,
) -> ClientConfig {
    let mut c = base.clone();
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false")
        .set("enable.partition.eof", "false")
        // A read outside the retained offsets is an error to report, not a silent jump.
        .set("auto.offset.reset", "error")
        // Long-polls wake within this of a record arriving.
        .set("fetch.wait.max.ms", "100")
        .set(
            "queued.max.messages.kbytes",
            limits.reader_prefetch_kbytes.max(1).to_string(),
        );
    if let Some(g) = group {
        c.set("group.id", g);
    }
    c
}

fn producer_config(base: &ClientConfig, limits: &ClusterLimits) -> ClientConfig {
    let mut c = base.clone();
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "queue.buffering.max.messages",
            limits.producer_queue_messages.max(1).to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            limits.producer_queue_kbytes.max(1).to_string(),
        )
        .set(
            "delivery.timeout.ms",
            millis(limits.delivery_timeout).to_string(),
        )
        .set("linger.ms", "5");
    c
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

type Probe = (usize, i32, Option<String>);

/// Longest single metadata request while connecting; between requests the client's events are
/// read, so an authentication or TLS failure ends the wait early.
const PROBE_STEP: Duration = Duration::from_millis(500);

/// Fetches the cluster's metadata; on failure, the most telling error librdkafka reported.
fn probe_metadata(
    meta: &BaseConsumer<ClusterContext>,
    timeout: Duration,
) -> Result<Probe, (String, Option<context::LastError>)> {
    let deadline = std::time::Instant::now() + timeout;
    meta.context().clear();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let step = left.min(PROBE_STEP).max(Duration::from_millis(1));
        let detail = match meta.fetch_metadata(None, step) {
            Ok(md) => match md.brokers().first().map(|b| b.id()) {
                Some(id) => {
                    let cluster_id = meta.client().fetch_cluster_id(left.max(PROBE_STEP));
                    return Ok((md.brokers().len(), id, cluster_id));
                }
                None => "the cluster reported no brokers".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        drain_events(meta);
        let last = meta.context().last_error();
        let decisive = last.as_ref().is_some_and(|l| {
            matches!(
                l.code,
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        });
        if decisive || std::time::Instant::now() >= deadline {
            return Err((detail, last));
        }
    }
}

/// How often idle consumers' event queues are emptied.
const DRAIN_INTERVAL: Duration = Duration::from_millis(500);

/// Empties the event queues of the metadata consumer and the idle pooled readers until the
/// cluster client is dropped. Nobody else polls them between requests, and librdkafka queues
/// an error event on every failed reconnect: unread, they would grow without bound while a
/// broker is down.
fn drain_loop(inner: &std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        drain_events(&inner.meta);
        for reader in inner.readers.lock().iter() {
            drain_events(reader);
        }
    }
}

/// Takes the events waiting in a consumer's queue (errors librdkafka reports between
/// requests), so that they neither pile up nor surface in a later read; errors are remembered
/// in the client's context.
pub(crate) fn drain_events(consumer: &BaseConsumer<ClusterContext>) {
    // Bounded: a queue refilled as fast as it is drained must not hold the caller.
    for _ in 0..1024 {
        match consumer.poll(Duration::ZERO) {
            None => return,
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                if let Some(code) = e.rdkafka_error_code() {
                    consumer.context().note(code, &e.to_string());
                }
            }
        }
    }
}

fn connect_failure(
    cfg: &ClusterConfig,
    (detail, last): (String, Option<context::LastError>),
) -> ConnectError {
    let bootstrap = cfg.bootstrap.clone();
    match last {
        Some(l)
            if matches!(
                l.code,
                RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed
            ) =>
        {
            ConnectError::AuthenticationFailed {
                bootstrap,
                mechanism: cfg
                    .properties
                    .get("sasl.mechanism")
                    .or_else(|| cfg.properties.get("sasl.mechanisms"))
                    .cloned()
                    .unwrap_or_else(|| "GSSAPI".to_owned()),
                user: cfg
                    .properties
                    .get("sasl.username")
                    .cloned()
                    .unwrap_or_default(),
                detail: l.reason,
            }
        }
        Some(l) if l.code == RDKafkaErrorCode::SSL => ConnectError::Tls {
            bootstrap,
            detail: l.reason,
        },
        Some(l) => ConnectError::Unreachable {
            bootstrap,
            timeout_secs: cfg.limits.connect_timeout.as_secs(),
            detail: l.reason,
        },
        None => ConnectError::Unreachable {
            bootstrap,
            timeout_secs: cfg.limits.connect_timeout.as_secs(),
            detail,
        },
    }
}

/// Name of the topic a validate-only CreateTopics asks about; nothing is created.
const PERMISSION_PROBE_TOPIC: &str = "herald-connect-permission-check";

/// Asks for what cluster mode needs and a principal may lack: describing the brokers'
/// configuration (DescribeConfigs on the cluster) and creating topics (a validate-only
/// CreateTopics, which creates nothing).
async fn check_permissions(
    cfg: &ClusterConfig,
    admin: &AdminClient<ClusterContext>,
    broker: i32,
) -> Result<(), ConnectError> {
    let t = cfg.limits.request_timeout;
    let denied = |operation, acl_operation| ConnectError::PermissionDenied {
        bootstrap: cfg.bootstrap.clone(),
        principal: cfg.principal(),
        operation,
        acl_operation,
    };
    let opts = AdminOptions::new()
        .request_timeout(Some(t))
        .operation_timeout(Some(t));
    let described = admin
        .describe_configs([&ResourceSpecifier::Broker(broker)], &opts)
        .await;
    let code = match described {
        Ok(results) => results.into_iter().find_map(Result::err),
        Err(e) => e.rdkafka_error_code(),
    };
    if code == Some(RDKafkaErrorCode::ClusterAuthorizationFailed) {
        return Err(denied("DESCRIBE_CONFIGS on the cluster", "DescribeConfigs"));
    }
    let probe = NewTopic::new(PERMISSION_PROBE_TOPIC, 1, TopicReplication::Fixed(-1));
    let created = admin
        .create_topics(
            [&probe],
            &AdminOptions::new()
                .request_timeout(Some(t))
                .operation_timeout(Some(t))
                .validate_only(true),
        )
        .await;
    let code = match created {
        Ok(results) => results.into_iter().find_map(|r| r.err().map(|(_, c)| c)),
        Err(e) => e.rdkafka_error_code(),
    };
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    ) {
        return Err(denied("CREATE for topics", "Create"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ClusterConfig;

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = ClusterConfig::new("k1:9092")
            .property("sasl.username", "herald")
            .property("sasl.password", "hunter2-secret")
            .property("ssl.key.password", "another-secret");
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("herald") && shown.contains("k1:9092"),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("another-secret"),
            "{shown}"
        );
    }
}
