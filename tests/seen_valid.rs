//! The seen-valid set (issue 27): a key whose store lookup found it valid keeps working from
//! a client address the throttle blocks (a NAT shared with a guesser), past its cache
//! entry's TTL, while the guesses from that address still get 429 before any lookup; and
//! a revocation, a flush or a lost channel takes keys out of the set, a feed's invalidation
//! leaves the decision to the key's next lookup. Through the layer, with a store that
//! counts lookups per hash.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Body, echo, seen};
use hapnd_auth::{
    ApiKey, Authenticator, AuthenticatorBuilder, ClientAddr, Environment, FailedAttemptLimit,
    KeyHash, KeyRecord, KeyStore, MemoryKeyStore, NewKey, StoreError,
};
use http::Request;
use tower::{Layer, ServiceExt};

const BURST: u32 = 3;
/// The cache's TTL: short and real (moka's clock cannot be paused: DESIGN.md trap 4).
const TTL: Duration = Duration::from_millis(300);
/// Long enough for any entry cached with [`TTL`] to have expired.
const PAST_TTL: Duration = Duration::from_millis(450);

/// The guesser, and the colleague behind the same NAT address.
const SHARED: [u8; 4] = [203, 0, 113, 7];
const ELSEWHERE: [u8; 4] = [198, 51, 100, 1];

/// A memory store that counts lookups per hash.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryKeyStore,
    lookups: Arc<Mutex<HashMap<KeyHash, usize>>>,
}

impl Counting {
    fn of(&self, hash: &KeyHash) -> usize {
        self.lookups.lock().unwrap().get(hash).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.lookups.lock().unwrap().values().sum()
    }
}

impl KeyStore for Counting {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        *self.lookups.lock().unwrap().entry(*hash).or_default() += 1;
        self.inner.lookup(hash).await
    }

    forward_all_but_lookup!(inner);
}

fn builder(store: &Counting) -> AuthenticatorBuilder {
    Authenticator::builder(store.clone())
        .ttl(TTL)
        .throttle_failed_attempts(FailedAttemptLimit::new(BURST, Duration::from_secs(60)))
}

fn from(peer: [u8; 4], key: &str) -> Request<Body> {
    let mut request = Request::get("/v1/events")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::default())
        .unwrap();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(peer)), 40000);
    request.extensions_mut().insert(ClientAddr(addr));
    request
}

async fn status(auth: &Authenticator, peer: [u8; 4], key: &str) -> (u16, Option<String>) {
    let svc = auth.layer().layer(tower::service_fn(echo));
    let seen = seen(svc.oneshot(from(peer, key)).await.unwrap()).await;
    (seen.status.as_u16(), seen.code)
}

fn guess() -> String {
    ApiKey::generate(Environment::Live)
        .expose_secret()
        .to_owned()
}

struct Valid {
    key: String,
    hash: KeyHash,
    id: hapnd_auth::KeyId,
}

async fn valid_key(auth: &Authenticator) -> Valid {
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    Valid {
        key: created.key.expose_secret().to_owned(),
        hash: created.record.hash,
        id: created.record.id,
    }
}

/// Guesses from [`SHARED`] until it is blocked; returns how many guesses were looked up.
async fn flood_until_blocked(auth: &Authenticator, store: &Counting) -> usize {
    let before = store.total();
    for i in 0.. {
        let (status, code) = status(auth, SHARED, &guess()).await;
        if status == 429 {
            assert_eq!(code.as_deref(), Some("too_many_failed_attempts"));
            break;
        }
        assert_eq!(status, 401, "guess {i}");
        assert!(i <= BURST, "never throttled");
    }
    store.total() - before
}

/// The key is seen valid (one lookup from the shared address), then the address is
/// blocked by a guesser: returns the store and authenticator at that point.
async fn seen_then_blocked(
    builder: impl FnOnce(&Counting) -> AuthenticatorBuilder,
) -> (Counting, Authenticator, Valid) {
    let store = Counting::default();
    let auth = builder(&store).build();
    let valid = valid_key(&auth).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
    assert_eq!(store.of(&valid.hash), 1);
    assert_eq!(flood_until_blocked(&auth, &store).await, BURST as usize);
    (store, auth, valid)
}

#[tokio::test]
async fn a_valid_key_keeps_working_from_a_blocked_address_before_during_and_after_its_cache_ttl() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    let guesses_looked_up = store.total() - store.of(&valid.hash);
    // During the flood, while its cache entry lives: a hit, no lookup.
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
    assert_eq!(store.of(&valid.hash), 1);
    for round in 0..3 {
        // Its entry expires: the key is looked up although its address is blocked...
        tokio::time::sleep(PAST_TTL).await;
        let before = store.of(&valid.hash);
        assert_eq!(
            status(&auth, SHARED, &valid.key).await,
            (200, None),
            "round {round}"
        );
        assert_eq!(store.of(&valid.hash), before + 1, "round {round}");
        // ... and cached again, so the next one is a hit.
        assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
        assert_eq!(store.of(&valid.hash), before + 1);
        // The guesses go on, each refused before any lookup.
        for _ in 0..10 {
            let (status, code) = status(&auth, SHARED, &guess()).await;
            assert_eq!(
                (status, code.as_deref()),
                (429, Some("too_many_failed_attempts"))
            );
        }
        assert_eq!(
            store.total() - store.of(&valid.hash),
            guesses_looked_up,
            "a guess from the blocked address reached the store"
        );
    }
}

#[tokio::test]
async fn a_key_first_seen_from_another_address_also_gets_through() {
    let store = Counting::default();
    let auth = builder(&store).build();
    let valid = valid_key(&auth).await;
    assert_eq!(status(&auth, ELSEWHERE, &valid.key).await.0, 200);
    assert_eq!(flood_until_blocked(&auth, &store).await, BURST as usize);
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
    assert_eq!(store.of(&valid.hash), 2);
}

#[tokio::test]
async fn a_key_never_seen_valid_still_waits_for_the_block_to_end() {
    let store = Counting::default();
    let auth = builder(&store).build();
    assert_eq!(flood_until_blocked(&auth, &store).await, BURST as usize);
    // A new key, valid, but this gateway cannot tell it from a guess without a lookup.
    let fresh = valid_key(&auth).await;
    let (status, code) = status(&auth, SHARED, &fresh.key).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("too_many_failed_attempts"))
    );
    assert_eq!(store.of(&fresh.hash), 0);
}

#[tokio::test]
async fn a_guess_that_was_looked_up_never_enters_the_set() {
    let store = Counting::default();
    // Negative entries that expire fast: the guesses then need a lookup again.
    let auth = builder(&store)
        .negative_ttl(Duration::from_millis(50))
        .build();
    let guesses: Vec<String> = (0..BURST).map(|_| guess()).collect();
    for g in &guesses {
        assert_eq!(status(&auth, SHARED, g).await.0, 401);
    }
    assert_eq!(store.total(), BURST as usize);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Looked up once each, found unknown: no way past the block.
    for g in &guesses {
        assert_eq!(status(&auth, SHARED, g).await.0, 429);
    }
    assert_eq!(store.total(), BURST as usize);
}

#[tokio::test]
async fn a_key_revoked_while_in_the_set_is_refused_at_once() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    auth.revoke(&valid.id).await.unwrap();
    let lookups = store.of(&valid.hash);
    // From the blocked address: refused before any lookup, it left the set with the revocation.
    let (status_shared, code) = status(&auth, SHARED, &valid.key).await;
    assert_eq!(
        (status_shared, code.as_deref()),
        (429, Some("too_many_failed_attempts"))
    );
    assert_eq!(store.of(&valid.hash), lookups);
    // And after its cache entry would have expired.
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 429);
    assert_eq!(store.of(&valid.hash), lookups);
    // Elsewhere: the revocation itself.
    let (status_elsewhere, code) = status(&auth, ELSEWHERE, &valid.key).await;
    assert_eq!(
        (status_elsewhere, code.as_deref()),
        (401, Some("api_key_revoked"))
    );
}

/// A change feed says only "this key changed", for a creation as for a revocation: the
/// creation of a key that was then used (its change-log row replayed by the feed a poll
/// later) must not take a key in use out of the set. A key revoked elsewhere is refused by
/// its next lookup, which takes it out.
#[tokio::test]
async fn a_feeds_invalidation_of_a_key_still_valid_keeps_it_in_the_set() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    // The feed replays the key's creation after its first use.
    auth.invalidator().invalidate(&valid.hash);
    let lookups = store.of(&valid.hash);
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
    assert_eq!(store.of(&valid.hash), lookups + 1, "the store decided");
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
}

#[tokio::test]
async fn a_key_revoked_elsewhere_leaves_the_set_at_its_next_lookup() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    // Another process revokes it (the store alone), and the change feed invalidates it.
    store
        .inner
        .revoke(&valid.id, SystemTime::now())
        .await
        .unwrap();
    auth.invalidator().invalidate(&valid.hash);
    let lookups = store.of(&valid.hash);
    // One lookup, which finds it revoked: refused (its failure counted: 429), never 200.
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 429);
    assert_eq!(store.of(&valid.hash), lookups + 1);
    // Out of the set: no more lookups from the blocked address.
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 429);
    assert_eq!(
        store.of(&valid.hash),
        lookups + 1,
        "looked up after leaving the set"
    );
}

#[tokio::test]
async fn membership_admits_nothing_the_lookup_decides() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    // Revoked in the store with no invalidation yet (a notification still on its way),
    // once the cache entry has expired: the set lets the lookup happen, and the lookup
    // refuses the key (the failure is counted: 429, never 200).
    store
        .inner
        .revoke(&valid.id, SystemTime::now())
        .await
        .unwrap();
    tokio::time::sleep(PAST_TTL).await;
    let lookups = store.of(&valid.hash);
    let (status_shared, code) = status(&auth, SHARED, &valid.key).await;
    assert_eq!(
        (status_shared, code.as_deref()),
        (429, Some("too_many_failed_attempts"))
    );
    assert_eq!(store.of(&valid.hash), lookups + 1);
    // The lookup found it revoked: it left the set too.
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 429);
    assert_eq!(store.of(&valid.hash), lookups + 1);
    let (status_elsewhere, code) = status(&auth, ELSEWHERE, &valid.key).await;
    assert_eq!(
        (status_elsewhere, code.as_deref()),
        (401, Some("api_key_revoked"))
    );
}

#[tokio::test]
async fn an_expired_key_leaves_the_set() {
    let store = Counting::default();
    let auth = builder(&store).build();
    let created = auth
        .create_key(
            NewKey::new("acme", Environment::Live, "ci")
                .expires_at(SystemTime::now() + Duration::from_millis(600)),
        )
        .await
        .unwrap();
    let (key, hash) = (created.key.expose_secret().to_owned(), created.record.hash);
    assert_eq!(status(&auth, SHARED, &key).await.0, 200);
    assert_eq!(flood_until_blocked(&auth, &store).await, BURST as usize);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Looked up once (still in the set), found expired: refused, and out of the set.
    assert_eq!(status(&auth, SHARED, &key).await.0, 429);
    assert_eq!(store.of(&hash), 2);
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &key).await.0, 429);
    assert_eq!(store.of(&hash), 2);
}

/// After a lost channel or a flush, the key no longer gets past the block: the set was
/// emptied (not only hidden while the channel was down), so it waits, like a new key,
/// until the block ends or a lookup from an unblocked address finds it valid again.
async fn refused_without_lookup(auth: &Authenticator, store: &Counting, valid: &Valid) {
    let lookups = store.of(&valid.hash);
    let (status, code) = status(auth, SHARED, &valid.key).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("too_many_failed_attempts"))
    );
    assert_eq!(
        store.of(&valid.hash),
        lookups,
        "looked up from the blocked address"
    );
}

#[tokio::test]
async fn a_lost_channel_empties_the_set() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    let invalidator = auth.invalidator();
    invalidator.channel_lost();
    // The cache is bypassed, and so is the set.
    refused_without_lookup(&auth, &store, &valid).await;
    invalidator.channel_restored();
    refused_without_lookup(&auth, &store, &valid).await;
    // Seen valid again from an unblocked address: back in.
    assert_eq!(status(&auth, ELSEWHERE, &valid.key).await.0, 200);
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
}

#[tokio::test]
async fn a_lost_channel_empties_the_set_with_stale_if_error_too() {
    let (store, auth, valid) =
        seen_then_blocked(|s| builder(s).stale_if_error(Duration::from_secs(60))).await;
    let invalidator = auth.invalidator();
    invalidator.channel_lost();
    refused_without_lookup(&auth, &store, &valid).await;
    invalidator.channel_restored();
    refused_without_lookup(&auth, &store, &valid).await;
}

#[tokio::test]
async fn a_flush_empties_the_set() {
    let (store, auth, valid) = seen_then_blocked(builder).await;
    auth.invalidator().invalidate_all();
    refused_without_lookup(&auth, &store, &valid).await;
}

#[tokio::test]
async fn a_capacity_of_zero_turns_the_set_off() {
    let (store, auth, valid) = seen_then_blocked(|s| builder(s).seen_valid_capacity(0)).await;
    tokio::time::sleep(PAST_TTL).await;
    refused_without_lookup(&auth, &store, &valid).await;
}

#[tokio::test]
async fn a_key_is_forgotten_its_ttl_after_the_last_lookup_that_found_it_valid() {
    let (store, auth, valid) =
        seen_then_blocked(|s| builder(s).seen_valid_ttl(Duration::from_millis(600))).await;
    // Looked up (and so kept) once its cache entry expires...
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(&auth, SHARED, &valid.key).await.0, 200);
    assert_eq!(store.of(&valid.hash), 2);
    // ... then unused for longer than the set's TTL: forgotten.
    tokio::time::sleep(Duration::from_millis(800)).await;
    refused_without_lookup(&auth, &store, &valid).await;
}
