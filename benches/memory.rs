//! Bytes of resident memory per cached key, at 1,000,000 cached keys.
//!
//! Run: `cargo bench --bench memory` (another count: `cargo bench --bench memory -- 200000`).
//!
//! The keys are created in the memory store first; RSS is read from `/proc/self/statm`
//! after that and again after each key has been authenticated once through the real miss
//! path (so the cache holds exactly what a request leaves in it). The difference, over the
//! number of cached entries, is what the cache costs per key: moka's entry and its
//! bookkeeping, our value, the principal's strings, allocator overhead included. Target:
//! at most 450 bytes per key.

use std::time::{Duration, Instant};

use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey};

const TARGET_BYTES_PER_KEY: f64 = 450.0;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm has a resident field");
    // Linux x86-64 and aarch64 default page size; statm counts pages.
    resident_pages * 4096
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number overrides the key count.
    let keys: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let auth = Authenticator::builder(MemoryKeyStore::new())
        .capacity(keys as u64 * 2)
        .ttl(Duration::from_secs(3600))
        .build();

    rt.block_on(async {
        let started = Instant::now();
        let mut secrets = Vec::with_capacity(keys);
        for i in 0..keys {
            let new = NewKey::new(
                format!("tenant-{:06}", i / 10),
                Environment::Live,
                format!("ci-pipeline-{i}"),
            );
            let created = auth.create_key(new).await.expect("create");
            secrets.push(created.key);
        }
        let created_in = started.elapsed();

        let before = rss_bytes();
        let started = Instant::now();
        for key in &secrets {
            auth.authenticate_key(key.expose_secret())
                .await
                .expect("fresh key authenticates");
        }
        let cached = auth.cached_entries();
        let after = rss_bytes();
        assert_eq!(cached, keys as u64, "every key cached");

        let per_key = (after - before) as f64 / cached as f64;
        println!(
            "memory: {keys} keys created in {created_in:.1?}, cached in {:.1?}",
            started.elapsed()
        );
        println!(
            "memory: RSS {:.1} MiB -> {:.1} MiB for {cached} cached keys: {per_key:.0} bytes per cached key \
             (target <= {TARGET_BYTES_PER_KEY:.0}: {})",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            if per_key <= TARGET_BYTES_PER_KEY { "met" } else { "MISSED" }
        );
        drop(secrets);
    });
}
