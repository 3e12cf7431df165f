//! pixelgate's disk spool: where the edge keeps events Redis did not take in time.
//!
//! - [`frame`]: the record format (length, CRC32C, lane, payload) and a reader that survives any
//!   damage.
//! - [`Spool`]: a directory of segment files; appends a group of records with one write and one
//!   `fdatasync`, rotates segments by size, refuses past its cap, hands sealed segments to the
//!   replayer (in `pixelgate_queue`) oldest first and deletes them once Redis has them.
//! - [`SpoolConfig`]: the `[spool]` section.
//!
//! Invariant: [`Spool::append`] returns `Ok` only after the records are on disk; a segment is
//! deleted only by [`Spool::remove`], which the replayer calls after Redis acknowledged all of
//! it. Blocking file I/O only: async callers run it on a blocking thread.

pub mod frame;
mod spool;

pub use frame::{Item, Lane, Records};
pub use spool::{Segment, Spool, SpoolConfig, SpoolError, SpoolStats};
