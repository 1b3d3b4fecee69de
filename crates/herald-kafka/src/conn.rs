//! One client connection: read a size-prefixed request, answer it, repeat — in order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::handlers;
use crate::limits::Reservation;
use crate::sasl::SaslState;
use crate::{Advertised, KafkaContext};

pub struct Connection {
    pub ctx: Arc<KafkaContext>,
    pub advertised: Arc<Advertised>,
    pub peer: SocketAddr,
    pub sasl: parking_lot::Mutex<SaslState>,
    /// Set by a handler whose client exceeded a byte-rate quota: the connection is muted for
    /// this long after the response is sent (KIP-219).
    pub throttle: parking_lot::Mutex<std::time::Duration>,
    /// Who is asking, computed once per authentication state (see `authz::subject`).
    pub subject: parking_lot::Mutex<Option<Arc<herald_auth::authz::Subject>>>,
    /// The principal named by the client's TLS certificate (mTLS), if it presented one.
    pub tls_user: Option<String>,
    /// Turns true when the listener shuts down: long-polls answer with what they have.
    pub shutdown: watch::Receiver<bool>,
}

/// Why a connection is closed instead of answered, as Kafka brokers do for requests they
/// cannot parse or do not support.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("request of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("request not received within {0:?} of its first byte")]
    ReadTimeout(std::time::Duration),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Fatal {
    /// The `reason` label of `kafka_requests_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Fatal::TooLarge(..) => "too_large",
            Fatal::Malformed(_) => "malformed",
            Fatal::UnknownApi(_) => "unknown_api",
            Fatal::UnsupportedVersion(..) => "unsupported_version",
            Fatal::ReadTimeout(_) => "read_timeout",
            Fatal::Io(_) => "io",
        }
    }
}

/// Bytes buffered from the socket per connection.
const READ_BUFFER: usize = 16 * 1024;

impl Connection {
    pub fn new(
        ctx: Arc<KafkaContext>,
        advertised: Arc<Advertised>,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Connection {
        let sasl = parking_lot::Mutex::new(SaslState::for_protocol(advertised.protocol));
        Connection {
            ctx,
            advertised,
            peer,
            sasl,
            throttle: parking_lot::Mutex::new(std::time::Duration::ZERO),
            subject: parking_lot::Mutex::new(None),
            tls_user: None,
            shutdown,
        }
    }

    /// Serves a plaintext connection (its halves split without a lock).
    pub async fn run(self, stream: TcpStream, shutdown: watch::Receiver<bool>) {
        let (rd, wr) = stream.into_split();
        self.serve(rd, wr, shutdown).await;
    }

    /// Serves a connection over any transport (TLS).
    pub async fn run_io<S>(self, stream: S, shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (rd, wr) = tokio::io::split(stream);
        self.serve(rd, wr, shutdown).await;
    }

    async fn serve<R, W>(self, rd: R, mut wr: W, mut shutdown: watch::Receiver<bool>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
        loop {
            // Shutdown interrupts only the wait for a request's first byte: a request already
            // arriving is read, answered and only then is the connection closed.
            let started = tokio::select! {
                r = tokio::time::timeout(self.ctx.cfg.idle_timeout, rd.fill_buf()) => r,
                _ = shutdown.changed() => return,
            };
            match started {
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "kafka connection idle; closing");
                    return;
                }
                Ok(Ok([])) => return,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "kafka read failed");
                    return;
                }
            }
            let frame = match tokio::time::timeout(
                self.ctx.cfg.request_read_timeout,
                self.read_frame(&mut rd),
            )
            .await
            {
                Err(_) => {
                    self.reject(&Fatal::ReadTimeout(self.ctx.cfg.request_read_timeout));
                    return;
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    self.reject(&e);
                    return;
                }
            };
            let (frame, reservation) = frame;
            let handled = handlers::handle(&self, frame).await;
            // The request and everything decoded from it are gone: a client slow to read its
            // response does not keep request memory from others.
            drop(reservation);
            match handled {
                Ok(Some(resp)) => {
                    // Flushing matters over TLS: write_all hands the bytes to the TLS
                    // session, which may still hold encrypted records the socket refused.
                    let written = tokio::time::timeout(self.ctx.cfg.idle_timeout, async {
                        wr.write_all(&resp).await?;
                        wr.flush().await
                    })
                    .await;
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %self.peer, error = %e, "kafka write failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %self.peer, "kafka client did not read its response; closing");
                            return;
                        }
                    }
                    if matches!(*self.sasl.lock(), SaslState::Failed) {
                        // Kafka closes the connection after a failed authentication.
                        return;
                    }
                    // Over a quota: the connection is muted for the throttle time (KIP-219).
                    let throttle = std::mem::take(&mut *self.throttle.lock());
                    if !throttle.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(throttle) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.reject(&e);
                    return;
                }
            }
        }
    }

    /// Counts a request that closes the connection, and says why in a warning unless hostile
    /// clients have already made the listener write too many of them.
    fn reject(&self, e: &Fatal) {
        if let Fatal::Io(err) = e {
            // A peer that went away mid-request is not a malformed request.
            tracing::debug!(peer = %self.peer, error = %err, "kafka read failed");
            return;
        }
        metrics::counter!("kafka_requests_rejected_total", "reason" => e.reason()).increment(1);
        if let Some(suppressed) = self.ctx.warnings.admit(std::time::Instant::now()) {
            if suppressed > 0 {
                tracing::warn!(peer = %self.peer, error = %e, suppressed, "closing kafka connection (further warnings like this were suppressed; kafka_requests_rejected_total counts them all)");
            } else {
                tracing::warn!(peer = %self.peer, error = %e, "closing kafka connection");
            }
        }
    }

    /// Reads one size-prefixed request. The size is checked against the limit for its API and
    /// for the connection's authentication state, then reserved from the listener-wide request
    /// memory, before the body is allocated.
    async fn read_frame<R: AsyncRead + Unpin>(
        &self,
        rd: &mut BufReader<R>,
    ) -> Result<Option<(Bytes, Reservation)>, Fatal> {
        let len = match rd.read_i32().await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = usize::try_from(len)
            .map_err(|_| Fatal::Malformed(format!("negative request size {len}")))?;
        if len < 8 {
            return Err(Fatal::Malformed(format!(
                "request of {len} bytes is shorter than a header"
            )));
        }
        let api_key = rd.read_i16().await?;
        let mut limit = if api_key == ApiKey::Produce as i16 {
            self.ctx.cfg.max_request_bytes
        } else {
            self.ctx.cfg.max_small_request_bytes
        };
        if self.sasl.lock().is_pending() {
            // Kafka's `sasl.server.max.receive.size`: an unauthenticated client only has the
            // SASL exchange to send.
            limit = limit.min(self.ctx.cfg.max_unauthenticated_request_bytes);
        }
        if len > limit {
            return Err(Fatal::TooLarge(len, limit));
        }
        let reservation = self.ctx.request_memory.reserve(len).await;
        let mut buf = BytesMut::zeroed(len);
        if let Some(head) = buf.get_mut(..2) {
            head.copy_from_slice(&api_key.to_be_bytes());
        }
        if let Some(rest) = buf.get_mut(2..) {
            rd.read_exact(rest).await?;
        }
        Ok(Some((buf.freeze(), reservation)))
    }
}
