//! `herald group …`: consumer groups.

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::*;
use crate::Connection;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Members, assignments, committed offsets, high watermarks and lag of a group.
    Describe {
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets (refused while the group has live members).
    ResetOffsets(ResetArgs),
    /// Delete an empty group and its committed offsets.
    Delete { groups: Vec<String> },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("to").required(true).multiple(false)))]
pub struct ResetArgs {
    pub(super) group: String,
    /// Topics to reset (glob, e.g. smarteros.*.*.order_*).
    #[arg(long, value_name = "GLOB")]
    pub(super) topic: String,
    #[arg(long, group = "to")]
    pub(super) to_earliest: bool,
    #[arg(long, group = "to")]
    pub(super) to_latest: bool,
    #[arg(long, group = "to", value_name = "N")]
    pub(super) to_offset: Option<u64>,
    /// Replay from this moment (RFC 3339, e.g. 2025-11-23T12:00:00Z).
    #[arg(long, group = "to", value_name = "RFC3339")]
    pub(super) to_datetime: Option<String>,
    #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
    pub(super) shift_by: Option<i64>,
    /// Show the plan without changing anything.
    #[arg(long)]
    pub(super) dry_run: bool,
}

pub async fn run_group(conn: Connection, cmd: GroupCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        GroupCommand::List { json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "groups"], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = field(&v, "groups")
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| {
                            vec![
                                text(field(g, "group")),
                                text(field(g, "state")),
                                text(field(g, "protocol_type")),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!("{}", table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows));
            Ok(())
        }
        GroupCommand::Describe { group, json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "groups", &group], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("GROUP     {}", text(field(&v, "group")));
            println!("STATE     {}", text(field(&v, "state")));
            println!(
                "PROTOCOL  {} {}",
                text(field(&v, "protocol_type")),
                text(field(&v, "protocol"))
            );
            println!("LAG       {}", text(field(&v, "lag")));
            println!();
            let members: Vec<Vec<String>> = field(&v, "members")
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|m| {
                            let assigned: Vec<String> = field(m, "assignment")
                                .as_array()
                                .map(|x| {
                                    x.iter()
                                        .map(|t| {
                                            format!(
                                                "{}:{}",
                                                text(field(t, "topic")),
                                                field(t, "partitions")
                                            )
                                        })
                                        .collect()
                                })
                                .unwrap_or_default();
                            vec![
                                text(field(m, "member_id")),
                                text(field(m, "client_id")),
                                text(field(m, "client_host")),
                                assigned.join(" "),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table(&["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"], &members)
            );
            println!();
            let offsets: Vec<Vec<String>> = field(&v, "offsets")
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| {
                            vec![
                                text(field(o, "topic")),
                                text(field(o, "partition")),
                                text(field(o, "committed")),
                                text(field(o, "high_watermark")),
                                text(field(o, "lag")),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table(
                    &["TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"],
                    &offsets
                )
            );
            Ok(())
        }
        GroupCommand::ResetOffsets(a) => {
            let (strategy, value) = if a.to_earliest {
                ("earliest", Value::Null)
            } else if a.to_latest {
                ("latest", Value::Null)
            } else if let Some(o) = a.to_offset {
                ("offset", Value::from(o))
            } else if let Some(d) = a.to_datetime {
                ("datetime", Value::from(d))
            } else if let Some(n) = a.shift_by {
                ("shift-by", Value::from(n))
            } else {
                anyhow::bail!(
                    "give one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by"
                );
            };
            let body = serde_json::json!({"topics": a.topic, "strategy": strategy, "value": value, "dry_run": a.dry_run});
            let v: Value = api
                .call(
                    Method::POST,
                    api.url(&["v1", "groups", &a.group, "reset-offsets"], &[]),
                    Some(body),
                    REQUEST_TIMEOUT,
                )
                .await?;
            let rows: Vec<Vec<String>> = field(&v, "partitions")
                .as_array()
                .map(|x| {
                    x.iter()
                        .map(|r| {
                            vec![
                                text(field(r, "topic")),
                                text(field(r, "partition")),
                                text(field(r, "previous")),
                                text(field(r, "new")),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table(&["TOPIC", "PARTITION", "PREVIOUS", "NEW"], &rows)
            );
            if a.dry_run {
                println!("(dry run: nothing changed)");
            }
            Ok(())
        }
        GroupCommand::Delete { groups } => {
            let mut failed = false;
            for g in groups {
                match api
                    .send(
                        Method::DELETE,
                        api.url(&["v1", "groups", &g], &[]),
                        None,
                        REQUEST_TIMEOUT,
                    )
                    .await
                {
                    Ok(_) => println!("Deleted group {g}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some groups were not deleted");
            }
            Ok(())
        }
    }
}
