//! Every answer that is not what the client asked for, and the one match that makes it a response.
//!
//! Handlers and middleware return `Err(Refusal)`; the stack's rescue ([`crate::Rescue`]) turns
//! it into the response here, so a timeout, a shed request and a `404` are written the same way: a short
//! `text/plain` body (JSON for readiness), `Cache-Control: no-store`, and the headers the status
//! calls for. The match in [`Refusal::into_response`] is exhaustive, so a new variant forces a
//! decision about its status and headers. Client errors are not logged as errors.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::respond::{Body, Readiness, no_store};

/// Why a request was not answered with what it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("request body not allowed")]
    BodyNotAllowed,
    #[error("request target too long")]
    UriTooLong,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("overloaded, try again")]
    Overloaded,
    #[error("request took too long")]
    Timeout,
    #[error("redis unavailable")]
    RedisUnavailable,
    /// `/readyz` found something not ready; the body says what.
    #[error("not ready")]
    NotReady(Readiness),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest(_) | Self::BodyNotAllowed => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Overloaded | Self::RedisUnavailable | Self::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The response: status, body, `Content-Type`, `Cache-Control: no-store`, and `Allow` or
    /// `Retry-After` where the status calls for them.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let (content_type, body) = match &self {
            Self::NotReady(readiness) => ("application/json", Bytes::from(readiness.json())),
            Self::BadRequest(reason) => ("text/plain; charset=utf-8", line(reason)),
            other => (
                "text/plain; charset=utf-8",
                Bytes::from_static(other.text()),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, no_store());
        match self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::RateLimited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Self::Overloaded | Self::RedisUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::NotFound
            | Self::BadRequest(_)
            | Self::BodyNotAllowed
            | Self::UriTooLong
            | Self::HeadersTooLarge
            | Self::Timeout
            | Self::NotReady(_) => {}
        }
        response
    }

    /// The body of a plain refusal: its message and a newline, from static memory (floods of
    /// `404`s and `429`s allocate no body).
    fn text(&self) -> &'static [u8] {
        match self {
            Self::NotFound => b"not found\n",
            Self::MethodNotAllowed { .. } => b"method not allowed\n",
            Self::RateLimited { .. } => b"too many requests\n",
            Self::BodyNotAllowed => b"request body not allowed\n",
            Self::UriTooLong => b"request target too long\n",
            Self::HeadersTooLarge => b"request headers too large\n",
            Self::Overloaded => b"overloaded, try again\n",
            Self::Timeout => b"request took too long\n",
            Self::RedisUnavailable => b"redis unavailable\n",
            Self::BadRequest(_) | Self::NotReady(_) => b"",
        }
    }
}

fn line(reason: &str) -> Bytes {
    let mut text = String::with_capacity(reason.len() + 1);
    text.push_str(reason);
    text.push('\n');
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<Refusal> {
        vec![
            Refusal::NotFound,
            Refusal::MethodNotAllowed { allow: "GET, HEAD" },
            Refusal::RateLimited {
                retry_after: Duration::from_millis(1500),
            },
            Refusal::BadRequest("value must be short"),
            Refusal::BodyNotAllowed,
            Refusal::UriTooLong,
            Refusal::HeadersTooLarge,
            Refusal::Overloaded,
            Refusal::Timeout,
            Refusal::RedisUnavailable,
            Refusal::NotReady(Readiness::new().unavailable("redis")),
        ]
    }

    #[test]
    fn every_refusal_has_a_body_no_store_and_its_headers() {
        for refusal in every() {
            let name = format!("{refusal:?}");
            let message = refusal.to_string();
            let response = refusal.clone().into_response();
            assert_eq!(response.status(), refusal.status(), "{name}");
            let h = response.headers();
            assert_eq!(h[header::CACHE_CONTROL], "no-store", "{name}");
            let body = response.body().clone();
            let bytes = futures_block(body);
            match refusal {
                Refusal::NotReady(_) => {
                    assert_eq!(h[header::CONTENT_TYPE], "application/json");
                    assert!(bytes.starts_with(b"{\"status\":\"unavailable\""), "{name}");
                }
                _ => assert_eq!(bytes, format!("{message}\n").as_bytes(), "{name}"),
            }
            let want_retry = matches!(
                refusal,
                Refusal::RateLimited { .. } | Refusal::Overloaded | Refusal::RedisUnavailable
            );
            assert_eq!(h.contains_key(header::RETRY_AFTER), want_retry, "{name}");
            assert_eq!(
                h.contains_key(header::ALLOW),
                matches!(refusal, Refusal::MethodNotAllowed { .. }),
                "{name}"
            );
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let after = |ms| {
            Refusal::RateLimited {
                retry_after: Duration::from_millis(ms),
            }
            .into_response()
            .headers()[header::RETRY_AFTER]
                .clone()
        };
        assert_eq!(after(1), "1");
        assert_eq!(after(1000), "1");
        assert_eq!(after(1001), "2");
    }

    fn futures_block(body: Body) -> Vec<u8> {
        use http_body_util::BodyExt as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes().to_vec()
    }
}
