//! Operating the gateway, end to end on the real binary: throttling on by default,
//! `/metrics` on the admin listener, operator logs (sampled, masked, no empty fields,
//! JSON, no colour when redirected, no sqlx statements).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hapnd_auth::{ApiKey, Environment, KeyHash};

const BIN: &str = env!("CARGO_BIN_EXE_hapnd-auth");

struct Server {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
    demo_key: String,
}

impl Server {
    fn start(name: &str, extra: &[&str], log: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("hapnd-op-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let logs = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--db", dir.join("keys.db").to_str().unwrap()])
            .args(extra)
            .env("HAPND_LOG", log)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut admin, mut demo_key) = (None, None, String::new());
        while addr.is_none() || admin.is_none() {
            let line = lines.next().expect("server exited early").unwrap();
            if let Some(key) = line.trim().strip_prefix("sk_test_") {
                demo_key = format!("sk_test_{key}");
            }
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse().unwrap());
            }
            if let Some(a) = line.strip_prefix("admin listening on http://") {
                admin = Some(a.parse().unwrap());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            dir,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            demo_key,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Response {
    status: u16,
    head: String,
    body: String,
}

fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    Response {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Until the change feed has confirmed the invalidation channel, the cache is bypassed.
fn wait_healthy(server: &Server) {
    for _ in 0..200 {
        if get(server.admin, "/healthz", None).status == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the gateway never became healthy");
}

fn random_key() -> String {
    ApiKey::generate(Environment::Live)
        .expose_secret()
        .to_owned()
}

fn hex(key: &str) -> String {
    KeyHash::of(key)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn throttling_is_on_by_default_and_spares_cached_keys() {
    // Only the period is set (the default 3 s could refill an attempt during the two held
    // answers on a slow machine); the budget and the tarpit are the defaults.
    let server = Server::start("throttle", &["--throttle-period-ms", "60000"], "info");
    wait_healthy(&server);
    // The change feed replays the demo key's creation (an invalidation of its hash) at a
    // poll that may come before or after this first use: either way the key, seen valid
    // here, keeps working from the blocked address (from the cache, or through the
    // seen-valid set's lookup), so nothing waits for the replay.
    assert_eq!(
        get(server.addr, "/v1/whoami", Some(&server.demo_key)).status,
        200
    );
    // The default budget is 20 failed attempts; 401s are sent at once.
    let statuses: Vec<(u16, Duration)> = (0..22)
        .map(|_| {
            let started = Instant::now();
            let status = get(server.addr, "/v1/whoami", Some(&random_key())).status;
            (status, started.elapsed())
        })
        .collect();
    let codes: Vec<u16> = statuses.iter().map(|(code, _)| *code).collect();
    assert_eq!(&codes[..20], &[401; 20], "{statuses:?}");
    assert_eq!(&codes[20..], &[429; 2], "{statuses:?}");
    // 429s are held by the tarpit: 1 s by default, drawn from 80 to 120 % of it.
    for (_, took) in &statuses[20..] {
        assert!(*took >= Duration::from_millis(800), "{statuses:?}");
    }
    let throttled = get(server.addr, "/v1/whoami", Some(&random_key()));
    assert!(throttled.body.contains("too_many_failed_attempts"));
    assert!(
        throttled.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        throttled.head
    );
    // The valid key from the same address is never throttled.
    for _ in 0..5 {
        assert_eq!(
            get(server.addr, "/v1/whoami", Some(&server.demo_key)).status,
            200
        );
    }
}

#[test]
fn throttling_can_be_turned_off() {
    let server = Server::start("nothrottle", &["--throttle-burst", "0"], "info");
    for _ in 0..30 {
        assert_eq!(
            get(server.addr, "/v1/whoami", Some(&random_key())).status,
            401
        );
    }
}

#[test]
fn metrics_are_on_the_admin_listener_and_move() {
    let server = Server::start("metrics", &["--throttle-burst", "2"], "info");
    wait_healthy(&server);
    assert_eq!(
        get(server.addr, "/v1/whoami", Some(&server.demo_key)).status,
        200
    );
    assert_eq!(
        get(server.addr, "/v1/whoami", Some(&server.demo_key)).status,
        200
    );
    let unknown = random_key();
    for _ in 0..3 {
        get(server.addr, "/v1/whoami", Some(&unknown));
    }
    assert_eq!(
        get(server.addr, "/metrics", Some(&server.demo_key)).status,
        404
    );
    let metrics = get(server.admin, "/metrics", None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    for line in [
        // The demo key: a miss, then a hit; the unknown key: a miss, a negative hit, then
        // throttled (after the cache said it was unknown).
        r#"hapnd_auth_requests_total{outcome="ok",environment="sandbox",cache="miss"} 1"#,
        r#"hapnd_auth_requests_total{outcome="ok",environment="sandbox",cache="hit"} 1"#,
        r#"hapnd_auth_requests_total{outcome="invalid_api_key",environment="live",cache="miss"} 1"#,
        r#"hapnd_auth_requests_total{outcome="invalid_api_key",environment="live",cache="negative_hit"} 1"#,
        r#"hapnd_auth_requests_total{outcome="too_many_failed_attempts",environment="live",cache="negative_hit"} 1"#,
        r#"hapnd_auth_throttled_requests_total 1"#,
        r#"hapnd_auth_invalidation_channel_healthy 1"#,
        "# TYPE hapnd_auth_store_lookup_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    for secret in [
        server.demo_key.as_str(),
        &hex(&server.demo_key),
        &unknown,
        &hex(&unknown),
    ] {
        assert!(!text.contains(secret));
    }
}

#[test]
fn rejections_are_logged_sampled_masked_and_without_empty_fields() {
    let server = Server::start(
        "logs",
        &["--throttle-burst", "10", "--throttle-tarpit-ms", "0"],
        "debug",
    );
    let keys: Vec<String> = (0..40).map(|_| random_key()).collect();
    for key in &keys {
        get(server.addr, "/v1/whoami?token=secret-query", Some(key));
    }
    get(server.addr, "/v1/whoami", Some("sk_live_short"));
    std::thread::sleep(Duration::from_millis(600));
    let logs = server.logs();
    let rejected: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .filter(|l| l.contains("request rejected") || l.contains("request throttled"))
        .collect();
    // 41 rejections from one client: 5 logged in full.
    assert_eq!(rejected.len(), 5, "{logs}");
    let first = rejected[0];
    for field in [
        " INFO ",
        "code=\"invalid_api_key\"",
        "key_hint=\"sk_live_...",
        "client=127.0.0.1",
        "method=\"GET\"",
        "path=\"/v1/whoami\"",
    ] {
        assert!(first.contains(field), "{field:?} not in {first}");
    }
    assert!(
        !logs.contains("secret-query"),
        "the query string was logged"
    );
    assert!(!logs.contains("=\"\""), "an empty field: {logs}");
    assert!(
        !logs.contains("tenant="),
        "no tenant for unknown keys: {logs}"
    );
    assert!(!logs.contains('\u{1b}'), "colour codes in a redirected log");
    assert!(
        !logs.contains("PRAGMA") && !logs.contains("data_version"),
        "sqlx statements at HAPND_LOG=debug"
    );
    for key in &keys {
        assert!(!logs.contains(key.as_str()) && !logs.contains(&key[8..]));
        assert!(!logs.contains(&hex(key)));
    }
}

#[test]
fn a_throttled_client_is_logged_at_warn_in_json() {
    let server = Server::start(
        "json",
        &["--throttle-burst", "1", "--log-format", "json"],
        "info",
    );
    get(server.addr, "/auth/verify", Some(&random_key()));
    get(server.addr, "/auth/verify", Some(&random_key()));
    std::thread::sleep(Duration::from_millis(300));
    let logs = server.logs();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let throttled = events
        .iter()
        .find(|e| e["fields"]["code"] == "too_many_failed_attempts")
        .unwrap_or_else(|| panic!("no throttled event in {logs}"));
    assert_eq!(throttled["level"], "WARN");
    assert_eq!(throttled["fields"]["client"], "127.0.0.1");
    assert_eq!(throttled["fields"]["path"], "/auth/verify");
    let rejected = events
        .iter()
        .find(|e| e["fields"]["code"] == "invalid_api_key")
        .unwrap();
    assert_eq!(rejected["level"], "INFO");
}

#[test]
fn a_bad_log_filter_is_one_clear_error() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--db", "/nonexistent/dir/keys.db"])
        .env("HAPND_LOG", "info,[[[")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HAPND_LOG"), "{err}");
}

#[test]
fn healthz_answers_a_burst_of_checks() {
    let server = Server::start("health", &[], "info");
    for _ in 0..50 {
        assert_eq!(get(server.admin, "/healthz", None).status, 200);
    }
}

/// A key pasted into a URL path is masked wherever the path is logged: the rejection log
/// (INFO), the request spans of the public and the admin listener (DEBUG).
#[test]
fn a_key_in_a_path_is_masked_in_every_log() {
    let server = Server::start("path-key", &[], "debug");
    let key = random_key();
    // Envoy appends the original path to the verify route: a key in it reaches the gateway.
    let public = get(server.addr, &format!("/auth/verify/{key}"), None);
    assert_eq!(public.status, 401);
    get(server.admin, &format!("/api/v1/keys/{key}"), None);
    std::thread::sleep(Duration::from_millis(600));
    let logs = server.logs();
    assert!(
        logs.contains("request rejected") && logs.contains("path=\"/auth/verify/sk_live_..."),
        "the rejection is logged with the masked path: {logs}"
    );
    assert!(
        logs.contains("/api/v1/keys/sk_live_..."),
        "the admin request's span shows the masked path: {logs}"
    );
    assert!(
        !logs.contains(key.as_str()) && !logs.contains(&key[8..]),
        "{logs}"
    );
}

/// Behind a trusted proxy the rejection log names and samples the client the throttle
/// sees (from X-Forwarded-For), not the proxy's address.
#[test]
fn behind_a_proxy_rejections_are_logged_by_client() {
    let server = Server::start("proxied", &["--trusted-proxy", "127.0.0.1"], "info");
    for client in ["203.0.113.7", "203.0.113.8"] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n\
             Authorization: Bearer sk_live_short\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    std::thread::sleep(Duration::from_millis(600));
    let logs = server.logs();
    for client in ["203.0.113.7", "203.0.113.8"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("request rejected") && l.contains(&format!("client={client}"))),
            "no rejection logged for {client}: {logs}"
        );
    }
    assert!(
        !logs.contains("client=127.0.0.1"),
        "the proxy logged as the client: {logs}"
    );
}

/// A normal stop (`SIGTERM`, as systemd and Kubernetes send) shuts the change feed down on
/// purpose: the `WARN` that tells library users to keep their `ChangeFeed` handle is not
/// for an operator whose gateway stopped cleanly (issue 22, item 11).
#[cfg(unix)]
#[test]
fn a_clean_sigterm_stop_logs_no_change_feed_warning() {
    let mut server = Server::start("sigterm", &[], "info");
    wait_healthy(&server);
    // A request, so the stop also has a last-used batch to write.
    assert_eq!(
        get(server.addr, "/v1/whoami", Some(&server.demo_key)).status,
        200
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let logs = server.logs();
    assert!(logs.contains("hapnd-auth gateway stopped"), "{logs}");
    assert!(!logs.contains("ChangeFeed handle was dropped"), "{logs}");
    // No admin token was given: that WARN is the only one a clean run logs.
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("admin API and API Keys page disabled"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}
