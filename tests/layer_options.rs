//! The layer's options as a user sees them: `AuthError`'s status and code, a custom
//! rejection that keeps `WWW-Authenticate` and `Retry-After`, and optional authentication.

mod common;

use std::time::Duration;

use common::{Body, TestStore, bearer, echo, request, seen};
use hapnd_auth::{AuthError, AuthErrorKind, Authenticator, Environment, MemoryKeyStore, NewKey};
use http::Response;
use tower::{Layer, ServiceExt, service_fn};

/// A custom rejection as the docs show it: plain text, with the protocol headers kept.
fn plain(e: &AuthError) -> Response<Body> {
    let mut response = e.response(Body::from(format!("{}: {e}", e.code())));
    response
        .headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    response
}

#[tokio::test]
async fn status_and_code_are_on_the_error_itself() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let err = auth.authenticate_key("sk_live_nope").await.unwrap_err();
    assert_eq!(err.status(), 401);
    assert_eq!(err.code(), "invalid_api_key");
    assert_eq!(
        err.challenge(),
        Some(r#"Bearer realm="hapnd", error="invalid_token""#)
    );
    let err = auth
        .authenticate(&http::HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(
        (err.status().as_u16(), err.code()),
        (401, "missing_api_key")
    );
}

#[tokio::test]
async fn a_custom_rejection_keeps_the_challenge_and_retry_after() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .retry_after(Duration::from_secs(7))
        .build();
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    let svc = auth.layer().rejection(plain).layer(service_fn(echo));

    let s = seen(svc.clone().oneshot(request(None)).await.unwrap()).await;
    assert_eq!(s.status, 401);
    assert_eq!(s.challenge.as_deref(), Some(r#"Bearer realm="hapnd""#));
    assert!(s.body.starts_with("missing_api_key: "), "{}", s.body);

    let s = seen(svc.clone().oneshot(bearer("sk_live_x")).await.unwrap()).await;
    assert_eq!(
        s.challenge.as_deref(),
        Some(r#"Bearer realm="hapnd", error="invalid_token""#)
    );

    store.set_failing(true);
    let response = svc
        .clone()
        .oneshot(bearer(created.key.expose_secret()))
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "text/plain");
    let s = seen(response).await;
    assert_eq!(s.status, 503);
    assert_eq!(s.retry_after.as_deref(), Some("7"));
    assert_eq!(s.challenge, None);
    assert_eq!(s.error.unwrap().kind(), AuthErrorKind::Unavailable);
}

#[tokio::test]
async fn optional_mode_admits_anonymous_requests_and_still_rejects_bad_keys() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    let revoked = auth
        .create_key(NewKey::new("acme", Environment::Live, "old"))
        .await
        .unwrap();
    auth.revoke(&revoked.record.id).await.unwrap();
    let svc = auth.layer().optional().layer(service_fn(echo));

    // No header: through, without a principal.
    let s = seen(svc.clone().oneshot(request(None)).await.unwrap()).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert!(s.principal.is_none());
    assert!(s.error.is_none());

    // A good key: through, with its principal, header stripped.
    let s = seen(
        svc.clone()
            .oneshot(bearer(created.key.expose_secret()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.principal.unwrap().tenant(), "acme");
    assert_eq!(s.saw_authorization.as_deref(), Some("no"));

    // Anything sent in the header must be a valid key: never downgraded to anonymous.
    let revoked_header = format!("Bearer {}", revoked.key.expose_secret());
    let cases = [
        ("Bearer sk_live_garbage", AuthErrorKind::InvalidApiKey),
        ("Bearer ", AuthErrorKind::InvalidRequest),
        ("Basic dXNlcjpwYXNz", AuthErrorKind::MissingApiKey),
        ("Bearer a b", AuthErrorKind::InvalidRequest),
        ("", AuthErrorKind::MissingApiKey),
        (revoked_header.as_str(), AuthErrorKind::Revoked),
    ];
    for (header, kind) in cases {
        let s = seen(svc.clone().oneshot(request(Some(header))).await.unwrap()).await;
        common::assert_rejected(&s, kind);
    }

    // The default mode still rejects a request without a header.
    let strict = auth.layer().layer(service_fn(echo));
    let s = seen(strict.oneshot(request(None)).await.unwrap()).await;
    common::assert_rejected(&s, AuthErrorKind::MissingApiKey);
}

/// Behind an optional layer, an environment guard answers an anonymous caller 401 (send a
/// key), not 500 (the server is misconfigured); without any layer it is still 500.
#[tokio::test]
async fn guards_inside_an_optional_layer_ask_anonymous_callers_for_a_key() {
    use hapnd_auth::{EnvironmentRouter, RequireEnvironmentLayer};
    let auth = Authenticator::new(MemoryKeyStore::new());
    let guarded = tower::ServiceBuilder::new()
        .layer(auth.layer().optional())
        .layer(RequireEnvironmentLayer::new(Environment::Live))
        .service_fn(echo);
    let s = seen(guarded.oneshot(request(None)).await.unwrap()).await;
    common::assert_rejected(&s, AuthErrorKind::MissingApiKey);

    let routed = tower::ServiceBuilder::new()
        .layer(auth.layer().optional())
        .service(EnvironmentRouter::new(service_fn(echo), service_fn(echo)));
    let s = seen(routed.oneshot(request(None)).await.unwrap()).await;
    common::assert_rejected(&s, AuthErrorKind::MissingApiKey);

    let unguarded = RequireEnvironmentLayer::new(Environment::Live).layer(service_fn(echo));
    let s = seen(unguarded.oneshot(request(None)).await.unwrap()).await;
    common::assert_rejected(&s, AuthErrorKind::LayerMissing);
}
