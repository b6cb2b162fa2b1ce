//! The database behind the command: SQLite by path, PostgreSQL by `postgres://` URL.

use std::time::{Duration, SystemTime};

use hapnd_auth::{
    ChangeFeed, Invalidator, KeyHash, KeyId, KeyRecord, KeyStore, LastUsed, PostgresKeyStore,
    SqliteKeyStore, StoreError,
};

/// Either store, chosen by the `--db` value.
#[derive(Clone, Debug)]
pub(crate) enum AnyStore {
    Sqlite(SqliteKeyStore),
    Postgres(PostgresKeyStore),
}

impl AnyStore {
    pub(crate) async fn open(url: &str) -> Result<Self, String> {
        if let Some((scheme, _)) = url.split_once("://")
            && !matches!(scheme, "postgres" | "postgresql" | "sqlite")
        {
            // Not the URL itself: it may hold a password.
            return Err(format!(
                "unsupported database URL scheme {scheme:?}: use a SQLite file path, \
                 sqlite://..., or postgres://..."
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PostgresKeyStore::connect(url)
                .await
                .map(AnyStore::Postgres)
                .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))
        } else {
            SqliteKeyStore::connect(url)
                .await
                .map(AnyStore::Sqlite)
                .map_err(|e| format!("cannot open the SQLite database {url}: {e}"))
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }

    /// Starts the feed that brings revocations made by other processes to `invalidator`.
    pub(crate) fn watch(&self, invalidator: Invalidator, poll: Duration) -> ChangeFeed {
        match self {
            AnyStore::Sqlite(s) => s.watch(invalidator, poll),
            AnyStore::Postgres(s) => s.listen(invalidator),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl KeyStore for AnyStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        each!(self, s => s.lookup(hash).await)
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        each!(self, s => s.insert(record).await)
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        each!(self, s => s.get(id).await)
    }

    async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        each!(self, s => s.list(tenant).await)
    }

    async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
        each!(self, s => s.revoke(id, at).await)
    }

    async fn record_usage(&self, used: &[LastUsed]) -> Result<(), StoreError> {
        each!(self, s => s.record_usage(used).await)
    }
}
