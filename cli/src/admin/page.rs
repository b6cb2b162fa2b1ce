//! The API Keys page: server-rendered (askama), signed in with the admin token (every
//! tenant) or a tenant-scoped admin credential (its tenant only, shown straight away).
//!
//! Every response carries a strict `Content-Security-Policy` (scripts and styles from this
//! origin only: the one script is the copy button) and `Cache-Control: no-store`. A key is
//! shown once, in the response to the POST that created it; it is never put in a URL, the
//! session or a log line. Forms that create a key carry a one-time id, so a reload that
//! submits one again creates nothing and shows the list instead. A state-changing request
//! a browser sent from another site (`Origin`, `Sec-Fetch-Site`) is refused before
//! anything else, sign-in included.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header, request::Parts,
};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hapnd_auth::{
    Actor, AuditTrail, EventQuery, KeyId, KeyRecord, KeyStore, StoreError, StoreErrorKind,
};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use super::AdminState;
use super::access::{Denied, OtherTenant, Scope, client_ip};
use super::api::{key_id, new_key, with_policy};
use super::session::{SESSION_TTL, same};
use super::views::{
    CreatedPage, EventRow, HistoryPage, KeysPage, LoginPage, RevokePage, Row, message, render,
};

/// The session cookie's name over plain HTTP.
pub(crate) const COOKIE_NAME: &str = "hapnd_admin_session";
/// Its name behind TLS: browsers keep a `__Host-` cookie only if it is `Secure`, has
/// `Path=/` and no `Domain`, so no subdomain and no plain-HTTP origin can set it.
pub(crate) const TLS_COOKIE_NAME: &str = "__Host-hapnd_admin_session";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// What every page response carries. `Referrer-Policy: same-origin`, not `no-referrer`:
/// under `no-referrer` browsers send `Origin: null` with the page's own form posts, which
/// [`refuse_cross_site`] could not tell from another site's; `same-origin` still sends
/// nothing to other sites.
const PAGE_HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "same-origin"),
];

/// Adds the page's headers to a response made outside its routes.
pub(super) fn with_page_headers(mut response: Response) -> Response {
    for (name, value) in PAGE_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

pub(super) fn routes() -> Router<AdminState> {
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/keys") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/keys", get(keys_page).post(create))
        .route("/keys/{id}/revoke", get(confirm_revoke).post(revoke))
        .route("/keys/{id}/rotate", post(rotate))
        .route("/history", get(history))
        .route("/static/admin.css", get(css))
        .route("/static/copy.js", get(js))
        .layer(axum::middleware::from_fn(refuse_cross_site));
    for (name, value) in PAGE_HEADERS {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}

/// A signed-in browser: its session cookie, the session's CSRF token, and what it may
/// manage. A session signed in with a tenant credential checks on every request that the
/// credential is still unrevoked (no cache): revoking it ends the session's powers at once.
struct SignedIn {
    cookie: String,
    csrf: String,
    scope: Scope,
    /// Who the audit trail records for this session's changes.
    actor: Actor,
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
        let to_login = || Redirect::to("/login").into_response();
        let cookie = session_cookie(&parts.headers).ok_or_else(to_login)?;
        let (csrf, scope) = state.access.sessions.get(&cookie).ok_or_else(to_login)?;
        if let Scope::Tenant { credential, .. } = &scope {
            match state.store.live_credential_by_id(credential).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::info!(credential = %credential,
                        "ended an API Keys page session: its admin credential is revoked");
                    state.access.sessions.remove(&cookie);
                    return Err(to_login());
                }
                Err(e) => return Err(store_failure(&e, "/keys")),
            }
        }
        let actor = scope.page_actor(client_ip(&parts.extensions));
        Ok(SignedIn {
            cookie,
            csrf,
            scope,
            actor,
        })
    }
}

impl SignedIn {
    /// The tenant this session may show for `requested` (a tenant credential's own when
    /// none is asked for), or the page refusing another tenant. Every handler that takes a
    /// tenant from the request goes through here.
    fn tenant_or(&self, requested: &str) -> Result<String, AnotherTenant> {
        self.scope
            .tenant_or(requested.trim())
            .map(str::to_owned)
            .map_err(|OtherTenant| AnotherTenant)
    }

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

/// The page refusing a tenant the session's credential does not cover.
struct AnotherTenant;

impl IntoResponse for AnotherTenant {
    fn into_response(self) -> Response {
        message(
            StatusCode::FORBIDDEN,
            "Another tenant",
            "This session was signed in with an admin credential for one other tenant: it \
             cannot see or change this tenant's keys.",
            "/keys",
        )
    }
}

/// Refuses a state-changing request (anything but GET and HEAD) that a browser sent from
/// another site, before its token or session is looked at: a sign-in from a hostile page
/// neither counts as a failure nor starts a session. Browsers send `Origin` with every
/// POST, no-cors fetches and forms included, and `Sec-Fetch-Site` with every request;
/// clients that send neither (curl) are not browsers and are not refused.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let safe = request.method() == Method::GET || request.method() == Method::HEAD;
    if safe || !from_another_site(request.uri(), request.headers()) {
        return next.run(request).await;
    }
    // At debug: a hostile page can send these in a loop, and each one is refused anyway.
    tracing::debug!(client = %client_ip(request.extensions()), path = request.uri().path(),
        "refused a cross-site request to the API Keys page");
    message(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This request was sent from another site (its Origin or Sec-Fetch-Site header says \
         so): the API Keys page accepts forms from its own pages only.",
        "/keys",
    )
}

/// Whether `Sec-Fetch-Site` is other than `same-origin` or `none` (typed by the user), or
/// `Origin` is other than this listener's own (the request's authority, which the host
/// check has accepted).
fn from_another_site(uri: &Uri, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let origin = origin.to_str().unwrap_or_default();
    let origin = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    !matches!((origin, authority), (Some(o), Some(a)) if o.eq_ignore_ascii_case(a))
}

/// Whether the request came through a TLS-terminating proxy (`X-Forwarded-Proto: https`).
/// A client that sends it itself only gets a `Secure` cookie its browser drops on plain
/// HTTP: it signs itself out, nothing more.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn cookie_name(headers: &HeaderMap) -> &'static str {
    if behind_tls(headers) {
        TLS_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    let wanted = cookie_name(headers);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then(|| value.to_owned())
        })
}

fn set_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> (HeaderName, String) {
    // The listener speaks plain HTTP, where a browser would drop a `Secure` cookie.
    let (name, secure) = if behind_tls(headers) {
        (TLS_COOKIE_NAME, "; Secure")
    } else {
        (COOKIE_NAME, "")
    };
    (
        header::SET_COOKIE,
        format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"),
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
fn keys_url(tenant: &str) -> String {
    let mut url = String::from("/keys?tenant=");
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

async fn login_page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !state.access.enabled() {
        return disabled();
    }
    let signed_in = session_cookie(&headers).and_then(|c| state.access.sessions.get(&c));
    if let Some((_, scope)) = signed_in
        && live(&state, &scope).await
    {
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
        .await
    {
        Ok(scope) => {
            match &scope {
                Scope::All => tracing::info!(%client, "signed in to the API Keys page"),
                Scope::Tenant {
                    credential, tenant, ..
                } => tracing::info!(%client, %credential, tenant = ?tenant,
                    "signed in to the API Keys page with a tenant's admin credential"),
            }
            let cookie = state.access.sessions.create(scope);
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
                error: Some("That is not the admin token or an admin credential.".to_owned()),
            },
        ),
        Err(Denied::Unavailable) => render(
            StatusCode::SERVICE_UNAVAILABLE,
            &LoginPage {
                error: Some("The key store is unavailable: try again in a moment.".to_owned()),
            },
        ),
        Err(Denied::Missing) => render(
            StatusCode::FORBIDDEN,
            &LoginPage {
                error: Some("Enter the admin token.".to_owned()),
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
}

async fn keys_page(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Query(query): Query<KeysQuery>,
) -> Response {
    let tenant = match signed_in.tenant_or(&query.tenant) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let keys = match list(&state, &tenant).await {
        Ok(keys) => keys,
        Err(e) => return store_failure(&e, "/keys"),
    };
    // Only what this session did: a link cannot make the page announce anything.
    let notice = state.access.sessions.take_flash(&signed_in.cookie, &tenant);
    let page = KeysPage {
        csrf: signed_in.csrf.clone(),
        form: signed_in.form_id(&state),
        scoped: signed_in.scope.fixed_tenant().is_some(),
        tenant,
        keys,
        notice,
        error: None,
    };
    render(StatusCode::OK, &page)
}

/// Events per History page.
const HISTORY_PAGE: u32 = 50;

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryQuery {
    tenant: String,
    /// Only this key's events.
    key: Option<String>,
    /// The `seq` of the last event of the previous page.
    before: Option<i64>,
}

/// `/history?tenant=...[&key=...][&before=...]`: the tenant's audit trail (or one key's),
/// newest first, a page at a time.
async fn history(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return message(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The History view takes tenant, key (a key id) and before (a number).",
            "/history",
        );
    };
    let tenant = match signed_in.tenant_or(&query.tenant) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let mut page = HistoryPage {
        scoped: signed_in.scope.fixed_tenant().is_some(),
        csrf: signed_in.csrf,
        tenant,
        key: None,
        events: Vec::new(),
        next: None,
    };
    if page.tenant.is_empty() {
        return render(StatusCode::OK, &page);
    }
    if !hapnd_auth::is_valid_tenant(&page.tenant) {
        return message(
            StatusCode::BAD_REQUEST,
            "Invalid tenant",
            "That is not a tenant name.",
            "/history",
        );
    }
    let key = match query
        .key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        None => None,
        Some(text) => match key_id(text) {
            Ok(id) => Some(id),
            Err(_) => {
                let back = history_url(&page.tenant, None, None);
                return message(
                    StatusCode::BAD_REQUEST,
                    "Invalid key id",
                    "That is not a key id.",
                    &back,
                );
            }
        },
    };
    let mut events_query = EventQuery::tenant(&page.tenant, HISTORY_PAGE);
    events_query.key = key.clone();
    events_query.before = query.before;
    let events = match state.store.events(&events_query).await {
        Ok(events) => events,
        Err(e) => return store_failure(&e, &keys_url(&page.tenant)),
    };
    // The names of the keys shown (a deleted key's events show its id only): one key's
    // record for a key's history, the tenant's list otherwise, nothing for an empty page.
    let records = match (&key, events.is_empty()) {
        (_, true) => Ok(Vec::new()),
        (Some(id), false) => state.store.get(id).await.map(|r| r.into_iter().collect()),
        (None, false) => state.store.list(&page.tenant).await,
    };
    let names: HashMap<String, String> = match records {
        Ok(keys) => keys
            .into_iter()
            .filter(|k| k.tenant == page.tenant)
            .map(|k| (k.id.to_string(), k.name))
            .collect(),
        Err(e) => return store_failure(&e, &keys_url(&page.tenant)),
    };
    if events.len() == HISTORY_PAGE as usize {
        page.next = events
            .last()
            .map(|last| history_url(&page.tenant, key.as_ref(), Some(last.seq)));
    }
    page.events = events
        .iter()
        .map(|e| EventRow::new(e, names.get(e.key_id.as_str()).cloned()))
        .collect();
    page.key = key.map(|k| k.to_string());
    render(StatusCode::OK, &page)
}

/// `/history?tenant=...`, with the key and cursor when given.
fn history_url(tenant: &str, key: Option<&KeyId>, before: Option<i64>) -> String {
    let mut url = keys_url(tenant).replacen("/keys", "/history", 1);
    if let Some(key) = key {
        // Key ids are letters, digits and `_`: nothing to encode.
        url.push_str(&format!("&key={key}"));
    }
    if let Some(before) = before {
        url.push_str(&format!("&before={before}"));
    }
    url
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
        scoped: signed_in.scope.fixed_tenant().is_some(),
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
    /// Separated by spaces or commas.
    scopes: String,
    rate_limit: String,
}

async fn create(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Some(refused) = signed_in.csrf_refusal(&form.csrf) {
        return refused;
    }
    let tenant = match signed_in.tenant_or(&form.tenant) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    if !state
        .access
        .sessions
        .take_form(&signed_in.cookie, &form.form)
    {
        // Submitted before (a reload of the page that showed the key): show the list.
        return Redirect::to(&keys_url(&tenant)).into_response();
    }
    let new = match new_key(
        tenant.clone(),
        &form.environment,
        form.name.trim().to_owned(),
        Some(&form.expires_in),
    )
    .and_then(|new| {
        let scopes = form
            .scopes
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        with_policy(new, scopes, None, Some(&form.rate_limit))
    }) {
        Ok(new) => new,
        Err(error) => return refused(&state, &signed_in, tenant, error).await,
    };
    match state.auth.create_key_as(new, &signed_in.actor).await {
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
                scheduled: false,
            };
            render(StatusCode::OK, &page)
        }
        Err(e) if e.kind() == StoreErrorKind::Invalid => {
            refused(&state, &signed_in, tenant, e.to_string()).await
        }
        Err(e) => store_failure(&e, &keys_url(&tenant)),
    }
}

async fn confirm_revoke(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
    let record = match existing(&state, &signed_in, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    if record.is_revoked() {
        return Redirect::to(&keys_url(&record.tenant)).into_response();
    }
    let page = RevokePage {
        csrf: signed_in.csrf,
        tenant: record.tenant.clone(),
        key: Row::new(&record, SystemTime::now()),
    };
    render(StatusCode::OK, &page)
}

/// Whether a session's scope still holds: a tenant credential's is not revoked.
async fn live(state: &AdminState, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Tenant { credential, .. } => matches!(
            state.store.live_credential_by_id(credential).await,
            Ok(Some(_))
        ),
    }
}

/// The record of key `id`, or the page saying why there is none. Another tenant's key, for
/// a session signed in with a tenant credential, is answered as an unknown id.
async fn existing(
    state: &AdminState,
    signed_in: &SignedIn,
    id: &str,
) -> Result<KeyRecord, Response> {
    let id = key_id(id).map_err(|_| {
        message(
            StatusCode::BAD_REQUEST,
            "Invalid key id",
            "That is not a key id.",
            "/keys",
        )
    })?;
    match state.store.get(&id).await {
        Ok(Some(record)) if signed_in.scope.covers(&record.tenant) => Ok(record),
        Ok(_) => Err(message(
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
    let record = match existing(&state, &signed_in, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    // Returns once this gateway rejects the key.
    match state.auth.revoke_as(&record.id, &signed_in.actor).await {
        Ok(record) => {
            tracing::info!(key_id = %record.id, tenant = ?record.tenant, "API Keys page revoked a key");
            let notice = format!(
                "Revoked {} ({}): requests with it are rejected from now on.",
                record.name, record.hint
            );
            state
                .access
                .sessions
                .set_flash(&signed_in.cookie, &record.tenant, notice);
            Redirect::to(&keys_url(&record.tenant)).into_response()
        }
        Err(e) => store_failure(&e, &keys_url(&record.tenant)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RotateForm {
    csrf: String,
    form: String,
    /// The old key's life, as `keys rotate --old-expires-in` takes it (`now`, `1h`, `24h`,
    /// `7d`); empty: it stays active until revoked.
    old_expires_in: String,
}

async fn rotate(
    signed_in: SignedIn,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    if let Some(refused) = signed_in.csrf_refusal(&form.csrf) {
        return refused;
    }
    let old = match existing(&state, &signed_in, &id).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    let roll = match crate::events::roll_for(
        // The form's "until revoked" sends an empty value: no expiry for the old key.
        Some(form.old_expires_in.as_str()).filter(|life| !life.trim().is_empty()),
    ) {
        Ok(roll) => roll,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &format!(
                    "The old key's life must be a duration (1h, 24h, 7d, ...) or now: {e}. \
                     Nothing was changed."
                ),
                &keys_url(&old.tenant),
            );
        }
    };
    let scheduled = roll.old_expires_at.is_some();
    if !state
        .access
        .sessions
        .take_form(&signed_in.cookie, &form.form)
    {
        return Redirect::to(&keys_url(&old.tenant)).into_response();
    }
    match state.auth.rotate_as(&old.id, roll, &signed_in.actor).await {
        Ok(rotation) => {
            let created = rotation.replacement;
            tracing::info!(key_id = %created.record.id, replaces = %old.id, tenant = ?old.tenant,
                scheduled, "API Keys page rotated a key");
            let now = SystemTime::now();
            let page = CreatedPage {
                csrf: signed_in.csrf,
                heading: "Your replacement API key",
                secret: created.key.expose_secret().to_owned(),
                tenant: old.tenant.clone(),
                key: Row::new(&created.record, now),
                replaces: Some(Row::new(&rotation.old, now)),
                scheduled,
            };
            render(StatusCode::OK, &page)
        }
        Err(e) => store_failure(&e, &keys_url(&old.tenant)),
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
        assert_eq!(keys_url("acme"), "/keys?tenant=acme");
        assert_eq!(keys_url("a&b=c d/é"), "/keys?tenant=a%26b%3Dc%20d%2F%C3%A9");
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
        // Behind TLS only the `__Host-` cookie counts.
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("hapnd_admin_session=abc; __Host-hapnd_admin_session=def"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("def"));
    }

    #[test]
    fn requests_from_another_site_are_told_apart() {
        let uri: Uri = "/login".parse().unwrap();
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9090"));
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            from_another_site(&uri, &headers)
        };
        assert!(!with(&[]));
        assert!(!with(&[("origin", "http://127.0.0.1:9090")]));
        assert!(!with(&[
            ("origin", "https://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!with(&[("sec-fetch-site", "none")]));
        assert!(with(&[("origin", "http://attacker.example")]));
        assert!(with(&[("origin", "http://127.0.0.1:9091")]));
        assert!(with(&[("origin", "null")]));
        assert!(with(&[("origin", "http://127.0.0.1:9090.evil")]));
        assert!(with(&[("sec-fetch-site", "same-site")]));
        assert!(with(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://127.0.0.1:9090")
        ]));
    }
}
