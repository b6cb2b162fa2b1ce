//! Every metric moves when it should, and no metric name or label carries a key, a hash,
//! a key id or a tenant. The debugging recorder's snapshots hand back what changed since
//! the previous one, so each step reads its own deltas.

mod common;
mod skip;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestStore, call, echo, seen};
use hapnd_auth::{
    ApiKey, Authenticator, ClientAddr, Environment, FailedAttemptLimit, MemoryKeyStore, NewKey,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, ServiceExt};

/// `name{label=value,...}` (labels sorted) to the value: a counter's increase, a gauge's
/// last value, a histogram's number of samples.
fn deltas(snapshotter: &Snapshotter) -> HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(0) => return None,
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) if h.is_empty() => return None,
                DebugValue::Histogram(h) => h.len() as f64,
            };
            Some((name, value))
        })
        .collect()
}

fn built_with(recorder: &DebuggingRecorder, f: impl FnOnce() -> Authenticator) -> Authenticator {
    metrics::with_local_recorder(recorder, f)
}

fn counter(d: &HashMap<String, f64>, name: &str) -> f64 {
    d.get(name).copied().unwrap_or(0.0)
}

/// The increase of `hapnd_auth_requests_total` over all its labels.
fn requests(d: &HashMap<String, f64>) -> f64 {
    d.iter()
        .filter(|(name, _)| name.starts_with("hapnd_auth_requests_total{"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn requests_and_cache_results() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let store = TestStore::new();
    let auth = built_with(&recorder, || Authenticator::new(store.clone()));
    let created = common::live_key(&auth).await;
    let key = created.key.expose_secret();
    auth.cached_entries();
    deltas(&snap);

    // A miss: one store lookup, timed.
    assert_eq!(call(&auth, key).await.status, 200);
    let d = deltas(&snap);
    assert_eq!(
        counter(
            &d,
            "hapnd_auth_requests_total{cache=miss,environment=live,outcome=ok}"
        ),
        1.0
    );
    assert_eq!(requests(&d), 1.0, "one increment per request: {d:?}");
    assert_eq!(
        counter(&d, "hapnd_auth_store_lookup_duration_seconds{}"),
        1.0
    );
    assert_eq!(auth.cached_entries(), 1);
    let d = deltas(&snap);
    assert_eq!(d.get("hapnd_auth_cached_entries{}"), Some(&1.0), "{d:?}");

    // A hit.
    assert_eq!(call(&auth, key).await.status, 200);
    let d = deltas(&snap);
    assert_eq!(
        counter(
            &d,
            "hapnd_auth_requests_total{cache=hit,environment=live,outcome=ok}"
        ),
        1.0
    );
    assert_eq!(requests(&d), 1.0, "one increment per request: {d:?}");
    assert_eq!(
        counter(&d, "hapnd_auth_store_lookup_duration_seconds{}"),
        0.0
    );

    // An unknown sandbox key twice: a miss, then a negative hit.
    let unknown = ApiKey::generate(Environment::Sandbox);
    call(&auth, unknown.expose_secret()).await;
    call(&auth, unknown.expose_secret()).await;
    let d = deltas(&snap);
    for cache in ["miss", "negative_hit"] {
        assert_eq!(
            counter(
                &d,
                &format!(
                    "hapnd_auth_requests_total{{cache={cache},environment=sandbox,outcome=invalid_api_key}}"
                )
            ),
            1.0,
            "{d:?}"
        );
    }
    assert_eq!(requests(&d), 2.0, "{d:?}");

    // No header at all.
    let svc = auth.layer().layer(tower::service_fn(echo));
    svc.oneshot(common::request(None)).await.unwrap();
    let d = deltas(&snap);
    assert_eq!(
        counter(
            &d,
            "hapnd_auth_requests_total{cache=none,environment=none,outcome=missing_api_key}"
        ),
        1.0
    );
    assert_eq!(requests(&d), 1.0, "{d:?}");

    // A key of the wrong form: nothing to look up either.
    call(&auth, "sk_live_short").await;
    let d = deltas(&snap);
    assert_eq!(
        counter(
            &d,
            "hapnd_auth_requests_total{cache=none,environment=none,outcome=invalid_api_key}"
        ),
        1.0,
        "{d:?}"
    );

    // A revoked key: read from the store once, then a hit that is rejected.
    auth.revoke(&created.record.id).await.unwrap();
    deltas(&snap);
    assert_eq!(call(&auth, key).await.status, 401);
    assert_eq!(call(&auth, key).await.status, 401);
    let d = deltas(&snap);
    for cache in ["miss", "hit"] {
        assert_eq!(
            counter(
                &d,
                &format!(
                    "hapnd_auth_requests_total{{cache={cache},environment=live,outcome=api_key_revoked}}"
                )
            ),
            1.0,
            "{d:?}"
        );
    }
}

/// On paused time: the held leader's lookup bound and the refused miss's wait for a slot
/// are the same 200 ms, started microseconds apart. On real time a loaded machine could put
/// them in different timer ticks and time the leader out first (seen once in CI); paused,
/// both end at the same instant, every run.
#[tokio::test(start_paused = true)]
async fn store_errors_bound_refusals_and_coalesced_waiters() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let store = TestStore::new();
    let auth = built_with(&recorder, || {
        Authenticator::builder(store.clone())
            .max_concurrent_lookups(1)
            .lookup_timeout(Duration::from_millis(200))
            .build()
    });
    let created = common::live_key(&auth).await;
    let key = created.key.expose_secret().to_owned();

    store.set_failing(true);
    assert_eq!(call(&auth, &key).await.status, 503);
    let d = deltas(&snap);
    assert_eq!(
        counter(&d, "hapnd_auth_store_errors_total{kind=unavailable}"),
        1.0
    );
    assert_eq!(
        counter(
            &d,
            "hapnd_auth_requests_total{cache=miss,environment=live,outcome=auth_unavailable}"
        ),
        1.0
    );
    store.set_failing(false);

    // Two misses for one key while the store is held: one leads, one waits on it; a third
    // key finds the only slot taken and is refused by the bound.
    let gate = store.close_gate();
    let first = common::spawn_call(&auth, &key);
    gate.entered().await;
    let second = common::spawn_call(&auth, &key);
    let other = ApiKey::generate(Environment::Live);
    assert_eq!(call(&auth, other.expose_secret()).await.status, 503);
    gate.release();
    store.open_gate();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    let d = deltas(&snap);
    assert_eq!(
        counter(&d, "hapnd_auth_store_lookups_rejected_total{}"),
        1.0,
        "{d:?}"
    );
    assert!(counter(&d, "hapnd_auth_coalesced_waiters_total{}") >= 1.0);
    assert_eq!(
        counter(&d, "hapnd_auth_store_errors_total{kind=timeout}"),
        0.0,
        "a refusal by the bound is not a store error"
    );
}

#[tokio::test]
async fn invalidations_by_source_and_channel_health() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let auth = built_with(&recorder, || Authenticator::new(MemoryKeyStore::new()));
    let created = common::live_key(&auth).await;
    deltas(&snap);

    auth.revoke(&created.record.id).await.unwrap();
    let invalidator = auth.invalidator();
    invalidator.invalidate(&created.record.hash);
    invalidator.invalidate_all();
    let d = deltas(&snap);
    for source in ["revoke", "api", "flush"] {
        let name = format!("hapnd_auth_invalidations_total{{source={source}}}");
        assert_eq!(counter(&d, &name), 1.0, "{name}: {d:?}");
    }

    invalidator.channel_lost();
    let d = deltas(&snap);
    assert_eq!(
        d.get("hapnd_auth_invalidation_channel_healthy{}"),
        Some(&0.0)
    );
    invalidator.channel_restored();
    let d = deltas(&snap);
    assert_eq!(
        d.get("hapnd_auth_invalidation_channel_healthy{}"),
        Some(&1.0)
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_change_log_counts_as_its_source() {
    use hapnd_auth::SqliteKeyStore;
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqliteKeyStore::connect(path.to_str().unwrap())
        .await
        .unwrap();
    let auth = built_with(&recorder, || Authenticator::new(store.clone()));
    let _feed = store.watch(auth.invalidator(), Duration::from_millis(20));
    // Another process's connection (the CLI) revokes a key.
    let other = Authenticator::new(
        SqliteKeyStore::connect(path.to_str().unwrap())
            .await
            .unwrap(),
    );
    let created = other
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    other.revoke(&created.record.id).await.unwrap();
    let name = "hapnd_auth_invalidations_total{source=sqlite_change_log}";
    let mut seen_total = 0.0;
    let found = common::eventually(Duration::from_secs(5), || {
        seen_total += counter(&deltas(&snap), name);
        let done = seen_total >= 1.0;
        async move { done }
    })
    .await;
    assert!(found.is_some(), "no {name} within 5 s");
}

#[tokio::test]
async fn throttled_requests() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let auth = built_with(&recorder, || {
        Authenticator::builder(MemoryKeyStore::new())
            .throttle_failed_attempts(FailedAttemptLimit::new(1, Duration::from_secs(60)))
            .build()
    });
    let svc = auth.layer().layer(tower::service_fn(echo));
    for _ in 0..3 {
        let mut request = common::bearer(ApiKey::generate(Environment::Live).expose_secret());
        request
            .extensions_mut()
            .insert(ClientAddr("192.0.2.1:1".parse().unwrap()));
        let _: common::Seen = seen(svc.clone().oneshot(request).await.unwrap()).await;
    }
    let d = deltas(&snap);
    assert_eq!(
        counter(&d, "hapnd_auth_throttled_requests_total{}"),
        2.0,
        "{d:?}"
    );
    assert_eq!(
        counter(
            &d,
            "hapnd_auth_requests_total{cache=miss,environment=live,outcome=too_many_failed_attempts}"
        ),
        2.0
    );
    // Exact once asked for, as an exporter does before rendering.
    assert_eq!(auth.throttled_clients(), 1);
    let d = deltas(&snap);
    assert_eq!(d.get("hapnd_auth_throttled_clients{}"), Some(&1.0));
}

#[tokio::test]
async fn no_key_hash_id_or_tenant_in_any_metric() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let store = TestStore::new();
    let auth = built_with(&recorder, || Authenticator::new(store.clone()));
    let created = auth
        .create_key(NewKey::new("tenant-secret-name", Environment::Live, "ci"))
        .await
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    call(&auth, &key).await;
    call(&auth, &key).await;
    auth.revoke(&created.record.id).await.unwrap();
    call(&auth, &key).await;
    let unknown = ApiKey::generate(Environment::Live);
    call(&auth, unknown.expose_secret()).await;

    let names: Vec<String> = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, _)| format!("{:?}", key.key()))
        .collect();
    assert!(names.len() > 5, "{names:?}");
    let text = names.join("\n");
    let hex: String = created
        .record
        .hash
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for secret in [
        key.as_str(),
        &key[8..],
        unknown.expose_secret(),
        &hex,
        created.record.id.as_str(),
        "tenant-secret-name",
        &created.record.hint[11..],
    ] {
        assert!(!text.contains(secret), "{secret:?} in metrics:\n{text}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_notification_counts_as_its_source() {
    use std::str::FromStr;

    use hapnd_auth::PostgresKeyStore;
    use sqlx::postgres::{PgConnectOptions, PgPool};
    let Some(url) = std::env::var("HAPND_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but HAPND_TEST_DATABASE_URL is not"
        );
        skip::skipped("HAPND_TEST_DATABASE_URL not set; the PostgreSQL metrics test did not run");
        return;
    };
    let schema = common::unique("hapnd_m");
    let admin = PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let connect = || async {
        PostgresKeyStore::builder()
            .max_connections(2)
            .connect_with(options.clone())
            .await
            .unwrap()
    };
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let store = connect().await;
    let auth = built_with(&recorder, || Authenticator::new(store.clone()));
    let _feed = store.listen(auth.invalidator());
    let healthy = common::eventually(Duration::from_secs(10), || async {
        auth.channel_health() == hapnd_auth::ChannelHealth::Healthy
    })
    .await;
    assert!(healthy.is_some(), "the listener never came up");
    // Another instance revokes a key.
    let other = Authenticator::new(connect().await);
    let created = other
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    deltas(&snap);
    other.revoke(&created.record.id).await.unwrap();
    let name = "hapnd_auth_invalidations_total{source=postgres_notify}";
    let mut total = 0.0;
    let found = common::eventually(Duration::from_secs(5), || {
        total += counter(&deltas(&snap), name);
        let done = total >= 1.0;
        async move { done }
    })
    .await;
    assert!(found.is_some(), "no {name} within 5 s");
}

#[tokio::test(start_paused = true)]
async fn the_tarpit_gauge_counts_held_429s() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let hold = Duration::from_secs(1);
    let auth = built_with(&recorder, || {
        Authenticator::builder(MemoryKeyStore::new())
            .throttle_failed_attempts(
                FailedAttemptLimit::new(1, Duration::from_secs(60)).tarpit(hold),
            )
            .build()
    });
    let svc = auth.layer().layer(tower::service_fn(echo));
    let send = move || {
        let mut request = common::bearer(ApiKey::generate(Environment::Live).expose_secret());
        request
            .extensions_mut()
            .insert(ClientAddr("192.0.2.1:1".parse().unwrap()));
        let svc = svc.clone();
        tokio::spawn(async move { svc.oneshot(request).await.unwrap().status() })
    };
    assert_eq!(send().await.unwrap(), 401);
    let held = [send(), send()];
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(deltas(&snap).get("hapnd_auth_tarpit_held{}"), Some(&2.0));
    for task in held {
        assert_eq!(task.await.unwrap(), 429);
    }
    // Snapshots hand back changes: the two held, then the two given back.
    assert_eq!(deltas(&snap).get("hapnd_auth_tarpit_held{}"), Some(&-2.0));
}

#[tokio::test]
async fn lookups_let_through_by_the_seen_valid_set_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let auth = built_with(&recorder, || {
        Authenticator::builder(MemoryKeyStore::new())
            .ttl(Duration::from_millis(100))
            .throttle_failed_attempts(FailedAttemptLimit::new(1, Duration::from_secs(60)))
            .build()
    });
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    let svc = auth.layer().layer(tower::service_fn(echo));
    let send = |key: String| {
        let svc = svc.clone();
        async move {
            let mut request = common::bearer(&key);
            request
                .extensions_mut()
                .insert(ClientAddr("192.0.2.1:1".parse().unwrap()));
            seen(svc.oneshot(request).await.unwrap()).await.status
        }
    };
    let valid = created.key.expose_secret().to_owned();
    assert_eq!(send(valid.clone()).await, 200);
    // One failure spends the budget of 1: the client is blocked.
    let guess = ApiKey::generate(Environment::Live)
        .expose_secret()
        .to_owned();
    assert_eq!(send(guess).await, 401);
    let d = deltas(&snap);
    assert_eq!(counter(&d, "hapnd_auth_seen_valid_hits_total{}"), 0.0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(send(valid).await, 200);
    let d = deltas(&snap);
    assert_eq!(
        counter(&d, "hapnd_auth_seen_valid_hits_total{}"),
        1.0,
        "{d:?}"
    );
}
