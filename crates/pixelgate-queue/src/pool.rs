//! The Redis connection pool: deadpool-redis over a single server or a cluster.
//!
//! Both kinds hand out a [`Conn`] that speaks `redis::aio::ConnectionLike`, so every command in
//! this crate is written once. Create, wait and recycle timeouts are always set: deadpool's
//! defaults are none, which turns a dead Redis into requests that hang forever.

use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use redis::{Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};

use crate::{config::RedisConfig, error::QueueError};

/// A pool of connections to one Redis or one Redis Cluster.
#[derive(Clone)]
pub enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.status();
        f.debug_struct("Pool")
            .field("size", &status.size)
            .field("max", &status.max_size)
            .finish()
    }
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

impl Pool {
    /// Builds the pool; no connection is opened until one is needed.
    pub fn new(config: &RedisConfig) -> Result<Self, QueueError> {
        let mut pool = PoolConfig::new(config.pool_size.get());
        pool.timeouts = Timeouts {
            wait: Some(config.wait_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.recycle_timeout),
        };
        let urls = config.connection_urls();

        if config.is_cluster() {
            let mut cfg = deadpool_redis::cluster::Config::from_urls(urls);
            cfg.pool = Some(pool);
            cfg.create_pool(Some(Runtime::Tokio1))
                .map(Self::Cluster)
                .map_err(|e| QueueError::Setup(Box::new(e)))
        } else {
            let url = urls.into_iter().next().unwrap_or_default();
            let mut cfg = deadpool_redis::Config::from_url(url);
            cfg.pool = Some(pool);
            cfg.create_pool(Some(Runtime::Tokio1))
                .map(Self::Single)
                .map_err(|e| QueueError::Setup(Box::new(e)))
        }
    }

    /// A connection, waiting at most `redis.wait_timeout` for one.
    pub async fn get(&self) -> Result<Conn, QueueError> {
        Ok(match self {
            Self::Single(p) => Conn::Single(p.get().await?),
            Self::Cluster(p) => Conn::Cluster(p.get().await.map_err(cluster_pool_error)?),
        })
    }

    pub fn status(&self) -> PoolStatus {
        let s = match self {
            Self::Single(p) => p.status(),
            Self::Cluster(p) => p.status(),
        };
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }
}

fn cluster_pool_error(e: deadpool_redis::cluster::PoolError) -> QueueError {
    use deadpool_redis::{PoolError as P, cluster::PoolError as C};
    // Both pools share deadpool's error shape; map the cluster one onto the single one.
    QueueError::Pool(match e {
        C::Timeout(t) => P::Timeout(t),
        C::Backend(e) => P::Backend(e),
        C::Closed => P::Closed,
        C::NoRuntimeSpecified => P::NoRuntimeSpecified,
        C::PostCreateHook(_) => P::Closed,
    })
}

/// A connection to a server or to a cluster, whichever the configuration names: one type for
/// each way the queue holds a connection ([`Conn`], [`Detached`]), one [`ConnectionLike`] for all.
#[derive(Clone)]
pub enum Link<S, C> {
    Single(S),
    Cluster(C),
}

/// A pooled connection to a server or a cluster.
pub type Conn = Link<deadpool_redis::Connection, deadpool_redis::cluster::Connection>;

/// A connection taken out of the pool for good: multiplexed, so concurrent commands share its
/// socket. The enqueue writer keeps one for as long as it works, which spares every batch the
/// pool's check of a connection it hands out (an `UNWATCH` and a `PING`, a round trip).
pub type Detached =
    Link<redis::aio::MultiplexedConnection, redis::cluster_async::ClusterConnection>;

impl<S, C> std::fmt::Debug for Link<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Link::Single",
            Self::Cluster(_) => "Link::Cluster",
        })
    }
}

impl Pool {
    /// A checked connection of the pool's, taken out of it (the pool makes another when it
    /// needs one).
    pub async fn detached(&self) -> Result<Detached, QueueError> {
        Ok(match self.get().await? {
            Conn::Single(c) => Detached::Single(deadpool_redis::Connection::take(c)),
            Conn::Cluster(c) => Detached::Cluster(deadpool_redis::cluster::Connection::take(c)),
        })
    }
}

impl<S: ConnectionLike + Send, C: ConnectionLike + Send> ConnectionLike for Link<S, C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
