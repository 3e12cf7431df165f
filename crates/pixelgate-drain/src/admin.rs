//! The drain's admin listener: `/healthz`, `/readyz` (Redis and the sink answer) and
//! `/metrics` (the drain's and the queue's metrics, lag read fresh from Redis).
//!
//! Served like the edge's admin listener, by `pixelgate_http`: the same accept loop (back-off
//! when `accept` fails, connections finished on shutdown), responders and refusals.

use std::{net::SocketAddr, sync::Arc};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use pixelgate_core::config::Chain;
use pixelgate_http::{
    Body, ConnLimits, Connections, MakeRequests, Readiness, Refusal, RescueLayer, Stack, respond,
};
use pixelgate_queue::Queue;
use prometheus_client::registry::Registry;
use tower::ServiceBuilder;

use crate::sink::Sink;

/// What the admin handlers read.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) queue: Queue,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) registry: Registry,
}

/// The admin listener's stack: plain HTTP with hyper's default limits, then the rescue, then
/// the handler.
pub(crate) fn stack(admin: Arc<Admin>) -> Stack<impl MakeRequests> {
    let requests = move |_peer: SocketAddr| {
        let admin = admin.clone();
        ServiceBuilder::new()
            // Every refusal below becomes its response here (`Refusal::into_response`).
            .layer(RescueLayer)
            .service_fn(move |req| answer(admin.clone(), req))
    };
    Stack {
        connections: Connections::new(&ConnLimits::default()),
        requests,
    }
}

async fn answer(admin: Arc<Admin>, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Err(Refusal::NotFound);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Refusal::MethodNotAllowed { allow: "GET, HEAD" });
    }
    match path {
        "/healthz" => Ok(respond::healthz()),
        "/readyz" => {
            let redis = admin.queue.ping().await.map_err(|e| e.kind());
            let sink = admin.sink.ping().await.map_err(|e| e.kind());
            Readiness::new()
                .check("redis", redis)
                .check("sink", sink)
                .answer()
        }
        _ => {
            if let Err(error) = admin.queue.observe().await {
                tracing::debug!(error = %Chain(&error), "queue gauges not refreshed");
            }
            Ok(respond::metrics(&admin.registry))
        }
    }
}
