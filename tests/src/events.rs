//! One maker of test events, so every suite's events look alike and tell themselves apart.
//!
//! Event `n` has the message id `msg-{n}` and the recipient `r-{n}`; every third is a click to
//! `https://example.com/p/{n}?utm=mail`, the others are opens; the address cycles through
//! `203.0.113.0/24`, and the user agent has quotes in it, as hostile ones do.

use std::{net::Ipv4Addr, time::SystemTime};

use pixelgate_core::{Claims, Destination, Event, Ids, Observed};

/// Test event number `n`.
pub fn event(n: usize) -> Event {
    let ids = Ids::new("acme", "spring", format!("msg-{n}"), format!("r-{n}")).unwrap();
    let claims = if n.is_multiple_of(3) {
        let url = format!("https://example.com/p/{n}?utm=mail");
        Claims::click(ids, Destination::parse(&url).unwrap())
    } else {
        Claims::open(ids)
    };
    Event::born(Observed {
        claims,
        ip: Ipv4Addr::new(203, 0, 113, (n % 250) as u8).into(),
        user_agent: "Mozilla/5.0 'quoted' \"ua\"",
        at: SystemTime::now(),
        limited: false,
    })
}

/// The number `n` of an event made by [`event`], from its JSON.
pub fn number(payload: &[u8]) -> usize {
    let e = Event::from_json(payload).unwrap();
    e.message
        .strip_prefix("msg-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a test event: {}", e.message))
}
