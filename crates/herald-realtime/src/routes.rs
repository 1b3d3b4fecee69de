//! Routes carry records of log topics into channels:
//! `from = "smarteros.{tenant}.shopify.order_*"`, `to = "tenant:{tenant}:orders"`.
//!
//! Each route is an in-process consumer whose position per partition is committed in the
//! consumer-offsets store under the group `_herald.route.<name>`, so a restart resumes where it
//! stopped (its lag shows in `kafka_consumer_lag` like any group). Publications carry an
//! idempotency key per source record, so records re-read after a crash are not published twice
//! within the idempotency window: delivery into the channel is in order per partition and, in
//! practice, exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use herald_broker::offsets::Committed;

use crate::Gateway;
use crate::api::glob_match;
use crate::config::RouteConfig;

/// One `from` segment: a literal/glob, or the `{tenant}` capture.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Tenant,
    Glob(String),
    /// `>` as the last segment: one or more remaining segments.
    Rest,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    from: Vec<Segment>,
    to: String,
}

impl Route {
    pub fn parse(cfg: &RouteConfig) -> Result<Route, String> {
        let bad = |m: &str| Err(format!("route {:?} -> {:?}: {m}", cfg.from, cfg.to));
        if cfg.from.is_empty() || cfg.to.is_empty() {
            return bad("from and to must not be empty");
        }
        let parts: Vec<&str> = cfg.from.split('.').collect();
        let mut from = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            from.push(match *p {
                "{tenant}" => Segment::Tenant,
                ">" if i + 1 == parts.len() => Segment::Rest,
                s if s.is_empty() || s.contains('{') || s.contains('}') || s.contains('>') => {
                    return bad("segments are names, globs, {tenant} or a final >");
                }
                s => Segment::Glob(s.to_owned()),
            });
        }
        let captures = from.iter().filter(|s| **s == Segment::Tenant).count();
        if captures > 1 {
            return bad("{tenant} may appear once in from");
        }
        if cfg.to.contains("{tenant}") && captures == 0 {
            return bad("to uses {tenant} but from does not capture it");
        }
        let name = cfg.name.clone().unwrap_or_else(|| {
            cfg.from
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        });
        Ok(Route {
            name,
            from,
            to: cfg.to.clone(),
        })
    }

    /// The channel a topic's records go to, or `None` if the route does not select it.
    pub fn channel_for(&self, topic: &str) -> Option<String> {
        let parts: Vec<&str> = topic.split('.').collect();
        let mut tenant = None;
        let mut i = 0;
        for seg in &self.from {
            match seg {
                Segment::Rest => return (i < parts.len()).then(|| self.fill(tenant)),
                Segment::Tenant => {
                    let t = parts.get(i)?;
                    if !crate::authz::valid_tenant(t) {
                        return None;
                    }
                    tenant = Some(*t);
                }
                Segment::Glob(g) => {
                    if !glob_match(g, parts.get(i)?) {
                        return None;
                    }
                }
            }
            i += 1;
        }
        (i == parts.len()).then(|| self.fill(tenant))
    }

    fn fill(&self, tenant: Option<&str>) -> String {
        match tenant {
            Some(t) => self.to.replace("{tenant}", t),
            None => self.to.clone(),
        }
    }

    pub fn group(&self) -> String {
        format!("_herald.route.{}", self.name)
    }
}

/// Starts the route worker if any route is configured.
pub fn start(gw: Arc<Gateway>) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let routes: Vec<Route> = gw
        .cfg
        .routes
        .iter()
        .map(Route::parse)
        .collect::<Result<_, _>>()?;
    if routes.is_empty() {
        return Ok(None);
    }
    let tap = gw.broker.notifier().tap();
    Ok(Some(tokio::spawn(async move {
        let mut worker = Worker {
            gw,
            routes,
            cursors: HashMap::new(),
        };
        worker.catch_up().await;
        let mut shutdown = worker.gw.shutdown.clone();
        loop {
            tokio::select! {
                _ = tap.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            for (topic, partition) in tap.take() {
                worker.pump(&topic, partition, false).await;
            }
        }
    })))
}

struct Worker {
    gw: Arc<Gateway>,
    routes: Vec<Route>,
    /// Next offset to route, per (route index, topic, partition).
    cursors: HashMap<(usize, String, u32), u64>,
}

impl Worker {
    /// At start: every existing partition a route selects resumes from its committed position;
    /// partitions never routed before start at their end (new records only).
    async fn catch_up(&mut self) {
        let topics = match self.gw.broker.list_topics(None, None).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "routes cannot list topics; they start with appends");
                Vec::new()
            }
        };
        for t in topics {
            if t.name
                .starts_with(herald_core::topic::INTERNAL_TOPIC_PREFIX)
            {
                continue;
            }
            for p in 0..t.partitions {
                self.pump(&t.name, p, true).await;
            }
        }
    }

    async fn pump(&mut self, topic: &str, partition: u32, at_start: bool) {
        if topic.starts_with(herald_core::topic::INTERNAL_TOPIC_PREFIX) {
            return;
        }
        for ri in 0..self.routes.len() {
            let Some(route) = self.routes.get(ri).cloned() else {
                continue;
            };
            let Some(channel) = route.channel_for(topic) else {
                continue;
            };
            if let Err(e) = self
                .pump_route(ri, &route, topic, partition, &channel, at_start)
                .await
            {
                tracing::warn!(route = %route.name, %topic, partition, error = %e, "route delivery failed; will retry on the next append");
            }
        }
    }

    async fn pump_route(
        &mut self,
        ri: usize,
        route: &Route,
        topic: &str,
        partition: u32,
        channel: &str,
        at_start: bool,
    ) -> Result<(), String> {
        let gw = Arc::clone(&self.gw);
        let group = route.group();
        let key = (ri, topic.to_owned(), partition);
        let stats = gw
            .broker
            .partition_stats(topic, partition)
            .await
            .map_err(|e| e.to_string())?;
        let mut cursor = match self.cursors.get(&key) {
            Some(c) => *c,
            None => {
                let committed = gw
                    .broker
                    .groups()
                    .fetch(&group, Some(&[(topic.to_owned(), partition)]))
                    .into_iter()
                    .next()
                    .and_then(|(_, _, c)| c)
                    .and_then(|c| u64::try_from(c.offset).ok());
                match committed {
                    Some(c) => c,
                    // Known at start but never routed: begin with new records. Seen first
                    // through an append: the topic is new to the route, take it all.
                    None if at_start => {
                        self.commit(&group, topic, partition, stats.high_watermark)
                            .await?;
                        stats.high_watermark
                    }
                    None => stats.log_start,
                }
            }
        };
        cursor = cursor.max(stats.log_start);
        let ch = gw
            .authz
            .resolve(channel)
            .map_err(|c| format!("channel {channel} of route {}: {}", route.name, c.message()))?;
        let ns = ch.options.clone();
        let tenant = ch.tenant.map(str::to_owned);
        while cursor < stats.high_watermark {
            let read = gw
                .broker
                .read_batches(topic, partition, cursor, 1024 * 1024)
                .await
                .map_err(|e| e.to_string())?;
            if read.batches.is_empty() {
                break;
            }
            let before = cursor;
            for b in &read.batches {
                let records = herald_broker::records::decode(b).map_err(|e| e.to_string())?;
                for r in records {
                    if r.offset < cursor {
                        continue;
                    }
                    let value = r
                        .value
                        .as_ref()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|s| serde_json::value::RawValue::from_string(s.to_owned()).ok());
                    match value {
                        Some(data) => {
                            let idem =
                                format!("route:{}:{topic}:{partition}:{}", route.name, r.offset);
                            gw.publish(crate::Outgoing {
                                channel,
                                ns: &ns,
                                tenant: tenant.as_deref(),
                                data: &data,
                                info: None,
                                tags: None,
                                idempotency_key: Some(&idem),
                                interface: "route",
                            })
                            .await
                            .map_err(|c| c.message().to_owned())?;
                        }
                        None => {
                            metrics::counter!("realtime_route_skipped_total", "route" => route.name.clone()).increment(1);
                        }
                    }
                    cursor = r.offset + 1;
                }
            }
            if cursor == before {
                break;
            }
            self.commit(&group, topic, partition, cursor).await?;
            self.cursors.insert(key.clone(), cursor);
        }
        self.cursors.insert(key, cursor);
        Ok(())
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.gw
            .broker
            .groups()
            .commit(
                group,
                "",
                -1,
                None,
                vec![(
                    topic.to_owned(),
                    partition,
                    Committed {
                        offset: offset as i64,
                        metadata: None,
                        leader_epoch: -1,
                        commit_ms: now,
                    },
                )],
            )
            .await
            .map_err(|e| format!("{e:?}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(from: &str, to: &str) -> Route {
        Route::parse(&RouteConfig {
            name: None,
            from: from.into(),
            to: to.into(),
        })
        .unwrap()
    }

    #[test]
    fn routes_capture_the_tenant_and_match_globs() {
        let r = route(
            "smarteros.{tenant}.shopify.order_*",
            "tenant:{tenant}:orders",
        );
        assert_eq!(
            r.channel_for("smarteros.123.shopify.order_created")
                .as_deref(),
            Some("tenant:123:orders")
        );
        assert_eq!(r.channel_for("smarteros.123.shopify.refund_created"), None);
        assert_eq!(r.channel_for("smarteros.123.odoo.order_created"), None);
        assert_eq!(r.channel_for("smarteros.123.shopify.order_created.x"), None);
        assert_eq!(r.channel_for("smarteros.123.shopify"), None);
        let all = route("smarteros.{tenant}.>", "tenant:{tenant}:all");
        assert_eq!(
            all.channel_for("smarteros.9.a.b").as_deref(),
            Some("tenant:9:all")
        );
        assert_eq!(all.channel_for("smarteros.9"), None);
        assert!(
            Route::parse(&RouteConfig {
                name: None,
                from: "a.b".into(),
                to: "tenant:{tenant}:x".into()
            })
            .is_err()
        );
        assert!(
            Route::parse(&RouteConfig {
                name: None,
                from: "a.{tenant}.{tenant}".into(),
                to: "x".into()
            })
            .is_err()
        );
    }
}
