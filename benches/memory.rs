//! Bytes of resident memory per cached key, at 1,000,000 cached keys; then what the
//! seen-valid set (`AuthenticatorBuilder::seen_valid_capacity`) adds per key.
//!
//! Run: `cargo bench --bench memory` (another count: `cargo bench --bench memory -- 200000`).
//!
//! The keys are created in the memory store first; RSS is read from `/proc/self/statm`
//! after that and again after each key has been authenticated once through the real miss
//! path (so the cache holds exactly what a request leaves in it). The difference, over the
//! number of cached entries, is what the cache costs per key: moka's entry and its
//! bookkeeping, our value, the principal's strings, allocator overhead included. Target:
//! at most 450 bytes per key.
//!
//! It also prints what those bytes are made of: allocations per key and bytes requested
//! per key (live after the run, by size class), counted by a global allocator that
//! forwards to the system's. RSS minus requested bytes is the allocator's own overhead
//! (glibc: 8 bytes a chunk, sizes rounded up to 16).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use hapnd_auth::{Authenticator, Environment, FailedAttemptLimit, MemoryKeyStore, NewKey};

const TARGET_BYTES_PER_KEY: f64 = 450.0;

/// Live allocations by size class (16-byte steps, the last one for everything from
/// 993 bytes), and live bytes requested.
static LIVE: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

fn class(size: usize) -> usize {
    size.div_ceil(16).min(63)
}

fn count(size: usize, delta: i64) {
    LIVE[class(size)].fetch_add(delta, Ordering::Relaxed);
    LIVE_BYTES.fetch_add(delta * size as i64, Ordering::Relaxed);
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (Vec<i64>, i64) {
    let classes = LIVE.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    (classes, LIVE_BYTES.load(Ordering::Relaxed))
}

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
    let store = MemoryKeyStore::new();
    let auth = Authenticator::builder(store.clone())
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
        let (classes_before, bytes_before) = live();
        let started = Instant::now();
        for key in &secrets {
            auth.authenticate_key(key.expose_secret())
                .await
                .expect("fresh key authenticates");
        }
        let cached = auth.cached_entries();
        let after = rss_bytes();
        let (classes_after, bytes_after) = live();
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
        let per = |n: i64| n as f64 / cached as f64;
        let allocations: i64 = classes_after
            .iter()
            .zip(&classes_before)
            .map(|(a, b)| a - b)
            .sum();
        println!(
            "memory: {:.1} live allocations and {:.0} bytes requested per cached key; by size class:",
            per(allocations),
            per(bytes_after - bytes_before)
        );
        for (i, (a, b)) in classes_after.iter().zip(&classes_before).enumerate() {
            // Classes that hold at least one allocation per hundred keys.
            if (a - b).abs() * 100 >= cached as i64 {
                let range = if i == 63 {
                    "993 B and up".to_owned()
                } else {
                    format!("{}-{} B", i * 16 - 15, i * 16)
                };
                println!("memory:   {range:>14}: {:+.2} per key", per(a - b));
            }
        }

        // The seen-valid set (on only with the throttle): a second authenticator over the
        // same keys, throttling on, so each lookup also enters the set. What it costs more
        // than the first, per key, is the set's cost.
        let with_set = Authenticator::builder(store.clone())
            .capacity(keys as u64 * 2)
            .ttl(Duration::from_secs(3600))
            .throttle_failed_attempts(FailedAttemptLimit::new(20, Duration::from_secs(3)))
            .seen_valid_capacity(keys as u64 * 2)
            .seen_valid_ttl(Duration::from_secs(3600))
            .build();
        let before = rss_bytes();
        let (_, bytes_before_set) = live();
        for key in &secrets {
            with_set
                .authenticate_key(key.expose_secret())
                .await
                .expect("fresh key authenticates");
        }
        assert_eq!(with_set.cached_entries(), keys as u64, "every key cached");
        let after_set = rss_bytes();
        let (_, bytes_after_set) = live();
        let per_key_with_set = (after_set - before) as f64 / keys as f64;
        let requested_with_set = (bytes_after_set - bytes_before_set) as f64 / keys as f64;
        println!(
            "memory: seen-valid set: {:.0} bytes per key (RSS: {per_key_with_set:.0} with the \
             set, {per_key:.0} without), {:.0} bytes requested per key",
            per_key_with_set - per_key,
            requested_with_set - per(bytes_after - bytes_before),
        );
        drop(secrets);
    });
}
