//! Empty: the local store's documents moved to the `switchyard-store` crate
//! (`switchyard_store::{FunctionDocument, RouterDocument, DocumentError, LOCAL_NAMESPACE}`),
//! beside the file access that reads and writes them. This module stays only until `pub mod
//! local;` leaves `lib.rs`; nothing should be added here.
