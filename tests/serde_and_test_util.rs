//! The `serde` and `test-util` features: what a principal and a record look like as JSON
//! (never a key), and a principal for a handler test in one line.
#![cfg(all(feature = "serde", feature = "test-util"))]

use std::time::{Duration, UNIX_EPOCH};

use hapnd_auth::{ApiKey, Environment, KeyHash, KeyId, KeyRecord, NewKey, Principal};
use serde_json::json;

#[test]
fn a_principal_for_a_test_has_the_environment_it_was_asked_for() {
    for environment in [Environment::Live, Environment::Sandbox] {
        let p = Principal::for_test("acme", environment, "ci");
        assert_eq!(p.environment(), environment);
        assert_eq!(p.tenant(), "acme");
        assert_eq!(p.key_name(), "ci");
        assert!(p.key_hint().starts_with(environment.prefix()));
    }
}

#[test]
#[should_panic(expected = "invalid tenant")]
fn a_principal_for_a_test_is_held_to_the_identity_rules() {
    Principal::for_test("Acme ", Environment::Live, "ci");
}

#[test]
fn principals_serialize_their_identity_and_no_secret() {
    let p = Principal::for_test("acme", Environment::Sandbox, "ci");
    let value = serde_json::to_value(&p).unwrap();
    assert_eq!(
        value,
        json!({
            "tenant": "acme",
            "environment": "sandbox",
            "key_id": p.key_id().as_str(),
            "key_name": "ci",
            "key_hint": p.key_hint(),
            "scopes": [],
        })
    );
}

#[test]
fn records_round_trip_with_the_hash_as_hex_and_times_in_milliseconds() {
    let key = ApiKey::generate(Environment::Live);
    let created = UNIX_EPOCH + Duration::from_millis(1_795_765_155_914);
    let mut record = KeyRecord::for_key(
        &key,
        NewKey::new("acme", Environment::Live, "ci").expires_at(created + Duration::from_secs(60)),
        created,
    );
    record.id = KeyId::new("key_0123456789abcdef");
    let text = serde_json::to_string(&record).unwrap();
    assert!(!text.contains(key.expose_secret()), "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["id"], "key_0123456789abcdef");
    assert_eq!(value["environment"], "live");
    assert_eq!(value["hash"], key.hash().to_hex());
    assert_eq!(value["hint"], key.hint());
    assert_eq!(value["created_at"], 1_795_765_155_914_i64);
    assert_eq!(value["expires_at"], 1_795_765_215_914_i64);
    assert_eq!(value["revoked_at"], serde_json::Value::Null);
    let back: KeyRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, record);
}

#[test]
fn record_policies_serialize_as_json_and_old_records_read_without_them() {
    let key = ApiKey::generate(Environment::Live);
    let new = NewKey::new("acme", Environment::Live, "ci")
        .scope("events:read")
        .metadata(hapnd_auth::Metadata::parse(r#"{"plan":"pro"}"#).unwrap())
        .rate_limit("100/s,burst=200".parse().unwrap());
    let record = KeyRecord::for_key(&key, new, UNIX_EPOCH);
    let mut value = serde_json::to_value(&record).unwrap();
    assert_eq!(value["scopes"], json!(["events:read"]));
    assert_eq!(value["metadata"], json!({"plan": "pro"}));
    assert_eq!(value["rate_limit"], "100/s,burst=200");
    let back: KeyRecord = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(back, record);
    // Invalid values are refused, not dropped.
    value["metadata"] = json!([1]);
    assert!(serde_json::from_value::<KeyRecord>(value.clone()).is_err());
    value["metadata"] = json!(null);
    value["rate_limit"] = json!("lots");
    assert!(serde_json::from_value::<KeyRecord>(value.clone()).is_err());
    // A record serialized before policies existed.
    for field in ["scopes", "metadata", "rate_limit"] {
        value.as_object_mut().unwrap().remove(field);
    }
    let old: KeyRecord = serde_json::from_value(value).unwrap();
    assert!(!old.has_policy());
}

#[test]
fn environments_and_hashes_refuse_what_they_cannot_be() {
    assert_eq!(
        serde_json::from_str::<Environment>(r#""sandbox""#).unwrap(),
        Environment::Sandbox
    );
    assert!(serde_json::from_str::<Environment>(r#""prod""#).is_err());
    assert!(serde_json::from_str::<KeyHash>(r#""abc""#).is_err());
}

#[tokio::test]
async fn metadata_never_reaches_debug_output() {
    let auth = hapnd_auth::Authenticator::new(hapnd_auth::MemoryKeyStore::new());
    let created = auth
        .create_key(
            NewKey::new("acme", Environment::Live, "ci")
                .metadata(hapnd_auth::Metadata::parse(r#"{"owner":"s3cr3t-owner"}"#).unwrap()),
        )
        .await
        .unwrap();
    let p = auth
        .authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    assert_eq!(p.metadata().unwrap().to_value()["owner"], "s3cr3t-owner");
    for text in [
        format!("{p:?}"),
        format!("{:?}", created.record),
        format!("{created:?}"),
        format!("{:?}", p.metadata()),
    ] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}
