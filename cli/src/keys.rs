//! `hapnd-auth keys ...`: administration straight against the database.
//!
//! Data (a key, a table, JSON) goes to stdout and prose to stderr, so `keys create | head -1`
//! or `$(hapnd-auth keys create ...)` hold the key and nothing else.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use hapnd_auth::{
    Environment, ExpiringKeys, ExpiringQuery, KeyId, KeyPolicy, KeyRecord, KeyStore, ListPage,
    Metadata, NewKey, RateLimit, Roll,
};

use crate::Database;
use crate::events;
use crate::output::{data, esc};
use crate::store::{AnyStore, Create, explain};
use crate::time::{parse_duration, rfc3339};

/// Keys per query when listing: each page is one bounded query, however many keys there are.
const PAGE: u32 = 500;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a key and print it once (the key alone on stdout).
    Create {
        /// The tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// `live`, or `sandbox` (also `test`): the environment the key opens.
        #[arg(long = "env", value_parser = parse_environment)]
        environment: Environment,
        /// A human name, like ci-pipeline.
        #[arg(long)]
        name: String,
        /// Make the key expire after this long: 30d, 12h, 90m.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print the key and its record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// Show one key's record (no secret): identity, status, scopes, rate limit, metadata.
    Show {
        /// The key id (key_...).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// List keys (no secrets): a tenant's, or with --all every tenant's.
    List {
        /// The tenant.
        #[arg(long, required_unless_present_any = ["all", "expiring_within"], conflicts_with = "all")]
        tenant: Option<String>,
        /// Every tenant's keys.
        #[arg(long)]
        all: bool,
        /// Only unrevoked keys whose expiry falls within this long from now (7d, 24h, ...),
        /// soonest first.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expiring_within: Option<Duration>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// Revoke a key: every gateway on this database rejects it from then on.
    Revoke {
        /// The key id (key_...).
        id: String,
        /// Do not ask for confirmation (only asked when stdin is a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print the revoked key's record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// Create a replacement (same tenant, environment, name, expiry policy, scopes,
    /// metadata and rate limit); the old key stays active until you revoke it. A revoked
    /// or expired key is not rotated.
    Rotate {
        /// The key id to replace.
        id: String,
        /// Make the replacement expire after this long (default: as long as the old key
        /// was given, if it expires).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// Give the replacement these scopes instead of the old key's, and so on for
        /// --metadata and --rate-limit.
        #[command(flatten)]
        policy: PolicyArgs,
        /// A scheduled roll: the old key keeps working for this long (1h, 24h, 7d, or now),
        /// then expires. Without it, the old key stays active until you revoke it.
        #[arg(long, value_parser = events::parse_grace)]
        old_expires_in: Option<Duration>,
        /// Print the new key and its record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
    /// Show the audit trail, newest first: who created, rotated, revoked or scheduled the
    /// expiry of which key, when, and from where. No key or hash is shown.
    Events {
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this key's events (key_...).
        #[arg(long)]
        key: Option<String>,
        /// At most this many events (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Database,
    },
}

/// What a key may do: `--scope` (repeatable), `--metadata`, `--rate-limit`.
#[derive(clap::Args, Default)]
pub(crate) struct PolicyArgs {
    /// A scope the key carries (repeatable): lower-case words joined by `:`, like
    /// events:read. A key without scopes has full access.
    #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope)]
    scopes: Vec<String>,
    /// A JSON object handed to your handlers with the key (at most 4 KiB): '{"plan":"pro"}'.
    #[arg(long, value_name = "JSON", value_parser = parse_metadata)]
    metadata: Option<Metadata>,
    /// Requests the key may make: COUNT/PERIOD[,burst=N], like 100/s,burst=200 or 5000/h.
    #[arg(long, value_name = "LIMIT", value_parser = parse_rate_limit)]
    rate_limit: Option<RateLimit>,
}

impl PolicyArgs {
    fn given(&self) -> bool {
        !self.scopes.is_empty() || self.metadata.is_some() || self.rate_limit.is_some()
    }

    fn apply(self, mut new: NewKey) -> NewKey {
        new = new.scopes(self.scopes);
        if let Some(meta) = self.metadata {
            new = new.metadata(meta);
        }
        if let Some(limit) = self.rate_limit {
            new = new.rate_limit(limit);
        }
        new
    }
}

fn parse_scope(text: &str) -> Result<String, String> {
    if hapnd_auth::is_valid_scope(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{} is not a scope: lower-case words of letters, digits, `_` and `-`, each \
             starting with a letter, joined by `:` (events:read), at most {} characters",
            esc(text),
            hapnd_auth::MAX_SCOPE_LEN
        ))
    }
}

fn parse_metadata(text: &str) -> Result<Metadata, String> {
    Metadata::parse(text).map_err(|e| e.to_string())
}

fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    text.parse::<RateLimit>().map_err(|e| e.to_string())
}

fn parse_environment(text: &str) -> Result<Environment, String> {
    text.parse()
        .map_err(|e: hapnd_auth::UnknownEnvironment| e.to_string())
}

/// Opens the database and says which one it is.
async fn open(db: &Database, create: Create) -> Result<AnyStore, String> {
    let (store, described) = AnyStore::open(&db.url, create).await?;
    eprintln!("database: {described}");
    Ok(store)
}

pub(crate) async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Create {
            tenant,
            environment,
            name,
            expires,
            policy,
            json,
            db,
        } => {
            let mut new = policy.apply(NewKey::new(tenant, environment, name));
            if let Some(after) = expires {
                new = new.expires_at(SystemTime::now() + after);
            }
            // Validate before opening: a bad name must not create a database file.
            new.validate().map_err(|e| e.to_string())?;
            let store = open(&db, Create::IfMissing).await?;
            let created = store
                .create_as(new, &events::actor("keys create"))
                .await
                .map_err(|e| explain(&e))?;
            print_created(
                "created",
                &created.record,
                created.key.expose_secret(),
                json,
            );
            Ok(())
        }
        Command::List {
            tenant,
            all,
            expiring_within,
            json,
            db,
        } => {
            let store = open(&db, Create::Never).await?;
            let keys = match expiring_within {
                Some(window) => expiring(&store, tenant.as_deref(), window).await?,
                None => list(&store, tenant.as_deref()).await?,
            };
            if json {
                let rows: Vec<_> = keys.iter().map(record_json).collect();
                data!("{}", serde_json::Value::Array(rows));
            } else {
                if keys.is_empty() {
                    eprintln!("no keys");
                }
                print_table(&keys, all || tenant.is_none());
            }
            Ok(())
        }
        Command::Show { id, json, db } => {
            let id = key_id(&id)?;
            let store = open(&db, Create::Never).await?;
            let record = find(&store, &id).await?;
            if json {
                data!("{}", record_json(&record));
            } else {
                print_record(&record);
            }
            Ok(())
        }
        Command::Revoke { id, yes, json, db } => revoke(&key_id(&id)?, yes, json, &db).await,
        Command::Rotate {
            id,
            expires,
            policy,
            old_expires_in,
            json,
            db,
        } => rotate(&key_id(&id)?, expires, policy, old_expires_in, json, &db).await,
        Command::Events {
            tenant,
            key,
            limit,
            json,
            db,
        } => {
            let key = key.as_deref().map(key_id).transpose()?;
            let store = open(&db, Create::Never).await?;
            events::run(&store, tenant, key, limit, json).await
        }
    }
}

/// Every key of `tenant` (or of every tenant), read a page at a time.
async fn list(store: &AnyStore, tenant: Option<&str>) -> Result<Vec<KeyRecord>, String> {
    let mut page = ListPage::new(tenant, PAGE);
    let mut keys = Vec::new();
    loop {
        let got = store.list_page(&page).await.map_err(|e| explain(&e))?;
        let Some(last) = got.last() else {
            return Ok(keys);
        };
        page = page.after(last);
        let full = got.len() == PAGE as usize;
        keys.extend(got);
        if !full {
            return Ok(keys);
        }
    }
}

/// The unrevoked keys of `tenant` (or of every tenant) expiring within `window` from now,
/// soonest first, read a page at a time.
async fn expiring(
    store: &AnyStore,
    tenant: Option<&str>,
    window: Duration,
) -> Result<Vec<KeyRecord>, String> {
    let mut query = ExpiringQuery::within(SystemTime::now(), window, PAGE);
    if let Some(tenant) = tenant {
        query = query.tenant(tenant);
    }
    let mut keys = Vec::new();
    loop {
        let got = store.expiring(&query).await.map_err(|e| explain(&e))?;
        let Some(last) = got.last() else {
            return Ok(keys);
        };
        query = query.after(last);
        let full = got.len() == PAGE as usize;
        keys.extend(got);
        if !full {
            return Ok(keys);
        }
    }
}

async fn revoke(id: &KeyId, yes: bool, json: bool, db: &Database) -> Result<(), String> {
    let store = open(db, Create::Never).await?;
    let record = find(&store, id).await?;
    if let Some(at) = record.revoked_at {
        eprintln!("{} was already revoked at {}", record.id, rfc3339(at));
        if json {
            data!("{}", record_json(&record));
        }
        return Ok(());
    }
    if !yes && std::io::stdin().is_terminal() && !confirm(&record)? {
        return Err("not revoked".to_owned());
    }
    let record = store
        .revoke_as(id, SystemTime::now(), &events::actor("keys revoke"))
        .await
        .map_err(|e| explain(&e))?;
    eprintln!(
        "revoked {} ({}, tenant {}, {}, {}) at {}",
        record.id,
        esc(&record.name),
        esc(&record.tenant),
        record.environment,
        esc(&record.hint),
        record.revoked_at.map(rfc3339).unwrap_or_default()
    );
    if json {
        data!("{}", record_json(&record));
    }
    Ok(())
}

fn confirm(record: &KeyRecord) -> Result<bool, String> {
    eprint!(
        "Revoke {} ({}, tenant {}, {}, {})? Every gateway on this database will reject it. \
         [y/N] ",
        record.id,
        esc(&record.name),
        esc(&record.tenant),
        record.environment,
        esc(&record.hint)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

async fn rotate(
    id: &KeyId,
    expires: Option<Duration>,
    policy: PolicyArgs,
    old_expires_in: Option<Duration>,
    json: bool,
    db: &Database,
) -> Result<(), String> {
    let store = open(db, Create::Never).await?;
    let old = find(&store, id).await?;
    let now = SystemTime::now();
    if let Some(at) = old.revoked_at {
        return Err(format!(
            "{id} was revoked at {}: not rotating it; create a new key with `hapnd-auth keys \
             create`",
            rfc3339(at)
        ));
    }
    if let Some(at) = old.expires_at.filter(|at| *at <= now) {
        return Err(format!(
            "{id} expired at {}: not rotating it; create a new key with `hapnd-auth keys \
             create`",
            rfc3339(at)
        ));
    }
    // The old key's lifetime is the policy: a 90-day key is replaced by a 90-day key.
    let lifetime = expires.or_else(|| {
        old.expires_at
            .and_then(|at| at.duration_since(old.created_at).ok())
    });
    // The old key's policy is copied, unless any part of one is given: then that one.
    let mut roll = Roll::new();
    if policy.given() {
        let new = policy.apply(NewKey::new(
            old.tenant.clone(),
            old.environment,
            old.name.clone(),
        ));
        new.validate().map_err(|e| e.to_string())?;
        roll = roll.replacement_policy(KeyPolicy::new(new.scopes, new.metadata, new.rate_limit));
    }
    if let Some(lifetime) = lifetime {
        roll = roll.replacement_expires_at(now + lifetime);
    }
    if let Some(grace) = old_expires_in {
        roll = roll.old_expires_at(now + grace);
    }
    let rotation = store
        .rotate_as(id, roll, &events::actor("keys rotate"))
        .await
        .map_err(|e| explain(&e))?;
    let created = &rotation.replacement;
    print_created(
        "created replacement",
        &created.record,
        created.key.expose_secret(),
        json,
    );
    match (old_expires_in, rotation.old.expires_at) {
        (Some(_), Some(at)) => eprintln!(
            "the old key {id} keeps working until {} and is rejected from then on (a scheduled \
             roll; `hapnd-auth keys revoke {id}` ends it at once)",
            rfc3339(at)
        ),
        _ => eprintln!(
            "the old key {id} stays active: move your services to the new key, then \
             `hapnd-auth keys revoke {id}`"
        ),
    }
    Ok(())
}

async fn find(store: &AnyStore, id: &KeyId) -> Result<KeyRecord, String> {
    store
        .get(id)
        .await
        .map_err(|e| explain(&e))?
        .ok_or_else(|| format!("no key has id {}", esc(id.as_str())))
}

/// The id argument, refusing an API key given in its place: the store's "no key has id"
/// error would print it back.
fn key_id(arg: &str) -> Result<KeyId, String> {
    if arg.starts_with("sk_") || hapnd_auth::ApiKey::parse(arg).is_ok() {
        return Err(
            "that is an API key, not a key id (ids start with key_): find the id with \
             `hapnd-auth keys list --tenant <tenant>`"
                .to_owned(),
        );
    }
    Ok(KeyId::new(arg))
}

fn print_created(what: &str, record: &KeyRecord, secret: &str, json: bool) {
    eprintln!(
        "{what} key {} for tenant {} ({}), named {}",
        record.id,
        esc(&record.tenant),
        record.environment,
        esc(&record.name)
    );
    match record.expires_at {
        Some(at) => eprintln!("expires at {}", rfc3339(at)),
        None => eprintln!("never expires"),
    }
    eprintln!("scopes: {}", scopes_text(record));
    if let Some(limit) = record.rate_limit {
        eprintln!("rate limit: {limit}");
    }
    eprintln!(
        "This is the only time the key is shown; store it now. Hint: {}",
        record.hint
    );
    if json {
        let mut value = record_json(record);
        value["key"] = secret.into();
        data!("{value}");
    } else {
        data!("{secret}");
    }
}

fn status(r: &KeyRecord) -> &'static str {
    if r.revoked_at.is_some() {
        "revoked"
    } else if r.expires_at.is_some_and(|at| at <= SystemTime::now()) {
        "expired"
    } else {
        "active"
    }
}

/// The scopes as shown: space-separated, or what having none means.
fn scopes_text(r: &KeyRecord) -> String {
    if r.scopes.is_empty() {
        "none (full access)".to_owned()
    } else {
        r.scopes.join(" ")
    }
}

/// `keys show`: one field a line.
fn print_record(r: &KeyRecord) {
    let fields = [
        ("id", esc(r.id.as_str())),
        ("tenant", esc(&r.tenant)),
        ("name", esc(&r.name)),
        ("environment", r.environment.to_string()),
        ("status", status(r).to_owned()),
        ("hint", esc(&r.hint)),
        ("created", rfc3339(r.created_at)),
        ("expires", r.expires_at.map_or("never".into(), rfc3339)),
        ("last used", r.last_used_at.map_or("never".into(), rfc3339)),
        ("revoked", r.revoked_at.map_or("no".into(), rfc3339)),
        ("scopes", scopes_text(r)),
        (
            "rate limit",
            r.rate_limit.map_or("none".into(), |l| l.to_string()),
        ),
        (
            "metadata",
            r.metadata
                .as_ref()
                .map_or("none".into(), |m| esc(m.as_json())),
        ),
    ];
    for (name, value) in fields {
        data!("{name:<12} {value}");
    }
}

fn record_json(r: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.as_str(),
        "tenant": r.tenant,
        "environment": r.environment.as_str(),
        "name": r.name,
        "status": status(r),
        "hint": r.hint,
        "created_at": rfc3339(r.created_at),
        "expires_at": r.expires_at.map(rfc3339),
        "last_used_at": r.last_used_at.map(rfc3339),
        "revoked_at": r.revoked_at.map(rfc3339),
        "scopes": r.scopes,
        "metadata": r.metadata.as_ref().map(Metadata::to_value),
        "rate_limit": r.rate_limit.map(|l| l.to_string()),
    })
}

fn print_table(keys: &[KeyRecord], with_tenant: bool) {
    let mut header = vec!["ID"];
    if with_tenant {
        header.push("TENANT");
    }
    header.extend([
        "NAME",
        "ENV",
        "STATUS",
        "HINT",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "SCOPES",
        "RATE LIMIT",
    ]);
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|r| {
            let mut row = vec![esc(r.id.as_str())];
            if with_tenant {
                row.push(esc(&r.tenant));
            }
            row.extend([
                esc(&r.name),
                r.environment.to_string(),
                status(r).to_owned(),
                esc(&r.hint),
                rfc3339(r.created_at),
                r.expires_at.map_or("never".into(), rfc3339),
                r.last_used_at.map_or("never".into(), rfc3339),
                if r.scopes.is_empty() {
                    "all".to_owned()
                } else {
                    r.scopes.join(",")
                },
                r.rate_limit.map_or("none".into(), |l| l.to_string()),
            ]);
            row
        })
        .collect();
    let header: Vec<String> = header.into_iter().map(String::from).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        data!("{}", line.join("  ").trim_end());
    }
}
