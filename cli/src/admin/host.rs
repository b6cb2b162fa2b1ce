//! Which `Host` values the admin listener answers: its listen address, `localhost` on its
//! port when it is bound to loopback, and the names given with `--admin-host`. Anything
//! else is `421 Misdirected Request`, so that a page whose name an attacker re-points at
//! the listener (DNS rebinding) reads nothing: its requests carry the attacker's name.
//!
//! `/healthz` answers whatever the `Host`: load balancers' health checks send what they
//! like, and it tells a rebinding page nothing but "ok". With names configured, the API
//! Keys page is served on those names only: its cookie, set for a bare address or
//! `localhost`, would go with every visit to any other port of it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;
use super::views::message;

/// The `Host` values the admin listener answers.
#[derive(Clone, Debug)]
pub(crate) struct Hosts {
    listen: SocketAddr,
    /// Lowercase host names, without port.
    names: Vec<String>,
}

/// What a request's authority names.
#[derive(Debug, PartialEq, Eq)]
enum Named {
    /// One of the `--admin-host` names.
    Name,
    /// The listen address (or `localhost` on its port).
    Address,
    /// Something else, or nothing.
    Foreign,
}

impl Hosts {
    /// The listener bound to `listen` (its real port, after binding), serving the page on
    /// `names` (checked by [`parse_host_name`]) when there are any.
    pub(crate) fn new(listen: SocketAddr, names: Vec<String>) -> Self {
        Hosts {
            listen,
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    fn classify(&self, authority: &str) -> Named {
        let Ok(authority) = authority.parse::<axum::http::uri::Authority>() else {
            return Named::Foreign;
        };
        if authority.as_str().contains('@') {
            return Named::Foreign;
        }
        let host = authority.host();
        if self.names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return Named::Name;
        }
        // No port means the scheme's default; the listener speaks plain HTTP.
        let port = authority.port_u16().unwrap_or(80);
        if port != self.listen.port() {
            return Named::Foreign;
        }
        let ip = self.listen.ip();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let same = match literal.parse::<IpAddr>() {
            // An address is no name an attacker can point elsewhere: any of the host's
            // addresses will do when the listener is bound to all of them.
            Ok(named) => named == ip || ip.is_unspecified(),
            Err(_) => {
                host.eq_ignore_ascii_case("localhost") && (ip.is_loopback() || ip.is_unspecified())
            }
        };
        if same { Named::Address } else { Named::Foreign }
    }

    /// What the request names: its URI's authority (HTTP/2's `:authority`, or an
    /// absolute-form HTTP/1.1 target) and its `Host` header must agree, and there must be
    /// exactly one `Host` header if any.
    fn request(&self, uri: &Uri, headers: &HeaderMap) -> Named {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Named::Foreign;
        }
        let host = match host.map(|h| h.to_str()) {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) => return Named::Foreign,
            None => None,
        };
        let authority = uri.authority().map(|a| a.as_str());
        match (authority, host) {
            (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => Named::Foreign,
            (Some(a), _) | (None, Some(a)) => self.classify(a),
            (None, None) => Named::Foreign,
        }
    }

    /// Where the page lives when it is asked for on the bare address.
    fn page_url(&self) -> String {
        format!("http://{}:{}/", self.names[0], self.listen.port())
    }
}

/// A `--admin-host` value: a DNS name (letters, digits, `-`, dots between labels), without
/// scheme or port.
pub(crate) fn parse_host_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err("expected a host name such as admin.hapnd.localhost (no scheme, no port)".to_owned())
    }
}

/// Refuses requests for a foreign `Host` (421), and page requests on the bare address
/// when the page has names of its own.
pub(crate) async fn check_host(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/healthz" {
        return next.run(request).await;
    }
    let hosts = &state.hosts;
    let named = hosts.request(request.uri(), request.headers());
    let api = path == "/api" || path.starts_with("/api/");
    let page = !api && path != "/metrics" && !path.starts_with("/static/");
    match named {
        Named::Foreign if api => misdirected_json(),
        Named::Foreign => (
            StatusCode::MISDIRECTED_REQUEST,
            "421 Misdirected Request: this listener does not serve that host name\n",
        )
            .into_response(),
        Named::Address if page && !hosts.names.is_empty() => {
            let url = hosts.page_url();
            let page = message(
                StatusCode::MISDIRECTED_REQUEST,
                "The API Keys page lives on its own host name",
                &format!(
                    "Open {url} (or the address your proxy serves that name on): the page's \
                     sign-in cookie is kept for its host name only."
                ),
                &url,
            );
            super::page::with_page_headers(page)
        }
        _ => next.run(request).await,
    }
}

fn misdirected_json() -> Response {
    let body = json!({ "error": {
        "type": "invalid_request_error",
        "code": "misdirected_request",
        "message": "this listener does not serve that host name: use its address or a name \
                    given with --admin-host",
    }});
    (StatusCode::MISDIRECTED_REQUEST, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, names: &[&str]) -> Hosts {
        Hosts::new(
            listen.parse().unwrap(),
            names.iter().map(|n| (*n).to_owned()).collect(),
        )
    }

    #[test]
    fn the_listen_address_localhost_and_names_are_served() {
        let loopback = hosts("127.0.0.1:9090", &["admin.hapnd.localhost"]);
        for (authority, named) in [
            ("127.0.0.1:9090", Named::Address),
            ("LOCALHOST:9090", Named::Address),
            ("admin.hapnd.localhost", Named::Name),
            ("Admin.Hapnd.Localhost:1234", Named::Name),
            ("127.0.0.1", Named::Foreign),
            ("127.0.0.2:9090", Named::Foreign),
            ("localhost:9091", Named::Foreign),
            ("hapnd.localhost:9090", Named::Foreign),
            ("rebind.attacker.example:9090", Named::Foreign),
            ("user@127.0.0.1:9090", Named::Foreign),
            ("", Named::Foreign),
        ] {
            assert_eq!(loopback.classify(authority), named, "{authority}");
        }
        let all = hosts("0.0.0.0:80", &[]);
        assert_eq!(all.classify("10.1.2.3"), Named::Address);
        assert_eq!(all.classify("10.1.2.3:80"), Named::Address);
        assert_eq!(all.classify("localhost"), Named::Address);
        assert_eq!(all.classify("gateway.internal"), Named::Foreign);
        let private = hosts("10.0.0.5:9090", &[]);
        assert_eq!(private.classify("localhost:9090"), Named::Foreign);
        let v6 = hosts("[::1]:9090", &[]);
        assert_eq!(v6.classify("[::1]:9090"), Named::Address);
        assert_eq!(v6.classify("localhost:9090"), Named::Address);
    }

    #[test]
    fn the_uri_authority_and_host_header_must_agree() {
        let hosts = hosts("127.0.0.1:9090", &[]);
        let mut headers = HeaderMap::new();
        let origin_form: Uri = "/metrics".parse().unwrap();
        assert_eq!(hosts.request(&origin_form, &headers), Named::Foreign);
        headers.insert(header::HOST, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(hosts.request(&origin_form, &headers), Named::Address);
        let absolute: Uri = "http://evil.example/metrics".parse().unwrap();
        assert_eq!(hosts.request(&absolute, &headers), Named::Foreign);
        headers.append(header::HOST, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(hosts.request(&origin_form, &headers), Named::Foreign);
        let h2: Uri = "http://127.0.0.1:9090/metrics".parse().unwrap();
        assert_eq!(hosts.request(&h2, &HeaderMap::new()), Named::Address);
    }

    #[test]
    fn admin_host_names_are_checked() {
        assert_eq!(
            parse_host_name("Admin.Hapnd.localhost").unwrap(),
            "admin.hapnd.localhost"
        );
        for bad in [
            "",
            "http://a.example",
            "a.example:9090",
            "a b",
            "a..b",
            "-a.example",
            "a.",
        ] {
            assert!(parse_host_name(bad).is_err(), "{bad:?}");
        }
    }
}
