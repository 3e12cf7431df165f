//! The request-level middleware of both stacks, one concern a file; `stack.rs` puts them in order.
//!
//! Each is a [`Step`]: it sees the request, may answer it itself, and otherwise calls the rest of
//! the stack. [`StepLayer`] makes any step a tower layer, so the `Service` plumbing (readiness,
//! handing the ready service to the future) is written once, here.

pub(crate) mod classify;
pub(crate) mod deadline;
pub(crate) mod limits;
pub(crate) mod observe;
pub(crate) mod request_id;
pub(crate) mod shed;

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use hyper::body::Incoming;
use pixelgate_http::Body;
use tower::{Layer, Service};

/// The request every step sees.
pub(crate) type Req = Request<Incoming>;

/// One step of a stack. It runs by value (a step is a few `Arc`s and numbers, cloned for each
/// request), so its future owns what it needs and is boxed as it is: the request and the rest
/// of the stack are moved into it once.
pub(crate) trait Step<E>: Clone + Send + Sync + 'static {
    /// Answers `req`, calling `next` (the rest of the stack, ready for one call) or not.
    fn run<S>(
        self,
        req: Req,
        next: S,
    ) -> impl Future<Output = Result<Response<Body>, E>> + Send + 'static
    where
        S: Service<Req, Response = Response<Body>, Error = E> + Send + 'static,
        S::Future: Send;
}

/// A [`Step`] as a tower layer.
#[derive(Debug, Clone)]
pub(crate) struct StepLayer<T>(pub(crate) T);

impl<T: Clone, S> Layer<S> for StepLayer<T> {
    type Service = Stepped<T, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Stepped {
            step: self.0.clone(),
            inner,
        }
    }
}

/// A step in front of the rest of the stack.
#[derive(Debug, Clone)]
pub(crate) struct Stepped<T, S> {
    step: T,
    inner: S,
}

impl<T, S> Service<Req> for Stepped<T, S>
where
    T: Step<S::Error>,
    S: Service<Req, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The service that was polled ready goes with this request; a clone waits for the next.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(self.step.clone().run(req, ready))
    }
}
