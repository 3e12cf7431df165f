//! Listening, serving connections, and stopping without losing an answered event.
//!
//! Each listener has accept loops (the public one several, on `SO_REUSEPORT` sockets). A
//! connection is served by hyper-util's auto builder with a timer, so header-read timeouts
//! apply; the protocol is fixed up front (ALPN on TLS, the HTTP/2 preface on plain TCP, read
//! under the same deadline) so no client can hold a connection open before its first request.
//! The same timeout ends an HTTP/2 connection with no request in flight, as hyper ends an idle
//! HTTP/1 one: answering pings does not keep a connection.
//! On shutdown the loops stop accepting, connections finish their requests (at most
//! `server.shutdown_grace`), and only then is the enqueuer dropped and flushed.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::Ordering},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tower::ServiceExt as _;

use crate::{
    config::ServerConfig,
    routes::{AppState, Peer},
    stack::HttpService,
    tls::SharedTls,
};

/// The bound sockets, before the runtime serves them.
#[derive(Debug)]
pub struct Listeners {
    /// One or more sockets on the same public address (`SO_REUSEPORT`).
    pub public: Vec<std::net::TcpListener>,
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds `server.listen` (once per accept loop) and `server.admin_listen`.
    pub fn bind(config: &ServerConfig) -> io::Result<Self> {
        let loops = match config.accept_loops {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let first = bind(config.listen, loops > 1)?;
        // With port 0 the first socket picks the port; the others join it.
        let addr = first.local_addr()?;
        let mut public = vec![first];
        for _ in 1..loops {
            public.push(bind(addr, true)?);
        }
        let admin = bind(config.admin_listen, false)?;
        Ok(Self { public, admin })
    }

    pub fn public_addr(&self) -> io::Result<SocketAddr> {
        self.public[0].local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// How connections are served; shared by every connection of a listener.
pub(crate) struct ConnSettings {
    pub(crate) service: HttpService,
    pub(crate) tls: Option<SharedTls>,
    pub(crate) h1: auto::Builder<TokioExecutor>,
    pub(crate) h2: auto::Builder<TokioExecutor>,
    pub(crate) header_read_timeout: Duration,
    /// Present on the public listener: connections counted and capped.
    pub(crate) cap: Option<Arc<Semaphore>>,
}

impl ConnSettings {
    pub(crate) fn new(
        service: HttpService,
        tls: Option<SharedTls>,
        config: &ServerConfig,
        capped: bool,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true)
            .max_headers(config.max_headers.get())
            .max_buf_size(
                (config.max_header_bytes.get() + config.max_uri_bytes.get() + 1024).max(8192),
            );
        let header_list = u32::try_from(config.max_header_bytes.get()).unwrap_or(u32::MAX);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams.get())
            .max_header_list_size(header_list)
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self {
            service,
            tls,
            h1: builder.clone().http1_only(),
            h2: builder.http2_only(),
            header_read_timeout: config.header_read_timeout,
            cap: capped.then(|| Arc::new(Semaphore::new(config.max_connections.get()))),
        }
    }
}

/// Accepts until `stop` turns true, then lets connections finish for `grace` and closes the
/// rest. Returns when every connection task has ended.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    settings: Arc<ConnSettings>,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let permit = match &settings.cap {
                        Some(cap) => match cap.clone().try_acquire_owned() {
                            Ok(permit) => Some(permit),
                            Err(_) => {
                                state.metrics.connections_refused.inc();
                                continue; // dropping the stream closes it
                            }
                        },
                        None => None,
                    };
                    let _ = stream.set_nodelay(true);
                    let (settings, state, stop) = (settings.clone(), state.clone(), stop.clone());
                    conns.spawn(async move {
                        let open = permit.is_some().then(|| OpenGuard::new(&state));
                        serve(stream, peer, &settings, stop).await;
                        drop((open, permit));
                    });
                }
                Err(error) => {
                    // Out of file descriptors or similar: say so, and do not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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

/// Counts an open public connection for as long as it lives.
struct OpenGuard(Arc<AppState>);

impl OpenGuard {
    fn new(state: &Arc<AppState>) -> Self {
        state.metrics.connections_open.inc();
        Self(state.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.metrics.connections_open.dec();
    }
}

/// Serves one connection: TLS handshake or protocol detection under the header deadline,
/// then HTTP until the client leaves, a timeout closes it, or shutdown ends it gracefully.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    settings: &ConnSettings,
    stop: watch::Receiver<bool>,
) {
    let deadline = settings.header_read_timeout;
    match &settings.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
            let Ok(Ok(stream)) = tokio::time::timeout(deadline, acceptor.accept(stream)).await
            else {
                return;
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(stream, peer, settings, h2, stop).await;
        }
        None => {
            let Ok(Ok(h2)) = tokio::time::timeout(deadline, sniff_h2(&stream)).await else {
                return;
            };
            serve_http(stream, peer, settings, h2, stop).await;
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

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    settings: &ConnSettings,
    h2: bool,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = Counted {
        inner: settings.service.clone(),
        activity: activity.clone(),
    }
    .map_request(move |mut req: Request| {
        req.extensions_mut().insert(Peer(peer));
        req
    });
    let builder = if h2 { &settings.h2 } else { &settings.h1 };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle_limit = settings.header_read_timeout;
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
        // hyper closes idle HTTP/1 connections itself (the header read timeout); HTTP/2 gets
        // GOAWAY, and a client that does not finish the goodbye in the same time is dropped.
        () = activity.idle_for(idle_limit), if h2 => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(idle_limit, conn).await;
        }
    }
}

/// How many requests a connection has in flight, and since when it has had none.
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

/// A connection's service, counting its requests in flight.
#[derive(Clone)]
struct Counted {
    inner: HttpService,
    activity: Arc<Activity>,
}

impl tower::Service<Request> for Counted {
    type Response = <HttpService as tower::Service<Request>>::Response;
    type Error = <HttpService as tower::Service<Request>>::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let busy = Busy::new(&self.activity);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            drop(busy);
            response
        })
    }
}

type Request = http::Request<hyper::body::Incoming>;

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

/// Completes once shutdown has begun.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Marks the edge as shutting down (`/readyz` answers `503`).
pub(crate) fn begin_shutdown(state: &AppState) {
    state.shutting_down.store(true, Ordering::Relaxed);
}
