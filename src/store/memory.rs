//! [`MemoryKeyStore`]: keys in process memory, for tests, examples and single-process tools.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::key::KeyHash;

use super::{KeyId, KeyRecord, KeyStore, LastUsed, ListPage, StoreError, StoreErrorKind};

/// Keys held in memory. Cheap to clone: clones share the same keys.
///
/// For tests, examples and single-process tools: keys vanish with the process, and another
/// process cannot revoke them. Checks identities on insert like every store.
///
/// ```
/// use hapnd_auth::{Authenticator, Environment, KeyStore, MemoryKeyStore, NewKey};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryKeyStore::new();
/// let auth = Authenticator::new(store.clone());
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
/// assert_eq!(store.list("acme").await.unwrap()[0].id, created.record.id);
/// assert!(auth.authenticate_key(created.key.expose_secret()).await.is_ok());
/// # });
/// ```
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    state: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    by_hash: HashMap<KeyHash, KeyRecord>,
    ids: HashMap<KeyId, KeyHash>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic elsewhere cannot leave a half-written record: every write is one insert.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("keys", &self.read().ids.len())
            .finish()
    }
}

impl KeyStore for MemoryKeyStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.read().by_hash.get(hash).cloned())
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        record.validate()?;
        let mut state = self.write();
        if state.by_hash.contains_key(&record.hash) || state.ids.contains_key(&record.id) {
            return Err(StoreError::new(
                StoreErrorKind::Conflict,
                format!(
                    "a key with id {} or the same hash already exists",
                    record.id
                ),
            ));
        }
        state.ids.insert(record.id.clone(), record.hash);
        state.by_hash.insert(record.hash, record.clone());
        Ok(())
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let state = self.read();
        Ok(state
            .ids
            .get(id)
            .and_then(|h| state.by_hash.get(h))
            .cloned())
    }

    async fn list_page(&self, page: &ListPage) -> Result<Vec<KeyRecord>, StoreError> {
        let keys: Vec<KeyRecord> = self.read().by_hash.values().cloned().collect();
        Ok(page.filter(keys))
    }

    async fn list(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let mut keys: Vec<KeyRecord> = self
            .read()
            .by_hash
            .values()
            .filter(|r| r.tenant == tenant)
            .cloned()
            .collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(keys)
    }

    async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
        let mut state = self.write();
        let hash = *state.ids.get(id).ok_or_else(|| StoreError::not_found(id))?;
        let record = state.by_hash.get_mut(&hash).expect("ids and by_hash agree");
        record.revoked_at.get_or_insert(at);
        Ok(record.clone())
    }

    async fn record_usage(&self, used: &[LastUsed]) -> Result<(), StoreError> {
        let mut state = self.write();
        for u in used {
            if let Some(hash) = state.ids.get(&u.id).copied() {
                let record = state.by_hash.get_mut(&hash).expect("ids and by_hash agree");
                record.last_used_at = record.last_used_at.max(Some(u.at));
            }
        }
        Ok(())
    }
}
