//! Many PostgreSQL instances in one process, for the fleet benchmarks: each instance has its
//! own `PostgresKeyStore` (a pool of 2), authenticator and listener, as separate gateways
//! would, on a database of its own (notification channels are per database, so nothing
//! else running on the server is counted).
#![allow(dead_code)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, ChangeFeed, ChannelHealth, ListenOptions,
    PostgresKeyStore,
};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool};

pub struct Instance {
    pub store: PostgresKeyStore,
    pub auth: Authenticator,
    pub feed: ChangeFeed,
}

/// A database created for one benchmark and dropped by [`Db::drop_now`].
pub struct Db {
    pub admin: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
}

impl Db {
    pub async fn create(url: &str, label: &str) -> Db {
        let admin = PgPool::connect(url).await.expect("connect admin");
        let name = format!("hapnd_bench_{label}_{}", std::process::id());
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        let options = PgConnectOptions::from_str(url)
            .expect("url")
            .database(&name);
        Db {
            admin,
            name,
            options,
        }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect_with(self.options.clone())
            .await
            .expect("connect")
    }

    pub async fn drop_now(self) {
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop database");
    }
}

/// `n` listening instances, all healthy.
pub async fn fleet(db: &Db, n: usize, listen: ListenOptions) -> Vec<Instance> {
    let mut fleet = Vec::with_capacity(n);
    for i in 0..n {
        let store = PostgresKeyStore::builder()
            .max_connections(2)
            .connect_with(db.options.clone().application_name(&format!("bench_{i}")))
            .await
            .expect("connect instance");
        let auth = Authenticator::builder(store.clone())
            .ttl(Duration::from_secs(600))
            .build();
        let feed = store.listen_with(auth.invalidator(), listen.clone());
        fleet.push(Instance { store, auth, feed });
    }
    let started = Instant::now();
    for instance in &fleet {
        while instance.auth.channel_health() != ChannelHealth::Healthy {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "feeds never healthy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    fleet
}

/// How often each instance is asked whether it rejects the key yet: Tokio's timer
/// resolution (1 ms).
pub const POLL: Duration = Duration::from_millis(1);

/// Calls every authenticator, each on a task of its own, until every one rejects `key` as
/// revoked; returns when the last one did. Concurrent, so one instance's store read does not
/// delay the next instance's check.
///
/// Each task asks once per [`POLL`], not in a loop that only yields: 10 to 100 tasks
/// spinning on the two cores took them from PostgreSQL, whose backends must run to deliver
/// the notification to every listener, and from the listeners that read it (measured at
/// 10 instances, p99 45 ms spinning against the figures in docs/scaling.md polling). A
/// time read this way is late by up to one `POLL` (plus the timer's wake-up), never early.
pub async fn until_all_reject(fleet: &[Instance], key: &ApiKey, bound: Duration) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = fleet
        .iter()
        .map(|instance| {
            let (auth, key) = (instance.auth.clone(), key.expose_secret().to_owned());
            tokio::spawn(async move {
                loop {
                    match auth.authenticate_key(&key).await {
                        Err(e) if e.kind() == AuthErrorKind::Revoked => return started.elapsed(),
                        Ok(_) => tokio::time::sleep(POLL).await,
                        Err(e) => panic!("unexpected {e}"),
                    }
                    assert!(
                        started.elapsed() < bound,
                        "never propagated within {bound:?}"
                    );
                }
            })
        })
        .collect();
    let mut last = Duration::ZERO;
    for task in tasks {
        last = last.max(task.await.expect("poll task"));
    }
    last
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time (user + system) used so far by the server's processes: every backend and
/// background process `pg_stat_activity` lists, read from `/proc` (the server runs on this
/// machine in the benchmarks). `None` where `/proc` cannot be read.
pub async fn server_cpu(admin: &PgPool) -> Option<Duration> {
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity")
        .fetch_all(admin)
        .await
        .ok()?;
    // Clock ticks per second: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK)).
    let mut ticks = 0u64;
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_millis(ticks * 10))
}
