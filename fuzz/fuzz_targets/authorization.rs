//! The `Authorization` parser, through the public entry point: any header value is
//! answered with a rejection a client can act on (never a 5xx, never a panic), and the
//! answer never carries the value.
#![no_main]

use std::sync::LazyLock;

use hapnd_auth::{Authenticator, AuthErrorKind, MemoryKeyStore};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});
static AUTH: LazyLock<Authenticator> =
    LazyLock::new(|| RUNTIME.block_on(async { Authenticator::new(MemoryKeyStore::new()) }));

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let error = RUNTIME
        .block_on(AUTH.authenticate(&headers))
        .expect_err("an empty store admits nobody");
    assert!(
        matches!(
            error.kind(),
            AuthErrorKind::MissingApiKey | AuthErrorKind::InvalidRequest | AuthErrorKind::InvalidApiKey
        ),
        "{:?} for {data:?}",
        error.kind()
    );
    assert!(error.kind().status().is_client_error());
    // The token (the last word) never comes back. Words of the fixed messages and hints
    // are under 20 characters, so a longer token found in a message was echoed.
    let message = error.to_string();
    if let Some(token) = data.split(|b| *b == b' ' || *b == b'\t').next_back()
        && token.len() >= 20
    {
        assert!(!message.as_bytes().windows(token.len()).any(|w| w == token));
    }
});
