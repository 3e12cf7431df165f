//! The hostile-input catalogue: what an attacker can send to the public listener, each case with
//! the answer it must get, run against a real edge and a real redis-server.
//!
//! Where the bytes matter they go over raw TCP (or as raw HTTP/2 frames) and the raw answer is
//! read back: status lines, headers, and whether the server kept or closed the connection.
//! Throughout: no hostile request yields a `Location` it should not, records an event it should
//! not, or puts a control character into the access log. `docs/security.md` lists the same cases
//! with the defence that answers each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    fmt::Debug,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use aes_gcm_siv::{
    Aes256GcmSiv, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::*;
use http::{Method, StatusCode};
use pixelgate_core::{Claims, Destination, DestinationError, Event, Ids, KeyId, Keyring, Secret};
use pixelgate_tests::RedisServer;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tracing_subscriber::{Layer, layer::SubscriberExt as _};
use url::ParseError;

/// The edge as these cases meet it: no rate limit (the suite sends many requests from one
/// address), and idle connections kept far longer than [`PATIENCE`], so that a connection seen
/// closed is one the server chose to close.
fn hostile_server(redis: &RedisServer) -> Builder {
    TestServer::builder(redis).edge(|c| {
        c.rate_limit.enabled = false;
        c.server.header_read_timeout = Duration::from_secs(60);
    })
}

// ---- open redirects ----------------------------------------------------------------------------

/// The secret the suite's edge opens tokens with, so the suite can also mint tokens the way a
/// sender with the key (and a bug, or bad intent) could: around destinations the signer refuses.
const SECRET: [u8; 32] = [7; 32];

fn keyring() -> Keyring {
    Keyring::new([(KeyId(1), Secret::from_bytes(SECRET))]).unwrap()
}

/// Ids outside the packed alphabet (they contain dots), so [`mint_click`] can store them as
/// plain UTF-8 exactly as `Keyring::seal` does.
fn dotted(account: &str, message: &str) -> Ids {
    Ids::new(account, "spring.sale", message, "r.42").unwrap()
}

/// A click token around `destination`, sealed as `docs/tokens.md` specifies but without
/// `Destination::parse`: the scheme becomes the https flag, the rest is stored as it is.
fn mint_click(ids: &Ids, destination: &str) -> String {
    let (https, rest) = match destination.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (
            false,
            destination.strip_prefix("http://").unwrap_or(destination),
        ),
    };
    let mut payload = vec![1 | if https { 4 } else { 0 }];
    for id in [&ids.account, &ids.campaign, &ids.message, &ids.recipient] {
        assert!(id.len() < 64, "one varint byte");
        payload.push((id.len() as u8) << 1);
        payload.extend_from_slice(id.as_bytes());
    }
    payload.extend_from_slice(rest.as_bytes());
    let header = [1u8, 1];
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(b"pxg1");
    nonce[4] = 1;
    let sealed = Aes256GcmSiv::new(&SECRET.into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &payload,
                aad: &header,
            },
        )
        .unwrap();
    URL_SAFE_NO_PAD.encode([&header[..], &sealed].concat())
}

/// Open-redirect tricks: each is refused where links are signed (`Destination::parse`, which
/// `pixelgate sign click --url` calls), with this reason.
fn redirect_tricks() -> Vec<(&'static str, DestinationError)> {
    use DestinationError::*;
    vec![
        // Userinfo: browsers go to the host after the `@`.
        ("https://good.example@evil.example/", Userinfo),
        ("https://good.example:443@evil.example/", Userinfo),
        (
            "https://good.example%40evil.example/",
            Invalid(ParseError::IdnaError),
        ),
        // Backslashes: browsers read `\` as `/`.
        (
            "https://evil.example\\@good.example/",
            ForbiddenCharacter(20),
        ),
        ("https:/\\evil.example/", ForbiddenCharacter(7)),
        ("https:\\\\evil.example/", ForbiddenCharacter(6)),
        ("/\\evil.example/", ForbiddenCharacter(1)),
        // Scheme tricks with tabs, spaces and newlines, which URL parsers drop.
        ("java\tscript:alert(1)", ForbiddenCharacter(4)),
        ("\thttps://evil.example/", ForbiddenCharacter(0)),
        (" https://evil.example/", ForbiddenCharacter(0)),
        ("ht\ntps://evil.example/", ForbiddenCharacter(2)),
        ("https://evil.example/\u{2028}", ForbiddenCharacter(21)),
        ("https://evil.example/\u{85}", ForbiddenCharacter(21)),
        // Schemes other than http and https, and scheme-relative or scheme-only forms.
        ("javascript:alert(1)", Scheme),
        ("JaVaScRiPt:alert(1)", Scheme),
        ("javascript://good.example/%0aalert(1)", Scheme),
        (
            "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
            Scheme,
        ),
        ("vbscript:msgbox(1)", Scheme),
        ("//evil.example/", Scheme),
        ("https:evil.example", Scheme),
        ("https:/evil.example", Scheme),
        ("ftp://evil.example/", Scheme),
        // A percent-encoded slash in the host, and a broken IPv6 literal.
        (
            "https://evil.example%2fgood.example/",
            Invalid(ParseError::IdnaError),
        ),
        ("https://[::1/", Invalid(ParseError::InvalidIpv6Address)),
        ("https://", Invalid(ParseError::EmptyHost)),
        // CRLF: a second header (or a whole response) after the Location.
        (
            "https://good.example/\r\nSet-Cookie: a=b",
            ForbiddenCharacter(21),
        ),
        (
            "https://good.example/\r\n\r\n<script>",
            ForbiddenCharacter(21),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_tricks_are_refused_by_the_signer_and_by_the_edge() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    server.use_keys(keyring());

    // The minter is faithful: for a good destination it gives the signer's own token, and the
    // edge redirects it. So every 404 below is the destination's doing.
    let good = "https://good.example/landing";
    let ids = dotted("free.test", "msg.good");
    let signed = keyring().seal(&Claims::click(
        ids.clone(),
        Destination::parse(good).unwrap(),
    ));
    assert_eq!(mint_click(&ids, good), signed);
    let reply = server.get(&format!("/c/{signed}")).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some(good));

    // A destination the signer accepts, but not in the canonical form it stores: whatever
    // sealed it was not the signer.
    let uncanonical = "https://GOOD.example/landing";
    assert!(Destination::parse(uncanonical).is_ok());
    let mut minted = vec![uncanonical];
    for (destination, refused) in redirect_tricks() {
        // The signer's layer refuses, with its reason.
        assert_eq!(
            Destination::parse(destination),
            Err(refused),
            "{destination:?}"
        );
        minted.push(destination);
    }
    // The edge refuses each sealed around the signer's back: 404, no Location, no event.
    for (n, destination) in minted.into_iter().enumerate() {
        let token = mint_click(&dotted("free.test", &format!("msg.trick-{n}")), destination);
        let reply = server.get(&format!("/c/{token}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{destination:?}");
        assert!(reply.header("location").is_none(), "{destination:?}");
    }
    assert_eq!(messages(&redis, EVENTS), ["msg.good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_destinations_redirect_only_to_their_canonical_form_and_the_allowlist() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis)
        .edge(|c| {
            c.click.allowed_hosts =
                BTreeMap::from([("acme.test".to_owned(), vec!["example.com".to_owned()])]);
        })
        .start()
        .await;
    // destination as signed → its canonical form (the Location), and whether the allowlisted
    // account `acme.test` (only example.com and its subdomains) may redirect there.
    let cases = [
        // Percent-encoded dot segments are resolved: the Location shows the real path.
        (
            "https://example.com/a/%2e%2E/b",
            "https://example.com/b",
            true,
        ),
        (
            "https://example.com/%2e%2e/%2e%2e/etc/passwd",
            "https://example.com/etc/passwd",
            true,
        ),
        // An encoded CRLF stays encoded: no header can be injected.
        (
            "https://example.com/%0d%0aSet-Cookie:%20a=b",
            "https://example.com/%0d%0aSet-Cookie:%20a=b",
            true,
        ),
        // Percent-encoded and full-width dots in the host become plain dots.
        ("https://ex%61mple.com/", "https://example.com/", true),
        (
            "https://example.com%2eevil.example/",
            "https://example.com.evil.example/",
            false,
        ),
        ("https://example\u{3002}com/", "https://example.com/", true),
        // IDN homograph: a Cyrillic а is not example.com, and the Location shows punycode.
        (
            "https://ex\u{430}mple.com/",
            "https://xn--exmple-4nf.com/",
            false,
        ),
        (
            "https://xn--exmple-4nf.com/",
            "https://xn--exmple-4nf.com/",
            false,
        ),
        // Look-alikes on the dot boundary, a trailing dot, and numeric hosts.
        (
            "https://example.com.evil.example/",
            "https://example.com.evil.example/",
            false,
        ),
        (
            "https://evilexample.com/",
            "https://evilexample.com/",
            false,
        ),
        ("https://example.com./", "https://example.com./", false),
        ("https://0x7f.1/", "https://127.0.0.1/", false),
    ];
    let mut want_urls = Vec::new();
    for (n, (signed, canonical, allowed)) in cases.into_iter().enumerate() {
        let destination = Destination::parse(signed).unwrap();
        assert_eq!(destination.as_str(), canonical, "{signed:?}");
        for account in ["acme.test", "free.test"] {
            let ids = dotted(account, &format!("msg.{n}"));
            let claims = Claims::click(ids, destination.clone());
            let reply = server
                .get(&format!("/c/{}", server.keys().seal(&claims)))
                .await;
            if allowed || account == "free.test" {
                assert_eq!(reply.status, StatusCode::FOUND, "{account} → {signed:?}");
                assert_eq!(reply.header("location"), Some(canonical));
                assert!(reply.header("set-cookie").is_none());
                want_urls.push(canonical.to_owned());
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::NOT_FOUND,
                    "{account} → {signed:?}"
                );
                assert!(reply.header("location").is_none());
            }
        }
    }
    let urls: Vec<String> = events(&redis, EVENTS)
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls, want_urls);
}

// ---- tokens ------------------------------------------------------------------------------------

/// `token` decoded, changed by `f`, encoded again.
fn with_bytes(token: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut raw = URL_SAFE_NO_PAD.decode(token).unwrap();
    f(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// How a case changes a token (given with the claims it carries).
type Tamper = Box<dyn Fn(&str, &Claims) -> String>;

/// Tampered forms of a valid token: what each case does to it.
fn tamperings() -> Vec<(&'static str, Tamper)> {
    let other = Keyring::new([(KeyId(1), Secret::from_bytes([8; 32]))]).unwrap();
    let newer = Keyring::new([(KeyId(2), Secret::from_bytes(SECRET))]).unwrap();
    vec![
        (
            "version bit flipped",
            Box::new(|t, _| with_bytes(t, |b| b[0] ^= 0x80)),
        ),
        (
            "key id bit flipped",
            Box::new(|t, _| with_bytes(t, |b| b[1] ^= 0x01)),
        ),
        (
            "ciphertext bit flipped",
            Box::new(|t, _| with_bytes(t, |b| b[4] ^= 0x10)),
        ),
        (
            "tag bit flipped",
            Box::new(|t, _| {
                with_bytes(t, |b| {
                    let last = b.len() - 1;
                    b[last] ^= 0x01;
                })
            }),
        ),
        (
            "one byte added",
            Box::new(|t, _| with_bytes(t, |b| b.push(0))),
        ),
        (
            "last character dropped",
            Box::new(|t, _| t[..t.len() - 1].to_owned()),
        ),
        (
            "three bytes cut",
            Box::new(|t, _| t[..t.len() - 4].to_owned()),
        ),
        (
            "first half only",
            Box::new(|t, _| t[..t.len() / 2].to_owned()),
        ),
        ("padding added", Box::new(|t, _| format!("{t}=="))),
        (
            "standard base64 alphabet",
            Box::new(|t, _| t.replace('-', "+").replace('_', "/")),
        ),
        (
            "first character percent-encoded",
            Box::new(|t, _| format!("%{:02X}{}", t.as_bytes()[0], &t[1..])),
        ),
        (
            "case swapped",
            Box::new(|t, _| {
                t.chars()
                    .map(|c| {
                        if c.is_ascii_uppercase() {
                            c.to_ascii_lowercase()
                        } else {
                            c.to_ascii_uppercase()
                        }
                    })
                    .collect()
            }),
        ),
        ("a space appended", Box::new(|t, _| format!("{t}%20"))),
        (
            "another key with the same id",
            Box::new(move |_, claims| other.seal(claims)),
        ),
        (
            "a key id not configured",
            Box::new(move |_, claims| newer.seal(claims)),
        ),
        ("empty", Box::new(|_, _| String::new())),
        ("4 097 characters", Box::new(|_, _| "A".repeat(4097))),
        ("10 KB", Box::new(|_, _| "A".repeat(10 * 1024))),
    ]
}

/// Claims whose token uses `-` or `_`, so the standard base64 alphabet changes it.
fn with_url_safe_characters(claims: impl Fn(&str) -> Claims) -> (String, Claims) {
    (0..1000)
        .map(|n| {
            let claims = claims(&format!("msg.{n}"));
            (keyring().seal(&claims), claims)
        })
        .find(|(token, _)| token.contains(['-', '_']))
        .expect("one in a thousand tokens has a - or _")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tokens_record_nothing_and_never_redirect() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis)
        .edge(|c| {
            // So that a 10 KB token reaches the token check; the default limit would answer 414.
            c.server.max_uri_bytes = (16 * 1024).try_into().unwrap();
        })
        .start()
        .await;
    server.use_keys(keyring());
    let (open, open_claims) = with_url_safe_characters(|m| Claims::open(dotted("acme.test", m)));
    let dest = Destination::parse("https://example.com/").unwrap();
    let (click, click_claims) =
        with_url_safe_characters(|m| Claims::click(dotted("acme.test", m), dest.clone()));

    let cases = tamperings();
    for (what, tamper) in &cases {
        // A pixel is always the GIF, so the mail never shows a broken image; nothing recorded.
        let token = tamper(&open, &open_claims);
        assert_ne!(token, open, "{what}");
        let reply = server.get(&format!("/o/{token}.gif")).await;
        assert_eq!(reply.status, StatusCode::OK, "pixel, {what}");
        assert_eq!(reply.header("content-type"), Some("image/gif"), "{what}");
        // A click is 404 and never a redirect.
        let token = tamper(&click, &click_claims);
        assert_ne!(token, click, "{what}");
        let reply = server.get(&format!("/c/{token}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "click, {what}");
        assert!(reply.header("location").is_none(), "{what}");
    }
    // A token of the other kind is refused the same way.
    assert_eq!(
        server.get(&format!("/o/{click}.gif")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&format!("/c/{open}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(list(&redis, EVENTS).is_empty(), "nothing recorded");
    let text = server.metrics().await;
    let rejected = (cases.len() + 1) as f64;
    assert_eq!(
        sample(&text, "pixelgate_tokens_rejected_total{route=\"pixel\"}"),
        Some(rejected)
    );
    assert_eq!(
        sample(&text, "pixelgate_tokens_rejected_total{route=\"click\"}"),
        Some(rejected)
    );
    // And the untouched tokens still work.
    assert_eq!(
        server.get(&format!("/o/{open}.gif")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&format!("/c/{click}")).await.status,
        StatusCode::FOUND
    );
    assert_eq!(list(&redis, EVENTS).len(), 2);
}

// ---- raw HTTP/1.1 ------------------------------------------------------------------------------

/// What the server does with the connection after its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Closes it: no further byte on it is read as a request.
    Closes,
    /// Keeps serving it: a following request is answered.
    KeepsOpen,
    /// Either; the case is about what it answered, not the connection.
    Either,
}

/// One answer read off the wire.
type Answer = Reply;

/// Splits a byte stream into HTTP/1.1 answers; a last one cut short is left out.
fn answers(bytes: &[u8]) -> Vec<Answer> {
    pixelgate_tests::http::parse_all(bytes).unwrap_or_else(|e| {
        panic!(
            "not HTTP answers ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// A request the server answers `200` after any other, with `Connection: close`.
const PROBE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// Sends `request` on a new connection and returns every answer the server gives on it. With
/// [`Then::Closes`] the server must close the connection by itself; otherwise a probe request
/// follows the expected answers, and it must be answered (`KeepsOpen`) or the connection closed.
async fn exchange(addr: SocketAddr, request: &[u8], expected: usize, then: Then) -> Vec<Answer> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything: that is fine.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    if then != Then::Closes {
        tokio::time::timeout(PATIENCE, async {
            let mut chunk = [0u8; 4096];
            while answers(&bytes).len() < expected {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("the expected answers in time");
        let _ = stream.write_all(PROBE).await;
    }
    bytes.extend(read_until_closed(&mut stream).await);
    let mut all = answers(&bytes);
    let probed = all.len() > expected
        && all
            .last()
            .is_some_and(|a| a.status == 200 && a.header("connection") == Some("close"));
    match then {
        Then::Closes => {}
        Then::KeepsOpen => {
            assert!(probed, "the connection was not kept open: {all:?}");
            all.pop();
        }
        Then::Either => {
            if probed {
                all.pop();
            }
        }
    }
    all
}

/// A request for `target` that closes its connection after the answer.
fn get(target: &[u8]) -> Vec<u8> {
    [
        b"GET ",
        target,
        b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_name_nothing() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();
    let dest = "https://example.com/landing";
    let pixel = |m: &str| server.pixel_path(&ids(m));
    let click = |m: &str| server.click_path(&ids(m), dest);
    let b = |s: String| s.into_bytes();
    // target → status; the cases that record an event are the two valid tokens at the end.
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"/o/../healthz".to_vec(), 404),
        (b"/o/%2e%2e/healthz".to_vec(), 404),
        (b"/o/%2E%2E/%2e%2e/healthz".to_vec(), 404),
        (b(format!("{}/../../healthz", pixel("p-dotdot"))), 404),
        (b(format!("/x/..{}", click("c-dotdot"))), 404),
        (b(format!("/{}", pixel("p-double-slash"))), 404),
        (b(format!("/o/{}", &pixel("p-inner-slash")[2..])), 200),
        (b(format!("{}%00", pixel("p-nul-after"))), 404),
        (
            b(format!(
                "{}%00.gif",
                pixel("p-nul-before").trim_end_matches(".gif")
            )),
            200,
        ),
        (b(format!("{}%00", click("c-nul"))), 404),
        ([click("c-raw-nul").as_bytes(), b"\0"].concat(), 400),
        (b"/o/%c0%ae%c0%ae/healthz".to_vec(), 404),
        (
            b(format!("/c/%c0%ae%c0%ae{}", &click("c-overlong")[2..])),
            404,
        ),
        (b"/o/\xc3\xa9.gif".to_vec(), 200),
        (b"/c/\xc3\xa9".to_vec(), 404),
        (
            [click("c-raw-rlo").as_bytes(), "\u{202e}".as_bytes()].concat(),
            404,
        ),
        (b"/o/\xff.gif".to_vec(), 400),
        (b"/c/\x1b[31m".to_vec(), 400),
        (b(pixel("p-case").replace("/o/", "/O/")), 404),
        (b(pixel("p-ext").replace(".gif", ".GIF")), 404),
        (b(format!("{}/", click("c-slash"))), 404),
        (b(format!("{}%20", click("c-space"))), 404),
        (b"/healthz/..".to_vec(), 404),
        (b"*".to_vec(), 404),
        // The sealed destination is the only one: a query or another authority changes nothing.
        (
            b(format!("{}?url=https://evil.example/", click("c-query"))),
            302,
        ),
        (
            b(format!("http://evil.example{}", click("c-absolute"))),
            302,
        ),
    ];
    for (target, status) in &cases {
        let what = String::from_utf8_lossy(target);
        let all = exchange(addr, &get(target), 1, Then::Closes).await;
        assert_eq!(all.len(), 1, "{what}: {all:?}");
        assert_eq!(all[0].status, *status, "{what}");
        match status {
            302 => assert_eq!(all[0].header("location"), Some(dest), "{what}"),
            _ => assert!(all[0].header("location").is_none(), "{what}"),
        }
    }
    assert_eq!(messages(&redis, EVENTS), ["c-query", "c-absolute"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_targets_and_headers_are_refused_before_any_work() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();
    let request = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n")
            .into_bytes()
    };
    let long = |n: usize| format!("/o/{}.gif", "A".repeat(n - 7));
    let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: {i}\r\n")).collect() };
    // `Host: t` and `Connection: close` are 2 headers and 20 bytes of names and values.
    let big = |n: usize| format!("X-Big: {}\r\n", "b".repeat(n));
    // request → status (defaults: 8 KiB target, 64 headers, 16 KiB of headers). The limits count
    // what the client sent: the edge's own request id is not a header of the request.
    let cases = [
        // Just inside the limits: the pixel answers (a token that does not open).
        (request(&long(8192), ""), 200),
        (request(&long(8193), ""), 414),
        (request("/healthz", &headers(62)), 200),
        (request("/healthz", &headers(63)), 431),
        (request("/healthz", &headers(65)), 431),
        (request("/healthz", &big(16_384 - 20 - 5)), 200),
        (request("/healthz", &big(16_384 - 20 - 4)), 431),
        (request("/healthz", &big(16_384)), 431),
        // Far past every limit: hyper stops reading at its buffer's end.
        (request(&long(100_000), ""), 431),
        (
            request("/healthz", &format!("Cookie: {}\r\n", "c".repeat(100_000))),
            431,
        ),
    ];
    for (request, status) in &cases {
        let what = String::from_utf8_lossy(&request[..40]);
        let all = exchange(addr, request, 1, Then::Closes).await;
        assert_eq!(
            all.iter().map(|a| a.status).collect::<Vec<_>>(),
            [*status],
            "{what}"
        );
    }
    assert!(list(&redis, EVENTS).is_empty());
}

// ---- request smuggling -------------------------------------------------------------------------

/// Smuggling attempts, each hiding a valid click request (`{S}`, `{N}` its length, `{X}` that
/// in hex) where a confused parser would read it as a second request → the answers, then what
/// happens to the connection. The smuggled click must never be answered or recorded.
fn smuggling() -> Vec<(&'static str, &'static str, &'static [u16], Then)> {
    vec![
        (
            "CL.TE: Content-Length and Transfer-Encoding",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
            &[200],
            Then::Closes,
        ),
        (
            "TE.CL: Transfer-Encoding and Content-Length",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{X}\r\n{S}\r\n0\r\n\r\n",
            &[200],
            Then::Closes,
        ),
        (
            // Framed by its Transfer-Encoding alone, as RFC 9112 §6.1 allows (hyper drops the
            // Content-Length): an empty body, so the pixel is answered, then the connection is
            // closed and what follows is never read.
            "CL and TE on a pixel",
            "GET /o/x.gif HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
            &[200],
            Then::Closes,
        ),
        (
            "CL and TE on a pixel, with a body",
            "GET /o/x.gif HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nxxxxx\r\n0\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Content-Length: +N",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: +{N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Content-Length: -1",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Content-Length in hex",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0x{X}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "two different Content-Lengths",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: {N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Content-Length list",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0, {N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Transfer-Encoding: xchunked",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Transfer-Encoding: chunked, identity",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "space before the colon",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "GET /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "vertical tab before chunked",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "chunk-size overflow",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff{X}\r\n{S}\r\n0\r\n\r\n",
            &[200],
            Then::Closes,
        ),
        (
            "bare LF ending the last chunk",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\n\n{S}",
            &[200],
            Then::Closes,
        ),
        (
            "bare LF hiding Transfer-Encoding",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\nTransfer-Encoding: chunked\r\nContent-Length: {N}\r\n\r\n{S}",
            &[200],
            Then::Closes,
        ),
        (
            "bare LF hiding a second Content-Length",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\nContent-Length: 0\r\nContent-Length: {N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "CR inside a header value",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\rContent-Length: {N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "obs-fold continuing Transfer-Encoding",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n chunked\r\nContent-Length: {N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "NUL inside a header value",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\0b\r\nContent-Length: {N}\r\n\r\n{S}",
            &[400],
            Then::Closes,
        ),
        (
            "garbage after the HTTP version",
            "GET /healthz HTTP/1.1 {S}",
            &[400],
            Then::Closes,
        ),
        // A body on a tracking route is refused before the token is read; hyper then drains the
        // body (the hidden click with it) or closes.
        (
            "a click hidden in a click's body",
            "GET /c/x HTTP/1.1\r\nHost: t\r\nContent-Length: {N}\r\n\r\n{S}",
            &[400],
            Then::Either,
        ),
        (
            "a click hidden in a health check's body",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: {N}\r\n\r\n{S}",
            &[200],
            Then::Either,
        ),
        // Tolerated: bare LF line ends (RFC 9112 §2.2 allows it) and an h2c upgrade request,
        // which the edge does not perform; neither makes a second request of one.
        (
            "bare LF line endings",
            "GET /healthz HTTP/1.1\nHost: t\n\n",
            &[200],
            Then::KeepsOpen,
        ),
        (
            "h2c upgrade",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            &[200],
            Then::KeepsOpen,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_requests_are_never_answered_or_recorded() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();
    let cases = smuggling();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (what, template, statuses, then)) in cases.into_iter().enumerate() {
        let click = server.click_path(&ids(&format!("smuggled-{n}")), "https://evil.example/");
        let hidden = format!("GET {click} HTTP/1.1\r\nHost: t\r\n\r\n");
        let request = template
            .replace("{S}", &hidden)
            .replace("{N}", &hidden.len().to_string())
            .replace("{X}", &format!("{:x}", hidden.len()));
        tasks.spawn(async move {
            let all = exchange(addr, request.as_bytes(), statuses.len(), then).await;
            let got: Vec<u16> = all.iter().map(|a| a.status.as_u16()).collect();
            assert_eq!(got, statuses, "{what}: {all:?}");
            assert!(all.iter().all(|a| a.header("location").is_none()), "{what}");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(
        list(&redis, EVENTS).is_empty(),
        "a smuggled click was recorded"
    );
    assert!(list(&redis, OVERFLOW).is_empty());
}

// ---- HTTP/2 ------------------------------------------------------------------------------------

/// HTTP/2 frames by hand, for what the `h2` client will not do (break the protocol's limits).
mod frames {
    pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub(super) const HEADERS: u8 = 0x1;
    pub(super) const RST_STREAM: u8 = 0x3;
    pub(super) const SETTINGS: u8 = 0x4;
    pub(super) const GOAWAY: u8 = 0x7;
    pub(super) const CONTINUATION: u8 = 0x9;
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const END_HEADERS: u8 = 0x4;
    pub(super) const CANCEL: u32 = 0x8;
    pub(super) const REFUSED_STREAM: u32 = 0x7;
    pub(super) const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = len[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    /// HPACK for `GET http://?{path}`: static-table method and scheme, literal path.
    pub(super) fn get(path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
        block.extend(path.as_bytes());
        block
    }

    /// The preface and an empty SETTINGS frame: the start of every client connection.
    pub(super) fn hello() -> Vec<u8> {
        [PREFACE, &frame(SETTINGS, 0, 0, &[])].concat()
    }

    /// A frame the server sent: its type and payload.
    #[derive(Debug)]
    pub(super) struct Frame {
        pub(super) kind: u8,
        pub(super) payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a `RST_STREAM` or `GOAWAY`.
        pub(super) fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            Some(u32::from_be_bytes(
                self.payload[at..at + 4].try_into().unwrap(),
            ))
        }
    }

    pub(super) fn parse(mut bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            if bytes.len() < 9 + len {
                break;
            }
            out.push(Frame {
                kind: bytes[3],
                payload: bytes[9..9 + len].to_vec(),
            });
            bytes = &bytes[9 + len..];
        }
        out
    }
}

/// Writes `bytes` as one HTTP/2 client and returns the frames the server sent until it closed.
async fn h2_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<frames::Frame> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may hang up before it has read everything.
    let _ = stream.write_all(bytes).await;
    frames::parse(&read_until_closed(&mut stream).await)
}

/// The server's `GOAWAY` error code, when it sent one.
fn goaway(frames: &[frames::Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == frames::GOAWAY)
        .and_then(frames::Frame::error_code)
}

/// A new HTTP/2 client is still served.
async fn fresh_h2_client_is_served(addr: SocketAddr) {
    let mut client = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    let reply = h2_get(&mut client, &format!("http://{addr}/healthz")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_is_cut_off_and_others_are_still_served() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();

    // 1000 HEADERS each followed at once by RST_STREAM (CVE-2023-44487): past 64 resets of
    // streams not yet served, GOAWAY with ENHANCE_YOUR_CALM, and the connection ends.
    let mut bytes = frames::hello();
    for n in 0..1000u32 {
        let id = 2 * n + 1;
        let flags = frames::END_STREAM | frames::END_HEADERS;
        bytes.extend(frames::frame(
            frames::HEADERS,
            flags,
            id,
            &frames::get("/healthz"),
        ));
        bytes.extend(frames::frame(
            frames::RST_STREAM,
            0,
            id,
            &frames::CANCEL.to_be_bytes(),
        ));
    }
    let got = h2_raw(addr, &bytes).await;
    assert_eq!(goaway(&got), Some(frames::ENHANCE_YOUR_CALM), "{got:?}");
    let served = got.iter().filter(|f| f.kind == frames::HEADERS).count();
    assert!(served < 100, "{served} of 1000 reset streams were served");

    // The same through the h2 client, stream by stream: its connection is ended too.
    let (send, connection) = h2::client::handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut send = Some(send);
    for _ in 0..10_000 {
        let Some(ready) = send.take() else { break };
        let Ok(mut ready) = ready.ready().await else {
            break;
        };
        let request = http::Request::get(format!("http://{addr}/healthz"))
            .body(())
            .unwrap();
        if let Ok((_, mut stream)) = ready.send_request(request, false) {
            stream.send_reset(h2::Reason::CANCEL);
            send = Some(ready);
        }
    }
    let ended = tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the server ends the connection")
        .unwrap()
        .expect_err("with an error");
    // GOAWAY, or the hang-up that follows it when the client was still writing.
    assert!(
        ended.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || ended.is_io(),
        "{ended}"
    );

    fresh_h2_client_is_served(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_continuation_floods_are_cut_off() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();
    // HEADERS without END_HEADERS, then CONTINUATION frames without end (CVE-2024-27316 and
    // friends): with header fields, and empty. Either way the server stops reading at a bound
    // (`max_header_list_size`, or its count of CONTINUATION frames) with GOAWAY.
    // A literal field `x: aaaaaaaa` (HPACK, with indexing), repeated; or nothing at all.
    let field = b"\x40\x01x\x08aaaaaaaa";
    for payload in [&field[..], &[][..]] {
        let mut bytes = frames::hello();
        bytes.extend(frames::frame(
            frames::HEADERS,
            frames::END_STREAM,
            1,
            &frames::get("/healthz"),
        ));
        for _ in 0..20_000 {
            bytes.extend(frames::frame(frames::CONTINUATION, 0, 1, payload));
        }
        let got = h2_raw(addr, &bytes).await;
        assert!(goaway(&got).is_some(), "{got:?}");
        assert!(
            got.iter().all(|f| f.kind != frames::HEADERS),
            "nothing served"
        );
    }
    fresh_h2_client_is_served(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_past_the_limit_are_refused() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();
    // 300 streams opened at once, ignoring SETTINGS_MAX_CONCURRENT_STREAMS (100 by default),
    // each left open (no END_STREAM): the first 100 are served, those past the limit refused
    // with REFUSED_STREAM, and the connection lives on.
    let mut bytes = frames::hello();
    for n in 0..300u32 {
        let headers = frames::frame(
            frames::HEADERS,
            frames::END_HEADERS,
            2 * n + 1,
            &frames::get("/healthz"),
        );
        bytes.extend(headers);
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let complete = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 65536];
        loop {
            got = frames::parse(&buf);
            let answered = got.iter().filter(|f| f.kind == frames::HEADERS).count();
            let refused = got
                .iter()
                .filter(|f| {
                    f.error_code() == Some(frames::REFUSED_STREAM) && f.kind == frames::RST_STREAM
                })
                .count();
            if answered + refused >= 300 {
                return (answered, refused);
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed: {got:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (answered, refused) = complete.expect("every stream answered or refused");
    // (100, 200) when the 300 arrive in one read, as they do on loopback; were they split,
    // streams freed in between would be served, but the first burst past 100 still refused.
    assert!(
        answered >= 100 && refused > 0,
        "{answered} served, {refused} refused"
    );
    assert!(goaway(&got).is_none(), "the connection is not ended for it");
    fresh_h2_client_is_served(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_like_idle_http1_ones() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| c.server.header_read_timeout = Duration::from_millis(300))
        .start()
        .await;
    let addr = server.public_addr();
    // Each is closed after about 300 ms (the header read timeout; PATIENCE is only a bound),
    // though it never answers the server's pings or its GOAWAY: the preface and nothing
    // more; a HEADERS block never ended; one request answered, then silence.
    let half_headers = frames::frame(frames::HEADERS, 0, 1, &frames::get("/healthz"));
    let one_request = frames::frame(
        frames::HEADERS,
        frames::END_STREAM | frames::END_HEADERS,
        1,
        &frames::get("/healthz"),
    );
    for (what, then, answers) in [
        ("nothing", vec![], 0),
        ("half a HEADERS block", half_headers, 0),
        ("one request", one_request, 1),
    ] {
        let got = h2_raw(addr, &[frames::hello(), then].concat()).await;
        let answered = got.iter().filter(|f| f.kind == frames::HEADERS).count();
        assert_eq!(answered, answers, "{what}: {got:?}");
        assert_eq!(goaway(&got), Some(0), "{what}: GOAWAY with NO_ERROR");
    }

    // A well-behaved client that answers pings is closed as well, once it has nothing in flight.
    let (mut send, connection) = h2::client::handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let reply = h2_get(&mut send, &format!("http://{addr}/healthz")).await;
    assert_eq!(reply.status, StatusCode::OK);
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the server closes an idle HTTP/2 connection")
        .unwrap()
        .expect("gracefully");
}

// ---- forwarded headers -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_change_neither_the_limit_nor_the_ip() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.rate_limit.per_second = 1.try_into().unwrap();
            c.rate_limit.burst = 3.try_into().unwrap();
        })
        .start()
        .await;
    let base = server.public_url();
    // A new address in every request, as a client trying to get a fresh limit each time would.
    let spoofs: [&[(&str, &str)]; 4] = [
        &[("x-forwarded-for", "203.0.113.1")],
        &[("forwarded", "for=203.0.113.2")],
        &[
            ("x-forwarded-for", "203.0.113.3"),
            ("forwarded", "for=203.0.113.4"),
        ],
        &[("x-real-ip", "203.0.113.5"), ("x-forwarded-for", "::1")],
    ];
    for (n, headers) in spoofs.iter().enumerate() {
        let path = server.pixel_path(&ids(&format!("msg-{n}")));
        let reply = server.send(Method::GET, &base, &path, headers).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // One client all along: three events within its burst, the fourth over it, all 127.0.0.1.
    assert_eq!(messages(&redis, EVENTS), ["msg-0", "msg-1", "msg-2"]);
    assert_eq!(messages(&redis, OVERFLOW), ["msg-3"]);
    for e in events(&redis, EVENTS)
        .iter()
        .chain(&events(&redis, OVERFLOW))
    {
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
    }
    let reply = server
        .send(
            Method::GET,
            &base,
            "/nope",
            &[("x-forwarded-for", "198.51.100.9")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "still limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_from_a_trusted_proxy_never_names_a_client_it_did_not_vouch_for() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis)
        .edge(|c| {
            c.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .start()
        .await;
    let addr = server.public_addr();
    // header and value from the trusted proxy (127.0.0.1) → the event's ip.
    let cases: [(&str, &[u8], &str); 16] = [
        ("x-forwarded-for", b"garbage", "127.0.0.1"),
        ("x-forwarded-for", b"203.0.113.7, garbage", "127.0.0.1"),
        ("x-forwarded-for", b"garbage, 203.0.113.7", "203.0.113.7"),
        ("x-forwarded-for", b"999.0.0.1", "127.0.0.1"),
        ("x-forwarded-for", b"203.0.113.7 203.0.113.8", "127.0.0.1"),
        ("x-forwarded-for", b"fe80::1%eth0", "127.0.0.1"),
        ("x-forwarded-for", b"0x7f.1", "127.0.0.1"),
        ("x-forwarded-for", b",,,", "127.0.0.1"),
        ("x-forwarded-for", b"203.0.113.7\xff", "127.0.0.1"),
        ("x-forwarded-for", b"::ffff:203.0.113.7", "203.0.113.7"),
        ("x-forwarded-for", b"203.0.113.7, 127.0.0.2", "203.0.113.7"),
        ("forwarded", b"for=unknown", "127.0.0.1"),
        ("forwarded", b"for=\"_hidden\"", "127.0.0.1"),
        ("forwarded", b"for=\"203.0.113.7", "127.0.0.1"),
        ("forwarded", b"for=[2001:db8::7]", "2001:db8::7"),
        ("forwarded", b"by=203.0.113.9;proto=https", "127.0.0.1"),
    ];
    for (n, (name, value, _)) in cases.iter().enumerate() {
        let path = server.pixel_path(&ids(&format!("msg-{n}")));
        let request = [
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n{name}: ").as_bytes(),
            value,
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let all = exchange(addr, &request, 1, Then::Closes).await;
        assert_eq!(
            all[0].status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(value)
        );
    }
    let ips: Vec<String> = events(&redis, EVENTS)
        .iter()
        .map(|e| e["ip"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<&str> = cases.iter().map(|(_, _, ip)| *ip).collect();
    assert_eq!(ips, want);
}

// ---- logs --------------------------------------------------------------------------------------

/// Every access-log event, each field as the edge handed it to `tracing` (before any formatter
/// could escape it).
#[derive(Clone, Default)]
struct AccessLog(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
        // `%value` fields arrive as their `Display`, through this `Debug`.
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for AccessLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "pixelgate::access" {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

/// What the JSON formatter writes, as the product's `log.format = "json"` does.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Characters that could rewrite a terminal or fake a line: C0 and C1 controls, DEL, the
/// Unicode line and paragraph separators, and bidirectional overrides.
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

// One thread, so the subscriber set for this test is the one every server task logs to.
#[tokio::test(flavor = "current_thread")]
async fn control_characters_never_reach_the_access_log_raw() {
    let log = AccessLog::default();
    let written = Written::default();
    let sink = written.clone();
    let subscriber = tracing_subscriber::registry().with(log.clone()).with(
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(move || sink.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let redis = RedisServer::start();
    let server = hostile_server(&redis)
        .edge(|c| {
            c.server.access_log = true;
        })
        .start()
        .await;
    let addr = server.public_addr();
    // User-Agent bytes → the `ua` of the event (valid JSON, cut at the first invalid UTF-8).
    let cases: [(&[u8], &str); 9] = [
        (b"tab\there", "tab\there"),
        ("csi \u{9b}31m red".as_bytes(), "csi \u{9b}31m red"),
        (b"raw csi \x9b31m", "raw csi "),
        ("next line \u{85}fake".as_bytes(), "next line \u{85}fake"),
        ("line sep \u{2028}fake".as_bytes(), "line sep \u{2028}fake"),
        ("bidi \u{202e}txt.exe".as_bytes(), "bidi \u{202e}txt.exe"),
        (b"quote \" and backslash \\", "quote \" and backslash \\"),
        (b"latin-1 \xe9t\xe9", "latin-1 "),
        ("\u{1b}[2J".as_bytes(), ""),
    ];
    let mut answered_uas = Vec::new();
    for (n, (ua, _)) in cases.iter().enumerate() {
        let path = server.pixel_path(&ids(&format!("msg-{n}")));
        let request = [
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: ").as_bytes(),
            ua,
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let all = exchange(addr, &request, 1, Then::Closes).await;
        // A raw ESC (or any C0 control but tab) is not a header value: hyper answers 400 itself.
        let status = if ua.contains(&0x1b) { 400 } else { 200 };
        assert_eq!(all[0].status, status, "{}", String::from_utf8_lossy(ua));
        if status == 200 {
            answered_uas.push(n);
        }
    }
    // Control characters in the path too: percent-encoded, and raw UTF-8 ones.
    for target in [
        &b"/o/%1b[2J%0d%0a.gif"[..],
        "/o/\u{202e}\u{85}.gif".as_bytes(),
    ] {
        let all = exchange(addr, &get(target), 1, Then::Closes).await;
        assert_eq!(all[0].status, 200);
    }
    // A client's own request id, made to look like more fields: never the request's id.
    let forged = "0000000000000001 peer=203.0.113.9:1 uri=/c/forged status=302 \"";
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: {forged}\r\nConnection: close\r\n\r\n"
    );
    let all = exchange(addr, request.as_bytes(), 1, Then::Closes).await;
    assert_eq!(all[0].status, 200);
    assert_ne!(all[0].header("x-request-id"), Some(forged));
    // HTTP/2 names the request by an absolute URI; the log names it by its path all the same,
    // so one parser reads the lines of every client.
    let mut h2 = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    let h2_reply = h2_get(&mut h2, &format!("http://{addr}/o/h2-tampered.gif?x=1")).await;
    assert_eq!(h2_reply.status, StatusCode::OK);

    // The events: `ua` as the table says, each record valid JSON.
    let stored = list(&redis, EVENTS);
    assert_eq!(stored.len(), answered_uas.len());
    for (json, n) in stored.iter().zip(&answered_uas) {
        let event: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(event["message"], format!("msg-{n}"));
        assert_eq!(event["ua"], cases[*n].1, "{json}");
        assert!(Event::from_json(json.as_bytes()).is_ok());
    }

    // The access log: one line per answered request, no field with a dangerous character, and
    // each User-Agent there in its escaped form.
    let lines = log.0.lock().unwrap().clone();
    assert_eq!(lines.len(), answered_uas.len() + 4, "{lines:#?}");
    for line in &lines {
        for (field, value) in line {
            assert!(
                !value.chars().any(is_dangerous),
                "{field} = {value:?} in the access log"
            );
        }
    }
    let uas: Vec<&str> = lines.iter().map(|l| l["ua"].as_str()).collect();
    assert!(uas.contains(&"tab\\there"), "{uas:?}");
    assert!(uas.contains(&"csi \\u{9b}31m red"), "{uas:?}");
    assert!(uas.contains(&"bidi \\u{202e}txt.exe"), "{uas:?}");
    assert!(uas.contains(&"quote \\\" and backslash \\\\"), "{uas:?}");
    let uris: Vec<&str> = lines.iter().map(|l| l["uri"].as_str()).collect();
    assert!(uris.contains(&"/o/\\u{202e}\\u{85}.gif"), "{uris:?}");
    assert!(uris.contains(&"/o/h2-tampered.gif?x=1"), "{uris:?}");
    assert!(uris.iter().all(|u| u.starts_with('/')), "{uris:?}");
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str()).collect();
    assert!(
        ids.iter()
            .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "every id the edge's own: {ids:?}"
    );

    // As the JSON formatter writes them: one JSON object a line, no raw control byte.
    // Each key once: a field named like one of the formatter's own keys would be lost.
    let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#""target":"pixelgate::access""#))
        .collect();
    assert_eq!(access.len(), lines.len());
    for line in access {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["timestamp", "level", "target", "uri", "ua", "status"] {
            let quoted = format!("\"{key}\":");
            assert_eq!(line.matches(&quoted).count(), 1, "{key} in {line}");
            assert!(!value[key].is_null(), "{key} in {line}");
        }
    }
    assert!(
        !text
            .trim_end()
            .chars()
            .any(|c| c != '\n' && is_dangerous(c))
    );
}

// ---- bodies of no bytes, half-closed connections -----------------------------------------------

/// A body of zero bytes is no body: a chunked pixel with only its last chunk, and an HTTP/2
/// pixel whose headers left the stream open and whose one DATA frame is empty, are answered and
/// recorded. A byte of body is still refused, on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_body_is_no_body_and_any_byte_of_one_is_refused() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let addr = server.public_addr();
    let chunked = |path: &str, body: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        )
        .into_bytes()
    };
    let all = exchange(
        addr,
        &chunked(&server.pixel_path(&ids("msg-chunked-empty")), "0\r\n\r\n"),
        1,
        Then::Closes,
    )
    .await;
    assert_eq!(all[0].status, 200);
    let all = exchange(
        addr,
        &chunked(
            &server.pixel_path(&ids("msg-chunked-byte")),
            "1\r\nx\r\n0\r\n\r\n",
        ),
        1,
        Then::Closes,
    )
    .await;
    assert_eq!(all[0].status, 400);

    let mut h2 = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    for (message, data, status) in [
        ("msg-h2-empty", &b""[..], StatusCode::OK),
        ("msg-h2-byte", &b"x"[..], StatusCode::BAD_REQUEST),
    ] {
        let uri = format!("http://{addr}{}", server.pixel_path(&ids(message)));
        let request = http::Request::get(uri).body(()).unwrap();
        let mut ready = h2.clone().ready().await.unwrap();
        let (response, mut body) = ready.send_request(request, false).unwrap();
        body.send_data(bytes::Bytes::copy_from_slice(data), true)
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), status, "{message}");
        h2 = ready;
    }
    assert_eq!(
        messages(&redis, EVENTS),
        ["msg-chunked-empty", "msg-h2-empty"]
    );
}

/// A client that sends its requests and then shuts its side of the connection down (half
/// close) gets every answer, the last one too, and every pixel is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_connection_gets_every_answer() {
    let redis = RedisServer::start();
    let server = hostile_server(&redis).start().await;
    let mut requests = Vec::new();
    for n in 0..5 {
        let path = server.pixel_path(&ids(&format!("msg-half-{n}")));
        requests.extend(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes());
    }
    let mut stream = TcpStream::connect(server.public_addr()).await.unwrap();
    stream.write_all(&requests).await.unwrap();
    stream.shutdown().await.unwrap();
    let all = answers(&read_until_closed(&mut stream).await);
    assert_eq!(
        all.iter().map(|a| a.status.as_u16()).collect::<Vec<_>>(),
        [200; 5]
    );
    assert_eq!(messages(&redis, EVENTS).len(), 5);
}

// ---- readiness floods --------------------------------------------------------------------------

/// A flood of `/readyz` on the public listener is limited like any other request, and however
/// many probes come, Redis is asked at most once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_floods_are_limited_and_cost_redis_one_ping_a_second() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let pings = || -> u64 {
        let info = redis.call(&["INFO", "commandstats"]).text().unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = pings();
    let started = std::time::Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..300 {
        let reply = server.get("/readyz").await;
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let asked = pings() - before;
    assert!(
        statuses.get(&429).is_some_and(|&n| n > 0),
        "over the limit: {statuses:?}"
    );
    assert!(
        statuses.get(&200).is_some_and(|&n| n >= 100),
        "{statuses:?}"
    );
    // One PING per started second, and one more the pool may send to check a connection.
    assert!(
        asked as f64 <= seconds.ceil() * 2.0 + 2.0,
        "{asked} PINGs for 300 probes in {seconds:.1} s"
    );
}
