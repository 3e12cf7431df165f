//! The rescue: the one place a stack's refusals become responses.
//!
//! Below it every layer and handler answers `Result<Response, Refusal>`; above it the stack is
//! infallible, as hyper wants it. A refusal while the inner service gets ready (none of ours
//! refuses there, but a layer could) is kept and answers the next request.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use tower::{Layer, Service};

use crate::{Body, Refusal};

/// Puts [`Rescue`] in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            refused: None,
        }
    }
}

/// Answers every [`Refusal`] of `inner` with [`Refusal::into_response`].
#[derive(Debug, Clone)]
pub struct Rescue<S> {
    inner: S,
    refused: Option<Refusal>,
}

impl<S, R> Service<R> for Rescue<S>
where
    S: Service<R, Response = Response<Body>, Error = Refusal>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.refused.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            // Ready all the same: a refusal is an answer too.
            Poll::Ready(Err(refusal)) => {
                self.refused = Some(refusal);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        if let Some(refusal) = self.refused.take() {
            return Box::pin(std::future::ready(Ok(refusal.into_response())));
        }
        let answer = self.inner.call(req);
        Box::pin(async move { Ok(answer.await.unwrap_or_else(Refusal::into_response)) })
    }
}
