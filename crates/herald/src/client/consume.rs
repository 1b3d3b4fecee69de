//! `herald topic consume`: reading partitions from a start position, once or following.

use std::time::Duration;

use anyhow::{anyhow, bail};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::*;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic name.
    pub(super) topic: String,
    /// Partitions to read, repeatable or comma-separated (default: all).
    #[arg(short, long = "partition", value_name = "N", value_delimiter = ',')]
    pub(super) partitions: Vec<u32>,
    /// Where to start in each partition: start, end, an offset N, +N (N after the start) or
    /// -N (N before the end). Default: start.
    #[arg(short, long, value_parser = parse_offset, allow_hyphen_values = true, conflicts_with = "from_beginning")]
    pub(super) offset: Option<StartOffset>,
    /// Start at the oldest retained record (the default; same as `-o start`).
    #[arg(long)]
    pub(super) from_beginning: bool,
    /// Stop after this many records in total (0: no limit).
    #[arg(short, long)]
    pub(super) num: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of the partitions.
    #[arg(short, long)]
    pub(super) follow: bool,
    /// `json`: one object per record; `value`: the value only.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub(super) format: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Value,
}

/// Records asked for per read request. The server clamps it to its `max_read_records`
/// (default 1000), so asking for more lets a server configured higher send more per round trip.
pub(super) const READ_LIMIT: u64 = 10_000;
/// How long one follow-mode poll waits at the server for new records.
pub(super) const FOLLOW_WAIT_MS: u64 = 5000;

/// Where to start reading, in `rpk topic consume -o` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    Start,
    End,
    Exact(u64),
    AfterStart(u64),
    BeforeEnd(u64),
}

pub(super) fn parse_offset(s: &str) -> Result<StartOffset, String> {
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
    pub(super) fn resolve(self, p: &PartitionDescription) -> (u64, u64) {
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
pub(super) struct ReadAnswer {
    pub(super) events: Vec<Event>,
    pub(super) next_offset: u64,
}

/// One record as `GET /v1/topics/{topic}/events` returns it: values that parse as JSON are
/// JSON (`format: "json"`), other UTF-8 is a string, anything else is base64.
#[derive(Deserialize, Debug)]
pub(super) struct Event {
    pub(super) partition: u32,
    pub(super) offset: u64,
    pub(super) timestamp: i64,
    #[serde(default)]
    pub(super) key: Value,
    #[serde(default)]
    pub(super) key_format: String,
    /// Kept as the server sent it: JSON values are stored bytes, printed without re-encoding.
    #[serde(default)]
    pub(super) value: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub(super) format: String,
    #[serde(default)]
    pub(super) headers: Map<String, Value>,
}

#[derive(Serialize)]
pub(super) struct ConsumedLine<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: u32,
    pub(super) offset: u64,
    pub(super) timestamp: i64,
    pub(super) key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) key_encoding: Option<&'static str>,
    pub(super) value: Option<&'a serde_json::value::RawValue>,
    /// Present only for values that are not UTF-8, so they are not mistaken for text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "no_headers")]
    pub(super) headers: &'a Map<String, Value>,
}

pub(super) fn no_headers(h: &&Map<String, Value>) -> bool {
    h.is_empty()
}

pub(super) fn base64_marker(format: &str) -> Option<&'static str> {
    (format == "base64").then_some("base64")
}

/// Keys are text to the user (they are what `-k` took), so a key the server returned as JSON
/// — `"42"` comes back as the number 42 — is turned back into text.
pub(super) fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(super) fn render(topic: &str, e: &Event, format: OutputFormat) -> anyhow::Result<Vec<u8>> {
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
pub(super) struct Cursor {
    pub(super) partition: u32,
    pub(super) position: u64,
    /// Records below this are read past but not printed (`-o N` beyond the current end).
    pub(super) print_from: u64,
    /// Stop here (the high watermark when the command started); `None` with `--follow`.
    pub(super) end: Option<u64>,
}

impl Cursor {
    pub(super) fn exhausted(&self) -> bool {
        self.end.is_some_and(|end| self.position >= end)
    }

    /// Reads the next records. After retention removed the records at the position, moves to
    /// the new log start, as a Kafka consumer with `auto.offset.reset=earliest` does.
    pub(super) async fn poll(
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

pub(super) fn is_out_of_range(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|e| e.code == "offset_out_of_range")
}

pub(super) struct Printer {
    pub(super) out: Out,
    pub(super) format: OutputFormat,
    pub(super) remaining: Option<u64>,
}

impl Printer {
    pub(super) fn done(&self) -> bool {
        self.out.closed || self.remaining == Some(0)
    }

    pub(super) fn print(&mut self, topic: &str, events: &[Event]) -> anyhow::Result<()> {
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

pub(super) async fn consume(api: Api, args: ConsumeArgs) -> anyhow::Result<()> {
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
pub(super) async fn follow(
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
