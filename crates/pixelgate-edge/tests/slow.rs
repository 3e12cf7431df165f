//! Slow clients, with `slowhttptest`: slowloris (headers sent a few bytes at a time) and slow
//! bodies (a declared body trickled in), while another client keeps asking for pixels.
//!
//! Each slow connection must be closed within `server.header_read_timeout` plus a second, as
//! slowhttptest's own report shows, and the other client must be answered `200` all along.
//! slowhttptest runs for a bounded time and stops early once the server has closed every
//! connection, so the test takes about two seconds when the edge does its job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use http::StatusCode;
use pixelgate_tests::{RedisServer, require_binary};

/// The edge's header read timeout in this test.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Slow connections per run, all opened within the first second (as many per second).
const CONNECTIONS: u32 = 40;
/// How long slowhttptest may run, in seconds; a slow connection still open then is a failure.
const LENGTH: u32 = 6;

/// What slowhttptest reports about one run.
#[derive(Debug)]
struct Report {
    /// Per second: connections closed (by the server) and connected so far.
    samples: Vec<(u32, u32, u32)>,
    /// The second the run ended on (whole seconds since it began).
    ended: u32,
    /// Why it ended: every connection closed, or the time limit.
    exit: String,
}

/// Runs slowhttptest in `mode` (`-H` slowloris, `-B` slow body) against `url`.
fn slowhttptest(mode: &str, url: &str, dir: &Path) -> Report {
    let bin = require_binary("slowhttptest", "apt-get install slowhttptest");
    let prefix = dir.join(mode.trim_start_matches('-'));
    let output = Command::new(bin)
        .arg(mode)
        .args(["-c", &CONNECTIONS.to_string()])
        .args(["-r", &CONNECTIONS.to_string()])
        // Follow-up bytes every second: as often as the timeout, so only a deadline on the
        // whole header read stops it, not one on each read.
        .args(["-i", "1"])
        .args(["-l", &LENGTH.to_string()])
        .args(["-u", url])
        // Statistics into PREFIX.csv (and .html); the run's summary on stdout.
        .args(["-p", "2", "-v", "1", "-g", "-o"])
        .arg(&prefix)
        .output()
        .expect("slowhttptest runs");
    assert!(output.status.success(), "slowhttptest {mode}: {output:?}");
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).expect("the CSV report");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("Seconds,Closed,Pending,Connected,Service Available")
    );
    let samples = lines
        .map(|line| {
            let n: Vec<u32> = line.split(',').map(|f| f.parse().unwrap()).collect();
            (n[0], n[1], n[3])
        })
        .collect();
    // The summary is coloured with ANSI escapes; the words are between them.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let plain: String = stdout
        .split('\x1b')
        .map(|part| part.split_once('m').map_or(part, |(_, text)| text))
        .collect();
    let after = |label: &str| {
        plain
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in slowhttptest's output:\n{plain}"))
            .trim()
            .to_owned()
    };
    let ended = after("Test ended on");
    Report {
        samples,
        ended: ended.trim_end_matches("th second").parse().unwrap(),
        exit: after("Exit status:"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off_while_others_are_served() {
    let redis = RedisServer::start();
    let server = TestServer::builder(&redis)
        .edge(|c| {
            c.server.header_read_timeout = TIMEOUT;
            // Every client here is 127.0.0.1; the limit is not what is tested.
            c.rate_limit.enabled = false;
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/o/x.gif", server.public_url());
    let modes = ["-H", "-B"];
    let runs = modes.map(|mode| {
        let (url, dir) = (url.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || slowhttptest(mode, &url, &dir))
    });

    // Meanwhile another client asks for pixels, one after the other, until both runs end.
    let mut answered = 0;
    while runs.iter().any(|run| !run.is_finished()) {
        let path = server.pixel_path(&ids(&format!("msg-{answered}")));
        let reply = server.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "pixel {answered}");
        answered += 1;
    }
    assert!(answered > 0);
    assert_eq!(list(&redis, EVENTS).len(), answered, "every pixel recorded");

    // slowhttptest opens all its connections within the first second (as many per second as
    // in all); each must be closed within the timeout and a second after that.
    let bound = 1 + u32::try_from(TIMEOUT.as_secs()).unwrap() + 1;
    let [slowloris, slow_body] = runs;
    let slowloris = slowloris.await.unwrap();
    let slow_body = slow_body.await.unwrap();
    for (mode, report) in [("-H", &slowloris), ("-B", &slow_body)] {
        assert_eq!(
            report.exit, "No open connections left",
            "{mode}: {report:?}"
        );
        assert!(report.ended <= bound, "{mode}: {report:?}");
    }
    // Slowloris held its connections until the timeout cut them (none was answered).
    assert!(
        slowloris
            .samples
            .iter()
            .any(|&(_, _, connected)| connected > 0),
        "{slowloris:?}"
    );
    // A slow body on a tracking route is refused (400) as soon as its headers are in, and the
    // connection closed without waiting for the body.
    let text = server.metrics().await;
    let refused = sample(
        &text,
        "pixelgate_http_requests_total{route=\"pixel\",status=\"400\"}",
    );
    assert_eq!(refused, Some(f64::from(CONNECTIONS)), "{slow_body:?}");
}
