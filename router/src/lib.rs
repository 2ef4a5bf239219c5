//! `switchyard-router`: the Switchyard data plane on Pingora.
//!
//! It follows a configuration source (the Kubernetes watch of Functions and FunctionVersions),
//! builds routing tables with `switchyard-core` off the request path, swaps them in atomically,
//! and proxies each request to the version the table picks, with exact weighted shares,
//! affinity, pinning and one failover retry. It acknowledges each Function generation it
//! serves or refuses, renews a Lease per replica, and serves admin endpoints.
//!
//! It is not a controller: it never creates Deployments or Services, and it never changes a
//! Function's spec. It decides nothing itself that `switchyard-core` can decide.
//!
//! Run one in-process with [`start`] (tests and a local quickstart do); the binary is a thin
//! shell over it.
//!
//! | module | role |
//! |---|---|
//! | [`source`] | the seam to the configuration store: a complete [`source::State`] at start (and after a re-list), then updates of only the changed Functions; [`source::Ack`]s out; [`source::kubernetes`] is the watch, the ack queue (fresh acks first), Lease and pruning of dead replicas' entries |
//! | [`build`] | state or update → table, changing only the changed Functions' routes; keeps the last good route of an invalid Function |
//! | [`live`] | the swapped [`live::Live`] table and what outlives swaps (request counters, metrics, readiness) |
//! | [`decide`] | which route and version a request gets: no HTTP types, no IO |
//! | [`proxy`] | the HTTP plumbing: a purpose-built HTTP/1 proxy loop served by pingora-core |
//! | [`http1`] | HTTP/1 heads, body framing and hop-by-hop rules, no IO |
//! | [`upstream`] | upstream name resolution and the keep-alive connection pool |
//! | [`admin`] | `/healthz`, `/readyz`, `/metrics`, `/routes` |
//! | [`snapshot`] | the snapshot file, written atomically after each swap |

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use tokio::sync::watch;

pub mod admin;
pub mod build;
pub mod config;
pub mod decide;
pub mod http1;
pub mod live;
pub mod metrics;
pub mod proxy;
mod server;
pub mod snapshot;
pub mod source;
pub mod upstream;

pub use config::RouterConfig;
pub use live::Shared;
pub use source::{KubernetesOptions, Source};

use build::{Builder, Goods};
use source::{ConfigSource, SourceEvent, State};

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

    let control = runtime.block_on(async {
        let mut source = source.open(&config.replica).await?;
        let mut builder = Builder::new(config.build.clone(), config.replica.clone());
        let (snapshots, snapshot_rx) = watch::channel(None::<(Goods, SystemTime)>);
        if let Some(path) = config.snapshot.clone() {
            tokio::spawn(write_snapshots(path, snapshot_rx));
        }
        match first_state(source.as_mut(), config.startup_timeout, config.snapshot.is_some()).await {
            Ok(state) => {
                shared.set_connected(true);
                apply(&shared, &mut builder, source.as_mut(), &snapshots, Change::State(&state), SystemTime::now());
            }
            Err(why) => {
                let Some(path) = &config.snapshot else {
                    return Err(anyhow!("cannot start without a routing table: {why}"));
                };
                let (state, as_of) = snapshot::read(path)
                    .with_context(|| format!("the source is unreachable ({why}) and the snapshot cannot be used"))?;
                tracing::warn!(snapshot = %path.display(), "source unreachable ({why}); serving the snapshot");
                let outcome = builder.apply(&state, as_of, &shared.metrics);
                if let Some(live) = outcome.live {
                    shared.swap(live);
                }
            }
        }
        let control = tokio::spawn(follow(shared.clone(), builder, source, snapshots, stop_rx.clone()));
        anyhow::Ok(control)
    })?;

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

/// Waits for the first complete state. An unreachable source is retried until `timeout`,
/// unless a snapshot can stand in, in which case the first failure is enough.
async fn first_state(
    source: &mut dyn ConfigSource,
    timeout: Duration,
    have_snapshot: bool,
) -> Result<State, String> {
    let deadline = Instant::now() + timeout;
    let mut last = "no complete state yet".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, source.next()).await {
            Ok(Some(SourceEvent::State(state))) => return Ok(state),
            // An update needs a state to apply to; a source sends a state first.
            Ok(Some(SourceEvent::Update(_))) => {}
            Ok(Some(SourceEvent::Lost(why))) => {
                last = why;
                if have_snapshot {
                    return Err(last);
                }
            }
            Ok(None) => return Err("the source ended".into()),
            Err(_) => return Err(format!("timed out after {timeout:?}: {last}")),
        }
    }
}

/// What the source reported.
enum Change<'a> {
    State(&'a State),
    Update(&'a source::Update),
}

/// Builds from a state or an update, swaps, acknowledges, snapshots.
fn apply(
    shared: &Shared,
    builder: &mut Builder,
    source: &mut dyn ConfigSource,
    snapshots: &watch::Sender<Option<(Goods, SystemTime)>>,
    change: Change<'_>,
    as_of: SystemTime,
) {
    let outcome = match change {
        Change::State(state) => builder.apply(state, as_of, &shared.metrics),
        Change::Update(update) => builder.apply_update(update, as_of, &shared.metrics),
    };
    if let Some(live) = outcome.live {
        tracing::debug!(
            generation = live.generation,
            routes = live.table.len(),
            "table swapped"
        );
        for r in &live.rejections {
            tracing::debug!(function = %r.function, generation = r.generation, "refused: {}", r.reason);
        }
        shared.swap(live);
        if !snapshots.is_closed() {
            let _ = snapshots.send(Some((builder.goods(), as_of)));
        }
    } else {
        shared.set_current(as_of);
    }
    if !outcome.acks.is_empty() {
        source.acknowledge(outcome.acks);
    }
}

/// The control loop: follow the source until stopped, then release it.
async fn follow(
    shared: Arc<Shared>,
    mut builder: Builder,
    mut source: Box<dyn ConfigSource>,
    snapshots: watch::Sender<Option<(Goods, SystemTime)>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut lost = false;
    loop {
        let event = tokio::select! {
            e = source.next() => e,
            _ = stop.wait_for(|s| *s) => break,
        };
        let change = match &event {
            Some(SourceEvent::State(state)) => Some(Change::State(state)),
            Some(SourceEvent::Update(update)) => Some(Change::Update(update)),
            _ => None,
        };
        if let Some(change) = change {
            if lost {
                tracing::info!("source reachable again");
                lost = false;
            }
            shared.set_connected(true);
            apply(
                &shared,
                &mut builder,
                source.as_mut(),
                &snapshots,
                change,
                SystemTime::now(),
            );
            continue;
        }
        match event {
            Some(SourceEvent::State(_)) | Some(SourceEvent::Update(_)) => {}
            Some(SourceEvent::Lost(why)) => {
                if !lost {
                    tracing::warn!("source unreachable, serving the last good table: {why}");
                    lost = true;
                }
                shared.set_connected(false);
                builder.forget_sent();
            }
            None => {
                tracing::warn!("source ended; serving the last table");
                stop.wait_for(|s| *s).await.ok();
                break;
            }
        }
    }
    source.close().await;
}

/// Writes the latest good routes' inputs to `path`, skipping states superseded while writing.
/// Collecting them is left to the writer's thread: the control loop only clones a [`Goods`].
async fn write_snapshots(
    path: std::path::PathBuf,
    mut rx: watch::Receiver<Option<(Goods, SystemTime)>>,
) {
    while rx.changed().await.is_ok() {
        let Some((goods, as_of)) = rx.borrow_and_update().clone() else {
            continue;
        };
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            snapshot::write(&path, &snapshot::state_of(goods.values()), as_of)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("snapshot: {e:#}"),
            Err(e) => tracing::warn!("snapshot writer: {e}"),
        }
    }
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
