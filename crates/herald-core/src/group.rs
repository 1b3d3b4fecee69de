//! The classic Kafka consumer-group coordinator (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups and the membership check of OffsetCommit) as a
//! sans-I/O state machine.
//!
//! It follows Kafka's `GroupCoordinator` for the classic protocol, including static membership
//! (KIP-345) and the two-step join of new members (KIP-394), because that is the behaviour
//! librdkafka, kafka-python and kafkajs are written against. It knows no wire format and reads
//! no clock: every call takes `now_ms` (milliseconds on one clock that does not go backwards),
//! and it stores no offsets: the broker keeps those and asks [`GroupCoordinator::check_commit`]
//! whether a commit is allowed.
//!
//! # Driving it
//!
//! 1. Call a request method. [`Reply::Ready`] is the answer. [`Reply::Pending`] means the
//!    request waits for other members (a JoinGroup until the rebalance completes, a follower's
//!    SyncGroup until the leader's): park it under its [`Ticket`].
//! 2. After every call, including [`GroupCoordinator::tick`], drain
//!    [`GroupCoordinator::take_completions`] and answer the parked requests. Every ticket
//!    completes exactly once, with an answer or an error (a removed member's waiting JoinGroup
//!    gets `UNKNOWN_MEMBER_ID`, a fenced one `FENCED_INSTANCE_ID`).
//! 3. Call [`GroupCoordinator::tick`] at [`GroupCoordinator::next_deadline`]: that is when
//!    sessions expire and rebalance timeouts and the initial rebalance delay elapse. Request
//!    methods process everything due at their `now_ms` first, so a late tick never lets an
//!    expired member act.
//! 4. For durability, after each call persist [`GroupCoordinator::snapshot`] of every group in
//!    [`GroupCoordinator::take_changed_groups`] (delete it when the snapshot is `None`), and
//!    [`GroupCoordinator::restore`] the snapshots before serving requests after a restart.
//!
//! # Where this differs from Kafka, and why
//!
//! - A request superseded by a second one from the same member (a JoinGroup or SyncGroup
//!   retried on a new connection while the first still waits) is answered with
//!   `REBALANCE_IN_PROGRESS`; Kafka drops the first callback and never answers it. Answering
//!   keeps "every ticket completes" true, and a client that does see the answer just rejoins.
//! - A removed member's waiting SyncGroup is answered with `UNKNOWN_MEMBER_ID` (Kafka answers
//!   its JoinGroup but leaves the SyncGroup to time out).
//! - Protocol compatibility of a rejoining member is checked against the *other* members.
//!   Kafka counts the member's own previous protocols too, so a lone member cannot switch
//!   assignors without leaving first.
//! - When the protocol vote ties, the leader's preference wins; Kafka's choice is the hash
//!   order of a map.
//! - The initial rebalance delay is extended by members joining during it whenever the group
//!   was Empty; Kafka extends it only in generation 0.
//! - There is no separate five-minute timeout for new members waiting in JoinGroup: the
//!   rebalance timeout already bounds every wait.
//! - Heartbeat checks the generation in every state and simple offset commits (generation -1)
//!   are allowed in any Empty group, as Kafka 4's coordinator does.
//! - A member that received `MEMBER_ID_REQUIRED` and rejoins with a `group.instance.id` gets
//!   `UNKNOWN_MEMBER_ID` (Kafka fails with an internal error); it can rejoin as a static member
//!   with an empty member id.
//! - A static member that replaces its previous incarnation takes the new client id and host,
//!   so that DescribeGroups shows the process that is actually running.
//!
//! Dead groups are not kept: [`GroupCoordinator::delete_group`] forgets the group, and
//! [`GroupCoordinator::describe_group`] reports an unknown group as Kafka does, in state Dead.
//! Empty groups stay until deleted; the broker deletes them when it expires their offsets (Kafka's
//! `offsets.retention.minutes`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Kafka's default `group.initial.rebalance.delay.ms`.
pub const DEFAULT_INITIAL_REBALANCE_DELAY_MS: u64 = 3_000;
/// Kafka's default `group.min.session.timeout.ms`.
pub const DEFAULT_MIN_SESSION_TIMEOUT_MS: u64 = 6_000;
/// Kafka's default `group.max.session.timeout.ms`.
pub const DEFAULT_MAX_SESSION_TIMEOUT_MS: u64 = 1_800_000;

/// Coordinator settings, named after the Kafka broker settings they mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an Empty group waits
    /// for more members, extended by the same amount while new members keep arriving (never
    /// beyond the members' largest rebalance timeout). 0 completes it at once.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: u64,
    /// `group.max.size`: members beyond this are refused with `GROUP_MAX_SIZE_REACHED`.
    pub max_group_size: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: DEFAULT_INITIAL_REBALANCE_DELAY_MS,
            min_session_timeout_ms: DEFAULT_MIN_SESSION_TIMEOUT_MS,
            max_session_timeout_ms: DEFAULT_MAX_SESSION_TIMEOUT_MS,
            max_group_size: usize::MAX,
        }
    }
}

impl GroupConfig {
    fn session_timeout(&self, requested_ms: i32) -> Result<u64, GroupError> {
        match u64::try_from(requested_ms) {
            Ok(ms) if (self.min_session_timeout_ms..=self.max_session_timeout_ms).contains(&ms) => {
                Ok(ms)
            }
            _ => Err(GroupError::InvalidSessionTimeout {
                requested_ms,
                min_ms: self.min_session_timeout_ms,
                max_ms: self.max_session_timeout_ms,
            }),
        }
    }
}

/// A group's state, spelled as Kafka spells it in ListGroups and DescribeGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; the group may still have committed offsets.
    Empty,
    /// A rebalance started: members must rejoin.
    PreparingRebalance,
    /// Every member got its JoinGroup answer; waiting for the leader's assignment.
    CompletingRebalance,
    /// The leader's assignment is in place.
    Stable,
    /// The group does not exist (Kafka's answer to DescribeGroups for an unknown group).
    Dead,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a group request was refused. Each variant is one Kafka error code
/// ([`GroupError::kafka_code`]); the messages say what the client should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum GroupError {
    #[error("the generation id is not the group's current generation; rejoin the group")]
    IllegalGeneration,

    #[error(
        "the protocol type or protocols do not match the group's: every member must use the \
         same protocol type and share at least one protocol (assignment strategy) with all \
         other members, and the list must not be empty"
    )]
    InconsistentGroupProtocol,

    #[error("the group id must not be empty")]
    InvalidGroupId,

    #[error(
        "the group does not know this member id (it was never issued, the member left, or its \
         session expired); rejoin with an empty member id"
    )]
    UnknownMemberId,

    #[error(
        "session timeout {requested_ms} ms is outside the range this coordinator allows, \
         {min_ms}..={max_ms} ms (group.min.session.timeout.ms, group.max.session.timeout.ms)"
    )]
    InvalidSessionTimeout {
        requested_ms: i32,
        min_ms: u64,
        max_ms: u64,
    },

    #[error("the group is rebalancing; rejoin the group")]
    RebalanceInProgress,

    #[error("the group still has members; stop them (or let their sessions expire) first")]
    NonEmptyGroup,

    #[error("the group does not exist")]
    GroupIdNotFound,

    #[error("a new member must rejoin with the member id given in this response (KIP-394)")]
    MemberIdRequired,

    #[error("the group has reached its maximum size (group.max.size)")]
    GroupMaxSizeReached,

    #[error(
        "another consumer with the same group.instance.id has joined the group; this one is \
         fenced and must stop"
    )]
    FencedInstanceId,
}

impl GroupError {
    /// The Kafka protocol error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout { .. } => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
        }
    }
}

/// A snapshot given to [`GroupCoordinator::restore`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    #[error("group {group_id:?} already exists; restore snapshots before serving requests")]
    GroupExists { group_id: String },

    #[error("the snapshot of group {group_id:?} is inconsistent: {reason}")]
    Inconsistent { group_id: String, reason: String },
}

/// Identifies a request that waits; its answer comes later from
/// [`GroupCoordinator::take_completions`]. Unique for the life of a coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// The outcome of a request that may have to wait for other members.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Reply<T> {
    /// The answer.
    Ready(T),
    /// The answer will come from [`GroupCoordinator::take_completions`] under this ticket.
    Pending(Ticket),
}

/// The answer to a request that was [`Reply::Pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Join(JoinResponse),
    Sync(SyncResponse),
}

/// One protocol (assignment strategy) a member supports, with its opaque metadata (for
/// consumers: the subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinProtocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id` of a static member (KIP-345).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: pass the session timeout, as Kafka does. A negative value is
    /// treated the same way.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<JoinProtocol>,
    /// True for JoinGroup v4 and later (KIP-394): a new dynamic member first gets
    /// `MEMBER_ID_REQUIRED` and an id to rejoin with.
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// The member id to use from now on. With `MEMBER_ID_REQUIRED` it is the id to rejoin with;
    /// for other errors it echoes the request's, except that a JoinGroup cut short because the
    /// member was removed carries an empty id, as in Kafka.
    pub member_id: String,
    pub result: Result<Joined, GroupError>,
}

/// A successful JoinGroup: the generation the member is now part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader_id: String,
    /// KIP-814: the member is the leader and gets the member list, but the group is Stable
    /// and must not be reassigned (a static leader that restarted without a rebalance). A
    /// JoinGroup response before v9 cannot say this: send it an empty member list.
    pub skip_assignment: bool,
    /// Every member with its metadata for the chosen protocol, for the leader only; empty for
    /// followers.
    pub members: Vec<JoinedMember>,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5 and later: checked against the group's when present.
    pub protocol_type: Option<String>,
    /// SyncGroup v5 and later: checked against the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment; ignored from followers. Members it leaves out get an empty
    /// assignment, unknown member ids are ignored, and a repeated id's last entry wins.
    pub assignments: Vec<MemberAssignment>,
}

/// One member's assignment in the leader's SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Vec<u8>,
}

/// The answer to a SyncGroup.
pub type SyncResponse = Result<Synced, GroupError>;

/// A successful SyncGroup: the member's assignment for the current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub protocol_type: String,
    pub protocol_name: String,
    /// Empty when the leader assigned this member nothing.
    pub assignment: Vec<u8>,
}

/// A Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup request. Versions before 3 carry one member; v3 and later a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveRequest {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

/// One member of a LeaveGroup. An empty member id with an instance id removes that static
/// member whatever its current member id (the admin client's `removeMembersFromConsumerGroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// The outcome for one member of a LeaveGroup, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub result: Result<(), GroupError>,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOverview {
    pub group_id: String,
    /// Empty for a group that never had a member (only offsets).
    pub protocol_type: String,
    pub state: GroupState,
}

/// A group in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// Empty unless the group is Stable, as in Kafka.
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the chosen protocol; empty unless the group is Stable.
    pub metadata: Vec<u8>,
    /// Empty unless the group is Stable.
    pub assignment: Vec<u8>,
}

/// The durable part of a group, as of its last Stable or Empty state (what Kafka writes to
/// `__consumer_offsets`). Other states are never persisted: restoring a half-finished
/// rebalance could hand out a previous generation's assignment as the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub group_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    /// Empty for an Empty group; otherwise the group is Stable.
    pub members: Vec<MemberSnapshot>,
}

/// A member in a [`GroupSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// The member's metadata for the group's protocol; the other protocols it offered are not
    /// kept, as in Kafka.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// The consumer-group coordinator of one node: every classic group, its members and timers.
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// Each group's earliest deadline, so that `tick` does not scan every group.
    deadlines: BTreeSet<(u64, String)>,
    fx: Effects,
}

impl fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("config", &self.config)
            .field("groups", &self.groups.len())
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    /// A coordinator whose member ids end in random v4 UUIDs, as Kafka's do.
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator::with_uuid_source(config, Uuid::new_v4)
    }

    /// A coordinator that takes the UUID part of new member ids (`{client_id}-{uuid}`, or
    /// `{group_instance_id}-{uuid}` for static members) from `uuids`, so that tests can
    /// predict them.
    pub fn with_uuid_source(
        config: GroupConfig,
        uuids: impl FnMut() -> Uuid + Send + 'static,
    ) -> GroupCoordinator {
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            fx: Effects {
                completions: Vec::new(),
                changed: BTreeSet::new(),
                next_ticket: 0,
                uuids: Box::new(uuids),
            },
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// JoinGroup. Pending while a rebalance gathers the members; every pending join of a
    /// generation completes together, the leader's with the member list.
    pub fn join(&mut self, request: JoinRequest, now_ms: u64) -> Reply<JoinResponse> {
        self.advance(now_ms);
        let group_id = request.group_id.clone();
        let reply = self.join_inner(request, now_ms);
        self.reindex(&group_id);
        self.advance(now_ms);
        self.settle(reply, |c| match c {
            Completion::Join(r) => Some(r),
            _ => None,
        })
    }

    fn join_inner(&mut self, req: JoinRequest, now: u64) -> Reply<JoinResponse> {
        if req.group_id.is_empty() {
            return join_error(&req.member_id, GroupError::InvalidGroupId);
        }
        let session_ms = match self.config.session_timeout(req.session_timeout_ms) {
            Ok(ms) => ms,
            Err(e) => return join_error(&req.member_id, e),
        };
        let rebalance_ms = u64::try_from(req.rebalance_timeout_ms).unwrap_or(session_ms);
        let created = !self.groups.contains_key(&req.group_id);
        if created {
            if !req.member_id.is_empty() {
                return join_error(&req.member_id, GroupError::UnknownMemberId);
            }
            self.groups
                .insert(req.group_id.clone(), Group::new(req.group_id.clone()));
        }
        let group_id = req.group_id.clone();
        let Some(group) = self.groups.get_mut(&group_id) else {
            return join_error(&req.member_id, GroupError::UnknownMemberId);
        };
        let mut cx = Ctx {
            cfg: &self.config,
            fx: &mut self.fx,
            now,
        };
        let joining = Joining {
            req,
            session_ms,
            rebalance_ms,
        };
        let reply = group.join(joining, &mut cx);
        // A refused first join leaves nothing behind (Kafka would keep an Empty group).
        if created
            && matches!(&reply, Reply::Ready(JoinResponse { result: Err(e), .. })
                if *e != GroupError::MemberIdRequired)
        {
            self.groups.remove(&group_id);
        }
        reply
    }

    /// SyncGroup. The leader's assignment moves the group to Stable and answers every waiting
    /// member; a follower that syncs first waits for it.
    pub fn sync(&mut self, request: SyncRequest, now_ms: u64) -> Reply<SyncResponse> {
        self.advance(now_ms);
        let group_id = request.group_id.clone();
        let reply = if request.group_id.is_empty() {
            Reply::Ready(Err(GroupError::InvalidGroupId))
        } else {
            match self.groups.get_mut(&request.group_id) {
                None => Reply::Ready(Err(GroupError::UnknownMemberId)),
                Some(group) => {
                    let mut cx = Ctx {
                        cfg: &self.config,
                        fx: &mut self.fx,
                        now: now_ms,
                    };
                    group.sync(request, &mut cx)
                }
            }
        };
        self.reindex(&group_id);
        self.advance(now_ms);
        self.settle(reply, |c| match c {
            Completion::Sync(r) => Some(r),
            _ => None,
        })
    }

    /// Heartbeat: keeps the member's session alive. `REBALANCE_IN_PROGRESS` tells it to rejoin.
    pub fn heartbeat(&mut self, request: HeartbeatRequest, now_ms: u64) -> Result<(), GroupError> {
        self.advance(now_ms);
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let result = group.heartbeat(&request, now_ms);
        self.reindex(&request.group_id);
        result
    }

    /// LeaveGroup. Removes the members that can be removed and reports each one; the others
    /// rebalance. `Err` only for an empty group id.
    pub fn leave(
        &mut self,
        request: LeaveRequest,
        now_ms: u64,
    ) -> Result<Vec<LeaveResult>, GroupError> {
        self.advance(now_ms);
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let results = match self.groups.get_mut(&request.group_id) {
            None => request
                .members
                .into_iter()
                .map(|m| LeaveResult {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    result: Err(GroupError::UnknownMemberId),
                })
                .collect(),
            Some(group) => {
                let mut cx = Ctx {
                    cfg: &self.config,
                    fx: &mut self.fx,
                    now: now_ms,
                };
                request
                    .members
                    .into_iter()
                    .map(|m| {
                        let result = group.leave_one(&m, &mut cx);
                        LeaveResult {
                            member_id: m.member_id,
                            group_instance_id: m.group_instance_id,
                            result,
                        }
                    })
                    .collect()
            }
        };
        self.reindex(&request.group_id);
        self.advance(now_ms);
        Ok(results)
    }

    /// Whether an OffsetCommit from this member may be stored, by Kafka's rules:
    ///
    /// - generation < 0 (a "simple" consumer that manages its own partitions) is allowed when
    ///   the group is Empty or unknown; an unknown group is then created, Empty.
    /// - otherwise the member (and its instance id, when given) must be current
    ///   (`UNKNOWN_MEMBER_ID`, `FENCED_INSTANCE_ID`) and the generation the group's
    ///   (`ILLEGAL_GENERATION`; also for any generation >= 0 on an unknown group);
    /// - generation < 0 without a member id in a group with members is `UNKNOWN_MEMBER_ID`;
    /// - a current member committing while the leader's assignment is awaited
    ///   (CompletingRebalance) gets `REBALANCE_IN_PROGRESS`; during PreparingRebalance the
    ///   commit is allowed, so that consumers can commit before they rejoin.
    ///
    /// An allowed commit also counts as a heartbeat.
    pub fn check_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        self.advance(now_ms);
        let Some(group) = self.groups.get_mut(group_id) else {
            if generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            let group = Group::new(group_id.to_owned());
            self.fx.changed.insert(group_id.to_owned());
            self.groups.insert(group_id.to_owned(), group);
            return Ok(());
        };
        let result = group.check_commit(member_id, generation_id, group_instance_id, now_ms);
        self.reindex(group_id);
        result
    }

    /// Every group, in group id order.
    pub fn list_groups(&self) -> Vec<GroupOverview> {
        self.groups
            .values()
            .map(|g| GroupOverview {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// DescribeGroups for one group. An unknown group is described as Kafka does, in state
    /// Dead with no members (DescribeGroups v6 turns that into `GROUP_ID_NOT_FOUND`).
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(g) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.as_deref().filter(|_| stable);
        GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.unwrap_or_default().to_owned(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: protocol.map(|p| m.metadata(p)).unwrap_or_default(),
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        }
    }

    /// DeleteGroups for one group: only an Empty group can be deleted (`NON_EMPTY_GROUP`);
    /// an unknown one is `GROUP_ID_NOT_FOUND`. The broker deletes the group's offsets.
    pub fn delete_group(&mut self, group_id: &str, now_ms: u64) -> Result<(), GroupError> {
        self.advance(now_ms);
        let Some(group) = self.groups.get(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        if group.state != GroupState::Empty {
            return Err(GroupError::NonEmptyGroup);
        }
        if let Some(d) = group.indexed_deadline {
            self.deadlines.remove(&(d, group_id.to_owned()));
        }
        self.groups.remove(group_id);
        self.fx.changed.insert(group_id.to_owned());
        Ok(())
    }

    /// Processes everything due by `now_ms`: expired sessions, elapsed rebalance timeouts and
    /// initial delays, members that never sent SyncGroup.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
    }

    /// When [`GroupCoordinator::tick`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// The answers to pending requests produced since the last call, in the order they were
    /// produced.
    pub fn take_completions(&mut self) -> Vec<(Ticket, Completion)> {
        std::mem::take(&mut self.fx.completions)
    }

    /// The groups whose [`GroupCoordinator::snapshot`] changed (or that were deleted) since the
    /// last call, in group id order.
    pub fn take_changed_groups(&mut self) -> Vec<String> {
        std::mem::take(&mut self.fx.changed).into_iter().collect()
    }

    /// The group as of its last Stable or Empty state; `None` for an unknown group.
    pub fn snapshot(&self, group_id: &str) -> Option<GroupSnapshot> {
        self.groups.get(group_id).map(|g| g.durable.clone())
    }

    /// Brings a group back from its snapshot after a restart: Stable with its members, or
    /// Empty. Every member gets a fresh session from `now_ms`, so live consumers heartbeat on
    /// undisturbed and dead ones expire after their session timeout as usual.
    pub fn restore(&mut self, snapshot: GroupSnapshot, now_ms: u64) -> Result<(), RestoreError> {
        self.advance(now_ms);
        if self.groups.contains_key(&snapshot.group_id) {
            return Err(RestoreError::GroupExists {
                group_id: snapshot.group_id,
            });
        }
        let group = Group::from_snapshot(snapshot, now_ms)?;
        let group_id = group.id.clone();
        self.groups.insert(group_id.clone(), group);
        self.reindex(&group_id);
        Ok(())
    }

    fn advance(&mut self, now: u64) {
        while let Some((deadline, group_id)) = self.deadlines.first() {
            if *deadline > now {
                break;
            }
            let (deadline, group_id) = (*deadline, group_id.clone());
            match self.groups.get_mut(&group_id) {
                Some(group) => {
                    // Events are processed at their own deadline, not at `now`, so that the
                    // outcome does not depend on how often the driver ticks.
                    let mut cx = Ctx {
                        cfg: &self.config,
                        fx: &mut self.fx,
                        now: deadline,
                    };
                    group.fire(&mut cx);
                    self.reindex(&group_id);
                }
                None => {
                    self.deadlines.remove(&(deadline, group_id));
                }
            }
        }
    }

    fn reindex(&mut self, group_id: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let next = group.next_deadline();
        if next == group.indexed_deadline {
            return;
        }
        if let Some(old) = group.indexed_deadline {
            self.deadlines.remove(&(old, group_id.to_owned()));
        }
        if let Some(d) = next {
            self.deadlines.insert((d, group_id.to_owned()));
        }
        group.indexed_deadline = next;
    }

    /// Turns a pending reply whose answer is already available into a ready one, so that a
    /// request completed within its own call (a lone member's rejoin) needs no parking.
    fn settle<T>(&mut self, reply: Reply<T>, pick: fn(Completion) -> Option<T>) -> Reply<T> {
        let Reply::Pending(ticket) = reply else {
            return reply;
        };
        let Some(pos) = self.fx.completions.iter().position(|(t, _)| *t == ticket) else {
            return reply;
        };
        // A join ticket only ever completes as a join and a sync ticket as a sync, so `pick`
        // cannot fail here.
        let (_, completion) = self.fx.completions.remove(pos);
        pick(completion).map_or(Reply::Pending(ticket), Reply::Ready)
    }
}

fn join_error(member_id: &str, error: GroupError) -> Reply<JoinResponse> {
    Reply::Ready(JoinResponse {
        member_id: member_id.to_owned(),
        result: Err(error),
    })
}

/// What a call produces besides its direct answer.
struct Effects {
    completions: Vec<(Ticket, Completion)>,
    changed: BTreeSet<String>,
    next_ticket: u64,
    uuids: Box<dyn FnMut() -> Uuid + Send>,
}

impl Effects {
    fn ticket(&mut self) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        ticket
    }

    fn member_id(&mut self, prefix: &str) -> String {
        format!("{prefix}-{}", (self.uuids)().hyphenated())
    }

    fn complete_join(&mut self, ticket: Ticket, response: JoinResponse) {
        self.completions.push((ticket, Completion::Join(response)));
    }

    fn complete_sync(&mut self, ticket: Ticket, response: SyncResponse) {
        self.completions.push((ticket, Completion::Sync(response)));
    }
}

struct Ctx<'a> {
    cfg: &'a GroupConfig,
    fx: &'a mut Effects,
    now: u64,
}

/// A validated JoinGroup.
struct Joining {
    req: JoinRequest,
    session_ms: u64,
    rebalance_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinTimer {
    /// The first rebalance of an Empty group (Kafka's `InitialDelayedJoin`): never completes
    /// early; at the deadline it is extended by up to another delay if members joined
    /// meanwhile, until `remaining_ms` (the rebalance timeout left) runs out.
    Initial {
        deadline: u64,
        delay_ms: u64,
        remaining_ms: u64,
        new_member_added: bool,
    },
    /// Kafka's `DelayedJoin`: completes as soon as every member has rejoined, or at the
    /// deadline without those that did not.
    Normal { deadline: u64 },
}

impl JoinTimer {
    fn deadline(self) -> u64 {
        match self {
            JoinTimer::Initial { deadline, .. } | JoinTimer::Normal { deadline } => deadline,
        }
    }
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<JoinProtocol>,
    assignment: Vec<u8>,
    last_seen_ms: u64,
    /// A JoinGroup waiting for the rebalance to complete.
    join_ticket: Option<Ticket>,
    /// A SyncGroup waiting for the leader's.
    sync_ticket: Option<Ticket>,
}

impl Member {
    fn new(id: String, joining: &Joining, now: u64, join_ticket: Option<Ticket>) -> Member {
        Member {
            id,
            instance_id: joining.req.group_instance_id.clone(),
            client_id: joining.req.client_id.clone(),
            client_host: joining.req.client_host.clone(),
            session_timeout_ms: joining.session_ms,
            rebalance_timeout_ms: joining.rebalance_ms,
            protocols: joining.req.protocols.clone(),
            assignment: Vec::new(),
            last_seen_ms: now,
            join_ticket,
            sync_ticket: None,
        }
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    fn metadata(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// When the session expires. A member waiting in JoinGroup or SyncGroup cannot heartbeat
    /// (its connection is blocked on the answer), so its session is suspended, as in Kafka;
    /// the rebalance timeout bounds that wait instead.
    fn session_deadline(&self) -> Option<u64> {
        if self.join_ticket.is_some() || self.sync_ticket.is_some() {
            None
        } else {
            Some(self.last_seen_ms.saturating_add(self.session_timeout_ms))
        }
    }
}

/// A member that was given an id with `MEMBER_ID_REQUIRED` and has not rejoined yet.
#[derive(Debug)]
struct PendingMember {
    id: String,
    deadline: u64,
}

#[derive(Debug)]
struct Group {
    id: String,
    /// Never Dead: a deleted group is forgotten.
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    /// In join order, which decides the leader when the old one is gone.
    members: Vec<Member>,
    pending_members: Vec<PendingMember>,
    /// Set exactly while PreparingRebalance.
    join_timer: Option<JoinTimer>,
    /// Members of the generation that have not sent SyncGroup yet (Kafka's pending sync):
    /// removed at `sync_deadline`, which is set exactly while this is non-empty.
    pending_sync: BTreeSet<String>,
    sync_deadline: Option<u64>,
    durable: GroupSnapshot,
    indexed_deadline: Option<u64>,
}

impl Group {
    fn new(id: String) -> Group {
        let mut group = Group {
            id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            join_timer: None,
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
            durable: GroupSnapshot {
                group_id: String::new(),
                generation_id: 0,
                protocol_type: None,
                protocol_name: None,
                leader_id: None,
                members: Vec::new(),
            },
            indexed_deadline: None,
        };
        group.durable = group.build_snapshot();
        group
    }

    fn from_snapshot(s: GroupSnapshot, now: u64) -> Result<Group, RestoreError> {
        let bad = |reason: &str| RestoreError::Inconsistent {
            group_id: s.group_id.clone(),
            reason: reason.to_owned(),
        };
        if s.generation_id < 0 {
            return Err(bad("the generation id is negative"));
        }
        let mut ids = BTreeSet::new();
        let mut instances = BTreeSet::new();
        for m in &s.members {
            if m.member_id.is_empty() {
                return Err(bad("a member id is empty"));
            }
            if !ids.insert(m.member_id.as_str()) {
                return Err(bad("a member id appears twice"));
            }
            if let Some(instance) = &m.group_instance_id
                && !instances.insert(instance.as_str())
            {
                return Err(bad("a group instance id appears twice"));
            }
        }
        let mut group = Group::new(s.group_id.clone());
        group.generation_id = s.generation_id;
        group.protocol_type = s.protocol_type.clone();
        if !s.members.is_empty() {
            let Some(protocol) = s.protocol_name.clone().filter(|p| !p.is_empty()) else {
                return Err(bad("the group has members but no protocol"));
            };
            if s.protocol_type.as_deref().is_none_or(str::is_empty) {
                return Err(bad("the group has members but no protocol type"));
            }
            let Some(leader) = s.leader_id.clone().filter(|l| ids.contains(l.as_str())) else {
                return Err(bad("the leader is not a member"));
            };
            group.state = GroupState::Stable;
            group.leader_id = Some(leader);
            group.members = s
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![JoinProtocol {
                        name: protocol.clone(),
                        metadata: m.metadata,
                    }],
                    assignment: m.assignment,
                    last_seen_ms: now,
                    join_ticket: None,
                    sync_ticket: None,
                })
                .collect();
            group.protocol_name = Some(protocol);
        }
        group.durable = group.build_snapshot();
        Ok(group)
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn static_member_id(&self, instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.id.as_str())
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    fn is_pending(&self, member_id: &str) -> bool {
        self.pending_members.iter().any(|p| p.id == member_id)
    }

    /// Kafka's `validateCurrentMember`: an instance id must map to this member id
    /// (`FENCED_INSTANCE_ID` if it maps to another, `UNKNOWN_MEMBER_ID` if to none), and the
    /// member must exist.
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            match self.static_member_id(instance) {
                Some(current) if current != member_id => Err(GroupError::FencedInstanceId),
                Some(_) => Ok(()),
                None => Err(GroupError::UnknownMemberId),
            }
        } else if self.member(member_id).is_none() {
            Err(GroupError::UnknownMemberId)
        } else {
            Ok(())
        }
    }

    fn max_rebalance_timeout_ms(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Whether a member offering these protocols can be in the group with the members other
    /// than `except` (its own previous incarnation).
    fn supports_protocols(
        &self,
        except: Option<&str>,
        protocol_type: &str,
        protocols: &[JoinProtocol],
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if !self.members.is_empty() && self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others = || {
            self.members
                .iter()
                .filter(|m| Some(m.id.as_str()) != except)
        };
        protocols
            .iter()
            .any(|p| others().all(|m| m.supports(&p.name)))
    }

    /// Kafka's vote: among the protocols every member supports, each member votes for the one
    /// it lists first; the most votes wins, ties going to the leader's preference.
    fn select_protocol(&self) -> Option<String> {
        let leader = self
            .leader_id
            .as_deref()
            .and_then(|l| self.member(l))
            .or_else(|| self.members.first())?;
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for p in &leader.protocols {
            if !votes.iter().any(|(name, _)| *name == p.name)
                && self.members.iter().all(|m| m.supports(&p.name))
            {
                votes.push((p.name.as_str(), 0));
            }
        }
        for m in &self.members {
            let choice = m
                .protocols
                .iter()
                .find_map(|p| votes.iter().position(|(name, _)| *name == p.name));
            if let Some((_, count)) = choice.and_then(|i| votes.get_mut(i)) {
                *count += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, c)| count > c) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    fn member_list(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// The current generation as seen by `member_id`, for a member that needs no rebalance.
    fn current_joined(&self, member_id: &str) -> Joined {
        Joined {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol_name.clone().unwrap_or_default(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            skip_assignment: false,
            members: if self.is_leader(member_id) {
                self.member_list()
            } else {
                Vec::new()
            },
        }
    }

    fn build_snapshot(&self) -> GroupSnapshot {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupSnapshot {
            group_id: self.id.clone(),
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberSnapshot {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    metadata: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Records the current (Stable or Empty) state as the durable one.
    fn capture_durable(&mut self, fx: &mut Effects) {
        self.durable = self.build_snapshot();
        fx.changed.insert(self.id.clone());
    }

    fn next_deadline(&self) -> Option<u64> {
        self.pending_members
            .iter()
            .map(|p| p.deadline)
            .chain(self.members.iter().filter_map(Member::session_deadline))
            .chain(self.join_timer.map(JoinTimer::deadline))
            .chain(self.sync_deadline)
            .min()
    }

    // ---- JoinGroup ----

    fn join(&mut self, joining: Joining, cx: &mut Ctx<'_>) -> Reply<JoinResponse> {
        if !self.accepts_joining_member(&joining.req.member_id, cx.cfg.max_group_size) {
            return join_error(&joining.req.member_id, GroupError::GroupMaxSizeReached);
        }
        let reply = if joining.req.member_id.is_empty() {
            self.join_new_member(joining, cx)
        } else {
            self.join_current_member(joining, cx)
        };
        self.try_complete_join(cx);
        reply
    }

    /// Kafka's `acceptJoiningMember`: members already in (or, while preparing, already
    /// rejoined) are always accepted; new ones only below the size limit.
    fn accepts_joining_member(&self, member_id: &str, max: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.member(member_id)
                    .is_some_and(|m| m.join_ticket.is_some())
                    || self
                        .members
                        .iter()
                        .filter(|m| m.join_ticket.is_some())
                        .count()
                        < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.member(member_id).is_some() || self.members.len() < max
            }
        }
    }

    fn join_new_member(&mut self, joining: Joining, cx: &mut Ctx<'_>) -> Reply<JoinResponse> {
        let req = &joining.req;
        let previous = req
            .group_instance_id
            .as_deref()
            .and_then(|i| self.static_member_id(i))
            .map(str::to_owned);
        if !self.supports_protocols(previous.as_deref(), &req.protocol_type, &req.protocols) {
            return join_error(&req.member_id, GroupError::InconsistentGroupProtocol);
        }
        match (&req.group_instance_id, previous) {
            (Some(instance), Some(old_id)) => {
                let new_id = cx.fx.member_id(instance);
                self.replace_static_member(&old_id, new_id, joining, cx)
            }
            (Some(instance), None) => {
                let new_id = cx.fx.member_id(instance);
                self.add_member_and_rebalance(new_id, &joining, cx)
            }
            (None, _) => {
                let new_id = cx.fx.member_id(&req.client_id);
                if req.require_known_member_id {
                    self.pending_members.push(PendingMember {
                        id: new_id.clone(),
                        deadline: cx.now.saturating_add(joining.session_ms),
                    });
                    Reply::Ready(JoinResponse {
                        member_id: new_id,
                        result: Err(GroupError::MemberIdRequired),
                    })
                } else {
                    self.add_member_and_rebalance(new_id, &joining, cx)
                }
            }
        }
    }

    fn join_current_member(&mut self, joining: Joining, cx: &mut Ctx<'_>) -> Reply<JoinResponse> {
        let req = &joining.req;
        let member_id = req.member_id.clone();
        if !self.supports_protocols(Some(&member_id), &req.protocol_type, &req.protocols) {
            return join_error(&member_id, GroupError::InconsistentGroupProtocol);
        }
        if self.is_pending(&member_id) {
            if req.group_instance_id.is_some() {
                return join_error(&member_id, GroupError::UnknownMemberId);
            }
            return self.add_member_and_rebalance(member_id, &joining, cx);
        }
        if let Some(instance) = &req.group_instance_id {
            match self.static_member_id(instance) {
                Some(current) if current != member_id => {
                    return join_error(&member_id, GroupError::FencedInstanceId);
                }
                Some(_) => {}
                None => return join_error(&member_id, GroupError::UnknownMemberId),
            }
        }
        let Some(member) = self.member(&member_id) else {
            return join_error(&member_id, GroupError::UnknownMemberId);
        };
        let unchanged = member.protocols == req.protocols;
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(joining, cx),
            // The member lost its JoinGroup answer: repeat it rather than start over.
            GroupState::CompletingRebalance if unchanged => {
                self.touch(&member_id, cx.now);
                Reply::Ready(JoinResponse {
                    result: Ok(self.current_joined(&member_id)),
                    member_id,
                })
            }
            // A follower without changes just learns the current generation and syncs; the
            // leader's JoinGroup always rebalances, because that is how a consumer leader
            // reacts to metadata changes that its subscription does not show.
            GroupState::Stable if unchanged && !self.is_leader(&member_id) => {
                self.touch(&member_id, cx.now);
                Reply::Ready(JoinResponse {
                    result: Ok(self.current_joined(&member_id)),
                    member_id,
                })
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(joining, cx)
            }
            GroupState::Empty | GroupState::Dead => {
                join_error(&member_id, GroupError::UnknownMemberId)
            }
        }
    }

    fn touch(&mut self, member_id: &str, now: u64) {
        if let Some(m) = self.member_mut(member_id) {
            m.last_seen_ms = now;
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        joining: &Joining,
        cx: &mut Ctx<'_>,
    ) -> Reply<JoinResponse> {
        let ticket = cx.fx.ticket();
        if let Some(JoinTimer::Initial {
            new_member_added, ..
        }) = &mut self.join_timer
        {
            *new_member_added = true;
        }
        self.pending_members.retain(|p| p.id != member_id);
        if self.members.is_empty() {
            self.protocol_type = Some(joining.req.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        self.members
            .push(Member::new(member_id, joining, cx.now, Some(ticket)));
        self.maybe_prepare_rebalance(cx);
        Reply::Pending(ticket)
    }

    fn update_member_and_rebalance(
        &mut self,
        joining: Joining,
        cx: &mut Ctx<'_>,
    ) -> Reply<JoinResponse> {
        let ticket = cx.fx.ticket();
        let Some(member) = self.member_mut(&joining.req.member_id) else {
            return join_error(&joining.req.member_id, GroupError::UnknownMemberId);
        };
        if let Some(old) = member.join_ticket.replace(ticket) {
            cx.fx.complete_join(
                old,
                JoinResponse {
                    member_id: member.id.clone(),
                    result: Err(GroupError::RebalanceInProgress),
                },
            );
        }
        member.protocols = joining.req.protocols;
        member.session_timeout_ms = joining.session_ms;
        member.rebalance_timeout_ms = joining.rebalance_ms;
        member.last_seen_ms = cx.now;
        self.maybe_prepare_rebalance(cx);
        Reply::Pending(ticket)
    }

    /// A static member rejoined with an empty member id (it restarted): the new incarnation
    /// takes over the old one's place under a new member id and the old id is fenced. A Stable
    /// group whose protocol choice does not change keeps its generation and assignment; the
    /// member still has to SyncGroup to learn its assignment.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        joining: Joining,
        cx: &mut Ctx<'_>,
    ) -> Reply<JoinResponse> {
        let previous_leader = self.leader_id.clone().unwrap_or_default();
        let Some(member) = self.member_mut(old_id) else {
            return join_error("", GroupError::UnknownMemberId);
        };
        if let Some(ticket) = member.join_ticket.take() {
            cx.fx.complete_join(
                ticket,
                JoinResponse {
                    member_id: old_id.to_owned(),
                    result: Err(GroupError::FencedInstanceId),
                },
            );
        }
        if let Some(ticket) = member.sync_ticket.take() {
            cx.fx
                .complete_sync(ticket, Err(GroupError::FencedInstanceId));
        }
        member.id = new_id.clone();
        member.client_id = joining.req.client_id;
        member.client_host = joining.req.client_host;
        member.protocols = joining.req.protocols;
        member.session_timeout_ms = joining.session_ms;
        member.rebalance_timeout_ms = joining.rebalance_ms;
        member.last_seen_ms = cx.now;
        if self.is_leader(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }

        if self.state == GroupState::Stable && self.select_protocol() == self.protocol_name {
            let is_leader = self.is_leader(&new_id);
            let joined = Joined {
                generation_id: self.generation_id,
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                protocol_name: self.protocol_name.clone().unwrap_or_default(),
                // The previous leader id: a restarted leader must not believe it leads and
                // compute an assignment that a Stable group would never distribute.
                leader_id: previous_leader,
                skip_assignment: is_leader,
                members: if is_leader {
                    self.member_list()
                } else {
                    Vec::new()
                },
            };
            self.capture_durable(cx.fx);
            return Reply::Ready(JoinResponse {
                member_id: new_id,
                result: Ok(joined),
            });
        }

        let ticket = cx.fx.ticket();
        if let Some(member) = self.member_mut(&new_id) {
            member.join_ticket = Some(ticket);
        }
        // While completing, the leader may already be assigning to the old member id, so the
        // new one would get nothing: rebalance. While preparing, the new member simply waits.
        self.maybe_prepare_rebalance(cx);
        Reply::Pending(ticket)
    }

    fn maybe_prepare_rebalance(&mut self, cx: &mut Ctx<'_>) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(cx);
        }
    }

    fn prepare_rebalance(&mut self, cx: &mut Ctx<'_>) {
        if self.state == GroupState::CompletingRebalance {
            for m in &mut self.members {
                m.assignment.clear();
                if let Some(ticket) = m.sync_ticket.take() {
                    cx.fx
                        .complete_sync(ticket, Err(GroupError::RebalanceInProgress));
                    m.last_seen_ms = cx.now;
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let rebalance_ms = self.max_rebalance_timeout_ms();
        self.join_timer = Some(if self.state == GroupState::Empty {
            let delay_ms = cx.cfg.initial_rebalance_delay_ms;
            JoinTimer::Initial {
                deadline: cx.now.saturating_add(delay_ms),
                delay_ms,
                remaining_ms: rebalance_ms.saturating_sub(delay_ms),
                new_member_added: false,
            }
        } else {
            JoinTimer::Normal {
                deadline: cx.now.saturating_add(rebalance_ms),
            }
        });
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(cx);
    }

    fn try_complete_join(&mut self, cx: &mut Ctx<'_>) {
        if self.state == GroupState::PreparingRebalance
            && matches!(self.join_timer, Some(JoinTimer::Normal { .. }))
            && self.pending_members.is_empty()
            && self.members.iter().all(|m| m.join_ticket.is_some())
        {
            self.complete_join(cx);
        }
    }

    fn on_join_timer(&mut self, cx: &mut Ctx<'_>) {
        match self.join_timer {
            Some(JoinTimer::Initial {
                delay_ms,
                remaining_ms,
                new_member_added: true,
                ..
            }) if remaining_ms > 0 => {
                let delay = cx.cfg.initial_rebalance_delay_ms.min(remaining_ms);
                self.join_timer = Some(JoinTimer::Initial {
                    deadline: cx.now.saturating_add(delay),
                    delay_ms: delay,
                    remaining_ms: remaining_ms.saturating_sub(delay_ms),
                    new_member_added: false,
                });
            }
            _ => self.complete_join(cx),
        }
    }

    /// Kafka's `onCompleteJoin`: drops the dynamic members that did not rejoin (static ones
    /// keep their place, KIP-345), starts the next generation and answers every waiting
    /// JoinGroup.
    fn complete_join(&mut self, cx: &mut Ctx<'_>) {
        self.join_timer = None;
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.join_ticket.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id, cx.fx);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Only static members that have not rejoined are left: wait for them (or for
            // their sessions to expire). At least 1 ms, so that a zero rebalance timeout
            // cannot spin.
            let wait = self.max_rebalance_timeout_ms().max(1);
            self.join_timer = Some(JoinTimer::Normal {
                deadline: cx.now.saturating_add(wait),
            });
            return;
        }
        self.generation_id = self.generation_id.saturating_add(1);
        self.pending_sync.clear();
        self.sync_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.capture_durable(cx.fx);
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let mut joined = self.current_joined("");
        let leader_list = self.member_list();
        let leader = self.leader_id.clone().unwrap_or_default();
        for m in &mut self.members {
            if let Some(ticket) = m.join_ticket.take() {
                joined.members = if m.id == leader {
                    leader_list.clone()
                } else {
                    Vec::new()
                };
                cx.fx.complete_join(
                    ticket,
                    JoinResponse {
                        member_id: m.id.clone(),
                        result: Ok(joined.clone()),
                    },
                );
            }
            m.last_seen_ms = cx.now;
            self.pending_sync.insert(m.id.clone());
        }
        self.sync_deadline = Some(cx.now.saturating_add(self.max_rebalance_timeout_ms()));
    }

    /// Keeps the leader if it rejoined, else picks the first member that did.
    fn elect_joined_leader(&mut self) -> bool {
        let leader_rejoined = self
            .leader_id
            .as_deref()
            .and_then(|l| self.member(l))
            .is_some_and(|m| m.join_ticket.is_some());
        if leader_rejoined {
            return true;
        }
        match self.members.iter().find(|m| m.join_ticket.is_some()) {
            Some(m) => {
                self.leader_id = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    /// Removes a member without rebalancing; its waiting requests fail with
    /// `UNKNOWN_MEMBER_ID`.
    fn remove_member(&mut self, member_id: &str, fx: &mut Effects) {
        let Some(index) = self.members.iter().position(|m| m.id == member_id) else {
            return;
        };
        let member = self.members.remove(index);
        if let Some(ticket) = member.join_ticket {
            fx.complete_join(
                ticket,
                JoinResponse {
                    member_id: String::new(),
                    result: Err(GroupError::UnknownMemberId),
                },
            );
        }
        if let Some(ticket) = member.sync_ticket {
            fx.complete_sync(ticket, Err(GroupError::UnknownMemberId));
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.first().map(|m| m.id.clone());
        }
        self.drop_pending_sync(member_id);
    }

    /// Kafka's `removeMemberAndUpdateGroup`.
    fn remove_member_and_update(&mut self, member_id: &str, cx: &mut Ctx<'_>) {
        self.remove_member(member_id, cx.fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(cx)
            }
            GroupState::PreparingRebalance => self.try_complete_join(cx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn drop_pending_sync(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup, OffsetCommit ----

    fn sync(&mut self, req: SyncRequest, cx: &mut Ctx<'_>) -> Reply<SyncResponse> {
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Reply::Ready(Err(e));
        }
        if req.generation_id != self.generation_id {
            return Reply::Ready(Err(GroupError::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|p| self.protocol_type.as_ref() != Some(p))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| self.protocol_name.as_ref() != Some(p))
        {
            return Reply::Ready(Err(GroupError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Reply::Ready(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Ready(Err(GroupError::RebalanceInProgress)),
            GroupState::CompletingRebalance => {
                let ticket = cx.fx.ticket();
                let Some(member) = self.member_mut(&req.member_id) else {
                    return Reply::Ready(Err(GroupError::UnknownMemberId));
                };
                member.last_seen_ms = cx.now;
                if let Some(old) = member.sync_ticket.replace(ticket) {
                    cx.fx
                        .complete_sync(old, Err(GroupError::RebalanceInProgress));
                }
                self.drop_pending_sync(&req.member_id);
                if self.is_leader(&req.member_id) {
                    self.apply_assignment(req.assignments, cx);
                }
                Reply::Pending(ticket)
            }
            GroupState::Stable => {
                self.drop_pending_sync(&req.member_id);
                let protocol_type = self.protocol_type.clone().unwrap_or_default();
                let protocol_name = self.protocol_name.clone().unwrap_or_default();
                let Some(member) = self.member_mut(&req.member_id) else {
                    return Reply::Ready(Err(GroupError::UnknownMemberId));
                };
                member.last_seen_ms = cx.now;
                Reply::Ready(Ok(Synced {
                    protocol_type,
                    protocol_name,
                    assignment: member.assignment.clone(),
                }))
            }
        }
    }

    /// The leader's SyncGroup: store the assignment, become Stable, answer every waiting
    /// SyncGroup.
    fn apply_assignment(&mut self, assignments: Vec<MemberAssignment>, cx: &mut Ctx<'_>) {
        let mut by_member: BTreeMap<String, Vec<u8>> = assignments
            .into_iter()
            .map(|a| (a.member_id, a.assignment))
            .collect();
        self.state = GroupState::Stable;
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        for m in &mut self.members {
            m.assignment = by_member.remove(&m.id).unwrap_or_default();
            if let Some(ticket) = m.sync_ticket.take() {
                cx.fx.complete_sync(
                    ticket,
                    Ok(Synced {
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    }),
                );
                m.last_seen_ms = cx.now;
            }
        }
        self.capture_durable(cx.fx);
    }

    fn heartbeat(&mut self, req: &HeartbeatRequest, now: u64) -> Result<(), GroupError> {
        self.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                self.touch(&req.member_id, now);
                Err(GroupError::RebalanceInProgress)
            }
            // Consumers may heartbeat between their JoinGroup answer and SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(&req.member_id, now);
                Ok(())
            }
        }
    }

    fn leave_one(&mut self, leaving: &LeavingMember, cx: &mut Ctx<'_>) -> Result<(), GroupError> {
        let instance = leaving.group_instance_id.as_deref();
        if leaving.member_id.is_empty() {
            let Some(current) = instance
                .and_then(|i| self.static_member_id(i))
                .map(str::to_owned)
            else {
                return Err(GroupError::UnknownMemberId);
            };
            self.remove_member_and_update(&current, cx);
            return Ok(());
        }
        if self.is_pending(&leaving.member_id) {
            self.pending_members.retain(|p| p.id != leaving.member_id);
            self.try_complete_join(cx);
            return Ok(());
        }
        self.validate_member(&leaving.member_id, instance)?;
        self.remove_member_and_update(&leaving.member_id, cx);
        Ok(())
    }

    fn check_commit(
        &mut self,
        member_id: &str,
        generation_id: i32,
        instance_id: Option<&str>,
        now: u64,
    ) -> Result<(), GroupError> {
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation_id != self.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        match self.state {
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable | GroupState::PreparingRebalance => {
                self.touch(member_id, now);
                Ok(())
            }
            GroupState::Empty | GroupState::Dead => Ok(()),
        }
    }

    // ---- Timers ----

    /// Processes everything due at `cx.now`.
    fn fire(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let pending = self.pending_members.len();
        self.pending_members.retain(|p| p.deadline > now);
        if self.pending_members.len() != pending {
            self.try_complete_join(cx);
        }

        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.session_deadline().is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            // An earlier removal may have completed a rebalance and renewed this session.
            let still_expired = self
                .member(&id)
                .and_then(Member::session_deadline)
                .is_some_and(|d| d <= now);
            if still_expired {
                self.remove_member_and_update(&id, cx);
            }
        }

        if self.join_timer.is_some_and(|t| t.deadline() <= now) {
            if self.state == GroupState::PreparingRebalance {
                self.on_join_timer(cx);
            } else {
                self.join_timer = None;
            }
        }

        if self.sync_deadline.is_some_and(|d| d <= now) {
            self.sync_deadline = None;
            let late = std::mem::take(&mut self.pending_sync);
            if !late.is_empty()
                && matches!(
                    self.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                )
            {
                for id in &late {
                    self.remove_member(id, cx.fx);
                }
                self.prepare_rebalance(cx);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_000_000;
    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn uuid(n: u128) -> String {
        Uuid::from_u128(n).hyphenated().to_string()
    }

    fn coordinator(config: GroupConfig) -> GroupCoordinator {
        let mut n = 0u128;
        GroupCoordinator::with_uuid_source(config, move || {
            n += 1;
            Uuid::from_u128(n)
        })
    }

    fn config(delay_ms: u64) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: delay_ms,
            ..GroupConfig::default()
        }
    }

    fn protocols(client: &str, names: &[&str]) -> Vec<JoinProtocol> {
        names
            .iter()
            .map(|n| JoinProtocol {
                name: (*n).to_owned(),
                metadata: format!("{client}/{n}").into_bytes(),
            })
            .collect()
    }

    fn join_req(group: &str, member_id: &str, client: &str, names: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: group.to_owned(),
            member_id: member_id.to_owned(),
            group_instance_id: None,
            client_id: client.to_owned(),
            client_host: format!("/10.0.0.1:{}", client.len()),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".to_owned(),
            protocols: protocols(client, names),
            require_known_member_id: false,
        }
    }

    fn static_req(group: &str, member_id: &str, instance: &str, names: &[&str]) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some(instance.to_owned()),
            ..join_req(group, member_id, instance, names)
        }
    }

    fn sync_req(
        group: &str,
        member: &str,
        generation: i32,
        assign: &[(&str, &str)],
    ) -> SyncRequest {
        SyncRequest {
            group_id: group.to_owned(),
            member_id: member.to_owned(),
            generation_id: generation,
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: assign
                .iter()
                .map(|(m, a)| MemberAssignment {
                    member_id: (*m).to_owned(),
                    assignment: a.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    fn hb(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: group.to_owned(),
            member_id: member.to_owned(),
            generation_id: generation,
            group_instance_id: None,
        }
    }

    fn ready<T: fmt::Debug>(reply: Reply<T>) -> T {
        match reply {
            Reply::Ready(v) => v,
            Reply::Pending(t) => panic!("expected an answer, got pending {t:?}"),
        }
    }

    fn pending<T: fmt::Debug>(reply: Reply<T>) -> Ticket {
        match reply {
            Reply::Pending(t) => t,
            Reply::Ready(v) => panic!("expected pending, got {v:?}"),
        }
    }

    fn ok_join(r: JoinResponse) -> (String, Joined) {
        let joined = r
            .result
            .unwrap_or_else(|e| panic!("join of {} failed: {e}", r.member_id));
        (r.member_id, joined)
    }

    /// Checks every structural invariant of the coordinator.
    fn invariants(c: &GroupCoordinator) -> Result<(), String> {
        let mut indexed = 0;
        for (id, g) in &c.groups {
            let fail = |msg: &str| Err(format!("group {id} in {}: {msg}", g.state));
            if g.id != *id {
                return fail("id mismatch");
            }
            let ids: BTreeSet<&str> = g.members.iter().map(|m| m.id.as_str()).collect();
            if ids.len() != g.members.len() {
                return fail("duplicate member id");
            }
            let instances: Vec<&str> = g
                .members
                .iter()
                .filter_map(|m| m.instance_id.as_deref())
                .collect();
            if instances.iter().collect::<BTreeSet<_>>().len() != instances.len() {
                return fail("duplicate instance id");
            }
            if g.pending_members
                .iter()
                .any(|p| ids.contains(p.id.as_str()))
            {
                return fail("a pending member is also a member");
            }
            match (&g.leader_id, g.members.is_empty()) {
                (Some(l), false) if ids.contains(l.as_str()) => {}
                (None, true) => {}
                _ => return fail("the leader is not a member"),
            }
            match g.state {
                GroupState::Dead => return fail("a Dead group is kept"),
                GroupState::Empty if !g.members.is_empty() => return fail("Empty with members"),
                GroupState::Stable if g.members.is_empty() => {
                    return fail("Stable without members");
                }
                _ => {}
            }
            if matches!(
                g.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ) {
                let Some(p) = &g.protocol_name else {
                    return fail("no protocol");
                };
                if g.protocol_type.is_none() || !g.members.iter().all(|m| m.supports(p)) {
                    return fail("a member does not support the protocol");
                }
            }
            if g.join_timer.is_some() != (g.state == GroupState::PreparingRebalance) {
                return fail("join timer outside PreparingRebalance");
            }
            if g.members.iter().any(|m| m.join_ticket.is_some())
                && g.state != GroupState::PreparingRebalance
            {
                return fail("a waiting JoinGroup outside PreparingRebalance");
            }
            if g.members.iter().any(|m| m.sync_ticket.is_some())
                && g.state != GroupState::CompletingRebalance
            {
                return fail("a waiting SyncGroup outside CompletingRebalance");
            }
            if !g.pending_sync.iter().all(|p| ids.contains(p.as_str())) {
                return fail("a pending sync is not a member");
            }
            if g.sync_deadline.is_some() == g.pending_sync.is_empty() {
                return fail("sync deadline without pending syncs, or the reverse");
            }
            if !g.pending_sync.is_empty()
                && !matches!(
                    g.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                )
            {
                return fail("pending syncs outside a generation");
            }
            if g.indexed_deadline != g.next_deadline() {
                return fail("stale deadline index");
            }
            if let Some(d) = g.indexed_deadline {
                if !c.deadlines.contains(&(d, id.clone())) {
                    return fail("deadline missing from the index");
                }
                indexed += 1;
            }
        }
        if c.deadlines.len() != indexed {
            return Err(format!(
                "{} index entries for {indexed} deadlines",
                c.deadlines.len()
            ));
        }
        Ok(())
    }

    /// A coordinator with a fake clock that checks invariants and "exactly once" after every
    /// call.
    struct H {
        c: GroupCoordinator,
        now: u64,
        done: BTreeMap<Ticket, Completion>,
        seen: BTreeSet<Ticket>,
    }

    impl H {
        fn new(config: GroupConfig) -> H {
            H {
                c: coordinator(config),
                now: T0,
                done: BTreeMap::new(),
                seen: BTreeSet::new(),
            }
        }

        fn drain(&mut self) {
            for (t, completion) in self.c.take_completions() {
                assert!(self.seen.insert(t), "ticket {t:?} completed twice");
                self.done.insert(t, completion);
            }
            invariants(&self.c).unwrap();
        }

        fn join(&mut self, req: JoinRequest) -> Reply<JoinResponse> {
            let r = self.c.join(req, self.now);
            self.drain();
            r
        }

        fn sync(&mut self, req: SyncRequest) -> Reply<SyncResponse> {
            let r = self.c.sync(req, self.now);
            self.drain();
            r
        }

        fn heartbeat(
            &mut self,
            group: &str,
            member: &str,
            generation: i32,
        ) -> Result<(), GroupError> {
            let r = self.c.heartbeat(hb(group, member, generation), self.now);
            self.drain();
            r
        }

        fn leave(
            &mut self,
            group: &str,
            members: &[(&str, Option<&str>)],
        ) -> Vec<Result<(), GroupError>> {
            let request = LeaveRequest {
                group_id: group.to_owned(),
                members: members
                    .iter()
                    .map(|(m, i)| LeavingMember {
                        member_id: (*m).to_owned(),
                        group_instance_id: i.map(str::to_owned),
                    })
                    .collect(),
            };
            let r = self.c.leave(request, self.now).unwrap();
            self.drain();
            r.into_iter().map(|l| l.result).collect()
        }

        fn tick(&mut self, now: u64) {
            self.now = now;
            self.c.tick(now);
            self.drain();
        }

        fn joined(&mut self, t: Ticket) -> JoinResponse {
            match self.done.remove(&t) {
                Some(Completion::Join(r)) => r,
                other => panic!("ticket {t:?}: expected a join completion, got {other:?}"),
            }
        }

        fn synced(&mut self, t: Ticket) -> SyncResponse {
            match self.done.remove(&t) {
                Some(Completion::Sync(r)) => r,
                other => panic!("ticket {t:?}: expected a sync completion, got {other:?}"),
            }
        }

        fn state(&self, group: &str) -> GroupState {
            self.c.describe_group(group).state
        }

        fn generation(&self, group: &str) -> i32 {
            self.c.groups[group].generation_id
        }

        /// Joins `requests` at once, lets the rebalance complete and syncs everyone, the
        /// leader assigning `"{member_id}:assigned"`. Returns the member ids in request order.
        fn stable_group(&mut self, requests: Vec<JoinRequest>) -> Vec<String> {
            let group = requests[0].group_id.clone();
            let replies: Vec<Reply<JoinResponse>> =
                requests.into_iter().map(|r| self.join(r)).collect();
            let pending_joins: Vec<Ticket> = replies
                .iter()
                .filter_map(|r| match r {
                    Reply::Pending(t) => Some(*t),
                    Reply::Ready(_) => None,
                })
                .collect();
            while pending_joins.iter().any(|t| !self.done.contains_key(t)) {
                let next = self
                    .c
                    .next_deadline()
                    .expect("the rebalance must have a deadline");
                self.tick(next);
            }
            let joins: Vec<(String, Joined)> = replies
                .into_iter()
                .map(|r| match r {
                    Reply::Ready(r) => ok_join(r),
                    Reply::Pending(t) => ok_join(self.joined(t)),
                })
                .collect();
            let leader = joins[0].1.leader_id.clone();
            let generation = joins[0].1.generation_id;
            assert!(joins.iter().all(|(_, j)| j.generation_id == generation));
            let ids: Vec<String> = joins.iter().map(|(id, _)| id.clone()).collect();
            let assignment: Vec<(String, String)> = ids
                .iter()
                .map(|id| (id.clone(), format!("{id}:assigned")))
                .collect();
            let assign: Vec<(&str, &str)> = assignment
                .iter()
                .map(|(m, a)| (m.as_str(), a.as_str()))
                .collect();
            let followers: Vec<Ticket> = joins
                .iter()
                .filter(|(id, _)| *id != leader)
                .map(|(id, _)| pending(self.sync(sync_req(&group, id, generation, &[]))))
                .collect();
            ready(self.sync(sync_req(&group, &leader, generation, &assign))).unwrap();
            for t in followers {
                self.synced(t).unwrap();
            }
            assert_eq!(self.state(&group), GroupState::Stable);
            ids
        }
    }

    #[test]
    fn kafka_codes() {
        let codes = [
            (GroupError::IllegalGeneration, 22),
            (GroupError::InconsistentGroupProtocol, 23),
            (GroupError::InvalidGroupId, 24),
            (GroupError::UnknownMemberId, 25),
            (
                GroupError::InvalidSessionTimeout {
                    requested_ms: 1,
                    min_ms: 2,
                    max_ms: 3,
                },
                26,
            ),
            (GroupError::RebalanceInProgress, 27),
            (GroupError::NonEmptyGroup, 68),
            (GroupError::GroupIdNotFound, 69),
            (GroupError::MemberIdRequired, 79),
            (GroupError::GroupMaxSizeReached, 81),
            (GroupError::FencedInstanceId, 82),
        ];
        for (error, code) in codes {
            assert_eq!(error.kafka_code(), code, "{error:?}");
        }
    }

    #[test]
    fn state_names_are_kafkas() {
        let names: Vec<&str> = [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .into_iter()
        .map(GroupState::as_str)
        .collect();
        assert_eq!(
            names,
            [
                "Empty",
                "PreparingRebalance",
                "CompletingRebalance",
                "Stable",
                "Dead"
            ]
        );
        assert_eq!(GroupState::Stable.to_string(), "Stable");
    }

    #[test]
    fn member_id_required_round_trip() {
        let mut h = H::new(config(0));
        let mut req = join_req("g", "", "c1", &["range"]);
        req.require_known_member_id = true;

        let r = ready(h.join(req.clone()));
        assert_eq!(r.result, Err(GroupError::MemberIdRequired));
        assert_eq!(r.member_id, format!("c1-{}", uuid(1)));
        assert_eq!(h.state("g"), GroupState::Empty);
        assert!(h.c.describe_group("g").members.is_empty());

        let mut bogus = req.clone();
        bogus.member_id = "c1-made-up".to_owned();
        assert_eq!(
            ready(h.join(bogus)).result,
            Err(GroupError::UnknownMemberId)
        );

        req.member_id = r.member_id.clone();
        // No initial delay: the lone member's generation completes within its own call.
        let (id, joined) = ok_join(ready(h.join(req)));
        assert_eq!(id, r.member_id);
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader_id, id);
        assert_eq!(joined.protocol_type, "consumer");
        assert_eq!(joined.protocol_name, "range");
        assert!(!joined.skip_assignment);
        assert_eq!(
            joined.members,
            [JoinedMember {
                member_id: id.clone(),
                group_instance_id: None,
                metadata: b"c1/range".to_vec(),
            }]
        );
        assert_eq!(h.state("g"), GroupState::CompletingRebalance);
        assert!(h.done.is_empty());
    }

    #[test]
    fn unused_member_id_holds_the_rebalance_until_it_expires() {
        let mut h = H::new(config(0));
        let a = h
            .stable_group(vec![join_req("g", "", "a", &["range"])])
            .remove(0);

        let mut newcomer = join_req("g", "", "b", &["range"]);
        newcomer.require_known_member_id = true;
        let b = ready(h.join(newcomer.clone())).member_id;
        assert_eq!(
            h.state("g"),
            GroupState::Stable,
            "MEMBER_ID_REQUIRED alone does not rebalance"
        );

        // The leader rejoins. Every member has rejoined, but the id handed out above may still
        // come back, so the rebalance waits for it until it expires (its session timeout).
        let t = pending(h.join(join_req("g", &a, "a", &["range"])));
        h.tick(h.now + u64::from(SESSION.unsigned_abs()) - 1);
        assert!(h.done.is_empty());
        h.tick(h.now + 1);
        let (_, joined) = ok_join(h.joined(t));
        assert_eq!(joined.generation_id, 2);
        assert_eq!(joined.members.len(), 1);

        newcomer.member_id = b;
        assert_eq!(
            ready(h.join(newcomer)).result,
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn three_members_form_one_generation_and_vote_on_the_protocol() {
        let mut h = H::new(config(3_000));
        let ta = pending(h.join(join_req("g", "", "a", &["range", "roundrobin"])));
        h.now += 100;
        let tb = pending(h.join(join_req("g", "", "b", &["roundrobin", "range"])));
        h.now += 100;
        let tc = pending(h.join(join_req("g", "", "c", &["roundrobin", "range", "sticky"])));
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);

        // The initial delay (3 s from the first join) is extended once because members
        // joined during it, and then completes.
        h.tick(T0 + 2_999);
        assert!(h.done.is_empty());
        h.tick(T0 + 3_000);
        assert!(h.done.is_empty());
        assert_eq!(h.c.next_deadline(), Some(T0 + 6_000));
        h.tick(T0 + 6_000);

        let (a, ja) = ok_join(h.joined(ta));
        let (b, jb) = ok_join(h.joined(tb));
        let (c, jc) = ok_join(h.joined(tc));
        assert_eq!(a, format!("a-{}", uuid(1)));
        for j in [&ja, &jb, &jc] {
            assert_eq!(j.generation_id, 1);
            assert_eq!(j.leader_id, a, "the first member to join leads");
            // Two votes for roundrobin, one for range; sticky is not supported by everyone.
            assert_eq!(j.protocol_name, "roundrobin");
        }
        let leader_view: Vec<(&str, &[u8])> = ja
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), m.metadata.as_slice()))
            .collect();
        assert_eq!(
            leader_view,
            [
                (a.as_str(), b"a/roundrobin".as_slice()),
                (b.as_str(), b"b/roundrobin".as_slice()),
                (c.as_str(), b"c/roundrobin".as_slice()),
            ]
        );
        assert!(jb.members.is_empty() && jc.members.is_empty());
        assert_eq!(h.state("g"), GroupState::CompletingRebalance);
        assert_eq!(
            h.c.list_groups(),
            [GroupOverview {
                group_id: "g".to_owned(),
                protocol_type: "consumer".to_owned(),
                state: GroupState::CompletingRebalance,
            }]
        );
    }

    #[test]
    fn a_tied_vote_goes_to_the_leaders_preference_and_the_leader_stays() {
        let mut h = H::new(config(0));
        let a = h
            .stable_group(vec![join_req("g", "", "a", &["x", "y"])])
            .remove(0);
        let tb = pending(h.join(join_req("g", "", "b", &["y", "x"])));
        assert_eq!(
            h.heartbeat("g", &a, 1),
            Err(GroupError::RebalanceInProgress)
        );
        let (_, ja) = ok_join(ready(h.join(join_req("g", &a, "a", &["x", "y"]))));
        let (_, jb) = ok_join(h.joined(tb));
        assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
        assert_eq!(ja.protocol_name, "x");
        assert_eq!(jb.leader_id, a);
        assert_eq!(ja.members.len(), 2);
    }

    #[test]
    fn the_leaders_sync_answers_the_waiting_followers() {
        let mut h = H::new(config(3_000));
        let ta = pending(h.join(join_req("g", "", "a", &["range"])));
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        let tc = pending(h.join(join_req("g", "", "c", &["range"])));
        h.tick(T0 + 6_000);
        let (a, _) = ok_join(h.joined(ta));
        let (b, _) = ok_join(h.joined(tb));
        let (c, _) = ok_join(h.joined(tc));

        let sb = pending(h.sync(sync_req(
            "g",
            &b,
            1,
            &[("ignored", "followers do not assign")],
        )));
        h.now += 1_000;
        let sc = pending(h.sync(sync_req("g", &c, 1, &[])));
        assert!(h.done.is_empty(), "followers wait for the leader");
        assert_eq!(
            h.heartbeat("g", &a, 1),
            Ok(()),
            "heartbeats are fine while completing"
        );

        let mut leader = sync_req("g", &a, 1, &[(&a, "for a"), (&b, "for b"), ("ghost", "x")]);
        leader.protocol_type = Some("consumer".to_owned());
        leader.protocol_name = Some("range".to_owned());
        let synced = ready(h.sync(leader)).unwrap();
        assert_eq!(
            synced,
            Synced {
                protocol_type: "consumer".to_owned(),
                protocol_name: "range".to_owned(),
                assignment: b"for a".to_vec(),
            }
        );
        assert_eq!(h.synced(sb).unwrap().assignment, b"for b");
        assert_eq!(
            h.synced(sc).unwrap().assignment,
            b"",
            "left out: empty assignment"
        );
        assert_eq!(h.state("g"), GroupState::Stable);

        // Once Stable, a SyncGroup is answered at once with the stored assignment.
        assert_eq!(
            ready(h.sync(sync_req("g", &b, 1, &[]))).unwrap().assignment,
            b"for b"
        );
        let described = h.c.describe_group("g");
        assert_eq!(described.protocol_name, "range");
        assert_eq!(described.members[1].assignment, b"for b");
        assert_eq!(described.members[1].metadata, b"b/range");
    }

    #[test]
    fn followers_waiting_in_sync_do_not_expire_while_the_leader_assigns() {
        let mut h = H::new(config(3_000));
        let ta = pending(h.join(join_req("g", "", "a", &["range"])));
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        h.tick(T0 + 6_000);
        let (a, _) = ok_join(h.joined(ta));
        let (b, _) = ok_join(h.joined(tb));
        let sb = pending(h.sync(sync_req("g", &b, 1, &[])));
        // A slow assignor: the leader heartbeats, then syncs after b's session (10 s from
        // its SyncGroup) would have run out had b not been waiting.
        h.now = T0 + 14_000;
        assert_eq!(h.heartbeat("g", &a, 1), Ok(()));
        h.tick(T0 + 18_000);
        assert!(h.done.is_empty());
        ready(h.sync(sync_req("g", &a, 1, &[(&b, "for b")]))).unwrap();
        assert_eq!(h.synced(sb).unwrap().assignment, b"for b");
        // Answered, b's session runs again from now.
        assert_eq!(h.c.next_deadline(), Some(T0 + 28_000));
    }

    #[test]
    fn heartbeat_during_a_rebalance_asks_members_to_rejoin() {
        let mut h = H::new(config(3_000));
        let ids = h.stable_group(vec![
            join_req("g", "", "a", &["range"]),
            join_req("g", "", "b", &["range"]),
        ]);
        let (a, b) = (&ids[0], &ids[1]);
        let td = pending(h.join(join_req("g", "", "d", &["range"])));
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat("g", a, 1), Err(GroupError::RebalanceInProgress));
        assert_eq!(
            ready(h.sync(sync_req("g", b, 1, &[]))),
            Err(GroupError::RebalanceInProgress)
        );
        let ta = pending(h.join(join_req("g", a, "a", &["range"])));
        // The last member to rejoin completes the rebalance at once, no timeout needed.
        let (_, jb) = ok_join(ready(h.join(join_req("g", b, "b", &["range"]))));
        let (_, ja) = ok_join(h.joined(ta));
        let (d, jd) = ok_join(h.joined(td));
        assert_eq!(
            (ja.generation_id, jb.generation_id, jd.generation_id),
            (2, 2, 2)
        );
        assert_eq!(ja.leader_id, *a);
        assert_eq!(ja.members.len(), 3);
        assert_eq!(h.heartbeat("g", a, 1), Err(GroupError::IllegalGeneration));
        assert_eq!(h.heartbeat("g", &d, 2), Ok(()));
    }

    #[test]
    fn an_expired_session_rebalances_the_survivors() {
        let mut h = H::new(config(3_000));
        let ids = h.stable_group(vec![
            join_req("g", "", "a", &["range"]),
            join_req("g", "", "b", &["range"]),
            join_req("g", "", "c", &["range"]),
        ]);
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        let synced_at = h.now;
        // b is SIGKILLed: a and c keep heartbeating, b never does again.
        for step in 1..=3 {
            h.now = synced_at + step * 3_000;
            assert_eq!(h.heartbeat("g", a, 1), Ok(()));
            assert_eq!(h.heartbeat("g", c, 1), Ok(()));
        }
        let b_expires = synced_at + 10_000;
        assert_eq!(h.c.next_deadline(), Some(b_expires));
        h.tick(b_expires - 1);
        assert_eq!(h.state("g"), GroupState::Stable);
        h.tick(b_expires);
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat("g", b, 1), Err(GroupError::UnknownMemberId));
        assert_eq!(h.heartbeat("g", a, 1), Err(GroupError::RebalanceInProgress));

        let ta = pending(h.join(join_req("g", a, "a", &["range"])));
        let (_, jc) = ok_join(ready(h.join(join_req("g", c, "c", &["range"]))));
        let (_, ja) = ok_join(h.joined(ta));
        assert_eq!(jc.generation_id, 2);
        let members: Vec<&str> = ja.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(members, [a.as_str(), c.as_str()]);
    }

    #[test]
    fn a_leader_that_dies_before_syncing_fails_the_waiting_syncs() {
        let mut h = H::new(config(3_000));
        let ta = pending(h.join(join_req("g", "", "a", &["range"])));
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        let tc = pending(h.join(join_req("g", "", "c", &["range"])));
        h.tick(T0 + 6_000);
        let (a, _) = ok_join(h.joined(ta));
        let (b, _) = ok_join(h.joined(tb));
        let (c, _) = ok_join(h.joined(tc));
        let sb = pending(h.sync(sync_req("g", &b, 1, &[])));
        let sc = pending(h.sync(sync_req("g", &c, 1, &[])));

        // The leader got its JoinGroup answer and was SIGKILLed. Followers waiting in
        // SyncGroup cannot heartbeat, so their sessions are on hold; the leader's is not.
        h.tick(T0 + 6_000 + 10_000);
        assert_eq!(h.synced(sb), Err(GroupError::RebalanceInProgress));
        assert_eq!(h.synced(sc), Err(GroupError::RebalanceInProgress));
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat("g", &a, 1), Err(GroupError::UnknownMemberId));

        let tb = pending(h.join(join_req("g", &b, "b", &["range"])));
        let (_, jc) = ok_join(ready(h.join(join_req("g", &c, "c", &["range"]))));
        let (_, jb) = ok_join(h.joined(tb));
        assert_eq!(jc.generation_id, 2);
        assert_eq!(jb.leader_id, b, "the next member in join order leads");
        assert_eq!(jb.members.len(), 2);
    }

    #[test]
    fn a_member_that_never_syncs_is_removed_at_the_rebalance_timeout() {
        let mut h = H::new(config(0));
        let mut slow = join_req("g", "", "b", &["range"]);
        slow.session_timeout_ms = 60_000;
        slow.rebalance_timeout_ms = 20_000;
        let mut fast = join_req("g", "", "a", &["range"]);
        fast.rebalance_timeout_ms = 20_000;
        let (a, _) = ok_join(ready(h.join(fast.clone())));
        ready(h.sync(sync_req("g", &a, 1, &[]))).unwrap();
        let tb = pending(h.join(slow));
        fast.member_id = a.clone();
        let (_, ja) = ok_join(ready(h.join(fast)));
        let (b, _) = ok_join(h.joined(tb));
        assert_eq!(ja.generation_id, 2);
        let completed_at = h.now;
        ready(h.sync(sync_req("g", &a, 2, &[(&a, "everything")]))).unwrap();
        assert_eq!(h.state("g"), GroupState::Stable);
        for at in [9_000, 18_000] {
            h.now = completed_at + at;
            assert_eq!(h.heartbeat("g", &a, 2), Ok(()));
        }
        // b got its JoinGroup answer but never sent SyncGroup; its session (60 s) would
        // last longer than the rebalance timeout (20 s) that bounds the sync.
        h.tick(completed_at + 20_000);
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat("g", &b, 2), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn leave_in_a_batch_rebalances_the_rest() {
        let mut h = H::new(config(3_000));
        let ids = h.stable_group(vec![
            join_req("g", "", "a", &["range"]),
            join_req("g", "", "b", &["range"]),
            static_req("g", "", "c", &["range"]),
        ]);
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        assert_eq!(
            c,
            &format!("c-{}", uuid(3)),
            "static member ids start with the instance id"
        );
        h.c.take_changed_groups();

        let results = h.leave(
            "g",
            &[
                (b, None),
                ("", Some("c")),
                ("nobody", None),
                (a, Some("not-a")),
            ],
        );
        assert_eq!(
            results,
            [
                Ok(()),
                Ok(()),
                Err(GroupError::UnknownMemberId),
                Err(GroupError::UnknownMemberId),
            ]
        );
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat("g", c, 1), Err(GroupError::UnknownMemberId));
        assert_eq!(h.heartbeat("g", a, 1), Err(GroupError::RebalanceInProgress));
        let (_, ja) = ok_join(ready(h.join(join_req("g", a, "a", &["range"]))));
        assert_eq!(ja.generation_id, 2);
        assert_eq!(ja.members.len(), 1);

        assert_eq!(h.leave("g", &[(a, None)]), [Ok(())]);
        assert_eq!(h.state("g"), GroupState::Empty);
        assert_eq!(h.generation("g"), 3, "becoming Empty is a generation too");
        assert_eq!(h.c.take_changed_groups(), ["g"]);
        let snapshot = h.c.snapshot("g").unwrap();
        assert_eq!((snapshot.generation_id, snapshot.members.len()), (3, 0));

        assert_eq!(
            h.leave("unknown", &[(a, None)]),
            [Err(GroupError::UnknownMemberId)]
        );
        let empty_id = LeaveRequest {
            group_id: String::new(),
            members: Vec::new(),
        };
        assert_eq!(h.c.leave(empty_id, h.now), Err(GroupError::InvalidGroupId));
    }

    #[test]
    fn removing_a_member_fails_its_waiting_join() {
        let mut h = H::new(config(3_000));
        let ids = h.stable_group(vec![
            join_req("g", "", "a", &["range"]),
            static_req("g", "", "s", &["range"]),
        ]);
        let td = pending(h.join(join_req("g", "", "d", &["range"])));
        let ts = pending(h.join(static_req("g", &ids[1], "s", &["range"])));
        // The admin client removes the static member by instance id while its JoinGroup waits.
        assert_eq!(h.leave("g", &[("", Some("s"))]), [Ok(())]);
        assert_eq!(
            h.joined(ts),
            JoinResponse {
                member_id: String::new(),
                result: Err(GroupError::UnknownMemberId),
            }
        );
        let (_, ja) = ok_join(ready(h.join(join_req("g", &ids[0], "a", &["range"]))));
        assert_eq!(ja.members.len(), 2);
        ok_join(h.joined(td));
    }

    #[test]
    fn a_static_member_restarts_without_a_rebalance_and_fences_its_old_id() {
        let mut h = H::new(config(3_000));
        let ids = h.stable_group(vec![
            static_req("g", "", "a", &["range", "roundrobin"]),
            static_req("g", "", "b", &["range", "roundrobin"]),
        ]);
        let (a1, b) = (ids[0].clone(), ids[1].clone());
        h.c.take_changed_groups();

        h.now += 1_000;
        let mut restarted = static_req("g", "", "a", &["range", "roundrobin"]);
        restarted.client_host = "/10.0.0.9:1".to_owned();
        let (a2, joined) = ok_join(ready(h.join(restarted)));
        assert_ne!(a2, a1);
        assert!(a2.starts_with("a-"));
        assert_eq!(h.state("g"), GroupState::Stable, "no rebalance");
        assert_eq!(joined.generation_id, 1);
        assert_eq!(
            joined.leader_id, a1,
            "the old leader id, so it does not reassign"
        );
        assert!(joined.skip_assignment);
        assert_eq!(joined.members.len(), 2);
        assert_eq!(h.c.take_changed_groups(), ["g"]);
        assert_eq!(h.c.snapshot("g").unwrap().members[0].member_id, a2);
        assert_eq!(
            h.c.describe_group("g").members[0].client_host,
            "/10.0.0.9:1"
        );

        // The old incarnation (a zombie process) is fenced wherever it shows up.
        let mut zombie_hb = hb("g", &a1, 1);
        zombie_hb.group_instance_id = Some("a".to_owned());
        assert_eq!(
            h.c.heartbeat(zombie_hb.clone(), h.now),
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(h.heartbeat("g", &a1, 1), Err(GroupError::UnknownMemberId));
        let mut zombie_sync = sync_req("g", &a1, 1, &[]);
        zombie_sync.group_instance_id = Some("a".to_owned());
        assert_eq!(
            ready(h.sync(zombie_sync)),
            Err(GroupError::FencedInstanceId)
        );
        let zombie_join = static_req("g", &a1, "a", &["range", "roundrobin"]);
        assert_eq!(
            ready(h.join(zombie_join)).result,
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(
            h.c.check_commit("g", &a1, 1, Some("a"), h.now),
            Err(GroupError::FencedInstanceId)
        );

        // The new incarnation syncs to learn the assignment it inherited, and heartbeats on.
        let mut new_sync = sync_req("g", &a2, 1, &[]);
        new_sync.group_instance_id = Some("a".to_owned());
        assert_eq!(
            ready(h.sync(new_sync)).unwrap().assignment,
            format!("{a1}:assigned").into_bytes()
        );
        assert_eq!(h.heartbeat("g", &a2, 1), Ok(()));
        assert_eq!(h.heartbeat("g", &b, 1), Ok(()));

        // A follower's restart: the leader id is the (new) leader, no member list.
        let (_, jb) = ok_join(ready(h.join(static_req(
            "g",
            "",
            "b",
            &["range", "roundrobin"],
        ))));
        assert_eq!(jb.leader_id, a2);
        assert!(!jb.skip_assignment && jb.members.is_empty());
        assert_eq!(h.state("g"), GroupState::Stable);

        // A restart that changes the protocol choice (a tie now goes to the leader's new
        // preference) does rebalance.
        let t = pending(h.join(static_req("g", "", "a", &["roundrobin", "range"])));
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert!(!h.done.contains_key(&t));
    }

    #[test]
    fn a_static_restart_while_completing_fences_the_old_sync_and_rebalances() {
        let mut h = H::new(config(3_000));
        let ta = pending(h.join(static_req("g", "", "a", &["range"])));
        let tb = pending(h.join(static_req("g", "", "b", &["range"])));
        h.tick(T0 + 6_000);
        ok_join(h.joined(ta));
        let (b1, _) = ok_join(h.joined(tb));
        let sb = pending(h.sync(sync_req("g", &b1, 1, &[])));
        let tb2 = pending(h.join(static_req("g", "", "b", &["range"])));
        assert_eq!(h.synced(sb), Err(GroupError::FencedInstanceId));
        assert_eq!(h.state("g"), GroupState::PreparingRebalance);
        assert!(!h.done.contains_key(&tb2));
    }

    #[test]
    fn static_members_that_do_not_rejoin_keep_their_place() {
        let mut h = H::new(config(3_000));
        // Static members use session timeouts long enough to cover a restart.
        let mut s = static_req("g", "", "s", &["range"]);
        s.session_timeout_ms = 120_000;
        let ids = h.stable_group(vec![join_req("g", "", "a", &["range"]), s]);
        let (a, s) = (&ids[0], &ids[1]);
        h.now += 1_000;
        let ta = pending(h.join(join_req("g", a, "a", &["range"])));
        assert_eq!(h.heartbeat("g", s, 1), Err(GroupError::RebalanceInProgress));
        h.tick(h.now + u64::from(REBALANCE.unsigned_abs()));
        let (_, ja) = ok_join(h.joined(ta));
        assert_eq!(ja.generation_id, 2);
        let members: Vec<&str> = ja.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(
            members,
            [a.as_str(), s.as_str()],
            "the absent static member is kept"
        );
        // It learns about the new generation by rejoining; nothing changed, so it just gets
        // the current generation's answer.
        let (_, js) = ok_join(ready(h.join(static_req("g", s, "s", &["range"]))));
        assert_eq!((js.generation_id, js.leader_id.as_str()), (2, a.as_str()));
        assert_eq!(h.state("g"), GroupState::CompletingRebalance);
    }

    #[test]
    fn stale_generations_are_refused() {
        let mut h = H::new(config(0));
        let a = h
            .stable_group(vec![join_req("g", "", "a", &["range"])])
            .remove(0);
        assert_eq!(
            ready(h.sync(sync_req("g", &a, 0, &[]))),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            ready(h.sync(sync_req("g", &a, 2, &[]))),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(h.heartbeat("g", &a, 7), Err(GroupError::IllegalGeneration));
        assert_eq!(
            h.c.check_commit("g", &a, 0, None, h.now),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(h.c.check_commit("g", &a, 1, None, h.now), Ok(()));
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let mut h = H::new(config(0));
        let a = h
            .stable_group(vec![join_req("g", "", "a", &["range"])])
            .remove(0);

        let mut other_type = join_req("g", "", "b", &["range"]);
        other_type.protocol_type = "connect".to_owned();
        assert_eq!(
            ready(h.join(other_type)).result,
            Err(GroupError::InconsistentGroupProtocol)
        );
        let disjoint = join_req("g", "", "b", &["roundrobin", "sticky"]);
        assert_eq!(
            ready(h.join(disjoint)).result,
            Err(GroupError::InconsistentGroupProtocol)
        );
        assert_eq!(h.state("g"), GroupState::Stable);

        let no_protocols = join_req("fresh", "", "b", &[]);
        assert_eq!(
            ready(h.join(no_protocols)).result,
            Err(GroupError::InconsistentGroupProtocol)
        );
        let mut no_type = join_req("fresh", "", "b", &["range"]);
        no_type.protocol_type = String::new();
        assert_eq!(
            ready(h.join(no_type)).result,
            Err(GroupError::InconsistentGroupProtocol)
        );
        assert_eq!(
            h.c.list_groups().len(),
            1,
            "a refused first join creates no group"
        );

        let mut wrong_name = sync_req("g", &a, 1, &[]);
        wrong_name.protocol_name = Some("roundrobin".to_owned());
        assert_eq!(
            ready(h.sync(wrong_name)),
            Err(GroupError::InconsistentGroupProtocol)
        );
        let mut wrong_type = sync_req("g", &a, 1, &[]);
        wrong_type.protocol_type = Some("connect".to_owned());
        assert_eq!(
            ready(h.sync(wrong_type)),
            Err(GroupError::InconsistentGroupProtocol)
        );

        // A lone member may switch assignors (it is compared with the others only).
        let (_, j) = ok_join(ready(h.join(join_req("g", &a, "a", &["roundrobin"]))));
        assert_eq!(
            (j.generation_id, j.protocol_name.as_str()),
            (2, "roundrobin")
        );
    }

    #[test]
    fn the_initial_delay_collects_members_joining_within_it() {
        let mut h = H::new(config(3_000));
        let mut tickets = Vec::new();
        for (offset, client) in [(0, "a"), (1_000, "b"), (2_500, "c"), (5_000, "d")] {
            h.tick(T0 + offset);
            let mut req = join_req("g", "", client, &["range"]);
            req.rebalance_timeout_ms = 60_000;
            tickets.push(pending(h.join(req)));
        }
        // 3 s from a's join, extended to 6 s (b and c joined), then to 9 s (d joined).
        h.tick(T0 + 8_999);
        assert!(h.done.is_empty());
        h.tick(T0 + 9_000);
        for t in &tickets {
            let (_, joined) = ok_join(h.joined(*t));
            assert_eq!(joined.generation_id, 1);
        }
        assert_eq!(h.c.describe_group("g").members.len(), 4);
    }

    #[test]
    fn the_initial_delay_never_exceeds_the_rebalance_timeout() {
        let mut h = H::new(config(3_000));
        let mut first = join_req("g", "", "a", &["range"]);
        first.rebalance_timeout_ms = 4_000;
        let ta = pending(h.join(first));
        h.now = T0 + 2_000;
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        h.tick(T0 + 3_000);
        assert_eq!(
            h.c.next_deadline(),
            Some(T0 + 4_000),
            "extended only by the 1 s left"
        );
        h.now = T0 + 3_500;
        let tc = pending(h.join(join_req("g", "", "c", &["range"])));
        h.tick(T0 + 4_000);
        for t in [ta, tb, tc] {
            assert_eq!(ok_join(h.joined(t)).1.generation_id, 1);
        }
    }

    #[test]
    fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() {
        let mut h = H::new(config(3_000));
        let mut b = join_req("g", "", "b", &["range"]);
        b.session_timeout_ms = 60_000;
        let ids = h.stable_group(vec![join_req("g", "", "a", &["range"]), b]);
        let (a, b) = (&ids[0], &ids[1]);
        let start = h.now;
        let ta = pending(h.join(join_req("g", a, "a", &["range"])));
        h.now = start + 20_000;
        // b is alive (it heartbeats) but busy and does not rejoin in time.
        assert_eq!(h.heartbeat("g", b, 1), Err(GroupError::RebalanceInProgress));
        h.tick(start + 29_999);
        assert!(h.done.is_empty());
        h.tick(start + 30_000);
        let (_, ja) = ok_join(h.joined(ta));
        assert_eq!((ja.generation_id, ja.members.len()), (2, 1));
        assert_eq!(h.heartbeat("g", b, 2), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn rejoins_that_change_nothing_do_not_rebalance_unless_from_the_leader() {
        let mut h = H::new(config(3_000));
        let ta = pending(h.join(join_req("g", "", "a", &["range"])));
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        h.tick(T0 + 6_000);
        let (a, _) = ok_join(h.joined(ta));
        let (b, _) = ok_join(h.joined(tb));

        // While completing, a repeated JoinGroup (a lost answer) gets the same answer again.
        let (_, again) = ok_join(ready(h.join(join_req("g", &a, "a", &["range"]))));
        assert_eq!((again.generation_id, again.members.len()), (1, 2));
        ready(h.sync(sync_req("g", &a, 1, &[]))).unwrap();

        let (_, jb) = ok_join(ready(h.join(join_req("g", &b, "b", &["range"]))));
        assert_eq!((jb.generation_id, jb.leader_id.as_str()), (1, a.as_str()));
        assert_eq!(h.state("g"), GroupState::Stable);

        let ta = pending(h.join(join_req("g", &a, "a", &["range"])));
        assert_eq!(
            h.state("g"),
            GroupState::PreparingRebalance,
            "the leader's rejoin rebalances"
        );
        // A second JoinGroup from the same member replaces the first, which is answered.
        let ta2 = pending(h.join(join_req("g", &a, "a", &["range"])));
        assert_eq!(h.joined(ta).result, Err(GroupError::RebalanceInProgress));
        let (_, jb) = ok_join(ready(h.join(join_req("g", &b, "b", &["range"]))));
        assert_eq!(jb.generation_id, 2);
        assert_eq!(ok_join(h.joined(ta2)).1.generation_id, 2);
    }

    #[test]
    fn requests_are_validated() {
        let mut h = H::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            max_group_size: 2,
            ..GroupConfig::default()
        });
        for session in [5_999, 1_800_001, -1] {
            let mut req = join_req("g", "", "a", &["range"]);
            req.session_timeout_ms = session;
            assert_eq!(
                ready(h.join(req)).result,
                Err(GroupError::InvalidSessionTimeout {
                    requested_ms: session,
                    min_ms: 6_000,
                    max_ms: 1_800_000,
                })
            );
        }
        assert_eq!(
            ready(h.join(join_req("", "", "a", &["range"]))).result,
            Err(GroupError::InvalidGroupId)
        );
        assert_eq!(
            ready(h.join(join_req("g", "a-1", "a", &["range"]))).result,
            Err(GroupError::UnknownMemberId),
            "a member id for a group that does not exist"
        );
        assert_eq!(h.heartbeat("", "x", 1), Err(GroupError::InvalidGroupId));
        assert_eq!(h.heartbeat("g", "x", 1), Err(GroupError::UnknownMemberId));
        assert_eq!(
            ready(h.sync(sync_req("g", "x", 1, &[]))),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            ready(h.sync(sync_req("", "x", 1, &[]))),
            Err(GroupError::InvalidGroupId)
        );

        let a = h
            .stable_group(vec![join_req("g", "", "a", &["range"])])
            .remove(0);
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        // While preparing, only members that have rejoined count: a has not yet.
        let tc = pending(h.join(join_req("g", "", "c", &["range"])));
        assert_eq!(
            ready(h.join(join_req("g", "", "d", &["range"]))).result,
            Err(GroupError::GroupMaxSizeReached)
        );
        // a rejoins: the rebalance cannot complete while it would hold three members, so the
        // size check is on the way in; the third member a brings the count to is refused.
        assert_eq!(
            ready(h.join(join_req("g", &a, "a", &["range"]))).result,
            Err(GroupError::GroupMaxSizeReached)
        );
        // a was refused, so it is not waiting and its session runs out: b and c form
        // generation 2, b leading in a's place.
        let next = h.c.next_deadline().unwrap();
        h.tick(next);
        let (b, jb) = ok_join(h.joined(tb));
        assert_eq!(
            (jb.generation_id, jb.leader_id.as_str(), jb.members.len()),
            (2, b.as_str(), 2)
        );
        assert_eq!(ok_join(h.joined(tc)).1.generation_id, 2);
        // Full: newcomers and unknown ids are refused.
        assert_eq!(
            ready(h.join(join_req("g", "", "e", &["range"]))).result,
            Err(GroupError::GroupMaxSizeReached)
        );
        assert_eq!(
            ready(h.join(join_req("g", "a-made-up", "a", &["range"]))).result,
            Err(GroupError::GroupMaxSizeReached)
        );
        assert_eq!(h.state("g"), GroupState::CompletingRebalance);
    }

    #[test]
    fn list_describe_and_delete() {
        let mut h = H::new(config(0));
        let a = h
            .stable_group(vec![join_req("g1", "", "a", &["range"])])
            .remove(0);
        ok_join(ready(h.join(join_req("g2", "", "b", &["range"]))));
        let tc = pending(h.join(join_req("g2", "", "c", &["range"])));
        assert_eq!(h.c.check_commit("simple", "", -1, None, h.now), Ok(()));

        let overview: Vec<(String, String, GroupState)> =
            h.c.list_groups()
                .into_iter()
                .map(|g| (g.group_id, g.protocol_type, g.state))
                .collect();
        assert_eq!(
            overview,
            [
                ("g1".to_owned(), "consumer".to_owned(), GroupState::Stable),
                (
                    "g2".to_owned(),
                    "consumer".to_owned(),
                    GroupState::PreparingRebalance
                ),
                ("simple".to_owned(), String::new(), GroupState::Empty),
            ]
        );

        let stable = h.c.describe_group("g1");
        assert_eq!(
            stable,
            GroupDescription {
                group_id: "g1".to_owned(),
                state: GroupState::Stable,
                protocol_type: "consumer".to_owned(),
                protocol_name: "range".to_owned(),
                members: vec![MemberDescription {
                    member_id: a.clone(),
                    group_instance_id: None,
                    client_id: "a".to_owned(),
                    client_host: "/10.0.0.1:1".to_owned(),
                    metadata: b"a/range".to_vec(),
                    assignment: format!("{a}:assigned").into_bytes(),
                }],
            }
        );
        let preparing = h.c.describe_group("g2");
        assert_eq!(preparing.protocol_name, "");
        assert!(preparing.members.iter().all(|m| m.metadata.is_empty()));
        assert_eq!(h.c.describe_group("nope").state, GroupState::Dead);

        assert_eq!(
            h.c.delete_group("g1", h.now),
            Err(GroupError::NonEmptyGroup)
        );
        assert_eq!(
            h.c.delete_group("nope", h.now),
            Err(GroupError::GroupIdNotFound)
        );
        h.c.take_changed_groups();
        assert_eq!(h.c.delete_group("simple", h.now), Ok(()));
        assert_eq!(h.leave("g1", &[(&a, None)]), [Ok(())]);
        assert_eq!(h.c.delete_group("g1", h.now), Ok(()));
        assert_eq!(h.c.take_changed_groups(), ["g1", "simple"]);
        assert_eq!(
            h.c.snapshot("g1"),
            None,
            "deleted: the driver drops its copy"
        );
        assert_eq!(h.c.list_groups().len(), 1);
        let _ = tc;
    }

    #[test]
    fn offset_commit_rules() {
        let mut h = H::new(config(3_000));
        // A simple consumer (no group management) may commit to an unknown or Empty group.
        assert_eq!(h.c.check_commit("manual", "", -1, None, h.now), Ok(()));
        assert_eq!(h.state("manual"), GroupState::Empty);
        assert_eq!(
            h.c.check_commit("unknown", "m", 3, None, h.now),
            Err(GroupError::IllegalGeneration)
        );

        let ta = pending(h.join(join_req("g", "", "a", &["range"])));
        let tb = pending(h.join(join_req("g", "", "b", &["range"])));
        assert_eq!(
            h.c.check_commit("g", "", -1, None, h.now),
            Err(GroupError::UnknownMemberId),
            "the group has members now"
        );
        h.tick(T0 + 6_000);
        let (a, _) = ok_join(h.joined(ta));
        let (b, _) = ok_join(h.joined(tb));
        assert_eq!(
            h.c.check_commit("g", &a, 1, None, h.now),
            Err(GroupError::RebalanceInProgress),
            "no commits before the assignment is known"
        );
        assert_eq!(
            h.c.check_commit("g", "stranger", 1, None, h.now),
            Err(GroupError::UnknownMemberId)
        );
        ready(h.sync(sync_req("g", &a, 1, &[]))).unwrap();
        ready(h.sync(sync_req("g", &b, 1, &[]))).unwrap();
        let synced_at = h.now;

        // Commits count as heartbeats: b only commits and survives past its first deadline.
        for step in 1..=4 {
            h.now = synced_at + step * 4_000;
            assert_eq!(h.heartbeat("g", &a, 1), Ok(()));
            assert_eq!(h.c.check_commit("g", &b, 1, None, h.now), Ok(()));
        }
        h.tick(synced_at + 16_000);
        assert_eq!(h.state("g"), GroupState::Stable);

        // While preparing, members may still commit (they learn of the rebalance from their
        // next heartbeat).
        let _ = pending(h.join(join_req("g", &a, "a", &["range"])));
        assert_eq!(h.c.check_commit("g", &b, 1, None, h.now), Ok(()));
    }

    fn stable_snapshot_group() -> (H, Vec<String>) {
        let mut h = H::new(config(3_000));
        let ids = h.stable_group(vec![
            join_req("g", "", "a", &["range", "roundrobin"]),
            static_req("g", "", "s", &["range"]),
        ]);
        (h, ids)
    }

    #[test]
    fn snapshot_and_restore_round_trip() {
        let (mut h, ids) = stable_snapshot_group();
        assert_eq!(h.c.take_changed_groups(), ["g"]);
        let snapshot = h.c.snapshot("g").unwrap();
        assert_eq!(snapshot.generation_id, 1);
        assert_eq!(snapshot.protocol_name.as_deref(), Some("range"));
        assert_eq!(snapshot.leader_id.as_deref(), Some(ids[0].as_str()));
        assert_eq!(snapshot.members[1].group_instance_id.as_deref(), Some("s"));
        assert_eq!(
            snapshot.members[0].metadata, b"a/range",
            "only the chosen protocol's"
        );

        // A rebalance in progress does not change what is durable.
        let _ = pending(h.join(join_req("g", "", "late", &["range"])));
        assert_eq!(h.c.snapshot("g").unwrap(), snapshot);
        assert!(h.c.take_changed_groups().is_empty());

        let json = serde_json::to_string(&snapshot).unwrap();
        let restored: GroupSnapshot = serde_json::from_str(&json).unwrap();
        let mut r = H::new(config(3_000));
        r.now = h.now + 60_000;
        r.c.restore(restored.clone(), r.now).unwrap();
        invariants(&r.c).unwrap();
        assert_eq!(r.c.snapshot("g").unwrap(), snapshot);
        assert!(r.c.take_changed_groups().is_empty());
        let described = r.c.describe_group("g");
        assert_eq!(described.state, GroupState::Stable);
        assert_eq!(
            described.members[0].assignment,
            format!("{}:assigned", ids[0]).into_bytes()
        );
        assert_eq!(
            r.c.restore(restored, r.now),
            Err(RestoreError::GroupExists {
                group_id: "g".to_owned(),
            })
        );

        // Live consumers carry on: heartbeats with the old generation, SyncGroup answered.
        assert_eq!(r.heartbeat("g", &ids[0], 1), Ok(()));
        let mut s_sync = sync_req("g", &ids[1], 1, &[]);
        s_sync.group_instance_id = Some("s".to_owned());
        assert_eq!(
            ready(r.sync(s_sync)).unwrap().assignment,
            format!("{}:assigned", ids[1]).into_bytes()
        );
        // One that did not survive the restart expires as usual.
        r.now += 8_000;
        assert_eq!(r.heartbeat("g", &ids[0], 1), Ok(()));
        r.tick(r.now + 2_000);
        assert_eq!(r.state("g"), GroupState::PreparingRebalance);
        assert_eq!(
            r.heartbeat("g", &ids[1], 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn restore_reads_the_snapshot_format() {
        // Fixture of the persisted format: keep it readable by every later version.
        let fixture = r#"{
            "group_id": "orders",
            "generation_id": 7,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "leader_id": "rdkafka-00000000-0000-0000-0000-000000000001",
            "members": [
                {
                    "member_id": "rdkafka-00000000-0000-0000-0000-000000000001",
                    "group_instance_id": null,
                    "client_id": "rdkafka",
                    "client_host": "/127.0.0.1",
                    "session_timeout_ms": 45000,
                    "rebalance_timeout_ms": 300000,
                    "metadata": [0, 1],
                    "assignment": [2, 3]
                }
            ]
        }"#;
        let snapshot: GroupSnapshot = serde_json::from_str(fixture).unwrap();
        let mut c = coordinator(config(0));
        c.restore(snapshot, T0).unwrap();
        assert_eq!(c.describe_group("orders").state, GroupState::Stable);
        assert_eq!(c.next_deadline(), Some(T0 + 45_000));
        assert_eq!(
            c.heartbeat(
                hb("orders", "rdkafka-00000000-0000-0000-0000-000000000001", 7),
                T0 + 1
            ),
            Ok(())
        );

        let empty = r#"{"group_id":"idle","generation_id":3,"protocol_type":"consumer",
            "protocol_name":null,"leader_id":null,"members":[]}"#;
        c.restore(serde_json::from_str(empty).unwrap(), T0).unwrap();
        assert_eq!(c.describe_group("idle").state, GroupState::Empty);
        assert_eq!(c.delete_group("idle", T0), Ok(()));
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let (h, _) = stable_snapshot_group();
        let good = h.c.snapshot("g").unwrap();
        type Spoil = fn(&mut GroupSnapshot);
        let cases: Vec<(&str, Spoil)> = vec![
            ("negative generation", |s| s.generation_id = -1),
            ("leader missing", |s| s.leader_id = Some("ghost".to_owned())),
            ("no protocol", |s| s.protocol_name = None),
            ("no protocol type", |s| {
                s.protocol_type = Some(String::new())
            }),
            ("duplicate member", |s| {
                s.members[1].member_id = s.members[0].member_id.clone()
            }),
            ("duplicate instance", |s| {
                s.members[0].group_instance_id = Some("s".to_owned())
            }),
            ("empty member id", |s| {
                s.members[0].member_id = String::new()
            }),
        ];
        for (what, spoil) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            let mut c = coordinator(config(0));
            assert!(
                matches!(c.restore(bad, T0), Err(RestoreError::Inconsistent { .. })),
                "{what}"
            );
            assert!(c.list_groups().is_empty(), "{what}");
        }
    }

    #[test]
    fn nothing_is_due_in_an_idle_coordinator() {
        let mut c = coordinator(GroupConfig::default());
        assert_eq!(c.next_deadline(), None);
        c.tick(u64::MAX);
        assert!(c.take_completions().is_empty());
        assert!(format!("{c:?}").contains("GroupCoordinator"));
    }

    #[test]
    fn ticking_late_gives_the_same_outcome_as_ticking_on_time() {
        // One late tick far past several deadlines processes them in deadline order.
        let run = |late: bool| {
            let mut h = H::new(config(3_000));
            let ids = h.stable_group(vec![
                join_req("g", "", "a", &["range"]),
                join_req("g", "", "b", &["range"]),
            ]);
            let start = h.now;
            if late {
                h.tick(start + 100_000);
            } else {
                while let Some(d) = h.c.next_deadline().filter(|d| *d <= start + 100_000) {
                    h.tick(d);
                }
            }
            let _ = ids;
            (h.state("g"), h.generation("g"), h.c.snapshot("g"))
        };
        let on_time = run(false);
        assert_eq!(on_time.0, GroupState::Empty);
        assert_eq!(run(true), on_time);
    }

    // ---- property test: random interleavings ----

    const PROTOCOL_SETS: [(&str, &[&str]); 5] = [
        ("consumer", &["range", "roundrobin"]),
        ("consumer", &["roundrobin"]),
        ("consumer", &["roundrobin", "range"]),
        ("consumer", &["sticky"]),
        ("connect", &["default"]),
    ];
    const CLIENTS: usize = 5;

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            client: usize,
            fresh: bool,
            protocols: usize,
            require_known: bool,
            session: i32,
            rebalance: i32,
        },
        Sync {
            client: usize,
            stale: bool,
        },
        Heartbeat {
            client: usize,
            stale: bool,
        },
        Leave {
            clients: Vec<usize>,
            by_instance: bool,
        },
        Commit {
            client: usize,
            simple: bool,
        },
        Tick {
            ms: u64,
        },
        Delete {
            group: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (
                0..CLIENTS,
                prop::bool::weighted(0.25),
                // Mostly compatible assignors, sometimes not.
                prop_oneof![8 => 0..3usize, 1 => 3..PROTOCOL_SETS.len()],
                any::<bool>(),
                // 1 s is below the minimum and refused.
                prop::sample::select(vec![1_000, 6_000, 10_000, 30_000, 30_000]),
                prop::sample::select(vec![-1, 0, 5_000, 20_000]),
            )
                .prop_map(|(client, fresh, protocols, require_known, session, rebalance)| Op::Join {
                    client,
                    fresh,
                    protocols,
                    require_known,
                    session,
                    rebalance,
                }),
            4 => (0..CLIENTS, prop::bool::weighted(0.1)).prop_map(|(client, stale)| Op::Sync { client, stale }),
            3 => (0..CLIENTS, prop::bool::weighted(0.1)).prop_map(|(client, stale)| Op::Heartbeat { client, stale }),
            1 => (prop::collection::vec(0..CLIENTS, 1..3), any::<bool>())
                .prop_map(|(clients, by_instance)| Op::Leave { clients, by_instance }),
            1 => (0..CLIENTS, any::<bool>()).prop_map(|(client, simple)| Op::Commit { client, simple }),
            3 => prop_oneof![4 => 0..3_000u64, 1 => 0..40_000u64].prop_map(|ms| Op::Tick { ms }),
            1 => (0..2usize).prop_map(|group| Op::Delete { group }),
        ]
    }

    #[derive(Debug, Default)]
    struct Client {
        member_id: String,
        generation: i32,
        /// The members to assign, when this client is the leader of its generation.
        leads: Vec<String>,
    }

    impl Client {
        fn group(index: usize) -> String {
            format!("g{}", index % 2)
        }

        fn instance(index: usize) -> Option<String> {
            (index >= 3).then(|| format!("i{index}"))
        }

        fn absorb_join(&mut self, r: &JoinResponse) {
            match &r.result {
                Ok(j) => {
                    self.member_id = r.member_id.clone();
                    self.generation = j.generation_id;
                    self.leads = if j.leader_id == r.member_id && !j.skip_assignment {
                        j.members.iter().map(|m| m.member_id.clone()).collect()
                    } else {
                        Vec::new()
                    };
                }
                Err(GroupError::MemberIdRequired) => self.member_id = r.member_id.clone(),
                Err(GroupError::UnknownMemberId | GroupError::FencedInstanceId) => self.reset(),
                Err(_) => {}
            }
        }

        fn absorb_error(&mut self, error: Option<GroupError>) {
            if matches!(
                error,
                Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId)
            ) {
                self.reset();
            }
        }

        fn reset(&mut self) {
            self.member_id.clear();
            self.generation = -1;
            self.leads.clear();
        }
    }

    struct Model {
        c: GroupCoordinator,
        now: u64,
        clients: Vec<Client>,
        /// Pending tickets and the client each belongs to.
        waiting: BTreeMap<Ticket, usize>,
        completed: BTreeSet<Ticket>,
        generations: BTreeMap<String, i32>,
    }

    impl Model {
        fn check(&mut self) -> Result<(), TestCaseError> {
            for (ticket, completion) in self.c.take_completions() {
                prop_assert!(
                    !self.completed.contains(&ticket),
                    "{ticket:?} completed twice"
                );
                let Some(client) = self.waiting.remove(&ticket) else {
                    return Err(TestCaseError::fail(format!("{ticket:?} was never pending")));
                };
                self.completed.insert(ticket);
                match completion {
                    Completion::Join(r) => self.clients[client].absorb_join(&r),
                    Completion::Sync(r) => self.clients[client].absorb_error(r.err()),
                }
            }
            if let Err(e) = invariants(&self.c) {
                return Err(TestCaseError::fail(e));
            }
            for (id, g) in &self.c.groups {
                let last = self
                    .generations
                    .entry(id.clone())
                    .or_insert(g.generation_id);
                prop_assert!(
                    g.generation_id >= *last,
                    "generation of {id} went backwards"
                );
                *last = g.generation_id;
            }
            for id in self.c.take_changed_groups() {
                if let Some(snapshot) = self.c.snapshot(&id) {
                    let mut fresh = coordinator(GroupConfig::default());
                    prop_assert!(fresh.restore(snapshot, self.now).is_ok());
                    if let Err(e) = invariants(&fresh) {
                        return Err(TestCaseError::fail(e));
                    }
                }
            }
            Ok(())
        }

        fn pend<T>(&mut self, reply: Reply<T>, client: usize) -> Result<Option<T>, TestCaseError> {
            match reply {
                Reply::Ready(v) => Ok(Some(v)),
                Reply::Pending(t) => {
                    prop_assert!(
                        !self.completed.contains(&t) && !self.waiting.contains_key(&t),
                        "{t:?} handed out twice"
                    );
                    self.waiting.insert(t, client);
                    Ok(None)
                }
            }
        }

        fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
            match op {
                Op::Join {
                    client,
                    fresh,
                    protocols,
                    require_known,
                    session,
                    rebalance,
                } => {
                    let (protocol_type, names) = PROTOCOL_SETS[protocols];
                    let member_id = if fresh {
                        String::new()
                    } else {
                        self.clients[client].member_id.clone()
                    };
                    let mut req = join_req(
                        &Client::group(client),
                        &member_id,
                        &format!("c{client}"),
                        names,
                    );
                    req.group_instance_id = Client::instance(client);
                    req.protocol_type = protocol_type.to_owned();
                    req.require_known_member_id = require_known;
                    req.session_timeout_ms = session;
                    req.rebalance_timeout_ms = rebalance;
                    let reply = self.c.join(req, self.now);
                    if let Some(r) = self.pend(reply, client)? {
                        self.clients[client].absorb_join(&r);
                    }
                }
                Op::Sync { client, stale } => {
                    let me = &self.clients[client];
                    let generation = if stale {
                        me.generation - 1
                    } else {
                        me.generation
                    };
                    let assignments: Vec<(String, String)> = me
                        .leads
                        .iter()
                        .map(|m| (m.clone(), format!("to {m}")))
                        .collect();
                    let assign: Vec<(&str, &str)> = assignments
                        .iter()
                        .map(|(m, a)| (m.as_str(), a.as_str()))
                        .collect();
                    let mut req =
                        sync_req(&Client::group(client), &me.member_id, generation, &assign);
                    req.group_instance_id = Client::instance(client);
                    let reply = self.c.sync(req, self.now);
                    if let Some(r) = self.pend(reply, client)? {
                        self.clients[client].absorb_error(r.err());
                    }
                }
                Op::Heartbeat { client, stale } => {
                    let me = &self.clients[client];
                    let mut req = hb(
                        &Client::group(client),
                        &me.member_id,
                        me.generation + i32::from(stale),
                    );
                    req.group_instance_id = Client::instance(client);
                    let r = self.c.heartbeat(req, self.now);
                    self.clients[client].absorb_error(r.err());
                }
                Op::Leave {
                    clients,
                    by_instance,
                } => {
                    let group = Client::group(clients[0]);
                    let members = clients
                        .iter()
                        .map(|c| LeavingMember {
                            member_id: if by_instance && Client::instance(*c).is_some() {
                                String::new()
                            } else {
                                self.clients[*c].member_id.clone()
                            },
                            group_instance_id: Client::instance(*c),
                        })
                        .collect();
                    let results = self.c.leave(
                        LeaveRequest {
                            group_id: group.clone(),
                            members,
                        },
                        self.now,
                    );
                    prop_assert!(results.is_ok());
                    for (c, r) in clients.iter().zip(results.unwrap_or_default()) {
                        if r.result.is_ok() && Client::group(*c) == group {
                            self.clients[*c].reset();
                        }
                    }
                }
                Op::Commit { client, simple } => {
                    let me = &self.clients[client];
                    let (member, generation, instance) = if simple {
                        (String::new(), -1, None)
                    } else {
                        (
                            me.member_id.clone(),
                            me.generation,
                            Client::instance(client),
                        )
                    };
                    let r = self.c.check_commit(
                        &Client::group(client),
                        &member,
                        generation,
                        instance.as_deref(),
                        self.now,
                    );
                    if !simple {
                        self.clients[client].absorb_error(r.err());
                    }
                }
                Op::Tick { ms } => {
                    self.now += ms;
                    self.c.tick(self.now);
                }
                Op::Delete { group } => {
                    let id = format!("g{group}");
                    if self.c.delete_group(&id, self.now).is_ok() {
                        self.generations.remove(&id);
                    }
                }
            }
            self.now += 250;
            self.check()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_interleavings_keep_the_invariants(
            delay in prop::sample::select(vec![0u64, 3_000]),
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let mut model = Model {
                c: coordinator(config(delay)),
                now: T0,
                clients: (0..CLIENTS).map(|_| Client { generation: -1, ..Client::default() }).collect(),
                waiting: BTreeMap::new(),
                completed: BTreeSet::new(),
                generations: BTreeMap::new(),
            };
            for op in ops {
                model.apply(op)?;
                for g in model.c.list_groups() {
                    let _ = model.c.describe_group(&g.group_id);
                }
            }
            // Everyone goes quiet: every session, rebalance and pending id runs out, every
            // waiting request is answered and every group ends up Empty.
            for _ in 0..3 {
                model.now += 100_000_000;
                model.c.tick(model.now);
                model.check()?;
            }
            prop_assert!(model.waiting.is_empty(), "unanswered: {:?}", model.waiting);
            prop_assert_eq!(model.c.next_deadline(), None);
            for g in model.c.list_groups() {
                prop_assert_eq!(g.state, GroupState::Empty);
            }
        }
    }
}
