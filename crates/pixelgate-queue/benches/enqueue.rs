//! Enqueue throughput: the group-commit `Enqueuer` against one `RPUSH` per event.
//!
//! Starts its own redis-server through the test harness and, on a two-worker tokio runtime,
//! runs 1, 16 and 256 concurrent producers each way; every run stops after `RUN_TIME` or
//! `RUN_EVENTS`, whichever comes first. Both ways serialise each event and wait for Redis to
//! acknowledge it. Prints the markdown table of `docs/benchmarks.md` (`make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use pixelgate_core::{Claims, Event, Ids, Observed};
use pixelgate_queue::{Lane, Pool, Queue, QueueConfig};
use pixelgate_tests::{RedisServer, thousands};
use prometheus_client::registry::Registry;

const PRODUCERS: [usize; 3] = [1, 16, 256];
const RUN_TIME: Duration = Duration::from_secs(2);
const RUN_EVENTS: u64 = 1_000_000;
const WARM_UP: Duration = Duration::from_millis(300);
/// The key of the one-`RPUSH`-per-event runs; the enqueuer writes to `pixelgate:events`.
const RPUSH_KEY: &str = "bench:rpush";

/// What one run did.
#[derive(Debug, Clone, Copy)]
struct Run {
    events: u64,
    per_second: f64,
    /// `RPUSH` commands Redis executed per 1000 events.
    rpush_per_1000: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let server = RedisServer::start();
    let redis = server.config();
    let queue = Queue::new(&redis, &QueueConfig::default(), &mut Registry::default()).unwrap();
    let pool = Pool::new(&redis).unwrap();
    let (enqueuer, writer) = queue.start_enqueuer(None);
    let enqueue = move |event: Arc<Event>| {
        let enqueuer = enqueuer.clone();
        async move {
            enqueuer.enqueue(&event, Lane::Main).await.unwrap();
        }
    };
    let rpush = move |event: Arc<Event>| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await.unwrap();
            let _: u64 = redis::cmd("RPUSH")
                .arg(RPUSH_KEY)
                .arg(event.to_json())
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };

    // Open the pools' connections before anything is measured.
    run(&server, 16, WARM_UP, &enqueue).await;
    run(&server, 16, WARM_UP, &rpush).await;

    println!(
        "| producers | enqueuer ev/s | RPUSH-per-event ev/s | ratio | RPUSH per 1000 ev (enqueuer / per-event) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for producers in PRODUCERS {
        let grouped = run(&server, producers, RUN_TIME, &enqueue).await;
        let single = run(&server, producers, RUN_TIME, &rpush).await;
        println!(
            "| {producers} | {} | {} | {:.1}× | {:.1} / {:.0} |",
            thousands(grouped.per_second),
            thousands(single.per_second),
            grouped.per_second / single.per_second,
            grouped.rpush_per_1000,
            single.rpush_per_1000,
        );
        eprintln!(
            "{producers} producers: {} events through the enqueuer, {} by one RPUSH each",
            grouped.events, single.events
        );
    }
    drop(enqueue); // the last `Enqueuer`
    writer.flushed().await;
}

/// Runs `producers` tasks that each call `send` with their event until `limit` passes or
/// `RUN_EVENTS` have been sent in all; then empties the keys so runs do not pile up memory.
async fn run<F, Fut>(server: &RedisServer, producers: usize, limit: Duration, send: &F) -> Run
where
    F: Fn(Arc<Event>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let rpush_before = rpush_calls(server);
    let started = Instant::now();
    let deadline = started + limit;
    let budget = Arc::new(AtomicU64::new(RUN_EVENTS));
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let (send, budget) = (send.clone(), budget.clone());
            // One event per producer, serialised anew on every send as the edge would.
            let event = Arc::new(event(p));
            tokio::spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < deadline
                    && budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                {
                    send(event.clone()).await;
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut events = 0;
    for t in tasks {
        events += t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let rpush = rpush_calls(server) - rpush_before;
    server.call(&["UNLINK", "pixelgate:events", RPUSH_KEY]);
    Run {
        events,
        per_second: events as f64 / elapsed.as_secs_f64(),
        rpush_per_1000: rpush as f64 * 1000.0 / events as f64,
    }
}

fn event(n: usize) -> Event {
    let ids = Ids::new("acme", "spring-sale", format!("msg-{n:06}"), "r-42").unwrap();
    Event::born(Observed {
        claims: Claims::open(ids),
        ip: Ipv4Addr::new(192, 0, 2, 7).into(),
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)",
        at: SystemTime::now(),
        limited: false,
    })
}

/// `RPUSH` calls so far, from `INFO commandstats`.
fn rpush_calls(server: &RedisServer) -> u64 {
    let info = server.call(&["INFO", "commandstats"]).text().unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_rpush:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}
