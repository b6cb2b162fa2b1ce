//! Serving a listener: HTTP/1.1 and h2c (HTTP/2 without TLS, by prior knowledge) through
//! hyper, with the limits that keep slow or greedy clients from holding the gateway
//! (slowloris): a header-read timeout, an idle timeout that counts requests (not bytes, so
//! HTTP/2 PINGs keep nothing open), a bounded header buffer, a cap on open connections and
//! a smaller one per client address.
//!
//! Over the cap, new connections wait in the kernel's accept queue until one closes; each
//! listener has a cap of its own, so a full public listener leaves `/healthz` answering.
//! Over its share, a client's new connection is closed as soon as it is accepted: it never
//! waits for, or keeps, a slot that another address could use.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hapnd_auth::TrustedProxies;
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
    /// Seconds a connection (HTTP/1.1 or h2c) may stay open while the gateway works on none
    /// of its requests, counted from its start or a request's last progress; frames that
    /// carry no request (HTTP/2 PING, SETTINGS) do not count, nor does an answer waiting for
    /// the client to take it. Closed gracefully (h2c: GOAWAY), within as long again. Also
    /// bounds a request body that stops arriving.
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
    /// The most connections one client address (IPv6: its /64) may hold open on the
    /// public listener; past it a new connection is closed at once. Default: 64, or a
    /// quarter of --max-connections when that is less. A WebSocket tunnel counts (here and
    /// against --max-connections) as long as it lives. Behind a proxy every client is the
    /// proxy's address: raise it (up to --max-connections).
    #[arg(long = "max-connections-per-client", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub(crate) max_connections_per_client: Option<u64>,
}

impl Limits {
    fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The connections one client address may hold: as given, or the default share.
    fn per_client(&self) -> u64 {
        self.max_connections_per_client
            .unwrap_or_else(|| DEFAULT_PER_CLIENT.min(self.max_connections / 4).max(1))
    }

    /// The same timeouts and buffer with a cap of `max` connections and the default share
    /// of it per client (the admin listener's: a larger share given for a proxy in front of
    /// the public listener must not let one address fill the admin one).
    pub(crate) fn with_max_connections(mut self, max: u64) -> Self {
        self.max_connections = max;
        self.max_connections_per_client = None;
        self
    }
}

/// The most connections one client address holds by default. Enough for a NAT of many
/// users or a client's connection pool; a quarter of the default cap of 512, so that one
/// address never takes more than that, and 8 of them not all of it.
const DEFAULT_PER_CLIENT: u64 = 64;

/// Serves `app` on `listener` until `shutdown` resolves, then lets every connection finish
/// its requests in flight (bounded by the header-read timeout) and returns.
///
/// Connections from `proxies` (the trusted reverse proxies in front of the listener) are
/// not held to a client's share: each carries many clients, and the proxy holds them to
/// shares of its own. They still count against the listener's cap.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    proxies: TrustedProxies,
    shutdown: impl Future<Output = ()>,
) {
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max as usize));
    let builder = builder(&limits);
    let clients = Clients::new(limits.per_client(), proxies);
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
        // The permit goes back with the stream: over its share, a client holds no slot.
        let Some(share) = clients.admit(peer.ip()) else {
            tracing::debug!(%peer, "closing a connection over its client's share");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            builder.clone(),
            stream,
            peer,
            app.clone(),
            limits,
            closing.clone(),
            Slots {
                _share: share,
                _permit: permit,
            },
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
    slots: Slots,
) {
    // An upgraded connection (a WebSocket tunnel) outlives this function: it holds the
    // slots too, through the `Held` its handshake request carries.
    let held = Held {
        _slots: Arc::new(slots),
        closing: closing.clone(),
    };
    let (header_timeout, idle_timeout) = (limits.header_read_timeout(), limits.idle_timeout());
    let start = Instant::now();
    let read_any = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(Tracked {
        inner: stream,
        read_any: read_any.clone(),
    });
    let requests = Arc::new(Requests::new(start));
    let counted = requests.clone();
    // What `axum::serve(...).into_make_service_with_connect_info()` would insert.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        // Only a request that may be upgraded needs it (and its cost).
        if request.headers().contains_key(hyper::header::UPGRADE) {
            request.extensions_mut().insert(held.clone());
        }
        let request = request.map(|body| axum::body::Body::new(Stalling::new(body, idle_timeout)));
        let requests = counted.clone();
        let busy = Busy::start(requests.clone());
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await?;
            drop(busy);
            Ok::<_, std::convert::Infallible>(response.map(|body| Counted {
                body,
                requests,
                busy: None,
            }))
        }
    });
    // With upgrades: `serve --upstream` passes WebSocket handshakes through.
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut give_up: Option<Instant> = None;
    // Until the first byte, the header-read timeout applies too (hyper's own starts only
    // once the protocol is known); then only the gateway's work on requests keeps a
    // connection open.
    let deadline = || {
        let idle = requests.idle_since().unwrap_or_else(Instant::now) + idle_timeout;
        if read_any.load(Ordering::Relaxed) {
            idle
        } else {
            idle.min(start + header_timeout)
        }
    };
    let expired = |now: Instant| {
        let silent = !read_any.load(Ordering::Relaxed) && now >= start + header_timeout;
        let idle = requests
            .idle_since()
            .is_some_and(|since| now >= since + idle_timeout);
        silent || idle
    };
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline()), if give_up.is_none() => {
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

/// A stream that notes whether it has read a byte, for the header-read timeout before the
/// protocol is known.
struct Tracked {
    inner: TcpStream,
    read_any: Arc<AtomicBool>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && !self.read_any.load(Ordering::Relaxed) {
            self.read_any.store(true, Ordering::Relaxed);
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// A connection's requests, for the idle timeout: how many the gateway is working on, and
/// when one last made progress. The gateway works on a request from the call of the
/// service until the answer's head is ready, and again whenever hyper asks for the next
/// part of its body and the body is not ready. An answer that waits for the client to take
/// it (an HTTP/2 flow-control window kept shut, an HTTP/1.1 client that does not read) is
/// not the gateway's work: it keeps a connection open no longer than the idle timeout.
struct Requests {
    start: Instant,
    busy: AtomicUsize,
    /// Milliseconds from `start` to the last progress of a request: its start, its
    /// answer's head, a frame of its body, its end.
    last: AtomicU64,
}

impl Requests {
    fn new(start: Instant) -> Self {
        Requests {
            start,
            busy: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Since when the gateway has worked on no request; None while it works on one.
    fn idle_since(&self) -> Option<Instant> {
        (self.busy.load(Ordering::Relaxed) == 0)
            .then(|| self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// The gateway working on a request, until dropped.
struct Busy(Arc<Requests>);

impl Busy {
    fn start(requests: Arc<Requests>) -> Self {
        requests.busy.fetch_add(1, Ordering::Relaxed);
        requests.stamp();
        Busy(requests)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Stamped first: the connection is never seen idle since before this work.
        self.0.stamp();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that marks its request busy while hyper waits for a frame the body
/// has not produced yet (a streamed answer is not cut for idleness), and notes each frame
/// and its end as progress.
struct Counted {
    body: axum::body::Body,
    requests: Arc<Requests>,
    busy: Option<Busy>,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        if poll.is_pending() {
            if self.busy.is_none() {
                self.busy = Some(Busy::start(self.requests.clone()));
            }
        } else {
            // Dropping a busy mark stamps; stamp anyway when there was none.
            if self.busy.take().is_none() {
                self.requests.stamp();
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.requests.stamp();
    }
}

/// A request body that fails once the client has kept the handler waiting for its next
/// frame for the idle timeout: a request the gateway works on keeps its connection open,
/// so one whose body stops arriving must not do so for ever. `serve --upstream` wraps the
/// backend's response bodies alike: a backend that stops mid-body gets the client
/// connection closed after the idle timeout (the answer is cut, as the backend left it).
pub(crate) struct Stalling<B> {
    inner: B,
    idle_timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Stalling<B> {
    pub(crate) fn new(inner: B, idle_timeout: Duration) -> Self {
        Stalling {
            inner,
            idle_timeout,
            waiting: None,
        }
    }
}

impl<B> hyper::body::Body for Stalling<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            self.waiting = None;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let idle_timeout = self.idle_timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle_timeout)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("the body stopped arriving".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections per client address, each held to a share of the listener's.
struct Clients {
    per_client: u64,
    open: Arc<Mutex<HashMap<IpAddr, u64>>>,
    /// Trusted proxies: not held to a share.
    proxies: TrustedProxies,
}

impl Clients {
    fn new(per_client: u64, proxies: TrustedProxies) -> Self {
        Clients {
            per_client,
            open: Arc::default(),
            proxies,
        }
    }

    /// A slot in the share of `ip`'s client, or None when it holds its whole share.
    /// A trusted proxy's connection takes no share (`Share::Proxy`).
    fn admit(&self, ip: IpAddr) -> Option<Share> {
        if self.proxies.contains(ip) {
            return Some(Share {
                open: None,
                client: ip,
            });
        }
        let client = client_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(Share {
            open: Some(self.open.clone()),
            client,
        })
    }
}

/// A connection's slots (its place under --max-connections and in its client's share) and
/// the listener's shutdown signal, for whatever the connection becomes: `serve --upstream`
/// moves it into a WebSocket tunnel, which then counts against both limits as long as it
/// lives, and ends on shutdown.
#[derive(Clone)]
pub(crate) struct Held {
    _slots: Arc<Slots>,
    closing: watch::Receiver<bool>,
}

impl Held {
    /// Resolves once the listener shuts down.
    pub(crate) async fn closing(&mut self) {
        let _ = self.closing.wait_for(|&closing| closing).await;
    }
}

/// What an open connection holds. Fields drop in order: the share goes back before the
/// permit wakes the accept loop, so the next connection of the same client finds it.
struct Slots {
    _share: Share,
    _permit: OwnedSemaphorePermit,
}

/// One connection of a client's share, given back on drop.
struct Share {
    /// None for a trusted proxy's connection, which counts against no share.
    open: Option<Arc<Mutex<HashMap<IpAddr, u64>>>>,
    client: IpAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        let Some(open) = &self.open else { return };
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Only clients with open connections take memory.
                open.remove(&self.client);
            }
        }
    }
}

/// The client an address belongs to, for the per-client cap: the throttle's own rule
/// (an IPv4 address, also when written IPv4-mapped; an IPv6 address's /64).
fn client_of(ip: IpAddr) -> IpAddr {
    hapnd_auth::ClientIdentity::client_of(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(text: &str) -> IpAddr {
        client_of(text.parse().unwrap())
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        assert_eq!(client("2001:db8:1:2:3:4:5:6"), client("2001:db8:1:2::"));
        assert_eq!(
            client("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            client("2001:db8:1:2::1")
        );
        assert_eq!(client("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::");
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db9:1:2::1"));
    }

    #[test]
    fn an_ipv4_client_is_its_address_however_written() {
        assert_eq!(client("192.0.2.7").to_string(), "192.0.2.7");
        assert_ne!(client("192.0.2.7"), client("192.0.2.8"));
        assert_eq!(client("::ffff:192.0.2.7"), client("192.0.2.7"));
        assert_ne!(client("::ffff:192.0.2.7"), client("::ffff:192.0.2.8"));
    }

    #[test]
    fn a_client_holds_its_share_and_gets_it_back() {
        let clients = Clients::new(2, TrustedProxies::none());
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let a2: IpAddr = "2001:db8::2".parse().unwrap();
        let b: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let first = clients.admit(a).unwrap();
        let _second = clients.admit(a2).unwrap();
        assert!(clients.admit(a).is_none(), "the /64 holds its share");
        assert!(
            clients.admit(b).is_some(),
            "another /64 has a share of its own"
        );
        drop(first);
        assert!(
            clients.admit(a2).is_some(),
            "a closed connection gives its slot back"
        );
        drop(clients.admit(b));
        assert_eq!(clients.open.lock().unwrap().len(), 1, "{:?}", clients.open);
    }

    #[test]
    fn a_trusted_proxy_is_held_to_no_share() {
        let clients = Clients::new(1, "10.0.0.0/8".parse().unwrap());
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let held: Vec<_> = (0..5).map(|_| clients.admit(proxy).unwrap()).collect();
        assert!(clients.open.lock().unwrap().is_empty());
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let _one = clients.admit(other).unwrap();
        assert!(clients.admit(other).is_none(), "others keep their share");
        drop(held);
    }

    /// A body that is ready once `tx` sends.
    struct Later(tokio::sync::oneshot::Receiver<bytes::Bytes>);

    impl hyper::body::Body for Later {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            Pin::new(&mut self.0)
                .poll(cx)
                .map(|sent| sent.ok().map(|data| Ok(hyper::body::Frame::data(data))))
        }
    }

    #[test]
    fn a_body_being_produced_is_work_and_one_waiting_for_the_client_is_not() {
        use hyper::body::Body as _;
        let requests = Arc::new(Requests::new(Instant::now()));
        let busy = Busy::start(requests.clone());
        assert_eq!(
            requests.idle_since(),
            None,
            "the answer's head is being made"
        );
        drop(busy);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut body = Counted {
            body: axum::body::Body::new(Later(rx)),
            requests: requests.clone(),
            busy: None,
        };
        // Not polled yet: hyper waits for the client to take the head (or open a window).
        assert!(requests.idle_since().is_some());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(requests.idle_since(), None, "the body is being produced");
        tx.send(bytes::Bytes::from_static(b"streamed")).unwrap();
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        let since = requests.idle_since().expect("the frame is with hyper");
        drop(body);
        assert!(requests.idle_since().unwrap() >= since);
    }

    #[test]
    fn the_default_share_is_64_or_a_quarter() {
        let limits = |max, per| Limits {
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_header_bytes: 16384,
            max_connections: max,
            max_connections_per_client: per,
        };
        assert_eq!(limits(512, None).per_client(), 64);
        assert_eq!(limits(16, None).per_client(), 4);
        assert_eq!(limits(2, None).per_client(), 1);
        assert_eq!(limits(16, Some(16)).per_client(), 16);
        assert_eq!(
            limits(512, Some(512)).with_max_connections(32).per_client(),
            8
        );
    }
}
