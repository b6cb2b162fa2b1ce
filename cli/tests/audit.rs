//! The audit trail and scheduled rolls through the real binary: `keys events`, the admin
//! API's `/api/v1/tenants/{tenant}/events` from a second client address, and a scheduled
//! roll whose old key the running gateway admits before its expiry and rejects after.

mod common;

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Sandbox, Server, TOKEN, request_from};

fn run(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox
        .command()
        .env("USER", "alice")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The key (alone on stdout) and its id (in the prose on stderr).
fn created(out: &Output) -> (String, String) {
    let key = ok(out).trim().to_owned();
    let id = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_owned();
    (key, id)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn keys_events_shows_who_did_what_newest_first_and_no_key() {
    let sandbox = Sandbox::new("audit-cli");
    let (old_key, old) = created(&run(
        &sandbox,
        &[
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", "ci",
        ],
    ));
    let rotated = run(
        &sandbox,
        &["keys", "rotate", &old, "--old-expires-in", "24h"],
    );
    let (new_key, new) = created(&rotated);
    assert!(
        String::from_utf8_lossy(&rotated.stderr).contains("keeps working until"),
        "the scheduled roll says when the old key stops"
    );
    ok(&run(&sandbox, &["keys", "revoke", "--yes", &old]));

    let out = ok(&run(&sandbox, &["keys", "events", "--key", &old, "--json"]));
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["revoked", "expiry_scheduled", "rotated", "created"]);
    let host = host_name();
    assert_eq!(
        events[0]["actor"],
        format!("hapnd-auth keys revoke (alice@{host})")
    );
    assert_eq!(events[0]["actor_kind"], "cli");
    assert_eq!(events[2]["replacement_id"], new.as_str());
    assert_eq!(
        events[3]["actor"],
        format!("hapnd-auth keys create (alice@{host})")
    );
    assert!(events[1]["expires_at"].is_string());

    // The tenant's trail holds the replacement's creation too; the table shows no key.
    let table = ok(&run(&sandbox, &["keys", "events", "--tenant", "acme"]));
    assert_eq!(table.lines().count(), 1 + 5, "{table}");
    assert!(table.lines().next().unwrap().starts_with("AT"));
    assert!(table.contains(&format!("replaced by {new}")), "{table}");
    for key in [&old_key, &new_key] {
        assert!(!table.contains(key.as_str()) && !out.contains(key.as_str()));
        assert!(!table.contains(&key[8..20]));
    }
    let limited = ok(&run(
        &sandbox,
        &["keys", "events", "--tenant", "acme", "--limit", "2"],
    ));
    assert_eq!(limited.lines().count(), 1 + 2);
    // A key given in place of an id is refused without echoing it.
    let refused = run(&sandbox, &["keys", "events", "--key", &new_key]);
    assert!(!refused.status.success());
    assert!(!String::from_utf8_lossy(&refused.stderr).contains(&new_key));
}

#[test]
fn the_admin_api_records_its_credential_and_client_address_and_pages_events() {
    let sandbox = Sandbox::new("audit-api");
    let server = Server::spawn_with(
        &sandbox,
        {
            let mut c = sandbox.command();
            c.env("HAPND_ADMIN_TOKEN", TOKEN);
            c
        },
        &["--no-demo-key"],
    );
    let second: IpAddr = "127.0.0.2".parse().unwrap();
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let api = |method: &str, path: &str, body: &str| {
        request_from(second, server.admin, method, path, &headers, body)
    };
    let r = api(
        "POST",
        "/api/v1/keys",
        r#"{"tenant":"acme","environment":"live","name":"ci"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["key"]["id"].as_str().unwrap().to_owned();
    let r = api(
        "POST",
        &format!("/api/v1/keys/{id}/rotate"),
        r#"{"old_expires_in":"1h"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json()["old_key"]["expires_at"].is_string(), "{}", r.body);
    let secret = r.json()["secret"].as_str().unwrap().to_owned();
    let r = api("POST", &format!("/api/v1/keys/{id}/revoke"), "");
    assert_eq!(r.status, 200, "{}", r.body);

    // Four events of the old key and the replacement's creation, two a page.
    let mut seen = Vec::new();
    let mut path = "/api/v1/tenants/acme/events?limit=2".to_owned();
    loop {
        let r = api("GET", &path, "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body.contains(&secret));
        let page = r.json();
        let events = page["events"].as_array().unwrap().clone();
        assert!(events.len() <= 2);
        seen.extend(events);
        match page["next"].as_i64() {
            Some(next) => path = format!("/api/v1/tenants/acme/events?limit=2&before={next}"),
            None => break,
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "revoked",
            "expiry_scheduled",
            "rotated",
            "created",
            "created"
        ]
    );
    for e in &seen {
        assert_eq!(e["actor_kind"], "admin");
        assert_eq!(e["actor"], "admin token");
        assert_eq!(e["client"], "127.0.0.2", "the client's address is recorded");
    }
    // One key's events; a bad query is a 400, never a 500.
    let r = api("GET", &format!("/api/v1/tenants/acme/events?key={id}"), "");
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 4);
    assert_eq!(
        api("GET", "/api/v1/tenants/acme/events?limit=0", "").status,
        400
    );
    assert_eq!(
        api("GET", "/api/v1/tenants/acme/events?limit=x", "").status,
        400
    );
    assert_eq!(
        api(
            "GET",
            &format!("/api/v1/tenants/acme/events?key={secret}"),
            ""
        )
        .status,
        400
    );
    let r = request_from(
        second,
        server.admin,
        "GET",
        "/api/v1/tenants/acme/events",
        &[],
        "",
    );
    assert_eq!(r.status, 401, "the trail needs the admin token");
}

fn whoami(server: &Server, key: &str) -> (u16, String) {
    let r = server.public_get("/v1/whoami", key);
    let code = if r.status == 200 {
        String::new()
    } else {
        r.code()
    };
    (r.status, code)
}

/// A scheduled roll through the command against a running gateway (SQLite, another
/// process): the old key is admitted until its expiry and rejected with `api_key_expired`
/// from then on, cached or not; the replacement keeps working.
#[test]
fn a_scheduled_roll_keeps_the_old_key_until_its_expiry_then_the_gateway_rejects_it() {
    let sandbox = Sandbox::new("audit-roll");
    let server = Server::spawn_with(
        &sandbox,
        sandbox.command(),
        &["--no-demo-key", "--poll-interval-ms", "100"],
    );
    let (old_key, old) = created(&run(
        &sandbox,
        &[
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", "ci",
        ],
    ));
    assert_eq!(
        whoami(&server, &old_key).0,
        200,
        "now cached, without expiry"
    );
    let rolled_at = Instant::now();
    let (new_key, _) = created(&run(
        &sandbox,
        &["keys", "rotate", &old, "--old-expires-in", "3s"],
    ));
    // Before the expiry: still admitted (the gateway re-read the record, with its expiry).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rolled_at.elapsed() < Duration::from_millis(2500),
        "too slow to check before"
    );
    assert_eq!(whoami(&server, &old_key).0, 200);
    assert_eq!(whoami(&server, &new_key).0, 200);
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(rolled_at.elapsed()) + Duration::from_millis(200),
    );
    assert_eq!(
        whoami(&server, &old_key),
        (401, "api_key_expired".to_owned())
    );
    assert_eq!(whoami(&server, &new_key).0, 200);
}

/// `scan` as a pre-commit hook runs it: a key in a file is reported by hint and line and
/// fails the command; the key itself is never printed; a clean tree passes.
#[test]
fn scan_finds_keys_by_checksum_prints_only_hints_and_fails() {
    let sandbox = Sandbox::new("scan");
    let (key, _) = created(&run(
        &sandbox,
        &[
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", "ci",
        ],
    ));
    let repo = sandbox.dir.join("repo");
    std::fs::create_dir_all(repo.join("src/.git")).unwrap();
    std::fs::write(
        repo.join("README.md"),
        "no keys here: sk_live_... is the prefix\n",
    )
    .unwrap();
    let scan = |paths: &[&std::path::Path]| {
        let mut c = sandbox.command();
        c.arg("scan").args(paths);
        c.output().unwrap()
    };
    let clean = scan(&[&repo]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    std::fs::write(
        repo.join("src/config.yml"),
        format!("a: 1\ntoken: \"{key}\"\n"),
    )
    .unwrap();
    // Inside .git is not the tree: not scanned.
    std::fs::write(repo.join("src/.git/packed"), &key).unwrap();
    let dirty = scan(&[&repo]);
    assert_eq!(dirty.status.code(), Some(1));
    let out = String::from_utf8_lossy(&dirty.stdout);
    let err = String::from_utf8_lossy(&dirty.stderr);
    let hint = format!("sk_live_...{}", &key[key.len() - 4..]);
    assert_eq!(
        out.trim(),
        format!("{}:2: {hint}", repo.join("src/config.yml").display())
    );
    assert!(!out.contains(&key) && !err.contains(&key));
    assert!(!out.contains(&key[8..40]) && !err.contains(&key[8..40]));
    // A key with a broken checksum is not ours (a typo, or a look-alike).
    let mut typo = key.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == '0' { '1' } else { '0' });
    std::fs::write(repo.join("src/config.yml"), &typo).unwrap();
    assert_eq!(scan(&[&repo]).status.code(), Some(0));
    // A path that cannot be read is an error, not a pass.
    assert_eq!(scan(&[&repo.join("missing")]).status.code(), Some(2));
}

/// `serve --audit-retention`: events older than the retention are pruned (the first prune
/// runs at start), the keys themselves are untouched.
#[test]
fn serve_prunes_events_past_the_retention() {
    let sandbox = Sandbox::new("audit-retention");
    let (key, id) = created(&run(
        &sandbox,
        &[
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", "ci",
        ],
    ));
    let count = || {
        let out = ok(&run(&sandbox, &["keys", "events", "--key", &id, "--json"]));
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    let server = Server::spawn_with(
        &sandbox,
        sandbox.command(),
        &["--no-demo-key", "--audit-retention", "1s"],
    );
    let started = Instant::now();
    while count() != 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "not pruned");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(whoami(&server, &key).0, 200, "the key is untouched");
}
