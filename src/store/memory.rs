//! [`MemoryKeyStore`]: keys in process memory, for tests, examples and single-process tools.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::key::{ApiKey, KeyHash};

use super::{
    Actor, ActorKind, AuditTrail, CreatedKey, EventQuery, ExpiringKeys, ExpiringQuery, KeyEvent,
    KeyEventKind, KeyId, KeyPolicy, KeyRecord, KeyStore, LastUsed, ListPage, NewKey, Roll,
    Rotation, StoreError, StoreErrorKind, rolled_expiry,
};

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
    /// The audit trail, oldest first; written under the same lock as the change.
    events: Vec<KeyEvent>,
    next_seq: i64,
}

impl State {
    fn record(&mut self, record: &KeyRecord, kind: KeyEventKind, actor: &Actor) -> &mut KeyEvent {
        self.next_seq += 1;
        self.events.push(KeyEvent {
            seq: self.next_seq,
            at: SystemTime::now(),
            tenant: record.tenant.clone(),
            key_id: record.id.clone(),
            kind,
            actor_kind: actor.kind,
            actor: actor.label.clone(),
            client: actor.client.map(|c| c.to_string()),
            replacement: None,
            expires_at: None,
            detail: None,
        });
        self.events.last_mut().expect("just pushed")
    }

    fn insert(&mut self, record: &KeyRecord, actor: &Actor) -> Result<(), StoreError> {
        if self.by_hash.contains_key(&record.hash) || self.ids.contains_key(&record.id) {
            return Err(StoreError::new(
                StoreErrorKind::Conflict,
                format!(
                    "a key with id {} or the same hash already exists",
                    record.id
                ),
            ));
        }
        self.ids.insert(record.id.clone(), record.hash);
        self.by_hash.insert(record.hash, record.clone());
        self.record(record, KeyEventKind::Created, actor).expires_at = record.expires_at;
        Ok(())
    }
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
        self.write().insert(record, &Actor::application())
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
        record.validate()?;
        self.write().insert(&record, actor)?;
        Ok(CreatedKey { key, record })
    }

    async fn revoke_as(
        &self,
        id: &KeyId,
        at: SystemTime,
        actor: &Actor,
    ) -> Result<KeyRecord, StoreError> {
        let mut state = self.write();
        let hash = *state.ids.get(id).ok_or_else(|| StoreError::not_found(id))?;
        let before = state.by_hash[&hash].clone();
        if actor.kind == ActorKind::SecretScanning {
            state
                .record(&before, KeyEventKind::ReportedLeaked, actor)
                .detail = actor.detail.clone();
        }
        if before.revoked_at.is_none() {
            state.record(&before, KeyEventKind::Revoked, actor).detail = actor.detail.clone();
        }
        let record = state.by_hash.get_mut(&hash).expect("ids and by_hash agree");
        record.revoked_at.get_or_insert(at);
        Ok(record.clone())
    }

    async fn rotate_as(
        &self,
        id: &KeyId,
        roll: Roll,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        let mut state = self.write();
        let hash = *state.ids.get(id).ok_or_else(|| StoreError::not_found(id))?;
        let old = state.by_hash[&hash].clone();
        let new = NewKey::new(old.tenant.clone(), old.environment, old.name.clone());
        let mut new = KeyPolicy::apply(roll.replacement_policy.clone(), &old, new);
        new.expires_at = roll.replacement_expires_at;
        let key = ApiKey::generate(new.environment);
        let record = KeyRecord::for_key(&key, new, SystemTime::now());
        record.validate()?;
        state.insert(&record, actor)?;
        state.record(&old, KeyEventKind::Rotated, actor).replacement = Some(record.id.clone());
        if let Some(asked) = roll.old_expires_at {
            let expiry = rolled_expiry(old.expires_at, asked);
            if old.expires_at != Some(expiry) {
                state
                    .record(&old, KeyEventKind::ExpiryScheduled, actor)
                    .expires_at = Some(expiry);
                let stored = state.by_hash.get_mut(&hash).expect("ids and by_hash agree");
                stored.expires_at = Some(expiry);
            }
        }
        let old = state.by_hash[&hash].clone();
        Ok(Rotation {
            replacement: CreatedKey { key, record },
            old,
        })
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

impl ExpiringKeys for MemoryKeyStore {
    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(query.filter(self.read().by_hash.values().cloned()))
    }

    async fn count_expiring(&self, from: SystemTime, until: SystemTime) -> Result<u64, StoreError> {
        let window = ExpiringQuery {
            tenant: None,
            from,
            until,
            after: None,
            limit: 0,
        };
        let state = self.read();
        Ok(state.by_hash.values().filter(|r| window.matches(r)).count() as u64)
    }
}

impl AuditTrail for MemoryKeyStore {
    async fn events(&self, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        let limit = query.limit.min(EventQuery::MAX_LIMIT) as usize;
        Ok(self
            .read()
            .events
            .iter()
            .rev()
            .filter(|e| query.matches(e))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn prune_events_batch(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        let mut state = self.write();
        let old = state
            .events
            .iter()
            .take(batch as usize)
            .take_while(|e| e.at < before)
            .count();
        state.events.drain(..old);
        Ok(old as u64)
    }
}
