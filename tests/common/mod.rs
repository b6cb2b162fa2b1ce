//! Shared test fixtures: an echo service, request builders, an instrumented store, and
//! the conformance suite every `KeyStore` must pass.
#![allow(dead_code, unreachable_pub)]

pub mod audit;
pub mod conformance;
pub mod expiry;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hapnd_auth::{
    AuthError, AuthErrorKind, KeyHash, KeyId, KeyRecord, KeyStore, MemoryKeyStore, Principal,
    StoreError, StoreErrorKind,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;

pub type Body = Full<Bytes>;

/// The inner service: answers 200, echoing the principal it saw into the response
/// extensions and whether an `Authorization` header reached it.
pub async fn echo(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let mut response = Response::new(Body::from("inner"));
    if let Some(p) = req.extensions().get::<Principal>() {
        response.extensions_mut().insert(p.clone());
    }
    let saw = req.headers().contains_key(http::header::AUTHORIZATION);
    response.headers_mut().insert(
        "x-saw-authorization",
        HeaderValue::from_static(if saw { "yes" } else { "no" }),
    );
    Ok(response)
}

pub fn request(authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::get("/v1/events");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::default()).unwrap()
}

pub fn bearer(key: &str) -> Request<Body> {
    request(Some(&format!("Bearer {key}")))
}

/// Status, `WWW-Authenticate`, and `error.code` of a response; `None` code for a 200.
pub struct Seen {
    pub status: StatusCode,
    pub challenge: Option<String>,
    pub code: Option<String>,
    pub body: String,
    pub retry_after: Option<String>,
    pub principal: Option<Principal>,
    pub error: Option<AuthError>,
    pub saw_authorization: Option<String>,
}

pub async fn seen(response: Response<Body>) -> Seen {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Seen {
        status: parts.status,
        challenge: header("www-authenticate"),
        code,
        retry_after: header("retry-after"),
        saw_authorization: header("x-saw-authorization"),
        principal: parts.extensions.get::<Principal>().cloned(),
        error: parts.extensions.get::<AuthError>().cloned(),
        body,
    }
}

/// One request with `key` through `auth`'s layer around [`echo`].
pub async fn call(auth: &hapnd_auth::Authenticator, key: &str) -> Seen {
    use tower::{Layer, ServiceExt};
    let svc = auth.layer().layer(tower::service_fn(echo));
    seen(svc.oneshot(bearer(key)).await.unwrap()).await
}

/// [`call`] on a task of its own; resolves to the status.
pub fn spawn_call(
    auth: &hapnd_auth::Authenticator,
    key: &str,
) -> tokio::task::JoinHandle<StatusCode> {
    let (auth, key) = (auth.clone(), key.to_owned());
    tokio::spawn(async move { call(&auth, &key).await.status })
}

/// A live key for tenant `acme`, named `ci`, created through `auth`.
pub async fn live_key(auth: &hapnd_auth::Authenticator) -> hapnd_auth::CreatedKey {
    let new = hapnd_auth::NewKey::new("acme", hapnd_auth::Environment::Live, "ci");
    auth.create_key(new).await.unwrap()
}

pub fn assert_rejected(seen: &Seen, kind: AuthErrorKind) {
    assert_eq!(seen.status, kind.status(), "body: {}", seen.body);
    assert_eq!(
        seen.code.as_deref(),
        Some(kind.code()),
        "body: {}",
        seen.body
    );
    assert_eq!(seen.challenge.as_deref(), kind.challenge());
    assert_eq!(seen.error.as_ref().map(AuthError::kind), Some(kind));
    assert!(
        seen.principal.is_none(),
        "a rejected request reached the inner service"
    );
}

/// A store (the memory store unless told otherwise) that counts lookups, can fail on
/// demand, and can hold lookups at a gate.
#[derive(Clone, Default)]
pub struct TestStore<S = MemoryKeyStore> {
    pub inner: S,
    pub lookups: Arc<AtomicUsize>,
    pub failing: Arc<AtomicBool>,
    /// When each `record_usage` call came, failed ones included.
    pub usage_writes: Arc<Mutex<Vec<std::time::Instant>>>,
    gate: Arc<Mutex<Option<Gate>>>,
    delay: Duration,
}

#[derive(Clone)]
struct Gate {
    entered: Arc<Semaphore>,
    release: Arc<Semaphore>,
}

/// The test's side of a gate: see a lookup arrive, then let it go.
pub struct GateHandle {
    entered: Arc<Semaphore>,
    release: Arc<Semaphore>,
}

impl GateHandle {
    /// Waits until a lookup has read the store and is held at the gate.
    pub async fn entered(&self) {
        self.entered.acquire().await.unwrap().forget();
    }

    /// Lets one held lookup return.
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

impl TestStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> TestStore<S> {
    /// Instruments `inner`.
    pub fn wrap(inner: S) -> Self {
        TestStore {
            inner,
            lookups: Default::default(),
            failing: Default::default(),
            usage_writes: Default::default(),
            gate: Default::default(),
            delay: Duration::ZERO,
        }
    }

    /// Every lookup takes `delay` (a database round trip) after reading.
    pub fn lookup_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// From now on every lookup reads the store, then waits at the gate before returning.
    pub fn close_gate(&self) -> GateHandle {
        let gate = Gate {
            entered: Arc::new(Semaphore::new(0)),
            release: Arc::new(Semaphore::new(0)),
        };
        let handle = GateHandle {
            entered: gate.entered.clone(),
            release: gate.release.clone(),
        };
        *self.gate.lock().unwrap() = Some(gate);
        handle
    }

    pub fn open_gate(&self) {
        *self.gate.lock().unwrap() = None;
    }
}

impl<S: KeyStore + Clone> KeyStore for TestStore<S> {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test store is down",
            ));
        }
        // Read first, then wait: the answer is what the store held when the lookup ran.
        let result = self.inner.lookup(hash).await;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.entered.add_permits(1);
            gate.release.acquire().await.unwrap().forget();
        }
        result
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

    async fn record_usage(&self, used: &[hapnd_auth::LastUsed]) -> Result<(), StoreError> {
        self.usage_writes
            .lock()
            .unwrap()
            .push(std::time::Instant::now());
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test store is down",
            ));
        }
        self.inner.record_usage(used).await
    }
}

/// A tenant name no other test uses, so tests can share one database.
pub fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{suffix}")
}

/// `at` with the sub-millisecond part dropped: the precision the SQL stores keep.
pub fn ms(at: SystemTime) -> SystemTime {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

/// `record` at the stores' millisecond precision, to compare what went in and came out.
pub fn normalized(mut record: KeyRecord) -> KeyRecord {
    record.created_at = ms(record.created_at);
    record.revoked_at = record.revoked_at.map(ms);
    record.expires_at = record.expires_at.map(ms);
    record.last_used_at = record.last_used_at.map(ms);
    record
}

/// Polls `check` every 5 ms until it holds or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Inside `impl KeyStore for X`: every method but `lookup` forwarded to `self.$inner`, for
/// test stores that only change what a lookup does.
#[macro_export]
macro_rules! forward_all_but_lookup {
    ($inner:ident) => {
        async fn insert(
            &self,
            record: &hapnd_auth::KeyRecord,
        ) -> Result<(), hapnd_auth::StoreError> {
            hapnd_auth::KeyStore::insert(&self.$inner, record).await
        }
        async fn get(
            &self,
            id: &hapnd_auth::KeyId,
        ) -> Result<Option<hapnd_auth::KeyRecord>, hapnd_auth::StoreError> {
            hapnd_auth::KeyStore::get(&self.$inner, id).await
        }
        async fn list(
            &self,
            tenant: &str,
        ) -> Result<Vec<hapnd_auth::KeyRecord>, hapnd_auth::StoreError> {
            hapnd_auth::KeyStore::list(&self.$inner, tenant).await
        }
        async fn revoke(
            &self,
            id: &hapnd_auth::KeyId,
            at: std::time::SystemTime,
        ) -> Result<hapnd_auth::KeyRecord, hapnd_auth::StoreError> {
            hapnd_auth::KeyStore::revoke(&self.$inner, id, at).await
        }
        async fn record_usage(
            &self,
            used: &[hapnd_auth::LastUsed],
        ) -> Result<(), hapnd_auth::StoreError> {
            hapnd_auth::KeyStore::record_usage(&self.$inner, used).await
        }
    };
}

/// A writer that keeps what a tracing subscriber writes, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's tracing output at `level` and above until the guard is dropped.
pub fn capture_logs(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}
