//! Scope guards through the layer: a key without the scope gets 403 `insufficient_scope`
//! (RFC 6750 challenge, JSON code, gRPC status) and its handler never runs; a key without
//! scopes has full access; a missing layer is a 500.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Body, bearer, request, seen};
use hapnd_auth::{
    AuthErrorKind, Authenticator, Environment, MemoryKeyStore, NewKey, RequireScopeLayer,
};
use http::{Request, Response};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// A handler that counts its runs.
fn counted(
    runs: &Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ use<> {
    let runs = Arc::clone(runs);
    service_fn(move |_req: Request<Body>| {
        let runs = Arc::clone(&runs);
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(Body::from("ran")))
        }
    })
}

async fn key(auth: &Authenticator, scopes: &[&str]) -> String {
    let new = NewKey::new("acme", Environment::Live, "k").scopes(scopes.iter().copied());
    auth.create_key(new)
        .await
        .unwrap()
        .key
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn a_key_without_the_scope_is_refused_and_its_handler_never_runs() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(auth.layer())
        .layer(RequireScopeLayer::new("events:write"))
        .service(counted(&runs));
    let reader = key(&auth, &["events:read"]).await;
    for _ in 0..2 {
        // A miss, then a cache hit: the same answer.
        let s = seen(svc.clone().oneshot(bearer(&reader)).await.unwrap()).await;
        assert_eq!(s.status, 403, "{}", s.body);
        assert_eq!(s.code.as_deref(), Some("insufficient_scope"));
        assert_eq!(
            s.challenge.as_deref(),
            Some(r#"Bearer realm="hapnd", error="insufficient_scope", scope="events:write""#)
        );
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(
            body["error"]["message"],
            "this endpoint needs an API key with the scope events:write"
        );
        let error = s.error.unwrap();
        assert_eq!(error.kind(), AuthErrorKind::InsufficientScope);
        assert_eq!(
            error.required_scopes().unwrap().collect::<Vec<_>>(),
            ["events:write"]
        );
        assert_eq!(error.principal().unwrap().tenant(), "acme");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let writer = key(&auth, &["events:read", "events:write"]).await;
    let s = seen(svc.clone().oneshot(bearer(&writer)).await.unwrap()).await;
    assert_eq!(s.status, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A key without scopes: full access, as every key had before scopes.
    let full = key(&auth, &[]).await;
    let s = seen(svc.clone().oneshot(bearer(&full)).await.unwrap()).await;
    assert_eq!(s.status, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // No key at all: the layer's 401, not the guard's 403.
    let s = seen(svc.oneshot(request(None)).await.unwrap()).await;
    assert_eq!(s.status, 401);
}

#[tokio::test]
async fn all_and_any_of_several_scopes() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let all = ServiceBuilder::new()
        .layer(auth.layer())
        .layer(RequireScopeLayer::all(["events:read", "reports:read"]))
        .service(counted(&runs));
    let any = ServiceBuilder::new()
        .layer(auth.layer())
        .layer(RequireScopeLayer::any(["events:read", "reports:read"]))
        .service(counted(&runs));
    let one = key(&auth, &["reports:read"]).await;
    let both = key(&auth, &["events:read", "reports:read"]).await;
    let neither = key(&auth, &["billing:read"]).await;

    let s = seen(all.clone().oneshot(bearer(&one)).await.unwrap()).await;
    assert_eq!(s.status, 403);
    assert_eq!(
        s.challenge.as_deref(),
        Some(
            r#"Bearer realm="hapnd", error="insufficient_scope", scope="events:read reports:read""#
        )
    );
    assert!(
        s.body
            .contains("all of the scopes events:read reports:read"),
        "{}",
        s.body
    );
    assert_eq!(
        seen(all.clone().oneshot(bearer(&both)).await.unwrap())
            .await
            .status,
        200
    );
    assert_eq!(
        seen(any.clone().oneshot(bearer(&one)).await.unwrap())
            .await
            .status,
        200
    );
    let s = seen(any.clone().oneshot(bearer(&neither)).await.unwrap()).await;
    assert_eq!(s.status, 403);
    assert!(s.body.contains("one of the scopes"), "{}", s.body);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_guard_without_the_layer_in_front_is_a_500_not_an_open_door() {
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = RequireScopeLayer::new("events:read").layer(counted(&runs));
    let s = seen(svc.oneshot(request(Some("Bearer whatever"))).await.unwrap()).await;
    assert_eq!(s.status, 500);
    assert_eq!(s.code.as_deref(), Some("auth_layer_missing"));
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // Behind an optional layer, an anonymous caller gets 401, not 500.
    let auth = Authenticator::new(MemoryKeyStore::new());
    let svc = ServiceBuilder::new()
        .layer(auth.layer().optional())
        .layer(RequireScopeLayer::new("events:read"))
        .service(counted(&runs));
    let s = seen(svc.oneshot(request(None)).await.unwrap()).await;
    assert_eq!(s.status, 401);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
#[should_panic(expected = "is not a scope")]
fn a_guard_for_an_impossible_scope_is_a_bug_caught_at_startup() {
    let _ = RequireScopeLayer::new("Events:*");
}

#[cfg(feature = "grpc")]
#[tokio::test]
async fn over_grpc_insufficient_scope_is_permission_denied() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(auth.layer().rejection(hapnd_auth::GrpcRejection))
        .layer(RequireScopeLayer::new("events:write").rejection(hapnd_auth::GrpcRejection))
        .service(counted(&runs));
    let reader = key(&auth, &["events:read"]).await;
    let response = svc.oneshot(bearer(&reader)).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "7");
    assert!(
        response.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("insufficient_scope: ")
    );
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(r#"scope="events:write""#)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_routes_and_handlers_require_scopes() {
    use axum::Router;
    use axum::routing::{get, post};
    use hapnd_auth::{AuthError, Principal};

    async fn write(principal: Principal) -> Result<&'static str, AuthError> {
        principal.require_scope("events:write")?;
        Ok("written")
    }
    let auth = Authenticator::new(MemoryKeyStore::new());
    let app = Router::new()
        .route("/events", post(write))
        .route(
            "/reports",
            get(|| async { "report" }).route_layer(RequireScopeLayer::new("reports:read")),
        )
        .layer(auth.layer());
    let reader = key(&auth, &["events:read"]).await;
    let call = |method: &str, uri: &str, k: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {k}"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let response = app
        .clone()
        .oneshot(call("POST", "/events", &reader))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(r#"scope="events:write""#)
    );
    let response = app
        .clone()
        .oneshot(call("GET", "/reports", &reader))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let full = key(&auth, &[]).await;
    let response = app
        .clone()
        .oneshot(call("POST", "/events", &full))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
