//! Forward auth: the routes a proxy (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`, Envoy `ext_authz`) asks before letting a request through.
//!
//! | route | admits |
//! |---|---|
//! | `/auth/verify`, `/auth/verify/`, `/auth/verify/*` | any valid key |
//! | `/auth/verify-live`, `/auth/verify-live/`, `/auth/verify-live/*` | live keys; sandbox keys get 403 `wrong_environment` |
//! | `/auth/verify-sandbox`, `...-sandbox/`, `...-sandbox/*` | sandbox keys; live keys get 403 |
//! | `/auth/verify-scope/SCOPE`, `.../SCOPE/`, `.../SCOPE/*` | keys that carry SCOPE, or no scopes at all (full access); others get 403 `insufficient_scope` |
//!
//! The required environment is part of the path, not a query parameter or a header: Envoy
//! appends the original path and query to its `path_prefix` (a query parameter would end up
//! in the middle), Traefik forwards every client header to the auth service (a header the
//! proxy forgot to set could come from the client), and a path is the one thing every proxy's
//! configuration fixes. The `/*` forms exist for Envoy; `/` for Envoy asking about `/`.
//!
//! A 200 carries the identity in `X-Hapnd-Tenant`, `X-Hapnd-Environment`, `X-Hapnd-Key-Id`,
//! `X-Hapnd-Key-Name` (percent-encoded UTF-8) and `X-Hapnd-Scopes` (space-separated; empty
//! for a key without scopes, which has full access) and `Cache-Control: no-store`; never the key. A rejection carries the layer's JSON body,
//! `WWW-Authenticate` and `Retry-After`, and its code in `X-Hapnd-Error`, because proxies
//! replace bodies.

use axum::extract::Path;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use hapnd_auth::{AuthError, Authenticator, Environment, Principal, RequireEnvironmentLayer};

/// The header carrying a rejection's `error.code`.
pub(crate) const ERROR_HEADER: HeaderName = HeaderName::from_static("x-hapnd-error");

/// All verify routes, each behind the authenticator's layer.
pub(crate) fn router(auth: &Authenticator) -> Router {
    Router::new()
        .merge(routes("/auth/verify", auth, None))
        .merge(routes("/auth/verify-live", auth, Some(Environment::Live)))
        .merge(routes(
            "/auth/verify-sandbox",
            auth,
            Some(Environment::Sandbox),
        ))
        .merge(scope_routes(auth))
}

/// `/auth/verify-scope/{scope}`: the scope is in the path the proxy's configuration
/// fixes, like the environment.
fn scope_routes(auth: &Authenticator) -> Router {
    const BASE: &str = "/auth/verify-scope/{scope}";
    Router::new()
        .route(BASE, any(verify_scope))
        .route(&format!("{BASE}/"), any(verify_scope))
        .route(&format!("{BASE}/{{*original}}"), any(verify_scope_original))
        .route_layer(auth.layer())
        .route_layer(map_response(tag_rejection))
}

async fn verify_scope_original(
    Path((scope, _original)): Path<(String, String)>,
    principal: Extension<Principal>,
) -> Response {
    verify_scope(Path(scope), principal).await
}

/// 200 as [`verify`] when the key carries `scope` (or no scopes); 403 `insufficient_scope`
/// otherwise. A route for a string that is not a scope is the proxy's misconfiguration:
/// 500 `invalid_scope_route`, never a yes.
async fn verify_scope(Path(scope): Path<String>, Extension(p): Extension<Principal>) -> Response {
    if !hapnd_auth::is_valid_scope(&scope) {
        tracing::error!(
            route_scope = %scope.escape_debug(),
            "a /auth/verify-scope/ route names no valid scope: fix the proxy configuration"
        );
        let body = r#"{"error":{"type":"authentication_error","code":"invalid_scope_route","message":"this forward-auth route names no valid scope; ask the operator"}}"#;
        let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            ERROR_HEADER,
            HeaderValue::from_static("invalid_scope_route"),
        );
        return response;
    }
    match p.require_scope(&scope) {
        Ok(()) => verify(Extension(p)).await,
        // The layer's JSON rejection; `tag_rejection` adds `X-Hapnd-Error`.
        Err(error) => error.into_response(),
    }
}

fn routes(base: &str, auth: &Authenticator, require: Option<Environment>) -> Router {
    let mut router = Router::new()
        .route(base, any(verify))
        .route(&format!("{base}/"), any(verify))
        .route(&format!("{base}/{{*original}}"), any(verify));
    if let Some(environment) = require {
        router = router.route_layer(RequireEnvironmentLayer::new(environment));
    }
    router
        .route_layer(auth.layer())
        .route_layer(map_response(tag_rejection))
}

/// Copies a rejection's code into `X-Hapnd-Error`, which survives proxies that drop bodies.
async fn tag_rejection(mut response: Response) -> Response {
    if let Some(code) = response
        .extensions()
        .get::<AuthError>()
        .map(|e| e.kind().code())
    {
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(code));
    }
    response
}

/// 200 with the identity in headers. An identity that cannot be written as a header fails
/// closed (500 `identity_not_encodable`) rather than being let through without it.
async fn verify(Extension(p): Extension<Principal>) -> Response {
    let Some(identity) = identity_headers(&p) else {
        return not_encodable();
    };
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in identity {
        headers.insert(name, value);
    }
    response
}

/// The identity headers of the forward-auth contract, as the verify routes answer them
/// and `serve --upstream` sends them to the backend: `X-Hapnd-Tenant`,
/// `X-Hapnd-Environment`, `X-Hapnd-Key-Id` as they are, `X-Hapnd-Key-Name`
/// percent-encoded. `None` (logged) when the identity cannot be written as headers: the
/// caller fails closed.
pub(crate) fn identity_headers(p: &Principal) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::with_capacity(5);
    for (name, value) in [
        (TENANT, p.tenant()),
        (ENVIRONMENT, p.environment().as_str()),
        (KEY_ID, p.key_id().as_str()),
    ] {
        match header_value(value) {
            Some(value) => headers.push((name, value)),
            None => {
                tracing::error!(
                    key_id = %p.key_id().as_str().escape_debug(),
                    field = name.as_str(),
                    "refused a key whose identity cannot be sent as a header"
                );
                return None;
            }
        }
    }
    // Always sent, so a proxy copying it always overwrites what the client sent (Caddy
    // 2.6 would set a missing one to its literal placeholder).
    if let Some(name) = header_value(&percent_encode(p.key_name())) {
        headers.push((KEY_NAME, name));
    }
    // Scopes are of the scope grammar, joined by spaces: always a valid value. Empty for a
    // key without scopes (full access), and always sent, for the same reason as the name.
    let scopes = p.scopes().collect::<Vec<_>>().join(" ");
    if let Ok(value) = HeaderValue::from_str(&scopes) {
        headers.push((SCOPES, value));
    }
    Some(headers)
}

const TENANT: HeaderName = HeaderName::from_static("x-hapnd-tenant");
const ENVIRONMENT: HeaderName = HeaderName::from_static("x-hapnd-environment");
const KEY_ID: HeaderName = HeaderName::from_static("x-hapnd-key-id");
const KEY_NAME: HeaderName = HeaderName::from_static("x-hapnd-key-name");
const SCOPES: HeaderName = HeaderName::from_static("x-hapnd-scopes");

/// Names are free text: everything but RFC 3986's unreserved characters is `%XX` (UTF-8).
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            // No `format!` per byte: this runs on every verified request.
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

/// Visible ASCII and inner spaces only: what every proxy passes on unchanged.
fn header_value(text: &str) -> Option<HeaderValue> {
    let ok = !text.is_empty()
        && text.trim() == text
        && text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    ok.then(|| HeaderValue::from_str(text).ok()).flatten()
}

/// 500 `identity_not_encodable`, for a key whose identity [`identity_headers`] refused.
pub(crate) fn not_encodable() -> Response {
    let body = r#"{"error":{"type":"authentication_error","code":"identity_not_encodable","message":"this key's identity cannot be sent as a header; ask the operator"}}"#;
    let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        ERROR_HEADER,
        HeaderValue::from_static("identity_not_encodable"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use axum::body::Body;
    use axum::http::Request;
    use hapnd_auth::{
        ApiKey, KeyHash, KeyId, KeyRecord, KeyStore, LastUsed, MemoryKeyStore, NewKey, StoreError,
    };
    use tower::ServiceExt;

    use super::*;

    async fn call(app: &Router, path: &str, key: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    async fn setup() -> (Router, String, String) {
        let auth = Authenticator::new(MemoryKeyStore::new());
        let live = auth
            .create_key(NewKey::new("acme", Environment::Live, "ci pipeline"))
            .await
            .unwrap();
        let sandbox = auth
            .create_key(NewKey::new("acme", Environment::Sandbox, "naïve"))
            .await
            .unwrap();
        (
            router(&auth),
            live.key.expose_secret().to_owned(),
            sandbox.key.expose_secret().to_owned(),
        )
    }

    #[tokio::test]
    async fn success_carries_the_identity_and_no_store_on_every_form_of_the_path() {
        let (app, live, _) = setup().await;
        for path in [
            "/auth/verify",
            "/auth/verify/",
            "/auth/verify/v1/orders?limit=5",
            "/auth/verify-live",
            "/auth/verify-live/",
            "/auth/verify-live/x/y",
        ] {
            let r = call(&app, path, Some(&live)).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(header(&r, "x-hapnd-tenant"), Some("acme"), "{path}");
            assert_eq!(header(&r, "x-hapnd-environment"), Some("live"));
            assert!(header(&r, "x-hapnd-key-id").unwrap().starts_with("key_"));
            assert_eq!(header(&r, "x-hapnd-key-name"), Some("ci%20pipeline"));
            assert_eq!(header(&r, "cache-control"), Some("no-store"));
            assert_eq!(header(&r, "x-hapnd-error"), None);
            for (_, value) in r.headers() {
                assert!(
                    !value
                        .as_bytes()
                        .windows(20)
                        .any(|w| live.as_bytes()[8..28] == *w)
                );
            }
        }
    }

    #[tokio::test]
    async fn the_environment_routes_admit_one_environment() {
        let (app, live, sandbox) = setup().await;
        let r = call(&app, "/auth/verify-live/orders", Some(&sandbox)).await;
        assert_eq!(r.status(), 403);
        assert_eq!(header(&r, "x-hapnd-error"), Some("wrong_environment"));
        assert_eq!(header(&r, "x-hapnd-tenant"), None);
        let r = call(&app, "/auth/verify-sandbox", Some(&live)).await;
        assert_eq!(r.status(), 403);
        assert_eq!(header(&r, "x-hapnd-error"), Some("wrong_environment"));
        let r = call(&app, "/auth/verify-sandbox/", Some(&sandbox)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-hapnd-environment"), Some("sandbox"));
        // Free text, percent-encoded: any name can be sent.
        assert_eq!(header(&r, "x-hapnd-key-name"), Some("na%C3%AFve"));
        // Not a verify route: no prefix match on the environment's name.
        assert_eq!(
            call(&app, "/auth/verify-livex", Some(&live)).await.status(),
            404
        );
    }

    #[tokio::test]
    async fn the_scope_routes_admit_keys_with_the_scope_and_say_which_scopes_a_key_has() {
        let auth = Authenticator::new(MemoryKeyStore::new());
        let key = |scopes: &'static [&'static str]| {
            let auth = auth.clone();
            async move {
                let new =
                    NewKey::new("acme", Environment::Live, "k").scopes(scopes.iter().copied());
                auth.create_key(new)
                    .await
                    .unwrap()
                    .key
                    .expose_secret()
                    .to_owned()
            }
        };
        let reader = key(&["events:read"]).await;
        let writer = key(&["events:read", "events:write"]).await;
        let full = key(&[]).await;
        let app = router(&auth);
        for path in [
            "/auth/verify-scope/events:write",
            "/auth/verify-scope/events:write/",
            "/auth/verify-scope/events:write/v1/events?x=1",
        ] {
            let r = call(&app, path, Some(&reader)).await;
            assert_eq!(r.status(), 403, "{path}");
            assert_eq!(header(&r, "x-hapnd-error"), Some("insufficient_scope"));
            assert_eq!(
                header(&r, "www-authenticate"),
                Some(r#"Bearer realm="hapnd", error="insufficient_scope", scope="events:write""#)
            );
            assert_eq!(header(&r, "x-hapnd-tenant"), None);
            let r = call(&app, path, Some(&writer)).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(
                header(&r, "x-hapnd-scopes"),
                Some("events:read events:write")
            );
            let r = call(&app, path, Some(&full)).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(header(&r, "x-hapnd-scopes"), Some(""));
        }
        // Every verify route says which scopes the key has.
        let r = call(&app, "/auth/verify", Some(&reader)).await;
        assert_eq!(header(&r, "x-hapnd-scopes"), Some("events:read"));
        // A route naming no scope is the proxy's mistake: never a yes.
        let r = call(&app, "/auth/verify-scope/Events:*", Some(&full)).await;
        assert_eq!(r.status(), 500);
        assert_eq!(header(&r, "x-hapnd-error"), Some("invalid_scope_route"));
        // Without a key: the layer's 401, before any scope.
        let r = call(&app, "/auth/verify-scope/events:write", None).await;
        assert_eq!(r.status(), 401);
    }

    #[tokio::test]
    async fn every_rejection_carries_its_code_in_a_header() {
        let (app, live, _) = setup().await;
        let unknown = ApiKey::generate(Environment::Live);
        let cases = [
            (None, 401, "missing_api_key"),
            (Some(""), 400, "invalid_request"),
            (Some("sk_live_nope"), 401, "invalid_api_key"),
            (Some(unknown.expose_secret()), 401, "invalid_api_key"),
        ];
        for path in ["/auth/verify", "/auth/verify/", "/auth/verify-live/a"] {
            for (key, status, code) in cases {
                let r = call(&app, path, key).await;
                assert_eq!(r.status(), status, "{path} {code}");
                assert_eq!(header(&r, "x-hapnd-error"), Some(code), "{path}");
                assert!(header(&r, "www-authenticate").is_some());
            }
        }
        let _ = live;
    }

    /// A store that hands back one record as it is, past every write-side check.
    struct Raw(KeyRecord);

    impl KeyStore for Raw {
        async fn lookup(&self, _: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
            Ok(Some(self.0.clone()))
        }
        async fn insert(&self, _: &KeyRecord) -> Result<(), StoreError> {
            unimplemented!("read-only test store")
        }
        async fn get(&self, _: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
            Ok(Some(self.0.clone()))
        }
        async fn list(&self, _: &str) -> Result<Vec<KeyRecord>, StoreError> {
            Ok(vec![self.0.clone()])
        }
        async fn revoke(&self, _: &KeyId, _: SystemTime) -> Result<KeyRecord, StoreError> {
            unimplemented!("read-only test store")
        }
        async fn record_usage(&self, _: &[LastUsed]) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_identity_that_cannot_be_a_header_fails_closed() {
        let key = ApiKey::generate(Environment::Live);
        let mut record = KeyRecord::for_key(
            &key,
            NewKey::new("acme", Environment::Live, "n"),
            SystemTime::now(),
        );
        // Written past validation, as SQL by hand could: the library refuses it on read.
        record.tenant = "acme\r\nx-evil: 1".to_owned();
        let app = router(&Authenticator::new(Raw(record)));
        let r = call(&app, "/auth/verify", Some(key.expose_secret())).await;
        assert_eq!(r.status(), 503);
        assert_eq!(header(&r, "x-hapnd-error"), Some("auth_unavailable"));
        assert_eq!(header(&r, "x-hapnd-tenant"), None);
        assert_eq!(header(&r, "x-evil"), None);
    }
}
