//! The floor under `serve --upstream`'s speed: the least a proxy built on hyper and tokio
//! does per request. No authentication, no header rules, no pool, no timeouts, no metrics,
//! no logs: each client connection gets one backend connection of its own (hyper's
//! `client::conn::http1`) and every request is handed to it as it came, its response back
//! as it came. Not a proxy to deploy: `benches/upstream.sh` runs it beside nginx to show how
//! close to nginx any proxy on this stack can get on one shared core.
//!
//! ```text
//! cargo run --release -p hapnd-auth-cli --example floor_proxy -- 127.0.0.1:8081 127.0.0.1:8080
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Sender = Arc<Mutex<Option<SendRequest<Incoming>>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        return Err("usage: floor_proxy LISTEN_ADDR BACKEND_ADDR".into());
    };
    let backend: SocketAddr = backend.parse()?;
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, backend).await {
                eprintln!("floor_proxy: {e}");
            }
        });
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connection(stream: TcpStream, backend: SocketAddr) -> Result<(), BoxError> {
    let upstream = TcpStream::connect(backend).await?;
    let _ = upstream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(conn);
    let sender: Sender = Arc::new(Mutex::new(Some(sender)));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let sender = sender.clone();
        async move {
            // HTTP/1.1 serves one request at a time per connection: the sender is free.
            let mut send = sender
                .lock()
                .unwrap()
                .take()
                .expect("one request at a time");
            let response = send.send_request(request).await;
            *sender.lock().unwrap() = Some(send);
            response
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await?;
    Ok(())
}
