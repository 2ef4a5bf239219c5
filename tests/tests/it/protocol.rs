//! The router ↔ CLI protocol of docs/protocol.md: liveness, waits, retries.

mod liveness;
mod retry;
mod wait;
