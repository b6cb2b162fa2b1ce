//! Many PostgreSQL instances in one process, for the fleet benchmarks: each instance has its
//! own `PostgresKeyStore` (a pool of 2), authenticator and listener, as separate gateways
//! would, on a database of its own (notification channels are per database, so nothing
//! else running on the server is counted).
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, ChangeFeed, ChannelHealth, KeyId, ListenOptions,
    PostgresKeyStore,
};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool};

pub struct Instance {
    pub store: PostgresKeyStore,
    pub auth: Authenticator,
    pub feed: Arc<ChangeFeed>,
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
        fleet.push(Instance {
            store,
            auth,
            feed: Arc::new(feed),
        });
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

/// One more gateway that revokes keys, on a Tokio runtime and an OS thread of its own, as
/// the admin endpoint of a separate gateway process would be. The fleet's instances share
/// one two-thread runtime; a revocation spawned on it waits behind every runnable task of
/// all 100 instances (measured: 22 ms of a 51 ms revocation at the start of a usage storm
/// were spent outside the store). On its own runtime the revocation competes with the fleet
/// for the cores only, as it would on a machine running many gateway processes.
pub struct Revoker {
    jobs:
        Option<tokio::sync::mpsc::UnboundedSender<(KeyId, tokio::sync::oneshot::Sender<Revoked>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Revoker {
    /// Connects a store (pool of 2) and an authenticator on the revoker's own runtime.
    pub fn start(options: PgConnectOptions) -> Revoker {
        let (jobs, mut received) =
            tokio::sync::mpsc::unbounded_channel::<(KeyId, tokio::sync::oneshot::Sender<Revoked>)>(
            );
        let (ready, is_ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("revoker runtime");
            runtime.block_on(async move {
                let store = PostgresKeyStore::builder()
                    .max_connections(2)
                    .connect_with(options.application_name("bench_revoker"))
                    .await
                    .expect("connect the revoker");
                let auth = Authenticator::new(store);
                ready.send(()).expect("report ready");
                while let Some((id, reply)) = received.recv().await {
                    let t = Instant::now();
                    auth.revoke(&id).await.expect("revoke");
                    let returned = Instant::now();
                    let _ = reply.send(Revoked {
                        took: returned - t,
                        returned,
                    });
                }
            });
        });
        is_ready.recv().expect("revoker started");
        Revoker {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Revokes `id`; timed on the revoker's runtime.
    pub async fn revoke(&self, id: &KeyId) -> Revoked {
        let (reply, took) = tokio::sync::oneshot::channel();
        self.jobs
            .as_ref()
            .expect("running")
            .send((id.clone(), reply))
            .expect("revoker alive");
        took.await.expect("revoked")
    }
}

/// A revocation, as its revoker saw it.
pub struct Revoked {
    /// How long `revoke` took.
    pub took: Duration,
    /// When it returned (the revoker's clock, not when this runtime heard of it).
    pub returned: Instant,
}

impl Drop for Revoker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// When the last instance had the revocation, and when the last one rejected the key.
pub struct Reached {
    /// Every listener had received the revocation's notification and invalidated the key
    /// (its `notifications_received` count grew; the count follows the invalidation).
    /// `None` when some instance rejected without a notification (one was lost, and a read of
    /// the change log applied the revocation).
    pub invalidated: Option<Duration>,
    /// Every instance rejected the key as revoked: the above plus one store read each.
    pub rejected: Duration,
}

/// How often the delivery watcher looks at every instance's notification count. An OS
/// thread that sleeps this long between passes, not a Tokio timer (1 ms resolution).
const WATCH: Duration = Duration::from_micros(100);

/// How often an instance whose notification has not been seen is asked anyway (a lost
/// notification is applied by a read of the change log, which no count shows).
const FALLBACK_POLL: Duration = Duration::from_millis(20);

/// Watches every instance's notification count from before a revocation is sent until
/// every instance has rejected the key ([`Watch::until_all_reject`]).
///
/// A watcher thread reads each count every [`WATCH`] and, the moment it grows, records the
/// time and wakes that instance's task, which asks the authenticator once (a store read:
/// the cache forgot the key). So no instance's time waits for a poll timer. Earlier
/// versions asked every instance once per millisecond of Tokio's timer: each time late by 1
/// to 2 ms, and 50 to 100 tasks waking each millisecond on the two cores PostgreSQL needs
/// to deliver the notification (spinning instead took the 10-instance p99 to 45 ms).
pub struct Watch {
    woken: Vec<tokio::sync::oneshot::Receiver<()>>,
    done: Arc<AtomicBool>,
    watcher: std::thread::JoinHandle<Vec<Option<Instant>>>,
}

impl Watch {
    /// Starts watching, before the revocation is sent: its notification may arrive before
    /// `revoke` returns. Gives up after `bound`.
    pub fn start(fleet: &[Instance], bound: Duration) -> Watch {
        let counts: Vec<Arc<ChangeFeed>> = fleet.iter().map(|i| i.feed.clone()).collect();
        let baseline: Vec<u64> = counts.iter().map(|f| f.notifications_received()).collect();
        let (mut wake, mut woken) = (Vec::new(), Vec::new());
        for _ in fleet {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            wake.push(Some(tx));
            woken.push(rx);
        }
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            let started = Instant::now();
            std::thread::spawn(move || {
                let mut heard: Vec<Option<Instant>> = vec![None; counts.len()];
                let mut left = counts.len();
                while left > 0 && !done.load(Ordering::Relaxed) && started.elapsed() < bound {
                    for (i, feed) in counts.iter().enumerate() {
                        if heard[i].is_none() && feed.notifications_received() > baseline[i] {
                            heard[i] = Some(Instant::now());
                            left -= 1;
                            if let Some(tx) = wake[i].take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    std::thread::sleep(WATCH);
                }
                heard
            })
        };
        Watch {
            woken,
            done,
            watcher,
        }
    }

    /// Times how long after `since` (when `revoke` returned) the revocation of `key`
    /// reached every instance of `fleet` (the one [`Watch::start`] was given), which all
    /// had the key cached. A delivery before `since` counts as 0.
    pub async fn until_all_reject(
        self,
        fleet: &[Instance],
        key: &ApiKey,
        since: Instant,
    ) -> Reached {
        let tasks: Vec<_> = fleet
            .iter()
            .zip(self.woken)
            .map(|(instance, woken)| {
                let (auth, key) = (instance.auth.clone(), key.expose_secret().to_owned());
                tokio::spawn(async move {
                    let mut woken = Some(woken);
                    loop {
                        match woken.as_mut() {
                            Some(rx) => tokio::select! {
                                _ = rx => woken = None,
                                () = tokio::time::sleep(FALLBACK_POLL) => {}
                            },
                            None => tokio::time::sleep(FALLBACK_POLL).await,
                        }
                        match auth.authenticate_key(&key).await {
                            Err(e) if e.kind() == AuthErrorKind::Revoked => return since.elapsed(),
                            Ok(_) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                        assert!(
                            since.elapsed() < Duration::from_secs(30),
                            "never propagated"
                        );
                    }
                })
            })
            .collect();
        let mut rejected = Duration::ZERO;
        for task in tasks {
            rejected = rejected.max(task.await.expect("poll task"));
        }
        self.done.store(true, Ordering::Relaxed);
        let heard = self.watcher.join().expect("watcher");
        let invalidated = heard.iter().try_fold(Duration::ZERO, |last, t| {
            t.map(|t| last.max(t.saturating_duration_since(since)))
        });
        Reached {
            invalidated,
            rejected,
        }
    }
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
