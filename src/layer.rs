//! [`ApiKeyLayer`]: the tower layer that puts API-key authentication in front of a service.

use crate::authenticator::Authenticator;
use crate::rejection::JsonRejection;
use crate::service::ApiKeyService;

/// Authenticates every request by its bearer API key. See the [crate docs](crate) for an
/// example with axum.
///
/// Made by [`Authenticator::layer`] or [`ApiKeyLayer::new`]. Cheap to clone.
///
/// ```
/// use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey, Principal};
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
///
/// // Any tower service of `http` requests; here one that reports what it saw.
/// let service = ServiceBuilder::new()
///     .layer(auth.layer())
///     .service_fn(|req: Request<()>| async move {
///         let tenant = req.extensions().get::<Principal>().unwrap().tenant().to_owned();
///         let saw_key = req.headers().contains_key("authorization");
///         let body = bytes::Bytes::from(format!("{tenant} {saw_key}"));
///         Ok::<_, std::convert::Infallible>(Response::new(body))
///     });
///
/// let request = Request::get("/")
///     .header("authorization", format!("Bearer {}", created.key.expose_secret()))
///     .body(())
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.body(), "acme false"); // the header was stripped
/// # });
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ApiKeyLayer<R = JsonRejection> {
    pub(crate) auth: Authenticator,
    pub(crate) rejection: R,
    pub(crate) strip_authorization: bool,
    pub(crate) optional: bool,
}

impl ApiKeyLayer {
    /// A layer over `auth` with the default JSON rejections.
    pub fn new(auth: Authenticator) -> Self {
        ApiKeyLayer {
            auth,
            rejection: JsonRejection,
            strip_authorization: true,
            optional: false,
        }
    }
}

impl<R> ApiKeyLayer<R> {
    /// Replaces the rejection response: a [`RejectionResponse`](crate::RejectionResponse)
    /// or a closure `Fn(&AuthError) -> Response<B>`.
    ///
    /// Build the response with [`AuthError::response`](crate::AuthError::response) to keep
    /// the status, `WWW-Authenticate`, `Retry-After` and `Cache-Control: no-store` of the
    /// default; the layer adds the [`AuthError`](crate::AuthError) to the response
    /// extensions whatever the closure returns.
    ///
    /// ```
    /// use hapnd_auth::{AuthError, Authenticator, MemoryKeyStore};
    /// use http::{Request, Response};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let auth = Authenticator::new(MemoryKeyStore::new());
    /// let layer = auth.layer().rejection(|e: &AuthError| {
    ///     e.response(format!(r#"{{"status":{},"reason":"{}"}}"#, e.status().as_u16(), e.code()))
    /// });
    /// let service = ServiceBuilder::new().layer(layer).service_fn(|_: Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    /// });
    ///
    /// let request = Request::get("/").header("authorization", "Bearer sk_live_typo").body(()).unwrap();
    /// let response = service.oneshot(request).await.unwrap();
    /// assert_eq!(response.status(), 401);
    /// assert_eq!(response.body(), r#"{"status":401,"reason":"invalid_api_key"}"#);
    /// assert!(response.headers().contains_key("www-authenticate"));
    /// assert_eq!(response.extensions().get::<AuthError>().unwrap().code(), "invalid_api_key");
    /// # });
    /// ```
    pub fn rejection<T>(self, rejection: T) -> ApiKeyLayer<T> {
        ApiKeyLayer {
            auth: self.auth,
            rejection,
            strip_authorization: self.strip_authorization,
            optional: self.optional,
        }
    }

    /// Whether to remove the `Authorization` header before the inner service sees it
    /// (default `true`, so the key cannot leak from a handler or a proxied request).
    ///
    /// ```
    /// use hapnd_auth::{Authenticator, MemoryKeyStore};
    ///
    /// let auth = Authenticator::new(MemoryKeyStore::new());
    /// // A proxy that forwards the caller's key to an upstream that checks it again.
    /// let layer = auth.layer().strip_authorization(false);
    /// # let _ = layer;
    /// ```
    pub fn strip_authorization(mut self, strip: bool) -> Self {
        self.strip_authorization = strip;
        self
    }

    /// Optional authentication: a request with no `Authorization` header at all reaches
    /// the inner service without a [`Principal`](crate::Principal), for routes that serve
    /// anonymous callers too (read it as `Option<Principal>`). A request that sends a
    /// header must still hold a valid key: a bad, revoked or malformed one, or another
    /// scheme, is rejected as usual, never downgraded to anonymous. Environment guards
    /// ([`RequireEnvironmentLayer`](crate::RequireEnvironmentLayer),
    /// [`EnvironmentRouter`](crate::EnvironmentRouter)) inside an optional layer answer an
    /// anonymous request 401 `missing_api_key`.
    ///
    /// ```
    /// use hapnd_auth::{Authenticator, MemoryKeyStore, Principal};
    /// use http::{Request, Response};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let auth = Authenticator::new(MemoryKeyStore::new());
    /// let service = ServiceBuilder::new()
    ///     .layer(auth.layer().optional())
    ///     .service_fn(|req: Request<()>| async move {
    ///         let who = match req.extensions().get::<Principal>() {
    ///             Some(p) => p.tenant().to_owned(),
    ///             None => "anonymous".to_owned(),
    ///         };
    ///         Ok::<_, std::convert::Infallible>(Response::new(bytes::Bytes::from(who)))
    ///     });
    ///
    /// let anonymous = service.clone().oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(anonymous.body(), "anonymous");
    /// let bad = Request::get("/").header("authorization", "Bearer sk_live_typo").body(()).unwrap();
    /// assert_eq!(service.oneshot(bad).await.unwrap().status(), 401);
    /// # });
    /// ```
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl<S, R: Clone> tower_layer::Layer<S> for ApiKeyLayer<R> {
    type Service = ApiKeyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            auth: self.auth.clone(),
            rejection: self.rejection.clone(),
            strip_authorization: self.strip_authorization,
            optional: self.optional,
        }
    }
}
