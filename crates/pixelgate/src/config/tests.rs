use std::io::Write as _;

use pixelgate_core::config::chain;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Environment {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Environment::from_lookup(|name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load(text: &str, env_pairs: &[(&str, &str)], flags: &Overrides) -> Result<Config, ConfigError> {
    let f = file(text);
    Config::load(Some(f.path()), &env(env_pairs), flags)
}

#[test]
fn defaults_are_the_contract() {
    let c = Config::default();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.server.public_url.as_str(), "http://127.0.0.1:8080");
    assert_eq!(c.redis.url.as_str(), "redis://127.0.0.1:6379");
    assert_eq!(c.queue.key.as_str(), "pixelgate:events");
    assert_eq!(c.queue.overflow_key.as_str(), "pixelgate:overflow");
    assert_eq!(c.drain.sink_url, None);
    assert_eq!(c.signing, SigningConfig::default());
    c.validate().unwrap();
    assert_eq!(Config::from_toml("").unwrap(), c);
}

#[test]
fn file_then_environment_then_flags() {
    let text = "[server]\nlisten = \"127.0.0.1:1001\"\nadmin_listen = \"127.0.0.1:1002\"\n\
                public_url = \"https://t.example.com/\"\n[queue]\nkey = \"from-file\"\n";
    let c = load(text, &[], &Overrides::default()).unwrap();
    assert_eq!(c.server.listen.port(), 1001);
    assert_eq!(c.server.public_url.as_str(), "https://t.example.com");
    assert_eq!(c.queue.key.as_str(), "from-file");

    let vars = [
        ("PIXELGATE_LISTEN", "127.0.0.1:2001"),
        ("PIXELGATE_QUEUE_KEY", "from-env"),
        ("PIXELGATE_REDIS_URL", "unix:///run/redis.sock"),
        (
            "PIXELGATE_SINK_URL",
            "jsonl:///var/lib/pixelgate/events.jsonl",
        ),
        ("PIXELGATE_SIGNING_KEY", "1:secret"),
    ];
    let c = load(text, &vars, &Overrides::default()).unwrap();
    assert_eq!(c.server.listen.port(), 2001);
    assert_eq!(c.server.admin_listen.port(), 1002);
    assert_eq!(c.queue.key.as_str(), "from-env");
    assert_eq!(c.redis.url.as_str(), "unix:///run/redis.sock");
    assert_eq!(
        c.drain.sink_url,
        Some("jsonl:///var/lib/pixelgate/events.jsonl".parse().unwrap())
    );
    assert_eq!(c.signing.env_key, Some(EnvSecret("1:secret".into())));

    let flags = Overrides {
        listen: Some("127.0.0.1:3001".parse().unwrap()),
        queue_key: Some("from-flag".parse().unwrap()),
        ..Overrides::default()
    };
    let c = load(text, &vars, &flags).unwrap();
    assert_eq!(c.server.listen.port(), 3001);
    assert_eq!(c.queue.key.as_str(), "from-flag");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = load(
        "[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n",
        &[],
        &Overrides::default(),
    )
    .unwrap_err();
    let err = chain(&err);
    assert!(
        err.contains(":3:1: server.listn: unknown field `listn`"),
        "{err}"
    );
    let err = load("[servr]\n", &[], &Overrides::default()).unwrap_err();
    let err = chain(&err);
    assert!(err.contains(":1:2: servr: unknown field `servr`"), "{err}");
}

#[test]
fn a_bad_value_names_its_key() {
    let cases = [
        (
            "[server]\nlisten = \"nowhere\"",
            "server.listen: invalid socket address syntax",
        ),
        (
            "[server]\npublic_url = \"ftp://x\"",
            "server.public_url: must be an http or https",
        ),
        (
            "[server]\npublic_url = \"https://x/?a=1\"",
            "server.public_url: must have no query",
        ),
        (
            "[redis]\nurl = \"http://x\"",
            "redis.url: must be redis://host:port",
        ),
        (
            "[queue]\nkey = \"a b\"",
            "queue.key: must be 1 to 256 bytes",
        ),
        (
            "[drain]\nsink_url = \"sqlite://x\"",
            "drain.sink_url: must start with one of mysql://, mariadb://",
        ),
        ("[signing]\nlink_ttl = \"soon\"", "signing.link_ttl: "),
        (
            "[signing]\nlink_ttl = 5",
            "signing.link_ttl: invalid type: integer",
        ),
        ("[server]\nlisten = [", ":2:11: (file): "),
    ];
    for (text, want) in cases {
        let err = load(text, &[], &Overrides::default()).unwrap_err();
        let err = chain(&err);
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn validate_names_the_key() {
    let cases = [
        (
            "[server]\nadmin_listen = \"127.0.0.1:8080\"",
            "server.admin_listen: must differ",
        ),
        (
            "[queue]\noverflow_key = \"pixelgate:events\"",
            "queue.overflow_key: must differ",
        ),
        (
            "[signing]\nlink_ttl = \"10ms\"",
            "signing.link_ttl: must be from 1s to 100years",
        ),
    ];
    for (text, want) in cases {
        let err = load(text, &[], &Overrides::default()).unwrap_err();
        let err = chain(&err);
        assert!(err.starts_with(want), "{text:?}: {err}");
    }
    let ok = load("[signing]\nlink_ttl = \"90d\"", &[], &Overrides::default()).unwrap();
    assert_eq!(ok.signing.link_ttl, Some(Duration::from_secs(90 * 86_400)));
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let err = load(
        "",
        &[("PIXELGATE_ADMIN_LISTEN", "9090")],
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        chain(&err),
        "PIXELGATE_ADMIN_LISTEN: invalid socket address syntax"
    );
    let err = load(
        "",
        &[("PIXELGATE_SINK_URL", "jsonl://host/x")],
        &Overrides::default(),
    );
    assert!(
        chain(&err.unwrap_err()).starts_with("PIXELGATE_SINK_URL: needs an absolute file path")
    );
}

#[test]
fn a_missing_file_says_so() {
    let err = Config::load(
        Some(Path::new("/nonexistent/p.toml")),
        &env(&[]),
        &Overrides::default(),
    );
    assert!(chain(&err.unwrap_err()).starts_with("cannot read /nonexistent/p.toml: "));
}

#[test]
fn a_relative_key_dir_is_taken_from_the_file_s_folder() {
    let f = file("[signing]\nkey_dir = \"keys\"\n");
    let c = Config::from_file(f.path()).unwrap();
    assert_eq!(
        c.signing.key_dir,
        Some(f.path().parent().unwrap().join("keys"))
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let vars = [
        ("PIXELGATE_SIGNING_KEY", "topsecret"),
        ("PIXELGATE_REDIS_URL", "redis://user:topsecret@h:1"),
        ("PIXELGATE_SINK_URL", "mysql://u:topsecret@db/x"),
    ];
    let c = load("", &vars, &Overrides::default()).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("topsecret"), "{shown}");
    assert!(shown.contains("redis://user:***@h:1"), "{shown}");
}

#[test]
fn the_shipped_configurations_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for name in ["deploy/pixelgate.toml", "deploy/pixelgate.dev.toml"] {
        let c = Config::from_file(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Values that would panic or cripple `serve` are refused by the same check `-t` runs, naming
/// the key and the bound.
#[test]
fn values_that_would_break_serve_are_refused_when_checked() {
    let huge = "9223372036854775807";
    let cases = [
        (
            format!("[queue]\nchannel_capacity = {huge}"),
            "queue.channel_capacity: must be at most",
        ),
        (
            format!("[queue]\nmax_in_flight = {huge}"),
            "queue.max_in_flight: must be at most",
        ),
        (
            format!("[server]\nmax_connections = {huge}"),
            "server.max_connections: must be at most",
        ),
        (
            format!("[server]\nmax_in_flight = {huge}"),
            "server.max_in_flight: must be at most",
        ),
        (
            format!("[redis]\npool_size = {huge}"),
            "redis.pool_size: must be at most",
        ),
        (
            "[queue]\nack_timeout = \"500000000000y\"".into(),
            "queue.ack_timeout: must be from",
        ),
        (
            "[server]\nheader_read_timeout = \"500000000000y\"".into(),
            "server.header_read_timeout: must be from",
        ),
        (
            "[signing]\nlink_ttl = \"500000000000y\"".into(),
            "signing.link_ttl: must be from",
        ),
        (
            "[server]\nrequest_timeout = \"1ns\"".into(),
            "server.request_timeout: must be from",
        ),
        (
            "[server]\nshutdown_grace = \"0s\"".into(),
            "server.shutdown_grace: must be from",
        ),
        (
            "[server]\nshutdown_grace = \"100ms\"".into(),
            "server.shutdown_grace: must be longer than queue.ack_timeout",
        ),
        (
            "[server]\nrequest_timeout = \"400ms\"".into(),
            "server.request_timeout: must be longer than queue.ack_timeout",
        ),
        (
            format!("[drain]\nconcurrency = {huge}"),
            "drain.concurrency: must be at most",
        ),
        (
            "[drain]\nlease = \"500000000000y\"".into(),
            "drain.lease: must be from",
        ),
    ];
    for (text, want) in cases {
        let err = load(&text, &[], &Overrides::default()).unwrap_err();
        let said = chain(&err);
        assert!(said.starts_with(want), "{text:?}: {said}");
    }
}
