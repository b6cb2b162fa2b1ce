//! The admin JSON API, end to end: the real binary, its admin listener, and the public
//! listener the keys it manages open.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Response, Sandbox, Server, TOKEN, request, request_from};
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
fn a_guesser_is_slowed_down_but_the_right_token_keeps_working() {
    let sandbox = Sandbox::new("api-throttle");
    let server = Server::start(&sandbox);
    let path = "/api/v1/tenants/demo/keys";
    assert_eq!(server.admin_api("GET", path, TOKEN, "").status, 200);
    let login = |body: &str| {
        request(
            server.admin,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body,
        )
    };

    // Requests without credentials are refused, and not counted as failures.
    for _ in 0..10 {
        let r = request(server.admin, "GET", path, &[], "");
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.code(), "invalid_admin_token");
        assert_eq!(r.json()["error"]["type"], "authentication_error");
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some(r#"Bearer realm="hapnd-admin""#)
        );
    }
    for body in ["", "token=", "token=+++"] {
        let r = login(body);
        assert_eq!(r.status, 403, "{body}: {}", r.body);
        assert!(r.header("set-cookie").is_none());
    }

    // Wrong tokens are: five within the window are answered 401...
    let wrong = format!("{TOKEN}x");
    for _ in 0..5 {
        let r = server.admin_api("GET", path, &wrong, "");
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(!r.body.contains(&wrong));
    }
    // ...and then a wrong token is 429, held before it is sent, on the API and the page.
    let started = Instant::now();
    let r = server.admin_api("GET", path, &wrong, "");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "a throttled failure is held"
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.code(), "too_many_failed_attempts");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let r = login(&format!("token={wrong}"));
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("set-cookie").is_none());

    // The right token keeps working from the same address: listing, creating, revoking,
    // and signing in to the page.
    assert_eq!(server.admin_api("GET", path, TOKEN, "").status, 200);
    let created = create(&server, "acme", "live", "incident");
    let (secret, id) = (
        created["secret"].as_str().unwrap(),
        created["key"]["id"].as_str().unwrap(),
    );
    assert_eq!(server.public_get("/v1/whoami", secret).status, 200);
    let r = server.admin_api("POST", &format!("/api/v1/keys/{id}/revoke"), TOKEN, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        server.public_get("/v1/whoami", secret).code(),
        "api_key_revoked"
    );
    let r = login(&format!("token={TOKEN}"));
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("set-cookie").is_some());
    // Still throttled for wrong tokens afterwards: success does not reset the count.
    assert_eq!(server.admin_api("GET", path, &wrong, "").status, 429);

    // Another client address is not affected.
    let auth = format!("Bearer {wrong}");
    let other = request_from(
        [127, 0, 0, 2].into(),
        server.admin,
        "GET",
        path,
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(other.status, 401, "{}", other.body);
    drop(server);
    assert!(!sandbox.logs().contains(TOKEN));
}

#[test]
fn cross_site_sign_ins_and_form_posts_are_refused_without_counting() {
    let sandbox = Sandbox::new("api-cross-site");
    let server = Server::start(&sandbox);
    let own = format!("http://{}", server.admin);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let login = |headers: &[(&str, &str)], token: &str| {
        let mut all = vec![form];
        all.extend_from_slice(headers);
        request(
            server.admin,
            "POST",
            "/login",
            &all,
            &format!("token={token}"),
        )
    };
    let cross_site: [&[(&str, &str)]; 6] = [
        &[("Origin", "http://attacker.example")],
        &[("Origin", "null")],
        &[("Origin", "http://127.0.0.1:1")],
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site"), ("Origin", own.as_str())],
        &[
            ("Origin", "http://attacker.example"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    ];
    // Refused even with the right token: no session is started from another site.
    for headers in cross_site {
        let r = login(headers, TOKEN);
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.header("set-cookie").is_none(), "{headers:?}");
        assert!(r.body.contains("another site"), "{}", r.body);
    }
    // And not counted: twenty cross-site guesses leave the address its five failures.
    for i in 0..20 {
        let r = login(cross_site[i % cross_site.len()], "wrong-token");
        assert_eq!(r.status, 403, "{}", r.body);
    }
    for _ in 0..5 {
        let r = login(&[], "wrong-token");
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("not the admin token"), "{}", r.body);
    }
    assert_eq!(login(&[], "wrong-token").status, 429);

    // The browser's own sign-in and form posts (same origin) go through.
    let r = login(
        &[("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")],
        TOKEN,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set_cookie = r.header("set-cookie").unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // A state-changing form post from another site is refused, CSRF token or not.
    let created = create(&server, "acme", "live", "ci");
    let (secret, id) = (
        created["secret"].as_str().unwrap(),
        created["key"]["id"].as_str().unwrap(),
    );
    let confirm = request(
        server.admin,
        "GET",
        &format!("/keys/{id}/revoke"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let csrf = hidden(&confirm.body, "csrf");
    let revoke = |headers: &[(&str, &str)]| {
        let mut all = vec![form, ("Cookie", cookie.as_str())];
        all.extend_from_slice(headers);
        request(
            server.admin,
            "POST",
            &format!("/keys/{id}/revoke"),
            &all,
            &format!("csrf={csrf}"),
        )
    };
    for headers in cross_site {
        let r = revoke(headers);
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert_eq!(server.public_get("/v1/whoami", secret).status, 200);
    }
    let r = revoke(&[("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        server.public_get("/v1/whoami", secret).code(),
        "api_key_revoked"
    );
}

/// The value of hidden input `name` in a page's HTML.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// One HTTP/1.1 request with the `Host` header `host` (none for `None`): the status.
fn with_host(addr: SocketAddr, host: Option<&str>, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
    let head = format!(
        "GET {path} HTTP/1.1\r\n{host}Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    Response {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// One h2c request (HTTP/2 by prior knowledge) with `:authority` `authority`: the status.
fn h2_status(addr: SocketAddr, authority: &str, path: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            let request = hyper::Request::get(format!("http://{authority}{path}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = send.send_request(request).await.unwrap();
            assert_eq!(response.version(), hyper::Version::HTTP_2);
            response.status().as_u16()
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("an h2c answer")
    })
}

#[test]
fn foreign_host_values_are_421_over_http1_and_h2c() {
    let sandbox = Sandbox::new("api-host");
    let server = Server::start(&sandbox);
    let port = server.admin.port();
    let own = server.admin.to_string();
    let localhost = format!("localhost:{port}");
    let api = "/api/v1/tenants/demo/keys";
    // A DNS-rebinding page's requests name its own host: refused, whatever the route.
    for path in ["/metrics", "/login", "/keys", api, "/"] {
        for host in [
            Some("rebind.attacker.example"),
            Some(format!("rebind.attacker.example:{port}").as_str()),
            Some(format!("localhost.attacker.example:{port}").as_str()),
            Some(format!("127.0.0.2:{port}").as_str()),
            Some("127.0.0.1:1"),
            None,
        ] {
            let r = with_host(server.admin, host, path);
            assert_eq!(r.status, 421, "{host:?} {path}: {}", r.body);
        }
        assert_eq!(
            h2_status(server.admin, "rebind.attacker.example", path),
            421
        );
    }
    let r = with_host(server.admin, Some("rebind.attacker.example"), api);
    assert_eq!(r.code(), "misdirected_request");
    // The listen address and localhost on its port are served.
    for host in [own.as_str(), localhost.as_str()] {
        assert_eq!(with_host(server.admin, Some(host), "/metrics").status, 200);
        assert_eq!(with_host(server.admin, Some(host), api).status, 200);
        assert_eq!(h2_status(server.admin, host, api), 200);
    }
    // /healthz answers whatever the Host: load balancers' health checks send anything.
    for host in [Some("rebind.attacker.example"), None] {
        assert_eq!(with_host(server.admin, host, "/healthz").status, 200);
    }
    assert_eq!(h2_status(server.admin, "lb.internal", "/healthz"), 200);
}

#[test]
fn the_page_lives_on_the_configured_host_name() {
    let sandbox = Sandbox::new("api-admin-host");
    let mut command = sandbox.command();
    command.env("HAPND_ADMIN_TOKEN", TOKEN);
    let server = Server::spawn_with(
        &sandbox,
        command,
        &[
            "--admin-host",
            "admin.hapnd.localhost",
            "--admin-host",
            "keys.example.com",
        ],
    );
    let port = server.admin.port();
    let own = server.admin.to_string();
    let api = "/api/v1/tenants/demo/keys";
    for host in [
        format!("admin.hapnd.localhost:{port}"),
        "ADMIN.hapnd.localhost".to_owned(),
        "keys.example.com".to_owned(),
        "keys.example.com:443".to_owned(),
    ] {
        for path in ["/login", "/metrics", api] {
            let r = with_host(server.admin, Some(&host), path);
            assert_eq!(r.status, 200, "{host} {path}: {}", r.body);
        }
        assert_eq!(h2_status(server.admin, &host, "/login"), 200);
    }
    // On the bare address the API and metrics answer; the page, whose cookie would reach
    // every port of that address, does not.
    assert_eq!(with_host(server.admin, Some(&own), api).status, 200);
    assert_eq!(with_host(server.admin, Some(&own), "/metrics").status, 200);
    for path in ["/login", "/keys", "/"] {
        let r = with_host(server.admin, Some(&own), path);
        assert_eq!(r.status, 421, "{path}: {}", r.body);
        assert!(r.body.contains("admin.hapnd.localhost"), "{}", r.body);
    }
    for host in [
        "hapnd.localhost",
        "evil.admin.hapnd.localhost",
        "keys.example.com.evil",
    ] {
        assert_eq!(
            with_host(server.admin, Some(host), api).status,
            421,
            "{host}"
        );
    }
    drop(server);

    // A name that is not a host name stops `serve` at start.
    for bad in ["http://admin.example", "admin.example:9090", "a b", ""] {
        let out = sandbox
            .command()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--admin-host", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--admin-host"), "{err}");
    }
}

#[cfg(unix)]
#[test]
fn an_admin_token_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new("api-token-mode");
    let file = sandbox.dir.join("admin-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let token_file = ["--admin-token-file", file.to_str().unwrap()];
    let chmod = |mode: u32| {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for mode in [0o644, 0o640, 0o604, 0o660, 0o666] {
        chmod(mode);
        let mut command = sandbox.command();
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(token_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Refused at start: it exits by itself (a started server would wait for a signal).
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mode {mode:o}: serve started with a token file others can read");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "mode {mode:o}");
        assert!(
            err.contains(&format!("{mode:o}")) && err.contains("chmod 600"),
            "mode {mode:o}: {err}"
        );
        assert!(!err.contains(TOKEN), "the token in the error");
    }
    for mode in [0o600, 0o400] {
        chmod(mode);
        let server = Server::spawn_with(&sandbox, sandbox.command(), &token_file);
        let r = server.admin_api("GET", "/api/v1/tenants/demo/keys", TOKEN, "");
        assert_eq!(r.status, 200, "mode {mode:o}: {}", r.body);
    }
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
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","scopes":["Events:Read"]}"#,
            "invalid scope",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","scopes":["a","a"]}"#,
            "given twice",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","metadata":[1]}"#,
            "must be a JSON object",
        ),
        (
            r#"{"tenant":"acme","environment":"live","name":"ci","rate_limit":"lots"}"#,
            "invalid rate limit",
        ),
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
    #[cfg(unix)]
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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

#[test]
fn keys_are_created_with_scopes_metadata_and_a_limit_and_rotation_keeps_them() {
    let sandbox = Sandbox::new("api-policy");
    let server = Server::start(&sandbox);
    let body = serde_json::json!({
        "tenant": "acme",
        "environment": "live",
        "name": "reporting",
        "scopes": ["events:read"],
        "metadata": {"plan": "pro"},
        "rate_limit": "2/h",
    });
    let r = server.admin_api("POST", "/api/v1/keys", TOKEN, &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let key = &created["key"];
    assert_eq!(key["scopes"], serde_json::json!(["events:read"]));
    assert_eq!(key["metadata"], serde_json::json!({"plan": "pro"}));
    assert_eq!(key["rate_limit"], "2/h,burst=2");
    let id = key["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();

    // The limit is enforced on the public listener.
    for _ in 0..2 {
        assert_eq!(server.public_get("/v1/whoami", &secret).status, 200);
    }
    let r = server.public_get("/v1/whoami", &secret);
    assert_eq!(r.status, 429, "{}", r.body);

    let r = server.admin_api("GET", &format!("/api/v1/keys/{id}"), TOKEN, "");
    assert_eq!(r.json()["key"]["scopes"], key["scopes"]);
    let r = server.admin_api("POST", &format!("/api/v1/keys/{id}/rotate"), TOKEN, "");
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated = r.json();
    for field in ["scopes", "metadata", "rate_limit"] {
        assert_eq!(rotated["key"][field], key[field], "{field}");
    }
    // A key made without them: full access, shown as no scopes.
    let plain = create(&server, "acme", "live", "plain");
    assert_eq!(plain["key"]["scopes"], serde_json::json!([]));
    assert!(plain["key"]["rate_limit"].is_null());
}
