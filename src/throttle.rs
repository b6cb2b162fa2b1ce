//! Failed-attempt throttling per client: [`FailedAttemptLimit`].
//!
//! The key format's checksum is public, so anyone can mint well-formed keys, each one a
//! store lookup. A client (as [`ClientIdentity`](crate::ClientIdentity) tells them apart)
//! has a budget of `burst` failed attempts refilled at one per `period` (GCRA, from the
//! [governor] crate). Each failure takes one: a malformed header, a bad key format, an
//! unknown, revoked or expired key, whether the cache or the store said so. A request
//! without any `Authorization` header takes none: it costs nothing to answer. Success
//! takes none either, so a store outage that empties the cache does not throttle clients
//! whose keys are good.
//!
//! The failure that finds the budget spent is answered `429 too_many_failed_attempts`
//! with `Retry-After`, and the client is *blocked* until an attempt comes back: its
//! requests that are not admitted from the cache get 429 at once, before any store
//! lookup, so a blocked client costs the store nothing. A valid key the cache holds is
//! never refused, so good keys keep working from an address (a shared NAT) that is under
//! attack; and a key whose store lookup found it valid recently (the *seen-valid set*,
//! [`AuthenticatorBuilder::seen_valid_capacity`](crate::AuthenticatorBuilder::seen_valid_capacity))
//! is still looked up once its cache entry has expired, so it keeps working past the
//! cache's TTL. The lookup decides, not the set: a revoked key is refused. A valid key
//! this gateway has not seen valid (its first use here, or while the cache is bypassed,
//! which empties the set) from a blocked client gets 429 until the block ends: the gateway
//! cannot tell it from a guess without asking the store.
//!
//! Misses already in flight when a client becomes blocked still finish: a client that
//! sends `c` requests at once can cause up to `burst + c` lookups before its block starts
//! (the store-lookup bound caps `c` for everyone together).
//!
//! A refused client can also be *slowed*: with [`FailedAttemptLimit::tarpit`] each 429 is
//! held for a while before it is sent. An attacker that waits for each answer before its
//! next guess (as brute-force tools do, over a fixed number of connections) then sends a
//! few requests a second instead of tens of thousands, and stops taking the cores that
//! legitimate requests need. A held 429 costs a timer and the connection it was already
//! on; at most [`FailedAttemptLimit::tarpit_capacity`] are held at once, and past that
//! 429s go out at once, so a client with more connections than that is refused at full
//! speed again (and spends its own connections to get there).
//!
//! Memory is bounded: clients are kept in a cache of at most `max_clients` entries, and a
//! client idle for long enough to have refilled its bucket is forgotten (nothing is lost:
//! a full bucket is what a new client gets). When more than `max_clients` clients fail at
//! once, the least useful entries are evicted and those clients start again from a full
//! bucket: a flood spread over that many addresses is bounded by the store-lookup limit,
//! not by this one.
//!
//! [governor]: https://docs.rs/governor

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The failed-attempt budget per client. Off unless given to
/// [`AuthenticatorBuilder::throttle_failed_attempts`](crate::AuthenticatorBuilder::throttle_failed_attempts).
///
/// ```
/// use std::time::Duration;
/// use hapnd_auth::{Authenticator, FailedAttemptLimit, MemoryKeyStore};
///
/// // 20 attempts at once, then one more every 3 seconds; at most 100,000 clients tracked.
/// let auth = Authenticator::builder(MemoryKeyStore::new())
///     .throttle_failed_attempts(FailedAttemptLimit::new(20, Duration::from_secs(3)))
///     .build();
/// # let _ = auth;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedAttemptLimit {
    burst: NonZeroU32,
    period: Duration,
    max_clients: u64,
    tarpit: Duration,
    tarpit_capacity: usize,
}

impl FailedAttemptLimit {
    /// `burst` attempts at once (at least 1), then one more every `period` (at least 1 ms).
    pub fn new(burst: u32, period: Duration) -> Self {
        FailedAttemptLimit {
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
            period: period.max(Duration::from_millis(1)),
            max_clients: 100_000,
            tarpit: Duration::ZERO,
            tarpit_capacity: 1024,
        }
    }

    /// Holds each `429 too_many_failed_attempts` that the layer answers without a store
    /// lookup (a blocked client's guess) for about `hold` (80 to 120 %, drawn per answer)
    /// before sending it. Default: not held. A 429 decided after a lookup (a guess already
    /// in flight when the client was blocked) is not held, so a request never takes
    /// longer than the lookup bound allows; a held one takes up to 1.2 × `hold`, which
    /// proxy timeouts must allow for. Only the layer holds answers
    /// ([`Authenticator::authenticate`](crate::Authenticator::authenticate) returns at
    /// once); it needs a Tokio runtime with timers, as store lookups do. `Retry-After` is
    /// computed when the answer is decided, so a held one overstates the wait by the hold.
    ///
    /// Not capped at the client's `Retry-After`, and drawn afresh per answer: held
    /// answers that all ended when the client's block ended would bring every one of its
    /// connections back at that moment, each a store lookup before the first failure
    /// blocks it again (measured: 8 connections, 72 lookups in 20 s where the budget
    /// allows 27).
    ///
    /// ```
    /// use std::time::Duration;
    /// use hapnd_auth::FailedAttemptLimit;
    ///
    /// let limit = FailedAttemptLimit::new(20, Duration::from_secs(3))
    ///     .tarpit(Duration::from_secs(1))
    ///     .tarpit_capacity(4096);
    /// assert_eq!(limit.tarpit_hold(), Duration::from_secs(1));
    /// ```
    pub fn tarpit(mut self, hold: Duration) -> Self {
        self.tarpit = hold;
        self
    }

    /// The most 429s held at once (default 1,024); past it they are sent at once.
    pub fn tarpit_capacity(mut self, held: usize) -> Self {
        self.tarpit_capacity = held.min(tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// How long a 429 is held ([`tarpit`](Self::tarpit)); zero when not held.
    pub fn tarpit_hold(&self) -> Duration {
        self.tarpit
    }

    /// The most clients tracked at once (default 100,000); each costs about 100 bytes.
    pub fn max_clients(mut self, clients: u64) -> Self {
        self.max_clients = clients.max(1);
        self
    }

    /// Attempts allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// One attempt comes back every `period`.
    pub fn period(&self) -> Duration {
        self.period
    }

    fn quota(&self) -> Quota {
        // `period` is at least 1 ms, so the quota exists.
        Quota::with_period(self.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }

    /// How long an idle client takes to get its whole bucket back.
    fn refill(&self) -> Duration {
        self.period.saturating_mul(self.burst.get())
    }
}

/// One client: its GCRA state and when its block ends (nanoseconds since the throttle
/// started; 0 when not blocked).
#[derive(Default)]
struct Client {
    gcra: InMemoryState,
    blocked_until: AtomicU64,
}

type Clients = moka::sync::Cache<IpAddr, Arc<Client>>;

/// GCRA state per client in a bounded moka cache.
struct ClientStates {
    states: Clients,
}

impl StateStore for ClientStates {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let client = self.states.get_with(*key, Default::default);
        client.gcra.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

pub(crate) struct Throttle {
    limiter: RateLimiter<IpAddr, ClientStates, DefaultClock, StateInformationMiddleware>,
    clock: DefaultClock,
    /// The limiter's cache (a clone shares it), for blocks and counting.
    states: Clients,
    started: Instant,
    period: Duration,
    /// How long a 429 is held, and the slots for held 429s; `None` when not held.
    tarpit: Option<(Duration, Arc<Semaphore>)>,
}

impl Throttle {
    pub(crate) fn new(limit: FailedAttemptLimit) -> Self {
        let states = moka::sync::Cache::builder()
            .max_capacity(limit.max_clients)
            // Idle that long, a client's bucket is full again: forgetting it is exact.
            .time_to_idle(limit.refill() + Duration::from_secs(1))
            .build();
        let clock = DefaultClock::default();
        let store = ClientStates {
            states: states.clone(),
        };
        Throttle {
            limiter: RateLimiter::new(limit.quota(), store, clock.clone()),
            period: limit.period,
            clock,
            states,
            started: Instant::now(),
            tarpit: (!limit.tarpit.is_zero() && limit.tarpit_capacity > 0).then(|| {
                (
                    limit.tarpit,
                    Arc::new(Semaphore::new(limit.tarpit_capacity)),
                )
            }),
        }
    }

    /// How long to hold a 429, and its slot; `None` when 429s are not held or every slot
    /// is taken.
    pub(crate) fn hold(&self) -> Option<(Duration, OwnedSemaphorePermit)> {
        let (hold, slots) = self.tarpit.as_ref()?;
        let permit = Arc::clone(slots).try_acquire_owned().ok()?;
        Some((*hold, permit))
    }

    /// How long `client` stays blocked, if it is. Takes nothing from its budget.
    pub(crate) fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let until = self
            .states
            .get(&client)?
            .blocked_until
            .load(Ordering::Acquire);
        let now = self.nanos();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Counts a failure of `client`. The failure that spends the last of its budget blocks
    /// it until an attempt comes back (at most one `period`), so its next request is
    /// refused before any lookup; `Err(wait)` when the budget was already spent.
    pub(crate) fn failed(&self, client: IpAddr) -> Result<(), Duration> {
        let (result, block) = match self.limiter.check_key(&client) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return Ok(()),
            Ok(_) => (Ok(()), self.period),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                (Err(wait), wait)
            }
        };
        if let Some(state) = self.states.get(&client) {
            let until = self.nanos().saturating_add(block.as_nanos() as u64);
            state.blocked_until.fetch_max(until, Ordering::AcqRel);
        }
        result
    }

    fn nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Clients tracked now (runs the table's pending housekeeping first: not per request).
    pub(crate) fn clients(&self) -> u64 {
        self.states.run_pending_tasks();
        self.states.entry_count()
    }

    /// Clients tracked, as of the table's last housekeeping: free, for a gauge.
    pub(crate) fn approximate_clients(&self) -> u64 {
        self.states.entry_count()
    }
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}
