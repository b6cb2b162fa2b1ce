//! Who a request comes from, for the failed-attempt throttle: [`ClientIdentity`] and the
//! [`ClientAddr`] extension it reads by default.
//!
//! By default the client is the peer address of the connection, read from the
//! [`ClientAddr`] request extension. The server inserts it: a hyper server per connection,
//! or, under `axum::serve(..).into_make_service_with_connect_info::<SocketAddr>()`, a
//! closure given to [`ClientIdentity::peer_from`] that reads axum's `ConnectInfo`. A raw
//! `X-Forwarded-For` is never trusted by default: a client can write anything there.
//! Behind proxies, [`ClientIdentity::x_forwarded_for_from`] and
//! [`ClientIdentity::forwarded_from`] read the header only when the peer is one of the
//! [`TrustedProxies`] the operator named (as nginx's `set_real_ip_from` and Caddy's
//! `trusted_proxies` do), and take the address the outermost trusted proxy saw.
//!
//! ```
//! use std::net::{IpAddr, SocketAddr};
//! use hapnd_auth::{ClientAddr, ClientIdentity, TrustedProxies};
//!
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(ClientAddr("10.0.0.7:51234".parse().unwrap()));
//! request.headers_mut().insert("x-forwarded-for", "6.6.6.6, 203.0.113.9".parse().unwrap());
//!
//! // The peer, whatever the header says.
//! let peer = ClientIdentity::peer();
//! assert_eq!(peer.identify(request.headers(), request.extensions()), Some("10.0.0.7".parse().unwrap()));
//!
//! // The peer is a proxy we run (10.0.0.0/8): the address it appended is the client.
//! let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
//! let behind = ClientIdentity::x_forwarded_for_from(proxies.clone());
//! let client: IpAddr = "203.0.113.9".parse().unwrap();
//! assert_eq!(behind.identify(request.headers(), request.extensions()), Some(client));
//!
//! // The same header from a peer that is not a trusted proxy is ignored.
//! request.extensions_mut().insert(ClientAddr("198.51.100.4:4000".parse().unwrap()));
//! let peer: IpAddr = "198.51.100.4".parse().unwrap();
//! assert_eq!(behind.identify(request.headers(), request.extensions()), Some(peer));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
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
    Header {
        name: HeaderName,
        hops: usize,
    },
    Trusted {
        name: HeaderName,
        proxies: TrustedProxies,
    },
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

    /// Behind proxies the operator names: when the peer is one of `proxies`, the client is
    /// the first address, reading `X-Forwarded-For` from the right, that is not a trusted
    /// proxy (what nginx's `real_ip_recursive on` and Caddy's `trusted_proxies` compute).
    /// Addresses further left were written by someone else and are ignored; from a peer
    /// that is not a trusted proxy, the header is ignored altogether.
    ///
    /// Fails closed: an entry that is not an address (`unknown`, garbage, a value that is
    /// not UTF-8) stops the walk at the nearest address known for sure, the last trusted
    /// hop (the peer, behind one proxy), so a forged header is counted against the proxy's
    /// address, never left unidentified (unidentified requests are not throttled). With
    /// every address trusted, the leftmost one is the client.
    pub fn x_forwarded_for_from(proxies: TrustedProxies) -> Self {
        Self::trusted(HeaderName::from_static("x-forwarded-for"), proxies)
    }

    /// As [`x_forwarded_for_from`](Self::x_forwarded_for_from), with the `for=` parameters
    /// of the standard `Forwarded` header (RFC 7239); an obfuscated or `unknown` node fails
    /// closed in the same way.
    pub fn forwarded_from(proxies: TrustedProxies) -> Self {
        Self::trusted(http::header::FORWARDED, proxies)
    }

    fn trusted(name: HeaderName, proxies: TrustedProxies) -> Self {
        ClientIdentity {
            source: Source::Trusted { name, proxies },
            peer: None,
        }
    }

    /// Behind `hops` proxies that each append to `X-Forwarded-For`: the client is the
    /// `hops`-th address from the right (the one the outermost of them saw). Addresses
    /// further left were written by the client and are ignored. Without enough entries, or
    /// with one that is not an address there, the peer address.
    ///
    /// The header is read whatever the peer is, so a client that can reach the server
    /// without the proxies writes its own address: prefer
    /// [`x_forwarded_for_from`](Self::x_forwarded_for_from), which reads it only from
    /// proxies named by address.
    pub fn x_forwarded_for(hops: usize) -> Self {
        Self::header(HeaderName::from_static("x-forwarded-for"), hops)
    }

    /// As [`x_forwarded_for`](Self::x_forwarded_for), with the `for=` parameters of the
    /// standard `Forwarded` header (RFC 7239). Prefer
    /// [`forwarded_from`](Self::forwarded_from).
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
            // An entry that is not an address fails closed, to the peer: a forged header
            // must never make a request unidentified (and so unthrottled).
            Source::Header { name, hops } => match from_header(headers, name, *hops) {
                Some(node) => parse_node(node).or_else(|| self.peer_addr(extensions)),
                None => self.peer_addr(extensions),
            },
            Source::Trusted { name, proxies } => {
                let peer = self.peer_addr(extensions)?;
                Some(walk_trusted(headers, name, proxies, peer))
            }
            Source::Custom(f) => f(headers, extensions),
        }?;
        Some(Self::client_of(ip))
    }

    /// The client an address counts as, for the throttle (and for `hapnd-auth serve`'s
    /// per-client connection share): an IPv4 address as it is (an IPv4-mapped IPv6
    /// address too), an IPv6 address by its /64, which one host can fill.
    ///
    /// ```
    /// use hapnd_auth::ClientIdentity;
    ///
    /// let a = ClientIdentity::client_of("2001:db8:1:2::1".parse().unwrap());
    /// let b = ClientIdentity::client_of("2001:db8:1:2:ffff::9".parse().unwrap());
    /// assert_eq!(a, b);
    /// assert_eq!(ClientIdentity::client_of("::ffff:192.0.2.7".parse().unwrap()).to_string(), "192.0.2.7");
    /// ```
    pub fn client_of(ip: IpAddr) -> IpAddr {
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
            Source::Trusted { name, proxies } => f
                .debug_struct("ClientIdentity::Trusted")
                .field("name", name)
                .field("proxies", proxies)
                .finish(),
            Source::Custom(_) => f.write_str("ClientIdentity::Custom"),
        }
    }
}

/// The proxies whose forwarding headers count: addresses and CIDR networks
/// (`127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`), parsed from a comma-separated list.
/// Cheap to clone.
///
/// ```
/// use hapnd_auth::TrustedProxies;
///
/// let proxies: TrustedProxies = "127.0.0.1, 10.0.0.0/8, fd00::/8".parse().unwrap();
/// assert!(proxies.contains("10.1.2.3".parse().unwrap()));
/// assert!(!proxies.contains("192.0.2.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Arc<[Network]>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TrustedProxies {
    /// No proxy: forwarding headers never count.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `ip` is one of the trusted proxies (IPv4-mapped IPv6 as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// These proxies and `other`'s.
    pub fn union(&self, other: &TrustedProxies) -> TrustedProxies {
        let networks: Vec<Network> = self
            .networks
            .iter()
            .chain(other.networks.iter())
            .copied()
            .collect();
        TrustedProxies {
            networks: networks.into(),
        }
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.networks.iter()).finish()
    }
}

impl FromStr for TrustedProxies {
    type Err = InvalidProxyAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut networks = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            networks.push(parse_network(item).ok_or_else(|| InvalidProxyAddress(item.into()))?);
        }
        Ok(TrustedProxies {
            networks: networks.into(),
        })
    }
}

fn parse_network(item: &str) -> Option<Network> {
    let (addr, prefix) = match item.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let addr = unmap(addr.parse::<IpAddr>().ok()?);
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        // Digits only: `+8` or ` 8` are not a prefix length.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
        None => max,
    };
    (prefix <= max).then_some(Network { addr, prefix })
}

/// A trusted-proxy list entry that is neither an address nor a CIDR network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidProxyAddress(String);

impl fmt::Display for InvalidProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IP address or CIDR network (such as 10.0.0.1, 10.0.0.0/8 or fd00::/8)",
            self.0
        )
    }
}

impl std::error::Error for InvalidProxyAddress {}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// From the peer leftwards through the header, while the address is a trusted proxy's:
/// the first untrusted address is the client. An entry that cannot be read stops at the
/// last address known (fails closed); with every address trusted, the leftmost.
fn walk_trusted(
    headers: &HeaderMap,
    name: &HeaderName,
    proxies: &TrustedProxies,
    peer: IpAddr,
) -> IpAddr {
    let mut client = peer;
    if !proxies.contains(client) {
        return client;
    }
    let forwarded = name == http::header::FORWARDED;
    // Split on the raw bytes: a client's non-UTF-8 element must not hide the entries a
    // trusted proxy appended to its right on the same line (it stops the walk only where
    // it stands, like any unreadable entry).
    for element in elements(headers, name) {
        let element = std::str::from_utf8(element).unwrap_or("\u{fffd}");
        {
            let node = if forwarded {
                for_param(element)
            } else {
                element.trim()
            };
            match parse_node(node) {
                Some(ip) => client = ip,
                None => return client,
            }
            if !proxies.contains(client) {
                return client;
            }
        }
    }
    client
}

/// The `for=` value of one `Forwarded` element; "" when it has none.
fn for_param(element: &str) -> &str {
    element
        .split(';')
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
        })
        .unwrap_or("")
}

/// The `hops`-th node from the right, over every instance of the header in order.
/// `None` when there are fewer: then the peer itself is the nearest thing to a client.
/// A node that is not an address (garbage, `unknown`) is the caller's to fail closed on.
fn from_header<'h>(headers: &'h HeaderMap, name: &HeaderName, hops: usize) -> Option<&'h str> {
    if hops == 0 {
        return None;
    }
    let forwarded = name == http::header::FORWARDED;
    // Counted from the right without collecting: this runs on every request the rejection
    // log or the throttle looks at. A value that is not UTF-8 is one hop we cannot read.
    elements(headers, name)
        .map(|element| {
            // An element that is not UTF-8 is one hop we cannot read, in its own slot.
            let element = std::str::from_utf8(element).unwrap_or("").trim();
            if !forwarded {
                return element;
            }
            // `for=` among `;`-separated pairs; an element without one is a hop we cannot
            // place: it keeps its slot so counting from the right stays right.
            for_param(element)
        })
        .nth(hops - 1)
}

/// Every comma-separated element of every instance of the header, from the right, as raw
/// bytes (a comma is never part of a UTF-8 sequence, so splitting bytes is safe).
fn elements<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','))
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
        // Garbage where the client should be: the peer's bucket (fails closed), never
        // unidentified, which would not be throttled.
        let bad = request("10.0.0.1:1", &[("x-forwarded-for", "1.1.1.1, junk")]);
        assert_eq!(
            id(&ClientIdentity::x_forwarded_for(1), &bad),
            ip("10.0.0.1")
        );
        let unknown = request("10.0.0.1:1", &[("x-forwarded-for", "unknown")]);
        assert_eq!(
            id(&ClientIdentity::x_forwarded_for(1), &unknown),
            ip("10.0.0.1")
        );
    }

    fn trusted(list: &str) -> ClientIdentity {
        ClientIdentity::x_forwarded_for_from(list.parse().unwrap())
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let headers = [("x-forwarded-for", "203.0.113.5")];
        // The peer is the proxy: its entry is the client.
        let via_proxy = request("10.0.0.1:1", &headers);
        assert_eq!(id(&trusted("10.0.0.0/8"), &via_proxy), ip("203.0.113.5"));
        // A client reaching the server directly writes what it likes: ignored.
        let direct = request("198.51.100.7:1", &headers);
        assert_eq!(id(&trusted("10.0.0.0/8"), &direct), ip("198.51.100.7"));
        // No proxy trusted at all: the peer, always.
        assert_eq!(id(&trusted(""), &via_proxy), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_hops_are_walked_until_the_first_untrusted_address() {
        let r = request(
            "10.0.0.1:1",
            &[
                ("x-forwarded-for", "6.6.6.6, 203.0.113.1"),
                ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
            ],
        );
        // 10.0.0.3 and 10.0.0.2 are our proxies; 203.0.113.1 is the client; 6.6.6.6 is
        // what the client wrote.
        assert_eq!(id(&trusted("10.0.0.0/8"), &r), ip("203.0.113.1"));
        // Every address trusted: the leftmost.
        let all = request("10.0.0.1:1", &[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(id(&trusted("10.0.0.0/8"), &all), ip("10.9.9.9"));
        // No header from a trusted peer: the peer.
        let none = request("10.0.0.1:1", &[]);
        assert_eq!(id(&trusted("10.0.0.0/8"), &none), ip("10.0.0.1"));
    }

    #[test]
    fn unreadable_entries_fail_closed_to_the_last_trusted_hop() {
        for junk in ["unknown", "junk", "", "_hidden", "1.2.3.4.5"] {
            let r = request("10.0.0.1:1", &[("x-forwarded-for", junk)]);
            assert_eq!(id(&trusted("10.0.0.0/8"), &r), ip("10.0.0.1"), "{junk:?}");
            let r = request(
                "10.0.0.1:1",
                &[("x-forwarded-for", &format!("{junk}, 10.0.0.2"))],
            );
            assert_eq!(id(&trusted("10.0.0.0/8"), &r), ip("10.0.0.2"), "{junk:?}");
        }
        let mut r = request("10.0.0.1:1", &[]);
        r.headers_mut().insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(id(&trusted("10.0.0.0/8"), &r), ip("10.0.0.1"));
        // A client's non-UTF-8 element, with the address our proxy appended on the same
        // line: the appended one is the client, not the proxy (whose bucket everyone
        // behind it shares).
        let mut r = request("10.0.0.1:1", &[]);
        r.headers_mut().insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\x80, 203.0.113.5").unwrap(),
        );
        assert_eq!(id(&trusted("10.0.0.0/8"), &r), ip("203.0.113.5"));
        assert_eq!(
            id(&ClientIdentity::x_forwarded_for(1), &r),
            ip("203.0.113.5")
        );
        let f = ClientIdentity::forwarded_from("10.0.0.0/8".parse().unwrap());
        let r = request("10.0.0.1:1", &[("forwarded", "for=_obfuscated")]);
        assert_eq!(id(&f, &r), ip("10.0.0.1"));
        let r = request(
            "10.0.0.1:1",
            &[("forwarded", r#"for="[2001:db8::1]:4711""#)],
        );
        assert_eq!(id(&f, &r), ip("2001:db8::"));
    }

    #[test]
    fn trusted_proxy_lists_parse_strictly() {
        let p: TrustedProxies = "127.0.0.1, 10.0.0.0/8,::1 , fd00::/8".parse().unwrap();
        for yes in [
            "127.0.0.1",
            "10.255.0.1",
            "::1",
            "fd12::1",
            "::ffff:10.1.1.1",
        ] {
            assert!(p.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "::2", "fe80::1"] {
            assert!(!p.contains(no.parse().unwrap()), "{no}");
        }
        let all: TrustedProxies = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/+8",
            "1.2.3.4:80",
        ] {
            let err = bad.parse::<TrustedProxies>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert_eq!(
            format!("{p:?}"),
            "[127.0.0.1/32, 10.0.0.0/8, ::1/128, fd00::/8]"
        );
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
