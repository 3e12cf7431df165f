//! A small HTTP/1.1 load generator that records exactly which requests were answered.
//!
//! Fault tests compare what the server answered with what reached Redis, so every request is
//! numbered and its outcome kept: a status, or no answer at all (the connection failed before a
//! whole response arrived). Blocking sockets on plain threads, keep-alive, one request at a time
//! per connection: simple enough that the generator is never the thing under test.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A whole response with this status.
    Answered(u16),
    /// No whole response: refused, reset or closed first.
    Unanswered,
}

/// A running load; [`Load::stop`] ends it and returns every request's outcome.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<Vec<(usize, Outcome)>>>,
    threads: Vec<JoinHandle<()>>,
}

/// The outcomes of a load, by request number.
#[derive(Debug)]
pub struct Report {
    pub outcomes: Vec<(usize, Outcome)>,
}

impl Report {
    /// Request numbers answered with `status`.
    pub fn answered_with(&self, status: u16) -> Vec<usize> {
        let mut n: Vec<_> = self
            .outcomes
            .iter()
            .filter(|(_, o)| *o == Outcome::Answered(status))
            .map(|(n, _)| *n)
            .collect();
        n.sort_unstable();
        n
    }

    /// Requests answered with any status other than `status`, as `(number, status)`.
    pub fn answered_otherwise(&self, status: u16) -> Vec<(usize, u16)> {
        self.outcomes
            .iter()
            .filter_map(|&(n, o)| match o {
                Outcome::Answered(s) if s != status => Some((n, s)),
                _ => None,
            })
            .collect()
    }

    pub fn unanswered(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| *o == Outcome::Unanswered)
            .count()
    }
}

impl Load {
    /// Starts `connections` threads sending `GET path(n)` to `addr` for n = 0, 1, 2, … until
    /// stopped. A connection that fails is made again after a short pause.
    pub fn start(
        addr: SocketAddr,
        connections: usize,
        path: impl Fn(usize) -> String + Send + Sync + 'static,
    ) -> Self {
        let path = Arc::new(path);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..connections)
            .map(|_| {
                let (path, stop, sent, outcomes) =
                    (path.clone(), stop.clone(), sent.clone(), outcomes.clone());
                std::thread::spawn(move || {
                    let mut conn = None;
                    while !stop.load(Ordering::Relaxed) {
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        let outcome = request(&mut conn, addr, &path(n));
                        outcomes.lock().unwrap().push((n, outcome));
                        if outcome == Outcome::Unanswered {
                            conn = None;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            outcomes,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests answered so far, with any status.
    pub fn answered(&self) -> usize {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Answered(_)))
            .count()
    }

    /// Stops sending, waits for the requests in flight, and returns every outcome.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let outcomes = std::mem::take(&mut *self.outcomes.lock().unwrap());
        Report { outcomes }
    }
}

/// A keep-alive connection and the bytes read past the last answer.
type Conn = (TcpStream, Vec<u8>);

fn request(conn: &mut Option<Conn>, addr: SocketAddr, path: &str) -> Outcome {
    if conn.is_none() {
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return Outcome::Unanswered;
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        *conn = Some((stream, Vec::new()));
    }
    let Some((stream, buf)) = conn.as_mut() else {
        return Outcome::Unanswered;
    };
    let head = format!("GET {path} HTTP/1.1\r\nHost: load\r\nUser-Agent: pixelgate-load\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return Outcome::Unanswered;
    }
    match crate::http::read_blocking(stream, buf) {
        Ok(reply) => {
            if reply.closes() {
                *conn = None;
            }
            Outcome::Answered(reply.status.as_u16())
        }
        Err(_) => Outcome::Unanswered,
    }
}
