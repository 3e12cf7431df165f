//! Sealed tokens: what a pixel or click URL carries, readable only by pixelgate.
//!
//! A token is unpadded base64url of `version ‖ key id ‖ AES-256-GCM-SIV(payload) ‖ tag`, with
//! the two header bytes as associated data. GCM-SIV resists nonce reuse (RFC 8452), so tokens
//! are sealed deterministically with a per-key nonce and carry none: the same fields always give
//! the same URL, and a reader of the mail learns nothing else. Any changed, missing or added byte
//! fails authentication. The payload layout is in `docs/tokens.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm_siv::{
    Aes256GcmSiv, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{Destination, DestinationError, KeyId, Kind, Secret};

/// The token format version written in the first byte.
pub const TOKEN_VERSION: u8 = 1;

/// The longest id (account, campaign, message, recipient) accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Tokens longer than this many characters are refused before any decoding work.
pub const MAX_TOKEN_LEN: usize = 4096;

const HEADER_LEN: usize = 2;
const TAG_LEN: usize = 16;

const FLAG_CLICK: u8 = 1;
const FLAG_NOT_AFTER: u8 = 1 << 1;
const FLAG_HTTPS: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_CLICK | FLAG_NOT_AFTER | FLAG_HTTPS;

/// The four ids a token names. Each is 1 to [`MAX_ID_LEN`] bytes with no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    pub account: String,
    pub campaign: String,
    pub message: String,
    pub recipient: String,
}

impl Ids {
    /// Checked ids; the error names the first bad field.
    pub fn new(
        account: impl Into<String>,
        campaign: impl Into<String>,
        message: impl Into<String>,
        recipient: impl Into<String>,
    ) -> Result<Self, SealError> {
        let ids = Self {
            account: account.into(),
            campaign: campaign.into(),
            message: message.into(),
            recipient: recipient.into(),
        };
        for (name, value) in ids.fields() {
            check_id(name, value)?;
        }
        Ok(ids)
    }

    fn fields(&self) -> [(&'static str, &str); 4] {
        [
            ("account", &self.account),
            ("campaign", &self.campaign),
            ("message", &self.message),
            ("recipient", &self.recipient),
        ]
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), SealError> {
    if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
        return Err(SealError::BadId(field));
    }
    Ok(())
}

/// What a token is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An open pixel, served at `/o/{token}.gif`.
    Open,
    /// A click link to this destination, served at `/c/{token}`.
    Click(Destination),
}

/// Everything a token carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub ids: Ids,
    pub target: Target,
    /// Unix seconds after which the token no longer opens; `None` (the default) never expires.
    pub not_after: Option<u64>,
}

impl Claims {
    pub fn open(ids: Ids) -> Self {
        Self {
            ids,
            target: Target::Open,
            not_after: None,
        }
    }

    pub fn click(ids: Ids, destination: Destination) -> Self {
        Self {
            ids,
            target: Target::Click(destination),
            not_after: None,
        }
    }

    /// The same claims, expiring after `t` (to the second, rounded down).
    pub fn expiring_at(mut self, t: SystemTime) -> Self {
        self.not_after = Some(unix_seconds(t));
        self
    }

    pub fn kind(&self) -> Kind {
        match self.target {
            Target::Open => Kind::Open,
            Target::Click(_) => Kind::Click,
        }
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why claims could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("{0} must be 1 to {MAX_ID_LEN} bytes without control characters")]
    BadId(&'static str),
}

/// Why a token did not open. Every variant means the same to a client: no event, no redirect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("token is not well-formed")]
    Malformed,
    #[error("token has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("token was sealed with key {0}, which is not configured")]
    UnknownKey(KeyId),
    #[error("token failed authentication")]
    Forged,
    #[error("token is for a {}, not a {}", .0.as_str(), .1.as_str())]
    WrongKind(Kind, Kind),
    #[error("token expired")]
    Expired,
    #[error("token destination is refused")]
    Destination(#[source] DestinationError),
}

/// Why a keyring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no signing key is configured")]
    Empty,
    #[error("key id {0} is configured twice")]
    DuplicateId(KeyId),
}

struct SealingKey {
    id: KeyId,
    cipher: Aes256GcmSiv,
}

/// The configured keys: the highest id seals, every key opens.
pub struct Keyring {
    /// Sorted by id; the last one seals.
    keys: Vec<SealingKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|k| k.id.0).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    pub fn new(keys: impl IntoIterator<Item = (KeyId, Secret)>) -> Result<Self, KeyringError> {
        let mut keys: Vec<SealingKey> = keys
            .into_iter()
            .map(|(id, secret)| SealingKey {
                id,
                cipher: Aes256GcmSiv::new(&(*secret.bytes()).into()),
            })
            .collect();
        keys.sort_by_key(|k| k.id);
        if let Some(pair) = keys.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(KeyringError::DuplicateId(pair[0].id));
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys })
    }

    /// The id of the key that seals.
    pub fn sealing_key_id(&self) -> KeyId {
        self.sealer().id
    }

    /// The ids of every key that opens, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    fn sealer(&self) -> &SealingKey {
        // `new` refuses an empty keyring, so there is always a last key.
        &self.keys[self.keys.len() - 1]
    }

    fn key(&self, id: KeyId) -> Option<&SealingKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Seals claims into a token with the newest key.
    pub fn seal(&self, claims: &Claims) -> String {
        let key = self.sealer();
        let header = [TOKEN_VERSION, key.id.0];
        let plain = encode_payload(claims);
        let payload = Payload {
            msg: &plain,
            aad: &header,
        };
        // Encryption fails only for messages of gigabytes; ours are a few hundred bytes.
        let sealed = key
            .cipher
            .encrypt(&nonce(key.id), payload)
            .unwrap_or_default();
        let mut raw = Vec::with_capacity(HEADER_LEN + sealed.len());
        raw.extend_from_slice(&header);
        raw.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Opens a token of the expected kind, checking its expiry against `now` and its
    /// destination against the same rules as when it was sealed.
    pub fn open(&self, token: &str, expect: Kind, now: SystemTime) -> Result<Claims, OpenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(OpenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| OpenError::Malformed)?;
        if raw.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (header, sealed) = raw.split_at(HEADER_LEN);
        if header[0] != TOKEN_VERSION {
            return Err(OpenError::UnknownVersion(header[0]));
        }
        let id = KeyId(header[1]);
        let key = self.key(id).ok_or(OpenError::UnknownKey(id))?;
        let plain = key
            .cipher
            .decrypt(
                &nonce(id),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| OpenError::Forged)?;
        let claims = decode_payload(&plain)?;
        if claims.kind() != expect {
            return Err(OpenError::WrongKind(claims.kind(), expect));
        }
        if claims.not_after.is_some_and(|t| unix_seconds(now) > t) {
            return Err(OpenError::Expired);
        }
        Ok(claims)
    }
}

/// The per-key nonce. Fixed per key on purpose: see the module header.
fn nonce(id: KeyId) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(b"pxg1");
    n[4] = id.0;
    n.into()
}

/// Adds `expires_in` to `now`, for `sign --expires-in`.
pub fn expiry(now: SystemTime, expires_in: Duration) -> SystemTime {
    now.checked_add(expires_in).unwrap_or(now)
}

// ---- payload codec --------------------------------------------------------------------------

fn encode_payload(claims: &Claims) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut flags = 0;
    if claims.not_after.is_some() {
        flags |= FLAG_NOT_AFTER;
    }
    if let Target::Click(dest) = &claims.target {
        flags |= FLAG_CLICK;
        if dest.is_https() {
            flags |= FLAG_HTTPS;
        }
    }
    out.push(flags);
    if let Some(t) = claims.not_after {
        put_varint(&mut out, t);
    }
    for (_, value) in claims.ids.fields() {
        put_id(&mut out, value);
    }
    if let Target::Click(dest) = &claims.target {
        out.extend_from_slice(dest.without_scheme().as_bytes());
    }
    out
}

fn decode_payload(bytes: &[u8]) -> Result<Claims, OpenError> {
    let mut r = Reader { bytes, pos: 0 };
    let flags = r.byte()?;
    if flags & !KNOWN_FLAGS != 0 || (flags & FLAG_HTTPS != 0 && flags & FLAG_CLICK == 0) {
        return Err(OpenError::Malformed);
    }
    let not_after = if flags & FLAG_NOT_AFTER != 0 {
        Some(r.varint()?)
    } else {
        None
    };
    let ids = Ids {
        account: r.id()?,
        campaign: r.id()?,
        message: r.id()?,
        recipient: r.id()?,
    };
    for (name, value) in ids.fields() {
        check_id(name, value).map_err(|_| OpenError::Malformed)?;
    }
    let target = if flags & FLAG_CLICK != 0 {
        let rest = std::str::from_utf8(r.rest()).map_err(|_| OpenError::Malformed)?;
        let scheme = if flags & FLAG_HTTPS != 0 {
            "https://"
        } else {
            "http://"
        };
        let url = format!("{scheme}{rest}");
        let dest = Destination::parse(&url).map_err(OpenError::Destination)?;
        // A sealed destination is already in its serialised form; anything else was not
        // sealed by us and must not become a Location.
        if dest.as_str() != url {
            return Err(OpenError::Malformed);
        }
        Target::Click(dest)
    } else if r.rest().is_empty() {
        Target::Open
    } else {
        return Err(OpenError::Malformed);
    };
    Ok(Claims {
        ids,
        target,
        not_after,
    })
}

/// Ids whose bytes are all in the base64url alphabet are packed at six bits a character; others
/// are kept as UTF-8. The length prefix says which: `len << 1 | packed`.
fn put_id(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let packed = bytes.iter().all(|&c| sextet(c).is_some());
    put_varint(out, ((bytes.len() as u64) << 1) | u64::from(packed));
    if packed {
        let (mut acc, mut bits) = (0u32, 0u32);
        for &c in bytes {
            acc = (acc << 6) | u32::from(sextet(c).unwrap_or(0));
            bits += 6;
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            out.push((acc << (8 - bits)) as u8);
        }
    } else {
        out.extend_from_slice(bytes);
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, OpenError> {
        let b = *self.bytes.get(self.pos).ok_or(OpenError::Malformed)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], OpenError> {
        let end = self.pos.checked_add(n).ok_or(OpenError::Malformed)?;
        let s = self.bytes.get(self.pos..end).ok_or(OpenError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn rest(&mut self) -> &[u8] {
        let s = &self.bytes[self.pos.min(self.bytes.len())..];
        self.pos = self.bytes.len();
        s
    }

    /// LEB128, at most ten bytes, canonical (no trailing zero groups).
    fn varint(&mut self) -> Result<u64, OpenError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(OpenError::Malformed);
            }
            value |= part << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(OpenError::Malformed);
                }
                return Ok(value);
            }
        }
        Err(OpenError::Malformed)
    }

    fn id(&mut self) -> Result<String, OpenError> {
        let head = self.varint()?;
        let len = usize::try_from(head >> 1).map_err(|_| OpenError::Malformed)?;
        if len > MAX_ID_LEN {
            return Err(OpenError::Malformed);
        }
        if head & 1 == 0 {
            let raw = self.take(len)?;
            return String::from_utf8(raw.to_vec()).map_err(|_| OpenError::Malformed);
        }
        let data = self.take((len * 6).div_ceil(8))?;
        let mut out = String::with_capacity(len);
        let (mut acc, mut bits, mut bytes) = (0u32, 0u32, data.iter());
        for _ in 0..len {
            if bits < 6 {
                acc = (acc << 8) | u32::from(*bytes.next().ok_or(OpenError::Malformed)?);
                bits += 8;
            }
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 0x3f) as usize]));
            acc &= (1 << bits) - 1;
        }
        // The unused low bits must be zero, so each id has exactly one packing.
        if acc != 0 {
            return Err(OpenError::Malformed);
        }
        Ok(out)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests;
