//! What a request names: its route and token, and who sent it.
//!
//! The vocabulary the layers, the handlers and the metrics share, so it imports nothing else of
//! the crate. The outermost layer reads the route from the path once and puts a [`Routed`] in the
//! request's extensions; the connection puts the [`Peer`] there. Matching is exact: no decoding,
//! no normalisation, so `/o/../c/x` or `//o/x.gif` name nothing.

use std::{net::SocketAddr, ops::Range};

/// A route of either listener; the label requests are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Pixel,
    Click,
    Healthz,
    Readyz,
    Robots,
    Favicon,
    Test,
    Metrics,
    NotFound,
}

impl Route {
    pub const ALL: [Self; 9] = [
        Self::Pixel,
        Self::Click,
        Self::Healthz,
        Self::Readyz,
        Self::Robots,
        Self::Favicon,
        Self::Test,
        Self::Metrics,
        Self::NotFound,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pixel => "pixel",
            Self::Click => "click",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Robots => "robots",
            Self::Favicon => "favicon",
            Self::Test => "test",
            Self::Metrics => "metrics",
            Self::NotFound => "not_found",
        }
    }

    /// The route of a public path, with its token for pixels and clicks (else `""`).
    pub fn public(path: &str) -> (Self, &str) {
        let routed = Routed::public(path);
        (routed.route, routed.token(path))
    }

    /// The route of an admin path.
    pub fn admin(path: &str) -> Self {
        Routed::admin(path).route
    }
}

/// A request's route and where its token lies in the path; in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub route: Route,
    token: Range<usize>,
}

impl Routed {
    /// The route of a public path: `/o/TOKEN.gif`, `/c/TOKEN`, health, `robots.txt`, favicon.
    pub fn public(path: &str) -> Self {
        if let Some(token) = path
            .strip_prefix("/o/")
            .and_then(|t| t.strip_suffix(".gif"))
        {
            return Self::with_token(Route::Pixel, 3..3 + token.len());
        }
        if let Some(token) = path.strip_prefix("/c/") {
            return Self::with_token(Route::Click, 3..3 + token.len());
        }
        Self::bare(match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/robots.txt" => Route::Robots,
            "/favicon.ico" => Route::Favicon,
            _ => Route::NotFound,
        })
    }

    /// The route of an admin path.
    pub fn admin(path: &str) -> Self {
        Self::bare(match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/test" => Route::Test,
            "/metrics" => Route::Metrics,
            _ => Route::NotFound,
        })
    }

    /// The token in `path`, the path this was routed from; `""` for routes without one.
    pub fn token<'a>(&self, path: &'a str) -> &'a str {
        path.get(self.token.clone()).unwrap_or_default()
    }

    fn with_token(route: Route, token: Range<usize>) -> Self {
        Self { route, token }
    }

    fn bare(route: Route) -> Self {
        Self { route, token: 0..0 }
    }
}

/// The client's socket address, put into each request's extensions by its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_exactly_between_prefix_and_suffix() {
        assert_eq!(Route::public("/o/abc.gif"), (Route::Pixel, "abc"));
        assert_eq!(Route::public("/o/.gif"), (Route::Pixel, ""));
        assert_eq!(Route::public("/c/abc"), (Route::Click, "abc"));
        assert_eq!(Route::public("/c/a.gif"), (Route::Click, "a.gif"));
        assert_eq!(Route::public("/o/abc"), (Route::NotFound, ""));
        assert_eq!(Route::public("//o/abc.gif"), (Route::NotFound, ""));
        assert_eq!(Route::public("/robots.txt"), (Route::Robots, ""));
        assert_eq!(Route::public("/favicon.ico"), (Route::Favicon, ""));
        assert_eq!(Route::public("/metrics"), (Route::NotFound, ""));
        assert_eq!(Route::admin("/metrics"), Route::Metrics);
        assert_eq!(Route::admin("/o/abc.gif"), Route::NotFound);
        assert_eq!(Route::admin("/robots.txt"), Route::NotFound);
    }
}
