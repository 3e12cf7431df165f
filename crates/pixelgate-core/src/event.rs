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

/// Everything observed about a tracking request that its event records: the one value an
/// [`Event`] is born from, so a new field is one more member here and one line in `born`.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// What the opened token says: the ids, and the destination for a click.
    pub claims: Claims,
    /// The client's address (the socket peer, or the forwarded client behind a trusted proxy).
    pub ip: IpAddr,
    /// The `User-Agent` header as text (`""` when absent); cut to [`MAX_USER_AGENT_LEN`].
    pub user_agent: &'a str,
    /// When the request was answered.
    pub at: SystemTime,
    /// Whether the client was over its rate limit (the event goes to the overflow lane).
    pub limited: bool,
}

impl Event {
    /// A new event from what a request showed: mints `id` and `ts`.
    pub fn born(seen: Observed<'_>) -> Self {
        let Observed {
            claims,
            ip,
            user_agent,
            at,
            limited,
        } = seen;
        let (kind, url) = match claims.target {
            Target::Open => (Kind::Open, None),
            Target::Click(dest) => (Kind::Click, Some(dest.as_str().to_owned())),
        };
        let ids = claims.ids;
        Self {
            v: EVENT_VERSION,
            id: Uuid::now_v7(),
            kind,
            ts: Timestamp::from_system_time(at),
            account: ids.account,
            campaign: ids.campaign,
            message: ids.message,
            recipient: ids.recipient,
            url,
            ip,
            ua: truncate_at_char(user_agent, MAX_USER_AGENT_LEN).to_owned(),
            limited,
        }
    }

    /// The record as one line of JSON: byte for byte what `serde_json` makes of it.
    ///
    /// Written by hand because it runs once per tracking request: serde_json escapes strings
    /// a byte at a time, while most of ours (ids, user agents) need no escaping at all, which
    /// `push_json_str` checks for a whole string at once.
    pub fn to_json(&self) -> Vec<u8> {
        use std::io::Write as _;

        let strings = self.account.len()
            + self.campaign.len()
            + self.message.len()
            + self.recipient.len()
            + self.url.as_ref().map_or(0, String::len)
            + self.ua.len();
        let mut out = Vec::with_capacity(200 + strings);
        out.extend_from_slice(br#"{"v":"#);
        // A u8 in decimal, without a formatter.
        let v = self.v;
        if v >= 100 {
            out.push(b'0' + v / 100);
        }
        if v >= 10 {
            out.push(b'0' + v / 10 % 10);
        }
        out.push(b'0' + v % 10);
        out.extend_from_slice(br#","id":""#);
        out.extend_from_slice(
            self.id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(br#"","kind":""#);
        out.extend_from_slice(self.kind.as_str().as_bytes());
        // Writing into a Vec cannot fail.
        out.extend_from_slice(br#"","ts":""#);
        out.extend_from_slice(&self.ts.rfc3339());
        out.extend_from_slice(br#"","account":"#);
        push_json_str(&mut out, &self.account);
        out.extend_from_slice(br#","campaign":"#);
        push_json_str(&mut out, &self.campaign);
        out.extend_from_slice(br#","message":"#);
        push_json_str(&mut out, &self.message);
        out.extend_from_slice(br#","recipient":"#);
        push_json_str(&mut out, &self.recipient);
        if let Some(url) = &self.url {
            out.extend_from_slice(br#","url":"#);
            push_json_str(&mut out, url);
        }
        let _ = write!(out, r#","ip":"{}","ua":"#, self.ip);
        push_json_str(&mut out, &self.ua);
        if self.limited {
            out.extend_from_slice(br#","limited":true"#);
        }
        out.push(b'}');
        out
    }

    /// Reads one record; unknown fields (from newer versions) are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `s` as a JSON string, escaped as serde_json escapes: a backslash before `"` and `\`, the
/// short forms of backspace, form feed, newline, carriage return and tab, `\u00XX` for the other
/// control characters, everything else as it is.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    out.push(b'"');
    // No early exit, so the check runs over many bytes at once.
    if !s.bytes().fold(false, |any, b| any | escaped(b)) {
        out.extend_from_slice(s.as_bytes());
    } else {
        for b in s.bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b if b < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                }
                b => out.push(b),
            }
        }
    }
    out.push(b'"');
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

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, written digit by digit: it is in every event, and a
    /// formatter costs several times as much (years past 9999 are 9999-12-31T23:59:59.999Z).
    pub fn rfc3339(self) -> [u8; 24] {
        const MAX_MS: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let ms = self.unix_ms.min(MAX_MS);
        let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
        // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, reversed),
        // in unsigned arithmetic: the epoch moves to 0000-03-01, 719,468 days earlier.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1000 % 60);
        put(20, 3, in_day % 1000);
        out
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ASCII digits and punctuation only.
        f.write_str(std::str::from_utf8(&self.rfc3339()).unwrap_or_default())
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

    /// An open from 127.0.0.1 with no user agent, now; tests change what they look at.
    fn seen(claims: Claims) -> Observed<'static> {
        Observed {
            claims,
            ip: [127, 0, 0, 1].into(),
            user_agent: "",
            at: SystemTime::now(),
            limited: false,
        }
    }

    #[test]
    fn a_click_serialises_in_contract_order() {
        let claims = Claims::click(
            ids(),
            Destination::parse("https://example.com/landing").unwrap(),
        );
        let now = UNIX_EPOCH + Duration::from_millis(1_795_417_200_123);
        let e = Event::born(Observed {
            ip: "203.0.113.7".parse().unwrap(),
            user_agent: "Mozilla/5.0",
            at: now,
            ..seen(claims)
        });
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
        let mut e = Event::born(Observed {
            ip: "::1".parse().unwrap(),
            ..seen(Claims::open(ids()))
        });
        let json = String::from_utf8(e.to_json()).unwrap();
        assert!(
            !json.contains("\"url\"") && !json.contains("limited"),
            "{json}"
        );
        e = Event::born(Observed {
            limited: true,
            ..seen(Claims::open(ids()))
        });
        assert!(
            String::from_utf8(e.to_json())
                .unwrap()
                .ends_with(r#""ua":"","limited":true}"#)
        );
    }

    #[test]
    fn every_event_gets_its_own_id() {
        let a = Event::born(seen(Claims::open(ids())));
        let b = Event::born(seen(Claims::open(ids())));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn user_agents_are_cut_at_a_character_boundary() {
        let ua = format!("{}é", "a".repeat(MAX_USER_AGENT_LEN - 1));
        let e = Event::born(Observed {
            user_agent: &ua,
            ..seen(Claims::open(ids()))
        });
        assert_eq!(e.ua.len(), MAX_USER_AGENT_LEN - 1);
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("héllo", 3), "hé");
    }

    proptest::proptest! {
        #[test]
        fn to_json_writes_what_serde_json_writes(
            ids in proptest::array::uniform4(proptest::prelude::any::<String>()),
            url in proptest::option::of(proptest::prelude::any::<String>()),
            ua in proptest::prelude::any::<String>(),
            ms in 0u64..4_102_444_800_000,
            ip in proptest::prelude::any::<IpAddr>(),
            limited in proptest::prelude::any::<bool>(),
            v in proptest::prelude::any::<u8>(),
        ) {
            let [account, campaign, message, recipient] = ids;
            let event = Event {
                v,
                id: Uuid::now_v7(),
                kind: if url.is_some() { Kind::Click } else { Kind::Open },
                ts: Timestamp { unix_ms: ms },
                account,
                campaign,
                message,
                recipient,
                url,
                ip,
                ua,
                limited,
            };
            let by_hand = String::from_utf8(event.to_json()).unwrap();
            let by_serde = serde_json::to_string(&event).unwrap();
            proptest::prop_assert_eq!(by_hand, by_serde);
        }
    }

    proptest::proptest! {
        #[test]
        fn timestamps_read_as_humantime_writes_them(ms in 0u64..253_402_300_800_000) {
            let ts = Timestamp { unix_ms: ms };
            let want = humantime::format_rfc3339_millis(ts.to_system_time()).to_string();
            proptest::prop_assert_eq!(ts.to_string(), want);
        }
    }

    #[test]
    fn timestamps_at_the_edges() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_417_200_123, "2026-11-23T07:00:00.123Z"),
            (u64::MAX, "9999-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(Timestamp { unix_ms: ms }.to_string(), want, "{ms}");
        }
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é");
        // DEL and non-ASCII characters are written as they are.
        let want = "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}é\"";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn newer_fields_are_ignored_and_bad_timestamps_refused() {
        let e = Event::born(Observed {
            user_agent: "x",
            ..seen(Claims::open(ids()))
        });
        let mut value: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        value["future"] = serde_json::json!(true);
        assert_eq!(Event::from_json(value.to_string().as_bytes()).unwrap(), e);
        value["ts"] = serde_json::json!("yesterday");
        assert!(Event::from_json(value.to_string().as_bytes()).is_err());
    }
}
