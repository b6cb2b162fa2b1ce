//! Expiry ahead: which keys stop working soon, so nobody is surprised by an
//! `api_key_expired`.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use hapnd_auth::{Environment, ExpiringKeys, ExpiringQuery, KeyStore, MemoryKeyStore, NewKey};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryKeyStore::new();
//! let day = Duration::from_secs(24 * 3600);
//! let now = SystemTime::now();
//! let soon = NewKey::new("acme", Environment::Live, "ci").expires_at(now + day);
//! let later = NewKey::new("acme", Environment::Live, "batch").expires_at(now + 30 * day);
//! store.create(soon).await.unwrap();
//! store.create(later).await.unwrap();
//!
//! let week = ExpiringQuery::within(now, 7 * day, 100);
//! let keys = store.expiring(&week).await.unwrap();
//! assert_eq!(keys.len(), 1);
//! assert_eq!(keys[0].name, "ci");
//! assert_eq!(store.count_expiring(now, now + 7 * day).await.unwrap(), 1);
//! # });
//! ```

use std::future::Future;
use std::time::{Duration, SystemTime};

use super::{KeyId, KeyRecord, KeyStore, StoreError};

/// One page of the keys that expire in a window: unrevoked keys whose expiry is after
/// `from` and at or before `until`, soonest first (then by id), at most `limit`, of one
/// tenant or of every tenant. A key that has already expired at `from` is not in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiringQuery {
    /// Only this tenant's keys, or every tenant's.
    pub tenant: Option<String>,
    /// The window's start (exclusive): usually now.
    pub from: SystemTime,
    /// The window's end (inclusive).
    pub until: SystemTime,
    /// Only keys after this one in the listing's order: the expiry and id of the last
    /// record of the previous page.
    pub after: Option<(SystemTime, KeyId)>,
    /// At most this many keys (at most [`ExpiringQuery::MAX_LIMIT`]).
    pub limit: u32,
}

impl ExpiringQuery {
    /// The most keys one page holds.
    pub const MAX_LIMIT: u32 = 1000;

    /// The keys of every tenant expiring within `window` of `from`, at most `limit`.
    pub fn within(from: SystemTime, window: Duration, limit: u32) -> Self {
        ExpiringQuery {
            tenant: None,
            from,
            until: from.checked_add(window).unwrap_or(from),
            after: None,
            limit: limit.min(Self::MAX_LIMIT),
        }
    }

    /// The same window, of `tenant` only.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// The page that follows the one ending with `last`.
    pub fn after(mut self, last: &KeyRecord) -> Self {
        self.after = last.expires_at.map(|at| (at, last.id.clone()));
        self
    }

    /// Whether `record` is in the window (the page cursor aside).
    pub fn matches(&self, record: &KeyRecord) -> bool {
        !record.is_revoked()
            && self.tenant.as_deref().is_none_or(|t| record.tenant == t)
            && record
                .expires_at
                .is_some_and(|at| at > self.from && at <= self.until)
    }

    /// Keeps the records of `keys` that belong on this page, in the listing's order.
    pub(crate) fn filter(&self, keys: impl Iterator<Item = KeyRecord>) -> Vec<KeyRecord> {
        let mut keys: Vec<KeyRecord> = keys
            .filter(|r| self.matches(r))
            .filter(|r| match (&self.after, r.expires_at) {
                (Some((at, id)), Some(expires)) => (expires, &r.id) > (*at, id),
                _ => true,
            })
            .collect();
        keys.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        keys.truncate(self.limit.min(Self::MAX_LIMIT) as usize);
        keys
    }
}

/// A store that can say which keys expire soon: [`MemoryKeyStore`](crate::MemoryKeyStore),
/// [`SqliteKeyStore`](crate::SqliteKeyStore), [`PostgresKeyStore`](crate::PostgresKeyStore).
/// The SQL stores answer both with one bounded statement over a partial index on
/// `expires_at` (unrevoked keys that expire), so neither reads keys outside the window.
pub trait ExpiringKeys: KeyStore {
    /// One page of the keys expiring in the query's window, soonest first.
    fn expiring(
        &self,
        query: &ExpiringQuery,
    ) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;

    /// How many unrevoked keys (of every tenant) expire after `from` and at or before
    /// `until`.
    fn count_expiring(
        &self,
        from: SystemTime,
        until: SystemTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A value the SQL stores bind, in order.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) enum ExpiryBind {
    Text(String),
    Millis(i64),
}

/// The filters of [`ExpiringKeys::expiring`] for a SQL store, after `WHERE`, with the
/// order and limit: `time(n)` spells the n-th placeholder as a time, `param(n)` as a value.
/// The predicate repeats the partial index's (`revoked_at IS NULL AND expires_at IS NOT
/// NULL`) so both databases use it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn expiring_filter(
    query: &ExpiringQuery,
    column: &str,
    time: fn(usize) -> String,
    param: fn(usize) -> String,
) -> (String, Vec<ExpiryBind>) {
    use super::sql::to_millis;
    let mut binds = vec![
        ExpiryBind::Millis(to_millis(query.from)),
        ExpiryBind::Millis(to_millis(query.until)),
    ];
    let mut sql = format!(
        "{column}revoked_at IS NULL AND {column}expires_at IS NOT NULL \
         AND {column}expires_at > {} AND {column}expires_at <= {}",
        time(1),
        time(2)
    );
    if let Some(tenant) = &query.tenant {
        binds.push(ExpiryBind::Text(tenant.clone()));
        sql.push_str(&format!(" AND {column}tenant = {}", param(binds.len())));
    }
    if let Some((at, id)) = &query.after {
        binds.push(ExpiryBind::Millis(to_millis(*at)));
        let at = time(binds.len());
        binds.push(ExpiryBind::Text(id.as_str().to_owned()));
        sql.push_str(&format!(
            " AND ({column}expires_at, {column}id) > ({at}, {})",
            param(binds.len())
        ));
    }
    binds.push(ExpiryBind::Millis(i64::from(
        query.limit.min(ExpiringQuery::MAX_LIMIT),
    )));
    sql.push_str(&format!(
        " ORDER BY {column}expires_at, {column}id LIMIT {}",
        param(binds.len())
    ));
    (sql, binds)
}
