//! What building a rejection allocates: a fixed message's JSON body nothing (it is built
//! at compile time), a body with the key's hint one allocation, the header map what a map
//! of its three headers costs (it is cloned from one built at the first rejection). Counted with a global allocator that tallies this thread's allocations, so tests
//! running in parallel do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
mod common;

use std::time::Duration;

use hapnd_auth::{
    ApiKey, AuthError, AuthErrorKind, Authenticator, ClientAddr, Environment, FailedAttemptLimit,
    JsonRejection, MemoryKeyStore, NewKey, RejectionResponse,
};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-local may already be gone while a thread exits.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

/// What a header map with the rejection's three headers costs on its own: the map's
/// tables, whatever the `http` version allocates for them.
fn header_map_allocations() -> u64 {
    let (map, n) = allocations(|| {
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        map.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        map.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        map
    });
    drop(map);
    n
}

/// Rejections of each shape the request path produces, with the allocations their body
/// and headers may cost beyond the map: none for a fixed message, one for a message with
/// the key's hint, one for a `Retry-After` value (the map has its place already).
async fn errors() -> Vec<(AuthError, u64)> {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "ci"))
        .await
        .unwrap();
    let mut bad_checksum = ApiKey::generate(Environment::Live)
        .expose_secret()
        .to_owned();
    let flipped = if bad_checksum.as_bytes()[20] == b'a' {
        "b"
    } else {
        "a"
    };
    bad_checksum.replace_range(20..21, flipped);
    let unknown = ApiKey::generate(Environment::Live);
    let mut out = vec![
        (auth.authenticate_key(&bad_checksum).await.unwrap_err(), 0),
        (
            auth.authenticate_key(unknown.expose_secret())
                .await
                .unwrap_err(),
            1,
        ),
        (auth.authenticate(&HeaderMap::new()).await.unwrap_err(), 0),
    ];
    auth.revoke(&created.record.id).await.unwrap();
    out.push((
        auth.authenticate_key(created.key.expose_secret())
            .await
            .unwrap_err(),
        1,
    ));

    // 503 with Retry-After: the store fails a lookup (a fixed message, and its hint).
    let store = common::TestStore::new();
    store.set_failing(true);
    let failing = Authenticator::new(store);
    let unavailable = failing
        .authenticate_key(unknown.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(unavailable.kind(), AuthErrorKind::Unavailable);
    let hinted = u64::from(unavailable.key_hint().is_some());
    out.push((unavailable, 1 + hinted));

    // 429 with Retry-After: a client whose one failed attempt is spent, through the layer.
    let throttling = Authenticator::builder(MemoryKeyStore::new())
        .throttle_failed_attempts(FailedAttemptLimit::new(1, Duration::from_secs(60)))
        .build();
    let service = throttling
        .layer()
        .layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let mut throttled = None;
    for _ in 0..3 {
        let mut request = http::Request::new(());
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        request
            .extensions_mut()
            .insert(ClientAddr("192.0.2.7:443".parse().unwrap()));
        let response = service.clone().oneshot(request).await.unwrap();
        throttled = response.extensions().get::<AuthError>().cloned();
    }
    let throttled = throttled.expect("the layer puts its error in the response");
    assert_eq!(throttled.kind(), AuthErrorKind::TooManyFailedAttempts);
    out.push((throttled, 1));
    out
}

#[tokio::test]
async fn a_rejection_allocates_only_its_header_map_and_a_hinted_body() {
    let map = header_map_allocations();
    let errors = errors().await;
    // The first rejection builds the per-kind header maps, once per process.
    drop(JsonRejection.rejection(&errors[0].0) as Response<Full<Bytes>>);
    for (error, body) in errors {
        let (response, n): (Response<Full<Bytes>>, u64) =
            allocations(|| JsonRejection.rejection(&error));
        assert_eq!(
            n,
            map + body,
            "{:?}: {n} allocations, expected the header map's {map} and {body} for the body \
             and Retry-After",
            error.kind()
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], error.kind().code());
        assert_eq!(json["error"]["message"], error.to_string());
    }
}
