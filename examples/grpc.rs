//! A tonic gRPC service behind the API-key layer. Rejections are gRPC statuses
//! (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNAVAILABLE`) whose message starts with the
//! same code as the JSON rejections (`api_key_revoked: ...`).
//!
//! Runs a server on a free loopback port and calls it with a tonic client: a valid key, no
//! key, a sandbox key on a live-only service, and a revoked key.
//!
//! ```sh
//! cargo run --example grpc --features grpc
//! ```
//!
//! No `protoc` needed: the two messages are written out as prost derives, and the service
//! is wired by hand the way tonic's generated code does it. With `tonic-build`, use your
//! generated `FooServer` instead of `WhoamiServer`; the layer lines stay the same.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hapnd_auth::{
    Authenticator, Environment, GrpcRejection, MemoryKeyStore, NewKey, Principal,
    RequireEnvironmentLayer,
};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Status};
use tower::ServiceBuilder;

/// `message WhoamiRequest {}`
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoamiRequest {}

/// `message WhoamiReply { string tenant = 1; string environment = 2; string key_name = 3; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoamiReply {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(string, tag = "2")]
    pub environment: String,
    #[prost(string, tag = "3")]
    pub key_name: String,
}

const WHOAMI: &str = "/hapnd.example.Whoami/Get";

/// The handler: the layer put the caller's `Principal` into the request extensions.
async fn whoami(
    request: tonic::Request<WhoamiRequest>,
) -> Result<tonic::Response<WhoamiReply>, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::internal("the API-key layer is not installed"))?;
    Ok(tonic::Response::new(WhoamiReply {
        tenant: principal.tenant().to_owned(),
        environment: principal.environment().to_string(),
        key_name: principal.key_name().to_owned(),
    }))
}

/// `service Whoami { rpc Get(WhoamiRequest) returns (WhoamiReply); }`, as generated code
/// would route it.
#[derive(Clone)]
struct WhoamiServer;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for WhoamiServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() != WHOAMI {
                return Ok(Status::unimplemented(request.uri().path().to_owned()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(tower::service_fn(whoami), request).await)
        })
    }
}

async fn call(endpoint: &Endpoint, key: Option<&str>) -> Result<WhoamiReply, Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(WhoamiRequest {});
    if let Some(key) = key {
        let value = format!("Bearer {key}")
            .parse()
            .expect("a key is visible ASCII");
        request.metadata_mut().insert("authorization", value);
    }
    let path = http::uri::PathAndQuery::from_static(WHOAMI);
    let codec = tonic_prost::ProstCodec::<WhoamiRequest, WhoamiReply>::default();
    Ok(client.unary(request, path, codec).await?.into_inner())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let live = auth
        .create_key(NewKey::new("acme", Environment::Live, "grpc-client"))
        .await?;
    let sandbox = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "grpc-test"))
        .await?;
    let revoked = auth
        .create_key(NewKey::new("acme", Environment::Live, "old"))
        .await?;
    auth.revoke(&revoked.record.id).await?;

    // The layer first, then (inside it) a guard that admits live keys only; both answer
    // in gRPC statuses.
    let layers = ServiceBuilder::new()
        .layer(auth.layer().rejection(GrpcRejection))
        .layer(RequireEnvironmentLayer::new(Environment::Live).rejection(GrpcRejection))
        .into_inner();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let server = Server::builder()
        .layer(layers)
        .serve_with_incoming(WhoamiServer, incoming);
    tokio::spawn(server);
    println!("gRPC server on {addr}");

    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let reply = call(&endpoint, Some(live.key.expose_secret())).await?;
    println!(
        "live key:    OK {} ({}) via {}",
        reply.tenant, reply.environment, reply.key_name
    );
    for (what, key, expected) in [
        ("no key:     ", None, Code::Unauthenticated),
        (
            "sandbox key:",
            Some(sandbox.key.expose_secret()),
            Code::PermissionDenied,
        ),
        (
            "revoked key:",
            Some(revoked.key.expose_secret()),
            Code::Unauthenticated,
        ),
    ] {
        let status = call(&endpoint, key).await.expect_err("rejected");
        assert_eq!(status.code(), expected);
        println!("{what} {:?}: {}", status.code(), status.message());
    }
    Ok(())
}
