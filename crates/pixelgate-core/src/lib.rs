//! pixelgate's domain core: what an event is and how a tracking URL carries it.
//!
//! - [`event`]: the JSON record of one open or click, as it travels through Redis to the sinks.
//! - [`token`]: sealing and opening the tokens in pixel and click URLs ([`Keyring`]).
//! - [`key`]: signing secrets and their ids, so keys can rotate without breaking old mail.
//! - [`config`]: [`Invalid`], the error every crate's configuration check answers with.
//! - [`destination`]: the rules a click destination obeys, checked when sealing and again when
//!   opening, so a token can never become an open redirect.
//!
//! Invariant: this crate does no I/O and knows nothing of tokio, hyper or Redis. Everything here
//! is a pure function of its inputs (plus the clock and the OS random source, passed in or named).

pub mod config;
pub mod destination;
pub mod event;
pub mod key;
pub mod token;

pub use config::{BadValue, Invalid};
pub use destination::{Destination, DestinationError};

pub use event::{Event, Kind, Observed, Timestamp};
pub use key::{KeyId, Secret};
pub use token::{Claims, Ids, Keyring, OpenError, SealError, Target};
