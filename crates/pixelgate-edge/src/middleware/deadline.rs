//! A whole-request deadline (`server.request_timeout`): past it the request is refused with
//! `408`, through the same refusal path as every other. Handlers already bound their Redis wait
//! by `queue.ack_timeout`, so on the public side this only catches what should never happen.

use std::time::Duration;

use http::Response;
use pixelgate_http::{Body, Refusal};
use tower::Service;

use super::{Req, Step};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Duration);

impl Step<Refusal> for Deadline {
    async fn run<S>(self, req: Req, mut next: S) -> Result<Response<Body>, Refusal>
    where
        S: Service<Req, Response = Response<Body>, Error = Refusal> + Send + 'static,
        S::Future: Send,
    {
        tokio::time::timeout(self.0, next.call(req))
            .await
            .unwrap_or(Err(Refusal::Timeout))
    }
}
