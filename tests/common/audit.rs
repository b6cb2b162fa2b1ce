//! The audit trail every [`AuditTrail`] store must keep, as generic async functions, and
//! [`audit_suite!`], which turns them into one `#[tokio::test]` each for a store.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use hapnd_auth::{
    Actor, ActorKind, AuditTrail, Authenticator, Environment, EventQuery, KeyEvent, KeyEventKind,
    KeyStore, NewKey, Roll, prune_events,
};

use super::conformance::Fixture;
use super::{ms, unique};

/// One `#[tokio::test]` per audit case; `$fixture` as for `conformance_suite!`.
#[macro_export]
macro_rules! audit_suite {
    ($fixture:expr) => {
        mod audit {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(fixture) = $fixture.await else {
                            return;
                        };
                        $crate::common::audit::$name(&fixture).await;
                    }
                };
            }
            case!(every_change_is_recorded_with_its_actor_newest_first);
            case!(pages_walk_the_trail_without_gaps_or_repeats);
            case!(a_leak_report_is_recorded_and_a_replay_revokes_nothing_new);
            case!(events_hold_no_key_and_no_hash);
            case!(pruning_deletes_old_events_in_batches_only);
            case!(a_change_without_an_actor_is_the_application);
        }
    };
}

fn kinds(events: &[KeyEvent]) -> Vec<KeyEventKind> {
    events.iter().map(|e| e.kind).collect()
}

pub async fn every_change_is_recorded_with_its_actor_newest_first<F: Fixture>(f: &F)
where
    F::Store: AuditTrail,
{
    let store = f.store();
    let tenant = unique("audit");
    let cli = Actor::cli("keys create", "alice", "build-1");
    let admin = Actor::admin("ops-dashboard").with_client("192.0.2.7".parse().unwrap());
    let page = Actor::page("admin session").with_client("::1".parse().unwrap());
    let created = store
        .create_as(NewKey::new(&tenant, Environment::Live, "ci"), &cli)
        .await
        .unwrap();
    let old = created.record.id.clone();
    let expiry = SystemTime::now() + Duration::from_secs(24 * 3600);
    let rotation = store
        .rotate_as(&old, Roll::new().old_expires_at(expiry), &admin)
        .await
        .unwrap();
    assert_eq!(rotation.old.id, old);
    assert_eq!(
        rotation.old.expires_at.map(ms),
        Some(ms(expiry)),
        "the old key got its expiry"
    );
    assert_eq!(rotation.replacement.record.expires_at, None);
    let new = rotation.replacement.record.id.clone();
    store
        .revoke_as(&old, SystemTime::now(), &page)
        .await
        .unwrap();
    // Another tenant's change is not in this tenant's trail.
    let other = unique("audit");
    store
        .create_as(NewKey::new(&other, Environment::Live, "ci"), &cli)
        .await
        .unwrap();

    let old_events = store.events(&EventQuery::key(&old, 100)).await.unwrap();
    assert_eq!(
        kinds(&old_events),
        [
            KeyEventKind::Revoked,
            KeyEventKind::ExpiryScheduled,
            KeyEventKind::Rotated,
            KeyEventKind::Created
        ]
    );
    let [revoked, scheduled, rotated, first] = &old_events[..] else {
        unreachable!()
    };
    assert_eq!(first.actor_kind, ActorKind::Cli);
    assert_eq!(first.actor, "hapnd-auth keys create (alice@build-1)");
    assert_eq!(first.client, None);
    assert_eq!(rotated.actor_kind, ActorKind::Admin);
    assert_eq!(rotated.actor, "ops-dashboard");
    assert_eq!(rotated.client.as_deref(), Some("192.0.2.7"));
    assert_eq!(rotated.replacement.as_ref(), Some(&new));
    assert_eq!(scheduled.expires_at.map(ms), Some(ms(expiry)));
    assert_eq!(scheduled.actor, "ops-dashboard");
    assert_eq!(revoked.actor_kind, ActorKind::Page);
    assert_eq!(revoked.client.as_deref(), Some("::1"));
    assert!(
        old_events
            .windows(2)
            .all(|w| w[0].seq > w[1].seq && w[0].at >= w[1].at)
    );
    assert!(
        old_events
            .iter()
            .all(|e| e.tenant == tenant && e.key_id == old)
    );

    let tenant_events = store
        .events(&EventQuery::tenant(&tenant, 100))
        .await
        .unwrap();
    assert_eq!(
        tenant_events.len(),
        5,
        "four of the old key, the replacement's creation"
    );
    assert!(tenant_events.iter().all(|e| e.tenant == tenant));
    let replacement_created = tenant_events
        .iter()
        .find(|e| e.key_id == new)
        .expect("the replacement's creation");
    assert_eq!(replacement_created.kind, KeyEventKind::Created);
    assert_eq!(replacement_created.actor, "ops-dashboard");

    // Revoking again changes nothing, and records nothing.
    store
        .revoke_as(&old, SystemTime::now(), &page)
        .await
        .unwrap();
    assert_eq!(
        store
            .events(&EventQuery::key(&old, 100))
            .await
            .unwrap()
            .len(),
        4
    );
}

pub async fn pages_walk_the_trail_without_gaps_or_repeats<F: Fixture>(f: &F)
where
    F::Store: AuditTrail,
{
    let store = f.store();
    let tenant = unique("pages");
    let actor = Actor::admin("pager");
    for i in 0..7 {
        store
            .create_as(
                NewKey::new(&tenant, Environment::Sandbox, format!("k{i}")),
                &actor,
            )
            .await
            .unwrap();
    }
    let mut query = EventQuery::tenant(&tenant, 3);
    let mut seen = Vec::new();
    loop {
        let page = store.events(&query).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        query = query.after(&last);
    }
    assert_eq!(seen.len(), 7);
    assert!(
        seen.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first, no repeats"
    );
    let ids: HashSet<_> = seen.iter().map(|e| e.key_id.clone()).collect();
    assert_eq!(ids.len(), 7);
}

pub async fn a_leak_report_is_recorded_and_a_replay_revokes_nothing_new<F: Fixture>(f: &F)
where
    F::Store: AuditTrail,
{
    let store = f.store();
    let tenant = unique("leak");
    let created = store
        .create(NewKey::new(&tenant, Environment::Live, "ci"))
        .await
        .unwrap();
    let id = created.record.id.clone();
    let url = "https://github.com/acme/app/blob/abc/config.yml";
    let scanner = Actor::secret_scanning("github", url);
    let first_revocation = store
        .revoke_as(&id, SystemTime::now(), &scanner)
        .await
        .unwrap();
    assert!(first_revocation.is_revoked());
    let events = store.events(&EventQuery::key(&id, 10)).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            KeyEventKind::Revoked,
            KeyEventKind::ReportedLeaked,
            KeyEventKind::Created
        ]
    );
    assert!(
        events[..2]
            .iter()
            .all(|e| e.detail.as_deref() == Some(url) && e.actor_kind == ActorKind::SecretScanning)
    );
    // A replayed report: recorded as a report, the revocation stays the first one.
    let again = store
        .revoke_as(&id, SystemTime::now() + Duration::from_secs(60), &scanner)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, first_revocation.revoked_at);
    let events = store.events(&EventQuery::key(&id, 10)).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            KeyEventKind::ReportedLeaked,
            KeyEventKind::Revoked,
            KeyEventKind::ReportedLeaked,
            KeyEventKind::Created
        ]
    );
}

pub async fn events_hold_no_key_and_no_hash<F: Fixture>(f: &F)
where
    F::Store: AuditTrail,
{
    let store = f.store();
    let tenant = unique("secret");
    let auth = Authenticator::new(store.clone());
    let actor = Actor::cli("keys create", "bob", "h");
    let created = auth
        .create_key_as(NewKey::new(&tenant, Environment::Live, "ci"), &actor)
        .await
        .unwrap();
    let rotation = auth
        .rotate_as(
            &created.record.id,
            Roll::new().old_expires_at(SystemTime::now()),
            &actor,
        )
        .await
        .unwrap();
    auth.revoke_as(&created.record.id, &actor).await.unwrap();
    let events = store
        .events(&EventQuery::tenant(&tenant, 100))
        .await
        .unwrap();
    assert_eq!(events.len(), 5);
    let shown = format!("{events:?}");
    for key in [&created.key, &rotation.replacement.key] {
        let secret = key.expose_secret();
        assert!(!shown.contains(secret));
        assert!(!shown.contains(&secret[8..20]), "no part of the key body");
        assert!(!shown.to_lowercase().contains(&key.hash().to_hex()));
    }
}

pub async fn pruning_deletes_old_events_in_batches_only<F: Fixture>(f: &F)
where
    F::Store: AuditTrail,
{
    let store = f.store();
    let tenant = unique("prune");
    for i in 0..5 {
        store
            .create(NewKey::new(&tenant, Environment::Live, format!("k{i}")))
            .await
            .unwrap();
    }
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(
        prune_events(store, an_hour_ago, 2).await.unwrap(),
        0,
        "nothing that old"
    );
    assert_eq!(
        store
            .events(&EventQuery::tenant(&tenant, 100))
            .await
            .unwrap()
            .len(),
        5
    );
    let later = SystemTime::now() + Duration::from_secs(5);
    let one_batch = store.prune_events_batch(later, 2).await.unwrap();
    assert_eq!(one_batch, 2, "one batch deletes at most its size");
    let remaining = store
        .events(&EventQuery::tenant(&tenant, 100))
        .await
        .unwrap();
    assert!(remaining.len() <= 3);
    prune_events(store, later, 2).await.unwrap();
    assert!(
        store
            .events(&EventQuery::tenant(&tenant, 100))
            .await
            .unwrap()
            .is_empty()
    );
    // The keys themselves are untouched.
    assert_eq!(store.list(&tenant).await.unwrap().len(), 5);
}

pub async fn a_change_without_an_actor_is_the_application<F: Fixture>(f: &F)
where
    F::Store: AuditTrail,
{
    let store = f.store();
    let tenant = unique("plain");
    let created = store
        .create(NewKey::new(&tenant, Environment::Live, "ci"))
        .await
        .unwrap();
    store.rotate(&created.record.id).await.unwrap();
    store
        .revoke(&created.record.id, SystemTime::now())
        .await
        .unwrap();
    let events = store
        .events(&EventQuery::key(&created.record.id, 10))
        .await
        .unwrap();
    assert_eq!(
        kinds(&events),
        [
            KeyEventKind::Revoked,
            KeyEventKind::Rotated,
            KeyEventKind::Created
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.actor_kind == ActorKind::Application)
    );
}
