//! [`Authenticator`]: key validation, the cached lookup, and revocation, shared by the
//! layer, the environment router and anything else that needs to resolve a key.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use http::{Extensions, HeaderMap};
use tokio::sync::Semaphore;

use crate::bearer::bearer_token;
use crate::cache::{Cached, ChannelHealth, Invalidator, KeyCache};
use crate::client_identity::ClientIdentity;
use crate::error::AuthError;
use crate::key::{self, Environment, KeyHash};
use crate::layer::ApiKeyLayer;
use crate::metrics::{CacheRead, Metrics, Source};
use crate::principal::Principal;
use crate::store::{
    Actor, CreatedKey, DynKeyStore, KeyId, KeyRecord, KeyStore, NewKey, Roll, Rotation, StoreError,
    StoreErrorKind,
};
use crate::throttle::{FailedAttemptLimit, Throttle};
use crate::usage::UsageRecorder;

/// Resolves API keys to [`Principal`]s through a cache in front of a [`KeyStore`], and
/// revokes them with no grace period.
///
/// Cheap to clone: clones share the cache and the store.
///
/// ```
/// use hapnd_auth::{Authenticator, AuthErrorKind, Environment, MemoryKeyStore, NewKey};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
///
/// let principal = auth.authenticate_key(created.key.expose_secret()).await.unwrap();
/// assert_eq!(principal.tenant(), "acme");
///
/// auth.revoke(&created.record.id).await.unwrap();
/// let err = auth.authenticate_key(created.key.expose_secret()).await.unwrap_err();
/// assert_eq!(err.kind(), AuthErrorKind::Revoked);
/// # });
/// ```
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

// Aligned so that its fields do not share a cache line with the Arc's reference counts,
// which every clone of the service (one per request under axum) writes from every thread.
#[repr(align(64))]
struct Inner {
    store: Box<dyn DynKeyStore>,
    cache: Arc<KeyCache>,
    lookup_timeout: Duration,
    retry_after: Duration,
    usage: UsageRecorder,
    metrics: Metrics,
    throttle: Option<(Throttle, ClientIdentity)>,
    /// The bound on concurrent store lookups; a flight's leader holds one permit.
    lookups: Semaphore,
}

/// The shortest [`AuthenticatorBuilder::usage_flush_interval`]: a zero interval would make
/// the background flusher spin, and rewrite a failed batch to a failing store in a loop.
pub const MIN_USAGE_FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Configures an [`Authenticator`]. Made by [`Authenticator::builder`].
#[must_use]
pub struct AuthenticatorBuilder {
    store: Box<dyn DynKeyStore>,
    ttl: Duration,
    negative_ttl: Duration,
    capacity: u64,
    lookup_timeout: Duration,
    retry_after: Duration,
    stale_if_error: Option<Duration>,
    usage_interval: Duration,
    throttle: Option<FailedAttemptLimit>,
    client_identity: ClientIdentity,
    max_lookups: usize,
    seen_capacity: u64,
    seen_ttl: Duration,
}

impl AuthenticatorBuilder {
    /// How long a known key stays cached (default 30 s). Revocation does not wait for it:
    /// it is the last backstop, not the mechanism.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an unknown key stays cached as unknown (default 5 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The most keys cached at once (default 100,000).
    pub fn capacity(mut self, keys: u64) -> Self {
        self.capacity = keys;
        self
    }

    /// How long a store lookup may take before the request is answered 503 (default 2 s).
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = timeout;
        self
    }

    /// The `Retry-After` sent with 503 answers (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Opt-in availability over strictness: while the invalidation channel is lost and the
    /// store fails, keep serving keys cached before the loss for up to `window`.
    ///
    /// This weakens the revocation promise: a key revoked elsewhere during the outage may
    /// keep working for up to `window`. Off by default.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// How often last-used times are written to the store, in one batch (default 10 s,
    /// at least [`MIN_USAGE_FLUSH_INTERVAL`]: shorter values are raised to it). Each wait is
    /// drawn afresh from 80 % to 120 % of `interval`, so that instances started together do
    /// not all write at the same moments. A failed write is retried at the next flush.
    pub fn usage_flush_interval(mut self, interval: Duration) -> Self {
        self.usage_interval = interval.max(MIN_USAGE_FLUSH_INTERVAL);
        self
    }

    /// Throttles failed attempts per client (off by default): see [`FailedAttemptLimit`]
    /// for what counts. Only requests that pass through the layer are throttled, and only
    /// those whose client [`client_identity`](Self::client_identity) can tell.
    pub fn throttle_failed_attempts(mut self, limit: FailedAttemptLimit) -> Self {
        self.throttle = Some(limit);
        self
    }

    /// The most keys remembered as *seen valid* (default 100,000; 0 turns the set off),
    /// for the throttle: a key whose store lookup found it valid and active within the
    /// [`seen_valid_ttl`](Self::seen_valid_ttl) is still looked up when its client is
    /// blocked, so it keeps working from an address a guesser shares (a NAT, a carrier's
    /// CGNAT, a proxy), after its cache entry has expired too. Unknown hashes from a
    /// blocked client still get 429 before any lookup.
    ///
    /// Membership never admits a request: the store lookup decides, so a revoked key is
    /// refused at once. A revocation through this authenticator removes the key from the
    /// set; one made elsewhere, which a change feed reports only as "this key changed",
    /// takes it out at its next lookup, which refuses it. Flushes and a lost channel empty
    /// the set, and guesses never enter it. About 370
    /// bytes a key (`benches/memory.rs`). Only kept when
    /// [`throttle_failed_attempts`](Self::throttle_failed_attempts) is on.
    pub fn seen_valid_capacity(mut self, keys: u64) -> Self {
        self.seen_capacity = keys;
        self
    }

    /// How long a key stays *seen valid* after the last store lookup that found it valid
    /// (default 24 hours; zero turns the set off): see
    /// [`seen_valid_capacity`](Self::seen_valid_capacity). A key in use is looked up
    /// again each time its cache entry expires, which starts its time again.
    pub fn seen_valid_ttl(mut self, ttl: Duration) -> Self {
        self.seen_ttl = ttl;
        self
    }

    /// How the throttle tells clients apart (default: [`ClientIdentity::peer`], the
    /// [`ClientAddr`](crate::ClientAddr) request extension).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.client_identity = identity;
        self
    }

    /// The most store lookups running at once (default 32, at least 1). Concurrent misses
    /// for one key make one lookup and take one slot. A miss that finds every slot taken
    /// waits at most the [`lookup_timeout`](Self::lookup_timeout), then is answered
    /// `503 auth_unavailable` with `Retry-After`, never 401. Cache hits never wait.
    pub fn max_concurrent_lookups(mut self, lookups: usize) -> Self {
        self.max_lookups = lookups.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Builds the authenticator. Metrics are registered with the `metrics` recorder
    /// installed now (see the [`metrics`](crate#metrics) section).
    pub fn build(self) -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                store: self.store,
                cache: Arc::new(
                    KeyCache::new(
                        self.capacity,
                        self.ttl,
                        self.negative_ttl,
                        self.stale_if_error,
                        // Past the leader's own bounded lookup, with room for its insert.
                        self.lookup_timeout.saturating_mul(2),
                    )
                    // Only the throttle reads it: without one it would be memory for nothing.
                    .with_seen_valid(
                        if self.throttle.is_some() {
                            self.seen_capacity
                        } else {
                            0
                        },
                        self.seen_ttl,
                    ),
                ),
                lookup_timeout: self.lookup_timeout,
                retry_after: self.retry_after,
                usage: UsageRecorder::new(self.usage_interval, 100_000),
                metrics: Metrics::register(),
                throttle: self
                    .throttle
                    .map(|limit| (Throttle::new(limit), self.client_identity)),
                lookups: Semaphore::new(self.max_lookups),
            }),
        }
    }
}

/// One held 429's slot and its count in the gauge, both given back when it is dropped:
/// sent, or abandoned because the client went away.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// A request whose key was well-formed but not cached: what the store lookup needs.
pub(crate) struct Miss {
    hash: KeyHash,
    environment: Environment,
    hint: String,
    /// The client to charge if the store says the key is no good (throttling on).
    client: Option<IpAddr>,
}

/// The outcome of the synchronous part of authentication.
pub(crate) enum Fast {
    /// Answered without the store, and what the cache said (the metrics' `cache` label).
    Done(Result<Principal, AuthError>, CacheRead),
    Miss(Miss),
}

impl Authenticator {
    /// An authenticator with the default settings.
    pub fn new(store: impl KeyStore) -> Self {
        Self::builder(store).build()
    }

    /// Starts configuring an authenticator over `store`.
    pub fn builder(store: impl KeyStore) -> AuthenticatorBuilder {
        AuthenticatorBuilder {
            store: Box::new(store),
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            capacity: 100_000,
            lookup_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            stale_if_error: None,
            usage_interval: Duration::from_secs(10),
            throttle: None,
            client_identity: ClientIdentity::peer(),
            max_lookups: 32,
            seen_capacity: 100_000,
            seen_ttl: Duration::from_secs(24 * 3600),
        }
    }

    /// The tower layer that authenticates every request with this authenticator.
    pub fn layer(&self) -> ApiKeyLayer {
        ApiKeyLayer::new(self.clone())
    }

    /// The handle change feeds call when keys change outside this process.
    pub fn invalidator(&self) -> Invalidator {
        Invalidator {
            cache: Arc::clone(&self.inner.cache),
            source: Source::Api,
        }
    }

    /// Whether revocations made elsewhere are known to reach this process.
    pub fn channel_health(&self) -> ChannelHealth {
        self.inner.cache.health()
    }

    /// How many entries (known and unknown keys) are cached now. Also sets the
    /// `hapnd_auth_cached_entries` gauge: call it before exporting metrics for an exact
    /// value (misses update the gauge too, with moka's count, which may lag a little).
    pub fn cached_entries(&self) -> u64 {
        let entries = self.inner.cache.entry_count();
        self.inner.metrics.cached_entries.set(entries as f64);
        entries
    }

    /// How many clients the failed-attempt throttle tracks now (0 when it is off): at
    /// most [`FailedAttemptLimit::max_clients`]. Also sets the
    /// `hapnd_auth_throttled_clients` gauge: call it before exporting metrics for an exact
    /// value (throttled answers update the gauge too, with a count that may lag a little).
    pub fn throttled_clients(&self) -> u64 {
        let clients = self.inner.throttle.as_ref().map_or(0, |(t, _)| t.clients());
        self.inner.metrics.throttled_clients.set(clients as f64);
        clients
    }

    /// Authenticates a request by its headers, as the layer does.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        match self.fast_path(headers, None) {
            Fast::Done(result, _) => result,
            Fast::Miss(miss) => self.resolve(miss).await,
        }
    }

    /// Authenticates a bare key (no `Authorization` header around it).
    pub async fn authenticate_key(&self, presented: &str) -> Result<Principal, AuthError> {
        match self.fast_key(presented) {
            Fast::Done(result, read) => {
                self.inner.metrics.outcome(&result, read);
                result
            }
            Fast::Miss(miss) => self.resolve(miss).await,
        }
    }

    /// Everything up to the cache: header, format, hash, cache hit, then the throttle for
    /// what the cache did not admit. No I/O, no allocation unless the request is rejected
    /// or missed. `extensions` identify the client; without them nothing is throttled.
    #[inline]
    pub(crate) fn fast_path(&self, headers: &HeaderMap, extensions: Option<&Extensions>) -> Fast {
        let fast = match bearer_token(headers) {
            Ok(token) => self.fast_key(token),
            Err(e) => Fast::Done(Err(e), CacheRead::None),
        };
        if let Fast::Done(Ok(_), _) = &fast {
            // A valid cached key: never throttled.
        } else if let (Some((throttle, identity)), Some(extensions)) =
            (&self.inner.throttle, extensions)
        {
            return self.throttle(fast, throttle, identity, headers, extensions);
        }
        if let Fast::Done(result, read) = &fast {
            self.inner.metrics.outcome(result, *read);
        }
        fast
    }

    /// For a request the cache did not admit: a blocked client gets 429 (before any
    /// lookup); a failure counts against the client's budget; a miss carries the client
    /// along, so that its failure is counted once the store has answered.
    #[cold]
    fn throttle(
        &self,
        fast: Fast,
        throttle: &Throttle,
        identity: &ClientIdentity,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Fast {
        let counts = match &fast {
            // Costs nothing to answer, and is what a browser sends first; a key over its
            // own rate limit is a good key, not a guess.
            Fast::Done(Err(e), _) => !matches!(
                e.kind(),
                crate::AuthErrorKind::MissingApiKey | crate::AuthErrorKind::RateLimited
            ),
            Fast::Done(Ok(_), _) => false,
            Fast::Miss(_) => true,
        };
        let client = counts
            .then(|| identity.identify(headers, extensions))
            .flatten();
        let fast = match (client, fast) {
            (Some(client), fast) => {
                let verdict = match &fast {
                    Fast::Miss(miss) => match throttle.blocked(client) {
                        None => Ok(()),
                        // A key this gateway has seen valid goes on to the store lookup,
                        // which alone decides (a revoked key is refused there): see
                        // `SeenValid` in cache.rs. Guesses never enter the set.
                        Some(_) if self.inner.cache.seen_valid(&miss.hash) => {
                            self.inner.metrics.seen_valid_hits.increment(1);
                            Ok(())
                        }
                        Some(wait) => Err(wait),
                    },
                    _ => throttle
                        .blocked(client)
                        .map_or_else(|| throttle.failed(client), Err),
                };
                match (verdict, fast) {
                    (Err(wait), fast) => {
                        let (hint, read) = match &fast {
                            Fast::Miss(miss) => (Some(miss.hint.clone()), CacheRead::Miss),
                            Fast::Done(Err(e), read) => (e.key_hint().map(str::to_owned), *read),
                            Fast::Done(Ok(_), read) => (None, *read),
                        };
                        Fast::Done(Err(self.throttled(throttle, wait, hint)), read)
                    }
                    (Ok(()), Fast::Miss(mut miss)) => {
                        miss.client = Some(client);
                        Fast::Miss(miss)
                    }
                    (Ok(()), fast) => fast,
                }
            }
            (None, fast) => fast,
        };
        if let Fast::Done(result, read) = &fast {
            self.inner.metrics.outcome(result, *read);
        }
        fast
    }

    /// The 429 for a client whose budget is spent, counted.
    fn throttled(&self, throttle: &Throttle, wait: Duration, hint: Option<String>) -> AuthError {
        let metrics = &self.inner.metrics;
        metrics.throttled.increment(1);
        // Not `clients()`: its housekeeping would run on every 429 of a flood.
        metrics
            .throttled_clients
            .set(throttle.approximate_clients() as f64);
        let error = AuthError::throttled(wait);
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }

    /// For a 429 the [tarpit](FailedAttemptLimit::tarpit) holds: a future that ends when
    /// the answer may go. `None` (answer at once) for any other error, when 429s are not
    /// held, when every slot for held answers is taken, or outside a Tokio runtime.
    pub(crate) fn tarpit(
        &self,
        error: &AuthError,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<>> {
        if error.kind() != crate::AuthErrorKind::TooManyFailedAttempts {
            return None;
        }
        let (throttle, _) = self.inner.throttle.as_ref()?;
        tokio::runtime::Handle::try_current().ok()?;
        let (hold, permit) = throttle.hold()?;
        let held = Held {
            _permit: permit,
            gauge: self.inner.metrics.tarpit_held.clone(),
        };
        held.gauge.increment(1.0);
        Some(async move {
            tokio::time::sleep(jittered(hold)).await;
            drop(held);
        })
    }

    #[inline]
    fn fast_key(&self, token: &str) -> Fast {
        let environment = match key::validate(token) {
            Ok(environment) => environment,
            Err(e) => return Fast::Done(Err(AuthError::format(e)), CacheRead::None),
        };
        let hash = KeyHash::of(token);
        match self.inner.cache.get(&hash) {
            Some(cached) => {
                let read = if cached.key.is_some() {
                    CacheRead::Hit
                } else {
                    CacheRead::NegativeHit
                };
                Fast::Done(
                    verify(cached, &hash, environment).map_err(|e| e.with_hint(key::hint(token))),
                    read,
                )
            }
            None => Fast::Miss(Miss {
                hash,
                environment,
                hint: key::hint(token),
                client: None,
            }),
        }
    }

    /// The store lookup for a miss, shared with every concurrent miss of the same key.
    pub(crate) async fn resolve(&self, miss: Miss) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let lookup = || async {
            let timeout = inner.lookup_timeout;
            let Ok(Ok(_permit)) = tokio::time::timeout(timeout, inner.lookups.acquire()).await
            else {
                inner.metrics.lookups_rejected.increment(1);
                return Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("too many key store lookups in flight; waited {timeout:?}"),
                ));
            };
            let result = timed_lookup(inner, &miss.hash).await;
            // Fail closed on an identity no write path would have accepted (a row written
            // by hand, a store that does not validate): never a principal with a tenant
            // that cannot be shown or sent in a header. Errors are not cached.
            let result = result.and_then(|found| match found {
                Some(record) => match record.validate() {
                    Ok(()) => Ok(Some(record)),
                    Err(e) => Err(refused(&record, e)),
                },
                None => Ok(None),
            });
            if let Ok(Some(record)) = &result
                && !record.is_revoked()
            {
                self.note_use(&record.id);
            }
            result
        };
        let result = match inner.cache.load(miss.hash, lookup).await {
            Ok(cached) => verify(cached, &miss.hash, miss.environment),
            Err(e) => Err(AuthError::unavailable(e, inner.retry_after)),
        };
        let mut result = result.map_err(|e| e.with_hint(miss.hint));
        if let (Err(e), Some(client), Some((throttle, _))) = (&result, miss.client, &inner.throttle)
            && !matches!(
                e.kind(),
                crate::AuthErrorKind::Unavailable | crate::AuthErrorKind::RateLimited
            )
            && let Err(wait) = throttle.failed(client)
        {
            let hint = e.key_hint().map(str::to_owned);
            result = Err(self.throttled(throttle, wait, hint));
        }
        inner.metrics.outcome(&result, CacheRead::Miss);
        inner
            .metrics
            .cached_entries
            .set(inner.cache.approximate_entries() as f64);
        result
    }

    fn note_use(&self, id: &KeyId) {
        if self.inner.usage.note(id, SystemTime::now()) {
            // The first use starts the flusher, if there is a runtime to run it on.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(flush_usage_every(Arc::downgrade(&self.inner)));
            }
        }
    }

    /// Writes pending last-used times to the store now (they are otherwise written every
    /// [`usage_flush_interval`](AuthenticatorBuilder::usage_flush_interval)). Call it at
    /// shutdown so the last batch is not lost.
    pub async fn flush_usage(&self) -> Result<(), StoreError> {
        flush_usage(&self.inner).await
    }

    /// How many uses were dropped because too many distinct keys were pending at once.
    pub fn dropped_usage_records(&self) -> u64 {
        self.inner.usage.dropped()
    }

    /// Creates a key and returns it: the only time its plaintext is seen.
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        let created = self.inner.store.create(new).await?;
        // A negative entry may hold this hash if someone guessed the key before it existed.
        self.inner.cache.invalidate(&created.record.hash, false);
        Ok(created)
    }

    /// Revokes key `id`. Once this returns, every request with that key is rejected by
    /// this authenticator, including requests whose store lookup was already in flight
    /// when it was called: such a lookup's answer is given to no one, and the requests
    /// that waited on it read the store again (and find the key revoked).
    pub async fn revoke(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        // On a task of its own: if the caller's future is dropped (an admin client that
        // disconnects) after the store committed, the local invalidation still happens.
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        let revocation = async move { revoke(&inner, &id).await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(revocation).await.map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("the revocation task failed: {e}"),
                )
            })?,
            Err(_) => revocation.await,
        }
    }

    /// Creates a replacement for key `id` (same tenant, environment and name). The old key
    /// keeps working until it is revoked.
    pub async fn rotate(&self, id: &KeyId) -> Result<CreatedKey, StoreError> {
        let created = self.inner.store.rotate(id).await?;
        self.inner.cache.invalidate(&created.record.hash, false);
        Ok(created)
    }

    /// [`create_key`](Self::create_key), recorded in the store's audit trail as made by
    /// `actor`.
    pub async fn create_key_as(
        &self,
        new: NewKey,
        actor: &Actor,
    ) -> Result<CreatedKey, StoreError> {
        let created = self.inner.store.create_as(new, actor).await?;
        self.inner.cache.invalidate(&created.record.hash, false);
        Ok(created)
    }

    /// [`revoke`](Self::revoke), recorded in the store's audit trail as made by `actor`.
    /// The same promise: once this returns, every request with that key is rejected here.
    pub async fn revoke_as(&self, id: &KeyId, actor: &Actor) -> Result<KeyRecord, StoreError> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        let actor = actor.clone();
        let revocation = async move { revoke_as(&inner, &id, &actor).await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(revocation).await.map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("the revocation task failed: {e}"),
                )
            })?,
            Err(_) => revocation.await,
        }
    }

    /// A rotation, scheduled or not ([`KeyStore::rotate_as`]): a replacement for key `id`,
    /// and, with `roll.old_expires_at`, an expiry for the old key, which this authenticator applies at once
    /// (the old key's cached record is forgotten). Recorded as made by `actor`.
    pub async fn rotate_as(
        &self,
        id: &KeyId,
        roll: Roll,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        let rotation = self.inner.store.rotate_as(id, roll, actor).await?;
        self.inner
            .cache
            .invalidate(&rotation.replacement.record.hash, false);
        self.inner.cache.invalidate(&rotation.old.hash, false);
        Ok(rotation)
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("cache", &self.inner.cache)
            .field("lookup_timeout", &self.inner.lookup_timeout)
            .finish_non_exhaustive()
    }
}

async fn revoke(inner: &Inner, id: &KeyId) -> Result<KeyRecord, StoreError> {
    revoke_as(inner, id, &Actor::application()).await
}

async fn revoke_as(inner: &Inner, id: &KeyId, actor: &Actor) -> Result<KeyRecord, StoreError> {
    let record = match inner.store.revoke_as(id, SystemTime::now(), actor).await {
        Ok(record) => record,
        Err(e) => {
            if matches!(
                e.kind(),
                StoreErrorKind::Timeout | StoreErrorKind::Unavailable
            ) {
                // The revocation may have committed before the answer was lost: forget
                // everything rather than keep serving a key that may now be revoked.
                inner.cache.flush();
            }
            return Err(e);
        }
    };
    inner.cache.invalidate(&record.hash, true);
    inner.cache.metrics.invalidation(Source::Revoke);
    tracing::info!(
        tenant = ?record.tenant,
        key_id = %record.id,
        key_hint = ?record.hint,
        "API key revoked"
    );
    Ok(record)
}

/// A stored record that fails the identity rules, named for the operator who must fix it:
/// by its id when the id itself is sound.
fn refused(record: &KeyRecord, why: StoreError) -> StoreError {
    let which = if crate::store::is_valid_key_id(record.id.as_str()) {
        format!("the stored key {}", record.id)
    } else {
        "a stored key".to_owned()
    };
    StoreError::new(
        StoreErrorKind::Invalid,
        format!("{which} is refused until its record is fixed: {why}"),
    )
}

/// One store lookup under the lookup timeout, timed and counted.
async fn timed_lookup(inner: &Inner, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
    let timeout = inner.lookup_timeout;
    let metrics = &inner.metrics;
    metrics.lookups_in_flight.increment(1.0);
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(timeout, inner.store.lookup_for_request(hash)).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Timeout,
            format!("the key store did not answer within {timeout:?}"),
        )),
    };
    metrics
        .lookup_seconds
        .record(started.elapsed().as_secs_f64());
    metrics.lookups_in_flight.decrement(1.0);
    if let Err(e) = &result {
        metrics.store_error(e.kind());
    }
    result
}

async fn flush_usage(inner: &Inner) -> Result<(), StoreError> {
    let batch = inner.usage.take();
    if batch.is_empty() {
        return Ok(());
    }
    match inner.store.record_usage(&batch).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(target: "hapnd_auth", error = %e, keys = batch.len(), "could not record key usage; will retry");
            inner.usage.restore(batch);
            Err(e)
        }
    }
}

/// The background flusher: ends when the authenticator is dropped.
async fn flush_usage_every(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.usage.interval) else {
        return;
    };
    loop {
        tokio::time::sleep(jittered(interval)).await;
        let Some(inner) = inner.upgrade() else { return };
        let _ = flush_usage(&inner).await;
    }
}

/// A wait drawn uniformly from 80 % to 120 % of `interval`, afresh for every flush: many
/// instances started together (a deployment) would otherwise write their batches at the
/// same moments, for ever. The mean stays `interval`. Also spreads a throttled client's
/// held 429s (the tarpit), for the same reason.
fn jittered(interval: Duration) -> Duration {
    // 53 random bits: a uniform fraction in [0, 1) with a double's full precision.
    let bits = u64::from_le_bytes(crate::key::random::<8>()) >> 11;
    let fraction = bits as f64 / (1u64 << 53) as f64;
    // Not `mul_f64`, which panics past `Duration::MAX`: an interval that large (a way to
    // write "never") stays as it is.
    Duration::try_from_secs_f64(interval.as_secs_f64() * (0.8 + 0.4 * fraction)).unwrap_or(interval)
}

/// The checks on a cached or freshly loaded entry. Takes the entry by value: the
/// principal moves into the result instead of being cloned, one shared reference-count
/// write fewer per request on a hot key.
#[inline]
fn verify(
    cached: Cached,
    hash: &KeyHash,
    environment: Environment,
) -> Result<Principal, AuthError> {
    let Some(key) = cached.key else {
        return Err(AuthError::unknown());
    };
    // The entry was found by this hash; comparing again, in constant time, guards against
    // a store that matched loosely.
    if !key.stored_hash().ct_eq(hash) || key.environment() != environment {
        return Err(AuthError::unknown());
    }
    if key.is_revoked() {
        return Err(AuthError::revoked().with_principal(key));
    }
    if key.expires_at().is_some_and(|at| at <= SystemTime::now()) {
        return Err(AuthError::expired().with_principal(key));
    }
    // Every admitted request, hit or miss, takes from a limited key's budget; a key
    // without a limit pays this one pointer test.
    if let Some(limiter) = key.limiter()
        && let Err(wait) = limiter.check()
    {
        return Err(AuthError::rate_limited(limiter.limit(), wait).with_principal(key));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth_of_the_interval_and_never_overflows() {
        let interval = Duration::from_secs(10);
        for _ in 0..1_000 {
            let wait = jittered(interval);
            assert!(
                wait >= interval.mul_f64(0.8) && wait <= interval.mul_f64(1.2),
                "{wait:?}"
            );
        }
        // 1.2 × Duration::MAX does not fit: used to panic in the flusher task.
        for _ in 0..100 {
            assert!(jittered(Duration::MAX) >= Duration::MAX.mul_f64(0.79));
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
