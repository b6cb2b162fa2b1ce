//! `serve --upstream`: the real gateway binary in front of real backends on loopback (an
//! echo server, a byte counter, a backend that never answers, one that resets, one that
//! answers its own 401), over HTTP/1.1 and h2c.

mod gateway;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::{
    EchoBackend, Gateway, Response, TempDir, create_key, echoed, free_port, read_response, request,
    request_from,
};

/// A gateway with `--upstream`-style flags; `{backend}` in a flag is replaced by `url`.
fn gateway(dir: &TempDir, flags: &[String]) -> (Gateway, String) {
    let db = dir.path().join("keys.db").display().to_string();
    let mut all = vec!["--no-demo-key".to_owned()];
    all.extend(flags.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    (Gateway::start(dir.path(), &db, &all), db)
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(n, v)| [(*n).to_owned(), v.clone()])
        .collect()
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Header names the backend got, lower-cased.
fn names(response: &Response) -> Vec<String> {
    response.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap().to_ascii_lowercase())
        .collect()
}

const IDENTITY: [&str; 5] = [
    "x-hapnd-tenant",
    "x-hapnd-environment",
    "x-hapnd-key-id",
    "x-hapnd-key-name",
    "x-hapnd-scopes",
];

#[test]
fn forwards_with_the_gateway_identity_and_no_forged_credential_or_hop_by_hop_headers() {
    let dir = TempDir::new("up-forward");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend.addr))]));
    let (key, id) = create_key(dir.path(), &db, "acme", "live", "ci pipeline");
    let auth = bearer(&key);
    let source: IpAddr = "127.0.0.2".parse().unwrap();
    let r = request_from(
        source,
        gw.addr,
        "GET",
        "/v1/orders?limit=5",
        &[
            ("Authorization", &auth),
            // The identity forged in every spelling: case, duplicates, underscores.
            ("X-Hapnd-Tenant", "evil"),
            ("x-hapnd-tenant", "evil2"),
            ("X_Hapnd_Tenant", "evil3"),
            ("X-HAPND-KEY-ID", "key_forged"),
            ("x_hapnd_environment", "live"),
            ("X-Hapnd_Key-Name", "forged"),
            ("X-Hapnd-Admin", "true"),
            // Hop-by-hop, and a name the Connection header lists.
            ("Connection", "x-secret-hop"),
            ("X-Secret-Hop", "hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic c2VjcmV0"),
            // A TE other than `trailers`, and a Trailer naming only what no trailer may
            // carry (trailers_pass_both_ways_over_http1_... covers the others).
            ("TE", "gzip"),
            ("Trailer", "X-Hapnd-Tenant, connection"),
            ("Upgrade", "foo/1"),
            // Forged forwarding headers from a client that is no trusted proxy.
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Custom", "kept"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/v1/orders?limit=5");
    assert_eq!(echoed(&r, "x-hapnd-tenant"), ["acme"]);
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);
    assert_eq!(echoed(&r, "x-hapnd-key-id"), [id.as_str()]);
    assert_eq!(echoed(&r, "x-hapnd-key-name"), ["ci%20pipeline"]);
    // A key without scopes (full access): the header is there, empty.
    assert_eq!(echoed(&r, "x-hapnd-scopes"), [""]);
    for name in names(&r) {
        let normalised = name.replace('_', "-");
        if normalised.starts_with("x-hapnd-") {
            assert!(
                IDENTITY.contains(&name.as_str()),
                "{name} reached the backend"
            );
        }
        for banned in [
            "authorization",
            "proxy-authorization",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "x-secret-hop",
            "forwarded",
        ] {
            assert_ne!(name, banned, "{banned} reached the backend");
        }
    }
    assert_eq!(echoed(&r, "x-forwarded-for"), ["127.0.0.2"]);
    assert_eq!(echoed(&r, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed(&r, "x-forwarded-host"), [gw.addr.to_string()]);
    assert_eq!(echoed(&r, "host"), [backend.addr.to_string()]);
    assert_eq!(echoed(&r, "x-custom"), ["kept"]);
    assert!(!r.body.contains(&key), "the key reached the backend");
    assert!(!gw.log_text().contains(&key), "the key is in the log");
}

/// Only WebSocket is tunnelled: an `Upgrade: h2c` (on a public path or with a key) is never
/// asked of the backend, which would then take HTTP/2 straight from the client, every
/// later request unauthenticated. Headers some backends read as the client's address or
/// as another path, and the admin page's session cookie, never reach the backend either.
#[test]
fn no_h2c_upgrade_no_client_claimed_address_or_rewrite_and_no_admin_cookie_at_the_backend() {
    let dir = TempDir::new("up-smuggle");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend.addr)),
            ("--public-path", "/healthz".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "ci");
    let auth = bearer(&key);
    for (path, with_key) in [("/healthz", false), ("/v1/orders", true)] {
        let mut headers = vec![
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("X-Real-IP", "10.0.0.1"),
            ("True-Client-IP", "10.0.0.1"),
            ("X-Client-IP", "10.0.0.1"),
            ("CF-Connecting-IP", "10.0.0.1"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Prefix", "/admin"),
            ("X-Forwarded-Server", "evil"),
            ("X-Forwarded-Ssl", "on"),
            ("Front-End-Https", "on"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            (
                "Cookie",
                "theme=dark; hapnd_admin_session=s3cret; __Host-hapnd_admin_session=s3cret2",
            ),
        ];
        if with_key {
            headers.push(("Authorization", &auth));
        }
        let r = request_from("127.0.0.2".parse().unwrap(), gw.addr, "GET", path, &headers);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        for name in names(&r) {
            for banned in [
                "upgrade",
                "connection",
                "http2-settings",
                "x-real-ip",
                "true-client-ip",
                "x-client-ip",
                "cf-connecting-ip",
                "x-forwarded-port",
                "x-forwarded-prefix",
                "x-forwarded-server",
                "x-forwarded-ssl",
                "front-end-https",
                "x-original-url",
                "x-rewrite-url",
            ] {
                assert_ne!(name, banned, "{path}: {banned} reached the backend");
            }
        }
        assert_eq!(echoed(&r, "cookie"), ["theme=dark"], "{path}");
        assert!(
            !r.body.contains("s3cret"),
            "{path}: an admin session reached the backend"
        );
    }
}

/// A backend that answers a WebSocket handshake by switching to another protocol is a
/// broken backend (502), never a tunnel.
#[test]
fn a_switch_to_another_protocol_than_asked_is_502() {
    let dir = TempDir::new("up-switch");
    let backend = raw_backend(|mut stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        );
        std::thread::sleep(Duration::from_secs(2));
    });
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "ws");
    let r = request(
        gw.addr,
        "GET",
        "/socket",
        &[
            ("Authorization", &bearer(&key)),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    );
    assert_upstream_failure(&r, 502, "upstream_unavailable");
}

#[test]
fn a_trusted_proxy_keeps_its_forwarding_chain_and_the_peer_is_appended() {
    let dir = TempDir::new("up-xff");
    let backend = EchoBackend::start();
    let mut f = flags(&[("--upstream", url(backend.addr))]);
    f.extend(["--trusted-proxy".to_owned(), "127.0.0.3".to_owned()]);
    let (gw, db) = gateway(&dir, &f);
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let auth = bearer(&key);
    let headers = [
        ("Authorization", auth.as_str()),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example"),
    ];
    let proxied = request_from("127.0.0.3".parse().unwrap(), gw.addr, "GET", "/", &headers);
    assert_eq!(
        echoed(&proxied, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.3"]
    );
    assert_eq!(echoed(&proxied, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&proxied, "x-forwarded-host"), ["api.example"]);
    let direct = request_from("127.0.0.2".parse().unwrap(), gw.addr, "GET", "/", &headers);
    assert_eq!(echoed(&direct, "x-forwarded-for"), ["127.0.0.2"]);
    assert_eq!(echoed(&direct, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed(&direct, "x-forwarded-host"), [gw.addr.to_string()]);
}

type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn rejections_are_the_gateways_and_never_reach_the_backend() {
    let dir = TempDir::new("up-reject");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend.addr))]));
    let (revoked, revoked_id) = create_key(dir.path(), &db, "acme", "live", "old");
    let out = gateway::run(dir.path(), &db, &["keys", "revoke", &revoked_id]);
    assert!(out.status.success(), "{}", gateway::text(&out.stderr));
    let revoked = bearer(&revoked);
    let cases: [(Headers, u16, &str); 4] = [
        (&[], 401, "missing_api_key"),
        (
            &[("Authorization", "Bearer sk_live_nope")],
            401,
            "invalid_api_key",
        ),
        (
            &[("Authorization", "Basic Zm9vOmJhcg==")],
            401,
            "missing_api_key",
        ),
        (&[("Authorization", &revoked)], 401, "api_key_revoked"),
    ];
    for (headers, status, code) in cases {
        for path in ["/", "/v1/orders", "/v1/events", "/anything/else"] {
            let r = request(gw.addr, "GET", path, headers);
            assert_eq!((r.status, r.code().as_str()), (status, code), "{path}");
        }
    }
    assert!(
        backend.seen.lock().unwrap().is_empty(),
        "a rejection was forwarded"
    );
    // The gateway's own routes stay its own.
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let r = request(
        gw.addr,
        "GET",
        "/auth/verify",
        &[("Authorization", &bearer(&key))],
    );
    assert_eq!(
        (r.status, r.header("x-hapnd-tenant")),
        (200, Some("acme".into()))
    );
    let r = request(
        gw.addr,
        "GET",
        "/v1/whoami",
        &[("Authorization", &bearer(&key))],
    );
    assert_eq!(r.json()["tenant"], "acme");
    assert!(backend.seen.lock().unwrap().is_empty());
}

#[test]
fn a_sandbox_key_never_reaches_a_live_only_upstream() {
    let dir = TempDir::new("up-live-only");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream-live", url(backend.addr))]));
    let (sandbox, _) = create_key(dir.path(), &db, "acme", "test", "sb");
    let r = request(
        gw.addr,
        "GET",
        "/v1/payouts",
        &[("Authorization", &bearer(&sandbox))],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "wrong_environment"));
    assert!(
        backend.seen.lock().unwrap().is_empty(),
        "a sandbox key was forwarded"
    );
    let (live, _) = create_key(dir.path(), &db, "acme", "live", "lv");
    let r = request(
        gw.addr,
        "GET",
        "/v1/payouts",
        &[("Authorization", &bearer(&live))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);
}

#[test]
fn each_environment_goes_to_its_own_upstream() {
    let dir = TempDir::new("up-split");
    let (live_backend, sandbox_backend) = (EchoBackend::start(), EchoBackend::start());
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream-live", url(live_backend.addr)),
            ("--upstream-sandbox", url(sandbox_backend.addr)),
        ]),
    );
    let (live, _) = create_key(dir.path(), &db, "acme", "live", "lv");
    let (sandbox, _) = create_key(dir.path(), &db, "acme", "test", "sb");
    for _ in 0..2 {
        let r = request(gw.addr, "GET", "/x", &[("Authorization", &bearer(&live))]);
        assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);
    }
    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[("Authorization", &bearer(&sandbox))],
    );
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["sandbox"]);
    assert_eq!(live_backend.seen.lock().unwrap().len(), 2);
    assert_eq!(sandbox_backend.seen.lock().unwrap().len(), 1);
}

#[test]
fn only_named_public_paths_pass_without_a_key() {
    let dir = TempDir::new("up-public");
    let backend = EchoBackend::start();
    let (gw, _) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend.addr)),
            ("--public-path", "/healthz".to_owned()),
            ("--public-path", "/docs/".to_owned()),
        ]),
    );
    for path in ["/healthz", "/healthz/ready?x=1", "/docs", "/docs/a.html"] {
        let headers = [
            ("X-Hapnd-Tenant", "evil"),
            ("Authorization", "Bearer sk_live_whatever"),
        ];
        let r = request(gw.addr, "GET", path, &headers);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.json()["path"], path);
        assert!(echoed(&r, "x-hapnd-tenant").is_empty(), "{path}");
        assert!(echoed(&r, "authorization").is_empty(), "{path}");
    }
    let forwarded = backend.seen.lock().unwrap().len();
    for path in [
        "/",
        "/healthzz",
        "/v1/healthz",
        "/healthz/../admin",
        "/healthz/%2e%2e/admin",
        "/healthz/%2E%2E/admin",
        "/healthz%2f..%2fadmin",
        "/healthz/..",
        "/healthz\\..\\admin",
        // Path parameters: Tomcat and Spring read `..;` as `..`.
        "/healthz/..;/admin",
        "/healthz;x=1/../admin",
    ] {
        let r = request(gw.addr, "GET", path, &[]);
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "missing_api_key"),
            "{path}"
        );
    }
    assert_eq!(backend.seen.lock().unwrap().len(), forwarded);
}

#[test]
fn public_paths_need_an_upstream_and_upstreams_are_plain_http() {
    let dir = TempDir::new("up-flags");
    let db = dir.path().join("keys.db").display().to_string();
    for (args, says) in [
        (
            &["serve", "--public-path", "/healthz"][..],
            "needs an upstream",
        ),
        (
            &["serve", "--upstream", "https://127.0.0.1:1"][..],
            "only http://",
        ),
        (
            &[
                "serve",
                "--upstream",
                "http://127.0.0.1:3000",
                "--public-path",
                "/a/../b",
            ][..],
            "dot segments",
        ),
    ] {
        let out = gateway::run(dir.path(), &db, args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = gateway::text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// A backend that answers every request with what `answer` makes of its path, on a
/// runtime of its own, and counts requests.
struct Backend {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

type Answer = hyper::Response<http_body_util::Full<bytes::Bytes>>;

impl Backend {
    fn start(answer: fn(&str) -> Answer) -> Backend {
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
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            count.fetch_add(1, Ordering::SeqCst);
                            let response = answer(req.uri().path());
                            async move { Ok::<_, std::convert::Infallible>(response) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            requests,
            _runtime: runtime,
        }
    }
}

#[test]
fn the_backends_own_401_403_and_429_pass_through_untouched() {
    let dir = TempDir::new("up-own-401");
    let backend = Backend::start(|path| {
        let status = path.trim_start_matches('/').parse::<u16>().unwrap_or(200);
        hyper::Response::builder()
            .status(status)
            .header("www-authenticate", "Backend realm=\"orders\"")
            .header("retry-after", "7")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "{{\"backend\":\"says {status}\"}}"
            ))))
            .unwrap()
    });
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend.addr))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    for status in [401u16, 403, 429] {
        let r = request(
            gw.addr,
            "GET",
            &format!("/{status}"),
            &[("Authorization", &bearer(&key))],
        );
        assert_eq!(r.status, status);
        assert_eq!(r.body, format!("{{\"backend\":\"says {status}\"}}"));
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Backend realm=\"orders\"")
        );
        assert_eq!(r.header("retry-after").as_deref(), Some("7"));
        assert_eq!(r.header("x-hapnd-error"), None);
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 3);
}

fn assert_upstream_failure(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let json = r.json();
    assert_eq!(json["error"]["type"], "api_error");
    assert_eq!(json["error"]["code"], code);
    assert!(json["error"]["message"].is_string());
    assert_eq!(r.header("x-hapnd-error").as_deref(), Some(code));
    assert_eq!(r.header("www-authenticate"), None);
}

#[test]
fn a_backend_that_is_down_is_502_upstream_unavailable() {
    let dir = TempDir::new("up-down");
    let down = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(down))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let r = request(gw.addr, "GET", "/x", &[("Authorization", &bearer(&key))]);
    assert_upstream_failure(&r, 502, "upstream_unavailable");
    // The key is still checked first: no key is 401, not 502.
    let r = request(gw.addr, "GET", "/x", &[]);
    assert_eq!((r.status, r.code().as_str()), (401, "missing_api_key"));
}

/// A listener that accepts, reads, and does `then` with each connection.
fn raw_backend(then: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                then(stream);
            });
        }
    });
    addr
}

#[test]
fn a_backend_that_never_answers_is_504_upstream_timeout() {
    let dir = TempDir::new("up-slow");
    static HELD: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
    let silent = raw_backend(|stream| HELD.lock().unwrap().push(stream));
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(silent)),
            ("--upstream-timeout-secs", "1".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let r = request(gw.addr, "GET", "/x", &[("Authorization", &bearer(&key))]);
    assert_upstream_failure(&r, 504, "upstream_timeout");
    assert_eq!(
        HELD.lock().unwrap().len(),
        1,
        "the request reached the silent backend"
    );
}

#[test]
fn a_backend_that_resets_or_hangs_up_is_502_upstream_unavailable() {
    let dir = TempDir::new("up-reset");
    let reset = raw_backend(|stream| {
        let stream = tokio::net::TcpStream::from_std(stream);
        // SO_LINGER 0: close sends RST.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stream = stream.unwrap();
            stream.set_zero_linger().unwrap();
            drop(stream);
        });
    });
    let hang_up = raw_backend(drop);
    for backend in [reset, hang_up] {
        let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
        let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
        let r = request(gw.addr, "GET", "/x", &[("Authorization", &bearer(&key))]);
        assert_upstream_failure(&r, 502, "upstream_unavailable");
    }
}

#[test]
fn h2c_clients_are_forwarded_with_the_identity() {
    let dir = TempDir::new("up-h2c");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend.addr))]));
    let (key, id) = create_key(dir.path(), &db, "acme", "live", "k");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let responses = runtime.block_on(async {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        // Two requests on one connection: one admitted, one rejected.
        for auth in [Some(bearer(&key)), None] {
            let mut request = hyper::Request::get(format!("http://{}/v1/h2?x=1", gw.addr))
                .header("x-hapnd-tenant", "evil")
                .header("cookie", "a=1")
                .header("cookie", "b=2");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let request = request
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = send.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            out.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        out
    });
    let as_response = |(status, body): &(u16, String)| Response {
        status: *status,
        head: String::new(),
        body: body.clone(),
    };
    let ok = as_response(&responses[0]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["path"], "/v1/h2?x=1");
    assert_eq!(echoed(&ok, "x-hapnd-tenant"), ["acme"]);
    assert_eq!(echoed(&ok, "x-hapnd-key-id"), [id.as_str()]);
    assert_eq!(echoed(&ok, "cookie"), ["a=1; b=2"]);
    assert!(echoed(&ok, "authorization").is_empty());
    assert_eq!(echoed(&ok, "x-forwarded-host"), [gw.addr.to_string()]);
    let rejected = as_response(&responses[1]);
    assert_eq!(
        (rejected.status, rejected.code().as_str()),
        (401, "missing_api_key")
    );
    assert_eq!(backend.seen.lock().unwrap().len(), 1);
}

/// The high-water mark of a process's resident memory, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A backend that reads every request body to its end, counting bytes, and answers the
/// count: nothing echoed, nothing kept.
fn counting_backend() -> (SocketAddr, tokio::runtime::Runtime) {
    use http_body_util::BodyExt;
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
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut body = req.into_body();
                        let mut count = 0u64;
                        while let Some(frame) = body.frame().await {
                            if let Ok(data) = frame?.into_data() {
                                count += data.len() as u64;
                            }
                        }
                        Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(count.to_string()),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, runtime)
}

#[test]
fn a_1_gib_upload_streams_through_with_bounded_memory() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let dir = TempDir::new("up-upload");
    let (backend, _runtime) = counting_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let auth = bearer(&key);
    // Warm up: the pool, the key cache and the runtime's buffers exist before the mark.
    let r = request(
        gw.addr,
        "POST",
        "/warm",
        &[("Authorization", &auth), ("Content-Length", "0")],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "0"));
    let before = vm_hwm(gw.pid());

    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let size = format!("{CHUNK:x}\r\n");
    for _ in 0..CHUNKS {
        stream.write_all(size.as_bytes()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(&mut stream);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        (CHUNK * CHUNKS).to_string(),
        "the backend got every byte"
    );
    let after = vm_hwm(gw.pid());
    let growth = after.saturating_sub(before);
    println!(
        "gateway VmHWM before {} MiB, after {} MiB, growth {} KiB for a 1 GiB upload",
        before >> 20,
        after >> 20,
        growth >> 10
    );
    assert!(
        growth < 100 << 20,
        "the gateway grew {growth} bytes: the body was buffered"
    );
}

#[test]
fn the_response_timeout_counts_from_the_end_of_a_slow_upload() {
    let dir = TempDir::new("up-slow-upload");
    let (backend, _runtime) = counting_backend();
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend)),
            ("--upstream-timeout-secs", "1".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /slow HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    // 2.5 s of upload, longer than the 1 s the backend has to answer once it has it all.
    for _ in 0..5 {
        stream.write_all(b"3\r\nabc\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(&mut stream);
    assert_eq!((r.status, r.body.as_str()), (200, "15"), "{r:?}");
}

#[test]
fn a_backend_that_does_not_accept_in_time_is_504_upstream_timeout() {
    let dir = TempDir::new("up-connect");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A listener that never accepts, its queue filled: the kernel drops further SYNs, so
    // a connect hangs as it would to a host that is gone.
    let (full, _queued) = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        loop {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(300), connect).await {
                Ok(stream) => queued.push(stream.unwrap()),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        (addr, (listener, queued))
    });
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(full)),
            ("--upstream-connect-timeout-ms", "300".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let r = request(gw.addr, "GET", "/x", &[("Authorization", &bearer(&key))]);
    assert_upstream_failure(&r, 504, "upstream_timeout");
}

/// A response body of `left` bytes made as it is read.
struct Generated {
    left: u64,
    chunk: bytes::Bytes,
}

impl hyper::body::Body for Generated {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        let data = self.chunk.slice(..n as usize);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

#[test]
fn a_1_gib_download_streams_back_with_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    use hyper_util::rt::TokioIo;
    let dir = TempDir::new("up-download");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let backend = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                        let left = if req.uri().path() == "/big" { SIZE } else { 0 };
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Generated {
                                left,
                                chunk: bytes::Bytes::from(vec![7u8; 1 << 16]),
                            }))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let auth = bearer(&key);
    let r = request(gw.addr, "GET", "/warm", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200);
    let before = vm_hwm(gw.pid());
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let head = format!(
        "GET /big HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = Vec::new();
    // The head, then the body counted, never kept.
    let body_start = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&buf[..n]);
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..body_start]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {SIZE}")),
        "{head}"
    );
    let mut body = (received.len() - body_start) as u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        body += n as u64;
    }
    assert_eq!(body, SIZE, "every byte came back");
    let growth = vm_hwm(gw.pid()).saturating_sub(before);
    println!(
        "gateway VmHWM growth {} KiB for a 1 GiB download",
        growth >> 10
    );
    assert!(
        growth < 100 << 20,
        "the gateway grew {growth} bytes: the body was buffered"
    );
}

/// The value of one sample line of `/metrics` (`name{labels}`), 0 when absent.
fn sample(gw: &Gateway, series: &str) -> f64 {
    let metrics = request(gw.admin, "GET", "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn upstream_metrics_count_answers_and_failures_by_kind() {
    let dir = TempDir::new("up-metrics");
    let backend = EchoBackend::start();
    let down = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream-live", url(backend.addr)),
            ("--upstream-sandbox", url(down)),
        ]),
    );
    let (live, _) = create_key(dir.path(), &db, "acme", "live", "lv");
    let (sandbox, _) = create_key(dir.path(), &db, "acme", "test", "sb");
    for _ in 0..2 {
        let r = request(gw.addr, "GET", "/x", &[("Authorization", &bearer(&live))]);
        assert_eq!(r.status, 200);
    }
    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[("Authorization", &bearer(&sandbox))],
    );
    assert_upstream_failure(&r, 502, "upstream_unavailable");
    // A rejection is not an upstream request.
    assert_eq!(request(gw.addr, "GET", "/x", &[]).status, 401);
    // Histograms reach /metrics at the exporter's upkeep (every 5 s); counters at once.
    let answered = r#"hapnd_upstream_requests_total{outcome="answered"}"#;
    assert_eq!(sample(&gw, answered), 2.0);
    assert_eq!(
        sample(
            &gw,
            r#"hapnd_upstream_requests_total{outcome="upstream_unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&gw, r#"hapnd_upstream_errors_total{kind="connect"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &gw,
            r#"hapnd_upstream_requests_total{outcome="upstream_timeout"}"#
        ),
        0.0
    );
    let started = std::time::Instant::now();
    while sample(&gw, "hapnd_upstream_response_duration_seconds_count") < 3.0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no latency histogram"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A WebSocket backend at the byte level: it records each handshake's head, answers 101
/// with an accept value derived from the key (reversed: the test checks it arrives as
/// sent, not RFC 6455's hash), then echoes every byte until the client closes.
fn upgrade_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let record = record.clone();
            std::thread::spawn(move || {
                let head = read_head(&mut stream);
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                record.lock().unwrap().push(head);
                let accept: String = key.chars().rev().collect();
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                stream.write_all(answer.as_bytes()).unwrap();
                let mut echo = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut stream, &mut echo);
            });
        }
    });
    (addr, heads)
}

/// Reads up to the end of a head (`\r\n\r\n`) byte by byte, so nothing after it is lost.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "closed inside a head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn a_websocket_handshake_is_authenticated_then_tunnelled_both_ways() {
    let dir = TempDir::new("up-ws");
    let (backend, heads) = upgrade_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, id) = create_key(dir.path(), &db, "acme", "live", "k");
    let handshake = |auth: Option<&str>| {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let head = format!(
            "GET /ws?room=1 HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             X-Hapnd-Tenant: evil\r\n{auth}\r\n",
            gw.addr
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
    };

    // Without a key: the gateway's 401, and the backend never sees the handshake.
    let mut refused = handshake(None);
    // The connection stays open (keep-alive): read the head and its Content-Length only.
    let head = read_head(&mut refused);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")?
                .trim()
                .parse()
                .ok()
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    refused.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("missing_api_key"), "{body}");
    assert!(heads.lock().unwrap().is_empty());

    let mut stream = handshake(Some(&bearer(&key)));
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    let accept: String = "dGhlIHNhbXBsZSBub25jZQ==".chars().rev().collect();
    assert!(
        head.lines().any(|l| l.to_ascii_lowercase()
            == format!("sec-websocket-accept: {}", accept.to_ascii_lowercase())
            && l.ends_with(&accept)),
        "{head}"
    );
    // A masked text frame ("hello"), then a second one: the bytes come back as sent.
    for frame in [
        &[
            0x81u8,
            0x85,
            1,
            2,
            3,
            4,
            b'h' ^ 1,
            b'e' ^ 2,
            b'l' ^ 3,
            b'l' ^ 4,
            b'o' ^ 1,
        ][..],
        &[0x81, 0x82, 9, 9, 9, 9, b'o' ^ 9, b'k' ^ 9][..],
    ] {
        stream.write_all(frame).unwrap();
        let mut back = vec![0u8; frame.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, frame);
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the tunnel closes when both sides have");

    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 1);
    let seen = heads[0].to_ascii_lowercase();
    assert!(seen.starts_with("get /ws?room=1 http/1.1"), "{seen}");
    assert!(seen.contains("connection: upgrade"), "{seen}");
    assert!(seen.contains("upgrade: websocket"), "{seen}");
    assert!(
        seen.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{seen}"
    );
    assert!(seen.contains("x-hapnd-tenant: acme"), "{seen}");
    assert!(!seen.contains("evil"), "{seen}");
    let id = id.to_ascii_lowercase();
    assert!(seen.contains(&format!("x-hapnd-key-id: {id}")), "{seen}");
    assert!(!seen.contains("authorization"), "{seen}");
}

/// A tunnel carries both directions at once: a client that sends a large stream while it
/// reads the echo gets all of it back. A tunnel that copied one direction at a time would
/// stall here for good, the gateway waiting to write to a backend that waits to write back.
#[test]
fn a_websocket_tunnel_carries_both_directions_at_once() {
    let dir = TempDir::new("up-ws-duplex");
    let (backend, _) = upgrade_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = websocket_handshake(&mut stream, gw.addr, &key).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // 64 MiB, far more than the loopback sockets' buffers on every hop hold.
    const TOTAL: usize = 64 << 20;
    let byte = |i: usize| (i.wrapping_mul(31) ^ (i >> 11)) as u8;
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = byte(sent + j);
            }
            if writer.write_all(&chunk).is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < TOTAL {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("the tunnel stalled after echoing {got} of {TOTAL} bytes: {e}"),
        };
        for (j, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte(got + j), "byte {} differs", got + j);
        }
        got += n;
    }
    assert_eq!(got, TOTAL, "the echo ended early");
    assert_eq!(sender.join().unwrap(), TOTAL);
}

/// The fenced block after `<!-- upstream-test: NAME -->` in README.md.
fn readme_upstream_block(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let marker = format!("<!-- upstream-test: {name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let after = &readme[at + marker.len()..];
    let block = &after[after.find("```").unwrap()..];
    let body = &block[block.find('\n').unwrap() + 1..];
    body[..body.find("\n```").unwrap() + 1].to_owned()
}

/// Kills a child (by its pid) on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the README block has no {from:?}: {text}"
    );
    text.replace(from, to)
}

/// README's three commands, as printed (ports moved to free ones): a Python API, the
/// gateway in front of it printing its first key, and curl with that key.
#[test]
fn readme_quickstart_puts_a_python_api_behind_the_gateway() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    if !gateway::require("python3") || !gateway::require("curl") {
        return;
    }
    let block = readme_upstream_block("quickstart");
    let lines: Vec<&str> = block.lines().collect();
    assert_eq!(lines.len(), 3, "three commands: {block}");
    let strip = |line: &str| line.split(" #").next().unwrap().trim().to_owned();
    let dir = TempDir::new("up-readme");
    let port = free_port().to_string();

    let backend = substitute(&strip(lines[0]), "3000", &port);
    let backend = backend.strip_suffix('&').unwrap().trim().to_owned();
    let mut words = backend.split_whitespace();
    let api = Command::new(words.next().unwrap())
        .args(words)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _api = Killed(api);
    let api_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    while TcpStream::connect(api_addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the API never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let serve = substitute(&strip(lines[1]), "3000", &port);
    let args: Vec<&str> = serve
        .strip_prefix("hapnd-auth ")
        .expect("the second command runs hapnd-auth")
        .split_whitespace()
        .collect();
    let db = dir.path().join("keys.db").display().to_string();
    let mut child = gateway::command(dir.path(), &db)
        .args(&args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _gateway = Killed(child);
    let (mut key, mut addr) = (None, None);
    let mut output = std::io::BufReader::new(stdout).lines();
    for line in output.by_ref() {
        let line = line.unwrap();
        let line = line.trim();
        if line.starts_with("sk_test_") {
            key = Some(line.to_owned());
        }
        if let Some(a) = line.strip_prefix("listening on http://") {
            addr = Some(a.to_owned());
            break;
        }
    }
    // Read on, or its next line finds a closed pipe and the gateway exits.
    std::thread::spawn(move || for _ in output {});
    let key = key.expect("the first start prints a sandbox key");
    let addr = addr.expect("the gateway listens");

    let curl = substitute(&strip(lines[2]), "sk_test_...", &key);
    let curl = substitute(&curl, "127.0.0.1:8080", &addr);
    let out = Command::new("sh")
        .args(["-c", &format!("{curl} -sS")])
        .output()
        .unwrap();
    let body = gateway::text(&out.stdout);
    assert!(
        body.contains("Directory listing"),
        "the API's answer: {body} ({}: {})",
        out.status,
        gateway::text(&out.stderr)
    );
    let refused = substitute(&curl, &key, "sk_test_nope");
    let out = Command::new("sh")
        .args(["-c", &format!("{refused} -sS")])
        .output()
        .unwrap();
    assert!(gateway::text(&out.stdout).contains("invalid_api_key"));
}

/// A request body sent in `left` frames of 64 KiB, made as hyper asks for them.
struct Frames {
    left: usize,
    chunk: bytes::Bytes,
}

impl hyper::body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.clone()))))
    }
}

#[test]
fn an_h2c_upload_streams_to_an_http1_backend() {
    const FRAMES: usize = 256;
    let dir = TempDir::new("up-h2c-upload");
    let (backend, _runtime) = counting_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = runtime.block_on(async {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::post(format!("http://{}/upload", gw.addr))
            .header("authorization", bearer(&key))
            .body(Frames {
                left: FRAMES,
                chunk: bytes::Bytes::from(vec![1u8; 1 << 16]),
            })
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        (FRAMES << 16).to_string(),
        "the backend got every byte"
    );
}

#[test]
fn a_client_that_breaks_off_its_upload_is_not_counted_against_the_backend() {
    let dir = TempDir::new("up-abort");
    let (backend, _runtime) = counting_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            gw.addr
        );
        stream.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Gone mid-body.
    }
    let aborted = r#"hapnd_upstream_requests_total{outcome="client_aborted"}"#;
    let started = std::time::Instant::now();
    while sample(&gw, aborted) < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sample(
            &gw,
            r#"hapnd_upstream_requests_total{outcome="upstream_unavailable"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(&gw, r#"hapnd_upstream_errors_total{kind="broken"}"#),
        0.0
    );
}

#[test]
fn expect_100_continue_comes_only_after_the_key_is_checked() {
    let dir = TempDir::new("up-expect");
    let (backend, _runtime) = counting_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let ask = |auth: &str| {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: 5\r\n\
             Expect: 100-continue\r\nConnection: close\r\n\r\n",
            gw.addr
        );
        stream.write_all(head.as_bytes()).unwrap();
        let first = read_head(&mut stream);
        (stream, first)
    };
    // No key: the answer is the 401, never an invitation to send the body.
    let (_, first) = ask("");
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");

    let (mut stream, first) = ask(&format!("Authorization: Bearer {key}\r\n"));
    assert!(first.starts_with("HTTP/1.1 100"), "{first}");
    stream.write_all(b"hello").unwrap();
    let r = read_response(&mut stream);
    assert_eq!((r.status, r.body.as_str()), (200, "5"), "{r:?}");
}

#[test]
fn a_base_path_prefixes_every_forwarded_path_and_options_star_is_refused() {
    let dir = TempDir::new("up-base");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(
        &dir,
        &flags(&[("--upstream", format!("http://{}/api/", backend.addr))]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let auth = bearer(&key);
    for (path, seen) in [
        ("/v1/x?y=1", "/api/v1/x?y=1"),
        ("/", "/api/"),
        ("//other.example/x", "/api//other.example/x"),
    ] {
        let r = request(gw.addr, "GET", path, &[("Authorization", &auth)]);
        assert_eq!(r.json()["path"], seen, "{path}");
        assert_eq!(echoed(&r, "host"), [backend.addr.to_string()], "{path}");
    }
    let forwarded = backend.seen.lock().unwrap().len();
    let r = request(gw.addr, "OPTIONS", "*", &[("Authorization", &auth)]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(backend.seen.lock().unwrap().len(), forwarded);
}

/// The paths an echo backend was asked for, in order.
fn paths_seen(r: &Response) -> String {
    r.json()["path"].as_str().unwrap().to_owned()
}

#[test]
fn routes_go_by_longest_whole_segment_prefix_and_keep_it() {
    let dir = TempDir::new("up-routes");
    let (default, billing) = (EchoBackend::start(), EchoBackend::start());
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(default.addr)),
            ("--route", format!("/billing={}", url(billing.addr))),
            // Longer, written in another case, with a trailing slash and a base path.
            (
                "--route",
                format!("/Billing/Admin/=http://{}/inner", default.addr),
            ),
            ("--public-path", "/billing/health".to_owned()),
            ("--route-live", format!("/payouts={}", url(billing.addr))),
            ("--route", format!("/v1={}", url(billing.addr))),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let auth = bearer(&key);
    // A live-only route refuses a sandbox key, which reaches --upstream no more than it.
    let (sandbox, _) = create_key(dir.path(), &db, "acme", "test", "sb");
    let r = request(
        gw.addr,
        "GET",
        "/payouts",
        &[("Authorization", &bearer(&sandbox))],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "wrong_environment"));
    assert!(default.seen.lock().unwrap().is_empty());
    assert!(billing.seen.lock().unwrap().is_empty());
    for (path, to_billing, seen) in [
        ("/billing", true, "/billing"),
        ("/billing/", true, "/billing/"),
        ("/billing/invoices/7?q=1", true, "/billing/invoices/7?q=1"),
        ("/BILLING/x", true, "/BILLING/x"),
        ("/billingx", false, "/billingx"),
        ("/billing/admin/y", false, "/inner/billing/admin/y"),
        ("/billing/administrator", true, "/billing/administrator"),
        ("/other", false, "/other"),
        ("/v1/orders", true, "/v1/orders"),
        // Escapes that cannot spell a prefix are routed as written.
        ("/billing/a%20b", true, "/billing/a%20b"),
        ("/other/caf%C3%A9", false, "/other/caf%C3%A9"),
    ] {
        let before = (
            default.seen.lock().unwrap().len(),
            billing.seen.lock().unwrap().len(),
        );
        let r = request(gw.addr, "GET", path, &[("Authorization", &auth)]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(paths_seen(&r), seen, "{path}");
        assert_eq!(echoed(&r, "x-hapnd-tenant"), ["acme"], "{path}");
        let after = (
            default.seen.lock().unwrap().len(),
            billing.seen.lock().unwrap().len(),
        );
        let expected = if to_billing {
            (before.0, before.1 + 1)
        } else {
            (before.0 + 1, before.1)
        };
        assert_eq!(after, expected, "{path} went to the wrong backend");
    }
    // The gateway's own routes stay its own under any route.
    let before = billing.seen.lock().unwrap().len();
    let r = request(gw.addr, "GET", "/v1/whoami", &[("Authorization", &auth)]);
    assert_eq!((r.status, r.json()["tenant"].as_str()), (200, Some("acme")));
    assert_eq!(billing.seen.lock().unwrap().len(), before);
    // A public path under a route goes to the route's backend, without a key.
    let r = request(gw.addr, "GET", "/billing/health", &[]);
    assert_eq!(
        (r.status, paths_seen(&r).as_str()),
        (200, "/billing/health")
    );
    assert!(echoed(&r, "x-hapnd-tenant").is_empty());
    assert_eq!(billing.seen.lock().unwrap().len(), 8);

    // Without a key: the gateway's 401 on a route too.
    let r = request(gw.addr, "GET", "/billing/x", &[]);
    assert_eq!((r.status, r.code().as_str()), (401, "missing_api_key"));
    // Paths a backend could read as under another prefix than the gateway did are not
    // routed at all, key or no key.
    let counts = || {
        (
            default.seen.lock().unwrap().len(),
            billing.seen.lock().unwrap().len(),
        )
    };
    let before = counts();
    for path in [
        "/billing/../admin",
        "/billing/./x",
        "/other/../billing/x",
        "/other/%2e%2e/billing",
        "/%62illing/x",
        "/billing%2fadmin",
        "/billing/..;/admin",
        "/billing;v=1/x",
        "/billing\\..\\admin",
        "/billing/health/../../admin",
        "/b%69lling/x",
        "/billing%40x",
        "/%C0%AE%C0%AE/billing",
        "/x/%EF%BC%8E%EF%BC%8E/billing",
        "/billing%zz",
    ] {
        for headers in [&[("Authorization", auth.as_str())][..], &[]] {
            let r = request(gw.addr, "GET", path, headers);
            assert_eq!(
                (r.status, r.code().as_str()),
                (400, "invalid_path"),
                "{path}"
            );
        }
    }
    assert_eq!(
        counts(),
        before,
        "a path that is not plain reached a backend"
    );
}

#[test]
fn a_sandbox_key_never_reaches_a_live_only_route_and_unrouted_paths_are_404() {
    let dir = TempDir::new("up-route-env");
    let (live_backend, sandbox_backend) = (EchoBackend::start(), EchoBackend::start());
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            (
                "--route-live",
                format!("/payouts={}", url(live_backend.addr)),
            ),
            ("--route", format!("/events={}", url(live_backend.addr))),
            (
                "--route-sandbox",
                format!("/events={}", url(sandbox_backend.addr)),
            ),
        ]),
    );
    let (live, _) = create_key(dir.path(), &db, "acme", "live", "lv");
    let (sandbox, _) = create_key(dir.path(), &db, "acme", "test", "sb");
    let r = request(
        gw.addr,
        "GET",
        "/payouts/1",
        &[("Authorization", &bearer(&sandbox))],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "wrong_environment"));
    assert!(
        live_backend.seen.lock().unwrap().is_empty(),
        "a sandbox key was forwarded"
    );
    assert!(sandbox_backend.seen.lock().unwrap().is_empty());
    let r = request(
        gw.addr,
        "GET",
        "/payouts/1",
        &[("Authorization", &bearer(&live))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);
    // --route-sandbox overrides --route for sandbox keys only.
    let r = request(
        gw.addr,
        "GET",
        "/events",
        &[("Authorization", &bearer(&sandbox))],
    );
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["sandbox"]);
    assert_eq!(sandbox_backend.seen.lock().unwrap().len(), 1);
    let r = request(
        gw.addr,
        "GET",
        "/events",
        &[("Authorization", &bearer(&live))],
    );
    assert_eq!(echoed(&r, "x-hapnd-environment"), ["live"]);
    assert_eq!(live_backend.seen.lock().unwrap().len(), 2);
    // No --upstream: a path under no route is 404 once the key is admitted, 401 before.
    let r = request(
        gw.addr,
        "GET",
        "/elsewhere",
        &[("Authorization", &bearer(&live))],
    );
    assert_eq!((r.status, r.code().as_str()), (404, "no_route"));
    let r = request(gw.addr, "GET", "/elsewhere", &[]);
    assert_eq!((r.status, r.code().as_str()), (401, "missing_api_key"));
    assert_eq!(live_backend.seen.lock().unwrap().len(), 2);
    assert_eq!(sandbox_backend.seen.lock().unwrap().len(), 1);
}

#[test]
fn a_bad_route_is_a_clear_start_up_error() {
    let dir = TempDir::new("up-route-flags");
    let db = dir.path().join("keys.db").display().to_string();
    for (args, says) in [
        (&["serve", "--route", "/billing"][..], "expected PREFIX=URL"),
        (
            &["serve", "--route", "billing=http://127.0.0.1:1"][..],
            "starts with /",
        ),
        (
            &["serve", "--route", "/=http://127.0.0.1:1"][..],
            "is --upstream",
        ),
        (
            &["serve", "--route", "/a/../b=http://127.0.0.1:1"][..],
            "dot segments",
        ),
        (
            &["serve", "--route", "/a%20b=http://127.0.0.1:1"][..],
            "%-escapes",
        ),
        (
            &["serve", "--route-live", "/billing=https://127.0.0.1:1"][..],
            "only http://",
        ),
        (
            &[
                "serve",
                "--route",
                "/billing=http://127.0.0.1:1",
                "--route",
                "/Billing/=http://127.0.0.1:2",
            ][..],
            "--route /Billing is given twice",
        ),
    ] {
        let out = gateway::run(dir.path(), &db, args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = gateway::text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// A live key for acme with `scopes` (none: full access).
fn key_with_scopes(dir: &TempDir, db: &str, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["--tenant", "acme", "--env", "live", "--name", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    gateway::create_key_with(dir.path(), db, &args).0
}

#[test]
fn a_route_scope_admits_keys_with_the_scope_or_none_and_refuses_others_before_the_backend() {
    let dir = TempDir::new("up-route-scope");
    let (billing, other) = (EchoBackend::start(), EchoBackend::start());
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(other.addr)),
            ("--route", format!("/billing={}", url(billing.addr))),
            ("--route-scope", "/billing=billing:read".to_owned()),
            ("--public-path", "/billing/status".to_owned()),
        ]),
    );
    let reader = key_with_scopes(&dir, &db, "reader", &["events:read", "billing:read"]);
    let full = key_with_scopes(&dir, &db, "full", &[]);
    let writer = key_with_scopes(&dir, &db, "writer", &["events:read", "billing:write"]);
    let challenge = r#"Bearer realm="hapnd", error="insufficient_scope", scope="billing:read""#;
    // Without the scope: the library's 403, the scope named, and the backend sees nothing,
    // over HTTP/1.1 and h2c, in any case of the prefix.
    let from: IpAddr = "127.0.0.2".parse().unwrap();
    for path in ["/billing", "/billing/invoices?x=1", "/BILLING/invoices"] {
        let auth = bearer(&writer);
        for r in [
            request_from(from, gw.addr, "GET", path, &[("Authorization", &auth)]),
            gateway::h2c_request_from(from, gw.addr, path, &[("authorization", &auth)]),
        ] {
            assert_eq!(
                (r.status, r.code().as_str()),
                (403, "insufficient_scope"),
                "{path}: {r:?}"
            );
            assert_eq!(r.header("www-authenticate").as_deref(), Some(challenge));
        }
    }
    assert!(
        billing.seen.lock().unwrap().is_empty(),
        "a key without the scope reached the backend"
    );
    assert!(other.seen.lock().unwrap().is_empty());
    // No key at all is still 401 there.
    let r = request(gw.addr, "GET", "/billing/invoices", &[]);
    assert_eq!((r.status, r.code().as_str()), (401, "missing_api_key"));
    // With the scope, or with no scopes (full access): forwarded with the identity.
    for (key, scopes) in [(&reader, "events:read billing:read"), (&full, "")] {
        let r = request(
            gw.addr,
            "GET",
            "/billing/invoices",
            &[("Authorization", &bearer(key))],
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["path"], "/billing/invoices");
        let mut got: Vec<String> = echoed(&r, "x-hapnd-scopes")[0]
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        got.sort();
        let mut want: Vec<&str> = scopes.split_whitespace().collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
    assert_eq!(billing.seen.lock().unwrap().len(), 2);
    // The scope is the route's alone: other paths take the key without it.
    let r = request(
        gw.addr,
        "GET",
        "/events",
        &[("Authorization", &bearer(&writer))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(other.seen.lock().unwrap().len(), 1);
    // A public path under the scoped route stays public: no key, no identity.
    let r = request(gw.addr, "GET", "/billing/status", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(echoed(&r, "x-hapnd-tenant").is_empty(), "{r:?}");
    assert_eq!(billing.seen.lock().unwrap().len(), 3);
}

#[test]
fn a_bad_route_scope_is_a_clear_start_up_error() {
    let dir = TempDir::new("up-route-scope-flags");
    let db = dir.path().join("keys.db").display().to_string();
    let route = ["serve", "--route", "/billing=http://127.0.0.1:1"];
    let with = |more: &[&'static str]| -> Vec<&'static str> {
        route.iter().copied().chain(more.iter().copied()).collect()
    };
    for (args, says) in [
        (
            with(&["--route-scope", "/billing"]),
            "expected PREFIX=SCOPE",
        ),
        (
            with(&["--route-scope", "billing=billing:read"]),
            "starts with /",
        ),
        (
            with(&["--route-scope", "/billing=Billing:*"]),
            "route-scope /billing: not a scope",
        ),
        (with(&["--route-scope", "/billing="]), "not a scope"),
        (
            with(&["--route-scope", "/invoices=billing:read"]),
            "--route-scope /invoices names no route",
        ),
        // A path under a route is not the route.
        (
            with(&["--route-scope", "/billing/x=billing:read"]),
            "--route-scope /billing/x names no route",
        ),
        (
            vec![
                "serve",
                "--upstream",
                "http://127.0.0.1:1",
                "--route-scope",
                "/billing=billing:read",
            ],
            "--route-scope /billing names no route",
        ),
        (
            with(&[
                "--route-scope",
                "/billing=billing:read",
                "--route-scope",
                "/Billing/=billing:write",
            ]),
            "--route-scope /Billing is given twice",
        ),
    ] {
        let out = gateway::run(dir.path(), &db, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = gateway::text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A --route-live prefix takes a scope too.
    let dir = TempDir::new("up-route-scope-live");
    let backend = EchoBackend::start();
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--route-live", format!("/payouts={}", url(backend.addr))),
            ("--route-scope", "/payouts/=payouts:write".to_owned()),
        ]),
    );
    let key = key_with_scopes(&dir, &db, "k", &["payouts:read"]);
    let r = request(
        gw.addr,
        "GET",
        "/payouts",
        &[("Authorization", &bearer(&key))],
    );
    assert_eq!((r.status, r.code().as_str()), (403, "insufficient_scope"));
    assert!(backend.seen.lock().unwrap().is_empty());
}

/// A body of one data frame, then trailers.
struct WithTrailers {
    data: Option<bytes::Bytes>,
    trailers: Option<hyper::HeaderMap>,
}

impl hyper::body::Body for WithTrailers {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(data) => Some(hyper::body::Frame::data(data)),
            None => self.trailers.take().map(hyper::body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

fn header_map(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
    let mut map = hyper::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// A backend that answers with the request's body, headers and trailers as JSON, in a
/// chunked body with a trailer of its own (`x-backend-digest`, declared in `Trailer`).
fn trailer_backend() -> (SocketAddr, tokio::runtime::Runtime) {
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
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async {
                        use http_body_util::BodyExt;
                        let pairs = |map: &hyper::HeaderMap| -> Vec<(String, String)> {
                            map.iter()
                                .map(|(n, v)| (n.to_string(), gateway::text(v.as_bytes())))
                                .collect()
                        };
                        let headers = pairs(req.headers());
                        let collected = req.into_body().collect().await.unwrap();
                        let trailers = collected.trailers().map(pairs).unwrap_or_default();
                        let body = serde_json::json!({
                            "body": gateway::text(&collected.to_bytes()),
                            "headers": headers,
                            "trailers": trailers,
                        });
                        let body = WithTrailers {
                            data: Some(bytes::Bytes::from(body.to_string())),
                            trailers: Some(header_map(&[("x-backend-digest", "sha-1")])),
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("trailer", "x-backend-digest")
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, runtime)
}

/// Lower-case names of a `[[name, value], ...]` list.
fn pair_names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap().to_ascii_lowercase())
        .collect()
}

#[test]
fn trailers_pass_both_ways_over_http1_but_not_the_gateways_names_or_hop_by_hop() {
    let dir = TempDir::new("up-trailers");
    let (backend, _runtime) = trailer_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let declared = "X-Checksum, X-Hapnd-Tenant, X_Hapnd_Key_Id, Connection, Keep-Alive, \
                    Authorization, X-Forwarded-For, X-Real-IP";
    let raw = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: {}\r\n\
         TE: trailers\r\nTrailer: {declared}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\nX-Checksum: 42\r\nX-Hapnd-Tenant: evil\r\nX_Hapnd_Key_Id: evil\r\n\
         Connection: close\r\nKeep-Alive: timeout=1\r\nAuthorization: Bearer sk_live_forged\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
        gw.addr,
        bearer(&key)
    );
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, chunked) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("trailer: x-backend-digest"), "{head}");
    // The backend's trailer, after the last chunk.
    let (_, after_last) = chunked.rsplit_once("\r\n0\r\n").expect("a chunked body");
    assert_eq!(after_last, "x-backend-digest: sha-1\r\n\r\n", "{answer}");
    let r = Response {
        status: 200,
        head: head.to_owned(),
        body: gateway::text(&dechunked(chunked)),
    };
    let seen = r.json();
    assert_eq!(seen["body"], "hello");
    assert_eq!(
        seen["trailers"],
        serde_json::json!([["x-checksum", "42"]]),
        "{seen}"
    );
    let headers: Vec<(String, String)> = serde_json::from_value(seen["headers"].clone()).unwrap();
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("trailer"), ["X-Checksum"], "{seen}");
    assert_eq!(get("te"), ["trailers"], "{seen}");
    assert_eq!(get("x-hapnd-tenant"), ["acme"], "{seen}");
    assert!(!pair_names(&seen["headers"]).contains(&"authorization".to_owned()));
}

/// The data of a chunked body (no trailers).
fn dechunked(mut body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest.as_bytes()[..size]);
        body = &rest[size + 2..];
    }
    out
}

#[test]
fn trailers_pass_both_ways_from_an_h2c_client_that_declares_them() {
    let dir = TempDir::new("up-trailers-h2c");
    let (backend, _runtime) = trailer_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body, trailers) = runtime.block_on(async {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::post(format!("http://{}/upload", gw.addr))
            .header("authorization", bearer(&key))
            .header("te", "trailers")
            .header("trailer", "x-checksum, x-hapnd-tenant, x_hapnd_key_id")
            .body(WithTrailers {
                data: Some(bytes::Bytes::from_static(b"hello")),
                trailers: Some(header_map(&[
                    ("x-checksum", "42"),
                    ("x-hapnd-tenant", "evil"),
                    ("x_hapnd_key_id", "evil"),
                ])),
            })
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(15), send.send_request(request))
            .await
            .unwrap()
            .unwrap();
        let status = response.status().as_u16();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (status, collected.to_bytes(), trailers)
    });
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["body"], "hello");
    assert_eq!(
        seen["trailers"],
        serde_json::json!([["x-checksum", "42"]]),
        "{seen}"
    );
    let trailers = trailers.expect("the backend's trailers");
    assert_eq!(trailers["x-backend-digest"], "sha-1");
    assert_eq!(trailers.len(), 1);
}

/// A backend that answers `hello` in a chunked body (`Connection: close`) whose trailers,
/// all declared in `Trailer`, are `x-checksum: 42` and names no trailer may carry: on
/// `/gateway-names` the gateway's (two spellings), a credential and a forwarding header; on
/// `/hop-by-hop` hop-by-hop ones. Written by hand: hyper's own encoder would drop some.
fn banned_trailer_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let head = read_head(&mut stream);
                let banned = if head.starts_with("GET /hop-by-hop ") {
                    "Keep-Alive: timeout=5\r\nConnection: close\r\nProxy-Connection: close\r\n"
                } else {
                    "X-Hapnd-Tenant: evil\r\nX_Hapnd_Key_Id: key_evil\r\n\
                     Authorization: Bearer forged\r\nX-Forwarded-For: 6.6.6.6\r\n"
                };
                let declared: Vec<&str> = banned
                    .lines()
                    .filter_map(|line| Some(line.split_once(':')?.0))
                    .collect();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
                     Trailer: X-Checksum, {}\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\
                     {banned}\r\n",
                    declared.join(", ")
                );
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn a_backends_banned_response_trailers_never_reach_an_h2c_or_http1_client() {
    let dir = TempDir::new("up-trailers-banned");
    let backend = banned_trailer_backend();
    let (gw, db) = gateway(&dir, &flags(&[("--upstream", url(backend))]));
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in ["/gateway-names", "/hop-by-hop"] {
        // h2c: hyper sends every trailer frame it is given, declared or not.
        let got = runtime.block_on(async {
            use http_body_util::{BodyExt, Empty};
            let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let request = hyper::Request::get(format!("http://{}{path}", gw.addr))
                .header("authorization", bearer(&key))
                .header("te", "trailers")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response =
                tokio::time::timeout(Duration::from_secs(15), send.send_request(request))
                    .await
                    .unwrap()
                    .unwrap();
            let status = response.status().as_u16();
            let declared = response.headers().get("trailer").cloned();
            let collected =
                tokio::time::timeout(Duration::from_secs(15), response.into_body().collect())
                    .await
                    .unwrap()
                    .map_err(|e| format!("the body failed: {e:?}"))?;
            let trailers = collected.trailers().cloned();
            Ok::<_, String>((status, declared, collected.to_bytes(), trailers))
        });
        let (status, declared, body, trailers) = got.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((status, &body[..]), (200, &b"hello"[..]), "{path}");
        assert_eq!(
            declared.as_ref().map(|v| v.as_bytes()),
            Some(&b"X-Checksum"[..]),
            "{path}"
        );
        let trailers = trailers.unwrap_or_else(|| panic!("{path}: no trailers"));
        let names: Vec<&str> = trailers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-checksum"], "{path}: {trailers:?}");
        assert_eq!(trailers["x-checksum"], "42", "{path}");

        // HTTP/1.1: the trailer section after the last chunk holds the good one alone.
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTE: trailers\r\n\
             Authorization: {}\r\n\r\n",
            gw.addr,
            bearer(&key)
        );
        stream.write_all(raw.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, chunked) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        let (_, after_last) = chunked.rsplit_once("\r\n0\r\n").expect("a chunked body");
        assert_eq!(after_last, "x-checksum: 42\r\n\r\n", "{path}: {answer}");
    }
}

/// A TCP connection to `addr` from the loopback address `source`.
fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
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
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Sends a WebSocket handshake with `key` on `stream` and reads the answer's head; `None`
/// when the gateway closed the connection instead.
fn websocket_handshake(stream: &mut TcpStream, addr: SocketAddr, key: &str) -> Option<String> {
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: {}\r\n\r\n",
        bearer(key)
    );
    // Over its share, the connection may be closed before the write even lands.
    stream.write_all(head.as_bytes()).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return None,
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "neither an answer nor a close in 15 s"
                );
                return None;
            }
        }
    }
    Some(String::from_utf8(head).unwrap())
}

/// A tunnel that echoes: one masked frame goes there and back.
fn assert_echoes(stream: &mut TcpStream) {
    let frame = [0x81u8, 0x82, 9, 9, 9, 9, b'o' ^ 9, b'k' ^ 9];
    stream.write_all(&frame).unwrap();
    let mut back = [0u8; 8];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, frame);
}

#[test]
fn websocket_tunnels_count_against_the_clients_connection_share() {
    let dir = TempDir::new("up-ws-share");
    let (backend, heads) = upgrade_backend();
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend)),
            ("--max-connections-per-client", "2".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let one: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(one, gw.addr);
        let head = websocket_handshake(&mut stream, gw.addr, &key).expect("an answer");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_echoes(&mut stream);
        tunnels.push(stream);
    }
    // Both tunnels hold their connections: a third from the same address is closed.
    let mut third = connect_from(one, gw.addr);
    assert_eq!(
        websocket_handshake(&mut third, gw.addr, &key),
        None,
        "a third tunnel over a share of 2"
    );
    assert_eq!(
        heads.lock().unwrap().len(),
        2,
        "the backend saw a third handshake"
    );
    // Another address has a share of its own.
    let mut elsewhere = connect_from(other, gw.addr);
    let head = websocket_handshake(&mut elsewhere, gw.addr, &key).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_echoes(&mut elsewhere);
    // A tunnel closed gives its slot back.
    let closed = tunnels.pop().unwrap();
    closed.shutdown(std::net::Shutdown::Both).unwrap();
    let mut again = None;
    for _ in 0..50 {
        let mut stream = connect_from(one, gw.addr);
        if let Some(head) = websocket_handshake(&mut stream, gw.addr, &key) {
            again = Some((head, stream));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (head, mut stream) = again.expect("the closed tunnel's slot back within 5 s");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_echoes(&mut stream);
    assert_echoes(&mut tunnels[0]);
    // Shutting down ends the tunnels (the gateway waits for every slot to come back).
    gw.signal("TERM");
    let mut byte = [0u8];
    for tunnel in [&mut stream, &mut tunnels[0], &mut elsewhere] {
        match tunnel.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("the backend sent nothing"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "a tunnel was still open 15 s after SIGTERM"
            ),
        }
    }
    let stopped = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        gw.log_text().contains("hapnd-auth gateway stopped")
    });
    assert!(stopped, "not stopped 10 s after SIGTERM: {}", gw.log_text());
}

/// Writes a WebSocket handshake on `stream` and expects no answer and no close within 2 s:
/// the connection is queued by the kernel, not yet accepted by the gateway.
fn assert_waits_unanswered(stream: &mut TcpStream, addr: SocketAddr, key: &str) {
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: {}\r\n\r\n",
        bearer(key)
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut byte = [0u8];
    match stream.read(&mut byte) {
        Ok(0) => panic!("the gateway closed a connection over --max-connections"),
        Ok(_) => panic!("the gateway answered a connection over --max-connections"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
}

#[test]
fn max_connections_alone_caps_websocket_tunnels_and_a_closed_one_lets_the_next_in() {
    let dir = TempDir::new("up-ws-max");
    let (backend, heads) = upgrade_backend();
    // A share as large as the cap, and each connection from an address of its own: only
    // --max-connections can hold anything back.
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend)),
            ("--max-connections", "2".to_owned()),
            ("--max-connections-per-client", "2".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let address = |last: u8| IpAddr::from([127, 0, 0, last]);
    let mut tunnels = Vec::new();
    for last in [2, 3] {
        let mut stream = connect_from(address(last), gw.addr);
        let head = websocket_handshake(&mut stream, gw.addr, &key).expect("an answer");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_echoes(&mut stream);
        tunnels.push(stream);
    }
    // Two tunnels fill the cap: a third connection is queued, neither answered nor closed.
    let mut waiting = connect_from(address(4), gw.addr);
    assert_waits_unanswered(&mut waiting, gw.addr, &key);
    assert_eq!(
        heads.lock().unwrap().len(),
        2,
        "the backend saw a third handshake"
    );
    // A tunnel closed gives its place back: the queued connection is served.
    let closed = tunnels.remove(0);
    closed.shutdown(std::net::Shutdown::Both).unwrap();
    let head = read_head(&mut waiting);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_echoes(&mut waiting);
    assert_echoes(&mut tunnels[0]);
    assert_eq!(heads.lock().unwrap().len(), 3);
    // And the cap holds again with the new tunnel open.
    let mut next = connect_from(address(5), gw.addr);
    assert_waits_unanswered(&mut next, gw.addr, &key);
    assert_eq!(
        heads.lock().unwrap().len(),
        3,
        "the backend saw a fourth handshake"
    );
}

#[test]
fn a_tunnel_whose_backend_stops_reading_is_closed_after_the_idle_timeout() {
    let dir = TempDir::new("up-ws-stall");
    // A backend that switches, then never reads (nor closes) for a minute.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                read_head(&mut stream);
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\n\r\n",
                    )
                    .unwrap();
                std::thread::sleep(Duration::from_secs(60));
                drop(stream);
            });
        }
    });
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend)),
            ("--idle-timeout-secs", "1".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let mut stream = connect_from("127.0.0.1".parse().unwrap(), gw.addr);
    let head = websocket_handshake(&mut stream, gw.addr, &key).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Write until the bytes back up (the backend reads none), in a thread of its own.
    let mut writer = stream.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    std::thread::spawn(move || {
        let chunk = vec![0u8; 64 * 1024];
        while writer.write_all(&chunk).is_ok() {
            count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    // The gateway gives up on the stalled write: the client sees its connection end
    // (closed or reset), well before the backend would close after a minute.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut byte = [0u8];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the backend sent nothing"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the stalled tunnel was still open after 20 s (idle timeout 1 s)"
        ),
    }
    assert!(
        written.load(Ordering::SeqCst) > 64 * 1024,
        "the client's bytes backed up"
    );
}

/// A backend that answers every request with a head announcing `length` bytes, then
/// `sent` bytes of them, then (when `sent < length`) nothing for a minute.
fn raw_body_backend(length: usize, sent: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                read_head(&mut stream);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
                stream.write_all(head.as_bytes()).unwrap();
                let _ = stream.write_all(&vec![b'x'; sent]);
                std::thread::sleep(Duration::from_secs(60));
            });
        }
    });
    addr
}

/// Reads what the gateway sends on `stream` until it closes; panics if it stays open
/// (silent) for 20 s. Returns the bytes after the head.
fn read_until_closed(stream: &mut TcpStream, pause_per_mib: Duration) -> usize {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut raw, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let before = raw.len() >> 20;
                raw.extend_from_slice(&buf[..n]);
                if raw.len() >> 20 != before {
                    std::thread::sleep(pause_per_mib);
                }
            }
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the connection was still open, silent, after 20 s"
                );
                break;
            }
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        gateway::text(&raw[..end])
    );
    raw.len() - end - 4
}

fn get_with(stream: &mut TcpStream, addr: SocketAddr, key: &str, path: &str) {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
        bearer(key)
    );
    stream.write_all(head.as_bytes()).unwrap();
}

#[test]
fn a_slow_reader_of_a_large_response_is_not_cut_while_bytes_move() {
    const SIZE: usize = 16 << 20;
    let dir = TempDir::new("up-slow-reader");
    let backend = raw_body_backend(SIZE, SIZE);
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend)),
            ("--idle-timeout-secs", "1".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    get_with(&mut stream, gw.addr, &key, "/big");
    // 16 pauses of 400 ms: the whole answer takes several idle timeouts to read.
    let got = read_until_closed(&mut stream, Duration::from_millis(400));
    assert_eq!(got, SIZE, "the answer was cut");
}

#[test]
fn a_backend_that_stops_mid_body_gets_the_connection_closed_after_the_idle_timeout() {
    let dir = TempDir::new("up-stops-mid-body");
    let backend = raw_body_backend(1 << 20, 64 * 1024);
    let (gw, db) = gateway(
        &dir,
        &flags(&[
            ("--upstream", url(backend)),
            ("--idle-timeout-secs", "1".to_owned()),
        ]),
    );
    let (key, _) = create_key(dir.path(), &db, "acme", "live", "k");
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    get_with(&mut stream, gw.addr, &key, "/stalls");
    // Closed well before the backend's minute, with the part it sent and no more.
    let got = read_until_closed(&mut stream, Duration::ZERO);
    assert_eq!(got, 64 * 1024);
}
