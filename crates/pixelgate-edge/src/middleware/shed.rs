//! Load shedding: past `server.max_in_flight` requests in flight, `503` with `Retry-After` at
//! once instead of a queue, so latency stays bounded and a flood cannot pile up work.

use std::sync::Arc;

use http::Response;
use pixelgate_http::{Body, Refusal};
use tokio::sync::Semaphore;
use tower::Service;

use super::{Req, Step};

/// The in-flight cap, shared by every connection of the listener.
#[derive(Debug, Clone)]
pub(crate) struct Shed {
    in_flight: Arc<Semaphore>,
}

impl Shed {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
        }
    }
}

impl Step<Refusal> for Shed {
    async fn run<S>(self, req: Req, mut next: S) -> Result<Response<Body>, Refusal>
    where
        S: Service<Req, Response = Response<Body>, Error = Refusal> + Send + 'static,
        S::Future: Send,
    {
        // Held until the answer is ready.
        let Ok(_slot) = self.in_flight.try_acquire() else {
            return Err(Refusal::Overloaded);
        };
        next.call(req).await
    }
}
