//! The Kubernetes source: Functions and FunctionVersions watched through kube-runtime, acks
//! server-side-applied to `status.routers`, and this replica's Lease (docs/protocol.md).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use switchyard_core::{Function, FunctionVersion};
use tokio::sync::mpsc;

use super::{Ack, ConfigSource, SourceEvent, State};

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
            lease_duration: Duration::from_secs(10),
        }
    }

    /// The Lease namespace, resolved as docs/protocol.md says.
    pub fn resolved_lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| self.namespace.clone())
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "switchyard-system".to_string())
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

type Key = (String, String);

/// Objects of one kind, as the watch has delivered them so far.
struct Catalog<K> {
    live: HashMap<Key, Arc<K>>,
    /// Objects of a re-list in progress; they replace `live` at `InitDone`.
    relist: Option<HashMap<Key, Arc<K>>>,
    complete: bool,
}

impl<K: Resource> Catalog<K> {
    fn new() -> Self {
        Catalog {
            live: HashMap::new(),
            relist: None,
            complete: false,
        }
    }

    fn key(obj: &K) -> Key {
        let m = obj.meta();
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    /// Applies one event; true when the live set changed.
    fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(Self::key(&obj), Arc::new(obj));
                false
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.complete = true;
                true
            }
            Event::Apply(obj) => {
                // Routing depends on specs only, and a spec change bumps the generation. A
                // status write (every router's acknowledgement is one) must not trigger a
                // rebuild: at 10,000 functions the acks alone would keep the router rebuilding.
                let m = obj.meta();
                let routed_same = self.live.get(&Self::key(&obj)).is_some_and(|old| {
                    old.meta().uid == m.uid && old.meta().generation == m.generation
                });
                self.live.insert(Self::key(&obj), Arc::new(obj));
                !routed_same
            }
            Event::Delete(obj) => self.live.remove(&Self::key(&obj)).is_some(),
        }
    }
}

enum Change {
    Function(Result<Event<Function>, watcher::Error>),
    Version(Result<Event<FunctionVersion>, watcher::Error>),
}

/// The Kubernetes [`ConfigSource`].
pub struct KubernetesSource {
    events: BoxStream<'static, Change>,
    functions: Catalog<Function>,
    versions: Catalog<FunctionVersion>,
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
            prune_every: {
                let mut every =
                    tokio::time::interval(opts.lease_duration.max(Duration::from_secs(1)));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every
            },
        })
    }

    /// Applies one change; `Some(Lost)` on a watch error.
    fn apply(&mut self, change: Change) -> Result<bool, String> {
        match change {
            Change::Function(Ok(e)) => Ok(self.functions.apply(e)),
            Change::Version(Ok(e)) => Ok(self.versions.apply(e)),
            Change::Function(Err(e)) | Change::Version(Err(e)) => {
                Err(format!("API server {} unreachable: {e}", self.server))
            }
        }
    }

    /// Starts removing other replicas' `status.routers` entries whose Lease is gone or
    /// expired (docs/protocol.md), for the Functions that have any.
    fn prune(&self) {
        if self.lease_task.is_none() || self.lost {
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
        tokio::spawn(prune_stale_entries(
            self.client.clone(),
            candidates,
            self.replica.clone(),
            self.lease_namespace.clone(),
            self.lease_duration,
        ));
    }

    fn state(&self) -> State {
        State {
            functions: self.functions.live.values().cloned().collect(),
            versions: self.versions.live.values().cloned().collect(),
        }
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
            let mut changed = match self.apply(change) {
                Ok(changed) => changed,
                Err(e) => {
                    self.lost = true;
                    return Some(SourceEvent::Lost(e));
                }
            };
            // Coalesce a burst (a re-list, many writes at once) into one state.
            while let Some(Some(change)) = self.events.next().now_or_never() {
                match self.apply(change) {
                    Ok(c) => changed |= c,
                    Err(e) => {
                        self.lost = true;
                        return Some(SourceEvent::Lost(e));
                    }
                }
            }
            let complete = self.functions.complete
                && self.versions.complete
                && self.functions.relist.is_none()
                && self.versions.relist.is_none();
            if complete && (changed || self.lost) {
                self.lost = false;
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
                return Some(SourceEvent::State(self.state()));
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

fn now_rfc3339_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Server-side-applies this replica's entry in each Function's `status.routers`. Pending acks
/// are keyed by Function, so a newer generation replaces an older one not yet written; failed
/// writes are retried with a backoff.
async fn write_acks(client: Client, replica: String, mut rx: mpsc::UnboundedReceiver<Ack>) {
    let manager = format!("switchyard-router.{replica}");
    let params = PatchParams::apply(&manager).force();
    let mut pending: BTreeMap<Key, Ack> = BTreeMap::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(ack) => {
                    pending.insert((ack.namespace.clone(), ack.name.clone()), ack);
                }
                None => return,
            }
        }
        while let Ok(ack) = rx.try_recv() {
            pending.insert((ack.namespace.clone(), ack.name.clone()), ack);
        }
        let batch: Vec<Ack> = std::mem::take(&mut pending).into_values().collect();
        let mut failed = false;
        // A few writes at a time: thousands of Functions at start must not take one RTT each
        // in sequence, nor flood the API server.
        let results = futures::stream::iter(batch.into_iter().map(|ack| {
            let api: Api<Function> = Api::namespaced(client.clone(), &ack.namespace);
            let params = params.clone();
            let replica = replica.clone();
            async move {
                let mut entry = serde_json::json!({
                    "name": replica,
                    "observedGeneration": ack.generation,
                    "appliedAt": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                });
                if let Some(why) = &ack.rejected {
                    entry["rejected"] = serde_json::json!(why);
                }
                let patch = serde_json::json!({
                    "apiVersion": "switchyard.dev/v1alpha1",
                    "kind": "Function",
                    "metadata": {"name": ack.name, "namespace": ack.namespace},
                    "status": {"routers": [entry]},
                });
                let result = api
                    .patch_status(&ack.name, &params, &Patch::Apply(&patch))
                    .await;
                (ack, result)
            }
        }))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
        for (ack, result) in results {
            match result {
                Ok(_) => {}
                // The Function is gone: nothing to acknowledge.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::debug!(function = %format!("{}/{}", ack.namespace, ack.name), "ack failed, will retry: {e}");
                    failed = true;
                    pending
                        .entry((ack.namespace.clone(), ack.name.clone()))
                        .or_insert(ack);
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(200);
        }
    }
}

/// Creates and renews this replica's Lease every third of its duration until stopped.
async fn renew_lease(
    leases: Api<Lease>,
    replica: String,
    watch_namespace: String,
    duration: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let manager = format!("switchyard-router.{replica}");
    let params = PatchParams::apply(&manager).force();
    let seconds = duration.as_secs().max(1);
    let period = Duration::from_millis(seconds * 1000 / 3);
    let mut failing = false;
    loop {
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": replica,
                "labels": {
                    "app.kubernetes.io/name": "switchyard-router",
                    "switchyard.dev/router": "true",
                },
                "annotations": {"switchyard.dev/watch-namespace": watch_namespace},
            },
            "spec": {
                "holderIdentity": replica,
                "leaseDurationSeconds": seconds,
                "renewTime": now_rfc3339_micros(),
            },
        });
        match leases.patch(&replica, &params, &Patch::Apply(&lease)).await {
            Ok(_) if failing => {
                tracing::info!(%replica, "lease renewed again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(%replica, "renewing lease: {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut stop => return,
        }
    }
}

/// Removes entries of replicas with no fresh Lease in the Function's namespace,
/// `switchyard-system` or this replica's lease namespace. An entry younger than two lease
/// durations is kept (its replica may be creating its Lease right now), and nothing is removed
/// when the Leases cannot be read.
async fn prune_stale_entries(
    client: Client,
    candidates: Vec<(String, String, Vec<switchyard_core::RouterAck>)>,
    replica: String,
    lease_namespace: String,
    lease_duration: Duration,
) {
    use std::collections::HashSet;
    let now = jiff::Timestamp::now();
    let mut namespaces: HashSet<String> = candidates.iter().map(|c| c.0.clone()).collect();
    namespaces.insert("switchyard-system".into());
    namespaces.insert(lease_namespace.clone());
    let mut live: HashSet<(String, String)> = HashSet::new();
    let selector = kube::api::ListParams::default().labels("switchyard.dev/router=true");
    for ns in &namespaces {
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
        match leases.list(&selector).await {
            Ok(list) => {
                for lease in list {
                    let spec = lease.spec.unwrap_or_default();
                    let fresh = spec.renew_time.as_ref().is_some_and(|t| {
                        switchyard_core::ack::lease_fresh(
                            t.0.as_millisecond(),
                            spec.lease_duration_seconds.unwrap_or(0),
                            now.as_millisecond(),
                        )
                    });
                    if fresh {
                        live.insert((ns.clone(), lease.metadata.name.unwrap_or_default()));
                    }
                }
            }
            // A namespace that does not exist holds no Lease.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::debug!("not pruning router entries: listing leases in {ns}: {e}");
                return;
            }
        }
    }
    let min_age = lease_duration * 2;
    for (ns, name, routers) in candidates {
        let holds = |n: &str| {
            [ns.as_str(), "switchyard-system", lease_namespace.as_str()]
                .iter()
                .any(|l| live.contains(&(l.to_string(), n.to_string())))
        };
        let old = |at: &str| {
            at.parse::<jiff::Timestamp>().map_or(true, |t| {
                now.duration_since(t) > jiff::SignedDuration::try_from(min_age).unwrap_or_default()
            })
        };
        let mut ops = Vec::new();
        // Highest index first, so earlier removals do not shift later ones; each removal is
        // guarded by a test of the name at that index.
        for (i, r) in routers.iter().enumerate().rev() {
            if r.name != replica && !holds(&r.name) && old(&r.applied_at) {
                ops.push(serde_json::json!({"op": "test", "path": format!("/status/routers/{i}/name"), "value": r.name}));
                ops.push(
                    serde_json::json!({"op": "remove", "path": format!("/status/routers/{i}")}),
                );
            }
        }
        if ops.is_empty() {
            continue;
        }
        // A JSON patch, sent as a raw request (kube's typed `Patch::Json` needs a feature the
        // workspace does not enable).
        let body = serde_json::to_vec(&ops).unwrap_or_default();
        let request = http::Request::patch(format!(
            "/apis/switchyard.dev/v1alpha1/namespaces/{ns}/functions/{name}/status"
        ))
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(body);
        let Ok(request) = request else {
            continue;
        };
        match client.request::<Function>(request).await {
            Ok(_) => {
                tracing::info!(function = %format!("{ns}/{name}"), "removed entries of routers whose Lease expired")
            }
            Err(e) => {
                tracing::debug!(function = %format!("{ns}/{name}"), "pruning router entries: {e}")
            }
        }
    }
}
