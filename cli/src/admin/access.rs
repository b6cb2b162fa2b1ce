//! Who may use the admin API and page: the admin token, compared in constant time, the
//! tenant-scoped admin credentials in the store ([`crate::credentials`]), and a per-client
//! limit on failed attempts that slows a guesser down without locking out the right token
//! or credential. [`Scope`] is what a request that got in may manage.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use hapnd_auth::Actor;

use super::session::Sessions;
use crate::credentials;
use crate::store::AnyStore;

/// The environment variable that may hold the admin token.
pub(crate) const TOKEN_ENV: &str = "HAPND_ADMIN_TOKEN";
/// The shortest admin token accepted, in characters.
const MIN_TOKEN_LEN: usize = 32;
/// Failed attempts a client may make within [`FAILURE_WINDOW`] before its wrong tokens
/// are answered 429.
pub(crate) const MAX_FAILURES: u32 = 5;
/// The window over which failed attempts are counted.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a throttled client's wrong token is held before its 429 is sent.
const HOLD: Duration = Duration::from_secs(1);
/// The most answers held at once: a quarter of the admin listener's 32 connections, so
/// held answers never fill it; past it, 429s are sent at once.
const MAX_HELD: usize = 8;

/// The admin token, the failed-attempt limiter and the page's sessions, shared by the
/// admin routes.
pub(crate) struct Access {
    token: Option<AdminToken>,
    /// Where tenant credentials are looked up (none in unit tests: then none is accepted).
    store: Option<AnyStore>,
    limiter: FailureLimiter,
    held: tokio::sync::Semaphore,
    pub(crate) sessions: Sessions,
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No admin token is configured: the admin API and page are off.
    Disabled,
    /// A wrong token, after too many from this client; retry after this long.
    Throttled(Duration),
    /// The wrong token (counted against the client).
    Invalid,
    /// No token at all (not counted: it guesses nothing).
    Missing,
    /// A credential-shaped token could not be looked up: the store failed.
    Unavailable,
}

/// What a request that got in may manage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The admin token: every tenant.
    All,
    /// A tenant-scoped admin credential: its tenant's keys only.
    Tenant {
        /// The credential's id (`adm_...`), to check it is still unrevoked.
        credential: String,
        tenant: String,
        /// What the audit trail records its changes under.
        label: String,
    },
}

/// A request for a tenant its scope does not cover.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OtherTenant;

impl Scope {
    /// The one rule for which tenant a request may see: `requested`, when this scope covers
    /// it; a tenant credential's own tenant when nothing is requested (empty); otherwise
    /// [`OtherTenant`], whether or not that tenant exists.
    pub(crate) fn tenant_or<'a>(&'a self, requested: &'a str) -> Result<&'a str, OtherTenant> {
        match self {
            Scope::All => Ok(requested),
            Scope::Tenant { tenant, .. } if requested.is_empty() || requested == tenant => {
                Ok(tenant)
            }
            Scope::Tenant { .. } => Err(OtherTenant),
        }
    }

    /// Whether this scope may manage the keys of `tenant`.
    pub(crate) fn covers(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant { tenant: own, .. } => own == tenant,
        }
    }

    /// The tenant a tenant credential is fixed to; `None` for the admin token.
    pub(crate) fn fixed_tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant { tenant, .. } => Some(tenant),
        }
    }

    /// Who the audit trail records for the admin API's changes: the credential's label.
    pub(crate) fn api_actor(&self, client: IpAddr) -> Actor {
        match self {
            Scope::All => Actor::admin(ADMIN_TOKEN_LABEL),
            Scope::Tenant { label, .. } => Actor::admin(label.as_str()),
        }
        .with_client(client)
    }

    /// Who the audit trail records for a page session's changes.
    pub(crate) fn page_actor(&self, client: IpAddr) -> Actor {
        match self {
            Scope::All => Actor::page(format!("{ADMIN_TOKEN_LABEL} session")),
            Scope::Tenant { label, .. } => Actor::page(format!("{label} session")),
        }
        .with_client(client)
    }
}

/// The label the all-tenants admin token is recorded under.
pub(crate) const ADMIN_TOKEN_LABEL: &str = "admin token";

impl Access {
    pub(crate) fn new(token: Option<AdminToken>, store: Option<AnyStore>) -> Self {
        Access {
            token,
            store,
            limiter: FailureLimiter::default(),
            held: tokio::sync::Semaphore::new(MAX_HELD),
            sessions: Sessions::default(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a presented admin token or tenant credential from `client`, and says what
    /// it may manage.
    ///
    /// The right token is always let in: it is compared first, in constant time, whatever
    /// the client's failures (a random token of 32 characters or more is not found by
    /// guessing; refusing it would let anyone who can make a request, a web page in the
    /// operator's browser included, lock the operator out). So is an unrevoked tenant
    /// credential: one shaped like a credential is looked up by its SHA-256 before the
    /// client's failures are (one indexed query; never cached, so a revocation holds from
    /// the next request). A wrong one is counted, and once the client has
    /// [`MAX_FAILURES`] in the window it is answered [`Denied::Throttled`], held about
    /// [`HOLD`] first. No token at all is not a guess and is not counted.
    pub(crate) async fn check(
        &self,
        client: IpAddr,
        presented: Option<&[u8]>,
    ) -> Result<Scope, Denied> {
        let Some(token) = &self.token else {
            return Err(Denied::Disabled);
        };
        let Some(presented) = presented.filter(|p| !p.is_empty()) else {
            return Err(Denied::Missing);
        };
        if token.matches(presented) {
            return Ok(Scope::All);
        }
        if let Some(store) = &self.store
            && credentials::looks_like(presented)
        {
            match store.live_credential(&credentials::hash(presented)).await {
                Ok(Some(found)) => {
                    return Ok(Scope::Tenant {
                        credential: found.id,
                        tenant: found.tenant,
                        label: found.label,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up an admin credential");
                    return Err(Denied::Unavailable);
                }
            }
        }
        if self.limiter.blocked(client).is_some() {
            // A guesser that waits for its answers makes one guess a second per connection.
            if let Ok(_permit) = self.held.try_acquire() {
                tokio::time::sleep(HOLD).await;
            }
            let wait = self
                .limiter
                .blocked(client)
                .unwrap_or(Duration::from_secs(1));
            return Err(Denied::Throttled(wait));
        }
        self.limiter.record_failure(client);
        tracing::warn!(%client, "admin token or credential rejected");
        Err(Denied::Invalid)
    }
}

/// The client's address, as the listener saw it (never a forwarded header). Without the
/// connection info every client shares one count, which throttles too much, never too little.
pub(crate) fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip())
}

/// The admin token's SHA-256: the token itself is not kept.
pub(crate) struct AdminToken {
    hash: [u8; 32],
}

impl AdminToken {
    /// A token of at least 32 visible ASCII characters (surrounding whitespace, such as a
    /// file's final newline, is ignored).
    pub(crate) fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the admin token must be at least {MIN_TOKEN_LEN} visible ASCII characters \
                 without spaces (try `openssl rand -hex 32`)"
            ));
        }
        Ok(AdminToken {
            hash: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads the token from `file`, or else from `HAPND_ADMIN_TOKEN`; `None` when neither
    /// is given (the admin API and page are then disabled). Never from the command line,
    /// where `ps` would show it.
    pub(crate) fn load(file: Option<&Path>) -> Result<Option<Self>, String> {
        let from_env = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        match (file, from_env) {
            (Some(_), Some(_)) => Err(format!(
                "both --admin-token-file and {TOKEN_ENV} are set: give the admin token once"
            )),
            (Some(path), None) => {
                refuse_if_others_can_read(path)?;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read the admin token file {}: {e}", path.display())
                })?;
                Self::new(&text)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            (None, Some(token)) => Self::new(&token)
                .map(Some)
                .map_err(|e| format!("{TOKEN_ENV}: {e}")),
            (None, None) => Ok(None),
        }
    }

    /// Whether `presented` is the token. Hashes are compared, in constant time, so
    /// neither the token's length nor its prefix leaks through timing.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(&self.hash).into()
    }
}

/// Refuses a token file that anyone but its owner may read or write, as ssh does with a
/// private key: the token grants every admin operation.
#[cfg(unix)]
fn refuse_if_others_can_read(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the admin token file {path} can be read or written by others (mode {mode:o}): \
             chmod 600 {path}, or give the token in {TOKEN_ENV}",
            path = path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_others_can_read(_: &Path) -> Result<(), String> {
    Ok(())
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Counts failed token attempts per client address. After [`MAX_FAILURES`] within
/// [`FAILURE_WINDOW`] (counted from the first), the client is blocked until the window
/// ends: [`Access::check`] then answers its wrong tokens 429.
#[derive(Default)]
pub(crate) struct FailureLimiter {
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    since: Instant,
    count: u32,
}

impl FailureLimiter {
    /// How long `client` must wait, if it is refused now.
    pub(crate) fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let failures = clients.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(now.duration_since(failures.since))?;
        (failures.count >= MAX_FAILURES && !left.is_zero()).then_some(left)
    }

    /// Counts one failed attempt by `client`.
    pub(crate) fn record_failure(&self, client: IpAddr) {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // Forget finished windows now and then, so the table holds only recent failures.
        if clients.len() >= 1024 {
            clients.retain(|_, f| now.duration_since(f.since) < FAILURE_WINDOW);
        }
        let failures = clients.entry(client).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(failures.since) >= FAILURE_WINDOW {
            *failures = Failures {
                since: now,
                count: 0,
            };
        }
        failures.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_by_hash() {
        let token = AdminToken::new("  0123456789abcdef0123456789abcdef\n").unwrap();
        assert!(token.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdef0123456789abcdeF"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("0123456789abcdef 0123456789abcdef").is_err());
    }

    #[tokio::test]
    async fn the_right_token_works_whatever_the_failures_and_none_is_not_counted() {
        let access = Access::new(
            Some(AdminToken::new("0123456789abcdef0123456789abcdef").unwrap()),
            None,
        );
        let client: IpAddr = [127, 0, 0, 1].into();
        let right = Some(&b"0123456789abcdef0123456789abcdef"[..]);
        for _ in 0..20 {
            assert_eq!(access.check(client, None).await, Err(Denied::Missing));
            assert_eq!(access.check(client, Some(b"")).await, Err(Denied::Missing));
        }
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                access.check(client, Some(b"wrong")).await,
                Err(Denied::Invalid)
            );
        }
        assert!(matches!(
            access.check(client, Some(b"wrong")).await,
            Err(Denied::Throttled(_))
        ));
        assert_eq!(access.check(client, right).await, Ok(Scope::All));
        assert_eq!(
            Access::new(None, None).check(client, right).await,
            Err(Denied::Disabled)
        );
    }

    #[tokio::test]
    async fn a_credential_is_let_in_by_its_hash_until_revoked_and_a_store_failure_is_a_503() {
        let dir = std::env::temp_dir().join(format!("hapnd-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        let _ = std::fs::remove_file(&path);
        let sqlite = hapnd_auth::SqliteKeyStore::connect(path.to_str().unwrap())
            .await
            .unwrap();
        let store = AnyStore::Sqlite(sqlite.clone());
        let (record, secret) = store.create_credential("acme", "dash").await.unwrap();
        let access = Access::new(
            Some(AdminToken::new("0123456789abcdef0123456789abcdef").unwrap()),
            Some(store.clone()),
        );
        let client: IpAddr = [127, 0, 0, 2].into();
        let presented = Some(secret.expose().as_bytes());
        assert_eq!(
            access.check(client, presented).await,
            Ok(Scope::Tenant {
                credential: record.id.clone(),
                tenant: "acme".to_owned(),
                label: "dash".to_owned(),
            })
        );
        // One character off: a wrong credential, counted.
        let mut wrong = secret.expose().to_owned();
        let last = if wrong.ends_with('a') { "b" } else { "a" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert_eq!(
            access.check(client, Some(wrong.as_bytes())).await,
            Err(Denied::Invalid)
        );
        store.revoke_credential(&record.id).await.unwrap();
        assert_eq!(access.check(client, presented).await, Err(Denied::Invalid));
        // The store gone: refused as unavailable, not as a wrong credential.
        sqlite.pool().close().await;
        assert_eq!(
            access.check(client, presented).await,
            Err(Denied::Unavailable)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tenant_credential_sees_its_tenant_only() {
        let scope = Scope::Tenant {
            credential: "adm_1".to_owned(),
            tenant: "acme".to_owned(),
            label: "acme-dashboard".to_owned(),
        };
        assert_eq!(scope.tenant_or(""), Ok("acme"));
        assert_eq!(scope.tenant_or("acme"), Ok("acme"));
        assert_eq!(scope.tenant_or("globex"), Err(OtherTenant));
        assert!(scope.covers("acme") && !scope.covers("globex"));
        assert_eq!(Scope::All.tenant_or("globex"), Ok("globex"));
        assert!(Scope::All.covers("globex"));
        let client: IpAddr = [127, 0, 0, 2].into();
        assert_eq!(scope.api_actor(client).label, "acme-dashboard");
        assert_eq!(scope.page_actor(client).label, "acme-dashboard session");
        assert_eq!(Scope::All.page_actor(client).label, "admin token session");
    }

    #[test]
    fn a_client_is_refused_after_the_allowed_failures_and_others_are_not() {
        let limiter = FailureLimiter::default();
        let (a, b) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        for _ in 0..MAX_FAILURES - 1 {
            limiter.record_failure(a);
        }
        assert_eq!(limiter.blocked(a), None);
        limiter.record_failure(a);
        let wait = limiter.blocked(a).expect("blocked after MAX_FAILURES");
        assert!(wait <= FAILURE_WINDOW && wait > FAILURE_WINDOW - Duration::from_secs(5));
        assert_eq!(limiter.blocked(b), None);
    }
}
