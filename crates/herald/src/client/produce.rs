//! `herald topic produce`: one record per line of stdin, sent in bounded batches.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic name; a tenant topic (`smarteros.TENANT.SERVICE.EVENT`) is created if missing.
    pub(super) topic: String,
    /// Partition to produce to (default: by key, or one picked by the server per batch).
    #[arg(short, long)]
    pub(super) partition: Option<u32>,
    /// Key for every record.
    #[arg(short, long)]
    pub(super) key: Option<String>,
    /// Header for every record, repeatable: `-H source:cli`.
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE", value_parser = parse_header)]
    pub(super) headers: Vec<(String, String)>,
}

/// Records per request: well under the server's default `max_events_per_request` (1000).
pub(super) const BATCH_RECORDS: usize = 500;
/// Request body size to aim for: a quarter of the server's default 4 MiB body limit.
pub(super) const BATCH_BYTES: usize = 1024 * 1024;
/// Records after which a spinner is worth showing.
pub(super) const SPINNER_AFTER: u64 = 1000;

/// Reads one record: a line without its `\n`. `None` at end of input, so `"a\nb\n"` is two
/// records and `"a\n\n"` is `a` and an empty record.
pub(super) fn read_record(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
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
pub(super) struct OutgoingRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value_base64: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) headers: &'a BTreeMap<String, String>,
}

/// Builds one `POST /v1/topics/{topic}/records` body, serializing each record once so that
/// the body size is known exactly rather than estimated.
pub(super) struct Batch<'a> {
    pub(super) partition: Option<u32>,
    pub(super) key: Option<&'a str>,
    pub(super) headers: &'a BTreeMap<String, String>,
    pub(super) records: Vec<Vec<u8>>,
    pub(super) bytes: usize,
}

impl<'a> Batch<'a> {
    pub(super) fn new(
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
    pub(super) fn push(&mut self, line: &[u8]) -> anyhow::Result<()> {
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

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn is_full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS || self.bytes >= BATCH_BYTES
    }

    /// The request body; the batch is empty afterwards.
    pub(super) fn take_body(&mut self) -> Vec<u8> {
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
pub(super) struct ProduceAnswer {
    pub(super) records: Vec<Produced>,
}

#[derive(Deserialize)]
pub(super) struct Produced {
    pub(super) partition: u32,
    pub(super) offset: u64,
}

pub(super) async fn produce(api: &Api, args: ProduceArgs) -> anyhow::Result<()> {
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

pub(super) async fn produce_lines(
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

pub(super) fn new_spinner() -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {human_pos} records produced ({elapsed})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}
