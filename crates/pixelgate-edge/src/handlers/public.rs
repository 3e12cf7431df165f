//! The public listener's handlers: `pixel`, `click`, health, `robots.txt` and the favicon.
//!
//! A tracking request is answered only after the enqueuer acknowledged its event (in Redis, or
//! synced to the spool once `queue.ack_timeout` passed): a pixel is always the GIF and a valid
//! click always its `302`, whatever Redis does. A token that does not open records nothing; for
//! a click it is `404` and never a redirect. A client over its rate limit still gets a valid
//! pixel or click answered, its event marked `limited` and sent to the overflow lane.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use pixelgate_core::{Claims, Event, Kind, Observed, Target, event::MAX_USER_AGENT_LEN};
use pixelgate_http::{Body, Refusal, respond};
use pixelgate_queue::Lane;

use super::{Answer, get_or_head, readyz, routed};
use crate::{
    metrics::Limited,
    route::{Peer, Route, Routed},
    state::AppState,
};

/// A transparent 1×1 GIF89a: 43 bytes, one palette entry, that entry transparent.
pub const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\
\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

/// Answers a request on the public listener.
pub(crate) async fn public(state: Arc<AppState>, req: Request<Incoming>) -> Answer {
    let routed = routed(&req, Routed::public);
    match routed.route {
        Route::Pixel => {
            get_or_head(&req)?;
            pixel(&state, routed.token(req.uri().path()), &req).await
        }
        Route::Click => {
            get_or_head(&req)?;
            click(&state, routed.token(req.uri().path()), &req).await
        }
        Route::Healthz => get_or_head(&req).map(|()| respond::healthz()),
        Route::Readyz => {
            get_or_head(&req)?;
            // A probe like any other request: a flood of them is limited, and what they ask of
            // Redis is shared (`RedisCheck`).
            over_limit(&state, state.limiter.check(client_of(&state, &req)))?;
            // Boxed: the Redis ping's future is about 14 KB, and unboxed it would size (and so
            // be copied with) the future of every pixel and click, which needs well under 1 KB.
            Box::pin(readyz(&state)).await
        }
        // Crawlers and browsers ask for these on any host; both are answered without a look at
        // the rate limit, so a person's browser fetching the favicon of a 404 page costs that
        // person nothing.
        Route::Robots => get_or_head(&req).map(|()| robots()),
        Route::Favicon => get_or_head(&req).map(|()| favicon()),
        Route::Test | Route::Metrics | Route::NotFound => {
            // Unknown paths count against the client's limit too: scanning is not free.
            over_limit(&state, state.limiter.check(client_of(&state, &req)))?;
            Err(Refusal::NotFound)
        }
    }
}

/// What a tracking request shows before its token is opened: who asked, when, and whether
/// it is over its client's limit.
struct Asked<'a> {
    client: IpAddr,
    user_agent: &'a str,
    at: SystemTime,
    limit: Result<(), Duration>,
}

impl<'a> Asked<'a> {
    fn of<B>(state: &AppState, req: &'a Request<B>) -> Self {
        let client = client_of(state, req);
        Self {
            client,
            user_agent: user_agent(req.headers()),
            at: SystemTime::now(),
            limit: state.limiter.check(client),
        }
    }

    /// Everything the event records, once the token opened to `claims`.
    fn observed(&self, claims: Claims) -> Observed<'a> {
        Observed {
            claims,
            ip: self.client,
            user_agent: self.user_agent,
            at: self.at,
            limited: self.limit.is_err(),
        }
    }
}

/// `GET /o/{token}.gif`: always the GIF; one `open` event when the token opens.
async fn pixel<B>(state: &AppState, token: &str, req: &Request<B>) -> Answer {
    let asked = Asked::of(state, req);
    // A statement of its own, so the keyring's guard is released before the Redis wait.
    let opened = state.keys.load().open(token, Kind::Open, asked.at);
    match opened {
        Ok(claims) => {
            record(state, asked.observed(claims)).await;
            Ok(gif())
        }
        Err(_) => {
            state.metrics.token_rejected(Route::Pixel);
            over_limit(state, asked.limit).map(|()| gif())
        }
    }
}

/// `GET /c/{token}`: `302` to the sealed destination and one `click` event; `404` otherwise.
async fn click<B>(state: &AppState, token: &str, req: &Request<B>) -> Answer {
    let asked = Asked::of(state, req);
    let opened = state.keys.load().open(token, Kind::Click, asked.at);
    // The destination was serialised by the `url` crate and re-checked on opening, so it is a
    // valid header value; an account's allowlist may still refuse its host.
    let redirect = opened.ok().and_then(|claims| {
        let Target::Click(dest) = &claims.target else {
            return None;
        };
        if !state.allowlist.allows(&claims.ids.account, dest.host()) {
            return None;
        }
        let location = HeaderValue::from_str(dest.as_str()).ok()?;
        Some((location, claims))
    });
    let Some((location, claims)) = redirect else {
        state.metrics.token_rejected(Route::Click);
        over_limit(state, asked.limit)?;
        return Err(Refusal::NotFound);
    };
    record(state, asked.observed(claims)).await;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Hands the event to the enqueuer and waits until it is stored (in Redis, or in the spool
/// after `queue.ack_timeout`). A failure (the spool refused it too) is counted and logged, never
/// shown to the client.
async fn record(state: &AppState, seen: Observed<'_>) {
    let lane = if seen.limited {
        state.metrics.limited(Limited::Overflow);
        Lane::Overflow
    } else {
        Lane::Main
    };
    let event = Event::born(seen);
    // Serialised before the wait, so only its id is held while Redis answers.
    let (id, json) = (event.id, event.to_json());
    drop(event);
    if let Err(error) = state.enqueuer.enqueue_raw(json, lane).await {
        state.dropped(&error, id);
    }
}

/// For a request that records nothing: `Ok` within its client's limit, else the `429` (counted).
fn over_limit(state: &AppState, limit: Result<(), Duration>) -> Result<(), Refusal> {
    limit.map_err(|retry_after| {
        state.metrics.limited(Limited::Rejected);
        Refusal::RateLimited { retry_after }
    })
}

/// The client's address: the socket's peer, or the client a trusted proxy names.
fn client_of<B>(state: &AppState, req: &Request<B>) -> IpAddr {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
    state.client_ip.resolve(peer, req.headers())
}

fn user_agent(headers: &HeaderMap) -> &str {
    let ua = headers
        .get(header::USER_AGENT)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let ua = &ua[..ua.len().min(MAX_USER_AGENT_LEN)];
    // Header values may carry any byte but control characters; keep what is valid UTF-8.
    match std::str::from_utf8(ua) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&ua[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// The pixel's answer: the GIF, never cached (a cached pixel is an open nobody sees).
pub fn gif() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(GIF)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    response
}

/// `GET /robots.txt`: nothing here is for crawlers.
fn robots() -> Response<Body> {
    let mut response = respond::text(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"User-agent: *\nDisallow: /\n"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400"),
    );
    response
}

/// `GET /favicon.ico`: no icon, for a week, so a browser stops asking.
fn favicon() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=604800"),
    );
    response
}

#[cfg(test)]
mod tests {
    /// The public handler's future is moved into a box on every request, and its size copied.
    /// A Redis call awaited unboxed in it (about 14 KB) once made that copy a tenth of the
    /// edge's CPU time.
    #[test]
    fn the_public_handler_future_stays_small() {
        fn future_size<A, B, F>(_: impl Fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(super::public);
        assert!(size <= 4096, "the public handler's future is {size} bytes");
    }
}
