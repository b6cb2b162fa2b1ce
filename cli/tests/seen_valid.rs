//! Issue 27 through the real `hapnd-auth serve`: a guesser behind the same address as a
//! legitimate client (127.0.0.2, a shared NAT) gets 429 before any store lookup, while the
//! client's valid key keeps answering 200, over HTTP/1.1 and h2c, before, during and after
//! its cache entry expires (`--cache-ttl-secs 1`); the store is asked for that key only.
//! A key revoked through the admin API is refused at once, and a key this gateway never
//! saw valid still waits for the block to end.

mod gateway;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::{Gateway, TempDir, create_key, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The address the guesser and the legitimate client share.
const SHARED: [u8; 4] = [127, 0, 0, 2];
const ADMIN_TOKEN: &str = "seen-valid-admin-token-0123456789abcdef0123";
const BURST: usize = 5;

async fn connect_from(from: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a second loopback address (Linux: all of 127.0.0.0/8 is loopback)");
    socket.connect(to).await.unwrap()
}

/// One HTTP/1.1 request from `from` on a fresh connection: status and `error.code`.
async fn h1(from: [u8; 4], to: SocketAddr, key: &str) -> (u16, String) {
    let mut stream = connect_from(from, to).await;
    let raw = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {key}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    (
        status,
        code(text.split_once("\r\n\r\n").map_or("", |(_, b)| b)),
    )
}

/// The same request over h2c (HTTP/2 by prior knowledge) from `from`.
async fn h2c(from: [u8; 4], to: SocketAddr, key: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let stream = connect_from(from, to).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{to}/v1/whoami"))
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, code(&String::from_utf8_lossy(&body)))
}

fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn guess() -> String {
    hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live)
        .expose_secret()
        .to_owned()
}

/// A sample of `/metrics`: the value of the series named exactly `series` (0 if absent).
fn metric(gateway: &Gateway, series: &str) -> f64 {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let page = request(
        gateway.admin,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
    );
    page.body
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Store lookups so far (the lookup-duration summary's count).
fn lookups(gateway: &Gateway) -> f64 {
    metric(gateway, "hapnd_auth_store_lookup_duration_seconds_count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_seen_valid_keeps_working_from_an_address_a_guesser_shares() {
    let dir = TempDir::new("seen-valid");
    let db = dir.path().join("keys.db").display().to_string();
    let (revoked_later, revoked_id) = create_key(dir.path(), &db, "acme", "live", "old");
    let (never_seen, _) = create_key(dir.path(), &db, "acme", "live", "new");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let gateway = Gateway::start(
        dir.path(),
        &db,
        &[
            "--cache-ttl-secs",
            "1",
            "--throttle-burst",
            &BURST.to_string(),
            // No attempt comes back during the test, and 429s are sent at once.
            "--throttle-period-ms",
            "600000",
            "--throttle-tarpit-ms",
            "0",
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let to = gateway.addr;
    // Created while the gateway runs, as keys are: the change feed replays its creation
    // (an invalidation of its hash) a poll after its first use, which must not take it
    // out of the set.
    let (valid, _) = create_key(dir.path(), &db, "acme", "live", "ci");

    // Before the flood: both keys used from the shared address, and so seen valid.
    assert_eq!(h1(SHARED, to, &valid).await, (200, String::new()));
    assert_eq!(h2c(SHARED, to, &valid).await, (200, String::new()));
    assert_eq!(h1(SHARED, to, &revoked_later).await.0, 200);
    // Past the feed's poll (200 ms): the creation's replay has reached the gateway.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The flood: guesses until the address is blocked.
    let mut statuses = Vec::new();
    for _ in 0..BURST + 3 {
        statuses.push(h1(SHARED, to, &guess()).await.0);
    }
    let mut expected = vec![401; BURST];
    expected.extend([429; 3]);
    assert_eq!(statuses, expected);
    let at_block = lookups(&gateway);
    let seen_at_block = metric(&gateway, "hapnd_auth_seen_valid_hits_total");

    // During the flood, over more than three cache TTLs: the valid key over both
    // protocols, guesses over both, from the same address.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let answers = [
            h1(SHARED, to, &valid).await,
            h2c(SHARED, to, &valid).await,
            h1(SHARED, to, &guess()).await,
            h2c(SHARED, to, &guess()).await,
        ];
        let ok = (200, String::new());
        let throttled = (429, "too_many_failed_attempts".to_owned());
        assert_eq!(
            answers,
            [ok.clone(), ok, throttled.clone(), throttled],
            "round {rounds}, {:?} after the block",
            started.elapsed()
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every lookup since the block was one the seen-valid set let through (the valid key's,
    // once per expired cache entry: at least three in 3.5 s of a 1 s TTL; the requests are
    // sequential, so each hit on the set is one lookup); no guess was looked up.
    let looked_up = lookups(&gateway) - at_block;
    let through_the_set = metric(&gateway, "hapnd_auth_seen_valid_hits_total") - seen_at_block;
    assert_eq!(looked_up, through_the_set, "a guess reached the store");
    assert!(looked_up >= 3.0, "{looked_up} lookups in {rounds} rounds");

    // A key this gateway never saw valid cannot be told from a guess without a lookup.
    assert_eq!(
        h1(SHARED, to, &never_seen).await,
        (429, "too_many_failed_attempts".to_owned())
    );

    // Revoked through the admin API, while in the set: refused from the first request after
    // the revocation answered, from the shared address (429, no lookup: it left the set)
    // and from another one (401 api_key_revoked).
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let revoke = request(
        gateway.admin,
        "POST",
        &format!("/api/v1/keys/{revoked_id}/revoke"),
        &[("Authorization", &auth), ("Content-Length", "0")],
    );
    assert_eq!(revoke.status, 200, "{}", revoke.body);
    let before = lookups(&gateway);
    for answer in [
        h1(SHARED, to, &revoked_later).await,
        h2c(SHARED, to, &revoked_later).await,
    ] {
        assert_eq!(answer, (429, "too_many_failed_attempts".to_owned()));
    }
    assert_eq!(lookups(&gateway), before);
    assert_eq!(
        h1([127, 0, 0, 1], to, &revoked_later).await,
        (401, "api_key_revoked".to_owned())
    );
    // The valid key is unaffected.
    assert_eq!(h1(SHARED, to, &valid).await.0, 200);
}
