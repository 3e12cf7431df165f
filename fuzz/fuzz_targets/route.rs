//! Request routing on any path, and the access log's escaping of any request bytes.
//!
//! The input is a request target. Read as text it is routed as a public and as an admin path;
//! parsed as hyper parses a target (`http::Uri`) its path is routed too. A route is given only
//! to its exact path (no decoding or normalisation ever names a route), and a token is exactly
//! the part of the path between the route's prefix and suffix. The same bytes, escaped for the
//! access log, hold no control character, so no request can write a line or an escape sequence
//! into a log.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pixelgate_edge::{Route, escape};

fn public(path: &str) {
    let (route, token) = Route::public(path);
    let pixel = path
        .strip_prefix("/o/")
        .and_then(|rest| rest.strip_suffix(".gif"));
    match route {
        Route::Pixel => assert_eq!(Some(token), pixel, "{path:?}"),
        Route::Click => {
            assert!(pixel.is_none(), "{path:?} is a pixel path");
            assert_eq!(Some(token), path.strip_prefix("/c/"), "{path:?}");
        }
        Route::Healthz => assert_eq!((path, token), ("/healthz", "")),
        Route::Readyz => assert_eq!((path, token), ("/readyz", "")),
        Route::Robots => assert_eq!((path, token), ("/robots.txt", "")),
        Route::Favicon => assert_eq!((path, token), ("/favicon.ico", "")),
        Route::NotFound => {
            assert_eq!(token, "");
            assert!(pixel.is_none() && !path.starts_with("/c/"), "{path:?}");
            let named = ["/healthz", "/readyz", "/robots.txt", "/favicon.ico"];
            assert!(!named.contains(&path), "{path:?}");
        }
        Route::Test | Route::Metrics => panic!("{path:?} routed to admin-only {route:?}"),
    }
}

fn admin(path: &str) {
    let route = Route::admin(path);
    let exact = match route {
        Route::Healthz => "/healthz",
        Route::Readyz => "/readyz",
        Route::Test => "/test",
        Route::Metrics => "/metrics",
        Route::NotFound => {
            let named = ["/healthz", "/readyz", "/test", "/metrics"];
            assert!(!named.contains(&path), "{path:?}");
            return;
        }
        Route::Pixel | Route::Click | Route::Robots | Route::Favicon => {
            panic!("{path:?} routed to public-only {route:?}")
        }
    };
    assert_eq!(path, exact);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        public(path);
        admin(path);
    }
    if let Ok(uri) = http::Uri::try_from(data) {
        public(uri.path());
        admin(uri.path());
    }
    let line = escape(data);
    assert!(!line.chars().any(char::is_control), "{line:?}");
});
