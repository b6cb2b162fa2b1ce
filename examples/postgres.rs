//! One of several gateway instances sharing a PostgreSQL database. Start two, revoke a key
//! with the `hapnd-auth` command (or `Authenticator::revoke` in any instance), and both
//! reject it within milliseconds: each instance's `LISTEN` feed invalidates its cache.
//!
//! ```sh
//! export DATABASE_URL=postgres://hapnd:secret@127.0.0.1/hapnd
//! cargo run --example postgres --features axum,postgres -- 127.0.0.1:3002 &
//! cargo run --example postgres --features axum,postgres -- 127.0.0.1:3003 &
//! curl -H "Authorization: Bearer sk_live_..." http://127.0.0.1:3003/v1/whoami
//! ```
use std::time::Duration;

use axum::{Router, http::StatusCode, routing::get};
use hapnd_auth::{Authenticator, ChannelHealth, PostgresKeyStore, Principal};

async fn whoami(principal: Principal) -> String {
    format!(
        "{} ({}) via {}\n",
        principal.tenant(),
        principal.environment(),
        principal.key_name()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3002".to_owned());

    let store = PostgresKeyStore::builder()
        .max_connections(10)
        .query_timeout(Duration::from_secs(2))
        .connect(&url)
        .await?;
    let auth = Authenticator::new(store.clone());
    // Revocations committed by any instance reach this one through LISTEN/NOTIFY. Keep the
    // handle: dropping it stops the feed and bypasses the cache.
    let _feed = store.listen(auth.invalidator());

    let health = auth.clone();
    let api = Router::new()
        .route("/v1/whoami", get(whoami))
        .layer(auth.layer());
    let app = api.route(
        "/healthz",
        get(move || async move {
            match health.channel_health() {
                ChannelHealth::Healthy => (StatusCode::OK, "ok\n"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "revocation channel down\n"),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("instance listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
