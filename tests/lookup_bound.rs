//! The bound on concurrent store lookups: never more than N at once, the rest 503 (never
//! 401), cached keys unaffected, coalesced misses counted once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::{assert_rejected, call};
use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, Environment, KeyHash, KeyRecord, KeyStore,
    MemoryKeyStore, StoreError,
};

/// A store whose lookups take `delay_ms` (changeable at run time), counting how many run
/// at once.
#[derive(Clone, Default)]
struct Slow {
    inner: MemoryKeyStore,
    delay_ms: Arc<AtomicU64>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    lookups: Arc<AtomicUsize>,
}

impl Slow {
    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl KeyStore for Slow {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = Running(self.running.clone());
        self.most.fetch_max(now, Ordering::SeqCst);
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        tokio::time::sleep(delay).await;
        self.inner.lookup(hash).await
    }
    forward_all_but_lookup!(inner);
}

const BOUND: usize = 2;
const FLOOD: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_lookups_the_rest_503_cached_keys_200() {
    let store = Slow::default();
    let auth = Authenticator::builder(store.clone())
        .max_concurrent_lookups(BOUND)
        .lookup_timeout(Duration::from_millis(300))
        .build();
    let created = common::live_key(&auth).await;
    let cached = created.key.expose_secret().to_owned();
    assert_eq!(call(&auth, &cached).await.status, 200);
    let before = store.lookups();

    // From now on the store hangs: every slot is held for the whole lookup timeout.
    store.set_delay(Duration::from_secs(30));
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let key = ApiKey::generate(Environment::Live)
                .expose_secret()
                .to_owned();
            common::spawn_call(&auth, &key)
        })
        .collect();
    // While the flood waits, the cached key is answered from the cache.
    for _ in 0..20 {
        let seen = call(&auth, &cached).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    let mut refused = 0;
    for handle in flood {
        let status = handle.await.unwrap();
        assert_eq!(status, 503, "over the bound: 503, never 401");
        refused += 1;
    }
    assert_eq!(refused, FLOOD);
    let most = store.most.load(Ordering::SeqCst);
    assert!(most <= BOUND, "{most} lookups ran at once, bound {BOUND}");
    assert_eq!(most, BOUND, "the flood should have filled the bound");
    let lookups = store.lookups() - before;
    assert!(
        lookups < FLOOD / 2,
        "{lookups} of {FLOOD} misses reached the store: the bound refused too few"
    );
    // The 503 carries Retry-After and the documented code.
    store.set_delay(Duration::from_secs(30));
    let seen = call(&auth, ApiKey::generate(Environment::Live).expose_secret()).await;
    assert_rejected(&seen, AuthErrorKind::Unavailable);
    assert!(seen.retry_after.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_misses_take_one_slot() {
    let store = Slow::default();
    store.set_delay(Duration::from_millis(100));
    let auth = Authenticator::builder(store.clone())
        .max_concurrent_lookups(1)
        .lookup_timeout(Duration::from_secs(5))
        .build();
    let created = common::live_key(&auth).await;
    let key = created.key.expose_secret();
    let calls: Vec<_> = (0..20).map(|_| common::spawn_call(&auth, key)).collect();
    for handle in calls {
        assert_eq!(handle.await.unwrap(), 200);
    }
    assert_eq!(store.lookups(), 1);
}
