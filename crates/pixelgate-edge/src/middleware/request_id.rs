//! Request ids: a random 64-bit id for every request, in hex, minted here and nowhere else.
//!
//! Random, so an id says nothing about how many requests an edge has served or how fast; minted
//! by the edge, so a client's own `x-request-id` is never believed, echoed or logged as ours. The
//! id goes into the extensions (for the span and the access log, not into the request headers,
//! whose limits count only what the client sent) and back out as the response's `x-request-id`.

use http::{HeaderName, HeaderValue, Response};
use pixelgate_http::Body;
use tower::Service;

use super::{Req, Step};

/// The `x-request-id` header.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// This request's id.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    fn mint() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n: u64 = rand::random();
        let mut text = [0u8; 16];
        for (i, digit) in text.iter_mut().enumerate() {
            *digit = HEX[usize::from((n >> (60 - 4 * i)) as u8 & 0xf)];
        }
        // Sixteen hex digits are always a valid header value.
        Self(HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-")))
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }

    /// The id of `req`, or `-` before one was minted.
    pub(crate) fn of(req: &Req) -> &str {
        req.extensions().get::<Self>().map_or("-", Self::as_str)
    }
}

/// Mints the id and echoes it in the response.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SetRequestId;

impl<E: Send + 'static> Step<E> for SetRequestId {
    async fn run<S>(self, mut req: Req, mut next: S) -> Result<Response<Body>, E>
    where
        S: Service<Req, Response = Response<Body>, Error = E> + Send + 'static,
        S::Future: Send,
    {
        let id = RequestId::mint();
        req.extensions_mut().insert(id.clone());
        let mut response = next.call(req).await?;
        response.headers_mut().insert(X_REQUEST_ID, id.0);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_hex_digits_and_differ() {
        let a = RequestId::mint();
        let b = RequestId::mint();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
    }
}
