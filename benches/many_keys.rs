//! Many keys: store miss latency (a `KeyStore::lookup` of a random existing key, no cache),
//! load time and size, by table size, for PostgreSQL and SQLite.
//!
//! Run: `HAPND_TEST_DATABASE_URL=postgres://... cargo bench --bench many_keys`
//! (default sizes 1,000 and 1,000,000 rows; `-- 1000 1000000 10000000` for 10M, which takes
//! minutes and gigabytes). Without the URL the PostgreSQL rows are skipped with a message.
//! Rows are loaded with one `INSERT ... SELECT` each (triggers on: a bulk insert logs one
//! flush entry in PostgreSQL, one change row per key in SQLite).

mod pg_fleet;

use std::time::{Duration, Instant};

use hapnd_auth::{KeyHash, KeyStore, PostgresKeyStore, SqliteKeyStore};
use pg_fleet::{Db, percentile};
use sqlx::AssertSqlSafe;

const LOOKUPS: usize = 2000;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if args.is_empty() {
        vec![1_000, 1_000_000]
    } else {
        args
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        for &n in &sizes {
            match std::env::var("HAPND_TEST_DATABASE_URL") {
                Ok(url) => postgres(&url, n).await,
                Err(_) => eprintln!("SKIPPED: postgres rows: HAPND_TEST_DATABASE_URL not set"),
            }
            sqlite(n).await;
        }
    });
}

/// Random ids among `key_1 ..= key_n`, deterministic.
fn sample_ids(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("key_{}", x % n as u64 + 1)
        })
        .collect()
}

async fn time_lookups<S: KeyStore>(store: &S, hashes: &[KeyHash]) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(hashes.len());
    for hash in hashes {
        let t = Instant::now();
        let found = store.lookup(hash).await.expect("lookup");
        samples.push(t.elapsed());
        assert!(found.is_some());
    }
    samples.sort();
    samples
}

fn report(label: &str, n: usize, load: Duration, bytes: i64, samples: &[Duration]) {
    println!(
        "{label}, {n} keys: load {load:?}, {:.1} MB; miss (store lookup) p50 {:?}, p99 {:?}",
        bytes as f64 / 1e6,
        percentile(samples, 0.5),
        percentile(samples, 0.99)
    );
}

async fn postgres(url: &str, n: usize) {
    let db = Db::create(url, "many").await;
    let store = PostgresKeyStore::builder()
        .connect_with(db.options.clone())
        .await
        .expect("connect");
    let admin = db.pool().await;
    let t = Instant::now();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, created_at) \
         SELECT 'key_' || i, 't' || (i % 1000), 'live', 'n', sha256(i::text::bytea), 'h', now() \
         FROM generate_series(1, {n}) AS i"
    )))
    .execute(&admin)
    .await
    .expect("load");
    sqlx::query("VACUUM ANALYZE hapnd_api_keys")
        .execute(&admin)
        .await
        .expect("analyze");
    let load = t.elapsed();
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&admin)
        .await
        .expect("size");
    let mut hashes = Vec::with_capacity(LOOKUPS);
    for id in sample_ids(n) {
        let hash: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM hapnd_api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(&admin)
            .await
            .expect("sample");
        hashes.push(KeyHash::from_bytes(hash.try_into().expect("32 bytes")));
    }
    let samples = time_lookups(&store, &hashes).await;
    report("postgres", n, load, bytes, &samples);
    admin.close().await;
    drop(store);
    db.drop_now().await;
}

async fn sqlite(n: usize) {
    let dir = std::env::temp_dir().join(format!("hapnd-many-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("keys.db");
    let store = SqliteKeyStore::connect(path.to_str().expect("utf-8"))
        .await
        .expect("open");
    let t = Instant::now();
    sqlx::query(AssertSqlSafe(format!(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
         INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, created_at) \
         SELECT 'key_' || i, 't' || (i % 1000), 'live', 'n', randomblob(32), 'h', 0 FROM s"
    )))
    .execute(store.pool())
    .await
    .expect("load");
    let load = t.elapsed();
    let mut hashes = Vec::with_capacity(LOOKUPS);
    for id in sample_ids(n) {
        let hash: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM hapnd_api_keys WHERE id = ?1")
            .bind(id)
            .fetch_one(store.pool())
            .await
            .expect("sample");
        hashes.push(KeyHash::from_bytes(hash.try_into().expect("32 bytes")));
    }
    let bytes = ["keys.db", "keys.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len() as i64)
        .sum();
    let samples = time_lookups(&store, &hashes).await;
    report("sqlite", n, load, bytes, &samples);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
