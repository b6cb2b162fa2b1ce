//! Key stores: the [`KeyStore`] trait every backend implements, the records it keeps, and
//! the in-memory store.
//!
//! A store keeps hashes, never keys: [`KeyStore::create`] generates the key, stores its
//! [`KeyRecord`] and hands the plaintext back exactly once.
//!
//! ```
//! use hapnd_auth::{Environment, KeyStore, MemoryKeyStore, NewKey};
//!
//! # tokio_test_block_on(async {
//! let store = MemoryKeyStore::new();
//! let created = store
//!     .create(NewKey::new("acme", Environment::Live, "ci-pipeline"))
//!     .await
//!     .unwrap();
//! let found = store.lookup(&created.key.hash()).await.unwrap().unwrap();
//! assert_eq!(found.tenant, "acme");
//! assert_eq!(store.list("acme").await.unwrap().len(), 1);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod audit;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod audit_sql;
mod error;
mod expiry;
mod identity;
mod memory;
mod policy;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

pub use audit::{Actor, ActorKind, AuditTrail, EventQuery, KeyEvent, KeyEventKind, prune_events};
pub use error::{StoreError, StoreErrorKind};
pub use expiry::{ExpiringKeys, ExpiringQuery};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use expiry::{ExpiryBind, expiring_filter};
pub(crate) use identity::is_valid_key_id;
pub use identity::{is_valid_key_name, is_valid_tenant};
pub use memory::MemoryKeyStore;
pub use policy::{
    MAX_METADATA_LEN, MAX_SCOPE_LEN, MAX_SCOPES, Metadata, RateLimit, is_valid_scope,
};
#[cfg(feature = "postgres")]
pub use postgres::{ListenOptions, NOTIFY_CHANNEL, PostgresKeyStore, PostgresKeyStoreBuilder};
pub use record::{CreatedKey, KeyId, KeyRecord, KeyStatus, LastUsed, NewKey};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::ChangeFeed;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteKeyStore, SqliteKeyStoreBuilder};

use crate::key::{ApiKey, KeyHash};

/// A place where key records live. Implemented by [`MemoryKeyStore`] and the durable stores.
///
/// Implementations write `async fn` for each method; the futures must be `Send`. Only
/// [`lookup`](KeyStore::lookup) is on the request path, and only on a cache miss.
///
/// # Writing your own store
///
/// Five methods; `create`, `rotate` and `record_usage` have defaults. Keep records as they
/// are given (hashes only), call [`KeyRecord::validate`] first thing in `insert`, and answer
/// [`StoreError`]s of the right kind: the layer turns any lookup error into 503, never 401.
/// Run the crate's conformance cases (`tests/common/conformance.rs` in the repository)
/// against it. A toy store over a `Vec`:
///
/// ```
/// use std::sync::Mutex;
/// use std::time::SystemTime;
///
/// use hapnd_auth::{
///     Authenticator, Environment, KeyHash, KeyId, KeyRecord, KeyStore, NewKey, StoreError,
///     StoreErrorKind,
/// };
///
/// #[derive(Default)]
/// struct VecStore(Mutex<Vec<KeyRecord>>);
///
/// impl VecStore {
///     fn find(&self, pick: impl Fn(&KeyRecord) -> bool) -> Option<KeyRecord> {
///         self.0.lock().unwrap().iter().find(|r| pick(r)).cloned()
///     }
/// }
///
/// impl KeyStore for VecStore {
///     async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
///         Ok(self.find(|r| r.hash == *hash))
///     }
///
///     async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
///         record.validate()?;
///         let mut records = self.0.lock().unwrap();
///         if records.iter().any(|r| r.hash == record.hash || r.id == record.id) {
///             return Err(StoreError::new(StoreErrorKind::Conflict, "key exists"));
///         }
///         records.push(record.clone());
///         Ok(())
///     }
///
///     async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
///         Ok(self.find(|r| r.id == *id))
///     }
///
///     async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
///         let records = self.0.lock().unwrap();
///         Ok(records.iter().filter(|r| r.tenant == tenant).cloned().collect())
///     }
///
///     async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
///         let mut records = self.0.lock().unwrap();
///         let record = records.iter_mut().find(|r| r.id == *id).ok_or_else(|| {
///             StoreError::new(StoreErrorKind::NotFound, format!("no key has id {id}"))
///         })?;
///         record.revoked_at.get_or_insert(at);
///         Ok(record.clone())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let auth = Authenticator::new(VecStore::default());
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
/// assert!(auth.authenticate_key(created.key.expose_secret()).await.is_ok());
/// auth.revoke(&created.record.id).await.unwrap();
/// assert!(auth.authenticate_key(created.key.expose_secret()).await.is_err());
/// // The identity rules hold here too.
/// let err = auth.create_key(NewKey::new("Acme ", Environment::Live, "ci")).await.unwrap_err();
/// assert_eq!(err.kind(), StoreErrorKind::Invalid);
/// # });
/// ```
pub trait KeyStore: Send + Sync + 'static {
    /// Finds the record whose hash is `hash`, revoked or not.
    fn lookup(
        &self,
        hash: &KeyHash,
    ) -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send;

    /// The lookup the authenticator makes on a cache miss: [`lookup`](KeyStore::lookup),
    /// except that the record's `last_used_at` may be left `None`, since answering a
    /// request never reads it. A store that keeps last-used times apart from the keys
    /// answers from the key's own row: [`PostgresKeyStore`](crate::PostgresKeyStore)
    /// then reads one table instead of two, and a lock on the usage table never stalls a
    /// request. The default calls `lookup`.
    fn lookup_for_request(
        &self,
        hash: &KeyHash,
    ) -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send {
        self.lookup(hash)
    }

    /// Stores a new record. A record whose hash or id is already stored is refused with
    /// [`StoreErrorKind::Conflict`]; one whose identity does not pass
    /// [`KeyRecord::validate`] with [`StoreErrorKind::Invalid`] (call it first thing).
    fn insert(&self, record: &KeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Finds a record by id.
    fn get(&self, id: &KeyId)
    -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send;

    /// Lists a tenant's keys, oldest first. Records hold hashes and hints only.
    fn list(&self, tenant: &str)
    -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;

    /// One page of a listing: the keys of `page.tenant` (of every tenant when it is
    /// `None`) that come after `page.after`, at most `page.limit` of them, ordered by
    /// tenant, then creation time, then id (a tenant's keys oldest first, as in
    /// [`list`](KeyStore::list)). Durable stores answer each page with one bounded query
    /// that walks their `(tenant, created_at)` index, so a listing of any size, or an "is
    /// there any key" check (`limit` 1), never loads a whole tenant.
    ///
    /// The default filters [`list`](KeyStore::list), and cannot list every tenant: it
    /// answers [`StoreErrorKind::Invalid`] for `tenant: None`.
    fn list_page(
        &self,
        page: &ListPage,
    ) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send {
        async move {
            let Some(tenant) = page.tenant.as_deref() else {
                return Err(StoreError::invalid(
                    "this key store cannot list the keys of every tenant".to_owned(),
                ));
            };
            let keys = self.list(tenant).await?;
            Ok(page.filter(keys))
        }
    }

    /// Marks a key revoked at `at` and returns its record. Revoking a revoked key changes
    /// nothing and returns it as it is; an unknown id is [`StoreErrorKind::NotFound`].
    ///
    /// This changes the store only: to reject the key at once in a running layer, revoke
    /// through [`Authenticator::revoke`](crate::Authenticator::revoke), or let the store's
    /// change feed invalidate it.
    fn revoke(
        &self,
        id: &KeyId,
        at: SystemTime,
    ) -> impl Future<Output = Result<KeyRecord, StoreError>> + Send;

    /// Records when keys were last used. The layer calls it in batches, off the request
    /// path; the default keeps nothing.
    fn record_usage(
        &self,
        used: &[LastUsed],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = used;
        async { Ok(()) }
    }

    /// Generates a key, stores its record, and returns both: the only time the key is seen.
    fn create(&self, new: NewKey) -> impl Future<Output = Result<CreatedKey, StoreError>> + Send {
        async move {
            new.validate()?;
            let key = ApiKey::generate(new.environment);
            let record = KeyRecord::for_key(&key, new, SystemTime::now());
            self.insert(&record).await?;
            Ok(CreatedKey { key, record })
        }
    }

    /// Creates a replacement for key `id` with the same tenant, environment, name, scopes,
    /// metadata and rate limit. The old key stays active until it is revoked.
    fn rotate(&self, id: &KeyId) -> impl Future<Output = Result<CreatedKey, StoreError>> + Send {
        async move {
            let old = self
                .get(id)
                .await?
                .ok_or_else(|| StoreError::not_found(id))?;
            let new = NewKey::new(old.tenant.clone(), old.environment, old.name.clone());
            self.create(KeyPolicy::apply(None, &old, new)).await
        }
    }

    /// [`create`](KeyStore::create), recording `actor` in the audit trail of a store that
    /// keeps one ([`AuditTrail`]). The default ignores `actor`.
    fn create_as(
        &self,
        new: NewKey,
        actor: &Actor,
    ) -> impl Future<Output = Result<CreatedKey, StoreError>> + Send {
        let _ = actor;
        self.create(new)
    }

    /// [`revoke`](KeyStore::revoke), recording `actor` in the audit trail of a store that
    /// keeps one. An actor of kind [`ActorKind::SecretScanning`] also records a
    /// [`KeyEventKind::ReportedLeaked`] event with its detail (the report's URL), in the same
    /// transaction. The default ignores `actor`.
    fn revoke_as(
        &self,
        id: &KeyId,
        at: SystemTime,
        actor: &Actor,
    ) -> impl Future<Output = Result<KeyRecord, StoreError>> + Send {
        let _ = actor;
        self.revoke(id, at)
    }

    /// A rotation, scheduled or not: creates a replacement for key `id` with the same
    /// tenant, environment and name (and `roll`'s expiry for it), and when
    /// `roll.old_expires_at` is given makes the old key expire then (or keeps its expiry if
    /// that is sooner), all in one transaction, recorded with `actor`: the replacement's
    /// `created`, the old key's `rotated` (naming the replacement) and `expiry_scheduled`.
    /// Answers the replacement and the old key's record as it now is.
    ///
    /// The default rotates without an audit trail, and refuses a `roll` with any expiry
    /// ([`StoreErrorKind::Invalid`]): it has no way to change a stored expiry.
    fn rotate_as(
        &self,
        id: &KeyId,
        roll: Roll,
        actor: &Actor,
    ) -> impl Future<Output = Result<Rotation, StoreError>> + Send {
        let _ = actor;
        async move {
            if roll.old_expires_at.is_some()
                || roll.replacement_expires_at.is_some()
                || roll.replacement_policy.is_some()
            {
                return Err(StoreError::invalid(
                    "this key store cannot schedule an expiry or give a replacement its own policy"
                        .to_owned(),
                ));
            }
            let replacement = self.rotate(id).await?;
            let old = self
                .get(id)
                .await?
                .ok_or_else(|| StoreError::not_found(id))?;
            Ok(Rotation { replacement, old })
        }
    }
}

/// What a rotation does to the old key and gives the new one: see [`KeyStore::rotate_as`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use hapnd_auth::Roll;
///
/// let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
/// let roll = Roll::new().old_expires_at(tomorrow);
/// assert_eq!(roll.old_expires_at, Some(tomorrow));
/// assert_eq!(roll.replacement_expires_at, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Roll {
    /// When the old key stops working; `None` leaves it as it is (active until revoked).
    pub old_expires_at: Option<SystemTime>,
    /// When the replacement stops working; `None`: never.
    pub replacement_expires_at: Option<SystemTime>,
    /// The replacement's scopes, metadata and rate limit instead of the old key's; `None`
    /// (the default): the old key's are copied.
    pub replacement_policy: Option<KeyPolicy>,
}

/// The scopes, metadata and rate limit a [`Roll`] gives a replacement instead of the old
/// key's (checked like [`NewKey`]'s: a bad one is refused and nothing is written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// The scopes; empty: full access.
    pub scopes: Vec<String>,
    /// The metadata.
    pub metadata: Option<Metadata>,
    /// The rate limit.
    pub rate_limit: Option<RateLimit>,
}

impl KeyPolicy {
    /// A policy with these parts.
    pub fn new(
        scopes: Vec<String>,
        metadata: Option<Metadata>,
        rate_limit: Option<RateLimit>,
    ) -> Self {
        KeyPolicy {
            scopes,
            metadata,
            rate_limit,
        }
    }

    /// `new` with this policy, or with `old`'s when `policy` is `None`.
    pub(crate) fn apply(policy: Option<KeyPolicy>, old: &KeyRecord, mut new: NewKey) -> NewKey {
        match policy {
            Some(p) => {
                new.scopes = p.scopes;
                new.metadata = p.metadata;
                new.rate_limit = p.rate_limit;
            }
            None => {
                new.scopes = old.scopes.clone();
                new.metadata = old.metadata.clone();
                new.rate_limit = old.rate_limit;
            }
        }
        new
    }
}

impl Roll {
    /// A rotation that leaves the old key as it is and gives the replacement no expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the old key expire at `at` (a scheduled roll).
    pub fn old_expires_at(mut self, at: SystemTime) -> Self {
        self.old_expires_at = Some(at);
        self
    }

    /// Makes the replacement expire at `at`.
    pub fn replacement_expires_at(mut self, at: SystemTime) -> Self {
        self.replacement_expires_at = Some(at);
        self
    }

    /// Gives the replacement `policy` instead of the old key's.
    pub fn replacement_policy(mut self, policy: KeyPolicy) -> Self {
        self.replacement_policy = Some(policy);
        self
    }
}

/// What [`KeyStore::rotate_as`] answers: the replacement, shown once, and the old key.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The new key and its record.
    pub replacement: CreatedKey,
    /// The old key's record after the rotation (with its scheduled expiry, if one was asked).
    pub old: KeyRecord,
}

/// The expiry a scheduled roll gives the old key: `asked`, unless it already expires sooner.
pub(crate) fn rolled_expiry(current: Option<SystemTime>, asked: SystemTime) -> SystemTime {
    current.map_or(asked, |c| c.min(asked))
}

/// Which keys one page of a listing holds: see [`KeyStore::list_page`].
///
/// ```
/// use hapnd_auth::ListPage;
///
/// let first = ListPage::new(Some("acme"), 100);
/// assert_eq!(first.tenant.as_deref(), Some("acme"));
/// assert!(first.after.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Only this tenant's keys, or every tenant's.
    pub tenant: Option<String>,
    /// Only keys after this one in the listing's order: its tenant, creation time and id
    /// (those of the last record of the previous page).
    pub after: Option<(String, SystemTime, KeyId)>,
    /// At most this many keys.
    pub limit: u32,
}

impl ListPage {
    /// The first page: at most `limit` keys of `tenant` (or of every tenant).
    pub fn new(tenant: Option<&str>, limit: u32) -> Self {
        ListPage {
            tenant: tenant.map(str::to_owned),
            after: None,
            limit,
        }
    }

    /// The page that follows the one ending with `last`.
    pub fn after(mut self, last: &KeyRecord) -> Self {
        self.after = Some((last.tenant.clone(), last.created_at, last.id.clone()));
        self
    }

    /// Keeps the keys of `keys` that belong on this page, in the listing's order.
    pub(crate) fn filter(&self, mut keys: Vec<KeyRecord>) -> Vec<KeyRecord> {
        keys.sort_by(|a, b| {
            (&a.tenant, a.created_at, &a.id).cmp(&(&b.tenant, b.created_at, &b.id))
        });
        keys.into_iter()
            .filter(|r| self.tenant.as_deref().is_none_or(|t| r.tenant == t))
            .filter(|r| match &self.after {
                Some((tenant, at, id)) => (&r.tenant, r.created_at, &r.id) > (tenant, *at, id),
                None => true,
            })
            .take(self.limit as usize)
            .collect()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe face of a [`KeyStore`], so the layer's type does not name the store.
pub(crate) trait DynKeyStore: Send + Sync + 'static {
    fn lookup_for_request<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>>;
    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<CreatedKey, StoreError>>;
    fn rotate<'a>(&'a self, id: &'a KeyId) -> BoxFuture<'a, Result<CreatedKey, StoreError>>;
    fn create_as<'a>(
        &'a self,
        new: NewKey,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<CreatedKey, StoreError>>;
    fn revoke_as<'a>(
        &'a self,
        id: &'a KeyId,
        at: SystemTime,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<KeyRecord, StoreError>>;
    fn rotate_as<'a>(
        &'a self,
        id: &'a KeyId,
        roll: Roll,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>>;
    // For the last-used batcher, which is not written yet.
    #[allow(dead_code)]
    fn record_usage<'a>(&'a self, used: &'a [LastUsed]) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<T: KeyStore> DynKeyStore for T {
    fn lookup_for_request<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        Box::pin(KeyStore::lookup_for_request(self, hash))
    }

    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<CreatedKey, StoreError>> {
        Box::pin(KeyStore::create(self, new))
    }

    fn rotate<'a>(&'a self, id: &'a KeyId) -> BoxFuture<'a, Result<CreatedKey, StoreError>> {
        Box::pin(KeyStore::rotate(self, id))
    }

    fn create_as<'a>(
        &'a self,
        new: NewKey,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<CreatedKey, StoreError>> {
        Box::pin(KeyStore::create_as(self, new, actor))
    }

    fn revoke_as<'a>(
        &'a self,
        id: &'a KeyId,
        at: SystemTime,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<KeyRecord, StoreError>> {
        Box::pin(KeyStore::revoke_as(self, id, at, actor))
    }

    fn rotate_as<'a>(
        &'a self,
        id: &'a KeyId,
        roll: Roll,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        Box::pin(KeyStore::rotate_as(self, id, roll, actor))
    }

    fn record_usage<'a>(&'a self, used: &'a [LastUsed]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(KeyStore::record_usage(self, used))
    }
}
