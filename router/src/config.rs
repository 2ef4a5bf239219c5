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
    /// This replica's name: the name of its Lease and of its RouterReport.
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
    /// How long each step of a request may wait; see [`Timeouts`] for the defaults.
    pub timeouts: Timeouts,
    /// Client connections the proxy port holds at once; past it a new connection gets a 503
    /// and is closed (the admin port is not counted). Default 4,096: about 17 KiB of buffers
    /// each, 70 MiB at most, inside the router Deployment's 256 MiB limit.
    pub max_connections: usize,
    /// Connections (in use or idle) to one upstream address; past it a request waits up to its
    /// connect timeout for one to free up, then gets a 503. Default 1,024.
    pub max_upstream_connections: usize,
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
            timeouts: Timeouts::default(),
            max_connections: 4096,
            max_upstream_connections: 1024,
        }
    }
}

/// How long each step of a request may wait. Every one is an idle time (it restarts on each
/// bit of progress), never a bound on a whole request, so a long stream that keeps talking is
/// never cut. Defaults follow nginx's (60 s for reads and writes) and HAProxy's advice for
/// connects (a little over 3 s, so one lost SYN is retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A keep-alive connection idle between requests, or a request head still arriving;
    /// default 60 s (nginx `client_header_timeout`). The connection is closed.
    pub client_idle: Duration,
    /// The client silent inside a request body; default 60 s (nginx `client_body_timeout`).
    /// The client gets a 408.
    pub request_idle: Duration,
    /// A TCP connect to an upstream; default 5 s (HAProxy `timeout connect`). Then one
    /// failover, else a 504.
    pub connect: Duration,
    /// The upstream taking the request and starting its response; default 60 s (nginx
    /// `proxy_read_timeout`, HAProxy `timeout server`). The client gets a 504.
    pub response_head: Duration,
    /// The upstream silent inside a response body; default 60 s (nginx `proxy_read_timeout`).
    /// Both connections are closed (the head is already sent).
    pub response_idle: Duration,
    /// A write to a client that does not read; default 60 s (nginx `send_timeout`). Both
    /// connections are closed.
    pub client_write: Duration,
    /// Both sides of an upgraded connection (a WebSocket) silent; default 1 h (HAProxy
    /// `timeout tunnel`, as its documentation sets it). Both connections are closed.
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Timeouts {
            client_idle: minute,
            request_idle: minute,
            connect: Duration::from_secs(5),
            response_head: minute,
            response_idle: minute,
            client_write: minute,
            tunnel_idle: Duration::from_secs(3600),
        }
    }
}

impl Timeouts {
    /// These timeouts with a function's own in their place.
    pub fn with(&self, own: &TimeoutOverrides) -> Timeouts {
        Timeouts {
            client_idle: self.client_idle,
            request_idle: own.request_idle.unwrap_or(self.request_idle),
            connect: own.connect.unwrap_or(self.connect),
            response_head: own.response_head.unwrap_or(self.response_head),
            response_idle: own.response_idle.unwrap_or(self.response_idle),
            client_write: own.client_write.unwrap_or(self.client_write),
            tunnel_idle: own.tunnel_idle.unwrap_or(self.tunnel_idle),
        }
    }
}

/// A function's own timeouts (`spec.timeouts`), parsed once per table build; `None` keeps the
/// router's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    /// `spec.timeouts.connect`.
    pub connect: Option<Duration>,
    /// `spec.timeouts.responseHead`.
    pub response_head: Option<Duration>,
    /// `spec.timeouts.responseIdle`.
    pub response_idle: Option<Duration>,
    /// `spec.timeouts.requestIdle`.
    pub request_idle: Option<Duration>,
    /// `spec.timeouts.clientWrite`.
    pub client_write: Option<Duration>,
    /// `spec.timeouts.tunnelIdle`.
    pub tunnel_idle: Option<Duration>,
}

impl TimeoutOverrides {
    /// The overrides a Function asks for (values validate has refused are ignored: a spec
    /// that fails validation never reaches a table).
    pub fn of(function: &switchyard_core::Function) -> TimeoutOverrides {
        let Some(t) = &function.spec.timeouts else {
            return TimeoutOverrides::default();
        };
        let parse = |field, value: &Option<String>| {
            value
                .as_deref()
                .and_then(|v| switchyard_core::validate::duration(field, v).ok())
        };
        TimeoutOverrides {
            connect: parse("connect", &t.connect),
            response_head: parse("responseHead", &t.response_head),
            response_idle: parse("responseIdle", &t.response_idle),
            request_idle: parse("requestIdle", &t.request_idle),
            client_write: parse("clientWrite", &t.client_write),
            tunnel_idle: parse("tunnelIdle", &t.tunnel_idle),
        }
    }
}
