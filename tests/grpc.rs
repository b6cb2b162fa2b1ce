//! A real tonic server behind the layer with `GrpcRejection`, called by a real tonic client
//! on loopback: every rejection arrives as the gRPC status a client expects, with the
//! rejection's code at the start of the message.
#![cfg(feature = "grpc")]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::TestStore;
use hapnd_auth::{
    Authenticator, Environment, GrpcRejection, NewKey, Principal, RequireEnvironmentLayer,
};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower::ServiceBuilder;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    tenant: String,
    #[prost(string, tag = "2")]
    authorization_seen: String,
}

const PATH: &str = "/hapnd.test.Whoami/Get";

async fn whoami(request: tonic::Request<Empty>) -> Result<tonic::Response<Reply>, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::internal("no principal"))?;
    let seen = request.metadata().contains_key("authorization");
    Ok(tonic::Response::new(Reply {
        tenant: principal.tenant().to_owned(),
        authorization_seen: seen.to_string(),
    }))
}

#[derive(Clone)]
struct WhoamiServer;

impl tower::Service<http::Request<tonic::body::Body>> for WhoamiServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(tower::service_fn(whoami), request).await)
        })
    }
}

async fn call(channel: &Channel, key: Option<&str>) -> Result<tonic::Response<Reply>, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(Empty {});
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    let path = http::uri::PathAndQuery::from_static(PATH);
    client
        .unary(
            request,
            path,
            tonic_prost::ProstCodec::<Empty, Reply>::default(),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_reach_a_tonic_client_as_grpc_statuses() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .retry_after(Duration::from_secs(3))
        .build();
    let live = auth
        .create_key(NewKey::new("acme", Environment::Live, "grpc"))
        .await
        .unwrap();
    let sandbox = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "grpc-test"))
        .await
        .unwrap();
    let revoked = auth
        .create_key(NewKey::new("acme", Environment::Live, "old"))
        .await
        .unwrap();
    auth.revoke(&revoked.record.id).await.unwrap();
    let uncached = auth
        .create_key(NewKey::new("acme", Environment::Live, "cold"))
        .await
        .unwrap();

    let layers = ServiceBuilder::new()
        .layer(auth.layer().rejection(GrpcRejection))
        .layer(RequireEnvironmentLayer::new(Environment::Live).rejection(GrpcRejection))
        .into_inner();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(layers)
            .serve_with_incoming_shutdown(WhoamiServer, incoming, async {
                let _ = stopped.await;
            }),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let reply = call(&channel, Some(live.key.expose_secret()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.tenant, "acme");
    assert_eq!(
        reply.authorization_seen, "false",
        "the key reached the handler"
    );

    let expect = |result: Result<tonic::Response<Reply>, Status>, code: Code, prefix: &str| {
        let status = result.expect_err("rejected");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().starts_with(prefix),
            "{prefix}: {}",
            status.message()
        );
        status
    };
    expect(
        call(&channel, None).await,
        Code::Unauthenticated,
        "missing_api_key: ",
    );
    expect(
        call(&channel, Some("sk_live_not_a_key")).await,
        Code::Unauthenticated,
        "invalid_api_key: ",
    );
    let status = expect(
        call(&channel, Some(revoked.key.expose_secret())).await,
        Code::Unauthenticated,
        "api_key_revoked: ",
    );
    assert!(!status.message().contains(revoked.key.expose_secret()));
    assert!(status.message().contains(&revoked.record.hint));
    expect(
        call(&channel, Some(sandbox.key.expose_secret())).await,
        Code::PermissionDenied,
        "wrong_environment: ",
    );

    store.set_failing(true);
    let status = expect(
        call(&channel, Some(uncached.key.expose_secret())).await,
        Code::Unavailable,
        "auth_unavailable: ",
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
    // The cached key still works while the store is down.
    call(&channel, Some(live.key.expose_secret()))
        .await
        .unwrap();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
