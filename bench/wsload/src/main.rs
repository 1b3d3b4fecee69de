//! wsload — real-time fan-out load generator.
//!
//! Opens N WebSocket subscribers spread over T tenant channels, measures the server's resident
//! memory per idle connection, then publishes at a fixed total rate and measures
//! publish-to-delivery latency at every subscriber. Two targets with the same load:
//!
//! * `wsload herald` — Herald's Centrifugo-compatible gateway (JSON protocol v2), publishing via
//!   the server API `POST /api/publish`;
//! * `wsload nats` — nats-server's WebSocket listener (core pub/sub), publishing over plain TCP.
//!
//! Human-readable lines go to stdout, progress to stderr, and the last stdout line is one JSON
//! object with every figure (what `bench/run-ws-bench` parses).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every timestamp in a payload is nanoseconds since this instant (shared by publishers and
/// subscribers, which live in this one process), so latency needs no clock synchronisation.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Set once the measurement is over: connections closing after that are not failures.
static STOPPING: AtomicBool = AtomicBool::new(false);
const SHARDS: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

fn now_ns() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Parser)]
#[command(about = "WebSocket fan-out load generator: Herald (Centrifugo protocol) vs nats-server")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Herald's Centrifugo-compatible gateway; publishes through the server API.
    Herald(HeraldArgs),
    /// nats-server's WebSocket listener; publishes over the plain NATS TCP port.
    Nats(NatsArgs),
}

#[derive(Args, Clone)]
struct HeraldArgs {
    /// WebSocket endpoint, e.g. ws://127.0.0.1:8000/connection/websocket
    #[arg(long)]
    url: String,
    /// HTTP base of the server API, e.g. http://127.0.0.1:8000
    #[arg(long)]
    api: String,
    #[arg(long)]
    api_key: String,
    /// HMAC secret for the HS256 connection tokens (Herald's HERALD_JWT_SECRET)
    #[arg(long)]
    jwt_secret: String,
    /// Publish requests outstanding at once over all publishers (open loop; see herald_publisher)
    #[arg(long, default_value_t = 64)]
    http_in_flight: usize,
    #[command(flatten)]
    load: Load,
}

#[derive(Args, Clone)]
struct NatsArgs {
    /// nats-server WebSocket listener, e.g. ws://127.0.0.1:18080
    #[arg(long)]
    ws_url: String,
    /// nats-server client port (host:port) used by the publishers
    #[arg(long)]
    nats_url: String,
    #[command(flatten)]
    load: Load,
}

#[derive(Args, Clone)]
struct Load {
    /// WebSocket subscribers (connection i belongs to tenant i % tenants)
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Tenant channels the connections and publications are spread over
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Total publications per second, round-robin over the tenant channels
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of publishing
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Server process id, for its resident memory (VmRSS) and CPU time
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections being opened at once during the ramp
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Concurrent publishers (HTTP keep-alive connections, or NATS TCP connections)
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Longest wait for outstanding deliveries after the last publication
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// System name written into the JSON result
    #[arg(long)]
    label: Option<String>,
}

/// What every subscriber and publisher updates.
#[derive(Default)]
struct Stats {
    hists: Vec<Mutex<Histogram<u64>>>,
    delivered: AtomicU64,
    last_delivery_ns: AtomicU64,
    bad_payloads: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    expected: AtomicU64,
    publish_errors: AtomicU64,
    publish_lag_max_ns: AtomicU64,
}

impl Stats {
    fn new() -> Result<Self> {
        let hists = (0..SHARDS)
            .map(|_| Histogram::new_with_max(600_000_000_000, 3).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { hists, ..Self::default() })
    }

    /// One delivery of a publication whose payload carries `ts` (ns since EPOCH).
    fn delivery(&self, shard: usize, payload: &[u8]) {
        let Ok(p) = serde_json::from_slice::<Payload>(payload) else {
            self.bad_payloads.fetch_add(1, Relaxed);
            return;
        };
        let now = now_ns();
        if let Some(Ok(mut h)) = self.hists.get(shard % SHARDS).map(|m| m.lock()) {
            h.saturating_record(now.saturating_sub(p.ts).max(1));
        }
        self.delivered.fetch_add(1, Relaxed);
        self.last_delivery_ns.fetch_max(now, Relaxed);
    }

    fn merged(&self) -> Result<Histogram<u64>> {
        let mut all = Histogram::new_with_max(600_000_000_000, 3)?;
        for h in &self.hists {
            let h = h.lock().map_err(|_| anyhow!("histogram lock poisoned"))?;
            all.add(&*h)?;
        }
        Ok(all)
    }
}

#[derive(Deserialize)]
struct Payload {
    ts: u64,
}

fn payload(seq: u64) -> String {
    format!(r#"{{"ts":{},"seq":{seq}}}"#, now_ns())
}

fn ws_config() -> WebSocketConfig {
    // 10,000 connections: keep the generator's own buffers small (defaults are 128 KiB each).
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

// ---------------------------------------------------------------------------------------------
// Herald: Centrifugo JSON protocol v2

/// HS256 connection token: sub = u{i}, tenant_id = t{tenant}.
fn mint_jwt(secret: &[u8], i: usize, tenant: usize) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"sub": format!("u{i}"), "tenant_id": format!("t{tenant}"),
                                    "iat": now, "exp": now + 86_400});
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| anyhow!("hmac key: {e}"))?;
    mac.update(format!("{header}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{header}.{body}.{sig}"))
}

#[derive(Deserialize)]
struct Reply<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
    push: Option<Push<'a>>,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(rename = "pub", borrow)]
    publication: Option<Publication<'a>>,
}

#[derive(Deserialize)]
struct Publication<'a> {
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// Handles one text frame (one or more '\n'-separated replies/pushes). Returns the ids of
/// successful replies and whether a ping (`{}`) must be answered.
fn herald_frame(text: &str, stats: &Stats, shard: usize, ids: &mut Vec<u64>) -> Result<bool> {
    let mut ping = false;
    for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
        if line == "{}" {
            ping = true;
            continue;
        }
        let r: Reply = serde_json::from_str(line).with_context(|| format!("bad frame {line:.200}"))?;
        if let Some(e) = r.error {
            bail!("reply {:?}: error {}", r.id, e.get());
        }
        if let Some(data) = r.push.and_then(|p| p.publication).and_then(|p| p.data) {
            stats.delivery(shard, data.get().as_bytes());
        } else if let Some(id) = r.id {
            ids.push(id);
        }
    }
    Ok(ping)
}

async fn herald_handshake(cfg: &HeraldArgs, i: usize, stats: &Stats) -> Result<Ws> {
    let tenant = i % cfg.load.tenants;
    let (mut ws, _) = connect_async_with_config(cfg.url.as_str(), Some(ws_config()), true).await?;
    let token = mint_jwt(cfg.jwt_secret.as_bytes(), i, tenant)?;
    let frame = format!(
        "{{\"id\":1,\"connect\":{{\"token\":\"{token}\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"tenant:t{tenant}:bench\"}}}}"
    );
    ws.send(Message::text(frame)).await?;
    let mut ids = Vec::new();
    while !(ids.contains(&1) && ids.contains(&2)) {
        let ping = match ws.next().await.context("closed during connect/subscribe")?? {
            Message::Text(t) => herald_frame(t.as_str(), stats, i, &mut ids)?,
            Message::Close(c) => bail!("closed during connect/subscribe: {c:?}"),
            _ => false,
        };
        if ping {
            ws.send(Message::text("{}")).await?;
        }
    }
    Ok(ws)
}

async fn herald_run(mut ws: Ws, i: usize, stats: &Stats) -> Result<()> {
    let mut ids = Vec::new();
    while let Some(msg) = ws.next().await {
        let ping = match msg? {
            Message::Text(t) => herald_frame(t.as_str(), stats, i, &mut ids)?,
            Message::Close(c) => bail!("server closed: {c:?}"),
            _ => false,
        };
        ids.clear();
        if ping {
            ws.send(Message::text("{}")).await?;
        }
    }
    bail!("connection ended")
}

/// Open-loop publisher: at each due time it starts the request (on its own task) without waiting
/// for earlier ones, up to `--http-in-flight` outstanding over all publishers (HTTP/1.1 has no
/// pipelining, so this is how many keep-alive connections the pool may open). A publisher that
/// finds the window full waits, and the lag behind the schedule is reported.
async fn herald_publisher(
    cfg: Arc<HeraldArgs>,
    plan: Arc<Plan>,
    w: usize,
    client: reqwest::Client,
    gate: Arc<Semaphore>,
) -> Result<()> {
    let url = Arc::new(format!("{}/api/publish", cfg.api.trim_end_matches('/')));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = w as u64;
    while let Some(due) = plan.due(n) {
        sleep_until(due.into()).await;
        let permit = gate.clone().acquire_owned().await?;
        plan.started(due);
        let k = n % plan.tenants;
        let body = format!(r#"{{"channel":"tenant:t{k}:bench","data":{}}}"#, payload(n));
        let req =
            client.post(url.as_str()).header("X-API-Key", &cfg.api_key).header("content-type", "application/json");
        let plan2 = plan.clone();
        tasks.spawn(async move {
            let result = async {
                let resp = req.body(body).send().await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if !status.is_success() || v.get("error").is_some() || v.get("result").is_none() {
                    bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
                }
                Ok(())
            }
            .await;
            plan2.done(k, result);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
        n += plan.workers;
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NATS: text protocol over WebSocket (binary frames) and plain TCP

#[derive(Default)]
struct NatsEvents {
    pings: usize,
    pongs: usize,
}

/// Consumes every complete protocol line (and MSG payload) at the front of `buf`; MSG payloads
/// are recorded as deliveries. A `-ERR` is an error.
fn nats_parse(buf: &mut Vec<u8>, stats: &Stats, shard: usize) -> Result<NatsEvents> {
    let mut ev = NatsEvents::default();
    let mut pos = 0;
    while let Some(eol) = buf.get(pos..).and_then(|b| b.windows(2).position(|w| w == b"\r\n")) {
        let line = buf.get(pos..pos + eol).unwrap_or_default();
        let next = pos + eol + 2;
        if line.starts_with(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let len: usize = std::str::from_utf8(line)?
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad MSG line {}", String::from_utf8_lossy(line)))?;
            let Some(body) = buf.get(next..next + len) else { break };
            if buf.len() < next + len + 2 {
                break;
            }
            stats.delivery(shard, body);
            pos = next + len + 2;
            continue;
        } else if line == b"PING" {
            ev.pings += 1;
        } else if line == b"PONG" {
            ev.pongs += 1;
        } else if line.starts_with(b"-ERR") {
            bail!("server: {}", String::from_utf8_lossy(line));
        } // INFO, +OK: nothing to do
        pos = next;
    }
    buf.drain(..pos);
    Ok(ev)
}

async fn nats_handshake(cfg: &NatsArgs, i: usize, stats: &Stats) -> Result<(Ws, Vec<u8>)> {
    let tenant = i % cfg.load.tenants;
    let (mut ws, _) = connect_async_with_config(cfg.ws_url.as_str(), Some(ws_config()), true).await?;
    let hello = format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB tenant.t{tenant}.bench 1\r\nPING\r\n");
    ws.send(Message::binary(hello.into_bytes())).await?;
    let mut buf = Vec::new();
    loop {
        match ws.next().await.context("closed during CONNECT/SUB")?? {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Text(t) => buf.extend_from_slice(t.as_bytes()),
            Message::Close(c) => bail!("closed during CONNECT/SUB: {c:?}"),
            _ => continue,
        }
        let ev = nats_parse(&mut buf, stats, i)?;
        for _ in 0..ev.pings {
            ws.send(Message::binary(&b"PONG\r\n"[..])).await?;
        }
        if ev.pongs > 0 {
            return Ok((ws, buf));
        }
    }
}

async fn nats_run(mut ws: Ws, mut buf: Vec<u8>, i: usize, stats: &Stats) -> Result<()> {
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Text(t) => buf.extend_from_slice(t.as_bytes()),
            Message::Close(c) => bail!("server closed: {c:?}"),
            _ => continue,
        }
        for _ in 0..nats_parse(&mut buf, stats, i)?.pings {
            ws.send(Message::binary(&b"PONG\r\n"[..])).await?;
        }
    }
    bail!("connection ended")
}

async fn nats_publisher(cfg: Arc<NatsArgs>, plan: Arc<Plan>, w: usize) -> Result<()> {
    let mut sock = TcpStream::connect(&cfg.nats_url).await.with_context(|| format!("connect {}", cfg.nats_url))?;
    sock.set_nodelay(true)?;
    sock.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n").await?;
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = Vec::with_capacity(4096);
    let scratch = Stats::new()?; // a publisher subscribes to nothing: MSG never arrives here
    while nats_parse(&mut buf, &scratch, 0)?.pongs == 0 {
        if rd.read_buf(&mut buf).await? == 0 {
            bail!("nats closed during CONNECT");
        }
    }
    // Answer server PINGs while publishing.
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err::<(), anyhow::Error>(anyhow!("nats publisher connection closed")),
                Ok(_) => {
                    for _ in 0..nats_parse(&mut buf, &scratch, 0)?.pings {
                        let _ = pong_tx.send(());
                    }
                }
            }
        }
    });
    let mut n = w as u64;
    let mut next = plan.due(n);
    while let Some(due) = next {
        tokio::select! {
            Some(()) = pong_rx.recv() => { wr.write_all(b"PONG\r\n").await?; continue; }
            () = sleep_until(due.into()) => {}
        }
        plan.started(due);
        let k = n % plan.tenants;
        let data = payload(n);
        let msg = format!("PUB tenant.t{k}.bench {}\r\n{data}\r\n", data.len());
        let result = wr.write_all(msg.as_bytes()).await;
        plan.done(k, result.map_err(Into::into));
        n += plan.workers;
        next = plan.due(n);
    }
    reader.abort();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Publishing schedule, shared by both modes

struct Plan {
    t0: Instant,
    rate: u64,
    total: u64,
    deadline: Instant,
    workers: u64,
    tenants: u64,
    subscribers: Vec<u64>,
    stats: Arc<Stats>,
}

impl Plan {
    /// When publication n is due, unless the run is over (n past the total, or the deadline
    /// passed because the publisher fell behind).
    fn due(&self, n: u64) -> Option<Instant> {
        let at = self.t0 + Duration::from_nanos(n.saturating_mul(1_000_000_000) / self.rate.max(1));
        (n < self.total && Instant::now() < self.deadline).then_some(at)
    }

    /// Counts a publication: sent (and how many deliveries it should produce) or failed.
    /// Notes how far behind its schedule a publication starts.
    fn started(&self, due: Instant) {
        let lag = u64::try_from(Instant::now().saturating_duration_since(due).as_nanos()).unwrap_or(u64::MAX);
        self.stats.publish_lag_max_ns.fetch_max(lag, Relaxed);
    }

    fn done(&self, tenant: u64, result: Result<()>) {
        match result {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Relaxed);
                let subs = usize::try_from(tenant).ok().and_then(|t| self.subscribers.get(t));
                self.stats.expected.fetch_add(subs.copied().unwrap_or(0), Relaxed);
            }
            Err(e) if self.stats.publish_errors.fetch_add(1, Relaxed) < 3 => eprintln!("publish error: {e:#}"),
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process measurements

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn available_cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime of a process (all its threads), in seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = s.get(s.rfind(')')? + 2..)?.split(' ').collect();
    Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / clock_ticks())
}

/// CPU seconds the whole machine spent busy (user, nice, system, irq, softirq), from /proc/stat:
/// what neither the server nor the generator used was taken by other processes.
fn machine_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    Some([0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum::<f64>() / clock_ticks())
}

/// This process's user + system CPU seconds (getrusage).
fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft open-file limit to the hard one; each connection needs a descriptor.
fn raise_nofile(need: u64) -> Result<u64> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: get/setrlimit read and write the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        }
    }
    if rl.rlim_cur < need {
        bail!(
            "open-file limit is {} but {need} are needed; raise `ulimit -n` (hard limit {})",
            rl.rlim_cur,
            rl.rlim_max
        );
    }
    Ok(rl.rlim_cur)
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Target {
    Herald(Arc<HeraldArgs>),
    Nats(Arc<NatsArgs>),
}

/// Ends the ramp slot of one connection and reports whether it connected and subscribed.
fn ready<T>(
    r: Result<Result<T>, tokio::time::error::Elapsed>,
    i: usize,
    tx: &mpsc::UnboundedSender<Result<usize, String>>,
    permit: tokio::sync::SemaphorePermit<'_>,
) -> Option<T> {
    drop(permit);
    match r.map_err(|_| anyhow!("connect/subscribe timed out")).and_then(|r| r) {
        Ok(v) => tx.send(Ok(i)).ok().map(|()| v),
        Err(e) => {
            let _ = tx.send(Err(format!("{e:#}")));
            None
        }
    }
}

/// One subscriber: connect and subscribe (holding a ramp permit), report, then receive until the end.
async fn client(
    target: Target,
    i: usize,
    stats: Arc<Stats>,
    gate: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Result<usize, String>>,
) {
    let Ok(permit) = gate.acquire().await else { return };
    let result = match &target {
        Target::Herald(cfg) => {
            let r = timeout(CONNECT_TIMEOUT, herald_handshake(cfg, i, &stats)).await;
            let Some(ws) = ready(r, i, &tx, permit) else { return };
            herald_run(ws, i, &stats).await
        }
        Target::Nats(cfg) => {
            let r = timeout(CONNECT_TIMEOUT, nats_handshake(cfg, i, &stats)).await;
            let Some((ws, buf)) = ready(r, i, &tx, permit) else { return };
            nats_run(ws, buf, i, &stats).await
        }
    };
    if let Err(e) = result
        && !STOPPING.load(Relaxed)
        && stats.dropped.fetch_add(1, Relaxed) < 3
    {
        eprintln!("connection {i} lost: {e:#}");
    }
}

async fn bench(target: Target, load: Load) -> Result<()> {
    let _ = *EPOCH;
    let n = load.connections;
    if n == 0 || load.tenants == 0 || load.rate == 0 || load.publishers == 0 {
        bail!("--connections, --tenants, --rate and --publishers must be positive");
    }
    let nofile = raise_nofile(n as u64 + 256)?;
    let system = load.label.clone().unwrap_or_else(|| match &target {
        Target::Herald(_) => "herald".into(),
        Target::Nats(_) => "nats".into(),
    });
    let pid = load.server_pid;
    let stats = Arc::new(Stats::new()?);
    let cpu0 = self_cpu_secs();
    let rss_before = pid.and_then(rss_kb);
    println!(
        "{system}: {n} connections over {} tenants (open-file limit {nofile}); server RSS before: {} kB",
        load.tenants,
        opt(rss_before)
    );

    // Connect phase: bounded concurrency, every connection connects and subscribes.
    let gate = Arc::new(Semaphore::new(load.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let t_conn = Instant::now();
    for i in 0..n {
        tokio::spawn(client(target.clone(), i, stats.clone(), gate.clone(), ready_tx.clone()));
    }
    drop(ready_tx);
    let mut subscribers = vec![0u64; load.tenants];
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut last_print = Instant::now();
    while connected + failed < n {
        let Some(r) = ready_rx.recv().await else { break };
        match r {
            Ok(i) => {
                connected += 1;
                if let Some(s) = subscribers.get_mut(i % load.tenants) {
                    *s += 1;
                }
            }
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connect failed: {e}");
                }
            }
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            eprintln!("  connected {connected}/{n} ({failed} failed) after {:.1} s", t_conn.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
    }
    let connect_secs = t_conn.elapsed().as_secs_f64();
    let cpu_connect = self_cpu_secs() - cpu0;
    println!(
        "connected {connected}/{n} in {connect_secs:.2} s ({failed} failed, {:.0} connections/s)",
        connected as f64 / connect_secs
    );
    if connected == 0 {
        bail!("no connection established");
    }
    sleep(Duration::from_secs(2)).await; // let the server settle before reading its RSS
    let rss_idle = pid.and_then(rss_kb);
    let per_conn = match (rss_before, rss_idle) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) as f64 * 1024.0 / connected as f64).round()),
        _ => None,
    };
    println!(
        "server RSS with {connected} idle connections: {} kB → {} bytes per idle connection; generator RSS {} kB",
        opt(rss_idle),
        opt(per_conn),
        opt(rss_kb(std::process::id()))
    );

    // Publish phase.
    let total = load.rate * load.duration;
    let t0 = Instant::now() + Duration::from_millis(100);
    let plan = Arc::new(Plan {
        t0,
        rate: load.rate,
        total,
        deadline: t0 + Duration::from_secs(load.duration) + Duration::from_secs(load.duration.div_ceil(4) + 5),
        workers: load.publishers as u64,
        tenants: load.tenants as u64,
        subscribers,
        stats: stats.clone(),
    });
    let (cpu_pub0, srv_cpu0, machine0) = (self_cpu_secs(), pid.and_then(proc_cpu_secs), machine_busy_secs());
    let t0_ns = u64::try_from(t0.duration_since(*EPOCH).as_nanos())?;
    let mut pubs = Vec::new();
    let client = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build()?;
    let in_flight = match &target {
        Target::Herald(cfg) => cfg.http_in_flight.max(1),
        Target::Nats(_) => 1,
    };
    let gate = Arc::new(Semaphore::new(in_flight));
    for w in 0..load.publishers {
        pubs.push(match &target {
            Target::Herald(cfg) => {
                tokio::spawn(herald_publisher(cfg.clone(), plan.clone(), w, client.clone(), gate.clone()))
            }
            Target::Nats(cfg) => tokio::spawn(nats_publisher(cfg.clone(), plan.clone(), w)),
        });
    }
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "  t={:.0}s sent {} delivered {} (expected so far {})",
                    t0.elapsed().as_secs_f64(),
                    stats.sent.load(Relaxed),
                    stats.delivered.load(Relaxed),
                    stats.expected.load(Relaxed)
                );
            }
        })
    };
    for p in pubs {
        p.await??;
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    // Drain: wait for outstanding deliveries (stop early once nothing arrives for 3 s).
    let drain_end = Instant::now() + Duration::from_secs(load.drain_secs);
    let (mut seen, mut seen_at) = (stats.delivered.load(Relaxed), Instant::now());
    while stats.delivered.load(Relaxed) < stats.expected.load(Relaxed) && Instant::now() < drain_end {
        sleep(Duration::from_millis(50)).await;
        let d = stats.delivered.load(Relaxed);
        if d != seen {
            (seen, seen_at) = (d, Instant::now());
        } else if seen_at.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    STOPPING.store(true, Relaxed);
    progress.abort();
    let publish_secs_total = t0.elapsed().as_secs_f64();
    let cpu_publish = self_cpu_secs() - cpu_pub0;
    let srv_cpu = srv_cpu0.zip(pid.and_then(proc_cpu_secs)).map(|(a, b)| b - a);
    let machine_cpu = machine0.zip(machine_busy_secs()).map(|(a, b)| b - a);
    let other_cpu = machine_cpu.map(|m| (m - cpu_publish - srv_cpu.unwrap_or(0.0)).max(0.0));
    let rss_end = pid.and_then(rss_kb);

    let h = stats.merged()?;
    let (sent, delivered, expected) =
        (stats.sent.load(Relaxed), stats.delivered.load(Relaxed), stats.expected.load(Relaxed));
    let span = (stats.last_delivery_ns.load(Relaxed).saturating_sub(t0_ns) as f64 / 1e9).max(1e-9);
    let rate_delivered = if delivered > 0 { delivered as f64 / span } else { 0.0 };
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    let (p50, p90, p99, max) = (ms(0.5), ms(0.9), ms(0.99), h.max() as f64 / 1e6);
    let gen_cpu = self_cpu_secs() - cpu0;
    let lag_ms = stats.publish_lag_max_ns.load(Relaxed) as f64 / 1e6;
    println!(
        "published {sent} of {total} scheduled in {publish_secs:.2} s ({:.0}/s, {} errors, at most {lag_ms:.1} ms behind \
         schedule) by {} publishers{}",
        sent as f64 / publish_secs,
        stats.publish_errors.load(Relaxed),
        load.publishers,
        if in_flight > 1 { format!(", up to {in_flight} requests in flight") } else { String::new() }
    );
    println!(
        "delivered {delivered} of {expected} expected ({:.2} %), {rate_delivered:.0} msgs/s; {} connections lost, {} bad payloads",
        if expected > 0 { delivered as f64 * 100.0 / expected as f64 } else { 0.0 },
        stats.dropped.load(Relaxed),
        stats.bad_payloads.load(Relaxed)
    );
    println!("latency publish→delivery ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}");
    println!(
        "generator CPU: {gen_cpu:.1} s total ({cpu_connect:.1} s connecting, {cpu_publish:.1} s publishing+receiving); \
         while publishing: server {} s, other processes {} s (of {:.0} core-seconds)",
        opt(srv_cpu.map(|c| format!("{c:.1}"))),
        opt(other_cpu.map(|c| format!("{c:.1}"))),
        publish_secs_total * available_cores()
    );
    let json = serde_json::json!({
        "system": system, "connections_requested": n, "connections": connected, "connect_failures": failed,
        "connect_secs": connect_secs, "rss_before_kb": rss_before, "rss_idle_kb": rss_idle, "rss_end_kb": rss_end,
        "rss_per_idle_connection_bytes": per_conn, "tenants": load.tenants, "rate": load.rate,
        "duration_secs": load.duration, "publishers": load.publishers, "publications": sent,
        "publications_scheduled": total, "publish_lag_max_ms": lag_ms,
        "publish_errors": stats.publish_errors.load(Relaxed), "publish_secs": publish_secs,
        "expected_deliveries": expected, "deliveries": delivered, "delivered_per_sec": rate_delivered,
        "connections_lost": stats.dropped.load(Relaxed), "bad_payloads": stats.bad_payloads.load(Relaxed),
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
        "generator_cpu_secs": gen_cpu, "generator_cpu_connect_secs": cpu_connect,
        "generator_cpu_publish_secs": cpu_publish, "server_cpu_publish_secs": srv_cpu,
        "other_cpu_publish_secs": other_cpu, "measure_secs": publish_secs_total, "cores": available_cores(),
    });
    println!("{json}");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        match cli.mode {
            Mode::Herald(a) => {
                let load = a.load.clone();
                bench(Target::Herald(Arc::new(a)), load).await
            }
            Mode::Nats(a) => {
                let load = a.load.clone();
                bench(Target::Nats(Arc::new(a)), load).await
            }
        }
    });
    // 10,000 sockets close with the process; don't wait for each task to unwind.
    rt.shutdown_background();
    result
}
