//! What one router instance is told at start: addresses, threads, identity, snapshot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchyard_core::BuildOptions;

/// Settings of one router instance (the binary fills it from flags; tests fill it directly).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Where the proxy listens; default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Where the admin endpoints listen; default `127.0.0.1:9090`.
    pub admin: SocketAddr,
    /// Worker threads of the proxy service; default 1.
    pub threads: usize,
    /// How long a graceful shutdown lets in-flight requests finish; default 10 s.
    pub grace_period: Duration,
    /// This replica's name: its Lease and its entry in `status.routers`.
    pub replica: String,
    /// Where each good state is written, and read from when the source is unreachable at start.
    pub snapshot: Option<PathBuf>,
    /// How upstream addresses are formed (cluster DNS domain).
    pub build: BuildOptions,
    /// How long the first complete state may take before the start fails (or falls back to the
    /// snapshot); default 10 s.
    pub startup_timeout: Duration,
    /// Whether SIGTERM and SIGINT stop the router (the binary); tests stop it through the handle.
    pub handle_signals: bool,
    /// Proxies in front of the router whose `X-Forwarded-*` and `Forwarded` headers are
    /// believed; default 0: a client's own values are replaced, never passed on.
    pub trusted_hops: usize,
    /// Also send functions an RFC 7239 `Forwarded` header; default false (`X-Forwarded-*` only).
    pub forwarded_header: bool,
}

impl RouterConfig {
    /// The defaults for `replica`, with loopback-only ports chosen by the caller.
    pub fn new(replica: impl Into<String>) -> Self {
        RouterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            threads: 1,
            grace_period: Duration::from_secs(10),
            replica: replica.into(),
            snapshot: None,
            build: BuildOptions::default(),
            startup_timeout: Duration::from_secs(10),
            handle_signals: false,
            trusted_hops: 0,
            forwarded_header: false,
        }
    }
}
