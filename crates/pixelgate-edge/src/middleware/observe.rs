//! A span, the request metrics and the optional access log, around everything that can answer.
//!
//! It sits outside the rescue step, so a shed (`503`), timed-out (`408`) or refused (`414`,
//! `431`) request is counted and logged with the status its client got. The access log escapes
//! every byte a client chose, and names the request by its path and query whatever the HTTP
//! version, so an HTTP/2 request reads like an HTTP/1.1 one.

use std::{convert::Infallible, sync::Arc, time::Instant};

use http::{HeaderValue, Response};
use pixelgate_http::Body;
use tower::Service;
use tracing::{Instrument as _, field};

use super::{Req, Step, request_id::RequestId};
use crate::{
    metrics::EdgeMetrics,
    route::{Peer, Route, Routed},
};

#[derive(Debug, Clone)]
pub(crate) struct Observe {
    metrics: Arc<EdgeMetrics>,
    access_log: bool,
}

impl Observe {
    pub(crate) fn new(metrics: Arc<EdgeMetrics>, access_log: bool) -> Self {
        Self {
            metrics,
            access_log,
        }
    }
}

impl Step<Infallible> for Observe {
    async fn run<S>(self, req: Req, mut next: S) -> Result<Response<Body>, Infallible>
    where
        S: Service<Req, Response = Response<Body>, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let started = Instant::now();
        let route = req
            .extensions()
            .get::<Routed>()
            .map_or(Route::NotFound, |r| r.route);
        // The id is copied out of the request only for a span or a log line that shows it.
        let span = tracing::debug_span!("request", id = field::Empty, route = route.as_str());
        if !span.is_disabled() {
            span.record("id", RequestId::of(&req));
        }
        let access = self.access_log.then(|| AccessLine::of(&req));
        let response = next.call(req).instrument(span).await?;
        let status = response.status().as_u16();
        self.metrics.observe(route, status, started.elapsed());
        if let Some(line) = access {
            line.log(status, started.elapsed());
        }
        Ok(response)
    }
}

/// What the access log says about a request; every client-supplied part escaped.
struct AccessLine {
    id: String,
    method: String,
    /// The path and query; not named `target`, which JSON logs already use for the log target.
    uri: String,
    peer: String,
    user_agent: String,
}

impl AccessLine {
    fn of(req: &Req) -> Self {
        let peer = req
            .extensions()
            .get::<Peer>()
            .map_or_else(|| "-".to_owned(), |p| p.0.to_string());
        let ua = req
            .headers()
            .get(http::header::USER_AGENT)
            .map_or(&b"-"[..], HeaderValue::as_bytes);
        let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Self {
            id: RequestId::of(req).to_owned(),
            method: req.method().as_str().escape_debug().to_string(),
            uri: escape(uri.as_bytes()),
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
