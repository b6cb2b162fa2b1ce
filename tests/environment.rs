//! Environment routing and guarding, and the axum integration.

mod common;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::routing::get;
use common::{Body, assert_rejected, bearer, echo, seen};
use hapnd_auth::{
    AuthErrorKind, Authenticator, Environment, EnvironmentRouter, MemoryKeyStore, NewKey,
    RequireEnvironmentLayer,
};
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

async fn keys(auth: &Authenticator) -> (String, String) {
    let live = auth
        .create_key(NewKey::new("acme", Environment::Live, "prod"))
        .await
        .unwrap();
    let test = auth
        .create_key(NewKey::new("acme", Environment::Sandbox, "dev"))
        .await
        .unwrap();
    (
        live.key.expose_secret().to_owned(),
        test.key.expose_secret().to_owned(),
    )
}

fn tagged(
    tag: &'static str,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    service_fn(move |_req: Request<Body>| async move { Ok(Response::new(Body::from(tag))) })
}

#[tokio::test]
async fn the_router_sends_each_environment_to_its_own_service() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let (live, test) = keys(&auth).await;
    let svc = ServiceBuilder::new()
        .layer(auth.layer())
        .service(EnvironmentRouter::new(tagged("live"), tagged("sandbox")));
    assert_eq!(
        seen(svc.clone().oneshot(bearer(&live)).await.unwrap())
            .await
            .body,
        "live"
    );
    assert_eq!(
        seen(svc.clone().oneshot(bearer(&test)).await.unwrap())
            .await
            .body,
        "sandbox"
    );
    assert_rejected(
        &seen(svc.oneshot(common::request(None)).await.unwrap()).await,
        AuthErrorKind::MissingApiKey,
    );
}

#[tokio::test]
async fn the_guard_admits_one_environment_and_answers_403_to_the_other() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    let (live, test) = keys(&auth).await;
    let svc = ServiceBuilder::new()
        .layer(auth.layer())
        .layer(RequireEnvironmentLayer::new(Environment::Live))
        .service(service_fn(echo));
    assert_eq!(
        seen(svc.clone().oneshot(bearer(&live)).await.unwrap())
            .await
            .status,
        200
    );
    let s = seen(svc.oneshot(bearer(&test)).await.unwrap()).await;
    assert_rejected(&s, AuthErrorKind::WrongEnvironment);
    assert_eq!(
        s.challenge.as_deref(),
        Some(r#"Bearer realm="hapnd", error="insufficient_scope""#)
    );
    assert!(
        s.body.contains("sk_live_"),
        "the message says which key is needed: {}",
        s.body
    );
}

#[tokio::test]
async fn a_guard_without_the_layer_in_front_is_a_clear_500_not_an_open_door() {
    let svc = RequireEnvironmentLayer::new(Environment::Live).layer(service_fn(echo));
    let s = seen(svc.oneshot(common::request(None)).await.unwrap()).await;
    assert_eq!(s.status, 500);
    assert_eq!(s.code.as_deref(), Some("auth_layer_missing"));
    assert!(s.principal.is_none());
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn principal_is_an_axum_extractor() {
    use hapnd_auth::Principal;

    async fn whoami(p: Principal) -> String {
        format!("{}:{}:{}", p.tenant(), p.environment(), p.key_name())
    }
    async fn maybe(p: Option<Principal>) -> String {
        p.map_or("anonymous".into(), |p| p.tenant().to_owned())
    }

    let auth = Authenticator::new(MemoryKeyStore::new());
    let (live, _) = keys(&auth).await;
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(auth.layer())
        .route("/open", get(whoami))
        .route("/maybe", get(maybe));

    let get_with = |path: &str, key: Option<&str>| {
        let mut b = Request::get(path);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        b.body(AxumBody::empty()).unwrap()
    };
    let text = |r: Response<AxumBody>| async move {
        let status = r.status();
        (
            status,
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        )
    };

    let (status, body) = text(
        app.clone()
            .oneshot(get_with("/whoami", Some(&live)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "acme:live:prod"));
    let (status, _) = text(
        app.clone()
            .oneshot(get_with("/whoami", None))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // A route outside the layer: the extractor says what is wrong instead of guessing.
    let (status, body) = text(
        app.clone()
            .oneshot(get_with("/open", Some(&live)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert!(body.contains("ApiKeyLayer"), "{body}");
    let (_, body) = text(app.oneshot(get_with("/maybe", None)).await.unwrap()).await;
    assert_eq!(body, "anonymous");
}
