//! The cluster harness itself: the cluster comes up whole, keys live on the node that owns their
//! slot, and a restarted node rejoins with its data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use std::collections::HashSet;

use pixelgate_tests::{RedisCluster, is_listening, resp::Reply};

fn info_field(reply: &Reply, name: &str) -> String {
    let text = reply.text().expect("CLUSTER INFO is text");
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{name}:"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_cluster_comes_up_with_every_slot_served_and_stops_on_drop() {
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.nodes().len(), 3);
    let ports: HashSet<_> = cluster.nodes().iter().map(|n| n.port()).collect();
    assert_eq!(ports.len(), 3);
    for node in cluster.nodes() {
        let info = node.call(&["CLUSTER", "INFO"]);
        assert_eq!(info_field(&info, "cluster_state"), "ok");
        assert_eq!(info_field(&info, "cluster_slots_assigned"), "16384");
        assert_eq!(
            info_field(&info, "cluster_size"),
            "3",
            "three masters with slots"
        );
        assert_eq!(info_field(&info, "cluster_known_nodes"), "3");
        // The bus port, which clients never use, is listening too.
        let bus = std::net::SocketAddr::from(([127, 0, 0, 1], node.port() + 10_000));
        assert!(is_listening(bus), "no cluster bus on {bus}");
    }
    assert_eq!(
        cluster.urls(),
        cluster
            .nodes()
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
    );
    let addrs: Vec<_> = cluster.nodes().iter().map(|n| n.addr()).collect();
    drop(cluster);
    for addr in addrs {
        assert!(
            !is_listening(addr),
            "a node still listens on {addr} after drop"
        );
    }
}

#[test]
fn keys_of_different_slots_live_on_the_node_that_owns_them() {
    let cluster = RedisCluster::start(3);
    let mut owners = HashSet::new();
    for k in 0..60 {
        let key = format!("key-{k}");
        let owner = cluster.node_for_key(&key);
        owners.insert(owner);
        for (i, node) in cluster.nodes().iter().enumerate() {
            let reply = node.call(&["SET", key.as_str(), "v"]);
            if i == owner {
                assert_eq!(reply, Reply::Status("OK".into()), "{key} on its owner {i}");
            } else {
                assert!(
                    matches!(&reply, Reply::Error(e) if e.starts_with("MOVED ")),
                    "{key} written to node {i}, not its owner {owner}: {reply:?}"
                );
            }
        }
    }
    assert_eq!(owners.len(), 3, "60 keys all hashed onto {owners:?}");
}

#[test]
fn a_restarted_node_rejoins_with_its_data() {
    let mut cluster = RedisCluster::start(3);
    let key = "survivor";
    let owner = cluster.node_for_key(key);
    for i in 0..100 {
        cluster.nodes()[owner].call(&["RPUSH", key, &i.to_string()]);
    }
    let port = cluster.nodes()[owner].port();
    cluster.kill_node(owner);
    assert!(!cluster.nodes()[owner].is_running());
    cluster.restart_node(owner);
    assert_eq!(cluster.nodes()[owner].port(), port);
    assert_eq!(cluster.node_for_key(key), owner, "the slot moved away");
    assert_eq!(cluster.nodes()[owner].call(&["LLEN", key]), Reply::Int(100));
    for node in cluster.nodes() {
        let info = node.call(&["CLUSTER", "INFO"]);
        assert_eq!(info_field(&info, "cluster_state"), "ok");
    }
}
