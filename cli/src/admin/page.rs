//! The API Keys page: server-rendered (askama), signed in with the admin token.
//!
//! Every response carries a strict `Content-Security-Policy` (scripts and styles from this
//! origin only: the one script is the copy button) and `Cache-Control: no-store`. A key is
//! shown once, in the response to the POST that created it; it is never put in a URL, the
//! session or a log line. Forms that create a key carry a one-time id, so a reload that
//! submits one again creates nothing and shows the list instead.

use std::time::SystemTime;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hapnd_auth::{KeyRecord, KeyStore, StoreError, StoreErrorKind};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use super::AdminState;
use super::access::{Denied, client_ip};
use super::api::{key_id, new_key};
use super::session::{SESSION_TTL, same};
use super::views::{CreatedPage, KeysPage, LoginPage, RevokePage, Row, message, render};

const COOKIE_NAME: &str = "hapnd_admin_session";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes() -> Router<AdminState> {
    let headers = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/keys") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/keys", get(keys_page).post(create))
        .route("/keys/{id}/revoke", get(confirm_revoke).post(revoke))
        .route("/keys/{id}/rotate", post(rotate))
        .route("/static/admin.css", get(css))
        .route("/static/copy.js", get(js));
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}

/// A signed-in browser: its session cookie and the session's CSRF token.
struct SignedIn {
    cookie: String,
    csrf: String,
}

impl FromRequestParts<AdminState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        if !state.access.enabled() {
            return Err(disabled());
        }
        session_cookie(&parts.headers)
            .and_then(|cookie| {
                let csrf = state.access.sessions.csrf(&cookie)?;
                Some(SignedIn { cookie, csrf })
            })
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

impl SignedIn {
    /// The refusal of a state-changing form whose CSRF token is not this session's.
    fn csrf_refusal(&self, presented: &str) -> Option<Response> {
        if same(&self.csrf, presented) {
            None
        } else {
            Some(message(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from this page (its CSRF token is missing or wrong). \
                 Reload the page and try again.",
                "/keys",
            ))
        }
    }

    /// A one-time id for a form that creates a key.
    fn form_id(&self, state: &AdminState) -> String {
        state
            .access
            .sessions
            .issue_form(&self.cookie)
            .unwrap_or_default()
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then(|| value.to_owned())
        })
}

fn set_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> (HeaderName, String) {
    // The listener speaks plain HTTP; behind a TLS-terminating proxy, ask for `Secure`.
    let tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if tls { "; Secure" } else { "" };
    (
        header::SET_COOKIE,
        format!(
            "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
        ),
    )
}

fn disabled() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "API Keys page disabled",
        &format!(
            "The admin page is disabled: start `hapnd-auth serve` with --admin-token-file or {}.",
            super::TOKEN_ENV
        ),
        "/",
    )
}

fn store_failure(e: &StoreError, back: &str) -> Response {
    let text = hapnd_auth::redact_keys(&e.to_string());
    match e.kind() {
        StoreErrorKind::NotFound => message(StatusCode::NOT_FOUND, "Key not found", &text, back),
        StoreErrorKind::Invalid => message(StatusCode::BAD_REQUEST, "Invalid request", &text, back),
        _ => {
            tracing::warn!(error = %e, "API Keys page: the key store failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Key store unavailable",
                "The key store is unavailable: try again in a moment.",
                back,
            )
        }
    }
}

/// `/keys?tenant=...`, percent-encoding the tenant.
fn keys_url(tenant: &str, extra: &str) -> String {
    let mut url = String::from("/keys?tenant=");
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url.push_str(extra);
    url
}

async fn login_page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !state.access.enabled() {
        return disabled();
    }
    let signed_in = session_cookie(&headers).and_then(|c| state.access.sessions.csrf(&c));
    if signed_in.is_some() {
        return Redirect::to("/keys").into_response();
    }
    render(StatusCode::OK, &LoginPage { error: None })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AdminState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    let client = client_ip(&parts.extensions);
    match state
        .access
        .check(client, Some(form.token.trim().as_bytes()))
    {
        Ok(()) => {
            let cookie = state.access.sessions.create();
            tracing::info!(%client, "signed in to the API Keys page");
            let cookie = set_cookie(&cookie, SESSION_TTL.as_secs(), &parts.headers);
            ([cookie], Redirect::to("/keys")).into_response()
        }
        Err(Denied::Disabled) => disabled(),
        Err(Denied::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            let error =
                format!("Too many failed attempts from this address: try again in {secs} seconds.");
            let mut response = render(
                StatusCode::TOO_MANY_REQUESTS,
                &LoginPage { error: Some(error) },
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Err(Denied::Invalid) => render(
            StatusCode::FORBIDDEN,
            &LoginPage {
                error: Some("That is not the admin token.".to_owned()),
            },
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
    form: String,
}

async fn logout(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = signed_in.csrf_refusal(&form.csrf) {
        return refused;
    }
    state.access.sessions.remove(&signed_in.cookie);
    ([set_cookie("", 0, &headers)], Redirect::to("/login")).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeysQuery {
    tenant: String,
    revoked: String,
}

async fn keys_page(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Query(query): Query<KeysQuery>,
) -> Response {
    let tenant = query.tenant.trim().to_owned();
    let keys = match list(&state, &tenant).await {
        Ok(keys) => keys,
        Err(e) => return store_failure(&e, "/keys"),
    };
    let notice = keys.iter().find(|k| k.id == query.revoked).map(|k| {
        format!(
            "Revoked {} ({}): requests with it are rejected from now on.",
            k.name, k.hint
        )
    });
    let page = KeysPage {
        csrf: signed_in.csrf.clone(),
        form: signed_in.form_id(&state),
        tenant,
        keys,
        notice,
        error: None,
    };
    render(StatusCode::OK, &page)
}

async fn list(state: &AdminState, tenant: &str) -> Result<Vec<Row>, StoreError> {
    if tenant.is_empty() {
        return Ok(Vec::new());
    }
    let now = SystemTime::now();
    let records = state.store.list(tenant).await?;
    Ok(records.iter().map(|r| Row::new(r, now)).collect())
}

/// The keys page again, with what was wrong with the submitted form.
async fn refused(
    state: &AdminState,
    signed_in: &SignedIn,
    tenant: String,
    error: String,
) -> Response {
    let keys = match list(state, &tenant).await {
        Ok(keys) => keys,
        Err(e) => return store_failure(&e, "/keys"),
    };
    let page = KeysPage {
        csrf: signed_in.csrf.clone(),
        form: signed_in.form_id(state),
        tenant,
        keys,
        notice: None,
        error: Some(hapnd_auth::redact_keys(&error)),
    };
    render(StatusCode::BAD_REQUEST, &page)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateForm {
    csrf: String,
    form: String,
    tenant: String,
    name: String,
    environment: String,
    expires_in: String,
}

async fn create(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Some(refused) = signed_in.csrf_refusal(&form.csrf) {
        return refused;
    }
    let tenant = form.tenant.trim().to_owned();
    if !state
        .access
        .sessions
        .take_form(&signed_in.cookie, &form.form)
    {
        // Submitted before (a reload of the page that showed the key): show the list.
        return Redirect::to(&keys_url(&tenant, "")).into_response();
    }
    let new = match new_key(
        tenant.clone(),
        &form.environment,
        form.name.trim().to_owned(),
        Some(&form.expires_in),
    ) {
        Ok(new) => new,
        Err(error) => return refused(&state, &signed_in, tenant, error).await,
    };
    match state.auth.create_key(new).await {
        Ok(created) => {
            tracing::info!(key_id = %created.record.id, tenant = ?created.record.tenant,
                environment = %created.record.environment, "API Keys page created a key");
            let page = CreatedPage {
                csrf: signed_in.csrf,
                heading: "Your new API key",
                secret: created.key.expose_secret().to_owned(),
                tenant,
                key: Row::new(&created.record, SystemTime::now()),
                replaces: None,
            };
            render(StatusCode::OK, &page)
        }
        Err(e) if e.kind() == StoreErrorKind::Invalid => {
            refused(&state, &signed_in, tenant, e.to_string()).await
        }
        Err(e) => store_failure(&e, &keys_url(&tenant, "")),
    }
}

async fn confirm_revoke(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
    let record = match existing(&state, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    if record.is_revoked() {
        return Redirect::to(&keys_url(&record.tenant, "")).into_response();
    }
    let page = RevokePage {
        csrf: signed_in.csrf,
        tenant: record.tenant.clone(),
        key: Row::new(&record, SystemTime::now()),
    };
    render(StatusCode::OK, &page)
}

/// The record of key `id`, or the page saying why there is none.
async fn existing(state: &AdminState, id: &str) -> Result<KeyRecord, Response> {
    let id = key_id(id).map_err(|_| {
        message(
            StatusCode::BAD_REQUEST,
            "Invalid key id",
            "That is not a key id.",
            "/keys",
        )
    })?;
    match state.store.get(&id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(message(
            StatusCode::NOT_FOUND,
            "Key not found",
            &format!("No key has id {id}."),
            "/keys",
        )),
        Err(e) => Err(store_failure(&e, "/keys")),
    }
}

async fn revoke(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = signed_in.csrf_refusal(&form.csrf) {
        return refused;
    }
    let record = match existing(&state, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    // Returns once this gateway rejects the key.
    match state.auth.revoke(&record.id).await {
        Ok(record) => {
            tracing::info!(key_id = %record.id, tenant = ?record.tenant, "API Keys page revoked a key");
            Redirect::to(&keys_url(
                &record.tenant,
                &format!("&revoked={}", record.id),
            ))
            .into_response()
        }
        Err(e) => store_failure(&e, &keys_url(&record.tenant, "")),
    }
}

async fn rotate(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = signed_in.csrf_refusal(&form.csrf) {
        return refused;
    }
    let old = match existing(&state, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    if !state
        .access
        .sessions
        .take_form(&signed_in.cookie, &form.form)
    {
        return Redirect::to(&keys_url(&old.tenant, "")).into_response();
    }
    match state.auth.rotate(&old.id).await {
        Ok(created) => {
            tracing::info!(key_id = %created.record.id, replaces = %old.id, tenant = ?old.tenant,
                "API Keys page rotated a key");
            let now = SystemTime::now();
            let page = CreatedPage {
                csrf: signed_in.csrf,
                heading: "Your replacement API key",
                secret: created.key.expose_secret().to_owned(),
                tenant: old.tenant.clone(),
                key: Row::new(&created.record, now),
                replaces: Some(Row::new(&old, now)),
            };
            render(StatusCode::OK, &page)
        }
        Err(e) => store_failure(&e, &keys_url(&old.tenant, "")),
    }
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/admin.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/copy.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_percent_encoded_in_redirects() {
        assert_eq!(keys_url("acme", ""), "/keys?tenant=acme");
        assert_eq!(
            keys_url("a&b=c d/é", "&revoked=key_1"),
            "/keys?tenant=a%26b%3Dc%20d%2F%C3%A9&revoked=key_1"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hapnd_admin_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("xhapnd_admin_session=abc"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}
