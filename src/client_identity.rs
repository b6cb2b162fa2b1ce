//! Who a request comes from, for the failed-attempt throttle: [`ClientIdentity`] and the
//! [`ClientAddr`] extension it reads by default.
//!
//! By default the client is the peer address of the connection, read from the
//! [`ClientAddr`] request extension. The server inserts it: a hyper server per connection,
//! or, under `axum::serve(..).into_make_service_with_connect_info::<SocketAddr>()`, a
//! closure given to [`ClientIdentity::peer_from`] that reads axum's `ConnectInfo`. A raw
//! `X-Forwarded-For` is never trusted by default: a client can write anything there.
//! Behind proxies, [`ClientIdentity::x_forwarded_for`] and [`ClientIdentity::forwarded`]
//! take the address the outermost *trusted* proxy saw.
//!
//! ```
//! use std::net::{IpAddr, SocketAddr};
//! use hapnd_auth::{ClientAddr, ClientIdentity};
//!
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(ClientAddr("10.0.0.7:51234".parse().unwrap()));
//! request.headers_mut().insert("x-forwarded-for", "6.6.6.6, 203.0.113.9".parse().unwrap());
//!
//! // The peer, whatever the header says.
//! let peer = ClientIdentity::peer();
//! assert_eq!(peer.identify(request.headers(), request.extensions()), Some("10.0.0.7".parse().unwrap()));
//!
//! // One trusted proxy (the peer) appended the address it saw: that one is the client.
//! let behind_one = ClientIdentity::x_forwarded_for(1);
//! let client: IpAddr = "203.0.113.9".parse().unwrap();
//! assert_eq!(behind_one.identify(request.headers(), request.extensions()), Some(client));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName};

/// The connection's peer address, as a request extension. What [`ClientIdentity::peer`]
/// reads: a server that is not axum's inserts it for every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

type PeerFn = dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync;
type CustomFn = dyn Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync;

#[derive(Clone)]
enum Source {
    Peer,
    Header { name: HeaderName, hops: usize },
    Custom(Arc<CustomFn>),
}

/// How the throttle tells clients apart. Cheap to clone.
///
/// IPv6 clients are counted per /64 network: one host usually holds a whole /64, and
/// counting single addresses would let it rotate through 2^64 of them.
#[derive(Clone)]
pub struct ClientIdentity {
    source: Source,
    peer: Option<Arc<PeerFn>>,
}

impl ClientIdentity {
    /// The connection's peer address (the [`ClientAddr`] extension). The default.
    pub fn peer() -> Self {
        ClientIdentity {
            source: Source::Peer,
            peer: None,
        }
    }

    /// Behind `hops` trusted proxies that each append to `X-Forwarded-For`: the client is
    /// the `hops`-th address from the right (the one the outermost trusted proxy saw).
    /// Addresses further left were written by the client and are ignored. Without the
    /// header, the peer address.
    pub fn x_forwarded_for(hops: usize) -> Self {
        Self::header(HeaderName::from_static("x-forwarded-for"), hops)
    }

    /// As [`x_forwarded_for`](Self::x_forwarded_for), with the `for=` parameters of the
    /// standard `Forwarded` header (RFC 7239).
    pub fn forwarded(hops: usize) -> Self {
        Self::header(http::header::FORWARDED, hops)
    }

    fn header(name: HeaderName, hops: usize) -> Self {
        ClientIdentity {
            source: Source::Header { name, hops },
            peer: None,
        }
    }

    /// Any other rule: `f` sees the request's headers and extensions.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        ClientIdentity {
            source: Source::Custom(Arc::new(f)),
            peer: None,
        }
    }

    /// Reads the peer address with `f` instead of from [`ClientAddr`]: for axum, whose
    /// `serve` inserts `ConnectInfo<SocketAddr>`:
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use hapnd_auth::ClientIdentity;
    ///
    /// let identity = ClientIdentity::peer()
    ///     .peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    /// # let _ = identity;
    /// ```
    pub fn peer_from<F>(mut self, f: F) -> Self
    where
        F: Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.peer = Some(Arc::new(f));
        self
    }

    /// The client of a request, or `None` when it cannot be told (no peer address):
    /// such requests are not throttled.
    pub fn identify(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
        let ip = match &self.source {
            Source::Peer => self.peer_addr(extensions),
            Source::Header { name, hops } => match from_header(headers, name, *hops) {
                Some(node) => parse_node(node),
                None => self.peer_addr(extensions),
            },
            Source::Custom(f) => f(headers, extensions),
        }?;
        Some(bucket(ip))
    }

    fn peer_addr(&self, extensions: &Extensions) -> Option<IpAddr> {
        match &self.peer {
            Some(f) => f(extensions),
            None => extensions.get::<ClientAddr>().map(|c| c.0.ip()),
        }
    }
}

impl Default for ClientIdentity {
    fn default() -> Self {
        Self::peer()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Peer => f.write_str("ClientIdentity::Peer"),
            Source::Header { name, hops } => f
                .debug_struct("ClientIdentity::Header")
                .field("name", name)
                .field("hops", hops)
                .finish(),
            Source::Custom(_) => f.write_str("ClientIdentity::Custom"),
        }
    }
}

/// IPv4 addresses as they are (IPv4-mapped IPv6 included); IPv6 by /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The `hops`-th node from the right, over every instance of the header in order.
/// `None` when there are fewer: then the peer itself is the nearest thing to a client.
/// A node that is not an address (garbage, `unknown`) leaves the request unidentified.
fn from_header<'h>(headers: &'h HeaderMap, name: &HeaderName, hops: usize) -> Option<&'h str> {
    if hops == 0 {
        return None;
    }
    let forwarded = name == http::header::FORWARDED;
    // Counted from the right without collecting: this runs on every request the rejection
    // log or the throttle looks at. A value that is not UTF-8 is one hop we cannot read.
    headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("").split(',').rev())
        .map(|element| {
            let element = element.trim();
            if !forwarded {
                return element;
            }
            // `for=` among `;`-separated pairs; an element without one is a hop we cannot
            // place: it keeps its slot so counting from the right stays right.
            element
                .split(';')
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
                })
                .unwrap_or("")
        })
        .nth(hops - 1)
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`, or quoted forms of these.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, headers: &[(&'static str, &str)]) -> http::Request<()> {
        let mut request = http::Request::new(());
        request
            .extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        for (name, value) in headers {
            request.headers_mut().append(*name, value.parse().unwrap());
        }
        request
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn id(identity: &ClientIdentity, r: &http::Request<()>) -> Option<IpAddr> {
        identity.identify(r.headers(), r.extensions())
    }

    #[test]
    fn the_peer_by_default_never_the_header() {
        let r = request("10.0.0.1:1", &[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(id(&ClientIdentity::default(), &r), ip("10.0.0.1"));
        let none = http::Request::new(());
        assert_eq!(id(&ClientIdentity::peer(), &none), None);
    }

    #[test]
    fn trusted_hops_count_from_the_right_across_header_lines() {
        let r = request(
            "10.0.0.1:1",
            &[
                ("x-forwarded-for", "6.6.6.6, 7.7.7.7"),
                ("x-forwarded-for", "203.0.113.1"),
            ],
        );
        assert_eq!(
            id(&ClientIdentity::x_forwarded_for(1), &r),
            ip("203.0.113.1")
        );
        assert_eq!(id(&ClientIdentity::x_forwarded_for(2), &r), ip("7.7.7.7"));
        // More hops configured than present: the leftmost is not taken on trust.
        assert_eq!(id(&ClientIdentity::x_forwarded_for(4), &r), ip("10.0.0.1"));
        // Garbage where the client should be: unidentified, not the peer's bucket.
        let bad = request("10.0.0.1:1", &[("x-forwarded-for", "1.1.1.1, junk")]);
        assert_eq!(id(&ClientIdentity::x_forwarded_for(1), &bad), None);
    }

    #[test]
    fn forwarded_for_parameters() {
        let r = request(
            "10.0.0.1:1",
            &[(
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https, by=x;for=192.0.2.60:80"#,
            )],
        );
        assert_eq!(id(&ClientIdentity::forwarded(1), &r), ip("192.0.2.60"));
        assert_eq!(id(&ClientIdentity::forwarded(2), &r), ip("2001:db8::"));
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        let a = request("[2001:db8:1:2:aaaa::1]:1", &[]);
        let b = request("[2001:db8:1:2:bbbb::2]:1", &[]);
        assert_eq!(
            id(&ClientIdentity::peer(), &a),
            id(&ClientIdentity::peer(), &b)
        );
        let mapped = request("[::ffff:192.0.2.1]:1", &[]);
        assert_eq!(id(&ClientIdentity::peer(), &mapped), ip("192.0.2.1"));
    }
}
