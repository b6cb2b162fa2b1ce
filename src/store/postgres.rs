//! [`PostgresKeyStore`]: keys in PostgreSQL, with revocations pushed to every instance.
//!
//! See [`PostgresKeyStore`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions, PgRow};

use crate::cache::Invalidator;
use crate::key::KeyHash;
use crate::metrics::Source;

use super::sql::{self, Backoff, ChangeFeed, RawRecord, bounded, raw_record, to_millis};
use super::{KeyId, KeyRecord, KeyStore, LastUsed, StoreError};

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
];

/// Times travel as integer milliseconds both ways: exact, and no date-time crate needed.
macro_rules! columns {
    () => {
        "id, tenant, environment, name, key_hash, hint, \
         (extract(epoch FROM created_at) * 1000)::int8, \
         (extract(epoch FROM revoked_at) * 1000)::int8, \
         (extract(epoch FROM expires_at) * 1000)::int8, \
         (extract(epoch FROM last_used_at) * 1000)::int8"
    };
}

macro_rules! select {
    ($where:literal) => {
        concat!("SELECT ", columns!(), " FROM hapnd_api_keys ", $where)
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
/// [`KeyStore::revoke`] commits the update and a `NOTIFY hapnd_auth_keys, '<hash hex>'` in
/// one transaction. [`PostgresKeyStore::listen`] keeps a `LISTEN` connection open and
/// invalidates each hash it hears about; the payload `flush` empties the whole cache (for
/// bulk changes made with SQL: `SELECT pg_notify('hapnd_auth_keys', 'flush')`).
///
/// Notifications sent while the listener is disconnected are lost for good, and a
/// half-open connection is silent. So the listener also sends itself a heartbeat
/// notification every [`ListenOptions::heartbeat_interval`]; until a heartbeat has come
/// back within [`ListenOptions::heartbeat_timeout`], the channel is reported lost and the
/// cache is not trusted: every request reads the store. The same holds from `listen` until
/// the first heartbeat returns. `LISTEN` needs a direct session on the primary, not
/// PgBouncer in transaction mode and not a replica.
#[derive(Clone)]
pub struct PostgresKeyStore {
    pool: PgPool,
    options: PgConnectOptions,
    query_timeout: Duration,
}

/// Configures a [`PostgresKeyStore`]. Made by [`PostgresKeyStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PostgresKeyStoreBuilder {
    max_connections: u32,
    query_timeout: Duration,
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

    /// Connects to the database at `url` (`postgres://user:password@host/db`) and brings
    /// its schema up to date.
    pub async fn connect(self, url: &str) -> Result<PostgresKeyStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(sql::map_error)?;
        self.connect_with(options).await
    }

    /// Connects with `options` and brings the schema up to date. `statement_timeout` is
    /// added to `options`, and `application_name` (`hapnd-auth`) if they set none.
    pub async fn connect_with(
        self,
        options: PgConnectOptions,
    ) -> Result<PostgresKeyStore, StoreError> {
        let mut options = options.options([(
            "statement_timeout",
            format!("{}ms", self.query_timeout.as_millis().max(1)),
        )]);
        if options.get_application_name().is_none() {
            options = options.application_name("hapnd-auth");
        }
        let pool = bounded(
            self.query_timeout,
            PgPoolOptions::new()
                .max_connections(self.max_connections)
                .acquire_timeout(self.query_timeout)
                .connect_with(options.clone()),
        )
        .await?;
        // Migrations take an advisory lock: other instances starting at once wait their turn.
        bounded(self.query_timeout * 5, async {
            sql::migrator(MIGRATIONS)
                .run(&pool)
                .await
                .map_err(|e| sqlx::Error::Migrate(Box::new(e)))
        })
        .await?;
        Ok(PostgresKeyStore {
            pool,
            options,
            query_timeout: self.query_timeout,
        })
    }
}

/// How [`PostgresKeyStore::listen_with`] watches its channel.
#[derive(Clone, Debug)]
#[must_use]
pub struct ListenOptions {
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    max_backoff: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl ListenOptions {
    /// The defaults: a heartbeat every second that must return within 3 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// How often the listener notifies itself (default 1 s).
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every;
        self
    }

    /// How long the listener may go without hearing its own heartbeat before it stops
    /// trusting the channel and reconnects (default 3 s). The bound on how long a silently
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
}

impl PostgresKeyStore {
    /// Connects to `url` with the default settings. See [`PostgresKeyStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url).await
    }

    /// Starts configuring a store.
    pub fn builder() -> PostgresKeyStoreBuilder {
        PostgresKeyStoreBuilder {
            max_connections: 10,
            query_timeout: Duration::from_secs(2),
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
        let feed = Feed {
            listener_options: self
                .options
                .clone()
                .application_name(&format!("{app}:listener")),
            // Heartbeats get a connection of their own: queued behind request lookups in
            // the store's pool, a slow database would make them late, the channel "lost",
            // the cache bypassed, and the database slower still.
            heartbeats: PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(self.query_timeout)
                .connect_lazy_with(
                    self.options
                        .clone()
                        .application_name(&format!("{app}:heartbeat")),
                ),
            query_timeout: self.query_timeout,
            options,
        };
        ChangeFeed::spawn(
            invalidator.with_source(Source::PostgresNotify),
            move |invalidator| feed.run(invalidator),
        )
    }

    async fn fetch_optional(
        &self,
        query: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = bounded(self.query_timeout, query.fetch_optional(&self.pool)).await?;
        row.map(|row| decode(&row)).transpose()
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
        self.fetch_optional(
            sqlx::query(select!("WHERE key_hash = $1")).bind(hash.as_bytes().to_vec()),
        )
        .await
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let query = sqlx::query(concat!(
            "INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, ",
            "created_at, revoked_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, ",
            ts!(7),
            ", ",
            ts!(8),
            ", ",
            ts!(9),
            ", ",
            ts!(10),
            ")"
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
        .bind(record.last_used_at.map(to_millis));
        bounded(self.query_timeout, query.execute(&self.pool)).await?;
        Ok(())
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.fetch_optional(sqlx::query(select!("WHERE id = $1")).bind(id.as_str().to_owned()))
            .await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let query = sqlx::query(select!("WHERE tenant = $1 ORDER BY created_at, id"))
            .bind(tenant.to_owned());
        let rows = bounded(self.query_timeout, query.fetch_all(&self.pool)).await?;
        rows.iter().map(decode).collect()
    }

    async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
        bounded(self.query_timeout, async {
            let mut tx = self.pool.begin().await?;
            // COALESCE keeps the first revocation time: revoking twice changes nothing.
            let row = sqlx::query(concat!(
                "UPDATE hapnd_api_keys SET revoked_at = COALESCE(revoked_at, ",
                ts!(2),
                ") WHERE id = $1 RETURNING ",
                columns!()
            ))
            .bind(id.as_str().to_owned())
            .bind(to_millis(at))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            // Same transaction: the notification goes out if and only if the update commits.
            let hash: Vec<u8> = sqlx::Row::try_get(&row, 4)?;
            sqlx::query("SELECT pg_notify($1, encode($2, 'hex'))")
                .bind(NOTIFY_CHANNEL)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(row))
        })
        .await?
        .map(|row| decode(&row))
        .transpose()?
        .ok_or_else(|| StoreError::not_found(id))
    }

    async fn record_usage(&self, used: &[LastUsed]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = used.iter().map(|u| u.id.as_str().to_owned()).collect();
        let times: Vec<i64> = used.iter().map(|u| to_millis(u.at)).collect();
        // One statement for the batch. Grouped first: UPDATE ... FROM applies only one of
        // several source rows matching the same key, and which one is unspecified.
        let query = sqlx::query(concat!(
            "UPDATE hapnd_api_keys AS k SET last_used_at = GREATEST(k.last_used_at, ",
            "timestamptz 'epoch' + u.ms * interval '1 millisecond') ",
            "FROM (SELECT id, max(ms) AS ms FROM UNNEST($1::text[], $2::int8[]) AS t(id, ms) ",
            "GROUP BY id) AS u WHERE k.id = u.id"
        ))
        .bind(ids)
        .bind(times);
        bounded(self.query_timeout, query.execute(&self.pool)).await?;
        Ok(())
    }
}

/// What the listener task owns.
struct Feed {
    listener_options: PgConnectOptions,
    heartbeats: PgPool,
    query_timeout: Duration,
    options: ListenOptions,
}

/// Why a listening session ended.
enum Ended {
    Disconnected(String),
    HeartbeatOverdue,
}

impl Feed {
    async fn run(self, invalidator: Invalidator) {
        let mut backoff = Backoff::new(Duration::from_millis(50), self.options.max_backoff);
        loop {
            let listener = match self.connect().await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(target: "hapnd_auth", %error, "cannot LISTEN for key revocations; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            let ended = self.session(listener, &invalidator).await;
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
    async fn connect(&self) -> Result<PgListener, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.query_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.listener_options.clone());
        bounded(self.query_timeout, async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok(listener)
        })
        .await
    }

    async fn session(&self, mut listener: PgListener, invalidator: &Invalidator) -> Ended {
        let token = heartbeat_token();
        let started = Instant::now();
        // When the newest heartbeat that came back was sent. NOTIFYs arrive in commit order,
        // so everything committed before then has reached this listener. The send time, not
        // the arrival time: a heartbeat delayed on its way proves only what it carried.
        let mut confirmed: Option<Instant> = None;
        // Send times are kept here, never read from the wire: any role that can connect may
        // NOTIFY, and a forged "sent in the future" would silence the half-open check. A
        // nonce we did not send confirms nothing; a replayed one at most its real send time.
        let mut in_flight: HashMap<u64, Instant> = HashMap::new();
        let mut healthy = false;
        let mut ticks = tokio::time::interval(self.options.heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // try_recv is cancel-safe: sqlx consumes a message only once it is complete.
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if let Some(nonce) = own_heartbeat(&notification, &token) {
                            if let Some(&sent) = in_flight.get(&nonce) {
                                confirmed = confirmed.max(Some(sent));
                            }
                            if !healthy {
                                invalidator.channel_restored();
                                healthy = true;
                            }
                        } else {
                            apply(&notification, invalidator);
                        }
                    }
                    // Ok(None): the connection dropped and notifications may have been lost.
                    Ok(None) => return Ended::Disconnected("connection lost".to_owned()),
                    Err(error) => return Ended::Disconnected(error.to_string()),
                },
                _ = ticks.tick() => {
                    let silent_since = confirmed.unwrap_or(started);
                    if silent_since.elapsed() > self.options.heartbeat_timeout {
                        return Ended::HeartbeatOverdue;
                    }
                    // Older than the timeout, a heartbeat can no longer keep the channel up.
                    in_flight.retain(|_, sent| sent.elapsed() <= self.options.heartbeat_timeout);
                    let nonce = heartbeat_nonce();
                    in_flight.insert(nonce, Instant::now());
                    self.send_heartbeat(&token, nonce);
                }
            }
        }
    }

    /// Sent over a connection of its own, not the listener's: the round trip proves that a
    /// commit elsewhere reaches this listener.
    fn send_heartbeat(&self, token: &str, nonce: u64) {
        let pool = self.heartbeats.clone();
        let payload = format!("heartbeat:{token}:{nonce}");
        let timeout = self.query_timeout;
        // A task of its own, so a slow send never delays receiving.
        tokio::spawn(async move {
            let send = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(payload)
                .execute(&pool);
            if let Err(error) = bounded(timeout, send).await {
                tracing::debug!(target: "hapnd_auth", %error, "heartbeat not sent");
            }
        });
    }
}

fn heartbeat_nonce() -> u64 {
    u64::from_ne_bytes(crate::key::random())
}

fn heartbeat_token() -> String {
    crate::key::hex(&crate::key::random::<8>())
}

/// For this session's heartbeat (`heartbeat:<token>:<nonce>`), its nonce.
fn own_heartbeat(notification: &PgNotification, token: &str) -> Option<u64> {
    let rest = notification.payload().strip_prefix("heartbeat:")?;
    let (from, sent_ms) = rest.split_once(':')?;
    if from != token {
        return None;
    }
    sent_ms.parse().ok()
}

fn apply(notification: &PgNotification, invalidator: &Invalidator) {
    let payload = notification.payload();
    if payload.starts_with("heartbeat:") {
        // Another instance's heartbeat.
        return;
    }
    match KeyHash::from_hex(payload) {
        Some(hash) => invalidator.invalidate(&hash),
        None => {
            if payload != "flush" {
                // From a newer version, perhaps: forgetting everything is always safe.
                tracing::debug!(target: "hapnd_auth", "unknown notification payload; flushing");
            }
            invalidator.invalidate_all();
        }
    }
}
