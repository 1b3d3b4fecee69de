//! SCRAM users: salted credentials (never passwords) kept in the internal topic
//! `_herald.security`, one record per change (a null value deletes), loaded at start.

use std::collections::BTreeMap;

use bytes::Bytes;
use herald_auth::scram::{Mechanism, StoredCredential};
use herald_log::batch::Record;
use herald_log::{AppendOutcome, Log};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::BrokerError;

pub const SECURITY_TOPIC: &str = "_herald.security";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: String,
    name: String,
    mechanism: String,
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

pub struct UserStore {
    log: Log,
    users: RwLock<BTreeMap<(String, Mechanism), StoredCredential>>,
}

impl UserStore {
    pub fn open(log: Log) -> Result<UserStore, BrokerError> {
        crate::ensure_internal_topic(&log, SECURITY_TOPIC)?;
        let store = UserStore {
            log,
            users: RwLock::new(BTreeMap::new()),
        };
        store.load()?;
        Ok(store)
    }

    fn load(&self) -> Result<(), BrokerError> {
        let stats = self.log.partition_stats(SECURITY_TOPIC, 0)?;
        let mut at = stats.log_start;
        let mut users = BTreeMap::new();
        while at < stats.high_watermark {
            let read = self.log.read(SECURITY_TOPIC, 0, at, 4 * 1024 * 1024)?;
            if read.batches.is_empty() {
                break;
            }
            for b in &read.batches {
                for r in herald_log::batch::decode(b)? {
                    at = at.max(r.offset + 1);
                    let Some(key) = r
                        .key
                        .as_deref()
                        .and_then(|k| serde_json::from_slice::<Key>(k).ok())
                        .filter(|k| k.kind == "scram")
                    else {
                        continue;
                    };
                    let Some(mech) = Mechanism::from_name(&key.mechanism) else {
                        continue;
                    };
                    match r
                        .value
                        .as_deref()
                        .and_then(|v| serde_json::from_slice::<StoredCredential>(v).ok())
                    {
                        Some(c) => users.insert((key.name, mech), c),
                        None => users.remove(&(key.name, mech)),
                    };
                }
            }
        }
        *self.users.write() = users;
        Ok(())
    }

    async fn append(&self, key: &Key, value: Option<&StoredCredential>) -> Result<(), BrokerError> {
        let record = Record {
            offset: 0,
            timestamp_ms: time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
            key: Some(Bytes::from(
                serde_json::to_vec(key).map_err(|e| BrokerError::Internal(e.to_string()))?,
            )),
            value: match value {
                Some(v) => Some(Bytes::from(
                    serde_json::to_vec(v).map_err(|e| BrokerError::Internal(e.to_string()))?,
                )),
                None => None,
            },
            headers: Vec::new(),
        };
        let batch = herald_log::batch::build(std::slice::from_ref(&record))?;
        match crate::append(&self.log, SECURITY_TOPIC, 0, batch, Vec::new()).await? {
            AppendOutcome::Appended { .. } => Ok(()),
            _ => Err(BrokerError::Internal(
                "unexpected duplicate in the security topic".into(),
            )),
        }
    }

    /// Creates or replaces a user's credential for one mechanism (Kafka's
    /// AlterUserScramCredentials upsert).
    pub async fn upsert(
        &self,
        name: &str,
        credential: StoredCredential,
    ) -> Result<(), BrokerError> {
        validate_user_name(name)?;
        let key = Key {
            kind: "scram".into(),
            name: name.to_owned(),
            mechanism: credential.mechanism.name().to_owned(),
        };
        self.append(&key, Some(&credential)).await?;
        self.users
            .write()
            .insert((name.to_owned(), credential.mechanism), credential);
        Ok(())
    }

    /// Deletes every credential of a user; `NotFound` if it had none.
    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let mechs: Vec<Mechanism> = self
            .users
            .read()
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .collect();
        if mechs.is_empty() {
            return Err(BrokerError::NotFound(format!("user {name} does not exist")));
        }
        for m in mechs {
            let key = Key {
                kind: "scram".into(),
                name: name.to_owned(),
                mechanism: m.name().to_owned(),
            };
            self.append(&key, None).await?;
            self.users.write().remove(&(name.to_owned(), m));
        }
        Ok(())
    }

    pub fn credential(&self, name: &str, mechanism: Mechanism) -> Option<StoredCredential> {
        self.users
            .read()
            .get(&(name.to_owned(), mechanism))
            .cloned()
    }

    /// Users with their mechanisms and iteration counts.
    pub fn list(&self) -> BTreeMap<String, Vec<(Mechanism, u32)>> {
        let mut out: BTreeMap<String, Vec<(Mechanism, u32)>> = BTreeMap::new();
        for ((name, mech), c) in self.users.read().iter() {
            out.entry(name.clone())
                .or_default()
                .push((*mech, c.iterations));
        }
        out
    }
}
