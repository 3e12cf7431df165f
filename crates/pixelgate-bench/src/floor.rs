//! `pixelgate-bench floor`: bare hyper answering pixelgate's pixel, the framework's floor.
//!
//! hyper 1.x's HTTP/1.1 connection alone, on a tokio multi-thread runtime, answering every
//! request with exactly pixelgate's pixel (status, GIF, headers, an `x-request-id` as long as
//! pixelgate's): no middleware, no token, no event. What pixelgate costs above it is pixelgate's
//! own work; what it costs above `empty_gif` is the framework's. It records nothing.

use std::{convert::Infallible, num::NonZeroUsize, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response,
    body::Incoming,
    header::{HeaderName, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use pixelgate_edge::gif;
use tokio::net::TcpListener;

/// The `x-request-id` of every answer: sixteen hex digits, as long as pixelgate's, minted never
/// (the floor does none of the work that would need one).
pub const REQUEST_ID: &str = "0123456789abcdef";

/// Serves on `127.0.0.1:port` until killed, on as many workers as the CPUs this process may
/// use: one under `taskset -c 0`, as pixelgate's runtime sizes itself.
pub fn run(port: u16) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("bind 127.0.0.1:{port}"))?;
        serve(listener).await;
        Ok(())
    })
}

/// Accepts for ever, each connection on its own task.
pub async fn serve(listener: TcpListener) {
    // hyper's defaults: keep-alive, no timer (so no header-read timeout to arm per request).
    // pixelgate's timer and limits are part of what it costs above this floor.
    let http = http1::Builder::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin, as pixelgate's accept loop does.
                eprintln!("floor: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // As pixelgate: an answer goes out as soon as it is written.
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), service_fn(pixel));
        tokio::spawn(async move {
            // A client that goes away mid-request is no error of the floor's.
            let _ = connection.await;
        });
    }
}

/// Every request's answer: pixelgate's pixel.
async fn pixel(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(answer())
}

/// pixelgate's own pixel answer, and the request id its middleware adds.
fn answer() -> Response<Full<Bytes>> {
    let mut response = gif();
    response.headers_mut().insert(
        HeaderName::from_static("x-request-id"),
        HeaderValue::from_static(REQUEST_ID),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn answers_any_path_with_pixelgates_pixel() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        for path in ["/o/anything.gif", "/c/x", "/"] {
            let reply = tokio::task::spawn_blocking(move || pixelgate_tests::http::get(addr, path))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(&reply.body[..], pixelgate_edge::GIF);
            assert_eq!(reply.header("content-type"), Some("image/gif"));
            assert_eq!(
                reply.header("cache-control"),
                Some("no-store, no-cache, must-revalidate, max-age=0")
            );
            assert_eq!(reply.header("pragma"), Some("no-cache"));
            assert_eq!(reply.header("expires"), Some("0"));
            let id = reply.header("x-request-id").unwrap();
            assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
