//! Per-request latency through the layer, in-process: each request is one `oneshot` on a
//! clone of the ready service, response dropped inside the timing. Every row is in the one
//! criterion group `latency`, so the bare `service_fn` baseline runs in the same process
//! and the rows read as "added over bare".
//!
//! Run: `cargo bench --bench latency` (one row: `cargo bench --bench latency -- 'hit/1k'`).
//!
//! Requests are built in criterion's batch setup (untimed): a random pick among pre-built
//! header values, so the timing holds only the service. The pick is uniform, except in
//! `hit/1m_keys_zipf`, where key popularity follows Zipf's law (s = 1.0), the shape of real
//! traffic: the most used keys stay in the CPU's caches, as they would on a real gateway. Store lookups are
//! counted and printed after the group: hit rows must show 0 per request, miss rows 1.

mod common;

use std::cell::OnceCell;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use hapnd_auth::{
    ApiKey, Authenticator, Environment, KeyHash, KeyStore, MemoryKeyStore, NewKey,
    PostgresKeyStore, Principal, RateLimit, RequireScopeLayer, SqliteKeyStore,
};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

use common::{
    Body, Clock, Counting, Fixture, LONG_TTL, Rng, Zipf, bearer, create_keys, ok, prefill, request,
};

/// Requests per timed batch: small enough that the miss row's pool (below) never repeats a
/// key inside one batch.
const BATCH: u64 = 256;
/// Keys the miss row cycles through; each is invalidated (untimed) just before its request.
const MISS_POOL: usize = 1024;

/// The `miss/<store>` and `no_cache_lookup/<store>` rows for one store: the full miss
/// path (store lookup, flight, insert), and what a `from_fn` middleware that asks the store
/// on every request costs: what the cache buys. `Counting` proves each miss reached the store.
fn store_rows<S: KeyStore + Clone>(
    group: &mut BenchmarkGroup<'_, Clock>,
    rt: &Runtime,
    store_name: &str,
    store: S,
) {
    // One counter per row: the audit reads them all after the group.
    let (miss_store, miss_lookups) = Counting::new(store.clone());
    let name = format!("miss/{store_name}");
    row(group, rt, &name, StatusCode::OK, |rt| {
        let auth = Authenticator::builder(miss_store).ttl(LONG_TTL).build();
        let fixtures: Vec<Fixture> = rt.block_on(create_keys(&auth, MISS_POOL));
        let requests = audit(&name, &miss_lookups);
        let invalidator = auth.invalidator();
        let svc = auth.layer().layer(service_fn(ok));
        let mut next = 0;
        (svc, move || {
            // Untimed: forget the key so the timed request is a real miss, not a hit on
            // an entry a TTL has not yet removed.
            let f = &fixtures[next % fixtures.len()];
            next += 1;
            invalidator.invalidate(&f.hash);
            requests.fetch_add(1, Ordering::Relaxed);
            request(&f.header)
        })
    });

    let (store, lookups) = Counting::new(store);
    let name = format!("no_cache_lookup/{store_name}");
    row(group, rt, &name, StatusCode::OK, |rt| {
        // Clones share the keys: the authenticator only creates them here.
        let auth = Authenticator::new(store.clone());
        let fixtures = rt.block_on(create_keys(&auth, 1_000));
        let requests = audit(&name, &lookups);
        let svc = service_fn(move |req| {
            let store = store.clone();
            async move { lookup_every_request(&store, req).await }
        });
        let headers: Vec<HeaderValue> = fixtures.into_iter().map(|f| f.header).collect();
        let mut rng = Rng::new(13);
        (svc, move || {
            requests.fetch_add(1, Ordering::Relaxed);
            request(&headers[rng.below(headers.len())])
        })
    });
}

/// After the group: store lookups per request for each row that has a store.
struct Audit {
    row: String,
    lookups: Arc<AtomicU64>,
    lookups_before: u64,
    requests: Arc<AtomicU64>,
}

static AUDITS: Mutex<Vec<Audit>> = Mutex::new(Vec::new());

fn audit(row: &str, lookups: &Arc<AtomicU64>) -> Arc<AtomicU64> {
    let requests = Arc::new(AtomicU64::new(0));
    AUDITS.lock().unwrap().push(Audit {
        row: row.to_owned(),
        lookups: Arc::clone(lookups),
        lookups_before: lookups.load(Ordering::Relaxed),
        requests: Arc::clone(&requests),
    });
    requests
}

/// A group with this file's settings: 50 samples, 1 s of warm-up, 3 s of measurement.
fn group<'a>(c: &'a mut Criterion<Clock>, name: &str) -> BenchmarkGroup<'a, Clock> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One row: `make` builds the service and a request picker the first time criterion calls
/// the row (so a filtered run skips the 1M-key setup), `expect` is checked once.
fn row<S, P, M>(
    group: &mut BenchmarkGroup<'_, Clock>,
    rt: &Runtime,
    name: &str,
    expect: StatusCode,
    make: M,
) where
    M: FnOnce(&Runtime) -> (S, P),
    P: FnMut() -> Request<Body>,
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: Debug,
{
    let mut make = Some(make);
    let mut state: Option<(S, P)> = None;
    group.bench_function(name, |b| {
        let (svc, pick) = state.get_or_insert_with(|| {
            let (svc, mut pick) = (make.take().expect("made once"))(rt);
            let status = rt
                .block_on(svc.clone().oneshot(pick()))
                .expect("service error")
                .status();
            assert_eq!(status, expect, "row {name} answers {status}");
            (svc, pick)
        });
        b.to_async(rt).iter_batched(
            || (svc.clone(), pick()),
            |(svc, req)| async move {
                drop(svc.oneshot(req).await.expect("service error"));
            },
            BatchSize::NumIterations(BATCH),
        );
    });
}

/// Our layer over `ok`, over keys created in a fresh memory store, all cached.
struct CachedKeys<S> {
    svc: S,
    headers: Arc<[HeaderValue]>,
    /// The store's lookup counter.
    lookups: Arc<AtomicU64>,
}

fn cached_keys(
    rt: &Runtime,
    keys: usize,
) -> CachedKeys<
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + use<>,
> {
    let (store, lookups) = Counting::new(MemoryKeyStore::new());
    let auth = Authenticator::builder(store)
        .capacity(keys as u64 * 2)
        .ttl(LONG_TTL)
        .negative_ttl(LONG_TTL)
        .build();
    let fixtures = rt.block_on(async {
        let fixtures = create_keys(&auth, keys).await;
        prefill(&auth, &fixtures).await;
        fixtures
    });
    assert_eq!(auth.cached_entries(), keys as u64, "every key cached");
    let svc = auth.layer().layer(service_fn(ok));
    let headers = fixtures.into_iter().map(|f| f.header).collect();
    CachedKeys {
        svc,
        headers,
        lookups,
    }
}

/// An authenticator with one cached key made from `new`, and its header.
fn policy_key(rt: &Runtime, new: NewKey) -> (Authenticator, HeaderValue) {
    let auth = Authenticator::builder(MemoryKeyStore::new())
        .ttl(LONG_TTL)
        .build();
    let header = rt.block_on(async {
        let created = auth.create_key(new).await.expect("memory store create");
        let header = bearer(created.key.expose_secret());
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, header.clone());
        auth.authenticate(&headers).await.expect("cached");
        header
    });
    (auth, header)
}

/// Requests that pick among `headers` uniformly.
fn uniform(
    row_name: &str,
    headers: Arc<[HeaderValue]>,
    lookups: &Arc<AtomicU64>,
) -> impl FnMut() -> Request<Body> + use<> {
    let requests = audit(row_name, lookups);
    let mut rng = Rng::new(0x5eed);
    move || {
        requests.fetch_add(1, Ordering::Relaxed);
        request(&headers[rng.below(headers.len())])
    }
}

/// Requests that pick among `headers` with Zipf(s = 1.0) popularity: key `k` is asked
/// `1 / (k + 1)` as often as key 0.
fn zipf(
    row_name: &str,
    headers: Arc<[HeaderValue]>,
    lookups: &Arc<AtomicU64>,
) -> impl FnMut() -> Request<Body> + use<> {
    let mut ranks = Zipf::new(headers.len(), 1.0, 0x21bf);
    // The sampler has the promised shape: key 0 takes 1/H(n) of the traffic.
    let draws = 200_000;
    let top = (0..draws).filter(|_| ranks.sample() == 0).count() as f64 / draws as f64;
    let expected = 1.0 / (1..=headers.len()).map(|k| 1.0 / k as f64).sum::<f64>();
    assert!(
        (top / expected - 1.0).abs() < 0.05,
        "Zipf sampler: key 0 drew {top:.4} of requests, expected {expected:.4}"
    );
    let requests = audit(row_name, lookups);
    move || {
        requests.fetch_add(1, Ordering::Relaxed);
        request(&headers[ranks.sample()])
    }
}

/// A from_fn-style middleware with no cache: validate, hash, and ask the store on every
/// request. What the cache saves.
async fn lookup_every_request<St: KeyStore>(
    store: &St,
    mut req: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let unauthorized = || {
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok(response)
    };
    let Some(token) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let Ok(key) = ApiKey::parse(token) else {
        return unauthorized();
    };
    match store.lookup(&key.hash()).await {
        Ok(Some(record)) if !record.is_revoked() => {
            req.extensions_mut().insert(Principal::from_record(record));
            ok(req).await
        }
        _ => unauthorized(),
    }
}

fn latency(c: &mut Criterion<Clock>) {
    println!("in-process rows measured in {}", Clock::from_env());
    let rt = runtime();
    let mut group = group(c, "latency");

    let any_key = bearer(ApiKey::generate(Environment::Live).expose_secret());

    row(&mut group, &rt, "bare", StatusCode::OK, |_| {
        let header = any_key.clone();
        (service_fn(ok), move || request(&header))
    });

    row(&mut group, &rt, "tower_http_bearer", StatusCode::OK, |_| {
        let key = ApiKey::generate(Environment::Live);
        // Deprecated upstream as too basic for real use; it is here as the floor of
        // "compare one header against a constant".
        #[allow(deprecated)]
        let layer =
            tower_http::validate_request::ValidateRequestHeaderLayer::bearer(key.expose_secret());
        let header = bearer(key.expose_secret());
        (layer.layer(service_fn(ok)), move || request(&header))
    });

    for (name, keys) in [("hit/1_key", 1), ("hit/1k_keys", 1_000)] {
        row(&mut group, &rt, name, StatusCode::OK, |rt| {
            let keys = cached_keys(rt, keys);
            (keys.svc, uniform(name, keys.headers, &keys.lookups))
        });
    }
    // Key policies, on one cached key as `hit/1_key` (a key with neither): three scopes
    // checked by a guard (the required one second in the list), and a rate limit that
    // never trips (the GCRA update on every request is what is measured).
    row(
        &mut group,
        &rt,
        "hit/1_key_scope_checked",
        StatusCode::OK,
        |rt| {
            let new = NewKey::new("tenant-000000", Environment::Live, "ci-pipeline-0").scopes([
                "events:read",
                "events:write",
                "reports:read",
            ]);
            let (auth, header) = policy_key(rt, new);
            let svc = auth
                .layer()
                .layer(RequireScopeLayer::new("events:write").layer(service_fn(ok)));
            (svc, move || request(&header))
        },
    );
    row(
        &mut group,
        &rt,
        "hit/1_key_rate_limited",
        StatusCode::OK,
        |rt| {
            let limit = RateLimit::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000)
                .expect("a valid limit");
            let new =
                NewKey::new("tenant-000000", Environment::Live, "ci-pipeline-0").rate_limit(limit);
            let (auth, header) = policy_key(rt, new);
            (auth.layer().layer(service_fn(ok)), move || request(&header))
        },
    );

    row(
        &mut group,
        &rt,
        "malformed/bad_checksum",
        StatusCode::UNAUTHORIZED,
        |_| {
            let (store, lookups) = Counting::new(MemoryKeyStore::new());
            let auth = Authenticator::new(store);
            let requests = audit("malformed/bad_checksum", &lookups);
            let mut key = ApiKey::generate(Environment::Live)
                .expose_secret()
                .to_owned();
            // Flip one body character: right prefix, length and charset, wrong checksum.
            let flipped = if key.as_bytes()[20] == b'a' { "b" } else { "a" };
            key.replace_range(20..21, flipped);
            let header = bearer(&key);
            let svc = auth.layer().layer(service_fn(ok));
            (svc, move || {
                requests.fetch_add(1, Ordering::Relaxed);
                request(&header)
            })
        },
    );

    row(
        &mut group,
        &rt,
        "unknown/1k_keys",
        StatusCode::UNAUTHORIZED,
        |rt| {
            let (store, lookups) = Counting::new(MemoryKeyStore::new());
            let auth = Authenticator::builder(store)
                .ttl(LONG_TTL)
                .negative_ttl(LONG_TTL)
                .build();
            // Well-formed keys (valid checksum) that no store holds: negative cache entries.
            let headers: Vec<HeaderValue> = (0..1_000)
                .map(|_| bearer(ApiKey::generate(Environment::Live).expose_secret()))
                .collect();
            rt.block_on(async {
                for h in &headers {
                    let mut map = http::HeaderMap::new();
                    map.insert(AUTHORIZATION, h.clone());
                    auth.authenticate(&map).await.expect_err("unknown key");
                }
            });
            let requests = audit("unknown/1k_keys", &lookups);
            let svc = auth.layer().layer(service_fn(ok));
            let mut rng = Rng::new(7);
            (svc, move || {
                requests.fetch_add(1, Ordering::Relaxed);
                request(&headers[rng.below(headers.len())])
            })
        },
    );

    row(
        &mut group,
        &rt,
        "revoked/1k_keys",
        StatusCode::UNAUTHORIZED,
        |rt| {
            let (store, lookups) = Counting::new(MemoryKeyStore::new());
            let auth = Authenticator::builder(store).ttl(LONG_TTL).build();
            let fixtures = rt.block_on(async {
                let fixtures = create_keys(&auth, 1_000).await;
                for f in &fixtures {
                    auth.revoke(&f.id).await.expect("revoke");
                }
                // Cache the revoked records: this row is the cached-rejection path.
                prefill_rejected(&auth, &fixtures).await;
                fixtures
            });
            let requests = audit("revoked/1k_keys", &lookups);
            let svc = auth.layer().layer(service_fn(ok));
            let headers: Vec<HeaderValue> = fixtures.into_iter().map(|f| f.header).collect();
            let mut rng = Rng::new(11);
            (svc, move || {
                requests.fetch_add(1, Ordering::Relaxed);
                request(&headers[rng.below(headers.len())])
            })
        },
    );

    // One million cached keys, built once (the first of these rows that runs) for both
    // traffic shapes. After the 1k-key rows: with the million keys (and their 1.5 GB)
    // alive, the rows that ran after them measured up to 60 ns slower than alone.
    let million = OnceCell::new();
    let name = "hit/1m_keys_uniform";
    row(&mut group, &rt, name, StatusCode::OK, |rt| {
        let keys = million.get_or_init(|| cached_keys(rt, 1_000_000));
        let pick = uniform(name, Arc::clone(&keys.headers), &keys.lookups);
        (keys.svc.clone(), pick)
    });
    let name = "hit/1m_keys_zipf";
    row(&mut group, &rt, name, StatusCode::OK, |rt| {
        let keys = million.get_or_init(|| cached_keys(rt, 1_000_000));
        let pick = zipf(name, Arc::clone(&keys.headers), &keys.lookups);
        (keys.svc.clone(), pick)
    });

    drop(million);

    // The store rows wait on other threads (sqlx's SQLite worker) and processes.
    Clock::wall_time_from_here();
    println!("store rows measured in wall time");
    store_rows(&mut group, &rt, "memory", MemoryKeyStore::new());
    let dir = std::env::temp_dir().join(format!("hapnd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("keys.db");
    let sqlite = rt
        .block_on(SqliteKeyStore::connect(path.to_str().expect("utf-8 path")))
        .expect("open SQLite");
    store_rows(&mut group, &rt, "sqlite", sqlite);
    match std::env::var("HAPND_TEST_DATABASE_URL") {
        Ok(url) => {
            let pg = rt
                .block_on(PostgresKeyStore::connect(&url))
                .expect("connect PostgreSQL");
            store_rows(&mut group, &rt, "postgres", pg);
        }
        Err(_) => eprintln!(
            "SKIPPED: miss/postgres and no_cache_lookup/postgres: HAPND_TEST_DATABASE_URL not set \
             (bash scripts/pg-start.sh prints one)"
        ),
    }

    group.finish();
    let _ = std::fs::remove_dir_all(&dir);

    print_audits();
}

/// Prints, and forgets, the audits of the rows run so far: requests and store lookups.
/// The request counts also turn a profiler's totals for a row (`perf stat` over
/// `--profile-time`) into figures per request.
fn print_audits() {
    for a in AUDITS.lock().unwrap().drain(..) {
        let lookups = a.lookups.load(Ordering::Relaxed) - a.lookups_before;
        let requests = a.requests.load(Ordering::Relaxed);
        if requests == 0 {
            continue; // a row a filter left out
        }
        println!(
            "audit {:<24} {requests:>10} requests, {lookups:>10} store lookups ({:.3} per request)",
            a.row,
            lookups as f64 / requests.max(1) as f64
        );
    }
}

/// Authenticates each key once, expecting a rejection: caches revoked records.
async fn prefill_rejected(auth: &Authenticator, keys: &[Fixture]) {
    for key in keys {
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, key.header.clone());
        auth.authenticate(&headers)
            .await
            .expect_err("a revoked key is refused");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(Clock);
    targets = latency
}

/// What recording metrics adds to a cache hit: the same hit rows (1 key, 1k keys) with no
/// recorder (the handles are no-ops) and with a Prometheus recorder, next to the bare
/// baseline, in one group. Target: at most 20 ns added by the recorder.
///
/// Run: `cargo bench --bench latency -- metrics_cost`
fn metrics_cost(c: &mut Criterion<Clock>) {
    let rt = runtime();
    let mut group = group(c, "metrics_cost");
    let any_key = bearer(ApiKey::generate(Environment::Live).expose_secret());
    row(&mut group, &rt, "bare", StatusCode::OK, |_| {
        let header = any_key.clone();
        (service_fn(ok), move || request(&header))
    });
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // One key, then 1k: with one key the rows differ in the recorder alone, not in where
    // a thousand cache entries landed, so the one-key difference is the steadier figure.
    for keys in [1, 1_000] {
        let shape = if keys == 1 { "1_key" } else { "1k_keys" };
        let name = format!("hit/{shape}/no_recorder");
        row(&mut group, &rt, &name, StatusCode::OK, |rt| {
            hits(rt, keys, &name)
        });
        let name = format!("hit/{shape}/prometheus");
        row(&mut group, &rt, &name, StatusCode::OK, |rt| {
            // Handles are registered when the authenticator is built: with this recorder.
            metrics::with_local_recorder(&recorder, || hits(rt, keys, &name))
        });
        // The no-recorder row again, built last: a control for order and memory-layout
        // effects between rows built one after the other.
        let name = format!("hit/{shape}/no_recorder_again");
        row(&mut group, &rt, &name, StatusCode::OK, |rt| {
            hits(rt, keys, &name)
        });
    }
    group.finish();
    print_audits();
    // The recorder row did record (skipped when a filter left the row out).
    let text = handle.render();
    if text.contains("hapnd_auth") {
        assert!(
            text.contains(
                r#"hapnd_auth_requests_total{outcome="ok",environment="live",cache="hit"}"#
            ),
            "{text}"
        );
        println!("prometheus recorder saw the hits:");
        for line in text
            .lines()
            .filter(|l| l.starts_with("hapnd_auth_requests_total") && l.contains(r#"cache="hit""#))
        {
            println!("  {line}");
        }
    }
}

/// A hit row over `keys` cached keys: the authenticator (and its metric handles) is built
/// inside, so under whatever recorder is installed when the row is set up.
fn hits(
    rt: &Runtime,
    keys: usize,
    row_name: &str,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + use<>,
    impl FnMut() -> Request<Body> + use<>,
) {
    let keys = cached_keys(rt, keys);
    (keys.svc, uniform(row_name, keys.headers, &keys.lookups))
}

/// `iters` calls of `timed`, measured in blocks, each block after as many calls of
/// `untimed`, which are not measured.
fn interleaved<T, U>(
    iters: u64,
    mut timed: impl FnMut() -> T,
    mut untimed: impl FnMut() -> U,
) -> Duration {
    use criterion::measurement::Measurement;
    const BLOCK: u64 = 256;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BLOCK);
        for _ in 0..n {
            black_box(untimed());
        }
        let start = Clock.start();
        for _ in 0..n {
            black_box(timed());
        }
        total += Clock.end(start);
        left -= n;
    }
    total
}

criterion_group! {
    name = metrics;
    config = Criterion::default().with_measurement(Clock);
    targets = metrics_cost
}
/// Where a hit's time goes, part by part, in one group: the authenticator alone (format
/// check, SHA-256, cache get, verification, metrics: what `hit/1_key` adds minus the
/// request plumbing), without and with a Prometheus recorder, SHA-256 alone, and what admitting a request does to it (strip the
/// `Authorization` header, insert the principal into extensions that were empty, as they
/// are in the latency rows). Not targets: the floor the hit rows are read against.
///
/// Run: `cargo bench --bench latency -- parts`
fn parts(c: &mut Criterion<Clock>) {
    let rt = runtime();
    let mut group = group(c, "parts");
    let store = MemoryKeyStore::new();
    let auth = Authenticator::builder(store.clone()).ttl(LONG_TTL).build();
    let fixture = rt.block_on(create_keys(&auth, 1)).remove(0);
    let key = fixture
        .header
        .to_str()
        .expect("ASCII header")
        .strip_prefix("Bearer ")
        .expect("a bearer header")
        .to_owned();
    let principal = rt.block_on(auth.authenticate_key(&key)).expect("valid key");
    // The same store (clones share keys) behind an authenticator whose handles record into
    // a Prometheus recorder: the metrics cost in a tight loop, with less noise than the
    // request rows.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let recorded = metrics::with_local_recorder(&recorder, || {
        Authenticator::builder(store).ttl(LONG_TTL).build()
    });
    rt.block_on(recorded.authenticate_key(&key))
        .expect("valid key");
    // The hit completes without waiting: polled once, with a waker nobody wakes.
    let ready = |future: std::pin::Pin<&mut dyn Future<Output = _>>| match future
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("a cache hit waited"),
    };
    // Interleaved: each row times its own blocks of calls between blocks of the other's,
    // untimed, so drift over the run, frequency changes and the order of rows hit both
    // alike. (Rows run one after the other differed by up to 40 ns between two identical
    // no-recorder rows, twice the target this group checks.)
    let one = |auth: &Authenticator| {
        let result: Result<Principal, _> =
            ready(std::pin::pin!(auth.authenticate_key(black_box(&key))));
        result.expect("cached key")
    };
    let pair = [("no_recorder", &auth), ("prometheus", &recorded)];
    for (index, (name, auth)) in pair.into_iter().enumerate() {
        let other = pair[1 - index].1;
        group.bench_function(format!("authenticate_key/1_key/{name}"), |b| {
            b.iter_custom(|iters| interleaved(iters, || one(auth), || one(other)))
        });
    }
    let text = recorder.handle().render();
    assert!(
        text.contains(r#"hapnd_auth_requests_total{outcome="ok",environment="live",cache="hit"}"#),
        "the recorder saw no hit: {text}"
    );
    group.bench_function("sha256", |b| b.iter(|| KeyHash::of(black_box(&key))));
    group.bench_function("admit", |b| {
        b.iter_batched(
            || request(&fixture.header),
            |mut req| {
                req.headers_mut().remove(AUTHORIZATION);
                req.extensions_mut().insert(principal.clone());
                req
            },
            BatchSize::NumIterations(BATCH),
        )
    });
    group.finish();
}

criterion_group! {
    name = floor;
    config = Criterion::default().with_measurement(Clock);
    targets = parts
}
criterion_main!(benches, metrics, floor);
