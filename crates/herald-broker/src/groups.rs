//! Consumer groups: drives `herald-core`'s coordinator state machine with a clock and a timer,
//! parks requests that must wait for a rebalance, and keeps offsets and group metadata durable
//! through the offset store. Shared by the Kafka listener and the HTTP/CLI administration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::group::{
    Completion, GroupConfig, GroupCoordinator, GroupDescription, GroupError, GroupOverview,
    GroupSnapshot, GroupState, HeartbeatRequest, JoinRequest, JoinResponse, LeaveRequest,
    LeaveResult, Reply, SyncRequest, SyncResponse,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::BrokerError;
use crate::offsets::{Committed, OffsetStore, StagedGroup};
use crate::storage::Storage;

struct Inner {
    coord: GroupCoordinator,
    waiters: HashMap<u64, oneshot::Sender<Completion>>,
}

pub struct Groups {
    inner: Mutex<Inner>,
    offsets: OffsetStore,
    storage: Arc<dyn Storage>,
    started: Instant,
    wake: Notify,
}

/// One partition's consumer lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub committed: i64,
    pub high_watermark: u64,
    pub lag: u64,
}

/// Where `herald group reset-offsets` moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
    /// The first offset at or after this time (ms since the epoch): replay from a moment.
    Datetime(i64),
    ShiftBy(i64),
}

/// One partition of a reset plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResetRow {
    pub topic: String,
    pub partition: u32,
    pub previous: Option<i64>,
    pub new: i64,
}

/// Topics and partitions a group consumes, read from the consumer protocol's assignment bytes
/// (`ConsumerProtocolAssignment`: version, [topic, [partition]], user data). Bounded by the
/// bytes present; `None` for anything else (a non-consumer protocol).
pub fn decode_assignment(b: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2)
            .and_then(|x| <[u8; 2]>::try_from(x).ok())
            .map(i16::from_be_bytes)
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4)
            .and_then(|x| <[u8; 4]>::try_from(x).ok())
            .map(i32::from_be_bytes)
    }
    let mut b = b;
    if b.is_empty() {
        return Some(Vec::new());
    }
    let _version = i16_(&mut b)?;
    let topics = usize::try_from(i32_(&mut b)?).ok()?;
    if topics > b.len() / 6 {
        return None;
    }
    let mut out = Vec::with_capacity(topics);
    for _ in 0..topics {
        let len = usize::try_from(i16_(&mut b)?).ok()?;
        let name = std::str::from_utf8(take(&mut b, len)?).ok()?.to_owned();
        let n = usize::try_from(i32_(&mut b)?).ok()?;
        if n > b.len() / 4 {
            return None;
        }
        let parts = (0..n).map(|_| i32_(&mut b)).collect::<Option<Vec<i32>>>()?;
        out.push((name, parts));
    }
    Some(out)
}

/// Why a group-offset administration request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("group {0} has live members; stop its consumers first")]
    GroupActive(String),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Groups {
    /// Loads committed offsets and restores every stored group.
    pub async fn open(
        storage: Arc<dyn Storage>,
        config: GroupConfig,
    ) -> Result<Groups, BrokerError> {
        let offsets = OffsetStore::open(Arc::clone(&storage)).await?;
        let mut coord = GroupCoordinator::new(config);
        let started = Instant::now();
        for (group, value) in offsets.group_snapshots() {
            match serde_json::from_value::<GroupSnapshot>(value) {
                Ok(snapshot) => {
                    if let Err(e) = coord.restore(snapshot, 0) {
                        tracing::warn!(%group, error = %e, "stored group metadata not restored");
                    }
                }
                Err(e) => tracing::warn!(%group, error = %e, "unreadable stored group metadata"),
            }
        }
        coord.take_changed_groups();
        Ok(Groups {
            inner: Mutex::new(Inner {
                coord,
                waiters: HashMap::new(),
            }),
            offsets,
            storage,
            started,
            wake: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Delivers finished requests and stages the snapshots to store. Called with the lock held
    /// after every change to the coordinator, so sequence numbers follow the order the changes
    /// were made in even when the appends that follow race each other.
    fn settle(offsets: &OffsetStore, inner: &mut Inner) -> Vec<(String, StagedGroup)> {
        for (ticket, completion) in inner.coord.take_completions() {
            if let Some(tx) = inner.waiters.remove(&ticket.0) {
                let _ = tx.send(completion);
            }
        }
        inner
            .coord
            .take_changed_groups()
            .into_iter()
            .map(|g| {
                let value = inner
                    .coord
                    .snapshot(&g)
                    .and_then(|s| serde_json::to_value(s).ok());
                let staged = offsets.stage_group(&g, value);
                (g, staged)
            })
            .collect()
    }

    async fn persist(&self, changed: Vec<(String, StagedGroup)>) {
        for (group, staged) in changed {
            if let Err(e) = self.offsets.store_group(staged).await {
                tracing::warn!(%group, error = %e, "storing group metadata failed");
            }
        }
    }

    /// Runs the coordinator's timers (session expiry, rebalance deadlines) until the process
    /// ends.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let deadline = self.inner.lock().coord.next_deadline();
            let sleep = match deadline {
                Some(d) => Duration::from_millis(d.saturating_sub(self.now())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
            }
            let changed = {
                let mut inner = self.inner.lock();
                let now = self.now();
                inner.coord.tick(now);
                Self::settle(&self.offsets, &mut inner)
            };
            self.persist(changed).await;
        }
    }

    /// Runs one coordinator call and, if its answer must wait for a rebalance, waits for it.
    /// `Ok` is an immediate answer, `Err` the completion delivered later.
    async fn call<T>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator, u64) -> Reply<T>,
    ) -> Option<Result<T, Completion>> {
        let (reply, changed, rx) = {
            let mut inner = self.inner.lock();
            let now = self.now();
            let reply = f(&mut inner.coord, now);
            let rx = match &reply {
                Reply::Pending(t) => {
                    let (tx, rx) = oneshot::channel();
                    inner.waiters.insert(t.0, tx);
                    Some(rx)
                }
                Reply::Ready(_) => None,
            };
            let changed = Self::settle(&self.offsets, &mut inner);
            (reply, changed, rx)
        };
        self.persist(changed).await;
        self.wake.notify_one();
        match reply {
            Reply::Ready(v) => Some(Ok(v)),
            Reply::Pending(_) => rx?.await.ok().map(Err),
        }
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResponse {
        let member = req.member_id.clone();
        match self.call(|c, now| c.join(req, now)).await {
            Some(Ok(r)) | Some(Err(Completion::Join(r))) => r,
            _ => JoinResponse {
                member_id: member,
                result: Err(GroupError::RebalanceInProgress),
            },
        }
    }

    pub async fn sync(&self, req: SyncRequest) -> SyncResponse {
        match self.call(|c, now| c.sync(req, now)).await {
            Some(Ok(r)) | Some(Err(Completion::Sync(r))) => r,
            _ => Err(GroupError::RebalanceInProgress),
        }
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<(), GroupError> {
        let (r, changed) = {
            let mut inner = self.inner.lock();
            let now = self.now();
            let r = inner.coord.heartbeat(req, now);
            (r, Self::settle(&self.offsets, &mut inner))
        };
        self.persist(changed).await;
        r
    }

    pub async fn leave(&self, req: LeaveRequest) -> Result<Vec<LeaveResult>, GroupError> {
        let (r, changed) = {
            let mut inner = self.inner.lock();
            let now = self.now();
            let r = inner.coord.leave(req, now);
            (r, Self::settle(&self.offsets, &mut inner))
        };
        self.persist(changed).await;
        self.wake.notify_one();
        r
    }

    /// Kafka OffsetCommit: checks the committer against the group, then stores durably.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        offsets: Vec<(String, u32, Committed)>,
    ) -> Result<(), AdminError> {
        let changed = {
            let mut inner = self.inner.lock();
            let now = self.now();
            inner
                .coord
                .check_commit(group, member_id, generation, instance, now)?;
            Self::settle(&self.offsets, &mut inner)
        };
        self.persist(changed).await;
        self.offsets.commit(group, offsets).await?;
        Ok(())
    }

    /// Committed offsets of a group: the given partitions, or all of them.
    pub fn fetch(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<(String, u32, Option<Committed>)> {
        match partitions {
            Some(ps) => ps
                .iter()
                .map(|(t, p)| (t.clone(), *p, self.offsets.get(group, t, *p)))
                .collect(),
            None => self
                .offsets
                .group_offsets(group)
                .into_iter()
                .map(|(t, p, c)| (t, p, Some(c)))
                .collect(),
        }
    }

    /// Every group the coordinator knows, plus groups that only have committed offsets.
    pub fn list(&self) -> Vec<GroupOverview> {
        let mut out = self.inner.lock().coord.list_groups();
        for g in self.offsets.groups() {
            if !out.iter().any(|o| o.group_id == g) {
                out.push(GroupOverview {
                    group_id: g,
                    protocol_type: "consumer".into(),
                    state: GroupState::Empty,
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    pub fn describe(&self, group: &str) -> GroupDescription {
        let mut d = self.inner.lock().coord.describe_group(group);
        if d.state == GroupState::Dead && !self.offsets.group_offsets(group).is_empty() {
            d.state = GroupState::Empty;
        }
        d
    }

    /// Kafka DeleteGroups: only an empty group; its offsets and metadata go with it.
    pub async fn delete(&self, group: &str) -> Result<(), AdminError> {
        let (changed, removal) = {
            let mut inner = self.inner.lock();
            let now = self.now();
            match inner.coord.delete_group(group, now) {
                Ok(()) => {}
                // A group known only by its offsets has no coordinator state to delete.
                Err(GroupError::GroupIdNotFound)
                    if !self.offsets.group_offsets(group).is_empty() => {}
                Err(e) => return Err(e.into()),
            }
            let changed = Self::settle(&self.offsets, &mut inner);
            // Staged here, under the lock, so a group joined again right after this deletion
            // has the higher sequence and is the one restored.
            (changed, self.offsets.stage_group(group, None))
        };
        self.persist(changed).await;
        self.offsets.delete(group, None).await?;
        self.offsets.store_group(removal).await?;
        Ok(())
    }

    /// Kafka OffsetDelete: refused for partitions of topics the live group still consumes.
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, u32)>,
    ) -> Result<usize, AdminError> {
        let state = self.describe(group).state;
        if !matches!(state, GroupState::Empty | GroupState::Dead) {
            return Err(AdminError::GroupActive(group.to_owned()));
        }
        Ok(self.offsets.delete(group, Some(partitions)).await?)
    }

    /// Sets committed offsets directly (`herald group reset-offsets`); refused while the group
    /// has members, as Kafka's tooling does.
    pub async fn reset_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, u32, i64)>,
    ) -> Result<(), AdminError> {
        let state = self.describe(group).state;
        if !matches!(state, GroupState::Empty | GroupState::Dead) {
            return Err(AdminError::GroupActive(group.to_owned()));
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let committed = offsets
            .into_iter()
            .map(|(t, p, o)| {
                (
                    t,
                    p,
                    Committed {
                        offset: o,
                        metadata: Some("reset by herald".into()),
                        leader_epoch: -1,
                        commit_ms: now_ms,
                    },
                )
            })
            .collect();
        self.offsets.commit(group, committed).await?;
        Ok(())
    }

    /// Computes where a reset would move the group's offsets on the given partitions, without
    /// changing anything. Targets are clamped to what the log holds.
    pub async fn plan_reset(
        &self,
        group: &str,
        partitions: Vec<(String, u32)>,
        to: ResetTo,
    ) -> Result<Vec<ResetRow>, AdminError> {
        let mut out = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let stats = self.storage.partition_stats(&topic, partition).await?;
            let (start, end) = (stats.log_start as i64, stats.high_watermark as i64);
            let previous = self.offsets.get(group, &topic, partition).map(|c| c.offset);
            let target = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(o) => i64::try_from(o).unwrap_or(i64::MAX),
                ResetTo::ShiftBy(n) => previous.unwrap_or(start).saturating_add(n),
                ResetTo::Datetime(ts) => {
                    let found = self
                        .storage
                        .offset_for_timestamp(&topic, partition, ts)
                        .await?;
                    found.map(|(o, _)| o as i64).unwrap_or(end)
                }
            };
            out.push(ResetRow {
                topic,
                partition,
                previous,
                new: target.clamp(start, end),
            });
        }
        Ok(out)
    }

    /// Forgets every group's committed offsets for a deleted topic.
    pub async fn forget_topic(&self, topic: &str) -> Result<(), BrokerError> {
        self.offsets.forget_topic(topic).await
    }

    /// Lag of every committed partition: high watermark minus committed offset.
    pub async fn lag(&self) -> Vec<PartitionLag> {
        let mut out = Vec::new();
        for (group, topic, partition, committed) in self.offsets.all() {
            let Ok(stats) = self.storage.partition_stats(&topic, partition).await else {
                continue;
            };
            let hw = stats.high_watermark;
            let lag = hw.saturating_sub(u64::try_from(committed).unwrap_or(0));
            out.push(PartitionLag {
                group,
                topic,
                partition,
                committed,
                high_watermark: hw,
                lag,
            });
        }
        out
    }
}
