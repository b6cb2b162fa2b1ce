//! Why a request was not authenticated: [`AuthError`] and its [`AuthErrorKind`].

use std::fmt;
use std::time::Duration;

use http::header::{CACHE_CONTROL, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use std::sync::Arc;

use crate::key::{Environment, KeyFormatError};
use crate::principal::Principal;
use crate::scope::ScopeRule;
use crate::store::{RateLimit, StoreError};

/// The class of an authentication failure: what the rejection table in the README keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No `Authorization` header, or a scheme other than `Bearer`. 401 `missing_api_key`.
    MissingApiKey,
    /// A malformed `Authorization` header. 400 `invalid_request`.
    InvalidRequest,
    /// Wrong prefix, bad format or checksum, or a key the store does not know. 401 `invalid_api_key`.
    InvalidApiKey,
    /// The key was revoked. 401 `api_key_revoked`.
    Revoked,
    /// The key has expired. 401 `api_key_expired`.
    Expired,
    /// A valid key of the wrong environment for this route. 403 `wrong_environment`.
    WrongEnvironment,
    /// The key store could not answer and the key was not cached. 503 `auth_unavailable`.
    Unavailable,
    /// A guard found no [`Principal`](crate::Principal): `ApiKeyLayer` is not installed
    /// in front of it. A server misconfiguration, not a client mistake. 500 `auth_layer_missing`.
    LayerMissing,
    /// The client's budget of failed attempts is spent (see
    /// [`FailedAttemptLimit`](crate::FailedAttemptLimit)). 429 `too_many_failed_attempts`,
    /// with `Retry-After`.
    TooManyFailedAttempts,
    /// A valid key without a scope the route requires (see
    /// [`RequireScopeLayer`](crate::RequireScopeLayer)). 403 `insufficient_scope`, the
    /// scopes in `WWW-Authenticate`'s `scope="..."` (RFC 6750).
    InsufficientScope,
    /// The key's own rate limit is spent (see [`RateLimit`](crate::RateLimit)). 429
    /// `rate_limited`, with `Retry-After`, `RateLimit-Policy` and `RateLimit`.
    RateLimited,
}

impl AuthErrorKind {
    /// Every kind, each at its [`index`](Self::index): what per-kind tables (metrics,
    /// rejection header maps) are built from.
    pub(crate) const ALL: [AuthErrorKind; 11] = [
        AuthErrorKind::MissingApiKey,
        AuthErrorKind::InvalidRequest,
        AuthErrorKind::InvalidApiKey,
        AuthErrorKind::Revoked,
        AuthErrorKind::Expired,
        AuthErrorKind::WrongEnvironment,
        AuthErrorKind::Unavailable,
        AuthErrorKind::LayerMissing,
        AuthErrorKind::TooManyFailedAttempts,
        AuthErrorKind::InsufficientScope,
        AuthErrorKind::RateLimited,
    ];

    /// This kind's place in [`ALL`](Self::ALL). An exhaustive match, so a new kind does not
    /// compile until it has a place; a compile-time check below makes sure `ALL` agrees.
    pub(crate) const fn index(self) -> usize {
        match self {
            AuthErrorKind::MissingApiKey => 0,
            AuthErrorKind::InvalidRequest => 1,
            AuthErrorKind::InvalidApiKey => 2,
            AuthErrorKind::Revoked => 3,
            AuthErrorKind::Expired => 4,
            AuthErrorKind::WrongEnvironment => 5,
            AuthErrorKind::Unavailable => 6,
            AuthErrorKind::LayerMissing => 7,
            AuthErrorKind::TooManyFailedAttempts => 8,
            AuthErrorKind::InsufficientScope => 9,
            AuthErrorKind::RateLimited => 10,
        }
    }

    /// Whether the rejection carries `Retry-After`: the kinds a client should retry later.
    pub(crate) const fn retries_later(self) -> bool {
        matches!(
            self,
            AuthErrorKind::Unavailable
                | AuthErrorKind::TooManyFailedAttempts
                | AuthErrorKind::RateLimited
        )
    }

    /// The HTTP status of the rejection.
    pub const fn status(self) -> StatusCode {
        match self {
            AuthErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorKind::WrongEnvironment | AuthErrorKind::InsufficientScope => {
                StatusCode::FORBIDDEN
            }
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthErrorKind::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
            AuthErrorKind::TooManyFailedAttempts | AuthErrorKind::RateLimited => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AuthErrorKind::MissingApiKey
            | AuthErrorKind::InvalidApiKey
            | AuthErrorKind::Revoked
            | AuthErrorKind::Expired => StatusCode::UNAUTHORIZED,
        }
    }

    /// The machine-readable `error.code` of the JSON body.
    pub const fn code(self) -> &'static str {
        match self {
            AuthErrorKind::MissingApiKey => "missing_api_key",
            AuthErrorKind::InvalidRequest => "invalid_request",
            AuthErrorKind::InvalidApiKey => "invalid_api_key",
            AuthErrorKind::Revoked => "api_key_revoked",
            AuthErrorKind::Expired => "api_key_expired",
            AuthErrorKind::WrongEnvironment => "wrong_environment",
            AuthErrorKind::Unavailable => "auth_unavailable",
            AuthErrorKind::LayerMissing => "auth_layer_missing",
            AuthErrorKind::TooManyFailedAttempts => "too_many_failed_attempts",
            AuthErrorKind::InsufficientScope => "insufficient_scope",
            AuthErrorKind::RateLimited => "rate_limited",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3), if the status carries one.
    /// An `insufficient_scope` rejection's header adds the scopes the route requires
    /// (`, scope="events:write"`) to this one.
    pub const fn challenge(self) -> Option<&'static str> {
        match self {
            AuthErrorKind::MissingApiKey => Some(r#"Bearer realm="hapnd""#),
            AuthErrorKind::InvalidRequest => {
                Some(r#"Bearer realm="hapnd", error="invalid_request""#)
            }
            AuthErrorKind::InvalidApiKey | AuthErrorKind::Revoked | AuthErrorKind::Expired => {
                Some(r#"Bearer realm="hapnd", error="invalid_token""#)
            }
            AuthErrorKind::WrongEnvironment | AuthErrorKind::InsufficientScope => {
                Some(r#"Bearer realm="hapnd", error="insufficient_scope""#)
            }
            AuthErrorKind::Unavailable
            | AuthErrorKind::LayerMissing
            | AuthErrorKind::TooManyFailedAttempts
            | AuthErrorKind::RateLimited => None,
        }
    }
}

/// What exactly was wrong with a malformed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    MultipleHeaders,
    TooLong,
    InvalidBytes,
    EmptyToken,
    Syntax,
}

#[derive(Clone, Debug)]
enum Detail {
    None,
    Malformed(Malformed),
    Format(KeyFormatError),
    WrongEnvironment { required: Environment },
    Store(StoreError),
    Scope(Arc<ScopeRule>),
    RateLimited(RateLimit),
}

/// Why a request was not authenticated. Carries at most the key's masked hint, never the key.
///
/// The layer puts a clone of it into the rejection response's extensions, so outer layers
/// can see why a request was refused. [`status`](Self::status), [`code`](Self::code) and
/// [`challenge`](Self::challenge) are the rejection table's columns;
/// [`response`](Self::response) builds a rejection with your body.
///
/// ```
/// use hapnd_auth::{AuthErrorKind, Authenticator, Environment, MemoryKeyStore, NewKey};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
/// auth.revoke(&created.record.id).await.unwrap();
///
/// let error = auth.authenticate_key(created.key.expose_secret()).await.unwrap_err();
/// assert_eq!(error.kind(), AuthErrorKind::Revoked);
/// assert_eq!((error.status().as_u16(), error.code()), (401, "api_key_revoked"));
/// assert_eq!(error.principal().unwrap().tenant(), "acme"); // whose key it was
/// let message = error.to_string(); // "the API key sk_live_...a1b2 has been revoked"
/// assert!(message.contains(&created.record.hint));
/// assert!(!message.contains(created.key.expose_secret()));
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct AuthError {
    kind: AuthErrorKind,
    detail: Detail,
    hint: Option<String>,
    principal: Option<Principal>,
    retry_after: Option<Duration>,
}

impl AuthError {
    fn new(kind: AuthErrorKind, detail: Detail) -> Self {
        AuthError {
            kind,
            detail,
            hint: None,
            principal: None,
            retry_after: None,
        }
    }

    pub(crate) fn missing() -> Self {
        Self::new(AuthErrorKind::MissingApiKey, Detail::None)
    }

    pub(crate) fn malformed(why: Malformed) -> Self {
        Self::new(AuthErrorKind::InvalidRequest, Detail::Malformed(why))
    }

    pub(crate) fn format(why: KeyFormatError) -> Self {
        Self::new(AuthErrorKind::InvalidApiKey, Detail::Format(why))
    }

    pub(crate) fn unknown() -> Self {
        Self::new(AuthErrorKind::InvalidApiKey, Detail::None)
    }

    pub(crate) fn revoked() -> Self {
        Self::new(AuthErrorKind::Revoked, Detail::None)
    }

    pub(crate) fn expired() -> Self {
        Self::new(AuthErrorKind::Expired, Detail::None)
    }

    pub(crate) fn wrong_environment(required: Environment) -> Self {
        Self::new(
            AuthErrorKind::WrongEnvironment,
            Detail::WrongEnvironment { required },
        )
    }

    pub(crate) fn unavailable(error: StoreError, retry_after: Duration) -> Self {
        let mut e = Self::new(AuthErrorKind::Unavailable, Detail::Store(error));
        e.retry_after = Some(retry_after);
        e
    }

    pub(crate) fn throttled(retry_after: Duration) -> Self {
        let mut e = Self::new(AuthErrorKind::TooManyFailedAttempts, Detail::None);
        e.retry_after = Some(retry_after);
        e
    }

    pub(crate) fn insufficient_scope(rule: Arc<ScopeRule>) -> Self {
        Self::new(AuthErrorKind::InsufficientScope, Detail::Scope(rule))
    }

    pub(crate) fn rate_limited(limit: RateLimit, retry_after: Duration) -> Self {
        let mut e = Self::new(AuthErrorKind::RateLimited, Detail::RateLimited(limit));
        e.retry_after = Some(retry_after);
        e
    }

    pub(crate) fn layer_missing() -> Self {
        Self::new(AuthErrorKind::LayerMissing, Detail::None)
    }

    pub(crate) fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    /// Attaches a masked hint. Hints from a store are not trusted to be hints: anything
    /// but the characters of a real one (`sk_live_...a1b2`) is replaced, so no message can
    /// carry more, and the hint needs no escaping in the JSON body.
    pub(crate) fn with_hint(mut self, mut hint: String) -> Self {
        if !hint.bytes().all(is_hint_byte) {
            hint = hint
                .chars()
                .map(|c| {
                    if c.is_ascii() && is_hint_byte(c as u8) {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
        }
        self.hint = Some(hint);
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// The HTTP status of the rejection: 400, 401, 403, 503, or 500 for a missing layer.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The machine-readable code the default body carries as `error.code`:
    /// `missing_api_key`, `invalid_api_key`, `api_key_revoked`, ...
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3) the rejection carries, if any.
    pub fn challenge(&self) -> Option<&'static str> {
        self.kind.challenge()
    }

    /// Sets what every rejection must carry whatever its body: `WWW-Authenticate` (a 401
    /// without it breaks RFC 9110), `Retry-After` on a 503, and `Cache-Control: no-store`.
    ///
    /// An `insufficient_scope` rejection's challenge names the scopes the route requires;
    /// a `rate_limited` one carries `RateLimit-Policy` and `RateLimit`
    /// (draft-ietf-httpapi-ratelimit-headers-10): `"key";q=100;w=1` and
    /// `"key";r=0;t=<seconds until the next request is admitted>`.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        headers.insert(CACHE_CONTROL, NO_STORE.clone());
        if let Some(challenge) = challenge_value(self.kind) {
            headers.insert(WWW_AUTHENTICATE, challenge.clone());
        }
        if let Some(after) = self.retry_after {
            headers.insert(RETRY_AFTER, retry_after_value(after));
        }
        self.insert_policy_headers(headers);
    }

    /// What a scope or rate-limit rejection adds to its kind's headers: replaces entries
    /// the kind's prebuilt map already holds (see [`Template`]).
    fn insert_policy_headers(&self, headers: &mut HeaderMap) {
        match &self.detail {
            Detail::Scope(rule) => {
                headers.insert(WWW_AUTHENTICATE, rule.challenge.clone());
            }
            Detail::RateLimited(limit) => {
                let secs = self.retry_after.map_or(1, whole_secs);
                headers.insert(RATELIMIT_POLICY, rate_limit_policy(limit));
                let value = format!("\"key\";r=0;t={secs}");
                headers.insert(
                    RATELIMIT,
                    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("")),
                );
            }
            _ => {}
        }
    }

    /// The scopes the route required, for an `insufficient_scope` rejection.
    pub fn required_scopes(&self) -> Option<impl Iterator<Item = &str>> {
        match &self.detail {
            Detail::Scope(rule) => Some(rule.scopes()),
            _ => None,
        }
    }

    /// The key's rate limit, for a `rate_limited` rejection.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        match &self.detail {
            Detail::RateLimited(limit) => Some(*limit),
            _ => None,
        }
    }

    /// A rejection response with your `body`: the status of [`status`](Self::status) and the
    /// headers of [`insert_headers`](Self::insert_headers). The building block for a custom
    /// [`rejection`](crate::ApiKeyLayer::rejection) that keeps the protocol right.
    ///
    /// ```
    /// use hapnd_auth::{AuthError, Authenticator, MemoryKeyStore};
    /// use http::Response;
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let auth = Authenticator::new(MemoryKeyStore::new());
    /// let service = ServiceBuilder::new()
    ///     .layer(auth.layer().rejection(|e: &AuthError| {
    ///         let mut response = e.response(format!("denied ({}): {e}", e.code()));
    ///         response.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    ///         response
    ///     }))
    ///     .service_fn(|_req: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(Response::new(String::from("hello")))
    ///     });
    ///
    /// let response = service.oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!(response.status(), 401);
    /// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="hapnd""#);
    /// assert!(response.body().starts_with("denied (missing_api_key)"));
    /// # });
    /// ```
    pub fn response<B>(&self, body: B) -> Response<B> {
        self.response_from(body, Template::Plain)
    }

    /// [`response`](Self::response), its headers cloned from a map built once per kind
    /// (with `Content-Type` too, for the JSON rejection) instead of inserted one by one: a
    /// clone is two allocations and copies, where inserts also hash and probe. Rejections
    /// are what a flood of bad keys costs, so they are kept cheap.
    pub(crate) fn response_from<B>(&self, body: B, template: Template) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        *headers = template.headers(self.kind).clone();
        // The kinds that carry `Retry-After` have a placeholder in their map: the value
        // replaces it in place. Inserting a new entry would grow the clone's table, which
        // has no spare room (one allocation more on every 429 of a flood). Other kinds'
        // maps have none, so their rejections (bad keys) do no header lookup here.
        match self.retry_after {
            Some(after) => {
                headers.insert(RETRY_AFTER, retry_after_value(after));
            }
            None if self.kind.retries_later() => {
                headers.remove(RETRY_AFTER);
            }
            None => {}
        }
        self.insert_policy_headers(headers);
        response
    }

    /// The masked hint of the presented key (`sk_live_...a1b2`), when one was well-formed.
    pub fn key_hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The key's owner, when the key was known but refused (revoked, expired, wrong environment).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// How long a client should wait before retrying, for [`AuthErrorKind::Unavailable`]
    /// and [`AuthErrorKind::TooManyFailedAttempts`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The store failure behind an [`AuthErrorKind::Unavailable`].
    pub fn store_error(&self) -> Option<&StoreError> {
        match &self.detail {
            Detail::Store(e) => Some(e),
            _ => None,
        }
    }

    /// A one-line, human-readable message for the client: never the key, at most its hint.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

fn is_hint_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

/// A rejection message: fixed text, or the key's hint inside fixed text.
pub(crate) enum Message<'a> {
    /// Fixed text, and the whole JSON body that carries it under its error code, built at
    /// compile time: a rejection with a fixed message costs no allocation for its body.
    Static {
        text: &'static str,
        body: &'static str,
    },
    Hinted {
        hint: &'a str,
        what: &'static str,
    },
    /// Text built once elsewhere (a scope guard's message), needing no JSON escaping.
    Text(&'a str),
}

/// A [`Message::Static`] for `code` and `text`. The text must need no JSON escaping (no
/// `"`, `\`, control characters): `rejection`'s tests compare every body with serde_json's.
macro_rules! fixed {
    ($code:literal, $text:literal) => {
        Message::Static {
            text: $text,
            body: concat!(
                r#"{"error":{"type":"authentication_error","code":""#,
                $code,
                r#"","message":""#,
                $text,
                r#""}}"#
            ),
        }
    };
}

impl AuthError {
    /// The message in parts, so the rejection body can be written without formatting.
    pub(crate) fn message_parts(&self) -> Message<'_> {
        match (&self.kind, &self.detail) {
            (_, Detail::Malformed(m)) => match m {
                Malformed::MultipleHeaders => {
                    fixed!("invalid_request", "send exactly one Authorization header")
                }
                Malformed::TooLong => {
                    fixed!("invalid_request", "the Authorization header is too long")
                }
                Malformed::InvalidBytes => fixed!(
                    "invalid_request",
                    "the Authorization header may contain only visible ASCII characters"
                ),
                Malformed::EmptyToken => fixed!(
                    "invalid_request",
                    "the Bearer scheme needs an API key after it"
                ),
                Malformed::Syntax => fixed!(
                    "invalid_request",
                    "expected `Authorization: Bearer <api key>`"
                ),
            },
            (_, Detail::Format(e)) => match e {
                KeyFormatError::UnknownPrefix => fixed!(
                    "invalid_api_key",
                    "invalid API key: API keys start with `sk_live_` (live) or `sk_test_` (sandbox)"
                ),
                KeyFormatError::WrongLength => fixed!(
                    "invalid_api_key",
                    "invalid API key: API keys are 46 characters long"
                ),
                KeyFormatError::InvalidCharacter => fixed!(
                    "invalid_api_key",
                    "invalid API key: API keys contain only letters and digits after the prefix"
                ),
                KeyFormatError::BadChecksum => fixed!(
                    "invalid_api_key",
                    "invalid API key: checksum mismatch: the key is mistyped or truncated"
                ),
            },
            (_, Detail::WrongEnvironment { required, .. }) => match required {
                Environment::Live => fixed!(
                    "wrong_environment",
                    "this endpoint needs a live key (sk_live_...), not a sandbox key"
                ),
                Environment::Sandbox => fixed!(
                    "wrong_environment",
                    "this endpoint needs a sandbox key (sk_test_...), not a live key"
                ),
            },
            (_, Detail::Scope(rule)) => Message::Text(&rule.message),
            (_, Detail::RateLimited(_)) => fixed!(
                "rate_limited",
                "the rate limit of this API key is spent; retry after the time Retry-After gives"
            ),
            (_, Detail::Store(_)) => fixed!(
                "auth_unavailable",
                "authentication is temporarily unavailable; retry shortly"
            ),
            (AuthErrorKind::TooManyFailedAttempts, _) => fixed!(
                "too_many_failed_attempts",
                "too many failed authentication attempts from this client; retry later"
            ),
            (AuthErrorKind::LayerMissing, _) => fixed!(
                "auth_layer_missing",
                "authentication is misconfigured on this server"
            ),
            (AuthErrorKind::MissingApiKey, _) => fixed!(
                "missing_api_key",
                "no API key: send `Authorization: Bearer <api key>`"
            ),
            (kind, _) => {
                let what = match kind {
                    AuthErrorKind::Revoked => "has been revoked",
                    AuthErrorKind::Expired => "has expired",
                    _ => "is not valid",
                };
                match &self.hint {
                    Some(hint) => Message::Hinted { hint, what },
                    None => match kind {
                        AuthErrorKind::Revoked => {
                            fixed!("api_key_revoked", "the API key has been revoked")
                        }
                        AuthErrorKind::Expired => {
                            fixed!("api_key_expired", "the API key has expired")
                        }
                        _ => fixed!("invalid_api_key", "the API key is not valid"),
                    },
                }
            }
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message_parts() {
            Message::Static { text, .. } => f.write_str(text),
            Message::Hinted { hint, what } => write!(f, "the API key {hint} {what}"),
            Message::Text(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.detail {
            Detail::Format(e) => Some(e),
            Detail::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether this `auth_unavailable` rejection gets the WARN line: at most one a second,
/// process-wide, carrying how many were left out (`Some(left_out)`); the others are
/// DEBUG events. An outage under a flood of distinct keys would otherwise write one WARN
/// per request. (Metrics count every one.)
fn unavailable_sample() -> Option<u64> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    static NEXT_MS: AtomicU64 = AtomicU64::new(0);
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let next = NEXT_MS.load(Ordering::Relaxed);
    if now >= next
        && NEXT_MS
            .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        Some(LEFT_OUT.swap(0, Ordering::Relaxed))
    } else {
        LEFT_OUT.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl AuthError {
    /// Emits the tracing event for this rejection: reason, hint, tenant and key id, never the key.
    pub(crate) fn trace(&self) {
        // Absent fields are left out (an `Option` field records nothing), never logged empty.
        let code = self.kind.code();
        let hint = self.hint.as_deref();
        let tenant = self.principal.as_ref().map(|p| p.tenant());
        let key_id = self.principal.as_ref().map(|p| p.key_id().as_str());
        match self.kind {
            AuthErrorKind::Unavailable => match unavailable_sample() {
                Some(suppressed) => tracing::warn!(
                    target: "hapnd_auth",
                    reason = code,
                    key_hint = hint,
                    error = self.store_error().map(tracing::field::display),
                    suppressed = (suppressed > 0).then_some(suppressed),
                    "authentication unavailable: key store failed"
                ),
                None => tracing::debug!(
                    target: "hapnd_auth",
                    reason = code,
                    key_hint = hint,
                    error = self.store_error().map(tracing::field::display),
                    "authentication unavailable: key store failed"
                ),
            },
            AuthErrorKind::LayerMissing => tracing::error!(
                target: "hapnd_auth",
                reason = code,
                "environment or scope guard without ApiKeyLayer in front of it"
            ),
            _ => tracing::debug!(
                target: "hapnd_auth",
                reason = code,
                key_hint = hint,
                tenant,
                key_id,
                "request rejected"
            ),
        }
    }
}

// Statics: built at compile time; a clone copies a pointer, with no allocation.
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// `Retry-After` in whole seconds, rounded up, at least 1. Formatted on the stack (`itoa`)
/// and copied once: `HeaderValue::from(u64)` costs two allocations (a spare-capacity
/// buffer, then the shared header `Bytes` needs for it), on every 429 of a flood.
fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = whole_secs(after);
    // ASCII digits are always a valid value; the fallback only keeps this panic-free.
    HeaderValue::from_str(itoa::Buffer::new().format(secs))
        .unwrap_or_else(|_| HeaderValue::from_static("1"))
}

/// Seconds, rounded up, at least 1.
fn whole_secs(after: Duration) -> u64 {
    (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
}

const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` for `limit`: one policy named `key`, its quota `q` requests per
/// window `w` seconds (the limit's own count and period; GCRA spreads them, and the burst
/// is how many may come at once).
fn rate_limit_policy(limit: &RateLimit) -> HeaderValue {
    let value = format!("\"key\";q={};w={}", limit.requests(), limit.period_secs());
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Which prebuilt header map a rejection starts from.
#[derive(Clone, Copy)]
pub(crate) enum Template {
    /// What [`AuthError::insert_headers`] sets, but `Retry-After`.
    Plain,
    /// The same and `Content-Type: application/json`.
    Json,
}

impl Template {
    /// The map for `kind`, built on first use from [`AuthError::insert_headers`] itself, so
    /// the two cannot disagree (`Retry-After` holds a placeholder where the kind has one).
    fn headers(self, kind: AuthErrorKind) -> &'static HeaderMap {
        static MAPS: std::sync::OnceLock<[[HeaderMap; AuthErrorKind::ALL.len()]; 2]> =
            std::sync::OnceLock::new();
        let maps = MAPS.get_or_init(|| {
            let build = |json: bool| {
                AuthErrorKind::ALL.map(|kind| {
                    let mut headers = HeaderMap::with_capacity(7);
                    // Placeholders for every header the kind's rejections carry, so that
                    // `response_from` replaces entries and never grows the clone.
                    let detail = match kind {
                        AuthErrorKind::RateLimited => Detail::RateLimited(
                            RateLimit::new(1, Duration::from_secs(1), 1).expect("a valid limit"),
                        ),
                        _ => Detail::None,
                    };
                    let mut error = AuthError::new(kind, detail);
                    if kind.retries_later() {
                        error.retry_after = Some(Duration::from_secs(1));
                    }
                    error.insert_headers(&mut headers);
                    if json {
                        headers.insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                    }
                    headers
                })
            };
            [build(false), build(true)]
        });
        &maps[self as usize][kind.index()]
    }
}

// `AuthErrorKind::ALL` holds each kind at its `index`.
const _: () = {
    let mut i = 0;
    while i < AuthErrorKind::ALL.len() {
        assert!(
            AuthErrorKind::ALL[i].index() == i,
            "AuthErrorKind::ALL and AuthErrorKind::index disagree"
        );
        i += 1;
    }
};

/// [`AuthErrorKind::challenge`] as a prebuilt header value.
fn challenge_value(kind: AuthErrorKind) -> Option<&'static HeaderValue> {
    // One static per distinct challenge; `from_static` is evaluated at compile time, where
    // a challenge that is not a valid header value fails the build.
    macro_rules! challenges {
        ($($kind:ident),* $(,)?) => {
            match kind {
                $(AuthErrorKind::$kind => {
                    static VALUE: HeaderValue = HeaderValue::from_static(
                        match AuthErrorKind::$kind.challenge() {
                            Some(c) => c,
                            None => "",
                        },
                    );
                    Some(&VALUE)
                })*
                AuthErrorKind::Unavailable
                | AuthErrorKind::LayerMissing
                | AuthErrorKind::TooManyFailedAttempts
                | AuthErrorKind::RateLimited => None,
            }
        };
    }
    challenges!(
        MissingApiKey,
        InvalidRequest,
        InvalidApiKey,
        Revoked,
        Expired,
        WrongEnvironment,
        InsufficientScope,
    )
}
