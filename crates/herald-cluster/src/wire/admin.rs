use std::collections::BTreeMap;

use bytes::Bytes;
use herald_auth::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use herald_auth::scram::{self, Mechanism};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiKey, BrokerId, CreateAclsRequest, DeleteAclsRequest,
    DeleteGroupsRequest, DescribeAclsRequest, DescribeGroupsRequest,
    DescribeUserScramCredentialsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::{ClientConfig, Connection, WireError};

/// Connections kept to brokers other than the bootstrap one (controller, coordinators,
/// leaders); the oldest is closed beyond this.
const MAX_NODE_CONNECTIONS: usize = 64;
/// Kafka's ListOffsets timestamps for the earliest and latest offsets.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

/// Which offset ListOffsets looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the offset the next record gets).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

/// ListOffsets' answer for one partition. `offset` is `None` when no record has a timestamp
/// at or after the one asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub partition: i32,
    pub offset: Option<i64>,
    pub timestamp: i64,
}

/// A SCRAM credential as DescribeUserScramCredentials shows it (never the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    pub mechanism: Mechanism,
    pub iterations: i32,
}

/// One user's SCRAM credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserScramCredentials {
    pub user: String,
    pub credentials: Vec<ScramCredentialInfo>,
}

/// A group as ListGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty when the broker's ListGroups version does not carry it (before v4).
    pub state: String,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The assignment as the group's protocol encodes it (for consumers, the consumer
    /// protocol's assignment).
    pub assignment: Bytes,
}

/// DescribeGroups' answer for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    pub protocol_type: String,
    /// The assignor chosen (e.g. `range`), empty unless the group is stable.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: Option<String>,
}

/// The admin client: one bootstrap connection plus connections opened on demand to the
/// controller, group coordinators and partition leaders.
#[derive(Debug)]
pub struct Admin {
    config: ClientConfig,
    bootstrap: Connection,
    nodes: BTreeMap<i32, Connection>,
    /// `host:port` of each broker, from the last Metadata or FindCoordinator answer.
    addresses: BTreeMap<i32, String>,
    controller: Option<i32>,
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn text(bytes: &StrBytes) -> String {
    bytes.as_str().to_owned()
}

impl Admin {
    /// Connects to the cluster (see [`Connection::connect`]).
    pub async fn connect(config: ClientConfig) -> Result<Admin, WireError> {
        let bootstrap = Connection::connect(&config).await?;
        Ok(Admin {
            config,
            bootstrap,
            nodes: BTreeMap::new(),
            addresses: BTreeMap::new(),
            controller: None,
        })
    }

    /// The bootstrap connection, for requests this type does not wrap.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Sends on the bootstrap connection, reconnecting once (to any bootstrap address) if an
    /// earlier failure broke it.
    async fn any<R: Request>(&mut self, request: &R) -> Result<R::Response, WireError> {
        if self.bootstrap.is_broken() {
            self.bootstrap = Connection::connect(&self.config).await?;
        }
        self.bootstrap.send(request).await
    }

    /// A connection to broker `id`, opened if needed.
    async fn node(&mut self, id: i32) -> Result<&mut Connection, WireError> {
        if self.nodes.get(&id).is_some_and(Connection::is_broken) {
            self.nodes.remove(&id);
        }
        if !self.nodes.contains_key(&id) {
            if !self.addresses.contains_key(&id) {
                self.metadata(Some(Vec::new())).await?;
            }
            let addr = self
                .addresses
                .get(&id)
                .cloned()
                .ok_or_else(|| WireError::Protocol {
                    addr: self.bootstrap.addr().to_owned(),
                    reason: format!("broker {id} is not in the cluster's metadata"),
                })?;
            let conn = Connection::connect_to(&self.config, &addr).await?;
            if self.nodes.len() >= MAX_NODE_CONNECTIONS {
                self.nodes.pop_first();
            }
            self.nodes.insert(id, conn);
        }
        self.nodes.get_mut(&id).ok_or_else(|| WireError::Protocol {
            addr: self.bootstrap.addr().to_owned(),
            reason: format!("no connection to broker {id}"),
        })
    }

    /// Metadata for `topics` (`None`: every topic, empty: none), remembering broker addresses
    /// and the controller.
    async fn metadata(
        &mut self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, WireError> {
        // A lookup must never create the topic it asks about.
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(s(n)))))
                    .collect()
            }));
        let response = self.any(&request).await?;
        self.addresses = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller = (response.controller_id.0 >= 0).then_some(response.controller_id.0);
        Ok(response)
    }

    /// Sends a request that needs the controller to the known controller, or any broker (Kafka
    /// forwards it); after NOT_CONTROLLER, finds the controller with Metadata and retries
    /// there once.
    async fn on_controller<R: Request>(
        &mut self,
        request: &R,
        not_controller: fn(&R::Response) -> bool,
    ) -> Result<R::Response, WireError> {
        let response = match self.controller {
            Some(id) => self.node(id).await?.send(request).await?,
            None => self.any(request).await?,
        };
        if !not_controller(&response) {
            return Ok(response);
        }
        self.controller = None;
        self.metadata(Some(Vec::new())).await?;
        let id = self.controller.ok_or_else(|| WireError::Kafka {
            api: ApiKey::Metadata,
            error: ResponseError::NotController,
            message: Some("the cluster names no controller".to_owned()),
        })?;
        self.node(id).await?.send(request).await
    }

    /// Sends a group request to the group's coordinator (FindCoordinator first), finding it
    /// again and retrying once after NOT_COORDINATOR.
    async fn on_coordinator<R: Request>(
        &mut self,
        group: &str,
        request: &R,
        not_coordinator: fn(&R::Response) -> bool,
    ) -> Result<R::Response, WireError> {
        let mut attempt = 0;
        loop {
            let id = self.find_coordinator(group).await?;
            let response = self.node(id).await?.send(request).await?;
            attempt += 1;
            if attempt >= 2 || !not_coordinator(&response) {
                return Ok(response);
            }
            self.nodes.remove(&id);
        }
    }

    async fn find_coordinator(&mut self, group: &str) -> Result<i32, WireError> {
        let request = FindCoordinatorRequest::default()
            .with_key(s(group))
            .with_key_type(0);
        let response = self.any(&request).await?;
        WireError::check(
            ApiKey::FindCoordinator,
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let id = response.node_id.0;
        let addr = format!("{}:{}", response.host.as_str(), response.port);
        if self.addresses.get(&id) != Some(&addr) {
            self.nodes.remove(&id);
            self.addresses.insert(id, addr);
        }
        Ok(id)
    }

    // --- ACLs ------------------------------------------------------------------------------

    /// Creates `bindings` (CreateAcls). Kafka creates each independently; the first refused one
    /// is returned as the error, naming it.
    pub async fn create_acls(&mut self, bindings: &[AclBinding]) -> Result<(), WireError> {
        let creations = bindings
            .iter()
            .map(|b| {
                AclCreation::default()
                    .with_resource_type(b.resource_type.to_kafka())
                    .with_resource_name(s(&b.name))
                    .with_resource_pattern_type(b.pattern.to_kafka())
                    .with_principal(s(&b.principal))
                    .with_host(s(&b.host))
                    .with_operation(b.operation.to_kafka())
                    .with_permission_type(b.permission.to_kafka())
            })
            .collect();
        let request = CreateAclsRequest::default().with_creations(creations);
        let response = self
            .on_controller(&request, |r| {
                r.results
                    .iter()
                    .any(|x| x.error_code == ResponseError::NotController.code())
            })
            .await?;
        for (result, binding) in response.results.iter().zip(bindings) {
            let message = format!(
                "{} {} {} on {}:{} ({}){}",
                binding.principal,
                binding.permission,
                binding.operation,
                binding.resource_type,
                binding.name,
                binding.pattern,
                result
                    .error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            WireError::check(ApiKey::CreateAcls, result.error_code, Some(&message))?;
        }
        if response.results.len() != bindings.len() {
            return Err(WireError::Protocol {
                addr: self.bootstrap.addr().to_owned(),
                reason: format!(
                    "CreateAcls answered {} results for {} bindings",
                    response.results.len(),
                    bindings.len()
                ),
            });
        }
        Ok(())
    }

    /// The bindings matching `filter` (DescribeAcls). Bindings Herald's ACL model cannot
    /// represent (resource types USER and DELEGATION_TOKEN, token operations) are left out.
    pub async fn describe_acls(
        &mut self,
        filter: &AclFilter,
    ) -> Result<Vec<AclBinding>, WireError> {
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(ResourceType::filter_to_kafka(filter.resource_type))
            .with_resource_name_filter(filter.name.as_deref().map(s))
            .with_pattern_type_filter(filter.pattern.to_kafka())
            .with_principal_filter(filter.principal.as_deref().map(s))
            .with_host_filter(filter.host.as_deref().map(s))
            .with_operation(Operation::filter_to_kafka(filter.operation))
            .with_permission_type(Permission::filter_to_kafka(filter.permission));
        let response = self
            .on_controller(&request, |r| {
                r.error_code == ResponseError::NotController.code()
            })
            .await?;
        WireError::check(
            ApiKey::DescribeAcls,
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let mut out = Vec::new();
        for resource in &response.resources {
            for acl in &resource.acls {
                match binding(
                    resource.resource_type,
                    &resource.resource_name,
                    resource.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                ) {
                    Some(b) => out.push(b),
                    None => tracing::debug!(
                        resource = resource.resource_name.as_str(),
                        "ACL binding outside Herald's model left out"
                    ),
                }
            }
        }
        Ok(out)
    }

    /// Deletes every binding matching any of `filters` (DeleteAcls) and returns them.
    pub async fn delete_acls(
        &mut self,
        filters: &[AclFilter],
    ) -> Result<Vec<AclBinding>, WireError> {
        let request = DeleteAclsRequest::default().with_filters(
            filters
                .iter()
                .map(|f| {
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(ResourceType::filter_to_kafka(f.resource_type))
                        .with_resource_name_filter(f.name.as_deref().map(s))
                        .with_pattern_type_filter(f.pattern.to_kafka())
                        .with_principal_filter(f.principal.as_deref().map(s))
                        .with_host_filter(f.host.as_deref().map(s))
                        .with_operation(Operation::filter_to_kafka(f.operation))
                        .with_permission_type(Permission::filter_to_kafka(f.permission))
                })
                .collect(),
        );
        let response = self
            .on_controller(&request, |r| {
                r.filter_results
                    .iter()
                    .any(|x| x.error_code == ResponseError::NotController.code())
            })
            .await?;
        let mut deleted = Vec::new();
        for result in &response.filter_results {
            WireError::check(
                ApiKey::DeleteAcls,
                result.error_code,
                result.error_message.as_deref(),
            )?;
            for m in &result.matching_acls {
                WireError::check(ApiKey::DeleteAcls, m.error_code, m.error_message.as_deref())?;
                if let Some(b) = binding(
                    m.resource_type,
                    &m.resource_name,
                    m.pattern_type,
                    &m.principal,
                    &m.host,
                    m.operation,
                    m.permission_type,
                ) {
                    deleted.push(b);
                }
            }
        }
        Ok(deleted)
    }

    // --- SCRAM -----------------------------------------------------------------------------

    /// Creates or replaces `user`'s credential for `mechanism` (AlterUserScramCredentials). The
    /// salt is random and the password is salted here, as Kafka's AdminClient does, so the
    /// password itself never reaches the cluster.
    pub async fn upsert_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<(), WireError> {
        if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&iterations) {
            return Err(WireError::Config(format!(
                "SCRAM iterations must be within {}..={}, not {iterations}",
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            )));
        }
        let salt = scram::random_salt();
        let salted = scram::salted_password(mechanism, password, &salt, iterations);
        let upsertion = ScramCredentialUpsertion::default()
            .with_name(s(user))
            .with_mechanism(mechanism_code(mechanism))
            .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
            .with_salt(Bytes::from(salt))
            .with_salted_password(Bytes::from(salted));
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
        self.alter_scram(&request).await
    }

    /// Deletes `user`'s credential for `mechanism`.
    pub async fn delete_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<(), WireError> {
        let deletion = ScramCredentialDeletion::default()
            .with_name(s(user))
            .with_mechanism(mechanism_code(mechanism));
        let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]);
        self.alter_scram(&request).await
    }

    async fn alter_scram(
        &mut self,
        request: &AlterUserScramCredentialsRequest,
    ) -> Result<(), WireError> {
        let response = self
            .on_controller(request, |r| {
                r.results
                    .iter()
                    .any(|x| x.error_code == ResponseError::NotController.code())
            })
            .await?;
        for result in &response.results {
            let message = format!(
                "user {}{}",
                result.user.as_str(),
                result
                    .error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            WireError::check(
                ApiKey::AlterUserScramCredentials,
                result.error_code,
                Some(&message),
            )?;
        }
        Ok(())
    }

    /// The SCRAM credentials of `users` (`None`: every user). A named user without
    /// credentials is the error RESOURCE_NOT_FOUND, as Kafka answers it.
    pub async fn describe_scram_credentials(
        &mut self,
        users: Option<&[&str]>,
    ) -> Result<Vec<UserScramCredentials>, WireError> {
        let request = DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
            u.iter()
                .map(|name| UserName::default().with_name(s(name)))
                .collect()
        }));
        let response = self
            .on_controller(&request, |r| {
                r.error_code == ResponseError::NotController.code()
            })
            .await?;
        WireError::check(
            ApiKey::DescribeUserScramCredentials,
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let mut out = Vec::new();
        for result in &response.results {
            let message = format!(
                "user {}{}",
                result.user.as_str(),
                result
                    .error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            WireError::check(
                ApiKey::DescribeUserScramCredentials,
                result.error_code,
                Some(&message),
            )?;
            out.push(UserScramCredentials {
                user: text(&result.user),
                credentials: result
                    .credential_infos
                    .iter()
                    .filter_map(|c| {
                        let mechanism = mechanism_from_code(c.mechanism)?;
                        Some(ScramCredentialInfo {
                            mechanism,
                            iterations: c.iterations,
                        })
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    // --- Groups ----------------------------------------------------------------------------

    /// Every group of the cluster: ListGroups on each broker (each lists the groups it
    /// coordinates), merged.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>, WireError> {
        self.metadata(Some(Vec::new())).await?;
        let ids: Vec<i32> = self.addresses.keys().copied().collect();
        let mut groups = BTreeMap::new();
        for id in ids {
            let response = self
                .node(id)
                .await?
                .send(&ListGroupsRequest::default())
                .await?;
            WireError::check(ApiKey::ListGroups, response.error_code, None)?;
            for g in response.groups {
                groups.insert(
                    text(&g.group_id.0),
                    GroupListing {
                        group_id: text(&g.group_id.0),
                        protocol_type: text(&g.protocol_type),
                        state: text(&g.group_state),
                    },
                );
            }
        }
        Ok(groups.into_values().collect())
    }

    /// State, protocol and members of `group` (DescribeGroups on its coordinator). A group
    /// Kafka does not know is described as `Dead` with no members, as Kafka answers.
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription, WireError> {
        let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
        let response = self
            .on_coordinator(group, &request, |r| {
                r.groups
                    .iter()
                    .any(|g| g.error_code == ResponseError::NotCoordinator.code())
            })
            .await?;
        let described = response
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| WireError::Protocol {
                addr: self.bootstrap.addr().to_owned(),
                reason: format!("DescribeGroups did not answer for group {group}"),
            })?;
        WireError::check(
            ApiKey::DescribeGroups,
            described.error_code,
            described.error_message.as_deref(),
        )?;
        Ok(GroupDescription {
            group_id: text(&described.group_id.0),
            state: text(&described.group_state),
            protocol_type: text(&described.protocol_type),
            protocol: text(&described.protocol_data),
            members: described
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: text(&m.member_id),
                    group_instance_id: m.group_instance_id.as_ref().map(text),
                    client_id: text(&m.client_id),
                    client_host: text(&m.client_host),
                    assignment: m.member_assignment.clone(),
                })
                .collect(),
        })
    }

    /// The committed offsets of `group` (OffsetFetch), for `topics` with their partitions, or
    /// every topic the group committed for (`None`). Partitions without a commit are left out.
    pub async fn fetch_offsets(
        &mut self,
        group: &str,
        topics: Option<&[(&str, &[i32])]>,
    ) -> Result<Vec<CommittedOffset>, WireError> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics.map(|t| {
                t.iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(s(name)))
                            .with_partition_indexes(partitions.to_vec())
                    })
                    .collect()
            }));
        let response = self
            .on_coordinator(group, &request, |r| {
                r.error_code == ResponseError::NotCoordinator.code()
            })
            .await?;
        WireError::check(ApiKey::OffsetFetch, response.error_code, None)?;
        let mut out = Vec::new();
        for topic in &response.topics {
            for p in &topic.partitions {
                WireError::check(ApiKey::OffsetFetch, p.error_code, None)?;
                if p.committed_offset < 0 {
                    continue;
                }
                out.push(CommittedOffset {
                    topic: text(&topic.name.0),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: (p.committed_leader_epoch >= 0)
                        .then_some(p.committed_leader_epoch),
                    metadata: p.metadata.as_ref().map(text),
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits `offsets` (topic, partition, offset) for `group` as an administrator does for a
    /// group without live members: generation -1 and no member id, as
    /// `kafka-consumer-groups --reset-offsets` does. A group with members refuses it.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Result<(), WireError> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (topic, partition, offset) in offsets {
            topics.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s(name)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self
            .on_coordinator(group, &request, |r| {
                r.topics.iter().any(|t| {
                    t.partitions
                        .iter()
                        .any(|p| p.error_code == ResponseError::NotCoordinator.code())
                })
            })
            .await?;
        for topic in &response.topics {
            for p in &topic.partitions {
                let what = format!("{}[{}]", topic.name.0.as_str(), p.partition_index);
                WireError::check(ApiKey::OffsetCommit, p.error_code, Some(&what))?;
            }
        }
        Ok(())
    }

    /// Deletes `groups` (DeleteGroups on each group's coordinator); only groups without live
    /// members can be deleted.
    pub async fn delete_groups(&mut self, groups: &[&str]) -> Result<(), WireError> {
        for group in groups {
            let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
            let response = self
                .on_coordinator(group, &request, |r| {
                    r.results
                        .iter()
                        .any(|g| g.error_code == ResponseError::NotCoordinator.code())
                })
                .await?;
            for result in &response.results {
                let what = format!("group {}", result.group_id.0.as_str());
                WireError::check(ApiKey::DeleteGroups, result.error_code, Some(&what))?;
            }
        }
        Ok(())
    }

    // --- Offsets ---------------------------------------------------------------------------

    /// ListOffsets for `partitions` of `topic`, each sent to its leader.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[(i32, OffsetSpec)],
    ) -> Result<Vec<PartitionOffset>, WireError> {
        let metadata = self.metadata(Some(vec![topic.to_owned()])).await?;
        let topic_meta = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| WireError::Kafka {
                api: ApiKey::Metadata,
                error: ResponseError::UnknownTopicOrPartition,
                message: Some(topic.to_owned()),
            })?;
        WireError::check(ApiKey::Metadata, topic_meta.error_code, Some(topic))?;
        let mut by_leader: BTreeMap<i32, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for (partition, spec) in partitions {
            let leader = topic_meta
                .partitions
                .iter()
                .find(|p| p.partition_index == *partition)
                .map(|p| p.leader_id.0)
                .ok_or_else(|| WireError::Kafka {
                    api: ApiKey::Metadata,
                    error: ResponseError::UnknownTopicOrPartition,
                    message: Some(format!("{topic}[{partition}]")),
                })?;
            let timestamp = match spec {
                OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
                OffsetSpec::Latest => LATEST_TIMESTAMP,
                OffsetSpec::Timestamp(ms) => *ms,
            };
            by_leader.entry(leader).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(*partition)
                    .with_timestamp(timestamp),
            );
        }
        let mut out = Vec::new();
        for (leader, partitions) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_partitions(partitions),
                ]);
            let response = self.node(leader).await?.send(&request).await?;
            for t in &response.topics {
                for p in &t.partitions {
                    let what = format!("{}[{}]", t.name.0.as_str(), p.partition_index);
                    WireError::check(ApiKey::ListOffsets, p.error_code, Some(&what))?;
                    out.push(PartitionOffset {
                        partition: p.partition_index,
                        offset: (p.offset >= 0).then_some(p.offset),
                        timestamp: p.timestamp,
                    });
                }
            }
        }
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }
}

/// A binding from wire codes, or `None` if Herald's model cannot hold it.
fn binding(
    resource_type: i8,
    name: &StrBytes,
    pattern: i8,
    principal: &StrBytes,
    host: &StrBytes,
    operation: i8,
    permission: i8,
) -> Option<AclBinding> {
    Some(AclBinding {
        resource_type: ResourceType::from_kafka(resource_type).ok()?,
        name: text(name),
        pattern: PatternType::from_kafka(pattern).ok()?,
        principal: text(principal),
        host: text(host),
        operation: Operation::from_kafka(operation).ok()?,
        permission: Permission::from_kafka(permission).ok()?,
    })
}

/// Kafka's ScramMechanism codes.
fn mechanism_code(mechanism: Mechanism) -> i8 {
    match mechanism {
        Mechanism::Sha256 => 1,
        Mechanism::Sha512 => 2,
    }
}

fn mechanism_from_code(code: i8) -> Option<Mechanism> {
    match code {
        1 => Some(Mechanism::Sha256),
        2 => Some(Mechanism::Sha512),
        _ => None,
    }
}
