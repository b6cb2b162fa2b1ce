//! How moka is configured for the key cache, measured on moka alone: the hasher (SipHash,
//! std's default, against foldhash keyed per process) and the expiry (one cache with a
//! per-entry `expire_after` policy, positive and negative entries in it, against two
//! caches each with a plain `time_to_live`, looked up positive first). The value mirrors
//! the cache's entry: an epoch and an optional `Arc` to a principal-sized allocation.
//!
//! Run: `cargo bench --bench cache_config` (one shape: `-- 'config/1m_zipf'`).
//!
//! Rows are `config/<shape>/<hasher>_<expiry>`: `hit` rows look up known keys, `unknown`
//! rows look up negative entries (the two-cache layout pays for a miss in the positive
//! cache first). Memory per entry is measured on the real cache by `benches/memory.rs`.

mod common;

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use moka::Expiry;
use moka::sync::Cache;

use common::{Clock, Rng, Zipf};

type Key = [u8; 32];

/// A principal's size: key id, packed text, hash, flags.
struct Principal {
    _bytes: [u8; 120],
}

#[derive(Clone)]
struct Value {
    epoch: u64,
    key: Option<Arc<Principal>>,
}

struct TtlPolicy;

impl Expiry<Key, Value> for TtlPolicy {
    fn expire_after_create(&self, _: &Key, value: &Value, _: Instant) -> Option<Duration> {
        Some(if value.key.is_some() {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(1800)
        })
    }
}

fn folded() -> SeedableRandomState {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    let shared = SHARED.get_or_init(|| SharedSeed::from_u64(0x9e37_79b9_7f4a_7c15));
    SeedableRandomState::with_seed(0x2545_f491_4f6c_dd1d, shared)
}

/// The two layouts, over any hasher.
enum Layout<S> {
    One(Cache<Key, Value, S>),
    Two {
        positive: Cache<Key, Value, S>,
        negative: Cache<Key, u64, S>,
    },
}

impl<S: BuildHasher + Clone + Send + Sync + 'static> Layout<S> {
    fn one(capacity: u64, hasher: S) -> Self {
        Layout::One(
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(TtlPolicy)
                .build_with_hasher(hasher),
        )
    }

    fn two(capacity: u64, hasher: S) -> Self {
        Layout::Two {
            positive: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(3600))
                .build_with_hasher(hasher.clone()),
            negative: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(1800))
                .build_with_hasher(hasher),
        }
    }

    fn insert(&self, key: Key, value: Value) {
        match (self, value.key.is_some()) {
            (Layout::One(c), _) => c.insert(key, value),
            (Layout::Two { positive, .. }, true) => positive.insert(key, value),
            (Layout::Two { negative, .. }, false) => negative.insert(key, value.epoch),
        }
    }

    #[inline]
    fn get(&self, key: &Key) -> Option<Value> {
        match self {
            Layout::One(c) => c.get(key),
            Layout::Two { positive, negative } => positive
                .get(key)
                .or_else(|| negative.get(key).map(|epoch| Value { epoch, key: None })),
        }
    }

    fn settle(&self) {
        match self {
            Layout::One(c) => c.run_pending_tasks(),
            Layout::Two { positive, negative } => {
                positive.run_pending_tasks();
                negative.run_pending_tasks();
            }
        }
    }
}

fn keys(n: usize, seed: u64) -> Vec<Key> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| std::array::from_fn(|_| rng.below(256) as u8))
        .collect()
}

/// Fills a layout with `known` positive and `unknown` negative entries.
fn filled<S>(name: &str, layout: Layout<S>, known: &[Key], unknown: &[Key]) -> Layout<S>
where
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    for k in known {
        let principal = Principal { _bytes: [7; 120] };
        layout.insert(
            *k,
            Value {
                epoch: 0,
                key: Some(Arc::new(principal)),
            },
        );
    }
    for k in unknown {
        layout.insert(
            *k,
            Value {
                epoch: 0,
                key: None,
            },
        );
    }
    layout.settle();
    for k in known.iter().chain(unknown) {
        assert!(layout.get(k).is_some(), "{name}: every key cached");
    }
    layout
}

/// Indices to look up, walked cyclically inside the timing (a load and an add).
fn draw(n: usize, zipf: bool) -> Vec<usize> {
    let mut rng = Rng::new(0x5eed);
    let mut ranks = zipf.then(|| Zipf::new(n, 1.0, 0x21bf));
    (0..1 << 16)
        .map(|_| match &mut ranks {
            Some(z) => z.sample(),
            None => rng.below(n),
        })
        .collect()
}

fn bench_shape(c: &mut Criterion<Clock>, shape: &str, n: usize, zipf: bool) {
    let known = keys(n, 1);
    let unknown = keys(n.min(1_000), 2);
    let picks = draw(n, zipf);
    let unknown_picks = draw(unknown.len(), false);
    let capacity = 2 * (n + unknown.len()) as u64;
    let mut group = c.benchmark_group(format!("config/{shape}"));
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    macro_rules! layout_rows {
        ($name:expr, $layout:expr) => {{
            let name = $name;
            let layout = filled(&format!("{shape}/{name}"), $layout, &known, &unknown);
            let mut i = 0;
            group.bench_function(format!("hit/{name}"), |b| {
                b.iter(|| {
                    i = (i + 1) & 0xffff;
                    layout.get(&known[picks[i]]).expect("known").epoch
                })
            });
            let mut i = 0;
            group.bench_function(format!("unknown/{name}"), |b| {
                b.iter(|| {
                    i = (i + 1) & 0xffff;
                    layout
                        .get(&unknown[unknown_picks[i]])
                        .expect("negative")
                        .epoch
                })
            });
            drop(layout);
        }};
    }

    let sip = std::collections::hash_map::RandomState::new;
    layout_rows!("siphash_expire_after", Layout::one(capacity, sip()));
    layout_rows!("foldhash_expire_after", Layout::one(capacity, folded()));
    layout_rows!("siphash_two_ttl_caches", Layout::two(capacity, sip()));
    layout_rows!("foldhash_two_ttl_caches", Layout::two(capacity, folded()));
    group.finish();
}

/// The hash of one 32-byte key alone, as moka computes it on every get.
fn hash_only(c: &mut Criterion<Clock>) {
    let keys = keys(1024, 3);
    let mut group = c.benchmark_group("config/hash_one");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let sip = std::collections::hash_map::RandomState::new();
    let fold = folded();
    let mut i = 0;
    group.bench_function("siphash", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            sip.hash_one(keys[i])
        })
    });
    let mut i = 0;
    group.bench_function("foldhash", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            fold.hash_one(keys[i])
        })
    });
    group.finish();
}

fn config(c: &mut Criterion<Clock>) {
    println!("measured in {}", Clock::from_env());
    hash_only(c);
    bench_shape(c, "1k", 1_000, false);
    bench_shape(c, "1m_uniform", 1_000_000, false);
    bench_shape(c, "1m_zipf", 1_000_000, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(Clock);
    targets = config
}
criterion_main!(benches);
