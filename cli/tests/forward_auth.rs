//! Forward auth behind the real nginx and Caddy, each configured with the block
//! docs/forward-auth.md publishes (read out of it here, so the docs cannot drift from what
//! is tested), with the gateway run as that file says,
//! in front of the real gateway and a backend that echoes the headers it receives.
//!
//! A missing proxy fails these tests when `CI` is set and skips them otherwise.

mod gateway;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::{
    EchoBackend, Gateway, Relay, Response, TempDir, create_key, create_key_with, echoed,
    h2c_request_from, readme_block, request, request_from, require, run, text,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Nginx,
    Caddy,
}

/// A proxy running in the foreground as a child of the test, killed by its pid on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    logs: PathBuf,
}

/// Replaces `from` with `to`, insisting that `from` is there: a README edit that renames
/// an address must fail here rather than test something else.
fn substitute(config: &str, from: &str, to: &str) -> String {
    assert!(
        config.contains(from),
        "the docs/forward-auth.md block has no {from:?}"
    );
    config.replace(from, to)
}

impl Proxy {
    fn start(kind: Kind, dir: &Path, gateway: SocketAddr, backend: SocketAddr) -> Proxy {
        let root = dir.join(format!("{kind:?}").to_lowercase());
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let port = gateway::free_port();
        let (block, listen) = match kind {
            Kind::Nginx => (readme_block("nginx"), "127.0.0.1:8000".to_owned()),
            Kind::Caddy => (readme_block("caddy"), "http://:8000".to_owned()),
        };
        let mut config = substitute(&block, "127.0.0.1:8080", &gateway.to_string());
        config = substitute(&config, "127.0.0.1:3000", &backend.to_string());
        config = substitute(&config, &listen, &listen.replace("8000", &port.to_string()));
        let log_dir = match kind {
            Kind::Nginx => "/var/log/nginx/",
            Kind::Caddy => "/var/log/caddy/",
        };
        config = substitute(&config, log_dir, &format!("{}/", logs.display()));
        let mut command = match kind {
            Kind::Nginx => {
                let tmp = root.join("tmp");
                std::fs::create_dir_all(&tmp).unwrap();
                // Workers may run as another user when the test runs as root.
                let _ = Command::new("chmod")
                    .args(["-R", "0777"])
                    .arg(&root)
                    .status();
                let t = tmp.display();
                let wrapper = format!(
                    "error_log {logs}/error.log info;\npid {root}/nginx.pid;\n\
                     events {{ worker_connections 256; }}\nhttp {{\n\
                     client_body_temp_path {t}/body; proxy_temp_path {t}/proxy;\n\
                     fastcgi_temp_path {t}/fastcgi; uwsgi_temp_path {t}/uwsgi;\n\
                     scgi_temp_path {t}/scgi;\n{config}}}\n",
                    logs = logs.display(),
                    root = root.display(),
                );
                let file = root.join("nginx.conf");
                std::fs::write(&file, wrapper).unwrap();
                let mut c = Command::new("nginx");
                c.arg("-p").arg(&root).arg("-c").arg(&file);
                c.args(["-g", "daemon off;"]);
                c
            }
            Kind::Caddy => {
                let home = root.join("home");
                std::fs::create_dir_all(&home).unwrap();
                let file = root.join("Caddyfile");
                std::fs::write(&file, config).unwrap();
                let mut c = Command::new("caddy");
                c.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    .env("HOME", &home)
                    .env("XDG_DATA_HOME", home.join("data"))
                    .env("XDG_CONFIG_HOME", home.join("config"));
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(logs.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            logs,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(proxy.addr).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("{kind:?} exited with {status}: {}", proxy.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{kind:?} is not listening: {}",
                proxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// Everything the proxy wrote: access, error and console logs.
    fn log_text(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.logs).unwrap() {
            all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
        }
        all
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", path, headers)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // TERM, not KILL: nginx's master stops its workers on TERM; killed, it would not.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A refusal as the client sees it: status, JSON code, no-store, and the challenge.
fn assert_refused(r: &Response, status: u16, code: &str, challenge: Option<&str>) {
    assert_eq!(r.status, status, "{code}: {}\n{}", r.head, r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("www-authenticate").as_deref(), challenge, "{code}");
    assert!(r.header("x-hapnd-tenant").is_none());
}

const INVALID_TOKEN: &str = r#"Bearer realm="hapnd", error="invalid_token""#;

fn forward_auth_contract(kind: Kind) {
    let dir = TempDir::new(&format!("fwd-{kind:?}"));
    let db = dir.path().join("keys.db").display().to_string();
    let mut flags = readme_gateway_flags();
    flags.extend(["--poll-interval-ms".to_owned(), "100".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut gateway = Gateway::start(dir.path(), &db, &flags);
    let backend = EchoBackend::start();
    let proxy = Proxy::start(kind, dir.path(), gateway.addr, backend.addr);
    let d = dir.path();
    let (live, live_id) = create_key(d, &db, "acme", "live", "ci pipeline");
    let (sandbox, sandbox_id) = create_key(d, &db, "acme", "test", "naïve sandbox");
    let mut secrets = vec![live.clone(), sandbox.clone()];

    // A live key: the whole identity reaches the backend; the key does not.
    let r = proxy.get("/api/orders?limit=5", &[("Authorization", &bearer(&live))]);
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert_eq!(r.json()["path"], "/api/orders?limit=5");
    assert_eq!(echoed(&r, "x-hapnd-tenant"), ["acme"]);
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);
    assert_eq!(echoed(&r, "x-hapnd-key-id"), [live_id.as_str()]);
    assert_eq!(echoed(&r, "x-hapnd-key-name"), ["ci%20pipeline"]);
    assert!(echoed(&r, "authorization").is_empty());

    // A sandbox key with forged identity headers, in odd casing: the gateway's answer
    // replaces every one of them.
    let r = proxy.get(
        "/api/orders",
        &[
            ("Authorization", &bearer(&sandbox)),
            ("X-Hapnd-Environment", "live"),
            ("x-hapnd-key-id", "key_FORGED"),
            ("X-HAPND-TENANT", "evil"),
            ("X-Hapnd-Key-Name", "forged"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["sandbox"]);
    assert_eq!(echoed(&r, "x-hapnd-key-id"), [sandbox_id.as_str()]);
    assert_eq!(echoed(&r, "x-hapnd-tenant"), ["acme"]);
    assert_eq!(echoed(&r, "x-hapnd-key-name"), ["na%C3%AFve%20sandbox"]);
    assert!(!r.body.contains("FORGED") && !r.body.contains("evil") && !r.body.contains("forged"));

    // The live-only location.
    let r = proxy.get("/live/orders", &[("Authorization", &bearer(&sandbox))]);
    assert_refused(
        &r,
        403,
        "wrong_environment",
        Some(r#"Bearer realm="hapnd", error="insufficient_scope""#),
    );
    let r = proxy.get("/live/orders", &[("Authorization", &bearer(&live))]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);

    // Refusals keep their status, code and challenge.
    let r = proxy.get("/api/orders", &[]);
    assert_refused(&r, 401, "missing_api_key", Some(r#"Bearer realm="hapnd""#));
    let basic = base64(format!("{live}:").as_bytes());
    secrets.push(basic.clone());
    let r = proxy.get(
        "/api/orders",
        &[("Authorization", &format!("Basic {basic}"))],
    );
    assert_refused(&r, 401, "missing_api_key", Some(r#"Bearer realm="hapnd""#));
    let mut typo = live.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'A' { 'B' } else { 'A' });
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&typo))]);
    assert_refused(&r, 401, "invalid_api_key", Some(INVALID_TOKEN));
    let r = proxy.get("/api/orders", &[("Authorization", "Bearer sk_live_short")]);
    assert_refused(&r, 401, "invalid_api_key", Some(INVALID_TOKEN));
    let invalid_request = Some(r#"Bearer realm="hapnd", error="invalid_request""#);
    let r = proxy.get("/api/orders", &[("Authorization", "Bearer ")]);
    assert_refused(&r, 400, "invalid_request", invalid_request);
    let long = format!("Bearer sk_live_{}", "a".repeat(300));
    let r = proxy.get("/api/orders", &[("Authorization", &long)]);
    assert_refused(&r, 400, "invalid_request", invalid_request);
    let unknown = hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live);
    let unknown = unknown.expose_secret().to_owned();
    secrets.push(unknown.clone());
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&unknown))]);
    assert_refused(&r, 401, "invalid_api_key", Some(INVALID_TOKEN));

    let (expiring, _) = create_key_with(
        d,
        &db,
        &[
            "--tenant",
            "acme",
            "--env",
            "live",
            "--name",
            "short",
            "--expires",
            "1s",
        ],
    );
    secrets.push(expiring.clone());
    std::thread::sleep(Duration::from_millis(1100));
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&expiring))]);
    assert_refused(&r, 401, "api_key_expired", Some(INVALID_TOKEN));

    // The scope-guarded location (/events/ requires events:write): a key without it gets
    // 403 insufficient_scope with the scope in the challenge, and never reaches the backend;
    // a key with it, or without any scopes (full access), passes, its scopes (never the
    // client's) in X-Hapnd-Scopes.
    let (reader, _) = create_key_with(
        d,
        &db,
        &[
            "--tenant",
            "acme",
            "--env",
            "live",
            "--name",
            "reader",
            "--scope",
            "events:read",
        ],
    );
    let (writer, _) = create_key_with(
        d,
        &db,
        &[
            "--tenant",
            "acme",
            "--env",
            "live",
            "--name",
            "writer",
            "--scope",
            "events:read",
            "--scope",
            "events:write",
        ],
    );
    secrets.extend([reader.clone(), writer.clone()]);
    let before = backend.seen.lock().unwrap().len();
    let r = proxy.get("/events/new", &[("Authorization", &bearer(&reader))]);
    assert_refused(
        &r,
        403,
        "insufficient_scope",
        Some(r#"Bearer realm="hapnd", error="insufficient_scope", scope="events:write""#),
    );
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        before,
        "the backend was reached"
    );
    let forged = [("X-Hapnd-Scopes", "admin"), ("X_Hapnd_Scopes", "admin")];
    let r = proxy.get(
        "/events/new",
        &[("Authorization", &bearer(&writer)), forged[0], forged[1]],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert_eq!(echoed(&r, "x-hapnd-scopes"), ["events:read events:write"]);
    assert!(!r.body.contains("admin"), "{}", r.body);
    let r = proxy.get(
        "/events/new",
        &[("Authorization", &bearer(&live)), forged[0], forged[1]],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Full access: no scope list reaches the backend, and never the forged one.
    assert!(
        echoed(&r, "x-hapnd-scopes").iter().all(String::is_empty),
        "{:?}",
        echoed(&r, "x-hapnd-scopes")
    );
    assert!(!r.body.contains("admin"), "{}", r.body);
    // An unguarded location passes the reader, with its scopes.
    let r = proxy.get("/api/events", &[("Authorization", &bearer(&reader))]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r, "x-hapnd-scopes"), ["events:read"]);

    // A rate-limited key: its third request in the hour gets 429 rate_limited with the
    // gateway's Retry-After and RateLimit headers, and another key is not affected.
    let (limited, _) = create_key_with(
        d,
        &db,
        &[
            "--tenant",
            "acme",
            "--env",
            "live",
            "--name",
            "limited",
            "--rate-limit",
            "2/h",
        ],
    );
    secrets.push(limited.clone());
    for _ in 0..2 {
        let r = proxy.get("/api/orders", &[("Authorization", &bearer(&limited))]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&limited))]);
    assert_refused(&r, 429, "rate_limited", None);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1790..=1800).contains(&retry), "{retry}");
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""key";q=2;w=3600"#)
    );
    assert_eq!(
        r.header("ratelimit"),
        Some(format!(r#""key";r=0;t={retry}"#))
    );
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&writer))]);
    assert_eq!(r.status, 200, "{}", r.body);

    // Revoked by another process: refused within the SQLite poll bound (100 ms here).
    let (doomed, doomed_id) = create_key(d, &db, "acme", "live", "doomed");
    secrets.push(doomed.clone());
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&doomed))]);
    assert_eq!(r.status, 200); // now cached by the gateway
    let out = run(d, &db, &["keys", "revoke", &doomed_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revoked = Instant::now();
    let r = loop {
        let r = proxy.get("/api/orders", &[("Authorization", &bearer(&doomed))]);
        if r.status != 200 {
            break r;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(1000),
            "still accepted 1 s after the revocation"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_refused(&r, 401, "api_key_revoked", Some(INVALID_TOKEN));
    eprintln!(
        "{kind:?}: revocation seen through the proxy after {:?}",
        revoked.elapsed()
    );

    // The gateway frozen: 503 once the proxy's timeout, above the gateway's own 4 s bound
    // on a request, has passed (not after nginx's default 60 s, nor never).
    gateway.signal("STOP");
    let frozen = Instant::now();
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&live))]);
    let took = frozen.elapsed();
    gateway.signal("CONT");
    assert_refused(&r, 503, "auth_unavailable", None);
    assert!(r.header("retry-after").is_some());
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "a frozen gateway held the client {took:?}"
    );
    eprintln!("{kind:?}: frozen gateway answered 503 after {took:?}");

    // The gateway gone: 503 with Retry-After, at once (no 60 s wait, no 401).
    gateway.kill();
    let stopped = Instant::now();
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&live))]);
    let took = stopped.elapsed();
    assert_refused(&r, 503, "auth_unavailable", None);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert!(took < Duration::from_secs(1), "503 took {took:?}");

    // No request ever brought the key to the backend; no log holds a key.
    let seen = backend.seen.lock().unwrap();
    assert!(seen.len() >= 4, "{seen:?}");
    for headers in seen.iter() {
        assert!(
            headers.iter().all(|(n, _)| n != "authorization"),
            "{headers:?}"
        );
    }
    let logs = format!("{}{}", proxy.log_text(), gateway.log_text());
    assert!(
        logs.contains("/api/orders"),
        "the proxy logged nothing: {logs}"
    );
    for secret in &secrets {
        let needle = if secret.starts_with("sk_") {
            &secret[8..]
        } else {
            secret
        };
        assert!(!logs.contains(needle), "a key is in the logs:\n{logs}");
    }
}

/// The store failing for a key that is not cached: 503 with `Retry-After` at the client.
/// PostgreSQL behind a relay the test cuts (a SQLite file cannot be made to fail from
/// outside the process that has it open).
fn store_outage(kind: Kind) {
    let Ok(url) = std::env::var("HAPND_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "HAPND_TEST_DATABASE_URL not set under CI"
        );
        gateway::skip::skipped("HAPND_TEST_DATABASE_URL not set; the store outage was not tested");
        return;
    };
    let (head, rest) = url.split_once('@').expect("user@host in the URL");
    let (host, path) = rest.split_once('/').expect("a database in the URL");
    let target: SocketAddr = host.parse().expect("an IP:port host in the URL");
    let relay = Relay::start(target);
    let relayed = format!("{head}@{}/{path}", relay.addr);

    let dir = TempDir::new(&format!("outage-{kind:?}"));
    let gateway = Gateway::start(dir.path(), &relayed, &[]);
    let backend = EchoBackend::start();
    let proxy = Proxy::start(kind, dir.path(), gateway.addr, backend.addr);
    let tenant = format!("outage_{}_{kind:?}", std::process::id()).to_lowercase();
    let (key, _) = create_key(dir.path(), &url, &tenant, "live", "uncached");

    relay.cut();
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&key))]);
    assert_refused(&r, 503, "auth_unavailable", None);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert!(backend.seen.lock().unwrap().is_empty());
    // The gateway answered that 503 itself (it is up; its store is not).
    assert!(
        gateway.log_text().contains("auth_unavailable"),
        "{}",
        gateway.log_text()
    );
    assert!(!gateway.log_text().contains(&key[8..]));
    assert!(!proxy.log_text().contains(&key[8..]));
}

/// The flags docs/forward-auth.md gives `serve` behind the proxies (its `gateway` block).
fn readme_gateway_flags() -> Vec<String> {
    let block = readme_block("gateway");
    let line = block
        .lines()
        .find(|l| l.contains("hapnd-auth serve"))
        .expect("a `hapnd-auth serve` line in docs/forward-auth.md's gateway block");
    let command = line.split('#').next().unwrap();
    command
        .split_whitespace()
        .skip_while(|w| *w != "serve")
        .skip(1)
        .map(str::to_owned)
        .collect()
}

const GUESSER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

/// One client guessing keys behind the proxy costs no other client its access: the guesser
/// is throttled (429 with Retry-After, through the proxy), forged or unparseable
/// forwarding headers are counted against it, and another address's fresh keys (never
/// cached, so each needs a store lookup) are answered 200 throughout. Header variants with
/// underscores never reach the backend.
fn one_guesser_costs_no_one_else(kind: Kind) {
    let dir = TempDir::new(&format!("guesser-{kind:?}"));
    let db = dir.path().join("keys.db").display().to_string();
    let mut flags = readme_gateway_flags();
    // README's flags, with attempts coming back once a minute instead of every 3 s, so
    // that every guess after the budget is spent must be refused, however slow the test.
    // A 1 s cache, so that a key the guesser's address used before is, after the block,
    // past its cache entry: what keeps it working then is the seen-valid set.
    flags.extend(["--throttle-period-ms", "60000", "--cache-ttl-secs", "1"].map(str::to_owned));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gateway = Gateway::start(dir.path(), &db, &flags);
    let backend = EchoBackend::start();
    let proxy = Proxy::start(kind, dir.path(), gateway.addr, backend.addr);
    let d = dir.path();
    let fresh = |n: usize| create_key(d, &db, "acme", "live", &format!("fresh-{n}")).0;
    let guess = || {
        hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live)
            .expose_secret()
            .to_owned()
    };

    // The other client, before: a fresh key.
    let r = request_from(
        OTHER,
        proxy.addr,
        "GET",
        "/api/a",
        &[("Authorization", &bearer(&fresh(0)))],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);

    // Someone else behind the guesser's address (a NAT) uses a valid key.
    let neighbour = fresh(100);
    let r = request_from(
        GUESSER,
        proxy.addr,
        "GET",
        "/api/a",
        &[("Authorization", &bearer(&neighbour))],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);

    // The guesser spends its budget (20 in serve's defaults), then is throttled.
    let mut statuses = Vec::new();
    let throttled = loop {
        let r = request_from(
            GUESSER,
            proxy.addr,
            "GET",
            "/api/a",
            &[("Authorization", &bearer(&guess()))],
        );
        statuses.push(r.status);
        if r.status != 401 {
            break r;
        }
        assert!(statuses.len() <= 40, "never throttled: {statuses:?}");
    };
    assert_refused(&throttled, 429, "too_many_failed_attempts", None);
    let retry: u64 = throttled
        .header("retry-after")
        .expect("Retry-After on the 429")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{}", throttled.head);
    eprintln!(
        "{kind:?}: the guesser was throttled after {} attempts",
        statuses.len() - 1
    );

    // The other client, while the guesser is blocked: fresh keys still work.
    for n in 1..=3 {
        let r = request_from(
            OTHER,
            proxy.addr,
            "GET",
            "/api/a",
            &[("Authorization", &bearer(&fresh(n)))],
        );
        assert_eq!(
            r.status, 200,
            "fresh key {n} from another address: {}\n{}",
            r.head, r.body
        );
    }

    // The neighbour's key, past its cache entry, still works from the throttled address.
    std::thread::sleep(Duration::from_millis(1200));
    let r = request_from(
        GUESSER,
        proxy.addr,
        "GET",
        "/api/a",
        &[("Authorization", &bearer(&neighbour))],
    );
    assert_eq!(
        r.status, 200,
        "a key seen valid, from the throttled address: {}\n{}",
        r.head, r.body
    );

    // Forged forwarding headers do not let the guesser out: each is counted against it.
    for forged in [
        "203.0.113.9",
        "unknown",
        "127.0.0.3",
        "1.2.3.4, 5.6.7.8",
        "[::1]:99",
        "junk",
    ] {
        let r = request_from(
            GUESSER,
            proxy.addr,
            "GET",
            "/api/a",
            &[
                ("Authorization", &bearer(&guess())),
                ("X-Forwarded-For", forged),
                ("Forwarded", &format!("for={forged}")),
                ("X-Real-IP", forged),
            ],
        );
        assert_refused(&r, 429, "too_many_failed_attempts", None);
    }
    // And the address the guesser tried to pass for is not blocked.
    let r = request_from(
        OTHER,
        proxy.addr,
        "GET",
        "/api/a",
        &[("Authorization", &bearer(&fresh(4)))],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);

    // Identity headers spelt with underscores (CGI and WSGI servers read `X_Hapnd_Tenant`
    // as `X-Hapnd-Tenant`) never reach the backend.
    let r = request_from(
        OTHER,
        proxy.addr,
        "GET",
        "/api/a",
        &[
            ("Authorization", &bearer(&fresh(5))),
            ("X_Hapnd_Tenant", "evil"),
            ("x_hapnd_key_id", "key_EVIL"),
            ("X-Hapnd_Environment", "evil"),
            ("X_HAPND-KEY-NAME", "evil"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r, "x-hapnd-tenant"), ["acme"]);
    assert!(
        !r.body.contains("evil") && !r.body.contains("EVIL"),
        "{}",
        r.body
    );
    for headers in backend.seen.lock().unwrap().iter() {
        for (name, _) in headers {
            let folded = name.to_ascii_lowercase().replace('_', "-");
            assert!(
                !folded.starts_with("x-hapnd-")
                    || name.starts_with("x-hapnd-") && !name.contains('_'),
                "{name} reached the backend"
            );
        }
    }
}

/// A backend that cannot be reached is the proxy's 502, never the gateway's
/// `auth_unavailable`: clients and operators must be able to tell the two apart.
fn backend_down_is_not_an_auth_failure(kind: Kind) {
    let dir = TempDir::new(&format!("backend-down-{kind:?}"));
    let db = dir.path().join("keys.db").display().to_string();
    let flags = readme_gateway_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gateway = Gateway::start(dir.path(), &db, &flags);
    let nothing = SocketAddr::from(([127, 0, 0, 1], gateway::free_port()));
    let proxy = Proxy::start(kind, dir.path(), gateway.addr, nothing);
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "ci");
    let r = proxy.get("/api/orders", &[("Authorization", &bearer(&key))]);
    assert_eq!(r.status, 502, "{}\n{}", r.head, r.body);
    assert!(!r.body.contains("auth_unavailable"), "{}", r.body);
    assert!(r.header("x-hapnd-error").is_none(), "{}", r.head);
}

/// Straight at the gateway, from several loopback addresses: a forwarding header counts
/// only on a connection from a trusted proxy, and one that cannot be read there is counted
/// against that proxy, never left unidentified (which would escape the throttle).
#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let dir = TempDir::new("trusted-proxies");
    let db = dir.path().join("keys.db").display().to_string();
    let gateway = Gateway::start(
        dir.path(),
        &db,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--throttle-burst",
            "3",
            "--throttle-period-ms",
            "60000",
            "--throttle-tarpit-ms",
            "0",
        ],
    );
    let d = dir.path();
    let fresh = |n: &str| create_key(d, &db, "acme", "live", n).0;
    let guess = || {
        hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live)
            .expose_secret()
            .to_owned()
    };
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let get = |from: IpAddr, key: &str, xff: &str| {
        request_from(
            from,
            gateway.addr,
            "GET",
            "/v1/whoami",
            &[("Authorization", &bearer(key)), ("X-Forwarded-For", xff)],
        )
    };

    // An untrusted peer rotating X-Forwarded-For is one client: its own address.
    for n in 0..3 {
        let r = get(GUESSER, &guess(), &format!("203.0.113.{n}"));
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = get(GUESSER, &guess(), "203.0.113.99");
    assert_refused(&r, 429, "too_many_failed_attempts", None);
    // What it claimed to be is not blocked, nor is anyone else.
    let r = get(OTHER, &fresh("other"), "127.0.0.2");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(proxy, &fresh("via-proxy"), "203.0.113.0");
    assert_eq!(r.status, 200, "{}", r.body);

    // From the trusted proxy, a header that is not an address counts against the proxy.
    for junk in ["unknown", "junk", "1.2.3.4.5"] {
        let r = get(proxy, &guess(), junk);
        assert_eq!(r.status, 401, "{junk}: {}", r.body);
    }
    let r = get(proxy, &guess(), "unknown");
    assert_refused(&r, 429, "too_many_failed_attempts", None);
    // A client behind that proxy, named by it, is still its own client.
    let r = get(proxy, &fresh("behind"), "198.51.100.1");
    assert_eq!(r.status, 200, "{}", r.body);

    // The same rules over h2c. A third untrusted address rotating X-Forwarded-For is
    // still one client; the blocked guesser stays blocked whatever it claims; another
    // address's fresh key is admitted.
    let h2c = |from: IpAddr, key: &str, xff: &str| {
        h2c_request_from(
            from,
            gateway.addr,
            "/v1/whoami",
            &[
                ("authorization", bearer(key).as_str()),
                ("x-forwarded-for", xff),
            ],
        )
    };
    let third: IpAddr = "127.0.0.4".parse().unwrap();
    for n in 0..3 {
        let r = h2c(third, &guess(), &format!("198.51.100.{}", 10 + n));
        assert_eq!(r.status, 401, "h2c guess {n}: {}", r.body);
    }
    let r = h2c(third, &guess(), "198.51.100.99");
    assert_refused(&r, 429, "too_many_failed_attempts", None);
    let r = h2c(GUESSER, &guess(), "198.51.100.1");
    assert_refused(&r, 429, "too_many_failed_attempts", None);
    let r = h2c(OTHER, &fresh("other-h2c"), "127.0.0.4");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn nginx_one_guesser_costs_no_one_else() {
    if require("nginx") {
        one_guesser_costs_no_one_else(Kind::Nginx);
    }
}

#[test]
fn caddy_one_guesser_costs_no_one_else() {
    if require("caddy") {
        one_guesser_costs_no_one_else(Kind::Caddy);
    }
}

#[test]
fn nginx_backend_down_is_502() {
    if require("nginx") {
        backend_down_is_not_an_auth_failure(Kind::Nginx);
    }
}

#[test]
fn caddy_backend_down_is_502() {
    if require("caddy") {
        backend_down_is_not_an_auth_failure(Kind::Caddy);
    }
}

#[test]
fn nginx_with_the_readme_configuration() {
    if require("nginx") {
        forward_auth_contract(Kind::Nginx);
    }
}

#[test]
fn nginx_answers_503_when_the_store_fails() {
    if require("nginx") {
        store_outage(Kind::Nginx);
    }
}

#[test]
fn caddy_with_the_readme_configuration() {
    if require("caddy") {
        forward_auth_contract(Kind::Caddy);
    }
}

#[test]
fn caddy_answers_503_when_the_store_fails() {
    if require("caddy") {
        store_outage(Kind::Caddy);
    }
}

/// The scope routes and a key's rate limit over h2c and HTTP/1.1, from a second loopback
/// address: the same answers either way, and a limited key spends one budget over both.
#[test]
fn scopes_and_rate_limits_over_h2c_and_http1_from_another_address() {
    let dir = TempDir::new("fwd-policy-h2c");
    let db = dir.path().join("keys.db").display().to_string();
    let gateway = Gateway::start(dir.path(), &db, &[]);
    let d = dir.path();
    let (reader, _) = create_key_with(
        d,
        &db,
        &[
            "--tenant",
            "acme",
            "--env",
            "live",
            "--name",
            "reader",
            "--scope",
            "events:read",
            "--rate-limit",
            "4/h",
        ],
    );
    let client: IpAddr = "127.0.0.2".parse().unwrap();
    let auth = bearer(&reader);
    let headers = [("authorization", auth.as_str())];
    let write = "/auth/verify-scope/events:write/v1/events";
    let read = "/auth/verify-scope/events:read";
    let r = h2c_request_from(client, gateway.addr, write, &headers);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.header("x-hapnd-error").as_deref(),
        Some("insufficient_scope")
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .ends_with(r#"scope="events:write""#)
    );
    let r = request_from(client, gateway.addr, "GET", write, &headers);
    assert_eq!(r.status, 403, "{}", r.body);
    // Two more admitted, one over each protocol: the 403s above spent the first two.
    let r = h2c_request_from(client, gateway.addr, read, &headers);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-hapnd-scopes").as_deref(), Some("events:read"));
    let r = request_from(client, gateway.addr, "GET", read, &headers);
    assert_eq!(r.status, 200, "{}", r.body);
    // The fifth in the hour, whatever the protocol: 429 with the headers.
    for r in [
        h2c_request_from(client, gateway.addr, read, &headers),
        request_from(client, gateway.addr, "GET", read, &headers),
    ] {
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("x-hapnd-error").as_deref(), Some("rate_limited"));
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some(r#""key";q=4;w=3600"#)
        );
        assert!(r.header("retry-after").is_some());
    }
}
