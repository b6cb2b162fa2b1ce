//! The audit trail: who changed which key, when, and from where.
//!
//! Every change a store makes to a key is recorded in the same transaction as the change,
//! as a [`KeyEvent`]: created, rotated (with the replacement's id), revoked, expiry
//! scheduled, reported leaked. The SQL stores write the rows with triggers, so a change made
//! by hand-written SQL is recorded too, with the actor [`ActorKind::Database`]. An event
//! holds ids, names of actors and times: never a key, never a hash.
//!
//! ```
//! use hapnd_auth::{Actor, AuditTrail, Environment, EventQuery, KeyEventKind, KeyStore, MemoryKeyStore, NewKey};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryKeyStore::new();
//! let ops = Actor::admin("ops-dashboard").with_client("192.0.2.7".parse().unwrap());
//! let created = store.create_as(NewKey::new("acme", Environment::Live, "ci"), &ops).await.unwrap();
//! store.revoke_as(&created.record.id, std::time::SystemTime::now(), &ops).await.unwrap();
//! let events = store.events(&EventQuery::tenant("acme", 10)).await.unwrap();
//! assert_eq!(events[0].kind, KeyEventKind::Revoked); // newest first
//! assert_eq!(events[1].kind, KeyEventKind::Created);
//! assert_eq!(events[0].actor, "ops-dashboard");
//! assert_eq!(events[0].client.as_deref(), Some("192.0.2.7"));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::SystemTime;

use super::{KeyId, KeyStore, StoreError};

/// Who makes a change: recorded with every [`KeyEvent`].
#[derive(Clone, PartialEq, Eq)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// Who, in words: `hapnd-auth keys revoke (alice@build-1)`, an admin credential's
    /// label. Never a secret.
    pub label: String,
    /// The client address the change came from, where there is one.
    pub client: Option<IpAddr>,
    /// What else the event should say: a leaked-key report's URL.
    pub detail: Option<String>,
}

/// The kinds of [`Actor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActorKind {
    /// The `hapnd-auth` command (label: the subcommand, the OS user and host).
    Cli,
    /// An admin API credential (label: the credential's label).
    Admin,
    /// A signed-in API Keys page session.
    Page,
    /// The leaked-key (secret-scanning) endpoint.
    SecretScanning,
    /// A program using the library without naming an actor.
    Application,
    /// SQL written by hand, or by any tool that is not this crate: what the triggers record
    /// when a change comes with no actor.
    Database,
}

impl ActorKind {
    /// `cli`, `admin`, `page`, `secret_scanning`, `application` or `database`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::Cli => "cli",
            ActorKind::Admin => "admin",
            ActorKind::Page => "page",
            ActorKind::SecretScanning => "secret_scanning",
            ActorKind::Application => "application",
            ActorKind::Database => "database",
        }
    }

    /// The kind [`as_str`](Self::as_str) names; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "cli" => ActorKind::Cli,
            "admin" => ActorKind::Admin,
            "page" => ActorKind::Page,
            "secret_scanning" => ActorKind::SecretScanning,
            "application" => ActorKind::Application,
            "database" => ActorKind::Database,
            _ => return None,
        })
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Actor {
    /// An actor of `kind` named `label`.
    pub fn new(kind: ActorKind, label: impl Into<String>) -> Self {
        Actor {
            kind,
            label: clean(label.into()),
            client: None,
            detail: None,
        }
    }

    /// The `hapnd-auth` command running `command` (`keys revoke`) as `user` on `host`.
    pub fn cli(command: &str, user: &str, host: &str) -> Self {
        Self::new(
            ActorKind::Cli,
            format!("hapnd-auth {command} ({user}@{host})"),
        )
    }

    /// An admin API credential, by its label.
    pub fn admin(label: impl Into<String>) -> Self {
        Self::new(ActorKind::Admin, label)
    }

    /// A signed-in API Keys page session.
    pub fn page(label: impl Into<String>) -> Self {
        Self::new(ActorKind::Page, label)
    }

    /// The secret-scanning endpoint, acting on a report that found the key at `url`.
    pub fn secret_scanning(source: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(ActorKind::SecretScanning, source).with_detail(url)
    }

    /// What a store records when its caller names no actor.
    pub fn application() -> Self {
        Self::new(ActorKind::Application, "hapnd-auth library")
    }

    /// The same actor, acting from `client`.
    pub fn with_client(mut self, client: IpAddr) -> Self {
        self.client = Some(client);
        self
    }

    /// The same actor, with `detail` recorded on its events.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(clean(detail.into()));
        self
    }
}

impl Default for Actor {
    fn default() -> Self {
        Self::application()
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actor")
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("client", &self.client)
            .field("detail", &self.detail)
            .finish()
    }
}

/// Labels and details are shown in terminals and pages: no control characters, bounded.
fn clean(text: String) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect();
    cleaned
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyEventKind {
    /// The key was created.
    Created,
    /// A replacement was created for the key ([`KeyEvent::replacement`] names it).
    Rotated,
    /// The key was revoked.
    Revoked,
    /// A revocation was undone (only hand-written SQL can do that).
    Unrevoked,
    /// The key's expiry was set or changed ([`KeyEvent::expires_at`]).
    ExpiryScheduled,
    /// A leaked-key report named the key ([`KeyEvent::detail`]: where it was found).
    ReportedLeaked,
    /// The key's row was deleted (only hand-written SQL can do that).
    Deleted,
}

impl KeyEventKind {
    /// The name stored and shown: `created`, `rotated`, `revoked`, `unrevoked`,
    /// `expiry_scheduled`, `reported_leaked`, `deleted`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyEventKind::Created => "created",
            KeyEventKind::Rotated => "rotated",
            KeyEventKind::Revoked => "revoked",
            KeyEventKind::Unrevoked => "unrevoked",
            KeyEventKind::ExpiryScheduled => "expiry_scheduled",
            KeyEventKind::ReportedLeaked => "reported_leaked",
            KeyEventKind::Deleted => "deleted",
        }
    }

    /// The kind [`as_str`](Self::as_str) names; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "created" => KeyEventKind::Created,
            "rotated" => KeyEventKind::Rotated,
            "revoked" => KeyEventKind::Revoked,
            "unrevoked" => KeyEventKind::Unrevoked,
            "expiry_scheduled" => KeyEventKind::ExpiryScheduled,
            "reported_leaked" => KeyEventKind::ReportedLeaked,
            "deleted" => KeyEventKind::Deleted,
            _ => return None,
        })
    }
}

impl fmt::Display for KeyEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to one key, as the audit trail keeps it. No key, no hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    /// The event's position in the trail: later events have larger numbers. The cursor of
    /// [`EventQuery::before`].
    pub seq: i64,
    /// When the change was made (the database's clock for the SQL stores).
    pub at: SystemTime,
    /// The key's tenant.
    pub tenant: String,
    /// The key.
    pub key_id: KeyId,
    /// What happened.
    pub kind: KeyEventKind,
    /// What kind of actor made the change.
    pub actor_kind: ActorKind,
    /// Who made it ([`Actor::label`]); `database` for hand-written SQL.
    pub actor: String,
    /// The client address the change came from, where there was one.
    pub client: Option<String>,
    /// For [`KeyEventKind::Rotated`]: the replacement key.
    pub replacement: Option<KeyId>,
    /// For [`KeyEventKind::ExpiryScheduled`] and [`KeyEventKind::Created`]: the expiry.
    pub expires_at: Option<SystemTime>,
    /// For [`KeyEventKind::ReportedLeaked`] and the revocation that follows it: the report's
    /// URL.
    pub detail: Option<String>,
}

/// Which events one page of the trail holds: newest first, at most `limit`, of one tenant
/// and/or one key, before the cursor `before` (the [`KeyEvent::seq`] of the last event of
/// the previous page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this tenant's events.
    pub tenant: Option<String>,
    /// Only this key's events.
    pub key: Option<KeyId>,
    /// Only events older than this one.
    pub before: Option<i64>,
    /// At most this many events (at most [`EventQuery::MAX_LIMIT`]).
    pub limit: u32,
}

impl EventQuery {
    /// The most events one page holds.
    pub const MAX_LIMIT: u32 = 1000;

    /// The newest `limit` events of every tenant.
    pub fn all(limit: u32) -> Self {
        EventQuery {
            tenant: None,
            key: None,
            before: None,
            limit: limit.min(Self::MAX_LIMIT),
        }
    }

    /// The newest `limit` events of `tenant`.
    pub fn tenant(tenant: &str, limit: u32) -> Self {
        EventQuery {
            tenant: Some(tenant.to_owned()),
            ..Self::all(limit)
        }
    }

    /// The newest `limit` events of key `id`.
    pub fn key(id: &KeyId, limit: u32) -> Self {
        EventQuery {
            key: Some(id.clone()),
            ..Self::all(limit)
        }
    }

    /// The page after the one that ended with `last`.
    pub fn after(mut self, last: &KeyEvent) -> Self {
        self.before = Some(last.seq);
        self
    }

    pub(crate) fn matches(&self, event: &KeyEvent) -> bool {
        self.tenant.as_deref().is_none_or(|t| event.tenant == t)
            && self.key.as_ref().is_none_or(|k| event.key_id == *k)
            && self.before.is_none_or(|b| event.seq < b)
    }
}

/// A store that keeps an audit trail: [`MemoryKeyStore`](crate::MemoryKeyStore),
/// [`SqliteKeyStore`](crate::SqliteKeyStore), [`PostgresKeyStore`](crate::PostgresKeyStore).
pub trait AuditTrail: KeyStore {
    /// One page of events, newest first.
    fn events(
        &self,
        query: &EventQuery,
    ) -> impl Future<Output = Result<Vec<KeyEvent>, StoreError>> + Send;

    /// Deletes at most `batch` events older than `before`, oldest first, and says how many
    /// it deleted. One short statement on the event table only: it never locks a key's
    /// row, so a revocation never waits for a prune (SQLite, with one writer at a time, makes
    /// it wait for one batch at most). Call it until it deletes fewer than `batch`:
    /// [`prune_events`] does.
    fn prune_events_batch(
        &self,
        before: SystemTime,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Deletes every event older than `before` from `store`, `batch` at a time, yielding between
/// batches; returns how many it deleted.
pub async fn prune_events<S: AuditTrail + ?Sized>(
    store: &S,
    before: SystemTime,
    batch: u32,
) -> Result<u64, StoreError> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let deleted = store.prune_events_batch(before, batch).await?;
        total += deleted;
        if deleted < u64::from(batch) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
