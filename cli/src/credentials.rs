//! Tenant-scoped admin credentials: each one manages one tenant's keys through the admin
//! API and the API Keys page, beside the all-tenants admin token.
//!
//! A credential is `hapnd_adm_` and 40 random base62 characters (238 bits from the OS);
//! only its SHA-256 is stored (table `hapnd_admin_credentials`, made by the library's
//! migrations), with its tenant and a label the audit trail records. It is looked up on
//! every request, never cached: a revocation made by any process on the database refuses it
//! at the next request.
//!
//! The table's queries live here rather than in the library: only the command's admin
//! listener uses them, so the library's public API stays as it is.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use hapnd_auth::{StoreError, StoreErrorKind};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::Database;
use crate::output::{data, esc};
use crate::store::{AnyStore, Create, explain};
use crate::time::rfc3339;

/// What every credential starts with: recognisable, and unlike an API key's `sk_live_` or
/// `sk_test_`, so neither is mistaken for the other.
pub(crate) const PREFIX: &str = "hapnd_adm_";
/// The random characters after the prefix.
const RANDOM_LEN: usize = 40;
/// What every credential's id starts with.
const ID_PREFIX: &str = "adm_";
/// The longest label, in characters.
pub(crate) const MAX_LABEL_LEN: usize = 64;
/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A credential's record: never the credential, never its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Credential {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) label: String,
    pub(crate) created_at: SystemTime,
    pub(crate) revoked_at: Option<SystemTime>,
}

/// A new credential, shown once; its `Debug` shows the prefix only.
pub(crate) struct Secret(String);

impl Secret {
    fn generate() -> Self {
        let mut text = String::with_capacity(PREFIX.len() + RANDOM_LEN);
        text.push_str(PREFIX);
        while text.len() < PREFIX.len() + RANDOM_LEN {
            let mut bytes = [0u8; 64];
            getrandom::fill(&mut bytes).expect("the OS random generator failed");
            // 248 = 4 * 62: keeping only bytes below it leaves every character equally likely.
            for b in bytes.into_iter().filter(|b| *b < 248) {
                if text.len() == PREFIX.len() + RANDOM_LEN {
                    break;
                }
                text.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
        Secret(text)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({PREFIX}..)")
    }
}

/// The SHA-256 a credential is stored and looked up by.
pub(crate) fn hash(presented: &[u8]) -> [u8; 32] {
    Sha256::digest(presented).into()
}

/// Whether `presented` is shaped like a credential (the prefix, then base62): only those
/// are looked up in the database.
pub(crate) fn looks_like(presented: &[u8]) -> bool {
    presented.len() == PREFIX.len() + RANDOM_LEN
        && presented.starts_with(PREFIX.as_bytes())
        && presented[PREFIX.len()..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
}

/// A label, checked: 1 to 64 characters, no control or invisible ones, and no key or
/// credential in it (it is shown in listings and recorded in the audit trail).
pub(crate) fn check_label(label: &str) -> Result<String, String> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > MAX_LABEL_LEN {
        return Err(format!(
            "a label is 1 to {MAX_LABEL_LEN} characters, like acme-dashboard"
        ));
    }
    if esc(label) != label {
        return Err("a label must not hold control or invisible characters".to_owned());
    }
    if hapnd_auth::redact_keys(label) != label || label.contains(PREFIX) {
        return Err("a label must not hold a key or a credential".to_owned());
    }
    // The audit trail records the admin token as `admin token` and its page sessions as
    // `admin token session`: a credential must not pass for it.
    if label.to_lowercase().starts_with("admin token") {
        return Err(
            "`admin token` is what the audit trail calls the admin token: choose \
                    another label"
                .to_owned(),
        );
    }
    Ok(label.to_owned())
}

fn check_tenant(tenant: &str) -> Result<(), String> {
    if hapnd_auth::is_valid_tenant(tenant) {
        Ok(())
    } else {
        Err(format!("{} is not a tenant name", esc(tenant)))
    }
}

/// A credential id argument, refusing a credential given in its place.
fn credential_id(arg: &str) -> Result<String, String> {
    if arg.starts_with(PREFIX) {
        return Err(
            "that is a credential, not its id (ids start with adm_): find the id with \
             `hapnd-auth admin-credentials list`"
                .to_owned(),
        );
    }
    let well_formed = arg.len() <= 64
        && arg.starts_with(ID_PREFIX)
        && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return Err(format!(
            "{} is not a credential id: ids look like adm_ followed by letters and digits",
            esc(arg)
        ));
    }
    Ok(arg.to_owned())
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random generator failed");
    let mut id = String::from(ID_PREFIX);
    id.extend(bytes.iter().map(|b| format!("{b:02x}")));
    id
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs())
}

async fn bounded<T>(call: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, StoreError> {
    match tokio::time::timeout(QUERY_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(sqlx::Error::Database(db))) if db.is_unique_violation() => Err(StoreError::new(
            StoreErrorKind::Conflict,
            "an admin credential with that id already exists: retry",
        )),
        Ok(Err(e)) => Err(StoreError::unavailable(e)),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Timeout,
            format!("the database did not answer within {QUERY_TIMEOUT:?}"),
        )),
    }
}

macro_rules! sqlite_select {
    ($where:literal) => {
        concat!(
            "SELECT id, tenant, label, created_at, revoked_at FROM hapnd_admin_credentials ",
            $where
        )
    };
}

macro_rules! pg_select {
    ($where:literal) => {
        concat!(
            "SELECT id, tenant, label, \
             (EXTRACT(EPOCH FROM created_at) * 1000)::BIGINT AS created_at, \
             (EXTRACT(EPOCH FROM revoked_at) * 1000)::BIGINT AS revoked_at \
             FROM hapnd_admin_credentials ",
            $where
        )
    };
}

fn from_row<R: Row>(row: &R) -> Result<Credential, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(Credential {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        label: row.try_get(2)?,
        created_at: from_millis(row.try_get(3)?),
        revoked_at: row.try_get::<Option<i64>, _>(4)?.map(from_millis),
    })
}

impl AnyStore {
    /// Stores a new credential for `tenant` (its hash only) and returns it, once.
    pub(crate) async fn create_credential(
        &self,
        tenant: &str,
        label: &str,
    ) -> Result<(Credential, Secret), StoreError> {
        let secret = Secret::generate();
        let hash = hash(secret.expose().as_bytes()).to_vec();
        let id = new_id();
        match self {
            AnyStore::Sqlite(s) => {
                let sql = "INSERT INTO hapnd_admin_credentials (id, tenant, label, hash, created_at) \
                           VALUES (?, ?, ?, ?, ?)";
                let query = sqlx::query(sql)
                    .bind(&id)
                    .bind(tenant)
                    .bind(label)
                    .bind(hash)
                    .bind(millis(SystemTime::now()));
                bounded(query.execute(s.pool())).await?;
            }
            AnyStore::Postgres(s) => {
                let sql = "INSERT INTO hapnd_admin_credentials (id, tenant, label, hash) \
                           VALUES ($1, $2, $3, $4)";
                let query = sqlx::query(sql)
                    .bind(&id)
                    .bind(tenant)
                    .bind(label)
                    .bind(hash);
                bounded(query.execute(s.pool())).await?;
            }
        }
        let record = self.credential(&id).await?.ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                "the new admin credential was not found after it was stored",
            )
        })?;
        Ok((record, secret))
    }

    /// Every credential (of `tenant`, if given), revoked ones included, by tenant and id.
    pub(crate) async fn credentials(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<Credential>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => {
                let sql = sqlite_select!("WHERE (?1 IS NULL OR tenant = ?1) ORDER BY tenant, id");
                let rows = bounded(sqlx::query(sql).bind(tenant).fetch_all(s.pool())).await?;
                rows.iter()
                    .map(from_row)
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::unavailable)
            }
            AnyStore::Postgres(s) => {
                let sql = pg_select!("WHERE ($1::TEXT IS NULL OR tenant = $1) ORDER BY tenant, id");
                let rows = bounded(sqlx::query(sql).bind(tenant).fetch_all(s.pool())).await?;
                rows.iter()
                    .map(from_row)
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::unavailable)
            }
        }
    }

    /// The credential with id `id`, revoked or not.
    pub(crate) async fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        let row = match self {
            AnyStore::Sqlite(s) => {
                let query = sqlx::query(sqlite_select!("WHERE id = ?")).bind(id);
                bounded(query.fetch_optional(s.pool()))
                    .await?
                    .as_ref()
                    .map(from_row)
                    .transpose()
            }
            AnyStore::Postgres(s) => {
                let query = sqlx::query(pg_select!("WHERE id = $1")).bind(id);
                bounded(query.fetch_optional(s.pool()))
                    .await?
                    .as_ref()
                    .map(from_row)
                    .transpose()
            }
        };
        row.map_err(StoreError::unavailable)
    }

    /// The unrevoked credential whose SHA-256 is `hash`: what a request is let in by.
    pub(crate) async fn live_credential(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<Credential>, StoreError> {
        let hash = hash.to_vec();
        let row = match self {
            AnyStore::Sqlite(s) => {
                let sql = sqlite_select!("WHERE hash = ? AND revoked_at IS NULL");
                bounded(sqlx::query(sql).bind(hash).fetch_optional(s.pool()))
                    .await?
                    .as_ref()
                    .map(from_row)
                    .transpose()
            }
            AnyStore::Postgres(s) => {
                let sql = pg_select!("WHERE hash = $1 AND revoked_at IS NULL");
                bounded(sqlx::query(sql).bind(hash).fetch_optional(s.pool()))
                    .await?
                    .as_ref()
                    .map(from_row)
                    .transpose()
            }
        };
        row.map_err(StoreError::unavailable)
    }

    /// The credential `id` if it is not revoked: what a page session signed in with it
    /// checks on every request.
    pub(crate) async fn live_credential_by_id(
        &self,
        id: &str,
    ) -> Result<Option<Credential>, StoreError> {
        Ok(self
            .credential(id)
            .await?
            .filter(|c| c.revoked_at.is_none()))
    }

    /// Revokes credential `id`: from the next request on, no gateway on this database lets
    /// it in. `None` when there is no such credential; the record (with its first
    /// revocation time) otherwise, revoked before or now.
    pub(crate) async fn revoke_credential(
        &self,
        id: &str,
    ) -> Result<Option<Credential>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => {
                let sql = "UPDATE hapnd_admin_credentials SET revoked_at = ? \
                           WHERE id = ? AND revoked_at IS NULL";
                let query = sqlx::query(sql).bind(millis(SystemTime::now())).bind(id);
                bounded(query.execute(s.pool())).await?;
            }
            AnyStore::Postgres(s) => {
                let sql = "UPDATE hapnd_admin_credentials SET revoked_at = clock_timestamp() \
                           WHERE id = $1 AND revoked_at IS NULL";
                bounded(sqlx::query(sql).bind(id).execute(s.pool())).await?;
            }
        }
        self.credential(id).await
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a credential that manages one tenant's keys through the admin API and the
    /// API Keys page, and print it once (the credential alone on stdout).
    Create {
        /// The one tenant it manages.
        #[arg(long)]
        tenant: String,
        /// What it is for, like acme-dashboard: the audit trail records its changes under
        /// this label.
        #[arg(long)]
        label: String,
        /// Print the credential and its record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// List credentials (never a credential or its hash): every tenant's, or one's.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// Revoke a credential: every gateway on this database refuses it from the next
    /// request on, and the page sessions signed in with it end.
    Revoke {
        /// The credential id (adm_...).
        id: String,
        /// Print the revoked credential's record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
}

async fn open(db: &Database, create: Create) -> Result<AnyStore, String> {
    let (store, described) = AnyStore::open(&db.url, create).await?;
    eprintln!("database: {described}");
    Ok(store)
}

pub(crate) async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Create {
            tenant,
            label,
            json,
            db,
        } => {
            check_tenant(&tenant)?;
            let label = check_label(&label)?;
            let store = open(&db, Create::IfMissing).await?;
            let (record, secret) = store
                .create_credential(&tenant, &label)
                .await
                .map_err(|e| explain(&e))?;
            eprintln!(
                "created admin credential {} for tenant {}, labelled {}",
                record.id,
                esc(&record.tenant),
                esc(&record.label)
            );
            eprintln!(
                "It manages this tenant's keys only (admin API: Authorization: Bearer <it>; \
                 API Keys page: sign in with it). This is the only time it is shown; store \
                 it now."
            );
            if json {
                let mut value = record_json(&record);
                value["credential"] = secret.expose().into();
                data!("{value}");
            } else {
                data!("{}", secret.expose());
            }
            Ok(())
        }
        Command::List { tenant, json, db } => {
            if let Some(tenant) = &tenant {
                check_tenant(tenant)?;
            }
            let store = open(&db, Create::Never).await?;
            let records = store
                .credentials(tenant.as_deref())
                .await
                .map_err(|e| explain(&e))?;
            if json {
                let rows: Vec<_> = records.iter().map(record_json).collect();
                data!("{}", serde_json::Value::Array(rows));
            } else {
                if records.is_empty() {
                    eprintln!("no admin credentials");
                }
                print_table(&records);
            }
            Ok(())
        }
        Command::Revoke { id, json, db } => {
            let id = credential_id(&id)?;
            let store = open(&db, Create::Never).await?;
            let before = store
                .credential(&id)
                .await
                .map_err(|e| explain(&e))?
                .ok_or_else(|| format!("no admin credential has id {id}"))?;
            let record = match before.revoked_at {
                Some(at) => {
                    eprintln!("{id} was already revoked at {}", rfc3339(at));
                    before
                }
                None => {
                    let record = store
                        .revoke_credential(&id)
                        .await
                        .map_err(|e| explain(&e))?
                        .ok_or_else(|| format!("no admin credential has id {id}"))?;
                    eprintln!(
                        "revoked admin credential {id} (tenant {}, labelled {}) at {}: every \
                         gateway on this database refuses it from the next request on",
                        esc(&record.tenant),
                        esc(&record.label),
                        record.revoked_at.map(rfc3339).unwrap_or_default()
                    );
                    record
                }
            };
            if json {
                data!("{}", record_json(&record));
            }
            Ok(())
        }
    }
}

fn status(c: &Credential) -> &'static str {
    if c.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    }
}

fn record_json(c: &Credential) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "tenant": c.tenant,
        "label": c.label,
        "status": status(c),
        "created_at": rfc3339(c.created_at),
        "revoked_at": c.revoked_at.map(rfc3339),
    })
}

fn print_table(records: &[Credential]) {
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                esc(&c.tenant),
                esc(&c.label),
                status(c).to_owned(),
                rfc3339(c.created_at),
            ]
        })
        .collect();
    let header = ["ID", "TENANT", "LABEL", "STATUS", "CREATED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out
    };
    data!("{}", line(header));
    for row in &rows {
        data!("{}", line(row.each_ref().map(String::as_str)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_has_the_prefix_and_40_random_base62_characters() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(looks_like(a.expose().as_bytes()), "{:?}", a);
        assert_eq!(a.expose().len(), PREFIX.len() + RANDOM_LEN);
        assert!(!a.expose().starts_with("sk_"));
        assert_eq!(format!("{a:?}"), "Secret(hapnd_adm_..)");
        assert!(!looks_like(b"hapnd_adm_short"));
        assert!(!looks_like(format!("{}!", &a.expose()[..49]).as_bytes()));
        assert!(!looks_like(
            format!("sk_live_{}", "0".repeat(42)).as_bytes()
        ));
    }

    #[test]
    fn labels_and_ids_are_checked() {
        assert_eq!(check_label("  acme-dashboard ").unwrap(), "acme-dashboard");
        assert!(check_label("").is_err());
        assert!(check_label(&"x".repeat(65)).is_err());
        assert!(check_label("a\u{1b}[31m").is_err());
        assert!(check_label("a\u{202e}b").is_err());
        assert!(check_label("Admin Token").is_err());
        assert!(check_label("admin token session").is_err());
        assert!(check_label("admin tokens dashboard").is_err());
        assert!(check_label("acme admin token").is_ok());
        let credential = Secret::generate();
        assert!(check_label(&format!("ci {}", credential.expose())).is_err());
        assert!(credential_id("adm_0123abcd").is_ok());
        let refused = credential_id(credential.expose()).unwrap_err();
        assert!(!refused.contains(credential.expose()));
        assert!(credential_id("key_abc").is_err());
        assert!(credential_id("adm_a b").is_err());
    }
}
