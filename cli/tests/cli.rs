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

/// The key and its id from a successful `keys create` or `keys rotate`.
fn printed_key(out: &Output) -> (String, String) {
    assert!(out.status.success(), "{}", stderr(out));
    let text = stdout(out);
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sk_"))
        .expect("the key is printed")
        .to_owned();
    let id = text
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

    let r = server.admin_get("/healthz");
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
    assert!(table.contains("REVOKED") && table.contains(&id));
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

    let out = sandbox.run(&["login", &server.demo_key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = sandbox.home().join(".hapnd/config.json");
    assert_eq!(mode(&config), 0o600);
    let out = sandbox.run(&["whoami", "--url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"sandbox\""));

    let (live, _) = create_key(&sandbox, "live", "laptop");
    let out = sandbox
        .command()
        .args(["whoami", "--url", &url])
        .env("HAPND_API_KEY", &live)
        .output()
        .unwrap();
    assert!(stdout(&out).contains("\"live\""), "{}", stdout(&out));
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
        .args(["login", "-"])
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
    let Ok(url) = std::env::var("HAPND_TEST_DATABASE_URL") else {
        eprintln!("SKIPPED: HAPND_TEST_DATABASE_URL not set; the PostgreSQL CLI test did not run");
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
