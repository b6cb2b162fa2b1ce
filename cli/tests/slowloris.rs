//! Connection limits of `serve`, with real sockets: a client that never finishes its
//! headers, one that goes quiet, one whose headers are too big, and more connections than
//! the cap.

mod gateway;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gateway::{Gateway, TempDir, create_key, read_response, request};

fn start(name: &str, flags: &[&str]) -> (TempDir, String, Gateway) {
    let dir = TempDir::new(name);
    let db = dir.path().join("keys.db").display().to_string();
    let gateway = Gateway::start(dir.path(), &db, flags);
    (dir, db, gateway)
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
/// Fails if it is still open after `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (received, started.elapsed()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return (received, started.elapsed());
            }
            Err(e) => panic!(
                "still open after {:?} ({e}); received {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&received)
            ),
        }
        assert!(started.elapsed() < within, "still open after {within:?}");
    }
}

#[test]
fn a_request_whose_headers_never_end_is_closed_after_the_header_timeout() {
    let (_dir, _db, gateway) = start(
        "slow-headers",
        &[
            "--header-read-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "60",
        ],
    );
    // Headers started and never finished, one byte at a time at first.
    let mut slow = TcpStream::connect(gateway.addr).unwrap();
    let sent = Instant::now();
    for b in b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n" {
        slow.write_all(&[*b]).unwrap();
    }
    slow.write_all(b"X-Slow: 1\r\n").unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(gateway.addr).unwrap();
    // A keep-alive after one exchange: waiting for the next request's headers.
    let mut kept = TcpStream::connect(gateway.addr).unwrap();
    kept.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for (name, stream) in [
        ("slow", &mut slow),
        ("silent", &mut silent),
        ("kept", &mut kept),
    ] {
        let (received, _) = closed_within(stream, Duration::from_secs(5));
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "{name}: closed after {took:?}, before the timeout"
        );
        // Closed without an answer, or with 408: never a response to a request never made.
        let text = String::from_utf8_lossy(&received);
        let answered = if name == "kept" {
            text.strip_prefix("HTTP/1.1 401").is_some() && text.matches("HTTP/1.1").count() == 1
        } else {
            received.is_empty() || text.starts_with("HTTP/1.1 408")
        };
        assert!(answered, "{name}: {text}");
        eprintln!("{name} connection closed after {took:?}");
    }
    // The listener still serves.
    assert_eq!(request(gateway.addr, "GET", "/v1/whoami", &[]).status, 401);
}

#[test]
fn a_quiet_connection_is_closed_after_the_idle_timeout_http1_and_h2c() {
    let (_dir, _db, gateway) = start(
        "idle",
        &[
            "--header-read-timeout-secs",
            "30",
            "--idle-timeout-secs",
            "1",
        ],
    );
    // HTTP/1.1 keep-alive: one full exchange, then silence.
    let mut h1 = TcpStream::connect(gateway.addr).unwrap();
    h1.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // h2c by prior knowledge: the preface and an empty SETTINGS frame, then silence.
    let mut h2 = TcpStream::connect(gateway.addr).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let started = Instant::now();
    for (name, stream) in [("http/1.1", &mut h1), ("h2c", &mut h2)] {
        let (received, _) = closed_within(stream, Duration::from_secs(5));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "{name}: closed after {took:?}"
        );
        assert!(!received.is_empty(), "{name}: no answer before closing");
        eprintln!("{name}: idle connection closed after {took:?}");
    }
    // The listener still serves.
    assert_eq!(request(gateway.addr, "GET", "/v1/whoami", &[]).status, 401);
}

#[test]
fn h2c_requests_are_served() {
    let (dir, db, gateway) = start("h2c", &[]);
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "h2");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Empty<bytes::Bytes>>();
        let request = hyper::Request::get(format!("http://{}/auth/verify", gateway.addr))
            .header("authorization", format!("Bearer {key}"))
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-hapnd-tenant"], "acme");
        let _ = response.into_body().collect().await.unwrap();
    });
}

#[test]
fn oversized_headers_get_431_and_normal_ones_pass() {
    let (_dir, _db, gateway) = start("big-headers", &["--max-header-bytes", "8192"]);
    let junk = "a".repeat(4000);
    let r = request(gateway.addr, "GET", "/v1/whoami", &[("X-Junk", &junk)]);
    assert_eq!(r.status, 401, "{}", r.head);
    let junk = "a".repeat(12_000);
    let r = request(gateway.addr, "GET", "/v1/whoami", &[("X-Junk", &junk)]);
    assert_eq!(r.status, 431, "{}", r.head);
    // Headers that never end grow no buffer past the bound: 431 and closed.
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream
        .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let line = format!("X-More: {}\r\n", "b".repeat(1000));
    let mut written = 0;
    for _ in 0..64 {
        if stream.write_all(line.as_bytes()).is_err() {
            break;
        }
        written += line.len();
    }
    assert!(written >= 8192, "the server stopped reading early");
    let (received, _) = closed_within(&mut stream, Duration::from_secs(5));
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

#[test]
fn connections_over_the_cap_wait_and_health_still_answers() {
    let (_dir, _db, gateway) = start(
        "cap",
        &["--max-connections", "4", "--header-read-timeout-secs", "30"],
    );
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(gateway.addr).unwrap())
        .collect();
    // Give the gateway time to accept all four.
    std::thread::sleep(Duration::from_millis(300));

    let mut waiting = TcpStream::connect(gateway.addr).unwrap();
    waiting
        .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0; 1];
    match waiting.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection over the cap was served: {other:?}"),
    }
    // The admin listener has a cap of its own.
    let r = request(gateway.admin, "GET", "/healthz", &[]);
    assert_eq!(r.status, 200, "{}", r.body);

    // One held connection goes: the waiting one is served.
    drop(held.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = read_response(&mut waiting);
    assert_eq!(r.status, 401);
    drop(held);
}

#[test]
fn the_limits_have_the_documented_defaults() {
    let out = std::process::Command::new(gateway::BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // One flag per paragraph in clap's long help; the default closes it.
    let help = gateway::text(&out.stdout).replace('\n', " ");
    for (flag, default) in [
        ("--header-read-timeout-secs", "10"),
        ("--idle-timeout-secs", "60"),
        ("--max-header-bytes", "16384"),
        ("--max-connections", "512"),
    ] {
        let after = &help[help
            .find(flag)
            .unwrap_or_else(|| panic!("no {flag}: {help}"))..];
        let default_at = after.find("[default: ").expect("a default");
        assert!(
            after[default_at..].starts_with(&format!("[default: {default}]")),
            "{flag}: {}",
            &after[..default_at + 20]
        );
        // The default belongs to this flag, not the next one.
        assert!(!after[flag.len()..default_at].contains(" --"), "{flag}");
    }
}

/// A burst of new connections while the gateway is not accepting (frozen here, busy in
/// life) waits in the kernel's queue, up to the listen backlog: 1,024, not std's 128.
#[test]
fn a_burst_of_connections_waits_in_a_deep_accept_queue() {
    // The kernel clamps the backlog to net.core.somaxconn (4096 on current kernels).
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(4096);
    let expected = 400.min(somaxconn + 1);
    let (_dir, _db, gateway) = start("backlog", &[]);
    gateway.signal("STOP");
    let mut connected = Vec::new();
    for _ in 0..400 {
        // A full queue drops the SYN: the connect then times out instead of completing.
        match TcpStream::connect_timeout(&gateway.addr, Duration::from_millis(300)) {
            Ok(stream) => connected.push(stream),
            Err(_) => break,
        }
    }
    gateway.signal("CONT");
    assert_eq!(
        connected.len(),
        expected,
        "the kernel queued {} connections for the frozen gateway",
        connected.len()
    );
    // And the gateway serves them once it runs again.
    let mut stream = connected.pop().unwrap();
    stream
        .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (response, _) = closed_within(&mut stream, Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&response).starts_with("HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
}
