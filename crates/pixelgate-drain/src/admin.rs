//! The drain's admin listener: `/healthz`, `/readyz` (Redis and the sink answer) and
//! `/metrics` (the drain's and the queue's metrics, lag read fresh from Redis).

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use pixelgate_queue::Queue;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::sink::Sink;

pub(crate) struct Admin {
    pub(crate) queue: Queue,
    pub(crate) sink: Arc<Sink>,
    pub(crate) registry: Registry,
}

/// Serves until `stop`; connections are closed with it.
pub(crate) async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let admin = admin.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(answer(&admin, &req).await) }
                    });
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(5))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn answer(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok".into()),
        "/readyz" => {
            let redis = admin.queue.ping().await;
            let sink = admin.sink.ping().await;
            let status = if redis.is_ok() && sink.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let word = |ok: bool| if ok { "ok" } else { "unavailable" };
            let body = format!(
                r#"{{"status":"{}","redis":"{}","sink":"{}"}}"#,
                if status == StatusCode::OK {
                    "ready"
                } else {
                    "unavailable"
                },
                word(redis.is_ok()),
                word(sink.is_ok())
            );
            reply(status, "application/json", body)
        }
        "/metrics" => {
            if let Err(error) = admin.queue.observe().await {
                tracing::debug!(%error, "queue gauges not refreshed");
            }
            let mut out = String::with_capacity(8192);
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &admin.registry);
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                out,
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}
