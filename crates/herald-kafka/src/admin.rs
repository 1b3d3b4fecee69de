//! Security administration over the Kafka protocol: CreateAcls, DescribeAcls, DeleteAcls
//! (ALTER / DESCRIBE on the cluster) and DescribeUserScramCredentials /
//! AlterUserScramCredentials (DESCRIBE / ALTER on the cluster), so `kafka-acls`, `rpk acl`,
//! kafka-python's and librdkafka's admin clients manage Herald as they manage Kafka.

use std::collections::{BTreeMap, HashSet};

use herald_auth::acl::{
    AclBinding, AclError, AclFilter, Operation, PatternFilter, PatternType, Permission,
    ResourceType,
};
use herald_auth::authz::Resource;
use herald_auth::scram::{Mechanism, StoredCredential};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use herald_broker::BrokerError;

use crate::authz::{self, check};
use crate::conn::Connection;
use crate::errors;

use crate::errors::{DUPLICATE_RESOURCE, UNACCEPTABLE_CREDENTIAL};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn msg(m: &str) -> Option<StrBytes> {
    Some(s(m))
}

/// Kafka's ScramMechanism codes: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
fn mechanism_from_kafka(code: i8) -> Option<Mechanism> {
    match code {
        1 => Some(Mechanism::Sha256),
        2 => Some(Mechanism::Sha512),
        _ => None,
    }
}

/// The code for a failed credential change: the client's own faults in the terms
/// AlterUserScramCredentials uses, every other error as `errors::code` maps it, so a broker
/// that cannot store the change never blames the request.
fn credential_error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Invalid(_) => UNACCEPTABLE_CREDENTIAL,
        BrokerError::NotFound(_) => errors::RESOURCE_NOT_FOUND,
        other => errors::code(other),
    }
}

fn mechanism_to_kafka(m: Mechanism) -> i8 {
    match m {
        Mechanism::Sha256 => 1,
        Mechanism::Sha512 => 2,
    }
}

fn binding_from_wire(
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> Result<AclBinding, AclError> {
    let b = AclBinding {
        resource_type: ResourceType::from_kafka(c.resource_type)?,
        name: c.resource_name.as_str().to_owned(),
        pattern: PatternType::from_kafka(c.resource_pattern_type)?,
        principal: c.principal.as_str().to_owned(),
        host: c.host.as_str().to_owned(),
        operation: Operation::from_kafka(c.operation)?,
        permission: Permission::from_kafka(c.permission_type)?,
    };
    b.validate()?;
    Ok(b)
}

/// A DescribeAcls/DeleteAcls filter from its wire fields.
#[allow(clippy::too_many_arguments)]
fn filter_from_wire(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, AclError> {
    Ok(AclFilter {
        resource_type: ResourceType::filter_from_kafka(resource_type)?,
        name: name.as_ref().map(|n| n.as_str().to_owned()),
        pattern: PatternFilter::from_kafka(pattern)?,
        principal: principal.as_ref().map(|p| p.as_str().to_owned()),
        host: host.as_ref().map(|h| h.as_str().to_owned()),
        operation: Operation::filter_from_kafka(operation)?,
        permission: Permission::filter_from_kafka(permission)?,
    })
}

pub async fn create_acls(conn: &Connection, req: CreateAclsRequest) -> CreateAclsResponse {
    let who = authz::subject(conn);
    let fail_all = |code: i16, m: &str| {
        CreateAclsResponse::default().with_results(
            req.creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(msg(m))
                })
                .collect(),
        )
    };
    if !check(conn, &who, Operation::Alter, Resource::Cluster) {
        return fail_all(
            errors::CLUSTER_AUTHORIZATION_FAILED,
            "Authorization failed.",
        );
    }
    let parsed: Vec<Result<AclBinding, AclError>> =
        req.creations.iter().map(binding_from_wire).collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
    let stored = conn.ctx.broker.security().create_acls(valid).await;
    let results = parsed
        .into_iter()
        .map(|r| match (&r, &stored) {
            (Err(e), _) => AclCreationResult::default()
                .with_error_code(errors::INVALID_REQUEST)
                .with_error_message(msg(&e.to_string())),
            (Ok(_), Err(e)) => AclCreationResult::default()
                .with_error_code(errors::code(e))
                .with_error_message(msg(&e.to_string())),
            (Ok(_), Ok(_)) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe_acls(conn: &Connection, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Describe, Resource::Cluster) {
        return DescribeAclsResponse::default()
            .with_error_code(errors::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(msg("Authorization failed."));
    }
    let filter = match filter_from_wire(
        req.resource_type_filter,
        &req.resource_name_filter,
        req.pattern_type_filter,
        &req.principal_filter,
        &req.host_filter,
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => {
            return DescribeAclsResponse::default()
                .with_error_code(errors::INVALID_REQUEST)
                .with_error_message(msg(&e.to_string()));
        }
    };
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in conn.ctx.broker.security().describe_acls(&filter) {
        by_resource
            .entry((
                b.resource_type.to_kafka(),
                b.name.clone(),
                b.pattern.to_kafka(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(b.principal))
                    .with_host(s(b.host))
                    .with_operation(b.operation.to_kafka())
                    .with_permission_type(b.permission.to_kafka()),
            );
    }
    DescribeAclsResponse::default().with_resources(
        by_resource
            .into_iter()
            .map(|((t, name, p), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(t)
                    .with_resource_name(s(name))
                    .with_pattern_type(p)
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub async fn delete_acls(conn: &Connection, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Alter, Resource::Cluster) {
        return DeleteAclsResponse::default().with_filter_results(
            req.filters
                .iter()
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(errors::CLUSTER_AUTHORIZATION_FAILED)
                        .with_error_message(msg("Authorization failed."))
                })
                .collect(),
        );
    }
    let parsed: Vec<Result<AclFilter, AclError>> = req
        .filters
        .iter()
        .map(|f| {
            filter_from_wire(
                f.resource_type_filter,
                &f.resource_name_filter,
                f.pattern_type_filter,
                &f.principal_filter,
                &f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
    let removed = conn.ctx.broker.security().delete_acls(&valid).await;
    let mut removed_iter = match &removed {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = parsed
        .into_iter()
        .map(|r| match r {
            Err(e) => DeleteAclsFilterResult::default()
                .with_error_code(errors::INVALID_REQUEST)
                .with_error_message(msg(&e.to_string())),
            Ok(_) => match &removed {
                Err(e) => DeleteAclsFilterResult::default()
                    .with_error_code(errors::code(e))
                    .with_error_message(msg(&e.to_string())),
                Ok(_) => DeleteAclsFilterResult::default().with_matching_acls(
                    removed_iter
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type.to_kafka())
                                .with_resource_name(s(b.name))
                                .with_pattern_type(b.pattern.to_kafka())
                                .with_principal(s(b.principal))
                                .with_host(s(b.host))
                                .with_operation(b.operation.to_kafka())
                                .with_permission_type(b.permission.to_kafka())
                        })
                        .collect(),
                ),
            },
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

pub fn describe_user_scram_credentials(
    conn: &Connection,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let who = authz::subject(conn);
    if !check(conn, &who, Operation::Describe, Resource::Cluster) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(errors::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(msg("Authorization failed."));
    }
    let all = conn.ctx.broker.security().list_users();
    let info = |mechs: &[(Mechanism, u32)]| -> Vec<CredentialInfo> {
        mechs
            .iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(mechanism_to_kafka(*m))
                    .with_iterations(i32::try_from(*i).unwrap_or(i32::MAX))
            })
            .collect()
    };
    let results = match req.users {
        // Null or empty: every user.
        None => all
            .iter()
            .map(|(name, mechs)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(s(name.clone()))
                    .with_credential_infos(info(mechs))
            })
            .collect(),
        Some(users) if users.is_empty() => all
            .iter()
            .map(|(name, mechs)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(s(name.clone()))
                    .with_credential_infos(info(mechs))
            })
            .collect(),
        Some(users) => {
            let mut seen = HashSet::new();
            let dups: HashSet<String> = users
                .iter()
                .filter(|u| !seen.insert(u.name.as_str().to_owned()))
                .map(|u| u.name.as_str().to_owned())
                .collect();
            let mut done = HashSet::new();
            users
                .into_iter()
                .filter(|u| done.insert(u.name.as_str().to_owned()))
                .map(|u| {
                    let name = u.name.as_str().to_owned();
                    let r = DescribeUserScramCredentialsResult::default().with_user(u.name);
                    if dups.contains(&name) {
                        return r
                            .with_error_code(DUPLICATE_RESOURCE)
                            .with_error_message(msg("Cannot describe SCRAM credentials for the same user twice in a single request"));
                    }
                    match all.get(&name) {
                        Some(mechs) => r.with_credential_infos(info(mechs)),
                        None => r
                            .with_error_code(errors::RESOURCE_NOT_FOUND)
                            .with_error_message(msg(&format!(
                                "Attempt to describe a user credential that does not exist: {name}"
                            ))),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub async fn alter_user_scram_credentials(
    conn: &Connection,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let who = authz::subject(conn);
    let mut users: Vec<String> = req
        .deletions
        .iter()
        .map(|d| d.name.as_str().to_owned())
        .chain(req.upsertions.iter().map(|u| u.name.as_str().to_owned()))
        .collect();
    users.sort();
    users.dedup();
    if !check(conn, &who, Operation::Alter, Resource::Cluster) {
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .into_iter()
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(s(u))
                        .with_error_code(errors::CLUSTER_AUTHORIZATION_FAILED)
                        .with_error_message(msg("Authorization failed."))
                })
                .collect(),
        );
    }
    let security = conn.ctx.broker.security();
    // One result per user: the first failure among its changes, else success.
    let mut outcome: BTreeMap<String, (i16, Option<String>)> = users
        .iter()
        .map(|u| (u.clone(), (errors::NONE, None)))
        .collect();
    let mut fail = |user: &str, code: i16, m: String| {
        if let Some(slot) = outcome.get_mut(user)
            && slot.0 == errors::NONE
        {
            *slot = (code, Some(m));
        }
    };
    for d in &req.deletions {
        let name = d.name.as_str();
        match mechanism_from_kafka(d.mechanism) {
            None => fail(
                name,
                errors::UNSUPPORTED_SASL_MECHANISM,
                format!("unknown SCRAM mechanism code {}", d.mechanism),
            ),
            Some(m) => {
                if let Err(e) = security.delete_user_mechanism(name, m).await {
                    fail(name, credential_error_code(&e), e.to_string());
                }
            }
        }
    }
    for u in &req.upsertions {
        let name = u.name.as_str();
        let Some(m) = mechanism_from_kafka(u.mechanism) else {
            fail(
                name,
                errors::UNSUPPORTED_SASL_MECHANISM,
                format!("unknown SCRAM mechanism code {}", u.mechanism),
            );
            continue;
        };
        let Some(cred) = u32::try_from(u.iterations).ok().and_then(|i| {
            StoredCredential::from_salted_password(m, &u.salt, &u.salted_password, i)
        }) else {
            fail(
                name,
                UNACCEPTABLE_CREDENTIAL,
                format!(
                    "iterations must be {}..={} with a non-empty salt and a salted password of the mechanism's length",
                    herald_auth::scram::MIN_ITERATIONS,
                    herald_auth::scram::MAX_ITERATIONS
                ),
            );
            continue;
        };
        if let Err(e) = security.upsert_user(name, cred).await {
            fail(name, credential_error_code(&e), e.to_string());
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(
        outcome
            .into_iter()
            .map(|(u, (code, m))| {
                AlterUserScramCredentialsResult::default()
                    .with_user(s(u))
                    .with_error_code(code)
                    .with_error_message(m.map(s))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_credential_changes_blame_the_client_only_for_its_own_faults() {
        let code = |e: BrokerError| credential_error_code(&e);
        assert_eq!(
            code(BrokerError::Invalid("bad salt".into())),
            UNACCEPTABLE_CREDENTIAL
        );
        assert_eq!(
            code(BrokerError::NotFound(herald_broker::Missing::User(
                "alice".into()
            ))),
            errors::RESOURCE_NOT_FOUND
        );
        // Server faults keep their own codes: a retriable timeout stays retriable, and a full
        // disk is not "no such user".
        assert_eq!(
            code(BrokerError::Unavailable("the log shut down".into())),
            errors::REQUEST_TIMED_OUT
        );
        assert_eq!(
            code(BrokerError::StorageFull("disk full".into())),
            errors::KAFKA_STORAGE_ERROR
        );
        assert_eq!(
            code(BrokerError::Forbidden("denied".into())),
            errors::code(&BrokerError::Forbidden("denied".into()))
        );
    }
}
