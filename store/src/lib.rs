//! The local store: Switchyard without a cluster (`--store dir:PATH`).
//!
//! A directory holds `functions/<name>.yaml` (a Function and its versions) and
//! `routers/<replica>.json` (each router's heartbeat and acknowledgements).
//!
//! - `document`: the files' contents as values — parse, check, render, revisions. No IO.
//! - `dir`: [`LocalStore`], the file access: an exclusive lock for writers, an
//!   optimistic-concurrency check, atomic replacement (temporary file, fsync, rename).
//!
//! Both binaries use this crate: the CLI writes the store, the router follows it (its file
//! notifications live in `switchyard_router::source::local`). It links neither Pingora nor a
//! Kubernetes client, so the CLI can use the store without the data plane.

mod dir;
mod document;

pub use dir::{parse_store_flag, LocalStore, StoreError, LOCK_NOTICE};
pub use document::{
    DocumentError, FunctionDocument, FunctionEntry, RouterDocument, FORGET_AFTER_LEASES,
    FORGET_AFTER_MIN_MS, LOCAL_NAMESPACE,
};
