//! Starts the real `herald` binary on port 0 with its own data directory and drives it over
//! HTTP, as a user would.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SEED_EVENT: &str = r#"{"event_type":"order_created","tenant_id":"76953480-3","service":"shopify","data":{"order_id":450789469,"total_price":"199990"}}"#;

pub fn herald_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub key: String,
    pub data_dir: PathBuf,
    pub stdout_lines: Vec<String>,
}

impl Server {
    /// Starts `herald serve` on an ephemeral port and waits until it prints its HTTP address.
    pub fn start(data_dir: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::start_wrapped(&[], data_dir, extra_args, envs)
    }

    /// As `start`, with the binary run through `wrapper` (e.g. `prlimit --nofile=…`), which
    /// must exec it so that the child's pid stays the server's.
    pub fn start_wrapped(
        wrapper: &[&str],
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(herald_bin());
                c
            }
            None => Command::new(herald_bin()),
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http-addr")
            .arg("127.0.0.1:0")
            .arg("--kafka-addr")
            .arg("PLAINTEXT://127.0.0.1:0")
            .args(extra_args)
            .env_remove("HERALD_ADMIN_API_KEY")
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        let mut url = None;
        while url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("herald did not report its HTTP address; output so far: {lines:?}")
            });
            if line.trim_start().starts_with("HTTP API") {
                url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(str::to_owned);
            }
            lines.push(line);
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let key = envs
            .iter()
            .find(|(k, _)| *k == "HERALD_ADMIN_API_KEY")
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_else(|| {
                std::fs::read_to_string(data_dir.join("admin-api-key"))
                    .expect("admin key file")
                    .trim()
                    .to_owned()
            });
        Server {
            child,
            url: url.expect("url"),
            key,
            data_dir: data_dir.to_path_buf(),
            stdout_lines: lines,
        }
    }

    pub fn client(&self) -> reqwest::Client {
        herald_auth::tls::install_default_provider();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let r = self
            .client()
            .post(format!("{}{path}", self.url))
            .header("X-API-Key", &self.key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client()
            .get(format!("{}{path}", self.url))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("herald did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL without waiting, for use while requests are in flight.
    pub fn signal_kill(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs the `herald` CLI against this server.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(herald_bin())
            .args(args)
            .env("HERALD_SERVER", &self.url)
            .env("HERALD_API_KEY", &self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cli");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("cli output")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads every event of a partition from the beginning.
pub async fn read_all(server: &Server, topic: &str, partition: u32) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let (status, body) = server
            .get(&format!(
                "/v1/topics/{topic}/events?partition={partition}&offset={offset}&limit=1000"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().expect("events").clone();
        if events.is_empty() {
            return out;
        }
        offset = body["next_offset"].as_u64().expect("next_offset");
        out.extend(events);
    }
}
