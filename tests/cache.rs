//! The cache in front of the store: one lookup per key however many requests miss at
//! once, negative entries, and store failures that are answered 503 and never cached.

mod common;

use std::time::{Duration, Instant};

use common::{TestStore, assert_rejected, call, live_key, spawn_call};
use hapnd_auth::{ApiKey, AuthErrorKind, Authenticator, Environment, NewKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_store_lookup() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret().to_owned();

    let gate = store.close_gate();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let (auth, key) = (auth.clone(), key.clone());
            tokio::spawn(async move { call(&auth, &key).await.status })
        })
        .collect();
    gate.entered().await;
    // Give the other 99 time to join the flight; any that come later hit the cache.
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.release();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(store.lookups(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_with_one_unknown_key_make_one_lookup() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let stranger = ApiKey::generate(Environment::Sandbox);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (auth, key) = (auth.clone(), stranger.expose_secret().to_owned());
        tasks.push(tokio::spawn(async move { call(&auth, &key).await }));
    }
    for t in tasks {
        assert_rejected(&t.await.unwrap(), AuthErrorKind::InvalidApiKey);
    }
    assert_eq!(store.lookups(), 1);
}

#[tokio::test]
async fn a_key_created_after_a_negative_entry_works_at_once() {
    // Negative entries are per hash; creating a key invalidates its hash anyway.
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    assert_eq!(call(&auth, created.key.expose_secret()).await.status, 200);
}

#[tokio::test]
async fn negative_entries_expire_on_their_own_ttl() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .negative_ttl(Duration::from_millis(100))
        .build();
    let stranger = ApiKey::generate(Environment::Live);
    call(&auth, stranger.expose_secret()).await;
    call(&auth, stranger.expose_secret()).await;
    assert_eq!(store.lookups(), 1);
    // moka's TTL runs on the real clock (DESIGN.md trap 3).
    tokio::time::sleep(Duration::from_millis(250)).await;
    call(&auth, stranger.expose_secret()).await;
    assert_eq!(store.lookups(), 2);
}

#[tokio::test]
async fn a_store_failure_is_503_with_retry_after_and_is_not_cached() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .retry_after(Duration::from_millis(1500))
        .build();
    let cached = auth
        .create_key(NewKey::new("acme", Environment::Live, "cached"))
        .await
        .unwrap();
    let uncached = auth
        .create_key(NewKey::new("acme", Environment::Live, "cold"))
        .await
        .unwrap();
    assert_eq!(call(&auth, cached.key.expose_secret()).await.status, 200);

    store.set_failing(true);
    let s = call(&auth, uncached.key.expose_secret()).await;
    assert_rejected(&s, AuthErrorKind::Unavailable);
    assert_eq!(s.retry_after.as_deref(), Some("2"));
    let stranger = ApiKey::generate(Environment::Live);
    // An unknown key during an outage is 503 too: never 401 while the store cannot say.
    assert_rejected(
        &call(&auth, stranger.expose_secret()).await,
        AuthErrorKind::Unavailable,
    );
    // Cache hits keep working while the invalidation channel is healthy.
    assert_eq!(call(&auth, cached.key.expose_secret()).await.status, 200);

    store.set_failing(false);
    let before = store.lookups();
    assert_eq!(call(&auth, uncached.key.expose_secret()).await.status, 200);
    assert_rejected(
        &call(&auth, stranger.expose_secret()).await,
        AuthErrorKind::InvalidApiKey,
    );
    // Both were read from the store: the failures left no entry behind.
    assert_eq!(store.lookups(), before + 2);
}

#[tokio::test]
async fn a_hanging_store_is_answered_within_the_lookup_timeout() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .lookup_timeout(Duration::from_millis(100))
        .build();
    let created = live_key(&auth).await;
    let _gate = store.close_gate(); // never released
    let started = Instant::now();
    let s = call(&auth, created.key.expose_secret()).await;
    assert_rejected(&s, AuthErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(s.error.unwrap().store_error().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_lookup_does_not_strand_the_requests_waiting_on_it() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret().to_owned();

    let gate = store.close_gate();
    let leader = spawn_call(&auth, &key);
    gate.entered().await;
    let follower = spawn_call(&auth, &key);
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.open_gate();
    leader.abort(); // the client went away mid-lookup
    let status = tokio::time::timeout(Duration::from_secs(5), follower).await;
    assert_eq!(status.expect("follower hung").unwrap(), 200);
}

#[tokio::test]
async fn channel_lost_bypasses_the_cache_until_restored() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret();
    call(&auth, key).await;
    let inv = auth.invalidator();

    inv.channel_lost();
    assert_eq!(auth.channel_health(), hapnd_auth::ChannelHealth::Degraded);
    let before = store.lookups();
    call(&auth, key).await;
    call(&auth, key).await;
    assert_eq!(
        store.lookups(),
        before + 2,
        "the cache was trusted while degraded"
    );
    // Strict by default: a store outage while degraded is 503 even for a once-cached key.
    store.set_failing(true);
    assert_rejected(&call(&auth, key).await, AuthErrorKind::Unavailable);
    store.set_failing(false);

    inv.channel_restored();
    call(&auth, key).await;
    let after = store.lookups();
    call(&auth, key).await;
    assert_eq!(store.lookups(), after, "the cache is trusted again");
}

#[tokio::test]
async fn stale_if_error_serves_cached_keys_within_the_window_only() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .stale_if_error(Duration::from_millis(300))
        .build();
    let created = live_key(&auth).await;
    let key = created.key.expose_secret();
    assert_eq!(call(&auth, key).await.status, 200);

    auth.invalidator().channel_lost();
    store.set_failing(true);
    assert_eq!(
        call(&auth, key).await.status,
        200,
        "stale entry within the window"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_rejected(&call(&auth, key).await, AuthErrorKind::Unavailable);
}

#[tokio::test]
async fn a_huge_lookup_timeout_does_not_overflow() {
    let auth = Authenticator::builder(TestStore::new())
        .lookup_timeout(Duration::MAX)
        .build();
    let created = live_key(&auth).await;
    assert_eq!(call(&auth, created.key.expose_secret()).await.status, 200);
}
