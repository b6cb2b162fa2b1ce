//! What a store keeps about a key: [`KeyRecord`], and the requests that make one.

use std::fmt;
use std::time::SystemTime;

use crate::key::{ApiKey, Environment, KeyHash};

use super::policy::{self, Metadata, RateLimit};
use super::{StoreError, identity};

/// A key's public identifier (`key_` and 16 base62 characters): safe to log and show.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// A new random id.
    pub fn generate() -> Self {
        let mut id = String::with_capacity(20);
        id.push_str("key_");
        crate::key::push_random_base62(&mut id, 16);
        KeyId(id)
    }

    /// Wraps an id read from storage or a command line.
    pub fn new(id: impl Into<String>) -> Self {
        KeyId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Everything a store keeps about one key: no secret, only its hash and masked hint.
///
/// With the `serde` feature it serializes as its fields, the hash as hex and times as UTC
/// unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyRecord {
    /// Public identifier.
    pub id: KeyId,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The environment the key opens; always the one its prefix names.
    pub environment: Environment,
    /// A human name: `ci-pipeline`, `github-actions-prod`.
    pub name: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Masked hint: `sk_live_...a1b2`.
    pub hint: String,
    /// When the key was created.
    #[cfg_attr(feature = "serde", serde(with = "crate::serialize::unix_ms"))]
    pub created_at: SystemTime,
    /// When the key was revoked, if it was.
    #[cfg_attr(feature = "serde", serde(with = "crate::serialize::unix_ms::option"))]
    pub revoked_at: Option<SystemTime>,
    /// When the key stops working, if ever.
    #[cfg_attr(feature = "serde", serde(with = "crate::serialize::unix_ms::option"))]
    pub expires_at: Option<SystemTime>,
    /// When the key was last seen in a request, as far as the store has been told.
    #[cfg_attr(feature = "serde", serde(with = "crate::serialize::unix_ms::option"))]
    pub last_used_at: Option<SystemTime>,
    /// What the key may do ([`is_valid_scope`](crate::is_valid_scope)); empty: everything.
    #[cfg_attr(feature = "serde", serde(default))]
    pub scopes: Vec<String>,
    /// A JSON object for the handlers; its `Debug` shows its size only.
    #[cfg_attr(feature = "serde", serde(default))]
    pub metadata: Option<Metadata>,
    /// How many requests the key may make; `None`: no limit.
    #[cfg_attr(feature = "serde", serde(default))]
    pub rate_limit: Option<RateLimit>,
}

impl KeyRecord {
    /// The record for a freshly generated `key`, with `new`'s tenant, name and expiry.
    ///
    /// # Panics
    /// If `new.environment` is not the environment `key`'s prefix names: a record's
    /// environment is always its key's, and silently taking one of the two would hand out a
    /// principal of the environment the caller did not ask for. [`KeyRecord::try_for_key`]
    /// answers an error instead.
    pub fn for_key(key: &ApiKey, new: NewKey, now: SystemTime) -> Self {
        match Self::try_for_key(key, new, now) {
            Ok(record) => record,
            Err(e) => panic!("KeyRecord::for_key: {e}"),
        }
    }

    /// The record for a freshly generated `key`, or [`StoreErrorKind::Invalid`] when
    /// `new.environment` is not the key's environment.
    ///
    /// The identity is not checked here: stores check it on insert
    /// ([`KeyRecord::validate`]).
    ///
    /// [`StoreErrorKind::Invalid`]: crate::StoreErrorKind::Invalid
    pub fn try_for_key(key: &ApiKey, new: NewKey, now: SystemTime) -> Result<Self, StoreError> {
        if new.environment != key.environment() {
            return Err(StoreError::invalid(format!(
                "the new key is a {} key but the request asks for {}",
                key.environment(),
                new.environment
            )));
        }
        Ok(KeyRecord {
            id: KeyId::generate(),
            tenant: new.tenant,
            environment: key.environment(),
            name: new.name,
            hash: key.hash(),
            hint: key.hint(),
            created_at: now,
            revoked_at: None,
            expires_at: new.expires_at,
            last_used_at: None,
            scopes: new.scopes,
            metadata: new.metadata,
            rate_limit: new.rate_limit,
        })
    }

    /// Checks what the record says about its owner: a tenant of the strict grammar
    /// (`^[a-z0-9][a-z0-9._-]{0,62}$`), a printable key name (see [`NewKey::validate`]),
    /// an id of visible ASCII, and scopes of the scope grammar. Every store calls it before writing a record, and the
    /// authenticator calls it on every record a lookup returns, so an identity that could
    /// not be shown safely or sent in a header never becomes a [`Principal`](crate::Principal).
    pub fn validate(&self) -> Result<(), StoreError> {
        identity::check_tenant(&self.tenant)?;
        identity::check_key_name(&self.name)?;
        identity::check_key_id(self.id.as_str())?;
        policy::check_scopes(&self.scopes)
    }

    /// Whether the key carries a scope, metadata or a rate limit.
    pub fn has_policy(&self) -> bool {
        !self.scopes.is_empty() || self.metadata.is_some() || self.rate_limit.is_some()
    }

    /// Whether the key was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Whether the key has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the key opens anything at `now`: what a key listing shows. A revoked key is
    /// [`KeyStatus::Revoked`] even once its expiry has passed.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use hapnd_auth::{ApiKey, Environment, KeyRecord, KeyStatus, NewKey};
    ///
    /// let key = ApiKey::generate(Environment::Live);
    /// let now = SystemTime::now();
    /// let new = NewKey::new("acme", Environment::Live, "ci").expires_at(now + Duration::from_secs(60));
    /// let mut record = KeyRecord::for_key(&key, new, now);
    /// assert_eq!(record.status_at(now), KeyStatus::Active);
    /// assert_eq!(record.status_at(now + Duration::from_secs(60)), KeyStatus::Expired);
    /// record.revoked_at = Some(now);
    /// assert_eq!(record.status_at(now).as_str(), "revoked");
    /// ```
    pub fn status_at(&self, now: SystemTime) -> KeyStatus {
        if self.is_revoked() {
            KeyStatus::Revoked
        } else if self.is_expired_at(now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// Whether a key opens anything: see [`KeyRecord::status_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Neither revoked nor expired: requests with it are admitted.
    Active,
    /// Revoked: rejected with `api_key_revoked`.
    Revoked,
    /// Past its expiry: rejected with `api_key_expired`.
    Expired,
}

impl KeyStatus {
    /// `active`, `revoked` or `expired`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to create a key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewKey {
    /// The tenant it belongs to.
    pub tenant: String,
    /// The environment it opens.
    pub environment: Environment,
    /// Its human name.
    pub name: String,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// What it may do; empty (the default): everything.
    pub scopes: Vec<String>,
    /// Its metadata.
    pub metadata: Option<Metadata>,
    /// Its rate limit.
    pub rate_limit: Option<RateLimit>,
}

impl NewKey {
    /// A key for `tenant` and `environment`, named `name`, that does not expire.
    pub fn new(
        tenant: impl Into<String>,
        environment: Environment,
        name: impl Into<String>,
    ) -> Self {
        NewKey {
            tenant: tenant.into(),
            environment,
            name: name.into(),
            expires_at: None,
            scopes: Vec::new(),
            metadata: None,
            rate_limit: None,
        }
    }

    /// Makes the key expire at `at`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Adds a scope: the key may then do only what its scopes name. Checked by
    /// [`validate`](Self::validate) (and so by every store's `create`).
    ///
    /// ```
    /// use hapnd_auth::{Environment, NewKey, RateLimit, Metadata};
    ///
    /// let new = NewKey::new("acme", Environment::Live, "reporting")
    ///     .scope("events:read")
    ///     .scope("reports:read")
    ///     .metadata(Metadata::parse(r#"{"plan": "pro"}"#).unwrap())
    ///     .rate_limit("100/s,burst=200".parse::<RateLimit>().unwrap());
    /// assert!(new.validate().is_ok());
    /// assert!(NewKey::new("acme", Environment::Live, "ci").scope("Events").validate().is_err());
    /// ```
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Adds scopes ([`scope`](Self::scope) for each).
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Sets the key's metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the key's rate limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Checks the tenant and name, answering [`StoreErrorKind::Invalid`] with a message
    /// that says what is allowed.
    ///
    /// - The tenant matches `^[a-z0-9][a-z0-9._-]{0,62}$`: `acme`, `acme-eu.2`. Not `Acme`,
    ///   not `acme ` (so no two tenants look alike in a listing or a header).
    /// - The name is 1 to 128 characters of printable text: any script and emoji, but no
    ///   control or format characters (bidi overrides, zero-width characters), no line or
    ///   paragraph separators, no whitespace but the ASCII space, and none at either end.
    ///
    /// ```
    /// use hapnd_auth::{Environment, NewKey, StoreErrorKind};
    ///
    /// assert!(NewKey::new("acme", Environment::Live, "CI pipeline").validate().is_ok());
    /// let err = NewKey::new("acme ", Environment::Live, "ci").validate().unwrap_err();
    /// assert_eq!(err.kind(), StoreErrorKind::Invalid);
    /// let err = NewKey::new("acme", Environment::Live, "ci\u{202e}").validate().unwrap_err();
    /// assert_eq!(err.kind(), StoreErrorKind::Invalid);
    /// ```
    ///
    /// - Scopes follow the scope grammar ([`is_valid_scope`](crate::is_valid_scope)), at
    ///   most 32 of them, none twice.
    ///
    /// [`StoreErrorKind::Invalid`]: crate::StoreErrorKind::Invalid
    pub fn validate(&self) -> Result<(), StoreError> {
        identity::check_tenant(&self.tenant)?;
        identity::check_key_name(&self.name)?;
        policy::check_scopes(&self.scopes)
    }
}

/// A key just created: the plaintext, shown once, and its record.
#[derive(Clone, Debug)]
pub struct CreatedKey {
    /// The key. Show it to its owner once; it cannot be recovered.
    pub key: ApiKey,
    /// What the store kept.
    pub record: KeyRecord,
}

/// One key's last use, as batched to [`KeyStore::record_usage`](super::KeyStore::record_usage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastUsed {
    /// The key.
    pub id: KeyId,
    /// When it was last used.
    pub at: SystemTime,
}
