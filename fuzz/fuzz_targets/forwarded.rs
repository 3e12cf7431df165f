//! The client address behind `X-Forwarded-For` and `Forwarded`, on any header values.
//!
//! The input is text: a first line `PEER [TRUSTED_NET ...]` (an unreadable peer is 10.0.0.1,
//! unreadable nets are left out), then `name: value` header lines. An input with a value that
//! `HeaderValue::from_bytes` refuses, as hyper would, is skipped. The address found is the peer
//! itself, or one written in a forwarding header; an untrusted peer is always its own client.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use pixelgate_edge::client_ip::ClientIp;

const DEFAULT_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

struct Request {
    peer: IpAddr,
    trusted: Vec<IpNet>,
    headers: HeaderMap,
}

fn parse(data: &[u8]) -> Option<Request> {
    let mut lines = data.split(|&b| b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mut words = first.split(' ');
    let peer = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(DEFAULT_PEER);
    let trusted = words.filter_map(|w| w.parse().ok()).collect();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii()) else {
            continue;
        };
        // As hyper reads a field: the whitespace around the value is not part of it.
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        headers.append(name, value);
    }
    Some(Request {
        peer,
        trusted,
        headers,
    })
}

/// Every address spelled anywhere in the forwarding headers, in any form `ClientIp` reads
/// (`1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `fe80::1%2`), made canonical.
fn written(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .chain(headers.get_all("forwarded").iter());
    let mut found = Vec::new();
    for value in values {
        let text = String::from_utf8_lossy(value.as_bytes());
        let runs = text.split(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '%')));
        for run in runs {
            let unscoped = run.split('%').next().unwrap_or(run);
            let ip = run
                .parse::<IpAddr>()
                .ok()
                .or_else(|| run.parse::<SocketAddr>().ok().map(|s| s.ip()))
                .or_else(|| unscoped.parse::<IpAddr>().ok());
            found.extend(ip.map(|ip| ip.to_canonical()));
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = parse(data) else {
        return;
    };
    let resolver = ClientIp::new(request.trusted.clone());
    let client = resolver.resolve(request.peer, &request.headers);
    let peer = request.peer.to_canonical();
    if !request.trusted.iter().any(|net| net.contains(&peer)) {
        assert_eq!(client, peer, "an untrusted peer chose its address");
    }
    assert!(
        client == peer || written(&request.headers).contains(&client),
        "{client} is neither the peer {peer} nor written in {:?}",
        request.headers
    );
});
