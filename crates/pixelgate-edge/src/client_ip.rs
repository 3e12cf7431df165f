//! Which address a request comes from: the socket's peer, or the client a trusted proxy names.
//!
//! `X-Forwarded-For` and `Forwarded` are believed only when the peer is in
//! `rate_limit.trusted_proxies`, and then only as far as they were written by trusted proxies:
//! the list is walked from the right, past trusted hops, and the first other address is the
//! client. Anything a client wrote itself (the left part) can never choose its own address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Resolves client addresses.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
}

impl ClientIp {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let xff = headers.get_all("x-forwarded-for");
        if xff.iter().next().is_some() {
            let hops = xff.iter().flat_map(|v| v.as_bytes().split(|&b| b == b','));
            return self.walk(peer, hops.map(parse_hop).collect());
        }
        let fwd = headers.get_all("forwarded");
        if fwd.iter().next().is_some() {
            let hops = fwd.iter().flat_map(|v| v.as_bytes().split(|&b| b == b','));
            return self.walk(peer, hops.map(forwarded_for).collect());
        }
        peer
    }

    /// From the right: skip trusted hops; the first untrusted one is the client. An entry that
    /// is not an address stops the walk at the last address a trusted proxy vouched for.
    fn walk(&self, peer: IpAddr, hops: Vec<Option<IpAddr>>) -> IpAddr {
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(ip) = hop else { break };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `1.2.3.4:5678`, `[2001:db8::1]:5678`.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    text.parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239), quoted or not.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(element).ok()?;
    let value = text.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.split_once(']'))
        .map_or(value, |(ip, _)| ip);
    parse_hop(bare.as_bytes()).or_else(|| parse_hop(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver() -> ClientIp {
        ClientIp::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:ffff::/48".parse().unwrap(),
        ])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(resolver().resolve(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(
            ClientIp::default().resolve(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_from_the_right() {
        let r = resolver();
        let peer = ip("10.0.0.1");
        let cases = [
            ("203.0.113.7", "203.0.113.7"),
            ("6.6.6.6, 203.0.113.7", "203.0.113.7"),
            ("6.6.6.6, 203.0.113.7, 10.1.1.1", "203.0.113.7"),
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::7]:4711", "2001:db8::7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("garbage, 10.2.2.2", "10.2.2.2"),
            ("10.3.3.3, 10.2.2.2", "10.3.3.3"),
            ("", "10.0.0.1"),
        ];
        for (xff, want) in cases {
            assert_eq!(
                r.resolve(peer, &headers(&[("x-forwarded-for", xff)])),
                ip(want),
                "{xff:?}"
            );
        }
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(r.resolve(peer, &split), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let r = resolver();
        let peer = ip("10.0.0.1");
        let cases = [
            ("for=203.0.113.7", "203.0.113.7"),
            (
                "for=\"[2001:db8:cafe::17]:4711\";proto=https",
                "2001:db8:cafe::17",
            ),
            ("For=6.6.6.6, for=203.0.113.60;by=10.0.0.1", "203.0.113.60"),
            ("for=unknown", "10.0.0.1"),
            ("proto=https", "10.0.0.1"),
        ];
        for (fwd, want) in cases {
            assert_eq!(
                r.resolve(peer, &headers(&[("forwarded", fwd)])),
                ip(want),
                "{fwd:?}"
            );
        }
    }
}
