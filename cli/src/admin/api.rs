//! The admin JSON API under `/api/v1`: list, create, show, revoke and rotate keys with
//! `Authorization: Bearer <admin token>`, or with a tenant-scoped admin credential for that
//! tenant's keys only. Errors have the auth errors' shape:
//! `{"error": {"type": ..., "code": ..., "message": ...}}`.

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use hapnd_auth::{
    Actor, AuditTrail, CreatedKey, Environment, EventQuery, KeyId, KeyRecord, KeyStore, NewKey,
    StoreError, StoreErrorKind,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::set_header::SetResponseHeaderLayer;

use super::AdminState;
use super::access::{Denied, OtherTenant, Scope, client_ip};
use crate::time::{parse_duration, rfc3339};

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/keys", get(list))
        .route("/api/v1/tenants/{tenant}/events", get(events))
        .route("/api/v1/keys", post(create))
        .route("/api/v1/keys/{id}", get(show))
        .route("/api/v1/keys/{id}/revoke", post(revoke))
        .route("/api/v1/keys/{id}/rotate", post(rotate))
        .route("/api/{*rest}", any(no_route))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

/// Proof that the request carried the admin token or a tenant credential: what it may
/// manage, and who the audit trail records for its changes (the credential's label and the
/// client's address).
struct Admin {
    actor: Actor,
    scope: Scope,
}

impl Admin {
    /// `requested`, if this credential may see that tenant; 403 otherwise, for any other
    /// tenant name, existing or not, so the answer confirms nothing about other tenants.
    fn tenant<'a>(&'a self, requested: &'a str) -> Result<&'a str, ApiError> {
        self.scope.tenant_or(requested).map_err(|OtherTenant| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "tenant_forbidden",
                "this admin credential manages one other tenant only".to_owned(),
            )
        })
    }

    /// Key `id`, if it exists and this credential may manage it. Another tenant's key is
    /// answered exactly as an unknown id, so its existence is not confirmed.
    async fn key(&self, state: &AdminState, id: &KeyId) -> Result<KeyRecord, ApiError> {
        match state.store.get(id).await? {
            Some(record) if self.scope.covers(&record.tenant) => Ok(record),
            _ => Err(not_found(id)),
        }
    }
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        let client = client_ip(&parts.extensions);
        match state.access.check(client, presented).await {
            Ok(scope) => Ok(Admin {
                actor: scope.api_actor(client),
                scope,
            }),
            Err(denied) => Err(ApiError::denied(denied)),
        }
    }
}

/// The token of `Bearer <token>` (scheme in any case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

async fn list(
    admin: Admin,
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin.tenant(&tenant)?;
    let keys = state.store.list(tenant).await?;
    if keys.is_empty() {
        // A tenant exists once it has a key. The name is not echoed: it may be anything.
        return Err(ApiError::not_found(
            "tenant_not_found",
            "no keys for this tenant".to_owned(),
        ));
    }
    let now = SystemTime::now();
    let keys: Vec<Value> = keys.iter().map(|r| record_json(r, now)).collect();
    Ok(Json(json!({ "tenant": tenant, "keys": keys })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// Required with the admin token; with a tenant credential, its tenant (the default).
    #[serde(default)]
    tenant: Option<String>,
    environment: String,
    name: String,
    /// `30d`, `12h`, `90m`, `45s`, like `keys create --expires`.
    #[serde(default)]
    expires_in: Option<String>,
    /// The key's scopes (none: full access).
    #[serde(default)]
    scopes: Vec<String>,
    /// A JSON object for the handlers, at most 4 KiB.
    #[serde(default)]
    metadata: Option<Value>,
    /// `100/s,burst=200`, like `keys create --rate-limit`.
    #[serde(default)]
    rate_limit: Option<String>,
}

async fn create(
    admin: Admin,
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the body must be a JSON object: {e}")))?;
    let tenant = match (&request.tenant, admin.scope.fixed_tenant()) {
        (Some(tenant), _) => admin.tenant(tenant)?.to_owned(),
        (None, Some(own)) => own.to_owned(),
        (None, None) => {
            return Err(ApiError::invalid(
                "the body must name the key's tenant: {\"tenant\": ...}".to_owned(),
            ));
        }
    };
    let new = new_key(
        tenant,
        &request.environment,
        request.name,
        request.expires_in.as_deref(),
    )
    .and_then(|new| {
        with_policy(
            new,
            request.scopes,
            request.metadata.as_ref(),
            request.rate_limit.as_deref(),
        )
    })
    .map_err(ApiError::invalid)?;
    let created = state.auth.create_key_as(new, &admin.actor).await?;
    tracing::info!(key_id = %created.record.id, tenant = ?created.record.tenant,
        environment = %created.record.environment, "admin API created a key");
    Ok((StatusCode::CREATED, Json(created_json(&created))).into_response())
}

/// A [`NewKey`] from form or JSON fields; the library checks tenant and name on creation.
pub(super) fn new_key(
    tenant: String,
    environment: &str,
    name: String,
    expires_in: Option<&str>,
) -> Result<NewKey, String> {
    let environment: Environment = environment
        .parse()
        .map_err(|_| "environment must be live or sandbox".to_owned())?;
    let mut new = NewKey::new(tenant, environment, name);
    if let Some(after) = expires_in.map(str::trim).filter(|t| !t.is_empty()) {
        new = new.expires_at(SystemTime::now() + parse_duration(after)?);
    }
    new.validate().map_err(|e| e.to_string())?;
    Ok(new)
}

/// `new` with scopes, metadata and a rate limit, checked: a clear message for the first
/// thing wrong, and nothing written.
pub(super) fn with_policy(
    mut new: NewKey,
    scopes: Vec<String>,
    metadata: Option<&Value>,
    rate_limit: Option<&str>,
) -> Result<NewKey, String> {
    new = new.scopes(scopes);
    if let Some(value) = metadata.filter(|v| !v.is_null()) {
        new = new.metadata(hapnd_auth::Metadata::from_value(value).map_err(|e| e.to_string())?);
    }
    if let Some(text) = rate_limit.map(str::trim).filter(|t| !t.is_empty()) {
        let limit: hapnd_auth::RateLimit = text
            .parse()
            .map_err(|e: hapnd_auth::StoreError| e.to_string())?;
        new = new.rate_limit(limit);
    }
    new.validate().map_err(|e| e.to_string())?;
    Ok(new)
}

async fn show(
    admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = key_id(&id)?;
    let record = admin.key(&state, &id).await?;
    Ok(Json(
        json!({ "key": record_json(&record, SystemTime::now()) }),
    ))
}

/// Returns once this gateway rejects the key (other instances: per the store's feed).
async fn revoke(
    admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = key_id(&id)?;
    if admin.scope != Scope::All {
        // A key's tenant never changes: checked once, it holds for the revocation.
        admin.key(&state, &id).await?;
    }
    let record = state.auth.revoke_as(&id, &admin.actor).await?;
    tracing::info!(key_id = %record.id, tenant = ?record.tenant, "admin API revoked a key");
    Ok(Json(
        json!({ "key": record_json(&record, SystemTime::now()) }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// A scheduled roll: the old key keeps working for this long (`1h`, `24h`, `7d`,
    /// `now`), then expires. Absent: it stays active until revoked.
    #[serde(default)]
    old_expires_in: Option<String>,
}

async fn rotate(
    admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = key_id(&id)?;
    if admin.scope != Scope::All {
        admin.key(&state, &id).await?;
    }
    let request: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the body must be a JSON object: {e}")))?
    };
    let roll =
        crate::events::roll_for(request.old_expires_in.as_deref()).map_err(ApiError::invalid)?;
    let scheduled = roll.old_expires_at.is_some();
    let rotation = state.auth.rotate_as(&id, roll, &admin.actor).await?;
    let created = &rotation.replacement;
    tracing::info!(key_id = %created.record.id, replaces = %id, tenant = ?created.record.tenant,
        "admin API rotated a key");
    let mut body = created_json(created);
    body["replaces"] = json!(id.as_str());
    body["old_key"] = record_json(&rotation.old, SystemTime::now());
    body["note"] = match rotation.old.expires_at.filter(|_| scheduled) {
        Some(at) => json!(format!(
            "the old key keeps working until {} and is rejected from then on",
            rfc3339(at)
        )),
        None => json!(
            "the old key stays active: move your services to the new key, then revoke the old one"
        ),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    /// Only this key's events.
    key: Option<String>,
    /// The `next` cursor of the previous page.
    before: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

/// A tenant's audit trail, newest first, a page at a time: `next` is the cursor of the page
/// that follows (`?before=<next>`), `null` on the last page.
async fn events(
    admin: Admin,
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    params: Result<axum::extract::Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(params) = params.map_err(|e| {
        ApiError::invalid(format!(
            "the query takes key, before and limit (1 to 1000): {}",
            e.body_text()
        ))
    })?;
    let tenant = admin.tenant(&tenant)?;
    hapnd_auth::is_valid_tenant(tenant)
        .then_some(())
        .ok_or_else(|| ApiError::invalid("not a tenant name".to_owned()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=EventQuery::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 1000".to_owned()));
    }
    let mut query = EventQuery::tenant(tenant, limit);
    query.key = params.key.as_deref().map(key_id).transpose()?;
    query.before = params.before;
    let events = state.store.events(&query).await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    let events: Vec<Value> = events.iter().map(crate::events::event_json).collect();
    Ok(Json(
        json!({ "tenant": tenant, "events": events, "next": next }),
    ))
}

async fn no_route(_: Admin) -> ApiError {
    ApiError::not_found("not_found", "no such admin API route".to_owned())
}

/// A key id from a path, refusing anything else without echoing it: an API key pasted in
/// its place must not come back in an error (or reach the store).
pub(super) fn key_id(text: &str) -> Result<KeyId, ApiError> {
    let well_formed = text.len() <= 64
        && text.starts_with("key_")
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return Err(ApiError::invalid(
            "not a key id: ids look like key_ followed by letters and digits".to_owned(),
        ));
    }
    Ok(KeyId::new(text))
}

fn not_found(id: &KeyId) -> ApiError {
    ApiError::not_found("key_not_found", format!("no key has id {id}"))
}

fn created_json(created: &CreatedKey) -> Value {
    json!({
        "secret": created.key.expose_secret(),
        "key": record_json(&created.record, SystemTime::now()),
        "warning": "this is the only time the key is shown: store it now",
    })
}

/// A key as listings show it: no secret, no hash.
fn record_json(r: &KeyRecord, now: SystemTime) -> Value {
    json!({
        "id": r.id.as_str(),
        "tenant": r.tenant,
        "environment": r.environment.as_str(),
        "name": r.name,
        "hint": r.hint,
        "status": r.status_at(now).as_str(),
        "created_at": rfc3339(r.created_at),
        "last_used_at": r.last_used_at.map(rfc3339),
        "expires_at": r.expires_at.map(rfc3339),
        "revoked_at": r.revoked_at.map(rfc3339),
        "scopes": r.scopes,
        "metadata": r.metadata.as_ref().map(hapnd_auth::Metadata::to_value),
        "rate_limit": r.rate_limit.map(|l| l.to_string()),
    })
}

/// An admin API error, answered as `{"error": {"type", "code", "message"}}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            retry_after: None,
        }
    }

    fn invalid(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    fn not_found(code: &'static str, message: String) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message,
        )
    }

    fn denied(denied: Denied) -> Self {
        match denied {
            Denied::Disabled => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "admin_disabled",
                format!(
                    "the admin API is disabled: start `hapnd-auth serve` with \
                     --admin-token-file or {}",
                    super::TOKEN_ENV
                ),
            ),
            Denied::Throttled(wait) => ApiError {
                retry_after: Some(wait),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "too_many_failed_attempts",
                    "too many failed admin token attempts from this address: retry later"
                        .to_owned(),
                )
            },
            Denied::Invalid | Denied::Missing => Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_admin_token",
                "send the admin token or an admin credential as `Authorization: Bearer <token>`"
                    .to_owned(),
            ),
            Denied::Unavailable => ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "store_unavailable",
                    "the key store is unavailable: retry later".to_owned(),
                )
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            StoreErrorKind::NotFound => {
                Self::not_found("key_not_found", hapnd_auth::redact_keys(&e.to_string()))
            }
            StoreErrorKind::Invalid => Self::invalid(hapnd_auth::redact_keys(&e.to_string())),
            StoreErrorKind::Conflict => Self::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                "conflict",
                "a key with that id or hash already exists: retry".to_owned(),
            ),
            _ => {
                tracing::warn!(error = %e, "admin API: the key store failed");
                ApiError {
                    retry_after: Some(Duration::from_secs(1)),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api_error",
                        "store_unavailable",
                        "the key store is unavailable: retry later".to_owned(),
                    )
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "type": self.kind, "code": self.code, "message": hapnd_auth::redact_keys(&self.message) }
        });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="hapnd-admin""#),
            );
        }
        if let Some(wait) = self.retry_after {
            // Rounded up: retrying at the advertised second must not be refused again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_become_client_errors_or_a_503_never_a_500() {
        let unavailable = StoreError::new(StoreErrorKind::Unavailable, "db down");
        let response = ApiError::from(unavailable).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let timeout = StoreError::new(StoreErrorKind::Timeout, "slow");
        assert_eq!(
            ApiError::from(timeout).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let invalid = StoreError::new(StoreErrorKind::Invalid, "bad tenant");
        let error = ApiError::from(invalid);
        assert_eq!(
            (error.status, error.code),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
        let missing = StoreError::new(StoreErrorKind::NotFound, "no key has id key_x");
        assert_eq!(ApiError::from(missing).code, "key_not_found");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bEaReR  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
