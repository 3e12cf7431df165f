//! The real `pixelgate` binary: outputs, one-line errors and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use std::{path::Path, process::Output, time::SystemTime};

use pixelgate_core::{KeyId, Keyring, Kind, Secret, Target};

const VARS: [&str; 7] = [
    "PIXELGATE_LISTEN",
    "PIXELGATE_ADMIN_LISTEN",
    "PIXELGATE_PUBLIC_URL",
    "PIXELGATE_REDIS_URL",
    "PIXELGATE_SIGNING_KEY",
    "PIXELGATE_QUEUE_KEY",
    "PIXELGATE_SINK_URL",
];

/// Runs the binary with a clean PIXELGATE_* environment plus `env`.
fn pixelgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pixelgate"));
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts a failure with one line on stderr that starts with `want`.
fn assert_fails(o: &Output, code: i32, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.starts_with(want), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(o.stdout.is_empty());
}

/// Writes a configuration file of its own (a fresh name each call) and returns its path.
fn config(dir: &Path, text: &str) -> String {
    let n = std::fs::read_dir(dir).unwrap().count();
    let path = dir.join(format!("pixelgate-{n}.toml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

const SIGN_IDS: [&str; 8] = [
    "--account",
    "acme",
    "--campaign",
    "spring-sale",
    "--message",
    "msg-000123",
    "--recipient",
    "r-42",
];

#[test]
fn version_and_keygen() {
    let o = pixelgate(&["--version"], &[]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        format!("pixelgate {}\n", env!("CARGO_PKG_VERSION"))
    );

    let a = pixelgate(&["keygen"], &[]);
    let b = pixelgate(&["keygen"], &[]);
    assert!(a.status.success());
    let secret: Secret = stdout(&a).parse().unwrap();
    assert_ne!(stdout(&a), stdout(&b));
    assert_eq!(stdout(&a).trim(), secret.to_string());
}

#[test]
fn sign_open_and_click_with_the_environment_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\npublic_url = \"https://t.example.com\"\n",
    );
    let secret = Secret::generate().unwrap().to_string();
    let env = [("PIXELGATE_SIGNING_KEY", secret.as_str())];
    let keys = Keyring::new([(KeyId(0), secret.parse().unwrap())]).unwrap();
    let now = SystemTime::now();

    let mut args = vec!["sign", "open", "-c", &cfg];
    args.extend(SIGN_IDS);
    let o = pixelgate(&args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let url = stdout(&o);
    let token = url
        .strip_prefix("https://t.example.com/o/")
        .unwrap()
        .strip_suffix(".gif\n")
        .unwrap();
    let claims = keys.open(token, Kind::Open, now).unwrap();
    assert_eq!(claims.ids.account, "acme");
    assert_eq!(claims.ids.recipient, "r-42");
    assert_eq!(claims.not_after, None);

    // Global options may also stand before the command.
    let mut before = vec!["-c", cfg.as_str(), "sign", "open"];
    before.extend(SIGN_IDS);
    assert_eq!(stdout(&pixelgate(&before, &env)), url);

    args[1] = "click";
    args.extend([
        "--url",
        "https://example.com/landing?utm=mail",
        "--expires-in",
        "1h",
    ]);
    let o = pixelgate(&args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let url = stdout(&o);
    let token = url
        .strip_prefix("https://t.example.com/c/")
        .unwrap()
        .trim_end();
    let claims = keys.open(token, Kind::Click, now).unwrap();
    let Target::Click(dest) = claims.target else {
        panic!("not a click")
    };
    assert_eq!(dest.as_str(), "https://example.com/landing?utm=mail");
    assert!(claims.not_after.is_some());
    // The URL shows none of what it carries.
    for secret_part in ["acme", "spring", "msg-000123", "example.com", "landing"] {
        assert!(!token.contains(secret_part), "{url} shows {secret_part}");
    }
}

#[test]
fn sign_uses_the_key_files_of_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let k1 = Secret::generate().unwrap();
    let k2 = Secret::generate().unwrap();
    for (id, k) in [(1, &k1), (2, &k2)] {
        let path = keys.join(format!("{id}.key"));
        std::fs::write(&path, format!("{k}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let cfg = config(dir.path(), "[signing]\nkey_dir = \"keys\"\n");
    let mut args = vec!["sign", "open", "-c", &cfg];
    args.extend(SIGN_IDS);
    let o = pixelgate(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let url = stdout(&o);
    assert!(url.starts_with("http://127.0.0.1:8080/o/"), "{url}");
    let token = url
        .trim_end()
        .trim_start_matches("http://127.0.0.1:8080/o/")
        .trim_end_matches(".gif");
    // Sealed by the newest key, id 2.
    let only_new = Keyring::new([(KeyId(2), k2)]).unwrap();
    assert!(only_new.open(token, Kind::Open, SystemTime::now()).is_ok());
    let only_old = Keyring::new([(KeyId(1), k1)]).unwrap();
    assert!(only_old.open(token, Kind::Open, SystemTime::now()).is_err());
}

#[test]
fn sign_refuses_bad_input_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let secret = Secret::generate().unwrap().to_string();
    let env = [("PIXELGATE_SIGNING_KEY", secret.as_str())];
    let mut args = vec!["sign", "click", "-c", &cfg];
    args.extend(SIGN_IDS);

    let mut js = args.clone();
    js.extend(["--url", "javascript:alert(1)"]);
    assert_fails(
        &pixelgate(&js, &env),
        1,
        "pixelgate: --url: destination must start with http:// or https://",
    );

    let mut userinfo = args.clone();
    userinfo.extend(["--url", "https://bank.example@evil.example/"]);
    assert_fails(
        &pixelgate(&userinfo, &env),
        1,
        "pixelgate: --url: destination must not carry a user name",
    );

    let mut empty = args.clone();
    empty[5] = "";
    empty.extend(["--url", "https://example.com/"]);
    assert_fails(
        &pixelgate(&empty, &env),
        1,
        "pixelgate: --account must be 1 to 128 bytes",
    );

    let mut no_key = args.clone();
    no_key.extend(["--url", "https://example.com/"]);
    assert_fails(
        &pixelgate(&no_key, &[]),
        1,
        "pixelgate: no signing key: set PIXELGATE_SIGNING_KEY",
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path(), "[server]\nlisten = \"127.0.0.1:8081\"\n");
    for args in [vec!["check-config", "-c", &good], vec!["-t", "-c", &good]] {
        let o = pixelgate(&args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "configuration OK\n");
    }

    let bad = config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:8081\"\nlisen = \"x\"\n",
    );
    let o = pixelgate(&["check-config", "-c", &bad], &[]);
    assert_fails(
        &o,
        1,
        &format!("pixelgate: {bad}:3:1: server.lisen: unknown field `lisen`"),
    );

    let o = pixelgate(&["-t", "-c", &good], &[("PIXELGATE_LISTEN", "nope")]);
    assert_fails(
        &o,
        1,
        "pixelgate: PIXELGATE_LISTEN: invalid socket address syntax",
    );

    let o = pixelgate(&["-t", "-c", &good], &[("PIXELGATE_SIGNING_KEY", "short")]);
    assert_fails(
        &o,
        1,
        "pixelgate: PIXELGATE_SIGNING_KEY: a signing secret is 32 bytes",
    );

    let o = pixelgate(&["-t", "-c", "/nonexistent/pixelgate.toml"], &[]);
    assert_fails(
        &o,
        1,
        "pixelgate: cannot read /nonexistent/pixelgate.toml: ",
    );
}

#[test]
fn flags_beat_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let secret = Secret::generate().unwrap().to_string();
    let env = [
        ("PIXELGATE_SIGNING_KEY", secret.as_str()),
        ("PIXELGATE_PUBLIC_URL", "https://env.example"),
    ];
    let mut args = vec!["sign", "open", "-c", &cfg];
    args.extend(SIGN_IDS);
    assert!(stdout(&pixelgate(&args, &env)).starts_with("https://env.example/o/"));
    args.extend(["--public-url", "https://flag.example/t/"]);
    assert!(stdout(&pixelgate(&args, &env)).starts_with("https://flag.example/t/o/"));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    assert_fails(
        &pixelgate(&["frobnicate"], &[]),
        2,
        "pixelgate: unrecognized subcommand 'frobnicate'",
    );
    assert_fails(
        &pixelgate(&["sign", "open"], &[]),
        2,
        "pixelgate: the following required arguments",
    );
    assert_fails(
        &pixelgate(&["-t", "--listen", "x"], &[]),
        2,
        "pixelgate: invalid value 'x' for '--listen",
    );
    let bare = pixelgate(&[], &[]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(
        stderr(&bare).contains("Usage: pixelgate"),
        "{}",
        stderr(&bare)
    );
}
