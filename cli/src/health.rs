//! `/healthz`'s store check, cached briefly with one check in flight: the admin listener
//! needs no key, so without this every request to it would be a database query.

use std::future::Future;
use std::time::{Duration, Instant};

use hapnd_auth::{KeyHash, KeyStore};

use crate::store::AnyStore;

/// How long a store check's answer is reused.
pub(crate) const HEALTH_TTL: Duration = Duration::from_secs(1);

/// The last answer of `probe` and when it was read. Callers arriving while a check runs
/// wait for it (the lock is held across the check) and share its answer.
pub(crate) struct HealthCache {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl HealthCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        HealthCache {
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached answer if fresh, else runs `probe` (one caller at a time) and caches it.
    pub(crate) async fn get<F, Fut>(&self, probe: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < self.ttl
        {
            return ok;
        }
        let ok = probe().await;
        *last = Some((Instant::now(), ok));
        ok
    }
}

/// Whether the store answers a lookup (of a hash no key has) within 2 s.
pub(crate) async fn probe_store(store: &AnyStore) -> bool {
    let probe = KeyHash::from_bytes([0; 32]);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), store.lookup(&probe)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_share_one_probe_and_it_is_reused_until_the_ttl() {
        let cache = Arc::new(HealthCache::new(Duration::from_millis(300)));
        let probes = Arc::new(AtomicUsize::new(0));
        let check = |cache: Arc<HealthCache>, probes: Arc<AtomicUsize>| async move {
            cache
                .get(|| async {
                    probes.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    true
                })
                .await
        };
        let calls: Vec<_> = (0..100)
            .map(|_| tokio::spawn(check(cache.clone(), probes.clone())))
            .collect();
        for call in calls {
            assert!(call.await.unwrap());
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1, "one check in flight");
        for _ in 0..50 {
            check(cache.clone(), probes.clone()).await;
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1, "answered from the cache");
        tokio::time::sleep(Duration::from_millis(350)).await;
        check(cache.clone(), probes.clone()).await;
        assert_eq!(
            probes.load(Ordering::SeqCst),
            2,
            "checked again after the TTL"
        );
    }

    #[tokio::test]
    async fn a_failed_check_is_cached_too() {
        let cache = HealthCache::new(Duration::from_secs(60));
        assert!(!cache.get(|| async { false }).await);
        assert!(!cache.get(|| async { true }).await);
    }
}
