//! Serving a listener: HTTP/1.1 and h2c (HTTP/2 without TLS, by prior knowledge) through
//! hyper, with the limits that keep slow or greedy clients from holding the gateway
//! (slowloris): a header-read timeout, an idle timeout, a bounded header buffer and a cap
//! on open connections.
//!
//! Over the cap, new connections wait in the kernel's accept queue until one closes; each
//! listener has a cap of its own, so a full public listener leaves `/healthz` answering.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The connection limits of a listener; each is a `serve` flag.
#[derive(clap::Args, Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Seconds a client has to send a request's headers, counted from the connection's
    /// start or the end of its previous response. Also bounds an idle HTTP/1.1 keep-alive.
    #[arg(long = "header-read-timeout-secs", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) header_read_timeout_secs: u64,
    /// Seconds a connection (HTTP/1.1 or h2c) may go without a byte read or written before
    /// it is closed (gracefully: within as long again, a request in progress first).
    #[arg(long = "idle-timeout-secs", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) idle_timeout_secs: u64,
    /// The most bytes of request line and headers a request may send (HTTP/1.1 gets 431
    /// beyond it; h2c, a stream reset). At least 8192.
    #[arg(long = "max-header-bytes", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(8192..=1024 * 1024))]
    pub(crate) max_header_bytes: u64,
    /// The most connections open at once on the public listener; more wait to be accepted.
    /// Keep it under the process's file-descriptor limit (`ulimit -n`).
    #[arg(long = "max-connections", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub(crate) max_connections: u64,
}

impl Limits {
    fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The same timeouts and buffer with a cap of `max` connections (the admin listener's).
    pub(crate) fn with_max_connections(mut self, max: u64) -> Self {
        self.max_connections = max;
        self
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets every connection finish
/// its requests in flight (bounded by the header-read timeout) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max as usize));
    let builder = builder(&limits);
    let (close, closing) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            builder.clone(),
            stream,
            peer,
            app.clone(),
            limits,
            closing.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = close.send(true);
    // Every connection holds a permit until it is gone.
    let _ = permits.acquire_many(max).await;
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let max_header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    builder
}

async fn connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: stream,
        start,
        last: activity.clone(),
    });
    // What `axum::serve(...).into_make_service_with_connect_info()` would insert.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    // With upgrades: `serve --upstream` passes WebSocket handshakes through.
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut give_up: Option<Instant> = None;
    let (header_timeout, idle_timeout) = (limits.header_read_timeout(), limits.idle_timeout());
    // Until the first byte, the header-read timeout applies (hyper's own starts only once
    // the protocol is known); after it, the idle timeout.
    let expired = |now: Instant| match activity.load(Ordering::Relaxed) {
        0 => now >= start + header_timeout,
        ms => now >= start + Duration::from_millis(ms) + idle_timeout,
    };
    loop {
        let deadline = match activity.load(Ordering::Relaxed) {
            0 if Instant::now() < start + header_timeout.min(idle_timeout) => {
                start + header_timeout.min(idle_timeout)
            }
            0 => start + header_timeout,
            ms => start + Duration::from_millis(ms) + idle_timeout,
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline), if give_up.is_none() => {
                if expired(Instant::now()) {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    // h2 waits for the peer to acknowledge a ping first: a silent one never does.
                    give_up = Some(Instant::now() + idle_timeout.min(header_timeout));
                }
            }
            _ = closing.wait_for(|&closing| closing), if give_up.is_none() => {
                conn.as_mut().graceful_shutdown();
                give_up = Some(Instant::now() + header_timeout);
            }
            () = sleep_until_some(give_up) => return,
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A stream that notes when it last moved a byte, for the idle timeout.
struct Tracked {
    inner: TcpStream,
    start: Instant,
    /// Milliseconds from `start` to the last byte read or written (0: none yet).
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms.max(1), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
