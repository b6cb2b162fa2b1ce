//! [`ApiKeyService`]: the middleware service that [`ApiKeyLayer`](crate::ApiKeyLayer) makes.

use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower_service::Service;

use crate::authenticator::{Authenticator, Fast};
use crate::error::AuthError;
use crate::future::ResponseFuture;
use crate::principal::Principal;
use crate::rejection::{JsonRejection, RejectionResponse};

/// Authenticates requests before passing them to `S`; rejects them with `R` otherwise.
#[derive(Clone, Debug)]
pub struct ApiKeyService<S, R = JsonRejection> {
    pub(crate) inner: S,
    pub(crate) auth: Authenticator,
    pub(crate) rejection: R,
    pub(crate) strip_authorization: bool,
    pub(crate) optional: bool,
}

impl<S> ApiKeyService<S> {
    /// Wraps `inner` with `auth` and the default rejections.
    pub fn new(inner: S, auth: Authenticator) -> Self {
        ApiKeyService {
            inner,
            auth,
            rejection: JsonRejection,
            strip_authorization: true,
            optional: false,
        }
    }
}

impl<S, R> ApiKeyService<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: RejectionResponse<ResBody> + Clone + Send + Sync + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.auth.fast_path(req.headers(), Some(req.extensions())) {
            Fast::Done(Ok(principal), _) => {
                admit(&mut req, principal, self.strip_authorization);
                ResponseFuture::inner(self.inner.call(req))
            }
            // On the rejection path only: the hit path pays nothing for optional mode.
            Fast::Done(Err(_), _)
                if self.optional && !req.headers().contains_key(AUTHORIZATION) =>
            {
                // Tells the environment guards inside that the caller sent no key (401), as
                // opposed to a missing layer (500).
                req.extensions_mut().insert(Anonymous);
                ResponseFuture::inner(self.inner.call(req))
            }
            Fast::Done(Err(error), _) => {
                let hold = self.auth.tarpit(&error);
                let response = reject(&self.rejection, error);
                match hold {
                    None => ResponseFuture::rejected(response),
                    Some(hold) => ResponseFuture::lookup(Box::pin(async move {
                        hold.await;
                        Ok(response)
                    })),
                }
            }
            Fast::Miss(miss) => {
                // Call the instance that was polled ready, leave a fresh clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let auth = self.auth.clone();
                let rejection = self.rejection.clone();
                let strip = self.strip_authorization;
                ResponseFuture::lookup(Box::pin(async move {
                    match auth.resolve(miss).await {
                        Ok(principal) => {
                            admit(&mut req, principal, strip);
                            inner.call(req).await
                        }
                        // Not held, even a 429: this request already spent up to the
                        // lookup's bound, and a hold on top would pass the 4 s that proxy
                        // timeouts are set above. The client's next guesses are held.
                        Err(error) => Ok(reject(&rejection, error)),
                    }
                }))
            }
        }
    }
}

/// In the extensions of a request an optional layer let through without a key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Anonymous;

#[inline]
fn admit<B>(req: &mut Request<B>, principal: Principal, strip_authorization: bool) {
    if strip_authorization {
        req.headers_mut().remove(AUTHORIZATION);
    }
    req.extensions_mut().insert(principal);
}

/// The rejection response for `error`, with the error in its extensions.
pub(crate) fn reject<B, R: RejectionResponse<B>>(rejection: &R, error: AuthError) -> Response<B> {
    error.trace();
    let mut response = rejection.rejection(&error);
    response.extensions_mut().insert(error);
    response
}
