//! `herald topic …`: the command, topic administration (list, describe, create, delete,
//! alter-config).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::Connection;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// List topics (NAME, PARTITIONS), sorted by name.
    List {
        /// Only this tenant's topics.
        #[arg(long)]
        tenant: Option<String>,
        /// Only topics matching this glob, e.g. `smarteros.*.shopify.*`.
        #[arg(long = "match", value_name = "GLOB")]
        glob: Option<String>,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's configuration and partitions.
    Describe {
        topic: String,
        /// Print the server's JSON answer instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create topics.
    Create {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// Number of partitions (default: the server's `default_partitions`).
        #[arg(short, long)]
        partitions: Option<u32>,
        /// Topic configuration, repeatable: `-c retention.ms=604800000`.
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
    },
    /// Delete topics and all their records.
    Delete {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
    },
    /// Change a topic's configuration and print the result.
    #[command(group(ArgGroup::new("change").args(["set", "delete"]).required(true).multiple(true)))]
    AlterConfig {
        topic: String,
        /// Set a key, repeatable: `--set retention.ms=7776000000`.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove a key (back to the default), repeatable.
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Produce one record per line of stdin.
    Produce(ProduceArgs),
    /// Print a topic's records, one JSON object per line.
    Consume(ConsumeArgs),
}

pub async fn run_topic(conn: Connection, cmd: TopicCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        TopicCommand::List { tenant, glob, json } => list(&api, tenant, glob, json).await,
        TopicCommand::Describe { topic, json } => describe(&api, &topic, json).await,
        TopicCommand::Create {
            topics,
            partitions,
            config,
        } => {
            let config: BTreeMap<String, String> = config.into_iter().collect();
            for_each_topic(&topics, "created", |t| create(&api, t, partitions, &config)).await
        }
        TopicCommand::Delete { topics } => {
            for_each_topic(&topics, "deleted", |t| delete(&api, t)).await
        }
        TopicCommand::AlterConfig { topic, set, delete } => {
            alter_config(&api, &topic, set.into_iter().collect(), delete).await
        }
        TopicCommand::Produce(args) => produce(&api, args).await,
        TopicCommand::Consume(args) => consume(api, args).await,
    }
}

#[derive(Deserialize, Debug)]
pub(super) struct TopicList {
    pub(super) topics: Vec<TopicSummary>,
}

#[derive(Deserialize, Debug)]
pub(super) struct TopicSummary {
    pub(super) name: String,
    pub(super) partitions: u32,
}

#[derive(Deserialize, Debug)]
pub(super) struct TopicDescription {
    pub(super) name: String,
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) service: Option<String>,
    #[serde(default)]
    pub(super) event_type: Option<String>,
    pub(super) partitions: Vec<PartitionDescription>,
    #[serde(default)]
    pub(super) config: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) created_at: String,
}

#[derive(Deserialize, Debug, Clone, Copy)]
pub(super) struct PartitionDescription {
    pub(super) partition: u32,
    pub(super) log_start_offset: u64,
    pub(super) high_watermark: u64,
    #[serde(default)]
    pub(super) size_bytes: u64,
}

pub(super) async fn list(
    api: &Api,
    tenant: Option<String>,
    glob: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(t) = tenant {
        query.push(("tenant", t));
    }
    if let Some(g) = glob {
        query.push(("match", g));
    }
    let url = api.url(&["v1", "topics"], &query);
    let answer: Value = api.call(Method::GET, url, None, REQUEST_TIMEOUT).await?;
    if as_json {
        return print_stdout(&format!("{}\n", serde_json::to_string_pretty(&answer)?));
    }
    let mut list: TopicList =
        serde_json::from_value(answer).context("unexpected answer to GET /v1/topics")?;
    list.topics.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = list
        .topics
        .into_iter()
        .map(|t| vec![t.name, t.partitions.to_string()])
        .collect();
    print_stdout(&table(&["NAME", "PARTITIONS"], &rows))
}

pub(super) async fn describe(api: &Api, topic: &str, as_json: bool) -> anyhow::Result<()> {
    let url = api.url(&["v1", "topics", topic], &[]);
    let answer: Value = api.call(Method::GET, url, None, REQUEST_TIMEOUT).await?;
    if as_json {
        return print_stdout(&format!("{}\n", serde_json::to_string_pretty(&answer)?));
    }
    let d: TopicDescription =
        serde_json::from_value(answer).context("unexpected answer to GET /v1/topics/{topic}")?;
    print_stdout(&format_description(&d))
}

pub(super) fn format_description(d: &TopicDescription) -> String {
    let mut summary = vec![vec!["NAME".to_owned(), d.name.clone()]];
    for (label, v) in [
        ("TENANT", &d.tenant),
        ("SERVICE", &d.service),
        ("EVENT-TYPE", &d.event_type),
    ] {
        if let Some(v) = v {
            summary.push(vec![label.to_owned(), v.clone()]);
        }
    }
    summary.push(vec![
        "PARTITIONS".to_owned(),
        d.partitions.len().to_string(),
    ]);
    if !d.created_at.is_empty() {
        summary.push(vec!["CREATED".to_owned(), d.created_at.clone()]);
    }
    let mut out = String::from("SUMMARY\n=======\n");
    out.push_str(&table(&[], &summary));
    out.push_str("\nCONFIGS\n=======\n");
    if d.config.is_empty() {
        out.push_str("(none: server defaults)\n");
    } else {
        out.push_str(&format_config(&d.config));
    }
    out.push_str("\nPARTITIONS\n==========\n");
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
                p.size_bytes.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["PARTITION", "LOG-START", "HIGH-WATERMARK", "SIZE"],
        &rows,
    ));
    out
}

pub(super) fn format_config(config: &BTreeMap<String, String>) -> String {
    config.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Runs `op` on every topic. With one topic its error is the command's error; with several,
/// each failure is reported and the rest still run, as `rpk topic delete a b c` does.
pub(super) async fn for_each_topic<'a, F, Fut>(
    topics: &'a [String],
    verb: &str,
    op: F,
) -> anyhow::Result<()>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if let [only] = topics {
        return op(only).await;
    }
    let mut failed = 0usize;
    for t in topics {
        if let Err(e) = op(t).await {
            eprintln!("error: {t}: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} topics could not be {verb}", topics.len());
    }
    Ok(())
}

pub(super) async fn create(
    api: &Api,
    topic: &str,
    partitions: Option<u32>,
    config: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut body = json!({"name": topic, "config": config});
    if let (Some(p), Some(obj)) = (partitions, body.as_object_mut()) {
        obj.insert("partitions".to_owned(), json!(p));
    }
    let url = api.url(&["v1", "topics"], &[]);
    let d: TopicDescription = api
        .call(Method::POST, url, Some(body), REQUEST_TIMEOUT)
        .await?;
    let n = d.partitions.len();
    print_stdout(&format!(
        "Created topic {} ({n} partition{})\n",
        d.name,
        if n == 1 { "" } else { "s" }
    ))
}

pub(super) async fn delete(api: &Api, topic: &str) -> anyhow::Result<()> {
    let url = api.url(&["v1", "topics", topic], &[]);
    api.send(Method::DELETE, url, None, REQUEST_TIMEOUT).await?;
    print_stdout(&format!("Deleted topic {topic}\n"))
}

pub(super) async fn alter_config(
    api: &Api,
    topic: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
) -> anyhow::Result<()> {
    let url = api.url(&["v1", "topics", topic, "config"], &[]);
    let body = json!({"set": set, "delete": delete});
    let d: TopicDescription = api
        .call(Method::PATCH, url, Some(body), REQUEST_TIMEOUT)
        .await?;
    print_stdout(&format_config(&d.config))
}
