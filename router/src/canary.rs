//! The automated canary's router side (docs/protocol.md, "The deciding replica"): the decider
//! Lease, the live replicas' readings, the decider loop that judges each Progressing rollout
//! and writes its transitions, and the fast abort every replica runs on its own counts.
//!
//! The judgment is `switchyard_core::canary::decide`; the Function after a transition is
//! `switchyard_core::rollout::apply`. Nothing here touches the request path: the counters it
//! reads are the ones every request already bumps.

pub mod lease;
pub mod replicas;
