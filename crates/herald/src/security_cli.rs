//! `herald tenant`, `herald acl` and `herald api-key`: security administration of a running
//! server through its HTTP API (admin key required).

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Connection;
use crate::client::{Api, REQUEST_TIMEOUT, field, table, text};

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn rows_of(v: &Value, key: &str, cols: &[&str]) -> Vec<Vec<String>> {
    field(v, key)
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| cols.iter().map(|c| text(field(x, c))).collect())
                .collect()
        })
        .unwrap_or_default()
}

// ---- tenants ----------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant: SCRAM credentials for User:tenant-ID, the default ACLs on its topics
    /// and groups (smarteros.ID.*), and a tenant API key. The password (generated unless
    /// --password-stdin) and the key are printed once.
    Create {
        id: String,
        /// Read the Kafka password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's principal, credentials, ACLs, API keys and topics.
    Describe {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete tenants' credentials, ACLs and API keys (their topics are kept).
    Delete { ids: Vec<String> },
}

pub async fn run_tenant(conn: Connection, cmd: TenantCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        TenantCommand::Create {
            id,
            password_stdin,
            json,
        } => {
            let body = if password_stdin {
                json!({"id": id, "password": read_password_line()?})
            } else {
                json!({"id": id})
            };
            let v: Value = api
                .call(
                    Method::POST,
                    api.url(&["v1", "tenants"], &[]),
                    Some(body),
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            println!(
                "tenant {}  principal {}",
                text(field(&v, "tenant")),
                text(field(&v, "principal"))
            );
            if let Some(p) = field(&v, "password").as_str() {
                println!("  Kafka password  {p}  (SCRAM-SHA-256/512; shown only this once)");
            }
            println!(
                "  API key         {}  (tenant-scoped; shown only this once)",
                text(field(&v, "api_key"))
            );
            for b in field(&v, "acls").as_array().into_iter().flatten() {
                println!("  ACL             {}", acl_line(b));
            }
            Ok(())
        }
        TenantCommand::List { json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "tenants"], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            print!(
                "{}",
                table(
                    &["TENANT", "PRINCIPAL", "TOPICS"],
                    &rows_of(&v, "tenants", &["tenant", "principal", "topics"])
                )
            );
            Ok(())
        }
        TenantCommand::Describe { id, json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "tenants", &id], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            println!("tenant      {}", text(field(&v, "tenant")));
            println!("principal   {}", text(field(&v, "principal")));
            let list = |key: &str| {
                field(&v, key)
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            println!("mechanisms  {}", list("mechanisms"));
            for b in field(&v, "acls").as_array().into_iter().flatten() {
                println!("acl         {}", acl_line(b));
            }
            for k in field(&v, "api_keys").as_array().into_iter().flatten() {
                println!("api key     {}", text(field(k, "id")));
            }
            println!("topics      {}", list("topics"));
            Ok(())
        }
        TenantCommand::Delete { ids } => {
            for id in ids {
                api.send(
                    Method::DELETE,
                    api.url(&["v1", "tenants", &id], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
                println!("deleted tenant {id} (credentials, ACLs and API keys; topics kept)");
            }
            Ok(())
        }
    }
}

// ---- ACLs -------------------------------------------------------------------------------

fn acl_line(b: &Value) -> String {
    format!(
        "{} {} {} on {}:{} ({}) from {}",
        text(field(b, "principal")),
        text(field(b, "permission")),
        text(field(b, "operation")),
        text(field(b, "resource_type")),
        text(field(b, "name")),
        text(field(b, "pattern")),
        text(field(b, "host")),
    )
}

/// The resource an ACL command is about (one of).
#[derive(Args, Debug, Default)]
pub struct AclResource {
    #[arg(long, conflicts_with_all = ["group", "cluster", "transactional_id"])]
    topic: Option<String>,
    #[arg(long, conflicts_with_all = ["cluster", "transactional_id"])]
    group: Option<String>,
    #[arg(long, conflicts_with = "transactional_id")]
    cluster: bool,
    #[arg(long)]
    transactional_id: Option<String>,
}

impl AclResource {
    fn get(&self) -> Option<(&'static str, String)> {
        if let Some(t) = &self.topic {
            Some(("TOPIC", t.clone()))
        } else if let Some(g) = &self.group {
            Some(("GROUP", g.clone()))
        } else if self.cluster {
            Some(("CLUSTER", "kafka-cluster".into()))
        } else {
            self.transactional_id
                .as_ref()
                .map(|t| ("TRANSACTIONAL_ID", t.clone()))
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// List ACLs, optionally filtered. --pattern match lists every ACL that applies to the
    /// named resource (LITERAL, PREFIXED prefixes of it and `*`).
    List {
        #[command(flatten)]
        resource: AclResource,
        #[arg(long)]
        principal: Option<String>,
        /// any (default), match, literal or prefixed.
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Allow (or with --deny, deny) a principal operations on a resource.
    Create {
        /// User:<name>, or User:* for everyone.
        #[arg(long)]
        principal: String,
        /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS,
        /// IDEMPOTENT_WRITE, CLUSTER_ACTION or ALL; repeatable.
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        #[command(flatten)]
        resource: AclResource,
        /// Match every resource whose name starts with the given one.
        #[arg(long)]
        prefixed: bool,
        /// Deny instead of allow (DENY wins over any ALLOW).
        #[arg(long)]
        deny: bool,
        /// Client address the ACL applies to.
        #[arg(long, default_value = "*")]
        host: String,
    },
    /// Delete the ACLs matching a filter (at least one selector, or --all).
    Delete {
        #[command(flatten)]
        resource: AclResource,
        #[arg(long)]
        principal: Option<String>,
        /// any (default), literal or prefixed.
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long)]
        operation: Option<String>,
        /// Delete every ACL.
        #[arg(long)]
        all: bool,
    },
}

fn filter_query(
    resource: &AclResource,
    principal: Option<String>,
    pattern: Option<String>,
    operation: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some((t, name)) = resource.get() {
        q.push(("resource_type", t.to_owned()));
        q.push(("name", name));
    }
    if let Some(p) = principal {
        q.push(("principal", p));
    }
    if let Some(p) = pattern {
        q.push(("pattern", p));
    }
    if let Some(o) = operation {
        q.push(("operation", o));
    }
    q
}

pub async fn run_acl(conn: Connection, cmd: AclCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        AclCommand::List {
            resource,
            principal,
            pattern,
            json,
        } => {
            let q = filter_query(&resource, principal, pattern, None);
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "acls"], &q),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            print!(
                "{}",
                table(
                    &[
                        "PRINCIPAL",
                        "PERMISSION",
                        "OPERATION",
                        "RESOURCE",
                        "NAME",
                        "PATTERN",
                        "HOST"
                    ],
                    &rows_of(
                        &v,
                        "acls",
                        &[
                            "principal",
                            "permission",
                            "operation",
                            "resource_type",
                            "name",
                            "pattern",
                            "host"
                        ]
                    )
                )
            );
            Ok(())
        }
        AclCommand::Create {
            principal,
            operations,
            resource,
            prefixed,
            deny,
            host,
        } => {
            let Some((resource_type, name)) = resource.get() else {
                bail!("name the resource: --topic, --group, --cluster or --transactional-id");
            };
            let acls: Vec<Value> = operations
                .iter()
                .flat_map(|o| o.split(','))
                .map(|o| {
                    json!({
                        "resource_type": resource_type,
                        "name": name,
                        "pattern": if prefixed { "PREFIXED" } else { "LITERAL" },
                        "principal": principal,
                        "host": host,
                        "operation": o.trim().to_ascii_uppercase().replace('-', "_"),
                        "permission": if deny { "DENY" } else { "ALLOW" },
                    })
                })
                .collect();
            let v: Value = api
                .call(
                    Method::POST,
                    api.url(&["v1", "acls"], &[]),
                    Some(json!({ "acls": acls })),
                    REQUEST_TIMEOUT,
                )
                .await?;
            println!("created {} ACL(s)", text(field(&v, "created")));
            Ok(())
        }
        AclCommand::Delete {
            resource,
            principal,
            pattern,
            operation,
            all,
        } => {
            let q = filter_query(&resource, principal, pattern, operation);
            if q.is_empty() && !all {
                bail!(
                    "give a selector (--principal, --topic, --group, --cluster, --operation) or --all"
                );
            }
            let v: Value = api
                .call(
                    Method::DELETE,
                    api.url(&["v1", "acls"], &q),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            let deleted = field(&v, "deleted").as_array().cloned().unwrap_or_default();
            for b in &deleted {
                println!("deleted {}", acl_line(b));
            }
            println!("{} ACL(s) deleted", deleted.len());
            Ok(())
        }
    }
}

// ---- API keys ---------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Issue an API key, fenced into --tenant, or an admin key without it. Printed once.
    Create {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List issued keys (ids, never the keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke keys by id.
    Revoke { ids: Vec<String> },
}

pub async fn run_key(conn: Connection, cmd: KeyCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        KeyCommand::Create { tenant, name } => {
            let v: Value = api
                .call(
                    Method::POST,
                    api.url(&["v1", "api-keys"], &[]),
                    Some(json!({"tenant": tenant, "name": name})),
                    REQUEST_TIMEOUT,
                )
                .await?;
            println!(
                "key {}  id {}  ({})",
                text(field(&v, "key")),
                text(field(&v, "id")),
                match field(&v, "tenant").as_str() {
                    Some(t) => format!("tenant {t}"),
                    None => "admin".into(),
                }
            );
            println!("shown only this once; only its hash is stored");
            Ok(())
        }
        KeyCommand::List { json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "api-keys"], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            print!(
                "{}",
                table(
                    &["ID", "TENANT", "NAME"],
                    &rows_of(&v, "api_keys", &["id", "tenant", "name"])
                )
            );
            Ok(())
        }
        KeyCommand::Revoke { ids } => {
            for id in ids {
                api.send(
                    Method::DELETE,
                    api.url(&["v1", "api-keys", &id], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
                println!("revoked API key {id}");
            }
            Ok(())
        }
    }
}
