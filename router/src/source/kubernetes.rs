//! The Kubernetes source: Functions and FunctionVersions watched through kube-runtime, this
//! replica's Lease, and its RouterReport (docs/protocol.md).
//!
//! This file ties the three together as a [`ConfigSource`]; `watch` keeps the watched objects
//! and how far each watch has been read, `lease` holds this replica's Lease, `report` writes
//! its report. What they send is built by `switchyard_core::{protocol, report}`.

mod lease;
mod report;
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
use switchyard_core::numbers::Numbers;
use switchyard_core::report::{
    cap_exceptions, AppliedVersions, RouterReport, RouterReportStatus, TableReport,
};
use switchyard_core::shadow::ShadowNumbers;
use switchyard_core::{protocol, Function, FunctionVersion};
use tokio::sync::watch as channel;

use self::lease::renew_lease;
use self::report::write_reports;
use self::watch::{function_of, Catalog, Change, FxHashSet, Key, Seen};
use super::{ConfigSource, FunctionInputs, Identity, Served, SourceEvent, State, Update};

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
    /// The address the report gives for this replica (`--advertise-address`); `None`: the
    /// listen address.
    pub advertise_address: Option<String>,
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
            advertise_address: None,
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
    /// How far each watch had been read when the last event was handed out: what a table built
    /// from it covers (Functions, FunctionVersions).
    handed: (u64, u64),
    lease_stop: Option<tokio::sync::oneshot::Sender<()>>,
    lease_task: Option<tokio::task::JoinHandle<()>>,
    leases: Api<Lease>,
    reports: Api<RouterReport>,
    identity: Identity,
    watch_namespace: String,
    lease_namespace: String,
    lease_duration: Duration,
    server: String,
    started_at: String,
    /// The report to reach; the writer takes the latest.
    desired: Option<channel::Sender<Option<RouterReportStatus>>>,
    numbers: channel::Sender<Option<Numbers>>,
    shadow: channel::Sender<Option<ShadowNumbers>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// The last report handed to the writer, to skip one that says nothing new.
    said: Option<RouterReportStatus>,
    client: Client,
    /// The Functions whose rollout is judged, and where they go (the canary, once started).
    judged: std::collections::BTreeMap<Key, Arc<Function>>,
    rollouts: Option<channel::Sender<crate::canary::Rollouts>>,
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
    /// Starts the watches; the Lease and the report start with the first complete table.
    pub async fn open(opts: KubernetesOptions, mut identity: Identity) -> anyhow::Result<Self> {
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
        let lease_namespace = opts.resolved_lease_namespace();
        let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_namespace);
        let reports: Api<RouterReport> = Api::namespaced(client.clone(), &lease_namespace);
        let client = client.clone();
        let started_at = identity.started_at.clone();
        if let Some(address) = opts.advertise_address.clone() {
            identity.address = address;
        }
        Ok(KubernetesSource {
            events,
            functions: Catalog::new(),
            versions: Catalog::new(),
            versions_of: FxHashMap::default(),
            dirty: FxHashSet::default(),
            full: true,
            lost: false,
            handed: (0, 0),
            lease_stop: None,
            lease_task: None,
            leases,
            reports,
            identity,
            watch_namespace: opts.namespace.clone().unwrap_or_default(),
            lease_namespace,
            lease_duration: opts.lease_duration,
            server: url,
            started_at,
            desired: None,
            numbers: channel::channel(None).0,
            shadow: channel::channel(None).0,
            writer: None,
            said: None,
            client,
            judged: Default::default(),
            rollouts: None,
        })
    }

    /// Starts the automated canary on this replica (docs/protocol.md, "The deciding
    /// replica"): the fast abort on its own counts, and the decider while it holds the
    /// decider Lease, both fed the rollouts this source's Function watch sees.
    pub fn canary(&mut self, shared: Arc<crate::live::Shared>, stop: channel::Receiver<bool>) {
        let (tx, rx) = channel::channel(crate::canary::Rollouts::default());
        self.rollouts = Some(tx);
        crate::canary::kube::spawn(
            crate::canary::kube::Context {
                client: self.client.clone(),
                replica: self.identity.replica.clone(),
                lease_namespace: self.lease_namespace.clone(),
                shared,
                rollouts: rx,
            },
            stop,
        );
    }

    /// Notes whether the Function at `key` (as the catalog now holds it) has a rollout to
    /// judge; every one when `all` (after a re-list). Hands a changed set to the canary.
    fn note_rollouts(&mut self, key: Option<Key>, all: bool) {
        let Some(tx) = &self.rollouts else {
            return;
        };
        let mut changed = false;
        if all {
            let judged: std::collections::BTreeMap<Key, Arc<Function>> = self
                .functions
                .live
                .iter()
                .filter(|(_, f)| crate::canary::judged(f))
                .map(|(k, f)| (k.clone(), Arc::clone(f)))
                .collect();
            changed = judged != self.judged;
            self.judged = judged;
        } else if let Some(key) = key {
            match self.functions.live.get(&key) {
                Some(f) if crate::canary::judged(f) => {
                    let same = self.judged.get(&key).is_some_and(|old| Arc::ptr_eq(old, f));
                    if !same {
                        self.judged.insert(key, Arc::clone(f));
                        changed = true;
                    }
                }
                _ => changed = self.judged.remove(&key).is_some(),
            }
        }
        if changed {
            let _ = tx.send(Arc::new(self.judged.clone()));
        }
    }

    /// Applies one change, noting which Functions it touched; an error when the watch failed.
    fn apply(&mut self, change: Change) -> Result<(), String> {
        match change {
            Change::Function(Ok(e)) => {
                // A rollout's progress is in the status, which moves no generation: the
                // canary looks at every event, the table only at those that change routing.
                let touched = match &e {
                    kube::runtime::watcher::Event::Apply(f)
                    | kube::runtime::watcher::Event::Delete(f) => Some(Catalog::key(f)),
                    _ => None,
                };
                match self.functions.apply(e) {
                    Seen::Nothing => self.note_rollouts(touched, false),
                    Seen::Relisted => {
                        self.full = true;
                        self.note_rollouts(None, true);
                    }
                    Seen::Changed { old, new } => {
                        if let Some(f) = old.as_deref().or(new.as_deref()) {
                            self.dirty.insert(Catalog::key(f));
                        }
                        self.note_rollouts(touched, false);
                    }
                }
            }
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

    /// Announces this replica once it serves a complete table: its Lease, renewed from now
    /// on, and the writer of its report (which waits for the Lease's uid and the first table).
    fn announce(&mut self) {
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (uid_tx, uid_rx) = channel::channel(None);
        self.lease_stop = Some(stop);
        self.lease_task = Some(tokio::spawn(renew_lease(
            self.leases.clone(),
            self.identity.replica.clone(),
            self.watch_namespace.clone(),
            self.lease_duration,
            uid_tx,
            Arc::clone(&self.identity.ready),
            stop_rx,
        )));
        let (desired, desired_rx) = channel::channel(None);
        self.desired = Some(desired);
        self.writer = Some(tokio::spawn(write_reports(
            self.reports.clone(),
            self.lease_namespace.clone(),
            self.identity.replica.clone(),
            report::Inputs {
                desired: desired_rx,
                numbers: self.numbers.subscribe(),
                shadow: self.shadow.subscribe(),
                lease_uid: uid_rx,
            },
            Arc::clone(&self.identity.ready),
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

/// Whether two reports say the same, but for when they were written and read.
fn same_report(a: &RouterReportStatus, b: &RouterReportStatus) -> bool {
    let table = |s: &RouterReportStatus| s.table.as_ref().map(|t| (t.generation, t.routes));
    a.applied == b.applied
        && a.exceptions == b.exceptions
        && a.exceptions_omitted == b.exceptions_omitted
        && table(a) == table(b)
}

#[async_trait]
impl ConfigSource for KubernetesSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        loop {
            let change = self.events.next().await?;
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
            if !complete {
                continue;
            }
            let read = (self.functions.read, self.versions.read);
            let moved = read != self.handed;
            if self.full || self.lost || !self.dirty.is_empty() || moved {
                // Announce this replica only once it serves a complete table.
                if self.lease_task.is_none() {
                    self.announce();
                }
                self.handed = read;
                // After a re-list or an outage, a complete state: the builder finds what
                // changed; otherwise only what changed (nothing, when only the
                // resourceVersions moved: the report then says the table covers them).
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

    fn served(&mut self, served: Served) {
        let Some(desired) = &self.desired else {
            return;
        };
        let (exceptions, exceptions_omitted) = cap_exceptions(served.exceptions);
        let status = RouterReportStatus {
            replica: self.identity.replica.clone(),
            address: self.identity.address.clone(),
            watch_namespace: self.watch_namespace.clone(),
            started_at: self.started_at.clone(),
            reported_at: String::new(),
            table: Some(TableReport {
                generation: served.generation,
                read_at: served
                    .as_of
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map(protocol::report_time)
                    .unwrap_or_default(),
                routes: served.routes as u64,
            }),
            applied: Some(AppliedVersions {
                functions: self.handed.0.to_string(),
                function_versions: self.handed.1.to_string(),
            }),
            exceptions,
            exceptions_omitted,
            numbers: None,
            shadow: None,
        };
        if self.said.as_ref().is_some_and(|s| same_report(s, &status)) {
            return;
        }
        self.said = Some(status.clone());
        let _ = desired.send(Some(status));
    }

    fn publish(&mut self, numbers: Numbers) {
        // Only a change of the counts is worth a write: an idle router writes nothing.
        self.numbers.send_if_modified(|last| {
            let changed = match last {
                // Nothing counted yet is nothing to say.
                None => !numbers.versions.is_empty() || numbers.omitted > 0,
                Some(l) => l.versions != numbers.versions || l.omitted != numbers.omitted,
            };
            if changed {
                *last = Some(numbers);
            }
            changed
        });
    }

    fn publish_shadow(&mut self, shadow: ShadowNumbers) {
        self.shadow.send_if_modified(|last| {
            let changed = match last {
                None => !shadow.shadows.is_empty() || shadow.omitted > 0,
                Some(l) => !l.same_counts(&shadow),
            };
            if changed {
                *last = Some(shadow);
            }
            changed
        });
    }

    async fn close(&mut self) {
        // The writer finishes the write under way and stops.
        self.desired = None;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
        if let Some(stop) = self.lease_stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.lease_task.take() else {
            return;
        };
        let _ = task.await;
        let replica = self.identity.replica.clone();
        let params = DeleteParams::default();
        let deleted = tokio::time::timeout(Duration::from_secs(2), async {
            futures::join!(
                self.reports.delete(&replica, &params),
                self.leases.delete(&replica, &params)
            )
        })
        .await;
        match deleted {
            Ok((report, lease)) => {
                for (what, result) in [("report", report.map(|_| ())), ("lease", lease.map(|_| ()))]
                {
                    match result {
                        Ok(()) => tracing::info!(%replica, "{what} deleted"),
                        Err(e) => tracing::warn!(%replica, "deleting {what}: {e}"),
                    }
                }
            }
            Err(_) => tracing::warn!(%replica, "deleting the lease and report timed out"),
        }
    }
}
