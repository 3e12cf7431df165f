//! The `pixelgate` binary's library: everything `main.rs` glues together.
//!
//! - [`config`]: the TOML configuration, the contract's environment variables and flags.
//! - [`keys`]: loading signing keys from key files or `PIXELGATE_SIGNING_KEY`.
//! - [`cli`]: the command line and what each command does.
//!
//! The edge (`serve`) and the drain (`drain`) live in their own crates and are started from here.

pub mod cli;
pub mod config;
pub mod keys;
