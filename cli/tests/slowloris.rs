//! Connection limits of `serve`, with real sockets: a client that never finishes its
//! headers, one that goes quiet, one that only sends HTTP/2 PINGs, one whose headers are
//! too big, more connections than the cap, and one address taking more than its share.

mod gateway;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        &[
            "--max-connections",
            "4",
            // All four from one address: the global cap, not the per-client one, is tested.
            "--max-connections-per-client",
            "4",
            "--header-read-timeout-secs",
            "30",
        ],
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
    // A default that depends on --max-connections: stated in its help, checked in
    // one_address_holds_only_its_share_of_the_public_listener.
    let per_client = &help[help
        .find("--max-connections-per-client")
        .expect("--max-connections-per-client")..];
    assert!(
        per_client.contains("Default: 64, or a quarter of --max-connections when that is less"),
        "{per_client}"
    );
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
    // All from one address: its share must not close them.
    let (_dir, _db, gateway) = start("backlog", &["--max-connections-per-client", "512"]);
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

/// A connection to `addr` from the loopback address `source` (127.0.0.2, say): another
/// client, as the gateway sees it.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
}

/// `GET path` over HTTP/1.1 from 127.0.0.1; the status, or a panic naming `what` when no
/// answer came within `within`.
fn status_within(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    within: Duration,
    what: &str,
) -> u16 {
    let started = Instant::now();
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, addr);
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    if let Err(e) = stream.read_to_end(&mut received) {
        panic!("{what}: no answer within {within:?} ({e})");
    }
    let text = String::from_utf8_lossy(&received);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{what}: not an HTTP/1.1 answer: {text:?}"));
    eprintln!("{what}: {status} after {:?}", started.elapsed());
    status
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;
const H2_GOAWAY: u8 = 0x7;

/// One HTTP/2 frame: a 9-byte header (length, type, flags, stream id), then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// How a PING-only connection ended.
#[derive(Debug)]
struct PingerEnd {
    /// When the server closed it, from the first PING; None: still open at the bound.
    closed_after: Option<Duration>,
    goaway: bool,
    pings_acked: usize,
    /// Frame types received, in order.
    frames: Vec<u8>,
}

/// An h2c client that sends the preface and an empty SETTINGS frame, then nothing but a
/// PING every 0.5 s, never a request, until the server closes the connection or `bound`
/// passes. It never acknowledges the server's own PINGs.
fn ping_only(
    source: Ipv4Addr,
    addr: SocketAddr,
    bound: Duration,
) -> std::thread::JoinHandle<PingerEnd> {
    pinging(source, addr, &h2_frame(H2_SETTINGS, 0, 0, &[]), bound)
}

/// As `ping_only`, after `opening` (frames) instead of the empty SETTINGS frame.
fn pinging(
    source: Ipv4Addr,
    addr: SocketAddr,
    opening: &[u8],
    bound: Duration,
) -> std::thread::JoinHandle<PingerEnd> {
    let mut stream = connect_from(source, addr);
    stream.write_all(H2_PREFACE).unwrap();
    stream.write_all(opening).unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let mut writer = stream.try_clone().unwrap();
        let stop = done.clone();
        let pinging = std::thread::spawn(move || {
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                if writer
                    .write_all(&h2_frame(H2_PING, 0, 0, &n.to_be_bytes()))
                    .is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let (mut goaway, mut pings_acked, mut frames) = (false, 0, Vec::new());
        let closed_after = loop {
            let left = bound.saturating_sub(started.elapsed());
            if left.is_zero() {
                break None;
            }
            stream.set_read_timeout(Some(left)).unwrap();
            let mut header = [0; 9];
            match stream.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break None;
                }
                // End of stream or reset: closed by the server.
                Err(_) => break Some(started.elapsed()),
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0; len];
            if stream.read_exact(&mut payload).is_err() {
                break Some(started.elapsed());
            }
            frames.push(header[3]);
            match (header[3], header[4]) {
                (H2_GOAWAY, _) => goaway = true,
                (H2_PING, 1) => pings_acked += 1,
                _ => {}
            }
        };
        done.store(true, Ordering::SeqCst);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        pinging.join().unwrap();
        PingerEnd {
            closed_after,
            goaway,
            pings_acked,
            frames,
        }
    })
}

#[test]
fn an_h2c_connection_that_only_pings_gets_goaway_at_the_idle_timeout() {
    let (_dir, _db, gateway) = start(
        "h2-ping",
        &[
            "--idle-timeout-secs",
            "2",
            "--header-read-timeout-secs",
            "30",
        ],
    );
    let end = ping_only(
        Ipv4Addr::new(127, 0, 0, 2),
        gateway.addr,
        Duration::from_secs(10),
    )
    .join()
    .unwrap();
    eprintln!("{end:?}");
    let closed_after = end
        .closed_after
        .expect("the PING-only connection is still open after 10 s");
    // Served while it pinged (its PINGs were answered), and closed for carrying no request:
    // GOAWAY at 2 s, closed at most one more idle timeout later.
    assert!(end.pings_acked >= 2, "{end:?}");
    assert!(end.goaway, "closed without GOAWAY: {end:?}");
    assert!(closed_after >= Duration::from_millis(1900), "{end:?}");
    assert!(closed_after < Duration::from_secs(6), "{end:?}");
}

/// An answer waiting for the client to take it is not the gateway's work: an h2c client
/// that shuts its flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0), asks once and then
/// only pings is closed at the idle timeout like one that never asked.
#[test]
fn an_h2c_client_that_never_takes_its_answer_gets_goaway_at_the_idle_timeout() {
    let (_dir, _db, gateway) = start(
        "h2-window",
        &[
            "--idle-timeout-secs",
            "2",
            "--header-read-timeout-secs",
            "30",
        ],
    );
    let no_window = [0, 0x4, 0, 0, 0, 0];
    // HPACK: :method GET, :scheme http (static table), :path and :authority literal.
    let mut block = vec![0x82, 0x86, 0x44, 10];
    block.extend_from_slice(b"/v1/whoami");
    block.extend_from_slice(&[0x41, 1, b'x']);
    const HEADERS: u8 = 0x1;
    const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
    let mut opening = h2_frame(H2_SETTINGS, 0, 0, &no_window);
    opening.extend(h2_frame(HEADERS, END_STREAM_AND_HEADERS, 1, &block));
    let end = pinging(
        Ipv4Addr::new(127, 0, 0, 2),
        gateway.addr,
        &opening,
        Duration::from_secs(10),
    )
    .join()
    .unwrap();
    eprintln!("{end:?}");
    // The 401's head came (HEADERS is not flow-controlled), its body (DATA) never did.
    assert!(end.frames.contains(&HEADERS), "{end:?}");
    assert!(!end.frames.contains(&0x0), "{end:?}");
    let closed_after = end
        .closed_after
        .expect("the connection is still open after 10 s");
    assert!(end.pings_acked >= 2 && end.goaway, "{end:?}");
    assert!(closed_after >= Duration::from_millis(1900), "{end:?}");
    assert!(closed_after < Duration::from_secs(6), "{end:?}");
}

#[test]
fn pinging_h2c_connections_do_not_keep_another_client_out() {
    let (dir, db, gateway) = start(
        "h2-ping-cap",
        &[
            "--max-connections",
            "4",
            "--idle-timeout-secs",
            "2",
            "--header-read-timeout-secs",
            "30",
        ],
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "ping");
    // Four addresses, one connection each: no per-client cap is reached; all 4 slots are.
    let pingers: Vec<_> = (2..=5)
        .map(|last| {
            ping_only(
                Ipv4Addr::new(127, 0, 0, last),
                gateway.addr,
                Duration::from_secs(12),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let status = status_within(
        gateway.addr,
        "/v1/whoami",
        Some(&key),
        Duration::from_secs(10),
        "a valid request from 127.0.0.1",
    );
    assert_eq!(status, 200);
    for pinger in pingers {
        let end = pinger.join().unwrap();
        assert!(end.goaway && end.closed_after.is_some(), "{end:?}");
    }
}

/// A gateway that holds a throttled request's 429 (the tarpit) 2.4 to 3.6 s: longer than
/// its idle timeout (1 s) twice over. The address it is given has used its one failed
/// attempt.
fn holding_gateway(name: &str) -> (TempDir, String, Gateway) {
    let started = start(
        name,
        &[
            "--idle-timeout-secs",
            "1",
            "--header-read-timeout-secs",
            "30",
            "--throttle-burst",
            "1",
            "--throttle-period-ms",
            "600000",
            "--throttle-tarpit-ms",
            "3000",
        ],
    );
    let first = status_within(
        started.2.addr,
        "/v1/whoami",
        Some(&guess()),
        Duration::from_secs(5),
        "first guess",
    );
    assert_eq!(first, 401);
    started
}

/// A well-formed key that no store holds.
fn guess() -> String {
    hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live)
        .expose_secret()
        .to_owned()
}

/// A connection with a request in flight is not idle, however long the answer takes.
#[test]
fn a_held_answer_outlasts_the_idle_timeout_http1() {
    let (_dir, _db, gateway) = holding_gateway("held-h1");
    let started = Instant::now();
    let status = status_within(
        gateway.addr,
        "/v1/whoami",
        Some(&guess()),
        Duration::from_secs(10),
        "held HTTP/1.1 answer",
    );
    let took = started.elapsed();
    assert_eq!(status, 429);
    assert!(
        took >= Duration::from_secs(2),
        "not held past twice the idle timeout: {took:?}"
    );
}

#[test]
fn a_held_answer_outlasts_the_idle_timeout_h2c() {
    let (_dir, _db, gateway) = holding_gateway("held-h2");
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
        let request = hyper::Request::get(format!("http://{}/v1/whoami", gateway.addr))
            .header("authorization", format!("Bearer {}", guess()))
            .body(Empty::new())
            .unwrap();
        let started = Instant::now();
        let response = client
            .request(request)
            .await
            .expect("the held h2c answer was cut");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 429);
        let body = response.into_body().collect().await;
        let took = started.elapsed();
        eprintln!("held h2c answer after {took:?}");
        assert!(body.is_ok(), "the held h2c body was cut");
        assert!(
            took >= Duration::from_secs(2),
            "not held past twice the idle timeout: {took:?}"
        );
    });
}

/// The open connections of `count` silent clients from `source`.
fn silent(source: Ipv4Addr, addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let streams = (0..count).map(|_| connect_from(source, addr)).collect();
    // Give the gateway time to accept them all.
    std::thread::sleep(Duration::from_millis(300));
    streams
}

/// Whether the server closed `stream` within `within` (else it is still open).
fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("{e}"),
    }
}

/// Silent connections from 127.0.0.2 up to and past its share of the public listener's
/// 16 slots (the default share: a quarter, 4): another client is answered at once, the
/// share is held, and connections past it are closed at once.
#[test]
fn one_address_holds_only_its_share_of_the_public_listener() {
    let (dir, db, gateway) = start(
        "share",
        &[
            "--max-connections",
            "16",
            "--header-read-timeout-secs",
            "30",
        ],
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "share");
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = silent(attacker, gateway.addr, 20);
    // And it keeps reconnecting while the other client is served.
    let stop = Arc::new(AtomicBool::new(false));
    let reconnecting = {
        let (stop, addr) = (stop.clone(), gateway.addr);
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            while !stop.load(Ordering::SeqCst) && kept.len() < 200 {
                kept.push(connect_from(attacker, addr));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let status = status_within(
        gateway.addr,
        "/v1/whoami",
        Some(&key),
        Duration::from_secs(3),
        "a valid request from 127.0.0.1",
    );
    assert_eq!(status, 200);
    stop.store(true, Ordering::SeqCst);
    reconnecting.join().unwrap();
    for (i, stream) in held.iter_mut().enumerate() {
        if i < 4 {
            assert!(
                !closes_within(stream, Duration::from_millis(200)),
                "connection {i} of the share was closed"
            );
        } else {
            assert!(
                closes_within(stream, Duration::from_secs(2)),
                "connection {i}, past the share, is open"
            );
        }
    }
}

/// The admin listener (32 connections, 8 per client address): 127.0.0.2 holding its whole
/// share, and trying for all 32, leaves `/healthz` answering 127.0.0.1.
#[test]
fn one_address_holding_its_admin_share_leaves_healthz_answering() {
    let (_dir, _db, gateway) = start("admin-share", &["--header-read-timeout-secs", "30"]);
    let mut held = silent(Ipv4Addr::new(127, 0, 0, 2), gateway.admin, 40);
    let status = status_within(
        gateway.admin,
        "/healthz",
        None,
        Duration::from_secs(3),
        "/healthz from 127.0.0.1",
    );
    assert_eq!(status, 200);
    for (i, stream) in held.iter_mut().enumerate() {
        if i < 8 {
            assert!(
                !closes_within(stream, Duration::from_millis(200)),
                "connection {i} of the share was closed"
            );
        } else {
            assert!(
                closes_within(stream, Duration::from_secs(2)),
                "connection {i}, past the share, is open"
            );
        }
    }
}

/// A request in flight keeps its connection open, so a body that stops arriving must not:
/// after the idle timeout without a byte of it, the request fails and the connection closes.
#[test]
fn a_request_body_that_stops_arriving_is_cut_at_the_idle_timeout() {
    let dir = TempDir::new("stalled-body");
    let db = dir.path().join("keys.db").display().to_string();
    let token = "stalled-body-admin-token-0123456789abcdef0123";
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let token_file = token_file.display().to_string();
    let gateway = Gateway::start(
        dir.path(),
        &db,
        &[
            "--admin-token-file",
            &token_file,
            "--idle-timeout-secs",
            "1",
            "--header-read-timeout-secs",
            "30",
        ],
    );
    // The admin API reads the body of a key creation: 10 of the 100 bytes announced.
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, gateway.admin);
    stream
        .write_all(
            format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"tenant\":",
                gateway.admin
            )
            .as_bytes(),
        )
        .unwrap();
    let started = Instant::now();
    let (received, _) = closed_within(&mut stream, Duration::from_secs(6));
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    eprintln!("stalled body: closed after {took:?}: {text:?}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // The request failed: it created no key.
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
}

/// A trusted proxy (`--trusted-proxy`) carries many clients on its connections: it is held
/// to no per-client share, only to the listener's cap, while other addresses keep theirs.
#[test]
fn a_trusted_proxy_is_not_held_to_a_clients_share() {
    let (_dir, _db, gateway) = start(
        "proxy-share",
        &[
            "--trusted-proxy",
            "127.0.0.2",
            "--max-connections-per-client",
            "2",
            "--header-read-timeout-secs",
            "30",
        ],
    );
    let mut proxy = silent(Ipv4Addr::new(127, 0, 0, 2), gateway.addr, 6);
    let mut other = silent(Ipv4Addr::new(127, 0, 0, 3), gateway.addr, 4);
    for (i, stream) in proxy.iter_mut().enumerate() {
        assert!(
            !closes_within(stream, Duration::from_millis(200)),
            "the proxy's connection {i} was closed"
        );
    }
    for (i, stream) in other.iter_mut().enumerate() {
        assert_eq!(
            closes_within(stream, Duration::from_secs(2)),
            i >= 2,
            "connection {i} of an untrusted address"
        );
    }
}
