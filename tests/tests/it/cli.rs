//! The `switchyard` binary against the real API server: commands, concurrency, reads, waits.

mod canary;
mod commands;
mod concurrency;
mod delete_all;
mod lists;
mod routers;
mod timing;
mod verbs;
