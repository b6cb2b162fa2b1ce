//! [`PostgresKeyStore`]: keys in PostgreSQL, with revocations pushed to every instance.
//!
//! See [`PostgresKeyStore`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode};

use crate::cache::Invalidator;
use crate::key::KeyHash;
use crate::metrics::Source;

use super::audit_sql::{self, Bind, raw_event};
use super::sql::{
    self, Backoff, ChangeFeed, FeedCounters, RawRecord, bounded, raw_record, to_millis,
};
use super::{
    Actor, ActorKind, AuditTrail, CreatedKey, EventQuery, ExpiringKeys, ExpiringQuery, ExpiryBind,
    KeyEvent, KeyId, KeyPolicy, KeyRecord, KeyStore, LastUsed, ListPage, NewKey, Roll, Rotation,
    StoreError, rolled_expiry,
};
use crate::key::ApiKey;

/// The `LISTEN`/`NOTIFY` channel revocations travel on.
pub const NOTIFY_CHANNEL: &str = "hapnd_auth_keys";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "api keys",
        include_str!("../../migrations/postgres/0001_api_keys.sql"),
    ),
    (
        2,
        "notify trigger",
        include_str!("../../migrations/postgres/0002_notify_trigger.sql"),
    ),
    (
        3,
        "fleet",
        include_str!("../../migrations/postgres/0003_fleet.sql"),
    ),
    (
        4,
        "key policy",
        include_str!("../../migrations/postgres/0004_key_policy.sql"),
    ),
    (
        5,
        "audit",
        include_str!("../../migrations/postgres/0005_audit.sql"),
    ),
    (
        6,
        "admin credentials",
        include_str!("../../migrations/postgres/0006_admin_credentials.sql"),
    ),
    (
        7,
        "expiring",
        include_str!("../../migrations/postgres/0007_expiring.sql"),
    ),
];

/// The most change-log rows one catch-up reads; past it the listener flushes instead.
const MAX_CHANGES_READ: i64 = 1000;

/// `$col` (a `timestamptz`) as integer milliseconds: exact, and no date-time crate needed.
/// `'infinity'` (which migration 3 forbids, but older rows may hold) reads as a time some
/// 270,000 years away instead of failing every read of the row.
macro_rules! millis {
    ($col:literal) => {
        concat!(
            "CASE WHEN ",
            $col,
            " IS NULL THEN NULL WHEN isfinite(",
            $col,
            ") THEN (extract(epoch FROM ",
            $col,
            ") * 1000)::int8 WHEN ",
            $col,
            " > 'epoch' THEN 8640000000000000 ELSE -8640000000000000 END"
        )
    };
}

/// The record columns of `hapnd_api_keys AS k`. Last use is kept in `hapnd_key_usage`;
/// `k.last_used_at` is still written by instances of older versions.
macro_rules! columns {
    () => {
        concat!(
            key_columns!(),
            millis!(
                "GREATEST(k.last_used_at, \
                 (SELECT u.last_used_at FROM hapnd_key_usage AS u WHERE u.id = k.id))"
            ),
            policy_columns!()
        )
    };
}

/// The policy columns, after the last-used time.
macro_rules! policy_columns {
    () => {
        ", k.scopes, k.metadata, k.rate_limit"
    };
}

/// Every column but the last-used time, which lives in `hapnd_key_usage`, and a trailing
/// comma: the request path's lookup selects these and `NULL`.
macro_rules! key_columns {
    () => {
        concat!(
            "k.id, k.tenant, k.environment, k.name, k.key_hash, k.hint, ",
            millis!("k.created_at"),
            ", ",
            millis!("k.revoked_at"),
            ", ",
            millis!("k.expires_at"),
            ", "
        )
    };
}

macro_rules! select {
    ($where:literal) => {
        concat!("SELECT ", columns!(), " FROM hapnd_api_keys AS k ", $where)
    };
}

/// `$n` milliseconds as a `timestamptz`, in integer arithmetic (no float rounding).
macro_rules! ts {
    ($n:literal) => {
        concat!(
            "(timestamptz 'epoch' + $",
            $n,
            "::int8 * interval '1 millisecond')"
        )
    };
}

/// Keys in PostgreSQL. Cheap to clone: clones share one connection pool.
///
/// Every call is bounded by [`PostgresKeyStoreBuilder::query_timeout`] (default 2 s) on the
/// client, pool wait included, and by the same `statement_timeout` on the server.
///
/// ```no_run
/// use hapnd_auth::{Authenticator, Environment, KeyStore, NewKey, PostgresKeyStore};
///
/// # async fn run() -> Result<(), hapnd_auth::StoreError> {
/// let store = PostgresKeyStore::connect("postgres://hapnd@db.internal/hapnd").await?;
/// let auth = Authenticator::new(store.clone());
/// // Revocations committed by any instance reach this one's cache within milliseconds.
/// let _feed = store.listen(auth.invalidator());
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await?;
/// # Ok(()) }
/// ```
///
/// # The change feed
/// Every statement that changes keys (the store's own, and any hand-written SQL) gets the
/// next generation in the change log `hapnd_key_changes`, written by a trigger in the same
/// transaction, and a `NOTIFY hapnd_auth_keys` wakes the listeners: after the commit for the
/// store's own writes, so that a full `NOTIFY` queue can never fail a revocation; inside the
/// transaction, unless the queue is half full, for everyone else's. A statement that
/// changes more than 64 keys logs and notifies one flush.
///
/// [`PostgresKeyStore::listen`] keeps a `LISTEN` connection open. A notification's payload,
/// the changed key's hash, is invalidated the moment it arrives; a read of the change log
/// from the last generation applied follows (at most one per
/// [`ListenOptions::notification_read_delay`], however many notifications arrive) and
/// invalidates every hash it names, payload or not. Payloads can only make an instance
/// forget more (any role that can connect may `NOTIFY`): only the log advances what has been
/// applied. Notifications sent while the listener is disconnected are lost for good, and a
/// half-open connection is silent. So every [`ListenOptions::heartbeat_interval`] the listener also reads the change
/// log unprompted, on the same connection: a missed notification is caught on the next
/// tick, and until a read has succeeded within [`ListenOptions::heartbeat_timeout`] the
/// channel is reported lost and the cache is not trusted: every request reads the store.
/// The same holds from `listen` until the first read succeeds. An idle instance costs the
/// server one index probe per interval and sends no notification. `LISTEN` needs a direct
/// session on the primary, not PgBouncer in transaction mode and not a replica.
///
/// Bulk changes made with the triggers disabled can flush every instance with
/// `SELECT hapnd_auth_flush()`. A bare `NOTIFY hapnd_auth_keys, 'flush'` only makes the
/// listeners read the log.
#[derive(Clone)]
pub struct PostgresKeyStore {
    pool: PgPool,
    options: PgConnectOptions,
    query_timeout: Duration,
    usage_resolution: Duration,
    usage_turns: bool,
}

/// Configures a [`PostgresKeyStore`]. Made by [`PostgresKeyStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PostgresKeyStoreBuilder {
    max_connections: u32,
    query_timeout: Duration,
    usage_resolution: Duration,
    usage_turns: bool,
}

impl PostgresKeyStoreBuilder {
    /// The most pooled connections (default 10). The listener uses one more of its own.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The longest one store call may take, connecting and waiting for a pooled connection
    /// included (default 2 s). Past it the call fails with
    /// [`StoreErrorKind::Timeout`](crate::StoreErrorKind::Timeout) or
    /// [`Unavailable`](crate::StoreErrorKind::Unavailable). Also the server-side
    /// `statement_timeout`.
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// How far a key's `last_used_at` must move before a usage batch writes it (default
    /// [`DEFAULT_USAGE_RESOLUTION`](PostgresKeyStore::DEFAULT_USAGE_RESOLUTION), one
    /// minute): a use less than this after the stored one is left out, so `last_used_at`
    /// may be up to this much older than the key's latest use. `Duration::ZERO` writes
    /// every newer time.
    ///
    /// Many instances see the same keys in use, and each writes its own batch: with every
    /// newer time written, every instance's batch rewrote every row (a new row version,
    /// index entries, WAL), so 100 instances flushing at once kept the server's cores busy
    /// for seconds and a revocation meanwhile waited for one (up to 638 ms measured). With
    /// a resolution, the first batch of the minute writes and the others only read.
    /// At most a year.
    pub fn usage_resolution(mut self, resolution: Duration) -> Self {
        self.usage_resolution = resolution.min(Duration::from_secs(365 * 24 * 3600));
        self
    }

    /// Whether usage writes take turns on [`PostgresKeyStore::USAGE_LOCK`] (default
    /// true). Off only for tests of what concurrent writes do to each other.
    #[doc(hidden)]
    pub fn usage_turns(mut self, turns: bool) -> Self {
        self.usage_turns = turns;
        self
    }

    /// Connects to the database at `url` (`postgres://user:password@host/db`) and brings
    /// its schema up to date. TLS: see [`connect_with`](Self::connect_with); in a URL,
    /// `?sslmode=verify-full&sslrootcert=/path/to/ca.pem`.
    pub async fn connect(self, url: &str) -> Result<PostgresKeyStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(sql::map_error)?;
        self.connect_with(options).await
    }

    /// Connects with `options` and brings the schema up to date. `statement_timeout` is
    /// added to `options`, and `application_name` (`hapnd-auth`) if they set none.
    ///
    /// # TLS
    /// To any host but a loopback address, `localhost` or a Unix socket, the connection is
    /// encrypted and the server's certificate verified by default: `sslmode` `prefer` (the
    /// default) and `allow`, which would fall back to cleartext without a word, become
    /// `verify-full` (the certificate must chain to a trusted root and name the host). Trusted
    /// roots are the Mozilla set (webpki-roots) plus `sslrootcert`, for a private CA.
    /// `sslmode=require` (encrypted, certificate not checked) and `verify-ca` are kept as
    /// asked; cleartext needs an explicit `sslmode=disable`. To loopback the default stays
    /// `prefer` (TLS when the server offers it, unverified).
    ///
    /// # Migrations
    /// Migrations take sqlx's advisory lock, which any role that can connect may hold too.
    /// So the applied versions are read first, and the lock is taken only when one of ours
    /// is missing: a started, up-to-date database never waits for it.
    pub async fn connect_with(
        self,
        options: PgConnectOptions,
    ) -> Result<PostgresKeyStore, StoreError> {
        let mut options = secure(options).options([
            (
                "statement_timeout",
                format!("{}ms", self.query_timeout.as_millis().max(1)),
            ),
            // The store notifies after its own commits (see `revoke`); the trigger's
            // in-transaction notification is for everyone else's SQL.
            ("hapnd_auth.notify", "off".to_owned()),
        ]);
        if options.get_application_name().is_none() {
            options = options.application_name("hapnd-auth");
        }
        let pool = bounded(
            self.query_timeout,
            PgPoolOptions::new()
                .max_connections(self.max_connections)
                .acquire_timeout(self.query_timeout)
                // sqlx pings every connection it hands out by default: a round trip
                // before every key lookup (it also pings each one it takes back, off the
                // caller's path; that stays). Only a connection idle for a while is pinged
                // (the pattern sqlx's docs give; HikariCP skips its check within 500 ms).
                // A lookup or revocation that meets a connection the server dropped within
                // that second is sent again (`fetch_optional`); other writes fail once
                // (README, "Pooled connections"). A failed ping here is logged by sqlx at
                // WARN (its own ping: INFO).
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IF_IDLE_FOR {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(options.clone()),
        )
        .await?;
        let migrator = sql::migrator(MIGRATIONS);
        if !bounded(self.query_timeout, up_to_date(&pool, &migrator)).await? {
            // Other instances starting at once wait their turn on the lock.
            bounded(self.query_timeout * 5, async {
                migrator
                    .run(&pool)
                    .await
                    .map_err(|e| sqlx::Error::Migrate(Box::new(e)))
            })
            .await?;
        }
        Ok(PostgresKeyStore {
            pool,
            options,
            query_timeout: self.query_timeout,
            usage_resolution: self.usage_resolution,
            usage_turns: self.usage_turns,
        })
    }
}

/// The transport policy of [`PostgresKeyStoreBuilder::connect_with`]: verified TLS to any
/// host that is not this machine, unless the caller asked otherwise.
fn secure(options: PgConnectOptions) -> PgConnectOptions {
    if is_local(&options) {
        return options;
    }
    match options.get_ssl_mode() {
        PgSslMode::Prefer | PgSslMode::Allow => options.ssl_mode(PgSslMode::VerifyFull),
        _ => options,
    }
}

fn is_local(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether every one of our migrations is applied, with the checksum we embed. Takes no lock.
async fn up_to_date(
    pool: &PgPool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<bool, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(sql::MIGRATIONS_TABLE)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(false);
    }
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _hapnd_auth_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    Ok(migrator.iter().all(|m| {
        applied
            .iter()
            .any(|(version, checksum)| *version == m.version && *checksum == *m.checksum)
    }))
}

/// How [`PostgresKeyStore::listen_with`] watches its channel.
#[derive(Clone, Debug)]
#[must_use]
pub struct ListenOptions {
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    max_backoff: Duration,
    read_delay: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            max_backoff: Duration::from_secs(5),
            read_delay: Duration::from_millis(100),
        }
    }
}

impl ListenOptions {
    /// The defaults: a heartbeat (a read of the change log) every second that must succeed
    /// within 3 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// How often the listener reads the change log unprompted (default 1 s): the bound on
    /// how late a change whose notification was lost is applied.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every;
        self
    }

    /// How long the listener may go without a successful read of the change log before it
    /// stops trusting the channel and reconnects (default 3 s). The bound on how long a silently
    /// dead connection can leave a revoked key cached.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// The longest wait between reconnection attempts (default 5 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// How long after a notification the listener reads the change log (default 100 ms).
    /// Every notification that arrives meanwhile is covered by that one read, so an
    /// instance reads the log at most once per `delay` however many notifications arrive.
    ///
    /// Revocations do not wait for it: the key hash a notification carries is invalidated
    /// the moment the notification arrives. The read applies what no payload named: bulk
    /// changes (logged as one flush), changes whose notification was lost or never sent.
    /// So `delay` bounds how late those are applied after any notification (the heartbeat
    /// bounds it when none comes), not how late a revocation is. The read invalidates again
    /// the hashes the payloads named (a payload cannot vouch for the log), which sends
    /// lookups of those keys still in flight back to the store: a delay longer than most
    /// lookups (20 ms measured worse than 100 ms at 100 instances) keeps that second
    /// invalidation clear of the re-reads the first one caused.
    pub fn notification_read_delay(mut self, delay: Duration) -> Self {
        self.read_delay = delay;
        self
    }
}

impl PostgresKeyStore {
    /// Connects to `url` with the default settings. See [`PostgresKeyStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url).await
    }

    /// The advisory lock that usage writes take turns on, one instance at a time:
    /// `pg_advisory_xact_lock(USAGE_LOCK, hashtext(current_schema()))` ("hapn" in ASCII,
    /// and the store's schema). Nothing else in this crate takes it; other code on the
    /// same database should not either.
    pub const USAGE_LOCK: i32 = 0x6861_706e;

    /// The default [`usage_resolution`](PostgresKeyStoreBuilder::usage_resolution): one
    /// minute.
    pub const DEFAULT_USAGE_RESOLUTION: Duration = Duration::from_secs(60);

    /// Starts configuring a store.
    pub fn builder() -> PostgresKeyStoreBuilder {
        PostgresKeyStoreBuilder {
            max_connections: 10,
            query_timeout: Duration::from_secs(2),
            usage_resolution: Self::DEFAULT_USAGE_RESOLUTION,
            usage_turns: true,
        }
    }

    /// The connection pool, for health checks and administration.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the change feed with the default [`ListenOptions`]: revocations committed by
    /// any instance invalidate `invalidator`'s cache. See [the change feed](PostgresKeyStore#the-change-feed).
    pub fn listen(&self, invalidator: Invalidator) -> ChangeFeed {
        self.listen_with(invalidator, ListenOptions::default())
    }

    /// Starts the change feed. Its connection's `application_name` is the store's with
    /// `:listener` appended. The feed stops when the handle is dropped. Must be called
    /// within a tokio runtime.
    pub fn listen_with(&self, invalidator: Invalidator, options: ListenOptions) -> ChangeFeed {
        let app = self.options.get_application_name().unwrap_or("hapnd-auth");
        let listener_options = self
            .options
            .clone()
            .application_name(&format!("{app}:listener"));
        let query_timeout = self.query_timeout;
        ChangeFeed::spawn(
            invalidator.with_source(Source::PostgresNotify),
            move |invalidator, counters| {
                let feed = Feed {
                    listener_options,
                    query_timeout,
                    options,
                    counters,
                };
                feed.run(invalidator)
            },
        )
    }

    /// `pg_notification_queue_usage()`: the fraction (0 to 1) of PostgreSQL's `NOTIFY`
    /// queue in use, for health checks and metrics.
    ///
    /// One session that `LISTEN`s and stops reading (idle in a transaction, or a client that
    /// stopped polling its socket) holds every later notification in the queue, for every
    /// channel of the cluster. Near 0 is normal. Alert well before 0.5: from there the
    /// change trigger stops notifying (a full queue fails the notifying transaction), and
    /// instances learn of changes from the change log on their next heartbeat instead of
    /// within milliseconds. Find the stalled session with
    /// `SELECT pid, usename, application_name, state, xact_start FROM pg_stat_activity
    /// WHERE state LIKE 'idle in transaction%'`.
    pub async fn notification_queue_usage(&self) -> Result<f64, StoreError> {
        bounded(
            self.query_timeout,
            sqlx::query_scalar("SELECT pg_notification_queue_usage()").fetch_one(&self.pool),
        )
        .await
    }

    /// After a committed change, wakes the listeners at once. Best effort: a notification
    /// that cannot be sent (queue full, connection lost) delays other instances until their
    /// next heartbeat reads the change log, and never undoes or fails the change.
    async fn notify(&self, hash: &KeyHash) {
        let sent = bounded(
            self.query_timeout,
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(hash.to_hex())
                .execute(&self.pool),
        )
        .await;
        if let Err(error) = sent {
            tracing::warn!(target: "hapnd_auth", %error, "change committed but not notified; other instances see it at their next heartbeat");
        }
    }

    /// At most one row of `query`, within the query timeout. A query that meets a
    /// connection the server has dropped is sent once more, on another connection, within
    /// the same bound: connections used within [`PING_IF_IDLE_FOR`] are not pinged before
    /// use, so after a failover or a terminated backend the first query on each of them
    /// would otherwise fail. Every caller's query is idempotent (both lookups, `get`, and
    /// the revocation's `COALESCE`), so sending it twice is safe even if the first one ran.
    async fn fetch_optional(
        &self,
        query: impl Fn() -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = bounded(self.query_timeout, async {
            match query().fetch_optional(&self.pool).await {
                Err(e) if connection_lost(&e) => query().fetch_optional(&self.pool).await,
                result => result,
            }
        })
        .await?;
        row.map(|row| decode(&row)).transpose()
    }
}

fn insert_row(
    record: &KeyRecord,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (scopes, metadata, rate_limit) = sql::policy_columns(record);
    sqlx::query(concat!(
        "INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, ",
        "created_at, revoked_at, expires_at, last_used_at, scopes, metadata, rate_limit) ",
        "VALUES ($1, $2, $3, $4, $5, $6, ",
        ts!(7),
        ", ",
        ts!(8),
        ", ",
        ts!(9),
        ", ",
        ts!(10),
        ", $11, $12, $13)"
    ))
    .bind(record.id.as_str().to_owned())
    .bind(record.tenant.clone())
    .bind(record.environment.as_str())
    .bind(record.name.clone())
    .bind(record.hash.as_bytes().to_vec())
    .bind(record.hint.clone())
    .bind(to_millis(record.created_at))
    .bind(record.revoked_at.map(to_millis))
    .bind(record.expires_at.map(to_millis))
    .bind(record.last_used_at.map(to_millis))
    .bind(scopes)
    .bind(metadata)
    .bind(rate_limit)
}

/// Tells the audit trigger who is acting, for the rest of this transaction only
/// (`set_config(..., true)`; see `migrations/postgres/0005_audit.sql`).
async fn set_actor(conn: &mut sqlx::PgConnection, actor: &Actor) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('hapnd.actor_kind', $1, true), set_config('hapnd.actor', $2, true), \
         set_config('hapnd.client', $3, true), set_config('hapnd.detail', $4, true)",
    )
    .bind(actor.kind.as_str())
    .bind(actor.label.clone())
    .bind(actor.client.map(|c| c.to_string()).unwrap_or_default())
    .bind(actor.detail.clone().unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
}

impl PostgresKeyStore {
    async fn insert_audited(&self, record: &KeyRecord, actor: &Actor) -> Result<(), StoreError> {
        record.validate()?;
        bounded(self.query_timeout, async {
            let mut tx = self.pool.begin().await?;
            set_actor(&mut tx, actor).await?;
            insert_row(record).execute(&mut *tx).await?;
            tx.commit().await
        })
        .await?;
        // Instances that cached the hash as unknown forget that.
        self.notify(&record.hash).await;
        Ok(())
    }
}

impl ExpiringKeys for PostgresKeyStore {
    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        let (filter, binds) = super::expiring_filter(
            query,
            "k.",
            |n| format!("(timestamptz 'epoch' + ${n}::int8 * interval '1 millisecond')"),
            |n| format!("${n}"),
        );
        let statement = format!("{}WHERE {filter}", select!(""));
        let mut q = sqlx::query(AssertSqlSafe(statement));
        for bind in binds {
            q = match bind {
                ExpiryBind::Text(t) => q.bind(t),
                ExpiryBind::Millis(i) => q.bind(i),
            };
        }
        let rows = bounded(self.query_timeout, q.fetch_all(&self.pool)).await?;
        rows.iter().map(decode).collect()
    }

    async fn count_expiring(&self, from: SystemTime, until: SystemTime) -> Result<u64, StoreError> {
        // The predicate of the partial index `hapnd_api_keys_expiring`: a range scan of it.
        let query = sqlx::query_scalar::<_, i64>(concat!(
            "SELECT COUNT(*) FROM hapnd_api_keys WHERE revoked_at IS NULL ",
            "AND expires_at IS NOT NULL AND expires_at > ",
            ts!(1),
            " AND expires_at <= ",
            ts!(2)
        ))
        .bind(to_millis(from))
        .bind(to_millis(until));
        let count = bounded(self.query_timeout, query.fetch_one(&self.pool)).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl AuditTrail for PostgresKeyStore {
    async fn events(&self, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        let (statement, binds) = audit_sql::events_statement(
            concat!(
                "SELECT seq, ",
                millis!("at"),
                ", tenant, key_id, event, actor_kind, actor, client, replacement_id, ",
                millis!("expires_at"),
                ", detail FROM hapnd_key_events"
            ),
            query,
            |n| format!("${n}"),
        );
        let mut q = sqlx::query(AssertSqlSafe(statement));
        for bind in binds {
            q = match bind {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = bounded(self.query_timeout, q.fetch_all(&self.pool)).await?;
        rows.iter()
            .map(|row| raw_event!(row).map_err(sql::map_error)?.into_event())
            .collect()
    }

    async fn prune_events_batch(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        // Only the event table: no key's row is locked, so no revocation waits for a prune.
        let query = sqlx::query(concat!(
            "DELETE FROM hapnd_key_events WHERE seq IN ",
            "(SELECT seq FROM hapnd_key_events WHERE at < ",
            ts!(1),
            " ORDER BY seq LIMIT $2)"
        ))
        .bind(to_millis(before))
        .bind(i64::from(batch));
        let done = bounded(self.query_timeout, query.execute(&self.pool)).await?;
        Ok(done.rows_affected())
    }
}

/// Whether `error` says the connection itself is gone: its socket failed, or the server
/// ended the session (`admin_shutdown`, `crash_shutdown`: a terminated backend, a restart).
/// Not a timeout, a refused login or a failing statement, which a second try would meet
/// again.
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P01" | "57P02")),
        _ => false,
    }
}

fn decode(row: &PgRow) -> Result<KeyRecord, StoreError> {
    let raw: RawRecord = raw_record!(row).map_err(sql::map_error)?;
    raw.into_record()
}

impl fmt::Debug for PostgresKeyStore {
    // Never the password: host, port and database only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKeyStore")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .field("connections", &self.pool.size())
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

impl KeyStore for PostgresKeyStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.fetch_optional(|| {
            sqlx::query(select!("WHERE key_hash = $1")).bind(hash.as_bytes().to_vec())
        })
        .await
    }

    /// One index probe and one heap page: the usage table is not read (`last_used_at` is
    /// `None`), which would add a second probe and page (on a large table, mostly outside
    /// `shared_buffers`) and wait for any lock on that table.
    async fn lookup_for_request(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.fetch_optional(|| {
            sqlx::query(concat!(
                "SELECT ",
                key_columns!(),
                "NULL::int8",
                policy_columns!(),
                " FROM hapnd_api_keys AS k WHERE key_hash = $1"
            ))
            .bind(hash.as_bytes().to_vec())
        })
        .await
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.insert_audited(record, &Actor::application()).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.fetch_optional(|| sqlx::query(select!("WHERE id = $1")).bind(id.as_str().to_owned()))
            .await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let query = sqlx::query(select!("WHERE tenant = $1 ORDER BY created_at, id"))
            .bind(tenant.to_owned());
        let rows = bounded(self.query_timeout, query.fetch_all(&self.pool)).await?;
        rows.iter().map(decode).collect()
    }

    async fn list_page(&self, page: &ListPage) -> Result<Vec<KeyRecord>, StoreError> {
        // One statement per shape, so each can walk the (tenant, created_at) index.
        let limit = i64::from(page.limit);
        let query = match (&page.tenant, &page.after) {
            (Some(tenant), None) => sqlx::query(select!(
                "WHERE tenant = $1 ORDER BY created_at, id LIMIT $2"
            ))
            .bind(tenant.clone())
            .bind(limit),
            (Some(tenant), Some((_, at, id))) => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM hapnd_api_keys AS k WHERE tenant = $1 AND (created_at, id) > (",
                ts!(2),
                ", $3) ORDER BY created_at, id LIMIT $4"
            ))
            .bind(tenant.clone())
            .bind(to_millis(*at))
            .bind(id.as_str().to_owned())
            .bind(limit),
            (None, None) => {
                sqlx::query(select!("ORDER BY tenant, created_at, id LIMIT $1")).bind(limit)
            }
            (None, Some((tenant, at, id))) => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM hapnd_api_keys AS k WHERE (tenant, created_at, id) > ($1, ",
                ts!(2),
                ", $3) ORDER BY tenant, created_at, id LIMIT $4"
            ))
            .bind(tenant.clone())
            .bind(to_millis(*at))
            .bind(id.as_str().to_owned())
            .bind(limit),
        };
        let rows = bounded(self.query_timeout, query.fetch_all(&self.pool)).await?;
        rows.iter().map(decode).collect()
    }

    async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
        self.revoke_as(id, at, &Actor::application()).await
    }

    async fn rotate(&self, id: &KeyId) -> Result<CreatedKey, StoreError> {
        Ok(self
            .rotate_as(id, Roll::new(), &Actor::application())
            .await?
            .replacement)
    }

    async fn create_as(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError> {
        new.validate()?;
        let key = ApiKey::generate(new.environment);
        let record = KeyRecord::for_key(&key, new, SystemTime::now());
        self.insert_audited(&record, actor).await?;
        Ok(CreatedKey { key, record })
    }

    async fn revoke_as(
        &self,
        id: &KeyId,
        at: SystemTime,
        actor: &Actor,
    ) -> Result<KeyRecord, StoreError> {
        // One transaction: the revocation, its change-log entry and its audit event (both
        // written by triggers) commit together, and nothing in it can fail because of the
        // NOTIFY queue. The notification follows the commit. COALESCE keeps the first
        // revocation time: revoking twice changes nothing, so sending it again after a lost
        // connection is safe.
        let attempt = || async {
            let mut tx = self.pool.begin().await?;
            set_actor(&mut tx, actor).await?;
            if actor.kind == ActorKind::SecretScanning {
                sqlx::query(
                    "INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, \
                     client, detail) SELECT tenant, id, 'reported_leaked', $2, $3, $4, $5 \
                     FROM hapnd_api_keys WHERE id = $1",
                )
                .bind(id.as_str().to_owned())
                .bind(actor.kind.as_str())
                .bind(actor.label.clone())
                .bind(actor.client.map(|c| c.to_string()))
                .bind(actor.detail.clone())
                .execute(&mut *tx)
                .await?;
            }
            let row = sqlx::query(concat!(
                "UPDATE hapnd_api_keys AS k SET revoked_at = COALESCE(k.revoked_at, ",
                ts!(2),
                ") WHERE k.id = $1 RETURNING ",
                columns!()
            ))
            .bind(id.as_str().to_owned())
            .bind(to_millis(at))
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        };
        let row = bounded(self.query_timeout, async {
            match attempt().await {
                Err(e) if connection_lost(&e) => attempt().await,
                result => result,
            }
        })
        .await?;
        let record = row
            .map(|row| decode(&row))
            .transpose()?
            .ok_or_else(|| StoreError::not_found(id))?;
        self.notify(&record.hash).await;
        Ok(record)
    }

    async fn rotate_as(
        &self,
        id: &KeyId,
        roll: Roll,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        let old = self
            .get(id)
            .await?
            .ok_or_else(|| StoreError::not_found(id))?;
        let new = NewKey::new(old.tenant.clone(), old.environment, old.name.clone());
        let mut new = KeyPolicy::apply(roll.replacement_policy.clone(), &old, new);
        new.expires_at = roll.replacement_expires_at;
        let key = ApiKey::generate(new.environment);
        let record = KeyRecord::for_key(&key, new, SystemTime::now());
        record.validate()?;
        let row = bounded(self.query_timeout, async {
            let mut tx = self.pool.begin().await?;
            set_actor(&mut tx, actor).await?;
            insert_row(&record).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, client, \
                 replacement_id) VALUES ($1, $2, 'rotated', $3, $4, $5, $6)",
            )
            .bind(old.tenant.clone())
            .bind(old.id.as_str().to_owned())
            .bind(actor.kind.as_str())
            .bind(actor.label.clone())
            .bind(actor.client.map(|c| c.to_string()))
            .bind(record.id.as_str().to_owned())
            .execute(&mut *tx)
            .await?;
            let row = match roll.old_expires_at {
                Some(asked) => {
                    // Locks the old key's row, so the expiry is computed from what is stored.
                    let current: Option<Option<i64>> = sqlx::query_scalar(concat!(
                        "SELECT ",
                        millis!("expires_at"),
                        " FROM hapnd_api_keys WHERE id = $1 FOR UPDATE"
                    ))
                    .bind(id.as_str().to_owned())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let current = current.flatten().map(sql::from_millis);
                    sqlx::query(concat!(
                        "UPDATE hapnd_api_keys AS k SET expires_at = ",
                        ts!(2),
                        " WHERE k.id = $1 RETURNING ",
                        columns!()
                    ))
                    .bind(id.as_str().to_owned())
                    .bind(to_millis(rolled_expiry(current, asked)))
                    .fetch_optional(&mut *tx)
                    .await?
                }
                None => None,
            };
            tx.commit().await?;
            Ok(row)
        })
        .await?;
        self.notify(&record.hash).await;
        let old = match row {
            Some(row) => {
                let updated = decode(&row)?;
                self.notify(&updated.hash).await;
                updated
            }
            None => old,
        };
        Ok(Rotation {
            replacement: CreatedKey { key, record },
            old,
        })
    }

    async fn record_usage(&self, used: &[LastUsed]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        // Rows of a table of their own: a revocation never waits for a usage write. Each
        // key's row exists from its creation (a trigger), so this only updates, and rows
        // another instance is updating at this moment are skipped, not waited for (it is
        // recording a use from the same moment): many instances flushing the same keys at
        // once neither queue behind each other nor deadlock. A key without a row (deleted by
        // hand) gets one, in id order. Keys that no longer exist are skipped. A row whose
        // time is within `usage_resolution` of the batch's is not written at all: with
        // many instances, the first batch of the minute writes, the others only read.
        let mut batch: Vec<(&str, i64)> = used
            .iter()
            .map(|u| (u.id.as_str(), to_millis(u.at)))
            .collect();
        batch.sort_unstable();
        let ids: Vec<String> = batch.iter().map(|(id, _)| (*id).to_owned()).collect();
        let times: Vec<i64> = batch.iter().map(|(_, ms)| *ms).collect();
        let query = sqlx::query(concat!(
            "WITH input AS (",
            "SELECT t.id, timestamptz 'epoch' + max(t.ms) * interval '1 millisecond' AS at ",
            "FROM UNNEST($1::text[], $2::int8[]) AS t(id, ms) GROUP BY t.id), ",
            "free AS (SELECT u.id FROM hapnd_key_usage AS u JOIN input AS i ON i.id = u.id ",
            "WHERE u.last_used_at IS NULL ",
            "OR u.last_used_at <= i.at - $3::int8 * interval '1 millisecond' ",
            "ORDER BY u.id FOR UPDATE OF u SKIP LOCKED), ",
            "updated AS (UPDATE hapnd_key_usage AS u SET last_used_at = GREATEST(u.last_used_at, i.at) ",
            "FROM free AS f JOIN input AS i ON i.id = f.id ",
            "WHERE u.id = f.id) ",
            "INSERT INTO hapnd_key_usage (id, last_used_at) SELECT i.id, i.at FROM input AS i ",
            "WHERE NOT EXISTS (SELECT 1 FROM hapnd_key_usage AS u WHERE u.id = i.id) ",
            "AND EXISTS (SELECT 1 FROM hapnd_api_keys AS k WHERE k.id = i.id) ",
            "ORDER BY i.id ON CONFLICT (id) DO NOTHING"
        ))
        .bind(ids)
        .bind(times)
        .bind(self.usage_resolution.as_millis() as i64);
        // Instances take turns: a transaction-scoped advisory lock, waited for in the
        // server's lock queue, where a waiting session uses no CPU. 100 instances flushing
        // at once otherwise ran 100 statements side by side on the server's cores, and a
        // revocation meanwhile waited its turn for a core among them (up to 0.6 s measured
        // on 2 cores). The wait is off the request path, so it gets a longer bound; the
        // write itself keeps the usual one, so the lock is never held past it. The wait
        // holds one pooled connection (lookups keep the others).
        let wait = self.query_timeout.saturating_mul(USAGE_WAIT_FACTOR);
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128);
        bounded(wait.saturating_add(self.query_timeout), async {
            let mut tx = self.pool.begin().await?;
            if self.usage_turns {
                // The long bound, the lock and the usual bound again, in one round trip: a
                // simple query of two statements, each run under the `statement_timeout`
                // the one before it set (PostgreSQL 13 and later time each statement of a
                // simple query on its own). Only integers this code formats go into the
                // text. Not in the `BEGIN` itself (`begin_with`): a failed wait there left
                // the pooled connection in an aborted transaction.
                let turn = format!(
                    "SELECT set_config('statement_timeout', '{}ms', true); \
                     SELECT pg_advisory_xact_lock({}, hashtext(current_schema())), \
                     set_config('statement_timeout', '{}ms', true)",
                    ms(wait),
                    Self::USAGE_LOCK,
                    ms(self.query_timeout),
                );
                sqlx::raw_sql(AssertSqlSafe(turn)).execute(&mut *tx).await?;
            }
            query.execute(&mut *tx).await?;
            tx.commit().await
        })
        .await
    }
}

/// A usage write may wait this many query timeouts for its turn and run.
const USAGE_WAIT_FACTOR: u32 = 5;

/// A pooled connection idle at least this long is pinged before it is used; a dead one is
/// replaced, unseen by the query.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// What the listener task owns.
struct Feed {
    listener_options: PgConnectOptions,
    query_timeout: Duration,
    options: ListenOptions,
    counters: Arc<FeedCounters>,
}

/// Why a listening session ended.
enum Ended {
    Disconnected(String),
    HeartbeatOverdue,
}

/// One listening connection and what it has read.
struct Session {
    listener: PgListener,
    /// The newest change-log generation applied.
    generation: i64,
}

impl Feed {
    async fn run(self, invalidator: Invalidator) {
        let mut backoff = Backoff::new(Duration::from_millis(50), self.options.max_backoff);
        loop {
            let session = match self.connect().await {
                Ok(session) => session,
                Err(error) => {
                    tracing::warn!(target: "hapnd_auth", %error, "cannot LISTEN for key revocations; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            let ended = self.session(session, &invalidator).await;
            // Whatever was sent while we were not listening is lost: stop trusting the cache.
            invalidator.channel_lost();
            match ended {
                Ended::Disconnected(error) => {
                    tracing::warn!(target: "hapnd_auth", %error, "revocation listener disconnected; reconnecting")
                }
                Ended::HeartbeatOverdue => {
                    tracing::warn!(target: "hapnd_auth", "revocation listener heard no heartbeat; reconnecting")
                }
            }
            backoff.wait().await;
        }
    }

    /// A listener on a pool of its own, fresh each time: a connection that went half-open
    /// is dropped with its pool instead of being handed back.
    async fn connect(&self) -> Result<Session, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.query_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.listener_options.clone());
        bounded(self.query_timeout, async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            // Read after LISTEN: a change committed later is notified or in a later read.
            let generation = sqlx::query_scalar("SELECT gen FROM hapnd_key_generation")
                .fetch_one(&mut listener)
                .await?;
            Ok(Session {
                listener,
                generation,
            })
        })
        .await
    }

    /// Heartbeats. Every `heartbeat_interval` the listener reads the change log on its
    /// `LISTEN` connection. The read is a round trip that proves the connection alive, and
    /// its snapshot holds every change committed before it began, notified or not: once it
    /// returns, every such change is applied here. A silent connection makes it time out.
    /// The generations it reads have no gaps and appear in commit order (see migration 3),
    /// so nothing is skipped between two reads.
    ///
    /// Heartbeats are not notifications. PostgreSQL signals every backend that listens in a
    /// database on every `NOTIFY`, whatever the channel (`SignalBackends` in
    /// `src/backend/commands/async.c`: "Always signal listeners in our own database, unless
    /// they're already caught up"), and every notifying commit takes a cluster-wide lock from
    /// pre-commit until its commit completes ("Serialize writers by
    /// acquiring a special lock that we hold till after commit. This ensures that queue
    /// entries appear in commit order"). A notification per instance per interval therefore
    /// costs the server O(N) wakeups each, O(N²) in all, and N serialized commits, even on
    /// per-instance channels. A read costs one index probe, commits nothing, and wakes no one.
    ///
    /// Notifications act twice. The key hash a payload names is invalidated on arrival,
    /// before anything is read: a revocation lands as soon as its notification does. And
    /// the notification schedules a read of the log [`ListenOptions::notification_read_delay`]
    /// later (unless one is scheduled already), which applies what no payload named (a bulk
    /// change's flush, a change whose notification was lost) and is the only thing that
    /// advances the session's generation or confirms the channel. Payloads are not trusted
    /// beyond that: any role that can connect may `NOTIFY` anything, and a payload can only
    /// make this instance forget more, never skip a change or look healthy. A burst of N
    /// notifications costs one read per delay, not N: with a hundred instances, a storm of
    /// revocations does not become a storm of reads. Reads run one at a time, on this
    /// connection, so at most one is in flight.
    async fn session(&self, mut session: Session, invalidator: &Invalidator) -> Ended {
        let started = Instant::now();
        // When the newest successful read of the log began.
        let mut confirmed: Option<Instant> = None;
        let mut ticks = tokio::time::interval(self.options.heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When a notification-triggered read is due, if one is.
        let mut read_due: Option<tokio::time::Instant> = None;
        loop {
            // The branch is disabled without a due read; its future is still built.
            let due = read_due.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                // try_recv is cancel-safe: sqlx consumes a message only once it is complete.
                received = session.listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        self.apply_payload(notification.payload(), invalidator);
                        // Everything already buffered now, too.
                        while let Some(notification) = session.listener.next_buffered() {
                            self.apply_payload(notification.payload(), invalidator);
                        }
                        if read_due.is_none() {
                            // A delay past the clock's range (`Duration::MAX` for "never")
                            // schedules nothing: the heartbeat's read covers it.
                            read_due = tokio::time::Instant::now()
                                .checked_add(self.options.read_delay);
                        }
                        continue;
                    }
                    // Ok(None): the connection dropped and notifications may have been lost.
                    Ok(None) => return Ended::Disconnected("connection lost".to_owned()),
                    Err(error) => return Ended::Disconnected(error.to_string()),
                },
                _ = ticks.tick() => {
                    if confirmed.unwrap_or(started).elapsed() > self.options.heartbeat_timeout {
                        return Ended::HeartbeatOverdue;
                    }
                }
                () = tokio::time::sleep_until(due), if read_due.is_some() => {}
            }
            // A heartbeat or a due read: either covers every notification so far.
            read_due = None;
            let began = Instant::now();
            let read = tokio::time::timeout(
                self.options.heartbeat_timeout,
                self.catch_up(&mut session, invalidator),
            );
            match read.await {
                Err(_) => return Ended::HeartbeatOverdue,
                Ok(Err(error)) => return Ended::Disconnected(error.to_string()),
                Ok(Ok(())) => {}
            }
            if confirmed.is_none() {
                // The first read of a session: trusted from here on (restoring flushes).
                invalidator.channel_restored();
            }
            confirmed = Some(began);
        }
    }

    /// One notification: counted, and the key hash it names (64 hexadecimal digits, as the
    /// store and the trigger send) invalidated now. Anything else (`flush`, a forged or
    /// malformed payload) waits for the read of the log, which is the authority.
    fn apply_payload(&self, payload: &str, invalidator: &Invalidator) {
        if let Some(hash) = KeyHash::from_hex(payload) {
            invalidator.invalidate(&hash);
        }
        // Counted once applied (the propagation benchmark times deliveries by the count).
        self.counters.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the change log past the session's generation and invalidates what it names:
    /// the authority on what changed. Notification payloads only add invalidations; what
    /// this read finds is applied whether or not a payload named it. A gap (pruned entries), a
    /// flush entry, or more entries than [`MAX_CHANGES_READ`] flushes the whole cache.
    async fn catch_up(
        &self,
        session: &mut Session,
        invalidator: &Invalidator,
    ) -> Result<(), StoreError> {
        self.counters.log_reads.fetch_add(1, Ordering::Relaxed);
        let since = session.generation;
        let rows: Vec<(i64, Option<i64>, Option<Vec<u8>>)> = bounded(
            self.query_timeout,
            sqlx::query_as(
                "SELECT g.gen, c.gen, c.key_hash FROM hapnd_key_generation AS g \
                 LEFT JOIN LATERAL (SELECT gen, key_hash FROM hapnd_key_changes \
                 WHERE gen > $1 ORDER BY gen LIMIT $2) AS c ON true",
            )
            .bind(since)
            .bind(MAX_CHANGES_READ + 1)
            .fetch_all(&mut session.listener),
        )
        .await?;
        let Some(&(current, _, _)) = rows.first() else {
            // The counter row is gone: someone edited the schema. Trust nothing.
            invalidator.invalidate_all();
            return Ok(());
        };
        if current == since {
            return Ok(());
        }
        let entries: Vec<(i64, Option<KeyHash>)> = rows
            .into_iter()
            .filter_map(|(_, generation, hash)| {
                let hash = hash.and_then(|h| <[u8; 32]>::try_from(h).ok());
                generation.map(|g| (g, hash.map(KeyHash::from_bytes)))
            })
            .collect();
        let complete = current > since
            && entries.len() <= MAX_CHANGES_READ as usize
            && entries.first().map(|e| e.0) == Some(since + 1)
            && entries.last().map(|e| e.0) == Some(current)
            && entries.iter().all(|e| e.1.is_some());
        if complete {
            for hash in entries.iter().filter_map(|e| e.1.as_ref()) {
                invalidator.invalidate(hash);
            }
        } else {
            invalidator.invalidate_all();
        }
        session.generation = current;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode `secure` settles on, by name (`PgSslMode` has no `PartialEq`).
    fn mode(url: &str) -> String {
        format!(
            "{:?}",
            secure(PgConnectOptions::from_str(url).unwrap()).get_ssl_mode()
        )
    }

    #[test]
    fn remote_hosts_get_verified_tls_unless_told_otherwise() {
        for url in [
            "postgres://u@db.internal/hapnd",
            "postgres://u@10.1.2.3/hapnd",
            "postgres://u@db.internal/hapnd?sslmode=prefer",
            "postgres://u@db.internal/hapnd?sslmode=allow",
            "postgres://u@[2001:db8::1]/hapnd",
        ] {
            assert_eq!(mode(url), "VerifyFull", "{url}");
        }
        // Explicit choices are kept, cleartext included.
        let kept = [
            ("postgres://u@db.internal/h?sslmode=disable", "Disable"),
            ("postgres://u@db.internal/h?sslmode=require", "Require"),
            ("postgres://u@db.internal/h?sslmode=verify-ca", "VerifyCa"),
        ];
        for (url, kept) in kept {
            assert_eq!(mode(url), kept, "{url}");
        }
    }

    #[test]
    fn loopback_keeps_the_default() {
        for url in [
            "postgres://u@127.0.0.1/hapnd",
            "postgres://u@127.8.9.10/hapnd",
            "postgres://u@localhost/hapnd",
            "postgres://u@[::1]/hapnd",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/hapnd",
        ] {
            assert_eq!(mode(url), "Prefer", "{url}");
        }
    }
}
