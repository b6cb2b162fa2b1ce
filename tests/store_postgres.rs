//! The conformance suite, the change feed and outages against [`PostgresKeyStore`].
//!
//! Needs `HAPND_TEST_DATABASE_URL` (a database this test may create schemas and roles in;
//! `scripts/pg-start.sh` prints one). Without it every test says SKIPPED and passes. Each
//! test works in a schema of its own, so they can run at once on one database.
#![cfg(feature = "postgres")]

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::conformance::Fixture;
use common::{eventually, unique};
use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, ChannelHealth, Environment, ListenOptions, NewKey,
    PostgresKeyStore, StoreErrorKind,
};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{AssertSqlSafe, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn database_url() -> Option<String> {
    match std::env::var("HAPND_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: HAPND_TEST_DATABASE_URL not set (start one with scripts/pg-start.sh)"
            );
            None
        }
    }
}

async fn admin(url: &str) -> PgPool {
    PgPool::connect(url)
        .await
        .expect("connect to HAPND_TEST_DATABASE_URL")
}

async fn exec(pool: &PgPool, sql: String) {
    sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
}

/// A fresh schema, and connect options whose `search_path` and `application_name` are it.
async fn schema(url: &str, admin: &PgPool) -> (String, PgConnectOptions) {
    let schema = unique("hapnd_t");
    exec(admin, format!("CREATE SCHEMA {schema}")).await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema.as_str())])
        .application_name(&schema);
    (schema, options)
}

async fn store_on(options: PgConnectOptions) -> PostgresKeyStore {
    PostgresKeyStore::builder()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap()
}

struct Pg {
    store: PostgresKeyStore,
}

impl Fixture for Pg {
    type Store = PostgresKeyStore;

    fn store(&self) -> &PostgresKeyStore {
        &self.store
    }

    async fn dump(&self, _tenant: &str) -> String {
        // Every row of the schema's table, each as PostgreSQL's own text form.
        let rows = sqlx::query("SELECT k::text FROM hapnd_api_keys AS k")
            .fetch_all(self.store.pool())
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn pg() -> Option<Pg> {
    let url = database_url()?;
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let store = PostgresKeyStore::builder()
        .max_connections(5)
        .connect_with(options)
        .await
        .unwrap();
    Some(Pg { store })
}

conformance_suite!(pg());

async fn healthy(auth: &Authenticator, within: Duration) {
    eventually(within, || async {
        auth.channel_health() == ChannelHealth::Healthy
    })
    .await
    .expect("the change feed confirms itself");
}

async fn is_revoked(auth: &Authenticator, key: &ApiKey) -> bool {
    matches!(
        auth.authenticate_key(key.expose_secret()).await,
        Err(e) if e.kind() == AuthErrorKind::Revoked
    )
}

/// Two instances, each with its own store and listener: a key cached on B and revoked
/// through A is rejected by B within a second; prints the measured latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_one_instance_reaches_the_other() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let store_a = store_on(options.clone()).await;
    let store_b = store_on(options).await;
    let a = Authenticator::builder(store_a.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let b = Authenticator::builder(store_b.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let _feed_a = store_a.listen(a.invalidator());
    let _feed_b = store_b.listen(b.invalidator());
    healthy(&a, Duration::from_secs(3)).await;
    healthy(&b, Duration::from_secs(3)).await;

    let tenant = unique("multi");
    let mut latencies = Vec::new();
    for i in 0..10 {
        let created = a
            .create_key(NewKey::new(&tenant, Environment::Live, format!("k{i}")))
            .await
            .unwrap();
        b.authenticate_key(created.key.expose_secret())
            .await
            .unwrap();
        b.authenticate_key(created.key.expose_secret())
            .await
            .unwrap();
        let start = Instant::now();
        a.revoke(&created.record.id).await.unwrap();
        let took = eventually(Duration::from_secs(1), || is_revoked(&b, &created.key))
            .await
            .expect("B rejects a key revoked through A within 1 s");
        latencies.push(start.elapsed().max(took));
    }
    latencies.sort();
    eprintln!(
        "postgres: revocation propagation A -> B (revoke call to rejection), 10 samples: \
         min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[5], latencies[9]
    );
    assert_eq!(b.channel_health(), ChannelHealth::Healthy);
}

/// Without a listener, B keeps serving its cached entry after A's revocation: the test
/// above measures the feed, not a cache that never held the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_listener_the_cached_key_survives() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let store_a = store_on(options.clone()).await;
    let store_b = store_on(options).await;
    let a = Authenticator::new(store_a);
    let b = Authenticator::builder(store_b)
        .ttl(Duration::from_secs(60))
        .build();
    let created = a
        .create_key(NewKey::new(unique("nolisten"), Environment::Live, "ci"))
        .await
        .unwrap();
    b.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    a.revoke(&created.record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
}

/// `SELECT hapnd_auth_flush()` (after bulk changes made with the triggers off) empties every
/// listening instance's cache; a bare `NOTIFY hapnd_auth_keys, 'flush'`, which any role that
/// can connect may send, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_notification_empties_the_cache() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store = store_on(options).await;
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let _feed = store.listen(auth.invalidator());
    healthy(&auth, Duration::from_secs(3)).await;
    let created = auth
        .create_key(NewKey::new(unique("flush"), Environment::Live, "ci"))
        .await
        .unwrap();
    // The creation's own notification (it clears any negative entry) comes and goes first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    // Revoked behind the store's back (the notify trigger off, as a bulk load might have
    // it): the cache still answers with the old record...
    exec(
        &admin,
        format!("ALTER TABLE {schema}.hapnd_api_keys DISABLE TRIGGER hapnd_api_keys_updated"),
    )
    .await;
    exec(
        &admin,
        format!(
            "UPDATE {schema}.hapnd_api_keys SET revoked_at = now() WHERE id = '{}'",
            created.record.id
        ),
    )
    .await;
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    // A forged flush only makes the listener read the change log, which names nothing new.
    exec(
        &admin,
        "SELECT pg_notify('hapnd_auth_keys', 'flush')".to_owned(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    auth.authenticate_key(created.key.expose_secret())
        .await
        .expect("a bare NOTIFY flush is not trusted");
    // ...until the real flush arrives.
    exec(&admin, format!("SELECT {schema}.hapnd_auth_flush()")).await;
    eventually(Duration::from_secs(1), || is_revoked(&auth, &created.key))
        .await
        .expect("the flush reaches the cache");
    assert_eq!(auth.channel_health(), ChannelHealth::Healthy);
}

/// The listener's connection is killed and a key revoked while it is gone, with no
/// notification at all (the lost-notification case made certain): after the reconnect the
/// instance rejects the key, and notifications flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listener_reconnects_and_misses_nothing() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store_a = store_on(options.clone()).await;
    let store_b = store_on(options).await;
    let a = Authenticator::new(store_a.clone());
    let b = Authenticator::builder(store_b.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let _feed = store_b.listen(b.invalidator());
    healthy(&b, Duration::from_secs(3)).await;

    let tenant = unique("kill");
    let victim = a
        .create_key(NewKey::new(&tenant, Environment::Live, "victim"))
        .await
        .unwrap();
    let later = a
        .create_key(NewKey::new(&tenant, Environment::Live, "later"))
        .await
        .unwrap();
    for key in [&victim.key, &later.key] {
        b.authenticate_key(key.expose_secret()).await.unwrap();
    }

    let killed = sqlx::query(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS t",
    )
    .bind(format!("{schema}:listener"))
    .fetch_one(&admin)
    .await
    .unwrap()
    .get::<i64, _>(0);
    assert_eq!(killed, 1, "exactly B's listener was terminated");
    let killed_at = Instant::now();
    exec(
        &admin,
        format!(
            "UPDATE {schema}.hapnd_api_keys SET revoked_at = now() WHERE id = '{}'",
            victim.record.id
        ),
    )
    .await;

    let took = eventually(Duration::from_secs(5), || is_revoked(&b, &victim.key))
        .await
        .expect("B rejects the key revoked while its listener was down");
    eprintln!("postgres: key revoked during the listener gap rejected {took:?} after the kill");
    healthy(&b, Duration::from_secs(5)).await;
    eprintln!(
        "postgres: listener healthy again {:?} after the kill",
        killed_at.elapsed()
    );

    // LISTEN is re-established: a notified revocation arrives as before.
    a.revoke(&later.record.id).await.unwrap();
    eventually(Duration::from_secs(1), || is_revoked(&b, &later.key))
        .await
        .expect("notifications reach the reconnected listener");
}

/// An outage of the real server for this store's role: misses answer Unavailable within
/// the timeout, cached keys keep working while the channel is healthy, and the same
/// authenticator recovers when logins are allowed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_fails_fast_and_recovers() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let role = unique("hapnd_r");
    exec(&admin, format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'")).await;
    exec(&admin, format!("CREATE SCHEMA {role} AUTHORIZATION {role}")).await;
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .username(&role)
        .password("pw")
        .options([("search_path", role.as_str())]);
    let timeout = Duration::from_millis(500);
    let store = PostgresKeyStore::builder()
        .query_timeout(timeout)
        .connect_with(options)
        .await
        .unwrap();
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let tenant = unique("outage");
    let cached = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "cached"))
        .await
        .unwrap();
    let uncached = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "uncached"))
        .await
        .unwrap();
    auth.authenticate_key(cached.key.expose_secret())
        .await
        .unwrap();

    exec(&admin, format!("ALTER ROLE {role} NOLOGIN")).await;
    exec(
        &admin,
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"),
    )
    .await;

    let started = Instant::now();
    let err = auth
        .authenticate_key(uncached.key.expose_secret())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    assert!(err.store_error().is_some());
    assert!(
        elapsed < timeout + Duration::from_millis(500),
        "failed in {elapsed:?}, timeout {timeout:?}"
    );
    eprintln!("postgres: uncached key during an outage answered Unavailable in {elapsed:?}");
    auth.authenticate_key(cached.key.expose_secret())
        .await
        .expect("a cached key keeps working while the channel is healthy");

    exec(&admin, format!("ALTER ROLE {role} LOGIN")).await;
    let took = eventually(Duration::from_secs(5), || async {
        auth.authenticate_key(uncached.key.expose_secret())
            .await
            .is_ok()
    })
    .await
    .expect("the same authenticator recovers once the database is back");
    eprintln!("postgres: recovered {took:?} after logins were allowed again");

    // Roles outlive the database's schemas: leave none behind on a developer's server.
    store.pool().close().await;
    exec(&admin, format!("DROP SCHEMA {role} CASCADE")).await;
    exec(&admin, format!("DROP ROLE {role}")).await;
}

/// Nothing listens on the port: connecting fails at once, with a store error. Needs no
/// database, so it runs everywhere.
#[tokio::test]
async fn unreachable_server_fails_fast() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let err = PostgresKeyStore::builder()
        .query_timeout(Duration::from_millis(500))
        .connect(&format!("postgres://hapnd:hapnd@127.0.0.1:{port}/hapnd"))
        .await
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        StoreErrorKind::Unavailable | StoreErrorKind::Timeout
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A TCP relay to PostgreSQL that can go silent: bytes are held, connections stay open,
/// as with a dead network path or a half-open connection.
struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

async fn relay(upstream: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&frozen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, Arc::clone(&flag)));
            tokio::spawn(pump(sr, cw, Arc::clone(&flag)));
        }
    });
    Relay { addr, frozen }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The network to the database goes silent (no reset, no error): an uncached lookup fails
/// within the query timeout instead of hanging, the heartbeat notices the dead listener and
/// stops trusting the cache, and everything recovers when the network does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_network_is_bounded_and_detected() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let upstream: SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap();
    let relay = relay(upstream).await;
    let timeout = Duration::from_millis(500);
    let store = PostgresKeyStore::builder()
        .query_timeout(timeout)
        .connect_with(options.host("127.0.0.1").port(relay.addr.port()))
        .await
        .unwrap();
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let heartbeat = ListenOptions::new()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(400))
        .max_backoff(Duration::from_millis(200));
    let _feed = store.listen_with(auth.invalidator(), heartbeat);
    healthy(&auth, Duration::from_secs(3)).await;
    let tenant = unique("silent");
    let cached = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "cached"))
        .await
        .unwrap();
    let uncached = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "uncached"))
        .await
        .unwrap();
    auth.authenticate_key(cached.key.expose_secret())
        .await
        .unwrap();

    relay.frozen.store(true, Ordering::Release);
    let lost = eventually(Duration::from_secs(2), || async {
        auth.channel_health() == ChannelHealth::Degraded
    })
    .await
    .expect("the missing heartbeat marks the channel lost");
    eprintln!(
        "postgres: silent listener detected {lost:?} after the freeze (heartbeat every 100 ms, bound 400 ms)"
    );

    let started = Instant::now();
    let err = auth
        .authenticate_key(uncached.key.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    eprintln!(
        "postgres: lookup over a silent network failed in {:?} (query timeout {timeout:?})",
        started.elapsed()
    );
    // Strict by default: the cached key is not trusted now, and the store cannot answer.
    let err = auth
        .authenticate_key(cached.key.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);

    relay.frozen.store(false, Ordering::Release);
    healthy(&auth, Duration::from_secs(5)).await;
    eventually(Duration::from_secs(5), || async {
        auth.authenticate_key(uncached.key.expose_secret())
            .await
            .is_ok()
    })
    .await
    .expect("lookups work again");
}

/// Any role that can connect may NOTIFY any channel. Heartbeats forged on the listener's
/// own channel (its backend pid is public in `pg_stat_activity`), replaying the nonces it
/// sent or claiming any other, must not keep a silent listener looking healthy: only a
/// nonce this session sent, from this session's backend, counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_heartbeats_do_not_hide_a_silent_listener() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let upstream: SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap();
    let relay = relay(upstream).await;
    let store = PostgresKeyStore::builder()
        .query_timeout(Duration::from_millis(500))
        .connect_with(options.host("127.0.0.1").port(relay.addr.port()))
        .await
        .unwrap();
    let auth = Authenticator::new(store.clone());
    let heartbeat = ListenOptions::new()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(400))
        .max_backoff(Duration::from_millis(200));
    let _feed = store.listen_with(auth.invalidator(), heartbeat);
    healthy(&auth, Duration::from_secs(3)).await;

    // The attacker finds the listener's backend, listens on its heartbeat channel like the
    // listener does, and learns the nonces it sends.
    let pid: i32 =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(format!("{schema}:listener"))
            .fetch_one(&admin)
            .await
            .unwrap();
    let channel = format!("hapnd_auth_hb_{pid}");
    let mut spy = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    spy.listen(&channel).await.unwrap();
    let mut nonces = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), spy.recv()).await {
            nonces.push(n.payload().to_owned());
        }
    }
    assert!(!nonces.is_empty(), "no heartbeat seen on {channel}");
    nonces.extend([u64::MAX.to_string(), "0".to_owned()]);

    relay.frozen.store(true, Ordering::Release);
    // Forged heartbeats keep coming while the network is silent.
    let forging = {
        let admin = admin.clone();
        tokio::spawn(async move {
            loop {
                for nonce in &nonces {
                    let _ = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&channel)
                        .bind(nonce)
                        .execute(&admin)
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    eventually(Duration::from_secs(2), || async {
        auth.channel_health() == ChannelHealth::Degraded
    })
    .await
    .expect("a silent listener is detected despite forged heartbeats");
    forging.abort();
    relay.frozen.store(false, Ordering::Release);
}

/// A revocation made with hand-written SQL (a DBA, another tool) reaches every instance
/// too: a trigger notifies on any change that can make a cached answer stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_raw_sql_reaches_the_cache() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema_name, options) = schema(&url, &admin).await;
    let store = store_on(options).await;
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let _feed = store.listen(auth.invalidator());
    healthy(&auth, Duration::from_secs(3)).await;
    let tenant = unique("rawsql");
    let created = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "raw"))
        .await
        .unwrap();
    // Cached, after the creation's own notification has come and gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();

    exec(
        &admin,
        format!(
            "UPDATE {schema_name}.hapnd_api_keys SET revoked_at = now() WHERE id = '{}'",
            created.record.id
        ),
    )
    .await;
    eventually(Duration::from_secs(1), || is_revoked(&auth, &created.key))
        .await
        .expect("a raw-SQL revocation is rejected within 1 s");

    // Last-used writes notify nothing: they change no answer.
    let mut spy = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    spy.listen(hapnd_auth::NOTIFY_CHANNEL).await.unwrap();
    exec(
        &admin,
        format!(
            "UPDATE {schema_name}.hapnd_api_keys SET last_used_at = now() WHERE id = '{}'",
            created.record.id
        ),
    )
    .await;
    let hash = created.record.hash.to_hex();
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), spy.recv()).await {
            assert_ne!(n.payload(), hash, "a last-used write notified");
        }
    }
}
