//! End to end: the real `hapnd-auth` binary on an ephemeral loopback port, with a
//! temporary database and home directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hapnd-auth");

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hapnd-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        Sandbox { dir }
    }

    fn db(&self) -> String {
        self.dir.join("keys.db").display().to_string()
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HOME", self.home())
            .env("HAPND_AUTH_DATABASE", self.db())
            .env_remove("HAPND_API_KEY")
            .env_remove("HAPND_URL")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Server {
    child: Child,
    /// The public listener.
    addr: SocketAddr,
    /// The admin listener.
    admin: SocketAddr,
    demo_key: String,
}

impl Server {
    fn start(sandbox: &Sandbox, extra: &[&str]) -> Server {
        Self::start_logging(sandbox, extra, Stdio::null())
    }

    fn start_logging(sandbox: &Sandbox, extra: &[&str], logs: impl Into<Stdio>) -> Server {
        let mut child = sandbox
            .command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("HAPND_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut demo_key = String::new();
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
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
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            demo_key,
        }
    }

    fn get(&self, path: &str, key: Option<&str>) -> Response {
        http_get(self.addr, path, key)
    }

    fn admin_get(&self, path: &str) -> Response {
        http_get(self.admin, path, None)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not shut down");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

fn http_get(addr: SocketAddr, path: &str, key: Option<&str>) -> Response {
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
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn create_key(sandbox: &Sandbox, env: &str, name: &str) -> (String, String) {
    let out = sandbox.run(&[
        "keys", "create", "--tenant", "acme", "--env", env, "--name", name,
    ]);
    printed_key(&out)
}

/// The key and its id from a successful `keys create` or `keys rotate`: the key alone on
/// stdout, the id in the prose on stderr.
fn printed_key(out: &Output) -> (String, String) {
    assert!(out.status.success(), "{}", stderr(out));
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "stdout holds the key only: {text}");
    let key = text.trim().to_owned();
    assert!(key.starts_with("sk_"), "{key}");
    let id = stderr(out)
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .expect("the id is printed")
        .to_owned();
    (key, id)
}

#[test]
fn the_first_start_key_works_against_whoami_and_verify() {
    let sandbox = Sandbox::new("first");
    let server = Server::start(&sandbox, &[]);
    assert!(
        server.demo_key.starts_with("sk_test_"),
        "no demo key printed"
    );

    let r = server.get("/v1/whoami", Some(&server.demo_key));
    assert_eq!(r.status, 200, "{}", r.body);
    let who = r.json();
    assert_eq!(who["tenant"], "demo");
    assert_eq!(who["environment"], "sandbox");
    assert!(who["key_id"].as_str().unwrap().starts_with("key_"));

    let r = server.get("/auth/verify", Some(&server.demo_key));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-hapnd-tenant").as_deref(), Some("demo"));
    assert_eq!(r.header("x-hapnd-environment").as_deref(), Some("sandbox"));
    assert_eq!(
        r.header("x-hapnd-key-id"),
        who["key_id"].as_str().map(str::to_owned)
    );
    // Envoy's ext_authz appends the original path to the prefix.
    let r = server.get("/auth/verify/v1/orders?limit=5", Some(&server.demo_key));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-hapnd-tenant").as_deref(), Some("demo"));
    let r = server.get("/auth/verify", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="hapnd""#)
    );

    // 503 until the SQLite feed's first poll has confirmed the channel (a loaded machine
    // can take longer than the requests above).
    let started = Instant::now();
    let r = loop {
        let r = server.admin_get("/healthz");
        if r.status == 200 || started.elapsed() > Duration::from_secs(2) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["invalidation_channel"], "healthy");

    // A restart on the same database does not mint another demo key.
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "graceful shutdown exits 0"
    );
    let again = Server::start(&sandbox, &[]);
    assert!(again.demo_key.is_empty());
    assert_eq!(
        again.get("/v1/whoami", Some(&server_key(&sandbox))).status,
        401
    );
}

/// A well-formed key nobody created.
fn server_key(_: &Sandbox) -> String {
    hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live)
        .expose_secret()
        .to_owned()
}

#[test]
fn health_is_on_the_admin_listener_only() {
    let sandbox = Sandbox::new("admin");
    let server = Server::start(&sandbox, &[]);
    assert_ne!(server.addr, server.admin);

    // Degraded (503) until the SQLite feed's first poll has confirmed the channel.
    let started = Instant::now();
    let r = loop {
        let r = server.admin_get("/healthz");
        if r.status == 200 || started.elapsed() > Duration::from_secs(2) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "ok", "store": "ok", "invalidation_channel": "healthy"})
    );
    // The public listener serves no admin route, not even to a valid key...
    for key in [None, Some(server.demo_key.as_str())] {
        let r = server.get("/healthz", key);
        assert_eq!(r.status, 404, "{}", r.body);
    }
    // ...and the admin listener serves none of the public API.
    assert_eq!(server.admin_get("/v1/whoami").status, 404);
    assert_eq!(server.admin_get("/auth/verify").status, 404);

    assert_eq!(
        server.terminate().code(),
        Some(0),
        "graceful shutdown exits 0"
    );
}

#[test]
fn sandbox_keys_never_reach_the_live_router() {
    let sandbox = Sandbox::new("envs");
    let server = Server::start(&sandbox, &[]);
    let (live, _) = create_key(&sandbox, "live", "prod");
    let r = server.get("/v1/events", Some(&live));
    assert_eq!(r.json()["environment"], "live");
    let r = server.get("/v1/events", Some(&server.demo_key));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["environment"], "sandbox");
}

#[test]
fn keys_revoke_from_another_process_takes_effect_within_a_poll_interval() {
    let sandbox = Sandbox::new("revoke");
    let server = Server::start(&sandbox, &["--poll-interval-ms", "100"]);
    let (key, id) = create_key(&sandbox, "live", "ci-pipeline");
    assert_eq!(server.get("/v1/whoami", Some(&key)).status, 200); // now cached

    let list = sandbox.run(&["keys", "list", "--tenant", "acme", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(rows[0]["id"], id.as_str());
    assert!(!stdout(&list).contains(&key), "list shows the secret");

    let out = sandbox.run(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked = Instant::now();
    loop {
        let r = server.get("/v1/whoami", Some(&key));
        if r.status == 401 {
            assert_eq!(r.json()["error"]["code"], "api_key_revoked");
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "revocation seen by the gateway after {:?}",
        revoked.elapsed()
    );

    let table = stdout(&sandbox.run(&["keys", "list", "--tenant", "acme"]));
    let row = table
        .lines()
        .find(|l| l.contains(&id))
        .expect("the key is listed");
    assert!(row.contains(" revoked "), "{table}");
}

#[test]
fn rotate_prints_a_replacement_and_keeps_the_old_key() {
    let sandbox = Sandbox::new("rotate");
    let (old, id) = create_key(&sandbox, "test", "deploy");
    let (new, _) = printed_key(&sandbox.run(&["keys", "rotate", &id]));
    assert!(new.starts_with("sk_test_"));
    assert_ne!(new, old);
    let server = Server::start(&sandbox, &[]);
    assert_eq!(server.get("/v1/whoami", Some(&old)).status, 200);
    assert_eq!(
        server.get("/v1/whoami", Some(&new)).json()["key_name"],
        "deploy"
    );
}

#[test]
fn login_refuses_bad_keys_writes_0600_and_the_environment_wins() {
    let sandbox = Sandbox::new("login");
    let server = Server::start(&sandbox, &[]);
    let url = format!("http://{}", server.addr);

    for bad in ["pk_live_abc", "sk_prod_0123456789", "hello"] {
        let out = sandbox.run(&["login", bad]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).starts_with("error: refusing this key"),
            "{}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1);
    }
    let mut typo = server.demo_key.clone();
    typo.pop();
    typo.push(if server.demo_key.ends_with('A') {
        'B'
    } else {
        'A'
    });
    assert!(!sandbox.run(&["login", &typo]).status.success());

    let out = sandbox.run(&["login", "--url", &url, &server.demo_key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = sandbox.home().join(".hapnd/config.json");
    assert_eq!(mode(&config), 0o600);
    let out = sandbox.run(&["whoami", "--url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("environment: sandbox"),
        "{}",
        stdout(&out)
    );

    let (live, _) = create_key(&sandbox, "live", "laptop");
    let out = sandbox
        .command()
        .args(["whoami", "--url", &url])
        .env("HAPND_API_KEY", &live)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("environment: live"),
        "{}",
        stdout(&out)
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn no_key_or_password_is_echoed_by_argument_errors() {
    let sandbox = Sandbox::new("echo");
    let key = server_key(&sandbox);
    let secret = &key[8..40];
    let runs = [
        sandbox.run(&["whoami", &key]),
        sandbox.run(&["login", &key, &key]),
        sandbox.run(&["keys", "revoke", &key]),
        sandbox.run(&["keys", "rotate", &key]),
        sandbox.run(&["keys", "list", "--tenant", "acme", "--bogus", &key]),
    ];
    for out in &runs {
        assert!(!out.status.success());
        let text = format!("{}{}", stdout(out), stderr(out));
        assert!(!text.contains(secret), "a key was echoed: {text}");
    }
    assert!(
        stderr(&runs[2]).contains("not a key id"),
        "{}",
        stderr(&runs[2])
    );

    let url = "postgress://hapnd:s3cretpw@127.0.0.1:1/hapnd";
    let out = sandbox.run(&["keys", "list", "--tenant", "acme", "--db", url]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("s3cretpw"), "{}", stderr(&out));
    let out = sandbox
        .command()
        .args(["keys", "list", "--help"])
        .env(
            "HAPND_AUTH_DATABASE",
            "postgres://hapnd:s3cretpw@127.0.0.1:1/hapnd",
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!stdout(&out).contains("s3cretpw"), "{}", stdout(&out));

    let out = sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "a",
        "--env",
        "live",
        "--name",
        "n",
        "--expires",
        "150000000000000d",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at most 100 years"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_reads_the_key_from_standard_input() {
    let sandbox = Sandbox::new("stdin");
    let key = hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Sandbox);
    let mut child = sandbox
        .command()
        .args(["login", "--no-verify", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", key.expose_secret()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(&key.expose_secret()[8..40]));
    let saved = std::fs::read_to_string(sandbox.home().join(".hapnd/config.json")).unwrap();
    assert!(saved.contains(key.expose_secret()));
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failing_exit() {
    let sandbox = Sandbox::new("bad");
    let out = sandbox.run(&[
        "keys", "create", "--tenant", "acme", "--env", "prod", "--name", "x",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown environment"),
        "{}",
        stderr(&out)
    );

    let out = sandbox.run(&[
        "keys", "create", "--tenant", "", "--env", "live", "--name", "x",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tenant"), "{}", stderr(&out));

    create_key(&sandbox, "live", "exists");
    let out = sandbox.run(&["keys", "revoke", "key_doesnotexist"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("key_doesnotexist"),
        "{}",
        stderr(&out)
    );

    let out = sandbox.run(&[
        "keys",
        "list",
        "--tenant",
        "acme",
        "--db",
        "postgres://nobody@127.0.0.1:1/none",
    ]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("127.0.0.1:1: Connection refused"),
        "{}",
        stderr(&out)
    );

    let server = Server::start(&sandbox, &[]);
    let out = sandbox.run(&["serve", "--listen", &server.addr.to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
    let admin = server.admin.to_string();
    let out = sandbox.run(&["serve", "--listen", "127.0.0.1:0", "--admin-listen", &admin]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot listen on {admin}")),
        "{}",
        stderr(&out)
    );

    let out = sandbox
        .command()
        .args(["whoami"])
        .env("HOME", sandbox.dir.join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hapnd-auth login"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn two_gateways_on_postgres_both_reject_a_key_revoked_by_the_cli() {
    let Some(url) = test_database("the PostgreSQL CLI test did not run") else {
        return;
    };
    let sandbox = Sandbox::new("pg");
    let a = Server::start(&sandbox, &["--db", &url]);
    let b = Server::start(&sandbox, &["--db", &url]);
    let tenant = format!("cli_{}", std::process::id());
    let out = sandbox.run(&[
        "keys", "create", "--db", &url, "--tenant", &tenant, "--env", "live", "--name", "shared",
    ]);
    let (key, id) = printed_key(&out);
    assert!(key.starts_with("sk_live_"));
    assert_eq!(a.get("/v1/whoami", Some(&key)).status, 200);
    assert_eq!(b.get("/v1/whoami", Some(&key)).status, 200);

    let out = sandbox.run(&["keys", "revoke", "--db", &url, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked = Instant::now();
    for server in [&a, &b] {
        while server.get("/v1/whoami", Some(&key)).status != 401 {
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "still accepted after 1 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    eprintln!(
        "both gateways rejected the key {:?} after the CLI's revoke returned",
        revoked.elapsed()
    );
    assert_eq!(
        a.admin_get("/healthz").json()["invalidation_channel"],
        "healthy"
    );
}

/// A scheduled roll reaches every gateway on the database: one that has the old key cached
/// without an expiry re-reads it when the roll sets one (docs/audit.md), so it admits the
/// old key until the expiry and rejects it with `api_key_expired` after, long before its
/// cache entry would have aged out (`--cache-ttl-secs 300`).
#[test]
fn two_gateways_on_postgres_both_expire_the_old_key_of_a_scheduled_roll() {
    let Some(url) = test_database("the PostgreSQL scheduled-roll test did not run") else {
        return;
    };
    let sandbox = Sandbox::new("pg-roll");
    let a = Server::start(&sandbox, &["--db", &url, "--cache-ttl-secs", "300"]);
    let b = Server::start(&sandbox, &["--db", &url, "--cache-ttl-secs", "300"]);
    let tenant = format!("roll_{}", std::process::id());
    let out = sandbox.run(&[
        "keys", "create", "--db", &url, "--tenant", &tenant, "--env", "live", "--name", "ci",
    ]);
    let (old_key, old) = printed_key(&out);
    for server in [&a, &b] {
        assert_eq!(
            server.get("/v1/whoami", Some(&old_key)).status,
            200,
            "cached"
        );
    }
    let out = sandbox.run(&[
        "keys",
        "rotate",
        "--db",
        &url,
        &old,
        "--old-expires-in",
        "3s",
    ]);
    let rolled = Instant::now();
    let (new_key, _) = printed_key(&out);
    for server in [&a, &b] {
        assert_eq!(server.get("/v1/whoami", Some(&old_key)).status, 200);
        assert_eq!(server.get("/v1/whoami", Some(&new_key)).status, 200);
    }
    assert!(
        rolled.elapsed() < Duration::from_millis(2500),
        "too slow to check before the expiry"
    );
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(rolled.elapsed()) + Duration::from_millis(300),
    );
    for server in [&a, &b] {
        let r = server.get("/v1/whoami", Some(&old_key));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "api_key_expired", "{}", r.body);
        assert_eq!(server.get("/v1/whoami", Some(&new_key)).status, 200);
    }
}

// ---- the command that guards its users (issue #9) ----

fn run_in(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = sandbox.command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|_| panic!("not JSON: {}", stdout(out)))
}

#[test]
fn key_commands_name_their_database_and_only_create_makes_one() {
    let sandbox = Sandbox::new("wrongdb");
    let db = sandbox.db();
    for args in [
        &["keys", "list", "--tenant", "acme"][..],
        &["keys", "list", "--all"],
        &["keys", "revoke", "--yes", "key_x"],
        &["keys", "rotate", "key_x"],
    ] {
        let out = sandbox.run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains(&format!("no database at {db}")),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!Path::new(&db).exists(), "{args:?} created the database");
    }
    let out = sandbox.run(&[
        "keys", "create", "--tenant", "acme", "--env", "live", "--name", "ci",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("database: SQLite {db}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(Path::new(&db)), 0o600);
    let out = sandbox.run(&["keys", "list", "--tenant", "acme"]);
    assert!(stderr(&out).contains(&format!("database: SQLite {db}")));

    // A relative path is named absolutely, so "which directory was I in" is answered.
    let out = sandbox
        .command()
        .current_dir(&sandbox.dir)
        .args(["keys", "list", "--all", "--db", "keys.db"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("database: SQLite {db}")));
}

#[test]
fn database_errors_are_classified_and_never_echo_a_url() {
    let sandbox = Sandbox::new("dberr");
    let out = sandbox.run(&[
        "keys",
        "list",
        "--all",
        "--db",
        "/nonexistent-dir/sub/keys.db",
    ]);
    assert!(
        stderr(&out).contains("the directory /nonexistent-dir/sub does not exist"),
        "{}",
        stderr(&out)
    );
    let out = sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "a",
        "--env",
        "live",
        "--name",
        "n",
        "--db",
        "/nonexistent-dir/sub/keys.db",
    ]);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    let junk = sandbox.dir.join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let out = sandbox.run(&["keys", "list", "--all", "--db", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a SQLite database"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("unavailable"), "{}", stderr(&out));

    // Any postgres: prefix is PostgreSQL: never a SQLite file named after the URL, and
    // the password is not echoed.
    for url in [
        "postgres:/hapnd:s3cretpw@127.0.0.1/db",
        "postgresql:hapnd:s3cretpw@127.0.0.1/db",
        "POSTGRES:/hapnd:s3cretpw@127.0.0.1/db",
    ] {
        let out = sandbox
            .command()
            .current_dir(&sandbox.dir)
            .args([
                "keys", "create", "--tenant", "a", "--env", "live", "--name", "n",
            ])
            .args(["--db", url])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}");
        assert!(stderr(&out).contains("postgres://"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("s3cretpw"), "{}", stderr(&out));
    }
    let left: Vec<_> = std::fs::read_dir(&sandbox.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|f| f == "home" || f == "junk.db"),
        "{left:?}"
    );

    let Some(url) = test_database("its PostgreSQL part did not run") else {
        return;
    };
    // The same server and user with a wrong password: refused, not "unavailable".
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let wrong = format!("{scheme}://{user}:wr0ngpassw0rd@{host}");
    let out = sandbox.run(&["keys", "list", "--all", "--db", &wrong]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("refused the login"), "{err}");
    assert!(
        !err.contains("wr0ngpassw0rd") && !err.contains("unavailable"),
        "{err}"
    );
    assert!(!err.contains(".c:") && !err.contains("line"), "{err}");
    assert!(err.contains(&format!("postgres://{user}@")), "{err}");
}

#[test]
fn sqlite_files_are_private_and_loose_ones_are_reported() {
    let sandbox = Sandbox::new("modes");
    let server = Server::start(&sandbox, &[]);
    create_key(&sandbox, "live", "ci");
    let db = sandbox.db();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{db}{suffix}");
        assert!(Path::new(&file).exists(), "{file} missing while serving");
        assert_eq!(mode(Path::new(&file)), 0o600, "{file}");
    }
    drop(server);

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sandbox.run(&["keys", "list", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("warning: {db} is accessible to other users")),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&sandbox.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = sandbox.run(&["keys", "list", "--tenant", "acme"]);
    assert!(
        stderr(&out).contains("directory") && stderr(&out).contains("writable by other users"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&sandbox.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = sandbox.run(&["keys", "list", "--tenant", "acme"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn serve_makes_a_demo_key_only_on_an_empty_database() {
    let sandbox = Sandbox::new("demo");
    // A database that holds a key of another tenant: no demo key.
    create_key(&sandbox, "live", "prod");
    let server = Server::start(&sandbox, &[]);
    assert!(server.demo_key.is_empty(), "a demo key on a used database");
    drop(server);
    let all = json_of(&sandbox.run(&["keys", "list", "--all", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 1);

    let fresh = Sandbox::new("demo-off");
    let server = Server::start(&fresh, &["--no-demo-key"]);
    assert!(server.demo_key.is_empty());
    drop(server);
    let all = json_of(&fresh.run(&["keys", "list", "--all", "--json"]));
    assert_eq!(all, serde_json::json!([]));
}

#[test]
fn serve_accepts_a_bare_port_and_a_host_name() {
    let sandbox = Sandbox::new("listen");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = sandbox
        .command()
        .args(["serve", "--listen", &port.to_string()])
        .args(["--admin-listen", "localhost:0", "--no-demo-key"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first, format!("listening on http://127.0.0.1:{port}"));
    assert!(
        second.starts_with("admin listening on http://127.0.0.1:"),
        "{second}"
    );
    let out = sandbox.run(&["serve", "--listen", "no such host:80"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
}

#[test]
fn rotate_refuses_revoked_or_expired_keys_and_keeps_the_expiry_policy() {
    let sandbox = Sandbox::new("rotexp");
    let created = json_of(&sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--env",
        "live",
        "--name",
        "ci",
        "--expires",
        "30d",
        "--json",
    ]));
    let id = created["id"].as_str().unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("sk_live_"));
    assert!(created["expires_at"].is_string());

    let out = sandbox.run(&["keys", "rotate", id, "--json"]);
    let rotated = json_of(&out);
    let lifetime = secs(&rotated["expires_at"]) - secs(&rotated["created_at"]);
    assert!(
        (30 * 86_400 - 2..=30 * 86_400).contains(&lifetime),
        "replacement lifetime {lifetime} s"
    );
    assert!(stderr(&out).contains("stays active"), "{}", stderr(&out));
    let out = sandbox.run(&["keys", "rotate", id, "--expires", "1h", "--json"]);
    let short = json_of(&out);
    let lifetime = secs(&short["expires_at"]) - secs(&short["created_at"]);
    assert!((3598..=3600).contains(&lifetime), "{lifetime}");

    let out = sandbox.run(&["keys", "revoke", "--yes", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sandbox.run(&["keys", "rotate", id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was revoked at"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "no key printed");

    let (_, short_id) = printed_key(&sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--env",
        "live",
        "--name",
        "brief",
        "--expires",
        "1s",
    ]));
    std::thread::sleep(Duration::from_millis(1100));
    let out = sandbox.run(&["keys", "rotate", &short_id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired at"), "{}", stderr(&out));
}

/// Seconds since the epoch of an RFC 3339 `...Z` time printed by the command.
fn secs(v: &serde_json::Value) -> i64 {
    let t = v.as_str().unwrap();
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let h: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]
}

#[test]
fn list_shows_status_and_expiry_pages_through_and_spans_tenants() {
    let sandbox = Sandbox::new("listing");
    let (_, active) = create_key(&sandbox, "live", "active-one");
    let (_, revoked) = create_key(&sandbox, "test", "revoked-one");
    assert!(
        sandbox
            .run(&["keys", "revoke", "-y", &revoked])
            .status
            .success()
    );
    let out = sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--env",
        "live",
        "--name",
        "brief",
        "--expires",
        "1s",
    ]);
    assert!(stderr(&out).contains("expires at 20"), "{}", stderr(&out));
    let (_, brief) = printed_key(&out);
    let out = sandbox.run(&[
        "keys", "create", "--tenant", "globex", "--env", "live", "--name", "other",
    ]);
    assert!(stderr(&out).contains("never expires"), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1100));

    let table = stdout(&sandbox.run(&["keys", "list", "--tenant", "acme"]));
    let header = table.lines().next().unwrap();
    for column in [
        "ID",
        "NAME",
        "ENV",
        "STATUS",
        "HINT",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(!header.contains("TENANT"));
    let row = |id: &str| table.lines().find(|l| l.contains(id)).unwrap().to_owned();
    assert!(row(&active).contains(" active "), "{table}");
    assert!(row(&revoked).contains(" revoked "), "{table}");
    assert!(row(&brief).contains(" expired "), "{table}");
    assert!(row(&active).contains(" never "), "{table}");
    assert!(!table.contains("globex"));

    let all = stdout(&sandbox.run(&["keys", "list", "--all"]));
    assert!(all.lines().next().unwrap().contains("TENANT"));
    assert!(all.contains("globex") && all.contains(&active), "{all}");
    let out = sandbox.run(&["keys", "list"]);
    assert!(!out.status.success(), "a tenant or --all is required");

    // More keys than one page holds (500): every one listed, once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use hapnd_auth::KeyStore;
        let store = hapnd_auth::SqliteKeyStore::connect(&sandbox.db())
            .await
            .unwrap();
        for i in 0..1100 {
            store
                .create(hapnd_auth::NewKey::new(
                    "bulk",
                    hapnd_auth::Environment::Live,
                    format!("k{i}"),
                ))
                .await
                .unwrap();
        }
    });
    let rows = json_of(&sandbox.run(&["keys", "list", "--tenant", "bulk", "--json"]));
    let ids: std::collections::HashSet<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1100);
    assert_eq!(rows[0]["status"], "active");
}

#[test]
fn every_key_command_speaks_json_and_a_closed_pipe_ends_quietly() {
    let sandbox = Sandbox::new("json");
    let created = json_of(&sandbox.run(&[
        "keys", "create", "--tenant", "acme", "--env", "sandbox", "--name", "ci", "--json",
    ]));
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["environment"], "sandbox");
    assert_eq!(created["status"], "active");
    assert_eq!(created["expires_at"], serde_json::Value::Null);
    let listed = json_of(&sandbox.run(&["keys", "list", "--tenant", "acme", "--json"]));
    assert_eq!(listed[0]["id"], id);
    let rotated = json_of(&sandbox.run(&["keys", "rotate", id, "--json"]));
    assert_ne!(rotated["id"], id);
    let revoked = json_of(&sandbox.run(&["keys", "revoke", "--yes", id, "--json"]));
    assert_eq!(revoked["status"], "revoked");

    // `keys create | head -1`, and a reader that goes away before anything is written.
    for args in [
        &[
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", "piped",
        ][..],
        &["keys", "list", "--tenant", "acme"],
        &["completions", "bash"],
    ] {
        let mut child = sandbox
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{err}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn revoke_asks_in_a_terminal_and_says_when_a_key_was_already_revoked() {
    let sandbox = Sandbox::new("confirm");
    let (_, id) = create_key(&sandbox, "live", "ci");
    // A pseudo-terminal through script(1): the answer "n" keeps the key.
    let script = |answer: &str, args: &str| {
        let mut child = Command::new("script")
            .args(["-qec", &format!("{BIN} keys revoke {args}"), "/dev/null"])
            .env("HOME", sandbox.home())
            .env("HAPND_AUTH_DATABASE", sandbox.db())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), stdout(&out))
    };
    let status_of = || {
        json_of(&sandbox.run(&["keys", "list", "--tenant", "acme", "--json"]))[0]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (code, screen) = script("n\n", &id);
    assert!(screen.contains("[y/N]"), "{screen}");
    assert_eq!(code, Some(1), "{screen}");
    assert_eq!(status_of(), "active");
    let (code, screen) = script("y\n", &id);
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(status_of(), "revoked");

    // Twice: said so, with the first revocation's time; not an error.
    let out = sandbox.run(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already revoked at 20"),
        "{}",
        stderr(&out)
    );

    // --yes in a terminal, and no terminal at all: no question.
    let (_, other) = create_key(&sandbox, "live", "other");
    let (code, screen) = script("", &format!("--yes {other}"));
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains("[y/N]"), "{screen}");
    assert!(screen.contains("revoked"), "{screen}");
    let (_, third) = create_key(&sandbox, "live", "third");
    let out = sandbox.run(&["keys", "revoke", &third]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("[y/N]"));
}

/// A stand-in gateway on a free loopback port: each connection's request head is read,
/// its first bytes are kept in `seen`, then `answer` writes whatever it likes.
fn fake_gateway(
    answer: impl Fn(&mut TcpStream) + Send + Sync + 'static,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            *record.lock().unwrap() = head.clone();
            if head.ends_with(b"\r\n\r\n") {
                answer(&mut stream);
            }
        }
    });
    (addr, seen)
}

fn answer_json(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn login_checks_the_key_with_the_gateway_and_guards_the_user() {
    let sandbox = Sandbox::new("login2");
    let server = Server::start(&sandbox, &[]);
    let url = format!("http://{}", server.addr);
    let config = sandbox.home().join(".hapnd/config.json");

    // A key the gateway does not know: refused with exit 4, nothing saved.
    let stranger = server_key(&sandbox);
    let out = sandbox.run(&["login", "--url", &url, &stranger]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_api_key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing saved"), "{}", stderr(&out));
    assert!(!config.exists());
    // No gateway there: the cause, a hint, and nothing saved.
    let out = sandbox.run(&["login", "--url", "http://127.0.0.1:1", &stranger]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--no-verify"), "{}", stderr(&out));
    assert!(!config.exists());
    // --no-verify saves without asking.
    let out = sandbox.run(&[
        "login",
        "--no-verify",
        "--url",
        "http://127.0.0.1:1",
        &stranger,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains(&stranger)
    );

    // A pasted "Bearer " prefix is stripped; the gateway's answer is shown.
    let pasted = format!("Bearer {}", server.demo_key);
    let out = sandbox.run(&["login", "--url", &url, &pasted]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("tenant demo"), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains(&server.demo_key)
    );

    // HAPND_API_KEY set: the user is told it wins over the file.
    let out = run_in(
        &sandbox,
        &["login", "--url", &url, &server.demo_key],
        &[("HAPND_API_KEY", &stranger)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: HAPND_API_KEY is set"),
        "{}",
        stderr(&out)
    );

    // Empty standard input says so.
    let out = sandbox.run(&["login", "--no-verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stdin was empty"), "{}", stderr(&out));

    // status: which key, from where.
    let hint = format!(
        "sk_test_...{}",
        &server.demo_key[server.demo_key.len() - 4..]
    );
    let out = sandbox.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&hint), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&config.display().to_string()),
        "{}",
        stdout(&out)
    );
    let out = run_in(
        &sandbox,
        &["status", "--json"],
        &[("HAPND_API_KEY", &stranger)],
    );
    let status = json_of(&out);
    assert_eq!(status["source"], "environment");
    assert_eq!(status["environment"], "live");
    assert!(
        !stdout(&out).contains(&stranger[8..40]),
        "the key itself is not shown"
    );

    // --config everywhere login takes it.
    let other = sandbox.dir.join("elsewhere.json");
    let other_s = other.to_str().unwrap();
    let out = sandbox.run(&[
        "login",
        "--config",
        other_s,
        "--url",
        &url,
        &server.demo_key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sandbox.run(&["status", "--json", "--config", other_s]);
    assert_eq!(json_of(&out)["path"], other_s);
    let out = sandbox.run(&["whoami", "--config", other_s, "--url", &url]);
    assert!(stdout(&out).contains("tenant: demo"), "{}", stdout(&out));
    let out = sandbox.run(&["logout", "--config", other_s]);
    assert!(out.status.success());
    assert!(!other.exists());

    // logout, then nothing is in use.
    let out = sandbox.run(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!config.exists());
    let out = sandbox.run(&["status"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hapnd-auth login"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_in_a_terminal_does_not_echo_the_key() {
    let sandbox = Sandbox::new("hidden");
    let key = server_key(&sandbox);
    let mut child = Command::new("script")
        .args(["-qec", &format!("{BIN} login --no-verify"), "/dev/null"])
        .env("HOME", sandbox.home())
        .env_remove("HAPND_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut screen_out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut typed = false;
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = screen_out.read(&mut buf) {
            screen.extend_from_slice(&buf[..n]);
            // Typed after the prompt is up, as a person would: rpassword turns echo off
            // just after printing it, so not within the same microsecond.
            if !typed && String::from_utf8_lossy(&screen).contains("not shown") {
                std::thread::sleep(Duration::from_millis(200));
                writeln!(input, "{key}").unwrap();
                typed = true;
            }
        }
        (String::from_utf8_lossy(&screen).into_owned(), key)
    });
    let status = child.wait().unwrap();
    let (screen, key) = reader.join().unwrap();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("not shown"), "no prompt: {screen}");
    assert!(
        !screen.contains(&key[8..40]),
        "the key was echoed: {screen}"
    );
    let saved = std::fs::read_to_string(sandbox.home().join(".hapnd/config.json")).unwrap();
    assert!(saved.contains(&key));
}

#[test]
fn whoami_prints_parsed_fields_and_fails_clearly() {
    let sandbox = Sandbox::new("whoami");
    let server = Server::start(&sandbox, &[]);
    let env = [("HAPND_API_KEY", server.demo_key.as_str())];
    // Readable by default, the JSON with --json, and a URL without a scheme.
    let bare = server.addr.to_string();
    let out = run_in(&sandbox, &["whoami", "--url", &bare], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("tenant: demo\nenvironment: sandbox\nkey_id: key_"),
        "{text}"
    );
    let who = json_of(&run_in(
        &sandbox,
        &["whoami", "--json", "--url", &bare],
        &env,
    ));
    assert_eq!(who["tenant"], "demo");
    assert_eq!(who["key_name"], "demo");

    // Refused key: exit code 4, with the gateway's reason.
    let stranger = server_key(&sandbox);
    let out = run_in(
        &sandbox,
        &["whoami", "--url", &bare],
        &[("HAPND_API_KEY", &stranger)],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_api_key"), "{}", stderr(&out));

    // Nothing listening: the cause and where to look.
    let out = run_in(&sandbox, &["whoami", "--url", "http://127.0.0.1:1"], &env);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(
        err.contains("hapnd-auth serve") && err.contains("HAPND_URL"),
        "{err}"
    );

    // https:// speaks TLS (the stand-in sees a ClientHello, record type 0x16).
    let (addr, seen) = fake_gateway(|_| {});
    let out = run_in(
        &sandbox,
        &["whoami", "--url", &format!("https://{addr}")],
        &env,
    );
    assert!(!out.status.success());
    assert_eq!(
        seen.lock().unwrap().first(),
        Some(&0x16),
        "no TLS handshake"
    );
    assert!(!stderr(&out).contains("scheme"), "{}", stderr(&out));

    // Control characters in the answer are escaped, never sent to the terminal.
    let (addr, _) = fake_gateway(|s| {
        answer_json(
            s,
            "200 OK",
            r#"{"tenant":"evil\u001b[2J\r\nkey_id: forged","environment":"live","key_id":"key_x","key_name":"n\u0007"}"#,
        )
    });
    let out = run_in(&sandbox, &["whoami", "--url", &addr.to_string()], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b') && !text.contains('\r') && !text.contains('\x07'),
        "{text:?}"
    );
    assert!(
        text.contains("tenant: evil\\u{1b}[2J\\u{d}\\u{a}key_id: forged"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn whoami_bounds_the_whole_exchange_and_the_body() {
    let sandbox = Sandbox::new("bounds");
    let env = [("HAPND_API_KEY", "")];
    let key = server_key(&sandbox);
    let env = [(env[0].0, key.as_str())];
    // Headers at once, then a body that never ends.
    let (addr, _) = fake_gateway(|s| {
        let _ = write!(s, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        for _ in 0..200 {
            if write!(s, "1\r\n{{\r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let out = run_in(
        &sandbox,
        &["whoami", "--timeout", "1s", "--url", &addr.to_string()],
        &env,
    );
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr(&out).contains("did not answer within"),
        "{}",
        stderr(&out)
    );

    // A body far larger than any whoami answer is cut off, not loaded.
    let (addr, _) = fake_gateway(|s| {
        let size = 50 * 1024 * 1024;
        let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = run_in(&sandbox, &["whoami", "--url", &addr.to_string()], &env);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("length limit"), "{}", stderr(&out));
}

#[test]
fn names_and_tenants_from_the_database_are_escaped_when_printed() {
    let sandbox = Sandbox::new("escape");
    let (_, id) = create_key(&sandbox, "live", "plain");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = hapnd_auth::SqliteKeyStore::connect(&sandbox.db())
            .await
            .unwrap();
        // What anyone with SQL access can write, past the command's validation.
        sqlx::query(
            "UPDATE hapnd_api_keys SET name = 'evil' || char(27) || '[2J' || char(13) || \
             char(10) || 'key_forged  x  live  active', tenant = 'acme' || char(7) WHERE id = ?1",
        )
        .bind(&id)
        .execute(store.pool())
        .await
        .unwrap();
    });
    let out = sandbox.run(&["keys", "list", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for bad in ['\x1b', '\r', '\x07'] {
        assert!(!text.contains(bad), "{text:?}");
    }
    assert_eq!(text.lines().count(), 2, "a forged row: {text}");
    assert!(
        text.contains("evil\\u{1b}[2J\\u{d}\\u{a}key_forged"),
        "{text}"
    );
    assert!(text.contains("acme\\u{7}"), "{text}");

    let out = sandbox.run(&["keys", "revoke", "--yes", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\x1b') && !err.contains('\r') && !err.contains('\x07'),
        "{err:?}"
    );
    assert!(err.contains("evil\\u{1b}"), "{err}");
}

#[test]
fn help_describes_the_command_and_completions_are_generated() {
    let sandbox = Sandbox::new("help");
    let help = stdout(&sandbox.run(&["--help"]));
    assert!(help.contains("gateway"), "{help}");
    assert!(
        !help.contains("tower") && !help.contains("middleware"),
        "{help}"
    );
    let help = stdout(&sandbox.run(&["keys", "create", "--help"]));
    assert!(help.contains("`live`, or `sandbox`"), "{help}");
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("hapnd-auth"), "{shell}");
        for word in ["rotate", "revoke", "whoami", "logout"] {
            assert!(script.contains(word), "{shell} completes no {word}");
        }
    }
    assert!(!sandbox.run(&["completions", "tcsh"]).status.success());
}

#[test]
fn postgres_notices_are_logged_at_debug_only() {
    let Some(url) = test_database("the PostgreSQL notice test did not run") else {
        return;
    };
    let sandbox = Sandbox::new("notices");
    // A database of its own, whose first migration is marked not applied before each start:
    // re-running it (its statements are `IF NOT EXISTS`) draws a NOTICE from the server.
    let database = format!("hapnd_notices_{}", std::process::id());
    let sql = |url: &str, statement: String| {
        let url = url.to_owned();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            });
    };
    sql(&url, format!("DROP DATABASE IF EXISTS {database}"));
    sql(&url, format!("CREATE DATABASE {database}"));
    let (base, _) = url.rsplit_once('/').unwrap();
    let url = format!("{base}/{database}");
    let logs = |level: &str| {
        let mut child = sandbox
            .command()
            .args(["serve", "--db", &url, "--no-demo-key"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("HAPND_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("admin listening") {
                break;
            }
        }
        let _ = child.kill();
        let out = stderr(&child.wait_with_output().unwrap());
        sql(
            &url,
            "DELETE FROM _hapnd_auth_migrations WHERE version = 1".to_owned(),
        );
        out
    };
    logs("info");
    let info = logs("info");
    assert!(!info.contains("already exists, skipping"), "{info}");
    assert!(info.contains("database: PostgreSQL"), "{info}");
    let debug = logs("debug");
    assert!(debug.contains("already exists, skipping"), "{debug}");
    let (admin_base, _) = url.rsplit_once('/').unwrap();
    sql(
        &format!("{admin_base}/hapnd"),
        format!("DROP DATABASE {database} WITH (FORCE)"),
    );
}

#[path = "../../tests/skip/mod.rs"]
mod skip;

/// The test database (`HAPND_TEST_DATABASE_URL`), or `None` with the skip recorded: `what`
/// says what did not run. With `CI` set, a missing database fails the test.
fn test_database(what: &str) -> Option<String> {
    match std::env::var("HAPND_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but HAPND_TEST_DATABASE_URL is not: {what}"
            );
            skip::skipped(&format!("HAPND_TEST_DATABASE_URL not set; {what}"));
            None
        }
    }
}

#[test]
fn keys_carry_scopes_metadata_and_a_rate_limit_through_create_show_list_and_rotate() {
    let sandbox = Sandbox::new("policy");
    let out = sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--env",
        "live",
        "--name",
        "reporting",
        "--scope",
        "events:read",
        "--scope",
        "reports:export",
        "--metadata",
        r#"{"plan": "pro", "owner": "billing"}"#,
        "--rate-limit",
        "100/s,burst=200",
        "--json",
    ]);
    let created = json_of(&out);
    assert_eq!(
        created["scopes"],
        serde_json::json!(["events:read", "reports:export"])
    );
    assert_eq!(
        created["metadata"],
        serde_json::json!({"plan": "pro", "owner": "billing"})
    );
    assert_eq!(created["rate_limit"], "100/s,burst=200");
    let id = created["id"].as_str().unwrap().to_owned();

    let shown = json_of(&sandbox.run(&["keys", "show", &id, "--json"]));
    for field in ["scopes", "metadata", "rate_limit", "id", "tenant"] {
        assert_eq!(shown[field], created[field], "{field}");
    }
    assert!(shown.get("key").is_none(), "show never prints a key");
    let text = sandbox.run(&["keys", "show", &id]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    assert!(text.contains("events:read reports:export"), "{text}");
    assert!(text.contains("100/s,burst=200"), "{text}");

    let listed = json_of(&sandbox.run(&["keys", "list", "--tenant", "acme", "--json"]));
    assert_eq!(listed[0]["scopes"], created["scopes"]);
    assert_eq!(listed[0]["rate_limit"], created["rate_limit"]);
    let table = stdout(&sandbox.run(&["keys", "list", "--tenant", "acme"]));
    assert!(
        table.contains("SCOPES") && table.contains("events:read,reports:export"),
        "{table}"
    );

    // Rotation copies the policy...
    let rotated = json_of(&sandbox.run(&["keys", "rotate", &id, "--json"]));
    for field in ["scopes", "metadata", "rate_limit"] {
        assert_eq!(rotated[field], created[field], "{field}");
    }
    // ... unless a new one is given.
    let narrowed =
        json_of(&sandbox.run(&["keys", "rotate", &id, "--scope", "events:read", "--json"]));
    assert_eq!(narrowed["scopes"], serde_json::json!(["events:read"]));
    assert_eq!(narrowed["rate_limit"], serde_json::Value::Null);

    // A key made without any: full access, shown as such.
    let (_, plain) = create_key(&sandbox, "live", "plain");
    let shown = json_of(&sandbox.run(&["keys", "show", &plain, "--json"]));
    assert_eq!(shown["scopes"], serde_json::json!([]));
    assert_eq!(shown["metadata"], serde_json::Value::Null);
    assert!(stdout(&sandbox.run(&["keys", "show", &plain])).contains("none (full access)"));
}

#[test]
fn bad_scopes_metadata_and_limits_are_refused_and_nothing_is_written() {
    let sandbox = Sandbox::new("badpolicy");
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
    let cases: [(&[&str], &str); 9] = [
        (&["--scope", "Events:Read"], "is not a scope"),
        (&["--scope", "events:*"], "is not a scope"),
        (&["--scope", "a", "--scope", "a"], "given twice"),
        (&["--metadata", "[1, 2]"], "must be a JSON object"),
        (&["--metadata", "{oops"], "not valid JSON"),
        (&["--metadata", &big], "larger than 4096 bytes"),
        (&["--rate-limit", "0/s"], "invalid rate limit"),
        (&["--rate-limit", "100/fortnight"], "invalid rate limit"),
        (&["--rate-limit", "100/s,burst=lots"], "invalid rate limit"),
    ];
    for (extra, why) in cases {
        let mut args = vec![
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", "x",
        ];
        args.extend_from_slice(extra);
        let out = sandbox.run(&args);
        assert!(!out.status.success(), "{extra:?}");
        assert!(stderr(&out).contains(why), "{extra:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{extra:?}");
        assert!(
            !Path::new(&sandbox.db()).exists(),
            "{extra:?}: a database was made"
        );
    }
    // With a database: still nothing written, rotation included.
    let (_, id) = create_key(&sandbox, "live", "exists");
    let out = sandbox.run(&["keys", "rotate", &id, "--scope", "a", "--scope", "a"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("given twice"), "{}", stderr(&out));
    let listed = json_of(&sandbox.run(&["keys", "list", "--tenant", "acme", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn the_gateway_enforces_a_key_rate_limit_made_by_the_command() {
    let sandbox = Sandbox::new("ratelimit");
    let out = sandbox.run(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--env",
        "live",
        "--name",
        "ci",
        "--rate-limit",
        "2/h",
    ]);
    let (key, _) = printed_key(&out);
    let (other, _) = create_key(&sandbox, "live", "other");
    let server = Server::start(&sandbox, &[]);
    for _ in 0..2 {
        assert_eq!(server.get("/v1/whoami", Some(&key)).status, 200);
    }
    let r = server.get("/v1/whoami", Some(&key));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""key";q=2;w=3600"#)
    );
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with(r#""key";r=0;t="#)
    );
    assert!(r.header("retry-after").is_some());
    let r = server.get("/auth/verify", Some(&key));
    assert_eq!(r.status, 429, "forward auth is limited too: {}", r.body);
    assert_eq!(server.get("/v1/whoami", Some(&other)).status, 200);
}
