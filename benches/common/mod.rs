//! Shared by the benchmarks: a store that counts its lookups, key fixtures and services.
// Each bench target compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hapnd_auth::{
    Authenticator, Environment, KeyHash, KeyId, KeyRecord, KeyStore, LastUsed, NewKey, StoreError,
};
use http::{HeaderValue, Request, Response};
use http_body_util::Full;

/// The request body every benchmark sends, and the response body the inner service returns.
pub type Body = Full<Bytes>;

/// Wraps a store and counts calls to `lookup`: proves hits touch no store and misses do.
/// Optionally slows each lookup down, as a network round trip would.
#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    lookups: Arc<AtomicU64>,
    delay: Option<Duration>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> (Self, Arc<AtomicU64>) {
        let lookups = Arc::new(AtomicU64::new(0));
        (
            Counting {
                inner,
                lookups: Arc::clone(&lookups),
                delay: None,
            },
            lookups,
        )
    }

    #[allow(dead_code)] // not every bench slows its store
    pub fn slow(inner: S, delay: Duration) -> (Self, Arc<AtomicU64>) {
        let (mut counting, lookups) = Self::new(inner);
        counting.delay = Some(delay);
        (counting, lookups)
    }

    /// What every lookup does before it asks the store: count, then the delay, if any.
    async fn count_and_wait(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
    }
}

impl<S: KeyStore> KeyStore for Counting<S> {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.count_and_wait().await;
        self.inner.lookup(hash).await
    }

    async fn lookup_for_request(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.count_and_wait().await;
        self.inner.lookup_for_request(hash).await
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.inner.insert(record).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get(id).await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(tenant).await
    }

    async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
        self.inner.revoke(id, at).await
    }

    async fn record_usage(&self, used: &[LastUsed]) -> Result<(), StoreError> {
        self.inner.record_usage(used).await
    }
}

/// TTLs far longer than any benchmark, so a "hit" row never turns into misses mid-run.
pub const LONG_TTL: Duration = Duration::from_secs(3600);

/// One key the benchmarks present: its pre-built header value, hash and id.
#[derive(Clone)]
pub struct Fixture {
    pub header: HeaderValue,
    pub hash: KeyHash,
    pub id: KeyId,
}

/// Creates `n` live keys through `auth` (10 keys per tenant, realistic name lengths).
pub async fn create_keys(auth: &Authenticator, n: usize) -> Vec<Fixture> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let new = NewKey::new(
            format!("tenant-{:06}", i / 10),
            Environment::Live,
            format!("ci-pipeline-{i}"),
        );
        let created = auth.create_key(new).await.expect("memory store create");
        out.push(Fixture {
            header: bearer(created.key.expose_secret()),
            hash: created.record.hash,
            id: created.record.id,
        });
    }
    out
}

/// Authenticates every key once, so each is cached.
pub async fn prefill(auth: &Authenticator, keys: &[Fixture]) {
    for key in keys {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, key.header.clone());
        auth.authenticate(&headers)
            .await
            .expect("a fresh key authenticates");
    }
}

pub fn bearer(key: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {key}")).expect("keys are visible ASCII")
}

/// A GET with `Authorization: <header>`.
pub fn request(header: &HeaderValue) -> Request<Body> {
    let mut req = Request::new(Body::default());
    req.headers_mut()
        .insert(http::header::AUTHORIZATION, header.clone());
    req
}

/// The inner service every row wraps: answers 200 with an empty body.
pub async fn ok(_: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::default()))
}

/// A tiny xorshift generator: uniform choice of keys without a `rand` dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        // Multiply-shift: unbiased enough for picking among at most a few million keys.
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Zipf-distributed ranks in `0..n`: rank `k` (0-based) is drawn with probability
/// proportional to `1 / (k + 1)^s`, the shape of real API traffic (a few keys make most
/// requests). Inverse-CDF sampling over a precomputed table: exact, and cheap enough for
/// criterion's untimed batch setup.
pub struct Zipf {
    cdf: Vec<f64>,
    rng: Rng,
}

impl Zipf {
    pub fn new(n: usize, s: f64, seed: u64) -> Self {
        assert!(n > 0, "Zipf over an empty set");
        let mut total = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                total += (k as f64).powf(-s);
                total
            })
            .collect();
        Zipf {
            cdf,
            rng: Rng::new(seed),
        }
    }

    pub fn sample(&mut self) -> usize {
        let total = *self.cdf.last().expect("n > 0");
        let u = self.rng.unit() * total;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// The clock of the in-process latency rows: wall time, or, with
/// `HAPND_BENCH_CLOCK=thread_cpu`, the benchmark thread's CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`). On a quiet machine the two agree for a single-threaded,
/// CPU-bound row; on a machine shared with other builds, wall time also counts the time
/// the thread waited for a core, and CPU time does not. Rows that wait on another thread
/// or process (a store) must use wall time: [`Clock::wall_time_from_here`].
pub struct Clock;

static THREAD_CPU: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Clock {
    /// Reads `HAPND_BENCH_CLOCK`; returns the name of the clock in use.
    pub fn from_env() -> &'static str {
        let cpu = std::env::var("HAPND_BENCH_CLOCK").is_ok_and(|v| v == "thread_cpu");
        THREAD_CPU.store(cpu, Ordering::Relaxed);
        if cpu { "thread CPU time" } else { "wall time" }
    }

    /// Every row measured after this call uses wall time.
    pub fn wall_time_from_here() {
        THREAD_CPU.store(false, Ordering::Relaxed);
    }
}

pub enum ClockStart {
    Wall(std::time::Instant),
    ThreadCpu(Duration),
}

fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    // Linux's CLOCK_THREAD_CPUTIME_ID.
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout) for the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

static WALL: criterion::measurement::WallTime = criterion::measurement::WallTime;

impl criterion::measurement::Measurement for Clock {
    type Intermediate = ClockStart;
    type Value = Duration;

    fn start(&self) -> ClockStart {
        if THREAD_CPU.load(Ordering::Relaxed) {
            ClockStart::ThreadCpu(thread_cpu_time())
        } else {
            ClockStart::Wall(std::time::Instant::now())
        }
    }

    fn end(&self, start: ClockStart) -> Duration {
        match start {
            ClockStart::Wall(at) => at.elapsed(),
            ClockStart::ThreadCpu(at) => thread_cpu_time().saturating_sub(at),
        }
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        WALL.formatter()
    }
}
