//! Shared set-up for the edge's end-to-end tests: a [`TestServer`] that opens and runs the edge
//! through `Edge::open` and `Edge::run`, as `pixelgate serve` does, on `127.0.0.1` port 0
//! against a harness Redis, and the clients that talk to it (hyper-util for well-formed
//! requests, raw TCP for malformed ones, `h2` for HTTP/2).
//!
//! The server shuts down on drop, so a failing test never leaves one serving; a test that wants
//! to see the shutdown itself calls [`TestServer::shutdown`], which returns `run`'s result.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use pixelgate_core::{Claims, Destination, Event, Ids, KeyId, Keyring, Secret};
use pixelgate_edge::{Edge, EdgeConfig, Settings};
use pixelgate_queue::QueueConfig;
use pixelgate_spool::SpoolConfig;
use pixelgate_tests::RedisServer;
#[allow(unused_imports)] // not every suite uses all
pub use pixelgate_tests::{eventually, http::Reply, sample};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

/// How long a test waits for anything that should happen at once (an answer, a close).
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The main queue and the overflow key, as the product names them by default.
pub const EVENTS: &str = "pixelgate:events";
pub const OVERFLOW: &str = "pixelgate:overflow";

/// `GET`-able HTTP client without connection reuse: every request on a fresh connection, so a
/// server closing idle connections (short header timeouts, shutdown) can never race a request.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// The edge, serving in a background task until shut down or dropped.
#[derive(Debug)]
pub struct TestServer {
    public: SocketAddr,
    admin: SocketAddr,
    keys: Arc<ArcSwap<Keyring>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
    client: HttpClient,
    /// The spool's directory, removed when the server is dropped.
    spool_dir: tempfile::TempDir,
}

/// The configuration of a server about to start; tweak it with the closures.
#[derive(Debug)]
pub struct Builder {
    /// Everything but the spool's directory, which is always a fresh temporary one.
    settings: Settings,
}

impl Builder {
    /// Changes the edge's configuration (`[server]`, `[rate_limit]`, `[tls]`, `[click]`).
    pub fn edge(mut self, f: impl FnOnce(&mut EdgeConfig)) -> Self {
        f(&mut self.settings.edge);
        self
    }

    /// Changes `[spool]` (but for `dir`).
    pub fn spool(mut self, f: impl FnOnce(&mut SpoolConfig)) -> Self {
        f(&mut self.settings.spool);
        self
    }

    /// Changes `[queue]` (e.g. `ack_timeout`).
    pub fn queue(mut self, f: impl FnOnce(&mut QueueConfig)) -> Self {
        f(&mut self.settings.queue);
        self
    }

    /// Opens the edge (binds, opens the spool, builds the queue) and starts it running. The
    /// sockets listen before this returns, so requests can be sent at once (they wait in the
    /// backlog until the accept loops run).
    pub async fn start(self) -> TestServer {
        let spool_dir = tempfile::tempdir().expect("a spool directory");
        let mut settings = self.settings;
        settings.spool.dir = spool_dir.path().to_owned();
        settings.validate().expect("a valid test configuration");
        let keyring = Keyring::new([(KeyId(1), Secret::generate().unwrap())]).unwrap();
        let edge = Edge::open(&settings, keyring).expect("the edge opens");
        let public = edge.public_addr().unwrap();
        let admin = edge.admin_addr().unwrap();
        let keys = edge.keys();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender (the handle dropped) stops the server too.
            let _ = stopped.await;
        };
        let task = tokio::spawn(edge.run(shutdown));
        TestServer {
            public,
            admin,
            keys,
            stop: Some(stop),
            task: Some(task),
            client: http_client(),
            spool_dir,
        }
    }
}

impl TestServer {
    /// A server with the product's defaults but for the listen addresses and
    /// `queue.ack_timeout`, on `redis`.
    pub fn builder(redis: &RedisServer) -> Builder {
        let mut edge = EdgeConfig::default();
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        edge.server.listen = any_port;
        edge.server.admin_listen = any_port;
        let settings = Settings {
            edge,
            redis: redis.config(),
            // Generous, so a loaded test machine never turns a slow first connection into a
            // dropped event; the tests of Redis failures set their own.
            queue: QueueConfig {
                ack_timeout: Duration::from_secs(5),
                ..QueueConfig::default()
            },
            // Quick to notice Redis is back, so replay tests finish soon.
            spool: SpoolConfig {
                retry_interval: Duration::from_millis(100),
                ..SpoolConfig::default()
            },
        };
        Builder { settings }
    }

    pub async fn start(redis: &RedisServer) -> Self {
        Self::builder(redis).start().await
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The keyring the server opens tokens with.
    pub fn keys(&self) -> Arc<Keyring> {
        self.keys.load_full()
    }

    /// Swaps in other signing keys, as a reload (`SIGHUP`) would.
    pub fn use_keys(&self, keys: Keyring) {
        self.keys.store(Arc::new(keys));
    }

    /// `/o/{token}.gif` for `ids`.
    pub fn pixel_path(&self, ids: &Ids) -> String {
        format!("/o/{}.gif", self.keys().seal(&Claims::open(ids.clone())))
    }

    /// `/c/{token}` for `ids` and the destination `url`.
    pub fn click_path(&self, ids: &Ids, url: &str) -> String {
        let claims = Claims::click(ids.clone(), Destination::parse(url).unwrap());
        format!("/c/{}", self.keys().seal(&claims))
    }

    /// `GET` on the public listener.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, &self.public_url(), path, &[]).await
    }

    /// `GET` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(Method::GET, &self.admin_url(), path, &[]).await
    }

    /// Any request with extra headers; `base` is [`Self::public_url`] or [`Self::admin_url`].
    pub async fn send(
        &self,
        method: Method,
        base: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        send(&self.client, method, &format!("{base}{path}"), headers)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The admin listener's Prometheus text.
    pub async fn metrics(&self) -> String {
        let reply = self.admin_get("/metrics").await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text()
    }

    /// Asks `run` to stop (idempotent); [`Self::shutdown`] waits for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and returns `run`'s result once it has flushed everything.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.begin_shutdown();
        let task = self.task.take().expect("run task");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Sends one request with `client` and reads the whole answer.
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let response = tokio::time::timeout(PATIENCE, client.request(req)).await??;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await??
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Writes `request` as it is on a new TCP connection and reads one answer.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream).await
}

/// Reads one HTTP/1.1 answer from `io` (within [`PATIENCE`]).
pub async fn read_reply<S: AsyncRead + Unpin>(io: &mut S) -> Reply {
    tokio::time::timeout(PATIENCE, pixelgate_tests::http::read(io, &mut Vec::new()))
        .await
        .expect("an answer in time")
        .expect("a whole answer")
}

/// Everything the peer sends until it closes the connection (within [`PATIENCE`]).
pub async fn read_until_closed<S: AsyncRead + Unpin>(io: &mut S) -> Vec<u8> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 4096];
        loop {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection is still open after {PATIENCE:?}"
    );
    bytes
}

/// Reads until the peer closes; `true` if it closed (EOF or reset) within `limit`, `false` if
/// it was still open then. Whatever the peer sent before closing is ignored.
pub async fn closed_within<S: AsyncRead + Unpin>(io: &mut S, limit: Duration) -> bool {
    let drain = async {
        let mut chunk = [0u8; 4096];
        loop {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}

/// Ids for a test event; `message` tells events apart.
pub fn ids(message: &str) -> Ids {
    Ids::new("acme", "spring-sale", message, "r-42").unwrap()
}

/// The raw JSON elements of a Redis list, read with the harness's own client.
pub fn list(redis: &RedisServer, key: &str) -> Vec<String> {
    redis.call(&["LRANGE", key, "0", "-1"]).texts()
}

/// The events of a Redis list, as JSON values (to see exactly which fields are there).
pub fn events(redis: &RedisServer, key: &str) -> Vec<serde_json::Value> {
    list(redis, key)
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// The message ids of the events in a Redis list, in order.
pub fn messages(redis: &RedisServer, key: &str) -> Vec<String> {
    list(redis, key)
        .iter()
        .map(|e| Event::from_json(e.as_bytes()).unwrap().message)
        .collect()
}

/// The sum of every sample of a metric family (`name{...} value` lines).
pub fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Seconds since the Unix epoch, for comparing event times.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Reads one whole HTTP/2 answer from `send`, for `uri` (absolute).
pub async fn h2_get(send: &mut h2::client::SendRequest<Bytes>, uri: &str) -> Reply {
    let request = Request::get(uri).body(()).unwrap();
    let mut send = send.clone().ready().await.expect("h2 stream available");
    let (response, _) = send.send_request(request, true).expect("h2 request sent");
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an h2 answer in time")
        .expect("an h2 answer");
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 body");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: data.into(),
    }
}

/// An HTTP/2 client over `io` (prior knowledge, or TLS with ALPN `h2`); its connection is
/// driven by a task of its own.
pub async fn h2_client<S>(io: S) -> h2::client::SendRequest<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}
