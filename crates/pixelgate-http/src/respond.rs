//! The answers every admin listener gives, and the small responses they are made of.
//!
//! `/healthz` says the process serves and asks nothing else; `/readyz` reports the checks its
//! listener ran, as one JSON object, `200` when all passed and a [`Refusal::NotReady`] (`503`)
//! naming the first that did not; `/metrics` encodes a Prometheus registry as text.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::registry::Registry;

use crate::Refusal;

/// Every response body: whole, in memory.
pub type Body = Full<Bytes>;

/// `Cache-Control: no-store`, which no answer of ours may be cached without.
pub(crate) fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// A response with `status`, `Content-Type` and `Cache-Control: no-store`.
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, no_store());
    response
}

/// `GET /healthz`: `200 ok`, the process serves. Nothing else is asked.
pub fn healthz() -> Response<Body> {
    text(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"ok"),
    )
}

/// `GET /metrics`: the registry as Prometheus (OpenMetrics) text.
pub fn metrics(registry: &Registry) -> Response<Body> {
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    text(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        out,
    )
}

/// What `/readyz` found: named values in the order they were added, and the first reason not to
/// be ready. `{"status":"ready",…}` or `{"status":"unavailable","reason":R,…}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    reason: Option<&'static str>,
    fields: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Word(Cow<'static, str>),
    Number(u64),
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Not ready for `reason` (the first one given is reported).
    pub fn unavailable(mut self, reason: &'static str) -> Self {
        self.reason.get_or_insert(reason);
        self
    }

    /// A check's result: `name: "ok"`, or `name: why` and not ready for `name`.
    pub fn check(self, name: &'static str, result: Result<(), &'static str>) -> Self {
        match result {
            Ok(()) => self.word(name, "ok"),
            Err(why) => self.word(name, why).unavailable(name),
        }
    }

    /// A word shown as it is (`"redis":"unknown"`); it must need no JSON escaping.
    pub fn word(mut self, name: &'static str, word: impl Into<Cow<'static, str>>) -> Self {
        self.fields.push((name, Value::Word(word.into())));
        self
    }

    pub fn number(mut self, name: &'static str, n: u64) -> Self {
        self.fields.push((name, Value::Number(n)));
        self
    }

    pub fn is_ready(&self) -> bool {
        self.reason.is_none()
    }

    /// `200` with the JSON when ready; otherwise the `503` refusal that carries it.
    pub fn answer(self) -> Result<Response<Body>, Refusal> {
        if self.is_ready() {
            Ok(text(StatusCode::OK, "application/json", self.json()))
        } else {
            Err(Refusal::NotReady(self))
        }
    }

    /// The body: status and reason first, then every field in order.
    pub fn json(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(64 + 24 * self.fields.len());
        match self.reason {
            None => out.push_str(r#"{"status":"ready""#),
            Some(reason) => {
                let _ = write!(out, r#"{{"status":"unavailable","reason":"{reason}""#);
            }
        }
        for (name, value) in &self.fields {
            let _ = match value {
                Value::Word(w) => write!(out, r#","{name}":"{w}""#),
                Value::Number(n) => write!(out, r#","{name}":{n}"#),
            };
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reports_the_first_reason_and_every_field() {
        let ready = Readiness::new()
            .check("redis", Ok(()))
            .number("spool_bytes", 0);
        assert!(ready.is_ready());
        assert_eq!(
            ready.json(),
            r#"{"status":"ready","redis":"ok","spool_bytes":0}"#
        );
        assert_eq!(ready.answer().unwrap().status(), StatusCode::OK);

        let down = Readiness::new()
            .check("redis", Err("connection"))
            .check("sink", Err("unavailable"))
            .number("spool_bytes", 7);
        assert_eq!(
            down.json(),
            r#"{"status":"unavailable","reason":"redis","redis":"connection","sink":"unavailable","spool_bytes":7}"#
        );
        let refused = down.answer().unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

        let stopping = Readiness::new()
            .unavailable("shutting_down")
            .check("redis", Ok(()));
        assert!(stopping.json().contains(r#""reason":"shutting_down""#));
    }
}
