//! Scope guards: [`RequireScopeLayer`] admits keys that carry a scope (or all, or any, of
//! several), and [`Principal::require_scope`] checks one in a handler.
//!
//! A key without scopes has full access (every key had before scopes existed), so a guard
//! admits it. A key with scopes is admitted only for what they name; otherwise `403
//! insufficient_scope`, with RFC 6750's `WWW-Authenticate: Bearer realm="hapnd",
//! error="insufficient_scope", scope="events:write"`, the code in the JSON body (or
//! `PERMISSION_DENIED` with [`GrpcRejection`](crate::GrpcRejection)), and the handler never
//! runs. Like the environment guard, it goes *inside* [`ApiKeyLayer`](crate::ApiKeyLayer):
//! without a principal it answers 500 `auth_layer_missing`, never lets the request through.
//!
//! ```
//! use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey, RequireScopeLayer};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let auth = Authenticator::new(MemoryKeyStore::new());
//! let reader = auth
//!     .create_key(NewKey::new("acme", Environment::Live, "dash").scope("events:read"))
//!     .await
//!     .unwrap();
//! let writes = ServiceBuilder::new()
//!     .layer(auth.layer())
//!     .layer(RequireScopeLayer::new("events:write"))
//!     .service_fn(|_: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(bytes::Bytes::from("written")))
//!     });
//!
//! let request = Request::post("/events")
//!     .header("authorization", format!("Bearer {}", reader.key.expose_secret()))
//!     .body(())
//!     .unwrap();
//! let response = writes.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 403);
//! assert_eq!(
//!     response.headers()["www-authenticate"],
//!     r#"Bearer realm="hapnd", error="insufficient_scope", scope="events:write""#
//! );
//! # });
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower_service::Service;

use crate::environment::no_principal;
use crate::error::AuthError;
use crate::future::ResponseFuture;
use crate::principal::Principal;
use crate::rejection::{JsonRejection, RejectionResponse};
use crate::service::reject;
use crate::store::is_valid_scope;

/// What a guard requires, with its challenge and message built once.
pub(crate) struct ScopeRule {
    scopes: Box<[Box<str>]>,
    all: bool,
    pub(crate) challenge: HeaderValue,
    pub(crate) message: Box<str>,
}

impl ScopeRule {
    /// # Panics
    /// If `scopes` is empty or one is not of the scope grammar.
    pub(crate) fn new<I, S>(scopes: I, all: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Box<[Box<str>]> = scopes
            .into_iter()
            .map(|s| s.into().into_boxed_str())
            .collect();
        assert!(!scopes.is_empty(), "a scope guard needs at least one scope");
        for scope in &scopes {
            assert!(
                is_valid_scope(scope),
                "{scope:?} is not a scope (see hapnd_auth::is_valid_scope)"
            );
        }
        let list = scopes.join(" ");
        // Scopes are [a-z0-9_:-]: a valid header value and JSON string as they are.
        let challenge = HeaderValue::from_str(&format!(
            r#"Bearer realm="hapnd", error="insufficient_scope", scope="{list}""#
        ))
        .expect("scopes are header-safe");
        let message = match (scopes.len(), all) {
            (1, _) => format!("this endpoint needs an API key with the scope {list}"),
            (_, true) => format!("this endpoint needs an API key with all of the scopes {list}"),
            (_, false) => format!("this endpoint needs an API key with one of the scopes {list}"),
        };
        ScopeRule {
            scopes,
            all,
            challenge,
            message: message.into_boxed_str(),
        }
    }

    #[inline]
    fn admits(&self, principal: &Principal) -> bool {
        if principal.is_unrestricted() {
            return true;
        }
        if self.all {
            self.scopes.iter().all(|s| principal.has_scope(s))
        } else {
            self.scopes.iter().any(|s| principal.has_scope(s))
        }
    }

    pub(crate) fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(|s| &**s)
    }
}

impl fmt::Debug for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeRule")
            .field("scopes", &self.scopes)
            .field("all", &self.all)
            .finish()
    }
}

/// Admits requests whose key carries the required scope(s), or has no scopes at all (full
/// access); others get 403 `insufficient_scope` with RFC 6750's `scope="..."` in
/// `WWW-Authenticate`, and the inner service is not called.
///
/// Goes inside [`ApiKeyLayer`](crate::ApiKeyLayer); with axum, `route_layer` it on the
/// routes that need it, under a router the `ApiKeyLayer` wraps.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopeLayer<R = JsonRejection> {
    rule: Arc<ScopeRule>,
    rejection: R,
}

impl RequireScopeLayer {
    /// Requires `scope`.
    ///
    /// # Panics
    /// If `scope` is not of the scope grammar ([`is_valid_scope`](crate::is_valid_scope)):
    /// a guard that could never match is a bug in the route table.
    pub fn new(scope: &str) -> Self {
        Self::from_rule(ScopeRule::new([scope], true))
    }

    /// Requires every one of `scopes`.
    ///
    /// # Panics
    /// If `scopes` is empty or one is not of the scope grammar.
    pub fn all<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self::from_rule(ScopeRule::new(scopes, true))
    }

    /// Requires at least one of `scopes`.
    ///
    /// # Panics
    /// If `scopes` is empty or one is not of the scope grammar.
    pub fn any<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self::from_rule(ScopeRule::new(scopes, false))
    }

    fn from_rule(rule: ScopeRule) -> Self {
        RequireScopeLayer {
            rule: Arc::new(rule),
            rejection: JsonRejection,
        }
    }
}

impl<R> RequireScopeLayer<R> {
    /// Replaces the rejection response.
    pub fn rejection<T>(self, rejection: T) -> RequireScopeLayer<T> {
        RequireScopeLayer {
            rule: self.rule,
            rejection,
        }
    }
}

impl<S, R: Clone> tower_layer::Layer<S> for RequireScopeLayer<R> {
    type Service = RequireScope<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScope {
            inner,
            rule: Arc::clone(&self.rule),
            rejection: self.rejection.clone(),
        }
    }
}

/// The service of [`RequireScopeLayer`].
#[derive(Clone, Debug)]
pub struct RequireScope<S, R = JsonRejection> {
    inner: S,
    rule: Arc<ScopeRule>,
    rejection: R,
}

impl<S, R> RequireScope<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScope<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponse<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match req.extensions().get::<Principal>() {
            Some(p) if self.rule.admits(p) => ResponseFuture::inner(self.inner.call(req)),
            Some(p) => {
                let error = AuthError::insufficient_scope(Arc::clone(&self.rule))
                    .with_hint(p.key_hint().to_owned())
                    .with_principal(p.clone());
                ResponseFuture::rejected(reject(&self.rejection, error))
            }
            None => ResponseFuture::rejected(reject(&self.rejection, no_principal(&req))),
        }
    }
}

impl Principal {
    /// `Ok` when the key may do what `scope` names ([`has_scope`](Self::has_scope));
    /// otherwise the `insufficient_scope` rejection, which with the `axum` feature is a
    /// response (403, the challenge, the JSON body), so a handler can write
    /// `principal.require_scope("events:write")?`.
    ///
    /// ```
    /// # #[cfg(feature = "axum")]
    /// # {
    /// use hapnd_auth::{AuthError, Principal};
    ///
    /// async fn write_event(principal: Principal) -> Result<&'static str, AuthError> {
    ///     principal.require_scope("events:write")?;
    ///     Ok("written")
    /// }
    /// # let _ = axum::Router::<()>::new().route("/events", axum::routing::post(write_event));
    /// # }
    /// ```
    ///
    /// # Panics
    /// If `scope` is not of the scope grammar.
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.has_scope(scope) {
            return Ok(());
        }
        let rule = ScopeRule::new([scope], true);
        Err(AuthError::insufficient_scope(Arc::new(rule))
            .with_hint(self.key_hint().to_owned())
            .with_principal(self.clone()))
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for AuthError {
    /// The [`JsonRejection`] response, the error in its extensions.
    fn into_response(self) -> axum_core::response::Response {
        reject(&JsonRejection, self)
    }
}
