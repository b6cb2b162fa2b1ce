//! Where the cache is filled and where revocation empties it.
//!
//! Entries are keyed by key hash. A miss starts a *flight*: one store lookup per hash
//! however many requests miss at once; the others wait for its result (errors included,
//! so an outage costs one store call per key, not one per request). A flight's result is
//! inserted into the cache only if no invalidation of its hash and no flush happened
//! while it was in the air. Both checks and the insert happen under the flights lock,
//! which [`Invalidator`] also takes, so an invalidation is ordered either before the
//! insert (the flight sees it and does not insert) or after it (and removes the entry).
//! This closes DESIGN.md trap 1, where a load that started before a revocation puts the
//! revoked key back into the cache for a whole TTL.
//!
//! A flush (when the invalidation channel was lost) bumps an epoch; entries loaded under
//! an older epoch are ignored on read, so `invalidate_all`'s "only entries inserted
//! before me" rule cannot let an entry from an older load slip through.
//!
//! Beside the entries, the cache keeps the *seen-valid set* (when the failed-attempt
//! throttle is on): the hashes whose store lookup found a valid, active key, for longer
//! than the cache's TTL. It answers one question only, for a client the throttle blocks:
//! "may this hash still be looked up?" (see [`KeyCache::seen_valid`]). It is written under
//! the same lock as the entries, and emptied by the same revocations, flushes and channel
//! losses; a change feed's invalidation of one hash leaves it to that hash's next lookup
//! (see `SeenValid` for why).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use tokio::sync::watch;

use crate::key::{self, KeyHash};
use crate::metrics::{CacheMetrics, Source};
use crate::principal::Principal;
use crate::rate_limit::KeyLimits;
use crate::store::{KeyRecord, StoreError, StoreErrorKind};

/// What the cache holds for one hash: a known key, or a negative entry. 24 bytes, stored
/// inline in moka's entry; cloning it (moka's `get` clones) is one reference-count increment.
#[derive(Clone)]
pub(crate) struct Cached {
    epoch: u64,
    /// For an entry whose TTL is shorter than the table's (negative entries, with the
    /// default TTLs): when it goes stale, in microseconds on the cache's clock. Entries with
    /// the table's TTL hold [`NO_DEADLINE`] and are expired by moka alone.
    fresh_until: u64,
    /// The key's principal, which also carries what the request path checks (stored
    /// hash, revoked, expiry), or `None` for a key the store does not know.
    pub(crate) key: Option<Principal>,
}

/// Health of the channel that tells this process about revocations made elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelHealth {
    /// Revocations reach this process: cache hits are trusted.
    Healthy,
    /// The channel is down or unconfirmed: every request reads the store.
    Degraded,
}

const NO_DEADLINE: u64 = u64::MAX;

const HEALTHY: u8 = 0;
const DEGRADED: u8 = 1;

pub(crate) struct KeyCache {
    entries: moka::sync::Cache<KeyHash, Cached, TableHasher>,
    /// Known and unknown keys' TTLs; the table's `time_to_live` is the longer one.
    ttl: Ttl,
    /// The origin of [`Cached::fresh_until`].
    clock: Instant,
    flights: Mutex<HashMap<KeyHash, Arc<Flight>>>,
    epoch: AtomicU64,
    /// Bumped, under the flights lock, by every invalidation, flush and channel loss: a
    /// waiter woken after it moved re-checks the answer it was handed.
    changes: AtomicU64,
    health: AtomicU8,
    degraded_since: Mutex<Option<Instant>>,
    stale_if_error: Option<Duration>,
    /// How long a caller waits on another's flight. The leader's own lookup is bounded;
    /// this bounds the wait even if the leader's future is kept but no longer polled.
    wait_limit: Duration,
    pub(crate) metrics: CacheMetrics,
    /// The seen-valid set: hash -> the epoch of the lookup that found it valid. `None`
    /// when off (no throttle, or a capacity of 0).
    seen: Option<SeenValid>,
    /// Rate-limited keys' GCRA states, kept across refills.
    limits: KeyLimits,
}

/// Hashes whose store lookup found a valid, active key, by the epoch of that lookup.
///
/// Why it cannot weaken revocation: membership admits no request. It only lets a hash
/// from a throttled client go on to the store lookup, and that lookup's answer (read
/// after every revocation that has returned, like any other) decides; a revoked key gets
/// its 401 (or, its failure counted, 429), never 200, and that lookup takes it out of the
/// set. A revocation made here removes the hash at once (no lookup at all); a flush or a
/// lost channel empties the set, and it is not consulted while the channel is down.
///
/// A change feed's invalidation of one hash does *not* remove it: a feed says only "this
/// key changed", for a creation as for a revocation, and replays a key's creation a poll
/// after the key may have been used (and seen valid). Removing it there would take keys
/// in use out of the set whenever they were created while the gateway ran. A key revoked
/// elsewhere costs one lookup instead: the next one, which refuses it and removes it.
///
/// Why a guesser gains nothing: a hash enters only when the store returned an active,
/// unexpired record whose stored hash equals it, i.e. for a key that exists. Guesses are
/// unknown keys: they never enter, and from a throttled client they still get 429 before
/// any lookup. Bounded: moka, at most `capacity` hashes (about 370 bytes each,
/// `benches/memory.rs`), each forgotten `ttl` after the last lookup that found it valid.
type SeenValid = moka::sync::Cache<KeyHash, u64, TableHasher>;

/// The hasher of the cache's table (and of moka's frequency sketch): foldhash, keyed from
/// the OS random generator. Hashing a 32-byte key costs about 6 ns with it against 19 ns
/// with std's SipHash-1-3 (`benches/cache_config.rs`, `config/hash_one`), once per get.
///
/// Why a fast hash is safe against collision flooding here. The table is keyed by
/// SHA-256 digests of presented keys, and a client can present as many well-formed keys as
/// it likes, all of them unknown, each cached as a negative entry. If the table's hash were
/// a fixed function of the digest (say its first 8 bytes), a client could grind random keys
/// offline until their digests agree in the table's low bits (about 2^17 hashes per hit for
/// a 100k-entry table: milliseconds) and send only those, piling them into one bucket.
/// With a keyed hash, which digests collide depends on a seed the client never sees: 64
/// bits drawn per process, expanded into foldhash's shared seed, plus 64 bits per cache.
/// Grinding needs to know the function, and the client can neither choose digests (only
/// draw them at random, through SHA-256) nor observe hash values, only response times
/// of a table whose buckets it cannot name. What remains is foldhash's own statement: it is
/// not meant to resist an attacker who can study a long-running process closely enough to
/// recover its seed; nothing of the seed or of a hash value leaves this module.
type TableHasher = SeedableRandomState;

fn table_hasher() -> TableHasher {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    let seed = |bytes: [u8; 8]| u64::from_ne_bytes(bytes);
    let shared = SHARED.get_or_init(|| SharedSeed::from_u64(seed(key::random())));
    SeedableRandomState::with_seed(seed(key::random()), shared)
}

/// One table with a plain `time_to_live` (the longer of the two TTLs), not a per-entry
/// `expire_after` policy: an `Expiry` turns on moka's timer wheel, which every get pays
/// for (about 35 ns a hit at 1k keys, more at 1M: `benches/cache_config.rs`). Entries
/// with the shorter TTL carry their own deadline, checked on read: a clock read on those
/// gets only. Two tables (known, unknown), each with its own `time_to_live`, measured as
/// fast on a hit but slower on an unknown key, which then costs a miss in one table
/// and a hit in the other.
#[derive(Clone, Copy)]
struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl Ttl {
    fn table(self) -> Duration {
        self.positive.max(self.negative)
    }

    /// The entry's own TTL, if the table's would keep it too long.
    fn shorter_than_table(self, known: bool) -> Option<Duration> {
        let own = if known { self.positive } else { self.negative };
        (own < self.table()).then_some(own)
    }
}

/// How many store reads one caller makes for one key before giving up, when each read is
/// overtaken by an invalidation: a flood of (forged) flush notifications must end in 503,
/// not a loop.
const MAX_READS: u32 = 3;

enum FlightState {
    Pending,
    Done {
        result: Result<Cached, StoreError>,
        /// [`KeyCache::changes`] when the answer was handed out.
        changes: u64,
    },
    /// An invalidation overtook the read: its answer is withheld; ask again.
    Overtaken,
    /// The leader was dropped before it finished: ask again.
    Abandoned,
}

fn overtaken() -> StoreError {
    StoreError::new(
        StoreErrorKind::Timeout,
        "the key store lookup was overtaken by invalidations until its time ran out",
    )
}

struct Flight {
    state: watch::Sender<FlightState>,
}

impl KeyCache {
    pub(crate) fn new(
        capacity: u64,
        ttl: Duration,
        negative_ttl: Duration,
        stale_if_error: Option<Duration>,
        wait_limit: Duration,
    ) -> Self {
        let ttl = Ttl {
            positive: ttl,
            negative: negative_ttl,
        };
        KeyCache {
            wait_limit,
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.table())
                .build_with_hasher(table_hasher()),
            ttl,
            clock: Instant::now(),
            flights: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            health: AtomicU8::new(HEALTHY),
            degraded_since: Mutex::new(None),
            stale_if_error,
            metrics: CacheMetrics::register(),
            seen: None,
            // A cached principal uses its limiter without the table for up to the TTL
            // (and the stale-if-error window past it).
            limits: KeyLimits::new(
                capacity,
                ttl.table()
                    .saturating_add(stale_if_error.unwrap_or(Duration::ZERO)),
            ),
        }
    }

    /// Turns the seen-valid set on: at most `capacity` hashes (0 leaves it off), each kept
    /// `ttl` after the last lookup that found its key valid.
    pub(crate) fn with_seen_valid(mut self, capacity: u64, ttl: Duration) -> Self {
        self.seen = (capacity > 0 && !ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build_with_hasher(table_hasher())
        });
        self
    }

    /// Whether a lookup of `hash` found a valid, active key within the seen-valid TTL, with
    /// no invalidation of it, flush or channel loss since (and the channel healthy now).
    /// Only ever a reason to *look the hash up*, never to admit a request: see
    /// [`SeenValid`].
    pub(crate) fn seen_valid(&self, hash: &KeyHash) -> bool {
        let Some(seen) = &self.seen else {
            return false;
        };
        self.health.load(Ordering::Acquire) == HEALTHY
            && seen.get(hash) == Some(self.epoch.load(Ordering::Acquire))
    }

    /// Records in the seen-valid set what a current flight (under the flights lock) found:
    /// an active key whose stored hash is `hash` enters, anything else leaves.
    fn note_seen(&self, hash: KeyHash, epoch: u64, cached: &Cached) {
        let Some(seen) = &self.seen else { return };
        let active = cached.key.as_ref().is_some_and(|key| {
            key.stored_hash().ct_eq(&hash)
                && !key.is_revoked()
                && key
                    .expires_at()
                    .is_none_or(|at| at > std::time::SystemTime::now())
        });
        if active {
            seen.insert(hash, epoch);
        } else {
            seen.invalidate(&hash);
        }
    }

    /// A cache entry that may be trusted without asking the store.
    #[inline]
    pub(crate) fn get(&self, hash: &KeyHash) -> Option<Cached> {
        if self.health.load(Ordering::Acquire) != HEALTHY {
            return None;
        }
        let cached = self.entries.get(hash)?;
        (cached.epoch == self.epoch.load(Ordering::Acquire) && self.is_fresh(&cached))
            .then_some(cached)
    }

    /// An entry for what a lookup under `epoch` found.
    fn entry(&self, epoch: u64, key: Option<Principal>) -> Cached {
        let fresh_until = match self.ttl.shorter_than_table(key.is_some()) {
            Some(ttl) => self.micros_now().saturating_add(micros(ttl)),
            None => NO_DEADLINE,
        };
        Cached {
            epoch,
            fresh_until,
            key,
        }
    }

    #[inline]
    fn is_fresh(&self, cached: &Cached) -> bool {
        cached.fresh_until == NO_DEADLINE || self.micros_now() < cached.fresh_until
    }

    fn micros_now(&self) -> u64 {
        micros(self.clock.elapsed())
    }

    /// Looks `hash` up through a flight: one store call however many callers miss at once.
    ///
    /// No caller is ever answered with a store read that an invalidation of `hash`, a
    /// flush or a channel loss overtook: such a flight tells its waiters so, and everyone
    /// tries again (joining a fresh flight or leading one). A flight's answer is handed
    /// out under the flights lock, and a waiter that wakes after any later invalidation
    /// checks again, so once an invalidation has returned nobody is admitted on a read
    /// made before it. Re-reads are bounded by [`MAX_READS`] per caller and by the
    /// caller's wait limit: a storm of invalidations ends in a store error (503).
    pub(crate) async fn load<F, Fut>(&self, hash: KeyHash, lookup: F) -> Result<Cached, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<KeyRecord>, StoreError>>,
    {
        let now = tokio::time::Instant::now();
        // A huge configured timeout must not overflow: a century is "never" here.
        let deadline = now
            .checked_add(self.wait_limit)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut reads = 0;
        loop {
            let (flight, waiter) = {
                let mut flights = self.lock_flights();
                match flights.get(&hash) {
                    Some(flight) => (Arc::clone(flight), Some(flight.state.subscribe())),
                    None => {
                        // The caller missed the cache before taking this lock; a flight
                        // may have landed since. Flights insert under this lock, so its
                        // entry is visible here: without this check a request that lost
                        // that race asks the store a second time.
                        if let Some(cached) = self.get(&hash) {
                            return Ok(cached);
                        }
                        if reads == MAX_READS {
                            return Err(overtaken());
                        }
                        let flight = Arc::new(Flight {
                            state: watch::Sender::new(FlightState::Pending),
                        });
                        flights.insert(hash, Arc::clone(&flight));
                        (flight, None)
                    }
                }
            };
            let Some(mut rx) = waiter else {
                reads += 1;
                match self.lead(hash, flight, &lookup, deadline).await {
                    Some(result) => return result,
                    None => continue,
                }
            };
            self.metrics.coalesced_waiters.increment(1);
            let done = rx.wait_for(|s| !matches!(s, FlightState::Pending));
            let state = match tokio::time::timeout_at(deadline, done).await {
                Ok(Ok(state)) => state,
                // The flight's sender is gone: try again.
                Ok(Err(_)) => continue,
                Err(_) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        "the key store lookup this request waited on did not finish",
                    ));
                }
            };
            match &*state {
                // An error admits nobody: hand it out whatever happened since.
                FlightState::Done { result: Err(e), .. } => return Err(e.clone()),
                FlightState::Done {
                    result: Ok(cached),
                    changes,
                } if *changes == self.changes.load(Ordering::Acquire) => {
                    return Ok(cached.clone());
                }
                // An invalidation came after the flight landed (it may have been this
                // key's), the flight was overtaken, or its leader was cancelled: ask again.
                _ => continue,
            }
        }
    }

    /// Reads the store for a flight this caller leads. `None` when an invalidation, flush
    /// or channel loss overtook the read: its answer is given to no one.
    async fn lead<F, Fut>(
        &self,
        hash: KeyHash,
        flight: Arc<Flight>,
        lookup: &F,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Cached, StoreError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<KeyRecord>, StoreError>>,
    {
        let mut guard = AbandonOnDrop {
            cache: self,
            hash,
            flight: Some(Arc::clone(&flight)),
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        let result = match tokio::time::timeout_at(deadline, lookup()).await {
            Ok(result) => result,
            Err(_) => Err(overtaken()),
        }
        .map(|record| {
            let key = record.map(|r| Principal::with_limits(r, &self.limits));
            self.entry(epoch, key)
        });
        let mut flights = self.lock_flights();
        guard.flight = None;
        // Invalidations and flushes detach the flight under this lock: if it is still
        // the current one, nothing overtook its read.
        let current = flights.get(&hash).is_some_and(|f| Arc::ptr_eq(f, &flight))
            && epoch == self.epoch.load(Ordering::Acquire);
        if !current {
            drop(flights);
            flight.state.send_replace(FlightState::Overtaken);
            return None;
        }
        flights.remove(&hash);
        // Store errors are never cached, and say nothing of whether the key is valid.
        if let Ok(cached) = &result {
            self.entries.insert(hash, cached.clone());
            self.note_seen(hash, epoch, cached);
        }
        let result = match result {
            Err(e) => self.stale_fallback(&hash).ok_or(e),
            ok => ok,
        };
        // Handed out under the lock: the answer is ordered before any later invalidation,
        // and waiters that wake after one see `changes` move and ask again.
        flight.state.send_replace(FlightState::Done {
            result: result.clone(),
            changes: self.changes.load(Ordering::Acquire),
        });
        drop(flights);
        Some(result)
    }

    /// With stale-if-error on and the channel lost less than the window ago, the entry
    /// cached before the loss, whatever its epoch.
    fn stale_fallback(&self, hash: &KeyHash) -> Option<Cached> {
        let window = self.stale_if_error?;
        let since = (*self
            .degraded_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()))?;
        if since.elapsed() > window {
            return None;
        }
        let cached = self.entries.get(hash)?;
        (cached.key.is_some() && self.is_fresh(&cached)).then_some(cached)
    }

    fn lock_flights(&self) -> MutexGuard<'_, HashMap<KeyHash, Arc<Flight>>> {
        // Every critical section is a few map operations that cannot leave it half-done.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `hash`'s entry and detaches its flight. `revoked`: the caller knows the key
    /// was revoked (this authenticator's own revocation), so it leaves the seen-valid set
    /// too; a change feed's "something changed" leaves it there (see [`SeenValid`]).
    pub(crate) fn invalidate(&self, hash: &KeyHash, revoked: bool) {
        let mut flights = self.lock_flights();
        // Detach the flight: when its read comes back it is answered to no one (its leader
        // and waiters ask again), and later misses start a fresh flight.
        flights.remove(hash);
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(hash);
        if let (true, Some(seen)) = (revoked, &self.seen) {
            seen.invalidate(hash);
        }
    }

    pub(crate) fn flush(&self) {
        let mut flights = self.lock_flights();
        flights.clear();
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
        // The epoch alone already hides older hashes; emptying frees their memory.
        if let Some(seen) = &self.seen {
            seen.invalidate_all();
        }
    }

    /// Detaches every flight without dropping cached entries (kept for stale-if-error):
    /// reads in the air may have missed a revocation whose notification was lost. The
    /// seen-valid set is emptied all the same: stale-if-error is about keys cached
    /// before the loss, not about letting throttled clients' lookups through.
    fn overtake_flights(&self) {
        let mut flights = self.lock_flights();
        flights.clear();
        self.changes.fetch_add(1, Ordering::AcqRel);
        if let Some(seen) = &self.seen {
            seen.invalidate_all();
        }
    }

    pub(crate) fn channel_lost(&self) {
        let mut since = self
            .degraded_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if since.is_none() {
            *since = Some(Instant::now());
        }
        self.health.store(DEGRADED, Ordering::Release);
        self.metrics.channel_healthy(false);
        drop(since);
        if self.stale_if_error.is_none() {
            self.flush();
        } else {
            self.overtake_flights();
        }
    }

    pub(crate) fn channel_restored(&self) {
        let mut since = self
            .degraded_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if since.take().is_some() {
            // Anything cached before or during the gap may have missed a revocation.
            self.flush();
        }
        self.health.store(HEALTHY, Ordering::Release);
        self.metrics.channel_healthy(true);
    }

    pub(crate) fn health(&self) -> ChannelHealth {
        match self.health.load(Ordering::Acquire) {
            HEALTHY => ChannelHealth::Healthy,
            _ => ChannelHealth::Degraded,
        }
    }

    /// moka's count without running its pending tasks: cheap, may lag a little.
    pub(crate) fn approximate_entries(&self) -> u64 {
        self.entries.entry_count()
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(NO_DEADLINE)
}

impl fmt::Debug for KeyCache {
    // moka's Debug prints every entry; ours prints counts only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.entries.entry_count())
            .field("health", &self.health())
            .finish()
    }
}

/// A handle that tells the layer a key changed elsewhere: what durable stores' change
/// feeds (PostgreSQL `LISTEN`, SQLite `data_version` polling) call.
///
/// Cheap to clone; every clone acts on the same cache.
#[derive(Clone)]
pub struct Invalidator {
    pub(crate) cache: Arc<KeyCache>,
    /// The `source` label of the invalidations it counts.
    pub(crate) source: Source,
}

impl Invalidator {
    /// Forgets what is cached for `hash`, including the result of a lookup still in flight.
    /// Once this returns, no request with that key is admitted on a store answer read
    /// before the call: requests waiting on a lookup in flight read the store again.
    pub fn invalidate(&self, hash: &KeyHash) {
        self.cache.invalidate(hash, false);
        self.cache.metrics.invalidation(self.source);
    }

    /// Forgets everything cached, including lookups in flight (their requests read the
    /// store again, as after [`invalidate`](Self::invalidate)).
    pub fn invalidate_all(&self) {
        self.cache.flush();
        self.cache.metrics.invalidation(Source::Flush);
    }

    /// The channel that carries invalidations is down or unconfirmed: stop trusting the
    /// cache (flushing it, unless stale-if-error is configured) until
    /// [`channel_restored`](Self::channel_restored). Lookups in flight are overtaken in
    /// either case: their requests read the store again.
    pub fn channel_lost(&self) {
        self.cache.channel_lost();
    }

    /// The channel is back: flush what may have missed a revocation, then trust the cache again.
    pub fn channel_restored(&self) {
        self.cache.channel_restored();
    }

    /// The same handle, counting its invalidations under `source`.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// The channel's health as last reported.
    pub fn health(&self) -> ChannelHealth {
        self.cache.health()
    }
}

impl fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidator")
            .field("cache", &self.cache)
            .finish()
    }
}

/// Marks the flight abandoned if its leader is dropped before it finishes, so waiters retry
/// instead of hanging.
struct AbandonOnDrop<'a> {
    cache: &'a KeyCache,
    hash: KeyHash,
    flight: Option<Arc<Flight>>,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        let mut flights = self.cache.lock_flights();
        if flights
            .get(&self.hash)
            .is_some_and(|f| Arc::ptr_eq(f, &flight))
        {
            flights.remove(&self.hash);
        }
        drop(flights);
        flight.state.send_replace(FlightState::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;
    use crate::key::Environment;
    use crate::store::NewKey;
    use std::time::SystemTime;

    fn cache(wait_limit: Duration) -> KeyCache {
        KeyCache::new(
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
            None,
            wait_limit,
        )
    }

    fn record() -> KeyRecord {
        let key = ApiKey::generate(Environment::Live);
        KeyRecord::for_key(
            &key,
            NewKey::new("acme", Environment::Live, "ci"),
            SystemTime::now(),
        )
    }

    #[test]
    fn the_table_hash_is_keyed_not_a_function_of_the_digest() {
        use std::hash::BuildHasher;
        let (a, b) = (table_hasher(), table_hasher());
        let digests: Vec<KeyHash> = (0..64u8).map(|i| KeyHash::from_bytes([i; 32])).collect();
        // Two caches hash the same digests differently: a seed, not the digest alone,
        // decides where an entry lands.
        let differ = digests
            .iter()
            .filter(|d| a.hash_one(d) != b.hash_one(d))
            .count();
        assert_eq!(
            differ,
            digests.len(),
            "every digest hashes differently per cache"
        );
        // And the hash is not the digest's own bits, which a client could grind for.
        for d in &digests {
            let bytes = d.as_bytes();
            for word in bytes.chunks_exact(8) {
                let word = u64::from_ne_bytes(word.try_into().unwrap());
                assert_ne!(a.hash_one(d), word);
            }
        }
    }

    #[tokio::test]
    async fn each_kind_of_entry_goes_stale_on_its_own_ttl() {
        let (short, long) = (Duration::from_millis(100), Duration::from_secs(60));
        // (known keys' TTL, unknown keys' TTL): either may be the shorter one.
        for (ttl, negative_ttl) in [(long, short), (short, long)] {
            let cache = KeyCache::new(100, ttl, negative_ttl, None, Duration::from_secs(5));
            let known = record();
            let known_hash = known.hash;
            let unknown_hash = record().hash;
            cache
                .load(known_hash, || {
                    let known = known.clone();
                    async { Ok(Some(known)) }
                })
                .await
                .unwrap();
            cache
                .load(unknown_hash, || async { Ok(None) })
                .await
                .unwrap();
            assert!(cache.get(&known_hash).is_some());
            assert!(cache.get(&unknown_hash).is_some());
            // Real clock: moka's TTL and our deadlines both run on it (DESIGN.md trap 4).
            std::thread::sleep(Duration::from_millis(250));
            let known_is_short = ttl < negative_ttl;
            assert_eq!(cache.get(&known_hash).is_some(), !known_is_short);
            assert_eq!(cache.get(&unknown_hash).is_some(), known_is_short);
        }
    }

    #[tokio::test]
    async fn a_miss_that_arrives_after_a_flight_landed_does_not_ask_the_store_again() {
        let cache = cache(Duration::from_secs(5));
        let record = record();
        let hash = record.hash;
        // Request A misses the cache and leads a flight that lands.
        let first = cache
            .load(hash, || {
                let record = record.clone();
                async { Ok(Some(record)) }
            })
            .await;
        assert!(first.unwrap().key.is_some());
        // Request B missed the cache before A's insert and only now reaches `load`.
        let second = cache
            .load(hash, || async { panic!("the store was asked twice") })
            .await;
        assert!(second.unwrap().key.is_some());
    }

    #[tokio::test]
    async fn an_invalidated_entry_is_loaded_again() {
        let cache = cache(Duration::from_secs(5));
        let record = record();
        let hash = record.hash;
        let again = record.clone();
        cache
            .load(hash, || {
                let record = record.clone();
                async { Ok(Some(record)) }
            })
            .await
            .unwrap();
        cache.invalidate(&hash, false);
        let asked = std::cell::Cell::new(false);
        cache
            .load(hash, || {
                asked.set(true);
                let again = again.clone();
                async { Ok(Some(again)) }
            })
            .await
            .unwrap();
        assert!(
            asked.get(),
            "an invalidation must send the next miss to the store"
        );
    }

    #[tokio::test]
    async fn a_waiter_gives_up_when_the_leader_is_kept_but_never_polled() {
        let cache = cache(Duration::from_millis(100));
        let hash = record().hash;
        let leader = cache.load(hash, std::future::pending);
        tokio::pin!(leader);
        // Polled long enough to start its flight, then kept alive and ignored.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), &mut leader)
                .await
                .is_err()
        );
        let started = Instant::now();
        let waiter = cache
            .load(hash, || async { panic!("the waiter must not lead") })
            .await;
        let error = waiter.err().expect("the waiter times out");
        assert_eq!(error.kind(), StoreErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
