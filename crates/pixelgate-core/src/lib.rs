//! pixelgate's domain core: what an event is and how a tracking URL carries it.
//!
//! - [`event`]: the JSON record of one open or click, as it travels through Redis to the sinks.
//! - [`token`]: sealing and opening the tokens in pixel and click URLs ([`Keyring`]).
//! - [`key`]: signing secrets and their ids, so keys can rotate without breaking old mail.
//! - [`destination`]: the rules a click destination obeys, checked when sealing and again when
//!   opening, so a token can never become an open redirect.
//!
//! Invariant: this crate does no I/O and knows nothing of tokio, hyper or Redis. Everything here
//! is a pure function of its inputs (plus the clock and the OS random source, passed in or named).

pub mod destination;
pub mod event;
pub mod key;
pub mod token;

pub use destination::{Destination, DestinationError};

/// Implements `serde::Deserialize` through `FromStr`, so that a value read from a file, an
/// environment variable or a flag is checked by the same code and fails with the same message.
#[macro_export]
macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub use event::{Event, Kind, Timestamp};
pub use key::{KeyId, Secret};
pub use token::{Claims, Ids, Keyring, OpenError, SealError, Target};
