//! `herald-broker` is Herald's service layer: the one place where an event becomes a record in
//! a topic, whichever interface it arrived on.
//!
//! It owns the publish pipeline (envelope validation → topic from the grammar → auto-creation →
//! partition choice → idempotent, group-committed append), topic administration with Herald's
//! naming rules, reads with long-poll wake-ups, and the publish metrics. Interfaces (HTTP, Kafka,
//! WebSocket) translate their protocol onto this API and never touch storage directly.
//!
//! Storage is behind [`storage::Storage`]: the embedded log ([`storage::EmbeddedStorage`]) is
//! the first backend; a cluster backend (Redpanda/Kafka) implements the same trait. This crate
//! is the only one that depends on `herald-log`.
//!
//! What it is not: it speaks no wire protocol and performs no authentication.

mod error;
pub mod groups;
mod metrics_labels;
mod notify;
pub mod offsets;
mod partitioner;
pub mod records;
pub mod security;
pub mod storage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::{
    Envelope, TopicGlob, TopicGrammar, TopicKind, UnknownFields, check_value_against_tenant_topic,
    check_value_against_topic, parse_envelope,
};
use records::Record;
use serde::Serialize;
use storage::{
    AppendOutcome, IdemKey, PartitionStats, ReadBatches, Storage, StorageFigures, TopicConfig,
    TopicInfo,
};
use time::OffsetDateTime;

pub use error::{BrokerError, Existing, Missing};
pub use metrics_labels::LabelLimiter;
pub use notify::{AppendTap, Notifier};
pub use partitioner::murmur2_partition;

/// Settings of the publish pipeline and topic administration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub topic_prefix: String,
    /// Partitions given to topics created implicitly or without a count.
    pub default_partitions: u32,
    /// Create tenant-grammar topics on first publish.
    pub auto_create_topics: bool,
    /// Refuse envelope fields the seed's schema does not name.
    pub strict_envelopes: bool,
    /// Most distinct tenants given their own label in per-tenant metrics; the rest share `_other`.
    pub max_tenant_labels: usize,
    /// `retention.ms` of topics that set none; -1 keeps records forever.
    pub default_retention_ms: i64,
    /// Consumer-group coordinator settings.
    pub groups: herald_core::group::GroupConfig,
    /// Principals allowed everything (`super.users`), e.g. `User:admin`.
    pub superusers: Vec<String>,
    /// Produce/fetch byte rates and HTTP request rates per principal.
    pub quotas: herald_auth::quota::QuotaConfig,
    /// The secret SCRAM fake salts for unknown users are derived from. It must outlive the
    /// process (the binary keeps it in the data directory): with a per-process secret a
    /// restart changes every unknown user's salt while real users' salts stay, revealing who
    /// exists. `None` uses a per-process secret (tests, tools).
    pub scram_unknown_user_secret: Option<Vec<u8>>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            topic_prefix: "smarteros".into(),
            default_partitions: 1,
            auto_create_topics: true,
            strict_envelopes: false,
            max_tenant_labels: 1000,
            default_retention_ms: 604_800_000,
            groups: herald_core::group::GroupConfig::default(),
            superusers: Vec::new(),
            quotas: herald_auth::quota::QuotaConfig::default(),
            scram_unknown_user_secret: None,
        }
    }
}

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub event_id: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: String,
    /// True when this `event_id` had been published before and this call stored nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A topic with its partitions' figures.
#[derive(Debug, Clone, Serialize)]
pub struct TopicDescription {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub partitions: Vec<PartitionDescription>,
    pub config: BTreeMap<String, String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
}

/// Where a produced batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatch {
    pub base_offset: u64,
    pub log_start: u64,
}

/// Records read from one partition.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Vec<Record>,
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// A record to append as-is (not an envelope): the CLI's `topic produce`, Kafka-style payloads.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: Option<i64>,
}

/// One topic configuration key as Kafka's DescribeConfigs shows it.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    pub name: &'static str,
    pub default: &'static str,
    /// Whether AlterConfigs may change it. Read-only keys describe how Herald behaves.
    pub settable: bool,
}

/// Every topic configuration key Herald reports, with its default. The settable ones are
/// enforced: `retention.ms` by the log's retention pass, `max.message.bytes` on produce,
/// `herald.envelope` by envelope validation.
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        default: "delete",
        settable: false,
    },
    ConfigKey {
        name: "compression.type",
        default: "producer",
        settable: false,
    },
    ConfigKey {
        name: "herald.envelope",
        default: "lenient",
        settable: true,
    },
    ConfigKey {
        name: "max.message.bytes",
        default: "1048588",
        settable: true,
    },
    ConfigKey {
        name: "message.timestamp.type",
        default: "CreateTime",
        settable: false,
    },
    ConfigKey {
        name: "min.insync.replicas",
        default: "1",
        settable: false,
    },
    ConfigKey {
        name: "retention.bytes",
        default: "-1",
        settable: false,
    },
    ConfigKey {
        name: "retention.ms",
        default: "604800000",
        settable: true,
    },
    ConfigKey {
        name: "segment.bytes",
        default: "134217728",
        settable: false,
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        default: "false",
        settable: false,
    },
];

/// A topic's effective configuration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    /// Set on the topic (rather than the default).
    pub is_set: bool,
    pub read_only: bool,
}

pub struct Broker {
    storage: Arc<dyn Storage>,
    grammar: TopicGrammar,
    cfg: BrokerConfig,
    notifier: Notifier,
    tenant_labels: LabelLimiter,
    groups: Arc<groups::Groups>,
    security: security::Security,
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn parse_ts_ms(ts: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Bounds the Kafka produce checks running on the blocking pool to one per core; `None` (checks
/// run inline) only if the core count is unknown.
static PRODUCE_CPU: std::sync::OnceLock<Option<Arc<tokio::sync::Semaphore>>> =
    std::sync::OnceLock::new();

/// Produce batches up to this size, uncompressed, are checked on the calling task.
const INLINE_CHECK_BYTES: usize = 64 * 1024;

fn produce_cpu_permits() -> Option<Arc<tokio::sync::Semaphore>> {
    std::thread::available_parallelism()
        .ok()
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n.get())))
}

/// The CPU-heavy part of [`Broker::produce_batch`]: validates the batch, decodes it when its
/// values must be checked (tenant topics, strict envelopes) and copies it into the buffer the
/// log keeps. Returns that buffer and the record count.
fn check_produced_batch(
    topic: &str,
    batch: Bytes,
    tenant_topic: Option<&herald_core::TenantTopic>,
    strict: bool,
) -> Result<(Vec<u8>, u64), BrokerError> {
    let header = herald_log::batch::validate(&batch)?;
    let count = u64::try_from(header.record_count).unwrap_or(0);
    if tenant_topic.is_some() || strict {
        // Decoding also proves a compressed batch is well-formed before it is stored.
        let records = herald_log::batch::decode_shared(batch.clone())?;
        for (i, r) in records.iter().enumerate() {
            let value = r.value.as_deref().unwrap_or_default();
            if let Some(t) = tenant_topic {
                check_value_against_tenant_topic(t, topic, value)
                    .map_err(|e| BrokerError::InvalidEvent(format!("record {i}: {e}")))?;
            }
            if strict {
                let v: serde_json::Value = serde_json::from_slice(value).map_err(|_| {
                    BrokerError::InvalidEvent(format!(
                        "record {i}: topic {topic} accepts only event envelopes (herald.envelope=strict)"
                    ))
                })?;
                parse_envelope(v, UnknownFields::Allow, OffsetDateTime::now_utc())
                    .map_err(|e| BrokerError::InvalidEvent(format!("record {i}: {e}")))?;
            }
        }
    }
    Ok((batch.to_vec(), count))
}

impl Broker {
    /// Opens the broker over a storage backend: loads committed consumer-group offsets, group
    /// metadata and the security state. Call [`Broker::start`] to run its timers.
    pub async fn new(storage: Arc<dyn Storage>, cfg: BrokerConfig) -> Result<Broker, BrokerError> {
        let grammar = TopicGrammar::new(&cfg.topic_prefix)
            .map_err(|e| BrokerError::Invalid(format!("topic_prefix: {e}")))?;
        let groups =
            Arc::new(groups::Groups::open(Arc::clone(&storage), cfg.groups.clone()).await?);
        let security = security::Security::open(Arc::clone(&storage), &cfg).await?;
        Ok(Broker {
            storage,
            grammar,
            tenant_labels: LabelLimiter::new(cfg.max_tenant_labels),
            cfg,
            notifier: Notifier::default(),
            groups,
            security,
        })
    }

    /// Opens the embedded log in `dir` with default options and the broker over it: for tests
    /// and tools that need a broker on a fresh data directory.
    pub async fn open_embedded(
        dir: impl Into<std::path::PathBuf>,
        cfg: BrokerConfig,
    ) -> Result<Broker, BrokerError> {
        let opts = herald_log::LogOptions::new(dir);
        let log = tokio::task::spawn_blocking(move || herald_log::Log::open(opts))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
        Broker::new(Arc::new(storage::EmbeddedStorage::new(log)), cfg).await
    }

    /// Starts background work (consumer-group session and rebalance timers).
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        self.security.start_audit();
        tokio::spawn(Arc::clone(&self.groups).run_timers())
    }

    /// The metric label for a tenant: its id for the first `max_tenant_labels` tenants seen,
    /// then a shared overflow label, so every interface keeps series bounded the same way.
    pub fn tenant_label(&self, tenant: &str) -> String {
        self.tenant_labels.label(tenant)
    }

    /// Users, ACLs, API keys, tenants and the authorizer.
    pub fn security(&self) -> &security::Security {
        &self.security
    }

    pub fn groups(&self) -> &groups::Groups {
        &self.groups
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    pub fn grammar(&self) -> &TopicGrammar {
        &self.grammar
    }

    /// The storage backend. Interfaces use the broker's methods; the gateway's channel streams
    /// (internal `_herald.ch.*` topics with their own fan-out) use this directly.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The backend's name for startup banners (`"embedded"`).
    pub fn storage_name(&self) -> &'static str {
        self.storage.name()
    }

    /// Whether storage accepts writes now (`/ready`).
    pub async fn probe(&self) -> Result<(), BrokerError> {
        self.storage.probe().await
    }

    /// Storage counts for `/metrics`.
    pub async fn storage_figures(&self) -> Result<StorageFigures, BrokerError> {
        self.storage.figures().await
    }

    /// The topic as storage knows it, or `None`.
    pub async fn topic(&self, name: &str) -> Result<Option<TopicInfo>, BrokerError> {
        self.storage.topic(name).await
    }

    /// The topic, or `NotFound(Missing::Topic)`.
    pub async fn require_topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        self.storage
            .topic(name)
            .await?
            .ok_or_else(|| BrokerError::NotFound(Missing::Topic(name.to_owned())))
    }

    /// A partition's log start, high watermark, size and largest timestamp.
    pub async fn partition_stats(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionStats, BrokerError> {
        self.storage.partition_stats(topic, partition).await
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Validates and publishes events. Events for the same topic are appended as one atomic
    /// batch, in the order given; the result list matches the input order. An `event_id` seen
    /// within the idempotency window returns its first result and stores nothing.
    pub async fn publish_events(
        &self,
        values: Vec<serde_json::Value>,
    ) -> Result<Vec<Published>, BrokerError> {
        self.publish_events_checked(values, &|_| true).await
    }

    /// [`Broker::publish_events`], asking `may_write` about every target topic before anything
    /// is appended: one refused topic refuses the whole request with `Forbidden`.
    pub async fn publish_events_checked(
        &self,
        values: Vec<serde_json::Value>,
        may_write: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<Published>, BrokerError> {
        let started = Instant::now();
        let now = OffsetDateTime::now_utc();
        let unknown = if self.cfg.strict_envelopes {
            UnknownFields::Reject
        } else {
            UnknownFields::Allow
        };
        let many = values.len() > 1;
        let mut envelopes = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            let env = parse_envelope(v, unknown, now).map_err(|e| {
                if many {
                    BrokerError::InvalidEvent(format!("event [{i}]: {e}"))
                } else {
                    BrokerError::InvalidEvent(e.to_string())
                }
            })?;
            envelopes.push(env);
        }
        // Group by topic, keeping each topic's events in input order.
        let mut by_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, env) in envelopes.iter().enumerate() {
            let topic = env.topic(&self.grammar);
            herald_core::validate_topic_name(&topic)
                .map_err(|e| BrokerError::InvalidEvent(e.to_string()))?;
            by_topic.entry(topic).or_default().push(i);
        }
        if let Some(topic) = by_topic.keys().find(|t| !may_write(t)) {
            return Err(BrokerError::Forbidden(format!(
                "not authorized to publish to topic {topic}"
            )));
        }
        let mut results: Vec<Option<Published>> = vec![None; envelopes.len()];
        for (topic, idxs) in by_topic {
            let info = self.ensure_topic(&topic).await?;
            let group: Vec<&Envelope> = idxs.iter().filter_map(|i| envelopes.get(*i)).collect();
            let published = self.append_envelopes(&topic, &info, &group).await?;
            for (i, p) in idxs.into_iter().zip(published) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(p);
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let stored = envelopes
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.as_ref().is_some_and(|r| !r.duplicate));
        for (env, _) in stored {
            let tenant = self.tenant_labels.label(env.tenant_id.as_str());
            metrics::counter!("events_published_total", "tenant" => tenant, "service" => env.service.clone())
                .increment(1);
        }
        metrics::histogram!("event_publish_duration_seconds", "interface" => "http")
            .record(elapsed);
        Ok(results.into_iter().flatten().collect())
    }

    async fn append_envelopes(
        &self,
        topic: &str,
        info: &TopicInfo,
        events: &[&Envelope],
    ) -> Result<Vec<Published>, BrokerError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let partition = murmur2_partition(first.event_id.as_bytes(), info.partitions);
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut out: Vec<Option<Published>> = vec![None; events.len()];
        // Retried when another publisher stored some of these event ids between our attempts:
        // each round removes the ones now known, so it ends within `events.len()` rounds.
        for _ in 0..=events.len() {
            if pending.is_empty() {
                break;
            }
            let records: Vec<Record> = pending
                .iter()
                .filter_map(|i| events.get(*i))
                .map(|e| Record {
                    offset: 0,
                    timestamp_ms: parse_ts_ms(&e.timestamp).unwrap_or_else(now_ms),
                    key: Some(Bytes::copy_from_slice(e.event_id.as_bytes())),
                    value: Some(Bytes::from(e.to_json_vec())),
                    headers: Vec::new(),
                })
                .collect();
            let keys: Vec<IdemKey> = pending
                .iter()
                .enumerate()
                .filter_map(|(ri, i)| {
                    let e = events.get(*i)?;
                    Some(IdemKey {
                        key: idem_key(e),
                        record_index: ri as u32,
                    })
                })
                .collect();
            let batch = records::build(&records)?;
            match self
                .storage
                .append_async(topic, partition, batch, keys)
                .await?
            {
                AppendOutcome::Appended { base_offset, .. } => {
                    for (ri, i) in pending.iter().enumerate() {
                        if let (Some(slot), Some(e)) = (out.get_mut(*i), events.get(*i)) {
                            *slot = Some(Published {
                                event_id: e.event_id.clone(),
                                topic: topic.to_owned(),
                                partition,
                                offset: base_offset + ri as u64,
                                timestamp: e.timestamp.clone(),
                                duplicate: false,
                            });
                        }
                    }
                    self.notifier.notify(topic, partition);
                    pending.clear();
                }
                AppendOutcome::DuplicateBatch { .. } => {
                    return Err(BrokerError::Internal(
                        "unexpected producer duplicate for an envelope batch".into(),
                    ));
                }
                AppendOutcome::Duplicate { hits } => {
                    let mut still = Vec::new();
                    for (i, hit) in pending.iter().zip(hits) {
                        match (hit, events.get(*i), out.get_mut(*i)) {
                            (Some(h), Some(e), Some(slot)) => {
                                *slot = Some(Published {
                                    event_id: e.event_id.clone(),
                                    topic: h.topic,
                                    partition: h.partition,
                                    offset: h.offset,
                                    timestamp: e.timestamp.clone(),
                                    duplicate: true,
                                });
                            }
                            _ => still.push(*i),
                        }
                    }
                    pending = still;
                }
            }
        }
        if !pending.is_empty() {
            return Err(BrokerError::Unavailable(
                "concurrent publishes of the same events did not settle; retry".into(),
            ));
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Appends records as they are, checking any envelope-shaped JSON value against the topic.
    pub async fn produce_records(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<RawRecord>,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        if records.is_empty() {
            return Err(BrokerError::Invalid("no records to produce".into()));
        }
        refuse_internal(topic)?;
        let info = self.ensure_topic(topic).await?;
        let strict = info
            .config
            .get("herald.envelope")
            .is_some_and(|v| v == "strict");
        for (i, r) in records.iter().enumerate() {
            let value = r.value.as_deref().unwrap_or_default();
            check_value_against_topic(&self.grammar, topic, value)
                .map_err(|e| BrokerError::InvalidEvent(format!("record [{i}]: {e}")))?;
            if strict {
                let v: serde_json::Value = serde_json::from_slice(value).map_err(|_| {
                    BrokerError::InvalidEvent(format!("record [{i}]: topic {topic} accepts only event envelopes (herald.envelope=strict); the value is not JSON"))
                })?;
                parse_envelope(v, UnknownFields::Allow, OffsetDateTime::now_utc())
                    .map_err(|e| BrokerError::InvalidEvent(format!("record [{i}]: {e}")))?;
            }
        }
        let partition = match partition {
            Some(p) if p >= info.partitions => {
                return Err(BrokerError::NotFound(Missing::Partition {
                    topic: topic.to_owned(),
                    partition: p,
                }));
            }
            Some(p) => p,
            None => records
                .first()
                .and_then(|r| r.key.as_deref())
                .map(|k| murmur2_partition(k, info.partitions))
                .unwrap_or_else(|| (now_ms().unsigned_abs() % u64::from(info.partitions)) as u32),
        };
        let now = now_ms();
        let recs: Vec<Record> = records
            .into_iter()
            .map(|r| Record {
                offset: 0,
                timestamp_ms: r.timestamp_ms.unwrap_or(now),
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
            .collect();
        let n = recs.len() as u64;
        let batch = records::build(&recs)?;
        match self
            .storage
            .append_async(topic, partition, batch, Vec::new())
            .await?
        {
            AppendOutcome::Appended { base_offset, .. } => {
                self.notifier.notify(topic, partition);
                Ok((0..n).map(|i| (partition, base_offset + i)).collect())
            }
            AppendOutcome::Duplicate { .. } | AppendOutcome::DuplicateBatch { .. } => Err(
                BrokerError::Internal("unexpected duplicate without keys".into()),
            ),
        }
    }

    /// Appends one client-encoded RecordBatch v2 (any compression) to a partition: the Kafka
    /// produce path. Values that look like envelopes must agree with the topic; a topic with
    /// `herald.envelope=strict` accepts only valid envelopes.
    ///
    /// `batch` is usually a slice of the request frame: it is copied once, into the buffer the
    /// log keeps. Decompressing (up to 64 MiB), checking every record's JSON and that copy run
    /// on the blocking pool, at most one per core at a time, never on an async worker.
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> Result<ProducedBatch, BrokerError> {
        let started = Instant::now();
        refuse_internal(topic)?;
        let info = self
            .storage
            .topic(topic)
            .await?
            .ok_or_else(|| BrokerError::NotFound(Missing::Topic(topic.to_owned())))?;
        if partition >= info.partitions {
            return Err(BrokerError::NotFound(Missing::Partition {
                topic: topic.to_owned(),
                partition,
            }));
        }
        let max_message: usize = info
            .config
            .get("max.message.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_048_588);
        if batch.len() > max_message {
            return Err(BrokerError::TooLarge(format!(
                "record batch of {} bytes exceeds max.message.bytes ({max_message}) of topic {topic}",
                batch.len()
            )));
        }
        let strict = info
            .config
            .get("herald.envelope")
            .is_some_and(|v| v == "strict");
        // Classified once per batch: the envelope check and the metric labels both need it.
        let tenant_topic = match self.grammar.classify(topic) {
            Ok(TopicKind::Tenant(t)) => Some(t),
            _ => None,
        };
        // Small uncompressed batches (the common 1 KiB record) are checked inline: the hop to the
        // blocking pool would cost more than the check. Compressed ones may inflate up to 64 MiB
        // and large ones parse many values, so they leave the async workers.
        let heavy = batch.len() > INLINE_CHECK_BYTES
            || herald_log::batch::BatchHeader::parse(&batch).map_or(true, |h| h.compression() != 0);
        let pool = if heavy {
            PRODUCE_CPU.get_or_init(produce_cpu_permits).as_ref()
        } else {
            None
        };
        let checked = {
            let tenant_topic = tenant_topic.clone();
            let topic = topic.to_owned();
            move || check_produced_batch(&topic, batch, tenant_topic.as_ref(), strict)
        };
        let (batch, count) = match pool {
            Some(permits) => {
                let _permit = Arc::clone(permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| BrokerError::Unavailable("the broker is shutting down".into()))?;
                tokio::task::spawn_blocking(checked)
                    .await
                    .map_err(|e| BrokerError::Internal(format!("produce check failed: {e}")))??
            }
            None => checked()?,
        };
        let base_offset = match self
            .storage
            .append_async(topic, partition, batch, Vec::new())
            .await?
        {
            AppendOutcome::Appended { base_offset, .. } => {
                self.notifier.notify(topic, partition);
                let (tenant, service) = match tenant_topic {
                    Some(t) => (self.tenant_labels.label(t.tenant.as_str()), t.service),
                    None => ("_none".to_owned(), "_none".to_owned()),
                };
                metrics::counter!("events_published_total", "tenant" => tenant, "service" => service).increment(count);
                metrics::histogram!("event_publish_duration_seconds", "interface" => "kafka")
                    .record(started.elapsed().as_secs_f64());
                base_offset
            }
            // A producer's retry of a batch already stored: acknowledge it where it landed.
            AppendOutcome::DuplicateBatch { base_offset, .. } => base_offset,
            AppendOutcome::Duplicate { .. } => {
                return Err(BrokerError::Internal(
                    "unexpected duplicate without keys".into(),
                ));
            }
        };
        let log_start = self
            .storage
            .partition_stats(topic, partition)
            .await
            .map(|s| s.log_start)
            .unwrap_or(0);
        Ok(ProducedBatch {
            base_offset,
            log_start,
        })
    }

    /// Whole stored batches from `offset` (Kafka fetch); blocking disk reads run off the async
    /// workers.
    pub async fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatches, BrokerError> {
        self.storage.read(topic, partition, offset, max_bytes).await
    }

    /// The first offset at or after `ts_ms` with its timestamp, or `None`.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts_ms: i64,
    ) -> Result<Option<(u64, i64)>, BrokerError> {
        self.storage
            .offset_for_timestamp(topic, partition, ts_ms)
            .await
    }

    /// Kafka DeleteRecords: records before `offset` become unreadable; returns the new log start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<u64, BrokerError> {
        self.storage
            .delete_records_before(topic, partition, offset)
            .await
    }

    /// Whether a missing topic may be created implicitly (on produce or metadata).
    pub fn may_auto_create(&self, topic: &str) -> bool {
        self.cfg.auto_create_topics
            && matches!(self.grammar.classify(topic), Ok(TopicKind::Tenant(_)))
    }

    /// The topic, created with defaults if auto-creation applies.
    pub async fn ensure_topic(&self, topic: &str) -> Result<TopicInfo, BrokerError> {
        if let Some(info) = self.storage.topic(topic).await? {
            return Ok(info);
        }
        let kind = self.classify(topic)?;
        if !self.cfg.auto_create_topics || !matches!(kind, TopicKind::Tenant(_)) {
            return Err(BrokerError::NotFound(Missing::Topic(topic.to_owned())));
        }
        match self.create_topic(topic, None, BTreeMap::new()).await {
            Ok(d) => Ok(TopicInfo {
                name: d.name,
                partitions: d.partitions.len() as u32,
                config: d.config,
                created_ms: 0,
            }),
            Err(BrokerError::Conflict(Existing::Topic(_))) => self
                .storage
                .topic(topic)
                .await?
                .ok_or_else(|| BrokerError::NotFound(Missing::Topic(topic.to_owned()))),
            Err(e) => Err(e),
        }
    }

    fn classify(&self, topic: &str) -> Result<TopicKind, BrokerError> {
        self.grammar
            .classify(topic)
            .map_err(|e| BrokerError::Invalid(e.to_string()))
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        config: BTreeMap<String, String>,
    ) -> Result<TopicDescription, BrokerError> {
        self.classify(name)?;
        if name.starts_with(herald_core::topic::INTERNAL_TOPIC_PREFIX) {
            return Err(BrokerError::Invalid(format!(
                "topic names starting with {} are reserved for Herald",
                herald_core::topic::INTERNAL_TOPIC_PREFIX
            )));
        }
        validate_topic_config(&config)?;
        let partitions = partitions.unwrap_or(self.cfg.default_partitions);
        self.storage.create_topic(name, partitions, config).await?;
        tracing::info!(topic = %name, partitions, "topic created");
        self.describe_topic(name).await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        refuse_internal(name)?;
        self.storage.delete_topic(name).await?;
        self.notifier.notify_topic_deleted(name);
        // Kafka forgets committed offsets of a deleted topic.
        if let Err(e) = self.groups.forget_topic(name).await {
            tracing::warn!(topic = %name, error = %e, "removing committed offsets of a deleted topic failed");
        }
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// Replaces the given keys of a topic's configuration (other keys are kept).
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<TopicDescription, BrokerError> {
        validate_topic_config(&set)?;
        let info = self
            .storage
            .topic(name)
            .await?
            .ok_or_else(|| BrokerError::NotFound(Missing::Topic(name.to_owned())))?;
        let mut config: TopicConfig = info.config;
        for k in delete {
            config.remove(&k);
        }
        config.extend(set);
        self.storage.set_topic_config(name, config).await?;
        self.describe_topic(name).await
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        self.storage.create_partitions(name, total).await?;
        tracing::info!(topic = %name, partitions = total, "partitions added");
        Ok(())
    }

    /// Replaces a topic's whole configuration (Kafka AlterConfigs semantics).
    pub async fn replace_topic_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        validate_topic_config(&config)?;
        if self.storage.topic(name).await?.is_none() {
            return Err(BrokerError::NotFound(Missing::Topic(name.to_owned())));
        }
        self.storage.set_topic_config(name, config).await?;
        Ok(())
    }

    /// Checks a configuration without applying it.
    pub fn validate_config(&self, config: &BTreeMap<String, String>) -> Result<(), BrokerError> {
        validate_topic_config(config)
    }

    /// Topics, optionally only one tenant's and/or those a glob selects.
    pub async fn list_topics(
        &self,
        tenant: Option<&str>,
        selector: Option<&TopicGlob>,
    ) -> Result<Vec<TopicInfo>, BrokerError> {
        let prefix = match (tenant, selector) {
            (Some(t), _) => format!("{}.{t}.", self.grammar.prefix()),
            (None, Some(g)) => g.literal_prefix().to_owned(),
            (None, None) => String::new(),
        };
        Ok(self
            .storage
            .list_topics(&prefix)
            .await?
            .into_iter()
            .filter(|t| {
                !t.name
                    .starts_with(herald_core::topic::CHANNEL_STREAM_PREFIX)
            })
            .filter(|t| selector.is_none_or(|g| g.matches(&t.name)))
            .collect())
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        let info = self
            .storage
            .topic(name)
            .await?
            .ok_or_else(|| BrokerError::NotFound(Missing::Topic(name.to_owned())))?;
        let mut partitions = Vec::with_capacity(info.partitions as usize);
        for p in 0..info.partitions {
            let s = self.storage.partition_stats(name, p).await?;
            partitions.push(PartitionDescription {
                partition: p,
                log_start_offset: s.log_start,
                high_watermark: s.high_watermark,
                size_bytes: s.size_bytes,
            });
        }
        let (tenant, service, event_type) = match self.grammar.classify(name) {
            Ok(TopicKind::Tenant(t)) => (
                Some(t.tenant.into_string()),
                Some(t.service),
                Some(t.event_type),
            ),
            _ => (None, None, None),
        };
        let config: BTreeMap<String, String> =
            config_entries(&info.config, self.cfg.default_retention_ms)
                .into_iter()
                .map(|e| (e.name, e.value))
                .collect();
        Ok(TopicDescription {
            name: info.name,
            tenant,
            service,
            event_type,
            partitions,
            config,
            created_at: rfc3339_ms(info.created_ms),
        })
    }

    /// Reads up to `limit` records from `offset`. With `wait`, an empty read waits for an
    /// append to the partition for at most that long (long poll).
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<ReadResult, BrokerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let waiter = self.notifier.subscribe(topic, partition);
            let read = self
                .storage
                .read(topic, partition, offset, max_bytes)
                .await?;
            let mut records = Vec::new();
            for b in &read.batches {
                if records.len() >= limit {
                    break;
                }
                for r in records::decode(b)? {
                    if r.offset >= offset && records.len() < limit {
                        records.push(r);
                    }
                }
            }
            if !records.is_empty() || wait.is_zero() || tokio::time::Instant::now() >= deadline {
                let next_offset = records
                    .last()
                    .map(|r| r.offset + 1)
                    .unwrap_or(offset.max(read.log_start));
                return Ok(ReadResult {
                    records,
                    next_offset,
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start,
                });
            }
            if read.high_watermark > offset {
                // Batches exist past `offset` but held only skipped records: move on.
                continue;
            }
            waiter.wait_until(deadline).await;
        }
    }

    /// Bytes stored per tenant (bounded label set) for the `herald_log_bytes` gauge.
    pub async fn bytes_per_tenant(&self) -> Result<BTreeMap<String, u64>, BrokerError> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        let prefix = format!("{}.", self.grammar.prefix());
        for t in self.storage.list_topics(&prefix).await? {
            let Some(tenant) = self.grammar.tenant_of(&t.name) else {
                continue;
            };
            let label = self.tenant_labels.label(tenant.as_str());
            let mut bytes = 0u64;
            for p in 0..t.partitions {
                if let Ok(s) = self.storage.partition_stats(&t.name, p).await {
                    bytes += s.size_bytes;
                }
            }
            *out.entry(label).or_default() += bytes;
        }
        Ok(out)
    }
}

/// Herald's own topics (`_herald.*`) are written only by Herald.
fn refuse_internal(topic: &str) -> Result<(), BrokerError> {
    if topic.starts_with(herald_core::topic::INTERNAL_TOPIC_PREFIX) {
        return Err(BrokerError::Invalid(format!(
            "{topic} is an internal topic; only Herald writes or deletes it"
        )));
    }
    Ok(())
}

fn idem_key(e: &Envelope) -> Vec<u8> {
    // Scoped by tenant so that one tenant's event ids can never collide with, or reveal,
    // another's.
    let mut k = Vec::with_capacity(4 + e.tenant_id.as_str().len() + e.event_id.len());
    k.extend_from_slice(b"ev:");
    k.extend_from_slice(e.tenant_id.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(e.event_id.as_bytes());
    k
}

fn validate_topic_config(config: &BTreeMap<String, String>) -> Result<(), BrokerError> {
    for (k, v) in config {
        let Some(key) = TOPIC_CONFIGS.iter().find(|c| c.name == k) else {
            let known: Vec<&str> = TOPIC_CONFIGS
                .iter()
                .filter(|c| c.settable)
                .map(|c| c.name)
                .collect();
            return Err(BrokerError::Invalid(format!(
                "unknown topic config {k:?}; settable keys: {}",
                known.join(", ")
            )));
        };
        if !key.settable {
            if v == key.default {
                continue;
            }
            return Err(BrokerError::Invalid(format!(
                "topic config {k} is fixed at {:?} in Herald and cannot be set to {v:?}",
                key.default
            )));
        }
        match k.as_str() {
            "retention.ms" => {
                v.parse::<i64>().ok().filter(|v| *v >= -1).ok_or_else(|| {
                    BrokerError::Invalid(format!(
                        "retention.ms must be -1 (forever) or a number of milliseconds, got {v:?}"
                    ))
                })?;
            }
            "max.message.bytes" => {
                v.parse::<u32>().ok().filter(|v| *v >= 1024).ok_or_else(|| {
                    BrokerError::Invalid(format!("max.message.bytes must be a number of bytes of at least 1024, got {v:?}"))
                })?;
            }
            "herald.envelope" if v != "strict" && v != "lenient" => {
                return Err(BrokerError::Invalid(format!(
                    "herald.envelope must be \"strict\" or \"lenient\", got {v:?}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The effective configuration of a topic: every key Herald reports, set or default.
/// `default_retention_ms` is the server's default for topics without their own.
pub fn config_entries(
    set: &BTreeMap<String, String>,
    default_retention_ms: i64,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|k| {
            let value = set.get(k.name);
            let default = if k.name == "retention.ms" {
                default_retention_ms.to_string()
            } else {
                k.default.to_owned()
            };
            ConfigEntry {
                name: k.name.to_owned(),
                value: value.cloned().unwrap_or(default),
                is_set: value.is_some(),
                read_only: !k.settable,
            }
        })
        .collect()
}

pub type SharedBroker = Arc<Broker>;
