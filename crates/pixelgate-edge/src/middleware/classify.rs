//! What a request names, read once, first: who sent it and which route its path is.
//!
//! The connection's [`Peer`] and the path's [`Routed`] go into the request's extensions, where
//! the span, the metrics, the limits and the handlers all find them; nothing parses the path
//! again.

use crate::route::{Peer, Routed};

use super::Req;

/// Tags each request of a connection from `peer`.
pub(crate) fn peer(peer: std::net::SocketAddr) -> impl Fn(Req) -> Req + Clone + Send + Sync {
    move |mut req: Req| {
        req.extensions_mut().insert(Peer(peer));
        req
    }
}

/// Routes a request of the public listener.
pub(crate) fn public(mut req: Req) -> Req {
    let routed = Routed::public(req.uri().path());
    req.extensions_mut().insert(routed);
    req
}

/// Routes a request of the admin listener.
pub(crate) fn admin(mut req: Req) -> Req {
    let routed = Routed::admin(req.uri().path());
    req.extensions_mut().insert(routed);
    req
}
