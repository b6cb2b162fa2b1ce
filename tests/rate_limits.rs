//! Per-key rate limits through the layer: the N+1th request in the window gets `429
//! rate_limited` with `Retry-After`, `RateLimit-Policy` and `RateLimit`, and the key
//! recovers after; cached hits are limited too, and the budget survives the cache; one
//! key's limit never affects another key or another tenant.

mod common;

use std::time::Duration;

use common::{bearer, call, seen};
use hapnd_auth::{
    AuthErrorKind, Authenticator, Environment, FailedAttemptLimit, MemoryKeyStore, NewKey,
    RateLimit,
};
use tower::{Layer, ServiceExt};

async fn limited(auth: &Authenticator, tenant: &str, limit: &str) -> hapnd_auth::CreatedKey {
    let new = NewKey::new(tenant, Environment::Live, "limited")
        .rate_limit(limit.parse::<RateLimit>().unwrap());
    auth.create_key(new).await.unwrap()
}

#[tokio::test]
async fn the_request_past_the_burst_gets_429_with_the_headers_and_the_key_recovers() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = limited(&auth, "acme", "2/s").await;
    let key = created.key.expose_secret();
    // The first is a miss, the second a cache hit: both take from the budget. Admitted
    // responses carry no rate-limit headers.
    for _ in 0..2 {
        let response = auth
            .layer()
            .layer(tower::service_fn(common::echo))
            .oneshot(bearer(key))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit").is_none());
        assert!(response.headers().get("ratelimit-policy").is_none());
    }
    let s = call(&auth, key).await;
    assert_eq!(s.status, 429, "{}", s.body);
    assert_eq!(s.code.as_deref(), Some("rate_limited"));
    assert_eq!(s.retry_after.as_deref(), Some("1"));
    let error = s.error.unwrap();
    assert_eq!(error.kind(), AuthErrorKind::RateLimited);
    assert_eq!(error.principal().unwrap().key_id(), &created.record.id);
    let wait = error.retry_after().unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    let response = auth
        .layer()
        .layer(tower::service_fn(common::echo))
        .oneshot(bearer(key))
        .await
        .unwrap();
    assert_eq!(response.headers()["ratelimit-policy"], r#""key";q=2;w=1"#);
    assert_eq!(response.headers()["ratelimit"], r#""key";r=0;t=1"#);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().get("www-authenticate").is_none());

    // One request comes back every 500 ms.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(call(&auth, key).await.status, 200);
    assert_eq!(call(&auth, key).await.status, 429);
}

#[tokio::test]
async fn a_burst_larger_than_the_rate_is_admitted_at_once() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = limited(&auth, "acme", "1/h,burst=5").await;
    for _ in 0..5 {
        assert_eq!(call(&auth, created.key.expose_secret()).await.status, 200);
    }
    let s = call(&auth, created.key.expose_secret()).await;
    assert_eq!(s.status, 429);
    // Retry-After: up to the hour one request takes to come back.
    let secs: u64 = s.retry_after.unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&secs), "{secs}");
}

#[tokio::test]
async fn the_budget_survives_cache_refills() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = limited(&auth, "acme", "2/h").await;
    let key = created.key.expose_secret();
    for _ in 0..2 {
        assert_eq!(call(&auth, key).await.status, 200);
    }
    // A refill (an invalidation, a flush, a TTL expiry) builds a new principal: it takes
    // the same budget, not a full one.
    auth.invalidator().invalidate(&created.key.hash());
    assert_eq!(call(&auth, key).await.status, 429);
    auth.invalidator().invalidate_all();
    assert_eq!(call(&auth, key).await.status, 429);
}

#[tokio::test]
async fn one_keys_limit_never_affects_another_key_or_tenant() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let spent = limited(&auth, "acme", "1/h").await;
    let sibling = limited(&auth, "acme", "1/h").await;
    let unlimited = auth
        .create_key(NewKey::new("acme", Environment::Live, "free"))
        .await
        .unwrap();
    let other_tenant = limited(&auth, "globex", "1/h").await;
    assert_eq!(call(&auth, spent.key.expose_secret()).await.status, 200);
    for _ in 0..3 {
        assert_eq!(call(&auth, spent.key.expose_secret()).await.status, 429);
    }
    assert_eq!(call(&auth, sibling.key.expose_secret()).await.status, 200);
    assert_eq!(
        call(&auth, other_tenant.key.expose_secret()).await.status,
        200
    );
    for _ in 0..100 {
        assert_eq!(call(&auth, unlimited.key.expose_secret()).await.status, 200);
    }
}

#[tokio::test]
async fn rotation_keeps_the_limit_with_a_budget_of_its_own() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let old = limited(&auth, "acme", "1/h").await;
    assert_eq!(call(&auth, old.key.expose_secret()).await.status, 200);
    assert_eq!(call(&auth, old.key.expose_secret()).await.status, 429);
    let new = auth.rotate(&old.record.id).await.unwrap();
    assert_eq!(new.record.rate_limit, old.record.rate_limit);
    assert_eq!(call(&auth, new.key.expose_secret()).await.status, 200);
    assert_eq!(call(&auth, new.key.expose_secret()).await.status, 429);
    // Revocation comes first: a revoked key is told so, not asked to retry later.
    auth.revoke(&old.record.id).await.unwrap();
    let s = call(&auth, old.key.expose_secret()).await;
    assert_eq!(s.code.as_deref(), Some("api_key_revoked"));
}

/// A key over its own limit is a good key: its 429s are not failed attempts, so the
/// failed-attempt throttle never blocks its client.
#[tokio::test]
async fn rate_limited_requests_are_not_failed_attempts() {
    use hapnd_auth::ClientAddr;
    let auth = Authenticator::builder(MemoryKeyStore::new())
        .throttle_failed_attempts(FailedAttemptLimit::new(2, Duration::from_secs(3600)))
        .build();
    let limited_key = limited(&auth, "acme", "1/h").await;
    let good = auth
        .create_key(NewKey::new("acme", Environment::Live, "good"))
        .await
        .unwrap();
    let svc = auth.layer().layer(tower::service_fn(common::echo));
    let from = |key: &str| {
        let mut req = bearer(key);
        req.extensions_mut()
            .insert(ClientAddr("127.0.0.9:4000".parse().unwrap()));
        req
    };
    let mut codes = Vec::new();
    for _ in 0..6 {
        let s = seen(
            svc.clone()
                .oneshot(from(limited_key.key.expose_secret()))
                .await
                .unwrap(),
        )
        .await;
        codes.push(s.code);
    }
    assert!(
        codes[1..]
            .iter()
            .all(|c| c.as_deref() == Some("rate_limited")),
        "{codes:?}"
    );
    // The client is not blocked: a key it has not used yet (a store lookup) is admitted.
    let s = seen(svc.oneshot(from(good.key.expose_secret())).await.unwrap()).await;
    assert_eq!(s.status, 200, "{}", s.body);
}

#[cfg(feature = "grpc")]
#[tokio::test]
async fn over_grpc_a_rate_limited_call_is_resource_exhausted() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = limited(&auth, "acme", "1/h").await;
    let svc = auth
        .layer()
        .rejection(hapnd_auth::GrpcRejection)
        .layer(tower::service_fn(common::echo));
    let _ = svc
        .clone()
        .oneshot(bearer(created.key.expose_secret()))
        .await
        .unwrap();
    let response = svc
        .oneshot(bearer(created.key.expose_secret()))
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "8");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["ratelimit-policy"],
        r#""key";q=1;w=3600"#
    );
}
