//! The admin listener: operational routes kept off the public API (loopback by default).
//!
//! `/healthz` and `/metrics`; the admin JSON API under `/api/v1` ([`api`]) and the API
//! Keys page ([`page`]), both behind the admin token ([`access`]); every route but
//! `/healthz` only for the `Host` values [`host`] accepts. Routes for operators go here,
//! each added to [`router`].

mod access;
mod api;
mod host;
pub(crate) mod page;
mod session;
mod views;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{
    StatusCode,
    header::{AUTHORIZATION, COOKIE, SET_COOKIE},
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hapnd_auth::{Authenticator, ChannelHealth};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::TraceLayer;

pub(crate) use access::{AdminToken, TOKEN_ENV};
pub(crate) use host::{Hosts, parse_host_name};

use crate::health::{HEALTH_TTL, HealthCache, probe_store};
use crate::metrics::Exporter;
use crate::store::AnyStore;

/// What the admin routes read: the gateway's authenticator and its store.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) auth: Authenticator,
    pub(crate) store: AnyStore,
    access: Arc<access::Access>,
    /// The `Host` values answered.
    hosts: Arc<Hosts>,
    /// `/healthz`'s store check, shared by its requests.
    pub(crate) health: Arc<HealthCache>,
    pub(crate) metrics: Exporter,
}

impl AdminState {
    /// The admin routes' state; without `token`, the admin API and page are disabled.
    pub(crate) fn new(
        auth: Authenticator,
        store: AnyStore,
        token: Option<AdminToken>,
        hosts: Hosts,
        metrics: Exporter,
    ) -> Self {
        AdminState {
            auth,
            access: Arc::new(access::Access::new(token, Some(store.clone()))),
            store,
            hosts: Arc::new(hosts),
            health: Arc::new(HealthCache::new(HEALTH_TTL)),
            metrics,
        }
    }
}

/// The admin listener's routes. Serve them with
/// `into_make_service_with_connect_info::<SocketAddr>()`: failed admin-token attempts are
/// counted per client address.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(page::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host::check_host,
        ))
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(crate::logging::request_span))
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]))
        .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
}

/// Store and invalidation-channel health; 503 when either is down. The store's answer is
/// reused for a second, so a busy health checker costs at most one query a second.
async fn healthz(State(state): State<AdminState>) -> Response {
    let store_ok = state.health.get(|| probe_store(&state.store)).await;
    let channel = state.auth.channel_health();
    let healthy = store_ok && channel == ChannelHealth::Healthy;
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "store": if store_ok { "ok" } else { "unavailable" },
        "invalidation_channel": if channel == ChannelHealth::Healthy { "healthy" } else { "degraded" },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The library's metrics in the Prometheus text format.
async fn metrics(State(state): State<AdminState>) -> Response {
    let body = state.metrics.render(&state.auth);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
