//! The admin JSON API, end to end: the real binary, its admin listener, and the public
//! listener the keys it manages open.

mod common;

use common::{Sandbox, Server, TOKEN, request, request_from};
use serde_json::Value;

fn create(server: &Server, tenant: &str, env: &str, name: &str) -> Value {
    let body = serde_json::json!({ "tenant": tenant, "environment": env, "name": name });
    let r = server.admin_api("POST", "/api/v1/keys", TOKEN, &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    r.json()
}

#[test]
fn each_operation_and_the_public_listener_follows_at_once() {
    let sandbox = Sandbox::new("api-ops");
    let server = Server::start(&sandbox);

    // Create, with an expiry: the key is returned once, with its record.
    let body =
        r#"{"tenant":"acme","environment":"sandbox","name":"ci-pipeline","expires_in":"30d"}"#;
    let r = server.admin_api("POST", "/api/v1/keys", TOKEN, body);
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("sk_test_") && secret.len() == 46,
        "{secret}"
    );
    let key = &created["key"];
    let id = key["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"));
    assert_eq!(key["tenant"], "acme");
    assert_eq!(key["environment"], "sandbox");
    assert_eq!(key["name"], "ci-pipeline");
    assert_eq!(key["status"], "active");
    assert_eq!(key["hint"], format!("sk_test_...{}", &secret[42..]));
    assert!(key["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(key["revoked_at"].is_null());

    // It works on the public listener at once.
    let r = server.public_get("/v1/whoami", &secret);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["key_id"], id.as_str());
    assert_eq!(r.json()["tenant"], "acme");

    // List and show: the record, never the secret.
    let live = create(&server, "acme", "live", "billing");
    let r = server.admin_api("GET", "/api/v1/tenants/acme/keys", TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&secret), "a listing shows no secret");
    let listed = r.json();
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[0]["status"], "active");
    assert_eq!(keys[1]["id"], live["key"]["id"]);
    assert_eq!(keys[1]["environment"], "live");
    for field in [
        "name",
        "environment",
        "hint",
        "created_at",
        "last_used_at",
        "expires_at",
        "status",
    ] {
        assert!(keys[0].get(field).is_some(), "listing lacks {field}");
    }
    let r = server.admin_api("GET", &format!("/api/v1/keys/{id}"), TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["key"], keys[0]);

    // Rotate: a replacement with the same identity; the old key keeps working.
    let r = server.admin_api("POST", &format!("/api/v1/keys/{id}/rotate"), TOKEN, "");
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated = r.json();
    let replacement = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(replacement, secret);
    assert_eq!(rotated["replaces"], id.as_str());
    assert_eq!(rotated["key"]["name"], "ci-pipeline");
    assert_eq!(rotated["key"]["environment"], "sandbox");
    assert_ne!(rotated["key"]["id"], id.as_str());
    assert_eq!(server.public_get("/v1/whoami", &replacement).status, 200);
    assert_eq!(server.public_get("/v1/whoami", &secret).status, 200);

    // Revoke: the response comes once this gateway rejects the (cached) key.
    let r = server.admin_api("POST", &format!("/api/v1/keys/{id}/revoke"), TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["key"]["status"], "revoked");
    let revoked_at = r.json()["key"]["revoked_at"].clone();
    assert!(revoked_at.is_string());
    let r = server.public_get("/v1/whoami", &secret);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.code(), "api_key_revoked");
    assert_eq!(server.public_get("/v1/whoami", &replacement).status, 200);
    let r = server.admin_api("GET", &format!("/api/v1/keys/{id}"), TOKEN, "");
    assert_eq!(r.json()["key"]["status"], "revoked");
    // Revoking again changes nothing.
    let r = server.admin_api("POST", &format!("/api/v1/keys/{id}/revoke"), TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["key"]["revoked_at"], revoked_at);

    // Neither the keys nor the admin token reach the logs.
    drop(server);
    let logs = sandbox.logs();
    assert!(logs.contains("admin API created a key"), "{logs}");
    for secret in [&secret, &replacement, &TOKEN.to_owned()] {
        assert!(!logs.contains(secret.as_str()), "a secret in the logs");
    }
}

#[test]
fn a_bad_token_is_401_and_repeated_failures_are_throttled() {
    let sandbox = Sandbox::new("api-throttle");
    let server = Server::start(&sandbox);
    let path = "/api/v1/tenants/demo/keys";
    assert_eq!(server.admin_api("GET", path, TOKEN, "").status, 200);

    let r = request(server.admin, "GET", path, &[], "");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.code(), "invalid_admin_token");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="hapnd-admin""#)
    );
    let wrong = format!("{TOKEN}x");
    for _ in 1..5 {
        let r = server.admin_api("GET", path, &wrong, "");
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(!r.body.contains(&wrong));
    }
    // Five failures within the window: refused, the right token included.
    for token in [wrong.as_str(), TOKEN] {
        let r = server.admin_api("GET", path, token, "");
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.code(), "too_many_failed_attempts");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    }
    // Another client address is not affected.
    let auth = format!("Bearer {TOKEN}");
    let other = request_from(
        [127, 0, 0, 2].into(),
        server.admin,
        "GET",
        path,
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(other.status, 200, "{}", other.body);
    // The page's sign-in counts against the same limit.
    let r = request(
        server.admin,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={TOKEN}"),
    );
    assert_eq!(r.status, 429);
    assert!(r.header("set-cookie").is_none());
}

#[test]
fn unknown_tenants_and_ids_are_404() {
    let sandbox = Sandbox::new("api-404");
    let server = Server::start(&sandbox);
    let r = server.admin_api("GET", "/api/v1/tenants/nobody/keys", TOKEN, "");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.code(), "tenant_not_found");
    assert!(!r.body.contains("nobody"), "the tenant is not echoed");
    for (method, path) in [
        ("GET", "/api/v1/keys/key_0000000000000000"),
        ("POST", "/api/v1/keys/key_0000000000000000/revoke"),
        ("POST", "/api/v1/keys/key_0000000000000000/rotate"),
    ] {
        let r = server.admin_api(method, path, TOKEN, "");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.code(), "key_not_found");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("key_0000000000000000")
        );
    }
    let r = server.admin_api("GET", "/api/v1/nothing", TOKEN, "");
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");

    // An API key pasted where an id goes is refused without being echoed.
    let key = create(&server, "acme", "live", "pasted")["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = server.admin_api("POST", &format!("/api/v1/keys/{key}/revoke"), TOKEN, "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains(&key));
    assert_eq!(server.public_get("/v1/whoami", &key).status, 200);
}

#[test]
fn bad_input_is_400_with_a_message_and_writes_nothing() {
    let sandbox = Sandbox::new("api-400");
    let server = Server::start(&sandbox);
    let cases = [
        (
            r#"{"tenant":"acme","environment":"prod","name":"ci"}"#,
            "environment",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":""}"#,
            "name",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"a\u0007b"}"#,
            "name",
        ),
        (
            r#"{"tenant":"","environment":"live","name":"ci"}"#,
            "tenant",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","expires_in":"soon"}"#,
            "duration",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","expires_in":"0d"}"#,
            "duration",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","expires":"30d"}"#,
            "unknown field",
        ),
        (r#"{"tenant":"acme","environment":"live"}"#, "name"),
        ("tenant=acme", "JSON"),
    ];
    for (body, says) in cases {
        let r = server.admin_api("POST", "/api/v1/keys", TOKEN, body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.code(), "invalid_request", "{body}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(says),
            "{body}: {message:?} should mention {says:?}"
        );
    }
    let r = server.admin_api("GET", "/api/v1/tenants/acme/keys", TOKEN, "");
    assert_eq!(r.status, 404, "nothing was written: {}", r.body);
    let r = server.admin_api("GET", "/api/v1/tenants//keys", TOKEN, "");
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn the_token_comes_from_a_file_or_the_environment_and_without_one_admin_is_disabled() {
    let sandbox = Sandbox::new("api-config");
    let server = Server::spawn(&sandbox, sandbox.command());
    // Prose goes to stderr, which the harness writes to serve.log.
    let log = || std::fs::read_to_string(sandbox.dir.join("serve.log")).unwrap();
    assert!(
        log().contains("admin API and API Keys page disabled"),
        "{}",
        log()
    );
    let r = server.admin_api("GET", "/api/v1/tenants/demo/keys", TOKEN, "");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.code(), "admin_disabled");
    assert!(r.body.contains("--admin-token-file"));
    let r = request(server.admin, "GET", "/login", &[], "");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("disabled"));
    assert_eq!(
        request(server.admin, "GET", "/healthz", &[], "").status,
        200
    );
    drop(server);

    let file = sandbox.dir.join("admin-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let server = Server::spawn_with(
        &sandbox,
        sandbox.command(),
        &["--admin-token-file", file.to_str().unwrap()],
    );
    assert!(!log().contains("disabled"), "{}", log());
    let r = server.admin_api("GET", "/api/v1/tenants/demo/keys", TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(server);

    // Both at once, or a weak token: refused at start, the token not printed.
    let mut both = sandbox.command();
    both.env("HAPND_ADMIN_TOKEN", TOKEN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-token-file", file.to_str().unwrap()]);
    let out = both.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give the admin token once"), "{err}");
    let mut weak = sandbox.command();
    weak.env("HAPND_ADMIN_TOKEN", "hunter2").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let out = weak.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32"), "{err}");
    assert!(!err.contains("hunter2"));
}

#[test]
fn an_expired_key_is_listed_as_expired_and_rejected() {
    let sandbox = Sandbox::new("api-expired");
    let server = Server::start(&sandbox);
    let body = r#"{"tenant":"acme","environment":"live","name":"short","expires_in":"1s"}"#;
    let r = server.admin_api("POST", "/api/v1/keys", TOKEN, body);
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.json()["secret"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = server.admin_api("GET", "/api/v1/tenants/acme/keys", TOKEN, "");
    assert_eq!(r.json()["keys"][0]["status"], "expired");
    let r = server.public_get("/v1/whoami", &secret);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.code(), "api_key_expired");
}
