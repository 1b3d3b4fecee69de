//! Quotas per principal: Kafka produce and fetch byte rates (answered with `throttle_time_ms`
//! and a muted connection, as Kafka does) and HTTP request rates (answered 429 with
//! `Retry-After`). Limits come from defaults, overridden per tenant, overridden per user.
//!
//! Each (principal, kind) has a token bucket holding at most one second of its rate. Kafka-style
//! quotas [`Quotas::record`] usage after the fact and may drive the bucket negative; the debt is
//! the throttle time. Request quotas [`Quotas::try_acquire`] before serving and refuse when the
//! bucket is empty. The table of buckets is bounded.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::authz::Subject;

/// Most buckets tracked; past this, idle buckets are dropped (a dropped bucket is full anyway).
const MAX_BUCKETS: usize = 100_000;
/// Longest throttle asked of a Kafka client (Kafka caps it at its quota window).
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// Rates for one principal; `None` is unlimited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaLimits {
    /// Bytes per second a principal may produce (Kafka `producer_byte_rate`).
    pub producer_byte_rate: Option<u64>,
    /// Bytes per second a principal may fetch (Kafka `consumer_byte_rate`).
    pub consumer_byte_rate: Option<u64>,
    /// HTTP API requests per second.
    pub http_request_rate: Option<u64>,
}

impl QuotaLimits {
    fn get(&self, kind: QuotaKind) -> Option<u64> {
        match kind {
            QuotaKind::Produce => self.producer_byte_rate,
            QuotaKind::Fetch => self.consumer_byte_rate,
            QuotaKind::HttpRequests => self.http_request_rate,
        }
    }
}

/// `[quotas]`: defaults, then per-tenant and per-user overrides (field by field).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub defaults: QuotaLimits,
    /// By tenant id: applies to the tenant's principal, keys and tokens.
    pub tenants: BTreeMap<String, QuotaLimits>,
    /// By user name (`service-api-gateway`), the most specific.
    pub users: BTreeMap<String, QuotaLimits>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    Produce,
    Fetch,
    HttpRequests,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct Quotas {
    cfg: QuotaConfig,
    any: bool,
    buckets: Mutex<HashMap<(String, QuotaKind), Bucket>>,
}

impl Quotas {
    pub fn new(cfg: QuotaConfig) -> Quotas {
        Quotas {
            any: cfg != QuotaConfig::default(),
            cfg,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any quota is configured at all (callers skip the bookkeeping otherwise).
    pub fn any(&self) -> bool {
        self.any
    }

    /// The rate that applies to `subject` for `kind`.
    pub fn limit(&self, subject: &Subject, kind: QuotaKind) -> Option<u64> {
        let user = subject.principal.strip_prefix("User:").unwrap_or_default();
        self.cfg
            .users
            .get(user)
            .and_then(|l| l.get(kind))
            .or_else(|| {
                subject
                    .tenant
                    .as_ref()
                    .and_then(|t| self.cfg.tenants.get(t))
                    .and_then(|l| l.get(kind))
            })
            .or_else(|| self.cfg.defaults.get(kind))
            .filter(|r| *r > 0)
    }

    fn with_bucket<T>(
        &self,
        subject: &Subject,
        kind: QuotaKind,
        rate: u64,
        now: Instant,
        f: impl FnOnce(&mut Bucket, f64) -> T,
    ) -> T {
        let rate = rate as f64;
        let mut buckets = self.buckets.lock();
        let key = (subject.principal.clone(), kind);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_BUCKETS {
            let horizon = Duration::from_secs(1);
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < horizon);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        f(b, rate)
    }

    /// Records `amount` used; returns how long the client should be throttled (zero if within
    /// its quota or unlimited).
    pub fn record(
        &self,
        subject: &Subject,
        kind: QuotaKind,
        amount: u64,
        now: Instant,
    ) -> Duration {
        let Some(rate) = self.limit(subject, kind) else {
            return Duration::ZERO;
        };
        self.with_bucket(subject, kind, rate, now, |b, rate| {
            b.tokens -= amount as f64;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((-b.tokens / rate).min(MAX_THROTTLE.as_secs_f64()))
            }
        })
    }

    /// Takes `amount` if the bucket holds it; otherwise says how long until it will.
    pub fn try_acquire(
        &self,
        subject: &Subject,
        kind: QuotaKind,
        amount: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let Some(rate) = self.limit(subject, kind) else {
            return Ok(());
        };
        self.with_bucket(subject, kind, rate, now, |b, rate| {
            let amount = amount as f64;
            if b.tokens >= amount {
                b.tokens -= amount;
                Ok(())
            } else {
                Err(Duration::from_secs_f64(
                    ((amount - b.tokens) / rate).min(MAX_THROTTLE.as_secs_f64()),
                ))
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> QuotaConfig {
        QuotaConfig {
            defaults: QuotaLimits {
                producer_byte_rate: Some(1000),
                consumer_byte_rate: None,
                http_request_rate: Some(2),
            },
            tenants: BTreeMap::from([(
                "A".to_owned(),
                QuotaLimits {
                    producer_byte_rate: Some(10_000),
                    ..QuotaLimits::default()
                },
            )]),
            users: BTreeMap::from([(
                "tenant-A".to_owned(),
                QuotaLimits {
                    http_request_rate: Some(5),
                    ..QuotaLimits::default()
                },
            )]),
        }
    }

    #[test]
    fn overrides_go_user_then_tenant_then_default() {
        let q = Quotas::new(cfg());
        let a = Subject::user("tenant-A", "h".into());
        let b = Subject::user("tenant-B", "h".into());
        assert_eq!(q.limit(&a, QuotaKind::Produce), Some(10_000));
        assert_eq!(q.limit(&a, QuotaKind::HttpRequests), Some(5));
        assert_eq!(q.limit(&b, QuotaKind::Produce), Some(1000));
        assert_eq!(q.limit(&b, QuotaKind::Fetch), None);
        assert!(q.any());
        assert!(!Quotas::new(QuotaConfig::default()).any());
    }

    #[test]
    fn usage_past_the_rate_is_throttled_by_the_debt() {
        let q = Quotas::new(cfg());
        let b = Subject::user("tenant-B", "h".into());
        let t0 = Instant::now();
        assert_eq!(q.record(&b, QuotaKind::Produce, 1000, t0), Duration::ZERO);
        // 500 bytes over a 1000 B/s rate: half a second.
        let d = q.record(&b, QuotaKind::Produce, 500, t0);
        assert!((d.as_secs_f64() - 0.5).abs() < 1e-6, "{d:?}");
        // After the debt is paid the bucket refills up to one second's worth.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            q.record(&b, QuotaKind::Produce, 1000, later),
            Duration::ZERO
        );
        assert_eq!(q.record(&b, QuotaKind::Fetch, u64::MAX, t0), Duration::ZERO);
        // Debt is capped.
        assert_eq!(
            q.record(&b, QuotaKind::Produce, u64::MAX, later),
            MAX_THROTTLE
        );
    }

    #[test]
    fn request_quotas_refuse_with_a_retry_time() {
        let q = Quotas::new(cfg());
        let b = Subject::user("tenant-B", "h".into());
        let t0 = Instant::now();
        assert!(q.try_acquire(&b, QuotaKind::HttpRequests, 1, t0).is_ok());
        assert!(q.try_acquire(&b, QuotaKind::HttpRequests, 1, t0).is_ok());
        let wait = q
            .try_acquire(&b, QuotaKind::HttpRequests, 1, t0)
            .unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(
            q.try_acquire(
                &b,
                QuotaKind::HttpRequests,
                1,
                t0 + Duration::from_millis(500)
            )
            .is_ok()
        );
    }
}
