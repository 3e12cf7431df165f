//! The handlers, grouped by listener: [`public`] (pixels, clicks, health, `robots.txt`, the
//! favicon) and [`admin`] (health, readiness, `/test`, `/metrics`).
//!
//! Each is a small async function that answers or returns a [`Refusal`]; the stack's rescue step
//! turns refusals into responses, all in `Refusal::into_response`. The route was read from the
//! path once, by the outermost layer; handlers take it from the request's extensions.

pub(crate) mod admin;
pub(crate) mod public;

use http::{Method, Request, Response};
use pixelgate_http::{Body, Readiness, Refusal};

use crate::{route::Routed, state::AppState};

/// What a handler gives: a response, or why not.
pub(crate) type Answer = Result<Response<Body>, Refusal>;

/// The methods every route answers.
const ALLOW: &str = "GET, HEAD";

/// `405` unless the request is a `GET` or a `HEAD`.
fn get_or_head<B>(req: &Request<B>) -> Result<(), Refusal> {
    let m = req.method();
    if m == Method::GET || m == Method::HEAD {
        Ok(())
    } else {
        Err(Refusal::MethodNotAllowed { allow: ALLOW })
    }
}

/// The route the outermost layer put in the extensions, or `parse`'s when a request comes in
/// without one (a handler called on its own).
fn routed<B>(req: &Request<B>, parse: fn(&str) -> Routed) -> Routed {
    req.extensions()
        .get::<Routed>()
        .cloned()
        .unwrap_or_else(|| parse(req.uri().path()))
}

/// `GET /readyz`: `200` when the edge is not stopping, Redis answers, the spool is within
/// `spool.max_bytes` and no answered event was stored nowhere in the last moments; else `503`
/// naming the first that failed. The spool's size either way.
async fn readyz(state: &AppState) -> Answer {
    let spool = state.spool.stats();
    let (bytes, segments) = (spool.bytes(), spool.segments());
    let report = if state.is_shutting_down() {
        Readiness::new()
            .unavailable("shutting_down")
            .word("redis", "unknown")
    } else {
        let redis = state.redis.answers(&state.queue).await;
        let mut ready = Readiness::new().check("redis", redis);
        if let Some(reason) = state.dropping() {
            ready = ready.unavailable(reason);
        }
        if state.spool.is_full() {
            ready = ready.unavailable("spool_full");
        }
        ready
    };
    report
        .number("spool_bytes", bytes)
        .number("spool_segments", segments)
        .answer()
}
