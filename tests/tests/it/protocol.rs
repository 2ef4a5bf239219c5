//! The router ↔ CLI protocol of docs/protocol.md: liveness, reports, waits, retries.

mod liveness;
mod reports;
mod retry;
mod wait;
