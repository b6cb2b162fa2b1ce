//! [`ApiKeyLayer`]: the tower layer that puts API-key authentication in front of a service.

use crate::authenticator::Authenticator;
use crate::rejection::JsonRejection;
use crate::service::ApiKeyService;

/// Authenticates every request by its bearer API key. See the [crate docs](crate) for an
/// example.
///
/// Made by [`Authenticator::layer`] or [`ApiKeyLayer::new`]. Cheap to clone.
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
    pub fn strip_authorization(mut self, strip: bool) -> Self {
        self.strip_authorization = strip;
        self
    }

    /// Optional authentication: a request with no `Authorization` header at all reaches
    /// the inner service without a [`Principal`](crate::Principal), for routes that serve
    /// anonymous callers too (read it as `Option<Principal>`). A request that sends a
    /// header must still hold a valid key: a bad, revoked or malformed one, or another
    /// scheme, is rejected as usual, never downgraded to anonymous.
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
