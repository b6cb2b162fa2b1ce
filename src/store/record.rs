//! What a store keeps about a key: [`KeyRecord`], and the requests that make one.

use std::fmt;
use std::time::SystemTime;

use crate::key::{ApiKey, Environment, KeyHash};

use super::StoreError;

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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub created_at: SystemTime,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// When the key stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When the key was last seen in a request, as far as the store has been told.
    pub last_used_at: Option<SystemTime>,
}

impl KeyRecord {
    /// The record for a freshly generated `key`.
    pub fn for_key(key: &ApiKey, new: NewKey, now: SystemTime) -> Self {
        KeyRecord {
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
        }
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
        }
    }

    /// Makes the key expire at `at`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Checks the tenant and name: 1 to 128 characters, no control characters.
    pub fn validate(&self) -> Result<(), StoreError> {
        for (what, value) in [("tenant", &self.tenant), ("name", &self.name)] {
            if value.trim().is_empty() || value.chars().count() > 128 {
                return Err(StoreError::invalid(format!(
                    "the key's {what} must be 1 to 128 characters"
                )));
            }
            if value.chars().any(char::is_control) {
                return Err(StoreError::invalid(format!(
                    "the key's {what} must not contain control characters"
                )));
            }
        }
        Ok(())
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
