//! Shadow traffic (issue 16), off the request path: per function a [`Lane`] of a fixed number
//! of reusable copy slots and a fixed set of workers fed by a bounded channel. A request that
//! is chosen claims a free slot (one atomic swap) and writes its copy into the slot's buffers;
//! no free slot means the copy is dropped and counted, never queued. A worker sends the copy
//! to the shadow version, reads its answer (up to `maxBody`), compares it with the serving
//! version's through [`switchyard_core::shadow::compare`], counts the outcome in [`Stats`]
//! and frees the slot. The request path itself (`proxy/mirror.rs`) never waits on any of it.
//!
//! Two parts: [`stats`] (what is counted: [`Stats`] per shadowed version, the [`Registry`] of
//! them, `/shadow`, `/metrics` and the report's counts) and [`lane`] (the copy slots, the
//! workers and one copy's exchange and comparison).

use std::time::Duration;

pub mod lane;
pub mod stats;

pub use lane::{Config, Copy, Inner, Lane, Slot};
pub use stats::{Example, Registry, Skip, Stats};

/// Copies in flight per function (each slot holds at most a request and the serving answer of
/// `maxBody` plus a head; each worker one shadow answer): the memory bound is
/// `SLOTS × 2 + WORKERS` bodies of `maxBody`.
pub const SLOTS: usize = 16;
/// Workers per function: copies sent at once.
pub const WORKERS: usize = 4;
/// Differing examples kept per function.
pub const EXAMPLES: usize = 5;
/// The longest a copy may take, connect to last byte; a slower shadow version counts an error.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for response and request heads beside a body of `maxBody`.
pub const HEAD_ROOM: usize = 64 * 1024;
