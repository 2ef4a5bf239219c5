//! The Kubernetes source: Functions and FunctionVersions watched through kube-runtime, acks
//! server-side-applied to `status.routers`, and this replica's Lease (docs/protocol.md).
//!
//! This file ties the three together as a [`ConfigSource`]; `watch` keeps the watched
//! objects, `ack` writes acknowledgements and prunes dead replicas' entries, `lease` holds
//! this replica's Lease. What they send is built by `switchyard_core::protocol`.

mod ack;
mod lease;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use switchyard_core::cowmap::FxHashMap;
use switchyard_core::{protocol, Function, FunctionVersion};
use tokio::sync::mpsc;

use self::ack::{prune_stale_entries, write_acks};
use self::lease::renew_lease;
use self::watch::{function_of, Catalog, Change, FxHashSet, Key, Seen};
use super::{Ack, ConfigSource, FunctionInputs, SourceEvent, State, Update};

/// How to reach the API server and where this replica announces itself.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// Kubeconfig file; `None` means in-cluster config (or `$KUBECONFIG` / `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The one namespace to watch; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Where the Lease lives; `None`: the watched namespace, else `$POD_NAMESPACE`, else
    /// `switchyard-system`.
    pub lease_namespace: Option<String>,
    /// `spec.leaseDurationSeconds`; renewed every third of it. Default 10 s.
    pub lease_duration: Duration,
}

impl KubernetesOptions {
    /// Watch `namespace` (or all) with the kubeconfig at `kubeconfig` (or the default chain).
    pub fn new(kubeconfig: Option<PathBuf>, namespace: Option<String>) -> Self {
        KubernetesOptions {
            kubeconfig,
            namespace,
            lease_namespace: None,
            lease_duration: Duration::from_secs(u64::from(
                protocol::DEFAULT_LEASE_DURATION_SECONDS,
            )),
        }
    }

    /// The Lease namespace, resolved as docs/protocol.md says.
    pub fn resolved_lease_namespace(&self) -> String {
        let pod_namespace = std::env::var("POD_NAMESPACE").ok();
        protocol::lease_namespace(
            self.lease_namespace.as_deref(),
            self.namespace.as_deref(),
            pod_namespace.as_deref(),
        )
    }
}

/// Builds a client; config errors are fatal, reachability is not checked here.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<(Client, String)> {
    use anyhow::Context;
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster config found")?,
    };
    // Fail fast at start and notice a dead server soon; the watch itself is long-polled.
    config.connect_timeout = Some(Duration::from_secs(3));
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, url.trim_end_matches('/').to_string()))
}

/// The Kubernetes [`ConfigSource`].
pub struct KubernetesSource {
    events: BoxStream<'static, Change>,
    functions: Catalog<Function>,
    versions: Catalog<FunctionVersion>,
    /// The FunctionVersions of each Function (by the Function's key).
    versions_of: FxHashMap<Key, Vec<Arc<FunctionVersion>>>,
    /// Functions whose inputs changed since the last event.
    dirty: FxHashSet<Key>,
    /// Whether the next event must be a complete state (at start, after a re-list).
    full: bool,
    lost: bool,
    acks: mpsc::UnboundedSender<Ack>,
    lease_stop: Option<tokio::sync::oneshot::Sender<()>>,
    lease_task: Option<tokio::task::JoinHandle<()>>,
    leases: Api<Lease>,
    replica: String,
    watch_namespace: String,
    lease_namespace: String,
    lease_duration: Duration,
    server: String,
    client: Client,
    prune_every: tokio::time::Interval,
    prune_task: Option<tokio::task::JoinHandle<()>>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl KubernetesSource {
    /// Starts the watches, the ack writer and the Lease renewal.
    pub async fn open(opts: KubernetesOptions, replica: &str) -> anyhow::Result<Self> {
        let (client, url) = client(opts.kubeconfig.as_ref()).await?;
        let ns = opts.namespace.as_deref();
        let config = watcher::Config::default().any_semantic();
        let functions = watcher::watcher(api::<Function>(&client, ns), config.clone())
            .default_backoff()
            .map(Change::Function);
        let versions = watcher::watcher(api::<FunctionVersion>(&client, ns), config)
            .default_backoff()
            .map(Change::Version);
        let events = futures::stream::select(functions, versions).boxed();

        let (acks, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_acks(client.clone(), replica.to_string(), rx));

        let leases: Api<Lease> = Api::namespaced(client.clone(), &opts.resolved_lease_namespace());
        Ok(KubernetesSource {
            events,
            functions: Catalog::new(),
            versions: Catalog::new(),
            versions_of: FxHashMap::default(),
            dirty: FxHashSet::default(),
            full: true,
            lost: false,
            acks,
            lease_stop: None,
            lease_task: None,
            leases,
            replica: replica.to_string(),
            watch_namespace: opts.namespace.clone().unwrap_or_default(),
            lease_namespace: opts.resolved_lease_namespace(),
            lease_duration: opts.lease_duration,
            server: url,
            client,
            prune_task: None,
            prune_every: {
                let mut every =
                    tokio::time::interval(opts.lease_duration.max(Duration::from_secs(1)));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every
            },
        })
    }

    /// Applies one change, noting which Functions it touched; an error when the watch failed.
    fn apply(&mut self, change: Change) -> Result<(), String> {
        match change {
            Change::Function(Ok(e)) => match self.functions.apply(e) {
                Seen::Nothing => {}
                Seen::Relisted => self.full = true,
                Seen::Changed { old, new } => {
                    if let Some(f) = old.as_deref().or(new.as_deref()) {
                        self.dirty.insert(Catalog::key(f));
                    }
                }
            },
            Change::Version(Ok(e)) => match self.versions.apply(e) {
                Seen::Nothing => {}
                Seen::Relisted => {
                    self.full = true;
                    self.versions_of.clear();
                    for v in self.versions.live.values() {
                        self.versions_of
                            .entry(function_of(v))
                            .or_default()
                            .push(Arc::clone(v));
                    }
                }
                Seen::Changed { old, new } => {
                    if let Some(old) = old {
                        let key = function_of(&old);
                        if let Some(list) = self.versions_of.get_mut(&key) {
                            list.retain(|v| v.metadata.name != old.metadata.name);
                            if list.is_empty() {
                                self.versions_of.remove(&key);
                            }
                        }
                        self.dirty.insert(key);
                    }
                    if let Some(new) = new {
                        let key = function_of(&new);
                        self.versions_of.entry(key.clone()).or_default().push(new);
                        self.dirty.insert(key);
                    }
                }
            },
            Change::Function(Err(e)) | Change::Version(Err(e)) => {
                return Err(format!("API server {} unreachable: {e}", self.server))
            }
        }
        Ok(())
    }

    /// Starts removing other replicas' `status.routers` entries whose Lease is gone or
    /// expired (docs/protocol.md), for the Functions that have any.
    fn prune(&mut self) {
        if self.lease_task.is_none() || self.lost {
            return;
        }
        // One pass at a time: with thousands of Functions a pass outlasts the period, and the
        // catalog still shows the entries the running pass is removing.
        if self.prune_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let candidates: Vec<(String, String, Vec<switchyard_core::RouterAck>)> = self
            .functions
            .live
            .values()
            .filter_map(|f| {
                let routers = &f.status.as_ref()?.routers;
                routers.iter().any(|r| r.name != self.replica).then(|| {
                    (
                        f.metadata.namespace.clone().unwrap_or_default(),
                        f.metadata.name.clone().unwrap_or_default(),
                        routers.clone(),
                    )
                })
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        self.prune_task = Some(tokio::spawn(prune_stale_entries(
            self.client.clone(),
            candidates,
            self.replica.clone(),
            self.lease_namespace.clone(),
            self.lease_duration,
        )));
    }

    fn state(&self) -> State {
        State {
            functions: self.functions.live.values().cloned().collect(),
            versions: self.versions.live.values().cloned().collect(),
        }
    }

    /// The inputs of every Function touched since the last event.
    fn update(&mut self) -> Update {
        let functions = self
            .dirty
            .drain()
            .map(|key| FunctionInputs {
                function: self.functions.live.get(&key).cloned(),
                versions: self.versions_of.get(&key).cloned().unwrap_or_default(),
                namespace: key.0,
                name: key.1,
            })
            .collect();
        Update { functions }
    }
}

#[async_trait]
impl ConfigSource for KubernetesSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        loop {
            let change = tokio::select! {
                change = self.events.next() => change?,
                _ = self.prune_every.tick() => {
                    self.prune();
                    continue;
                }
            };
            if let Err(e) = self.apply(change) {
                self.lost = true;
                return Some(SourceEvent::Lost(e));
            }
            // Coalesce a burst (a re-list, many writes at once) into one event.
            while let Some(Some(change)) = self.events.next().now_or_never() {
                if let Err(e) = self.apply(change) {
                    self.lost = true;
                    return Some(SourceEvent::Lost(e));
                }
            }
            let complete = self.functions.complete
                && self.versions.complete
                && self.functions.relist.is_none()
                && self.versions.relist.is_none();
            if complete && (self.full || self.lost || !self.dirty.is_empty()) {
                // Announce this replica only once it serves a complete table.
                if self.lease_task.is_none() {
                    let (stop, stop_rx) = tokio::sync::oneshot::channel();
                    self.lease_stop = Some(stop);
                    self.lease_task = Some(tokio::spawn(renew_lease(
                        self.leases.clone(),
                        self.replica.clone(),
                        self.watch_namespace.clone(),
                        self.lease_duration,
                        stop_rx,
                    )));
                }
                // After a re-list or an outage, a complete state: the builder finds what
                // changed and re-derives every acknowledgement; otherwise only what changed.
                let full = std::mem::take(&mut self.full);
                let lost = std::mem::take(&mut self.lost);
                if full || lost {
                    self.dirty.clear();
                    return Some(SourceEvent::State(self.state()));
                }
                return Some(SourceEvent::Update(self.update()));
            }
        }
    }

    fn acknowledge(&mut self, acks: Vec<Ack>) {
        for ack in acks {
            // The writer lives as long as the runtime; a send error means shutdown.
            let _ = self.acks.send(ack);
        }
    }

    async fn close(&mut self) {
        if let Some(stop) = self.lease_stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.lease_task.take() else {
            return;
        };
        let _ = task.await;
        let deleted = tokio::time::timeout(
            Duration::from_secs(2),
            self.leases.delete(&self.replica, &DeleteParams::default()),
        )
        .await;
        match deleted {
            Ok(Ok(_)) => tracing::info!(replica = %self.replica, "lease deleted"),
            Ok(Err(e)) => tracing::warn!(replica = %self.replica, "deleting lease: {e}"),
            Err(_) => tracing::warn!(replica = %self.replica, "deleting lease timed out"),
        }
    }
}
