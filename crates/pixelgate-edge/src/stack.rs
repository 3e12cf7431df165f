//! The whole stack of each listener, in one function each, outermost first: the connection
//! settings, then the layers every request passes through, then the handler.
//!
//! Every entry says why it is there and why in that place. A request layer is either a plain
//! request mapping (`map_request`), the rescue, or a [`Step`] from
//! `middleware/`; the handlers are the async functions of `handlers/`.
//!
//! [`Step`]: crate::middleware::Step

use std::{net::SocketAddr, sync::Arc};

use pixelgate_http::{ConnLimits, Connections, MakeRequests, RescueLayer, SharedTls, Stack};
use tower::ServiceBuilder;

use crate::{
    config::ServerConfig,
    handlers,
    middleware::{
        StepLayer, classify, deadline::Deadline, limits::Limits, observe::Observe,
        request_id::SetRequestId, shed::Shed,
    },
    state::AppState,
};

/// The public listener: pixels, clicks, health, `robots.txt`, the favicon.
pub(crate) fn public(
    state: &Arc<AppState>,
    config: &ServerConfig,
    tls: Option<SharedTls>,
) -> Stack<impl MakeRequests> {
    let connections = Connections::new(&conn_limits(config))
        // At most `server.max_connections` open; a connection past it is closed as soon as it
        // is accepted, before any byte of it is read.
        .capped(
            config.max_connections.get(),
            state.metrics.connections_open.clone(),
            state.metrics.connections_refused.clone(),
        )
        // Then TLS when certificates are configured (by SNI; ALPN picks HTTP/2 or 1.1), or
        // else the HTTP/2 preface sniffed; either within `server.header_read_timeout`. hyper
        // then bounds header time, count and size, and HTTP/2 streams and resets
        // (`conn_limits`); an HTTP/2 connection with no request in flight for the header
        // timeout is closed, as hyper closes an idle HTTP/1 one.
        .tls(tls);
    let state = state.clone();
    let observe = Observe::new(state.metrics.clone(), config.access_log);
    let shed = Shed::new(config.max_in_flight.get());
    let deadline = Deadline(config.request_timeout);
    let limits = Limits::new(config);
    let requests = move |peer: SocketAddr| {
        let state = state.clone();
        ServiceBuilder::new()
            // The client's socket address, from the connection: client-address resolution and
            // the access log read it.
            .map_request(classify::peer(peer))
            // A random request id, before anything can answer, so every later layer and log
            // line can name the request and every response (shed or timed out too) echoes it.
            .layer(StepLayer(SetRequestId))
            // The route, read from the path once: the span, the metrics, the limits and the
            // handler take it from the extensions.
            .map_request(classify::public)
            // Span, metrics and access log around everything that can answer, so refusals are
            // counted with the status their clients got.
            .layer(StepLayer(observe.clone()))
            // Every refusal below becomes its response here (`Refusal::into_response`).
            .layer(RescueLayer)
            // Load shedding over a global in-flight cap: past `server.max_in_flight`, `503` with
            // `Retry-After` at once instead of a queue, so latency stays bounded.
            .layer(StepLayer(shed.clone()))
            // A whole-request deadline, `408`: handlers bound their Redis wait already, so this
            // only catches what should never happen.
            .layer(StepLayer(deadline))
            // Cheap refusals last before the handler: oversized targets and headers, bodies on
            // tracking routes. Behind the in-flight cap, so floods of them are shed too.
            .layer(StepLayer(limits))
            .service_fn(move |req| handlers::public::public(state.clone(), req))
    };
    Stack {
        connections,
        requests,
    }
}

/// The admin listener: health, readiness, `/test`, `/metrics`. Not capped, rate-limited or
/// shed: it is private, and must answer while the public side is overloaded.
pub(crate) fn admin(state: &Arc<AppState>, config: &ServerConfig) -> Stack<impl MakeRequests> {
    // Plain HTTP/1.1 or HTTP/2 under the same hyper limits as the public side.
    let connections = Connections::new(&conn_limits(config));
    let state = state.clone();
    let observe = Observe::new(state.metrics.clone(), config.access_log);
    let deadline = Deadline(config.request_timeout);
    let requests = move |peer: SocketAddr| {
        let state = state.clone();
        ServiceBuilder::new()
            // As on the public side: peer, request id, route, then observation.
            .map_request(classify::peer(peer))
            .layer(StepLayer(SetRequestId))
            .map_request(classify::admin)
            .layer(StepLayer(observe.clone()))
            .layer(RescueLayer)
            // A deadline: `/test` and `/metrics` talk to Redis.
            .layer(StepLayer(deadline))
            .service_fn(move |req| handlers::admin::admin(state.clone(), req))
    };
    Stack {
        connections,
        requests,
    }
}

/// What hyper enforces on a connection, from `[server]`.
fn conn_limits(config: &ServerConfig) -> ConnLimits {
    ConnLimits {
        header_read_timeout: config.header_read_timeout,
        max_headers: config.max_headers.get(),
        max_header_bytes: config.max_header_bytes.get(),
        max_uri_bytes: config.max_uri_bytes.get(),
        max_concurrent_streams: config.max_concurrent_streams.get(),
    }
}
