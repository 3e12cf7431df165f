//! The edge end to end: `Edge::open` and `Edge::run` on 127.0.0.1 port 0 against a real
//! redis-server, driven over real sockets (HTTP/1.1, HTTP/2 with prior knowledge, TLS with SNI
//! and ALPN).
//!
//! What reached Redis is read with the harness's own RESP client. An answered tracking request
//! must already have its event in Redis when the answer arrives, so tests read Redis right after
//! the answer instead of polling; they poll (with a deadline) only for state changes that take
//! time, like readiness after Redis stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    num::NonZeroU32,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use common::*;
use http::{HeaderMap, Method, StatusCode};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use pixelgate_core::{Claims, Destination, Event, Ids};
use pixelgate_edge::config::CertificateConfig;
use pixelgate_tests::RedisServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const NO_CACHE: &str = "no-store, no-cache, must-revalidate, max-age=0";

/// A valid transparent 1×1 GIF89a, with the headers that keep every cache from storing it.
fn assert_gif(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.text());
    let gif = &reply.body;
    assert_eq!(gif.len(), 43, "the GIF is 43 bytes");
    assert!(gif.starts_with(b"GIF89a"));
    assert_eq!(u16::from_le_bytes([gif[6], gif[7]]), 1, "width");
    assert_eq!(u16::from_le_bytes([gif[8], gif[9]]), 1, "height");
    let gce = gif
        .windows(3)
        .position(|w| w == [0x21, 0xf9, 0x04])
        .expect("a graphic control extension");
    assert_eq!(gif[gce + 3] & 1, 1, "its colour is transparent");
    assert_eq!(gif[42], 0x3b, "the GIF trailer ends it");
    assert_gif_headers(&reply.headers);
}

fn assert_gif_headers(headers: &HeaderMap) {
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(h("content-type"), Some("image/gif"));
    assert_eq!(h("cache-control"), Some(NO_CACHE));
    assert_eq!(h("pragma"), Some("no-cache"));
    assert_eq!(h("expires"), Some("0"));
}

/// `2026-11-23T07:00:00.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The token with one character in its middle changed.
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pixel_is_the_gif_and_records_one_open_with_every_core_field() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let ua = "Mozilla/5.0 (X11; Linux x86_64) pixelgate-test/1 \"quoted\"";
    let before = unix_now();
    let reply = server
        .send(
            Method::GET,
            &server.public_url(),
            &server.pixel_path(&ids("msg-000123")),
            &[("user-agent", ua)],
        )
        .await;
    assert_gif(&reply);

    let events = events(&redis, EVENTS);
    assert_eq!(events.len(), 1, "one open for one pixel: {events:?}");
    let e = &events[0];
    assert_eq!(e["v"], 1);
    assert_eq!(e["kind"], "open");
    assert_eq!(e["account"], "acme");
    assert_eq!(e["campaign"], "spring-sale");
    assert_eq!(e["message"], "msg-000123");
    assert_eq!(e["recipient"], "r-42");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["ua"], ua);
    assert!(e.get("url").is_none(), "an open has no url: {e}");
    assert!(e.get("limited").is_none(), "not limited: {e}");
    let id = e["id"].as_str().expect("id is a string");
    assert_eq!(id.len(), 36, "hyphenated UUID: {id}");
    let ts = e["ts"].as_str().expect("ts is a string");
    assert!(is_rfc3339_millis_utc(ts), "ts {ts}");

    let event = Event::from_json(list(&redis, EVENTS)[0].as_bytes()).unwrap();
    assert_eq!(event.id.get_version_num(), 7, "id {id} is a UUIDv7");
    assert_eq!(event.id.to_string(), id);
    let at = event
        .ts
        .to_system_time()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (before - 1.0..unix_now() + 1.0).contains(&at),
        "ts {ts} is when the pixel was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_redirects_exactly_to_its_destination_and_records_a_click() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let destination = "https://example.com/landing/spring?utm_source=mail&x=%C3%A9#top";
    assert_eq!(
        Destination::parse(destination).unwrap().as_str(),
        destination,
        "the test's destination is already in its canonical form"
    );
    let reply = server
        .send(
            Method::GET,
            &server.public_url(),
            &server.click_path(&ids("msg-c"), destination),
            &[("user-agent", "clicker")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some(destination));
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    let events = events(&redis, EVENTS);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["kind"], "click");
    assert_eq!(e["url"], destination);
    assert_eq!(e["message"], "msg-c");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["ua"], "clicker");
    assert_eq!(e["v"], 1);
    assert!(is_rfc3339_millis_utc(e["ts"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_record_nothing_and_never_redirect() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let keys = server.keys();
    let open = keys.seal(&Claims::open(ids("msg-open")));
    let dest = Destination::parse("https://example.com/").unwrap();
    let click = keys.seal(&Claims::click(ids("msg-click"), dest.clone()));
    let past = SystemTime::now() - Duration::from_secs(60);
    let expired_click = keys.seal(&Claims::click(ids("msg-expired"), dest).expiring_at(past));
    let expired_open = keys.seal(&Claims::open(ids("msg-expired")).expiring_at(past));

    // A pixel never breaks the mail: tampered, foreign, expired or empty, it is the same GIF.
    for token in [
        tamper(&open),
        "garbage".to_owned(),
        String::new(),
        click.clone(), // a click token is not a pixel
        expired_open,
    ] {
        assert_gif(&server.get(&format!("/o/{token}.gif")).await);
    }
    // A click that does not open is 404, never a redirect.
    for token in [
        tamper(&click),
        "garbage".to_owned(),
        open.clone(), // a pixel token is not a click
        expired_click,
    ] {
        let reply = server.get(&format!("/c/{token}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "/c/{token}");
        assert!(reply.header("location").is_none());
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/plain"),
            "a short text body"
        );
        assert!((1..100).contains(&reply.body.len()));
    }
    // Nothing was recorded: the one event in Redis is the valid pixel sent last.
    assert_gif(&server.get(&format!("/o/{open}.gif")).await);
    assert_eq!(messages(&redis, EVENTS), ["msg-open"]);
    let text = server.metrics().await;
    assert_eq!(
        sample(&text, "pixelgate_tokens_rejected_total{route=\"pixel\"}"),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, "pixelgate_tokens_rejected_total{route=\"click\"}"),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_like_get_without_a_body() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let base = server.public_url();
    let pixel = server
        .send(Method::HEAD, &base, &server.pixel_path(&ids("msg-h1")), &[])
        .await;
    assert_eq!(pixel.status, StatusCode::OK);
    assert!(pixel.body.is_empty());
    assert_gif_headers(&pixel.headers);

    let dest = "https://example.com/head";
    let click = server
        .send(
            Method::HEAD,
            &base,
            &server.click_path(&ids("msg-h2"), dest),
            &[],
        )
        .await;
    assert_eq!(click.status, StatusCode::FOUND);
    assert_eq!(click.header("location"), Some(dest));
    assert!(click.body.is_empty());

    let events = events(&redis, EVENTS);
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["open", "click"], "a HEAD records like a GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_get_405_and_other_paths_404() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let base = server.public_url();
    let pixel = server.pixel_path(&ids("msg-m"));
    let click = server.click_path(&ids("msg-m"), "https://example.com/");
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        for path in [&pixel, &click] {
            let reply = server.send(method.clone(), &base, path, &[]).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(reply.header("allow"), Some("GET, HEAD"));
            assert!(reply.header("location").is_none());
        }
    }
    for path in ["/", "/nope", "/o/", "/c", "/o/x.png", "/healthz/"] {
        assert_eq!(
            server.get(path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // No normalisation: a valid token behind `//` or `..` names nothing.
    let addr = server.public_addr();
    for target in [
        "//o/x.gif".to_owned(),
        "/o/../c/x".to_owned(),
        format!("/{pixel}"),
        format!("/o/..{click}"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let reply = raw(addr, request.as_bytes()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{target}");
        assert!(reply.header("location").is_none());
    }
    assert!(list(&redis, EVENTS).is_empty(), "nothing recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_bodies_are_refused() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.server.max_uri_bytes = 512.try_into().unwrap();
            c.server.max_header_bytes = 4096.try_into().unwrap();
        })
        .start()
        .await;
    let addr = server.public_addr();
    let pixel = server.pixel_path(&ids("msg-ok"));
    assert!(pixel.len() < 512);
    assert_gif(&server.get(&pixel).await);

    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")
    };
    let long = format!("/o/{}.gif", "a".repeat(600));
    assert_eq!(
        raw(addr, get(&long, "").as_bytes()).await.status,
        StatusCode::URI_TOO_LONG
    );
    let many: String = (0..70).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    assert_eq!(
        raw(addr, get("/o/x.gif", &many).as_bytes()).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "too many headers"
    );
    let big = format!("X-Big: {}\r\n", "b".repeat(5000));
    assert_eq!(
        raw(addr, get("/o/x.gif", &big).as_bytes()).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "oversized headers"
    );

    // A body on a tracking route is refused before the token is looked at: nothing recorded.
    let with_body = |target: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        )
    };
    let chunked = format!(
        "GET {pixel} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let click = server.click_path(&ids("msg-body"), "https://example.com/");
    for request in [with_body(&pixel), with_body(&click), chunked] {
        let reply = raw(addr, request.as_bytes()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{request}");
        assert!(reply.header("location").is_none());
    }
    assert_eq!(messages(&redis, EVENTS), ["msg-ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_while_pixels_and_clicks_keep_answering() {
    let mut redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .queue(|q| q.ack_timeout = Duration::from_millis(200))
        .start()
        .await;
    for base in [server.admin_url(), server.public_url()] {
        let ready = server.send(Method::GET, &base, "/readyz", &[]).await;
        assert_eq!(ready.status, StatusCode::OK, "{base}");
        assert_eq!(ready.header("content-type"), Some("application/json"));
        assert_eq!(ready.json()["status"], "ready");
    }

    redis.kill();
    let s = &server;
    let down = eventually(
        "/readyz to answer 503",
        Duration::from_secs(10),
        || async move {
            let reply = s.admin_get("/readyz").await;
            (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(reply)
        },
    )
    .await;
    assert_eq!(down.header("content-type"), Some("application/json"));
    let reason = down.json()["reason"].clone();
    assert!(
        reason.as_str().is_some_and(|r| !r.is_empty()),
        "a reason: {}",
        down.text()
    );
    // The mail never shows a broken image or a dead link, whatever Redis does.
    assert_gif(&server.get(&server.pixel_path(&ids("msg-down-1"))).await);
    let dest = "https://example.com/while-down";
    let click = server
        .get(&server.click_path(&ids("msg-down-2"), dest))
        .await;
    assert_eq!(click.status, StatusCode::FOUND);
    assert_eq!(click.header("location"), Some(dest));
    // Both events are on disk: spooled, not dropped, and /readyz says how much it holds.
    let metrics = server.metrics().await;
    assert_eq!(family_sum(&metrics, "pixelgate_events_dropped_total"), 0.0);
    assert_eq!(
        sample(&metrics, "pixelgate_spool_events_total{lane=\"main\"}"),
        Some(2.0)
    );
    let spooled = server.admin_get("/readyz").await.json();
    assert!(spooled["spool_bytes"].as_u64().unwrap() > 0, "{spooled}");

    redis.restart();
    eventually(
        "/readyz to answer 200 again",
        Duration::from_secs(10),
        || async move { (s.admin_get("/readyz").await.status == StatusCode::OK).then_some(()) },
    )
    .await;
    assert_gif(&server.get(&server.pixel_path(&ids("msg-back"))).await);
    // The replayer puts the spooled events back, in the order they were spooled.
    let redis = &redis;
    let queued = eventually(
        "the spooled events to be replayed",
        Duration::from_secs(10),
        || async move {
            let queued = messages(redis, EVENTS);
            (queued.len() == 3).then_some(queued)
        },
    )
    .await;
    let at = |m: &str| queued.iter().position(|q| q == m);
    assert!(at("msg-back").is_some(), "{queued:?}");
    assert!(at("msg-down-1") < at("msg-down-2"), "{queued:?}");
    // `msg-back` too, when it came before the replayer saw Redis answer: all that was spooled.
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "pixelgate_spool_replayed_events_total"),
        Some(family_sum(&metrics, "pixelgate_spool_events_total"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_endpoint_round_trips_a_value_through_redis() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let longest = "z".repeat(256);
    for value in ["abc-1.2_3", longest.as_str()] {
        let reply = server.admin_get(&format!("/test?value={value}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{value}");
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        assert_eq!(reply.text(), value);
    }
    assert_eq!(
        server.admin_get("/test?x=1&value=ok").await.text(),
        "ok",
        "value is found among other parameters"
    );
    let too_long = format!("/test?value={}", "z".repeat(257));
    for path in [
        "/test?value=",
        "/test?value=a%20b",
        "/test?value=a/b",
        "/test?value=%41",
        too_long.as_str(),
        "/test",
        "/test?other=1",
    ] {
        let reply = server.admin_get(path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(
        server.get("/test?value=abc").await.status,
        StatusCode::NOT_FOUND,
        "/test is on the admin listener only"
    );

    redis.kill();
    let reply = server.admin_get("/test?value=abc").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_events_flushes_and_the_pool() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    for n in 0..3 {
        assert_gif(
            &server
                .get(&server.pixel_path(&ids(&format!("msg-{n}"))))
                .await,
        );
    }
    let click = server.click_path(&ids("msg-c"), "https://example.com/");
    assert_eq!(server.get(&click).await.status, StatusCode::FOUND);
    let tampered = format!("/c/{}", tamper(click.trim_start_matches("/c/")));
    assert_eq!(server.get(&tampered).await.status, StatusCode::NOT_FOUND);

    let reply = server.admin_get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = reply.text();
    let value =
        |line: &str| sample(&text, line).unwrap_or_else(|| panic!("no sample {line} in:\n{text}"));
    assert_eq!(
        value("pixelgate_http_requests_total{route=\"pixel\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("pixelgate_http_requests_total{route=\"click\",status=\"302\"}"),
        1.0
    );
    assert_eq!(
        value("pixelgate_http_requests_total{route=\"click\",status=\"404\"}"),
        1.0
    );
    assert_eq!(value("pixelgate_events_enqueued_total{lane=\"main\"}"), 4.0);
    assert!(value("pixelgate_queue_flush_seconds_count") >= 1.0);
    assert!(value("pixelgate_queue_flush_seconds_sum") > 0.0);
    assert_eq!(value("pixelgate_redis_pool_max_connections"), 16.0);
    assert!(text.trim_end().ends_with("# EOF"));
    assert_eq!(list(&redis, EVENTS).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok_on_both_listeners_even_without_redis() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let check = || async {
        for base in [server.public_url(), server.admin_url()] {
            let reply = server.send(Method::GET, &base, "/healthz", &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{base}");
            assert_eq!(reply.text(), "ok");
        }
    };
    check().await;
    redis.kill();
    check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_limit_a_client_is_still_answered_and_its_events_overflow() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.rate_limit.per_second = nz(1);
            c.rate_limit.burst = nz(3);
        })
        .start()
        .await;
    // Everything below runs well within the second that would give the client a new request.
    for n in 0..4 {
        assert_gif(
            &server
                .get(&server.pixel_path(&ids(&format!("msg-{n}"))))
                .await,
        );
    }
    assert_eq!(messages(&redis, EVENTS), ["msg-0", "msg-1", "msg-2"]);
    let overflow = events(&redis, OVERFLOW);
    assert_eq!(overflow.len(), 1, "{overflow:?}");
    assert_eq!(overflow[0]["message"], "msg-3");
    assert_eq!(overflow[0]["limited"], true);

    // A valid click is still a redirect, its event in overflow too.
    let dest = "https://example.com/limited";
    let click = server.get(&server.click_path(&ids("msg-4"), dest)).await;
    assert_eq!(click.status, StatusCode::FOUND);
    assert_eq!(click.header("location"), Some(dest));
    assert_eq!(messages(&redis, OVERFLOW), ["msg-3", "msg-4"]);

    // Anything else over the limit is 429 with Retry-After.
    for path in ["/o/nope.gif", "/c/nope", "/nope"] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(retry_after(&reply) >= 1);
        assert!(reply.header("location").is_none());
    }
    assert_eq!(
        server.get("/healthz").await.status,
        StatusCode::OK,
        "health is not rate-limited"
    );
    let text = server.metrics().await;
    assert_eq!(
        sample(&text, "pixelgate_rate_limited_total{reason=\"overflow\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "pixelgate_rate_limited_total{reason=\"rejected\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "pixelgate_events_enqueued_total{lane=\"overflow\"}"),
        Some(2.0)
    );
}

/// The `ip` of each event in a list.
fn ips(redis: &RedisServer, key: &str) -> Vec<String> {
    events(redis, key)
        .iter()
        .map(|e| e["ip"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    // An untrusted loopback peer (no proxy trusted, or only others): the headers are ignored.
    for trusted in [vec![], vec!["10.0.0.0/8".parse().unwrap()]] {
        let redis = RedisServer::start();
        let server = TestServer::builder(&redis)
            .edge(|c| c.rate_limit.trusted_proxies = trusted)
            .start()
            .await;
        let base = server.public_url();
        for header in [
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ] {
            let path = server.pixel_path(&ids("msg-u"));
            assert_gif(&server.send(Method::GET, &base, &path, &[header]).await);
        }
        assert_eq!(ips(&redis, EVENTS), ["127.0.0.1", "127.0.0.1"]);
    }

    // Loopback trusted: the forwarded client is the client, and has its own limit.
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.rate_limit.per_second = nz(1);
            c.rate_limit.burst = nz(3);
            c.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .start()
        .await;
    let base = server.public_url();
    let pixel = |message: &str, headers: &'static [(&'static str, &'static str)]| {
        let path = server.pixel_path(&ids(message));
        let server = &server;
        let base = base.clone();
        async move {
            assert_gif(&server.send(Method::GET, &base, &path, headers).await);
        }
    };
    const CLIENT: &[(&str, &str)] = &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")];
    for n in 0..4 {
        pixel(&format!("msg-f{n}"), CLIENT).await;
    }
    pixel("msg-other", &[("x-forwarded-for", "203.0.113.10")]).await;
    pixel("msg-fwd", &[("forwarded", "for=\"203.0.113.11:4711\"")]).await;
    pixel("msg-direct", &[]).await;
    assert_eq!(
        messages(&redis, EVENTS),
        [
            "msg-f0",
            "msg-f1",
            "msg-f2",
            "msg-other",
            "msg-fwd",
            "msg-direct"
        ]
    );
    assert_eq!(
        ips(&redis, EVENTS),
        [
            "203.0.113.9",
            "203.0.113.9",
            "203.0.113.9",
            "203.0.113.10",
            "203.0.113.11",
            "127.0.0.1"
        ]
    );
    assert_eq!(messages(&redis, OVERFLOW), ["msg-f3"]);
    assert_eq!(ips(&redis, OVERFLOW), ["203.0.113.9"]);
    // Over its limit, the forwarded client's invalid requests get 429; others' do not.
    let reply = server.send(Method::GET, &base, "/nope", CLIENT).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let reply = server
        .send(
            Method::GET,
            &base,
            "/nope",
            &[("x-forwarded-for", "203.0.113.12")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_click_allowlist_binds_listed_accounts_on_dot_boundaries() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.click.allowed_hosts =
                BTreeMap::from([("acme".to_owned(), vec!["example.com".to_owned()])]);
        })
        .start()
        .await;
    let other = Ids::new("other", "spring-sale", "msg-o", "r-1").unwrap();
    let cases = [
        (ids("msg-1"), "https://shop.example.com/", true),
        (ids("msg-2"), "https://example.com/x", true),
        (ids("msg-3"), "https://badexample.com/", false),
        (ids("msg-4"), "https://example.com.evil.test/", false),
        (other, "https://badexample.com/", true),
    ];
    for (ids, dest, allowed) in &cases {
        let reply = server.get(&server.click_path(ids, dest)).await;
        if *allowed {
            assert_eq!(reply.status, StatusCode::FOUND, "{} → {dest}", ids.account);
            assert_eq!(reply.header("location"), Some(*dest));
        } else {
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{} → {dest}",
                ids.account
            );
            assert!(reply.header("location").is_none());
        }
    }
    let urls: Vec<String> = events(&redis, EVENTS)
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "https://shop.example.com/",
            "https://example.com/x",
            "https://badexample.com/"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_under_load_loses_no_answered_event() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| c.rate_limit.enabled = false)
        .start()
        .await;
    let keys = server.keys();
    let base = server.public_url();
    // Keep-alive connections, so shutdown meets requests in flight on open connections.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let answered = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..32 {
        let (keys, base, client) = (keys.clone(), base.clone(), client.clone());
        let (answered, stopping) = (answered.clone(), stopping.clone());
        clients.spawn(async move {
            let mut mine = Vec::new();
            for n in 0..2000 {
                let message = format!("msg-{c}-{n}");
                let token = keys.seal(&Claims::open(ids(&message)));
                let url = format!("{base}/o/{token}.gif");
                match send(&client, Method::GET, &url, &[]).await {
                    Ok(reply) => {
                        assert_gif(&reply);
                        mine.push(message);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        assert!(
                            stopping.load(Ordering::SeqCst),
                            "{message} failed before shutdown: {error}"
                        );
                        break;
                    }
                }
            }
            mine
        });
    }
    let count = &answered;
    eventually(
        "400 answered pixels",
        Duration::from_secs(20),
        || async move { (count.load(Ordering::Relaxed) >= 400).then_some(()) },
    )
    .await;
    stopping.store(true, Ordering::SeqCst);
    server.shutdown().await.expect("run ends cleanly");
    // What Redis holds the moment `run` returns; nothing may be answered after that.
    let stored: HashSet<String> = messages(&redis, EVENTS).into_iter().collect();

    let mut answered = Vec::new();
    while let Some(mine) = clients.join_next().await {
        answered.extend(mine.unwrap());
    }
    let missing: Vec<&String> = answered.iter().filter(|m| !stored.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered pixels are not in Redis, e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(answered.len() >= 400);
    assert!(
        stored.len() >= answered.len(),
        "every answered event once at least"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_once_shutdown_begins() {
    let redis = RedisServer::start();
    let mut server = TestServer::start(&redis).await;
    let addr = server.public_addr();
    assert_eq!(server.get("/readyz").await.status, StatusCode::OK);
    // A request that started arriving before shutdown is still answered after it began (and
    // its connection then closed): that answer is where a load balancer sees readiness fall.
    // Its first byte goes before shutdown, the rest after; a connection whose first byte had
    // not reached hyper when shutdown began may be closed unanswered instead, so the test
    // asks that every answer is the 503 and that there is at least one.
    const CONNS: usize = 8;
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"G").await.unwrap();
        conns.push(conn);
    }
    let s = &server;
    eventually("the open public connections", PATIENCE, || async move {
        let text = s.metrics().await;
        (sample(&text, "pixelgate_connections_open") == Some(CONNS as f64)).then_some(())
    })
    .await;

    server.begin_shutdown();
    eventually("the public listener to close", PATIENCE, || async move {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    for conn in &mut conns {
        conn.write_all(b"ET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
    }
    let mut answered = 0;
    for conn in &mut conns {
        let bytes = read_until_closed(conn).await;
        if bytes.is_empty() {
            continue;
        }
        let reply = read_reply(&mut &bytes[..]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.json()["reason"], "shutting_down");
        answered += 1;
    }
    assert!(answered > 0, "no request was answered during shutdown");
    server.shutdown().await.unwrap();
}

/// A CA, and a certificate it signed for each of `names` (the first also for 127.0.0.1), as
/// files in `dir`; returns the CA and each leaf's DER.
fn certificates(
    dir: &Path,
    names: &[&str],
) -> (
    CertificateDer<'static>,
    Vec<(CertificateConfig, CertificateDer<'static>)>,
) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pixelgate test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaves = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut sans = vec![(*name).to_owned()];
            if i == 0 {
                sans.push("127.0.0.1".to_owned());
            }
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, *name);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            let (cert_path, key_path) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            );
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            let config = CertificateConfig {
                names: vec![(*name).to_owned()],
                cert: cert_path,
                key: key_path,
            };
            (config, cert.der().clone())
        })
        .collect();
    (ca_cert.der().clone(), leaves)
}

/// A TLS connection trusting only `ca`, offering `alpn`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    name: ServerName<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake verifies against the test CA")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_picks_the_certificate_by_sni_and_serves_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaves) = certificates(dir.path(), &["t.acme.test", "t.other.test"]);
    let (acme_der, other_der) = (leaves[0].1.clone(), leaves[1].1.clone());
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| c.tls.certificates = leaves.into_iter().map(|(c, _)| c).collect())
        .start()
        .await;
    let addr = server.public_addr();
    let name = |n: &str| ServerName::try_from(n.to_owned()).unwrap();
    let leaf = |s: &tokio_rustls::client::TlsStream<TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0].clone()
    };

    // By SNI name, and the first certificate without one (an IP address sends no SNI).
    for (server_name, want) in [
        (name("t.other.test"), &other_der),
        (name("t.acme.test"), &acme_der),
        (name("127.0.0.1"), &acme_der),
    ] {
        let stream = tls_connect(addr, &ca, server_name.clone(), b"http/1.1").await;
        assert!(
            leaf(&stream) == *want,
            "the certificate for {server_name:?}"
        );
    }

    // HTTP/1.1 over TLS.
    let mut stream = tls_connect(addr, &ca, name("t.other.test"), b"http/1.1").await;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: t.other.test\r\nConnection: close\r\n\r\n",
        server.pixel_path(&ids("msg-tls1"))
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_gif(&read_reply(&mut stream).await);

    // HTTP/2 over TLS, chosen by ALPN.
    let stream = tls_connect(addr, &ca, name("t.other.test"), b"h2").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = h2_client(stream).await;
    let url = format!(
        "https://t.other.test{}",
        server.pixel_path(&ids("msg-tls2"))
    );
    assert_gif(&h2_get(&mut h2, &url).await);
    assert_eq!(messages(&redis, EVENTS), ["msg-tls1", "msg-tls2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_over_plain_tcp() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let addr = server.public_addr();
    let mut h2 = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    let pixel = format!("http://{addr}{}", server.pixel_path(&ids("msg-h2a")));
    assert_gif(&h2_get(&mut h2, &pixel).await);
    let dest = "https://example.com/h2";
    let click = format!("http://{addr}{}", server.click_path(&ids("msg-h2b"), dest));
    let reply = h2_get(&mut h2, &click).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some(dest));
    assert_eq!(messages(&redis, EVENTS), ["msg-h2a", "msg-h2b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_clients_are_cut_off_after_the_header_timeout() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| c.server.header_read_timeout = Duration::from_millis(300))
        .start()
        .await;
    let addr = server.public_addr();
    let mut half_line = TcpStream::connect(addr).await.unwrap();
    half_line.write_all(b"GET /o/abc").await.unwrap();
    let mut half_preface = TcpStream::connect(addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();

    // Meanwhile, other clients are served.
    assert_gif(&server.get(&server.pixel_path(&ids("msg-s"))).await);

    // Each stalled connection is closed after about 300 ms; 5 s is only a generous bound.
    for (what, conn) in [
        ("half a request line", &mut half_line),
        ("half an HTTP/2 preface", &mut half_preface),
        ("nothing", &mut silent),
    ] {
        assert!(
            closed_within(conn, PATIENCE).await,
            "a client that sent {what} is still connected"
        );
    }

    // An idle keep-alive connection is closed by the same timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut idle).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("connection").is_none(), "kept alive");
    assert!(
        closed_within(&mut idle, PATIENCE).await,
        "an idle keep-alive connection is still open"
    );
    assert_eq!(messages(&redis, EVENTS), ["msg-s"]);
}

/// Request ids are the edge's own and random: they say nothing about how many requests an
/// edge served, and a client's `x-request-id` is neither believed nor echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_random_and_the_edge_s_own() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis).await;
    let forged = "0000000000000001";
    let mut seen = Vec::new();
    for base in [server.public_url(), server.admin_url()] {
        for _ in 0..10 {
            let reply = server
                .send(Method::GET, &base, "/healthz", &[("x-request-id", forged)])
                .await;
            let id = reply.header("x-request-id").unwrap().to_owned();
            assert_eq!(id.len(), 16, "{id}");
            assert_ne!(id, forged, "the client's id is not echoed");
            seen.push(u64::from_str_radix(&id, 16).unwrap());
        }
    }
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len(), "{seen:x?}");
    // A counter (even one started at a random number) moves by one from request to request.
    let steps = seen
        .windows(2)
        .filter(|w| w[1].wrapping_sub(w[0]) < 1 << 20)
        .count();
    assert!(steps < 3, "ids that count: {seen:x?}");
}

/// `robots.txt` and the favicon are answered cheaply on the public listener and cost a client
/// nothing of its rate limit, so a browser showing the 404 of a bad link loses no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_txt_and_the_favicon_are_answered_outside_the_rate_limit() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.rate_limit.per_second = std::num::NonZeroU32::new(1).unwrap();
            c.rate_limit.burst = std::num::NonZeroU32::new(1).unwrap();
        })
        .start()
        .await;
    for _ in 0..5 {
        let robots = server.get("/robots.txt").await;
        assert_eq!(robots.status, StatusCode::OK);
        assert_eq!(robots.text(), "User-agent: *\nDisallow: /\n");
        let favicon = server.get("/favicon.ico").await;
        assert_eq!(favicon.status, StatusCode::NO_CONTENT);
        assert!(
            favicon
                .header("cache-control")
                .unwrap()
                .starts_with("max-age=")
        );
    }
    // The client's one request of burst is still there: the first unknown path is a 404, the
    // second is over the limit.
    assert_eq!(server.get("/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("/nope").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        server.admin_get("/robots.txt").await.status,
        StatusCode::NOT_FOUND,
        "public only"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "pixelgate_http_requests_total{route=\"favicon\",status=\"204\"}"
        ),
        Some(5.0)
    );
}

/// While answered events are being stored nowhere, `/readyz` says so: a spool that refuses
/// groups a few bytes short of `spool.max_bytes` is as good as full to a load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_events_are_dropped() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .queue(|q| q.ack_timeout = Duration::from_millis(100))
        .spool(|s| {
            s.segment_bytes = std::num::NonZeroU64::new(64 * 1024).unwrap();
            s.max_bytes = std::num::NonZeroU64::new(128 * 1024).unwrap();
        })
        .edge(|c| c.rate_limit.enabled = false)
        .start()
        .await;
    assert_eq!(server.admin_get("/readyz").await.status, StatusCode::OK);
    // Redis answers PING but takes no write: every batch goes to the spool, until it is full.
    redis.refuse_writes(true);
    let s = &server;
    let mut n = 0;
    eventually("events to be dropped", Duration::from_secs(60), || {
        n += 1;
        let batch = n;
        async move {
            // Fifty at once: each waits `queue.ack_timeout` for Redis before it is spooled.
            let client = http_client();
            let mut pixels = tokio::task::JoinSet::new();
            for i in 0..50 {
                let url = format!(
                    "{}{}",
                    s.public_url(),
                    s.pixel_path(&ids(&format!("msg-{batch}-{i}")))
                );
                let client = client.clone();
                pixels.spawn(async move { send(&client, Method::GET, &url, &[]).await.unwrap() });
            }
            while let Some(reply) = pixels.join_next().await {
                assert_gif(&reply.unwrap());
            }
            let text = s.metrics().await;
            (sample(
                &text,
                "pixelgate_events_dropped_total{reason=\"spool_full\"}",
            )
            .is_some_and(|d| d > 0.0))
            .then_some(())
        }
    })
    .await;
    let ready = server.admin_get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text()
    );
    assert_eq!(ready.json()["reason"], "spool_full", "{}", ready.text());
}
