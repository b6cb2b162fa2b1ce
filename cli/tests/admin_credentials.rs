//! Tenant-scoped admin credentials, end to end: `hapnd-auth admin-credentials` on SQLite and
//! PostgreSQL, the real gateway's admin API and API Keys page with one, from a second client
//! address, across tenants, and revoked (by another process) between two requests.

mod common;

use std::net::IpAddr;
use std::process::Output;

use common::{Response, Sandbox, Server, TOKEN, request, request_from};
use serde_json::Value;
use sha2::{Digest, Sha256};

const OTHER_CLIENT: [u8; 4] = [127, 0, 0, 2];

fn run(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox.command().args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Creates a credential with the command; returns it and its id.
fn create_credential(
    sandbox: &Sandbox,
    db: &[&str],
    tenant: &str,
    label: &str,
) -> (String, String) {
    let mut args = vec![
        "admin-credentials",
        "create",
        "--tenant",
        tenant,
        "--label",
        label,
        "--json",
    ];
    args.extend_from_slice(db);
    let out = run(sandbox, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let credential = created["credential"].as_str().unwrap().to_owned();
    assert!(
        !stderr(&out).contains(&credential),
        "the credential on stderr"
    );
    (credential, created["id"].as_str().unwrap().to_owned())
}

fn pg_url(what: &str) -> Option<String> {
    match std::env::var("HAPND_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but HAPND_TEST_DATABASE_URL is not: {what}"
            );
            common::skip::skipped(&format!("HAPND_TEST_DATABASE_URL not set; {what}"));
            None
        }
    }
}

/// Every column of every credential row, as text (hashes hex-encoded).
async fn stored_rows(db: &str) -> Vec<Vec<String>> {
    use sqlx::Row;
    let sql = "SELECT id, tenant, label, hash FROM hapnd_admin_credentials";
    let rows: Vec<(String, String, String, Vec<u8>)> = if db.starts_with("postgres") {
        let mut conn: sqlx::PgConnection = <sqlx::PgConnection as sqlx::Connection>::connect(db)
            .await
            .unwrap();
        sqlx::query(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    } else {
        let mut conn: sqlx::SqliteConnection =
            <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{db}"))
                .await
                .unwrap();
        sqlx::query(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    };
    rows.into_iter()
        .map(
            |(id, tenant, label, hash): (String, String, String, Vec<u8>)| {
                vec![id, tenant, label, hex(&hash)]
            },
        )
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The command's part, on the database `db` (`--db` arguments): stored as a hash, listed
/// without it, revoked once, clear errors for bad input.
async fn the_command_manages_credentials(sandbox: &Sandbox, db_url: &str, tenant: &str) {
    let db = ["--db", db_url];
    let other = format!("{tenant}_other");
    // Plain output: the credential alone on stdout.
    let mut args = vec![
        "admin-credentials",
        "create",
        "--tenant",
        tenant,
        "--label",
        "acme-dashboard",
    ];
    args.extend_from_slice(&db);
    let out = run(sandbox, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = stdout(&out).trim_end().to_owned();
    assert!(!plain.contains('\n'), "{plain}");
    assert!(
        plain.starts_with("hapnd_adm_") && plain.len() == 50,
        "{plain:.10}..."
    );
    assert!(plain[10..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(!stderr(&out).contains(&plain));
    let (json_one, json_id) = create_credential(sandbox, &db, &other, "ci");
    assert_ne!(plain, json_one);

    // Only the SHA-256 is stored, under the label.
    let rows = stored_rows(db_url).await;
    for credential in [&plain, &json_one] {
        let hash = hex(&Sha256::digest(credential.as_bytes()));
        let row = rows
            .iter()
            .find(|r| r[3] == hash)
            .expect("a row with the credential's hash");
        assert!(row.iter().all(|c| !c.contains(credential.as_str())));
    }
    if !db_url.starts_with("postgres") {
        for suffix in ["", "-wal"] {
            let bytes = std::fs::read(format!("{db_url}{suffix}")).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&plain[10..]), "the credential in the file");
        }
    }

    // Listed, never with the credential or its hash.
    let mut args = vec!["admin-credentials", "list", "--json", "--tenant", &other];
    args.extend_from_slice(&db);
    let out = run(sandbox, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "--tenant lists that tenant's only");
    assert_eq!(listed[0]["id"], json_id.as_str());
    assert_eq!(listed[0]["label"], "ci");
    assert_eq!(listed[0]["status"], "active");
    let mut args = vec!["admin-credentials", "list"];
    args.extend_from_slice(&db);
    let table = stdout(&run(sandbox, &args));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&json_id) && table.contains("acme-dashboard"),
        "{table}"
    );
    for row in &rows {
        assert!(!table.contains(&row[3]), "a hash in the listing");
    }
    assert!(!table.contains(&plain) && !table.contains(&json_one));

    // Revoked once; again is not an error; an unknown id is.
    let mut args = vec!["admin-credentials", "revoke", &json_id, "--json"];
    args.extend_from_slice(&db);
    let out = run(sandbox, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].as_str().unwrap().ends_with('Z'));
    let out = run(sandbox, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("already revoked"), "{}", stderr(&out));
    let mut args = vec!["admin-credentials", "revoke", "adm_0000"];
    args.extend_from_slice(&db);
    let out = run(sandbox, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no admin credential has id adm_0000"),
        "{}",
        stderr(&out)
    );

    // Bad input: a clear error, nothing echoed that is a secret.
    let mut args = vec!["admin-credentials", "revoke", &plain];
    args.extend_from_slice(&db);
    let out = run(sandbox, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("that is a credential, not its id"));
    assert!(!stderr(&out).contains(&plain));
    for (flag, value, says) in [
        ("--label", "", "a label is 1 to 64 characters"),
        ("--label", "a\u{1b}[2Jb", "control or invisible"),
        ("--tenant", "", "not a tenant name"),
        (
            "--label",
            "Admin token",
            "what the audit trail calls the admin token",
        ),
    ] {
        let mut args = vec![
            "admin-credentials",
            "create",
            "--tenant",
            tenant,
            "--label",
            "x",
        ];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        args.extend_from_slice(&db);
        let out = run(sandbox, &args);
        assert_eq!(out.status.code(), Some(1), "{flag} {value:?}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn the_command_stores_credentials_hashed_on_sqlite() {
    let sandbox = Sandbox::new("cred-sqlite");
    let db = sandbox.dir.join("keys.db").to_string_lossy().into_owned();
    the_command_manages_credentials(&sandbox, &db, "acme").await;
}

#[tokio::test]
async fn the_command_stores_credentials_hashed_on_postgres() {
    let Some(url) = pg_url("the PostgreSQL admin-credentials test did not run") else {
        return;
    };
    let sandbox = Sandbox::new("cred-pg");
    let tenant = format!("cred_{}", std::process::id());
    the_command_manages_credentials(&sandbox, &url, &tenant).await;
}

fn create_key(server: &Server, tenant: &str, name: &str) -> (String, String) {
    let body = serde_json::json!({ "tenant": tenant, "environment": "live", "name": name });
    let r = server.admin_api("POST", "/api/v1/keys", TOKEN, &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    (
        created["secret"].as_str().unwrap().to_owned(),
        created["key"]["id"].as_str().unwrap().to_owned(),
    )
}

/// An admin API request with `credential` from 127.0.0.2.
fn api_from_other(
    server: &Server,
    method: &str,
    path: &str,
    credential: &str,
    body: &str,
) -> Response {
    let auth = format!("Bearer {credential}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    request_from(
        IpAddr::from(OTHER_CLIENT),
        server.admin,
        method,
        path,
        &headers,
        body,
    )
}

fn status_of(server: &Server, id: &str) -> String {
    let r = server.admin_api("GET", &format!("/api/v1/keys/{id}"), TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["key"]["status"].as_str().unwrap().to_owned()
}

#[test]
fn a_tenant_credential_manages_its_tenant_only_through_the_admin_api() {
    let sandbox = Sandbox::new("cred-api");
    let server = Server::start(&sandbox);
    let (_, acme_id) = create_key(&server, "acme", "billing");
    let (globex_secret, globex_id) = create_key(&server, "globex", "billing");
    let (credential, credential_id) = create_credential(&sandbox, &[], "acme", "acme-dashboard");

    // Its tenant: list, show, events.
    let r = api_from_other(&server, "GET", "/api/v1/tenants/acme/keys", &credential, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["keys"][0]["id"], acme_id.as_str());
    let r = api_from_other(
        &server,
        "GET",
        &format!("/api/v1/keys/{acme_id}"),
        &credential,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api_from_other(
        &server,
        "GET",
        "/api/v1/tenants/acme/events",
        &credential,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Another tenant's listing and events: 403, the same for a tenant that does not exist.
    let mut refusals = Vec::new();
    for path in [
        "/api/v1/tenants/globex/keys",
        "/api/v1/tenants/no-such-tenant/keys",
        "/api/v1/tenants/globex/events",
        "/api/v1/tenants/no-such-tenant/events",
    ] {
        let r = api_from_other(&server, "GET", path, &credential, "");
        assert_eq!(
            (r.status, r.code()),
            (403, "tenant_forbidden".to_owned()),
            "{path}"
        );
        assert!(!r.body.contains(&globex_id));
        refusals.push(r.body);
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{refusals:?}");

    // Another tenant's key answers exactly as an unknown id.
    let unknown = "key_0000000000000000000000";
    for (method, suffix) in [("GET", ""), ("POST", "/revoke"), ("POST", "/rotate")] {
        let theirs = api_from_other(
            &server,
            method,
            &format!("/api/v1/keys/{globex_id}{suffix}"),
            &credential,
            "",
        );
        let none = api_from_other(
            &server,
            method,
            &format!("/api/v1/keys/{unknown}{suffix}"),
            &credential,
            "",
        );
        assert_eq!(theirs.status, 404, "{method} {suffix}: {}", theirs.body);
        assert_eq!(theirs.body.replace(&globex_id, unknown), none.body);
        assert_eq!(none.status, 404);
    }
    assert_eq!(status_of(&server, &globex_id), "active");
    assert_eq!(server.public_get("/v1/whoami", &globex_secret).status, 200);

    // Create: its tenant by default or by name; another tenant refused, nothing created.
    let r = api_from_other(
        &server,
        "POST",
        "/api/v1/keys",
        &credential,
        r#"{"environment":"live","name":"dash"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["key"]["tenant"], "acme");
    let r = api_from_other(
        &server,
        "POST",
        "/api/v1/keys",
        &credential,
        r#"{"tenant":"acme","environment":"live","name":"dash2"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api_from_other(
        &server,
        "POST",
        "/api/v1/keys",
        &credential,
        r#"{"tenant":"globex","environment":"live","name":"intruder"}"#,
    );
    assert_eq!((r.status, r.code()), (403, "tenant_forbidden".to_owned()));
    let r = server.admin_api("GET", "/api/v1/tenants/globex/keys", TOKEN, "");
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 1, "{}", r.body);
    // The admin token still needs a tenant.
    let r = server.admin_api(
        "POST",
        "/api/v1/keys",
        TOKEN,
        r#"{"environment":"live","name":"x"}"#,
    );
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request".to_owned()),
        "{}",
        r.body
    );

    // Revoke and rotate its own keys; the trail records the credential's label and client.
    let r = api_from_other(
        &server,
        "POST",
        &format!("/api/v1/keys/{acme_id}/rotate"),
        &credential,
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api_from_other(
        &server,
        "POST",
        &format!("/api/v1/keys/{acme_id}/revoke"),
        &credential,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_of(&server, &acme_id), "revoked");
    let r = server.admin_api(
        "GET",
        &format!("/api/v1/tenants/acme/events?key={acme_id}"),
        TOKEN,
        "",
    );
    let events = r.json()["events"].as_array().unwrap().clone();
    let revoked = events
        .iter()
        .find(|e| e["event"] == "revoked")
        .expect("a revoked event");
    assert_eq!(revoked["actor_kind"], "admin");
    assert_eq!(revoked["actor"], "acme-dashboard");
    assert_eq!(revoked["client"], "127.0.0.2");
    let created = events.iter().find(|e| e["event"] == "created").unwrap();
    assert_eq!(
        created["actor"], "admin token",
        "the admin token's label is unchanged"
    );

    // Revoked by another process: refused at the next request.
    let out = run(&sandbox, &["admin-credentials", "revoke", &credential_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = api_from_other(&server, "GET", "/api/v1/tenants/acme/keys", &credential, "");
    assert_eq!(
        (r.status, r.code()),
        (401, "invalid_admin_token".to_owned())
    );
    // The admin token keeps working.
    let r = server.admin_api("GET", "/api/v1/tenants/globex/keys", TOKEN, "");
    assert_eq!(r.status, 200);

    let logs = sandbox.logs();
    assert!(!logs.contains(&credential), "the credential in the logs");
    assert!(
        !logs.contains(&credential[10..]),
        "the credential in the logs"
    );
}

#[test]
fn wrong_credentials_count_as_wrong_tokens_and_the_right_one_is_never_locked_out() {
    let sandbox = Sandbox::new("cred-limit");
    let server = Server::start(&sandbox);
    create_key(&server, "acme", "billing");
    let (credential, _) = create_credential(&sandbox, &[], "acme", "acme-dashboard");
    let revoked = create_credential(&sandbox, &[], "acme", "old");
    let out = run(&sandbox, &["admin-credentials", "revoke", &revoked.1]);
    assert!(out.status.success(), "{}", stderr(&out));
    let wrong_credential = format!("hapnd_adm_{}", "Z".repeat(40));
    let path = "/api/v1/tenants/acme/keys";
    // Five failures from 127.0.0.2, mixing wrong tokens, a wrong and a revoked credential.
    for wrong in [
        "wrong-token",
        wrong_credential.as_str(),
        revoked.0.as_str(),
        "x",
        wrong_credential.as_str(),
    ] {
        let r = api_from_other(&server, "GET", path, wrong, "");
        assert_eq!(
            (r.status, r.code()),
            (401, "invalid_admin_token".to_owned())
        );
    }
    let r = api_from_other(&server, "GET", path, &wrong_credential, "");
    assert_eq!(r.status, 429, "{}", r.body);
    let r = api_from_other(&server, "GET", path, "wrong-token", "");
    assert_eq!(r.status, 429, "{}", r.body);
    // The right credential and token still get in from the throttled address.
    let r = api_from_other(&server, "GET", path, &credential, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api_from_other(&server, "GET", path, TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    // Another address is not throttled.
    let r = server.admin_api("GET", path, &wrong_credential, "");
    assert_eq!(r.status, 401);
}

#[test]
fn a_credential_revoked_by_the_command_is_refused_by_two_gateways_on_postgres() {
    let Some(url) = pg_url("the PostgreSQL admin-credentials revocation test did not run") else {
        return;
    };
    let sandbox = Sandbox::new("cred-pg2");
    let gateway = || {
        let mut command = sandbox.command();
        command.env("HAPND_ADMIN_TOKEN", TOKEN);
        Server::spawn_with(&sandbox, command, &["--db", &url])
    };
    let (a, b) = (gateway(), gateway());
    let tenant = format!("credpg_{}", std::process::id());
    create_key(&a, &tenant, "billing");
    let (credential, id) = create_credential(&sandbox, &["--db", &url], &tenant, "dash");
    let path = format!("/api/v1/tenants/{tenant}/keys");
    let (cookie_a, _) = sign_in(&a, &credential);
    for server in [&a, &b] {
        let r = api_from_other(server, "GET", &path, &credential, "");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(page(&a, "/keys", &cookie_a).status, 200);
    let out = run(
        &sandbox,
        &["admin-credentials", "revoke", &id, "--db", &url],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The very next request, on either gateway: no cache outlives the revocation.
    for server in [&a, &b] {
        let r = api_from_other(server, "GET", &path, &credential, "");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = page(&a, "/keys", &cookie_a);
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/login"))
    );
}

/// Signs in to the page with `token`; returns the session cookie's value.
fn sign_in(server: &Server, token: &str) -> (String, Response) {
    let r = request(
        server.admin,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={token}"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .strip_prefix("hapnd_admin_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (cookie, r)
}

fn page(server: &Server, path: &str, cookie: &str) -> Response {
    let cookie = format!("hapnd_admin_session={cookie}");
    request(server.admin, "GET", path, &[("Cookie", &cookie)], "")
}

fn post(server: &Server, path: &str, cookie: &str, body: &str) -> Response {
    let cookie = format!("hapnd_admin_session={cookie}");
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    request(server.admin, "POST", path, &headers, body)
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

#[test]
fn a_page_session_signed_in_with_a_credential_sees_its_tenant_only_until_revoked() {
    let sandbox = Sandbox::new("cred-page");
    let server = Server::start(&sandbox);
    let (_, acme_id) = create_key(&server, "acme", "billing");
    let (_, globex_id) = create_key(&server, "globex", "billing");
    let (credential, credential_id) = create_credential(&sandbox, &[], "acme", "acme-dashboard");
    let (cookie, _) = sign_in(&server, &credential);

    // Its tenant's keys straight away, with no tenant box.
    let r = page(&server, "/keys", &cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!(r#"<tr id="{acme_id}">"#)),
        "{}",
        r.body
    );
    assert!(!r.body.contains(r#"name="tenant" value="acme" required"#));
    assert!(!r.body.contains(r#"<input id="tenant""#), "a tenant box");
    assert!(r.body.contains(r#"id="scoped-tenant""#));
    let csrf = hidden(&r.body, "csrf");
    // The admin token's session still has its tenant box.
    let (admin_cookie, _) = sign_in(&server, TOKEN);
    let r = page(&server, "/keys?tenant=acme", &admin_cookie);
    assert!(r.body.contains(r#"<input id="tenant""#));

    // Another tenant: refused, by link and by form.
    let r = page(&server, "/keys?tenant=globex", &cookie);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains(&globex_id));
    let unknown = "key_0000000000000000000000";
    let theirs = page(&server, &format!("/keys/{globex_id}/revoke"), &cookie);
    let none = page(&server, &format!("/keys/{unknown}/revoke"), &cookie);
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.body.replace(&globex_id, unknown), none.body);
    let r = post(
        &server,
        &format!("/keys/{globex_id}/revoke"),
        &cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = page(&server, "/keys", &cookie);
    let form = hidden(&r.body, "form");
    let r = post(
        &server,
        &format!("/keys/{globex_id}/rotate"),
        &cookie,
        &format!("csrf={csrf}&form={form}"),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = page(&server, "/keys", &cookie);
    let form = hidden(&r.body, "form");
    let r = post(
        &server,
        "/keys",
        &cookie,
        &format!("csrf={csrf}&form={form}&tenant=globex&name=intruder&environment=live"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(status_of(&server, &globex_id), "active");
    let r = server.admin_api("GET", "/api/v1/tenants/globex/keys", TOKEN, "");
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 1);

    // Its own: created and audited under the credential's label.
    let r = page(&server, "/keys", &cookie);
    let form = hidden(&r.body, "form");
    let r = post(
        &server,
        "/keys",
        &cookie,
        &format!("csrf={csrf}&form={form}&tenant=acme&name=from-page&environment=live"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.admin_api("GET", "/api/v1/tenants/acme/events", TOKEN, "");
    let newest = &r.json()["events"][0];
    assert_eq!(newest["event"], "created");
    assert_eq!(newest["actor_kind"], "page");
    assert_eq!(newest["actor"], "acme-dashboard session");

    // Revoked: the session's next request has no powers.
    let out = run(&sandbox, &["admin-credentials", "revoke", &credential_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = post(
        &server,
        &format!("/keys/{acme_id}/revoke"),
        &cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/login"))
    );
    assert_eq!(status_of(&server, &acme_id), "active");
    let r = page(&server, "/keys", &cookie);
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/login"))
    );
    // And it cannot sign in again.
    let r = request(
        server.admin,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={credential}"),
    );
    assert_eq!(r.status, 403);
    assert!(
        !sandbox.logs().contains(&credential[10..]),
        "the credential in the logs"
    );
}

#[test]
fn without_an_admin_token_credentials_open_nothing() {
    let sandbox = Sandbox::new("cred-off");
    let (credential, _) = create_credential(&sandbox, &[], "acme", "acme-dashboard");
    let server = Server::spawn(&sandbox, sandbox.command());
    let r = server.admin_api("GET", "/api/v1/tenants/acme/keys", &credential, "");
    assert_eq!((r.status, r.code()), (404, "admin_disabled".to_owned()));
    let r = request(
        server.admin,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={credential}"),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.header("set-cookie").is_none());
}
