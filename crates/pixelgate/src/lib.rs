//! The `pixelgate` binary's library: everything `main.rs` glues together.
//!
//! - [`config`]: the TOML configuration, the contract's environment variables and flags.
//! - [`keys`]: loading signing keys from key files or `PIXELGATE_SIGNING_KEY`.
//! - [`cli`]: the command line and what each command does.
//! - [`serve`]: `pixelgate serve`: tracing, signals, and the edge crate's `run`.
//! - [`drain`]: `pixelgate drain`: the sink, its migrations, and the drain crate's `run`.
//! - [`signals`]: `SIGTERM` and `SIGINT`, the end of both.
//!
//! The edge, the queue and the drain live in their own crates; this one only starts them.

pub mod cli;
pub mod config;
pub mod drain;
pub mod keys;
pub mod serve;
pub mod signals;
