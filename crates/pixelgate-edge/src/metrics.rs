//! The edge's Prometheus metrics, registered into the registry `/metrics` encodes.
//!
//! Request counters for the common (route, status) pairs are created once and kept, so the
//! request path increments an atomic instead of looking a label set up in a locked map.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::routes::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric of the edge.
#[derive(Debug)]
pub struct EdgeMetrics {
    requests: Family<RequestLabels, Counter>,
    /// The common (route, status) counters, looked up by index instead of by label.
    common: Vec<(Route, u16, Counter)>,
    durations: Vec<(Route, Histogram)>,
    pub events_dropped: Family<ReasonLabel, Counter>,
    pub rate_limited: Family<ReasonLabel, Counter>,
    pub tokens_rejected: Family<RouteLabel, Counter>,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub rate_limiter_clients: Gauge,
}

const COMMON: [(Route, u16); 9] = [
    (Route::Pixel, 200),
    (Route::Pixel, 429),
    (Route::Click, 302),
    (Route::Click, 404),
    (Route::Click, 429),
    (Route::Healthz, 200),
    (Route::Readyz, 200),
    (Route::NotFound, 404),
    (Route::NotFound, 429),
];

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0,
    ])
}

impl EdgeMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let common = COMMON
            .iter()
            .map(|&(route, status)| {
                let labels = RequestLabels {
                    route: route.as_str(),
                    status,
                };
                (route, status, requests.get_or_create(&labels).clone())
            })
            .collect();
        let durations_family = Family::<RouteLabel, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let durations = Route::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    durations_family
                        .get_or_create(&RouteLabel { route: r.as_str() })
                        .clone(),
                )
            })
            .collect();
        let m = Self {
            requests,
            common,
            durations,
            events_dropped: Family::default(),
            rate_limited: Family::default(),
            tokens_rejected: Family::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            rate_limiter_clients: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("pixelgate");
        r.register(
            "http_requests",
            "Requests answered, by route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from request headers read to response, by route",
            durations_family,
        );
        r.register(
            "events_dropped",
            "Events of answered requests that reached neither Redis nor the spool, by reason",
            m.events_dropped.clone(),
        );
        r.register(
            "rate_limited",
            "Requests over their client's rate limit: `overflow` (answered, event to the overflow key) or `rejected` (429)",
            m.rate_limited.clone(),
        );
        r.register(
            "tokens_rejected",
            "Tracking requests whose token did not open (tampered, unknown key, expired, refused destination)",
            m.tokens_rejected.clone(),
        );
        r.register(
            "connections_open",
            "Open connections on the public listener",
            m.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once because server.max_connections were open",
            m.connections_refused.clone(),
        );
        r.register(
            "rate_limiter_clients",
            "Clients the rate limiter tracks",
            m.rate_limiter_clients.clone(),
        );
        m
    }

    /// Counts one answered request and its duration.
    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        match self
            .common
            .iter()
            .find(|(r, s, _)| *r == route && *s == status)
        {
            Some((_, _, counter)) => {
                counter.inc();
            }
            None => {
                let labels = RequestLabels {
                    route: route.as_str(),
                    status,
                };
                self.requests.get_or_create(&labels).inc();
            }
        }
        if let Some((_, h)) = self.durations.iter().find(|(r, _)| *r == route) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    pub fn dropped(&self, reason: &'static str) {
        self.events_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
