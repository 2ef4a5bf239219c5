//! The `switchyard-router` binary against the real API server: routing, updates, lifecycle.

mod failover;
mod lifecycle;
mod logs;
mod routing;
mod shadow;
mod updates;
