//! What the library counts, through the [`metrics`] facade: the application installs a
//! recorder (Prometheus, StatsD, ...) and the library records into it.
//!
//! Handles are registered once, when the [`Authenticator`](crate::Authenticator) is built,
//! and kept: a request increments an atomic, it does not look a metric up by name. So
//! **install the recorder before building the authenticator**; one built earlier records
//! nothing. Labels are low-cardinality only (outcome code, environment, source, kind):
//! never a key, hash, key id or tenant.
//!
//! A request increments **one** counter. The cache's answer is a label of
//! `hapnd_auth_requests_total`, not a counter of its own: with
//! `metrics-exporter-prometheus` every increment is two atomic read-modify-writes (the
//! value and the handle's generation, for idle expiry) behind a dynamic call, and a second
//! counter per hit doubled what metrics add to the hit path (`benches/latency.rs`,
//! `parts/authenticate_key`). The hit ratio is
//! `sum(rate(hapnd_auth_requests_total{cache="hit"}[5m])) / sum(rate(hapnd_auth_requests_total{cache!="none"}[5m]))`.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `hapnd_auth_requests_total` | counter | `outcome` (`ok` or the error code), `environment` (`live`, `sandbox`, `none`), `cache` (`hit`, `negative_hit`, `miss`, `none`) | every authentication, by what the cache said (`none`: no well-formed key to look up) |
//! | `hapnd_auth_store_lookup_duration_seconds` | histogram | | store lookups, timeouts included |
//! | `hapnd_auth_store_lookups_in_flight` | gauge | | store lookups running now |
//! | `hapnd_auth_store_errors_total` | counter | `kind` (`unavailable`, `timeout`, ...) | failed store lookups |
//! | `hapnd_auth_store_lookups_rejected_total` | counter | | lookups refused by the concurrency bound (503) |
//! | `hapnd_auth_coalesced_waiters_total` | counter | | misses that waited on another request's lookup |
//! | `hapnd_auth_invalidations_total` | counter | `source` (`revoke`, `postgres_notify`, `sqlite_change_log`, `api`, `flush`) | cache invalidations (a notified PostgreSQL change counts twice: its payload, then the change-log read) |
//! | `hapnd_auth_invalidation_channel_healthy` | gauge | | 1 while revocations made elsewhere reach this process, else 0 |
//! | `hapnd_auth_throttled_requests_total` | counter | | 429 `too_many_failed_attempts` answers |
//! | `hapnd_auth_cached_entries` | gauge | | keys cached (known and unknown): set by `Authenticator::cached_entries`, and approximately on each miss |
//! | `hapnd_auth_throttled_clients` | gauge | | clients tracked by the throttle: set by `Authenticator::throttled_clients`, and approximately on each throttled answer |
//! | `hapnd_auth_tarpit_held` | gauge | | 429s held by the tarpit now (at most its capacity: at the capacity, further 429s go out at once) |
//! | `hapnd_auth_seen_valid_hits_total` | counter | | requests of a throttled client let through to the store lookup because their key was seen valid (`AuthenticatorBuilder::seen_valid_capacity`; concurrent ones share one lookup) |

use metrics::{Counter, Gauge, Histogram, Unit, counter, gauge, histogram};

use crate::error::{AuthError, AuthErrorKind};
use crate::key::Environment;
use crate::principal::Principal;
use crate::store::StoreErrorKind;

const ENVIRONMENTS: [&str; 3] = ["live", "sandbox", "none"];

/// What the cache said of a request's key: the `cache` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheRead {
    /// A known key (valid or not) was cached.
    Hit = 0,
    /// The key was cached as unknown.
    NegativeHit = 1,
    /// Not cached (or the cache is bypassed): the store was asked, unless the client was
    /// throttled first (429 before any lookup).
    Miss = 2,
    /// Nothing to look up: no header, or a key of the wrong form.
    None = 3,
}

/// Label values, indexed by [`CacheRead`]'s discriminants.
const CACHE_READS: [&str; 4] = ["hit", "negative_hit", "miss", "none"];

const STORE_ERRORS: [&str; 5] = ["unavailable", "timeout", "conflict", "not_found", "invalid"];

/// Where an invalidation came from: the `source` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) enum Source {
    Revoke,
    PostgresNotify,
    SqliteChangeLog,
    Api,
    Flush,
}

const SOURCES: [&str; 5] = [
    "revoke",
    "postgres_notify",
    "sqlite_change_log",
    "api",
    "flush",
];

/// The authenticator's handles.
pub(crate) struct Metrics {
    /// By outcome, environment and [`CacheRead`]: 120 handles, registered up front so
    /// that a request does no lookup by name.
    requests: [[[Counter; 4]; 3]; OUTCOMES],
    pub(crate) lookup_seconds: Histogram,
    pub(crate) lookups_in_flight: Gauge,
    store_errors: [Counter; 5],
    pub(crate) lookups_rejected: Counter,
    pub(crate) throttled: Counter,
    pub(crate) cached_entries: Gauge,
    pub(crate) throttled_clients: Gauge,
    pub(crate) tarpit_held: Gauge,
    pub(crate) seen_valid_hits: Counter,
}

/// The cache's handles: what [`Invalidator`](crate::Invalidator) and flights record.
pub(crate) struct CacheMetrics {
    pub(crate) coalesced_waiters: Counter,
    invalidations: [Counter; 5],
    channel_healthy: Gauge,
}

impl Metrics {
    /// Registers every handle with the recorder installed now.
    pub(crate) fn register() -> Self {
        describe();
        Metrics {
            requests: std::array::from_fn(|i| {
                // "ok", then every error code, at `outcome_index`.
                let outcome = i
                    .checked_sub(1)
                    .map_or("ok", |kind| AuthErrorKind::ALL[kind].code());
                ENVIRONMENTS.map(|environment| {
                    CACHE_READS.map(|cache| {
                        counter!(
                            "hapnd_auth_requests_total",
                            "outcome" => outcome,
                            "environment" => environment,
                            "cache" => cache
                        )
                    })
                })
            }),
            lookup_seconds: histogram!("hapnd_auth_store_lookup_duration_seconds"),
            lookups_in_flight: gauge!("hapnd_auth_store_lookups_in_flight"),
            store_errors: STORE_ERRORS
                .map(|kind| counter!("hapnd_auth_store_errors_total", "kind" => kind)),
            lookups_rejected: counter!("hapnd_auth_store_lookups_rejected_total"),
            throttled: counter!("hapnd_auth_throttled_requests_total"),
            cached_entries: gauge!("hapnd_auth_cached_entries"),
            throttled_clients: gauge!("hapnd_auth_throttled_clients"),
            tarpit_held: gauge!("hapnd_auth_tarpit_held"),
            seen_valid_hits: counter!("hapnd_auth_seen_valid_hits_total"),
        }
    }

    /// Counts an authentication's outcome and what the cache said: the request's one
    /// increment.
    #[inline]
    pub(crate) fn outcome(&self, result: &Result<Principal, AuthError>, read: CacheRead) {
        let per_env = match result {
            Ok(principal) => &self.requests[0][env_index(Some(principal.environment()))],
            Err(e) => &self.requests[outcome_index(e.kind())][env_index(error_environment(e))],
        };
        per_env[read as usize].increment(1);
    }

    pub(crate) fn store_error(&self, kind: StoreErrorKind) {
        let index = match kind {
            StoreErrorKind::Unavailable => 0,
            StoreErrorKind::Timeout => 1,
            StoreErrorKind::Conflict => 2,
            StoreErrorKind::NotFound => 3,
            StoreErrorKind::Invalid => 4,
        };
        self.store_errors[index].increment(1);
    }
}

impl CacheMetrics {
    pub(crate) fn register() -> Self {
        describe();
        let channel_healthy = gauge!("hapnd_auth_invalidation_channel_healthy");
        channel_healthy.set(1.0);
        CacheMetrics {
            coalesced_waiters: counter!("hapnd_auth_coalesced_waiters_total"),
            invalidations: SOURCES
                .map(|source| counter!("hapnd_auth_invalidations_total", "source" => source)),
            channel_healthy,
        }
    }

    pub(crate) fn invalidation(&self, source: Source) {
        let index = match source {
            Source::Revoke => 0,
            Source::PostgresNotify => 1,
            Source::SqliteChangeLog => 2,
            Source::Api => 3,
            Source::Flush => 4,
        };
        self.invalidations[index].increment(1);
    }

    pub(crate) fn channel_healthy(&self, healthy: bool) {
        self.channel_healthy.set(if healthy { 1.0 } else { 0.0 });
    }
}

/// `outcome` label values: `ok`, then every error code.
const OUTCOMES: usize = 1 + AuthErrorKind::ALL.len();

/// Where `kind`'s counters are in [`Metrics::requests`]: after `ok`'s.
fn outcome_index(kind: AuthErrorKind) -> usize {
    1 + kind.index()
}

fn env_index(environment: Option<Environment>) -> usize {
    match environment {
        Some(Environment::Live) => 0,
        Some(Environment::Sandbox) => 1,
        None => 2,
    }
}

/// The environment a rejected request's key claimed, when it had a well-formed prefix.
fn error_environment(e: &AuthError) -> Option<Environment> {
    if let Some(p) = e.principal() {
        return Some(p.environment());
    }
    let hint = e.key_hint()?;
    [Environment::Live, Environment::Sandbox]
        .into_iter()
        .find(|env| hint.starts_with(env.prefix()))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "hapnd_auth_requests_total",
        "Authentications by outcome (ok or the error code), environment, and what the cache \
         said: hit, negative_hit (a cached unknown key), miss, or none (no well-formed key)"
    );
    describe_histogram!(
        "hapnd_auth_store_lookup_duration_seconds",
        Unit::Seconds,
        "Key store lookups, timeouts included"
    );
    describe_gauge!(
        "hapnd_auth_store_lookups_in_flight",
        "Key store lookups running now"
    );
    describe_counter!(
        "hapnd_auth_store_errors_total",
        "Failed key store lookups by error kind"
    );
    describe_counter!(
        "hapnd_auth_store_lookups_rejected_total",
        "Lookups refused (503) because the bound on concurrent store lookups was reached"
    );
    describe_counter!(
        "hapnd_auth_coalesced_waiters_total",
        "Cache misses that waited on another request's store lookup of the same key"
    );
    describe_counter!(
        "hapnd_auth_invalidations_total",
        "Cache invalidations by source"
    );
    describe_gauge!(
        "hapnd_auth_invalidation_channel_healthy",
        "1 while revocations made elsewhere reach this process, 0 while the cache is bypassed"
    );
    describe_counter!(
        "hapnd_auth_throttled_requests_total",
        "Requests answered 429 too_many_failed_attempts"
    );
    describe_gauge!(
        "hapnd_auth_cached_entries",
        "Keys cached (known and unknown), updated on each cache miss"
    );
    describe_gauge!(
        "hapnd_auth_tarpit_held",
        "429 answers held by the failed-attempt tarpit now"
    );
    describe_counter!(
        "hapnd_auth_seen_valid_hits_total",
        "Requests of a throttled client let through to the store lookup because their key was seen valid"
    );
    describe_gauge!(
        "hapnd_auth_throttled_clients",
        "Clients tracked by the failed-attempt throttle, updated on each throttled answer"
    );
}
