//! Revocation propagation: time from `revoke` returning on one authenticator to the first
//! rejection by another that had the key cached.
//!
//! Run: `HAPND_TEST_DATABASE_URL=postgres://... cargo bench --bench propagation`
//! (`bash scripts/pg-start.sh` starts a throwaway server and prints the URL). Without the
//! URL the PostgreSQL row is skipped with a message. The SQLite row always runs, polling at
//! the default 250 ms, so its latency is about half an interval on average.
//! Another count than 500 PostgreSQL (100 SQLite) revocations:
//! `cargo bench --bench propagation -- 100`.

use std::time::{Duration, Instant};

use hapnd_auth::{
    AuthErrorKind, Authenticator, ChangeFeed, ChannelHealth, Environment, Invalidator, KeyStore,
    NewKey, PostgresKeyStore, SqliteKeyStore,
};

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        match std::env::var("HAPND_TEST_DATABASE_URL") {
            Ok(url) => {
                let a = PostgresKeyStore::connect(&url).await.expect("connect A");
                let b = PostgresKeyStore::connect(&url).await.expect("connect B");
                let feed = |s: &PostgresKeyStore, i: Invalidator| s.listen(i);
                run(
                    "postgres (LISTEN/NOTIFY)",
                    rounds,
                    Duration::from_millis(20),
                    a,
                    b,
                    feed,
                )
                .await;
            }
            Err(_) => eprintln!(
                "SKIPPED: postgres row: HAPND_TEST_DATABASE_URL not set \
                 (bash scripts/pg-start.sh prints one)"
            ),
        }
        let dir = std::env::temp_dir().join(format!("hapnd-propagation-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("keys.db");
        let path = path.to_str().expect("utf-8 path");
        let a = SqliteKeyStore::connect(path).await.expect("open A");
        let b = SqliteKeyStore::connect(path).await.expect("open B");
        let feed =
            |s: &SqliteKeyStore, i: Invalidator| s.watch(i, SqliteKeyStore::DEFAULT_WATCH_INTERVAL);
        // Fewer rounds: each waits for two poll intervals before revoking.
        let settle = SqliteKeyStore::DEFAULT_WATCH_INTERVAL * 2;
        run(
            "sqlite (data_version poll, 250 ms)",
            (rounds / 10).max(1),
            settle,
            a,
            b,
            feed,
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

async fn run<S: KeyStore + Clone>(
    label: &str,
    rounds: usize,
    settle: Duration,
    store_a: S,
    store_b: S,
    feed: impl Fn(&S, Invalidator) -> ChangeFeed,
) {
    let a = Authenticator::builder(store_a.clone())
        .ttl(Duration::from_secs(600))
        .build();
    let b = Authenticator::builder(store_b.clone())
        .ttl(Duration::from_secs(600))
        .build();
    let _feeds = (
        feed(&store_a, a.invalidator()),
        feed(&store_b, b.invalidator()),
    );
    let started = Instant::now();
    while b.channel_health() != ChannelHealth::Healthy
        || a.channel_health() != ChannelHealth::Healthy
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{label}: feeds never healthy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tenant = format!("propagation-{}", std::process::id());
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let created = a
            .create_key(NewKey::new(&tenant, Environment::Live, "bench"))
            .await
            .expect("create");
        let key = created.key.expose_secret();
        // Let B's feed see the creation (it may invalidate the new hash), then cache the key
        // on B: from here on only the revocation can make B read the store.
        tokio::time::sleep(settle).await;
        // Spread the revocations over a polling feed's phase, so they do not all land just
        // after (or just before) a poll.
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
                Err(e) => panic!("{label}: unexpected {e}"),
            }
            assert!(
                returned.elapsed() < Duration::from_secs(5),
                "{label}: never propagated"
            );
        }
        samples.push(returned.elapsed());
    }
    samples.sort();
    let pct = |p: f64| {
        let rank = (samples.len() as f64 * p).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    println!(
        "{label}: {} revocations, p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
