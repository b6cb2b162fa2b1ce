//! What the admin tests share: the real `hapnd-auth serve` on ephemeral loopback ports
//! with a temporary database, and a tiny HTTP/1.1 client.

#![allow(dead_code)] // Each test file uses its own part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../../../tests/skip/mod.rs"]
pub mod skip;

pub const BIN: &str = env!("CARGO_BIN_EXE_hapnd-auth");
/// The admin token the tests start `serve` with.
pub const TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

/// A temporary directory for one test's database and logs, removed on drop.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hapnd-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sandbox { dir }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HAPND_AUTH_DATABASE", self.dir.join("keys.db"))
            .env_remove("HAPND_ADMIN_TOKEN")
            .env("HAPND_LOG", "debug")
            .stdin(Stdio::null());
        c
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `hapnd-auth serve`, killed on drop.
pub struct Server {
    child: Child,
    /// The public listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// What it printed up to its listening lines.
    pub stdout: Vec<String>,
}

impl Server {
    /// `serve` with the admin token in `HAPND_ADMIN_TOKEN`.
    pub fn start(sandbox: &Sandbox) -> Server {
        let mut command = sandbox.command();
        command.env("HAPND_ADMIN_TOKEN", TOKEN);
        Self::spawn(sandbox, command)
    }

    /// `serve` as `command` says; its logs go to the sandbox's `serve.log`.
    pub fn spawn(sandbox: &Sandbox, command: Command) -> Server {
        Self::spawn_with(sandbox, command, &[])
    }

    /// `serve` with `extra` arguments.
    pub fn spawn_with(sandbox: &Sandbox, mut command: Command, extra: &[&str]) -> Server {
        let log = std::fs::File::create(sandbox.dir.join("serve.log")).unwrap();
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut admin, mut stdout) = (None, None, Vec::new());
        while addr.is_none() || admin.is_none() {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse().unwrap());
            }
            if let Some(a) = line.strip_prefix("admin listening on http://") {
                admin = Some(a.parse().unwrap());
            }
            stdout.push(line);
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            stdout,
        }
    }

    /// `GET path` on the public listener with `key`.
    pub fn public_get(&self, path: &str, key: &str) -> Response {
        let auth = format!("Bearer {key}");
        request(self.addr, "GET", path, &[("Authorization", &auth)], "")
    }

    /// A request to the admin API with the admin token `token`.
    pub fn admin_api(&self, method: &str, path: &str, token: &str, body: &str) -> Response {
        let auth = format!("Bearer {token}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        request(self.admin, method, path, &headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// `error.code` of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.body))
            .to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    exchange(
        TcpStream::connect(addr).unwrap(),
        addr,
        method,
        path,
        headers,
        body,
    )
}

/// One request from the loopback address `source` (127.0.0.2, say): another client.
pub fn request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    exchange(stream, addr, method, path, headers, body)
}

fn exchange(
    mut stream: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
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
