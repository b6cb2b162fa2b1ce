//! Every shape of `Authorization` header a client can send, and what it gets back.

mod common;

use common::{Body, assert_rejected, echo, request, seen};
use hapnd_auth::{AuthErrorKind, Authenticator, Environment, MemoryKeyStore, NewKey};
use http::{HeaderValue, Request};
use tower::{Layer, ServiceExt, service_fn};

struct Fixture {
    auth: Authenticator,
    live: String,
    sandbox: String,
}

async fn fixture() -> Fixture {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let live = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci-pipeline"))
        .await
        .unwrap();
    let sandbox = auth
        .create_key(NewKey::new(
            "acme",
            Environment::Sandbox,
            "github-actions-test",
        ))
        .await
        .unwrap();
    Fixture {
        auth,
        live: live.key.expose_secret().to_owned(),
        sandbox: sandbox.key.expose_secret().to_owned(),
    }
}

async fn send(auth: &Authenticator, req: Request<Body>) -> common::Seen {
    let svc = auth.layer().layer(service_fn(echo));
    seen(svc.oneshot(req).await.unwrap()).await
}

async fn send_header(auth: &Authenticator, value: &[u8]) -> common::Seen {
    let mut req = request(None);
    req.headers_mut()
        .insert("authorization", HeaderValue::from_bytes(value).unwrap());
    send(auth, req).await
}

#[tokio::test]
async fn valid_keys_in_every_scheme_casing_reach_the_inner_service() {
    let f = fixture().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for (key, env) in [
            (&f.live, Environment::Live),
            (&f.sandbox, Environment::Sandbox),
        ] {
            let s = send_header(&f.auth, format!("{scheme} {key}").as_bytes()).await;
            assert_eq!(s.status, 200, "{scheme}: {}", s.body);
            assert_eq!(s.challenge, None);
            let p = s.principal.expect("inner service saw a principal");
            assert_eq!(p.environment(), env);
            assert_eq!(p.tenant(), "acme");
        }
    }
}

#[tokio::test]
async fn several_spaces_are_accepted() {
    let f = fixture().await;
    let s = send_header(&f.auth, format!("Bearer     {}", f.live).as_bytes()).await;
    assert_eq!(s.status, 200, "{}", s.body);
}

#[tokio::test]
async fn no_credentials_is_401_missing_api_key() {
    let f = fixture().await;
    assert_rejected(
        &send(&f.auth, request(None)).await,
        AuthErrorKind::MissingApiKey,
    );
    // Another scheme carries no API key.
    let s = send_header(&f.auth, b"Basic dXNlcjpwYXNzd29yZA==").await;
    assert_rejected(&s, AuthErrorKind::MissingApiKey);
    assert_eq!(s.challenge.as_deref(), Some(r#"Bearer realm="hapnd""#));
}

#[tokio::test]
async fn malformed_headers_are_400_invalid_request() {
    let f = fixture().await;
    let tab = format!("Bearer\t{}", f.live);
    let huge = format!("Bearer {}", "a".repeat(10 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tab instead of space", tab.into_bytes()),
        (
            "tab before the scheme",
            format!("\tBearer {}", f.live).into_bytes(),
        ),
        ("scheme without token", b"Bearer".to_vec()),
        ("scheme and spaces only", b"Bearer    ".to_vec()),
        ("non-UTF-8 bytes", b"Bearer sk_live_\xff\xfe".to_vec()),
        ("10 KB header", huge.into_bytes()),
        (
            "space inside the token",
            format!("Bearer {} x", f.live).into_bytes(),
        ),
    ];
    for (what, value) in cases {
        let s = send_header(&f.auth, &value).await;
        assert_rejected(&s, AuthErrorKind::InvalidRequest);
        assert_eq!(
            s.challenge.as_deref(),
            Some(r#"Bearer realm="hapnd", error="invalid_request""#),
            "{what}"
        );
    }
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let f = fixture().await;
    let mut req = request(None);
    let value = HeaderValue::from_str(&format!("Bearer {}", f.live)).unwrap();
    req.headers_mut().append("authorization", value.clone());
    req.headers_mut().append("Authorization", value);
    assert_rejected(&send(&f.auth, req).await, AuthErrorKind::InvalidRequest);
}

#[tokio::test]
async fn wrong_prefix_format_or_checksum_is_401_invalid_api_key() {
    let f = fixture().await;
    let body = &f.live["sk_live_".len()..];
    let mut typo = f.live.clone();
    let swapped = if typo.as_bytes()[20] == b'Q' {
        "R"
    } else {
        "Q"
    };
    typo.replace_range(20..21, swapped);
    let cases = [
        ("sk_prod_ prefix", format!("sk_prod_{body}")),
        ("upper-case prefix", format!("SK_LIVE_{body}")),
        ("publishable prefix", format!("pk_live_{body}")),
        ("bad checksum", typo),
        ("too long", format!("{}x", f.live)),
        ("too short", f.live[..40].to_owned()),
        ("punctuation in body", format!("sk_live_{}", "-".repeat(38))),
    ];
    for (what, key) in cases {
        let s = send(&f.auth, common::bearer(&key)).await;
        assert_rejected(&s, AuthErrorKind::InvalidApiKey);
        assert_eq!(
            s.challenge.as_deref(),
            Some(r#"Bearer realm="hapnd", error="invalid_token""#),
            "{what}"
        );
        assert!(!s.body.contains(&key), "{what}: the body echoes the key");
    }
}

#[tokio::test]
async fn unknown_well_formed_key_is_401_invalid_api_key() {
    let f = fixture().await;
    let stranger = hapnd_auth::ApiKey::generate(Environment::Live);
    let s = send(&f.auth, common::bearer(stranger.expose_secret())).await;
    assert_rejected(&s, AuthErrorKind::InvalidApiKey);
    assert_eq!(s.error.unwrap().key_hint(), Some(stranger.hint().as_str()));
}

#[tokio::test]
async fn the_body_is_the_documented_json() {
    let f = fixture().await;
    let s = send(&f.auth, request(None)).await;
    let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "missing_api_key");
    assert!(v["error"]["message"].as_str().unwrap().contains("Bearer"));
}

#[tokio::test]
async fn the_inner_service_sees_the_principal_but_not_the_authorization_header() {
    let f = fixture().await;
    let s = send(&f.auth, common::bearer(&f.live)).await;
    assert_eq!(s.saw_authorization.as_deref(), Some("no"));
    let p = s.principal.unwrap();
    assert_eq!(p.key_name(), "ci-pipeline");
    assert!(p.key_id().as_str().starts_with("key_"));
    assert_eq!(p.key_hint(), format!("sk_live_...{}", &f.live[42..]));

    // Keeping the header is opt-in.
    let svc = f
        .auth
        .layer()
        .strip_authorization(false)
        .layer(service_fn(echo));
    let s = seen(svc.oneshot(common::bearer(&f.live)).await.unwrap()).await;
    assert_eq!(s.saw_authorization.as_deref(), Some("yes"));
}

#[tokio::test]
async fn a_custom_rejection_replaces_the_body_and_keeps_the_error_in_extensions() {
    let f = fixture().await;
    let layer = f.auth.layer().rejection(|e: &hapnd_auth::AuthError| {
        http::Response::builder()
            .status(e.kind().status())
            .body(Body::from(format!("custom:{}", e.kind().code())))
            .unwrap()
    });
    let svc = layer.layer(service_fn(echo));
    let s = seen(svc.oneshot(request(None)).await.unwrap()).await;
    assert_eq!(s.status, 401);
    assert_eq!(s.body, "custom:missing_api_key");
    assert_eq!(s.error.unwrap().kind(), AuthErrorKind::MissingApiKey);
}

#[tokio::test]
async fn random_headers_never_panic_and_always_get_a_client_error() {
    let f = fixture().await;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        // xorshift64: deterministic, so a failure reproduces.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let prefixes: [&[u8]; 5] = [
        b"",
        b"Bearer ",
        b"bearer sk_live_",
        b"Bearer sk_test_",
        b"Basic ",
    ];
    let mut tried = 0;
    for _ in 0..20_000 {
        let mut value = prefixes[(next() % 5) as usize].to_vec();
        let len = (next() % 60) as usize;
        value.extend((0..len).map(|_| {
            let r = next();
            // Mostly key-like characters, sometimes anything.
            if r % 32 == 0 {
                (r >> 8) as u8
            } else {
                b"0123456789abcXYZ_ \t"[(r >> 8) as usize % 19]
            }
        }));
        let Ok(header) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", header);
        let err = f.auth.authenticate(&headers).await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                AuthErrorKind::MissingApiKey
                    | AuthErrorKind::InvalidRequest
                    | AuthErrorKind::InvalidApiKey
            ),
            "{:?} for {:?}",
            err.kind(),
            String::from_utf8_lossy(&value)
        );
        tried += 1;
    }
    assert!(tried > 5_000, "only {tried} valid header values generated");
}
