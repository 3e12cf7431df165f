//! The admin listener's handlers: `/healthz`, `/readyz`, `/test` and `/metrics`.
//!
//! The admin listener is private (loopback by default): it is not rate-limited or shed, so it
//! answers while the public side is overloaded. `/test` and `/metrics` ask Redis, each bounded
//! by `redis.command_timeout`.

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use pixelgate_http::{Refusal, respond};

use super::{Answer, get_or_head, readyz, routed};
use crate::{
    route::{Route, Routed},
    state::AppState,
};

/// Answers a request on the admin listener.
pub(crate) async fn admin(state: Arc<AppState>, req: Request<Incoming>) -> Answer {
    let route = routed(&req, Routed::admin).route;
    match route {
        Route::Healthz => get_or_head(&req).map(|()| respond::healthz()),
        Route::Readyz => {
            get_or_head(&req)?;
            readyz(&state).await
        }
        Route::Test => {
            get_or_head(&req)?;
            test(&state, req.uri().query().unwrap_or_default()).await
        }
        Route::Metrics => {
            get_or_head(&req)?;
            Ok(metrics(&state).await)
        }
        Route::Pixel | Route::Click | Route::Robots | Route::Favicon | Route::NotFound => {
            Err(Refusal::NotFound)
        }
    }
}

/// `GET /test?value=V`: a round trip of V through Redis.
async fn test(state: &AppState, query: &str) -> Answer {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("value="))
        .filter(|v| {
            (1..=256).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .ok_or(Refusal::BadRequest(
            "value must be 1 to 256 of A-Z a-z 0-9 . _ -",
        ))?;
    match state.queue.round_trip(value).await {
        Ok(back) => Ok(respond::text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            back,
        )),
        Err(error) => {
            tracing::warn!(error = %pixelgate_core::config::Chain(&error), "test round trip failed");
            Err(Refusal::RedisUnavailable)
        }
    }
}

/// `GET /metrics`: Prometheus text, with the queue's gauges read fresh from Redis.
async fn metrics(state: &AppState) -> http::Response<pixelgate_http::Body> {
    if let Err(error) = state.queue.observe().await {
        tracing::debug!(error = %pixelgate_core::config::Chain(&error), "queue gauges not refreshed");
    }
    let tracked = state.limiter.tracked();
    state
        .metrics
        .rate_limiter_clients
        .set(i64::try_from(tracked).unwrap_or(i64::MAX));
    respond::metrics(&state.registry)
}
