//! The HTTP stack of each listener, built in one function each, outermost layer first.
//!
//! Every layer says why it is there and why in that place. The handlers at the bottom are
//! plain async functions (`routes::public`, `routes::admin`); everything a request passes
//! through before them is visible here.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::{Body as _, Incoming};
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, service_fn, util::BoxCloneSyncService};
use tower_http::{
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
};
use tracing::{Instrument as _, field};

use crate::{
    config::ServerConfig,
    error::{Body, EdgeError},
    routes::{self, AppState, Route},
};

/// A listener's whole stack as one cloneable service.
pub type HttpService = BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;

/// The public listener: pixels, clicks, health.
pub fn public(state: Arc<AppState>, config: &ServerConfig) -> HttpService {
    let limits = Limits {
        max_uri_bytes: config.max_uri_bytes.get(),
        max_headers: config.max_headers.get(),
        max_header_bytes: config.max_header_bytes.get(),
    };
    let observe = Observe {
        state: state.clone(),
        access_log: config.access_log,
        route: RouteOf::Public,
    };
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.get()));
    let ids = Counter(state.request_ids.clone());
    let handler = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::public(state, req).await) }
    });
    let stack = ServiceBuilder::new()
        // Request ids first, so every later layer and every log line can name the request;
        // the id is echoed in the response (`x-request-id`), also for shed or timed-out ones.
        .layer(SetRequestIdLayer::x_request_id(ids))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Span, metrics and access log around everything below, so shed (503), timed-out
        // (408) and refused (414/431) requests are counted like any other.
        .layer_fn(move |inner| ObserveService {
            inner,
            observe: observe.clone(),
        })
        // Load shedding over a global in-flight cap: past `max_in_flight` the edge answers
        // `503` with `Retry-After` at once instead of queueing, so latency stays bounded.
        .layer_fn(move |inner| ShedService {
            inner,
            in_flight: in_flight.clone(),
        })
        // A whole-request deadline; handlers already bound their Redis wait by
        // `queue.ack_timeout`, so this only catches what should never happen.
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        // Cheap refusals last before the handler: oversized targets and headers, bodies on
        // tracking routes. Behind the in-flight cap, so floods of them are shed too.
        .layer_fn(move |inner| LimitsService { inner, limits })
        .service(handler);
    BoxCloneSyncService::new(stack)
}

/// The admin listener: health, readiness, `/test`, `/metrics`. Not rate-limited or shed:
/// it is private, and must answer while the public side is overloaded.
pub fn admin(state: Arc<AppState>, config: &ServerConfig) -> HttpService {
    let observe = Observe {
        state: state.clone(),
        access_log: config.access_log,
        route: RouteOf::Admin,
    };
    let ids = Counter(state.request_ids.clone());
    let handler = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::admin(state, req).await) }
    });
    let stack = ServiceBuilder::new()
        // Request ids, as on the public side.
        .layer(SetRequestIdLayer::x_request_id(ids))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Span, metrics and access log.
        .layer_fn(move |inner| ObserveService {
            inner,
            observe: observe.clone(),
        })
        // A deadline: `/test` and `/metrics` talk to Redis.
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .service(handler);
    BoxCloneSyncService::new(stack)
}

/// Answers `503` when every in-flight slot is taken; otherwise holds a slot until the
/// response is ready.
#[derive(Clone)]
struct ShedService<S> {
    inner: S,
    in_flight: Arc<Semaphore>,
}

impl<S> tower::Service<Request<Incoming>> for ShedService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let future = self.inner.call(req);
                Box::pin(async move {
                    let response = future.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => Box::pin(std::future::ready(
                Ok(EdgeError::Overloaded.into_response()),
            )),
        }
    }
}

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Request ids: a process-wide counter in hex. Unique per process, cheap, and sortable.
#[derive(Clone)]
struct Counter(Arc<AtomicU64>);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        // The formatted string becomes the header value's bytes: one allocation, no copy.
        HeaderValue::from_maybe_shared(Bytes::from(format!("{n:016x}")))
            .ok()
            .map(RequestId::new)
    }
}

#[derive(Clone, Copy)]
enum RouteOf {
    Public,
    Admin,
}

/// Span, metrics and the optional access log for each request.
#[derive(Clone)]
struct Observe {
    state: Arc<AppState>,
    access_log: bool,
    route: RouteOf,
}

#[derive(Clone)]
struct ObserveService<S> {
    inner: S,
    observe: Observe,
}

impl<S> tower::Service<Request<Incoming>> for ObserveService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let route = match self.observe.route {
            RouteOf::Public => Route::public(req.uri().path()).0,
            RouteOf::Admin => Route::admin(req.uri().path()),
        };
        // The id is copied out of the request only for a span or a log line that shows it.
        let span = tracing::debug_span!("request", id = field::Empty, route = route.as_str());
        if !span.is_disabled() {
            span.record("id", request_id(&req));
        }
        let access = self.observe.access_log.then(|| AccessLine::of(&req));
        let observe = self.observe.clone();
        let future = self.inner.call(req);
        Box::pin(
            async move {
                let response = future.await?;
                let status = response.status().as_u16();
                observe
                    .state
                    .metrics
                    .observe(route, status, started.elapsed());
                if let Some(line) = access {
                    line.log(status, started.elapsed());
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The request's id (`x-request-id`), set by the outermost layer.
fn request_id<B>(req: &Request<B>) -> &str {
    req.extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
}

/// What the access log says about a request; every client-supplied part escaped.
struct AccessLine {
    id: String,
    method: String,
    /// The request target; not named `target`, which JSON logs already use for the log target.
    uri: String,
    peer: String,
    user_agent: String,
}

impl AccessLine {
    fn of(req: &Request<Incoming>) -> Self {
        let peer = req
            .extensions()
            .get::<routes::Peer>()
            .map_or_else(|| "-".to_owned(), |p| p.0.to_string());
        let ua = req
            .headers()
            .get(http::header::USER_AGENT)
            .map_or(&b"-"[..], HeaderValue::as_bytes);
        Self {
            id: request_id(req).to_owned(),
            method: req.method().as_str().escape_debug().to_string(),
            uri: escape(req.uri().to_string().as_bytes()),
            peer,
            user_agent: escape(ua),
        }
    }

    fn log(&self, status: u16, elapsed: std::time::Duration) {
        tracing::info!(
            target: "pixelgate::access",
            id = %self.id,
            peer = %self.peer,
            method = %self.method,
            uri = %self.uri,
            status,
            micros = elapsed.as_micros() as u64,
            ua = %self.user_agent,
        );
    }
}

/// Bytes as text with every control character, quote, backslash and non-UTF-8 byte escaped,
/// so a request can never write a terminal escape sequence or a fake line into a log.
pub fn escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().flat_map(char::escape_debug).collect()
}

/// The limits `LimitsService` enforces.
#[derive(Clone, Copy)]
struct Limits {
    max_uri_bytes: usize,
    max_headers: usize,
    max_header_bytes: usize,
}

#[derive(Clone)]
struct LimitsService<S> {
    inner: S,
    limits: Limits,
}

impl<S> tower::Service<Request<Incoming>> for LimitsService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        match self.limits.check(&req) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(e) => Box::pin(std::future::ready(Ok(e.into_response()))),
        }
    }
}

impl Limits {
    fn check(&self, req: &Request<Incoming>) -> Result<(), EdgeError> {
        let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target > self.max_uri_bytes {
            return Err(EdgeError::UriTooLong);
        }
        let headers = req.headers();
        if headers.len() > self.max_headers {
            return Err(EdgeError::HeadersTooLarge);
        }
        let bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        if bytes > self.max_header_bytes {
            return Err(EdgeError::HeadersTooLarge);
        }
        let (route, _) = Route::public(req.uri().path());
        if matches!(route, Route::Pixel | Route::Click) && !req.body().is_end_stream() {
            return Err(EdgeError::BodyNotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stack moves each request's handler future into a box; its size is copied on every
    /// request. A Redis call awaited unboxed in `routes::public` (about 14 KB) once made that
    /// copy a tenth of the edge's CPU time.
    #[test]
    fn the_public_handler_future_stays_small() {
        fn future_size<A, B, F>(_: impl Fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(routes::public);
        eprintln!("routes::public future: {size} bytes");
        assert!(size <= 4096, "routes::public's future is {size} bytes");
    }
}
