//! A tiny HTTP server for `benches/e2e.sh`: one route answering `ok`, with or without
//! `ApiKeyLayer` in front. Binds 127.0.0.1 only. Prints `KEY <key>` (a fresh live key in
//! a memory store) and then `READY` on stdout.
//!
//! `cargo run --release --example bench_server -- --auth on --port 18080`

use axum::Router;
use axum::routing::get;
use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey};
use std::io::Write;

fn usage() -> ! {
    eprintln!("usage: bench_server --auth on|off [--port PORT]");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut auth_on = None;
    let mut port = 18080u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--auth", Some(v)) if v == "on" => auth_on = Some(true),
            ("--auth", Some(v)) if v == "off" => auth_on = Some(false),
            ("--port", Some(v)) => port = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let Some(auth_on) = auth_on else { usage() };

    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = auth
        .create_key(NewKey::new("bench", Environment::Live, "e2e"))
        .await
        .expect("memory store create");
    let mut app = Router::new().route("/", get(|| async { "ok" }));
    if auth_on {
        app = app.layer(auth.layer());
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    let mut out = std::io::stdout().lock();
    writeln!(out, "KEY {}", created.key.expose_secret()).expect("stdout");
    writeln!(out, "READY").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    axum::serve(listener, app).await.expect("serve");
}
