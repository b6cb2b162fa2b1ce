//! The whole service on arbitrary header maps (throttling on, a client address set): no
//! panic, never a 5xx for what a client sends, the `Authorization` header never reaches
//! the inner service, and no answer body carries a presented key.
#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use hapnd_auth::{
    Authenticator, ClientAddr, Environment, FailedAttemptLimit, MemoryKeyStore, NewKey,
};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

/// The authenticator, and one valid key the fuzzer may splice in (byte 0xFF marks it).
static AUTH: LazyLock<(Authenticator, String)> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let auth = Authenticator::builder(MemoryKeyStore::new())
            .throttle_failed_attempts(FailedAttemptLimit::new(1_000_000, Duration::from_millis(1)))
            .build();
        let created = auth
            .create_key(NewKey::new("acme", Environment::Live, "fuzz"))
            .await
            .unwrap();
        (auth, created.key.expose_secret().to_owned())
    })
});

async fn inner(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    assert!(!req.headers().contains_key(http::header::AUTHORIZATION));
    Ok(Response::new(Body::default()))
}

fuzz_target!(|data: &[u8]| {
    let (auth, valid) = &*AUTH;
    let mut request = Request::new(Body::default());
    // Records: name length, name, value length, value; 0xFF in a value becomes the valid key.
    let mut rest = data;
    while let [name_len, tail @ ..] = rest {
        let (name, tail) = tail.split_at((*name_len as usize % 24).min(tail.len()));
        let Some((value_len, tail)) = tail.split_first() else { break };
        let (value, tail) = tail.split_at((*value_len as usize).min(tail.len()));
        rest = tail;
        let name = if name.first() == Some(&b'A') {
            Ok(http::header::AUTHORIZATION)
        } else {
            HeaderName::from_bytes(name)
        };
        let value: Vec<u8> = value
            .iter()
            .flat_map(|&b| if b == 0xFF { valid.as_bytes().to_vec() } else { vec![b] })
            .collect();
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(&value)) {
            request.headers_mut().append(name, value);
        }
    }
    request
        .extensions_mut()
        .insert(ClientAddr(([192, 0, 2, data.len() as u8], 1).into()));
    let presented: Vec<Vec<u8>> = request
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let svc = auth.layer().layer(tower::service_fn(inner));
    RUNTIME.block_on(async {
        let response = svc.oneshot(request).await.unwrap();
        let status = response.status();
        assert!(!status.is_server_error(), "{status} for {data:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        for value in presented {
            // A key-like token (fixed texts hold no such word: hints have dots).
            if let Some(token) = value.split(|&b| b == b' ').next_back()
                && token.len() >= 20
                && token.starts_with(b"sk_")
                && token.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                assert!(!body.windows(token.len()).any(|w| w == token));
            }
        }
    });
});
