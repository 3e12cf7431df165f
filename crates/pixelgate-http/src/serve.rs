//! Listening and serving connections, and stopping without cutting an answer short.
//!
//! [`serve`] accepts until told to stop: past a listener's connection cap a new connection is
//! closed at once, and a failing `accept` (out of file descriptors) backs off instead of
//! spinning. Each connection is served by hyper-util's auto builder with a timer, so header-read
//! timeouts apply; its protocol is fixed up front (ALPN on TLS, the HTTP/2 preface on plain TCP,
//! read under the same deadline) so no client holds a connection before its first request. The
//! same deadline ends an HTTP/2 connection with no request in flight, as hyper ends an idle
//! HTTP/1 one. On stop, connections finish their requests for at most the grace period.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::Body;

/// TLS settings, swapped whole on reload: new connections get the new ones.
pub type SharedTls = Arc<ArcSwap<rustls::ServerConfig>>;

/// How many headers hyper's HTTP/1 parser takes when it is told no limit.
const HYPER_MAX_HEADERS: usize = 100;

/// What hyper enforces on each connection of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Longest time to send a request's headers; also closes idle connections.
    pub header_read_timeout: Duration,
    /// Most request headers hyper parses, when above its own 100 (a stack that wants fewer
    /// counts them itself, as the edge's limits step does).
    pub max_headers: usize,
    /// Most bytes of request headers (HTTP/2: the header list).
    pub max_header_bytes: usize,
    /// Longest request target; with `max_header_bytes` it sizes HTTP/1's read buffer.
    pub max_uri_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_headers: 64,
            max_header_bytes: 16_384,
            max_uri_bytes: 8192,
            max_concurrent_streams: 100,
        }
    }
}

/// How a listener's connections are served; built once, shared by its accept loops.
pub struct Connections {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    tls: Option<SharedTls>,
    cap: Option<Cap>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("tls", &self.tls.is_some())
            .field("capped", &self.cap.is_some())
            .finish()
    }
}

/// A cap on open connections, and the metrics it keeps.
struct Cap {
    slots: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
}

impl Connections {
    /// Plain HTTP/1.1 and HTTP/2 (by prior knowledge) under `limits`, uncapped.
    pub fn new(limits: &ConnLimits) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            // A client may send its last request and shut its side down while it waits: the
            // answer still goes out (hyper would close the connection on that EOF otherwise).
            .half_close(true)
            .max_buf_size((limits.max_header_bytes + limits.max_uri_bytes + 1024).max(8192));
        // Told a limit, hyper fills an array that long on every parse; left alone it parses
        // into an uninitialised one of 100. The stack counts headers itself and answers `431`
        // past `server.max_headers`, so hyper needs telling only of a limit above its own.
        if limits.max_headers > HYPER_MAX_HEADERS {
            builder.http1().max_headers(limits.max_headers);
        }
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self {
            h1: builder.clone().http1_only(),
            h2: builder.http2_only(),
            header_read_timeout: limits.header_read_timeout,
            tls: None,
            cap: None,
        }
    }

    /// At most `max` connections open at once; a connection past it is closed as soon as it is
    /// accepted (counted in `refused`), and `open` follows how many are open.
    pub fn capped(mut self, max: usize, open: Gauge, refused: Counter) -> Self {
        self.cap = Some(Cap {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            open,
            refused,
        });
        self
    }

    /// TLS on every connection when `tls` is given; ALPN chooses HTTP/2 or HTTP/1.1.
    pub fn tls(mut self, tls: Option<SharedTls>) -> Self {
        self.tls = tls;
        self
    }
}

/// A listener's whole stack: how its connections are served, and the service that answers the
/// requests of each (made per connection, from the client's address).
pub struct Stack<M> {
    pub connections: Connections,
    pub requests: M,
}

impl<M> std::fmt::Debug for Stack<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// The request service of one connection.
pub trait MakeRequests: Send + Sync + 'static {
    type Service: tower::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static;

    fn for_peer(&self, peer: SocketAddr) -> Self::Service;
}

impl<F, S> MakeRequests for F
where
    F: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: tower::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    type Service = S;

    fn for_peer(&self, peer: SocketAddr) -> S {
        self(peer)
    }
}

/// Accepts on `listener` until `stop` turns true, then lets connections finish for `grace` and
/// closes the rest. Returns when every connection task has ended.
pub async fn serve<M: MakeRequests>(
    listener: TcpListener,
    stack: Arc<Stack<M>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut conns = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    let Some(open) = stack.connections.admit() else {
                        continue; // dropping the stream closes it
                    };
                    let _ = stream.set_nodelay(true);
                    let (stack, stop) = (stack.clone(), stop.clone());
                    conns.spawn(async move {
                        connection(stream, peer, &stack, stop).await;
                        drop(open);
                    });
                }
                Err(error) => {
                    // Out of file descriptors or similar: say so, and wait before trying again.
                    let wait = backoff.next();
                    tracing::warn!(%error, retry_in = ?wait, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stopped(&mut stop) => break,
                    }
                }
            },
            () = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "shutdown grace over; closing the remaining connections"
        );
        conns.shutdown().await;
    }
}

/// Doubling waits after failed accepts, 10 ms to 1 s.
#[derive(Default)]
struct AcceptBackoff(Option<Duration>);

impl AcceptBackoff {
    fn next(&mut self) -> Duration {
        let wait = self.0.map_or(Duration::from_millis(10), |d| {
            (d * 2).min(Duration::from_secs(1))
        });
        self.0 = Some(wait);
        wait
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}

impl Connections {
    /// A slot for a new connection, held while it lives; `None` when the cap is reached.
    fn admit(&self) -> Option<Admitted> {
        let Some(cap) = &self.cap else {
            return Some(Admitted(None));
        };
        match cap.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                cap.open.inc();
                Some(Admitted(Some((permit, cap.open.clone()))))
            }
            Err(_) => {
                cap.refused.inc();
                None
            }
        }
    }
}

/// A connection counted against the cap for as long as it lives.
struct Admitted(Option<(tokio::sync::OwnedSemaphorePermit, Gauge)>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((_, open)) = &self.0 {
            open.dec();
        }
    }
}

/// Serves one connection: TLS handshake or protocol detection under the header deadline, then
/// HTTP until the client leaves, a timeout closes it, or shutdown ends it gracefully.
async fn connection<M: MakeRequests>(
    stream: TcpStream,
    peer: SocketAddr,
    stack: &Stack<M>,
    stop: watch::Receiver<bool>,
) {
    let conns = &stack.connections;
    let deadline = conns.header_read_timeout;
    match &conns.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
            let Ok(Ok(stream)) = tokio::time::timeout(deadline, acceptor.accept(stream)).await
            else {
                return;
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            http(stream, peer, stack, h2, stop).await;
        }
        None => {
            let Ok(Ok(h2)) = tokio::time::timeout(deadline, sniff_h2(&stream)).await else {
                return;
            };
            http(stream, peer, stack, h2, stop).await;
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain-text client speaks HTTP/2 with prior knowledge: peeks (without consuming)
/// until its first bytes match or leave the preface.
async fn sniff_h2(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        stream.readable().await?;
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait a moment for the rest (peek does not consume, so `readable`
        // would answer at once).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn http<I, M>(
    io: I,
    peer: SocketAddr,
    stack: &Stack<M>,
    h2: bool,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    M: MakeRequests,
{
    let conns = &stack.connections;
    let idle_limit = conns.header_read_timeout;
    // hyper closes idle HTTP/1 connections itself (the header read timeout). HTTP/2 counts its
    // requests in flight, so a connection with none for the header deadline gets GOAWAY, and a
    // client that does not finish the goodbye in the same time is dropped.
    let activity = h2.then(|| Arc::new(Activity::new()));
    let service = Counted {
        inner: stack.requests.for_peer(peer),
        activity: activity.clone(),
    };
    let builder = if h2 { &conns.h2 } else { &conns.h1 };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle = async {
        match &activity {
            Some(activity) => activity.idle_for(idle_limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        () = idle => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(idle_limit, conn).await;
        }
    }
}

/// How many requests an HTTP/2 connection has in flight, and since when it has had none.
struct Activity(Mutex<Quiet>);

struct Quiet {
    in_flight: usize,
    since: tokio::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self(Mutex::new(Quiet {
            in_flight: 0,
            since: tokio::time::Instant::now(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Quiet> {
        // Nothing panics while holding it; a poisoned lock still holds good counts.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let (busy, quiet_until) = {
                let quiet = self.lock();
                (quiet.in_flight > 0, quiet.since + limit)
            };
            if busy {
                tokio::time::sleep(limit).await;
            } else if tokio::time::Instant::now() < quiet_until {
                tokio::time::sleep_until(quiet_until).await;
            } else {
                return;
            }
        }
    }
}

/// A connection's service; on HTTP/2 it counts the requests in flight.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    activity: Option<Arc<Activity>>,
}

impl<S> tower::Service<Request<Incoming>> for Counted<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        CountedFuture {
            busy: self.activity.as_ref().map(Busy::new),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, and its place among the requests in flight until it is ready (or
    /// dropped): no box, and no lock at all on HTTP/1.
    struct CountedFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        this.busy.take();
        std::task::Poll::Ready(answer)
    }
}

/// One request in flight, from the service call to its response (or its cancellation).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.lock().in_flight += 1;
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut quiet = self.0.lock();
        quiet.in_flight -= 1;
        quiet.since = tokio::time::Instant::now();
    }
}

/// Completes once stop has been asked for (or its sender is gone, which means the same).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_to_a_second_and_reset() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}
