//! Expiry ahead through the real binary: `keys list --expiring-within` (table and JSON, bad
//! durations refused), and the `hapnd_keys_expiring_soon` gauge `serve` keeps on /metrics,
//! counted periodically, which keeps its last value (logged once) while the store fails.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Sandbox, Server, request};

fn run(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox.command().args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a key and returns its id (from the prose on stderr).
fn create(sandbox: &Sandbox, tenant: &str, name: &str, expires: Option<&str>) -> String {
    let mut args = vec![
        "keys", "create", "--tenant", tenant, "--env", "live", "--name", name,
    ];
    if let Some(after) = expires {
        args.extend(["--expires", after]);
    }
    let out = run(sandbox, &args);
    ok(&out);
    String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_owned()
}

fn names(json: &str) -> Vec<String> {
    let rows: serde_json::Value = serde_json::from_str(json).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn keys_list_expiring_within_shows_unrevoked_keys_in_the_window_soonest_first() {
    let sandbox = Sandbox::new("expiring-list");
    create(&sandbox, "acme", "in-3d", Some("3d"));
    create(&sandbox, "acme", "in-1h", Some("1h"));
    create(&sandbox, "acme", "in-30d", Some("30d"));
    create(&sandbox, "acme", "never", None);
    create(&sandbox, "globex", "globex-in-2d", Some("2d"));
    let revoked = create(&sandbox, "acme", "revoked-in-1d", Some("1d"));
    ok(&run(&sandbox, &["keys", "revoke", "--yes", &revoked]));

    let every = ok(&run(
        &sandbox,
        &["keys", "list", "--expiring-within", "7d", "--json"],
    ));
    assert_eq!(names(&every), ["in-1h", "globex-in-2d", "in-3d"]);
    let acme = ok(&run(
        &sandbox,
        &[
            "keys",
            "list",
            "--tenant",
            "acme",
            "--expiring-within",
            "7d",
            "--json",
        ],
    ));
    assert_eq!(names(&acme), ["in-1h", "in-3d"]);
    let day = ok(&run(
        &sandbox,
        &[
            "keys",
            "list",
            "--tenant",
            "acme",
            "--expiring-within",
            "24h",
            "--json",
        ],
    ));
    assert_eq!(names(&day), ["in-1h"]);

    // The table: every tenant's, so with the tenant column.
    let table = ok(&run(&sandbox, &["keys", "list", "--expiring-within", "7d"]));
    assert!(table.lines().next().unwrap().contains("TENANT"), "{table}");
    let listed: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(listed, ["in-1h", "globex-in-2d", "in-3d"], "{table}");

    for bad in ["7", "7y", "0d", "-1d", "soon", ""] {
        let flag = format!("--expiring-within={bad}");
        let out = run(&sandbox, &["keys", "list", &flag]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid duration"), "{bad:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// The gauge's value on /metrics, if it is there.
fn gauge(server: &Server, window: &str) -> Option<f64> {
    let metrics = request(server.admin, "GET", "/metrics", &[], "");
    assert_eq!(metrics.status, 200);
    let line = format!("hapnd_keys_expiring_soon{{window=\"{window}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map(|v| v.trim().parse().unwrap())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sqlite(sandbox: &Sandbox, statement: &str) {
    let db = sandbox.dir.join("keys.db");
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(statement)
        .status()
        .unwrap();
    assert!(status.success(), "{statement}");
}

#[test]
fn serve_counts_keys_expiring_soon_periodically_and_survives_a_failing_store() {
    let sandbox = Sandbox::new("expiring-gauge");
    create(&sandbox, "acme", "in-2d", Some("2d"));
    create(&sandbox, "acme", "in-30d", Some("30d"));
    let server = Server::spawn_with(
        &sandbox,
        sandbox.command(),
        &["--expiring-interval-secs", "1", "--expiring-window", "72h"],
    );
    wait_for("the first count", || gauge(&server, "72h") == Some(1.0));

    // Counted again on its own: a key created by another process shows up.
    create(&sandbox, "globex", "in-1d", Some("1d"));
    wait_for("the next count", || gauge(&server, "72h") == Some(2.0));

    // The store fails (the table is gone): the gauge keeps its value, serve keeps serving,
    // and the failure is logged once however many counts fail.
    sqlite(
        &sandbox,
        "ALTER TABLE hapnd_api_keys RENAME TO hapnd_api_keys_away",
    );
    let failure = "cannot count keys expiring soon";
    wait_for("the failure's log line", || {
        sandbox.logs().contains(failure)
    });
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        sandbox.logs().matches(failure).count(),
        1,
        "{}",
        sandbox.logs()
    );
    assert_eq!(gauge(&server, "72h"), Some(2.0));
    assert_eq!(
        request(server.admin, "GET", "/healthz", &[], "").status / 100,
        5
    );

    // Back: counted again, and the recovery logged.
    sqlite(
        &sandbox,
        "ALTER TABLE hapnd_api_keys_away RENAME TO hapnd_api_keys",
    );
    create(&sandbox, "globex", "in-2h", Some("2h"));
    wait_for("the recovery", || gauge(&server, "72h") == Some(3.0));
    assert!(
        sandbox
            .logs()
            .contains("counting keys expiring soon works again")
    );
}
