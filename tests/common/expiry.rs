//! Expiry ahead, as every [`ExpiringKeys`] store must answer it, as generic async functions,
//! and [`expiry_suite!`], which turns them into one `#[tokio::test]` each for a store.

use std::time::{Duration, SystemTime};

use hapnd_auth::{
    Environment, ExpiringKeys, ExpiringQuery, KeyId, KeyRecord, KeyStore, NewKey, Roll,
};

use super::conformance::Fixture;
use super::unique;

/// One `#[tokio::test]` per expiry case; `$fixture` as for `conformance_suite!`.
#[macro_export]
macro_rules! expiry_suite {
    ($fixture:expr) => {
        mod expiry {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(fixture) = $fixture.await else {
                            return;
                        };
                        $crate::common::expiry::$name(&fixture).await;
                    }
                };
            }
            case!(only_unrevoked_keys_expiring_in_the_window_soonest_first);
            case!(pages_walk_the_window_without_gaps_or_repeats);
            case!(a_scheduled_roll_puts_the_old_key_in_the_window);
        }
    };
}

const HOUR: Duration = Duration::from_secs(3600);

fn ids(keys: &[KeyRecord]) -> Vec<KeyId> {
    keys.iter().map(|k| k.id.clone()).collect()
}

async fn key<S: KeyStore>(
    store: &S,
    tenant: &str,
    name: &str,
    expires: Option<SystemTime>,
) -> KeyId {
    let mut new = NewKey::new(tenant, Environment::Live, name);
    if let Some(at) = expires {
        new = new.expires_at(at);
    }
    store.create(new).await.unwrap().record.id
}

pub async fn only_unrevoked_keys_expiring_in_the_window_soonest_first<F: Fixture>(f: &F)
where
    F::Store: ExpiringKeys,
{
    let store = f.store();
    let (a, b) = (unique("exp-a"), unique("exp-b"));
    let now = SystemTime::now();
    let in_2d = key(store, &a, "in-2d", Some(now + 48 * HOUR)).await;
    let in_1h = key(store, &a, "in-1h", Some(now + HOUR)).await;
    let other_tenant = key(store, &b, "b-in-3d", Some(now + 72 * HOUR)).await;
    // Outside the window, or not expiring: never listed, never counted.
    key(store, &a, "in-30d", Some(now + 30 * 24 * HOUR)).await;
    key(store, &a, "never", None).await;
    key(store, &a, "expired", Some(now - HOUR)).await;
    let revoked = key(store, &a, "revoked-in-1d", Some(now + 24 * HOUR)).await;
    store.revoke(&revoked, now).await.unwrap();

    let week = ExpiringQuery::within(now, 7 * 24 * HOUR, 100);
    let every = store.expiring(&week).await.unwrap();
    assert_eq!(
        ids(&every),
        vec![in_1h.clone(), in_2d.clone(), other_tenant.clone()]
    );
    let of_a = store.expiring(&week.clone().tenant(&a)).await.unwrap();
    assert_eq!(ids(&of_a), vec![in_1h.clone(), in_2d]);
    assert!(
        of_a.iter()
            .all(|k| k.expires_at.is_some() && !k.is_revoked())
    );
    assert_eq!(
        store
            .count_expiring(now, now + 7 * 24 * HOUR)
            .await
            .unwrap(),
        3
    );

    // The window's end is inclusive, its start exclusive.
    let day = ExpiringQuery::within(now, 2 * HOUR, 100);
    assert_eq!(ids(&store.expiring(&day).await.unwrap()), vec![in_1h]);
    assert_eq!(store.count_expiring(now, now + 2 * HOUR).await.unwrap(), 1);
    assert_eq!(
        store
            .count_expiring(now + 80 * HOUR, now + 90 * HOUR)
            .await
            .unwrap(),
        0
    );
}

pub async fn pages_walk_the_window_without_gaps_or_repeats<F: Fixture>(f: &F)
where
    F::Store: ExpiringKeys,
{
    let store = f.store();
    let tenant = unique("exp-page");
    let now = SystemTime::now();
    let mut made = Vec::new();
    for i in 0..7u32 {
        // Two keys share each expiry: the id breaks the tie, and the cursor must too.
        let at = now + HOUR * (1 + i / 2);
        made.push((at, key(store, &tenant, &format!("k{i}"), Some(at)).await));
    }
    let mut query = ExpiringQuery::within(now, 24 * HOUR, 3).tenant(&tenant);
    let mut seen = Vec::new();
    loop {
        let page = store.expiring(&query).await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(ids(&page));
        match page.last() {
            Some(last) if page.len() == 3 => query = query.after(last),
            _ => break,
        }
    }
    made.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    // The stores keep milliseconds: compare the order of ids, which is what a reader sees.
    let expected: Vec<KeyId> = made.into_iter().map(|(_, id)| id).collect();
    assert_eq!(seen, expected);
}

pub async fn a_scheduled_roll_puts_the_old_key_in_the_window<F: Fixture>(f: &F)
where
    F::Store: ExpiringKeys,
{
    let store = f.store();
    let tenant = unique("exp-roll");
    let now = SystemTime::now();
    let old = key(store, &tenant, "rolled", None).await;
    let week = ExpiringQuery::within(now, 7 * 24 * HOUR, 100).tenant(&tenant);
    assert!(store.expiring(&week).await.unwrap().is_empty());
    let rotation = store
        .rotate_as(
            &old,
            Roll::new().old_expires_at(now + 24 * HOUR),
            &Default::default(),
        )
        .await
        .unwrap();
    // The old key is listed; the replacement (no expiry) is not.
    assert_eq!(
        ids(&store.expiring(&week).await.unwrap()),
        vec![old.clone()]
    );
    store.revoke(&old, SystemTime::now()).await.unwrap();
    assert!(store.expiring(&week).await.unwrap().is_empty());
    assert_ne!(rotation.replacement.record.id, old);
}
