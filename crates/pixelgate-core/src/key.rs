//! Signing secrets and key ids.
//!
//! A secret is 32 random bytes, written as 43 characters of unpadded base64url (what
//! `pixelgate keygen` prints). Each key has a one-byte id that travels in every token, so that
//! the newest key seals while every configured key still opens.

use std::{fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// The length of a secret in bytes.
pub const SECRET_LEN: usize = 32;

/// A key id, 0 to 255. The highest configured id is the newest key: it seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u8);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Plain decimal only: "+1" or "01" would make two spellings of one id.
        let canonical = s == "0" || (!s.starts_with(['0', '+']) && !s.is_empty());
        match s.parse::<u8>() {
            Ok(id) if canonical => Ok(Self(id)),
            _ => Err(KeyError::BadId(s.chars().take(16).collect())),
        }
    }
}

/// A signing secret. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

/// Why a secret or key id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "a signing secret is {SECRET_LEN} bytes as 43 characters of unpadded base64url \
         (make one with `pixelgate keygen`)"
    )]
    BadSecret,
    #[error("a key id is a whole number from 0 to 255, not {0:?}")]
    BadId(String),
    #[error("the operating system's random source failed")]
    Random(#[source] getrandom::Error),
}

impl Secret {
    /// A new secret from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; SECRET_LEN];
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// A secret from raw bytes (tests and key derivation).
    pub const fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = KeyError;

    /// Parses the keygen form; surrounding whitespace (a key file's newline) is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let decoded = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| KeyError::BadSecret)?;
        let bytes = <[u8; SECRET_LEN]>::try_from(decoded).map_err(|_| KeyError::BadSecret)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Secret {
    /// The keygen form. Only ever printed by `pixelgate keygen`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_stay_hidden() {
        let s = Secret::generate().unwrap();
        let text = s.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(format!("{text}\n").parse::<Secret>().unwrap(), s);
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_ne!(Secret::generate().unwrap(), s);
    }

    #[test]
    fn bad_secrets_are_refused() {
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            &"+".repeat(43),
            "A".repeat(42).as_str(),
        ] {
            assert_eq!(bad.parse::<Secret>(), Err(KeyError::BadSecret), "{bad:?}");
        }
    }

    #[test]
    fn key_ids_are_plain_decimals() {
        assert_eq!("0".parse::<KeyId>(), Ok(KeyId(0)));
        assert_eq!("255".parse::<KeyId>(), Ok(KeyId(255)));
        for bad in ["", "256", "-1", "+1", "01", "a", "1.0"] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad:?}");
        }
    }
}
