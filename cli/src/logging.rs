//! Operator logs: the subscriber (`HAPND_LOG` filter, `--log-format`, colour only on a
//! terminal) and the rejection log of the public listener, sampled per client so that a
//! flood cannot become a log flood.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hapnd_auth::{AuthError, AuthErrorKind, ClientAddr, ClientIdentity};
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event (coloured only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber, writing to stderr. `filter` takes `EnvFilter`
/// directives (`info`, `warn,hapnd_auth=debug`, ...). sqlx's per-statement logs stay off
/// unless a directive names `sqlx`: at debug they would print the change feed's poll
/// several times a second.
pub(crate) fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let mut directives = filter.to_owned();
    let parse = |directives: &str| {
        EnvFilter::builder()
            .parse(directives)
            .map_err(|e| format!("HAPND_LOG={filter:?}: {e}"))
    };
    if !filter.contains("sqlx") {
        directives.push_str(",sqlx::query=off");
        // PostgreSQL's notices ("relation already exists, skipping" when migrations run)
        // are chatter for operators: shown only when debugging.
        let verbose = parse(&directives)?
            .max_level_hint()
            .is_some_and(|level| level >= tracing_subscriber::filter::LevelFilter::DEBUG);
        if !verbose {
            directives.push_str(",sqlx::postgres::notice=off");
        }
    }
    let filter = parse(&directives)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// How many rejections of one client are logged in full per window; the rest are counted
/// and reported in one summary line when the client's next window starts.
const PER_CLIENT: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Full lines per second across all clients: a flood from many addresses stays bounded.
const GLOBAL_PER_SECOND: u32 = 50;

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Window {
    /// Whether to log this one in full; `Some(n)` when a window with `n` suppressed
    /// lines just ended.
    fn admit(&mut self, now: Instant, length: Duration, budget: u32) -> (bool, Option<u64>) {
        let mut ended = None;
        if self.started.is_none_or(|s| now.duration_since(s) >= length) {
            if self.suppressed > 0 {
                ended = Some(self.suppressed);
            }
            *self = Window {
                started: Some(now),
                ..Window::default()
            };
        }
        if self.logged < budget {
            self.logged += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }
}

/// The per-client sampling state: bounded, idle clients forgotten.
#[derive(Clone)]
pub(crate) struct RejectionLog {
    clients: moka::sync::Cache<IpAddr, Arc<Mutex<Window>>>,
    global: Arc<Mutex<Window>>,
    /// The throttle's idea of the client: behind a proxy, the client, not the proxy.
    identity: ClientIdentity,
}

impl RejectionLog {
    pub(crate) fn new(identity: ClientIdentity) -> Self {
        RejectionLog {
            identity,
            clients: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(WINDOW * 2)
                .build(),
            global: Arc::default(),
        }
    }

    fn admit(&self, client: Option<IpAddr>) -> (bool, Option<u64>) {
        let now = Instant::now();
        let (mut full, ended) = match client {
            Some(ip) => {
                let window = self.clients.get_with(ip, Arc::default);
                let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
                window.admit(now, WINDOW, PER_CLIENT)
            }
            None => (true, None),
        };
        if full {
            let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
            let (admitted, global_ended) =
                global.admit(now, Duration::from_secs(1), GLOBAL_PER_SECOND);
            full = admitted;
            if let Some(n) = global_ended {
                tracing::warn!(
                    suppressed = n,
                    "rejection log lines suppressed in the last second (over {GLOBAL_PER_SECOND}/s across clients)"
                );
            }
        }
        (full, ended)
    }
}

/// The client address of a request: the `ClientAddr` a custom server inserts, or axum's
/// `ConnectInfo`.
pub(crate) fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ClientAddr>()
        .map(|c| c.0)
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
}

/// A request path as logs may show it: any API key in it masked to its hint (a client may
/// paste one into a URL). Costs one scan and no allocation for paths without `sk_`.
pub(crate) fn loggable_path(path: &str) -> Cow<'_, str> {
    if path.contains("sk_") {
        Cow::Owned(hapnd_auth::redact_keys(path))
    } else {
        Cow::Borrowed(path)
    }
}

/// The DEBUG span of a request, for both listeners' `TraceLayer`: method and path (masked
/// as [`loggable_path`] does), never the query string or the headers.
pub(crate) fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = loggable_path(request.uri().path());
    tracing::debug_span!("request", method = %request.method(), path = %path)
}

/// Middleware: logs every rejection of the auth layer (INFO; throttled and unavailable at
/// WARN) with its code, the masked hint, the client address, method and path (no query
/// string), sampled per client.
pub(crate) async fn log_rejections(
    State(log): State<RejectionLog>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    // A reference-count copy, not the path's bytes: only a rejection reads it.
    let uri = request.uri().clone();
    let client = log
        .identity
        .identify(request.headers(), request.extensions());
    let response = next.run(request).await;
    if let Some(error) = response.extensions().get::<AuthError>() {
        let (full, ended) = log.admit(client);
        let client = client.map(tracing::field::display);
        if let Some(suppressed) = ended {
            tracing::info!(
                client,
                suppressed,
                "rejections from this client not logged in full in its last minute"
            );
        }
        if full {
            emit(error, client, &method, &loggable_path(uri.path()));
        }
    }
    response
}

fn emit(
    error: &AuthError,
    client: Option<tracing::field::DisplayValue<IpAddr>>,
    method: &http::Method,
    path: &str,
) {
    let code = error.kind().code();
    let hint = error.key_hint();
    // Key ids are safe to log; tenants are stored strings, so escaped (Debug).
    let key_id = error.principal().map(|p| p.key_id().as_str());
    let tenant = error.principal().map(|p| tracing::field::debug(p.tenant()));
    let method = method.as_str();
    match error.kind() {
        AuthErrorKind::TooManyFailedAttempts => tracing::warn!(
            code,
            key_hint = hint,
            client,
            method,
            path,
            retry_after_s = error.retry_after().map(|d| d.as_secs().max(1)),
            "request throttled: too many failed attempts from this client"
        ),
        AuthErrorKind::Unavailable => tracing::warn!(
            code,
            key_hint = hint,
            client,
            method,
            path,
            "request rejected: authentication unavailable"
        ),
        _ => tracing::info!(
            code,
            key_hint = hint,
            key_id,
            tenant,
            client,
            method,
            path,
            "request rejected"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_client_is_sampled_then_summarized() {
        let mut window = Window::default();
        let start = Instant::now();
        let full: Vec<bool> = (0..100)
            .map(|_| window.admit(start, WINDOW, PER_CLIENT).0)
            .collect();
        assert_eq!(full.iter().filter(|&&f| f).count(), PER_CLIENT as usize);
        assert!(full[..PER_CLIENT as usize].iter().all(|&f| f));
        // The next window reports what was left out, and logs in full again.
        let (admitted, ended) = window.admit(start + WINDOW, WINDOW, PER_CLIENT);
        assert!(admitted);
        assert_eq!(ended, Some(100 - u64::from(PER_CLIENT)));
    }

    #[test]
    fn clients_are_sampled_separately_and_globally_bounded() {
        let log = RejectionLog::new(ClientIdentity::peer());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..PER_CLIENT {
            assert!(log.admit(Some(a)).0);
        }
        assert!(!log.admit(Some(a)).0);
        assert!(log.admit(Some(b)).0);
        // Many clients at once: at most GLOBAL_PER_SECOND full lines in a second.
        let log = RejectionLog::new(ClientIdentity::peer());
        let full = (0..1000u32)
            .filter(|i| {
                log.admit(Some(IpAddr::from((10u32 << 24 | i).to_be_bytes())))
                    .0
            })
            .count();
        // (Two windows at most if the loop crosses a second boundary.)
        assert!(full <= 2 * GLOBAL_PER_SECOND as usize, "{full}");
    }
}
