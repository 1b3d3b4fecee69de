//! The HTTP/1.1 listener: accepts connections up to a bound, serves each with hyper under a
//! header-read timeout and an idle timeout, answers oversized bodies with 413 before reading
//! them, and lingers briefly before closing so that clients still sending can read the answer.
//!
//! `axum::serve` sets none of these: without a timer hyper never times out a request head, so a
//! client trickling one byte at a time (or sending nothing at all) held its connection, and its
//! descriptor, forever — enough of them starved every listener of the process.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::error::ApiError;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// From the moment the server waits for a request (a new connection, or the previous
    /// response sent on a kept-alive one) until that request's headers are complete.
    pub header_read_timeout: Duration,
    /// No byte read or written for this long closes the connection: a body that stops arriving,
    /// a client that stops reading its response. Must exceed the longest long-poll wait and the
    /// SSE ping interval. Upgraded WebSocket connections keep their own pings instead.
    pub idle_timeout: Duration,
    /// Open HTTP connections, WebSockets included; past it new connections are closed at once.
    pub max_connections: usize,
    /// Largest request body on any route; a larger `Content-Length` is answered 413 unread.
    pub max_body_bytes: usize,
    /// After the last response of a connection, how long unread request bytes are still read
    /// and discarded before the socket is closed. Closing with unread bytes makes the kernel
    /// send a reset, which destroys the response the client has not read yet.
    pub linger: Duration,
    /// Timeout of a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// At shutdown, how long requests in flight may still run (a long poll, a body still
    /// arriving) before the listener returns anyway and the process goes on to close the log.
    pub drain_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 100_000,
            max_body_bytes: 4 * 1024 * 1024,
            linger: Duration::from_secs(2),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish;
/// over TLS (HTTPS and WSS) when `tls` is given. Handlers can read the client's address
/// (`ConnectInfo<SocketAddr>`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    // Every connection task holds a clone; `recv` returns `None` once all of them have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE leave the connection in the backlog; back off instead of
                    // spinning on it.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tracing::debug!(%peer, limit = cfg.max_connections, "HTTP connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            router: router.clone(),
            peer,
            cfg,
            stop: stop_rx.clone(),
            _alive: alive_tx.clone(),
        };
        match tls.clone() {
            None => {
                tokio::spawn(conn.run(Io::new(stream, permit, cfg.linger)));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(cfg.tls_handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => conn.run(Io::new(tls, permit, cfg.linger)).await,
                        Ok(Err(e)) => {
                            metrics::counter!("tls_handshake_failures_total", "interface" => "http")
                                .increment(1);
                            tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("tls_handshake_failures_total", "interface" => "http")
                                .increment(1);
                            tracing::debug!(%peer, "HTTPS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(cfg.drain_timeout, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_secs = cfg.drain_timeout.as_secs(),
            "HTTP requests still running at the end of the drain; closing anyway"
        );
    }
    Ok(())
}

struct Connection {
    router: Router,
    peer: SocketAddr,
    cfg: ServeConfig,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Connection {
    async fn run<S>(mut self, io: Io<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let last_activity = Arc::clone(&io.activity.last);
        let started = io.activity.started;
        let peer = self.peer;
        let max_body = self.cfg.max_body_bytes;
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                if let Some(len) = content_length(&req)
                    && len > max_body as u64
                {
                    return Ok(payload_too_large(max_body));
                }
                router.oneshot(req.map(axum::body::Body::new)).await
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.cfg.header_read_timeout)
            .keep_alive(true);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let mut stopping = *self.stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            let idle_since = started + Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let idle_deadline = idle_since + self.cfg.idle_timeout;
            tokio::select! {
                r = conn.as_mut() => {
                    match r {
                        Ok(()) => {}
                        Err(e) if e.is_timeout() => {
                            metrics::counter!("http_connections_timed_out_total", "reason" => "header").increment(1);
                            tracing::debug!(peer = %self.peer, "HTTP request head not complete in time; closed");
                        }
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "HTTP connection ended");
                        }
                    }
                    return;
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    let last = started + Duration::from_millis(last_activity.load(Ordering::Relaxed));
                    if last + self.cfg.idle_timeout <= Instant::now() {
                        metrics::counter!("http_connections_timed_out_total", "reason" => "idle").increment(1);
                        tracing::debug!(peer = %self.peer, "HTTP connection idle; closing");
                        return;
                    }
                }
                r = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if r.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

fn content_length<B>(req: &hyper::Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn payload_too_large(limit: usize) -> axum::response::Response {
    let mut r = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
    .into_response();
    // The body is never read, so the connection cannot carry another request.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// When the connection last moved a byte, in milliseconds since it was accepted.
struct Activity {
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

const DRAIN_READS_PER_POLL: usize = 64;

enum Closing {
    Open,
    /// Our side is shut down; reading and discarding what the client still sends.
    Draining(Pin<Box<tokio::time::Sleep>>),
    Closed,
}

/// A connection's stream: holds its slot under the connection bound for as long as the socket
/// is open (an upgraded WebSocket included), records activity for the idle timeout, and on
/// shutdown lingers, reading and discarding, until the client closes or `linger` passes.
struct Io<S> {
    inner: S,
    activity: Activity,
    linger: Duration,
    closing: Closing,
    _permit: OwnedSemaphorePermit,
}

impl<S> Io<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, linger: Duration) -> Io<S> {
        Io {
            inner,
            activity: Activity {
                started: Instant::now(),
                last: Arc::new(AtomicU64::new(0)),
            },
            linger,
            closing: Closing::Open,
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Io<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Io<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.closing {
                Closing::Open => {
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    let deadline = Box::pin(tokio::time::sleep(self.linger));
                    self.closing = Closing::Draining(deadline);
                }
                Closing::Draining(deadline) => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.closing = Closing::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 16 * 1024];
                    // A client sending fast would otherwise keep this task from yielding.
                    for _ in 0..DRAIN_READS_PER_POLL {
                        let mut buf = ReadBuf::new(&mut scratch);
                        match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                            // More bytes: keep discarding until the client closes or time is up.
                            Ok(()) if !buf.filled().is_empty() => {}
                            Ok(()) | Err(_) => {
                                self.closing = Closing::Closed;
                                return Poll::Ready(Ok(()));
                            }
                        }
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
