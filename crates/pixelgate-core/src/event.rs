//! The event record: one open or click, as one JSON object.
//!
//! An event is born where a tracking request is answered: its UUIDv7 `id` and its `ts` are
//! minted then and never again, so every retry, spool and replay carries the same id and a sink
//! can insert idempotently on it. Fields may be added in later versions; none is ever renamed.

use std::{
    fmt,
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use uuid::Uuid;

use crate::token::{Claims, Target};

/// The record version written in `v`.
pub const EVENT_VERSION: u8 = 1;

/// The longest user agent kept, in bytes; a longer one is cut at a character boundary.
pub const MAX_USER_AGENT_LEN: usize = 512;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The open pixel was loaded.
    Open,
    /// A click link was followed.
    Click,
}

impl Kind {
    /// The name used in JSON, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Click => "click",
        }
    }
}

/// One tracking event. Field order is the JSON order of the contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Record version, [`EVENT_VERSION`].
    pub v: u8,
    /// UUIDv7, minted once when the event is born.
    pub id: Uuid,
    pub kind: Kind,
    /// When the request was answered: RFC 3339, UTC, milliseconds.
    pub ts: Timestamp,
    pub account: String,
    pub campaign: String,
    pub message: String,
    pub recipient: String,
    /// The destination, for clicks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The client's address (the socket peer, or the forwarded client behind a trusted proxy).
    pub ip: IpAddr,
    /// The client's `User-Agent`, at most [`MAX_USER_AGENT_LEN`] bytes; empty when absent.
    pub ua: String,
    /// Present and true when the client was over its rate limit (the event went to overflow).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limited: bool,
}

impl Event {
    /// A new event from an opened token and the request it came with: mints `id` and `ts`.
    pub fn born(claims: Claims, ip: IpAddr, user_agent: &str, now: SystemTime) -> Self {
        let (kind, url) = match claims.target {
            Target::Open => (Kind::Open, None),
            Target::Click(dest) => (Kind::Click, Some(dest.as_str().to_owned())),
        };
        let ids = claims.ids;
        Self {
            v: EVENT_VERSION,
            id: Uuid::now_v7(),
            kind,
            ts: Timestamp::from_system_time(now),
            account: ids.account,
            campaign: ids.campaign,
            message: ids.message,
            recipient: ids.recipient,
            url,
            ip,
            ua: truncate_at_char(user_agent, MAX_USER_AGENT_LEN).to_owned(),
            limited: false,
        }
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and a UUID into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads one record; unknown fields (from newer versions) are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A UTC instant with millisecond precision, written as RFC 3339 (`2026-11-23T07:00:00.123Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_ms: u64,
}

impl Timestamp {
    /// The instant, truncated to the millisecond (instants before 1970 become 1970).
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Self {
            unix_ms: u64::try_from(ms).unwrap_or(u64::MAX),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> u64 {
        self.unix_ms
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_ms)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_millis(self.to_system_time()).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(Self::from_system_time)
            .map_err(|e| de::Error::custom(format_args!("ts: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Destination, token::Ids};

    fn ids() -> Ids {
        Ids::new("acme", "spring-sale", "msg-000123", "r-42").unwrap()
    }

    #[test]
    fn a_click_serialises_in_contract_order() {
        let claims = Claims::click(
            ids(),
            Destination::parse("https://example.com/landing").unwrap(),
        );
        let now = UNIX_EPOCH + Duration::from_millis(1_795_417_200_123);
        let e = Event::born(claims, "203.0.113.7".parse().unwrap(), "Mozilla/5.0", now);
        let json = String::from_utf8(e.to_json()).unwrap();
        let want = format!(
            r#"{{"v":1,"id":"{}","kind":"click","ts":"2026-11-23T07:00:00.123Z","account":"acme","campaign":"spring-sale","message":"msg-000123","recipient":"r-42","url":"https://example.com/landing","ip":"203.0.113.7","ua":"Mozilla/5.0"}}"#,
            e.id
        );
        assert_eq!(json, want);
        assert_eq!(e.id.get_version_num(), 7);
        assert_eq!(Event::from_json(json.as_bytes()).unwrap(), e);
    }

    #[test]
    fn an_open_has_no_url_and_limited_shows_only_when_true() {
        let mut e = Event::born(
            Claims::open(ids()),
            "::1".parse().unwrap(),
            "",
            SystemTime::now(),
        );
        let json = String::from_utf8(e.to_json()).unwrap();
        assert!(
            !json.contains("\"url\"") && !json.contains("limited"),
            "{json}"
        );
        e.limited = true;
        assert!(
            String::from_utf8(e.to_json())
                .unwrap()
                .ends_with(r#""ua":"","limited":true}"#)
        );
    }

    #[test]
    fn every_event_gets_its_own_id() {
        let a = Event::born(
            Claims::open(ids()),
            [127, 0, 0, 1].into(),
            "",
            SystemTime::now(),
        );
        let b = Event::born(
            Claims::open(ids()),
            [127, 0, 0, 1].into(),
            "",
            SystemTime::now(),
        );
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn user_agents_are_cut_at_a_character_boundary() {
        let ua = format!("{}é", "a".repeat(MAX_USER_AGENT_LEN - 1));
        let e = Event::born(
            Claims::open(ids()),
            [127, 0, 0, 1].into(),
            &ua,
            SystemTime::now(),
        );
        assert_eq!(e.ua.len(), MAX_USER_AGENT_LEN - 1);
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("héllo", 3), "hé");
    }

    #[test]
    fn newer_fields_are_ignored_and_bad_timestamps_refused() {
        let e = Event::born(
            Claims::open(ids()),
            [10, 0, 0, 1].into(),
            "x",
            SystemTime::now(),
        );
        let mut value: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        value["future"] = serde_json::json!(true);
        assert_eq!(Event::from_json(value.to_string().as_bytes()).unwrap(), e);
        value["ts"] = serde_json::json!("yesterday");
        assert!(Event::from_json(value.to_string().as_bytes()).is_err());
    }
}
