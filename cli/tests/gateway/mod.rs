//! Test support: the real `hapnd-auth` binary, an echo backend, raw HTTP/1.1 requests,
//! README blocks, and a TCP relay that can be cut. Shared by the forward-auth and
//! connection-limit tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "../../../tests/skip/mod.rs"]
pub mod skip;

pub const BIN: &str = env!("CARGO_BIN_EXE_hapnd-auth");

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hapnd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `hapnd-auth` command on `db`, with a home of its own.
pub fn command(dir: &Path, db: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("HOME", dir)
        .env("HAPND_AUTH_DATABASE", db)
        .env_remove("HAPND_API_KEY")
        .env_remove("HAPND_URL")
        .stdin(Stdio::null());
    c
}

/// `keys create`: the key and its id.
pub fn create_key(dir: &Path, db: &str, tenant: &str, env: &str, name: &str) -> (String, String) {
    create_key_with(dir, db, &["--tenant", tenant, "--env", env, "--name", name])
}

pub fn create_key_with(dir: &Path, db: &str, args: &[&str]) -> (String, String) {
    let out = command(dir, db)
        .args(["keys", "create"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sk_"))
        .expect("the key is printed")
        .to_owned();
    // The key alone goes to stdout; the id is in the prose on stderr.
    let id = format!("{stdout} {}", text(&out.stderr))
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .expect("the id is printed")
        .to_owned();
    (key, id)
}

pub fn run(dir: &Path, db: &str, args: &[&str]) -> Output {
    command(dir, db).args(args).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `hapnd-auth serve` on free loopback ports, its log (debug level) written to a file.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(dir: &Path, db: &str, extra: &[&str]) -> Gateway {
        let log = dir.join(format!("gateway-{}.log", unique()));
        let mut child = command(dir, db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("HAPND_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = match lines.next() {
                Some(line) => line.unwrap(),
                None => panic!(
                    "the gateway exited before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            };
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse().unwrap());
            }
            if let Some(a) = line.strip_prefix("admin listening on http://") {
                admin = Some(a.parse().unwrap());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let gateway = Gateway {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            log,
        };
        gateway.wait_healthy();
        gateway
    }

    /// Until `/healthz` says the change feed is up (revocations by others are seen).
    pub fn wait_healthy(&self) {
        let started = std::time::Instant::now();
        while request(self.admin, "GET", "/healthz", &[]).status != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "gateway not healthy"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`) to the process, by its pid.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the process (by its pid) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A free loopback port (bound, read, released: another process could take it first,
/// which the caller's start-up then reports).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}\n{}", self.head, self.body))
    }

    /// `error.code` of a JSON rejection body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code: {}", self.body))
            .to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection, headers exactly as given (no
/// normalisation: duplicates and odd casing reach the server as written).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    stream.write_all(raw.as_bytes()).unwrap();
    read_response(&mut stream)
}

pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {raw:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The fenced block that follows `<!-- forward-auth-test: NAME -->` in docs/forward-auth.md.
pub fn readme_block(name: &str) -> String {
    let readme = include_str!("../../../docs/forward-auth.md");
    let marker = format!("<!-- forward-auth-test: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/forward-auth.md has no {marker}"))
        + marker.len()..];
    let start = after.find("```").unwrap();
    let block = &after[start..];
    let body = &block[block.find('\n').unwrap() + 1..];
    body[..body.find("\n```").unwrap() + 1].to_owned()
}

/// Whether `program` is installed. Missing, it fails the test under CI and skips it
/// (with a message) elsewhere.
pub fn require(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed and CI is set: .ci/run installs it"
        );
        skip::skipped(&format!("{program} is not installed"));
    }
    found
}

/// Every request's headers, in arrival order.
pub type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A backend that answers every request with the headers it received, as JSON
/// `{"path": ..., "headers": [[name, value], ...]}`, and keeps them all for later checks.
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub seen: Seen,
    _runtime: tokio::runtime::Runtime,
}

impl EchoBackend {
    pub fn start() -> EchoBackend {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let record = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), text(v.as_bytes())))
                            .collect();
                        record.lock().unwrap().push(headers.clone());
                        let body = serde_json::json!({
                            "path": req.uri().to_string(),
                            "headers": headers,
                        });
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(body.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoBackend {
            addr,
            seen,
            _runtime: runtime,
        }
    }
}

/// The headers an echo answer reports, by lower-case name.
pub fn echoed(response: &Response, name: &str) -> Vec<String> {
    response.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// A TCP relay to `target` that can be cut: every relayed connection is shut down and new
/// ones are closed as soon as they are accepted.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut all = s.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { addr, cut, streams }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// One request from the loopback address `source` (127.0.0.2, say): another client, as
/// the server sees it.
pub fn request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let mut stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    read_response(&mut stream)
}

/// One h2c request (HTTP/2 by prior knowledge) from the loopback address `source`, as
/// [`request_from`] does over HTTP/1.1; the head is rebuilt as text so that
/// [`Response::header`] reads it alike.
pub fn h2c_request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    use http_body_util::{BodyExt, Empty};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::get(format!("http://{addr}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<bytes::Bytes>::new()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
            .await
            .expect("an answer within 15 s")
            .unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let status = response.status().as_u16();
        let mut head = format!("HTTP/2 {status}");
        for (name, value) in response.headers() {
            head.push_str(&format!("\r\n{name}: {}", text(value.as_bytes())));
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            head,
            body: text(&body),
        }
    })
}
