//! `serve --upstream`: the gateway as a reverse proxy in front of any HTTP backend.
//!
//! Every request that is not the gateway's own (`/auth/verify*`, `/v1/whoami`) is
//! authenticated by the same layer as the gateway's routes, so a rejection is the
//! gateway's answer and never reaches the backend; an admitted request is forwarded to
//! the upstream of its key's environment with the identity headers of the forward-auth
//! contract set by the gateway (whatever the client wrote under those names removed
//! first), without `Authorization` and hop-by-hop headers, and with `X-Forwarded-For`,
//! `-Proto` and `-Host` set. Bodies stream both ways: hyper's request body goes straight
//! into the client request, the backend's response body straight back.
//!
//! The client is hyper-util's pooled `legacy::Client` over `HttpConnector` (keep-alive to
//! the backend), plain HTTP/1.1: the backend runs beside the gateway.
//!
//! A backend that refuses or breaks is `502 upstream_unavailable`; one that does not
//! connect or answer in time is `504 upstream_timeout`. Neither is ever an auth failure.

use std::convert::Infallible;
use std::error::Error as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hapnd_auth::{
    Authenticator, Environment, Principal, RequireEnvironmentLayer, RequireScopeLayer,
    TrustedProxies,
};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::{Counter, Histogram, counter, describe_counter, describe_histogram, histogram};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, Service as _, ServiceBuilder};

use crate::logging;
use crate::server;
use crate::verify::{self, ERROR_HEADER};

/// The upstream flags of `serve`.
#[derive(clap::Args, Clone, Debug)]
// serve's own flags are `Args` too: clap wants group names unique.
#[group(id = "upstream_args")]
pub(crate) struct Args {
    /// Forward every authenticated request, live and sandbox keys alike, to this backend
    /// (`http://127.0.0.1:3000`, optionally with a base path). Plain `http://` only: the
    /// backend runs beside the gateway; TLS is for the edge in front of it.
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    upstream: Option<Target>,
    /// The backend for live keys (overrides --upstream for them). With it and no
    /// --upstream or --upstream-sandbox, sandbox keys get 403 wrong_environment and never
    /// reach it.
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    upstream_live: Option<Target>,
    /// The backend for sandbox keys (overrides --upstream for them). With it alone, live
    /// keys get 403 wrong_environment.
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    upstream_sandbox: Option<Target>,
    /// A path prefix forwarded without a key (repeat the flag): `/healthz` covers
    /// `/healthz` and `/healthz/...`, not `/healthzz`. Nothing is public unless named.
    /// Goes to --upstream, else --upstream-live, else --upstream-sandbox (under a route, to
    /// the route's backend, chosen alike), with no identity headers. A path with dot
    /// segments, `;`, backslashes or %-escapes is never public.
    #[arg(long = "public-path", value_name = "PREFIX", value_parser = parse_public)]
    public_paths: Vec<String>,
    /// A backend for one path prefix, live and sandbox keys alike (repeat the flag):
    /// `/billing=http://127.0.0.1:4000` sends `/billing` and `/billing/...` (not
    /// `/billingx`) there, the prefix kept. The longest prefix wins; paths under none go
    /// to --upstream. With routes, a path with dot segments, `;`, backslashes or
    /// %-escapes is refused (400 invalid_path).
    #[arg(long = "route", value_name = "PREFIX=URL", value_parser = parse_route)]
    routes: Vec<Route>,
    /// A prefix's backend for live keys (overrides --route for them). A prefix with only
    /// a live backend refuses sandbox keys (403 wrong_environment).
    #[arg(long = "route-live", value_name = "PREFIX=URL", value_parser = parse_route)]
    routes_live: Vec<Route>,
    /// A prefix's backend for sandbox keys (overrides --route for them).
    #[arg(long = "route-sandbox", value_name = "PREFIX=URL", value_parser = parse_route)]
    routes_sandbox: Vec<Route>,
    /// A scope a key needs to reach a route's backends (repeat the flag, once per route):
    /// `/billing=billing:read` refuses a key without it with 403 insufficient_scope before
    /// the backend sees the request; a key without scopes (full access) passes. PREFIX is
    /// a prefix given to --route, --route-live or --route-sandbox; public paths under it
    /// stay public.
    #[arg(long = "route-scope", value_name = "PREFIX=SCOPE", value_parser = parse_route_scope)]
    route_scopes: Vec<RouteScope>,
    /// Milliseconds to connect to the backend before 504 upstream_timeout.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    upstream_connect_timeout_ms: u64,
    /// Seconds the backend has to send its response headers, counted from the end of the
    /// request body, before 504 upstream_timeout.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    upstream_timeout_secs: u64,
}

/// A backend: `http://` authority and base path (no trailing `/`).
#[derive(Clone, Debug)]
pub(crate) struct Target {
    authority: Authority,
    base: String,
}

fn parse_target(text: &str) -> Result<Target, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("not a URL ({e}): expected http://host:port"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{other}:// is not supported: only http:// (run the backend beside the gateway)"
            ));
        }
        None => return Err("expected http://host:port".to_owned()),
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or("expected http://host:port")?;
    if authority.as_str().contains('@') {
        return Err("credentials in the upstream URL are not supported".to_owned());
    }
    if uri.query().is_some() {
        return Err("the upstream URL takes no query".to_owned());
    }
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok(Target { authority, base })
}

fn parse_public(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err("a public path starts with /".to_owned());
    }
    if !is_plain(text) {
        return Err(
            "a public path has no dot segments, backslashes, semicolons or %-escapes".to_owned(),
        );
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// One `--route`, `--route-live` or `--route-sandbox`: a path prefix (no trailing `/`)
/// and its backend.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    prefix: String,
    target: Target,
}

fn parse_route(text: &str) -> Result<Route, String> {
    let (prefix, url) = text
        .split_once('=')
        .ok_or("expected PREFIX=URL, such as /billing=http://127.0.0.1:4000")?;
    if !prefix.starts_with('/') {
        return Err(format!("a route prefix starts with / (got {prefix:?})"));
    }
    if !is_plain(prefix) || prefix.contains(['?', '#']) || prefix.parse::<Uri>().is_err() {
        return Err(format!(
            "route prefix {prefix:?}: a plain path, with no dot segments, backslashes, \
             semicolons, %-escapes, ? or #"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err("a route for / is --upstream (or --upstream-live, --upstream-sandbox)".into());
    }
    let target = parse_target(url).map_err(|e| format!("route {prefix}: {e}"))?;
    Ok(Route {
        prefix: prefix.to_owned(),
        target,
    })
}

/// One `--route-scope`: a route's prefix (no trailing `/`) and the scope its keys need.
#[derive(Clone, Debug)]
pub(crate) struct RouteScope {
    prefix: String,
    scope: String,
}

fn parse_route_scope(text: &str) -> Result<RouteScope, String> {
    let (prefix, scope) = text
        .split_once('=')
        .ok_or("expected PREFIX=SCOPE, such as /billing=billing:read")?;
    if !prefix.starts_with('/') {
        return Err(format!(
            "a route-scope prefix starts with / (got {prefix:?})"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    // The value is not echoed: whatever it is, it is no scope.
    if !hapnd_auth::is_valid_scope(scope) {
        return Err(format!(
            "route-scope {prefix}: not a scope (lower-case words of letters, digits, _ and -, \
             each starting with a letter, joined by :, such as billing:read)"
        ));
    }
    Ok(RouteScope {
        prefix: prefix.to_owned(),
        scope: scope.to_owned(),
    })
}

/// Whether `path` is `prefix` or under it, whole segments only, ASCII case ignored (a
/// backend that ignores case must not be reached past a route by `/BILLING`); the empty
/// prefix (the default backends) takes every path.
fn under(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
    prefix.is_empty()
        || path.len() >= prefix.len()
            && path[..prefix.len()].eq_ignore_ascii_case(prefix)
            && path.get(prefix.len()).is_none_or(|&b| b == b'/')
}

/// No `.`/`..` segment, backslash, `;` path parameter or `%` escape: a path every backend
/// reads as written, so that a prefix match here is a prefix match there
/// (`/public/../admin` is not public, nor `/public/..;/admin`, which Tomcat and Spring read
/// as `/admin`).
fn is_plain(path: &str) -> bool {
    !path.contains(['%', '\\', ';'])
        && path
            .split('/')
            .all(|segment| segment != "." && segment != "..")
}

/// Whether a request's path may be matched against route and public prefixes as written:
/// no `.`/`..` segment, backslash or `;`, and no `%` escape a backend could decode into
/// something that moves the path across a prefix. Refused escapes: of an unreserved
/// character (`%62illing` is `/billing`), of a sub-delimiter, `:` or `@` (they may be in a
/// prefix), of `/`, `\`, `%` or a control character, of a byte that starts an overlong or
/// full-width form some decoders read as ASCII (`%C0`, `%C1`, `%E0`, `%EF`, `%F0`,
/// `%F5`-`%FF`), and a `%` not followed by two hex digits. Others pass as written: `%20`,
/// `%22`, `%3C`, `%3F`, `%5B`, and UTF-8 such as `caf%C3%A9` (prefixes are plain ASCII, so
/// none of them can spell one).
fn is_routable(path: &str) -> bool {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let refused = |byte: u8| {
        byte.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/\\%".contains(&byte)
            || byte < 0x20
            || byte == 0x7f
            || matches!(byte, 0xc0 | 0xc1 | 0xe0 | 0xef | 0xf0 | 0xf5..=0xff)
    };
    if path.contains(['\\', ';']) || path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let bytes = path.as_bytes();
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'%') {
        let i = at + offset;
        let decoded = match (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (Some(high), Some(low)) => high << 4 | low,
            _ => return false,
        };
        if refused(decoded) {
            return false;
        }
        at = i + 3;
    }
    true
}

impl Args {
    /// The proxy these flags describe, or `None` without an upstream.
    /// `idle` closes an upgraded connection (a WebSocket) that moves no byte for as long.
    pub(crate) fn proxy(
        &self,
        trusted: TrustedProxies,
        idle: Duration,
    ) -> Result<Option<Proxy>, String> {
        let default = Backends::new(
            self.upstream.clone(),
            self.upstream_live.clone(),
            self.upstream_sandbox.clone(),
        );
        let routes = self.route_table()?;
        if default.public.is_none() && routes.is_empty() {
            if !self.public_paths.is_empty() {
                return Err(
                    "--public-path needs an upstream (--upstream URL or --route PREFIX=URL)"
                        .to_owned(),
                );
            }
            return Ok(None);
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(
            self.upstream_connect_timeout_ms,
        )));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Some(Proxy {
            inner: Arc::new(Inner {
                client,
                timeout: Duration::from_secs(self.upstream_timeout_secs),
                trusted,
                routes,
                default,
                public_paths: self.public_paths.clone(),
                metrics: Metrics::register(),
                idle,
            }),
        }))
    }
}

impl Args {
    /// The `--route*` flags by prefix, longest first; a prefix given twice to one flag is
    /// an error. Prefixes are compared with ASCII case ignored, as paths are matched.
    fn route_table(&self) -> Result<Vec<(String, Backends)>, String> {
        let mut table: Vec<(String, [Option<Target>; 3])> = Vec::new();
        for (slot, flag, routes) in [
            (0, "--route", &self.routes),
            (1, "--route-live", &self.routes_live),
            (2, "--route-sandbox", &self.routes_sandbox),
        ] {
            for route in routes {
                let prefix = route.prefix.to_ascii_lowercase();
                let index = match table.iter().position(|(p, _)| *p == prefix) {
                    Some(index) => index,
                    None => {
                        table.push((prefix, Default::default()));
                        table.len() - 1
                    }
                };
                let targets = &mut table[index].1;
                if targets[slot].is_some() {
                    return Err(format!("{flag} {} is given twice", route.prefix));
                }
                targets[slot] = Some(route.target.clone());
            }
        }
        let scopes = self.route_scopes(&table)?;
        table.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(table
            .into_iter()
            .map(|(prefix, [any, live, sandbox])| {
                let mut backends = Backends::new(any, live, sandbox);
                backends.scope = scopes
                    .iter()
                    .find(|(scoped, _)| *scoped == prefix)
                    .map(|(_, scope)| Arc::from(*scope));
                (prefix, backends)
            })
            .collect())
    }

    /// The `--route-scope` flags as (lower-cased prefix, scope): each names a prefix of
    /// `table` (a route's own, not one under it), and each prefix at most once.
    fn route_scopes<T>(&self, table: &[(String, T)]) -> Result<Vec<(String, &str)>, String> {
        let mut scopes: Vec<(String, &str)> = Vec::new();
        for spec in &self.route_scopes {
            let prefix = spec.prefix.to_ascii_lowercase();
            if !table.iter().any(|(p, _)| *p == prefix) {
                return Err(format!(
                    "--route-scope {} names no route: its prefix must be one given to \
                     --route, --route-live or --route-sandbox",
                    spec.prefix
                ));
            }
            if scopes.iter().any(|(p, _)| *p == prefix) {
                return Err(format!("--route-scope {} is given twice", spec.prefix));
            }
            scopes.push((prefix, &spec.scope));
        }
        Ok(scopes)
    }
}

/// The backends of one route, or of the paths under none: one per environment, and the
/// one public paths go to.
#[derive(Clone, Default)]
struct Backends {
    live: Option<Arc<Target>>,
    sandbox: Option<Arc<Target>>,
    /// The backend for both, else the live one, else the sandbox one.
    public: Option<Arc<Target>>,
    /// The scope a key needs to reach `live` or `sandbox` (`--route-scope`).
    scope: Option<Arc<str>>,
}

impl Backends {
    /// `any` serves both environments but where `live` or `sandbox` overrides it.
    fn new(any: Option<Target>, live: Option<Target>, sandbox: Option<Target>) -> Self {
        let any = any.map(Arc::new);
        let live = live.map(Arc::new).or_else(|| any.clone());
        let sandbox = sandbox.map(Arc::new).or_else(|| any.clone());
        let public = any.or_else(|| live.clone()).or_else(|| sandbox.clone());
        Backends {
            live,
            sandbox,
            public,
            scope: None,
        }
    }
}

/// The reverse proxy: cheap to clone.
#[derive(Clone)]
pub(crate) struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Sent>,
    timeout: Duration,
    trusted: TrustedProxies,
    /// The routes, longest prefix first.
    routes: Vec<(String, Backends)>,
    /// The backends of paths under no route (none without --upstream*).
    default: Backends,
    public_paths: Vec<String>,
    metrics: Metrics,
    idle: Duration,
}

/// Why a forward failed: the `kind` of `hapnd_upstream_errors_total`.
#[derive(Clone, Copy)]
enum Failure {
    /// Refused, unreachable, or any other failure to connect.
    Connect = 0,
    /// No connection within --upstream-connect-timeout-ms.
    ConnectTimeout = 1,
    /// No response headers within --upstream-timeout-secs of the request's end.
    ResponseTimeout = 2,
    /// The connection broke (reset, closed) before the response headers.
    Broken = 3,
}

const FAILURES: [&str; 4] = ["connect", "connect_timeout", "response_timeout", "broken"];

/// The upstream's metrics, registered once when the proxy is built (after the recorder is
/// installed): a request costs an increment and a histogram record, no lookup by name.
struct Metrics {
    answered: Counter,
    unavailable: Counter,
    timeout: Counter,
    client_aborted: Counter,
    errors: [Counter; 4],
    seconds: Histogram,
}

impl Metrics {
    fn register() -> Self {
        describe_counter!(
            "hapnd_upstream_requests_total",
            "requests forwarded to an upstream, by outcome"
        );
        describe_counter!(
            "hapnd_upstream_errors_total",
            "forwards that failed, by kind"
        );
        describe_histogram!(
            "hapnd_upstream_response_duration_seconds",
            metrics::Unit::Seconds,
            "from forwarding a request to the upstream's response headers (or the failure)"
        );
        let outcome = |o: &'static str| counter!("hapnd_upstream_requests_total", "outcome" => o);
        Metrics {
            answered: outcome("answered"),
            unavailable: outcome("upstream_unavailable"),
            timeout: outcome("upstream_timeout"),
            client_aborted: outcome("client_aborted"),
            errors: FAILURES.map(|kind| counter!("hapnd_upstream_errors_total", "kind" => kind)),
            seconds: histogram!("hapnd_upstream_response_duration_seconds"),
        }
    }

    fn failed(&self, failure: Failure) {
        self.errors[failure as usize].increment(1);
        match failure {
            Failure::Connect | Failure::Broken => self.unavailable.increment(1),
            Failure::ConnectTimeout | Failure::ResponseTimeout => self.timeout.increment(1),
        }
    }
}

type Service = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// A route as served: its prefix, its backends behind authentication, and the backend of
/// its public paths.
type Routed = (String, Service, Option<Arc<Target>>);

impl Proxy {
    /// A router whose fallback (every path no other route takes) is the proxy: the route
    /// of the longest prefix the path is under (else the default backends) picks the
    /// backends; public paths go straight through, everything else behind `auth`'s layer.
    pub(crate) fn router(&self, auth: &Authenticator) -> Router {
        let routes: Arc<[Routed]> = self
            .inner
            .routes
            .iter()
            .map(|(prefix, backends)| (prefix.as_str(), backends))
            .chain(std::iter::once(("", &self.inner.default)))
            .map(|(prefix, backends)| {
                let authed = self.authenticated(auth, backends);
                (prefix.to_owned(), authed, backends.public.clone())
            })
            .collect();
        // With routes, only a path every backend reads as written is routed by prefix:
        // `/billing/../admin` would reach the billing backend's `/admin`, and
        // `/x/%2e%2e/billing` another backend's `/billing`, past the route's environments.
        let plain_only = !self.inner.routes.is_empty();
        let proxy = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let (proxy, routes) = (proxy.clone(), routes.clone());
            async move {
                let path = request.uri().path();
                if plain_only && !is_routable(path) {
                    return Ok(failure_response(
                        StatusCode::BAD_REQUEST,
                        "invalid_path",
                        "a path with dot segments, backslashes, semicolons or %-escapes that \
                         could spell another path is not routed",
                    ));
                }
                let (_, authed, public) = routes
                    .iter()
                    .find(|(prefix, ..)| under(path, prefix))
                    .expect("the default backends take every path");
                if let Some(target) = public
                    && proxy.is_public(path)
                {
                    return Ok(proxy.forward(target, request, None).await);
                }
                let mut authed = authed.clone();
                tower::ServiceExt::<Request<Body>>::ready(&mut authed)
                    .await?
                    .call(request)
                    .await
            }
        });
        Router::new().fallback_service(service)
    }

    fn is_public(&self, path: &str) -> bool {
        is_routable(path)
            && self.inner.public_paths.iter().any(|prefix| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    /// The key's environment picks the upstream among `backends`; an environment without
    /// one is refused by the library's own `RequireEnvironmentLayer` (403
    /// `wrong_environment`), a key without the backends' scope by its `RequireScopeLayer`
    /// (403 `insufficient_scope`), and a path no backend serves is 404 `no_route` once the
    /// key is admitted.
    fn authenticated(&self, auth: &Authenticator, backends: &Backends) -> Service {
        let proxy = self.clone();
        let chosen = backends.clone();
        let by_environment = tower::service_fn(move |request: Request<Body>| {
            let (proxy, chosen) = (proxy.clone(), chosen.clone());
            async move {
                let principal = request.extensions().get::<Principal>().cloned();
                let target = principal.as_ref().and_then(|p| match p.environment() {
                    Environment::Live => chosen.live.clone(),
                    Environment::Sandbox => chosen.sandbox.clone(),
                });
                match (principal, target) {
                    (Some(principal), Some(target)) => {
                        Ok(proxy.forward(&target, request, Some(&principal)).await)
                    }
                    // Unreachable behind the layers below; fail closed all the same.
                    _ => Ok(failure_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "upstream_not_configured",
                        "no upstream for this key",
                    )),
                }
            }
        });
        let scope = backends.scope.as_deref();
        match (&backends.live, &backends.sandbox) {
            (None, None) => guarded(
                auth,
                scope,
                tower::service_fn(|_| async {
                    Ok(failure_response(
                        StatusCode::NOT_FOUND,
                        "no_route",
                        "no upstream serves this path",
                    ))
                }),
            ),
            (Some(_), Some(_)) => guarded(auth, scope, by_environment),
            (Some(_), None) => guarded(
                auth,
                scope,
                RequireEnvironmentLayer::new(Environment::Live).layer(by_environment),
            ),
            (None, Some(_)) => guarded(
                auth,
                scope,
                RequireEnvironmentLayer::new(Environment::Sandbox).layer(by_environment),
            ),
        }
    }

    async fn forward(
        &self,
        target: &Target,
        request: Request<Body>,
        principal: Option<&Principal>,
    ) -> Response<Body> {
        let identity = match principal.map(verify::identity_headers) {
            Some(None) => return verify::not_encodable(),
            Some(Some(headers)) => headers,
            None => Vec::new(),
        };
        let mut request = request;
        // An upgrade (WebSocket) asked over HTTP/1.1: its protocol, and the client side of
        // the connection once hyper hands it over.
        let upgrade = upgrade_protocol(&request).map(|protocol| {
            let on = hyper::upgrade::on(&mut request);
            (protocol, on)
        });
        let (mut parts, body) = request.into_parts();
        let Some(uri) = upstream_uri(target, parts.uri.path_and_query()) else {
            return failure_response(StatusCode::BAD_REQUEST, "invalid_request", "invalid path");
        };
        let peer = logging::peer(&parts.extensions).map(|a| a.ip());
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let trusted = peer.is_some_and(|ip| self.inner.trusted.contains(ip));
        prepare_request(&mut parts.headers, peer, trusted, host);
        for (name, value) in identity {
            parts.headers.insert(name, value);
        }
        if let Some((protocol, _)) = &upgrade {
            ask_upgrade(&mut parts.headers, protocol.clone());
        }
        // The connection's slots, for the tunnel to hold (server::connection puts it in).
        let held = upgrade
            .is_some()
            .then(|| parts.extensions.remove::<server::Held>())
            .flatten();
        let (sent, body_done, client_broke) = Sent::new(body);
        let mut outgoing = Request::from_parts(parts, sent);
        *outgoing.uri_mut() = uri;
        *outgoing.version_mut() = Version::HTTP_11;
        // Only the caller's own extensions were in parts; none must reach the client.
        *outgoing.extensions_mut() = Default::default();

        let timeout = self.inner.timeout;
        let started = std::time::Instant::now();
        let answered = self.inner.client.request(outgoing);
        // The response-header timeout starts once the request body is sent (or dropped):
        // a long upload is bounded by the client connection's idle timeout instead.
        let deadline = async move {
            let _ = body_done.await;
            tokio::time::sleep(timeout).await;
        };
        let result = tokio::select! {
            result = answered => result.map_err(|e| {
                // The error's chain names the backend and the cause, never a header.
                tracing::warn!(upstream = %target.authority, error = %chain(&e), "upstream request failed");
                match (e.is_connect(), is_timeout(&e)) {
                    (true, true) => Failure::ConnectTimeout,
                    (true, false) => Failure::Connect,
                    (false, _) => Failure::Broken,
                }
            }),
            () = deadline => {
                tracing::warn!(upstream = %target.authority, "upstream sent no response headers in time");
                Err(Failure::ResponseTimeout)
            }
        };
        let metrics = &self.inner.metrics;
        metrics.seconds.record(started.elapsed());
        match result {
            Ok(mut response) => {
                let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                let protocol = response.headers().get(header::UPGRADE).cloned();
                // A switch to the protocol asked for (websocket), and no other.
                let same = |asked: &HeaderValue, got: &HeaderValue| {
                    asked
                        .as_bytes()
                        .trim_ascii()
                        .eq_ignore_ascii_case(got.as_bytes().trim_ascii())
                };
                let upgrade = upgrade
                    .filter(|(asked, _)| protocol.as_ref().is_some_and(|got| same(asked, got)));
                match (switching, upgrade, protocol) {
                    (false, ..) => metrics.answered.increment(1),
                    (true, Some((_, client)), Some(protocol)) => {
                        metrics.answered.increment(1);
                        let backend = hyper::upgrade::on(&mut response);
                        tokio::spawn(tunnel(client, backend, self.inner.idle, held));
                        let (mut parts, _) = response.into_parts();
                        remove_hop_by_hop(&mut parts.headers);
                        ask_upgrade(&mut parts.headers, protocol);
                        return Response::from_parts(parts, Body::empty());
                    }
                    // A switch nobody asked for, to no protocol, or to another one.
                    (true, ..) => {
                        tracing::warn!(upstream = %target.authority, "upstream switched protocols unasked");
                        metrics.failed(Failure::Broken);
                        return failure_response(
                            StatusCode::BAD_GATEWAY,
                            "upstream_unavailable",
                            "the upstream refused or broke the connection",
                        );
                    }
                }
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                // A backend that stops mid-body must not hold the client connection open.
                let body = server::Stalling::new(Answered(body), self.inner.idle);
                Response::from_parts(parts, Body::new(body))
            }
            // The client's body broke off (it went away mid-upload): not the backend's fault.
            Err(Failure::Broken) if client_broke.load(Ordering::Relaxed) => {
                metrics.client_aborted.increment(1);
                failure_response(
                    StatusCode::BAD_REQUEST,
                    "request_body_incomplete",
                    "the request body ended before it was complete",
                )
            }
            Err(failure) => {
                metrics.failed(failure);
                match failure {
                    Failure::Connect | Failure::Broken => failure_response(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unavailable",
                        "the upstream refused or broke the connection",
                    ),
                    Failure::ConnectTimeout => failure_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "the upstream did not accept the connection in time",
                    ),
                    Failure::ResponseTimeout => failure_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "the upstream did not answer in time",
                    ),
                }
            }
        }
    }
}

/// `inner` behind `auth`'s layer and, with a scope, the library's `RequireScopeLayer`
/// (checked before `inner`'s own guards): one boxed service either way.
fn guarded<S>(auth: &Authenticator, scope: Option<&str>, inner: S) -> Service
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let builder = ServiceBuilder::new().layer(auth.layer());
    match scope {
        Some(scope) => Service::new(builder.layer(RequireScopeLayer::new(scope)).service(inner)),
        None => Service::new(builder.service(inner)),
    }
}

/// The backend's URI for a request's path and query: the target's authority, its base path
/// and the path. Without a base path the request's own path and query are reused as they
/// are (a reference count, no formatting or parsing per request). `*` (OPTIONS *) has no
/// place under a base path, nor anything else that does not start with `/`: `None`.
fn upstream_uri(target: &Target, path_and_query: Option<&PathAndQuery>) -> Option<Uri> {
    let path = path_and_query.map_or("/", PathAndQuery::as_str);
    if !path.starts_with('/') {
        return None;
    }
    let path_and_query = match path_and_query {
        Some(same) if target.base.is_empty() => same.clone(),
        _ => format!("{}{path}", target.base).parse().ok()?,
    };
    let mut parts = axum::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(target.authority.clone());
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

/// The `Upgrade` an HTTP/1.1 request asks for with `Connection: upgrade`, if it is
/// `websocket`: the only protocol tunnelled. Any other (`h2c` above all: once switched, the
/// client would speak HTTP/2 straight to the backend, every later request unauthenticated
/// and with identity headers of its own) is not asked of the backend at all.
fn upgrade_protocol(request: &Request<Body>) -> Option<HeaderValue> {
    let websocket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"));
    let asks = websocket
        && request.version() == Version::HTTP_11
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| request.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the two hop-by-hop headers an upgrade needs on its next hop.
fn ask_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Copies bytes both ways between the upgraded client and backend connections until both
/// have closed, either fails, nothing moves for `idle` (a read or a write alike), or the
/// listener shuts down. `held` keeps the client connection's slots taken meanwhile.
///
/// The two directions run at once: while one waits for its peer to take bytes, the other
/// still reads. Copied in turn, a backend that echoes would stall the tunnel for good once
/// every buffer on the way fills: the gateway waiting to write to a backend that waits to
/// write back.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    idle: Duration,
    held: Option<server::Held>,
) {
    let closing = async move {
        match held {
            Some(mut held) => held.closing().await,
            None => std::future::pending().await,
        }
    };
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (backend_read, backend_write) = tokio::io::split(TokioIo::new(backend));
    // When bytes last moved either way, in milliseconds since `start`.
    let start = tokio::time::Instant::now();
    let moved = std::sync::atomic::AtomicU64::new(0);
    let both = async {
        tokio::try_join!(
            copy_one_way(client_read, backend_write, idle, start, &moved),
            copy_one_way(backend_read, client_write, idle, start, &moved),
        )
    };
    let quiet = async {
        loop {
            let last = Duration::from_millis(moved.load(std::sync::atomic::Ordering::Relaxed));
            let deadline = start + last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        _ = both => {}
        () = quiet => tracing::debug!("closing an idle upgraded connection"),
        () = closing => {}
    }
}

/// Copies `from` to `to` until `from` ends (then shuts `to`'s writing side) or fails (the
/// same, a reset reads as an end); an error when `to` fails or takes none of the bytes for
/// `idle` (a reader that stopped reading must not hold the tunnel open). Each read and
/// write sets `moved`.
async fn copy_one_way(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    idle: Duration,
    start: tokio::time::Instant,
    moved: &std::sync::atomic::AtomicU64,
) -> Result<(), ()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mark = || {
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        moved.store(now, std::sync::atomic::Ordering::Relaxed);
    };
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Ok(());
            }
            Ok(n) => n,
        };
        mark();
        let mut bytes = &buffer[..n];
        while !bytes.is_empty() {
            match tokio::time::timeout(idle, to.write(bytes)).await {
                Ok(Ok(n)) if n > 0 => bytes = &bytes[n..],
                _ => {
                    tracing::debug!("closing an upgraded connection whose peer takes no bytes");
                    return Err(());
                }
            }
            mark();
        }
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Hop-by-hop headers (RFC 9110 7.6.1) and the names the `Connection` header lists.
/// `Upgrade` goes too; an upgrade puts it back ([`ask_upgrade`]). `Trailer` is end to end
/// (hyper sends only the trailers it declares), but loses the names no trailer may carry
/// ([`is_banned_trailer`]).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, is_hop_by_hop);
    filter_trailer_header(headers);
}

/// The hop-by-hop headers of RFC 9110 7.6.1, `Upgrade` among them. Not `Trailer`, which is
/// end to end ([`filter_trailer_header`]).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Removes every header `unwanted` picks and every name the `Connection` header lists, in
/// one pass over the names the map holds (a request has a handful), instead of a hashed
/// `remove` for each of the twenty-odd names the gateway never forwards.
fn remove_where(headers: &mut HeaderMap, unwanted: impl Fn(&HeaderName) -> bool) {
    let mut gone: Vec<HeaderName> = headers.keys().filter(|n| unwanted(n)).cloned().collect();
    gone.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in gone {
        headers.remove(name);
    }
}

/// `Trailer` without the names no trailer may carry ([`is_banned_trailer`]); removed when
/// none is left.
fn filter_trailer_header(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRAILER) {
        let declared: Vec<&str> = headers
            .get_all(header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| !is_banned_trailer(&n))
            })
            .collect();
        match HeaderValue::from_str(&declared.join(", ")) {
            Ok(value) if !declared.is_empty() => headers.insert(header::TRAILER, value),
            _ => headers.remove(header::TRAILER),
        };
    }
}

/// A trailer no hop passes on: a hop-by-hop name, one of the gateway's (`x-hapnd-*` in
/// any spelling), a credential, or a forwarding header.
fn is_banned_trailer(name: &HeaderName) -> bool {
    const BANNED: [HeaderName; 13] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::AUTHORIZATION,
        header::HOST,
        header::FORWARDED,
        X_FORWARDED_FOR,
    ];
    BANNED.contains(name)
        || is_gateway_header(name)
        || name.as_str().starts_with("x-forwarded-")
        || CLIENT_CLAIMS.contains(&name.as_str())
        || NEVER_FORWARDED.contains(&name.as_str())
}

/// Trailers as the next hop may get them (the client's to the backend, the backend's to
/// the client): without [`is_banned_trailer`]'s.
fn prepare_trailers(trailers: &mut HeaderMap) {
    let banned: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| is_banned_trailer(name))
        .cloned()
        .collect();
    for name in banned {
        trailers.remove(name);
    }
}

/// Whether a header is one of the gateway's: `x-hapnd-*`, with `_` read as `-` (some
/// servers, CGI and WSGI among them, read `X_Hapnd_Tenant` as `X-Hapnd-Tenant`).
fn is_gateway_header(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.len() >= 8
        && name[..8]
            .iter()
            .map(|&b| if b == b'_' { b'-' } else { b })
            .eq(b"x-hapnd-".iter().copied())
}

/// Headers that some backends read as the client's address, scheme, port or path prefix
/// (Gin and nginx-style apps `X-Real-IP`, Spring's `ForwardedHeaderFilter` the
/// `X-Forwarded-*` family): a client that is not a trusted proxy may not write them.
const CLIENT_CLAIMS: [&str; 9] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "front-end-https",
];

/// Headers that make some backends (IIS URL Rewrite, older Symfony and Zend) route to
/// another path than the request's: a public path must not become a way to any route.
/// And `HTTP2-Settings`, which only an h2c upgrade uses (never tunnelled). Never forwarded.
const NEVER_FORWARDED: [&str; 3] = ["x-original-url", "x-rewrite-url", "http2-settings"];

/// The admin page's session cookies: cookies ignore ports, so a browser signed in to the
/// admin listener on the same host sends them to the public listener too. Never forwarded
/// to a backend, whose logs would then hold a live admin session.
const ADMIN_COOKIES: [&str; 2] = [
    crate::admin::page::COOKIE_NAME,
    crate::admin::page::TLS_COOKIE_NAME,
];

/// Whether one `name=value` pair of a `Cookie` header is an admin session cookie.
fn is_admin_cookie(pair: &[u8]) -> bool {
    let name = pair
        .split(|&b| b == b'=')
        .next()
        .unwrap_or(pair)
        .trim_ascii();
    ADMIN_COOKIES.iter().any(|admin| name == admin.as_bytes())
}

/// `Cookie` without the admin page's session cookies: `Some(None)` when nothing is left,
/// `None` when it holds none of them (the usual case: the header is left as it is, with
/// no allocation).
fn without_admin_cookies(cookie: &HeaderValue) -> Option<Option<HeaderValue>> {
    let pairs = || {
        cookie
            .as_bytes()
            .split(|&b| b == b';')
            .map(<[u8]>::trim_ascii)
    };
    if !pairs().any(is_admin_cookie) {
        return None;
    }
    let kept: Vec<&[u8]> = pairs()
        .filter(|pair| !pair.is_empty() && !is_admin_cookie(pair))
        .collect();
    Some(if kept.is_empty() {
        None
    } else {
        HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
    })
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request headers a backend gets, before the identity is added: no hop-by-hop, no
/// `Authorization`, nothing a client wrote under the gateway's names, and the forwarding
/// headers by the trusted-proxy rules: from a trusted proxy its `X-Forwarded-For` chain
/// is kept and the peer appended, its `X-Forwarded-Proto`/`-Host` and `Forwarded` kept;
/// from anyone else they are replaced (`Forwarded` dropped).
fn prepare_request(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    trusted: bool,
    host: Option<HeaderValue>,
) {
    // `TE: trailers` (the client takes trailers) is the one TE a proxy passes on.
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        });
    // Hop-by-hop, `Authorization`, `Host` (the client sets it from the upstream URL; the
    // client's is in X-Forwarded-Host), the gateway's names, those never forwarded, and
    // from anyone but a trusted proxy its claims about the client and the forwarding
    // headers (X-Forwarded-For is rebuilt below).
    remove_where(headers, |name| {
        is_hop_by_hop(name)
            || name == header::AUTHORIZATION
            || name == header::HOST
            || is_gateway_header(name)
            || NEVER_FORWARDED.contains(&name.as_str())
            || (!trusted
                && (CLIENT_CLAIMS.contains(&name.as_str())
                    || name == header::FORWARDED
                    || name == X_FORWARDED_PROTO
                    || name == X_FORWARDED_HOST))
    });
    filter_trailer_header(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one (RFC 9113 8.2.3).
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, value);
        }
    }
    if let Some(filtered) = headers.get(header::COOKIE).and_then(without_admin_cookies) {
        match filtered {
            Some(kept) => headers.insert(header::COOKIE, kept),
            None => headers.remove(header::COOKIE),
        };
    }
    let chain = trusted
        .then(|| {
            let values: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        })
        .flatten();
    headers.remove(&X_FORWARDED_FOR);
    if let Some(peer) = peer {
        let value = match chain {
            Some(chain) => HeaderValue::from_str(&format!("{chain}, {peer}")).ok(),
            None => Some(address_value(peer)),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// An address as a header value. IPv4 is written by hand: `format!` through `Display` was
/// 3% of a forwarded request's instructions (callgrind).
fn address_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an address is visible ASCII");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for digit in &digits[skip..] {
            text[len] = b'0' + digit;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len]).expect("digits and dots are visible ASCII")
}

/// An upstream failure, in the shape of the gateway's rejections, never an auth error.
fn failure_response(status: StatusCode, code: &'static str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "type": "api_error", "code": code, "message": message }
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
    response
}

/// The client's request body on its way to the backend, telling when it has been sent
/// (ended, failed or dropped) so the response-header timeout can start.
pub(crate) struct Sent {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
    /// Set when the client's body broke off (the client's fault, not the backend's).
    broke: Arc<AtomicBool>,
}

impl Sent {
    fn new(inner: Body) -> (Sent, oneshot::Receiver<()>, Arc<AtomicBool>) {
        let (tx, rx) = oneshot::channel();
        // An empty body may never be polled: it is sent already.
        let done = (!inner.is_end_stream()).then_some(tx);
        let broke = Arc::new(AtomicBool::new(false));
        let sent = Sent {
            inner,
            done,
            broke: broke.clone(),
        };
        (sent, rx, broke)
    }
}

impl HttpBody for Sent {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut poll
            && let Some(trailers) = frame.trailers_mut()
        {
            prepare_trailers(trailers);
        }
        match &poll {
            Poll::Ready(None) => self.done = None,
            Poll::Ready(Some(Err(_))) => {
                self.broke.store(true, Ordering::Relaxed);
                self.done = None;
            }
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The backend's response body on its way to the client, each trailers frame without
/// [`is_banned_trailer`]'s names. Over HTTP/1.1 hyper sends only the trailers `Trailer`
/// declares (filtered already), but over h2 it sends every trailer frame as it is.
struct Answered<B>(B);

impl<B: HttpBody + Unpin> HttpBody for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut poll = Pin::new(&mut self.0).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut poll
            && let Some(trailers) = frame.trailers_mut()
        {
            prepare_trailers(trailers);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_value_is_the_address_as_display_writes_it() {
        for text in [
            "0.0.0.0",
            "127.0.0.2",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "1.10.100.99",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(address_value(ip), text, "{text}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn gateway_headers_in_every_spelling() {
        for name in [
            "x-hapnd-tenant",
            "x_hapnd_tenant",
            "x-hapnd_key-id",
            "x_hapnd-x",
        ] {
            assert!(is_gateway_header(
                &HeaderName::from_bytes(name.as_bytes()).unwrap()
            ));
        }
        for name in ["x-hapnd", "x-hapndx-y", "hapnd-tenant", "x-forwarded-for"] {
            assert!(!is_gateway_header(
                &HeaderName::from_bytes(name.as_bytes()).unwrap()
            ));
        }
    }

    #[test]
    fn forwarding_headers_follow_the_trusted_proxy_rules() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let sent = || {
            headers(&[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=6.6.6.6"),
            ])
        };
        let mut from_client = sent();
        prepare_request(&mut from_client, Some(peer), false, None);
        assert_eq!(from_client["x-forwarded-for"], "10.0.0.2");
        assert_eq!(from_client["x-forwarded-proto"], "http");
        assert!(!from_client.contains_key("forwarded"));

        let mut from_proxy = sent();
        prepare_request(&mut from_proxy, Some(peer), true, None);
        assert_eq!(
            from_proxy["x-forwarded-for"],
            "6.6.6.6, 203.0.113.9, 10.0.0.2"
        );
        assert_eq!(from_proxy["x-forwarded-proto"], "https");
        assert_eq!(from_proxy.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn what_a_backend_never_gets_from_a_client() {
        let dropped = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "authorization",
            "host",
            "x-hapnd-tenant",
            "x_hapnd_key_id",
            "x-original-url",
            "x-rewrite-url",
            "http2-settings",
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "cf-connecting-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-forwarded-ssl",
            "front-end-https",
            "forwarded",
            "x-forwarded-host",
            "x-listed",
            "x-also-listed",
        ];
        let mut sent: Vec<(&str, &str)> = dropped.iter().map(|n| (*n, "v")).collect();
        sent.push(("connection", "X-Listed , x-also-listed"));
        sent.push(("x-forwarded-proto", "https"));
        sent.push(("accept", "*/*"));
        sent.push(("x-kept", "1"));
        let mut map = headers(&sent);
        prepare_request(&mut map, None, false, None);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-forwarded-proto", "x-kept"], "{map:?}");
        assert_eq!(map["x-forwarded-proto"], "http", "a client's is replaced");
        // `Trailer` is end to end: it passes, without the names no trailer may carry, and
        // goes when none is left.
        let mut map = headers(&[("trailer", "x-checksum, X-Hapnd-Tenant, authorization")]);
        prepare_request(&mut map, None, false, None);
        assert_eq!(map["trailer"], "x-checksum");
        let mut map = headers(&[("trailer", "x_hapnd_key_id, transfer-encoding")]);
        prepare_request(&mut map, None, false, None);
        assert!(!map.contains_key("trailer"), "{map:?}");

        // From a trusted proxy its forwarding headers and claims stay; the rest goes.
        let mut map = headers(&sent);
        prepare_request(&mut map, None, true, None);
        for name in [
            "x-real-ip",
            "forwarded",
            "x-forwarded-host",
            "x-forwarded-port",
        ] {
            assert!(map.contains_key(name), "{name}: {map:?}");
        }
        for name in [
            "authorization",
            "x-hapnd-tenant",
            "x-listed",
            "x-original-url",
            "te",
        ] {
            assert!(!map.contains_key(name), "{name}: {map:?}");
        }
        assert_eq!(map["x-forwarded-proto"], "https");
    }

    #[test]
    fn public_prefixes_match_whole_segments_of_plain_paths() {
        assert!(parse_public("/a/../b").is_err());
        assert!(parse_public("health").is_err());
        assert!(is_plain("/healthz/live"));
        assert!(!is_plain("/healthz/../admin"));
        assert!(!is_plain("/healthz/%2e%2e/admin"));
        assert!(!is_plain("/healthz\\..\\admin"));
        assert!(!is_plain("/healthz/..;/admin"));
        for routable in [
            "/healthz/live",
            "/billing/a%20b",
            "/other/caf%C3%A9",
            "/q%3Fx%23y",
            "/x%5B0%5D",
        ] {
            assert!(is_routable(routable), "{routable}");
        }
        for refused in [
            "/healthz/../admin",
            "/healthz/./x",
            "/healthz\\x",
            "/healthz/..;/admin",
            "/healthz/%2e%2e/admin",
            "/%62illing",
            "/billing%2fadmin",
            "/billing%5Cadmin",
            "/billing%40x",
            "/billing%3Bv=1",
            "/billing%25",
            "/x%00",
            "/%C0%AE%C0%AE/billing",
            "/%EF%BC%8E%EF%BC%8E/billing",
            "/billing%zz",
            "/billing%2",
            "/billing%",
        ] {
            assert!(!is_routable(refused), "{refused}");
        }
    }

    #[test]
    fn upstream_uris_keep_the_path_and_query_under_the_base() {
        let uri = |target: &str, path: &str| {
            let target = parse_target(target).unwrap();
            let path: PathAndQuery = path.parse().unwrap();
            upstream_uri(&target, Some(&path)).map(|u| u.to_string())
        };
        assert_eq!(
            uri("http://127.0.0.1:3000", "/a/b?c=d").as_deref(),
            Some("http://127.0.0.1:3000/a/b?c=d")
        );
        assert_eq!(
            uri("http://127.0.0.1:3000/api/", "/a?c").as_deref(),
            Some("http://127.0.0.1:3000/api/a?c")
        );
        assert_eq!(uri("http://127.0.0.1:3000", "*"), None);
        let target = parse_target("http://127.0.0.1:3000/api").unwrap();
        assert_eq!(
            upstream_uri(&target, None)
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://127.0.0.1:3000/api/")
        );
    }

    #[test]
    fn only_plain_http_upstreams() {
        assert!(parse_target("https://api.example").is_err());
        assert!(parse_target("127.0.0.1:3000").is_err());
        let t = parse_target("http://127.0.0.1:3000/api/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base.as_str()),
            ("127.0.0.1:3000", "/api")
        );
    }
}
