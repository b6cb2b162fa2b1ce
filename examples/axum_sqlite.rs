//! An axum server whose keys live in a SQLite file, with the change feed that makes a
//! revocation by another process (the `hapnd-auth` command) reach this one within 250 ms.
//!
//! ```sh
//! cargo run --example axum_sqlite --features axum,sqlite
//! curl -H "Authorization: Bearer sk_test_..." http://127.0.0.1:3000/v1/whoami
//! ```
use axum::{Json, Router, routing::get};
use hapnd_auth::{Authenticator, Environment, NewKey, Principal, SqliteKeyStore};

async fn whoami(principal: Principal) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "tenant": principal.tenant(),
        "environment": principal.environment().as_str(),
        "key_name": principal.key_name(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Created (WAL mode, mode 0600) if missing; the `hapnd-auth` command manages keys in the same file.
    let store = SqliteKeyStore::connect("hapnd-example.db").await?;
    let auth = Authenticator::new(store.clone());
    // Keep the feed for as long as the server runs: dropping it bypasses the cache.
    let _feed = store.watch(auth.invalidator(), SqliteKeyStore::DEFAULT_WATCH_INTERVAL);

    let created = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "example"))
        .await?;
    println!(
        "a sandbox key (shown once): {}",
        created.key.expose_secret()
    );

    let app = Router::new()
        .route("/v1/whoami", get(whoami))
        .layer(auth.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
