//! What the store test files share: the conformance suite every `KeyStore` must pass.
#![allow(dead_code)]

pub mod conformance;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hapnd_auth::KeyRecord;

/// A tenant name no other test uses, so tests can share one database.
pub fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{suffix}")
}

/// `at` with the sub-millisecond part dropped: the precision the SQL stores keep.
pub fn ms(at: SystemTime) -> SystemTime {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

/// `record` at the stores' millisecond precision, to compare what went in and came out.
pub fn normalized(mut record: KeyRecord) -> KeyRecord {
    record.created_at = ms(record.created_at);
    record.revoked_at = record.revoked_at.map(ms);
    record.expires_at = record.expires_at.map(ms);
    record.last_used_at = record.last_used_at.map(ms);
    record
}

/// Polls `check` every 5 ms until it holds or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
