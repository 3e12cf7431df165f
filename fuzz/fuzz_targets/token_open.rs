//! Token opening on any input, and sealing round trips.
//!
//! The input, as text, is opened as a pixel and as a click token: it never panics, and a token
//! that opens is exactly what sealing its claims gives back (one spelling per token, so no
//! variant of a real token opens too). The same bytes, read as [`Fields`], are sealed and
//! opened again and must give the same claims. The seeds in `corpus/token_open` are sealed
//! with [`KEYS`] and [`OLD`].

#![no_main]

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pixelgate_core::{Claims, Destination, Ids, KeyId, Keyring, Kind, Secret};

/// What a token can carry, as the fuzzer chooses it.
#[derive(Arbitrary, Debug)]
struct Fields {
    account: String,
    campaign: String,
    message: String,
    recipient: String,
    /// A click destination, `https://` (`true`) or `http://` and the rest; `None` seals a pixel.
    destination: Option<(bool, String)>,
    not_after: Option<u64>,
}

/// Keys 1 and 2 open, key 2 seals; [`OLD`] seals with key 1. Fixed, so the committed seeds
/// open.
static KEYS: LazyLock<Keyring> = LazyLock::new(|| keyring(&[1, 2]));
static OLD: LazyLock<Keyring> = LazyLock::new(|| keyring(&[1]));

fn keyring(ids: &[u8]) -> Keyring {
    Keyring::new(
        ids.iter()
            .map(|&id| (KeyId(id), Secret::from_bytes([id; 32]))),
    )
    .expect("distinct key ids make a keyring")
}

/// A fixed clock, so a run is repeatable: 2023-11-14.
const NOW: Duration = Duration::from_secs(1_700_000_000);

fn open_any(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let now = UNIX_EPOCH + NOW;
    for kind in [Kind::Open, Kind::Click] {
        let Ok(claims) = KEYS.open(&token, kind, now) else {
            continue;
        };
        assert_eq!(claims.kind(), kind);
        assert!(claims.not_after.is_none_or(|t| t >= NOW.as_secs()));
        assert!(
            token == KEYS.seal(&claims) || token == OLD.seal(&claims),
            "a second spelling of a token opened: {token}"
        );
    }
}

fn round_trip(fields: Fields) {
    let Ok(ids) = Ids::new(
        fields.account,
        fields.campaign,
        fields.message,
        fields.recipient,
    ) else {
        return;
    };
    let mut claims = match fields.destination {
        None => Claims::open(ids),
        Some((https, rest)) => {
            let scheme = if https { "https" } else { "http" };
            match Destination::parse(&format!("{scheme}://{rest}")) {
                Ok(dest) => Claims::click(ids, dest),
                Err(_) => return,
            }
        }
    };
    claims.not_after = fields.not_after;
    let token = KEYS.seal(&claims);
    // Opened at the epoch, so no expiry time has passed.
    let opened = KEYS.open(&token, claims.kind(), SystemTime::UNIX_EPOCH);
    assert_eq!(opened, Ok(claims), "token {token}");
}

fuzz_target!(|data: &[u8]| {
    open_any(data);
    if let Ok(fields) = Fields::arbitrary_take_rest(Unstructured::new(data)) {
        round_trip(fields);
    }
});
