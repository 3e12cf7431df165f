//! `pixelgate-bench load`: requests at a fixed rate, for latency below the peak.
//!
//! wrk measures at the peak: each connection sends its next request when the last one is
//! answered, so a slow answer delays the requests behind it and is counted once. Here every
//! request has its due time, fixed in advance (N connections, each one request per N/rate
//! seconds, staggered); its latency runs from that due time, not from when it was sent, so a
//! stall is charged to every request it delays. Due times are kept to the microsecond by
//! sleeping to within 2 ms of them and yielding after that: the load has a core to itself.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{io::AsyncWriteExt as _, net::TcpStream, time::Instant};

use crate::measure::Measured;

/// A mail client's user agent, the one `bench/wrk/urls.lua` sends.
pub const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

/// What to send, how fast, for how long.
#[derive(Debug, Clone)]
pub struct FixedRate {
    pub addr: SocketAddr,
    /// One request path per line, requested in turn.
    pub paths: PathBuf,
    /// Requests per second, over all connections.
    pub rate: f64,
    pub connections: u32,
    pub duration: Duration,
}

/// Runs the load on a single-threaded runtime and reports it.
pub fn run(load: &FixedRate) -> anyhow::Result<Measured> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(drive(load))
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    non_2xx_3xx: u64,
}

async fn drive(load: &FixedRate) -> anyhow::Result<Measured> {
    let text = std::fs::read_to_string(&load.paths)
        .with_context(|| format!("read {}", load.paths.display()))?;
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|path| {
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n\r\n",
                    load.addr
                )
                .into_bytes()
            })
            .collect(),
    );
    anyhow::ensure!(!requests.is_empty(), "no paths in {}", load.paths.display());
    anyhow::ensure!(
        load.rate > 0.0 && load.connections > 0,
        "rate and connections > 0"
    );
    let connections = load.connections as usize;
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(connect(load.addr).await?);
    }
    let interval = connections as f64 / load.rate;
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + load.duration;
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let requests = requests.clone();
            let first = start + Duration::from_secs_f64(interval * i as f64 / connections as f64);
            let addr = load.addr;
            tokio::spawn(async move {
                let due = |k: u64| first + Duration::from_secs_f64(interval * k as f64);
                connection(stream, addr, &requests, i, connections, due, end).await
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.non_2xx_3xx += tally.non_2xx_3xx;
    }
    Ok(Measured::from_latencies(
        all.latencies_us,
        load.duration,
        all.errors,
        all.non_2xx_3xx,
    ))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection's share: request `k` is due at `due(k)`; the paths are taken in turn.
async fn connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    requests: &[Vec<u8>],
    offset: usize,
    stride: usize,
    due: impl Fn(u64) -> Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    let mut k = 0u64;
    loop {
        let at = due(k);
        if at >= end {
            break;
        }
        wait_until(at).await;
        let request = &requests[(offset + k as usize * stride) % requests.len()];
        let answer = match stream.write_all(request).await {
            Ok(()) => read_response(&mut stream, &mut buf).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(status) => {
                tally
                    .latencies_us
                    .push(at.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                if !(200..400).contains(&status) {
                    tally.non_2xx_3xx += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                buf.clear();
                match connect(addr).await {
                    Ok(s) => stream = s,
                    Err(_) => break,
                }
            }
        }
        k += 1;
    }
    tally
}

/// Sleeps to within 2 ms of `at` (tokio's timer counts whole milliseconds), then yields until it.
async fn wait_until(at: Instant) {
    let margin = Duration::from_millis(2);
    if let Some(early) = at.checked_sub(margin)
        && Instant::now() < early
    {
        tokio::time::sleep_until(early).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Reads one response; its status. What follows it stays in `buf`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    pixelgate_tests::http::read(stream, buf)
        .await
        .map(|reply| reply.status.as_u16())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn keeps_the_rate_against_a_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            s.write_all(answer).await.unwrap();
                        }
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let paths = dir.path().join("paths");
        std::fs::write(&paths, "/a\n/b\n").unwrap();
        let load = FixedRate {
            addr,
            paths,
            rate: 2000.0,
            connections: 4,
            duration: Duration::from_millis(500),
        };
        let measured = drive(&load).await.unwrap();
        assert_eq!(measured.requests, 1000);
        assert_eq!((measured.errors, measured.non_2xx_3xx), (0, 0));
    }
}
