//! `herald bench`: benchmarks that print their figures and record them, with the command line
//! and the machine, in BENCHMARKS.md.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use herald_log::{FsyncPolicy, Log, LogOptions, Record};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Durable append throughput and acknowledgement latency of the embedded log, beside the
    /// disk's own fsync'd sequential bandwidth and Redis Streams with appendfsync always.
    Produce(ProduceArgs),
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Directory for the benchmark's files (on the disk to measure). Removed afterwards.
    #[arg(long, default_value = "./herald-bench")]
    pub dir: PathBuf,
    /// Bytes written per scenario.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub bytes: u64,
    /// Record size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per append in the large-batch scenarios.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Concurrent producers in the large-batch scenarios. With the default batch this keeps
    /// 1 MiB in flight, the same amount the raw-disk baseline writes per fdatasync.
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// Topic counts to run the large-batch scenario with.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
    pub topics: Vec<usize>,
    /// Runs of each scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the Redis Streams peer.
    #[arg(long)]
    pub no_redis: bool,
    /// Markdown file to record the results in (a section is replaced or appended).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(args) => tokio::task::spawn_blocking(move || produce(args)).await?,
    }
}

#[derive(Debug, Clone, Default)]
struct Figures {
    name: String,
    events_per_sec: f64,
    mb_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    note: String,
}

fn median_by<F: Fn(&Figures) -> f64>(mut runs: Vec<Figures>, key: F) -> Figures {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid).unwrap_or_default()
}

fn seed_record(size: usize) -> Bytes {
    let base = br##"{"event_id":"5f0c7e4e-9a55-4a55-9b7c-6a8f1f1f2b10","event_type":"order_created","tenant_id":"76953480-3","service":"shopify","timestamp":"2025-11-23T12:00:00Z","user_id":"user_abc","data":{"order_id":450789469,"order_number":"#1234","total_price":"199990","customer_email":"cliente@example.com","note":""##;
    let mut v = base.to_vec();
    while v.len() + 4 < size {
        v.push(b'x');
    }
    v.extend_from_slice(b"\"}}");
    v.truncate(size.max(base.len() + 3));
    Bytes::from(v)
}

fn progress(total: u64, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_owned());
    pb
}

/// Sequential 1 MiB writes, each followed by fdatasync: the ceiling for durable ingest.
fn raw_disk(dir: &Path, bytes: u64) -> anyhow::Result<Figures> {
    let path = dir.join("raw.bin");
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let chunk = vec![0xA5u8; 1024 * 1024];
    let pb = progress(bytes, "raw disk 1 MiB+fdatasync");
    let mut hist = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        let t = Instant::now();
        file.write_all_at(&chunk, written)?;
        file.sync_data()?;
        hist.record(t.elapsed().as_micros() as u64)?;
        written += chunk.len() as u64;
        pb.set_position(written);
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Figures {
        name: "disk: sequential 1 MiB writes + fdatasync".into(),
        events_per_sec: 0.0,
        mb_per_sec: written as f64 / secs / 1e6,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        note: "per-write latency of 1 MiB".into(),
    })
}

/// 4 KiB appends with fdatasync each: the latency floor of one durable acknowledgement.
fn raw_fsync_latency(dir: &Path, count: usize) -> anyhow::Result<Figures> {
    let path = dir.join("fsync.bin");
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let chunk = vec![0x5Au8; 4096];
    let mut hist = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        file.write_all_at(&chunk, (i * chunk.len()) as u64)?;
        file.sync_data()?;
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Figures {
        name: "disk: 4 KiB append + fdatasync".into(),
        events_per_sec: count as f64 / secs,
        mb_per_sec: (count * 4096) as f64 / secs / 1e6,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        note: "fsyncs/s in the events column".into(),
    })
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct LogRun {
    figures: Figures,
    topic_rss_bytes_per_topic: Option<f64>,
    create_secs: f64,
    reopen_ms: Option<u128>,
}

#[allow(clippy::too_many_arguments)]
fn log_scenario(
    dir: &Path,
    label: &str,
    fsync: FsyncPolicy,
    topics: usize,
    producers: usize,
    batch: usize,
    record: &Bytes,
    bytes: u64,
    measure_reopen: bool,
) -> anyhow::Result<LogRun> {
    let _ = std::fs::remove_dir_all(dir);
    let mut opts = LogOptions::new(dir);
    opts.fsync = fsync;
    if let Ok(v) = std::env::var("HERALD_BENCH_CHECKPOINT_MIB")
        && let Ok(mib) = v.parse::<u64>()
    {
        opts.checkpoint_bytes = mib * 1024 * 1024;
    }
    let log = Log::open(opts.clone())?;

    let rss_before = rss_kib();
    let create_start = Instant::now();
    let names: Arc<Vec<String>> = Arc::new(
        (0..topics)
            .map(|i| format!("smarteros.t{i}.bench.order_created"))
            .collect(),
    );
    {
        let pb = progress(topics as u64, &format!("create {topics} topics"));
        let next = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let log = log.clone();
                let names = Arc::clone(&names);
                let next = Arc::clone(&next);
                let pb = pb.clone();
                std::thread::spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(name) = names.get(i) else {
                            return Ok(());
                        };
                        log.create_topic(name, 1, Default::default())?;
                        pb.inc(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("topic creation thread panicked"))??;
        }
        pb.finish_and_clear();
    }
    let create_secs = create_start.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    let per_topic = (topics >= 1000)
        .then(|| (rss_after.saturating_sub(rss_before) * 1024) as f64 / topics as f64);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let records: Vec<Record> = (0..batch)
        .map(|_| Record {
            offset: 0,
            timestamp_ms: now,
            key: None,
            value: Some(record.clone()),
            headers: Vec::new(),
        })
        .collect();
    let template = herald_log::batch::build(&records)?;
    let per_append = template.len() as u64;
    let appends_total = (bytes / per_append).max(producers as u64);
    let pb = progress(appends_total, label);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let log = log.clone();
            let names = Arc::clone(&names);
            let template = template.clone();
            let next = Arc::clone(&next);
            let pb = pb.clone();
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let mut hist = Histogram::<u64>::new(3)?;
                let mut rng = (p as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                while next.fetch_add(1, Ordering::Relaxed) < appends_total {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let topic = names
                        .get((rng % names.len() as u64) as usize)
                        .map(String::as_str)
                        .unwrap_or_default();
                    let t = Instant::now();
                    log.append_blocking(topic, 0, template.clone(), Vec::new())?;
                    hist.record(t.elapsed().as_micros() as u64)?;
                    pb.inc(1);
                }
                Ok(hist)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3)?;
    for t in threads {
        let h = t
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        hist.add(h)?;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let appended = hist.len();
    let events = appended * batch as u64;
    let figures = Figures {
        name: label.to_owned(),
        events_per_sec: events as f64 / secs,
        mb_per_sec: (appended * per_append) as f64 / secs / 1e6,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        note: format!("{producers} producers × {batch} records/append, {topics} topics"),
    };
    let reopen_ms = if measure_reopen {
        // Close then reopen: measures loading the catalog of every topic from the checkpoint.
        log.close()?;
        drop(log);
        let t = Instant::now();
        let reopened = Log::open(opts)?;
        let ms = t.elapsed().as_millis();
        if reopened.topic_count() != topics {
            bail!(
                "reopened log has {} topics, expected {topics}",
                reopened.topic_count()
            );
        }
        reopened.close()?;
        Some(ms)
    } else {
        log.close()?;
        None
    };
    let _ = std::fs::remove_dir_all(dir);
    Ok(LogRun {
        figures,
        topic_rss_bytes_per_topic: per_topic,
        create_secs,
        reopen_ms,
    })
}

/// Redis Streams with `appendfsync always`, started on its own port, fed XADD with the same
/// record size and concurrency over loopback.
fn redis_peer(
    dir: &Path,
    producers: usize,
    pipeline: usize,
    record: &Bytes,
    bytes: u64,
) -> anyhow::Result<Figures> {
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;
    let port = 16379;
    let data = dir.join("redis");
    std::fs::create_dir_all(&data)?;
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start redis-server (apt-get install redis-server, or pass --no-redis)")?;
    let result = (|| -> anyhow::Result<Figures> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut cmd = Vec::new();
        let _ = write!(
            cmd,
            "*5\r\n$4\r\nXADD\r\n$5\r\nbench\r\n$1\r\n*\r\n$1\r\nv\r\n${}\r\n",
            record.len()
        );
        cmd.extend_from_slice(record);
        cmd.extend_from_slice(b"\r\n");
        let request: Vec<u8> = cmd.repeat(pipeline);
        let rounds_total = (bytes / (record.len() * pipeline) as u64).max(producers as u64);
        let next = Arc::new(AtomicU64::new(0));
        let pb = progress(rounds_total, "redis streams (always)");
        let start = Instant::now();
        let threads: Vec<_> = (0..producers)
            .map(|_| {
                let request = request.clone();
                let next = Arc::clone(&next);
                let pb = pb.clone();
                std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                    let mut hist = Histogram::<u64>::new(3)?;
                    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
                    stream.set_nodelay(true)?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    let mut line = String::new();
                    while next.fetch_add(1, Ordering::Relaxed) < rounds_total {
                        let t = Instant::now();
                        stream.write_all(&request)?;
                        for _ in 0..pipeline {
                            line.clear();
                            reader.read_line(&mut line)?;
                            if line.starts_with('-') {
                                bail!("redis error: {line}");
                            }
                            if let Some(len) = line
                                .strip_prefix('$')
                                .and_then(|l| l.trim().parse::<usize>().ok())
                            {
                                let mut skip = vec![0u8; len + 2];
                                reader.read_exact(&mut skip)?;
                            }
                        }
                        hist.record(t.elapsed().as_micros() as u64)?;
                        pb.inc(1);
                    }
                    Ok(hist)
                })
            })
            .collect();
        let mut hist = Histogram::<u64>::new(3)?;
        for t in threads {
            let h = t
                .join()
                .map_err(|_| anyhow::anyhow!("redis producer panicked"))??;
            hist.add(h)?;
        }
        let secs = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let events = hist.len() * pipeline as u64;
        Ok(Figures {
            name: "Redis 7 Streams XADD, appendfsync always".into(),
            events_per_sec: events as f64 / secs,
            mb_per_sec: (events * record.len() as u64) as f64 / secs / 1e6,
            p50_us: hist.value_at_quantile(0.5),
            p99_us: hist.value_at_quantile(0.99),
            note: format!("{producers} connections × {pipeline} pipelined XADD, loopback"),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    result
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map(|kib| kib as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} × {cpu}, {mem_gib:.0} GiB RAM")
}

fn filesystem(dir: &Path) -> String {
    let out = std::process::Command::new("df")
        .args(["--output=fstype,source"])
        .arg(dir)
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" on "))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn row(f: &Figures) -> String {
    let ev = if f.events_per_sec > 0.0 {
        format!("{:.0}", f.events_per_sec)
    } else {
        "–".into()
    };
    format!(
        "| {} | {} | {:.0} | {} | {} | {} |",
        f.name, ev, f.mb_per_sec, f.p50_us, f.p99_us, f.note
    )
}

fn record_section(path: &Path, marker: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- {marker}:begin -->");
    let end = format!("<!-- {marker}:end -->");
    let section = format!("{begin}\n{body}{end}\n");
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            let mut s = String::new();
            s.push_str(existing.get(..b).unwrap_or_default());
            s.push_str(&section);
            s.push_str(
                existing
                    .get(e + end.len()..)
                    .unwrap_or_default()
                    .trim_start_matches('\n'),
            );
            s
        }
        _ => format!("{}\n{section}", existing.trim_end()),
    };
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    if args.record_size < 256 || args.batch == 0 || args.producers == 0 || args.runs == 0 {
        bail!("--record-size must be ≥ 256 and --batch, --producers, --runs ≥ 1");
    }
    std::fs::create_dir_all(&args.dir)?;
    let record = seed_record(args.record_size);
    let mut rows: Vec<Figures> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let disk = median_by(
        (0..args.runs)
            .map(|_| raw_disk(&args.dir, args.bytes))
            .collect::<anyhow::Result<Vec<_>>>()?,
        |f| f.mb_per_sec,
    );
    eprintln!("{}", row(&disk));
    let fsync = raw_fsync_latency(&args.dir, 2000)?;
    eprintln!("{}", row(&fsync));
    let disk_mb = disk.mb_per_sec;
    rows.push(disk);
    rows.push(fsync);

    for &topics in &args.topics {
        let label = format!(
            "herald-log, fsync always, {topics} topic{}",
            if topics == 1 { "" } else { "s" }
        );
        let mut runs = Vec::new();
        let mut extra = None;
        for i in 0..args.runs {
            let measure_reopen = i == 0 && topics >= 1000;
            let r = log_scenario(
                &args.dir.join("log"),
                &label,
                FsyncPolicy::Always,
                topics,
                args.producers,
                args.batch,
                &record,
                args.bytes,
                measure_reopen,
            )?;
            if measure_reopen {
                extra = Some((r.topic_rss_bytes_per_topic, r.create_secs, r.reopen_ms));
            }
            runs.push(r.figures);
        }
        let mut f = median_by(runs, |f| f.mb_per_sec);
        f.note = format!(
            "{}; {:.0} % of disk",
            f.note,
            f.mb_per_sec / disk_mb * 100.0
        );
        eprintln!("{}", row(&f));
        if let Some((Some(per_topic), create_secs, reopen_ms)) = extra {
            notes.push(format!(
                "{topics} topics: created in {create_secs:.1} s (concurrently, group-committed); resident memory {per_topic:.0} bytes per idle topic; reopen (catalog load + journal replay) {} ms",
                reopen_ms.unwrap_or(0)
            ));
        }
        rows.push(f);
    }

    let small = median_by(
        (0..args.runs)
            .map(|_| {
                log_scenario(
                    &args.dir.join("log"),
                    "herald-log, fsync always, 1 event per append",
                    FsyncPolicy::Always,
                    1,
                    64,
                    1,
                    &record,
                    args.bytes / 16,
                    false,
                )
                .map(|r| r.figures)
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        |f| f.events_per_sec,
    );
    eprintln!("{}", row(&small));
    rows.push(small);

    if !args.no_redis {
        match redis_peer(
            &args.dir,
            args.producers,
            args.batch,
            &record,
            args.bytes / 4,
        ) {
            Ok(f) => {
                eprintln!("{}", row(&f));
                rows.push(f);
            }
            Err(e) => notes.push(format!("Redis peer not measured: {e}")),
        }
    }

    let _ = std::fs::remove_dir_all(&args.dir);
    let command: Vec<String> = std::env::args().collect();
    let mut body = String::new();
    let _ = writeln!(body, "## Durable produce (`herald bench produce`)\n");
    let _ = writeln!(body, "- command: `{}`", command.join(" "));
    let _ = writeln!(
        body,
        "- machine: {}; filesystem: {}",
        machine(),
        filesystem(&std::env::current_dir()?)
    );
    let _ = writeln!(
        body,
        "- date: {}; record size {} B; {} MiB per scenario; median of {} runs",
        time::OffsetDateTime::now_utc().date(),
        args.record_size,
        args.bytes / 1024 / 1024,
        args.runs
    );
    let _ = writeln!(
        body,
        "- the load generator runs in the same process as the log (no network) and shares the two cores with it; Redis is driven over loopback\n"
    );
    let _ = writeln!(
        body,
        "| scenario | events/s | MB/s | p50 µs | p99 µs | notes |"
    );
    let _ = writeln!(body, "|---|---:|---:|---:|---:|---|");
    for r in &rows {
        let _ = writeln!(body, "{}", row(r));
    }
    if !notes.is_empty() {
        let _ = writeln!(body);
        for n in &notes {
            let _ = writeln!(body, "- {n}");
        }
    }
    print!("{body}");
    record_section(&args.output, "bench-produce", &body)?;
    eprintln!("recorded in {}", args.output.display());
    Ok(())
}
