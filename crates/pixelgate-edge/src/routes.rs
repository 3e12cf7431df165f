//! Routing and the handlers: `pixel`, `click`, `healthz`, `readyz`, `test`, `metrics`.
//!
//! A tracking request is answered only after the enqueuer acknowledged its event (in Redis, or
//! synced to the spool once `queue.ack_timeout` passed): a pixel is always the GIF and a valid
//! click always its `302`, whatever Redis does. A token that does not open records nothing;
//! for a click it is `404` and never a redirect.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use pixelgate_core::{Event, Keyring, Kind, Target, event::MAX_USER_AGENT_LEN};
use pixelgate_queue::{Enqueuer, Lane, Queue};
use pixelgate_spool::Spool;
use prometheus_client::registry::Registry;

use crate::{
    client_ip::ClientIp,
    error::{Body, EdgeError},
    metrics::{EdgeMetrics, ReasonLabel, RouteLabel},
    ratelimit::RateLimiter,
};

/// A transparent 1×1 GIF89a: 43 bytes, one palette entry, that entry transparent.
pub const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\
\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

/// What a request path names; the label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Pixel,
    Click,
    Healthz,
    Readyz,
    Test,
    Metrics,
    NotFound,
}

impl Route {
    pub const ALL: [Self; 7] = [
        Self::Pixel,
        Self::Click,
        Self::Healthz,
        Self::Readyz,
        Self::Test,
        Self::Metrics,
        Self::NotFound,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pixel => "pixel",
            Self::Click => "click",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Test => "test",
            Self::Metrics => "metrics",
            Self::NotFound => "not_found",
        }
    }

    /// The route of a public path, with its token for pixels and clicks. Matching is exact:
    /// no decoding, no normalisation, so `/o/../c/x` or `//o/x.gif` name nothing.
    pub fn public(path: &str) -> (Self, &str) {
        if let Some(token) = path
            .strip_prefix("/o/")
            .and_then(|t| t.strip_suffix(".gif"))
        {
            return (Self::Pixel, token);
        }
        if let Some(token) = path.strip_prefix("/c/") {
            return (Self::Click, token);
        }
        match path {
            "/healthz" => (Self::Healthz, ""),
            "/readyz" => (Self::Readyz, ""),
            _ => (Self::NotFound, ""),
        }
    }

    /// The route of an admin path.
    pub fn admin(path: &str) -> Self {
        match path {
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/test" => Self::Test,
            "/metrics" => Self::Metrics,
            _ => Self::NotFound,
        }
    }
}

/// The client's socket address, put into each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Everything the handlers share, built once at start. What changes (keys, limiter state,
/// readiness) lives behind the type that owns it.
#[derive(Debug)]
pub struct AppState {
    pub keys: Arc<ArcSwap<Keyring>>,
    pub enqueuer: Enqueuer,
    pub queue: Queue,
    pub limiter: Arc<RateLimiter>,
    pub client_ip: ClientIp,
    pub allowlist: Allowlist,
    pub metrics: Arc<EdgeMetrics>,
    pub registry: Arc<Registry>,
    /// The disk spool, for `/readyz` (the enqueuer writes and replays it).
    pub spool: Arc<Spool>,
    pub shutting_down: AtomicBool,
    /// The last request id handed out, shared by both listeners so ids never repeat.
    pub request_ids: Arc<AtomicU64>,
    /// Unix second of the last "events dropped" warning, so an outage logs once a second.
    last_drop_warning: AtomicU64,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: Arc<ArcSwap<Keyring>>,
        enqueuer: Enqueuer,
        queue: Queue,
        limiter: Arc<RateLimiter>,
        client_ip: ClientIp,
        allowlist: Allowlist,
        metrics: Arc<EdgeMetrics>,
        registry: Arc<Registry>,
        spool: Arc<Spool>,
    ) -> Self {
        Self {
            keys,
            enqueuer,
            queue,
            limiter,
            client_ip,
            allowlist,
            metrics,
            registry,
            spool,
            shutting_down: AtomicBool::new(false),
            request_ids: Arc::default(),
            last_drop_warning: AtomicU64::new(0),
        }
    }
}

/// Per-account destination allowlists, hosts matched on dot boundaries.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    by_account: std::collections::HashMap<String, Vec<String>>,
}

impl Allowlist {
    /// Hosts are normalised as URLs would serialise them (lowercase, punycode).
    pub fn new(config: &std::collections::BTreeMap<String, Vec<String>>) -> Self {
        let normalise = |h: &String| {
            url::Url::parse(&format!("http://{h}/"))
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| h.to_ascii_lowercase())
        };
        let by_account = config
            .iter()
            .map(|(account, hosts)| (account.clone(), hosts.iter().map(normalise).collect()))
            .collect();
        Self { by_account }
    }

    /// Whether `account` may redirect to `host`.
    pub fn allows(&self, account: &str, host: &str) -> bool {
        let Some(allowed) = self.by_account.get(account) else {
            return true;
        };
        allowed.iter().any(|a| {
            host == a
                || (host.len() > a.len()
                    && host.ends_with(a.as_str())
                    && host.as_bytes()[host.len() - a.len() - 1] == b'.')
        })
    }
}

const ALLOW_TRACKING: &str = "GET, HEAD";

/// Answers a request on the public listener.
pub async fn public(state: Arc<AppState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (route, token) = Route::public(req.uri().path());
    let result = match route {
        Route::Pixel | Route::Click if !is_get_or_head(req.method()) => {
            Err(EdgeError::MethodNotAllowed {
                allow: ALLOW_TRACKING,
            })
        }
        Route::Pixel => Ok(pixel(&state, token, &req).await),
        Route::Click => click(&state, token, &req).await,
        Route::Healthz | Route::Readyz if !is_get_or_head(req.method()) => {
            Err(EdgeError::MethodNotAllowed {
                allow: ALLOW_TRACKING,
            })
        }
        Route::Healthz => Ok(healthz()),
        // Boxed: the Redis ping's future is about 14 KB, and unboxed it would size (and so be
        // copied with) the future of every pixel and click, which needs well under 1 KB.
        Route::Readyz => Ok(Box::pin(readyz(&state)).await),
        Route::Test | Route::Metrics | Route::NotFound => {
            // Unknown paths count against the client's limit too: scanning is not free.
            let client = client_of(&state, &req);
            unless_limited(&state, state.limiter.check(client)).and(Err(EdgeError::NotFound))
        }
    };
    result.unwrap_or_else(EdgeError::into_response)
}

/// Answers a request on the admin listener.
pub async fn admin(state: Arc<AppState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let route = Route::admin(req.uri().path());
    if route != Route::NotFound && !is_get_or_head(req.method()) {
        return EdgeError::MethodNotAllowed {
            allow: ALLOW_TRACKING,
        }
        .into_response();
    }
    let result = match route {
        Route::Healthz => Ok(healthz()),
        Route::Readyz => Ok(readyz(&state).await),
        Route::Test => test(&state, req.uri().query().unwrap_or_default()).await,
        Route::Metrics => Ok(metrics(&state).await),
        Route::Pixel | Route::Click | Route::NotFound => Err(EdgeError::NotFound),
    };
    result.unwrap_or_else(EdgeError::into_response)
}

fn is_get_or_head(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

fn client_of<B>(state: &AppState, req: &Request<B>) -> IpAddr {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
    state.client_ip.resolve(peer, req.headers())
}

fn user_agent(headers: &HeaderMap) -> &str {
    let ua = headers
        .get(header::USER_AGENT)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let ua = &ua[..ua.len().min(MAX_USER_AGENT_LEN)];
    // Header values may carry any byte but control characters; keep what is valid UTF-8.
    match std::str::from_utf8(ua) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&ua[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// `GET /o/{token}.gif`: always the GIF; one `open` event when the token opens.
async fn pixel<B>(state: &AppState, token: &str, req: &Request<B>) -> Response<Body> {
    let client = client_of(state, req);
    let limit = state.limiter.check(client);
    let now = SystemTime::now();
    // A statement of its own, so the keyring's guard is released before the Redis wait.
    let opened = state.keys.load().open(token, Kind::Open, now);
    match opened {
        Ok(claims) => {
            let event = Event::born(claims, client, user_agent(req.headers()), now);
            record(state, event, limit.is_err()).await;
            gif()
        }
        Err(_) => {
            token_rejected(state, Route::Pixel);
            match unless_limited(state, limit) {
                Ok(()) => gif(),
                Err(limited) => limited.into_response(),
            }
        }
    }
}

/// `GET /c/{token}`: `302` to the sealed destination and one `click` event; `404` otherwise.
async fn click<B>(
    state: &AppState,
    token: &str,
    req: &Request<B>,
) -> Result<Response<Body>, EdgeError> {
    let client = client_of(state, req);
    let limit = state.limiter.check(client);
    let now = SystemTime::now();
    let opened = state.keys.load().open(token, Kind::Click, now);
    let destination = match &opened {
        Ok(claims) => match &claims.target {
            Target::Click(dest) if state.allowlist.allows(&claims.ids.account, dest.host()) => {
                Some(dest.clone())
            }
            Target::Click(_) | Target::Open => None,
        },
        Err(_) => None,
    };
    let (Some(destination), Ok(claims)) = (destination, opened) else {
        token_rejected(state, Route::Click);
        return Err(unless_limited(state, limit)
            .err()
            .unwrap_or(EdgeError::NotFound));
    };
    // The destination was serialised by the `url` crate and re-checked on opening: it is a
    // valid header value.
    let location = HeaderValue::from_str(destination.as_str()).map_err(|_| EdgeError::NotFound)?;
    let event = Event::born(claims, client, user_agent(req.headers()), now);
    record(state, event, limit.is_err()).await;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// For a request that records nothing: `Ok` within its client's limit, else the `429` (counted).
fn unless_limited(
    state: &AppState,
    limit: Result<(), std::time::Duration>,
) -> Result<(), EdgeError> {
    limit.map_err(|retry_after| {
        state
            .metrics
            .rate_limited
            .get_or_create(&ReasonLabel { reason: "rejected" })
            .inc();
        EdgeError::RateLimited { retry_after }
    })
}

fn token_rejected(state: &AppState, route: Route) {
    state
        .metrics
        .tokens_rejected
        .get_or_create(&RouteLabel {
            route: route.as_str(),
        })
        .inc();
}

/// Hands the event to the enqueuer and waits until it is stored (in Redis, or in the spool after
/// `queue.ack_timeout`). A failure (the spool refused it too) is counted and logged, never shown
/// to the client.
async fn record(state: &AppState, mut event: Event, limited: bool) {
    event.limited = limited;
    let lane = if limited {
        state
            .metrics
            .rate_limited
            .get_or_create(&ReasonLabel { reason: "overflow" })
            .inc();
        Lane::Overflow
    } else {
        Lane::Main
    };
    // Serialised before the wait, so only its id is held while Redis answers.
    let (id, json) = (event.id, event.to_json());
    drop(event);
    if let Err(error) = state.enqueuer.enqueue_raw(json, lane).await {
        let reason = error.reason();
        state.metrics.dropped(reason);
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if state.last_drop_warning.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(%error, reason, %id, "event not stored");
        }
    }
}

fn gif() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(GIF)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    response
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /healthz`: the process serves; Redis is not asked.
fn healthz() -> Response<Body> {
    text(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"ok"),
    )
}

/// `GET /readyz`: `200` when Redis answers, the spool is within `spool.max_bytes` and the edge
/// is not shutting down, else `503`; the body says which, with the spool's size either way.
async fn readyz(state: &AppState) -> Response<Body> {
    const JSON: &str = "application/json";
    let spool = state.spool.stats();
    let (bytes, segments) = (spool.bytes(), spool.segments());
    let unavailable = |reason: &str, redis: &str| {
        let body = format!(
            r#"{{"status":"unavailable","reason":"{reason}","redis":"{redis}","spool_bytes":{bytes},"spool_segments":{segments}}}"#
        );
        text(StatusCode::SERVICE_UNAVAILABLE, JSON, body)
    };
    if state.shutting_down.load(Ordering::Relaxed) {
        return unavailable("shutting_down", "unknown");
    }
    if let Err(e) = state.queue.ping().await {
        return unavailable("redis", e.kind());
    }
    if state.spool.is_full() {
        return unavailable("spool_full", "ok");
    }
    let body = format!(
        r#"{{"status":"ready","redis":"ok","spool_bytes":{bytes},"spool_segments":{segments}}}"#
    );
    text(StatusCode::OK, JSON, body)
}

/// `GET /test?value=V`: a round trip of V through Redis.
async fn test(state: &AppState, query: &str) -> Result<Response<Body>, EdgeError> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("value="))
        .filter(|v| {
            (1..=256).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .ok_or(EdgeError::BadRequest(
            "value must be 1 to 256 of A-Z a-z 0-9 . _ -",
        ))?;
    match state.queue.round_trip(value).await {
        Ok(back) => Ok(text(StatusCode::OK, "text/plain; charset=utf-8", back)),
        Err(error) => {
            tracing::warn!(%error, "test round trip failed");
            Err(EdgeError::RedisUnavailable)
        }
    }
}

/// `GET /metrics`: Prometheus text, with the queue's gauges read fresh from Redis.
async fn metrics(state: &AppState) -> Response<Body> {
    if let Err(error) = state.queue.observe().await {
        tracing::debug!(%error, "queue gauges not refreshed");
    }
    let tracked = state.limiter.tracked();
    state
        .metrics
        .rate_limiter_clients
        .set(i64::try_from(tracked).unwrap_or(i64::MAX));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &state.registry);
    text(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        out,
    )
}
