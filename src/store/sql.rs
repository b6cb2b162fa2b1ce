//! What the SQL stores share: time and row conversions, error mapping, bounded calls, the
//! embedded migrations, and the change-feed handle.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::cache::Invalidator;
use crate::key::{Environment, KeyHash};

use super::{KeyId, KeyRecord, Metadata, StoreError, StoreErrorKind};

/// A record's policy columns as bound into an `INSERT`: scopes space-separated (`NULL` for
/// none), metadata as JSON, the rate limit as text.
pub(crate) fn policy_columns(
    record: &KeyRecord,
) -> (Option<String>, Option<String>, Option<String>) {
    (
        (!record.scopes.is_empty()).then(|| record.scopes.join(" ")),
        record.metadata.as_ref().map(|m| m.as_json().to_owned()),
        record.rate_limit.map(|l| l.to_string()),
    )
}

/// The table that records which of *our* migrations ran. Not sqlx's default
/// `_sqlx_migrations`, so an application that keeps its own sqlx migrations in the same
/// database does not see ours as unknown versions (and we do not see its).
pub(crate) const MIGRATIONS_TABLE: &str = "_hapnd_auth_migrations";

/// The migrations embedded in the binary, built from the files under `migrations/`.
///
/// Built by hand rather than with `sqlx::migrate!`, which needs sqlx's `macros` feature
/// and its proc-macro crates; the files keep `migrate!`'s naming so the switch is one line.
pub(crate) fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// UTC unix milliseconds: what the stores keep. Sub-millisecond precision is dropped.
pub(crate) fn to_millis(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A row as read, before its text is checked.
pub(crate) struct RawRecord {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) environment: String,
    pub(crate) name: String,
    pub(crate) key_hash: Vec<u8>,
    pub(crate) hint: String,
    pub(crate) created_at: i64,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) scopes: Option<String>,
    pub(crate) metadata: Option<String>,
    pub(crate) rate_limit: Option<String>,
}

impl RawRecord {
    pub(crate) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let corrupt = |what: &str| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!("the stored row of key {} has an invalid {what}", self.id),
            )
        };
        let environment = match self.environment.as_str() {
            "live" => Environment::Live,
            "sandbox" => Environment::Sandbox,
            _ => return Err(corrupt("environment")),
        };
        let hash: [u8; 32] = self
            .key_hash
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("key hash"))?;
        let scopes: Vec<String> = self
            .scopes
            .as_deref()
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        super::policy::check_scopes(&scopes).map_err(|_| corrupt("scope list"))?;
        let metadata = match self.metadata.as_deref() {
            Some(json) => Some(Metadata::parse(json).map_err(|_| corrupt("metadata"))?),
            None => None,
        };
        let rate_limit = match self.rate_limit.as_deref() {
            Some(text) => Some(text.parse().map_err(|_| corrupt("rate limit"))?),
            None => None,
        };
        Ok(KeyRecord {
            id: KeyId::new(self.id),
            tenant: self.tenant,
            environment,
            name: self.name,
            hash: KeyHash::from_bytes(hash),
            hint: self.hint,
            created_at: from_millis(self.created_at),
            revoked_at: self.revoked_at.map(from_millis),
            expires_at: self.expires_at.map(from_millis),
            last_used_at: self.last_used_at.map(from_millis),
            scopes,
            metadata,
            rate_limit,
        })
    }
}

/// Reads the thirteen record columns, in the order the stores' `SELECT`s name them.
macro_rules! raw_record {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        // A closure, so `?` leaves it and not the function the macro is used in.
        (|| -> Result<$crate::store::sql::RawRecord, sqlx::Error> {
            Ok($crate::store::sql::RawRecord {
                id: row.try_get(0)?,
                tenant: row.try_get(1)?,
                environment: row.try_get(2)?,
                name: row.try_get(3)?,
                key_hash: row.try_get(4)?,
                hint: row.try_get(5)?,
                created_at: row.try_get(6)?,
                revoked_at: row.try_get(7)?,
                expires_at: row.try_get(8)?,
                last_used_at: row.try_get(9)?,
                scopes: row.try_get(10)?,
                metadata: row.try_get(11)?,
                rate_limit: row.try_get(12)?,
            })
        })()
    }};
}
pub(crate) use raw_record;

/// A driver error as a [`StoreError`]. Messages name no key and no hash: a unique
/// violation's detail (which quotes the hash) is dropped.
pub(crate) fn map_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::new(
            StoreErrorKind::Conflict,
            "a key with the same id or hash already exists",
        ),
        // PostgreSQL's query_canceled: what statement_timeout raises.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => StoreError::new(
            StoreErrorKind::Timeout,
            "the database cancelled a slow query",
        )
        .with_source(error),
        // A malformed URL or option: retrying will not help. sqlx's message names the
        // problem, not the URL, so no password is echoed.
        sqlx::Error::Configuration(_) => StoreError::new(
            StoreErrorKind::Invalid,
            "the database connection settings are invalid",
        )
        .with_source(error),
        sqlx::Error::PoolTimedOut => StoreError::new(
            StoreErrorKind::Unavailable,
            "no database connection could be had in time",
        )
        .with_source(error),
        _ => StoreError::unavailable(error),
    }
}

/// Runs one store call (pool acquire included) for at most `limit`.
///
/// Server-side timeouts cannot fire when the server or the network is gone; this one is
/// the client's own, so a dead database fails the call instead of hanging the request.
pub(crate) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Timeout,
            format!("the database did not answer within {limit:?}"),
        )),
    }
}

/// A running change feed (PostgreSQL `LISTEN`, SQLite `data_version` polling) that feeds an
/// [`Invalidator`]. Dropping it stops the feed.
///
/// A feed that stops, for whatever reason, reports the channel lost: revocations made
/// elsewhere would no longer reach this process, so the cache is bypassed and every
/// request reads the store. Keep the handle for as long as the authenticator serves
/// requests, or [`detach`](ChangeFeed::detach) it. A handle dropped while its feed runs
/// (`let _ = store.watch(..)` drops it at once) logs a `WARN` on the `hapnd_auth` target;
/// [`abort`](ChangeFeed::abort) stops a feed on purpose without one.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use hapnd_auth::{Authenticator, ChannelHealth, SqliteKeyStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteKeyStore::connect(dir.path().join("keys.db").to_str().unwrap()).await.unwrap();
/// let auth = Authenticator::new(store.clone());
/// let feed = store.watch(auth.invalidator(), SqliteKeyStore::DEFAULT_WATCH_INTERVAL);
/// // ... serve requests while `feed` lives ...
/// feed.abort(); // or `feed.detach()` to let it run for the rest of the runtime's life
/// assert_eq!(auth.channel_health(), ChannelHealth::Degraded);
/// # });
/// ```
#[must_use = "the change feed stops when its handle is dropped; keep it, or call `detach`"]
pub struct ChangeFeed {
    task: Option<tokio::task::JoinHandle<()>>,
    invalidator: Invalidator,
    aborted: std::sync::atomic::AtomicBool,
    counters: Arc<FeedCounters>,
}

/// What a feed counts, read through its [`ChangeFeed`] handle.
#[derive(Default)]
pub(crate) struct FeedCounters {
    /// Notifications received (PostgreSQL).
    pub(crate) received: AtomicU64,
    /// Reads of the change log (PostgreSQL).
    pub(crate) log_reads: AtomicU64,
}

impl ChangeFeed {
    /// Starts `run` on a task; it is handed the invalidator and the counters behind
    /// [`notifications_received`](Self::notifications_received).
    pub(crate) fn spawn<F>(
        invalidator: Invalidator,
        run: impl FnOnce(Invalidator, Arc<FeedCounters>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Unconfirmed until the feed's first success, and from the moment this returns:
        // reported here, not in the task, which may not have run yet.
        invalidator.channel_lost();
        let guard = LostOnDrop(invalidator.clone());
        let counters = Arc::new(FeedCounters::default());
        let feed = run(invalidator.clone(), Arc::clone(&counters));
        let task = tokio::spawn(async move {
            let _guard = guard;
            feed.await;
        });
        ChangeFeed {
            task: Some(task),
            invalidator,
            aborted: Default::default(),
            counters,
        }
    }

    /// How many notifications the feed has received since it started, all channels and
    /// reconnections together: with PostgreSQL, every `NOTIFY` delivered to the listener
    /// (heartbeats are reads, not notifications); a SQLite feed polls and receives none. For
    /// metrics, and to see that an idle instance hears no notifications however many
    /// instances share the database.
    pub fn notifications_received(&self) -> u64 {
        self.counters.received.load(Ordering::Relaxed)
    }

    /// How many times a PostgreSQL feed has read the change log (heartbeats and
    /// notification-triggered reads together); 0 for SQLite. For tests and benchmarks that
    /// check that notifications are coalesced into few reads.
    #[doc(hidden)]
    pub fn change_log_reads(&self) -> u64 {
        self.counters.log_reads.load(Ordering::Relaxed)
    }

    /// Stops the feed, on purpose (no warning). The channel is reported lost before this
    /// returns.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            self.aborted
                .store(true, std::sync::atomic::Ordering::Relaxed);
            task.abort();
            // The task's own guard runs only when the runtime next drops it: report now.
            self.invalidator.channel_lost();
        }
    }

    /// Whether the feed has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Lets the feed run for the rest of the runtime's life, without a handle.
    pub fn detach(mut self) {
        self.task = None;
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        let running =
            !self.is_finished() && !self.aborted.load(std::sync::atomic::Ordering::Relaxed);
        if running {
            tracing::warn!(
                target: "hapnd_auth",
                "a ChangeFeed handle was dropped: the change feed stops, and from now on the \
                 cache is bypassed (every request reads the key store). Keep the handle for as \
                 long as the authenticator serves requests, or call `detach()`; call `abort()` \
                 to stop it on purpose"
            );
        }
        self.abort();
    }
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("finished", &self.is_finished())
            .field("notifications_received", &self.notifications_received())
            .finish()
    }
}

/// Reports the channel lost when the feed's task ends or is aborted.
struct LostOnDrop(Invalidator);

impl Drop for LostOnDrop {
    fn drop(&mut self) {
        self.0.channel_lost();
    }
}

/// Doubling reconnect delays between `min` and `max`.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_both_sides_of_the_epoch() {
        for ms in [0_i64, 1, 1_795_765_155_914, -1, -86_400_000] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
        let at = UNIX_EPOCH + Duration::new(1_795_765_155, 914_865_432);
        assert_eq!(
            to_millis(at),
            1_795_765_155_914,
            "sub-millisecond part dropped"
        );
    }

    #[test]
    fn corrupt_rows_are_errors_that_name_the_id_only() {
        let raw = |environment: &str, key_hash: Vec<u8>| RawRecord {
            id: "key_x".to_owned(),
            tenant: "t".to_owned(),
            environment: environment.to_owned(),
            name: "n".to_owned(),
            key_hash,
            hint: "h".to_owned(),
            created_at: 0,
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
            scopes: None,
            metadata: None,
            rate_limit: None,
        };
        assert!(raw("live", vec![7; 32]).into_record().is_ok());
        let err = raw("prod", vec![7; 32]).into_record().unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid);
        assert!(err.to_string().contains("key_x"));
        let err = raw("sandbox", vec![7; 31]).into_record().unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid);
    }
}
