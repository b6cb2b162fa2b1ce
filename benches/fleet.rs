//! Many PostgreSQL instances at once (issue #13): what an idle fleet costs, last-used
//! flushes from every instance at once with revocations in between, and a 100,000-row bulk
//! change with a revocation right behind it.
//!
//! Run: `HAPND_TEST_DATABASE_URL=postgres://... cargo bench --bench fleet`
//! (`bash scripts/pg-start.sh` starts a throwaway server, with `max_connections` 300, and
//! prints the URL); skipped with a message without it. Other sizes:
//! `cargo bench --bench fleet -- INSTANCES [BULK_ROWS]` (default 100 and 100,000).

mod pg_fleet;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hapnd_auth::{ChannelHealth, Environment, KeyStore, LastUsed, ListenOptions, NewKey};
use pg_fleet::{Db, Instance, Revoker, Watch, fleet, percentile, server_cpu};
use sqlx::AssertSqlSafe;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100);
    let rows = args.get(1).copied().unwrap_or(100_000);
    let Ok(url) = std::env::var("HAPND_TEST_DATABASE_URL") else {
        eprintln!("SKIPPED: HAPND_TEST_DATABASE_URL not set (bash scripts/pg-start.sh prints one)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let db = Db::create(&url, "fleet").await;
        let fleet = fleet(&db, n, ListenOptions::new()).await;
        let revoker = Revoker::start(db.options.clone());
        idle(&db, &fleet).await;
        usage_storm(&fleet, &revoker).await;
        bulk_change(&db, &fleet, &revoker, rows).await;
        drop(revoker);
        drop(fleet);
        db.drop_now().await;
    });
}

/// Notifications each idle listener receives, and the server's CPU, over 10 s.
async fn idle(db: &Db, fleet: &[Instance]) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(10);
    let before: Vec<u64> = fleet
        .iter()
        .map(|i| i.feed.notifications_received())
        .collect();
    let cpu_before = server_cpu(&db.admin).await;
    tokio::time::sleep(window).await;
    let cpu_after = server_cpu(&db.admin).await;
    let mut heard: Vec<u64> = fleet
        .iter()
        .zip(&before)
        .map(|(i, b)| i.feed.notifications_received() - b)
        .collect();
    heard.sort();
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => format!(
            "{:.1} % of a core",
            a.saturating_sub(b).as_secs_f64() / window.as_secs_f64() * 100.0
        ),
        _ => "n/a (no /proc)".to_owned(),
    };
    println!(
        "idle, {} instances, {window:?}: notifications per listener per second min {:.1}, \
         max {:.1}; PostgreSQL CPU {cpu}",
        fleet.len(),
        heard[0] as f64 / window.as_secs_f64(),
        heard[heard.len() - 1] as f64 / window.as_secs_f64(),
    );
}

/// Every instance writes last-used times for the same 1,000 keys at once, each in its own
/// order, 5 rounds, while 20 keys are revoked one after another.
async fn usage_storm(fleet: &[Instance], revoker: &Revoker) {
    let store = &fleet[0].store;
    let mut ids = Vec::new();
    for i in 0..1000 {
        let created = store
            .create(NewKey::new("storm", Environment::Live, format!("k{i}")))
            .await
            .expect("create");
        ids.push(created.record.id);
    }
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(fleet.len() + 1));
    let mut flushes = Vec::new();
    for (n, instance) in fleet.iter().enumerate() {
        let (store, failed, start) = (instance.store.clone(), failed.clone(), start.clone());
        let mut order = ids.clone();
        let by = n * 13 % order.len();
        order.rotate_left(by);
        if n % 2 == 1 {
            order.reverse();
        }
        // The batches are built before the start: what is timed is the store's work, not
        // this harness cloning 500,000 ids on the cores the revocations need. Each round a
        // millisecond later than the one before, as if the keys were used again.
        let now = SystemTime::now();
        let batches: Vec<Vec<LastUsed>> = (0..5u64)
            .map(|round| {
                let at = now + Duration::from_millis(round);
                order
                    .iter()
                    .map(|id| LastUsed { id: id.clone(), at })
                    .collect()
            })
            .collect();
        flushes.push(tokio::spawn(async move {
            start.wait().await;
            for batch in batches {
                if store.record_usage(&batch).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut revocations = Vec::new();
    for id in ids.iter().step_by(50) {
        let took = revoker.revoke(id).await.took;
        revocations.push(took);
        if std::env::var("HAPND_DEBUG").is_ok() {
            eprintln!("revoke {took:?} at {:?}", began.elapsed());
        }
    }
    for flush in flushes {
        flush.await.expect("flush task");
    }
    revocations.sort();
    println!(
        "usage storm, {} instances x 5 flushes of 1,000 keys ({:?}): {} failed flushes; \
         {} revocations meanwhile: p50 {:?}, p99 {:?}, max {:?}",
        fleet.len(),
        began.elapsed(),
        failed.load(Ordering::Relaxed),
        revocations.len(),
        percentile(&revocations, 0.5),
        percentile(&revocations, 0.99),
        revocations[revocations.len() - 1],
    );
}

/// `rows` rows changed by one UPDATE while every instance listens; a key cached everywhere
/// is revoked right after the UPDATE starts. Counts channel flaps (an instance seen
/// degraded) from the UPDATE's start to a second after it ends.
async fn bulk_change(db: &Db, fleet: &[Instance], revoker: &Revoker, rows: usize) {
    let pool = db.pool().await;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, created_at) \
         SELECT 'key_bulk' || i, 'bulk', 'live', 'bulk', sha256(('bulk' || i)::bytea), 'h', now() \
         FROM generate_series(1, {rows}) AS i"
    )))
    .execute(&pool)
    .await
    .expect("load the bulk rows");
    let created = fleet[0]
        .auth
        .create_key(NewKey::new("victim", Environment::Live, "cached"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for instance in fleet {
        instance
            .auth
            .authenticate_key(created.key.expose_secret())
            .await
            .expect("cached");
    }
    let heard_before: u64 = fleet.iter().map(|i| i.feed.notifications_received()).sum();

    let watching = Arc::new(AtomicBool::new(true));
    let degraded = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let auths: Vec<_> = fleet.iter().map(|i| i.auth.clone()).collect();
        let (watching, degraded) = (watching.clone(), degraded.clone());
        tokio::spawn(async move {
            let mut seen = vec![false; auths.len()];
            while watching.load(Ordering::Relaxed) {
                for (i, auth) in auths.iter().enumerate() {
                    if !seen[i] && auth.channel_health() != ChannelHealth::Healthy {
                        seen[i] = true;
                        degraded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let began = Instant::now();
    let bulk = tokio::spawn(async move {
        let t = Instant::now();
        sqlx::query("UPDATE hapnd_api_keys SET expires_at = now() + interval '1 year' WHERE tenant = 'bulk'")
            .execute(&pool)
            .await
            .expect("bulk update");
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let watch = Watch::start(fleet, Duration::from_secs(10));
    let revoked = revoker.revoke(&created.record.id).await;
    let revoke_returned = revoked.took;
    let all_reject = watch
        .until_all_reject(fleet, &created.key, revoked.returned)
        .await
        .rejected;
    let bulk_took = bulk.await.expect("bulk task");
    tokio::time::sleep(Duration::from_secs(1)).await;
    watching.store(false, Ordering::Relaxed);
    monitor.await.expect("monitor");
    let heard: u64 = fleet
        .iter()
        .map(|i| i.feed.notifications_received())
        .sum::<u64>()
        - heard_before;
    println!(
        "bulk change of {rows} rows, {} instances: UPDATE took {bulk_took:?}; revoke returned \
         in {revoke_returned:?}, all instances rejected {all_reject:?} later \
         ({:?} after the UPDATE started); instances seen degraded: {}; notifications \
         received by all listeners from the UPDATE to 1 s after it: {heard}",
        fleet.len(),
        began.elapsed().saturating_sub(Duration::from_secs(1)),
        degraded.load(Ordering::Relaxed),
    );
}
