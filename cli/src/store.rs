//! The seam between the commands and where state lives.
//!
//! Commands read through a [`Store`], decide with `switchyard-core`, and write back through the
//! same [`Store`]. The Kubernetes implementation is [`kube::KubeStore`]; a local directory store
//! can implement the same trait without touching any command.

pub mod kube;
pub mod local;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use switchyard_core::plan::VersionState;
use switchyard_core::report::RouterReportStatus;
use switchyard_core::{FunctionSpec, FunctionVersionSpec};

/// A Function as read, with what a conditional write needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionState {
    /// The function name.
    pub name: String,
    /// Its namespace (`local` in a local store).
    pub namespace: String,
    /// Its spec.
    pub spec: FunctionSpec,
    /// The opaque revision a conditional write must match (`metadata.resourceVersion`).
    pub revision: String,
    /// The generation of the spec (`metadata.generation`).
    pub generation: i64,
    /// The revision a router must have read to serve this spec: `revision`, or the earlier one
    /// the spec was written at when only metadata changed since (`protocol::written_at`).
    pub written_at: String,
    /// `metadata.uid` (empty on a local store).
    pub uid: String,
    /// When it was created.
    pub created: Option<jiff::Timestamp>,
    /// Its status (an automated canary's progress), as read: a write that ends a rollout in
    /// flight settles it in the same write (`rollout::status_after_write`).
    pub status: Option<switchyard_core::FunctionStatus>,
}

/// One version and whether it can take traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// Its spec.
    pub spec: FunctionVersionSpec,
    /// When it was created.
    pub created: Option<jiff::Timestamp>,
    /// Its readiness.
    pub readiness: Readiness,
}

impl VersionInfo {
    /// What core's plans need to know about it.
    pub fn state(&self) -> VersionState {
        VersionState {
            version: self.spec.version.clone(),
            ready: self.readiness.ready,
        }
    }
}

/// Readiness of a version: always ready for an external one, the Deployment's status for a
/// managed one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    /// Whether it may take traffic.
    pub ready: bool,
    /// Ready replicas; `None` for an external version.
    pub ready_replicas: Option<i32>,
    /// Desired replicas; `None` for an external version.
    pub desired_replicas: Option<i32>,
    /// Why it is not ready, when known (`Deployment hello-1-2-0 not found`).
    pub detail: Option<String>,
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The write landed; the new state.
    Done(Box<FunctionState>),
    /// Someone else changed the function since it was read (or created it first).
    Conflict,
}

/// What creating a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The version is new.
    New,
    /// The version existed with exactly this spec; missing workload objects were (re)created.
    Same,
    /// The version exists with another spec.
    Different,
}

/// A router replica that holds a Lease (or a local store's heartbeat file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Router {
    /// Replica name (also the Lease name).
    pub name: String,
    /// Whether its Lease is fresh (`protocol::replica_live`).
    pub live: bool,
    /// Where its Lease is (empty in a local store).
    pub namespace: String,
    /// When it last proved itself (the later of renewTime and acquireTime).
    pub renewed: Option<jiff::Timestamp>,
    /// How long a proof holds, in seconds.
    pub lease_duration_seconds: i32,
    /// Its report, when read ([`Store::reports`]); in a local store, made from its file.
    pub report: Option<RouterReportStatus>,
}

/// Every replica's report as a wait sees it: replica name → report.
pub type Reports = Vec<(String, RouterReportStatus)>;

/// Where Switchyard state lives: reads, conditional writes, and the routers' acknowledgements.
#[async_trait]
pub trait Store: Send + Sync {
    /// Where this store points, for messages (`namespace prod`).
    fn location(&self) -> String;
    /// Notes on the Function `written` how its routers took it (`kubectl get fn`'s Routers
    /// column), after the command has printed its outcome; nothing where no kubectl looks.
    async fn note_routers(&self, _written: &FunctionState, _value: &str) {}
    /// Who makes changes, for history entries.
    fn actor(&self) -> String;
    /// One function, if it exists.
    async fn function(&self, name: &str) -> anyhow::Result<Option<FunctionState>>;
    /// Like [`Store::function`], but possibly from a cache that lags writes by moments, when
    /// that is much faster. A conditional write planned from it fails on a stale read and is
    /// re-planned from [`Store::function`]; an outcome without a write is re-checked there.
    async fn function_cached(&self, name: &str) -> anyhow::Result<Option<FunctionState>> {
        self.function(name).await
    }
    /// Every function.
    async fn functions(&self) -> anyhow::Result<Vec<FunctionState>>;
    /// Every version of a function with its readiness, oldest first, as of now.
    async fn versions(&self, function: &str) -> anyhow::Result<Vec<VersionInfo>>;
    /// Like [`Store::versions`], but possibly from a cache that lags writes by moments, when
    /// that is much faster. Plans start from it; a refusal is re-checked against
    /// [`Store::versions`] before it is final.
    async fn versions_cached(&self, function: &str) -> anyhow::Result<Vec<VersionInfo>> {
        self.versions(function).await
    }
    /// Creates a version and, for a managed one, its workload. Idempotent: an existing
    /// version with the same spec gets any missing workload object recreated.
    async fn create_version(&self, spec: &FunctionVersionSpec) -> anyhow::Result<Created>;
    /// Creates a function; [`Written::Conflict`] when it already exists.
    async fn create_function(&self, name: &str, spec: &FunctionSpec) -> anyhow::Result<Written>;
    /// Replaces a function's spec, only if it is still at `current.revision`.
    async fn write_function(
        &self,
        current: &FunctionState,
        spec: &FunctionSpec,
    ) -> anyhow::Result<Written>;
    /// Deletes a whole function — the Function and every version with its workload — only if
    /// it is still at `current.revision`; [`Written::Conflict`] otherwise.
    async fn delete_function(&self, current: &FunctionState) -> anyhow::Result<Written>;
    /// Deletes a version and its workload.
    async fn delete_version(&self, function: &str, version: &str) -> anyhow::Result<()>;
    /// The router replicas that serve this store's functions, live or not (their Leases; no
    /// report read).
    async fn routers(&self) -> anyhow::Result<Vec<Router>>;
    /// The same with each replica's report. A local store makes the report from the replica's
    /// file, as it stands for `function` when one is given (see [`Store::watch_reports`]).
    async fn reports(&self, function: Option<&FunctionState>) -> anyhow::Result<Vec<Router>>;
    /// The reports of the replicas that may serve `function`, whole, each time one changes
    /// (the first item: as they are now). Kubernetes: one watch per namespace, no polling.
    /// A local store, which keeps per-function entries instead of resourceVersions, makes
    /// each replica's report for `function` so that `protocol::summarize` reads it alike.
    async fn watch_reports(
        &self,
        function: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Reports>>>;
    /// [`Store::watch_reports`] opened before the write it will wait for has landed, so that
    /// opening it costs the wait nothing; `None` where the reports can only be made for the
    /// written function (a local store). Kubernetes: the same watches, which do not depend on
    /// the function.
    async fn watch_reports_ahead(
        &self,
    ) -> anyhow::Result<Option<BoxStream<'static, anyhow::Result<Reports>>>> {
        Ok(None)
    }
    /// Deletes the Leases and reports (local store: the files) of replicas that have not been
    /// live for two lease durations; only names them when `dry_run`. Returns their names.
    async fn prune_routers(&self, dry_run: bool) -> anyhow::Result<Vec<String>>;
    /// The function's states after `after`, as they happen. Ends (or errors) when the source
    /// does; callers bound it with a timeout.
    async fn watch_function(
        &self,
        after: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<FunctionState>>>;
    /// How often [`Store::routers`] is worth re-reading while waiting.
    fn router_refresh(&self) -> Duration {
        Duration::from_millis(500)
    }
}
