//! A real Redis Cluster per test: N masters, no replicas, each a [`RedisServer`] node.
//!
//! The nodes are joined with `redis-cli --cluster create`, which splits the 16384 slots evenly,
//! and the cluster is ready once every node reports `cluster_state:ok`. Nodes persist every
//! write (`appendonly`, `appendfsync always`), so a node killed and restarted on its port and
//! directory rejoins with its identity, its slots and every write it acknowledged.

use std::{process::Command, time::Duration};

use crate::{
    RedisOptions, RedisServer, require_binary,
    resp::{Connection, Reply},
    wait_for,
};

/// How long the nodes may take to agree on the slots after creation or a restart.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Redis Cluster owned by one test; every node stops on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes, joins them into one cluster and waits until it serves every slot.
    pub fn start(masters: usize) -> Self {
        assert!(masters >= 1, "a cluster needs at least one master");
        let cli = require_binary("redis-cli", "apt-get install redis-tools");
        let nodes: Vec<_> = (0..masters)
            .map(|_| {
                RedisServer::start_with(RedisOptions {
                    appendonly: true,
                    cluster: true,
                    // Short, so a killed node is marked failed quickly (the default is 15 s).
                    extra: vec![("cluster-node-timeout".into(), "2000".into())],
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let out = Command::new(cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create {} failed: {}{}",
            addrs.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// The masters, in the order of [`RedisCluster::urls`].
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis://127.0.0.1:PORT` of each master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The index (into [`RedisCluster::nodes`]) of the master serving `key`, as the cluster
    /// itself says: `CLUSTER KEYSLOT`, then the owner of that slot in `CLUSTER SLOTS`.
    pub fn node_for_key(&self, key: &str) -> usize {
        let first = self.live_node();
        let slot = match first.call(&["CLUSTER", "KEYSLOT", key]) {
            Reply::Int(slot) => slot,
            other => panic!("CLUSTER KEYSLOT {key} answered {other:?}"),
        };
        let Reply::Array(Some(ranges)) = first.call(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS answered no array");
        };
        let port = ranges
            .iter()
            .find_map(|range| match range {
                Reply::Array(Some(r)) => match (&r[0], &r[1], &r[2]) {
                    (Reply::Int(lo), Reply::Int(hi), Reply::Array(Some(master)))
                        if (*lo..=*hi).contains(&slot) =>
                    {
                        match master[1] {
                            Reply::Int(port) => Some(port),
                            _ => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_else(|| panic!("no master serves slot {slot} of {key}"));
        self.nodes
            .iter()
            .position(|n| i64::from(n.port()) == port)
            .unwrap_or_else(|| panic!("slot {slot} of {key} is served by unknown port {port}"))
    }

    /// Kills node `i` with SIGKILL, as a crash would; the cluster marks it failed after
    /// `cluster-node-timeout` (2 s). [`RedisCluster::restart_node`] brings it back.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Kills node `i` (if it still runs), starts it again on its port and directory, and waits
    /// until every node reports `cluster_state:ok` again.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_until_ok();
    }

    /// Waits until every node answers `CLUSTER INFO` with `cluster_state:ok`.
    pub fn wait_until_ok(&self) {
        for node in &self.nodes {
            let addr = node.addr();
            wait_for(
                &format!("cluster_state:ok on {addr}"),
                READY_TIMEOUT,
                || {
                    let info = Connection::open(addr)
                        .and_then(|mut c| c.call(&["CLUSTER", "INFO"]))
                        .ok()?
                        .text()?;
                    info.lines()
                        .any(|l| l.trim() == "cluster_state:ok")
                        .then_some(())
                },
            );
        }
    }

    fn live_node(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("every node of the cluster is down")
    }
}
