//! `hapnd-auth keys ...`: administration straight against the database.

use std::time::SystemTime;

use clap::Subcommand;
use hapnd_auth::{Environment, KeyId, KeyRecord, KeyStore, NewKey, StoreError};

use crate::Database;
use crate::store::AnyStore;
use crate::time::{parse_duration, rfc3339};

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a key and print it once.
    Create {
        /// The tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// live, or test (the sandbox).
        #[arg(long = "env", value_parser = parse_environment)]
        environment: Environment,
        /// A human name, like ci-pipeline.
        #[arg(long)]
        name: String,
        /// Make the key expire after this long: 30d, 12h, 90m.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        #[command(flatten)]
        db: Database,
    },
    /// List a tenant's keys (no secrets).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
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
        #[command(flatten)]
        db: Database,
    },
    /// Create a replacement (same tenant, environment, name); the old key stays active
    /// until you revoke it.
    Rotate {
        /// The key id to replace.
        id: String,
        #[command(flatten)]
        db: Database,
    },
}

fn parse_environment(text: &str) -> Result<Environment, String> {
    text.parse()
        .map_err(|e: hapnd_auth::UnknownEnvironment| e.to_string())
}

pub(crate) async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Create {
            tenant,
            environment,
            name,
            expires,
            db,
        } => {
            let store = AnyStore::open(&db.url).await?;
            let mut new = NewKey::new(tenant, environment, name);
            if let Some(after) = expires {
                new = new.expires_at(SystemTime::now() + after);
            }
            let created = store.create(new).await.map_err(store_error)?;
            print_created("created", &created.record, created.key.expose_secret());
            Ok(())
        }
        Command::List { tenant, json, db } => {
            let store = AnyStore::open(&db.url).await?;
            let keys = store.list(&tenant).await.map_err(store_error)?;
            if json {
                let rows: Vec<_> = keys.iter().map(record_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print_table(&keys);
            }
            Ok(())
        }
        Command::Revoke { id, db } => {
            let store = AnyStore::open(&db.url).await?;
            let record = store
                .revoke(&key_id(&id)?, SystemTime::now())
                .await
                .map_err(store_error)?;
            println!(
                "revoked {} ({}, {}, {}) at {}",
                record.id,
                record.name,
                record.environment,
                record.hint,
                record.revoked_at.map(rfc3339).unwrap_or_default()
            );
            Ok(())
        }
        Command::Rotate { id, db } => {
            let store = AnyStore::open(&db.url).await?;
            let created = store.rotate(&key_id(&id)?).await.map_err(store_error)?;
            print_created(
                "created replacement",
                &created.record,
                created.key.expose_secret(),
            );
            println!(
                "the old key {id} stays active: move your services, then `hapnd-auth keys revoke {id}`"
            );
            Ok(())
        }
    }
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

pub(crate) fn store_error(e: StoreError) -> String {
    e.to_string()
}

fn print_created(what: &str, record: &KeyRecord, secret: &str) {
    println!(
        "{what} key {} for tenant {} ({}), named {}",
        record.id, record.tenant, record.environment, record.name
    );
    if let Some(at) = record.expires_at {
        println!("expires at {}", rfc3339(at));
    }
    println!("\n    {secret}\n");
    println!(
        "This is the only time the key is shown; store it now. Hint: {}",
        record.hint
    );
}

fn record_json(r: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.as_str(),
        "tenant": r.tenant,
        "environment": r.environment.as_str(),
        "name": r.name,
        "hint": r.hint,
        "created_at": rfc3339(r.created_at),
        "last_used_at": r.last_used_at.map(rfc3339),
        "revoked_at": r.revoked_at.map(rfc3339),
        "expires_at": r.expires_at.map(rfc3339),
    })
}

fn print_table(keys: &[KeyRecord]) {
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.name.clone(),
                r.environment.to_string(),
                r.hint.clone(),
                rfc3339(r.created_at),
                r.last_used_at.map_or("never".into(), rfc3339),
                r.revoked_at.map_or("-".into(), rfc3339),
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "ENV",
        "HINT",
        "CREATED",
        "LAST USED",
        "REVOKED",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..7)
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
        println!("{}", line.join("  ").trim_end());
    }
}
