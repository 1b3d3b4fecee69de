//! Herald's security state and the authorizer every interface asks.
//!
//! SCRAM users (salted credentials, never passwords), ACL bindings, API keys (SHA-256 of the
//! secret, never the key) and tenants live in the internal topic `_herald.security`, one record
//! per change, keyed by what changed; a null value deletes. The state is loaded at start and
//! kept in memory. Changes are serialized, so the order in the topic is the order they took
//! effect.
//!
//! Every denial is counted in `auth_failures_total{interface,reason}` and appended, through a
//! bounded queue, to `_herald.audit.security` with principal, resource, operation and source.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use herald_auth::acl::{AclBinding, AclFilter, Operation};
use herald_auth::authz::{Authorizer, Interface, Resource, Subject, TENANT_USER_PREFIX};
use herald_auth::keys::{self, IssuedKey};
use herald_auth::quota::Quotas;
use herald_auth::scram::{DEFAULT_ITERATIONS, Mechanism, ServerExchange, StoredCredential};
use herald_core::TenantId;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::records::Record;
use crate::storage::{AppendOutcome, Storage};
use crate::{BrokerError, Existing, Missing};

pub const SECURITY_TOPIC: &str = "_herald.security";
pub const AUDIT_TOPIC: &str = "_herald.audit.security";
/// Audit records waiting to be appended; past this, denials are still counted but not recorded
/// (`audit_records_dropped_total`), so a flood of denials cannot grow memory.
const AUDIT_QUEUE: usize = 4096;

/// What a record of the security topic is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    Scram { name: String, mechanism: String },
    Acl { binding: AclBinding },
    ApiKey { id: String },
    Tenant { id: String },
}

/// A stored API key: the hash of its secret and what it may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub hash: String,
    /// The tenant the key is fenced into; `None` is an admin key.
    pub tenant: Option<String>,
    pub name: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: String,
    pub created_ms: i64,
}

/// What `create_tenant` made; the password (if generated) and the key are shown once.
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    pub tenant: String,
    pub principal: String,
    pub generated_password: Option<String>,
    pub api_key: IssuedKey,
    pub acls: Vec<AclBinding>,
}

/// Principals are `User:<name>`; names are what Kafka allows in SCRAM user names, minus the
/// characters that would need escaping in SCRAM or in ACL principals.
pub fn validate_user_name(name: &str) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::Invalid(format!(
            "user name {name:?} must be 1-128 characters of A-Z a-z 0-9 - _ . @"
        )))
    }
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() * 1000
}

fn json<T: Serialize>(v: &T) -> Result<Bytes, BrokerError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| BrokerError::Internal(e.to_string()))
}

/// One refused request, as counted and audited.
#[derive(Debug, Clone, Serialize)]
pub struct Denial {
    pub interface: &'static str,
    pub reason: &'static str,
    pub principal: String,
    pub resource: String,
    pub operation: String,
    pub source: String,
}

pub struct Security {
    storage: Arc<dyn Storage>,
    authorizer: Authorizer,
    topic_prefix: String,
    users: RwLock<BTreeMap<(String, Mechanism), StoredCredential>>,
    api_keys: RwLock<BTreeMap<String, ApiKeyRecord>>,
    tenants: RwLock<BTreeMap<String, TenantRecord>>,
    /// Serializes changes so the topic's order is the order they took effect.
    writes: tokio::sync::Mutex<()>,
    audit: OnceLock<mpsc::Sender<Denial>>,
    quotas: Quotas,
    scram_unknown_user_secret: Option<Vec<u8>>,
}

impl Security {
    pub async fn open(
        storage: Arc<dyn Storage>,
        cfg: &crate::BrokerConfig,
    ) -> Result<Security, BrokerError> {
        let topic_prefix = cfg.topic_prefix.as_str();
        storage.ensure_internal_topic(SECURITY_TOPIC).await?;
        // Audit records are kept for 90 days (alter retention.ms to change it).
        storage
            .ensure_topic_with(
                AUDIT_TOPIC,
                BTreeMap::from([("retention.ms".to_owned(), "7776000000".to_owned())]),
            )
            .await?;
        let s = Security {
            storage,
            authorizer: Authorizer::new(cfg.superusers.clone(), topic_prefix),
            quotas: Quotas::new(cfg.quotas.clone()),
            topic_prefix: topic_prefix.to_owned(),
            users: RwLock::new(BTreeMap::new()),
            api_keys: RwLock::new(BTreeMap::new()),
            tenants: RwLock::new(BTreeMap::new()),
            writes: tokio::sync::Mutex::new(()),
            audit: OnceLock::new(),
            scram_unknown_user_secret: cfg.scram_unknown_user_secret.clone(),
        };
        s.load().await?;
        Ok(s)
    }

    async fn load(&self) -> Result<(), BrokerError> {
        let stats = self.storage.partition_stats(SECURITY_TOPIC, 0).await?;
        let mut at = stats.log_start;
        let mut users = BTreeMap::new();
        let mut acls: BTreeMap<AclBinding, ()> = BTreeMap::new();
        let mut api_keys = BTreeMap::new();
        let mut tenants = BTreeMap::new();
        while at < stats.high_watermark {
            let read = self
                .storage
                .read(SECURITY_TOPIC, 0, at, 4 * 1024 * 1024)
                .await?;
            if read.batches.is_empty() {
                break;
            }
            for b in &read.batches {
                for r in crate::records::decode(b)? {
                    at = at.max(r.offset + 1);
                    let Some(key) = r
                        .key
                        .as_deref()
                        .and_then(|k| serde_json::from_slice::<Entry>(k).ok())
                    else {
                        tracing::warn!(
                            offset = r.offset,
                            "unreadable record in the security topic"
                        );
                        continue;
                    };
                    let value = r.value.as_deref();
                    match key {
                        Entry::Scram { name, mechanism } => {
                            let Some(mech) = Mechanism::from_name(&mechanism) else {
                                continue;
                            };
                            match value.and_then(|v| serde_json::from_slice(v).ok()) {
                                Some(c) => users.insert((name, mech), c),
                                None => users.remove(&(name, mech)),
                            };
                        }
                        Entry::Acl { binding } => {
                            if value.is_some() {
                                acls.insert(binding, ());
                            } else {
                                acls.remove(&binding);
                            }
                        }
                        Entry::ApiKey { id } => {
                            match value.and_then(|v| serde_json::from_slice(v).ok()) {
                                Some(k) => api_keys.insert(id, k),
                                None => api_keys.remove(&id),
                            };
                        }
                        Entry::Tenant { id } => {
                            match value.and_then(|v| serde_json::from_slice(v).ok()) {
                                Some(t) => tenants.insert(id, t),
                                None => tenants.remove(&id),
                            };
                        }
                    }
                }
            }
        }
        *self.users.write() = users;
        self.authorizer.replace(acls.into_keys());
        *self.api_keys.write() = api_keys;
        *self.tenants.write() = tenants;
        Ok(())
    }

    /// Appends records to the security topic, in one batch (one fsync).
    async fn append(&self, records: Vec<(Entry, Option<Bytes>)>) -> Result<(), BrokerError> {
        if records.is_empty() {
            return Ok(());
        }
        let ts = now_ms();
        let records = records
            .into_iter()
            .map(|(k, v)| {
                Ok(Record {
                    offset: 0,
                    timestamp_ms: ts,
                    key: Some(json(&k)?),
                    value: v,
                    headers: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, BrokerError>>()?;
        let batch = crate::records::build(&records)?;
        match self
            .storage
            .append_async(SECURITY_TOPIC, 0, batch, Vec::new())
            .await?
        {
            AppendOutcome::Appended { .. } => Ok(()),
            _ => Err(BrokerError::Internal(
                "unexpected duplicate in the security topic".into(),
            )),
        }
    }

    // ---- the authorizer ----------------------------------------------------------------

    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Asks the authorizer; a denial is counted and audited.
    pub fn authorize(
        &self,
        interface: Interface,
        subject: &Subject,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> bool {
        match self.authorizer.decide(subject, operation, resource) {
            Ok(()) => true,
            Err(reason) => {
                self.deny(Denial {
                    interface: interface.as_str(),
                    reason: reason.as_str(),
                    principal: subject.principal.clone(),
                    resource: resource.describe(),
                    operation: operation.as_str().to_owned(),
                    source: subject.host.clone(),
                });
                false
            }
        }
    }

    /// Asks the authorizer without recording a denial: for filtering listings, where leaving
    /// out what a subject may not see is the answer, not a refusal (Kafka's Metadata does so).
    pub fn permits(
        &self,
        subject: &Subject,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> bool {
        self.authorizer.decide(subject, operation, resource).is_ok()
    }

    /// Counts and audits a refusal decided elsewhere (failed authentication, namespace policy).
    pub fn deny(&self, d: Denial) {
        metrics::counter!("auth_failures_total", "interface" => d.interface, "reason" => d.reason)
            .increment(1);
        tracing::debug!(
            interface = d.interface,
            reason = d.reason,
            principal = %d.principal,
            resource = %d.resource,
            operation = %d.operation,
            source = %d.source,
            "denied"
        );
        if let Some(tx) = self.audit.get()
            && tx.try_send(d).is_err()
        {
            metrics::counter!("audit_records_dropped_total").increment(1);
        }
    }

    /// Starts appending audit records to `_herald.audit.security` (call once, in the runtime).
    pub fn start_audit(&self) {
        let (tx, mut rx) = mpsc::channel::<Denial>(AUDIT_QUEUE);
        if self.audit.set(tx).is_err() {
            return;
        }
        let storage = Arc::clone(&self.storage);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(256);
            while rx.recv_many(&mut buf, 256).await > 0 {
                let ts = now_ms();
                let records: Vec<Record> = buf
                    .drain(..)
                    .filter_map(|d| {
                        let mut v = serde_json::to_value(&d).ok()?;
                        if let Some(o) = v.as_object_mut() {
                            o.insert("time_ms".into(), ts.into());
                        }
                        Some(Record {
                            offset: 0,
                            timestamp_ms: ts,
                            key: Some(Bytes::from(d.principal.into_bytes())),
                            value: serde_json::to_vec(&v).ok().map(Bytes::from),
                            headers: Vec::new(),
                        })
                    })
                    .collect();
                let appended = match crate::records::build(&records) {
                    Ok(batch) => storage
                        .append_async(AUDIT_TOPIC, 0, batch, Vec::new())
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = appended {
                    tracing::warn!(error = %e, "cannot append to the audit topic");
                }
            }
        });
    }

    // ---- users -------------------------------------------------------------------------

    /// Creates or replaces a user's credential for one mechanism (Kafka's
    /// AlterUserScramCredentials upsert).
    pub async fn upsert_user(
        &self,
        name: &str,
        credential: StoredCredential,
    ) -> Result<(), BrokerError> {
        validate_user_name(name)?;
        let _w = self.writes.lock().await;
        let key = Entry::Scram {
            name: name.to_owned(),
            mechanism: credential.mechanism.name().to_owned(),
        };
        self.append(vec![(key, Some(json(&credential)?))]).await?;
        self.users
            .write()
            .insert((name.to_owned(), credential.mechanism), credential);
        Ok(())
    }

    /// Deletes one mechanism's credential of a user; `NotFound` if there was none.
    pub async fn delete_user_mechanism(
        &self,
        name: &str,
        mechanism: Mechanism,
    ) -> Result<(), BrokerError> {
        let _w = self.writes.lock().await;
        if !self
            .users
            .read()
            .contains_key(&(name.to_owned(), mechanism))
        {
            return Err(BrokerError::NotFound(Missing::Credential {
                user: name.to_owned(),
                mechanism: mechanism.name(),
            }));
        }
        let key = Entry::Scram {
            name: name.to_owned(),
            mechanism: mechanism.name().to_owned(),
        };
        self.append(vec![(key, None)]).await?;
        self.users.write().remove(&(name.to_owned(), mechanism));
        Ok(())
    }

    /// Deletes every credential of a user; `NotFound` if it had none.
    pub async fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        let _w = self.writes.lock().await;
        self.delete_user_locked(name).await
    }

    async fn delete_user_locked(&self, name: &str) -> Result<(), BrokerError> {
        let mechs = self.mechanisms_of(name);
        if mechs.is_empty() {
            return Err(BrokerError::NotFound(Missing::User(name.to_owned())));
        }
        let records = mechs
            .iter()
            .map(|m| {
                (
                    Entry::Scram {
                        name: name.to_owned(),
                        mechanism: m.name().to_owned(),
                    },
                    None,
                )
            })
            .collect();
        self.append(records).await?;
        let mut users = self.users.write();
        for m in mechs {
            users.remove(&(name.to_owned(), m));
        }
        Ok(())
    }

    fn mechanisms_of(&self, name: &str) -> Vec<Mechanism> {
        self.users
            .read()
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .collect()
    }

    /// A new SCRAM exchange whose answers for unknown users are derived from the configured
    /// secret, so they stay the same across restarts.
    pub fn scram_exchange(&self, mechanism: Mechanism) -> ServerExchange {
        let exchange = ServerExchange::new(mechanism);
        match &self.scram_unknown_user_secret {
            Some(secret) => exchange.with_unknown_user_secret(secret),
            None => exchange,
        }
    }

    pub fn credential(&self, name: &str, mechanism: Mechanism) -> Option<StoredCredential> {
        self.users
            .read()
            .get(&(name.to_owned(), mechanism))
            .cloned()
    }

    /// Users with their mechanisms and iteration counts.
    pub fn list_users(&self) -> BTreeMap<String, Vec<(Mechanism, u32)>> {
        let mut out: BTreeMap<String, Vec<(Mechanism, u32)>> = BTreeMap::new();
        for ((name, mech), c) in self.users.read().iter() {
            out.entry(name.clone())
                .or_default()
                .push((*mech, c.iterations));
        }
        out
    }

    // ---- ACLs --------------------------------------------------------------------------

    /// Stores validated bindings; returns how many were new.
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<usize, BrokerError> {
        for b in &bindings {
            b.validate()
                .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        }
        let _w = self.writes.lock().await;
        let fresh: Vec<AclBinding> = {
            let existing = self.authorizer.list(&AclFilter::any());
            let mut fresh: Vec<AclBinding> = Vec::new();
            for b in bindings {
                if !existing.contains(&b) && !fresh.contains(&b) {
                    fresh.push(b);
                }
            }
            fresh
        };
        let empty = json(&serde_json::json!({}))?;
        self.append(
            fresh
                .iter()
                .map(|b| (Entry::Acl { binding: b.clone() }, Some(empty.clone())))
                .collect(),
        )
        .await?;
        Ok(self.authorizer.add(fresh))
    }

    /// Removes what each filter matches; returns the removed bindings per filter.
    pub async fn delete_acls(
        &self,
        filters: &[AclFilter],
    ) -> Result<Vec<Vec<AclBinding>>, BrokerError> {
        let _w = self.writes.lock().await;
        let matched: Vec<Vec<AclBinding>> =
            filters.iter().map(|f| self.authorizer.list(f)).collect();
        let mut doomed: Vec<AclBinding> = matched.iter().flatten().cloned().collect();
        doomed.sort();
        doomed.dedup();
        self.append(
            doomed
                .iter()
                .map(|b| (Entry::Acl { binding: b.clone() }, None))
                .collect(),
        )
        .await?;
        for b in &doomed {
            self.authorizer.remove(&AclFilter::from(b));
        }
        Ok(matched)
    }

    pub fn describe_acls(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.authorizer.list(filter)
    }

    // ---- API keys ----------------------------------------------------------------------

    /// Issues a key; `tenant` fences it into one tenant, `None` makes an admin key.
    pub async fn create_api_key(
        &self,
        tenant: Option<&TenantId>,
        name: &str,
    ) -> Result<IssuedKey, BrokerError> {
        let _w = self.writes.lock().await;
        self.create_api_key_locked(tenant.map(|t| t.as_str().to_owned()), name)
            .await
    }

    async fn create_api_key_locked(
        &self,
        tenant: Option<String>,
        name: &str,
    ) -> Result<IssuedKey, BrokerError> {
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(BrokerError::Invalid(
                "key name must be at most 128 printable characters".into(),
            ));
        }
        let issued = keys::issue_key();
        let record = ApiKeyRecord {
            id: issued.id.clone(),
            hash: issued.hash.clone(),
            tenant,
            name: name.to_owned(),
            created_ms: now_ms(),
        };
        self.append(vec![(
            Entry::ApiKey {
                id: record.id.clone(),
            },
            Some(json(&record)?),
        )])
        .await?;
        self.api_keys.write().insert(record.id.clone(), record);
        Ok(issued)
    }

    /// Revokes a key by id; `NotFound` if there is none.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), BrokerError> {
        let _w = self.writes.lock().await;
        if !self.api_keys.read().contains_key(id) {
            return Err(BrokerError::NotFound(Missing::ApiKey(id.to_owned())));
        }
        self.append(vec![(Entry::ApiKey { id: id.to_owned() }, None)])
            .await?;
        self.api_keys.write().remove(id);
        Ok(())
    }

    pub fn list_api_keys(&self) -> Vec<ApiKeyRecord> {
        self.api_keys.read().values().cloned().collect()
    }

    /// The subject a presented API key stands for, the same on every HTTP route (`/v1` and the
    /// gateway's `/api`): the configured admin key is the trusted `User:admin`; an issued admin
    /// key the trusted `User:apikey-{id}`; a tenant key the tenant's principal
    /// `User:tenant-{id}`, fenced into its tenant and held to its ACLs as on the Kafka listener.
    /// `None` for anything else.
    pub fn subject_for_api_key(
        &self,
        admin_key: &str,
        presented: &str,
        host: String,
    ) -> Option<Subject> {
        if keys::constant_time_eq(presented.as_bytes(), admin_key.as_bytes()) {
            return Some(Subject::admin("admin", host));
        }
        let record = self.resolve_api_key(presented)?;
        Some(match record.tenant {
            Some(t) => Subject::user(&format!("{TENANT_USER_PREFIX}{t}"), host),
            None => Subject::admin(&format!("apikey-{}", record.id), host),
        })
    }

    /// The stored record of a presented key, if it is an issued, unrevoked key.
    pub fn resolve_api_key(&self, presented: &str) -> Option<ApiKeyRecord> {
        let (id, secret) = keys::parse_key(presented)?;
        let record = self.api_keys.read().get(id).cloned()?;
        keys::verify_secret(secret, &record.hash).then_some(record)
    }

    // ---- tenants -----------------------------------------------------------------------

    /// Creates a tenant: SCRAM-SHA-256 and -512 credentials for `User:tenant-{id}`, the default
    /// ACLs on its topics and groups, and a tenant API key. Nothing else.
    pub async fn create_tenant(
        &self,
        tenant: &TenantId,
        password: Option<String>,
    ) -> Result<CreatedTenant, BrokerError> {
        let id = tenant.as_str().to_owned();
        let user = format!("{TENANT_USER_PREFIX}{id}");
        let _w = self.writes.lock().await;
        if self.tenants.read().contains_key(&id) {
            return Err(BrokerError::Conflict(Existing::Tenant(id.clone())));
        }
        let generated = password.is_none();
        let password = password.unwrap_or_else(generate_password);
        if password.len() < 8 || password.len() > 1024 {
            return Err(BrokerError::Invalid(
                "password must be 8 to 1024 characters".into(),
            ));
        }
        let creds = {
            let password = password.clone();
            tokio::task::spawn_blocking(move || {
                Mechanism::ALL
                    .iter()
                    .map(|m| StoredCredential::generate(*m, &password, DEFAULT_ITERATIONS))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))?
        };
        let acls = herald_auth::authz::tenant_default_acls(&id, &self.topic_prefix);
        let record = TenantRecord {
            id: id.clone(),
            created_ms: now_ms(),
        };
        let mut records = Vec::new();
        for c in &creds {
            records.push((
                Entry::Scram {
                    name: user.clone(),
                    mechanism: c.mechanism.name().to_owned(),
                },
                Some(json(c)?),
            ));
        }
        let empty = json(&serde_json::json!({}))?;
        for b in &acls {
            records.push((Entry::Acl { binding: b.clone() }, Some(empty.clone())));
        }
        records.push((Entry::Tenant { id: id.clone() }, Some(json(&record)?)));
        self.append(records).await?;
        {
            let mut users = self.users.write();
            for c in creds {
                users.insert((user.clone(), c.mechanism), c);
            }
        }
        self.authorizer.add(acls.clone());
        self.tenants.write().insert(id.clone(), record);
        let api_key = self
            .create_api_key_locked(Some(id.clone()), &format!("tenant {id}"))
            .await?;
        Ok(CreatedTenant {
            tenant: id,
            principal: format!("User:{user}"),
            generated_password: generated.then_some(password),
            api_key,
            acls,
        })
    }

    /// Deletes a tenant's credentials, the ACLs naming its principal and its API keys. Its
    /// topics and channels stay (deleting data is a separate, deliberate step).
    pub async fn delete_tenant(&self, tenant: &str) -> Result<(), BrokerError> {
        let _w = self.writes.lock().await;
        if !self.tenants.read().contains_key(tenant) {
            return Err(BrokerError::NotFound(Missing::Tenant(tenant.to_owned())));
        }
        let user = format!("{TENANT_USER_PREFIX}{tenant}");
        let principal = format!("User:{user}");
        let acls = self.authorizer.list(&AclFilter {
            principal: Some(principal),
            ..AclFilter::any()
        });
        let keys: Vec<String> = self
            .api_keys
            .read()
            .values()
            .filter(|k| k.tenant.as_deref() == Some(tenant))
            .map(|k| k.id.clone())
            .collect();
        let mechs = self.mechanisms_of(&user);
        let mut records: Vec<(Entry, Option<Bytes>)> = Vec::new();
        records.extend(mechs.iter().map(|m| {
            (
                Entry::Scram {
                    name: user.clone(),
                    mechanism: m.name().to_owned(),
                },
                None,
            )
        }));
        records.extend(
            acls.iter()
                .map(|b| (Entry::Acl { binding: b.clone() }, None)),
        );
        records.extend(
            keys.iter()
                .map(|id| (Entry::ApiKey { id: id.clone() }, None)),
        );
        records.push((
            Entry::Tenant {
                id: tenant.to_owned(),
            },
            None,
        ));
        self.append(records).await?;
        {
            let mut users = self.users.write();
            for m in mechs {
                users.remove(&(user.clone(), m));
            }
        }
        for b in &acls {
            self.authorizer.remove(&AclFilter::from(b));
        }
        {
            let mut api_keys = self.api_keys.write();
            for id in &keys {
                api_keys.remove(id);
            }
        }
        self.tenants.write().remove(tenant);
        Ok(())
    }

    pub fn list_tenants(&self) -> Vec<TenantRecord> {
        self.tenants.read().values().cloned().collect()
    }

    pub fn tenant(&self, id: &str) -> Option<TenantRecord> {
        self.tenants.read().get(id).cloned()
    }
}

/// A random password for generated credentials: 24 characters of base64url (144 bits).
pub fn generate_password() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 18];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
