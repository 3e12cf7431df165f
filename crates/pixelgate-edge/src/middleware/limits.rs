//! Cheap refusals before the handler: a target over `server.max_uri_bytes` (`414`), more headers
//! than `server.max_headers` or more bytes of them than `server.max_header_bytes` (`431`), and a
//! body on a tracking route (`400`). hyper bounds what it reads; this gives each its status. A body
//! of no bytes is no body: an HTTP/2 request whose headers did not end the stream, or a chunked
//! one with only its last chunk, is answered once its body ended empty.

use http::Response;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use pixelgate_http::{Body, Refusal};
use tower::Service;

use super::{Req, Step};
use crate::{
    config::ServerConfig,
    route::{Route, Routed},
};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    max_uri_bytes: usize,
    max_headers: usize,
    max_header_bytes: usize,
}

impl Limits {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            max_uri_bytes: config.max_uri_bytes.get(),
            max_headers: config.max_headers.get(),
            max_header_bytes: config.max_header_bytes.get(),
        }
    }

    fn check(&self, req: &Req) -> Result<(), Refusal> {
        let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target > self.max_uri_bytes {
            return Err(Refusal::UriTooLong);
        }
        let headers = req.headers();
        if headers.len() > self.max_headers {
            return Err(Refusal::HeadersTooLarge);
        }
        let bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        if bytes > self.max_header_bytes {
            return Err(Refusal::HeadersTooLarge);
        }
        Ok(())
    }
}

/// Whether the request is a pixel or a click, which take no body.
fn tracking(req: &Req) -> bool {
    req.extensions()
        .get::<Routed>()
        .is_some_and(|r| matches!(r.route, Route::Pixel | Route::Click))
}

/// Reads a body to its end: a declared or a sent byte is a refusal, an end with none is no
/// body. A body that never ends is cut by the request's deadline, outside this step.
async fn empty(body: &mut Incoming) -> Result<(), Refusal> {
    if body.size_hint().lower() > 0 {
        return Err(Refusal::BodyNotAllowed);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::BadRequest("the request body could not be read"))?;
        if frame.data_ref().is_some_and(|data| !data.is_empty()) {
            return Err(Refusal::BodyNotAllowed);
        }
    }
    Ok(())
}

impl Step<Refusal> for Limits {
    async fn run<S>(self, mut req: Req, mut next: S) -> Result<Response<Body>, Refusal>
    where
        S: Service<Req, Response = Response<Body>, Error = Refusal> + Send + 'static,
        S::Future: Send,
    {
        self.check(&req)?;
        if tracking(&req) && !req.body().is_end_stream() {
            empty(req.body_mut()).await?;
        }
        next.call(req).await
    }
}
