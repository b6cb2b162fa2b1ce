//! The conformance suite, the change feed and outages against [`PostgresKeyStore`].
//!
//! Needs `HAPND_TEST_DATABASE_URL` (a database this test may create schemas and roles in;
//! `scripts/pg-start.sh` prints one; `scripts/test.sh` starts one). Without it every test
//! says SKIPPED and passes (`scripts/test.sh` lists them at the end), unless `CI` is set:
//! then each fails, since CI always has the database. Each
//! test works in a schema of its own, so they can run at once on one database.
#![cfg(feature = "postgres")]

mod common;
mod skip;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::conformance::Fixture;
use common::{eventually, unique};
use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, ChannelHealth, CreatedKey, Environment, ListenOptions,
    NewKey, PostgresKeyStore, StoreErrorKind,
};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{AssertSqlSafe, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The test database, or `None` to skip. In CI (`CI` set) a missing URL fails the test:
/// `.ci/run` always starts a database, so a skip there would hide that these tests never ran.
fn database_url() -> Option<String> {
    match std::env::var("HAPND_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some_and(|ci| !ci.is_empty()) => {
            panic!("CI is set but HAPND_TEST_DATABASE_URL is not: the PostgreSQL tests cannot run")
        }
        _ => {
            skip::skipped(
                "HAPND_TEST_DATABASE_URL not set, this PostgreSQL test did not run \
                 (scripts/test.sh starts a database; with CI set this fails)",
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

/// A store whose queries give up after 500 ms: for tests where one is meant to wait on a
/// lock another session holds.
async fn impatient_store(options: PgConnectOptions) -> PostgresKeyStore {
    PostgresKeyStore::builder()
        .query_timeout(Duration::from_millis(500))
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
audit_suite!(pg());
expiry_suite!(pg());

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
    // The change-log read that follows a notification is 10 ms behind it, not 100 ms.
    let feed = store.listen_with(
        auth.invalidator(),
        ListenOptions::new().notification_read_delay(Duration::from_millis(10)),
    );
    healthy(&auth, Duration::from_secs(3)).await;
    let heard = feed.notifications_received();
    let created = auth
        .create_key(NewKey::new(unique("flush"), Environment::Live, "ci"))
        .await
        .unwrap();
    // The creation's own notification (it clears any negative entry) and the log read
    // behind it come and go first: both invalidate the new key's hash, and would evict the
    // entry cached below. (A fixed 100 ms wait raced the read, 100 ms behind by default,
    // and failed once in CI.)
    eventually(Duration::from_secs(3), || async {
        feed.notifications_received() > heard
    })
    .await
    .expect("the creation is notified");
    tokio::time::sleep(Duration::from_millis(200)).await;
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

/// `options` through `relay`, in cleartext: these tests are about a silent network, and a
/// TLS handshake on a loaded machine can eat a short query timeout on its own.
fn through(options: PgConnectOptions, relay: &Relay) -> PgConnectOptions {
    options
        .host("127.0.0.1")
        .port(relay.addr.port())
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
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
        .connect_with(through(options, &relay))
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

/// Any role that can connect may NOTIFY. Notifications forged on the revocation channel
/// (flushes, hashes, anything) while the network to the listener is silent must not keep it
/// looking healthy: only a successful read of the change log on its own connection does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_do_not_hide_a_silent_listener() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let upstream: SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap();
    let relay = relay(upstream).await;
    let store = PostgresKeyStore::builder()
        .query_timeout(Duration::from_millis(500))
        .connect_with(through(options, &relay))
        .await
        .unwrap();
    let auth = Authenticator::new(store.clone());
    let heartbeat = ListenOptions::new()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(400))
        .max_backoff(Duration::from_millis(200));
    let _feed = store.listen_with(auth.invalidator(), heartbeat);
    healthy(&auth, Duration::from_secs(3)).await;
    let channel = hapnd_auth::NOTIFY_CHANNEL.to_owned();
    let payloads = vec!["flush".to_owned(), "heartbeat".to_owned(), "0".repeat(64)];

    relay.frozen.store(true, Ordering::Release);
    // Forged notifications keep coming while the network is silent.
    let forging = {
        let admin = admin.clone();
        tokio::spawn(async move {
            loop {
                for payload in &payloads {
                    let _ = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&channel)
                        .bind(payload)
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
    .expect("a silent listener is detected despite forged notifications");
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

/// A look-alike tenant written by SQL (no write path accepts it) fails closed on lookup:
/// never a principal whose tenant a proxy would show as another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_tenant_written_by_hand_fails_closed() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema_name, options) = schema(&url, &admin).await;
    let store = store_on(options).await;
    let auth = Authenticator::new(store.clone());
    let tenant = unique("lookalike");
    let created = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "ci"))
        .await
        .unwrap();
    exec(
        &admin,
        format!(
            "UPDATE {schema_name}.hapnd_api_keys SET tenant = tenant || E'\\u00a0' WHERE id = '{}'",
            created.record.id
        ),
    )
    .await;
    let err = auth
        .authenticate_key(created.key.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    assert_eq!(
        err.store_error().map(|e| e.kind()),
        Some(StoreErrorKind::Invalid)
    );
}

/// A database of its own, for tests that count notifications: channels are per database,
/// so other tests' notifications do not reach it. Returns its name and connect options;
/// [`drop_database`] removes it.
async fn fresh_database(url: &str, admin: &PgPool) -> (String, PgConnectOptions) {
    let name = unique("hapnd_db");
    exec(admin, format!("CREATE DATABASE {name}")).await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .database(&name)
        .application_name(&name);
    (name, options)
}

async fn drop_database(admin: &PgPool, name: &str) {
    exec(admin, format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

/// sqlx's migration lock for `database`: `pg_advisory_lock` of this key.
fn sqlx_migration_lock(database: &str) -> i64 {
    0x3d32ad9e * i64::from(crc32fast::hash(database.as_bytes()))
}

/// A role with no privileges can take sqlx's migration advisory lock and hold it. A store
/// on an up-to-date database connects and revokes anyway: the applied versions are read
/// first, and the lock is taken only when a migration is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_migration_lock_blocks_neither_startup_nor_revocation() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let first = store_on(options.clone()).await;
    let created = Authenticator::new(first)
        .create_key(NewKey::new(unique("locked"), Environment::Live, "ci"))
        .await
        .unwrap();

    let database = options.get_database().unwrap_or("hapnd").to_owned();
    let mut holder = admin.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(sqlx_migration_lock(&database))
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = Instant::now();
    let connected = PostgresKeyStore::builder()
        .query_timeout(Duration::from_millis(500))
        .connect_with(options)
        .await;
    let revoked = match &connected {
        Ok(store) => Some(
            hapnd_auth::KeyStore::revoke(store, &created.record.id, std::time::SystemTime::now())
                .await,
        ),
        Err(_) => None,
    };
    let took = started.elapsed();
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(sqlx_migration_lock(&database))
        .execute(&mut *holder)
        .await
        .unwrap();
    let store = connected.expect("connects while another session holds the migration lock");
    assert!(revoked.unwrap().unwrap().is_revoked());
    eprintln!("postgres: connect + revoke with the migration lock held took {took:?}");
    drop(store);
}

/// The fakes of a full `NOTIFY` queue, in a schema put before `pg_catalog` on the
/// search_path: `pg_notify` on the revocation channel fails with PostgreSQL's own error for a
/// full queue (SQLSTATE 54000), and the queue reports itself full. (PostgreSQL 15's queue is
/// 8 GB and cannot be shrunk, so a test cannot fill it for real.) Heartbeats, on their own
/// channels, pass.
async fn fake_full_queue(admin: &PgPool, schema: &str) {
    exec(
        admin,
        format!(
            "CREATE FUNCTION {schema}.pg_notify(channel text, payload text) RETURNS void \
             LANGUAGE plpgsql AS $$ BEGIN \
             IF channel = 'hapnd_auth_keys' THEN \
             RAISE EXCEPTION 'too many notifications in the NOTIFY queue' USING ERRCODE = '54000'; \
             END IF; PERFORM pg_catalog.pg_notify(channel, payload); END $$"
        ),
    )
    .await;
    exec(
        admin,
        format!(
            "CREATE FUNCTION {schema}.pg_notification_queue_usage() RETURNS float8 \
             LANGUAGE sql AS $$ SELECT 1.0::float8 $$"
        ),
    )
    .await;
}

/// With the `NOTIFY` queue full, creations and revocations (the store's and hand-written
/// ones) still commit, and another instance, which hears no notification at all, rejects
/// the keys within one heartbeat: its listener reads the change log on every heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_commits_and_propagates_when_notify_fails() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    // A database of its own: no other test's notification reaches B.
    let (database, options) = fresh_database(&url, &admin).await;
    let options = options.options([("search_path", "public, pg_catalog")]);
    let db = PgPool::connect_with(options.clone()).await.unwrap();
    // Before any store connects: a connection's cached statement keeps calling the function
    // it was planned with.
    fake_full_queue(&db, "public").await;
    let store_a = store_on(options.clone()).await;
    let store_b = store_on(options).await;
    let a = Authenticator::new(store_a);
    let b = Authenticator::builder(store_b.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let heartbeat = ListenOptions::new()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(1000));
    let feed = store_b.listen_with(b.invalidator(), heartbeat);
    healthy(&b, Duration::from_secs(3)).await;
    let tenant = unique("full");
    let by_store = a
        .create_key(NewKey::new(&tenant, Environment::Live, "store"))
        .await
        .unwrap();
    let by_sql = a
        .create_key(NewKey::new(&tenant, Environment::Live, "sql"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for key in [&by_store.key, &by_sql.key] {
        b.authenticate_key(key.expose_secret()).await.unwrap();
    }

    a.revoke(&by_store.record.id)
        .await
        .expect("a revocation commits although NOTIFY fails");
    // A DBA's revocation, by hand.
    exec(
        &db,
        format!(
            "UPDATE hapnd_api_keys SET revoked_at = now() WHERE id = '{}'",
            by_sql.record.id
        ),
    )
    .await;
    for key in [&by_store.key, &by_sql.key] {
        let took = eventually(Duration::from_secs(1), || is_revoked(&b, key))
            .await
            .expect("B rejects the key within a heartbeat, without a notification");
        eprintln!("postgres: revocation without NOTIFY reached B in {took:?} (heartbeat 100 ms)");
    }
    assert_eq!(b.channel_health(), ChannelHealth::Healthy);
    assert_eq!(
        feed.notifications_received(),
        0,
        "B heard no notification: the change log carried everything"
    );
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM hapnd_key_changes")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(logged, 4, "both creations and both revocations are logged");
    drop((feed, a, b, store_b));
    db.close().await;
    drop_database(&admin, &database).await;
}

/// `notification_queue_usage` reads PostgreSQL's queue usage: a session that LISTENs and
/// then idles in a transaction holds every later notification in the queue, and the usage
/// shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_listener_shows_in_the_queue_usage() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let store = store_on(options).await;
    let channel = unique("stalled");
    let mut stalled = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    stalled.listen(&channel).await.unwrap();
    sqlx::query("BEGIN").execute(&mut stalled).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut stalled).await.unwrap();
    // About 400 kB: some 50 of the queue's 8 kB pages.
    let payload = "x".repeat(7900);
    for _ in 0..50 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&channel)
            .bind(&payload)
            .execute(&admin)
            .await
            .unwrap();
    }
    let usage = store.notification_queue_usage().await.unwrap();
    eprintln!("postgres: queue usage with a stalled listener holding ~400 kB: {usage:e}");
    assert!(usage > 0.0, "usage {usage}");
    assert!(usage < 0.5);
    sqlx::query("ROLLBACK").execute(&mut stalled).await.unwrap();
}

/// One statement that changes many keys logs and notifies one flush, not one notification
/// per row, and every instance forgets those keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_change_sends_one_flush() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (database, options) = fresh_database(&url, &admin).await;
    let store = store_on(options.clone()).await;
    let db = PgPool::connect_with(options.clone()).await.unwrap();
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let _feed = store.listen(auth.invalidator());
    healthy(&auth, Duration::from_secs(3)).await;
    let tenant = unique("bulk");
    let cached = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "cached"))
        .await
        .unwrap();
    exec(
        &db,
        format!(
            "INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, created_at) \
             SELECT 'key_bulk' || i, '{tenant}', 'live', 'bulk', sha256(i::text::bytea), 'h', now() \
             FROM generate_series(1, 1000) AS i"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    auth.authenticate_key(cached.key.expose_secret())
        .await
        .unwrap();

    let mut spy = sqlx::postgres::PgListener::connect_with(&db).await.unwrap();
    spy.listen(hapnd_auth::NOTIFY_CHANNEL).await.unwrap();
    exec(
        &db,
        format!("UPDATE hapnd_api_keys SET revoked_at = now() WHERE tenant = '{tenant}'"),
    )
    .await;
    let mut payloads = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), spy.recv()).await {
            payloads.push(n.payload().to_owned());
        }
    }
    assert_eq!(
        payloads.len(),
        1,
        "1,001 rows changed by one statement: {} notifications",
        payloads.len()
    );
    assert_eq!(payloads[0], "flush");
    eventually(Duration::from_secs(1), || is_revoked(&auth, &cached.key))
        .await
        .expect("the bulk revocation reaches the cache");
    drop((spy, _feed, auth, store));
    db.close().await;
    drop_database(&admin, &database).await;
}

/// 'infinity' in a time column (written before migration 3's CHECK, which now refuses it)
/// reads as a far-away time: the key is not a store error on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_times_are_refused_and_read_defensively() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store = store_on(options).await;
    let auth = Authenticator::new(store.clone());
    let tenant = unique("inf");
    let created = auth
        .create_key(NewKey::new(&tenant, Environment::Live, "forever"))
        .await
        .unwrap();
    let set_infinite = format!(
        "UPDATE {schema}.hapnd_api_keys SET expires_at = 'infinity' WHERE id = '{}'",
        created.record.id
    );
    let refused = sqlx::query(AssertSqlSafe(set_infinite.clone()))
        .execute(&admin)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("hapnd_api_keys_finite_times"));

    exec(
        &admin,
        format!("ALTER TABLE {schema}.hapnd_api_keys DROP CONSTRAINT hapnd_api_keys_finite_times"),
    )
    .await;
    exec(&admin, set_infinite).await;
    auth.authenticate_key(created.key.expose_secret())
        .await
        .expect("a key that never expires authenticates");
    let listed = hapnd_auth::KeyStore::list(&store, &tenant).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].expires_at.unwrap() > std::time::SystemTime::now());
}

/// `n` instances on a database of their own, each with its own store (a pool of 2), authenticator and
/// listener, as separate gateways would have; instance `i`'s sessions are named
/// `{database}_{i}` and `{database}_{i}:listener`.
async fn fleet(
    url: &str,
    admin: &PgPool,
    n: usize,
) -> (
    String,
    Vec<(PostgresKeyStore, Authenticator, hapnd_auth::ChangeFeed)>,
) {
    let (database, options) = fresh_database(url, admin).await;
    let mut fleet = Vec::with_capacity(n);
    for i in 0..n {
        let store = PostgresKeyStore::builder()
            .max_connections(2)
            .connect_with(options.clone().application_name(&format!("{database}_{i}")))
            .await
            .unwrap();
        let auth = Authenticator::builder(store.clone())
            .ttl(Duration::from_secs(60))
            .build();
        let feed = store.listen(auth.invalidator());
        fleet.push((store, auth, feed));
    }
    for (_, auth, _) in &fleet {
        healthy(auth, Duration::from_secs(10)).await;
    }
    (database, fleet)
}

/// 50 instances on one database: at idle no listener hears any notification (heartbeats are
/// reads of the change log, not notifications; with one shared heartbeat channel each heard
/// 50 per second); a revocation through one reaches all of them, including one whose
/// listener was killed just before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_instances_idle_quietly_and_all_see_a_revocation() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, fleet) = fleet(&url, &admin, 50).await;

    let before: Vec<u64> = fleet.iter().map(|f| f.2.notifications_received()).collect();
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    let heard: Vec<u64> = fleet
        .iter()
        .zip(&before)
        .map(|(f, before)| f.2.notifications_received() - before)
        .collect();
    let most = *heard.iter().max().unwrap();
    eprintln!(
        "postgres: 50 idle instances, notifications per listener in {idle:?} (1 s heartbeat): \
         min {}, max {most}",
        heard.iter().min().unwrap()
    );
    // One heartbeat per second each; with one shared channel it was 50 per second.
    assert!(
        most <= 5,
        "an idle listener heard {most} notifications in {idle:?}"
    );

    let tenant = unique("fleet");
    let created = fleet[0]
        .1
        .create_key(NewKey::new(&tenant, Environment::Live, "shared"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (_, auth, _) in &fleet {
        auth.authenticate_key(created.key.expose_secret())
            .await
            .unwrap();
    }
    let killed = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS t",
    )
    .bind(format!("{schema}_7:listener"))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    let started = Instant::now();
    fleet[0].1.revoke(&created.record.id).await.unwrap();
    for (i, (_, auth, _)) in fleet.iter().enumerate() {
        eventually(Duration::from_secs(5), || is_revoked(auth, &created.key))
            .await
            .unwrap_or_else(|| panic!("instance {i} still accepts the revoked key"));
    }
    eprintln!(
        "postgres: revocation reached all 50 instances (one reconnecting) in {:?}",
        started.elapsed()
    );
    for (_, auth, _) in &fleet {
        healthy(auth, Duration::from_secs(5)).await;
    }
    drop(fleet);
    drop_database(&admin, &schema).await;
}

/// Every instance flushes last-used times for the same keys at once, each batch in its own
/// order, while keys are revoked: no flush fails (no deadlock, no timeout) and every
/// revocation succeeds, because usage rows live in a table of their own, written in id
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_usage_flushes_never_fail_or_block_revocations() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let mut stores = Vec::new();
    for _ in 0..20 {
        stores.push(
            PostgresKeyStore::builder()
                .max_connections(2)
                // Every batch writes every row, and batches do not take turns: what
                // concurrent writes do to each other (lock order, skipped rows) is what this
                // test is about.
                .usage_resolution(Duration::ZERO)
                .usage_turns(false)
                .connect_with(options.clone())
                .await
                .unwrap(),
        );
    }
    let tenant = unique("usage");
    let mut keys = Vec::new();
    for i in 0..200 {
        let created = hapnd_auth::KeyStore::create(
            &stores[0],
            NewKey::new(&tenant, Environment::Live, format!("k{i}")),
        )
        .await
        .unwrap();
        keys.push(created.record.id);
    }
    let mut flushes = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let store = store.clone();
        // A different order per instance: rotated and, for odd instances, reversed.
        let mut ids = keys.clone();
        let by = n * 7 % ids.len();
        ids.rotate_left(by);
        if n % 2 == 1 {
            ids.reverse();
        }
        flushes.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..10u64 {
                let at = std::time::SystemTime::now() + Duration::from_millis(round);
                let batch: Vec<hapnd_auth::LastUsed> = ids
                    .iter()
                    .map(|id| hapnd_auth::LastUsed { id: id.clone(), at })
                    .collect();
                if let Err(e) = hapnd_auth::KeyStore::record_usage(&store, &batch).await {
                    failures.push(e.to_string());
                }
            }
            failures
        }));
    }
    let mut revocations = Vec::new();
    for id in keys.iter().step_by(20) {
        let started = Instant::now();
        hapnd_auth::KeyStore::revoke(&stores[1], id, std::time::SystemTime::now())
            .await
            .expect("a revocation succeeds during usage flushes");
        revocations.push(started.elapsed());
    }
    let mut failures = Vec::new();
    for flush in flushes {
        failures.extend(flush.await.unwrap());
    }
    revocations.sort();
    eprintln!(
        "postgres: {} revocations during 200 usage flushes of 200 keys from 20 stores: \
         median {:?}, max {:?}",
        revocations.len(),
        revocations[revocations.len() / 2],
        revocations.last().unwrap()
    );
    assert!(failures.is_empty(), "usage flushes failed: {failures:?}");
    let used = hapnd_auth::KeyStore::get(&stores[0], &keys[0])
        .await
        .unwrap()
        .unwrap();
    assert!(used.last_used_at.is_some());
}

/// A usage batch moves `last_used_at` only by at least the store's resolution: many
/// instances reporting the same keys' use within a minute write each row once.
#[tokio::test]
async fn last_used_moves_only_by_the_usage_resolution() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let coarse = PostgresKeyStore::builder()
        .connect_with(options.clone())
        .await
        .unwrap();
    let exact = PostgresKeyStore::builder()
        .usage_resolution(Duration::ZERO)
        .connect_with(options)
        .await
        .unwrap();
    let created =
        hapnd_auth::KeyStore::create(&coarse, NewKey::new(unique("res"), Environment::Live, "ci"))
            .await
            .unwrap();
    let id = created.record.id;
    let last_used = |store: &PostgresKeyStore| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            hapnd_auth::KeyStore::get(&store, &id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at
                .unwrap()
        }
    };
    let use_at = |store: &PostgresKeyStore, at: std::time::SystemTime| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            hapnd_auth::KeyStore::record_usage(&store, &[hapnd_auth::LastUsed { id, at }])
                .await
                .unwrap()
        }
    };
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    use_at(&coarse, t0).await;
    assert_eq!(last_used(&coarse).await, t0);
    // 59 s later: within the default minute, not written.
    use_at(&coarse, t0 + Duration::from_secs(59)).await;
    assert_eq!(last_used(&coarse).await, t0);
    // 61 s later: written.
    let t1 = t0 + Duration::from_secs(61);
    use_at(&coarse, t1).await;
    assert_eq!(last_used(&coarse).await, t1);
    // With no resolution every newer time is written; an older one never is.
    let t2 = t1 + Duration::from_millis(1);
    use_at(&exact, t2).await;
    assert_eq!(last_used(&exact).await, t2);
    use_at(&exact, t0).await;
    assert_eq!(last_used(&exact).await, t2);
    drop((coarse, exact));
    exec(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// Usage writes take turns on one advisory lock: while another session holds it, a flush
/// waits (in the server's lock queue, using no CPU) and runs once it is released.
#[tokio::test]
async fn usage_writes_take_turns_on_the_usage_lock() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store = store_on(options.clone()).await;
    let created = hapnd_auth::KeyStore::create(
        &store,
        NewKey::new(unique("turns"), Environment::Live, "ci"),
    )
    .await
    .unwrap();
    let other = PgPool::connect_with(options).await.unwrap();
    let mut turn = other.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(PostgresKeyStore::USAGE_LOCK)
        .execute(&mut *turn)
        .await
        .unwrap();
    let flush = {
        let (store, id) = (store.clone(), created.record.id.clone());
        tokio::spawn(async move {
            let used = [hapnd_auth::LastUsed {
                id,
                at: std::time::SystemTime::now(),
            }];
            hapnd_auth::KeyStore::record_usage(&store, &used).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !flush.is_finished(),
        "the flush ran while another held the turn"
    );
    turn.commit().await.unwrap();
    flush
        .await
        .unwrap()
        .expect("the flush runs once the turn is free");
    let record = hapnd_auth::KeyStore::get(&store, &created.record.id)
        .await
        .unwrap()
        .unwrap();
    assert!(record.last_used_at.is_some());
    drop((store, other));
    exec(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// A store with one pooled connection, so each query runs on the connection the test
/// kills, and a key in it.
async fn one_connection_store(options: PgConnectOptions) -> (PostgresKeyStore, CreatedKey) {
    let store = PostgresKeyStore::builder()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let created =
        hapnd_auth::KeyStore::create(&store, NewKey::new(unique("conn"), Environment::Live, "ci"))
            .await
            .unwrap();
    (store, created)
}

/// Terminates the one pooled connection of the store in `schema`, once it sits idle in the
/// pool: 200 ms after its last use, past sqlx's ping when a connection goes back to the
/// pool (which would otherwise notice the kill and replace it), then waits `after`.
async fn kill_pooled_connection(admin: &PgPool, schema: &str, after: Duration) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = sqlx::query(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS t",
    )
    .bind(schema)
    .fetch_one(admin)
    .await
    .unwrap()
    .get::<i64, _>(0);
    assert_eq!(killed, 1, "the store's one pooled connection");
    tokio::time::sleep(after).await;
}

/// A pooled connection that died while idle (a server restart, a proxy's idle timeout) is
/// pinged and replaced before a lookup uses it: the lookup does not fail. (The store pings
/// only connections idle for a second or more; this test holds for any policy that pings
/// those, and fails with none.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_died_while_idle_is_replaced_before_a_lookup() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let (store, created) = one_connection_store(options).await;
    for round in 0..2 {
        // Idle past the second after which the pool pings it.
        kill_pooled_connection(&admin, &schema, Duration::from_millis(1_200)).await;
        let found = hapnd_auth::KeyStore::lookup(&store, &created.record.hash)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the lookup met the dead connection: {e}"));
        assert_eq!(found.unwrap().id, created.record.id);
    }
    drop(store);
    exec(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// A pooled connection the server drops within a second of its last use is not pinged
/// before the next query (that ping would cost every lookup a round trip). A lookup (both
/// kinds), a `get` or a revocation that meets it is sent once more on another connection:
/// it succeeds. All are idempotent (revoking twice changes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_meets_a_recently_dropped_connection_is_sent_again() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let (store, created) = one_connection_store(options).await;
    // Well within the second after which the pool would ping it; the backend is gone
    // before the store's next query is sent.
    let soon = Duration::from_millis(100);
    kill_pooled_connection(&admin, &schema, soon).await;
    let found = hapnd_auth::KeyStore::lookup(&store, &created.record.hash)
        .await
        .expect("a lookup on a dropped connection is sent again");
    assert_eq!(found.unwrap().id, created.record.id);
    // The authenticator's own lookup, which reads the key's table only.
    kill_pooled_connection(&admin, &schema, soon).await;
    let found = hapnd_auth::KeyStore::lookup_for_request(&store, &created.record.hash)
        .await
        .expect("a request's lookup on a dropped connection is sent again");
    assert_eq!(found.unwrap().id, created.record.id);
    kill_pooled_connection(&admin, &schema, soon).await;
    let got = hapnd_auth::KeyStore::get(&store, &created.record.id)
        .await
        .expect("a get on a dropped connection is sent again");
    assert!(got.is_some());
    kill_pooled_connection(&admin, &schema, soon).await;
    let revoked =
        hapnd_auth::KeyStore::revoke(&store, &created.record.id, std::time::SystemTime::now())
            .await
            .expect("a revocation on a dropped connection is sent again");
    assert!(revoked.revoked_at.is_some());
    drop(store);
    exec(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// A usage write that waits past its bound for its turn fails, and leaves its pooled
/// connection usable: the transaction it began (in the same round trip as the wait) is
/// rolled back, not left open or aborted for the next query on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_write_that_waits_too_long_leaves_its_connection_clean() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    // One connection, so the next queries run on the one the failed write used. The wait
    // for the turn is bounded by 5 query timeouts: 2.5 s. (200 ms was too tight for the
    // queries after it on a loaded 2-core CI machine, where the whole suite runs at once.)
    let store = PostgresKeyStore::builder()
        .max_connections(1)
        .query_timeout(Duration::from_millis(500))
        .connect_with(options.clone())
        .await
        .unwrap();
    let created =
        hapnd_auth::KeyStore::create(&store, NewKey::new(unique("late"), Environment::Live, "ci"))
            .await
            .unwrap();
    let other = PgPool::connect_with(options).await.unwrap();
    let mut turn = other.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(PostgresKeyStore::USAGE_LOCK)
        .execute(&mut *turn)
        .await
        .unwrap();
    let used = [hapnd_auth::LastUsed {
        id: created.record.id.clone(),
        at: std::time::SystemTime::now(),
    }];
    let started = std::time::Instant::now();
    let err = hapnd_auth::KeyStore::record_usage(&store, &used)
        .await
        .expect_err("the turn is held past the wait's bound");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), hapnd_auth::StoreErrorKind::Timeout, "{err}");
    turn.commit().await.unwrap();
    // The same connection: not inside a transaction, not aborted.
    let record = hapnd_auth::KeyStore::get(&store, &created.record.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.last_used_at.is_none(),
        "the failed write wrote nothing"
    );
    hapnd_auth::KeyStore::record_usage(&store, &used)
        .await
        .expect("the next write takes its turn");
    hapnd_auth::KeyStore::revoke(&store, &created.record.id, std::time::SystemTime::now())
        .await
        .expect("a revocation on that connection");
    let record = hapnd_auth::KeyStore::get(&store, &created.record.id)
        .await
        .unwrap()
        .unwrap();
    assert!(record.last_used_at.is_some() && record.revoked_at.is_some());
    drop((store, other));
    exec(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// A transaction left open after changing one key (a DBA's session, a stuck tool) blocks no
/// other key's revocation: the change log numbers its entries only at commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_does_not_block_other_revocations() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store = impatient_store(options).await;
    let tenant = unique("open");
    let mut ids = Vec::new();
    for name in ["edited", "revoked"] {
        let created =
            hapnd_auth::KeyStore::create(&store, NewKey::new(&tenant, Environment::Live, name))
                .await
                .unwrap();
        ids.push(created.record.id);
    }
    let mut dba = admin.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {schema}.hapnd_api_keys SET name = 'renamed' WHERE id = '{}'",
        ids[0]
    )))
    .execute(&mut *dba)
    .await
    .unwrap();
    let revoked = hapnd_auth::KeyStore::revoke(&store, &ids[1], std::time::SystemTime::now()).await;
    dba.commit().await.unwrap();
    assert!(
        revoked
            .expect("revoked while another transaction is open")
            .is_revoked()
    );
    // Both are logged, in commit order: the revocation first.
    let logged: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT gen FROM {schema}.hapnd_key_changes ORDER BY gen"
    )))
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        logged,
        [1, 2, 3, 4],
        "two creations, the revocation, the rename"
    );
}

/// The server's certificate when it serves TLS (`HAPND_PG_SSL=1 scripts/pg-start.sh`
/// copies it to `DATADIR-root.crt`; `.ci/run` exports this variable).
fn root_cert() -> Option<String> {
    match std::env::var("HAPND_TEST_PG_ROOT_CERT") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            skip::skipped("HAPND_TEST_PG_ROOT_CERT not set (a server without TLS)");
            None
        }
    }
}

async fn encrypted(store: &PostgresKeyStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// TLS against the throwaway server's self-signed certificate: `verify-full` with it as
/// `sslrootcert` connects encrypted; with another root it is refused; to loopback without
/// `sslmode`, the connection is encrypted when the server offers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_certificate() {
    let Some(url) = database_url() else { return };
    let Some(root) = root_cert() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;

    let verified = PostgresKeyStore::builder()
        .connect_with(
            options
                .clone()
                .ssl_mode(sqlx::postgres::PgSslMode::VerifyFull)
                .ssl_root_cert(&root),
        )
        .await
        .expect("verify-full with the server's certificate as root");
    assert!(encrypted(&verified).await);
    let default = store_on(options.clone()).await;
    assert!(encrypted(&default).await, "prefer: TLS when offered");

    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
    let refused = PostgresKeyStore::builder()
        .query_timeout(Duration::from_secs(1))
        .connect_with(
            options
                .ssl_mode(sqlx::postgres::PgSslMode::VerifyFull)
                .ssl_root_cert(&other),
        )
        .await
        .expect_err("a certificate that does not chain to the root is refused");
    assert_eq!(refused.kind(), StoreErrorKind::Unavailable, "{refused}");
    assert!(!refused.to_string().contains("hapnd:hapnd"));
}

/// A fresh database, an authenticator that writes keys (`revoker`), and one whose cache
/// (60 s TTL) a feed with `listen` options keeps, confirmed healthy: the setup of the
/// listener tests below.
struct Listening {
    admin: PgPool,
    database: String,
    options: PgConnectOptions,
    revoker: Authenticator,
    auth: Authenticator,
    feed: hapnd_auth::ChangeFeed,
}

impl Listening {
    async fn start(url: &str, listen: ListenOptions) -> Self {
        let admin = admin(url).await;
        let (database, options) = fresh_database(url, &admin).await;
        let revoker = Authenticator::new(store_on(options.clone()).await);
        let store = store_on(options.clone()).await;
        let auth = Authenticator::builder(store.clone())
            .ttl(Duration::from_secs(60))
            .build();
        let feed = store.listen_with(auth.invalidator(), listen);
        healthy(&auth, Duration::from_secs(3)).await;
        Listening {
            admin,
            database,
            options,
            revoker,
            auth,
            feed,
        }
    }

    /// Stops the feed, then drops the database.
    async fn finish(self) {
        drop(self.feed);
        drop_database(&self.admin, &self.database).await;
    }
}

/// Options under which a listener reads the change log once at start and then not for the
/// rest of a test: heartbeats and notification-triggered reads 60 s apart.
fn reads_once() -> ListenOptions {
    ListenOptions::new()
        .heartbeat_interval(Duration::from_secs(60))
        .heartbeat_timeout(Duration::from_secs(120))
        .notification_read_delay(Duration::from_secs(60))
}

/// A notification's payload (the revoked key's hash) is invalidated the moment it arrives,
/// without waiting for a read of the change log: here no read happens at all after the
/// first, yet the instance rejects the key as soon as the revocation is notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_invalidates_its_key_before_any_read_of_the_log() {
    let Some(url) = database_url() else { return };
    let instance = Listening::start(&url, reads_once()).await;
    let Listening {
        revoker,
        auth,
        feed,
        ..
    } = &instance;
    let created = revoker
        .create_key(NewKey::new(unique("payload"), Environment::Live, "k"))
        .await
        .unwrap();
    // The creation's own notification first: arriving after the key is cached, its payload
    // would evict the entry, and the revocation below would be seen by a store read.
    eventually(Duration::from_secs(2), || async {
        feed.notifications_received() >= 1
    })
    .await
    .expect("the creation is notified");
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    let reads = feed.change_log_reads();
    assert_eq!(reads, 1, "the session's first read only");

    revoker.revoke(&created.record.id).await.unwrap();
    let took = eventually(Duration::from_secs(2), || is_revoked(auth, &created.key))
        .await
        .expect("the notified hash is invalidated without a read of the log");
    assert_eq!(
        feed.change_log_reads(),
        reads,
        "the change log was read: this test no longer shows the payload alone acting"
    );
    eprintln!("postgres: revocation applied from the notification's payload in {took:?}");
    instance.finish().await;
}

/// A notification still makes the listener read the change log (after the delay), and the
/// read applies changes no payload named: a revocation made with the trigger's notification
/// turned off is caught by the next notification, whatever its payload, long before the
/// heartbeat. Payloads add invalidations; they never stand in for the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_notification_brings_in_a_change_whose_own_notification_was_lost() {
    let Some(url) = database_url() else { return };
    let instance = Listening::start(
        &url,
        reads_once().notification_read_delay(Duration::from_millis(50)),
    )
    .await;
    let Listening {
        options,
        revoker,
        auth,
        feed,
        ..
    } = &instance;
    let db = PgPool::connect_with(options.clone()).await.unwrap();
    let created = revoker
        .create_key(NewKey::new(unique("lost"), Environment::Live, "k"))
        .await
        .unwrap();
    // The creation's notification and the read it schedules come and go first.
    eventually(Duration::from_secs(3), || async {
        feed.change_log_reads() >= 2
    })
    .await
    .expect("the creation's notification triggers a read of the log");
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();

    // Revoked by hand with the trigger's notification off: logged, never notified.
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL hapnd_auth.notify = 'off'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE hapnd_api_keys SET revoked_at = now() WHERE id = $1")
        .bind(created.record.id.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    auth.authenticate_key(created.key.expose_secret())
        .await
        .expect("no notification and no heartbeat yet: still cached as active");

    // Any notification, here one naming some other hash, makes the listener read the log.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(hapnd_auth::NOTIFY_CHANNEL)
        .bind("ab".repeat(32))
        .execute(&db)
        .await
        .unwrap();
    eventually(Duration::from_secs(2), || is_revoked(auth, &created.key))
        .await
        .expect("the read a notification triggers applies the unnotified revocation");
    db.close().await;
    instance.finish().await;
}

/// A read delay past the clock's range (`Duration::MAX`, "never read on a notification")
/// leaves the reads to the heartbeat: the listener keeps running, payloads still act, and
/// the channel stays healthy. It used to overflow `Instant + Duration` on the first
/// notification and end the feed (channel lost for good, every request to the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_delay_of_duration_max_leaves_reads_to_the_heartbeat() {
    let Some(url) = database_url() else { return };
    let instance = Listening::start(
        &url,
        ListenOptions::new()
            .heartbeat_interval(Duration::from_millis(200))
            .notification_read_delay(Duration::MAX),
    )
    .await;
    let Listening {
        revoker,
        auth,
        feed,
        ..
    } = &instance;
    let created = revoker
        .create_key(NewKey::new(unique("never"), Environment::Live, "k"))
        .await
        .unwrap();
    auth.authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    revoker.revoke(&created.record.id).await.unwrap();
    eventually(Duration::from_secs(2), || is_revoked(auth, &created.key))
        .await
        .expect("the revocation reaches the instance");
    assert!(
        feed.notifications_received() >= 1,
        "no notification arrived"
    );
    // Several heartbeats later the feed is still alive and confirming the channel.
    let reads = feed.change_log_reads();
    eventually(Duration::from_secs(3), || async {
        feed.change_log_reads() >= reads + 3
    })
    .await
    .expect("the heartbeat keeps reading the log");
    assert_eq!(auth.channel_health(), ChannelHealth::Healthy);
    instance.finish().await;
}

/// Notifications arriving one after another are coalesced: with a 100 ms read delay, 100
/// notifications sent over at least 200 ms cost the listener a handful of reads of the
/// change log, not one each (which is what the listener did before, a read per
/// notification).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_notifications_costs_few_reads_of_the_log() {
    let Some(url) = database_url() else { return };
    let delay = Duration::from_millis(100);
    let instance = Listening::start(&url, reads_once().notification_read_delay(delay)).await;
    let Listening {
        options,
        auth,
        feed,
        ..
    } = &instance;
    let db = PgPool::connect_with(options.clone()).await.unwrap();
    let (heard, reads) = (feed.notifications_received(), feed.change_log_reads());

    let started = Instant::now();
    for i in 0..100u32 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(hapnd_auth::NOTIFY_CHANNEL)
            .bind(format!("{i:064x}"))
            .execute(&db)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sent_over = started.elapsed();
    eventually(Duration::from_secs(3), || async {
        feed.notifications_received() - heard >= 100
    })
    .await
    .expect("every notification arrives");
    // Delivery can lag sending on a loaded machine: count from the first send to the moment
    // every notification was seen to have arrived.
    let received_over = started.elapsed();
    tokio::time::sleep(delay * 2).await;
    let read = feed.change_log_reads() - reads;
    // At most one read per delay while they kept arriving, one after the last, and one
    // more for a window cut short at either end.
    let bound = (received_over.as_millis() / delay.as_millis()) as u64 + 2;
    eprintln!(
        "postgres: 100 notifications sent over {sent_over:?}, all received within \
         {received_over:?}: {read} reads of the change log (bound {bound})"
    );
    assert!(read >= 1, "the notifications triggered no read at all");
    assert!(
        read <= bound,
        "{read} reads of the change log for 100 notifications over {sent_over:?}"
    );
    assert_eq!(auth.channel_health(), ChannelHealth::Healthy);
    db.close().await;
    instance.finish().await;
}

/// Answering a request reads the key's own row only: a lock on the usage table (a
/// `VACUUM FULL` or a migration of it, a stuck usage write) never stalls authentication,
/// while `lookup`, which reports the last use, waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_usage_table_does_not_stall_authentication() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store = impatient_store(options).await;
    let created = hapnd_auth::KeyStore::create(
        &store,
        NewKey::new(unique("locked"), Environment::Live, "k"),
    )
    .await
    .unwrap();
    let mut dba = admin.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {schema}.hapnd_key_usage IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *dba)
    .await
    .unwrap();
    let auth = Authenticator::new(store.clone());
    let principal = auth
        .authenticate_key(created.key.expose_secret())
        .await
        .expect("authenticated while the usage table is locked");
    assert_eq!(principal.key_id(), &created.record.id);
    let waited = hapnd_auth::KeyStore::lookup(&store, &created.key.hash()).await;
    assert!(waited.is_err(), "lookup reads the usage table: {waited:?}");
    dba.rollback().await.unwrap();
    assert!(
        hapnd_auth::KeyStore::lookup(&store, &created.key.hash())
            .await
            .unwrap()
            .is_some()
    );
}

/// A policy column no write path would have written fails closed (503 for that key),
/// never read as "no policy", which would be full access; a hand-written UPDATE of a
/// policy column is logged as a change, so a cached principal does not keep the old policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_by_hand_reaches_the_cache_and_a_corrupt_one_fails_closed() {
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (schema_name, options) = schema(&url, &admin).await;
    let store = store_on(options).await;
    let auth = Authenticator::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .build();
    let _feed = store.listen(auth.invalidator());
    healthy(&auth, Duration::from_secs(3)).await;
    let created = auth
        .create_key(NewKey::new(unique("pol"), Environment::Live, "ci").scope("events:read"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = auth
        .authenticate_key(created.key.expose_secret())
        .await
        .unwrap();
    assert!(!p.has_scope("events:write"));
    exec(
        &admin,
        format!(
            "UPDATE {schema_name}.hapnd_api_keys SET scopes = 'events:read events:write' \
             WHERE id = '{}'",
            created.record.id
        ),
    )
    .await;
    eventually(Duration::from_secs(1), || async {
        auth.authenticate_key(created.key.expose_secret())
            .await
            .is_ok_and(|p| p.has_scope("events:write"))
    })
    .await
    .expect("a hand-written scope change reaches the cache within 1 s");

    for (column, value) in [
        ("scopes", "Events:WRITE"),
        ("metadata", "[1]"),
        ("rate_limit", "lots"),
    ] {
        let created = auth
            .create_key(NewKey::new(unique("pol"), Environment::Live, "ci"))
            .await
            .unwrap();
        exec(
            &admin,
            format!(
                "UPDATE {schema_name}.hapnd_api_keys SET {column} = '{value}' WHERE id = '{}'",
                created.record.id
            ),
        )
        .await;
        let err = eventually(Duration::from_secs(1), || async {
            auth.authenticate_key(created.key.expose_secret())
                .await
                .is_err()
        })
        .await;
        assert!(err.is_some(), "{column}");
        let err = auth
            .authenticate_key(created.key.expose_secret())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AuthErrorKind::Unavailable, "{column}");
        assert_eq!(
            err.store_error().map(|e| e.kind()),
            Some(StoreErrorKind::Invalid)
        );
    }
}

/// A hand-written revocation is in the trail as the actor `database`, even on a pooled
/// connection the store just used with an actor: the store's settings are
/// transaction-local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_sql_appears_in_the_audit_trail_as_database() {
    use hapnd_auth::{Actor, ActorKind, AuditTrail, EventQuery, KeyEventKind, KeyStore};
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    // One connection: the hand-written SQL below runs on the one the store used.
    let store = PostgresKeyStore::builder()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let actor = Actor::admin("ops").with_client("192.0.2.1".parse().unwrap());
    let created = store
        .create_as(NewKey::new("acme", Environment::Live, "ci"), &actor)
        .await
        .unwrap();
    let second = store
        .create_as(NewKey::new("acme", Environment::Live, "ci-2"), &actor)
        .await
        .unwrap();
    store
        .revoke_as(&second.record.id, std::time::SystemTime::now(), &actor)
        .await
        .unwrap();
    sqlx::query("UPDATE hapnd_api_keys SET revoked_at = now() WHERE id = $1")
        .bind(created.record.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE hapnd_api_keys SET expires_at = now() + interval '1 day' WHERE id = $1")
        .bind(created.record.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    let events = store
        .events(&EventQuery::key(&created.record.id, 10))
        .await
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            KeyEventKind::ExpiryScheduled,
            KeyEventKind::Revoked,
            KeyEventKind::Created
        ]
    );
    for e in &events[..2] {
        assert_eq!(e.actor_kind, ActorKind::Database);
        assert_eq!(e.actor, "database");
        assert_eq!(e.client, None);
    }
    assert_eq!(events[2].actor, "ops");
    assert_eq!(events[2].client.as_deref(), Some("192.0.2.1"));
    let other = store
        .events(&EventQuery::key(&second.record.id, 10))
        .await
        .unwrap();
    assert_eq!(other[0].kind, KeyEventKind::Revoked);
    assert_eq!(other[0].actor_kind, ActorKind::Admin);
}

/// Pruning never holds a revocation: a prune batch left uncommitted (the longest a prune
/// could hold its locks) does not delay a revocation of a key whose events it is deleting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_prune_does_not_hold_a_revocation() {
    use hapnd_auth::{Actor, AuditTrail, EventQuery, KeyStore};
    let Some(url) = database_url() else { return };
    let admin = admin(&url).await;
    let (_, options) = schema(&url, &admin).await;
    let store = impatient_store(options.clone()).await;
    let created = store
        .create(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    let mut pruner = sqlx::PgConnection::connect_with(&options).await.unwrap();
    use sqlx::Connection as _;
    let mut tx = pruner.begin().await.unwrap();
    let deleted = sqlx::query(
        "DELETE FROM hapnd_key_events WHERE seq IN \
         (SELECT seq FROM hapnd_key_events WHERE at < now() + interval '1 hour' ORDER BY seq LIMIT 500)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(deleted.rows_affected(), 1, "the key's creation event");
    // The store gives up after 500 ms: a revocation waiting on the prune would fail here.
    let revoked = store
        .revoke_as(
            &created.record.id,
            std::time::SystemTime::now(),
            &Actor::admin("ops"),
        )
        .await
        .unwrap();
    assert!(revoked.is_revoked());
    tx.rollback().await.unwrap();
    let events = store
        .events(&EventQuery::key(&created.record.id, 10))
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
}

/// The count `serve` runs for its expiring-keys gauge can walk the partial index
/// `hapnd_api_keys_expiring` (sequential scans off, so the tiny test table does not make the
/// planner prefer one anyway).
#[tokio::test]
async fn the_expiring_count_can_walk_its_partial_index() {
    let Some(fixture) = pg().await else {
        return;
    };
    let mut tx = fixture.store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN SELECT COUNT(*) FROM hapnd_api_keys WHERE revoked_at IS NULL \
         AND expires_at IS NOT NULL AND expires_at > now() AND expires_at <= now() + interval '7 days'",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    assert!(
        plan.iter().any(|l| l.contains("hapnd_api_keys_expiring")),
        "{plan:?}"
    );
}

/// The upgrade path docs/key-stores.md gives for a large table: build the expiring-keys index
/// by hand with `CREATE INDEX CONCURRENTLY` (which does not block revocations), and
/// migration 7 then finds it and changes nothing.
#[tokio::test]
async fn migration_7_accepts_an_expiring_index_built_concurrently_beforehand() {
    use hapnd_auth::{ExpiringKeys as _, KeyStore as _};
    let Some(url) = database_url() else {
        return;
    };
    let admin = admin(&url).await;
    let (schema, options) = schema(&url, &admin).await;
    let store = store_on(options.clone()).await;
    let created = store
        .create(
            NewKey::new("upgrade", Environment::Live, "ci")
                .expires_at(std::time::SystemTime::now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    // As a database migrated to 6 only: no index, no record of migration 7.
    exec(
        &admin,
        format!("DROP INDEX {schema}.hapnd_api_keys_expiring"),
    )
    .await;
    exec(
        &admin,
        format!("DELETE FROM {schema}._hapnd_auth_migrations WHERE version = 7"),
    )
    .await;
    store.pool().close().await;
    exec(
        &admin,
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS hapnd_api_keys_expiring \
             ON {schema}.hapnd_api_keys (expires_at, id) \
             WHERE revoked_at IS NULL AND expires_at IS NOT NULL"
        ),
    )
    .await;
    let store = store_on(options).await;
    let now = std::time::SystemTime::now();
    assert_eq!(
        store
            .count_expiring(now, now + Duration::from_secs(7200))
            .await
            .unwrap(),
        1
    );
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _hapnd_auth_migrations WHERE version = 7 AND success",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(applied, 1);
    assert!(store.get(&created.record.id).await.unwrap().is_some());
}
