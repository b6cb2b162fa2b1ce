//! No key appears in tracing output, `Debug` output, error messages or response bodies.

mod common;

use common::{TestStore, bearer, capture_logs, echo, request, seen};
use hapnd_auth::{
    ApiKey, Authenticator, Environment, EnvironmentRouter, NewKey, RequireEnvironmentLayer,
};
use http::HeaderValue;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn no_key_in_logs_debug_errors_or_bodies() {
    let (logs, _guard) = capture_logs(tracing::Level::TRACE);

    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    let live = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    let test = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "dev"))
        .await
        .unwrap();
    let revoked = auth
        .create_key(NewKey::new("acme", Environment::Live, "old"))
        .await
        .unwrap();
    let unknown = ApiKey::generate(Environment::Live);
    let mut secrets: Vec<String> = [&live.key, &test.key, &revoked.key, &unknown]
        .iter()
        .map(|k| k.expose_secret().to_owned())
        .collect();
    let mut typo = secrets[0].clone();
    typo.replace_range(12..13, if &typo[12..13] == "x" { "y" } else { "x" });
    secrets.push(typo.clone());
    auth.revoke(&revoked.record.id).await.unwrap();

    let mut printed = Vec::new();
    let layer = auth.layer();
    let svc = layer.clone().layer(service_fn(echo));
    printed.push(format!(
        "{layer:?} {svc:?} {auth:?} {:?} {:?}",
        auth.invalidator(),
        store.inner
    ));
    printed.push(format!("{:?} {:?} {:?}", live, live.key, live.record));

    let mut requests = vec![
        bearer(&secrets[0]),
        bearer(&secrets[1]),
        bearer(&secrets[2]),
        bearer(&secrets[3]),
        bearer(&typo),
        bearer(&format!("{}{}", secrets[0], secrets[0])),
        request(Some(&format!("Bearer\t{}", secrets[0]))),
        request(Some(&format!("Basic {}", secrets[0]))),
        request(Some(&format!("Bearer {} extra", secrets[0]))),
    ];
    let mut two = bearer(&secrets[0]);
    two.headers_mut().append(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", secrets[1])).unwrap(),
    );
    requests.push(two);
    for req in requests {
        let s = seen(svc.clone().oneshot(req).await.unwrap()).await;
        printed.push(format!("{} {:?} {:?}", s.body, s.error, s.principal));
        if let Some(e) = &s.error {
            printed.push(e.to_string());
        }
    }
    // Wrong environment, and a store outage.
    let guarded = auth
        .layer()
        .layer(RequireEnvironmentLayer::new(Environment::Live).layer(service_fn(echo)));
    let s = seen(guarded.oneshot(bearer(&secrets[1])).await.unwrap()).await;
    printed.push(format!("{} {:?}", s.body, s.error));
    let routed = auth
        .layer()
        .layer(EnvironmentRouter::new(service_fn(echo), service_fn(echo)));
    printed.push(format!("{routed:?}"));
    store.set_failing(true);
    auth.invalidator().invalidate_all();
    let s = seen(svc.clone().oneshot(bearer(&secrets[0])).await.unwrap()).await;
    assert_eq!(s.status, 503);
    printed.push(format!(
        "{} {:?} {}",
        s.body,
        s.error,
        s.error.as_ref().unwrap()
    ));
    for bad in &secrets {
        if let Err(e) = ApiKey::parse(bad) {
            printed.push(format!("{e} {e:?}"));
        }
        if let Err(e) = auth.authenticate_key(bad).await {
            printed.push(format!("{e} {e:?}"));
        }
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request rejected"),
        "rejections are traced: {logs}"
    );
    assert!(logs.contains("api_key_revoked") && logs.contains(revoked.record.id.as_str()));
    assert!(logs.contains("auth_unavailable"));
    printed.push(logs);
    for text in &printed {
        for secret in &secrets {
            // The random part alone is as secret as the whole key.
            assert!(!text.contains(&secret[8..40]), "a key leaked into: {text}");
        }
    }
}

/// A store whose rows were written by hand with a line break in the tenant: what `revoke`
/// hands back is logged escaped, so it cannot forge a log line.
#[derive(Clone, Default)]
struct HandWritten(hapnd_auth::MemoryKeyStore);

impl hapnd_auth::KeyStore for HandWritten {
    async fn lookup(
        &self,
        hash: &hapnd_auth::KeyHash,
    ) -> Result<Option<hapnd_auth::KeyRecord>, hapnd_auth::StoreError> {
        self.0.lookup(hash).await
    }
    async fn insert(&self, record: &hapnd_auth::KeyRecord) -> Result<(), hapnd_auth::StoreError> {
        self.0.insert(record).await
    }
    async fn get(
        &self,
        id: &hapnd_auth::KeyId,
    ) -> Result<Option<hapnd_auth::KeyRecord>, hapnd_auth::StoreError> {
        self.0.get(id).await
    }
    async fn list(
        &self,
        tenant: &str,
    ) -> Result<Vec<hapnd_auth::KeyRecord>, hapnd_auth::StoreError> {
        self.0.list(tenant).await
    }
    async fn revoke(
        &self,
        id: &hapnd_auth::KeyId,
        at: std::time::SystemTime,
    ) -> Result<hapnd_auth::KeyRecord, hapnd_auth::StoreError> {
        let mut record = self.0.revoke(id, at).await?;
        record.tenant = "acme\r\n2026-01-01T00:00:00Z  INFO forged: all keys rotated".to_owned();
        Ok(record)
    }
    async fn record_usage(
        &self,
        used: &[hapnd_auth::LastUsed],
    ) -> Result<(), hapnd_auth::StoreError> {
        self.0.record_usage(used).await
    }
}

#[tokio::test]
async fn stored_strings_are_logged_escaped() {
    let (logs, _guard) = capture_logs(tracing::Level::INFO);
    let auth = Authenticator::new(HandWritten::default());
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    auth.revoke(&created.record.id).await.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("API key revoked"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01")),
        "a stored line break forged a log line: {text}"
    );
    assert!(text.contains(r"acme\r\n"), "{text}");
}
