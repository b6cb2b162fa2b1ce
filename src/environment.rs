//! Environment routing: [`EnvironmentRouter`] sends live and sandbox requests to different
//! services, and [`RequireEnvironmentLayer`] admits one environment only.
//!
//! Both read the [`Principal`] that [`ApiKeyLayer`](crate::ApiKeyLayer) inserted, so they go
//! *inside* it. Without a principal they answer 500 `auth_layer_missing`: a server
//! misconfiguration, never silently let through.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::AuthError;
use crate::future::ResponseFuture;
use crate::key::Environment;
use crate::principal::Principal;
use crate::rejection::{JsonRejection, RejectionResponse};
use crate::service::{Anonymous, reject};

/// Admits requests whose key is of one environment; others get 403 `wrong_environment`.
///
/// Goes inside [`ApiKeyLayer`](crate::ApiKeyLayer) (it reads the principal the layer
/// inserted); without it in front, every request gets 500 `auth_layer_missing`.
///
/// ```
/// use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey, RequireEnvironmentLayer};
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let sandbox = auth.create_key(NewKey::new("acme", Environment::Sandbox, "ci")).await.unwrap();
/// let live_only = ServiceBuilder::new()
///     .layer(auth.layer())
///     .layer(RequireEnvironmentLayer::new(Environment::Live))
///     .service_fn(|_: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(bytes::Bytes::from("payouts")))
///     });
///
/// let request = Request::get("/payouts")
///     .header("authorization", format!("Bearer {}", sandbox.key.expose_secret()))
///     .body(())
///     .unwrap();
/// let response = live_only.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 403); // wrong_environment
/// # });
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireEnvironmentLayer<R = JsonRejection> {
    environment: Environment,
    rejection: R,
}

impl RequireEnvironmentLayer {
    /// Admits `environment` only.
    pub fn new(environment: Environment) -> Self {
        RequireEnvironmentLayer {
            environment,
            rejection: JsonRejection,
        }
    }
}

impl<R> RequireEnvironmentLayer<R> {
    /// Replaces the rejection response.
    pub fn rejection<T>(self, rejection: T) -> RequireEnvironmentLayer<T> {
        RequireEnvironmentLayer {
            environment: self.environment,
            rejection,
        }
    }
}

impl<S, R: Clone> tower_layer::Layer<S> for RequireEnvironmentLayer<R> {
    type Service = RequireEnvironment<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireEnvironment {
            inner,
            environment: self.environment,
            rejection: self.rejection.clone(),
        }
    }
}

/// The service of [`RequireEnvironmentLayer`].
#[derive(Clone, Debug)]
pub struct RequireEnvironment<S, R = JsonRejection> {
    inner: S,
    environment: Environment,
    rejection: R,
}

impl<S, R> RequireEnvironment<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireEnvironment<S, R>
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
            Some(p) if p.environment() == self.environment => {
                ResponseFuture::inner(self.inner.call(req))
            }
            Some(p) => {
                let error = AuthError::wrong_environment(self.environment)
                    .with_hint(p.key_hint().to_owned())
                    .with_principal(p.clone());
                ResponseFuture::rejected(reject(&self.rejection, error))
            }
            None => ResponseFuture::rejected(reject(&self.rejection, no_principal(&req))),
        }
    }
}

/// Why a request reached a guard without a principal: an optional layer let an anonymous
/// caller through (401 `missing_api_key`: the caller can fix that), or no layer is in
/// front at all (500 `auth_layer_missing`: the server must).
pub(crate) fn no_principal<B>(req: &Request<B>) -> AuthError {
    if req.extensions().get::<Anonymous>().is_some() {
        AuthError::missing()
    } else {
        AuthError::layer_missing()
    }
}

/// Sends live requests to one service and sandbox requests to another, so sandbox
/// traffic never reaches production handlers.
///
/// ```
/// use hapnd_auth::{Authenticator, EnvironmentRouter, MemoryKeyStore};
/// use tower::ServiceBuilder;
///
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let live = axum::Router::new().route("/events", axum::routing::get(|| async { "live" }));
/// let sandbox = axum::Router::new().route("/events", axum::routing::get(|| async { "sandbox" }));
/// let service = ServiceBuilder::new()
///     .layer(auth.layer())
///     .service(EnvironmentRouter::new(live, sandbox));
/// let app: axum::Router = axum::Router::new().fallback_service(service);
/// # let _ = app;
/// ```
#[derive(Clone, Debug)]
pub struct EnvironmentRouter<L, S> {
    live: L,
    sandbox: S,
}

impl<L, S> EnvironmentRouter<L, S> {
    /// Routes live requests to `live`, sandbox requests to `sandbox`.
    pub fn new(live: L, sandbox: S) -> Self {
        EnvironmentRouter { live, sandbox }
    }
}

impl<L, S, ReqBody, ResBody> Service<Request<ReqBody>> for EnvironmentRouter<L, S>
where
    L: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = L::Error>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = L::Error;
    type Future = RouterFuture<L::Future, S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both must be ready: which one is called is only known from the request.
        match (self.live.poll_ready(cx)?, self.sandbox.poll_ready(cx)?) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let kind = match req
            .extensions()
            .get::<Principal>()
            .map(Principal::environment)
        {
            Some(Environment::Live) => RouterKind::Live {
                future: self.live.call(req),
            },
            Some(Environment::Sandbox) => RouterKind::Sandbox {
                future: self.sandbox.call(req),
            },
            None => RouterKind::Rejected {
                response: Some(reject(&JsonRejection, no_principal(&req))),
            },
        };
        RouterFuture { kind }
    }
}

pin_project! {
    /// Response future of [`EnvironmentRouter`].
    pub struct RouterFuture<L, S, B> {
        #[pin]
        kind: RouterKind<L, S, B>,
    }
}

pin_project! {
    #[project = RouterKindProj]
    enum RouterKind<L, S, B> {
        Live { #[pin] future: L },
        Sandbox { #[pin] future: S },
        Rejected { response: Option<Response<B>> },
    }
}

impl<L, S, B, E> Future for RouterFuture<L, S, B>
where
    L: Future<Output = Result<Response<B>, E>>,
    S: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            RouterKindProj::Live { future } => future.poll(cx),
            RouterKindProj::Sandbox { future } => future.poll(cx),
            RouterKindProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("future polled after completion")))
            }
        }
    }
}
