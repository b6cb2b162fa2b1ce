//! The audit trail in the command: who the command is (`actor`), `keys events`, and the
//! event's JSON shape shared with the admin API.

use std::time::SystemTime;

use hapnd_auth::{Actor, AuditTrail, EventQuery, KeyEvent, KeyId};
use serde_json::{Value, json};

use crate::output::{data, esc};
use crate::store::{AnyStore, explain};
use crate::time::rfc3339;

/// The command as an actor: `hapnd-auth keys revoke (alice@build-1)`. The OS user is
/// `$USER` (or `$LOGNAME`, else the numeric uid); the host is the kernel's host name.
pub(crate) fn actor(command: &str) -> Actor {
    Actor::cli(command, &os_user(), &host_name())
}

fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(user) = std::env::var(var)
            && !user.trim().is_empty()
        {
            return user;
        }
    }
    uid().map_or_else(|| "unknown-user".to_owned(), |uid| format!("uid {uid}"))
}

#[cfg(unix)]
fn uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(not(unix))]
fn uid() -> Option<u32> {
    None
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// An event as the command and the admin API show it: no key, no hash.
pub(crate) fn event_json(e: &KeyEvent) -> Value {
    json!({
        "seq": e.seq,
        "at": rfc3339(e.at),
        "tenant": e.tenant,
        "key_id": e.key_id.as_str(),
        "event": e.kind.as_str(),
        "actor_kind": e.actor_kind.as_str(),
        "actor": e.actor,
        "client": e.client,
        "replacement_id": e.replacement.as_ref().map(KeyId::as_str),
        "expires_at": e.expires_at.map(rfc3339),
        "detail": e.detail,
    })
}

/// `keys events`: the newest `limit` events, of a tenant and/or a key.
pub(crate) async fn run(
    store: &AnyStore,
    tenant: Option<String>,
    key: Option<KeyId>,
    limit: u32,
    json: bool,
) -> Result<(), String> {
    let query = EventQuery {
        tenant,
        key,
        before: None,
        limit: limit.clamp(1, EventQuery::MAX_LIMIT),
    };
    let events = store.events(&query).await.map_err(|e| explain(&e))?;
    if json {
        let rows: Vec<Value> = events.iter().map(event_json).collect();
        data!("{}", Value::Array(rows));
        return Ok(());
    }
    if events.is_empty() {
        eprintln!("no events");
    }
    let header = ["AT", "EVENT", "KEY", "TENANT", "ACTOR", "CLIENT", "DETAIL"].map(String::from);
    let rows: Vec<[String; 7]> = events.iter().map(row).collect();
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
    Ok(())
}

fn row(e: &KeyEvent) -> [String; 7] {
    let detail = match (&e.replacement, e.expires_at, &e.detail) {
        (Some(by), _, _) => format!("replaced by {by}"),
        (_, _, Some(detail)) => esc(detail),
        (_, Some(at), _) => format!("expires {}", rfc3339(at)),
        _ => String::new(),
    };
    [
        rfc3339(e.at),
        e.kind.to_string(),
        esc(e.key_id.as_str()),
        esc(&e.tenant),
        format!("{}: {}", e.actor_kind, esc(&e.actor)),
        e.client.as_deref().map_or_else(String::new, esc),
        detail,
    ]
}

/// `serve --audit-retention`: a duration, or `forever` (zero: nothing is pruned).
pub(crate) fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    if text == "forever" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::time::parse_duration(text).map_err(|e| format!("{e}, or forever"))
}

/// `--old-expires-in`: a duration, or `now` (the old key expires at once).
pub(crate) fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    if text == "now" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::time::parse_duration(text).map_err(|e| format!("{e}, or now"))
}

/// The roll a rotation asks for: the old key's expiry `old_expires_in` from now (a
/// duration or `now`, as [`parse_grace`] reads it; empty is an error), or none when not given (the old key
/// then stays active until revoked). The admin API and the page's rotate form both read it
/// here.
pub(crate) fn roll_for(old_expires_in: Option<&str>) -> Result<hapnd_auth::Roll, String> {
    let roll = hapnd_auth::Roll::new();
    match old_expires_in.map(str::trim) {
        None => Ok(roll),
        Some(text) => {
            parse_grace(text).map(|grace| roll.old_expires_at(std::time::SystemTime::now() + grace))
        }
    }
}

/// Events deleted per statement when pruning: each batch is one short statement.
pub(crate) const PRUNE_BATCH: u32 = 500;

/// Deletes the events older than `retention`, a batch at a time, every `every`, for as long
/// as the gateway runs. A failed prune is logged and tried again at the next turn.
pub(crate) async fn prune_forever(
    store: AnyStore,
    retention: std::time::Duration,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let Some(before) = SystemTime::now().checked_sub(retention) else {
            continue;
        };
        match hapnd_auth::prune_events(&store, before, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned audit events past the retention"),
            Err(error) => tracing::warn!(%error, "cannot prune the audit trail"),
        }
    }
}
