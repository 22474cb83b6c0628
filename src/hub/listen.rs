//! The hub's connection handling: accept, cap, TLS, HTTP/1.1, timeouts.
//!
//! - At most `max_connections` connections are served at once; one more is closed at once (counted
//!   in `cloudoptim_hub_limited_total{limit="connections"}`), so a flood of sockets cannot exhaust
//!   file descriptors or memory.
//! - The TLS handshake and then each request's headers must arrive within `header_read_timeout`
//!   (hyper's header read timeout also runs while a keep-alive connection waits for its next request).
//! - A connection on which no byte moved either way for `idle_timeout` is closed: a body that stalls,
//!   a watch client that stopped reading (watches send a keep-alive every 15 s, so a live one never
//!   idles that long).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// How connections are served.
#[derive(Clone)]
pub struct Serving {
    /// TLS, or plain HTTP with `--insecure-plain-http`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time for the TLS handshake and for each request's headers.
    pub header_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Accept and serve connections on `listener` until `shutdown` resolves. Open connections are not
/// waited for.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    serving: Serving,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(serving.max_connections));
    let acceptor = serving.tls.clone().map(TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off a little instead of spinning.
                tracing::warn!(error = %e, "accepting a hub connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics
                .hub_limited
                .with_label_values(&["connections"])
                .inc();
            drop(tcp);
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            serving: serving.clone(),
            acceptor: acceptor.clone(),
            metrics: metrics.clone(),
            _permit: permit,
        };
        tokio::spawn(connection.run(tcp));
    }
}

struct Connection {
    router: Router,
    serving: Serving,
    acceptor: Option<TlsAcceptor>,
    metrics: Metrics,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, tcp: TcpStream) {
        self.metrics.hub_connections.inc();
        let _ = tcp.set_nodelay(true);
        let activity = Activity::default();
        let io = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        match self.acceptor.clone() {
            Some(acceptor) => {
                let handshake = acceptor.accept(io);
                match tokio::time::timeout(self.serving.header_read_timeout, handshake).await {
                    Ok(Ok(tls)) => self.http(tls, activity).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "hub TLS handshake failed"),
                    Err(_) => tracing::debug!("hub TLS handshake timed out"),
                }
            }
            None => self.http(io, activity).await,
        }
        self.metrics.hub_connections.dec();
    }

    async fn http<I>(&self, io: I, activity: Activity)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.serving.header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::select! {
            served = connection => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "hub connection ended with an error");
                }
            }
            _ = activity.idle_for(self.serving.idle_timeout) => {
                tracing::debug!("closing an idle hub connection");
            }
        }
    }
}

/// When a byte last moved on a connection.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A socket that records its traffic in an [`Activity`].
struct Tracked<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
