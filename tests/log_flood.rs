//! A store outage under a flood of distinct keys does not become a flood of WARN lines:
//! the library writes its `auth_unavailable` WARN at most once a second.

mod common;

use common::{TestStore, call, capture_logs};
use hapnd_auth::{ApiKey, Authenticator, Environment};

#[tokio::test]
async fn an_outage_logs_one_warn_a_second_not_one_per_request() {
    let (logs, _guard) = capture_logs(tracing::Level::INFO);
    let store = TestStore::new();
    let auth = Authenticator::new(store.clone());
    store.set_failing(true);
    let started = std::time::Instant::now();
    let requests = 200;
    for _ in 0..requests {
        let key = ApiKey::generate(Environment::Live);
        assert_eq!(call(&auth, key.expose_secret()).await.status, 503);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("authentication unavailable"))
        .collect();
    assert!(
        !warns.is_empty() && warns.len() as u64 <= seconds,
        "{} WARN lines for {requests} failures in {seconds} s:\n{text}",
        warns.len()
    );

    // A second later, the next WARN says how many were left out.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let key = ApiKey::generate(Environment::Live);
    assert_eq!(call(&auth, key.expose_secret()).await.status, 503);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let last = text
        .lines()
        .rfind(|l| l.contains("WARN") && l.contains("authentication unavailable"))
        .unwrap();
    assert!(last.contains("suppressed="), "{last}");
}
