//! One client connection: read a size-prefixed request, answer it, repeat — in order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::handlers;
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
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Connection {
    pub fn new(
        ctx: Arc<KafkaContext>,
        advertised: Arc<Advertised>,
        peer: SocketAddr,
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
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(self.ctx.cfg.idle_timeout, self.read_frame(&mut rd)) => f,
                _ = shutdown.changed() => return,
            };
            let frame = match frame {
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "kafka connection idle; closing");
                    return;
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %self.peer, error = %e, "closing kafka connection");
                    return;
                }
            };
            match handlers::handle(&self, frame).await {
                Ok(Some(resp)) => {
                    // Flushing matters over TLS: write_all hands the bytes to the TLS
                    // session, which may still hold encrypted records the socket refused.
                    if let Err(e) = async {
                        wr.write_all(&resp).await?;
                        wr.flush().await
                    }
                    .await
                    {
                        tracing::debug!(peer = %self.peer, error = %e, "kafka write failed");
                        return;
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
                    tracing::warn!(peer = %self.peer, error = %e, "closing kafka connection");
                    metrics::counter!("kafka_requests_rejected_total").increment(1);
                    return;
                }
            }
        }
    }

    /// Reads one size-prefixed request. The size is checked against the limit for its API
    /// before the body is allocated.
    async fn read_frame<R: AsyncRead + Unpin>(
        &self,
        rd: &mut BufReader<R>,
    ) -> Result<Option<Bytes>, Fatal> {
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
        let limit = if api_key == ApiKey::Produce as i16 {
            self.ctx.cfg.max_request_bytes
        } else {
            self.ctx.cfg.max_small_request_bytes
        };
        if len > limit {
            return Err(Fatal::TooLarge(len, limit));
        }
        let mut buf = BytesMut::zeroed(len);
        if let Some(head) = buf.get_mut(..2) {
            head.copy_from_slice(&api_key.to_be_bytes());
        }
        if let Some(rest) = buf.get_mut(2..) {
            rd.read_exact(rest).await?;
        }
        Ok(Some(buf.freeze()))
    }
}
