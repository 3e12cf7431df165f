//! Configuration: TOML into typed structs, then environment, then flags.
//!
//! Precedence is built-in defaults < file < environment < flags. Every key is a typed field whose
//! doc comment (unit and default) is the reference copied into `docs/configuration.md`. Values
//! are checked as they are read, so an error names the key (or variable, or flag) and why.
//! The environment is read once, at start, through [`Environment`].

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use pixelgate_core::{Invalid, deserialize_from_str};
pub use pixelgate_drain::config::{DrainConfig, SinkUrl};
pub use pixelgate_edge::config::{
    ClickConfig, EdgeConfig, PublicUrl, RateLimitConfig, ServerConfig, TlsConfig,
};
pub use pixelgate_queue::config::{QueueConfig, QueueMode, RedisConfig, RedisKey, RedisUrl};
pub use pixelgate_spool::SpoolConfig;
use serde::Deserialize;

/// Where the configuration file is looked for when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pixelgate/pixelgate.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: listeners, the public URL, timeouts and limits.
    pub server: ServerConfig,
    /// `[rate_limit]`: per-client limits and trusted proxies.
    pub rate_limit: RateLimitConfig,
    /// `[tls]`: certificates by SNI name.
    pub tls: TlsConfig,
    /// `[click]`: per-account destination allowlists.
    pub click: ClickConfig,
    /// `[signing]`: token keys and link lifetime.
    pub signing: SigningConfig,
    /// `[redis]`: where events are queued.
    pub redis: RedisConfig,
    /// `[queue]`: the Redis keys events are written to.
    pub queue: QueueConfig,
    /// `[spool]`: where the edge keeps events Redis did not take in time.
    pub spool: SpoolConfig,
    /// `[drain]`: where the drain worker writes.
    pub drain: DrainConfig,
    /// `[log]`: how the process logs.
    pub log: LogConfig,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (one line per event) or `json` (one object per line). Default `text`.
    pub format: LogFormat,
    /// Which messages to write, as a `tracing` filter: `info`, `warn`,
    /// `info,pixelgate::access=info`. Default `info`.
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: LogLevel("info".into()),
        }
    }
}

/// A `tracing` filter, checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

impl LogLevel {
    /// The filter; it parsed when read, so it builds.
    pub fn filter(&self) -> tracing_subscriber::EnvFilter {
        tracing_subscriber::EnvFilter::try_new(&self.0)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    }
}

impl FromStr for LogLevel {
    type Err = tracing_subscriber::filter::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        tracing_subscriber::EnvFilter::try_new(s).map(|_| Self(s.to_owned()))
    }
}
deserialize_from_str!(LogLevel);

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[signing]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Directory of key files, each named `ID.key` (ID 0 to 255) and holding one secret from
    /// `pixelgate keygen`. The highest id seals; every key opens. A relative path is taken from
    /// the configuration file's directory. Default: none. `PIXELGATE_SIGNING_KEY`, when set,
    /// replaces these keys.
    pub key_dir: Option<PathBuf>,
    /// Lifetime of newly signed links, e.g. `"90d"`. Default: none, links never expire.
    #[serde(with = "humantime_serde")]
    pub link_ttl: Option<Duration>,
    /// `PIXELGATE_SIGNING_KEY`: `SECRET` (key id 0) or `ID:SECRET`. Environment only.
    #[serde(skip)]
    pub env_key: Option<EnvSecret>,
}

/// A secret given through the environment; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvSecret(pub String);

impl fmt::Debug for EnvSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvSecret(..)")
    }
}

/// An error that names what was wrong: a key, a variable or a flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {key}", path.display())]
    Parse {
        path: PathBuf,
        key: String,
        line: usize,
        column: usize,
        #[source]
        source: Box<TomlError>,
    },
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// The variables of the contract, read once at start.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub redis_url: Option<String>,
    pub signing_key: Option<String>,
    pub queue_key: Option<String>,
    pub sink_url: Option<String>,
}

impl Environment {
    /// Reads the process environment. Called once, by `main`.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            listen: get("PIXELGATE_LISTEN"),
            admin_listen: get("PIXELGATE_ADMIN_LISTEN"),
            public_url: get("PIXELGATE_PUBLIC_URL"),
            redis_url: get("PIXELGATE_REDIS_URL"),
            signing_key: get("PIXELGATE_SIGNING_KEY"),
            queue_key: get("PIXELGATE_QUEUE_KEY"),
            sink_url: get("PIXELGATE_SINK_URL"),
        }
    }
}

/// Values given as command-line flags; the last word.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub public_url: Option<PublicUrl>,
    pub redis_url: Option<RedisUrl>,
    pub queue_key: Option<RedisKey>,
}

impl Config {
    /// Defaults, then `path` (or [`DEFAULT_CONFIG_PATH`] if it exists), then `env`, then
    /// `flags`; then [`Config::validate`]. Relative paths are resolved against the file's folder.
    pub fn load(
        path: Option<&Path>,
        env: &Environment,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let default_path = Path::new(DEFAULT_CONFIG_PATH);
        let path = path.or_else(|| default_path.exists().then_some(default_path));
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    /// Reads one file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| e.at(path, &text))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let dirs = [config.signing.key_dir.as_mut(), Some(&mut config.spool.dir)];
        for dir in dirs.into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, TomlError> {
        let de = toml::Deserializer::parse(text).map_err(|e| TomlError {
            key: String::new(),
            inner: e,
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| TomlError {
            key: e.path().to_string(),
            inner: e.into_inner(),
        })
    }

    fn apply_env(&mut self, env: &Environment) -> Result<(), ConfigError> {
        fn parse<T: FromStr<Err: std::error::Error + Send + Sync + 'static>>(
            var: &'static str,
            value: &Option<String>,
            into: &mut T,
        ) -> Result<(), ConfigError> {
            if let Some(value) = value {
                *into = value.parse().map_err(|e| Invalid::because(var, e))?;
            }
            Ok(())
        }
        parse("PIXELGATE_LISTEN", &env.listen, &mut self.server.listen)?;
        parse(
            "PIXELGATE_ADMIN_LISTEN",
            &env.admin_listen,
            &mut self.server.admin_listen,
        )?;
        parse(
            "PIXELGATE_PUBLIC_URL",
            &env.public_url,
            &mut self.server.public_url,
        )?;
        parse("PIXELGATE_REDIS_URL", &env.redis_url, &mut self.redis.url)?;
        parse("PIXELGATE_QUEUE_KEY", &env.queue_key, &mut self.queue.key)?;
        if let Some(sink) = &env.sink_url {
            let sink = sink
                .parse()
                .map_err(|e| Invalid::because("PIXELGATE_SINK_URL", e))?;
            self.drain.sink_url = Some(sink);
        }
        if let Some(key) = &env.signing_key {
            self.signing.env_key = Some(EnvSecret(key.clone()));
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        let Overrides {
            listen,
            admin_listen,
            public_url,
            redis_url,
            queue_key,
        } = flags.clone();
        self.server.listen = listen.unwrap_or(self.server.listen);
        self.server.admin_listen = admin_listen.unwrap_or(self.server.admin_listen);
        self.server.public_url = public_url.unwrap_or_else(|| self.server.public_url.clone());
        self.redis.url = redis_url.unwrap_or_else(|| self.redis.url.clone());
        self.queue.key = queue_key.unwrap_or_else(|| self.queue.key.clone());
    }

    /// What the edge is opened with: its sections, Redis, the queue and the spool.
    pub fn edge_settings(&self) -> pixelgate_edge::Settings {
        pixelgate_edge::Settings {
            edge: EdgeConfig {
                server: self.server.clone(),
                rate_limit: self.rate_limit.clone(),
                tls: self.tls.clone(),
                click: self.click.clone(),
            },
            redis: self.redis.clone(),
            queue: self.queue.clone(),
            spool: self.spool.clone(),
        }
    }

    /// What the drain is opened with: its section, Redis and the queue.
    pub fn drain_settings(&self) -> pixelgate_drain::Settings {
        pixelgate_drain::Settings {
            drain: self.drain.clone(),
            redis: self.redis.clone(),
            queue: self.queue.clone(),
        }
    }

    /// Checks what single values cannot check alone. The error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.edge_settings().validate()?;
        self.drain_settings().validate()?;
        if let Some(ttl) = self.signing.link_ttl {
            // Links never expire without one; a hundred years is the longest that is a date.
            pixelgate_core::config::within(
                "signing.link_ttl",
                ttl,
                Duration::from_secs(1),
                Duration::from_secs(36_525 * 86_400),
            )?;
        }
        Ok(())
    }
}

/// A TOML error and the dotted key it happened at; its message is toml's.
#[derive(Debug)]
pub struct TomlError {
    key: String,
    inner: toml::de::Error,
}

impl TomlError {
    fn at(self, path: &Path, text: &str) -> ConfigError {
        let offset = self.inner.span().map_or(0, |s| s.start);
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let key = if self.key.is_empty() || self.key == "." {
            "(file)".into()
        } else {
            self.key.clone()
        };
        ConfigError::Parse {
            path: path.into(),
            key,
            line,
            column,
            source: Box::new(self),
        }
    }
}

impl fmt::Display for TomlError {
    /// toml's message; it can run over several lines, and the first is the reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inner.message().lines().next().unwrap_or_default())
    }
}

impl std::error::Error for TomlError {}

#[cfg(test)]
mod tests;
