//! `hapnd-auth serve`: an authenticated HTTP API on an embedded or shared database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Request, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router};
use hapnd_auth::{
    Authenticator, ClientIdentity, Environment, EnvironmentRouter, FailedAttemptLimit, KeyStore,
    NewKey, Principal,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::Database;
use crate::admin::{self, AdminState};
use crate::health::{HEALTH_TTL, HealthCache};
use crate::keys::store_error;
use crate::logging::{self, LogFormat, RejectionLog};
use crate::store::AnyStore;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The admin listener's address (`/healthz`); keep it off the public network.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    #[command(flatten)]
    db: Database,
    /// How often to check a SQLite database for revocations by other processes, in ms.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=250))]
    poll_interval_ms: u64,
    /// How long a key stays cached, in seconds (revocation does not wait for it).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    cache_ttl_secs: u64,
    #[command(flatten)]
    defence: Defence,
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
    /// Reverse proxies in front of the gateway that append to --proxy-header: the client
    /// is the address the outermost of them saw. 0 (the default): the peer address, and
    /// forwarding headers are ignored (a client can write anything there).
    #[arg(long, default_value_t = 0)]
    trusted_proxy_hops: usize,
    /// The header trusted proxies append the client address to.
    #[arg(long, value_enum, default_value_t = ProxyHeader::XForwardedFor)]
    proxy_header: ProxyHeader,
    /// The most store lookups at once; over it, a miss waits up to the lookup timeout (2 s),
    /// then gets 503 auth_unavailable.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_store_lookups: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, ...`
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl Defence {
    fn apply(&self, builder: hapnd_auth::AuthenticatorBuilder) -> hapnd_auth::AuthenticatorBuilder {
        let builder = builder.max_concurrent_lookups(self.max_store_lookups as usize);
        if self.throttle_burst == 0 {
            return builder;
        }
        let identity = match (self.trusted_proxy_hops, self.proxy_header) {
            (0, _) => ClientIdentity::peer(),
            (hops, ProxyHeader::XForwardedFor) => ClientIdentity::x_forwarded_for(hops),
            (hops, ProxyHeader::Forwarded) => ClientIdentity::forwarded(hops),
        };
        let limit = FailedAttemptLimit::new(
            self.throttle_burst,
            Duration::from_millis(self.throttle_period_ms),
        )
        .max_clients(self.throttle_max_clients);
        builder
            .throttle_failed_attempts(limit)
            .client_identity(identity.peer_from(|ext| logging::peer(ext).map(|a| a.ip())))
    }
}

pub(crate) async fn run(args: Args) -> Result<(), String> {
    logging::init(&args.log, args.log_format)?;
    // Before the authenticator: it registers its metrics with the recorder installed now.
    let exporter = crate::metrics::install()?;
    let store = AnyStore::open(&args.db.url).await?;
    let auth = args
        .defence
        .apply(Authenticator::builder(store.clone()).ttl(Duration::from_secs(args.cache_ttl_secs)))
        .build();
    let feed = store.watch(
        auth.invalidator(),
        Duration::from_millis(args.poll_interval_ms),
    );
    let listener = bind(args.listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    bootstrap(&auth, &store, addr).await?;
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
    let admin_state = AdminState {
        auth: auth.clone(),
        store,
        health: Arc::new(HealthCache::new(HEALTH_TTL)),
        metrics: exporter,
    };
    // ConnectInfo: the client address for the throttle and the rejection log.
    let public = axum::serve(
        listener,
        app(auth.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(until_stopped(stopped.clone()));
    let admin = axum::serve(admin_listener, admin::router(admin_state))
        .with_graceful_shutdown(until_stopped(stopped));
    tokio::try_join!(public.into_future(), admin.into_future())
        .map_err(|e| format!("server error: {e}"))?;
    drop(feed);
    if let Err(e) = auth.flush_usage().await {
        tracing::warn!(error = %e, "last-used times of the final batch were not saved");
    }
    tracing::info!("hapnd-auth gateway stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// On first start with no demo key, create one and show it once.
async fn bootstrap(auth: &Authenticator, store: &AnyStore, addr: SocketAddr) -> Result<(), String> {
    if !store.list("demo").await.map_err(store_error)?.is_empty() {
        return Ok(());
    }
    let created = auth
        .create_key(NewKey::new("demo", Environment::Sandbox, "demo"))
        .await
        .map_err(store_error)?;
    let key = created.key.expose_secret();
    println!(
        "First start: created a sandbox key for tenant \"demo\" (shown once, store it now):\n"
    );
    println!("    {key}\n");
    println!("Try it:\n    curl -H \"Authorization: Bearer {key}\" http://{addr}/v1/whoami\n");
    Ok(())
}

/// The public listener's routes: the authenticated API and forward auth. Nothing here
/// answers without a key; operational routes live on the admin listener.
fn app(auth: Authenticator) -> Router {
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
        .route("/auth/verify", any(verify))
        // Envoy's ext_authz (HTTP) appends the original path to its path_prefix.
        .route("/auth/verify/{*original}", any(verify))
        .route_service("/v1/events", EnvironmentRouter::new(live, sandbox))
        // Not `layer`: that would cover the fallback too, and unknown paths would get 401.
        .route_layer(auth.layer())
        .layer(axum::middleware::from_fn_with_state(
            RejectionLog::new(),
            logging::log_rejections,
        ))
        // The path, not the URI: query strings may carry secrets.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            tracing::debug_span!("request", method = %request.method(), path = request.uri().path())
        }))
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
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

/// Forward auth (nginx `auth_request`, Traefik `ForwardAuth`, Envoy `ext_authz`): 200 with
/// the identity in headers, or the layer's rejection.
async fn verify(Extension(p): Extension<Principal>) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-hapnd-tenant", p.tenant()),
        ("x-hapnd-environment", p.environment().as_str()),
        ("x-hapnd-key-id", p.key_id().as_str()),
    ] {
        // Tenants are validated on creation, but a header must never fail the request.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
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
