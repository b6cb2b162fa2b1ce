//! The behaviour every [`KeyStore`] must share, as generic async functions, and
//! [`conformance_suite!`], which turns them into one `#[tokio::test]` each for a store.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, Environment, KeyId, KeyRecord, KeyStore, LastUsed,
    Metadata, NewKey, RateLimit, StoreErrorKind,
};

use super::{ms, normalized, unique};

/// A store under test, and a way to see everything it keeps as text.
pub trait Fixture {
    /// The store.
    type Store: KeyStore + Clone;
    /// The store under test.
    fn store(&self) -> &Self::Store;
    /// Everything the store holds, rendered as text (`SELECT *` of the whole table for SQL
    /// stores; `tenant`'s records for a store that cannot list every tenant).
    fn dump(&self, tenant: &str) -> impl std::future::Future<Output = String>;
}

/// One `#[tokio::test]` per conformance case. `$fixture` is an expression of type
/// `impl Future<Output = Option<impl Fixture>>`; `None` skips (no database configured).
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        mod conformance {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(fixture) = $fixture.await else {
                            return;
                        };
                        $crate::common::conformance::$name(&fixture).await;
                    }
                };
            }
            case!(create_then_lookup_and_get);
            case!(list_is_per_tenant_ordered_and_secret_free);
            case!(revoke_is_idempotent_and_returns_the_record);
            case!(rotate_keeps_tenant_environment_name_and_old_key);
            case!(expiry_round_trips);
            case!(duplicate_hash_or_id_is_a_conflict);
            case!(unknown_id);
            case!(concurrent_creates_all_succeed);
            case!(record_usage_keeps_the_latest);
            case!(lookup_for_request_is_lookup_but_for_last_use);
            case!(dump_holds_no_plaintext_key);
            case!(authenticator_over_the_store);
            case!(invalid_new_key_is_refused);
            case!(look_alike_identities_are_refused_on_every_write);
            case!(list_page_walks_a_tenant_and_every_tenant);
            case!(policy_round_trips_and_survives_rotation);
            case!(invalid_policy_is_refused_and_nothing_written);
        }
    };
}

pub async fn create_then_lookup_and_get<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("acme");
    let created = store
        .create(NewKey::new(&tenant, Environment::Live, "ci"))
        .await
        .unwrap();
    assert_eq!(created.key.environment(), Environment::Live);
    assert_eq!(created.record.hash, created.key.hash());

    let found = store.lookup(&created.key.hash()).await.unwrap().unwrap();
    assert_eq!(
        normalized(found.clone()),
        normalized(created.record.clone())
    );
    assert_eq!(found.tenant, tenant);
    assert!(!found.is_revoked());

    let by_id = store.get(&created.record.id).await.unwrap().unwrap();
    assert_eq!(by_id, found);

    let sandbox = store
        .create(NewKey::new(&tenant, Environment::Sandbox, "dev"))
        .await
        .unwrap();
    let found = store.lookup(&sandbox.key.hash()).await.unwrap().unwrap();
    assert_eq!(found.environment, Environment::Sandbox);

    let never_stored = ApiKey::generate(Environment::Live);
    assert!(store.lookup(&never_stored.hash()).await.unwrap().is_none());
}

pub async fn list_is_per_tenant_ordered_and_secret_free<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("list");
    let mut created = Vec::new();
    for name in ["first", "second", "third"] {
        created.push(
            store
                .create(NewKey::new(&tenant, Environment::Live, name))
                .await
                .unwrap(),
        );
        // Distinct creation milliseconds, so the order is the creation order.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    store
        .create(NewKey::new(unique("other"), Environment::Live, "x"))
        .await
        .unwrap();

    let listed = store.list(&tenant).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "third"]);
    let expected: Vec<KeyRecord> = created
        .iter()
        .map(|c| normalized(c.record.clone()))
        .collect();
    let shown = format!("{listed:?}");
    assert_eq!(
        listed.into_iter().map(normalized).collect::<Vec<_>>(),
        expected
    );
    for c in &created {
        assert!(!shown.contains(c.key.expose_secret()));
        assert!(c.record.hint.len() < 20, "a hint, not the key");
    }
    assert!(store.list(&unique("nobody")).await.unwrap().is_empty());
}

pub async fn revoke_is_idempotent_and_returns_the_record<F: Fixture>(f: &F) {
    let store = f.store();
    let created = store
        .create(NewKey::new(unique("rev"), Environment::Live, "ci"))
        .await
        .unwrap();
    let first_at = SystemTime::now();
    let revoked = store.revoke(&created.record.id, first_at).await.unwrap();
    assert_eq!(revoked.id, created.record.id);
    assert_eq!(revoked.hash, created.record.hash);
    assert_eq!(revoked.revoked_at.map(ms), Some(ms(first_at)));

    let again = store
        .revoke(&created.record.id, first_at + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        again.revoked_at.map(ms),
        Some(ms(first_at)),
        "the first revocation stands"
    );

    let found = store.lookup(&created.key.hash()).await.unwrap().unwrap();
    assert!(found.is_revoked());
    assert_eq!(found, again);
}

pub async fn rotate_keeps_tenant_environment_name_and_old_key<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("rot");
    let old = store
        .create(NewKey::new(&tenant, Environment::Sandbox, "deploy"))
        .await
        .unwrap();
    let new = store.rotate(&old.record.id).await.unwrap();
    assert_ne!(new.record.id, old.record.id);
    assert_ne!(new.key.expose_secret(), old.key.expose_secret());
    assert_eq!(new.record.tenant, tenant);
    assert_eq!(new.record.environment, Environment::Sandbox);
    assert_eq!(new.record.name, "deploy");
    let old_now = store.get(&old.record.id).await.unwrap().unwrap();
    assert!(
        !old_now.is_revoked(),
        "the old key stays active until revoked"
    );
    assert_eq!(store.list(&tenant).await.unwrap().len(), 2);
}

pub async fn expiry_round_trips<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("exp");
    let later = SystemTime::now() + Duration::from_secs(3600);
    let created = store
        .create(NewKey::new(&tenant, Environment::Live, "temp").expires_at(later))
        .await
        .unwrap();
    let found = store.lookup(&created.key.hash()).await.unwrap().unwrap();
    assert_eq!(found.expires_at.map(ms), Some(ms(later)));
    assert!(!found.is_expired_at(SystemTime::now()));
    assert!(found.is_expired_at(later + Duration::from_millis(1)));

    let past = SystemTime::now() - Duration::from_secs(1);
    let expired = store
        .create(NewKey::new(&tenant, Environment::Live, "old").expires_at(past))
        .await
        .unwrap();
    let found = store.lookup(&expired.key.hash()).await.unwrap().unwrap();
    assert!(found.is_expired_at(SystemTime::now()));
}

pub async fn duplicate_hash_or_id_is_a_conflict<F: Fixture>(f: &F) {
    let store = f.store();
    let created = store
        .create(NewKey::new(unique("dup"), Environment::Live, "ci"))
        .await
        .unwrap();
    let same = store.insert(&created.record).await.unwrap_err();
    assert_eq!(same.kind(), StoreErrorKind::Conflict);

    let mut same_hash = created.record.clone();
    same_hash.id = KeyId::generate();
    let err = store.insert(&same_hash).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict);
    assert!(!err.to_string().contains(&created.record.hash.to_hex()));

    let mut same_id = created.record.clone();
    same_id.hash = ApiKey::generate(Environment::Live).hash();
    let err = store.insert(&same_id).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict);
}

pub async fn unknown_id<F: Fixture>(f: &F) {
    let store = f.store();
    let id = KeyId::generate();
    assert!(store.get(&id).await.unwrap().is_none());
    let err = store.revoke(&id, SystemTime::now()).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotFound);
    let err = store.rotate(&id).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotFound);
}

pub async fn concurrent_creates_all_succeed<F: Fixture>(f: &F) {
    let tenant = unique("many");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = f.store().clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                store
                    .create(NewKey::new(tenant, Environment::Live, format!("k{i}")))
                    .await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        let created = task
            .await
            .unwrap()
            .expect("every concurrent create succeeds");
        ids.insert(created.record.id);
    }
    assert_eq!(ids.len(), 50);
    let listed = f.store().list(&tenant).await.unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|r| ids.contains(&r.id)));
}

pub async fn record_usage_keeps_the_latest<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("used");
    let a = store
        .create(NewKey::new(&tenant, Environment::Live, "a"))
        .await
        .unwrap();
    let b = store
        .create(NewKey::new(&tenant, Environment::Live, "b"))
        .await
        .unwrap();
    let untouched = store
        .create(NewKey::new(&tenant, Environment::Live, "c"))
        .await
        .unwrap();
    let t0 = SystemTime::now();
    let t1 = t0 + Duration::from_secs(5);
    let t2 = t0 + Duration::from_secs(9);
    let used = |id: &KeyId, at| LastUsed { id: id.clone(), at };
    store
        .record_usage(&[
            used(&a.record.id, t1),
            used(&a.record.id, t0),
            used(&b.record.id, t2),
            used(&KeyId::generate(), t2),
        ])
        .await
        .unwrap();
    let last =
        |id: KeyId| async move { store.get(&id).await.unwrap().unwrap().last_used_at.map(ms) };
    assert_eq!(last(a.record.id.clone()).await, Some(ms(t1)));
    assert_eq!(last(b.record.id.clone()).await, Some(ms(t2)));
    assert_eq!(last(untouched.record.id.clone()).await, None);

    // An older report, arriving late, does not move the time back.
    store.record_usage(&[used(&a.record.id, t0)]).await.unwrap();
    assert_eq!(last(a.record.id.clone()).await, Some(ms(t1)));
    store.record_usage(&[]).await.unwrap();
}

/// The authenticator's lookup answers what `lookup` answers, revoked keys and unknown
/// hashes included; only the last-used time may be left out.
pub async fn lookup_for_request_is_lookup_but_for_last_use<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("request");
    let used = store
        .create(NewKey::new(&tenant, Environment::Live, "used"))
        .await
        .unwrap();
    let revoked = store
        .create(
            NewKey::new(&tenant, Environment::Sandbox, "revoked")
                .expires_at(SystemTime::now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let at = SystemTime::now();
    store
        .record_usage(&[LastUsed {
            id: used.record.id.clone(),
            at,
        }])
        .await
        .unwrap();
    store.revoke(&revoked.record.id, at).await.unwrap();
    for created in [&used, &revoked] {
        let hash = created.key.hash();
        let full = store.lookup(&hash).await.unwrap().unwrap();
        let mut fast = store.lookup_for_request(&hash).await.unwrap().unwrap();
        assert!(
            fast.last_used_at.is_none() || fast.last_used_at == full.last_used_at,
            "a last-used time that `lookup` does not give"
        );
        fast.last_used_at = full.last_used_at;
        assert_eq!(normalized(fast), normalized(full));
    }
    // `lookup` itself carries the last use.
    let full = store.lookup(&used.key.hash()).await.unwrap().unwrap();
    assert_eq!(full.last_used_at.map(ms), Some(ms(at)));
    let unknown = ApiKey::generate(Environment::Live).hash();
    assert!(store.lookup_for_request(&unknown).await.unwrap().is_none());
}

pub async fn dump_holds_no_plaintext_key<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("dump");
    let mut keys = Vec::new();
    for env in [Environment::Live, Environment::Sandbox] {
        keys.push(
            store
                .create(NewKey::new(&tenant, env, "secret-holder"))
                .await
                .unwrap(),
        );
    }
    let dump = f.dump(&tenant).await;
    for created in &keys {
        // The dump is real: it shows the row...
        assert!(dump.contains(created.record.id.as_str()), "{dump}");
        assert!(dump.contains(&created.record.hint));
        // ...and nothing of the secret: not the key, not its random body.
        let secret = created.key.expose_secret();
        assert!(!dump.contains(secret));
        assert!(!dump.contains(&secret[8..40]));
    }
}

pub async fn authenticator_over_the_store<F: Fixture>(f: &F) {
    let auth = Authenticator::new(f.store().clone());
    let created = auth
        .create_key(NewKey::new(unique("auth"), Environment::Live, "ci"))
        .await
        .unwrap();
    let principal = auth
        .authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(principal.key_id(), &created.record.id);
    auth.revoke(&created.record.id).await.unwrap();
    let err = auth
        .authenticate_key(created.key.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Revoked);
    let unknown = ApiKey::generate(Environment::Live);
    let err = auth
        .authenticate_key(unknown.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::InvalidApiKey);
}

pub async fn invalid_new_key_is_refused<F: Fixture>(f: &F) {
    let err = f
        .store()
        .create(NewKey::new("", Environment::Live, "ci"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
}

/// Look-alike tenants and invisible characters in names are refused on every write path:
/// `create` (and so `rotate`) and a bare `insert` of a record built by hand.
pub async fn look_alike_identities_are_refused_on_every_write<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("strict");
    let bad_tenants = [
        format!("{tenant} "),
        format!(" {tenant}"),
        format!("{tenant}\u{a0}"),
        format!("{tenant}\u{200b}"),
        format!("\u{202e}{tenant}"),
        format!("{tenant}\u{2028}"),
        tenant.to_uppercase(),
    ];
    let bad_names = [
        "ci ",
        " ci",
        "c\u{202e}i",
        "c\u{200b}i",
        "c\ni",
        "c\u{2028}i",
        "c\u{1b}i",
    ];
    for bad in &bad_tenants {
        let err = store
            .create(NewKey::new(bad, Environment::Live, "ci"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "tenant {bad:?}");
        assert!(err.to_string().contains("tenant"), "{err}");
    }
    for bad in bad_names {
        let err = store
            .create(NewKey::new(&tenant, Environment::Live, bad))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "name {bad:?}");
        assert!(err.to_string().contains("key name"), "{err}");
    }

    // `insert` checks a record built without `create`.
    let good = store
        .create(NewKey::new(&tenant, Environment::Live, "ci"))
        .await
        .unwrap()
        .record;
    for bad in &bad_tenants {
        let key = ApiKey::generate(Environment::Live);
        let mut record = KeyRecord::for_key(
            &key,
            NewKey::new(&tenant, Environment::Live, "ci"),
            SystemTime::now(),
        );
        record.tenant = bad.clone();
        let err = store.insert(&record).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "tenant {bad:?}");
        assert!(store.lookup(&key.hash()).await.unwrap().is_none());
    }
    for bad in bad_names {
        let key = ApiKey::generate(Environment::Live);
        let mut record = KeyRecord::for_key(
            &key,
            NewKey::new(&tenant, Environment::Live, "ci"),
            SystemTime::now(),
        );
        record.name = bad.to_owned();
        let err = store.insert(&record).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "name {bad:?}");
        assert!(store.lookup(&key.hash()).await.unwrap().is_none());
    }
    let key = ApiKey::generate(Environment::Live);
    let mut record = KeyRecord::for_key(
        &key,
        NewKey::new(&tenant, Environment::Live, "ci"),
        SystemTime::now(),
    );
    record.id = KeyId::new("key x\r\n");
    assert_eq!(
        store.insert(&record).await.unwrap_err().kind(),
        StoreErrorKind::Invalid
    );

    // Nothing look-alike was stored next to the real tenant.
    let listed = store.list(&tenant).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, good.id);
}

/// Pages of `limit`, walked to the end (or until `stop` pages: a loop would be a bug).
async fn walk<S: KeyStore>(store: &S, tenant: Option<&str>, limit: u32) -> Vec<KeyRecord> {
    let mut page = hapnd_auth::ListPage::new(tenant, limit);
    let mut all = Vec::new();
    for _ in 0..100_000 {
        let got = store.list_page(&page).await.unwrap();
        assert!(got.len() <= limit as usize, "a page over its limit");
        let Some(last) = got.last().cloned() else {
            return all;
        };
        all.extend(got);
        page = page.after(&last);
    }
    panic!("paging never ended");
}

pub async fn list_page_walks_a_tenant_and_every_tenant<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("paged");
    let other = unique("paged-other");
    let mut ids = Vec::new();
    for (i, t) in [&tenant, &other, &tenant, &tenant, &other]
        .into_iter()
        .enumerate()
    {
        let created = store
            .create(NewKey::new(t, Environment::Live, format!("k{i}")))
            .await
            .unwrap();
        if t == &tenant {
            ids.push(created.record.id.clone());
        }
    }
    // Pages of 2 cover the tenant's 3 keys exactly once, in the listing's order.
    let paged: Vec<KeyId> = walk(store, Some(&tenant), 2)
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    let listed: Vec<KeyId> = store
        .list(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(paged, listed);
    let mut sorted = paged.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected);
    assert!(walk(store, Some(&unique("nobody")), 2).await.is_empty());

    // Every tenant: both tenants' keys, each once, by tenant, then (created, id).
    match store.list_page(&hapnd_auth::ListPage::new(None, 1)).await {
        Ok(first) => assert_eq!(first.len(), 1, "limit 1 is one key"),
        Err(e) => {
            assert_eq!(e.kind(), hapnd_auth::StoreErrorKind::Invalid);
            return;
        }
    }
    let all = walk(store, None, 3).await;
    let order: Vec<_> = all
        .iter()
        .map(|r| (r.tenant.clone(), r.created_at, r.id.clone()))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );
    let mine = all
        .iter()
        .filter(|r| r.tenant == tenant || r.tenant == other)
        .count();
    assert_eq!(mine, 5);
}

/// Scopes, metadata and a rate limit come back as they went in, from every read path
/// (lookup, the request path's lookup, get, list, list_page, revoke), and rotation copies
/// them. A key created without them reads back without them.
pub async fn policy_round_trips_and_survives_rotation<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("policy");
    let meta =
        Metadata::parse(r#"{"plan": "pro", "owner": {"team": "billing"}, "n": [1, 2]}"#).unwrap();
    let limit: RateLimit = "100/s,burst=200".parse().unwrap();
    let created = store
        .create(
            NewKey::new(&tenant, Environment::Live, "reporting")
                .scope("events:read")
                .scope("reports:export")
                .metadata(meta.clone())
                .rate_limit(limit),
        )
        .await
        .unwrap();
    let check = |r: &KeyRecord| {
        assert_eq!(r.scopes, ["events:read", "reports:export"]);
        assert_eq!(r.metadata.as_ref(), Some(&meta));
        assert_eq!(r.rate_limit, Some(limit));
    };
    check(&created.record);
    let hash = created.key.hash();
    check(&store.lookup(&hash).await.unwrap().unwrap());
    check(&store.lookup_for_request(&hash).await.unwrap().unwrap());
    check(&store.get(&created.record.id).await.unwrap().unwrap());
    check(&store.list(&tenant).await.unwrap()[0]);
    let page = store
        .list_page(&hapnd_auth::ListPage::new(Some(&tenant), 10))
        .await
        .unwrap();
    check(&page[0]);

    let rotated = store.rotate(&created.record.id).await.unwrap();
    check(&rotated.record);
    check(&store.lookup(&rotated.key.hash()).await.unwrap().unwrap());
    check(
        &store
            .revoke(&created.record.id, SystemTime::now())
            .await
            .unwrap(),
    );

    let plain = store
        .create(NewKey::new(&tenant, Environment::Live, "plain"))
        .await
        .unwrap();
    let found = store.lookup(&plain.key.hash()).await.unwrap().unwrap();
    assert!(found.scopes.is_empty() && found.metadata.is_none() && found.rate_limit.is_none());
    assert!(!found.has_policy());
    let rotated = store.rotate(&plain.record.id).await.unwrap();
    assert!(!rotated.record.has_policy());
}

/// A bad scope, too many scopes or a duplicate is refused by `create` and by a bare
/// `insert`, and nothing is written.
pub async fn invalid_policy_is_refused_and_nothing_written<F: Fixture>(f: &F) {
    let store = f.store();
    let tenant = unique("badpolicy");
    let too_many: Vec<String> = (0..=hapnd_auth::MAX_SCOPES)
        .map(|i| format!("s{i}"))
        .collect();
    let bad: Vec<Vec<String>> = vec![
        vec!["Events:read".into()],
        vec!["events read".into()],
        vec!["events:*".into()],
        vec![String::new()],
        vec!["a".repeat(hapnd_auth::MAX_SCOPE_LEN + 1)],
        vec!["a".into(), "a".into()],
        too_many,
    ];
    for scopes in bad {
        let new = NewKey::new(&tenant, Environment::Live, "ci").scopes(scopes.clone());
        let err = store.create(new.clone()).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "{scopes:?}");
        let key = ApiKey::generate(Environment::Live);
        let record = KeyRecord::for_key(&key, new, SystemTime::now());
        let err = store.insert(&record).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "{scopes:?}");
        assert!(store.lookup(&key.hash()).await.unwrap().is_none());
    }
    assert!(store.list(&tenant).await.unwrap().is_empty());
}
