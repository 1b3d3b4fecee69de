//! Consumer groups: listing, describing, committed offsets and lag, offset resets of empty
//! groups, deletion.

use std::collections::BTreeMap;

use herald_broker::Missing;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::groups::GroupInfo;
use rdkafka::{Offset, TopicPartitionList};

use crate::context::ClusterContext;
use crate::error::{Subject, from_code, from_kafka};
use crate::read::{off_i64, offset_for_time_with, part_i32, watermarks_with};
use crate::{ClusterError, Inner, KafkaCluster, base_config, consumer_config};

/// Most partitions whose offsets one group request looks at, so that a group over a huge
/// cluster cannot make one call unbounded.
const MAX_GROUP_PARTITIONS: usize = 10_000;

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    pub state: String,
    pub protocol_type: String,
    pub members: usize,
}

/// One member of a group and the partitions assigned to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub id: String,
    pub client_id: String,
    pub host: String,
    /// topic → partitions, decoded from the consumer protocol's assignment (empty for other
    /// protocols).
    pub assignment: BTreeMap<String, Vec<u32>>,
}

/// A group described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    /// `Empty`, `Stable`, `PreparingRebalance`, `CompletingRebalance`, …
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// A committed offset with the partition's bounds and the lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: u32,
    pub committed: u64,
    pub log_start: u64,
    pub high_watermark: u64,
    /// `high_watermark − committed` (0 when the commit is ahead).
    pub lag: u64,
}

/// Where an offset reset moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// This offset, clamped into the partition's retained range.
    Offset(u64),
    /// The first record at or after this time (milliseconds since the epoch); the high
    /// watermark when no record is that recent.
    Timestamp(i64),
}

impl KafkaCluster {
    /// Every consumer group of the cluster.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClusterError> {
        self.blocking(|inner| {
            let list = inner
                .meta
                .client()
                .fetch_group_list(None, inner.cfg.limits.request_timeout)
                .map_err(|e| from_kafka(&e, Subject::Cluster, "listing groups"))?;
            let mut out: Vec<GroupSummary> = list
                .groups()
                .iter()
                .map(|g| GroupSummary {
                    name: g.name().to_owned(),
                    state: g.state().to_owned(),
                    protocol_type: g.protocol_type().to_owned(),
                    members: g.members().len(),
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// State and members of one group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupState, ClusterError> {
        let group = group.to_owned();
        self.blocking(move |inner| describe_with(inner, &group))
            .await
    }

    /// The group's committed offsets with lag, for the partitions of `topics` — or, when
    /// `topics` is empty, of the topics its members are assigned, or else of every topic of
    /// the cluster (librdkafka's OffsetFetch needs the partitions named). Partitions without a
    /// committed offset are left out.
    pub async fn group_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Vec<GroupOffset>, ClusterError> {
        let mut wanted: Vec<String> = topics.to_vec();
        if wanted.is_empty() {
            let described = self.describe_group(group).await?;
            let mut assigned: Vec<String> = described
                .members
                .iter()
                .flat_map(|m| m.assignment.keys().cloned())
                .collect();
            assigned.sort();
            assigned.dedup();
            wanted = assigned;
        }
        if wanted.is_empty() {
            wanted = self
                .list_topics()
                .await?
                .into_iter()
                .filter(|t| !t.starts_with("__"))
                .collect();
        }
        let mut partitions = Vec::new();
        for topic in &wanted {
            let n = match self.partition_count(topic).await {
                Ok(n) => n,
                // Listed a moment ago and deleted since: nothing committed there any more.
                Err(ClusterError::NotFound(_)) if topics.is_empty() => continue,
                Err(e) => return Err(e),
            };
            for p in 0..n {
                if partitions.len() >= MAX_GROUP_PARTITIONS {
                    return Err(ClusterError::TooLarge(format!(
                        "more than {MAX_GROUP_PARTITIONS} partitions to look at for group \
                         {group}; name the topics"
                    )));
                }
                partitions.push((topic.clone(), p));
            }
        }
        let group = group.to_owned();
        self.blocking(move |inner| {
            let consumer = group_consumer(inner, &group)?;
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &partitions {
                tpl.add_partition(t, part_i32(*p)?);
            }
            let committed = consumer
                .committed_offsets(tpl, inner.cfg.limits.request_timeout)
                .map_err(|e| from_kafka(&e, Subject::Group(&group), "fetching offsets"))?;
            let mut out = Vec::new();
            for e in committed.elements() {
                let Offset::Offset(c) = e.offset() else {
                    continue;
                };
                let (Ok(committed), Ok(partition)) =
                    (u64::try_from(c), u32::try_from(e.partition()))
                else {
                    continue;
                };
                let w = watermarks_with(&inner.meta, inner, e.topic(), partition)?;
                out.push(GroupOffset {
                    topic: e.topic().to_owned(),
                    partition,
                    committed,
                    log_start: w.log_start,
                    high_watermark: w.high_watermark,
                    lag: w.high_watermark.saturating_sub(committed),
                });
            }
            out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            Ok(out)
        })
        .await
    }

    /// Moves the committed offsets of `group` on every partition of `topic`. Refused while
    /// the group has members: they would overwrite the reset with their next commit.
    /// Returns the new offset per partition.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        to: OffsetReset,
    ) -> Result<Vec<(u32, u64)>, ClusterError> {
        let partitions = self.partition_count(topic).await?;
        let group = group.to_owned();
        let topic = topic.to_owned();
        self.blocking(move |inner| {
            match describe_with(inner, &group) {
                Ok(state) if !state.members.is_empty() => {
                    return Err(ClusterError::GroupNotEmpty {
                        group: group.clone(),
                        members: state.members.len(),
                    });
                }
                // A group that does not exist yet is created by its first commit, as
                // kafka-consumer-groups --reset-offsets does.
                Ok(_) | Err(ClusterError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let mut targets = Vec::with_capacity(usize::try_from(partitions).unwrap_or(0));
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                let w = watermarks_with(&inner.meta, inner, &topic, p)?;
                let target = match to {
                    OffsetReset::Earliest => w.log_start,
                    OffsetReset::Latest => w.high_watermark,
                    OffsetReset::Offset(n) => n.clamp(w.log_start, w.high_watermark),
                    OffsetReset::Timestamp(ts) => {
                        offset_for_time_with(inner, &topic, p, ts)?.unwrap_or(w.high_watermark)
                    }
                };
                tpl.add_partition_offset(&topic, part_i32(p)?, Offset::Offset(off_i64(target)?))
                    .map_err(|e| from_kafka(&e, Subject::Partition(&topic, p), "resetting"))?;
                targets.push((p, target));
            }
            let consumer = group_consumer(inner, &group)?;
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| from_kafka(&e, Subject::Group(&group), "committing offsets"))?;
            Ok(targets)
        })
        .await
    }

    /// Deletes a group and its committed offsets. Refused by the cluster while it has members.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClusterError> {
        let results = self
            .inner
            .admin
            .delete_groups(&[group], &self.admin_options())
            .await
            .map_err(|e| from_kafka(&e, Subject::Group(group), "deleting"))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(()),
            Some(Err((_, rdkafka::error::RDKafkaErrorCode::NonEmptyGroup))) => {
                let members = self
                    .describe_group(group)
                    .await
                    .map(|g| g.members.len())
                    .unwrap_or(0);
                Err(ClusterError::GroupNotEmpty {
                    group: group.to_owned(),
                    members,
                })
            }
            Some(Err((_, code))) => Err(from_code(code, Subject::Group(group), "deleting")),
            None => Err(ClusterError::Internal(format!(
                "DeleteGroups answered nothing for {group}"
            ))),
        }
    }
}

/// A consumer in `group` that never joins it: it only fetches and commits offsets.
fn group_consumer(
    inner: &Inner,
    group: &str,
) -> Result<BaseConsumer<ClusterContext>, ClusterError> {
    consumer_config(&base_config(&inner.cfg), &inner.cfg.limits, Some(group))
        .create_with_context(ClusterContext::default())
        .map_err(|e| ClusterError::Internal(format!("cannot create a group client: {e}")))
}

fn describe_with(inner: &Inner, group: &str) -> Result<GroupState, ClusterError> {
    let list = inner
        .meta
        .client()
        .fetch_group_list(Some(group), inner.cfg.limits.request_timeout)
        .map_err(|e| from_kafka(&e, Subject::Group(group), "describing"))?;
    let g: &GroupInfo = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .ok_or_else(|| ClusterError::NotFound(Missing::Group(group.to_owned())))?;
    // Kafka answers DescribeGroups for an unknown group with the state Dead, not an error.
    if g.state() == "Dead" {
        return Err(ClusterError::NotFound(Missing::Group(group.to_owned())));
    }
    let consumer_protocol = g.protocol_type() == "consumer";
    Ok(GroupState {
        name: g.name().to_owned(),
        state: g.state().to_owned(),
        protocol_type: g.protocol_type().to_owned(),
        protocol: g.protocol().to_owned(),
        members: g
            .members()
            .iter()
            .map(|m| GroupMember {
                id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                host: m.client_host().to_owned(),
                assignment: match m.assignment() {
                    Some(bytes) if consumer_protocol => {
                        decode_assignment(bytes).unwrap_or_default()
                    }
                    _ => BTreeMap::new(),
                },
            })
            .collect(),
    })
}

/// Decodes the consumer protocol's member assignment: version (i16), then topics
/// `[name (i16 length + bytes), partitions [i32]]`, then user data (ignored). `None` when the
/// bytes are not such an assignment. Every count is checked against the bytes left before
/// anything is allocated for it.
pub(crate) fn decode_assignment(mut b: &[u8]) -> Option<BTreeMap<String, Vec<u32>>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2)
            .and_then(|s| s.try_into().ok())
            .map(i16::from_be_bytes)
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_be_bytes)
    }
    let _version = i16_(&mut b)?;
    let topics = usize::try_from(i32_(&mut b)?).ok()?;
    // Each topic takes at least 6 bytes (name length and partition count).
    if topics > b.len() / 6 {
        return None;
    }
    let mut out = BTreeMap::new();
    for _ in 0..topics {
        let len = usize::try_from(i16_(&mut b)?).ok()?;
        let name = std::str::from_utf8(take(&mut b, len)?).ok()?.to_owned();
        let count = usize::try_from(i32_(&mut b)?).ok()?;
        if count > b.len() / 4 {
            return None;
        }
        let mut parts = Vec::with_capacity(count);
        for _ in 0..count {
            parts.push(u32::try_from(i32_(&mut b)?).ok()?);
        }
        out.insert(name, parts);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_assignment;

    #[test]
    fn decodes_a_consumer_assignment_and_refuses_lying_counts() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&5i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
        let got = decode_assignment(&b);
        assert_eq!(
            got.as_ref().and_then(|m| m.get("abc")).cloned(),
            Some(vec![0, 5])
        );

        let mut lying = Vec::new();
        lying.extend_from_slice(&1i16.to_be_bytes());
        lying.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_assignment(&lying), None);
        let cut = b.get(..b.len() - 9).unwrap_or_default();
        assert_eq!(decode_assignment(cut), None);
    }
}
