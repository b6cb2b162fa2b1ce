//! Many keys: store miss latency (a `KeyStore::lookup_for_request` of a random existing key,
//! as the authenticator makes on a cache miss),
//! load time and size, by table size, for PostgreSQL and SQLite.
//!
//! Run: `HAPND_TEST_DATABASE_URL=postgres://... cargo bench --bench many_keys`
//! (default sizes 1,000 and 1,000,000 rows; `-- 1000 1000000 10000000` for 10M, which takes
//! minutes and gigabytes). Without the URL the PostgreSQL rows are skipped with a message.
//! Rows are loaded with one `INSERT ... SELECT` each (triggers on: a bulk insert logs one
//! flush entry in PostgreSQL, one change row per key in SQLite). Every table is loaded
//! first and kept, and the writes flushed (`CHECKPOINT`, `sync`); then the rows take
//! turns, 250 lookups at a time, 20,000 timed lookups each, so the ratio of the largest
//! table's p99 to the smallest's compares times taken under the same conditions. It is
//! printed last, per store.

mod pg_fleet;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hapnd_auth::{KeyHash, KeyStore, PostgresKeyStore, SqliteKeyStore};
use pg_fleet::{Db, percentile};
use sqlx::AssertSqlSafe;

/// Timed lookups per row, after [`WARM_UP`] untimed ones.
const LOOKUPS: usize = 20_000;
/// Untimed lookups per row before timing: the first prepare the statement on each
/// connection and bring pages into the caches.
const WARM_UP: usize = 200;
/// Lookups timed on one row before moving to the next: rows take turns, so a burst of noise
/// on these shared cores (another tenant, a checkpoint) lands on every row alike instead of
/// on whichever was being measured, and the ratios between rows, measured in one run, hold.
const CHUNK: usize = 250;

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
        let url = std::env::var("HAPND_TEST_DATABASE_URL").ok();
        if url.is_none() {
            eprintln!("SKIPPED: postgres rows: HAPND_TEST_DATABASE_URL not set");
        }
        let mut rows = Vec::new();
        for &n in &sizes {
            if let Some(url) = &url {
                rows.push(postgres(url, n).await);
            }
            rows.push(sqlite(n).await);
        }
        settle(&rows).await;
        let samples = time_lookups(&rows).await;
        for (row, samples) in rows.iter().zip(&samples) {
            println!(
                "{}, {} keys: load {:?}, {:.1} MB; miss (store lookup) p50 {:?}, p99 {:?}",
                row.label,
                row.n,
                row.load,
                row.bytes as f64 / 1e6,
                percentile(samples, 0.5),
                percentile(samples, 0.99)
            );
        }
        for label in ["postgres", "sqlite"] {
            let of: Vec<usize> = (0..rows.len())
                .filter(|&i| rows[i].label == label)
                .collect();
            if let (Some(&small), Some(&large)) = (of.first(), of.last())
                && small != large
            {
                let ratio = |p| {
                    percentile(&samples[large], p).as_secs_f64()
                        / percentile(&samples[small], p).as_secs_f64()
                };
                println!(
                    "{label}: {} keys against {} keys: p50 {:.2}x, p99 {:.2}x",
                    rows[large].n,
                    rows[small].n,
                    ratio(0.5),
                    ratio(0.99)
                );
            }
        }
        for row in rows {
            row.drop_now().await;
        }
    });
}

/// A loaded table and the keys to look up in it.
struct Row {
    label: &'static str,
    n: usize,
    load: Duration,
    bytes: i64,
    hashes: Vec<KeyHash>,
    store: Store,
}

enum Store {
    Postgres(PostgresKeyStore, Box<Db>),
    Sqlite(SqliteKeyStore, PathBuf),
}

impl Row {
    async fn lookup(&self, hash: &KeyHash) {
        let found = match &self.store {
            Store::Postgres(store, _) => store.lookup_for_request(hash).await,
            Store::Sqlite(store, _) => store.lookup_for_request(hash).await,
        };
        assert!(found.expect("lookup").is_some());
    }

    async fn drop_now(self) {
        match self.store {
            Store::Postgres(store, db) => {
                drop(store);
                db.drop_now().await;
            }
            Store::Sqlite(store, dir) => {
                drop(store);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// Lets the loads' writes reach the disk before anything is timed: a `CHECKPOINT` (so
/// PostgreSQL's buffers are clean, and no lookup writes one out to evict it), then `sync`
/// (so the kernel is not writing back the 7.5 GB of a 10,000,000-row load meanwhile).
async fn settle(rows: &[Row]) {
    for row in rows {
        if let Store::Postgres(_, db) = &row.store {
            // Needs a superuser or `pg_checkpoint` (scripts/pg-start.sh's role is one).
            if let Err(e) = sqlx::query("CHECKPOINT").execute(&db.admin).await {
                eprintln!("CHECKPOINT failed ({e}): timing with dirty buffers");
            }
            break;
        }
    }
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        other => eprintln!("sync failed ({other:?})"),
    }
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

/// [`LOOKUPS`] timed lookups per row, the rows taking turns [`CHUNK`] at a time; each row's
/// times sorted.
async fn time_lookups(rows: &[Row]) -> Vec<Vec<Duration>> {
    for row in rows {
        for hash in row.hashes.iter().take(WARM_UP) {
            row.lookup(hash).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> =
        rows.iter().map(|_| Vec::with_capacity(LOOKUPS)).collect();
    for chunk in 0..LOOKUPS.div_ceil(CHUNK) {
        for (row, samples) in rows.iter().zip(&mut samples) {
            for hash in row.hashes.iter().skip(chunk * CHUNK).take(CHUNK) {
                let t = Instant::now();
                row.lookup(hash).await;
                samples.push(t.elapsed());
            }
        }
    }
    for samples in &mut samples {
        samples.sort();
    }
    samples
}

async fn postgres(url: &str, n: usize) -> Row {
    let db = Db::create(url, &format!("many_{n}")).await;
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
    admin.close().await;
    Row {
        label: "postgres",
        n,
        load,
        bytes,
        hashes,
        store: Store::Postgres(store, Box::new(db)),
    }
}

async fn sqlite(n: usize) -> Row {
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
    Row {
        label: "sqlite",
        n,
        load,
        bytes,
        hashes,
        store: Store::Sqlite(store, dir),
    }
}
