//! The admin listener: operational routes kept off the public API (loopback by default).
//!
//! Routes for operators go here: `/healthz` today; metrics, the admin API and the API Keys
//! page later, each added to [`router`].

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hapnd_auth::{Authenticator, ChannelHealth, KeyHash, KeyStore};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::store::AnyStore;

/// What the admin routes read: the gateway's authenticator and its store.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) auth: Authenticator,
    pub(crate) store: AnyStore,
}

/// The admin listener's routes.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
}

/// Store and invalidation-channel health; 503 when either is down.
async fn healthz(State(state): State<AdminState>) -> Response {
    let probe = KeyHash::from_bytes([0; 32]);
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.lookup(&probe)).await,
        Ok(Ok(_))
    );
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
