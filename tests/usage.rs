//! Last-used times reach the store in batches, off the request path, and survive a failed write.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{TestStore, bearer, echo};
use hapnd_auth::{
    Authenticator, Environment, KeyStore, MIN_USAGE_FLUSH_INTERVAL, MemoryKeyStore, NewKey,
};
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

/// Instances started together do not flush together: each flusher's wait is drawn from 80 %
/// to 120 % of the interval. Twenty authenticators start their flushers at the same moment;
/// their first flushes must spread over more than a tenth of the interval (without jitter
/// they all land within a few milliseconds of each other), and none comes before 80 % of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_flushes_of_instances_started_together_are_spread() {
    let interval = Duration::from_millis(500);
    let shared = MemoryKeyStore::new();
    let created = Authenticator::new(shared.clone())
        .create_key(NewKey::new("acme", Environment::Live, "used"))
        .await
        .unwrap();
    let instances: Vec<(Authenticator, TestStore)> = (0..20)
        .map(|_| {
            let store = TestStore::wrap(shared.clone());
            let auth = Authenticator::builder(store.clone())
                .usage_flush_interval(interval)
                .build();
            (auth, store)
        })
        .collect();
    // The first use starts each instance's flusher; each wait is measured from just before.
    let mut started = Vec::new();
    for (auth, _) in &instances {
        started.push(Instant::now());
        auth.authenticate_key(created.key.expose_secret())
            .await
            .unwrap();
    }
    // Every instance has flushed once (polled: on a loaded machine a flush may be late).
    let deadline = Instant::now() + interval * 20;
    while instances
        .iter()
        .any(|(_, store)| store.usage_writes.lock().unwrap().is_empty())
    {
        assert!(Instant::now() < deadline, "an instance never flushed");
        tokio::time::sleep(interval / 10).await;
    }
    let mut first: Vec<Duration> = instances
        .iter()
        .zip(&started)
        .map(|((_, store), started)| {
            let flushes = store.usage_writes.lock().unwrap();
            flushes[0] - *started
        })
        .collect();
    first.sort();
    let (earliest, latest) = (first[0], first[first.len() - 1]);
    assert!(
        earliest >= interval * 4 / 5,
        "a flush came before 80 % of the interval: {first:?}"
    );
    assert!(
        latest - earliest > interval / 10,
        "first flushes of instances started together are not spread: {first:?}"
    );
}

/// A zero flush interval is raised to the floor: the flusher neither spins nor rewrites a
/// failed batch to a failing store in a loop. In 300 ms at a 10 ms floor (drawn from 8 to
/// 12 ms), about 30 attempts; a flusher that waited nothing made thousands.
#[tokio::test]
async fn a_zero_flush_interval_does_not_hammer_a_failing_store() {
    let store = TestStore::new();
    let auth = Authenticator::builder(store.clone())
        .usage_flush_interval(Duration::ZERO)
        .build();
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "used"))
        .await
        .unwrap();
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    // Down from now on (its lookups too, hence after the use): every write fails. The
    // first write is due 8 ms after the use at the earliest.
    store.set_failing(true);
    let window = Duration::from_millis(300);
    tokio::time::sleep(window).await;
    let attempts = store.usage_writes.lock().unwrap().len();
    let most = (window.as_millis() / (MIN_USAGE_FLUSH_INTERVAL.as_millis() * 4 / 5)) as usize + 1;
    assert!(attempts >= 1, "the flusher never tried");
    assert!(
        attempts <= most,
        "{attempts} write attempts in {window:?} (at most {most} at the floor)"
    );
}
