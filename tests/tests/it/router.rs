//! The `switchyard-router` binary against the real API server: routing, updates, lifecycle.

mod lifecycle;
mod routing;
mod shadow;
mod updates;
