//! The Kubernetes source: Functions and FunctionVersions watched through kube-runtime, acks
//! server-side-applied to `status.routers`, and this replica's Lease (docs/protocol.md).

use std::collections::VecDeque;
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
use switchyard_core::cowmap::FxHashMap;
use switchyard_core::{Function, FunctionVersion};
use tokio::sync::mpsc;

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
type FxHashSet<K> = std::collections::HashSet<K, switchyard_core::cowmap::FxBuildHasher>;

/// What one watch event did to a [`Catalog`].
enum Seen<K> {
    /// Nothing the router reads changed.
    Nothing,
    /// An object was added, changed in what the router reads, or removed.
    Changed {
        old: Option<Arc<K>>,
        new: Option<Arc<K>>,
    },
    /// A re-list completed: every object may have changed.
    Relisted,
}

/// Objects of one kind, as the watch has delivered them so far.
struct Catalog<K> {
    live: FxHashMap<Key, Arc<K>>,
    /// Objects of a re-list in progress; they replace `live` at `InitDone`.
    relist: Option<FxHashMap<Key, Arc<K>>>,
    complete: bool,
}

impl<K: Resource> Catalog<K> {
    fn new() -> Self {
        Catalog {
            live: FxHashMap::default(),
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

    /// Applies one event.
    fn apply(&mut self, event: Event<K>) -> Seen<K> {
        match event {
            Event::Init => {
                self.relist = Some(FxHashMap::default());
                Seen::Nothing
            }
            Event::InitApply(obj) => {
                self.relist
                    .get_or_insert_with(FxHashMap::default)
                    .insert(Self::key(&obj), Arc::new(obj));
                Seen::Nothing
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.complete = true;
                Seen::Relisted
            }
            Event::Apply(obj) => {
                // Routing depends on specs only, and a spec change bumps the generation. A
                // status write (every router's acknowledgement is one) must not trigger a
                // rebuild: at 10,000 functions the acks alone would keep the router rebuilding.
                let key = Self::key(&obj);
                let new = Arc::new(obj);
                let old = self.live.insert(key, Arc::clone(&new));
                let m = new.meta();
                let routed_same = old.as_ref().is_some_and(|old| {
                    old.meta().uid == m.uid && old.meta().generation == m.generation
                });
                if routed_same {
                    Seen::Nothing
                } else {
                    Seen::Changed {
                        old,
                        new: Some(new),
                    }
                }
            }
            Event::Delete(obj) => match self.live.remove(&Self::key(&obj)) {
                Some(old) => Seen::Changed {
                    old: Some(old),
                    new: None,
                },
                None => Seen::Nothing,
            },
        }
    }
}

/// The Function a FunctionVersion belongs to.
fn function_of(v: &FunctionVersion) -> Key {
    (
        v.metadata.namespace.clone().unwrap_or_default(),
        v.spec.function.clone(),
    )
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

fn now_rfc3339_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Writes at most this many acknowledgements at once.
const WRITES_IN_FLIGHT: usize = 16;
/// Of which at most this many from the backlog (start-up, reconnects): fresh ones always find
/// a slot.
const BACKLOG_IN_FLIGHT: usize = 2;
/// At least this long between two writes from the backlog (at most 50 a second). A status
/// write of a Function costs the API server a few milliseconds of CPU; 10,000 of them as fast
/// as it answers kept the test API server at 160% CPU (on 2 cores) and delayed every other
/// write and watch event by over a second, the changes a person waits for included. The
/// backlog only reports what the status already implies (this replica serves the current
/// generation), so it may trickle: 10,000 take about 3.5 minutes.
const BACKLOG_SPACING: Duration = Duration::from_millis(20);

/// Acknowledgements waiting to be written: the latest one per Function, fresh ones first, and
/// never two writes for one Function at once (the older one could land last).
#[derive(Default)]
struct AckQueue {
    /// The latest unwritten ack of each Function.
    pending: FxHashMap<Key, Ack>,
    /// Functions with a fresh pending ack, oldest first (a key may be listed twice, or be
    /// listed with nothing pending any more: skipped when taken).
    fresh: VecDeque<Key>,
    /// Functions with a pending ack from the backlog, oldest first (same).
    backlog: VecDeque<Key>,
    /// Functions whose ack is being written.
    writing: FxHashSet<Key>,
}

impl AckQueue {
    /// Queues `ack`, replacing an older one of its Function not yet written; fresh wins.
    fn push(&mut self, mut ack: Ack) {
        let key = (ack.namespace.clone(), ack.name.clone());
        let was = self.pending.get(&key).map(|a| a.fresh);
        ack.fresh |= was == Some(true);
        let fresh = ack.fresh;
        self.pending.insert(key.clone(), ack);
        if self.writing.contains(&key) {
            // Queued again once that write is done.
            return;
        }
        if fresh && was != Some(true) {
            self.fresh.push_back(key);
        } else if !fresh && was.is_none() {
            self.backlog.push_back(key);
        }
    }

    /// The next ack to write, fresh ones first; from the backlog only if `backlog` allows.
    fn take(&mut self, backlog: bool) -> Option<Ack> {
        let Self {
            pending,
            fresh,
            backlog: queued,
            writing,
        } = self;
        let lanes: &mut [&mut VecDeque<Key>] = if backlog {
            &mut [fresh, queued]
        } else {
            &mut [fresh]
        };
        for lane in lanes.iter_mut() {
            while let Some(key) = lane.pop_front() {
                if writing.contains(&key) {
                    continue;
                }
                if let Some(ack) = pending.remove(&key) {
                    writing.insert(key);
                    return Some(ack);
                }
            }
        }
        None
    }

    /// Whether backlog acks wait.
    fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Marks the write of `ack` done; a failed one is queued again unless a newer one waits.
    fn done(&mut self, ack: Ack, failed: bool) {
        let key = (ack.namespace.clone(), ack.name.clone());
        self.writing.remove(&key);
        if failed && !self.pending.contains_key(&key) {
            self.pending.insert(key.clone(), ack);
        }
        if let Some(next) = self.pending.get(&key) {
            // First in its lane: it has waited for the write before it.
            if next.fresh {
                self.fresh.push_front(key);
            } else {
                self.backlog.push_front(key);
            }
        }
    }
}

/// Server-side-applies this replica's entry in each Function's `status.routers`, several
/// writes at a time (they share the client's connection), fresh acks ahead of the start-up
/// backlog, the latest generation per Function winning; failed writes are retried after a
/// backoff.
async fn write_acks(client: Client, replica: String, mut rx: mpsc::UnboundedReceiver<Ack>) {
    use futures::stream::FuturesUnordered;
    let manager = format!("switchyard-router.{replica}");
    let params = PatchParams::apply(&manager).force();
    let mut queue = AckQueue::default();
    let mut writes = FuturesUnordered::new();
    let mut backlog_writes = 0;
    let mut backoff = Duration::from_millis(200);
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut next_backlog = tokio::time::Instant::now();
    let mut open = true;
    loop {
        let now = tokio::time::Instant::now();
        if paused_until.is_some_and(|t| t <= now) {
            paused_until = None;
        }
        while paused_until.is_none() && writes.len() < WRITES_IN_FLIGHT {
            let backlog = backlog_writes < BACKLOG_IN_FLIGHT && next_backlog <= now;
            let Some(ack) = queue.take(backlog) else {
                break;
            };
            if !ack.fresh {
                backlog_writes += 1;
                next_backlog = now + BACKLOG_SPACING;
            }
            writes.push(write_ack(
                client.clone(),
                params.clone(),
                replica.clone(),
                ack,
            ));
        }
        if !open && writes.is_empty() {
            return;
        }
        // Wake up for the end of a pause, or for the next backlog write's turn.
        let wake = paused_until.or_else(|| {
            let room = writes.len() < WRITES_IN_FLIGHT && backlog_writes < BACKLOG_IN_FLIGHT;
            (room && queue.has_backlog()).then_some(next_backlog)
        });
        tokio::select! {
            ack = rx.recv(), if open => match ack {
                Some(ack) => {
                    queue.push(ack);
                    while let Ok(ack) = rx.try_recv() {
                        queue.push(ack);
                    }
                }
                // Shutting down: finish the writes under way.
                None => open = false,
            },
            Some((ack, result)) = writes.next(), if !writes.is_empty() => {
                if !ack.fresh {
                    backlog_writes -= 1;
                }
                let failed = match result {
                    Ok(_) => false,
                    // The Function is gone: nothing to acknowledge.
                    Err(kube::Error::Api(e)) if e.code == 404 => false,
                    Err(e) => {
                        tracing::debug!(function = %format!("{}/{}", ack.namespace, ack.name), "ack failed, will retry: {e}");
                        true
                    }
                };
                queue.done(ack, failed);
                if failed {
                    paused_until = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                } else {
                    backoff = Duration::from_millis(200);
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
}

/// One acknowledgement, server-side-applied; returns it with the result.
async fn write_ack(
    client: Client,
    params: PatchParams,
    replica: String,
    ack: Ack,
) -> (Ack, Result<Function, kube::Error>) {
    let api: Api<Function> = Api::namespaced(client, &ack.namespace);
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
    let started = std::time::Instant::now();
    let result = api
        .patch_status(&ack.name, &params, &Patch::Apply(&patch))
        .await;
    tracing::debug!(
        function = %format!("{}/{}", ack.namespace, ack.name),
        generation = ack.generation,
        fresh = ack.fresh,
        ok = result.is_ok(),
        "ack written in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    (ack, result)
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
        // Paced like the acknowledgement backlog: thousands of removals must not crowd out the
        // writes people wait for.
        tokio::time::sleep(BACKLOG_SPACING).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(name: &str, generation: i64, fresh: bool) -> Ack {
        Ack {
            namespace: "ns".into(),
            name: name.into(),
            generation,
            rejected: None,
            fresh,
        }
    }

    fn taken(q: &mut AckQueue, backlog: bool) -> Option<(String, i64)> {
        q.take(backlog).map(|a| (a.name, a.generation))
    }

    #[test]
    fn a_fresh_ack_overtakes_the_backlog_and_the_latest_generation_wins() {
        let mut q = AckQueue::default();
        for i in 0..1000 {
            q.push(ack(&format!("fn-{i}"), 1, false));
        }
        assert_eq!(taken(&mut q, true), Some(("fn-0".into(), 1)));
        q.push(ack("fn-500", 2, true));
        q.push(ack("fn-500", 3, true));
        assert_eq!(taken(&mut q, true), Some(("fn-500".into(), 3)));
        // With the backlog's slots all taken, a fresh ack still gets one.
        q.push(ack("fn-700", 2, true));
        assert_eq!(taken(&mut q, false), Some(("fn-700".into(), 2)));
        assert_eq!(taken(&mut q, false), None);
        assert_eq!(taken(&mut q, true), Some(("fn-1".into(), 1)));
        // fn-500 was written once, at its latest generation, and is not in the backlog twice.
        let mut rest = Vec::new();
        while let Some((name, _)) = taken(&mut q, true) {
            rest.push(name);
        }
        assert_eq!(rest.len(), 1000 - 4);
        assert!(!rest.contains(&"fn-500".to_string()));
    }

    #[test]
    fn one_function_is_never_written_twice_at_once() {
        let mut q = AckQueue::default();
        q.push(ack("a", 1, true));
        let first = q.take(true).expect("a write");
        q.push(ack("a", 2, true));
        assert!(
            q.take(true).is_none(),
            "a's write of generation 1 is under way"
        );
        q.done(first, false);
        assert_eq!(taken(&mut q, true), Some(("a".into(), 2)));
        // A failed write is retried, unless a newer one waits.
        let second = ack("a", 2, true);
        q.done(second.clone(), true);
        assert_eq!(taken(&mut q, true), Some(("a".into(), 2)));
        q.push(ack("a", 3, false));
        q.done(second, true);
        assert_eq!(taken(&mut q, true), Some(("a".into(), 3)));
        assert_eq!(taken(&mut q, true), None);
    }
}
