//! Last-used times reach the store in batches, off the request path, and survive a failed write.

mod common;

use std::time::{Duration, SystemTime};

use common::{TestStore, bearer, echo};
use hapnd_auth::{Authenticator, Environment, KeyStore, NewKey};
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn uses_are_written_behind_and_kept_across_a_failed_write() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .usage_flush_interval(Duration::from_secs(3600))
        .build();
    let used = auth
        .create_key(NewKey::new("acme", Environment::Live, "used"))
        .await
        .unwrap();
    let idle = auth
        .create_key(NewKey::new("acme", Environment::Live, "idle"))
        .await
        .unwrap();
    let before = SystemTime::now();
    let svc = auth.layer().layer(service_fn(echo));
    for _ in 0..10 {
        let r = svc
            .clone()
            .oneshot(bearer(used.key.expose_secret()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Nothing written per request.
    assert_eq!(
        store
            .get(&used.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        None
    );

    store.set_failing(true);
    assert!(auth.flush_usage().await.is_err());
    store.set_failing(false);
    auth.flush_usage().await.unwrap();

    let record = store.get(&used.record.id).await.unwrap().unwrap();
    assert!(record.last_used_at.unwrap() >= before);
    assert_eq!(
        store
            .get(&idle.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        None
    );
    assert_eq!(auth.dropped_usage_records(), 0);
}

#[tokio::test]
async fn the_background_flusher_writes_on_its_interval() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .usage_flush_interval(Duration::from_millis(50))
        .build();
    let used = auth
        .create_key(NewKey::new("acme", Environment::Live, "used"))
        .await
        .unwrap();
    auth.authenticate_key(used.key.expose_secret())
        .await
        .unwrap();
    for _ in 0..100 {
        if store
            .get(&used.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("last_used_at was never written");
}
