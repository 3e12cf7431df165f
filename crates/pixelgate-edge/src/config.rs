//! `[server]`, `[rate_limit]`, `[tls]` and `[click]`: how the edge listens and answers.
//!
//! Each field's doc comment (unit and default) is the reference copied into
//! `docs/configuration.md`. [`EdgeConfig::validate`] checks what single values cannot and names
//! the key.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::{NonZeroU32, NonZeroUsize},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use pixelgate_core::{
    BadValue, Invalid,
    config::{at_most, within},
    deserialize_from_str,
};
use serde::Deserialize;

/// The edge's part of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub server: ServerConfig,
    pub rate_limit: RateLimitConfig,
    pub tls: TlsConfig,
    pub click: ClickConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener for pixels and clicks. Default `127.0.0.1:8080`. Env `PIXELGATE_LISTEN`.
    pub listen: SocketAddr,
    /// Admin listener for `/healthz`, `/readyz`, `/test` and `/metrics`; keep it private.
    /// Default `127.0.0.1:9090`. Env `PIXELGATE_ADMIN_LISTEN`.
    pub admin_listen: SocketAddr,
    /// Base of every signed URL: `http` or `https`, no query or fragment; a path prefix is kept.
    /// Default `http://127.0.0.1:8080`. Env `PIXELGATE_PUBLIC_URL`.
    pub public_url: PublicUrl,
    /// Longest time a client may take to send a request's headers; it also closes idle
    /// keep-alive connections (HTTP/1) and HTTP/2 connections with no request in flight.
    /// Default `5s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time for a whole request, headers read to response sent. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections on the public listener; more are closed at once. Default `10000`.
    pub max_connections: NonZeroUsize,
    /// Requests being answered at once; past it the edge sheds load with `503` and
    /// `Retry-After`. Default `4096`.
    pub max_in_flight: NonZeroUsize,
    /// Longest request target (path and query) in bytes; longer gets `414`. Default `8192`.
    pub max_uri_bytes: NonZeroUsize,
    /// Most request headers; more gets `431`. Default `64`.
    pub max_headers: NonZeroUsize,
    /// Most bytes of request headers, names and values; more gets `431`. Default `16384`.
    pub max_header_bytes: NonZeroUsize,
    /// HTTP/2 streams per connection. Default `100`.
    pub max_concurrent_streams: NonZeroU32,
    /// After `SIGTERM`, how long in-flight requests may take before their connections are
    /// closed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Accept loops on the public listener, each its own `SO_REUSEPORT` socket so the kernel
    /// spreads connections; `0` means one per CPU. Default `0`.
    pub accept_loops: usize,
    /// One `tracing` line per request (target `pixelgate::access`, control characters
    /// escaped). Default `false`.
    pub access_log: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let nz = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            listen: SocketAddr::new(loopback, 8080),
            admin_listen: SocketAddr::new(loopback, 9090),
            public_url: PublicUrl("http://127.0.0.1:8080".into()),
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: nz(10_000),
            max_in_flight: nz(4096),
            max_uri_bytes: nz(8192),
            max_headers: nz(64),
            max_header_bytes: nz(16_384),
            max_concurrent_streams: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            shutdown_grace: Duration::from_secs(10),
            accept_loops: 0,
            access_log: false,
        }
    }
}

/// `[rate_limit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether clients are rate-limited at all. Default `true`.
    pub enabled: bool,
    /// Sustained requests per second per client (GCRA). Default `20`.
    pub per_second: NonZeroU32,
    /// Requests a client may send at once above the rate. Default `100`.
    pub burst: NonZeroU32,
    /// Most clients tracked one by one. Past it clients are keyed by network (/24, /48), past
    /// twice it all share one key per address family, until idle clients are forgotten (every
    /// minute, and within a second while crowded): the table holds about twice this at most.
    /// Default `200000` (about 70 bytes each).
    pub max_clients: NonZeroUsize,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed, as CIDRs
    /// (`["10.0.0.0/8"]`). Default: none, the socket's peer is the client.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            max_clients: NonZeroUsize::new(200_000).unwrap_or(NonZeroUsize::MIN),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[tls]`: HTTPS on the public listener when any certificate is configured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `[[tls.certificates]]`: each with `names`, `cert` and `key`. The first is also served
    /// to clients that send no SNI name. Default: none, plain HTTP.
    pub certificates: Vec<CertificateConfig>,
}

/// One certificate and the SNI names it is chosen for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Host names (SNI) this certificate answers, e.g. `["t.acme.example"]`.
    pub names: Vec<String>,
    /// PEM file: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[click]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickConfig {
    /// `[click.allowed_hosts]`: per account, the destination hosts its links may redirect to,
    /// matched on dot boundaries (`example.com` allows `shop.example.com`, not
    /// `badexample.com`). An account not listed may redirect anywhere. Default: none.
    pub allowed_hosts: BTreeMap<String, Vec<String>>,
}

impl EdgeConfig {
    /// Checks what single values cannot check; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let s = &self.server;
        // Port 0 asks the kernel for a free port, so two of them never collide.
        if s.listen == s.admin_listen && s.listen.port() != 0 {
            return Err(Invalid::new(
                "server.admin_listen",
                format!("must differ from server.listen ({})", s.listen),
            ));
        }
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        within(
            "server.header_read_timeout",
            s.header_read_timeout,
            ms,
            hour,
        )?;
        within(
            "server.request_timeout",
            s.request_timeout,
            Duration::from_millis(100),
            hour,
        )?;
        within("server.shutdown_grace", s.shutdown_grace, ms, hour)?;
        for (key, n, max) in [
            ("server.max_connections", s.max_connections.get(), 1_000_000),
            ("server.max_in_flight", s.max_in_flight.get(), 1_000_000),
            ("server.max_uri_bytes", s.max_uri_bytes.get(), 1 << 20),
            ("server.max_headers", s.max_headers.get(), 1024),
            ("server.max_header_bytes", s.max_header_bytes.get(), 1 << 20),
            ("server.accept_loops", s.accept_loops, 64),
            (
                "rate_limit.max_clients",
                self.rate_limit.max_clients.get(),
                100_000_000,
            ),
        ] {
            at_most(key, n as u64, max)?;
        }
        at_most(
            "server.max_concurrent_streams",
            u64::from(s.max_concurrent_streams.get()),
            10_000,
        )?;
        if self.rate_limit.burst < self.rate_limit.per_second {
            return Err(Invalid::new(
                "rate_limit.burst",
                "must be at least rate_limit.per_second",
            ));
        }
        for (i, c) in self.tls.certificates.iter().enumerate() {
            if c.names.is_empty()
                || c.names
                    .iter()
                    .any(|n| n.is_empty() || n.contains(['/', ' ']))
            {
                return Err(Invalid::new(
                    "tls.certificates",
                    format!(
                        "certificate {} needs one or more host names in `names`",
                        i + 1
                    ),
                ));
            }
        }
        for (account, hosts) in &self.click.allowed_hosts {
            if hosts
                .iter()
                .any(|h| h.is_empty() || h.contains(['/', ':', ' ', '@']))
            {
                return Err(Invalid::new(
                    "click.allowed_hosts",
                    format!("{account}: a host is a name like example.com, without scheme or port"),
                ));
            }
        }
        Ok(())
    }
}

/// The base URL that signed links start with (no trailing slash kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PublicUrl {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(BadValue::Rule("must be an http or https URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(BadValue::Rule("must have no query, fragment or user name"));
        }
        Ok(Self(String::from(url).trim_end_matches('/').to_owned()))
    }
}
deserialize_from_str!(PublicUrl);
