//! Revocation propagation: time from `revoke` returning until every instance that had the
//! key cached has invalidated it (its listener received the notification), and until every
//! one has rejected it (one more store read each).
//!
//! Run: `HAPND_TEST_DATABASE_URL=postgres://... cargo bench --bench propagation`
//! (`bash scripts/pg-start.sh` starts a throwaway server and prints the URL). PostgreSQL rows
//! at 1, 10, 50 and 100 listening instances (each its own store, pool of 2, and listener, in
//! this process, on a database of their own), revoked through one more store; without the
//! URL they are skipped with a message. The SQLite row always runs, polling at the default
//! 250 ms, so its latency is about half an interval on average.
//! Other counts: `cargo bench --bench propagation -- ROUNDS [INSTANCES...]`
//! (default 200 rounds, 1 10 50 100 instances).

mod pg_fleet;

use std::time::{Duration, Instant};

use hapnd_auth::{
    AuthErrorKind, Authenticator, ChannelHealth, Environment, ListenOptions, NewKey,
    PostgresKeyStore, SqliteKeyStore,
};
use pg_fleet::{Db, Revoker, Watch, fleet, percentile};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(200);
    let sizes = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![1, 10, 50, 100]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        match std::env::var("HAPND_TEST_DATABASE_URL") {
            Ok(url) => {
                for &n in &sizes {
                    postgres(&url, n, rounds).await;
                }
            }
            Err(_) => eprintln!(
                "SKIPPED: postgres rows: HAPND_TEST_DATABASE_URL not set \
                 (bash scripts/pg-start.sh prints one)"
            ),
        }
        sqlite((rounds / 10).max(1)).await;
    });
}

async fn postgres(url: &str, n: usize, rounds: usize) {
    let db = Db::create(url, "propagation").await;
    let creator = Authenticator::new(
        PostgresKeyStore::builder()
            .connect_with(db.options.clone())
            .await
            .expect("connect the creator"),
    );
    let fleet = fleet(&db, n, ListenOptions::new()).await;
    // Revoked from a gateway of its own (runtime and thread), as a separate process would.
    let revoker = Revoker::start(db.options.clone());
    let mut invalidated = Vec::with_capacity(rounds);
    let mut rejected = Vec::with_capacity(rounds);
    let mut lost = 0;
    for _ in 0..rounds {
        let created = creator
            .create_key(NewKey::new("propagation", Environment::Live, "bench"))
            .await
            .expect("create");
        // Let the creation's notification and the change-log read it schedules
        // (`notification_read_delay`, 100 ms by default) come and go, then cache the key
        // everywhere: from here on only the revocation can make an instance read the store.
        tokio::time::sleep(Duration::from_millis(120)).await;
        for instance in &fleet {
            instance
                .auth
                .authenticate_key(created.key.expose_secret())
                .await
                .expect("accepts the new key");
        }
        let watch = Watch::start(&fleet, Duration::from_secs(5));
        let revoked = revoker.revoke(&created.record.id).await;
        let reached = watch
            .until_all_reject(&fleet, &created.key, revoked.returned)
            .await;
        match reached.invalidated {
            Some(t) => invalidated.push(t),
            None => lost += 1,
        }
        rejected.push(reached.rejected);
    }
    invalidated.sort();
    rejected.sort();
    println!(
        "postgres (LISTEN/NOTIFY), {n} instances, {} revocations: every instance invalidated \
         the key at p50 {}, p99 {}, max {} ({lost} rounds without a notification); \
         every instance rejected it (one store read each) at p50 {:?}, p99 {:?}, max {:?}",
        rejected.len(),
        show(percentile_of(&invalidated, 0.50)),
        show(percentile_of(&invalidated, 0.99)),
        show(invalidated.last().copied()),
        percentile(&rejected, 0.50),
        percentile(&rejected, 0.99),
        rejected[rejected.len() - 1]
    );
    drop(revoker);
    drop(fleet);
    drop(creator);
    db.drop_now().await;
}

fn percentile_of(sorted: &[Duration], p: f64) -> Option<Duration> {
    (!sorted.is_empty()).then(|| percentile(sorted, p))
}

fn show(time: Option<Duration>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| format!("{t:?}"))
}

async fn sqlite(rounds: usize) {
    let dir = std::env::temp_dir().join(format!("hapnd-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("keys.db");
    let path = path.to_str().expect("utf-8 path");
    let store_a = SqliteKeyStore::connect(path).await.expect("open A");
    let store_b = SqliteKeyStore::connect(path).await.expect("open B");
    let a = Authenticator::new(store_a);
    let b = Authenticator::builder(store_b.clone())
        .ttl(Duration::from_secs(600))
        .build();
    let _feed = store_b.watch(b.invalidator(), SqliteKeyStore::DEFAULT_WATCH_INTERVAL);
    let started = Instant::now();
    while b.channel_health() != ChannelHealth::Healthy {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "feed never healthy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each round waits for two poll intervals before revoking.
    let settle = SqliteKeyStore::DEFAULT_WATCH_INTERVAL * 2;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let created = a
            .create_key(NewKey::new("propagation", Environment::Live, "bench"))
            .await
            .expect("create");
        let key = created.key.expose_secret();
        tokio::time::sleep(settle).await;
        // Spread the revocations over the poll's phase, so they do not all land just after
        // (or just before) a poll.
        let phase = settle.as_micros() as u64 / 2 * (round as u64 * 37 % 100) / 100;
        tokio::time::sleep(Duration::from_micros(phase)).await;
        b.authenticate_key(key)
            .await
            .expect("B accepts the new key");
        a.revoke(&created.record.id).await.expect("revoke");
        let returned = Instant::now();
        loop {
            match b.authenticate_key(key).await {
                Err(e) if e.kind() == AuthErrorKind::Revoked => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => panic!("sqlite: unexpected {e}"),
            }
            assert!(
                returned.elapsed() < Duration::from_secs(5),
                "never propagated"
            );
        }
        samples.push(returned.elapsed());
    }
    samples.sort();
    println!(
        "sqlite (data_version poll, 250 ms): {} revocations, p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
