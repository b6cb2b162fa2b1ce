//! [`SqliteKeyStore`]: keys in a SQLite file, shared by the gateway and the CLI.
//!
//! See [`SqliteKeyStore`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::ConnectOptions as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};

use crate::cache::Invalidator;
use crate::key::KeyHash;
use crate::metrics::Source;

use super::audit_sql::{self, Bind, raw_event};
use super::sql::{self, Backoff, ChangeFeed, RawRecord, bounded, raw_record, to_millis};
use super::{
    Actor, ActorKind, AuditTrail, CreatedKey, EventQuery, ExpiringKeys, ExpiringQuery, ExpiryBind,
    KeyEvent, KeyId, KeyPolicy, KeyRecord, KeyStore, LastUsed, ListPage, NewKey, Roll, Rotation,
    StoreError, StoreErrorKind, rolled_expiry,
};
use crate::key::ApiKey;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "api keys",
        include_str!("../../migrations/sqlite/0001_api_keys.sql"),
    ),
    (
        2,
        "key changes",
        include_str!("../../migrations/sqlite/0002_key_changes.sql"),
    ),
    (
        3,
        "key policy",
        include_str!("../../migrations/sqlite/0003_key_policy.sql"),
    ),
    (
        4,
        "audit",
        include_str!("../../migrations/sqlite/0004_audit.sql"),
    ),
    (
        5,
        "admin credentials",
        include_str!("../../migrations/sqlite/0005_admin_credentials.sql"),
    ),
    (
        6,
        "expiring",
        include_str!("../../migrations/sqlite/0006_expiring.sql"),
    ),
];

macro_rules! select {
    ($where:literal) => {
        concat!(
            "SELECT id, tenant, environment, name, key_hash, hint, created_at, revoked_at, \
             expires_at, last_used_at, scopes, metadata, rate_limit FROM hapnd_api_keys ",
            $where
        )
    };
}

/// Keys in a SQLite database file. Cheap to clone: clones share one connection pool.
///
/// The file is put in WAL mode so the gateway's reads do not wait for another process's
/// write. Every call is bounded by [`SqliteKeyStoreBuilder::query_timeout`] (default 2 s),
/// pool wait and lock wait included.
///
/// ```no_run
/// use hapnd_auth::{Authenticator, Environment, KeyStore, NewKey, SqliteKeyStore};
///
/// # async fn run() -> Result<(), hapnd_auth::StoreError> {
/// let store = SqliteKeyStore::connect("/var/lib/hapnd/keys.db").await?;
/// let auth = Authenticator::new(store.clone());
/// // Another process (the CLI) revoking a key sends no notification: poll for its commits.
/// let _feed = store.watch(auth.invalidator(), SqliteKeyStore::DEFAULT_WATCH_INTERVAL);
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
    options: SqliteConnectOptions,
    query_timeout: Duration,
}

/// Configures a [`SqliteKeyStore`]. Made by [`SqliteKeyStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteKeyStoreBuilder {
    max_connections: u32,
    query_timeout: Duration,
}

impl SqliteKeyStoreBuilder {
    /// The most pooled connections (default 4).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The longest one store call may take, waiting for a pooled connection or a lock
    /// included (default 2 s). Past it the call fails with
    /// [`StoreErrorKind::Timeout`](crate::StoreErrorKind::Timeout).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Opens (creating it if missing) the database at `url_or_path`, a `sqlite:` URL or a
    /// file path, and brings its schema up to date. A new file is created readable and
    /// writable by its owner only (see [`SqliteKeyStore::create_file`]), and so are its
    /// `-wal` and `-shm` files.
    ///
    /// Use a file: with `sqlite::memory:` every pooled connection would see a database of
    /// its own. For keys in memory there is [`MemoryKeyStore`](crate::MemoryKeyStore).
    pub async fn connect(self, url_or_path: &str) -> Result<SqliteKeyStore, StoreError> {
        let is_url = url_or_path.starts_with("sqlite:");
        let options = if is_url {
            SqliteConnectOptions::from_str(url_or_path).map_err(sql::map_error)?
        } else {
            SqliteConnectOptions::new().filename(url_or_path)
        };
        let in_memory = options.get_filename() == Path::new(":memory:")
            || (is_url && url_or_path.to_ascii_lowercase().contains("mode=memory"));
        if !in_memory {
            let path = options.get_filename();
            SqliteKeyStore::create_file(path).map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("cannot create the SQLite database {}: {e}", path.display()),
                )
            })?;
        }
        self.connect_with(options.create_if_missing(true)).await
    }

    /// Opens the database `options` describe and brings its schema up to date. WAL mode and
    /// a busy timeout equal to the query timeout are set on top of `options`.
    pub async fn connect_with(
        self,
        options: SqliteConnectOptions,
    ) -> Result<SqliteKeyStore, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(self.query_timeout);
        let pool = bounded(
            self.query_timeout,
            SqlitePoolOptions::new()
                .max_connections(self.max_connections)
                .acquire_timeout(self.query_timeout)
                .connect_with(options.clone()),
        )
        .await?;
        // Migrations may wait for another process's lock: give them a few query timeouts.
        bounded(self.query_timeout * 5, async {
            sql::migrator(MIGRATIONS)
                .run(&pool)
                .await
                .map_err(|e| sqlx::Error::Migrate(Box::new(e)))
        })
        .await?;
        Ok(SqliteKeyStore {
            pool,
            options,
            query_timeout: self.query_timeout,
        })
    }
}

impl SqliteKeyStore {
    /// A polling interval for [`watch`](Self::watch): a revocation made by another process
    /// reaches this one's cache within about this long.
    pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(250);

    /// Opens (creating it if missing) the database at `url_or_path` with the default
    /// settings. See [`SqliteKeyStoreBuilder::connect`].
    pub async fn connect(url_or_path: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url_or_path).await
    }

    /// Creates an empty database file at `path`, readable and writable by its owner only
    /// (mode 0600 on Unix), unless something is there already; `true`
    /// when it created one. SQLite gives a database's `-wal` and `-shm` files the mode of
    /// the database file, so they are private too: other users can neither read the key
    /// hashes nor take the lock that revocations need. [`connect`](Self::connect) calls
    /// it; call it before [`SqliteKeyStoreBuilder::connect_with`] to get the same files.
    ///
    /// A missing directory is not created: that is reported as an error (`NotFound`).
    pub fn create_file(path: &Path) -> std::io::Result<bool> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts configuring a store.
    pub fn builder() -> SqliteKeyStoreBuilder {
        SqliteKeyStoreBuilder {
            max_connections: 4,
            query_timeout: Duration::from_secs(2),
        }
    }

    /// The connection pool, for health checks and administration.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Polls the database every `interval` on one dedicated connection: when another
    /// connection has committed (SQLite's `PRAGMA data_version`), reads the new rows of the
    /// `hapnd_key_changes` log (filled by triggers on every insert, delete and update of a
    /// key's identity, revocation or expiry) and invalidates just those hashes. This is how
    /// a revocation made by another process, the CLI say, reaches this one within about one
    /// interval, without flushing the cache on commits that change no answer (last-used
    /// writes).
    ///
    /// While polling fails the channel is reported lost (every request reads the store) and
    /// restored, with a flush, once a poll succeeds. The feed stops when the returned handle
    /// is dropped. Must be called within a tokio runtime.
    pub fn watch(&self, invalidator: Invalidator, interval: Duration) -> ChangeFeed {
        let options = self.options.clone();
        let timeout = self.query_timeout;
        ChangeFeed::spawn(
            invalidator.with_source(Source::SqliteChangeLog),
            move |invalidator, _counters| watch(options, invalidator, interval, timeout),
        )
    }

    async fn fetch_optional(
        &self,
        query: sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = bounded(self.query_timeout, query.fetch_optional(&self.pool)).await?;
        row.map(|row| decode(&row)).transpose()
    }
}

fn decode(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let raw: RawRecord = raw_record!(row).map_err(sql::map_error)?;
    raw.into_record()
}

impl fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("file", &self.options.get_filename())
            .field("connections", &self.pool.size())
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

impl KeyStore for SqliteKeyStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.fetch_optional(
            sqlx::query(select!("WHERE key_hash = ?1")).bind(hash.as_bytes().to_vec()),
        )
        .await
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.insert_audited(record, &Actor::application()).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.fetch_optional(sqlx::query(select!("WHERE id = ?1")).bind(id.as_str().to_owned()))
            .await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let query = sqlx::query(select!("WHERE tenant = ?1 ORDER BY created_at, id"))
            .bind(tenant.to_owned());
        let rows = bounded(self.query_timeout, query.fetch_all(&self.pool)).await?;
        rows.iter().map(decode).collect()
    }

    async fn list_page(&self, page: &ListPage) -> Result<Vec<KeyRecord>, StoreError> {
        // One statement per shape: an `?n IS NULL OR ...` would keep SQLite off the index.
        let limit = i64::from(page.limit);
        let query = match (&page.tenant, &page.after) {
            (Some(tenant), None) => sqlx::query(select!(
                "WHERE tenant = ?1 ORDER BY created_at, id LIMIT ?2"
            ))
            .bind(tenant.clone())
            .bind(limit),
            (Some(tenant), Some((_, at, id))) => sqlx::query(select!(
                "WHERE tenant = ?1 AND (created_at, id) > (?2, ?3) \
                 ORDER BY created_at, id LIMIT ?4"
            ))
            .bind(tenant.clone())
            .bind(to_millis(*at))
            .bind(id.as_str().to_owned())
            .bind(limit),
            (None, None) => {
                sqlx::query(select!("ORDER BY tenant, created_at, id LIMIT ?1")).bind(limit)
            }
            (None, Some((tenant, at, id))) => sqlx::query(select!(
                "WHERE (tenant, created_at, id) > (?1, ?2, ?3) \
                 ORDER BY tenant, created_at, id LIMIT ?4"
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
        let row = bounded(self.query_timeout, async {
            let mut tx = self.pool.begin().await?;
            set_actor(&mut tx, actor).await?;
            if actor.kind == ActorKind::SecretScanning {
                sqlx::query(concat!(
                    "INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, ",
                    "client, detail) SELECT ",
                    now_ms!(),
                    ", tenant, id, 'reported_leaked', ?2, ?3, ?4, ?5 FROM hapnd_api_keys WHERE id = ?1"
                ))
                .bind(id.as_str().to_owned())
                .bind(actor.kind.as_str())
                .bind(actor.label.clone())
                .bind(actor.client.map(|c| c.to_string()))
                .bind(actor.detail.clone())
                .execute(&mut *tx)
                .await?;
            }
            // COALESCE keeps the first revocation time: revoking twice changes nothing.
            let row = sqlx::query(concat!(
                "UPDATE hapnd_api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1 ",
                "RETURNING id, tenant, environment, name, key_hash, hint, created_at, revoked_at, ",
                "expires_at, last_used_at, scopes, metadata, rate_limit"
            ))
            .bind(id.as_str().to_owned())
            .bind(to_millis(at))
            .fetch_optional(&mut *tx)
            .await?;
            clear_actor(&mut tx).await?;
            tx.commit().await?;
            Ok(row)
        })
        .await?;
        row.map(|row| decode(&row))
            .transpose()?
            .ok_or_else(|| StoreError::not_found(id))
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
            sqlx::query(concat!(
                "INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, ",
                "client, replacement_id) VALUES (",
                now_ms!(),
                ", ?1, ?2, 'rotated', ?3, ?4, ?5, ?6)"
            ))
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
                    // The expiry as stored inside this transaction, not as read before it.
                    let current: Option<Option<i64>> =
                        sqlx::query_scalar("SELECT expires_at FROM hapnd_api_keys WHERE id = ?1")
                            .bind(id.as_str().to_owned())
                            .fetch_optional(&mut *tx)
                            .await?;
                    let current = current.flatten().map(sql::from_millis);
                    sqlx::query("UPDATE hapnd_api_keys SET expires_at = ?2 WHERE id = ?1")
                        .bind(id.as_str().to_owned())
                        .bind(to_millis(rolled_expiry(current, asked)))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(select!("WHERE id = ?1"))
                        .bind(id.as_str().to_owned())
                        .fetch_optional(&mut *tx)
                        .await?
                }
                None => None,
            };
            clear_actor(&mut tx).await?;
            tx.commit().await?;
            Ok(row)
        })
        .await?;
        let old = match row {
            Some(row) => decode(&row)?,
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
        // One transaction: one fsync and one write lock for the whole batch.
        bounded(self.query_timeout, async {
            let mut tx = self.pool.begin().await?;
            for u in used {
                sqlx::query(
                    "UPDATE hapnd_api_keys \
                     SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2) WHERE id = ?1",
                )
                .bind(u.id.as_str().to_owned())
                .bind(to_millis(u.at))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
        .await
    }
}

/// The database's clock in unix milliseconds, as the audit triggers write it.
macro_rules! now_ms {
    () => {
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    };
}
use now_ms;

fn insert_row(
    record: &KeyRecord,
) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let (scopes, metadata, rate_limit) = sql::policy_columns(record);
    sqlx::query(
        "INSERT INTO hapnd_api_keys (id, tenant, environment, name, key_hash, hint, \
         created_at, revoked_at, expires_at, last_used_at, scopes, metadata, rate_limit) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
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

/// Tells the audit triggers who is acting, for the rest of this transaction (see
/// `migrations/sqlite/0004_audit.sql`). Being a write, it also takes the write lock first.
async fn set_actor(conn: &mut SqliteConnection, actor: &Actor) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR REPLACE INTO hapnd_audit_context (only_row, actor_kind, actor, client, detail) \
         VALUES (1, ?1, ?2, ?3, ?4)",
    )
    .bind(actor.kind.as_str())
    .bind(actor.label.clone())
    .bind(actor.client.map(|c| c.to_string()))
    .bind(actor.detail.clone())
    .execute(conn)
    .await?;
    Ok(())
}

/// Empties the context before the commit: no other connection ever sees it.
async fn clear_actor(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM hapnd_audit_context")
        .execute(conn)
        .await?;
    Ok(())
}

impl SqliteKeyStore {
    async fn insert_audited(&self, record: &KeyRecord, actor: &Actor) -> Result<(), StoreError> {
        record.validate()?;
        bounded(self.query_timeout, async {
            let mut tx = self.pool.begin().await?;
            set_actor(&mut tx, actor).await?;
            insert_row(record).execute(&mut *tx).await?;
            clear_actor(&mut tx).await?;
            tx.commit().await
        })
        .await
    }
}

impl ExpiringKeys for SqliteKeyStore {
    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        let place = |n: usize| format!("?{n}");
        let (filter, binds) = super::expiring_filter(query, "", place, place);
        let statement = format!("{}WHERE {filter}", select!(""));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(statement));
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
        let query = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM hapnd_api_keys WHERE revoked_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at > ?1 AND expires_at <= ?2",
        )
        .bind(to_millis(from))
        .bind(to_millis(until));
        let count = bounded(self.query_timeout, query.fetch_one(&self.pool)).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl AuditTrail for SqliteKeyStore {
    async fn events(&self, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        let (statement, binds) = audit_sql::events_statement(
            "SELECT seq, at, tenant, key_id, event, actor_kind, actor, client, replacement_id, \
             expires_at, detail FROM hapnd_key_events",
            query,
            |n| format!("?{n}"),
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(statement));
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
        let query = sqlx::query(
            "DELETE FROM hapnd_key_events WHERE seq IN \
             (SELECT seq FROM hapnd_key_events WHERE at < ?1 ORDER BY seq LIMIT ?2)",
        )
        .bind(to_millis(before))
        .bind(i64::from(batch));
        let done = bounded(self.query_timeout, query.execute(&self.pool)).await?;
        Ok(done.rows_affected())
    }
}

/// The `data_version` poll loop.
async fn watch(
    options: SqliteConnectOptions,
    invalidator: Invalidator,
    interval: Duration,
    timeout: Duration,
) {
    let mut connection: Option<SqliteConnection> = None;
    // (data_version, last change seq) as of the last poll; None while the channel is lost.
    let mut seen: Option<(i64, i64)> = None;
    let mut backoff = Backoff::new(interval, Duration::from_secs(5).max(interval));
    loop {
        match poll(&mut connection, &options, timeout, seen).await {
            Ok(Poll {
                version,
                seq,
                changed,
            }) => {
                backoff.reset();
                if seen.is_none() {
                    // Restoring flushes: whatever was cached during the gap is re-read.
                    invalidator.channel_restored();
                }
                if changed.iter().any(Option::is_none) {
                    invalidator.invalidate_all();
                } else {
                    changed
                        .iter()
                        .flatten()
                        .for_each(|hash| invalidator.invalidate(hash));
                }
                seen = Some((version, seq));
                tokio::time::sleep(interval).await;
            }
            Err(error) => {
                if seen.is_some() {
                    tracing::warn!(target: "hapnd_auth", %error, "SQLite change feed lost; reading the store on every request");
                    invalidator.channel_lost();
                    seen = None;
                }
                // A fresh connection next time: this one may be what broke.
                connection = None;
                backoff.wait().await;
            }
        }
    }
}

struct Poll {
    version: i64,
    seq: i64,
    /// The keys changed since the last poll; `None` for a log row that names no key.
    changed: Vec<Option<KeyHash>>,
}

/// One poll: `data_version`, and when it moved, the keys changed since `seen`'s seq.
async fn poll(
    connection: &mut Option<SqliteConnection>,
    options: &SqliteConnectOptions,
    timeout: Duration,
    seen: Option<(i64, i64)>,
) -> Result<Poll, StoreError> {
    bounded(timeout, async {
        if connection.is_none() {
            *connection = Some(options.connect().await?);
        }
        let conn = connection.as_mut().expect("connected above");
        let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut *conn)
            .await?;
        let since = match seen {
            Some((last_version, seq)) if last_version == version => {
                return Ok(Poll {
                    version,
                    seq,
                    changed: Vec::new(),
                });
            }
            Some((_, seq)) => seq,
            // First poll (or after a loss, which flushes): start from the newest change.
            None => {
                let seq = sqlx::query_scalar::<_, i64>(
                    "SELECT COALESCE(MAX(seq), 0) FROM hapnd_key_changes",
                )
                .fetch_one(&mut *conn)
                .await?;
                return Ok(Poll {
                    version,
                    seq,
                    changed: Vec::new(),
                });
            }
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, key_hash FROM hapnd_key_changes WHERE seq > ?1 ORDER BY seq",
        )
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        let seq = rows.last().map_or(since, |(seq, _)| *seq);
        // A row that is not a hash (hand-written, corrupt) could hide any change: forget
        // everything rather than skip it.
        let changed = rows
            .into_iter()
            .map(|(_, hash)| <[u8; 32]>::try_from(hash).ok().map(KeyHash::from_bytes))
            .collect();
        Ok(Poll {
            version,
            seq,
            changed,
        })
    })
    .await
}
