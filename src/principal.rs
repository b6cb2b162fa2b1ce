//! [`Principal`]: who a request authenticated as, put into the request extensions.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::key::{Environment, KeyHash};
use crate::rate_limit::{KeyLimiter, KeyLimits};
use crate::store::{KeyId, KeyRecord, Metadata, RateLimit};

/// The tenant, environment and key a request authenticated with.
///
/// The layer inserts it into the request extensions. Cloning it is one reference-count
/// increment. With the `axum` feature it is also an extractor: `Principal` in a handler
/// behind the layer, `Option<Principal>` behind an [optional](crate::ApiKeyLayer::optional)
/// one. A handler that takes `Principal` on a route without the layer answers 500 with a
/// message that says so (`MissingPrincipal`), never an anonymous call.
///
/// ```
/// # #[cfg(feature = "axum")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use axum::{Router, body::Body, routing::get};
/// use hapnd_auth::{Authenticator, MemoryKeyStore, Principal};
/// use tower::ServiceExt;
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} ({})", principal.tenant(), principal.environment())
/// }
/// async fn greeting(principal: Option<Principal>) -> String {
///     principal.map_or("hello, stranger".into(), |p| format!("hello, {}", p.tenant()))
/// }
///
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let app = Router::new()
///     .route("/whoami", get(whoami))
///     .layer(auth.layer())
///     .merge(Router::new().route("/hello", get(greeting)).layer(auth.layer().optional()))
///     .route("/unprotected", get(whoami)); // a mistake: no layer in front
///
/// let get = |uri| http::Request::get(uri).body(Body::empty()).unwrap();
/// assert_eq!(app.clone().oneshot(get("/whoami")).await.unwrap().status(), 401);
/// assert_eq!(app.clone().oneshot(get("/hello")).await.unwrap().status(), 200);
/// assert_eq!(app.oneshot(get("/unprotected")).await.unwrap().status(), 500);
/// # });
/// ```
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

/// One allocation per cached key, plus the id's and the text's: this is most of what the
/// cache holds per key, so it is packed.
struct Inner {
    key_id: KeyId,
    /// Tenant, key name and hint, back to back.
    text: Box<str>,
    tenant_len: u32,
    name_len: u32,
    environment: Environment,
    /// What the request path checks on every hit (see `authenticator::verify`).
    hash: KeyHash,
    revoked: bool,
    expires_at: Option<SystemTime>,
    /// Scopes, metadata, rate limit: one pointer, null for a key with none of them (most
    /// keys), so they cost such a key 8 bytes and the hit path one test.
    policy: Option<Box<Policy>>,
}

/// What a key with scopes, metadata or a rate limit carries besides its identity.
struct Policy {
    scopes: Box<[Box<str>]>,
    metadata: Option<Metadata>,
    limiter: Option<Arc<KeyLimiter>>,
}

impl Principal {
    /// A principal for `record`'s key. A rate-limited key gets a limiter of its own: the
    /// layer's principals share one per key instead (kept across cache refills).
    pub fn from_record(record: KeyRecord) -> Self {
        Self::build(record, None)
    }

    /// The principal the cache holds: a rate-limited key's limiter comes from `limits`.
    pub(crate) fn with_limits(record: KeyRecord, limits: &KeyLimits) -> Self {
        Self::build(record, Some(limits))
    }

    fn build(record: KeyRecord, limits: Option<&KeyLimits>) -> Self {
        let policy = record.has_policy().then(|| {
            let limiter = record.rate_limit.map(|limit| match limits {
                Some(limits) => limits.limiter(&record.id, limit),
                None => Arc::new(KeyLimiter::new(limit, std::time::Duration::ZERO)),
            });
            Box::new(Policy {
                scopes: record
                    .scopes
                    .into_iter()
                    .map(String::into_boxed_str)
                    .collect(),
                metadata: record.metadata,
                limiter,
            })
        });
        let mut text =
            String::with_capacity(record.tenant.len() + record.name.len() + record.hint.len());
        text.push_str(&record.tenant);
        text.push_str(&record.name);
        text.push_str(&record.hint);
        // NewKey::validate bounds tenant and name to 128 characters; a store that allows
        // more still cannot reach 4 GiB in one record.
        let len = |s: &str| u32::try_from(s.len()).expect("a tenant or name under 4 GiB");
        Principal(Arc::new(Inner {
            tenant_len: len(&record.tenant),
            name_len: len(&record.name),
            text: text.into_boxed_str(),
            environment: record.environment,
            key_id: record.id,
            hash: record.hash,
            revoked: record.revoked_at.is_some(),
            expires_at: record.expires_at,
            policy,
        }))
    }

    /// A principal for handler tests, in one line: what the layer would insert for a key
    /// of `tenant` and `environment` named `name` (a fresh random key id and hint).
    ///
    /// ```
    /// use hapnd_auth::{Environment, Principal};
    ///
    /// let principal = Principal::for_test("acme", Environment::Sandbox, "ci");
    /// assert_eq!(principal.environment(), Environment::Sandbox);
    /// assert!(principal.key_hint().starts_with("sk_test_..."));
    ///
    /// // Into a request, as the layer would:
    /// let mut request = http::Request::new(());
    /// request.extensions_mut().insert(principal);
    /// ```
    ///
    /// # Panics
    /// If the tenant or name would be refused by [`NewKey::validate`](crate::NewKey::validate).
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn for_test(tenant: &str, environment: Environment, name: &str) -> Self {
        let new = crate::store::NewKey::new(tenant, environment, name);
        if let Err(e) = new.validate() {
            panic!("Principal::for_test: {e}");
        }
        let key = crate::key::ApiKey::generate(environment);
        Self::from_record(KeyRecord::for_key(&key, new, SystemTime::now()))
    }

    /// The tenant the key belongs to.
    pub fn tenant(&self) -> &str {
        &self.0.text[..self.0.tenant_len as usize]
    }

    /// The environment the key opens.
    pub fn environment(&self) -> Environment {
        self.0.environment
    }

    /// The key's id.
    pub fn key_id(&self) -> &KeyId {
        &self.0.key_id
    }

    /// The key's human name.
    pub fn key_name(&self) -> &str {
        let start = self.0.tenant_len as usize;
        &self.0.text[start..start + self.0.name_len as usize]
    }

    /// The key's masked hint: `sk_live_...a1b2`.
    pub fn key_hint(&self) -> &str {
        &self.0.text[(self.0.tenant_len + self.0.name_len) as usize..]
    }

    /// The key's scopes, in the order they were given; none for a key with full access.
    pub fn scopes(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let scopes: &[Box<str>] = self.0.policy.as_ref().map_or(&[], |p| &p.scopes);
        scopes.iter().map(|s| &**s)
    }

    /// Whether the key may do what `scope` names: it lists `scope`, or it has no scopes
    /// at all (a key without scopes has full access, as every key had before scopes).
    ///
    /// ```
    /// use hapnd_auth::{Environment, MemoryKeyStore, NewKey, Authenticator};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let auth = Authenticator::new(MemoryKeyStore::new());
    /// let reader = auth
    ///     .create_key(NewKey::new("acme", Environment::Live, "reader").scope("events:read"))
    ///     .await
    ///     .unwrap();
    /// let p = auth.authenticate_key(reader.key.expose_secret()).await.unwrap();
    /// assert!(p.has_scope("events:read"));
    /// assert!(!p.has_scope("events:write"));
    ///
    /// let full = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
    /// let p = auth.authenticate_key(full.key.expose_secret()).await.unwrap();
    /// assert!(p.has_scope("events:write") && p.is_unrestricted());
    /// # });
    /// ```
    #[inline]
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.0.policy {
            None => true,
            Some(p) => p.scopes.is_empty() || p.scopes.iter().any(|s| **s == *scope),
        }
    }

    /// Whether the key has no scopes, hence full access.
    pub fn is_unrestricted(&self) -> bool {
        self.0.policy.as_ref().is_none_or(|p| p.scopes.is_empty())
    }

    /// The key's metadata, if it has any. Never logged: not in this type's `Debug`.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.0.policy.as_ref()?.metadata.as_ref()
    }

    /// The key's rate limit, if it has one.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        Some(self.limiter()?.limit())
    }

    #[inline]
    pub(crate) fn limiter(&self) -> Option<&KeyLimiter> {
        self.0.policy.as_ref()?.limiter.as_deref()
    }

    /// The stored hash of the key, as the store returned it.
    pub(crate) fn stored_hash(&self) -> &KeyHash {
        &self.0.hash
    }

    /// Whether the record was revoked when it was loaded.
    pub(crate) fn is_revoked(&self) -> bool {
        self.0.revoked
    }

    /// When the key stops working, if ever.
    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("tenant", &self.tenant())
            .field("environment", &self.0.environment)
            .field("key_id", &self.0.key_id)
            .field("key_name", &self.key_name())
            .field("key_hint", &self.key_hint())
            .field("scopes", &self.scopes().collect::<Vec<_>>())
            .field("rate_limit", &self.rate_limit())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.key_id == other.0.key_id
                && self.tenant() == other.tenant()
                && self.0.environment == other.0.environment)
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::Principal;

    /// The rejection of the [`Principal`] extractor: the layer is not installed on this route.
    #[derive(Debug)]
    pub struct MissingPrincipal;

    impl IntoResponse for MissingPrincipal {
        fn into_response(self) -> Response {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "hapnd_auth::Principal is missing from the request extensions: \
                 is `ApiKeyLayer` installed on this route (`Router::layer`, not `route_layer` \
                 on another router)?",
            )
                .into_response()
        }
    }

    impl std::fmt::Display for MissingPrincipal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the request has no Principal: ApiKeyLayer is not installed")
        }
    }

    impl std::error::Error for MissingPrincipal {}

    impl<S: Send + Sync> FromRequestParts<S> for Principal {
        type Rejection = MissingPrincipal;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .ok_or(MissingPrincipal)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Principal>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::MissingPrincipal;
