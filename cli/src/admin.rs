//! The admin listener: operational routes kept off the public API (loopback by default).
//!
//! Routes for operators go here: `/healthz` and `/metrics` today; the admin API and the
//! API Keys page later, each added to [`router`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hapnd_auth::{Authenticator, ChannelHealth};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::health::{HealthCache, probe_store};
use crate::metrics::Exporter;
use crate::store::AnyStore;

/// What the admin routes read: the gateway's authenticator and its store.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) auth: Authenticator,
    pub(crate) store: AnyStore,
    /// `/healthz`'s store check, shared by its requests.
    pub(crate) health: Arc<HealthCache>,
    pub(crate) metrics: Exporter,
}

/// The admin listener's routes.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
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
