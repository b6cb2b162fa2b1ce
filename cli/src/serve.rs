//! `hapnd-auth serve`: an authenticated HTTP API on an embedded or shared database.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::routing::get;
use axum::{Extension, Json, Router};
use hapnd_auth::{
    Authenticator, ClientIdentity, Environment, EnvironmentRouter, FailedAttemptLimit, NewKey,
    Principal, TrustedProxies,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::Database;
use crate::admin::{self, AdminState, AdminToken};
use crate::logging::{self, LogFormat, RejectionLog};
use crate::server;
use crate::store::{AnyStore, Create, explain};
use crate::upstream::{self, Proxy};
use crate::verify;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The address to listen on: `8081`, `localhost:8081`, `0.0.0.0:8081` (port 0 picks
    /// a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: SocketAddr,
    /// The admin listener's address (`/healthz`); keep it off the public network.
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse_listen)]
    admin_listen: SocketAddr,
    /// A file holding the admin token for the admin API and the API Keys page (or set
    /// HAPND_ADMIN_TOKEN); without one they are disabled.
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<std::path::PathBuf>,
    /// A host name the API Keys page is served on (repeatable), such as
    /// `admin.hapnd.localhost`: its cookie then stays with that name. The admin listener
    /// answers only its address, `localhost` on its port and these names (421 otherwise).
    #[arg(long, value_name = "NAME", value_parser = admin::parse_host_name)]
    admin_host: Vec<String>,
    /// Do not create a demo key on a first start (an empty database).
    #[arg(long)]
    no_demo_key: bool,
    #[command(flatten)]
    db: Database,
    /// How often to check a SQLite database for revocations by other processes, in ms.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=250))]
    poll_interval_ms: u64,
    /// How long a key stays cached, in seconds (revocation does not wait for it).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    cache_ttl_secs: u64,
    /// How long audit events are kept (90d, 7d, 12h); older ones are deleted every few
    /// minutes in bounded batches that never hold a revocation. `forever` keeps them all.
    #[arg(long, default_value = "90d", value_parser = crate::events::parse_retention)]
    audit_retention: Duration,
    /// The window of the `hapnd_keys_expiring_soon{window="7d"}` gauge on /metrics: how
    /// many unrevoked keys expire within this long from now (7d, 24h, ...).
    #[arg(long, default_value = "7d", value_parser = crate::expiring::parse_window)]
    expiring_window: crate::expiring::Window,
    /// How often that gauge is counted (one bounded query), in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    expiring_interval_secs: u64,
    /// GitHub's secret-scanning public keys (the JSON of its
    /// `/meta/public_keys/secret_scanning`): turns on `POST /auth/secret-scanning/github`,
    /// which revokes keys GitHub reports leaked. Read once at start; nothing is fetched.
    #[arg(long, value_name = "PATH")]
    secret_scanning_keys: Option<std::path::PathBuf>,
    #[command(flatten)]
    limits: server::Limits,
    #[command(flatten)]
    defence: Defence,
    #[command(flatten)]
    upstream: Box<upstream::Args>,
    /// Log filter: tracing `EnvFilter` directives, such as `info`, `warn` or
    /// `info,hapnd_auth=debug`. sqlx's per-statement logs stay off unless a directive
    /// names `sqlx` (e.g. `info,sqlx=debug`).
    #[arg(long = "log", env = "HAPND_LOG", default_value = "info")]
    log: String,
    /// Log format: `text` (coloured only when stderr is a terminal) or `json` (one object
    /// per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Defences against key guessing: per-client throttling and the store-lookup bound.
#[derive(clap::Args)]
struct Defence {
    /// Failed attempts (and store lookups) a client may make at once before it gets 429
    /// too_many_failed_attempts; 0 turns throttling off. Valid cached keys are never throttled.
    #[arg(long, default_value_t = 20)]
    throttle_burst: u32,
    /// One attempt comes back to a client every this many milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    throttle_period_ms: u64,
    /// The most clients the throttle tracks at once (memory bound, ~100 bytes each).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    throttle_max_clients: u64,
    /// Hold each 429 about this many milliseconds (80 to 120 %) before sending it: a
    /// guesser that waits for its answers slows to about one request a second per
    /// connection. 0 sends 429s at once. At most 3000, so that a held answer (up to 3.6 s)
    /// stays within the gateway's 4 s bound that proxy timeouts are set above.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3000))]
    throttle_tarpit_ms: u64,
    /// The most 429s held at once; past it they are sent at once. A held answer keeps its
    /// connection, so at most a quarter of --max-connections are held, whatever is asked.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    throttle_tarpit_capacity: u64,
    /// A reverse proxy in front of the gateway, by address or CIDR network (`127.0.0.1`,
    /// `10.0.0.0/8`; repeat the flag or separate by commas). --proxy-header counts only
    /// on connections from these; the client is the first address in it, from the right,
    /// that is not one of them. None (the default): the client is the peer address, and
    /// forwarding headers are ignored (a client can write anything there).
    #[arg(long = "trusted-proxy", value_name = "ADDR|CIDR")]
    trusted_proxies: Vec<TrustedProxies>,
    /// The header trusted proxies append the client address to.
    #[arg(long, value_enum, default_value_t = ProxyHeader::XForwardedFor)]
    proxy_header: ProxyHeader,
    /// The most store lookups at once; over it, a miss waits up to the lookup timeout (2 s),
    /// then gets 503 auth_unavailable.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_store_lookups: u64,
    /// Keys remembered as seen valid (a store lookup found them valid): from a throttled
    /// address they are still looked up, so they keep working after their cache entry
    /// expires; unknown keys from it still get 429. 0 turns this off (memory bound,
    /// ~370 bytes a key).
    #[arg(long, default_value_t = 100_000)]
    seen_valid_capacity: u64,
    /// How long a key stays seen valid after the last lookup that found it valid, in seconds.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    seen_valid_ttl_secs: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, ...`
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl Defence {
    fn apply(
        &self,
        builder: hapnd_auth::AuthenticatorBuilder,
        max_connections: u64,
    ) -> hapnd_auth::AuthenticatorBuilder {
        let builder = builder.max_concurrent_lookups(self.max_store_lookups as usize);
        if self.throttle_burst == 0 {
            return builder;
        }
        let limit = FailedAttemptLimit::new(
            self.throttle_burst,
            Duration::from_millis(self.throttle_period_ms),
        )
        .max_clients(self.throttle_max_clients)
        .tarpit(Duration::from_millis(self.throttle_tarpit_ms))
        // Held answers must never fill the listener: a quarter of its connections at most.
        .tarpit_capacity(self.throttle_tarpit_capacity.min(max_connections / 4) as usize);
        builder
            .throttle_failed_attempts(limit)
            .seen_valid_capacity(self.seen_valid_capacity)
            .seen_valid_ttl(Duration::from_secs(self.seen_valid_ttl_secs))
            .client_identity(self.client_identity())
    }

    /// Who a request comes from, for the throttle and the rejection log alike: the peer,
    /// or, on connections from a trusted proxy, the address the outermost one saw.
    fn client_identity(&self) -> ClientIdentity {
        let proxies = self.trusted_proxies();
        let identity = match (proxies.is_empty(), self.proxy_header) {
            (true, _) => ClientIdentity::peer(),
            (false, ProxyHeader::XForwardedFor) => ClientIdentity::x_forwarded_for_from(proxies),
            (false, ProxyHeader::Forwarded) => ClientIdentity::forwarded_from(proxies),
        };
        identity.peer_from(|ext| logging::peer(ext).map(|a| a.ip()))
    }
}

impl Defence {
    /// Every `--trusted-proxy`, as one set.
    fn trusted_proxies(&self) -> TrustedProxies {
        self.trusted_proxies
            .iter()
            .fold(TrustedProxies::none(), |all, p| all.union(p))
    }
}

/// Connections the admin listener serves at once (health checks, operators).
const ADMIN_MAX_CONNECTIONS: u64 = 32;

pub(crate) async fn run(args: Args) -> Result<(), String> {
    logging::init(&args.log, args.log_format)?;
    // Before the authenticator: it registers its metrics with the recorder installed now.
    let exporter = crate::metrics::install()?;
    let admin_token = AdminToken::load(args.admin_token_file.as_deref())?;
    let proxy = args.upstream.proxy(
        args.defence.trusted_proxies(),
        Duration::from_secs(args.limits.idle_timeout_secs),
    )?;
    let scanning_keys = args
        .secret_scanning_keys
        .as_deref()
        .map(crate::secret_scanning::PublicKeys::load)
        .transpose()?;
    let (store, described) = AnyStore::open(&args.db.url, Create::IfMissing).await?;
    // Through the logger, not bare stderr: with --log-format json every line is JSON.
    tracing::info!("database: {described}");
    let auth = args
        .defence
        .apply(
            Authenticator::builder(store.clone()).ttl(Duration::from_secs(args.cache_ttl_secs)),
            args.limits.max_connections,
        )
        .build();
    let feed = store.watch(
        auth.invalidator(),
        Duration::from_millis(args.poll_interval_ms),
    );
    if !args.audit_retention.is_zero() {
        tokio::spawn(crate::events::prune_forever(
            store.clone(),
            args.audit_retention,
            Duration::from_secs(300),
        ));
    }
    tokio::spawn(crate::expiring::watch_forever(
        store.clone(),
        args.expiring_window.clone(),
        Duration::from_secs(args.expiring_interval_secs),
    ));
    let listener = bind(args.listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    if !args.no_demo_key {
        bootstrap(&auth, &store, addr).await?;
    }
    if admin_token.is_none() {
        tracing::warn!(
            "admin API and API Keys page disabled: no admin token (--admin-token-file or {})",
            admin::TOKEN_ENV
        );
    }
    println!("listening on http://{addr}");
    println!("admin listening on http://{admin_addr}");
    tracing::info!(%addr, %admin_addr, database = store.kind(), "hapnd-auth gateway started");

    // One signal stops both listeners; each finishes its requests in flight.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|&stop| stop).await;
    };
    let scanning =
        scanning_keys.map(|keys| crate::secret_scanning::router(keys, auth.clone(), store.clone()));
    let admin_hosts = admin::Hosts::new(admin_addr, args.admin_host);
    let admin_state = AdminState::new(auth.clone(), store, admin_token, admin_hosts, exporter);
    let public = server::serve(
        listener,
        app(
            auth.clone(),
            args.defence.client_identity(),
            proxy,
            scanning,
        ),
        args.limits,
        args.defence.trusted_proxies(),
        until_stopped(stopped.clone()),
    );
    // A cap of its own: a full public listener leaves /healthz answering.
    let admin = server::serve(
        admin_listener,
        admin::router(admin_state),
        args.limits.with_max_connections(ADMIN_MAX_CONNECTIONS),
        // Proxies in front of the public listener are no reason to let one address fill
        // the admin one.
        TrustedProxies::none(),
        until_stopped(stopped),
    );
    tokio::join!(public, admin);
    // On purpose, so without the WARN a dropped handle gives library users.
    feed.abort();
    if let Err(e) = auth.flush_usage().await {
        tracing::warn!(error = %e, "last-used times of the final batch were not saved");
    }
    tracing::info!("hapnd-auth gateway stopped");
    Ok(())
}

/// Connections the kernel completes and queues before `accept` takes them (clamped by
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128, std's value: a burst of more
/// new connections than that, on a gateway busy for a moment, would see SYNs dropped and
/// clients retrying a second later.
const BACKLOG: u32 = 1024;

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let error = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(error)?;
    // As TcpListener::bind does: a restarted gateway can bind while old connections linger.
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(BACKLOG).map_err(error)
}

/// `8081` (loopback), `localhost:8081` (resolved, IPv4 first), or an address.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("expected a port, host:port or ip:port ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// On the first start (an empty database: one `LIMIT 1` query), create a demo key and show
/// it once. A database that holds any key never gets one, so no secret reaches the logs of
/// a production gateway.
async fn bootstrap(auth: &Authenticator, store: &AnyStore, addr: SocketAddr) -> Result<(), String> {
    if !store.is_empty().await.map_err(|e| explain(&e))? {
        return Ok(());
    }
    let created = auth
        .create_key(NewKey::new("demo", Environment::Sandbox, "demo"))
        .await
        .map_err(|e| explain(&e))?;
    let key = created.key.expose_secret();
    println!(
        "First start: created a sandbox key for tenant \"demo\" (shown once, store it now):\n"
    );
    println!("    {key}\n");
    println!("Try it:\n    curl -H \"Authorization: Bearer {key}\" http://{addr}/v1/whoami\n");
    Ok(())
}

/// The public listener's routes: the authenticated API and forward auth, or, with an
/// upstream, forward auth, `/v1/whoami` and the proxy for every other path. Nothing here
/// answers without a key but --public-path; operational routes live on the admin listener.
fn app(
    auth: Authenticator,
    clients: ClientIdentity,
    proxy: Option<Proxy>,
    scanning: Option<Router>,
) -> Router {
    // The gateway's own routes come first: the upstream's catch-all never sees them.
    let own = scanning.unwrap_or_default();
    let routes = match proxy {
        Some(proxy) => Router::new()
            .route("/v1/whoami", get(whoami))
            .route_layer(auth.layer())
            .merge(verify::router(&auth))
            .merge(own)
            .merge(proxy.router(&auth)),
        None => demo(&auth).merge(own),
    };
    routes
        .layer(axum::middleware::from_fn_with_state(
            RejectionLog::new(clients),
            logging::log_rejections,
        ))
        // The path, not the URI: query strings may carry secrets; keys in it masked.
        .layer(TraceLayer::new_for_http().make_span_with(logging::request_span))
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
}

/// The routes without an upstream: a demo API and forward auth.
fn demo(auth: &Authenticator) -> Router {
    let live = Router::new().route(
        "/v1/events",
        get(|| async { Json(events(Environment::Live)) }),
    );
    let sandbox = Router::new().route(
        "/v1/events",
        get(|| async { Json(events(Environment::Sandbox)) }),
    );
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route_service("/v1/events", EnvironmentRouter::new(live, sandbox))
        // Not `layer`: that would cover the fallback too, and unknown paths would get 401.
        .route_layer(auth.layer())
        // Forward auth, each route behind the layer of its own.
        .merge(verify::router(auth))
}

fn events(environment: Environment) -> serde_json::Value {
    serde_json::json!({ "environment": environment.as_str(), "events": [] })
}

fn principal_json(p: &Principal) -> serde_json::Value {
    serde_json::json!({
        "tenant": p.tenant(),
        "environment": p.environment().as_str(),
        "key_id": p.key_id().as_str(),
        "key_name": p.key_name(),
    })
}

async fn whoami(Extension(principal): Extension<Principal>) -> Json<serde_json::Value> {
    Json(principal_json(&principal))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
