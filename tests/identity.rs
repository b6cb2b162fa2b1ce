//! Strict identities on the read side: a record whose tenant, name or id no write path
//! accepts (a row written by hand, a store that does not validate) never becomes a
//! principal. The write side is in the conformance suite
//! (`look_alike_identities_are_refused_on_every_write`).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use common::{bearer, echo, seen};
use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, Environment, KeyHash, KeyId, KeyRecord, KeyStore, NewKey,
    StoreError, StoreErrorKind,
};
use tower::{ServiceBuilder, ServiceExt};

/// A store that keeps whatever it is given: what a hand-edited table looks like.
#[derive(Clone, Default)]
struct Unchecked(Arc<Mutex<HashMap<KeyHash, KeyRecord>>>);

impl KeyStore for Unchecked {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.0.lock().unwrap().get(hash).cloned())
    }
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.0.lock().unwrap().insert(record.hash, record.clone());
        Ok(())
    }
    async fn get(&self, _: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(None)
    }
    async fn list(&self, _: &str) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn revoke(&self, id: &KeyId, _: SystemTime) -> Result<KeyRecord, StoreError> {
        Err(StoreError::new(StoreErrorKind::NotFound, format!("{id}")))
    }
}

fn record(key: &ApiKey) -> KeyRecord {
    KeyRecord::for_key(
        key,
        NewKey::new("acme", key.environment(), "ci"),
        SystemTime::now(),
    )
}

#[tokio::test]
async fn a_stored_identity_that_no_write_accepts_fails_closed() {
    let store = Unchecked::default();
    let auth = Authenticator::new(store.clone());
    let service = ServiceBuilder::new().layer(auth.layer()).service_fn(echo);

    let good = ApiKey::generate(Environment::Live);
    store.insert(&record(&good)).await.unwrap();
    let ok = seen(
        service
            .clone()
            .oneshot(bearer(good.expose_secret()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.principal.unwrap().tenant(), "acme");

    type Corrupt = (&'static str, fn(&mut KeyRecord));
    let corrupt: [Corrupt; 8] = [
        ("tenant with a trailing space", |r| {
            r.tenant = "acme ".into()
        }),
        ("tenant with a leading space", |r| r.tenant = " acme".into()),
        ("upper-case tenant", |r| r.tenant = "ACME".into()),
        ("tenant with a bidi override", |r| {
            r.tenant = "\u{202e}acme".into()
        }),
        ("tenant with CR LF", |r| {
            r.tenant = "acme\r\nx-admin: 1".into()
        }),
        ("name with a zero-width space", |r| {
            r.name = "c\u{200b}i".into()
        }),
        ("name with a line separator", |r| {
            r.name = "c\u{2028}i".into()
        }),
        ("id with a newline", |r| r.id = KeyId::new("key_\nforged")),
    ];
    for (what, corrupt) in corrupt {
        let key = ApiKey::generate(Environment::Live);
        let mut bad = record(&key);
        corrupt(&mut bad);
        store.insert(&bad).await.unwrap();

        let got = seen(
            service
                .clone()
                .oneshot(bearer(key.expose_secret()))
                .await
                .unwrap(),
        )
        .await;
        assert!(got.principal.is_none(), "{what}: admitted");
        assert_eq!(got.status, 503, "{what}: {}", got.body);
        let error = got.error.unwrap();
        assert_eq!(error.kind(), AuthErrorKind::Unavailable, "{what}");
        assert_eq!(
            error.store_error().map(StoreError::kind),
            Some(StoreErrorKind::Invalid),
            "{what}"
        );
        assert!(!got.body.contains("acme"), "{what}: {}", got.body);

        // The same through the bare-key entry point.
        let err = auth
            .authenticate_key(key.expose_secret())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::Unavailable, "{what}");
    }
}

/// `NewKey`'s environment is not silently replaced by the key's: a sandbox request with a
/// live key used to produce a live record (and so a live principal).
#[test]
#[should_panic(expected = "the new key is a live key but the request asks for sandbox")]
fn a_record_for_a_key_of_another_environment_is_refused() {
    let live_key = ApiKey::generate(Environment::Live);
    let record = KeyRecord::for_key(
        &live_key,
        NewKey::new("acme", Environment::Sandbox, "ci"),
        SystemTime::now(),
    );
    // Reached only if for_key silently picked one of the two.
    eprintln!("got a {} record", record.environment);
}

#[test]
fn a_record_takes_the_environment_of_its_key_or_refuses() {
    let sandbox_key = ApiKey::generate(Environment::Sandbox);
    let record = KeyRecord::for_key(
        &sandbox_key,
        NewKey::new("acme", Environment::Sandbox, "ci"),
        SystemTime::now(),
    );
    assert_eq!(record.environment, Environment::Sandbox);
    assert_eq!(
        hapnd_auth::Principal::from_record(record).environment(),
        Environment::Sandbox
    );

    let live_key = ApiKey::generate(Environment::Live);
    let err = KeyRecord::try_for_key(
        &live_key,
        NewKey::new("acme", Environment::Sandbox, "ci"),
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
}
