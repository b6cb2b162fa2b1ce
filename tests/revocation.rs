//! Revocation has no grace period: once `revoke` returns, every request with the key is
//! rejected, including when the revocation lands while a lookup of that key is in flight.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{TestStore, assert_rejected, call, live_key};
use hapnd_auth::{
    AuthErrorKind, Authenticator, Environment, Invalidator, KeyHash, KeyRecord, KeyStore,
    MemoryKeyStore, NewKey, StoreError,
};

#[tokio::test]
async fn a_revoked_key_is_rejected_on_the_next_request() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret();

    assert_eq!(call(&auth, key).await.status, 200);
    // Now cached: the next request does not read the store.
    assert_eq!(call(&auth, key).await.status, 200);
    assert_eq!(store.lookups(), 1);

    let record = auth.revoke(&created.record.id).await.unwrap();
    assert!(record.revoked_at.is_some());
    let s = call(&auth, key).await;
    assert_rejected(&s, AuthErrorKind::Revoked);
    assert!(s.body.contains(&created.record.hint), "{}", s.body);
    let err = s.error.unwrap();
    assert_eq!(err.principal().unwrap().key_id(), &created.record.id);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_until_it_is_revoked() {
    let auth = Authenticator::new(TestStore::new());
    let old = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "deploy"))
        .await
        .unwrap();
    let new = auth.rotate(&old.record.id).await.unwrap();
    assert_ne!(new.record.id, old.record.id);
    assert_eq!(new.record.name, "deploy");
    assert_eq!(new.record.environment, Environment::Sandbox);
    assert_eq!(call(&auth, old.key.expose_secret()).await.status, 200);
    assert_eq!(call(&auth, new.key.expose_secret()).await.status, 200);

    auth.revoke(&old.record.id).await.unwrap();
    assert_rejected(
        &call(&auth, old.key.expose_secret()).await,
        AuthErrorKind::Revoked,
    );
    assert_eq!(call(&auth, new.key.expose_secret()).await.status, 200);
}

#[tokio::test]
async fn an_expired_key_is_rejected() {
    let auth = Authenticator::new(TestStore::new());
    let soon = std::time::SystemTime::now() + Duration::from_millis(200);
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "temp").expires_at(soon))
        .await
        .unwrap();
    let key = created.key.expose_secret();
    assert_eq!(call(&auth, key).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still cached, but expiry is checked on every hit.
    assert_rejected(&call(&auth, key).await, AuthErrorKind::Expired);
}

#[tokio::test]
async fn revoking_an_unknown_id_is_not_found() {
    let auth = Authenticator::new(TestStore::new());
    let err = auth
        .revoke(&hapnd_auth::KeyId::new("key_nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), hapnd_auth::StoreErrorKind::NotFound);
}

/// What happens to the key while a lookup of it is held in the store.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// `Authenticator::revoke`.
    Revoke,
    /// The key is revoked in the store, then `Invalidator::invalidate` (a change feed).
    Invalidate,
    /// The key is revoked in the store, then `Invalidator::invalidate_all`.
    InvalidateAll,
    /// The key is revoked in the store, then `Invalidator::channel_lost`.
    ChannelLost,
    /// The key stays active in the store; `Invalidator::invalidate` is called anyway.
    InvalidateActive,
}

/// How a request reaches the authenticator.
#[derive(Clone, Copy, Debug)]
enum Via {
    Layer,
    Authenticate,
}

const WAITERS: usize = 50;

async fn request_via(auth: &Authenticator, key: &str, via: Via) -> Result<(), AuthErrorKind> {
    match via {
        Via::Layer => {
            let seen = call(auth, key).await;
            if seen.status == 200 {
                assert!(seen.principal.is_some());
                Ok(())
            } else {
                Err(seen.error.expect("a rejection carries its error").kind())
            }
        }
        Via::Authenticate => {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {key}").parse().unwrap(),
            );
            auth.authenticate(&headers)
                .await
                .map(|_| ())
                .map_err(|e| e.kind())
        }
    }
}

/// A leader and `WAITERS` waiters are held on one store lookup that read the key as
/// active; `what` happens and returns; then the lookup is let go. Returns every request's
/// outcome and how many times the store was read.
async fn in_flight(what: Call, via: Via) -> (Vec<Result<(), AuthErrorKind>>, usize) {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    let key = created.key.expose_secret().to_owned();

    let gate = store.close_gate();
    let spawn = |auth: &Authenticator| {
        let (auth, key) = (auth.clone(), key.clone());
        tokio::spawn(async move { request_via(&auth, &key, via).await })
    };
    let mut requests = vec![spawn(&auth)];
    gate.entered().await;
    // Only this first read is held; any later one passes (none can start while it is in
    // the air, so a slow waiter cannot take the release meant for it).
    store.open_gate();
    for _ in 0..WAITERS {
        requests.push(spawn(&auth));
    }
    // Give the waiters time to join the leader's flight (they cannot start one of their
    // own while it is in the air: the store has been read exactly once).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.lookups(), 1, "{what:?}/{via:?}: one flight");

    let invalidator = auth.invalidator();
    let revoke_in_store = || async {
        hapnd_auth::KeyStore::revoke(&store, &created.record.id, std::time::SystemTime::now())
            .await
            .unwrap();
    };
    match what {
        Call::Revoke => {
            auth.revoke(&created.record.id).await.unwrap();
        }
        Call::Invalidate => {
            revoke_in_store().await;
            invalidator.invalidate(&created.record.hash);
        }
        Call::InvalidateAll => {
            revoke_in_store().await;
            invalidator.invalidate_all();
        }
        Call::ChannelLost => {
            revoke_in_store().await;
            invalidator.channel_lost();
        }
        Call::InvalidateActive => invalidator.invalidate(&created.record.hash),
    }
    // The call has returned: the stale read is let go.
    gate.release();
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.unwrap());
    }
    (outcomes, store.lookups())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_held_on_a_stale_lookup_is_admitted_after_the_call_returns() {
    for via in [Via::Layer, Via::Authenticate] {
        for what in [
            Call::Revoke,
            Call::Invalidate,
            Call::InvalidateAll,
            Call::ChannelLost,
        ] {
            let (outcomes, lookups) = in_flight(what, via).await;
            assert_eq!(outcomes.len(), WAITERS + 1);
            let admitted = outcomes.iter().filter(|o| o.is_ok()).count();
            assert_eq!(
                admitted, 0,
                "{what:?}/{via:?}: {admitted} requests admitted after the call returned"
            );
            for outcome in &outcomes {
                assert_eq!(*outcome, Err(AuthErrorKind::Revoked), "{what:?}/{via:?}");
            }
            assert!(lookups >= 2, "{what:?}/{via:?}: the store was read again");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_flight_is_answered_from_a_fresh_read() {
    for via in [Via::Layer, Via::Authenticate] {
        let (outcomes, lookups) = in_flight(Call::InvalidateActive, via).await;
        assert!(outcomes.iter().all(Result::is_ok), "{via:?}: {outcomes:?}");
        // The stale read, then one fresh read shared by the leader and every waiter.
        assert_eq!(lookups, 2, "{via:?}");
    }
}

#[tokio::test]
async fn a_lookup_that_starts_after_the_revocation_rejects() {
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let created = live_key(&auth).await;
    auth.revoke(&created.record.id).await.unwrap();
    for via in [Via::Layer, Via::Authenticate] {
        let outcome = request_via(&auth, created.key.expose_secret(), via).await;
        assert_eq!(outcome, Err(AuthErrorKind::Revoked), "{via:?}");
    }
    assert_eq!(store.lookups(), 1, "the rejection was cached");
}

/// A store whose every read is overtaken by a flush, as a flood of (forged) `flush`
/// notifications would do.
#[derive(Clone)]
struct FlushedOnEveryRead {
    inner: TestStore,
    invalidator: Arc<OnceLock<Invalidator>>,
}

impl KeyStore for FlushedOnEveryRead {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let found = self.inner.lookup(hash).await;
        self.invalidator.get().unwrap().invalidate_all();
        found
    }
    forward_all_but_lookup!(inner);
}

#[tokio::test]
async fn a_storm_of_invalidations_ends_in_503_not_a_loop() {
    let store = FlushedOnEveryRead {
        inner: TestStore::new(),
        invalidator: Arc::default(),
    };
    let lookup_timeout = Duration::from_secs(2);
    let auth = Authenticator::builder(store.clone())
        .lookup_timeout(lookup_timeout)
        .build();
    store.invalidator.set(auth.invalidator()).unwrap();
    let created = live_key(&auth).await;

    let started = Instant::now();
    let seen = tokio::time::timeout(lookup_timeout, call(&auth, created.key.expose_secret()))
        .await
        .expect("answered within the lookup timeout");
    assert_rejected(&seen, AuthErrorKind::Unavailable);
    assert!(seen.retry_after.is_some());
    let reads = store.inner.lookups();
    assert!(
        (2..=4).contains(&reads),
        "re-reads are bounded: {reads} reads"
    );
    assert!(started.elapsed() < lookup_timeout);
}

/// A store that is sometimes slow and tags every answer with the logical time it was
/// handed back, so the test can tell which answers came back after a revocation returned.
#[derive(Clone)]
struct Tagging {
    inner: MemoryKeyStore,
    clock: Arc<AtomicU64>,
    index: Arc<HashMap<KeyHash, usize>>,
    revoked: Arc<Vec<AtomicU64>>,
    straddled: Arc<AtomicUsize>,
}

impl KeyStore for Tagging {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let found = self.inner.lookup(hash).await?;
        if rand_below(4) == 0 {
            tokio::time::sleep(Duration::from_micros(rand_below(3000))).await;
        }
        let returned = self.clock.fetch_add(1, SeqCst);
        Ok(found.map(|mut record| {
            if !record.is_revoked() {
                let revoked = self.revoked[self.index[hash]].load(SeqCst);
                if revoked != 0 && revoked < returned {
                    self.straddled.fetch_add(1, SeqCst);
                }
            }
            record.name = format!("t{returned}");
            record
        }))
    }
    forward_all_but_lookup!(inner);
}

fn rand_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % n
}

/// Revocations at random times while requests hammer the keys about to be revoked, with a
/// store that is sometimes slow so that lookups straddle revocations. A request is a
/// violation if it is admitted although it started after its key's revocation returned,
/// or on a store answer handed back after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_no_admission_after_revocation_returned() {
    const KEYS: usize = 1_000;
    let memory = MemoryKeyStore::new();
    let setup = Authenticator::new(memory.clone());
    let mut keys = Vec::with_capacity(KEYS);
    let mut index = HashMap::new();
    for i in 0..KEYS {
        let created = setup
            .create_key(NewKey::new("acme", Environment::Live, format!("k{i}")))
            .await
            .unwrap();
        index.insert(created.record.hash, i);
        keys.push(created);
    }
    let store = Tagging {
        inner: memory,
        clock: Arc::new(AtomicU64::new(1)),
        index: Arc::new(index),
        revoked: Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect()),
        straddled: Arc::default(),
    };
    // A short TTL keeps the keys missing, so lookups are in the air when revocations land.
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_millis(2))
        .build();
    let keys = Arc::new(keys);
    let cursor = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for _ in 0..16 {
        let (auth, keys, cursor, done, store) = (
            auth.clone(),
            keys.clone(),
            cursor.clone(),
            done.clone(),
            store.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut admitted, mut violations) = (0u64, Vec::new());
            while !done.load(SeqCst) {
                let i = (cursor.load(SeqCst) + rand_below(8) as usize).min(KEYS - 1);
                let started = store.clock.fetch_add(1, SeqCst);
                let seen = call(&auth, keys[i].key.expose_secret()).await;
                let Some(principal) = seen.principal else {
                    continue;
                };
                admitted += 1;
                let returned: u64 = principal.key_name()[1..].parse().unwrap();
                let revoked = store.revoked[i].load(SeqCst);
                if revoked != 0 && (started > revoked || returned > revoked) {
                    violations.push((i, started, returned, revoked));
                }
            }
            (admitted, violations)
        }));
    }
    for (i, created) in keys.iter().enumerate() {
        tokio::time::sleep(Duration::from_micros(rand_below(1500))).await;
        auth.revoke(&created.record.id).await.unwrap();
        store.revoked[i].store(store.clock.fetch_add(1, SeqCst), SeqCst);
        cursor.store(i + 1, SeqCst);
    }
    done.store(true, SeqCst);
    let (mut admitted, mut violations) = (0, Vec::new());
    for client in clients {
        let (a, v) = client.await.unwrap();
        admitted += a;
        violations.extend(v);
    }
    let straddled = store.straddled.load(SeqCst);
    println!("{admitted} admissions, {straddled} lookups straddled a revocation");
    assert!(
        admitted > 1_000,
        "the test exercised admissions: {admitted}"
    );
    assert!(
        straddled > 0,
        "no lookup straddled a revocation: the test proved nothing"
    );
    assert!(
        violations.is_empty(),
        "{} of {admitted} admissions after a revocation returned ({straddled} lookups straddled one), e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
}
