//! A tiny HTTP server for `benches/e2e.sh`: one route answering `ok`, with or without
//! `ApiKeyLayer` in front. Binds 127.0.0.1 only. Prints `KEY <key>` (a fresh live key in
//! a memory store) and then `READY` on stdout.
//!
//! `--auth on` applies the layer with `Router::layer` (axum wraps each route in it, and
//! clones and boxes the wrapped route per request); `--auth outer` wraps the whole router
//! instead (`ApiKeyLayer::layer(router)`, one service in front of routing); `--auth off`
//! serves the router bare.
//!
//! `cargo run --release --example bench_server -- --auth on --port 18080`

use axum::extract::Request;
use axum::routing::get;
use axum::{Router, ServiceExt};
use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey};
use std::io::Write;
use tower::Layer;

fn usage() -> ! {
    eprintln!("usage: bench_server --auth on|outer|off [--port PORT]");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut mode = None;
    let mut port = 18080u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--auth", Some(v)) if ["on", "outer", "off"].contains(&v.as_str()) => mode = Some(v),
            ("--port", Some(v)) => port = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let Some(mode) = mode else { usage() };

    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = auth
        .create_key(NewKey::new("bench", Environment::Live, "e2e"))
        .await
        .expect("memory store create");
    let app = Router::new().route("/", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    let mut out = std::io::stdout().lock();
    writeln!(out, "KEY {}", created.key.expose_secret()).expect("stdout");
    writeln!(out, "READY").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    match mode.as_str() {
        "on" => axum::serve(listener, app.layer(auth.layer())).await,
        "outer" => {
            let service = auth.layer().layer(app);
            axum::serve(listener, ServiceExt::<Request>::into_make_service(service)).await
        }
        _ => axum::serve(listener, app).await,
    }
    .expect("serve");
}
