use proptest::prelude::*;

use super::*;

fn secret(n: u8) -> Secret {
    Secret::from_bytes([n; 32])
}

fn ring(keys: &[(u8, u8)]) -> Keyring {
    Keyring::new(keys.iter().map(|&(id, s)| (KeyId(id), secret(s)))).unwrap()
}

fn ids20() -> Ids {
    Ids::new(
        "acct-000000000000001",
        "camp-000000000000001",
        "msg-0000000000000001",
        "rcpt-000000000000001",
    )
    .unwrap()
}

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

#[test]
fn pixel_tokens_for_twenty_character_ids_stay_under_120_characters() {
    let token = ring(&[(1, 1)]).seal(&Claims::open(ids20()));
    assert!(
        token.len() < 120,
        "pixel token is {} characters",
        token.len()
    );
    assert_eq!(token.len(), 111);
    // Ids outside the base64url alphabet are kept as UTF-8 and cost more, but still open.
    let dotted = Ids::new(
        "acme.example",
        "spring sale",
        "<msg@example>",
        "r@example.com",
    )
    .unwrap();
    let token = ring(&[(1, 1)]).seal(&Claims::open(dotted.clone()));
    let claims = ring(&[(1, 1)]).open(&token, Kind::Open, at(0)).unwrap();
    assert_eq!(claims.ids, dotted);
}

#[test]
fn click_tokens_carry_the_destination_without_its_scheme() {
    let dest = Destination::parse("https://example.com/landing?utm_source=mail").unwrap();
    let token = ring(&[(1, 1)]).seal(&Claims::click(ids20(), dest.clone()));
    // 111 for the pixel plus the 36 bytes of "example.com/landing?utm_source=mail" (base64: 4/3).
    assert_eq!(token.len(), 158);
    let claims = ring(&[(1, 1)]).open(&token, Kind::Click, at(0)).unwrap();
    assert_eq!(claims.target, Target::Click(dest));
}

#[test]
fn sealing_is_deterministic_per_key() {
    let claims = Claims::open(ids20());
    assert_eq!(ring(&[(1, 1)]).seal(&claims), ring(&[(1, 1)]).seal(&claims));
    assert_ne!(ring(&[(1, 1)]).seal(&claims), ring(&[(1, 2)]).seal(&claims));
}

#[test]
fn the_newest_key_seals_and_every_key_opens() {
    let old = ring(&[(1, 1)]);
    let rotated = ring(&[(2, 2), (1, 1)]);
    assert_eq!(rotated.sealing_key_id(), KeyId(2));
    assert_eq!(rotated.key_ids().collect::<Vec<_>>(), [KeyId(1), KeyId(2)]);
    let claims = Claims::open(ids20());
    let before = old.seal(&claims);
    let after = rotated.seal(&claims);
    assert_eq!(rotated.open(&before, Kind::Open, at(0)).unwrap(), claims);
    assert_eq!(rotated.open(&after, Kind::Open, at(0)).unwrap(), claims);
    assert_eq!(
        old.open(&after, Kind::Open, at(0)),
        Err(OpenError::UnknownKey(KeyId(2)))
    );
}

#[test]
fn keyrings_refuse_no_keys_and_duplicate_ids() {
    assert_eq!(Keyring::new([]).unwrap_err(), KeyringError::Empty);
    let dup = Keyring::new([(KeyId(3), secret(1)), (KeyId(3), secret(2))]).unwrap_err();
    assert_eq!(dup, KeyringError::DuplicateId(KeyId(3)));
    assert_eq!(
        format!("{:?}", ring(&[(1, 1), (2, 2)])),
        "Keyring { key_ids: [1, 2] }"
    );
}

#[test]
fn a_token_opens_only_as_its_own_kind() {
    let keys = ring(&[(1, 1)]);
    let pixel = keys.seal(&Claims::open(ids20()));
    let err = keys.open(&pixel, Kind::Click, at(0)).unwrap_err();
    assert_eq!(err, OpenError::WrongKind(Kind::Open, Kind::Click));
    assert_eq!(err.to_string(), "token is for a open, not a click");
}

#[test]
fn expiry_is_inclusive_of_the_last_second() {
    let keys = ring(&[(1, 1)]);
    let token = keys.seal(&Claims::open(ids20()).expiring_at(at(1_000)));
    assert!(keys.open(&token, Kind::Open, at(1_000)).is_ok());
    assert_eq!(
        keys.open(&token, Kind::Open, at(1_001)),
        Err(OpenError::Expired)
    );
    assert_eq!(expiry(at(5), Duration::from_secs(5)), at(10));
}

#[test]
fn obvious_garbage_is_refused_cheaply() {
    let keys = ring(&[(1, 1)]);
    for bad in [
        "",
        "a",
        "====",
        "AQE",
        "%2e%2e",
        "AQE\0AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(keys.open(bad, Kind::Open, at(0)).is_err(), "{bad:?}");
    }
    assert_eq!(
        keys.open(&"A".repeat(10_240), Kind::Open, at(0)),
        Err(OpenError::Malformed)
    );
    let v2 = URL_SAFE_NO_PAD.encode([2u8; 40]);
    assert_eq!(
        keys.open(&v2, Kind::Open, at(0)),
        Err(OpenError::UnknownVersion(2))
    );
}

#[test]
fn seal_refuses_bad_ids_naming_the_field() {
    assert_eq!(
        Ids::new("", "c", "m", "r"),
        Err(SealError::BadId("account"))
    );
    assert_eq!(
        Ids::new("a", "c\n", "m", "r"),
        Err(SealError::BadId("campaign"))
    );
    let long = "m".repeat(MAX_ID_LEN + 1);
    assert_eq!(
        Ids::new("a", "c", long, "r"),
        Err(SealError::BadId("message"))
    );
    assert_eq!(
        Ids::new("a", "c", "m", "").unwrap_err().to_string(),
        "recipient must be 1 to 128 bytes without control characters"
    );
}

#[test]
fn payloads_are_canonical() {
    // The varint decoder refuses overlong and oversized encodings.
    let varint = |b: &[u8]| Reader { bytes: b, pos: 0 }.varint();
    assert_eq!(varint(&[0x05]), Ok(5));
    assert_eq!(varint(&[0x80, 0x01]), Ok(128));
    assert_eq!(varint(&[0x85, 0x00]), Err(OpenError::Malformed));
    assert_eq!(varint(&[0xff; 10]), Err(OpenError::Malformed));
    let mut max = Vec::new();
    put_varint(&mut max, u64::MAX);
    assert_eq!(varint(&max), Ok(u64::MAX));
    // A packed id whose spare bits are set is not ours.
    assert_eq!(
        Reader {
            bytes: &[0x03, 0x03],
            pos: 0
        }
        .id(),
        Err(OpenError::Malformed)
    );
    assert_eq!(
        Reader {
            bytes: &[0x03, 0x00],
            pos: 0
        }
        .id(),
        Ok("A".to_owned())
    );
}

fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,40}",
        "[a-z0-9.@+ -]{1,40}",
        any::<String>().prop_filter("a valid id", |s| check_id("id", s).is_ok()),
    ]
}

fn ids_strategy() -> impl Strategy<Value = Ids> {
    (id_strategy(), id_strategy(), id_strategy(), id_strategy())
        .prop_map(|(a, c, m, r)| Ids::new(a, c, m, r).unwrap())
}

fn claims_strategy() -> impl Strategy<Value = Claims> {
    let dest =
        "https?://[a-z]{1,10}\\.example(:[0-9]{1,4})?/[a-zA-Z0-9/._~%-]{0,30}(\\?[a-z=&]{0,10})?";
    (
        ids_strategy(),
        proptest::option::of(dest),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(ids, dest, not_after)| {
            let mut c = match dest {
                Some(d) => Claims::click(ids, Destination::parse(&d).unwrap()),
                None => Claims::open(ids),
            };
            c.not_after = not_after;
            c
        })
}

proptest! {
    #[test]
    fn seal_then_open_gives_back_every_field(claims in claims_strategy()) {
        let keys = ring(&[(7, 7)]);
        let token = keys.seal(&claims);
        prop_assert_eq!(keys.open(&token, claims.kind(), at(0)), Ok(claims));
    }

    #[test]
    fn any_changed_character_fails_to_open(claims in claims_strategy(), pos: prop::sample::Index, c in 0usize..64) {
        let keys = ring(&[(7, 7)]);
        let token = keys.seal(&claims);
        let i = pos.index(token.len());
        let replacement = char::from(ALPHABET[c]);
        prop_assume!(token.as_bytes()[i] != ALPHABET[c]);
        let mut bad = token.clone();
        bad.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));
        prop_assert!(keys.open(&bad, claims.kind(), at(0)).is_err());
    }

    #[test]
    fn any_flipped_bit_fails_to_open(claims in claims_strategy(), pos: prop::sample::Index, bit in 0u8..8) {
        let keys = ring(&[(7, 7)]);
        let mut raw = URL_SAFE_NO_PAD.decode(keys.seal(&claims)).unwrap();
        let i = pos.index(raw.len());
        raw[i] ^= 1 << bit;
        prop_assert!(keys.open(&URL_SAFE_NO_PAD.encode(raw), claims.kind(), at(0)).is_err());
    }

    #[test]
    fn any_missing_or_added_character_fails_to_open(
        claims in claims_strategy(), pos: prop::sample::Index, c in 0usize..64, add: bool,
    ) {
        let keys = ring(&[(7, 7)]);
        let mut token = keys.seal(&claims);
        if add {
            let i = pos.index(token.len() + 1);
            token.insert(i, char::from(ALPHABET[c]));
        } else {
            token.remove(pos.index(token.len()));
        }
        prop_assert!(keys.open(&token, claims.kind(), at(0)).is_err());
    }

    #[test]
    fn a_token_from_one_key_does_not_open_under_another(claims in claims_strategy(), a: [u8; 32], b: [u8; 32]) {
        prop_assume!(a != b);
        let sealer = Keyring::new([(KeyId(1), Secret::from_bytes(a))]).unwrap();
        let other = Keyring::new([(KeyId(1), Secret::from_bytes(b))]).unwrap();
        let token = sealer.seal(&claims);
        prop_assert_eq!(other.open(&token, claims.kind(), at(0)), Err(OpenError::Forged));
    }

    #[test]
    fn opening_arbitrary_input_never_panics(input in any::<String>()) {
        let keys = ring(&[(1, 1)]);
        for kind in [Kind::Open, Kind::Click] {
            prop_assert!(keys.open(&input, kind, at(0)).is_err());
        }
    }

    #[test]
    fn opening_well_encoded_garbage_never_panics(tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let keys = ring(&[(1, 1)]);
        let mut raw = vec![TOKEN_VERSION, 1];
        raw.extend(tail);
        prop_assert!(keys.open(&URL_SAFE_NO_PAD.encode(raw), Kind::Open, at(0)).is_err());
    }

    #[test]
    fn decoding_arbitrary_payloads_never_panics(payload in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_payload(&payload);
    }
}
