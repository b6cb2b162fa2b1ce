//! Revocation has no grace period: once `revoke` returns, every request with the key is
//! rejected, including when the revocation lands while a lookup of that key is in flight.

mod common;

use std::time::Duration;

use common::{TestStore, assert_rejected, call, live_key, spawn_call};
use hapnd_auth::{AuthErrorKind, Authenticator, Environment, NewKey};

#[tokio::test]
async fn a_revoked_key_is_rejected_on_the_next_request() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret();

    assert_eq!(call(&auth, key).await.status, 200);
    // Now cached: the next request does not read the store.
    assert_eq!(call(&auth, key).await.status, 200);
    assert_eq!(store.lookups(), 1);

    let record = auth.revoke(&created.record.id).await.unwrap();
    assert!(record.revoked_at.is_some());
    let s = call(&auth, key).await;
    assert_rejected(&s, AuthErrorKind::Revoked);
    assert!(s.body.contains(&created.record.hint), "{}", s.body);
    let err = s.error.unwrap();
    assert_eq!(err.principal().unwrap().key_id(), &created.record.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_an_in_flight_lookup_does_not_bring_the_key_back() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret().to_owned();

    // Request A misses and reads the store, which still says "active"; then it is held.
    let gate = store.close_gate();
    let a = spawn_call(&auth, &key);
    gate.entered().await;

    // The key is revoked while A's stale answer is in the air.
    auth.revoke(&created.record.id).await.unwrap();
    store.open_gate();

    // Every request after revoke returned is rejected, even while A is still held.
    for _ in 0..3 {
        assert_rejected(&call(&auth, &key).await, AuthErrorKind::Revoked);
    }

    // A finishes with its stale record: it must not be cached.
    gate.release();
    let _ = a.await.unwrap(); // A began before revoke returned: either answer is allowed.
    for _ in 0..3 {
        assert_rejected(&call(&auth, &key).await, AuthErrorKind::Revoked);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_rejected(&call(&auth, &key).await, AuthErrorKind::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_all_during_an_in_flight_lookup_does_not_bring_the_key_back() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret().to_owned();

    let gate = store.close_gate();
    let a = spawn_call(&auth, &key);
    gate.entered().await;
    // Revoked elsewhere (straight in the store), then a change feed flushes everything.
    hapnd_auth::KeyStore::revoke(&store, &created.record.id, std::time::SystemTime::now())
        .await
        .unwrap();
    auth.invalidator().invalidate_all();
    store.open_gate();
    gate.release();
    let _ = a.await.unwrap();
    assert_rejected(&call(&auth, &key).await, AuthErrorKind::Revoked);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_until_it_is_revoked() {
    let auth = Authenticator::new(TestStore::new());
    let old = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "deploy"))
        .await
        .unwrap();
    let new = auth.rotate(&old.record.id).await.unwrap();
    assert_ne!(new.record.id, old.record.id);
    assert_eq!(new.record.name, "deploy");
    assert_eq!(new.record.environment, Environment::Sandbox);
    assert_eq!(call(&auth, old.key.expose_secret()).await.status, 200);
    assert_eq!(call(&auth, new.key.expose_secret()).await.status, 200);

    auth.revoke(&old.record.id).await.unwrap();
    assert_rejected(
        &call(&auth, old.key.expose_secret()).await,
        AuthErrorKind::Revoked,
    );
    assert_eq!(call(&auth, new.key.expose_secret()).await.status, 200);
}

#[tokio::test]
async fn an_expired_key_is_rejected() {
    let auth = Authenticator::new(TestStore::new());
    let soon = std::time::SystemTime::now() + Duration::from_millis(200);
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "temp").expires_at(soon))
        .await
        .unwrap();
    let key = created.key.expose_secret();
    assert_eq!(call(&auth, key).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still cached, but expiry is checked on every hit.
    assert_rejected(&call(&auth, key).await, AuthErrorKind::Expired);
}

#[tokio::test]
async fn revoking_an_unknown_id_is_not_found() {
    let auth = Authenticator::new(TestStore::new());
    let err = auth
        .revoke(&hapnd_auth::KeyId::new("key_nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), hapnd_auth::StoreErrorKind::NotFound);
}
