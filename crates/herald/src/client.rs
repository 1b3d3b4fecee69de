//! Client commands: `herald topic …`, shaped after `rpk topic …`, talking to a running server
//! over its HTTP API.
//!
//! Nothing here opens the log: every command is one or more HTTP requests, so the same binary
//! administers a local or a remote server. The pure parts (argument parsing, line splitting,
//! request bodies, output rendering) are plain functions with unit tests; the HTTP calls are
//! exercised against a real server.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

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

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic name; a tenant topic (`smarteros.TENANT.SERVICE.EVENT`) is created if missing.
    topic: String,
    /// Partition to produce to (default: by key, or one picked by the server per batch).
    #[arg(short, long)]
    partition: Option<u32>,
    /// Key for every record.
    #[arg(short, long)]
    key: Option<String>,
    /// Header for every record, repeatable: `-H source:cli`.
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic name.
    topic: String,
    /// Partitions to read, repeatable or comma-separated (default: all).
    #[arg(short, long = "partition", value_name = "N", value_delimiter = ',')]
    partitions: Vec<u32>,
    /// Where to start in each partition: start, end, an offset N, +N (N after the start) or
    /// -N (N before the end). Default: start.
    #[arg(short, long, value_parser = parse_offset, allow_hyphen_values = true, conflicts_with = "from_beginning")]
    offset: Option<StartOffset>,
    /// Start at the oldest retained record (the default; same as `-o start`).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records in total (0: no limit).
    #[arg(short, long)]
    num: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of the partitions.
    #[arg(short, long)]
    follow: bool,
    /// `json`: one object per record; `value`: the value only.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    format: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Value,
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

// ---------------------------------------------------------------------------------------------
// HTTP

const KEY_HINT: &str = "set HERALD_API_KEY or pass --api-key (`herald serve` prints the admin key \
                        and keeps it in DATA_DIR/admin-api-key)";

/// Default time allowed for one request; long polls add their wait to it.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: Url,
    /// The server as the user gave it, for messages.
    server: String,
    key: String,
}

/// A non-2xx answer, carrying the server's `{"error":{"code","message"}}`.
#[derive(Debug, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == StatusCode::UNAUTHORIZED {
            write!(f, "the server refused the API key (401): {KEY_HINT}")
        } else {
            write!(f, "{} ({})", self.message, self.status.as_u16())
        }
    }
}

impl std::error::Error for ApiError {}

/// Reads an error answer; a body that is not Herald's error JSON (a proxy's page, say) is
/// shown as text rather than hidden behind a parse error.
fn api_error(status: StatusCode, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Envelope>(body) {
        return ApiError {
            status,
            code: e.error.code,
            message: e.error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned()
    } else {
        text.chars().take(200).collect()
    };
    ApiError {
        status,
        code: String::new(),
        message,
    }
}

/// Accepts `host:port` as well as a URL, since that is how addresses are usually typed.
fn parse_server(s: &str) -> anyhow::Result<Url> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&with_scheme)
        .with_context(|| format!("--server {s:?} is not a URL like http://127.0.0.1:8000"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        bail!("--server {s:?} is not an http:// URL");
    }
    Ok(url)
}

impl Api {
    pub(crate) fn new(conn: &Connection) -> anyhow::Result<Api> {
        let base = parse_server(&conn.server)?;
        let key = conn
            .key()
            .ok_or_else(|| anyhow!("no API key: {KEY_HINT}"))?;
        herald_auth::tls::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
        // A server with a development certificate: trust its CA (DATA_DIR/tls/ca.pem).
        if let Some(ca) = &conn.ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Api {
            http,
            base,
            server: conn.server.trim().trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// `segments` are percent-encoded as path segments, so a topic name cannot change the path.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        // `parse_server` refused cannot-be-a-base URLs, the only case where this is `Err`.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v)));
        }
        url
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<bytes::Bytes> {
        let mut req = self
            .http
            .request(method, url.clone())
            .header("x-api-key", &self.key)
            .timeout(timeout);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(api_error(status, &body).into());
        }
        Ok(body)
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow!(
                "cannot reach Herald at {}: is the server running? (start it with herald serve)",
                self.server
            )
        } else if e.is_timeout() {
            anyhow!("Herald at {} did not answer in time", self.server)
        } else {
            anyhow!("request to Herald at {} failed: {e}", self.server)
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let what = format!("{method} {}", url.path());
        let bytes = self.send(method, url, body, timeout).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from the server to {what}"))
    }

    async fn describe(&self, topic: &str) -> anyhow::Result<TopicDescription> {
        let url = self.url(&["v1", "topics", topic], &[]);
        self.call(Method::GET, url, None, REQUEST_TIMEOUT).await
    }
}

// ---------------------------------------------------------------------------------------------
// Administration

#[derive(Deserialize, Debug)]
struct TopicList {
    topics: Vec<TopicSummary>,
}

#[derive(Deserialize, Debug)]
struct TopicSummary {
    name: String,
    partitions: u32,
}

#[derive(Deserialize, Debug)]
struct TopicDescription {
    name: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    partitions: Vec<PartitionDescription>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    created_at: String,
}

#[derive(Deserialize, Debug, Clone, Copy)]
struct PartitionDescription {
    partition: u32,
    log_start_offset: u64,
    high_watermark: u64,
    #[serde(default)]
    size_bytes: u64,
}

async fn list(
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

async fn describe(api: &Api, topic: &str, as_json: bool) -> anyhow::Result<()> {
    let url = api.url(&["v1", "topics", topic], &[]);
    let answer: Value = api.call(Method::GET, url, None, REQUEST_TIMEOUT).await?;
    if as_json {
        return print_stdout(&format!("{}\n", serde_json::to_string_pretty(&answer)?));
    }
    let d: TopicDescription =
        serde_json::from_value(answer).context("unexpected answer to GET /v1/topics/{topic}")?;
    print_stdout(&format_description(&d))
}

fn format_description(d: &TopicDescription) -> String {
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

fn format_config(config: &BTreeMap<String, String>) -> String {
    config.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Runs `op` on every topic. With one topic its error is the command's error; with several,
/// each failure is reported and the rest still run, as `rpk topic delete a b c` does.
async fn for_each_topic<'a, F, Fut>(topics: &'a [String], verb: &str, op: F) -> anyhow::Result<()>
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

async fn create(
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

async fn delete(api: &Api, topic: &str) -> anyhow::Result<()> {
    let url = api.url(&["v1", "topics", topic], &[]);
    api.send(Method::DELETE, url, None, REQUEST_TIMEOUT).await?;
    print_stdout(&format!("Deleted topic {topic}\n"))
}

async fn alter_config(
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

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; columns];
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let all = std::iter::once(&header)
        .filter(|h| !h.is_empty())
        .chain(rows);
    for row in all.clone() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Produce

/// Records per request: well under the server's default `max_events_per_request` (1000).
const BATCH_RECORDS: usize = 500;
/// Request body size to aim for: a quarter of the server's default 4 MiB body limit.
const BATCH_BYTES: usize = 1024 * 1024;
/// Records after which a spinner is worth showing.
const SPINNER_AFTER: u64 = 1000;

/// Reads one record: a line without its `\n`. `None` at end of input, so `"a\nb\n"` is two
/// records and `"a\n\n"` is `a` and an empty record.
fn read_record(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(line))
}

#[derive(Serialize)]
struct OutgoingRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
}

/// Builds one `POST /v1/topics/{topic}/records` body, serializing each record once so that
/// the body size is known exactly rather than estimated.
struct Batch<'a> {
    partition: Option<u32>,
    key: Option<&'a str>,
    headers: &'a BTreeMap<String, String>,
    records: Vec<Vec<u8>>,
    bytes: usize,
}

impl<'a> Batch<'a> {
    fn new(
        partition: Option<u32>,
        key: Option<&'a str>,
        headers: &'a BTreeMap<String, String>,
    ) -> Self {
        Batch {
            partition,
            key,
            headers,
            records: Vec::new(),
            bytes: 0,
        }
    }

    /// The line is sent as a string even when it is JSON: the server stores a string value's
    /// bytes as given, while a JSON value would be re-serialized. Lines that are not UTF-8
    /// cannot be JSON strings and go as `value_base64`.
    fn push(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let (value, value_base64) = match std::str::from_utf8(line) {
            Ok(s) => (Some(s), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(line)),
            ),
        };
        let encoded = serde_json::to_vec(&OutgoingRecord {
            key: self.key,
            value,
            value_base64,
            headers: self.headers,
        })?;
        self.bytes += encoded.len() + 1;
        self.records.push(encoded);
        Ok(())
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS || self.bytes >= BATCH_BYTES
    }

    /// The request body; the batch is empty afterwards.
    fn take_body(&mut self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.bytes + 32);
        body.extend_from_slice(b"{");
        if let Some(p) = self.partition {
            body.extend_from_slice(format!("\"partition\":{p},").as_bytes());
        }
        body.extend_from_slice(b"\"records\":[");
        for (i, r) in self.records.drain(..).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&r);
        }
        body.extend_from_slice(b"]}");
        self.bytes = 0;
        body
    }
}

#[derive(Deserialize)]
struct ProduceAnswer {
    records: Vec<Produced>,
}

#[derive(Deserialize)]
struct Produced {
    partition: u32,
    offset: u64,
}

async fn produce(api: &Api, args: ProduceArgs) -> anyhow::Result<()> {
    // A plain thread, not `spawn_blocking`: a read blocked on an interactive stdin must not
    // keep the runtime from shutting down when the command fails.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4 * BATCH_RECORDS);
    std::thread::Builder::new()
        .name("herald-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut r = stdin.lock();
            loop {
                let rec = read_record(&mut r).transpose();
                let last = !matches!(rec, Some(Ok(_)));
                if let Some(rec) = rec
                    && tx.blocking_send(rec).is_err()
                {
                    break;
                }
                if last {
                    break;
                }
            }
        })
        .context("cannot start the stdin reader")?;

    let mut spinner = None;
    let result = produce_lines(api, &args, rx, &mut spinner).await;
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    result
}

async fn produce_lines(
    api: &Api,
    args: &ProduceArgs,
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    spinner: &mut Option<indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let headers: BTreeMap<String, String> = args.headers.iter().cloned().collect();
    let mut batch = Batch::new(args.partition, args.key.as_deref(), &headers);
    let url = api.url(&["v1", "topics", &args.topic, "records"], &[]);
    let mut out = Out::new();
    let mut produced = 0u64;
    // Waiting only for the first line and then taking what is already buffered sends piped
    // input in full batches and typed input line by line, as soon as Enter is pressed.
    while let Some(first) = rx.recv().await {
        batch.push(&first.context("cannot read stdin")?)?;
        while !batch.is_full() {
            match rx.try_recv() {
                Ok(line) => batch.push(&line.context("cannot read stdin")?)?,
                Err(_) => break,
            }
        }
        let sent = batch.len();
        let body = batch.take_body();
        let bytes = api
            .send(Method::POST, url.clone(), Some(body), REQUEST_TIMEOUT)
            .await?;
        let answer: ProduceAnswer = serde_json::from_slice(&bytes)
            .context("unexpected answer to POST /v1/topics/{topic}/records")?;
        if answer.records.len() != sent {
            bail!(
                "the server acknowledged {} of {sent} records",
                answer.records.len()
            );
        }
        let text: String = answer
            .records
            .iter()
            .map(|r| {
                format!(
                    "Produced to partition {} at offset {}\n",
                    r.partition, r.offset
                )
            })
            .collect();
        produced += sent as u64;
        if spinner.is_none() && produced >= SPINNER_AFTER && std::io::stderr().is_terminal() {
            *spinner = Some(new_spinner());
        }
        match spinner {
            Some(pb) => {
                pb.set_position(produced);
                pb.suspend(|| out.write(text.as_bytes()))?;
            }
            None => out.write(text.as_bytes())?,
        }
    }
    Ok(())
}

fn new_spinner() -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {human_pos} records produced ({elapsed})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

// ---------------------------------------------------------------------------------------------
// Consume

/// Records asked for per read request. The server clamps it to its `max_read_records`
/// (default 1000), so asking for more lets a server configured higher send more per round trip.
const READ_LIMIT: u64 = 10_000;
/// How long one follow-mode poll waits at the server for new records.
const FOLLOW_WAIT_MS: u64 = 5000;

/// Where to start reading, in `rpk topic consume -o` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    Start,
    End,
    Exact(u64),
    AfterStart(u64),
    BeforeEnd(u64),
}

fn parse_offset(s: &str) -> Result<StartOffset, String> {
    let bad = || format!("{s:?} is not an offset: use start, end, N, +N or -N");
    let number = |n: &str| n.parse::<u64>().map_err(|_| bad());
    match s {
        "start" | "beginning" | "oldest" => Ok(StartOffset::Start),
        "end" | "newest" => Ok(StartOffset::End),
        _ => match (s.strip_prefix('+'), s.strip_prefix('-')) {
            (Some(n), _) => number(n).map(StartOffset::AfterStart),
            (_, Some(n)) => number(n).map(StartOffset::BeforeEnd),
            _ => number(s).map(StartOffset::Exact),
        },
    }
}

impl StartOffset {
    /// The offset to read from and the offset below which records are not printed. An exact
    /// offset past the end reads from the end and waits for the log to reach it, rather than
    /// being refused by the server as out of range; one before the log start begins at the log
    /// start, since retention removed the rest.
    fn resolve(self, p: &PartitionDescription) -> (u64, u64) {
        let (start, end) = (p.log_start_offset, p.high_watermark);
        let exact = |o: u64| {
            if o > end { (end, o) } else { (o.max(start), 0) }
        };
        match self {
            StartOffset::Start => (start, 0),
            StartOffset::End => (end, 0),
            StartOffset::Exact(o) => exact(o),
            StartOffset::AfterStart(n) => exact(start.saturating_add(n)),
            StartOffset::BeforeEnd(n) => (end.saturating_sub(n).max(start), 0),
        }
    }
}

#[derive(Deserialize, Debug)]
struct ReadAnswer {
    events: Vec<Event>,
    next_offset: u64,
}

/// One record as `GET /v1/topics/{topic}/events` returns it: values that parse as JSON are
/// JSON (`format: "json"`), other UTF-8 is a string, anything else is base64.
#[derive(Deserialize, Debug)]
struct Event {
    partition: u32,
    offset: u64,
    timestamp: i64,
    #[serde(default)]
    key: Value,
    #[serde(default)]
    key_format: String,
    /// Kept as the server sent it: JSON values are stored bytes, printed without re-encoding.
    #[serde(default)]
    value: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    format: String,
    #[serde(default)]
    headers: Map<String, Value>,
}

#[derive(Serialize)]
struct ConsumedLine<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    value: Option<&'a serde_json::value::RawValue>,
    /// Present only for values that are not UTF-8, so they are not mistaken for text.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "no_headers")]
    headers: &'a Map<String, Value>,
}

fn no_headers(h: &&Map<String, Value>) -> bool {
    h.is_empty()
}

fn base64_marker(format: &str) -> Option<&'static str> {
    (format == "base64").then_some("base64")
}

/// Keys are text to the user (they are what `-k` took), so a key the server returned as JSON
/// — `"42"` comes back as the number 42 — is turned back into text.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn render(topic: &str, e: &Event, format: OutputFormat) -> anyhow::Result<Vec<u8>> {
    let mut line = match format {
        OutputFormat::Json => serde_json::to_vec(&ConsumedLine {
            topic,
            partition: e.partition,
            offset: e.offset,
            timestamp: e.timestamp,
            key: key_text(&e.key),
            key_encoding: base64_marker(&e.key_format),
            value: e.value.as_deref(),
            value_encoding: base64_marker(&e.format),
            headers: &e.headers,
        })?,
        OutputFormat::Value => match (e.value.as_deref(), e.format.as_str()) {
            (None, _) => Vec::new(),
            (Some(raw), "base64") => {
                let s: String = serde_json::from_str(raw.get())?;
                base64::engine::general_purpose::STANDARD
                    .decode(&s)
                    .unwrap_or_else(|_| s.into_bytes())
            }
            (Some(raw), "utf8") => serde_json::from_str::<String>(raw.get())?.into_bytes(),
            // JSON values: the stored bytes, exactly as produced.
            (Some(raw), _) => raw.get().as_bytes().to_vec(),
        },
    };
    line.push(b'\n');
    Ok(line)
}

/// Read position in one partition.
#[derive(Clone, Debug)]
struct Cursor {
    partition: u32,
    position: u64,
    /// Records below this are read past but not printed (`-o N` beyond the current end).
    print_from: u64,
    /// Stop here (the high watermark when the command started); `None` with `--follow`.
    end: Option<u64>,
}

impl Cursor {
    fn exhausted(&self) -> bool {
        self.end.is_some_and(|end| self.position >= end)
    }

    /// Reads the next records. After retention removed the records at the position, moves to
    /// the new log start, as a Kafka consumer with `auto.offset.reset=earliest` does.
    async fn poll(
        &mut self,
        api: &Api,
        topic: &str,
        limit: u64,
        wait_ms: u64,
    ) -> anyhow::Result<Vec<Event>> {
        let url = api.url(
            &["v1", "topics", topic, "events"],
            &[
                ("partition", self.partition.to_string()),
                ("offset", self.position.to_string()),
                ("limit", limit.to_string()),
                ("wait_ms", wait_ms.to_string()),
            ],
        );
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(wait_ms);
        let answer: ReadAnswer = match api.call(Method::GET, url, None, timeout).await {
            Ok(a) => a,
            Err(e) if is_out_of_range(&e) => {
                let d = api.describe(topic).await?;
                let start = d
                    .partitions
                    .iter()
                    .find(|p| p.partition == self.partition)
                    .map(|p| p.log_start_offset);
                match start {
                    Some(start) if start > self.position => {
                        eprintln!(
                            "note: partition {}: offsets {}..{start} were removed by retention; continuing at {start}",
                            self.partition, self.position
                        );
                        self.position = start;
                        return Ok(Vec::new());
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if answer.events.is_empty() && answer.next_offset <= self.position && self.end.is_some() {
            bail!(
                "partition {} did not advance past offset {} (its end is {}); the server returned no records",
                self.partition,
                self.position,
                self.end.unwrap_or_default()
            );
        }
        self.position = self.position.max(answer.next_offset);
        let (from, end) = (self.print_from, self.end);
        Ok(answer
            .events
            .into_iter()
            .filter(|e| e.offset >= from && end.is_none_or(|end| e.offset < end))
            .collect())
    }
}

fn is_out_of_range(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|e| e.code == "offset_out_of_range")
}

struct Printer {
    out: Out,
    format: OutputFormat,
    remaining: Option<u64>,
}

impl Printer {
    fn done(&self) -> bool {
        self.out.closed || self.remaining == Some(0)
    }

    fn print(&mut self, topic: &str, events: &[Event]) -> anyhow::Result<()> {
        for e in events {
            if self.done() {
                break;
            }
            self.out.write(&render(topic, e, self.format)?)?;
            if let Some(r) = &mut self.remaining {
                *r = r.saturating_sub(1);
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

async fn consume(api: Api, args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = args.topic;
    let d = api.describe(&topic).await?;
    let mut wanted = args.partitions;
    wanted.sort_unstable();
    wanted.dedup();
    let partitions: Vec<PartitionDescription> = if wanted.is_empty() {
        d.partitions.clone()
    } else {
        wanted
            .iter()
            .map(|&w| {
                d.partitions
                    .iter()
                    .find(|p| p.partition == w)
                    .copied()
                    .ok_or_else(|| {
                        anyhow!(
                            "topic {topic} has no partition {w} (it has {})",
                            d.partitions.len()
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let start = args.offset.unwrap_or(StartOffset::Start);
    let cursors: Vec<Cursor> = partitions
        .iter()
        .map(|p| {
            let (position, print_from) = start.resolve(p);
            if position > 0 && matches!(start, StartOffset::Exact(o) if o < position) {
                eprintln!(
                    "note: partition {}: offsets before {position} were removed by retention; starting there",
                    p.partition
                );
            }
            Cursor {
                partition: p.partition,
                position,
                print_from,
                end: (!args.follow).then_some(p.high_watermark),
            }
        })
        .collect();
    let remaining = args.num.filter(|&n| n > 0);
    let limit = remaining.map_or(READ_LIMIT, |n| n.min(READ_LIMIT));
    let mut printer = Printer {
        out: Out::new(),
        format: args.format,
        remaining,
    };
    if args.follow {
        follow(api, topic, cursors, limit, printer).await
    } else {
        // One partition after another: the output of a finite read is then in a stable order.
        for mut c in cursors {
            while !c.exhausted() && !printer.done() {
                let events = c.poll(&api, &topic, limit, 0).await?;
                printer.print(&topic, &events)?;
            }
        }
        Ok(())
    }
}

/// Long-polls every partition concurrently: polling them in turn would hold a partition with
/// new records behind the wait on an idle one.
async fn follow(
    api: Api,
    topic: String,
    cursors: Vec<Cursor>,
    limit: u64,
    mut printer: Printer,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(cursors.len().max(1) * 2);
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in cursors {
        let (api, topic, tx) = (api.clone(), topic.clone(), tx.clone());
        tasks.spawn(async move {
            loop {
                let r = c.poll(&api, &topic, limit, FOLLOW_WAIT_MS).await;
                let failed = r.is_err();
                if tx.send(r).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    drop(tx);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while !printer.done() {
        tokio::select! {
            _ = &mut ctrl_c => break,
            msg = rx.recv() => match msg {
                Some(events) => printer.print(&topic, &events?)?,
                None => break,
            },
        }
    }
    // Dropping the set aborts the polls still waiting at the server.
    drop(tasks);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output

/// Buffered stdout. A closed pipe (`herald topic consume t | head -1`) ends output quietly
/// instead of failing the command.
struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            w: std::io::BufWriter::new(std::io::stdout()),
            closed: false,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.w.write_all(bytes).and_then(|()| self.w.flush());
        self.absorb_closed_pipe(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.w.flush();
        self.absorb_closed_pipe(r)
    }

    fn absorb_closed_pipe(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

fn print_stdout(text: &str) -> anyhow::Result<()> {
    Out::new().write(text.as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Argument parsing

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    parse_pair(s, '=', "KEY=VALUE")
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    parse_pair(s, ':', "KEY:VALUE")
}

fn parse_pair(s: &str, sep: char, shape: &str) -> Result<(String, String), String> {
    match s.split_once(sep) {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not {shape}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs() {
        assert_eq!(
            parse_key_value("retention.ms=7776000000"),
            Ok(("retention.ms".into(), "7776000000".into()))
        );
        // Only the first `=` separates; the value may hold more, or be empty.
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("retention.ms").is_err());
        assert!(parse_key_value("=1").is_err());
        assert_eq!(
            parse_header("trace:abc:def"),
            Ok(("trace".into(), "abc:def".into()))
        );
        assert!(parse_header("trace=abc").is_err());
    }

    fn records(input: &[u8]) -> Vec<Vec<u8>> {
        let mut r = std::io::Cursor::new(input);
        let mut out = Vec::new();
        while let Ok(Some(rec)) = read_record(&mut r) {
            out.push(rec);
        }
        out
    }

    #[test]
    fn lines_become_records() {
        assert_eq!(records(b"a\nb\n"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(records(b"a\nb"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            records(b"a\n\nb\n"),
            vec![b"a".to_vec(), vec![], b"b".to_vec()]
        );
        assert_eq!(records(b"a\n\n"), vec![b"a".to_vec(), vec![]]);
        assert_eq!(records(b"\n"), vec![Vec::<u8>::new()]);
        assert!(records(b"").is_empty());
        // Only the newline is removed.
        assert_eq!(records(b" x\r\n"), vec![b" x\r".to_vec()]);
    }

    #[test]
    fn batch_bodies() -> anyhow::Result<()> {
        let headers = BTreeMap::new();
        let mut b = Batch::new(None, None, &headers);
        b.push(br#"{"test": "event"}"#)?;
        b.push(b"")?;
        b.push(&[0xff, 0x00])?;
        assert_eq!(b.len(), 3);
        let body: Value = serde_json::from_slice(&b.take_body())?;
        assert_eq!(
            body,
            json!({"records": [
                {"value": "{\"test\": \"event\"}"},
                {"value": ""},
                {"value_base64": "/wA="},
            ]})
        );
        assert_eq!((b.len(), b.bytes), (0, 0));

        let headers = BTreeMap::from([("source".to_owned(), "cli".to_owned())]);
        let mut b = Batch::new(Some(2), Some("k"), &headers);
        b.push(b"v")?;
        let body: Value = serde_json::from_slice(&b.take_body())?;
        assert_eq!(
            body,
            json!({"partition": 2, "records": [{"key": "k", "value": "v", "headers": {"source": "cli"}}]})
        );
        Ok(())
    }

    #[test]
    fn batches_fill_by_count_and_by_size() -> anyhow::Result<()> {
        let headers = BTreeMap::new();
        let mut b = Batch::new(None, None, &headers);
        for _ in 0..BATCH_RECORDS {
            assert!(!b.is_full());
            b.push(b"x")?;
        }
        assert!(b.is_full());
        let mut b = Batch::new(None, None, &headers);
        b.push(&vec![b'x'; BATCH_BYTES])?;
        assert!(b.is_full());
        Ok(())
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("start"), Ok(StartOffset::Start));
        assert_eq!(parse_offset("end"), Ok(StartOffset::End));
        assert_eq!(parse_offset("47"), Ok(StartOffset::Exact(47)));
        assert_eq!(parse_offset("+2"), Ok(StartOffset::AfterStart(2)));
        assert_eq!(parse_offset("-3"), Ok(StartOffset::BeforeEnd(3)));
        assert!(parse_offset("-").is_err());
        assert!(parse_offset("x").is_err());
        assert!(parse_offset("+-1").is_err());

        let p = PartitionDescription {
            partition: 0,
            log_start_offset: 10,
            high_watermark: 20,
            size_bytes: 0,
        };
        assert_eq!(StartOffset::Start.resolve(&p), (10, 0));
        assert_eq!(StartOffset::End.resolve(&p), (20, 0));
        assert_eq!(StartOffset::Exact(15).resolve(&p), (15, 0));
        assert_eq!(StartOffset::Exact(3).resolve(&p), (10, 0));
        assert_eq!(StartOffset::Exact(20).resolve(&p), (20, 0));
        assert_eq!(StartOffset::Exact(25).resolve(&p), (20, 25));
        assert_eq!(StartOffset::AfterStart(2).resolve(&p), (12, 0));
        assert_eq!(StartOffset::AfterStart(50).resolve(&p), (20, 60));
        assert_eq!(StartOffset::BeforeEnd(3).resolve(&p), (17, 0));
        assert_eq!(StartOffset::BeforeEnd(30).resolve(&p), (10, 0));
    }

    fn event(v: Value) -> anyhow::Result<Event> {
        Ok(serde_json::from_value(v)?)
    }

    #[test]
    fn consumed_records_render_as_json_lines() -> anyhow::Result<()> {
        let e = event(json!({
            "partition": 1, "offset": 7, "timestamp": 1700000000000_i64,
            "key": 42, "key_format": "json",
            "value": {"test": "event"}, "format": "json", "headers": {},
        }))?;
        assert_eq!(
            String::from_utf8(render("t.x", &e, OutputFormat::Json)?)?,
            "{\"topic\":\"t.x\",\"partition\":1,\"offset\":7,\"timestamp\":1700000000000,\
             \"key\":\"42\",\"value\":{\"test\":\"event\"}}\n"
        );
        assert_eq!(
            String::from_utf8(render("t.x", &e, OutputFormat::Value)?)?,
            "{\"test\":\"event\"}\n"
        );

        let e = event(json!({
            "partition": 0, "offset": 0, "timestamp": 5,
            "key": null, "key_format": "null",
            "value": "plain text", "format": "utf8", "headers": {"h": "v"},
        }))?;
        assert_eq!(
            String::from_utf8(render("t", &e, OutputFormat::Json)?)?,
            "{\"topic\":\"t\",\"partition\":0,\"offset\":0,\"timestamp\":5,\"key\":null,\
             \"value\":\"plain text\",\"headers\":{\"h\":\"v\"}}\n"
        );
        assert_eq!(render("t", &e, OutputFormat::Value)?, b"plain text\n");

        let e = event(json!({
            "partition": 0, "offset": 1, "timestamp": 5,
            "key": "/wA=", "key_format": "base64",
            "value": "/wA=", "format": "base64", "headers": {},
        }))?;
        let line: Value = serde_json::from_slice(&render("t", &e, OutputFormat::Json)?)?;
        assert_eq!(line.get("value_encoding"), Some(&json!("base64")));
        assert_eq!(line.get("key_encoding"), Some(&json!("base64")));
        assert_eq!(render("t", &e, OutputFormat::Value)?, b"\xff\x00\n");

        let e = event(json!({
            "partition": 0, "offset": 2, "timestamp": 5,
            "key": null, "key_format": "null", "value": null, "format": "null",
        }))?;
        assert_eq!(render("t", &e, OutputFormat::Value)?, b"\n");
        Ok(())
    }

    #[test]
    fn tables() {
        let rows = vec![
            vec!["smarteros.1.a.b".to_owned(), "3".to_owned()],
            vec!["x".to_owned(), "12".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "PARTITIONS"], &rows),
            "NAME             PARTITIONS\nsmarteros.1.a.b  3\nx                12\n"
        );
        assert_eq!(table(&["NAME", "PARTITIONS"], &[]), "NAME  PARTITIONS\n");
        assert_eq!(table(&[], &[vec!["NAME".into(), "t".into()]]), "NAME  t\n");
    }

    #[test]
    fn descriptions() {
        let d = TopicDescription {
            name: "smarteros.1.test.event_test".into(),
            tenant: Some("1".into()),
            service: Some("test".into()),
            event_type: Some("event_test".into()),
            partitions: vec![PartitionDescription {
                partition: 0,
                log_start_offset: 0,
                high_watermark: 1,
                size_bytes: 87,
            }],
            config: BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
            created_at: "2025-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            format_description(&d),
            "SUMMARY\n=======\n\
             NAME        smarteros.1.test.event_test\n\
             TENANT      1\n\
             SERVICE     test\n\
             EVENT-TYPE  event_test\n\
             PARTITIONS  1\n\
             CREATED     2025-01-01T00:00:00Z\n\
             \nCONFIGS\n=======\n\
             retention.ms=1000\n\
             \nPARTITIONS\n==========\n\
             PARTITION  LOG-START  HIGH-WATERMARK  SIZE\n\
             0          0          1               87\n"
        );
    }

    #[test]
    fn error_answers() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"not_found","message":"topic x does not exist"}}"#,
        );
        assert_eq!(e.code, "not_found");
        assert_eq!(e.to_string(), "topic x does not exist (404)");
        let e = api_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":"unauthorized","message":"m"}}"#,
        );
        assert!(e.to_string().contains("HERALD_API_KEY"));
        assert!(e.to_string().contains("--api-key"));
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.to_string(), "<html>bad gateway</html> (502)");
        let e = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "Bad Gateway (502)");
    }

    #[test]
    fn servers_and_urls() -> anyhow::Result<()> {
        assert_eq!(
            parse_server("127.0.0.1:8000")?.as_str(),
            "http://127.0.0.1:8000/"
        );
        assert!(parse_server("ftp://x").is_err());
        let api = Api {
            http: {
                herald_auth::tls::install_default_provider();
                reqwest::Client::new()
            },
            base: parse_server("http://h:1/herald/")?,
            server: "http://h:1/herald".into(),
            key: "k".into(),
        };
        let url = api.url(
            &["v1", "topics", "a/b c"],
            &[("match", "smarteros.*".to_owned())],
        );
        assert_eq!(
            url.as_str(),
            "http://h:1/herald/v1/topics/a%2Fb%20c?match=smarteros.*"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer groups

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
    group: String,
    /// Topics to reset (glob, e.g. smarteros.*.*.order_*).
    #[arg(long, value_name = "GLOB")]
    topic: String,
    #[arg(long, group = "to")]
    to_earliest: bool,
    #[arg(long, group = "to")]
    to_latest: bool,
    #[arg(long, group = "to", value_name = "N")]
    to_offset: Option<u64>,
    /// Replay from this moment (RFC 3339, e.g. 2025-11-23T12:00:00Z).
    #[arg(long, group = "to", value_name = "RFC3339")]
    to_datetime: Option<String>,
    #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Show the plan without changing anything.
    #[arg(long)]
    dry_run: bool,
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

/// A field of a JSON object, `null` when absent.
pub(crate) fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka users (SCRAM credentials)

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, or replace its password (SCRAM-SHA-256 and -512 unless --mechanism).
    /// Without --password-stdin a password is generated and printed once.
    Create {
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeatable.
        #[arg(long = "mechanism", value_name = "MECHANISM")]
        mechanisms: Vec<String>,
    },
    /// List users and their mechanisms.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete users and their credentials.
    Delete { names: Vec<String> },
}

pub(crate) fn generated_password() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

pub async fn run_user(conn: Connection, cmd: UserCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        UserCommand::Create {
            name,
            password_stdin,
            mechanisms,
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (generated_password(), true)
            };
            let body = if mechanisms.is_empty() {
                json!({ "password": password })
            } else {
                json!({ "password": password, "mechanisms": mechanisms })
            };
            let v: Value = api
                .call(
                    Method::PUT,
                    api.url(&["v1", "users", &name], &[]),
                    Some(body),
                    REQUEST_TIMEOUT,
                )
                .await?;
            println!(
                "user {} ({}) with {}",
                text(field(&v, "user")),
                text(field(&v, "principal")),
                field(&v, "mechanisms")
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
            if generated {
                println!("password {password}  (shown only this once)");
            }
            Ok(())
        }
        UserCommand::List { json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "users"], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = field(&v, "users")
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|u| {
                            let mechs = field(u, "mechanisms")
                                .as_array()
                                .map(|m| {
                                    m.iter()
                                        .map(|x| text(field(x, "mechanism")))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default();
                            vec![text(field(u, "user")), mechs]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!("{}", table(&["USER", "MECHANISMS"], &rows));
            Ok(())
        }
        UserCommand::Delete { names } => {
            for name in names {
                api.send(
                    Method::DELETE,
                    api.url(&["v1", "users", &name], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
                println!("deleted user {name}");
            }
            Ok(())
        }
    }
}
