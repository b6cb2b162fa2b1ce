//! The database behind the command: SQLite by path, PostgreSQL by `postgres://` URL.
//!
//! Opening names the database in words an operator can check (a SQLite file's absolute
//! path, a PostgreSQL URL without its password), refuses to create a missing SQLite file
//! unless the command is one that should (`serve`, `keys create`), creates it with mode
//! 0600, and turns driver errors into one readable line.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use hapnd_auth::{
    Actor, AuditTrail, ChangeFeed, CreatedKey, EventQuery, ExpiringKeys, ExpiringQuery,
    Invalidator, KeyEvent, KeyHash, KeyId, KeyRecord, KeyStore, LastUsed, ListPage, NewKey,
    PostgresKeyStore, Roll, Rotation, SqliteKeyStore, StoreError,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// Either store, chosen by the `--db` value.
#[derive(Clone, Debug)]
pub(crate) enum AnyStore {
    Sqlite(SqliteKeyStore),
    Postgres(PostgresKeyStore),
}

/// Whether opening may create a missing SQLite file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// `serve` and `keys create`: a first start makes the database.
    IfMissing,
    /// Every other command: a missing file is a mistake (another directory, a typo).
    Never,
}

/// A parsed `--db` value.
enum Target {
    Sqlite {
        options: SqliteConnectOptions,
        path: PathBuf,
    },
    Postgres(PgConnectOptions),
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            // Never echoed: the URL may hold a password.
            let (_, rest) = url.split_once(':').unwrap_or_default();
            if !rest.starts_with("//") {
                return Err("a PostgreSQL URL starts with postgres:// (two slashes); \
                            the value given is not shown, as it may hold a password"
                    .to_owned());
            }
            return PgConnectOptions::from_str(url)
                .map(Target::Postgres)
                .map_err(|_| {
                    "cannot parse the PostgreSQL URL (not shown: it may hold a password)".to_owned()
                });
        }
        if let Some((scheme, _)) = url.split_once("://")
            && !scheme.eq_ignore_ascii_case("sqlite")
        {
            return Err(format!(
                "unsupported database URL scheme {scheme:?}: use a SQLite file path, \
                 sqlite://..., or postgres://... (the URL is not shown: it may hold a password)"
            ));
        }
        let options = if lower.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)
                .map_err(|e| format!("invalid SQLite URL {url}: {e}"))?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let path = options.get_filename().to_owned();
        let path = std::path::absolute(&path).unwrap_or(path);
        Ok(Target::Sqlite { options, path })
    }

    /// What the user should read to know which database this is.
    fn describe(&self) -> String {
        match self {
            Target::Sqlite { path, .. } => format!("SQLite {}", path.display()),
            Target::Postgres(o) => {
                let at = match o.get_socket() {
                    Some(socket) => socket.display().to_string(),
                    None => format!("{}:{}", o.get_host(), o.get_port()),
                };
                format!(
                    "PostgreSQL postgres://{}@{at}/{}",
                    o.get_username(),
                    o.get_database().unwrap_or("")
                )
            }
        }
    }
}

impl AnyStore {
    /// Opens the database named by `url`; prints nothing. The second value describes it.
    pub(crate) async fn open(url: &str, create: Create) -> Result<(Self, String), String> {
        let target = Target::parse(url)?;
        let described = target.describe();
        let store = match target {
            Target::Postgres(options) => {
                let probe = (options.get_socket().is_none())
                    .then(|| (options.get_host().to_owned(), options.get_port()));
                match PostgresKeyStore::builder().connect_with(options).await {
                    Ok(store) => AnyStore::Postgres(store),
                    Err(e) => {
                        let why = match probe {
                            Some(at) => unreachable_reason(&at).await,
                            None => None,
                        };
                        let why = why.unwrap_or_else(|| explain(&e));
                        return Err(format!("cannot open {described}: {why}"));
                    }
                }
            }
            Target::Sqlite { options, path } => {
                prepare_sqlite(&path, create)?;
                let store = SqliteKeyStore::builder()
                    .connect_with(options.create_if_missing(false))
                    .await
                    .map(AnyStore::Sqlite)
                    .map_err(|e| format!("cannot open {described}: {}", explain(&e)))?;
                warn_if_shared(&path);
                store
            }
        };
        Ok((store, described))
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

    /// Whether the database holds no key at all: one `LIMIT 1` query.
    pub(crate) async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.list_page(&ListPage::new(None, 1)).await?.is_empty())
    }
}

/// Why `host:port` cannot be reached, if it cannot: sqlx retries a refused connection until
/// its timeout, and then says only that it timed out.
async fn unreachable_reason((host, port): &(String, u16)) -> Option<String> {
    let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
    match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(_)) | Err(_) => None,
        Ok(Err(e)) => Some(format!(
            "cannot connect to {host}:{port}: {e}: is PostgreSQL running there?"
        )),
    }
}

/// Refuses a missing directory or (unless allowed) a missing file; creates the file with
/// mode 0600 so that SQLite gives the same mode to its `-wal` and `-shm` files.
fn prepare_sqlite(path: &Path, create: Create) -> Result<(), String> {
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(format!(
            "the directory {} does not exist (for the SQLite database {})",
            dir.display(),
            path.display()
        ));
    }
    if path.exists() {
        return Ok(());
    }
    if create == Create::Never {
        return Err(format!(
            "no database at {}: run this where the gateway's database is, or name it with \
             --db (or HAPND_AUTH_DATABASE); `hapnd-auth serve` and `hapnd-auth keys create` \
             create a new one",
            path.display()
        ));
    }
    SqliteKeyStore::create_file(path)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Warns on stderr when other users could read the keys' hashes or lock the database.
#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} is accessible to other users (mode {:o}): `chmod 600` it",
                file.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o022 != 0
    {
        eprintln!(
            "warning: the database's directory {} is writable by other users (mode {:o}): \
             they can replace or lock its files",
            dir.display(),
            meta.permissions().mode() & 0o7777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

/// One line for a store error, in the terms of what went wrong: a refused login, a file that
/// is not a database, an unreachable server. Only the driver's message, never its source
/// file and line, and never the URL.
pub(crate) fn explain(e: &StoreError) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(sqlx) = cause.downcast_ref::<sqlx::Error>()
            && let Some(text) = explain_sqlx(sqlx)
        {
            return text;
        }
        if let Some(migrate) = cause.downcast_ref::<sqlx::migrate::MigrateError>()
            && let sqlx::migrate::MigrateError::Execute(inner) = migrate
            && let Some(text) = explain_sqlx(inner)
        {
            return text;
        }
        source = cause.source();
    }
    e.to_string()
}

fn explain_sqlx(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let what = match code.as_str() {
                "28P01" | "28000" => "PostgreSQL refused the login (wrong user or password?)",
                "3D000" => "that PostgreSQL database does not exist",
                "42501" => "permission denied",
                "26" => "the file is not a SQLite database",
                "14" => "the file cannot be opened",
                "8" | "1032" => "the file is read-only",
                "5" | "517" => "the database is locked by another process",
                _ => "the database refused",
            };
            Some(format!("{what}: {}", db.message()))
        }
        sqlx::Error::Io(io) => Some(match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused: is the database server running, on that host and port?"
                    .to_owned()
            }
            _ => format!("cannot reach the database: {io}"),
        }),
        sqlx::Error::Migrate(m) => match &**m {
            sqlx::migrate::MigrateError::Execute(inner) => explain_sqlx(inner),
            other => Some(format!("cannot bring the schema up to date: {other}")),
        },
        _ => None,
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

    async fn lookup_for_request(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        each!(self, s => s.lookup_for_request(hash).await)
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

    async fn list_page(&self, page: &ListPage) -> Result<Vec<KeyRecord>, StoreError> {
        each!(self, s => s.list_page(page).await)
    }

    async fn revoke(&self, id: &KeyId, at: SystemTime) -> Result<KeyRecord, StoreError> {
        each!(self, s => s.revoke(id, at).await)
    }

    async fn record_usage(&self, used: &[LastUsed]) -> Result<(), StoreError> {
        each!(self, s => s.record_usage(used).await)
    }

    async fn rotate(&self, id: &KeyId) -> Result<CreatedKey, StoreError> {
        each!(self, s => s.rotate(id).await)
    }

    async fn create_as(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError> {
        each!(self, s => s.create_as(new, actor).await)
    }

    async fn revoke_as(
        &self,
        id: &KeyId,
        at: SystemTime,
        actor: &Actor,
    ) -> Result<KeyRecord, StoreError> {
        each!(self, s => s.revoke_as(id, at, actor).await)
    }

    async fn rotate_as(
        &self,
        id: &KeyId,
        roll: Roll,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        each!(self, s => s.rotate_as(id, roll, actor).await)
    }
}

impl AuditTrail for AnyStore {
    async fn events(&self, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        each!(self, s => s.events(query).await)
    }

    async fn prune_events_batch(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        each!(self, s => s.prune_events_batch(before, batch).await)
    }
}

impl ExpiringKeys for AnyStore {
    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        each!(self, s => s.expiring(query).await)
    }

    async fn count_expiring(&self, from: SystemTime, until: SystemTime) -> Result<u64, StoreError> {
        each!(self, s => s.count_expiring(from, until).await)
    }
}
