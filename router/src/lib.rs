//! `switchyard-router`: the Switchyard data plane on Pingora.
//!
//! It follows a configuration source (the Kubernetes watch of Functions and FunctionVersions),
//! builds routing tables with `switchyard-core` off the request path, swaps them in atomically,
//! and proxies each request to the version the table picks, with exact weighted shares,
//! affinity, pinning and one failover retry. Each replica renews a Lease and writes one report
//! saying how far it has read and served (docs/protocol.md), and serves admin endpoints.
//!
//! It is not a controller: it never creates Deployments or Services, and it changes a Function
//! only to write an automated canary's transition, as one conditional update
//! (docs/protocol.md, "The deciding replica"). It decides nothing itself that
//! `switchyard-core` can decide.
//!
//! Run one in-process with [`start`] (tests and a local quickstart do); the binary is a thin
//! shell over it.
//!
//! | module | role |
//! |---|---|
//! | `control` | the control loop: first state (or the snapshot), then source → build → swap → served → snapshot, until stopped |
//! | [`source`] | the seam to the configuration store: a complete [`source::State`] at start (and after a re-list), then updates of only the changed Functions; [`source::Served`] and numbers back; [`source::kubernetes`] ties together its watch (with the resourceVersions read), its report (coalesced merge patches) and its Lease, sending what `switchyard_core::{protocol, report}` build |
//! | [`build`] | state or update → table, changing only the changed Functions' routes; keeps the last good route of an invalid Function |
//! | [`live`] | the swapped [`live::Live`] table and what outlives swaps (request counters, metrics, readiness) |
//! | [`decide`] | which route and version a request gets: no HTTP types, no IO |
//! | [`proxy`] | the HTTP plumbing: a purpose-built HTTP/1 proxy loop served by pingora-core; one request's exchange, bodies, the router's own replies, one deadline timer per connection (`proxy/deadline`) and the hand-off of shadow copies (`proxy/mirror`) in `proxy/` |
//! | [`canary`] | the automated canary: the decider Lease, the live replicas' readings, the decider loop over every Progressing rollout, the fast abort on the replica's own counts, the local store's decider |
//! | [`shadow`] | shadow traffic: a bounded lane of copy slots and workers per Function, the comparison of answers and the counts (`/shadow`) |
//! | [`numbers`] | the live per-version numbers: read from the counters each second off the request path, published in the replica's report |
//! | [`http1`] | HTTP/1 heads parsed and written, body framing and hop-by-hop rules, no IO |
//! | [`upstream`] | upstream name resolution, the keep-alive pool (peeked before every reuse) and connect with one failover |
//! | [`admin`] | `/healthz`, `/readyz` (a table, and a wait would count the replica), `/metrics`, `/routes`, `/shadow` |
//! | [`snapshot`] | the snapshot file, written atomically after each swap |

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

pub mod admin;
pub mod build;
pub mod canary;
pub mod config;
mod control;
pub mod decide;
pub mod http1;
pub mod live;
pub mod metrics;
pub mod numbers;
pub mod proxy;
mod server;
pub mod shadow;
pub mod snapshot;
pub mod source;
pub mod upstream;

pub use config::RouterConfig;
pub use live::Shared;
pub use source::{KubernetesOptions, Source};

/// A running router: stop it, or wait for it to stop (on SIGTERM in the binary).
pub struct RouterHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<std::thread::JoinHandle<()>>,
    control: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Starts a router: opens the source, waits for the first complete state (or falls back to
/// the snapshot), then serves. Errors name what failed, in one line.
pub fn start(config: RouterConfig, source: Source) -> anyhow::Result<RouterHandle> {
    for (what, addr) in [("listen", config.listen), ("admin", config.admin)] {
        TcpListener::bind(addr)
            .with_context(|| format!("cannot bind the {what} address {addr}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchyard-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let shared = Arc::new(Shared::new(config.replica.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let identity = source::Identity {
        replica: config.replica.clone(),
        address: config.listen.to_string(),
        started_at: shared.metrics.started_at(),
        ready: Arc::new(source::ReadyGate::new()),
    };
    // Registered before the admin app is built, which looks it up.
    if source.reports() {
        admin::register_gate(&shared, Arc::clone(&identity.ready));
    }

    let control = runtime.block_on(control::start(
        &config,
        source,
        Arc::clone(&shared),
        identity,
        stop_rx.clone(),
    ))?;

    let server = server::spawn(&config, Arc::clone(&shared), stop_rx)
        .context("starting the server thread")?;
    Ok(RouterHandle {
        shared,
        stop,
        server: Some(server),
        control: Some(control),
        runtime: Some(runtime),
    })
}

impl RouterHandle {
    /// The state shared with the request path (live table, metrics, readiness).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts a graceful shutdown: no new connections; in-flight requests get the grace period.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Blocks until the server has stopped (after [`Self::shutdown`], or SIGTERM when the
    /// router handles signals), then releases the source (deletes the Lease).
    pub fn wait(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = self.stop.send(true);
        if let (Some(rt), Some(control)) = (self.runtime.take(), self.control.take()) {
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), control).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }

    /// [`Self::shutdown`], then [`Self::wait`].
    pub fn stop(self) {
        self.shutdown();
        self.wait();
    }
}
