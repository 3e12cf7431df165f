//! HTTP serving shared by pixelgate's edge and drain: one way to listen, answer and refuse.
//!
//! - [`serve`]: the accept loop (connection cap, back-off when `accept` fails, graceful
//!   shutdown within a grace period) and each connection (TLS or HTTP/2 detection under the
//!   header deadline, hyper-util's auto builder with a timer, idle HTTP/2 connections closed).
//! - [`refusal`]: every answer that is not what was asked for, turned into its response in one
//!   exhaustive match.
//! - [`rescue`]: the layer that answers those refusals, so a stack above it cannot fail.
//! - [`respond`]: the answers both admin listeners give: `/healthz`, `/readyz`, `/metrics`, and
//!   the small text responses they are made of.
//!
//! Invariant: this crate knows nothing of tokens, events or Redis; what a listener serves is
//! given to it as a tower service per connection.

pub mod refusal;
pub mod rescue;
pub mod respond;
pub mod serve;

pub use crate::{
    refusal::Refusal,
    rescue::{Rescue, RescueLayer},
    respond::{Body, Readiness},
    serve::{ConnLimits, Connections, MakeRequests, SharedTls, Stack},
};
