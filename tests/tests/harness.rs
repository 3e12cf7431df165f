//! The harness itself: servers start, answer, restart with their data and are gone after drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use std::time::Duration;

use pixelgate_tests::{
    RedisOptions, RedisServer, is_listening, require_binary, resp::Reply, wait_for,
};

#[test]
fn a_redis_server_starts_answers_and_stops_on_drop() {
    let server = RedisServer::start();
    let addr = server.addr();
    assert_eq!(server.call(&["SET", "k", "v"]), Reply::Status("OK".into()));
    assert_eq!(server.call(&["GET", "k"]).text().as_deref(), Some("v"));
    assert!(server.dir().exists());
    let dir = server.dir().to_owned();
    drop(server);
    assert!(
        !is_listening(addr),
        "redis-server still listening after drop"
    );
    assert!(!dir.exists(), "data directory left behind");
}

#[test]
fn two_servers_run_side_by_side() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    a.call(&["SET", "k", "a"]);
    assert_eq!(b.call(&["GET", "k"]), Reply::Bulk(None));
}

#[test]
fn an_appendonly_server_keeps_acknowledged_writes_through_sigkill() {
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..Default::default()
    });
    for i in 0..100 {
        server.call(&["RPUSH", "q", &i.to_string()]);
    }
    server.kill();
    assert!(!server.is_running());
    server.restart();
    assert_eq!(server.call(&["LLEN", "q"]), Reply::Int(100));
}

#[test]
fn a_frozen_server_answers_nothing_until_thawed() {
    let server = RedisServer::start();
    server.freeze(true);
    let mut conn = server.connect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(conn.call(&["PING"])));
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a frozen server answered"
    );
    server.freeze(false);
    let reply = wait_for("the thawed reply", Duration::from_secs(10), || {
        rx.try_recv().ok()
    });
    assert_eq!(reply.unwrap(), Reply::Status("PONG".into()));
}

#[test]
fn extra_options_reach_the_server() {
    let extra = vec![("maxmemory".to_owned(), "3mb".to_owned())];
    let server = RedisServer::start_with(RedisOptions {
        extra,
        ..Default::default()
    });
    assert_eq!(
        server.call(&["CONFIG", "GET", "maxmemory"]).texts(),
        ["maxmemory", "3145728"]
    );
}

#[test]
#[should_panic(
    expected = "pixelgate-no-such-server not found on PATH: install it with `apt-get install x`"
)]
fn a_missing_binary_fails_loudly_with_the_install_command() {
    require_binary("pixelgate-no-such-server", "apt-get install x");
}

#[test]
fn a_mariadb_server_starts_with_its_database_and_stops_on_drop() {
    let mut db = pixelgate_tests::SqlServer::mariadb();
    db.query("CREATE TABLE t (id INT PRIMARY KEY)");
    db.query("INSERT INTO t VALUES (1), (2)");
    assert_eq!(db.count("t"), 2);
    assert!(db.url().starts_with("mysql://root@127.0.0.1:"));
    db.restart();
    assert_eq!(db.count("t"), 2, "data survives a restart");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], db.port()));
    drop(db);
    assert!(!is_listening(addr));
}

#[test]
fn a_postgres_server_starts_with_its_database_and_stops_on_drop() {
    let mut db = pixelgate_tests::SqlServer::postgres();
    db.query("CREATE TABLE t (id INT PRIMARY KEY)");
    db.query("INSERT INTO t VALUES (1), (2)");
    assert_eq!(db.count("t"), 2);
    assert!(db.url().starts_with("postgres://postgres@127.0.0.1:"));
    db.restart();
    assert_eq!(db.count("t"), 2, "data survives a restart");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], db.port()));
    drop(db);
    assert!(!is_listening(addr));
}
