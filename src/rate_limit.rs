//! Per-key rate limits: the GCRA state of each limited key ([`KeyLimiter`]) and the
//! bounded table that keeps it across cache refills ([`KeyLimits`]).
//!
//! A key's [`RateLimit`] is enforced on every request, cached hits included: the key's
//! [`Principal`](crate::Principal) holds its limiter, so a hit costs one atomic
//! compare-and-swap (governor's GCRA) and nothing else. Keys without a limit hold none
//! and pay one pointer test.
//!
//! The state outlives a principal: a cache refill (each TTL, an invalidation) builds a
//! new principal, which takes the same limiter from the table, so a key's budget is not
//! refilled by the cache expiring. The table is bounded (as many keys as the cache) and
//! forgets a limiter once the key has been idle long enough to have its whole burst back
//! (plus the cache's TTL, during which a cached principal may still use it without
//! touching the table): forgetting it then is exact, a full bucket is what a new limiter
//! has. Past the bound, least-used limiters are evicted, and those keys start again from a
//! full bucket.
//!
//! Limits are per process: with N gateways behind a load balancer a key gets up to N
//! times its limit (see docs/rate-limits.md).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, RateLimiter};

use crate::store::{KeyId, RateLimit};

/// One key's GCRA state and its limit.
pub(crate) struct KeyLimiter {
    limit: RateLimit,
    gcra: DefaultDirectRateLimiter,
    clock: DefaultClock,
    /// How long the table keeps this limiter after its last use by a refill.
    keep: Duration,
}

impl KeyLimiter {
    pub(crate) fn new(limit: RateLimit, slack: Duration) -> Self {
        let clock = DefaultClock::default();
        KeyLimiter {
            limit,
            gcra: RateLimiter::direct_with_clock(limit.quota(), clock.clone()),
            clock,
            keep: limit
                .refill()
                .saturating_add(slack)
                .saturating_add(Duration::from_secs(1)),
        }
    }

    /// Takes one request from the budget; `Err(wait)` when it is spent: the request may
    /// be retried after `wait`.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), Duration> {
        self.gcra
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }
}

struct KeepIdle;

impl moka::Expiry<KeyId, Arc<KeyLimiter>> for KeepIdle {
    fn expire_after_create(
        &self,
        _: &KeyId,
        limiter: &Arc<KeyLimiter>,
        _: Instant,
    ) -> Option<Duration> {
        Some(limiter.keep)
    }

    fn expire_after_read(
        &self,
        _: &KeyId,
        limiter: &Arc<KeyLimiter>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(limiter.keep)
    }

    fn expire_after_update(
        &self,
        _: &KeyId,
        limiter: &Arc<KeyLimiter>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(limiter.keep)
    }
}

/// The limiters of the keys with a rate limit, by key id. Empty (and never touched) when
/// no key has a limit.
pub(crate) struct KeyLimits {
    table: moka::sync::Cache<KeyId, Arc<KeyLimiter>>,
    /// How long a cached principal may use a limiter without a refill: the cache's TTL
    /// (and stale-if-error window).
    slack: Duration,
}

impl KeyLimits {
    pub(crate) fn new(capacity: u64, slack: Duration) -> Self {
        KeyLimits {
            table: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(KeepIdle)
                .build(),
            slack,
        }
    }

    /// The limiter of key `id` with `limit`: the one already kept, or a new one (also when
    /// the kept one has another limit, which only a hand-edited row can cause).
    pub(crate) fn limiter(&self, id: &KeyId, limit: RateLimit) -> Arc<KeyLimiter> {
        let limiter = self
            .table
            .get_with_by_ref(id, || Arc::new(KeyLimiter::new(limit, self.slack)));
        if limiter.limit == limit {
            return limiter;
        }
        let fresh = Arc::new(KeyLimiter::new(limit, self.slack));
        self.table.insert(id.clone(), Arc::clone(&fresh));
        fresh
    }

    /// Limiters kept now (runs pending housekeeping first).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.table.run_pending_tasks();
        self.table.entry_count()
    }
}

impl fmt::Debug for KeyLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLimits").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_admits_its_burst_then_says_how_long_to_wait() {
        let limit: RateLimit = "10/s,burst=3".parse().unwrap();
        let limiter = KeyLimiter::new(limit, Duration::ZERO);
        for _ in 0..3 {
            limiter.check().unwrap();
        }
        let wait = limiter.check().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn the_table_shares_one_limiter_per_key_and_forgets_idle_ones() {
        let limits = KeyLimits::new(100, Duration::ZERO);
        let limit: RateLimit = "1000/s,burst=2".parse().unwrap();
        let (a, b) = (KeyId::generate(), KeyId::generate());
        let first = limits.limiter(&a, limit);
        assert!(Arc::ptr_eq(&first, &limits.limiter(&a, limit)));
        assert!(!Arc::ptr_eq(&first, &limits.limiter(&b, limit)));
        // Another limit for the same id (a hand-edited row): a new limiter.
        let other: RateLimit = "1000/s,burst=1".parse().unwrap();
        assert_eq!(limits.limiter(&a, other).limit(), other);
        assert_eq!(limits.len(), 2);
        // Refill is 2 ms; kept for refill + 1 s.
        std::thread::sleep(Duration::from_millis(1_100));
        let _ = limits.limiter(&b, limit); // keeps b
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(limits.len(), 1);
    }
}
