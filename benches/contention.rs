//! Contention: two threads hammering cache hits (throughput against the bare service on the
//! same two threads), and 100 concurrent misses on one key (time until all are answered,
//! with the store asked exactly once per round; asserted).
//!
//! Run: `cargo bench --bench contention`.
//!
//! In the throughput rows each thread builds its requests inside the timed loop (the bare
//! row pays the same), so compare rows as ratios to `hits/bare_2_threads`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hapnd_auth::{Authenticator, MemoryKeyStore};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt, service_fn};

use common::{Body, Counting, LONG_TTL, Rng, create_keys, ok, prefill, request};

/// Concurrent requests in the single-flight row.
const STAMPEDE: usize = 100;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `iters` requests split over `threads` OS threads, each with its own current-thread
/// runtime; returns the wall time from the start barrier to the last thread's end.
fn hammer<S>(svc: &S, headers: &[HeaderValue], threads: usize, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let barrier = &barrier;
            let svc = svc.clone();
            scope.spawn(move || {
                let rt = current_thread();
                let mut rng = Rng::new(t as u64 + 1);
                let n = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
                barrier.wait();
                rt.block_on(async {
                    for _ in 0..n {
                        let req = request(&headers[rng.below(headers.len())]);
                        drop(svc.clone().oneshot(req).await.expect("service error"));
                    }
                });
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Leaving the scope joins every thread.
        start
    })
    .elapsed()
}

fn hits(c: &mut Criterion) {
    let rt = current_thread();
    let (store, lookups) = Counting::new(MemoryKeyStore::new());
    let auth = Authenticator::builder(store)
        .capacity(10_000)
        .ttl(LONG_TTL)
        .build();
    let fixtures = rt.block_on(async {
        let fixtures = create_keys(&auth, 1_000).await;
        prefill(&auth, &fixtures).await;
        fixtures
    });
    let headers: Vec<HeaderValue> = fixtures.into_iter().map(|f| f.header).collect();
    let layered = auth.layer().layer(service_fn(ok));
    let bare = service_fn(ok);
    let before = lookups.load(Ordering::Relaxed);

    let mut group = c.benchmark_group("hits");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("bare_2_threads", |b| {
        b.iter_custom(|iters| hammer(&bare, &headers, 2, iters));
    });
    group.bench_function("layer_1k_keys_2_threads", |b| {
        b.iter_custom(|iters| hammer(&layered, &headers, 2, iters));
    });
    group.bench_function("layer_1k_keys_1_thread", |b| {
        b.iter_custom(|iters| hammer(&layered, &headers, 1, iters));
    });
    // One hot key: both threads share one shard lock and one principal's refcount.
    group.bench_function("layer_1_hot_key_2_threads", |b| {
        b.iter_custom(|iters| hammer(&layered, &headers[..1], 2, iters));
    });
    group.finish();
    assert_eq!(
        lookups.load(Ordering::Relaxed),
        before,
        "hit rows must not reach the store"
    );
}

/// Store rows for the stampede: the memory store as it is, and slowed to 1 ms a lookup as a
/// network round trip would be, keeping the flight in the air while the other 99 arrive.
fn stampede_stores() -> Vec<(&'static str, Authenticator, Arc<AtomicU64>)> {
    let (instant, instant_calls) = Counting::new(MemoryKeyStore::new());
    let (slow, slow_calls) = Counting::slow(MemoryKeyStore::new(), Duration::from_millis(1));
    let build = |b: hapnd_auth::AuthenticatorBuilder| b.ttl(LONG_TTL).build();
    vec![
        (
            "memory",
            build(Authenticator::builder(instant)),
            instant_calls,
        ),
        (
            "memory_1ms",
            build(Authenticator::builder(slow)),
            slow_calls,
        ),
    ]
}

fn stampede(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("stampede");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (name, auth, calls) in stampede_stores() {
        let key = rt.block_on(create_keys(&auth, 1)).remove(0);
        let invalidator = auth.invalidator();
        let svc = auth.layer().layer(service_fn(ok));
        let mut rounds = 0u64;
        group.bench_function(format!("{STAMPEDE}_misses_one_key/{name}"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let svc = svc.clone();
                let (key, invalidator, calls) = (&key, &invalidator, &calls);
                rounds += iters;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        invalidator.invalidate(&key.hash);
                        let before = calls.load(Ordering::Relaxed);
                        let requests: Vec<_> =
                            (0..STAMPEDE).map(|_| request(&key.header)).collect();
                        let start = Instant::now();
                        let tasks: Vec<_> = requests
                            .into_iter()
                            .map(|req| tokio::spawn(svc.clone().oneshot(req)))
                            .collect();
                        for task in tasks {
                            let response = task.await.expect("task").expect("service");
                            assert_eq!(response.status(), StatusCode::OK);
                        }
                        total += start.elapsed();
                        let store_calls = calls.load(Ordering::Relaxed) - before;
                        assert_eq!(store_calls, 1, "{STAMPEDE} misses, one store call");
                    }
                    total
                }
            });
        });
        println!(
            "audit stampede/{name}: {rounds} rounds of {STAMPEDE} concurrent misses, \
             store calls per round = 1 (asserted every round)"
        );
    }
    group.finish();
}

criterion_group!(benches, hits, stampede);
criterion_main!(benches);
