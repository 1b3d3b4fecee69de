//! The HTTP listener's edges through the real binary: oversized bodies, requests that never
//! finish, idle connections, the connection bound under a low descriptor limit, and WebSocket
//! handshakes with a bad key. Plain sockets, so the test controls every byte and every pause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;

const ADMIN: &str = "http-edge-test-admin-key-0123456789";

fn host_port(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

fn kafka_addr(server: &Server) -> String {
    server
        .stdout_lines
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some("PLAINTEXT"))
                .then(|| w.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no Kafka line in {:?}", server.stdout_lines))
}

fn start_with_config(dir: &Path, toml: &str, wrapper: &[&str]) -> Server {
    let config = dir.join("herald.toml");
    std::fs::write(&config, toml).unwrap();
    Server::start_wrapped(
        wrapper,
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    )
}

/// Reads until the server closes the connection (end of stream or reset) or `within` passes.
/// Returns what was read and how long the server took to close, or `None` if it kept the
/// connection open.
fn wait_for_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (got, None);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some(start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, None);
            }
            Err(_) => return (got, Some(start.elapsed())),
        }
    }
}

/// A body far over `http.max_body_bytes` with a `Content-Length` is answered 413 before it is
/// read, and the server keeps reading (and discarding) long enough for a client that sends
/// the whole body before reading to see the answer instead of a connection reset.
#[test]
fn a_64_mib_body_gets_413_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let body_len = 64 * 1024 * 1024;
    for _ in 0..2 {
        let mut s = TcpStream::connect(host_port(&server)).unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: herald\r\nX-API-Key: {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        let mut write_error = None;
        while sent < body_len {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => {
                    write_error = Some(e);
                    break;
                }
            }
        }
        // A client that sends its whole body before reading (Python's `requests`, for one)
        // gives up at the first write error and never reads the answer.
        assert!(
            write_error.is_none(),
            "sending the body failed after {sent} of {body_len} bytes: {write_error:?}"
        );
        let (got, closed) = wait_for_close(&mut s, Duration::from_secs(20));
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "expected 413, read {text:?}"
        );
        assert!(text.contains("payload_too_large"), "{text}");
        assert!(closed.is_some(), "the connection stayed open after the 413");
    }
    // The server is still serving.
    let mut s = TcpStream::connect(host_port(&server)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (got, _) = wait_for_close(&mut s, Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    server.stop();
}

/// Connections that never finish a request are closed: silent from the start, silent after a
/// partial head, trickling a head one byte at a time, stalled in the middle of a body, and
/// idle after a complete request on a kept-alive connection.
#[test]
fn unfinished_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_config(
        dir.path(),
        "[http]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 3\n",
        &[],
    );
    let addr = host_port(&server);
    let within = Duration::from_secs(15);

    let mut silent = TcpStream::connect(&addr).unwrap();

    let mut partial = TcpStream::connect(&addr).unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: her")
        .unwrap();

    let mut trickle = TcpStream::connect(&addr).unwrap();
    let mut trickle_writer = trickle.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        let head = b"GET /health HTTP/1.1\r\nX-Padding: ";
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if trickle_writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let mut stalled_body = TcpStream::connect(&addr).unwrap();
    stalled_body
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nHost: herald\r\nX-API-Key: {ADMIN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event"
            )
            .as_bytes(),
        )
        .unwrap();

    let mut kept_alive = TcpStream::connect(&addr).unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: herald\r\n\r\n")
        .unwrap();

    let cases: [(&str, &mut TcpStream); 5] = [
        ("silent", &mut silent),
        ("partial head", &mut partial),
        ("trickled head", &mut trickle),
        ("stalled body", &mut stalled_body),
        ("kept alive", &mut kept_alive),
    ];
    for (name, stream) in cases {
        let (got, closed) = wait_for_close(stream, within);
        assert!(closed.is_some(), "{name}: still open after {within:?}");
        if name == "kept alive" {
            assert!(
                String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
                "{name}: {got:?}"
            );
        }
    }
    trickler.join().unwrap();
    server.stop();
}

/// ApiVersions v0 with correlation id 7; true if the listener at `addr` answers it.
fn kafka_answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let req = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
    if s.write_all(&req).is_err() {
        return false;
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).is_ok() && head[4..8] == [0, 0, 0, 7]
}

/// With 1,024 descriptors, 1,100 idle HTTP connections neither exhaust the process nor stop
/// the Kafka listener: HTTP connections past the bound are closed at once, the bound leaves
/// descriptors in reserve, and HTTP serves again once the clients leave.
#[test]
fn idle_http_connections_cannot_starve_kafka_under_a_low_descriptor_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_config(
        dir.path(),
        "[http]\nheader_read_timeout_secs = 120\nidle_timeout_secs = 120\n",
        &["prlimit", "--nofile=1024:1024", "--"],
    );
    let addr = host_port(&server);
    let kafka = kafka_addr(&server);
    assert!(
        kafka_answers(&kafka),
        "Kafka does not answer before the flood"
    );

    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = TcpStream::connect(&addr) {
            idle.push(s);
        }
    }
    // Let the server accept what it will.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        kafka_answers(&kafka),
        "Kafka stopped answering with 1,100 idle HTTP connections open"
    );
    // Connections past the bound were closed by the server, not left hanging.
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            // Nothing was sent, so any byte, end of stream or reset means the server closed.
            match (&mut &**s).read(&mut [0u8; 1]) {
                Ok(0 | 1..) => true,
                Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            }
        })
        .count();
    assert!(closed > 0, "no HTTP connection past the bound was closed");

    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (got, _) = wait_for_close(&mut s, Duration::from_secs(5));
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTP does not serve after the idle clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(kafka_answers(&kafka));
    server.stop();
}

fn websocket_handshake(addr: &str, key: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let key_line = key
        .map(|k| format!("Sec-WebSocket-Key: {k}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: herald\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{key_line}\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A WebSocket upgrade whose `Sec-WebSocket-Key` is not the base64 of 16 bytes is refused.
#[test]
fn websocket_upgrade_with_an_invalid_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let addr = host_port(&server);
    let ok = websocket_handshake(&addr, Some("dGhlIHNhbXBsZSBub25jZQ=="));
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    for bad in ["abc", "not base64 at all!!", "dGhlIHNhbXBsZQ==", ""] {
        let r = websocket_handshake(&addr, Some(bad));
        assert!(r.starts_with("HTTP/1.1 400"), "key {bad:?}: {r}");
    }
    server.stop();
}

/// SIGTERM while a publish is half received: the listener stops accepting, the request in
/// flight is read to its end, answered and durable, and then the process exits. A kept-alive
/// idle connection is closed at once instead of holding the drain.
#[test]
fn sigterm_answers_an_http_publish_in_flight_and_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with_config(dir.path(), "", &[]);
    let addr = host_port(&server);
    let body =
        r#"{"event_type":"order_created","tenant_id":"t-drain","service":"shop","data":{"n":1}}"#;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut idle = TcpStream::connect(&addr).unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    s.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(rest.as_bytes()).unwrap();
    let (answer, closed) = wait_for_close(&mut s, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the publish in flight is answered: {answer:?}"
    );
    assert!(
        closed.is_some(),
        "the connection is closed after its answer"
    );
    let (_, idle_closed) = wait_for_close(&mut idle, Duration::from_secs(10));
    assert!(
        idle_closed.is_some(),
        "an idle connection does not hold the drain"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "herald did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);

    let server = Server::start(
        &dir.path().join("data"),
        &[],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events = rt.block_on(common::read_all(
        &server,
        "smarteros.t-drain.shop.order_created",
        0,
    ));
    assert_eq!(events.len(), 1, "{events:?}");
}
