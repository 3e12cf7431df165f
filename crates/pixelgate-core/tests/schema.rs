//! Serialised events validate against `docs/event.schema.json`, the schema we publish.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use std::{net::IpAddr, time::SystemTime};

use pixelgate_core::{Claims, Destination, Event, Ids, Observed};
use serde_json::{Value, json};

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/event.schema.json")).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn events() -> Vec<Event> {
    let ids = Ids::new("acme", "spring-sale", "msg-000123", "r-42").unwrap();
    let dest = Destination::parse("https://example.com/landing?x=1").unwrap();
    let v4: IpAddr = "203.0.113.7".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let seen = |claims, ip, user_agent, limited| Observed {
        claims,
        ip,
        user_agent,
        at: SystemTime::now(),
        limited,
    };
    let long = "é".repeat(400);
    vec![
        Event::born(seen(Claims::open(ids.clone()), v4, "Mozilla/5.0", false)),
        Event::born(seen(Claims::click(ids.clone(), dest), v6, &long, false)),
        Event::born(seen(Claims::open(ids), v6, "", true)),
    ]
}

#[test]
fn serialised_events_match_the_schema() {
    let schema = validator();
    for event in events() {
        let value: Value = serde_json::from_slice(&event.to_json()).unwrap();
        let errors: Vec<String> = schema.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
}

type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn the_schema_rejects_what_the_contract_forbids() {
    let schema = validator();
    let good: Value = serde_json::from_slice(&events()[1].to_json()).unwrap();
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "click without url",
            Box::new(|e| drop(e.as_object_mut().unwrap().remove("url"))),
        ),
        ("open with url", Box::new(|e| e["kind"] = json!("open"))),
        (
            "missing ip",
            Box::new(|e| drop(e.as_object_mut().unwrap().remove("ip"))),
        ),
        (
            "not a v7 id",
            Box::new(|e| e["id"] = json!("00000000-0000-4000-8000-000000000000")),
        ),
        (
            "ts without millis",
            Box::new(|e| e["ts"] = json!("2026-11-23T07:00:00Z")),
        ),
        ("bad ip", Box::new(|e| e["ip"] = json!("example.com"))),
        ("empty account", Box::new(|e| e["account"] = json!(""))),
        (
            "javascript url",
            Box::new(|e| e["url"] = json!("javascript:alert(1)")),
        ),
        ("limited false", Box::new(|e| e["limited"] = json!(false))),
    ];
    assert!(schema.is_valid(&good));
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!schema.is_valid(&bad), "{what}: {bad}");
    }
}
