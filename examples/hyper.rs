//! The layer on a plain hyper 1 server, without axum: a `tower::service_fn` handler reads
//! the `Principal` from the request extensions.
//!
//! ```sh
//! cargo run --example hyper
//! curl -H "Authorization: Bearer sk_live_..." http://127.0.0.1:3001/
//! ```
use std::convert::Infallible;

use bytes::Bytes;
use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey, Principal};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer answered every request that has no valid key: a principal is always here.
    let principal = request
        .extensions()
        .get::<Principal>()
        .expect("ApiKeyLayer");
    let text = format!(
        "hello {} ({})\n",
        principal.tenant(),
        principal.environment()
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "hyper-example"))
        .await?;
    println!("a live key (shown once): {}", created.key.expose_secret());

    let service = ServiceBuilder::new().layer(auth.layer()).service_fn(hello);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                eprintln!("connection error: {e}");
            }
        });
    }
}
