//! The edge's Prometheus metrics, registered into the registry `/metrics` encodes.
//!
//! Every counter the request path touches is created once, at start, and kept: the common
//! (route, status) pairs, drop reasons, rate-limit outcomes and rejected tokens. The request path
//! then increments an atomic; only a pair never seen before looks its label set up in the
//! family's locked map.

use std::time::Duration;

use pixelgate_queue::EnqueueError;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::route::Route;

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

/// What happened to a request over its client's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Answered, its event sent to the overflow lane.
    Overflow,
    /// Refused with `429`.
    Rejected,
}

/// Every metric of the edge.
#[derive(Debug)]
pub struct EdgeMetrics {
    requests: Family<RequestLabels, Counter>,
    /// The common (route, status) counters, looked up by index instead of by label.
    common: Vec<(Route, u16, Counter)>,
    durations: Vec<(Route, Histogram)>,
    dropped: Vec<(&'static str, Counter)>,
    overflow: Counter,
    rejected: Counter,
    pixel_tokens_rejected: Counter,
    click_tokens_rejected: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub rate_limiter_clients: Gauge,
}

const COMMON: [(Route, u16); 12] = [
    (Route::Pixel, 200),
    (Route::Pixel, 429),
    (Route::Pixel, 503),
    (Route::Click, 302),
    (Route::Click, 404),
    (Route::Click, 429),
    (Route::Click, 503),
    (Route::Healthz, 200),
    (Route::Readyz, 200),
    (Route::Robots, 200),
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
                let labels = RouteLabel { route: r.as_str() };
                (r, durations_family.get_or_create(&labels).clone())
            })
            .collect();
        let reason = |family: &Family<ReasonLabel, Counter>, reason| {
            family.get_or_create(&ReasonLabel { reason }).clone()
        };
        let events_dropped = Family::<ReasonLabel, Counter>::default();
        let dropped = EnqueueError::REASONS
            .iter()
            .map(|&r| (r, reason(&events_dropped, r)))
            .collect();
        let rate_limited = Family::<ReasonLabel, Counter>::default();
        let tokens_rejected = Family::<RouteLabel, Counter>::default();
        let route = |route: Route| {
            let labels = RouteLabel {
                route: route.as_str(),
            };
            tokens_rejected.get_or_create(&labels).clone()
        };
        let m = Self {
            requests,
            common,
            durations,
            dropped,
            overflow: reason(&rate_limited, "overflow"),
            rejected: reason(&rate_limited, "rejected"),
            pixel_tokens_rejected: route(Route::Pixel),
            click_tokens_rejected: route(Route::Click),
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
            events_dropped,
        );
        r.register(
            "rate_limited",
            "Requests over their client's rate limit: `overflow` (answered, event to the overflow key) or `rejected` (429)",
            rate_limited,
        );
        r.register(
            "tokens_rejected",
            "Tracking requests whose token did not open (tampered, unknown key, expired, refused destination)",
            tokens_rejected,
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

    /// Counts an answered event stored nowhere, by the enqueuer's reason.
    pub fn dropped(&self, reason: &'static str) {
        if let Some((_, counter)) = self.dropped.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }

    pub fn limited(&self, what: Limited) {
        match what {
            Limited::Overflow => self.overflow.inc(),
            Limited::Rejected => self.rejected.inc(),
        };
    }

    /// Counts a tracking request whose token did not open.
    pub fn token_rejected(&self, route: Route) {
        match route {
            Route::Pixel => self.pixel_tokens_rejected.inc(),
            _ => self.click_tokens_rejected.inc(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_the_enqueuer_gives_is_counted() {
        let mut registry = Registry::default();
        let m = EdgeMetrics::new(&mut registry);
        for reason in EnqueueError::REASONS {
            m.dropped(reason);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for reason in EnqueueError::REASONS {
            let line = format!("pixelgate_events_dropped_total{{reason=\"{reason}\"}} 1");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
