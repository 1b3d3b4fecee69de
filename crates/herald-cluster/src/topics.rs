//! Topic administration and the topic-metadata cache.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use herald_broker::Missing;
use rdkafka::admin::{
    AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;

use crate::error::{Subject, from_code, from_kafka};
use crate::{ClusterError, KafkaCluster};

/// One configuration entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Set on the topic itself, rather than inherited from the broker or the default.
    pub is_set: bool,
    pub read_only: bool,
    pub sensitive: bool,
}

/// What DescribeConfigs and the metadata say about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: u32,
    pub configs: Vec<TopicConfigEntry>,
}

/// Topic → partition count, from metadata. Bounded: at most `metadata_max_topics` entries; a
/// listing of a larger cluster is not kept whole, so the next listing asks the cluster again.
#[derive(Debug, Default)]
pub(crate) struct TopicCache {
    topics: HashMap<String, (u32, Instant)>,
    /// When the whole list was last fetched, if it fitted.
    listed_at: Option<Instant>,
}

impl KafkaCluster {
    /// The names of the cluster's topics, sorted (internal topics such as
    /// `__consumer_offsets` included). Served from the cache while it is fresh.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClusterError> {
        let ttl = self.inner.cfg.limits.metadata_ttl;
        {
            let cache = self.inner.topics.lock();
            if cache.listed_at.is_some_and(|at| at.elapsed() < ttl) {
                let mut names: Vec<String> = cache.topics.keys().cloned().collect();
                names.sort();
                return Ok(names);
            }
        }
        let all = self
            .blocking(|inner| {
                let t = inner.cfg.limits.request_timeout;
                let md = inner
                    .meta
                    .fetch_metadata(None, t)
                    .map_err(|e| from_kafka(&e, Subject::Cluster, "listing topics"))?;
                let mut out = Vec::with_capacity(md.topics().len());
                for topic in md.topics() {
                    if topic.error().is_none() {
                        out.push((topic.name().to_owned(), partition_count(topic)));
                    }
                }
                Ok(out)
            })
            .await?;
        let max = self.inner.cfg.limits.metadata_max_topics;
        let now = Instant::now();
        let mut cache = self.inner.topics.lock();
        cache.topics.clear();
        cache.listed_at = (all.len() <= max).then_some(now);
        for (name, parts) in all.iter().take(max) {
            cache.topics.insert(name.clone(), (*parts, now));
        }
        drop(cache);
        let mut names: Vec<String> = all.into_iter().map(|(n, _)| n).collect();
        names.sort();
        Ok(names)
    }

    /// A topic's partition count: from the cache while fresh, else from the cluster.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClusterError> {
        let ttl = self.inner.cfg.limits.metadata_ttl;
        if let Some((n, at)) = self.inner.topics.lock().topics.get(topic)
            && at.elapsed() < ttl
        {
            return Ok(*n);
        }
        let name = topic.to_owned();
        let n = self
            .blocking(move |inner| {
                let t = inner.cfg.limits.request_timeout;
                let md = inner
                    .meta
                    .fetch_metadata(Some(&name), t)
                    .map_err(|e| from_kafka(&e, Subject::Topic(&name), "describing"))?;
                let found = md.topics().iter().find(|x| x.name() == name);
                match found {
                    None => Err(ClusterError::NotFound(Missing::Topic(name.clone()))),
                    Some(x) => match x.error() {
                        Some(e) => Err(from_code(e.into(), Subject::Topic(&name), "describing")),
                        None if x.partitions().is_empty() => {
                            Err(ClusterError::NotFound(Missing::Topic(name.clone())))
                        }
                        None => Ok(partition_count(x)),
                    },
                }
            })
            .await;
        match n {
            Ok(n) => {
                self.remember(topic, n);
                Ok(n)
            }
            Err(e) => {
                if matches!(e, ClusterError::NotFound(_)) {
                    self.forget(topic);
                }
                Err(e)
            }
        }
    }

    fn remember(&self, topic: &str, partitions: u32) {
        let max = self.inner.cfg.limits.metadata_max_topics;
        let mut cache = self.inner.topics.lock();
        if cache.topics.len() >= max && !cache.topics.contains_key(topic) {
            // Full: drop the whole listing rather than track ages; the next miss refills it.
            cache.topics.clear();
            cache.listed_at = None;
        }
        cache
            .topics
            .insert(topic.to_owned(), (partitions, Instant::now()));
    }

    fn forget(&self, topic: &str) {
        let mut cache = self.inner.topics.lock();
        cache.topics.remove(topic);
        cache.listed_at = None;
    }

    /// Partition count and configuration of one topic.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicDescription, ClusterError> {
        let partitions = self.partition_count(topic).await?;
        let results = self
            .inner
            .admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, Subject::Topic(topic), "describing configs"))?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| {
                ClusterError::Internal(format!("DescribeConfigs answered nothing for {topic}"))
            })?
            .map_err(|code| from_code(code, Subject::Topic(topic), "describing configs"))?;
        let mut configs: Vec<TopicConfigEntry> = resource
            .entries
            .into_iter()
            .map(|e| TopicConfigEntry {
                is_set: e.source == ConfigSource::DynamicTopic,
                name: e.name,
                value: e.value,
                read_only: e.is_read_only,
                sensitive: e.is_sensitive,
            })
            .collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TopicDescription {
            name: topic.to_owned(),
            partitions,
            configs,
        })
    }

    /// Creates a topic with the cluster's default replication factor.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let count = i32::try_from(partitions)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                ClusterError::Invalid(format!("invalid partition count {partitions}"))
            })?;
        let mut new = NewTopic::new(topic, count, TopicReplication::Fixed(-1));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let results = self
            .inner
            .admin
            .create_topics([&new], &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, Subject::Topic(topic), "creating"))?;
        first_topic_result(results, topic, "creating")?;
        self.remember(topic, partitions);
        Ok(())
    }

    /// Deletes a topic and its records.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClusterError> {
        let results = self
            .inner
            .admin
            .delete_topics(&[topic], &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, Subject::Topic(topic), "deleting"))?;
        self.forget(topic);
        first_topic_result(results, topic, "deleting")
    }

    /// Sets the given configuration keys of a topic and keeps its other settings.
    ///
    /// librdkafka's AlterConfigs replaces a topic's whole configuration (the incremental API
    /// is not wrapped by the `rdkafka` crate), so the settings already made on the topic are
    /// read first and sent along. A change made by someone else between the two requests
    /// can be lost.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        set: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let current = self.describe_topic(topic).await?;
        let mut merged: BTreeMap<String, String> = current
            .configs
            .into_iter()
            .filter(|e| e.is_set && !e.read_only && !e.sensitive)
            .filter_map(|e| e.value.map(|v| (e.name, v)))
            .collect();
        for (k, v) in set {
            merged.insert(k.clone(), v.clone());
        }
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in &merged {
            alter = alter.set(k, v);
        }
        let results = self
            .inner
            .admin
            .alter_configs([&alter], &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, Subject::Topic(topic), "altering configs"))?;
        match results.into_iter().next() {
            Some(Ok(_)) => {}
            Some(Err((_, code))) => {
                return Err(from_code(code, Subject::Topic(topic), "altering configs"));
            }
            None => {
                return Err(ClusterError::Internal(format!(
                    "AlterConfigs answered nothing for {topic}"
                )));
            }
        }
        // The rdkafka crate reports every AlterConfigs resource as a success, dropping the
        // error code the cluster answered; reading the configuration back is the only way to
        // tell a refused change from an applied one.
        let after = self.describe_topic(topic).await?;
        for (k, v) in set {
            let now = after.configs.iter().find(|e| &e.name == k);
            let applied = now.and_then(|e| e.value.as_deref()) == Some(v.as_str());
            if !applied {
                return Err(ClusterError::Invalid(
                    match now.and_then(|e| e.value.as_deref()) {
                        Some(kept) => format!(
                            "the cluster refused {k}={v} for topic {topic} (it keeps {kept}); \
                         check the key's allowed values and whether it can be changed"
                        ),
                        None => format!(
                            "the cluster refused {k}={v} for topic {topic}: it has no such topic \
                         config"
                        ),
                    },
                ));
            }
        }
        Ok(())
    }

    /// Raises a topic's partition count to `total`.
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<(), ClusterError> {
        let count = usize::try_from(total)
            .map_err(|_| ClusterError::Invalid(format!("invalid partition count {total}")))?;
        let new = NewPartitions::new(topic, count);
        let results = self
            .inner
            .admin
            .create_partitions([&new], &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, Subject::Topic(topic), "creating partitions"))?;
        self.forget(topic);
        first_topic_result(results, topic, "creating partitions")
    }
}

fn partition_count(topic: &rdkafka::metadata::MetadataTopic) -> u32 {
    u32::try_from(topic.partitions().len()).unwrap_or(u32::MAX)
}

fn first_topic_result(
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
    topic: &str,
    op: &str,
) -> Result<(), ClusterError> {
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(from_code(code, Subject::Topic(topic), op)),
        None => Err(ClusterError::Internal(format!(
            "the cluster answered nothing when {op} {topic}"
        ))),
    }
}
