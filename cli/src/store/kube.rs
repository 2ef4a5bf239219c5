//! The Kubernetes [`Store`]: Functions and FunctionVersions in one namespace, Deployments and
//! Services for managed versions, Leases and RouterReports for the routers.

use anyhow::{anyhow, Context as _};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::exit::{fail, Code};
use kube::{Client, Config, ResourceExt as _};
use std::path::PathBuf;
use std::time::Duration;
use switchyard_core::report::{RouterReport, RouterReportStatus};
use switchyard_core::resources::LABEL_FUNCTION;
use switchyard_core::rollout;
use switchyard_core::{
    object_name, protocol, workload, Function, FunctionSpec, FunctionVersion, FunctionVersionSpec,
};

use super::{Created, FunctionState, Readiness, Reports, Router, Store, VersionInfo, Written};
use crate::timing;

mod one_connection;

/// Field manager and `app.kubernetes.io/managed-by` value of everything the CLI writes.
pub const MANAGER: &str = workload::MANAGED_BY;
/// Default container port of a managed version.
pub const DEFAULT_PORT: u16 = workload::DEFAULT_PORT;
pub use switchyard_core::protocol::{ROUTERS_ANNOTATION, ROUTERS_PENDING, TRAFFIC_ANNOTATION};

/// Switchyard state in one namespace of a Kubernetes cluster.
pub struct KubeStore {
    client: Client,
    namespace: String,
    router_namespace: String,
    actor: String,
}

/// An error answer of the API server, kept apart so its code can be looked at.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The server's message.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// A kube error as one readable line (the server's message for API errors).
pub fn api(err: kube::Error) -> anyhow::Error {
    match err {
        kube::Error::Api(s) => anyhow::Error::new(ApiError {
            code: s.code,
            message: if s.message.is_empty() {
                format!("the API server answered {}", s.code)
            } else {
                s.message.clone()
            },
        }),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            // The transport's chain repeats itself ("client error (Connect): client error
            // (Connect): …"); its last link says what happened.
            let mut root: &dyn std::error::Error = &err;
            while let Some(next) = root.source() {
                root = next;
            }
            anyhow!("cannot reach the API server: {root}")
        }
        other => anyhow::Error::new(other),
    }
}

/// How long one request may wait for the API server in all, across its retries.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// The longest single wait, whatever the server's Retry-After says.
const RETRY_MAX_WAIT: Duration = Duration::from_secs(10);
/// The first wait without a Retry-After; each further one doubles.
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(250);

/// A failure that retrying the same request can fix, as kubectl's client retries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient {
    /// What went wrong, for the line on stderr.
    pub why: String,
    /// How long the server asked to wait (its Retry-After, carried in the Status body as
    /// `details.retryAfterSeconds`).
    pub retry_after: Option<Duration>,
}

/// Whether the API server has answered this process at least once (any response, error
/// answers included): from then on a refused connection means it is restarting.
static REACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `err` is transient: 429 (too many requests, and the API server's "storage is
/// (re)initializing" right after a CRD is created or while it starts), 503, or a refused
/// connection to a server that has answered before (`reached`: it is restarting). A server
/// never reached is more likely a wrong address, told at once as kubectl does. None of these
/// did anything on the server, and every write the store makes is conditional or idempotent,
/// so sending it again is safe.
pub fn transient(err: &kube::Error, reached: bool) -> Option<Transient> {
    match err {
        kube::Error::Api(s)
            if matches!(s.code, 429 | 503) || s.message.contains("(re)initializing") =>
        {
            Some(Transient {
                why: if s.message.is_empty() {
                    format!("the API server answered {}", s.code)
                } else {
                    s.message.clone()
                },
                retry_after: s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|&s| s > 0)
                    .map(|s| Duration::from_secs(u64::from(s))),
            })
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) if reached => {
            let mut cause: Option<&dyn std::error::Error> = Some(err);
            while let Some(e) = cause {
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
                {
                    return Some(Transient {
                        why: "connection refused".into(),
                        retry_after: None,
                    });
                }
                cause = e.source();
            }
            None
        }
        _ => None,
    }
}

/// How long to wait before retry number `attempt` (0 for the first) of a request that has
/// waited `waited` so far: the server's `retry_after` when it gave one, else a backoff doubling
/// from 250 ms; never more than 10 s at once; `None` once the 30 s budget would be exceeded.
pub fn retry_wait(
    attempt: u32,
    retry_after: Option<Duration>,
    waited: Duration,
) -> Option<Duration> {
    let backoff = RETRY_FIRST_WAIT.saturating_mul(1 << attempt.min(16));
    let wait = retry_after.unwrap_or(backoff).min(RETRY_MAX_WAIT);
    (waited + wait <= RETRY_BUDGET).then_some(wait)
}

/// Runs `request` until it succeeds, fails for good, or has waited [`RETRY_BUDGET`] on
/// transient failures; says so on stderr once the waiting passes a second.
async fn retrying<T, F, Fut>(mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut waited = Duration::ZERO;
    let mut attempt = 0;
    loop {
        use std::sync::atomic::Ordering;
        let err = match request().await {
            Ok(done) => {
                REACHED.store(true, Ordering::Relaxed);
                return Ok(done);
            }
            Err(err) => err,
        };
        if matches!(err, kube::Error::Api(_)) {
            REACHED.store(true, Ordering::Relaxed);
        }
        let Some(t) = transient(&err, REACHED.load(Ordering::Relaxed)) else {
            return Err(err);
        };
        let Some(wait) = retry_wait(attempt, t.retry_after, waited) else {
            return Err(err);
        };
        if waited + wait > Duration::from_secs(1) {
            eprintln!(
                "the API server is not ready ({}); retrying in {:.1}s",
                t.why,
                wait.as_secs_f64()
            );
        }
        tokio::time::sleep(wait).await;
        waited += wait;
        attempt += 1;
    }
}

/// The HTTP status of an API error.
pub fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Which cluster and namespace to work in, as the global flags give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `--kubeconfig`: else `$KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: else the kubeconfig's current context.
    pub context: Option<String>,
    /// `-n`: else the context's namespace, else `default`.
    pub namespace: Option<String>,
    /// `--router-namespace`: where router Leases are looked for besides the namespace.
    pub router_namespace: String,
}

/// A `--context` the kubeconfig does not have (exit 2: invalid input).
#[derive(Debug)]
pub struct UnknownContext {
    /// The context asked for.
    pub wanted: String,
    /// The contexts the kubeconfig has, comma-separated.
    pub known: String,
}

impl std::fmt::Display for UnknownContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "context {} is not in the kubeconfig (it has: {})",
            self.wanted, self.known
        )
    }
}

impl std::error::Error for UnknownContext {}

impl KubeStore {
    /// Connects as kubectl would: `--kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`),
    /// `--context` (else the current one), `-n` (else the context's namespace, else `default`).
    pub async fn open(global: &Target) -> anyhow::Result<KubeStore> {
        let kubeconfig = match &global.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?,
            None => Kubeconfig::read().context("reading kubeconfig")?,
        };
        if let Some(wanted) = &global.context {
            if !kubeconfig.contexts.iter().any(|c| &c.name == wanted) {
                let known: Vec<&str> = kubeconfig
                    .contexts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(UnknownContext {
                    wanted: wanted.clone(),
                    known: known.join(", "),
                }
                .into());
            }
        }
        let context = global
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone());
        let actor = kubeconfig
            .contexts
            .iter()
            .find(|c| Some(&c.name) == context.as_ref())
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .context("loading kubeconfig")?;
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = client(config).context("building the Kubernetes client")?;
        timing::mark("kubeconfig");
        Ok(KubeStore {
            client,
            namespace,
            router_namespace: global.router_namespace.clone(),
            actor,
        })
    }

    /// Every Function of every namespace with its namespace, sorted by both (`list -A`).
    pub async fn functions_everywhere(&self) -> anyhow::Result<Vec<(String, FunctionState)>> {
        let functions: Api<Function> = Api::all(self.client.clone());
        let params = ListParams::default();
        let list = retrying(|| functions.list(&params))
            .await
            .map_err(api)
            .context("listing functions in every namespace")?;
        let mut out: Vec<(String, FunctionState)> = list
            .items
            .into_iter()
            .map(|f| (f.namespace().unwrap_or_default(), state(f)))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
        Ok(out)
    }

    /// The client, for commands that work on the cluster rather than one namespace
    /// (`install`, `uninstall`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The routers' reports, whole, each time one changes ([`Store::watch_reports`]).
    async fn report_watch(&self) -> anyhow::Result<BoxStream<'static, anyhow::Result<Reports>>> {
        // One watch per namespace from "0": the server first sends every report there is (as
        // ADDED), then each change, so there is nothing to list and nothing to poll.
        let params = WatchParams::default().labels(protocol::ROUTER_SELECTOR);
        // The namespaces' watches open at once (each is a round trip the wait would otherwise
        // queue behind the previous one).
        let opened = futures::future::join_all(self.router_namespaces().into_iter().map(|ns| {
            let reports: Api<RouterReport> = Api::namespaced(self.client.clone(), &ns);
            let params = params.clone();
            async move {
                let result = retrying(|| reports.watch(&params, "0")).await;
                (ns, reports, result)
            }
        }))
        .await;
        let mut streams = Vec::new();
        for (ns, reports, result) in opened {
            match result {
                Ok(stream) => streams.push(reopening(reports, params.clone(), ns, stream.boxed())),
                Err(e) if matches!(code(&e), Some(403 | 404)) => {}
                Err(e) => {
                    return Err(api(e))
                        .with_context(|| format!("watching router reports in namespace {ns}"))
                }
            }
        }
        if streams.is_empty() {
            return Err(anyhow!(
                "cannot watch router reports in namespace {}: forbidden (waits need get, list \
                 and watch on routerreports.switchyard.dev, as the switchyard-deployer role \
                 grants)",
                self.router_namespaces().join(" or ")
            ));
        }
        let serves = self.namespace.clone();
        let mut known: std::collections::BTreeMap<(String, String), RouterReportStatus> =
            Default::default();
        let merged = futures::stream::select_all(streams);
        Ok(merged
            .map(move |event| {
                let (ns, event) = event?;
                match event {
                    WatchEvent::Added(r) | WatchEvent::Modified(r) => {
                        let key = (ns, r.name_any());
                        match r.status {
                            Some(s)
                                if s.watch_namespace.is_empty() || s.watch_namespace == serves =>
                            {
                                known.insert(key, s);
                            }
                            _ => {
                                known.remove(&key);
                            }
                        }
                    }
                    WatchEvent::Deleted(r) => {
                        known.remove(&(ns, r.name_any()));
                    }
                    WatchEvent::Bookmark(_) => {}
                    WatchEvent::Error(e) => {
                        return Err(anyhow!("watching router reports: {}", e.message))
                    }
                }
                Ok(known
                    .iter()
                    .map(|((_, name), s)| (name.clone(), s.clone()))
                    .collect())
            })
            .boxed())
    }

    fn functions_api(&self) -> Api<Function> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn versions_api(&self) -> Api<FunctionVersion> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates the Deployment and Service of a managed version; ones this version already
    /// owns are kept (a re-run completes a missing one). An object of the same name that this
    /// FunctionVersion does not own is refused (exit 3), never taken over. Returns what it
    /// created, so a failed deploy removes exactly that and nothing of anyone else's.
    async fn ensure_workload(&self, fv: &FunctionVersion) -> (Workload, anyhow::Result<()>) {
        let mut made = Workload::default();
        let (deployment, service) = match workload::workload(fv, &self.namespace) {
            Ok(objects) => objects,
            Err(e) => return (made, Err(e.into())),
        };
        let name = deployment.name_any();
        let owner = fv.metadata.uid.clone().unwrap_or_default();
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let owned = |refs: Option<&Vec<OwnerReference>>| {
            refs.is_some_and(|r| r.iter().any(|o| o.uid == owner))
        };
        let foreign = |kind: &str| {
            fail(
                Code::Refused,
                format!(
                    "{kind} {name} already exists in namespace {} and is not owned by FunctionVersion {name}: refusing to take it over (delete it, or deploy another version)",
                    self.namespace
                ),
            )
        };
        let deployments = self.deployments();
        match retrying(|| deployments.create(&pp, &deployment)).await {
            Ok(_) => made.deployment = true,
            Err(e) if code(&e) == Some(409) => match retrying(|| deployments.get(&name)).await {
                Ok(d) if owned(d.metadata.owner_references.as_ref()) => {}
                Ok(_) => return (made, Err(foreign("Deployment"))),
                Err(e) => {
                    return (
                        made,
                        Err(api(e)).with_context(|| format!("reading Deployment {name}")),
                    )
                }
            },
            Err(e) => {
                return (
                    made,
                    Err(api(e)).with_context(|| format!("creating Deployment {name}")),
                )
            }
        }
        let services = self.services();
        match retrying(|| services.create(&pp, &service)).await {
            Ok(_) => made.service = true,
            Err(e) if code(&e) == Some(409) => match retrying(|| services.get(&name)).await {
                Ok(s) if owned(s.metadata.owner_references.as_ref()) => {}
                Ok(_) => return (made, Err(foreign("Service"))),
                Err(e) => {
                    return (
                        made,
                        Err(api(e)).with_context(|| format!("reading Service {name}")),
                    )
                }
            },
            Err(e) => {
                return (
                    made,
                    Err(api(e)).with_context(|| format!("creating Service {name}")),
                )
            }
        }
        (made, Ok(()))
    }

    async fn delete_workload(&self, name: &str) -> anyhow::Result<()> {
        let dp = DeleteParams::background();
        let (deployments, services) = (self.deployments(), self.services());
        match retrying(|| deployments.delete(name, &dp)).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(api(e)).with_context(|| format!("deleting Deployment {name}")),
        }
        match retrying(|| services.delete(name, &dp)).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(api(e)).with_context(|| format!("deleting Service {name}")),
        }
        Ok(())
    }

    /// The versions of `function` with readiness, listed with `params` (which carry the
    /// consistency wanted).
    async fn list_versions(
        &self,
        function: &str,
        params: ListParams,
    ) -> anyhow::Result<Vec<VersionInfo>> {
        let context = || {
            format!(
                "listing versions of function {function} in namespace {}",
                self.namespace
            )
        };
        // Deployments only when the function has a managed version.
        let versions = self.versions_api();
        // Only this function's versions (the CRD's selectable field), not the namespace's
        // thousands; an API server older than 1.31 refuses the selector (400): all of them.
        let mine = params.clone().fields(&format!("spec.function={function}"));
        let fvs = match retrying(|| versions.list(&mine)).await {
            Ok(list) => list,
            Err(e) if code(&e) == Some(400) => retrying(|| versions.list(&params))
                .await
                .map_err(api)
                .with_context(context)?,
            Err(e) => return Err(api(e)).with_context(context),
        };
        let managed = fvs
            .items
            .iter()
            .any(|fv| fv.spec.function == function && fv.spec.image.is_some());
        let deployments = if managed {
            // The CLI labels every Deployment it makes; versions are listed whole, since a
            // FunctionVersion made by hand may lack the label.
            let by_function = params.labels(&format!("{LABEL_FUNCTION}={function}"));
            let deployments = self.deployments();
            retrying(|| deployments.list(&by_function))
                .await
                .map_err(api)
                .with_context(context)?
                .items
        } else {
            Vec::new()
        };
        let mut out: Vec<VersionInfo> = fvs
            .items
            .into_iter()
            .filter(|fv| fv.spec.function == function)
            .map(|fv| {
                let name = object_name(function, &fv.spec.version);
                let readiness = if fv.spec.endpoint.is_some() {
                    Readiness {
                        ready: true,
                        ..Default::default()
                    }
                } else {
                    let d = deployments.iter().find(|d| d.name_any() == name);
                    readiness(&name, d)
                };
                VersionInfo {
                    created: fv.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    spec: fv.spec,
                    readiness,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |v: &VersionInfo| semver::Version::parse(&v.spec.version).ok();
            key(a).cmp(&key(b))
        });
        Ok(out)
    }

    /// The namespaces router Leases and reports may be in: the Function's and the routers'.
    fn router_namespaces(&self) -> Vec<String> {
        let mut out = vec![self.namespace.clone()];
        if self.router_namespace != self.namespace {
            out.push(self.router_namespace.clone());
        }
        out
    }

    /// Every router report in the router namespaces, with its namespace; a namespace the
    /// user may not read (or that does not exist) holds none.
    async fn all_reports(&self) -> anyhow::Result<Vec<(String, RouterReport)>> {
        let params = ListParams::default()
            .match_any()
            .labels(protocol::ROUTER_SELECTOR);
        let mut out = Vec::new();
        for ns in self.router_namespaces() {
            let reports: Api<RouterReport> = Api::namespaced(self.client.clone(), &ns);
            match retrying(|| reports.list(&params)).await {
                Ok(list) => out.extend(list.items.into_iter().map(|r| (ns.clone(), r))),
                Err(e) if matches!(code(&e), Some(403 | 404)) => {}
                Err(e) => {
                    return Err(api(e))
                        .with_context(|| format!("listing router reports in namespace {ns}"))
                }
            }
        }
        Ok(out)
    }

    async fn leases(&self, namespace: &str) -> Result<Vec<Lease>, kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        // From the watch cache as it is (see `versions_cached`): a Lease lasts seconds, a
        // cache lags by moments.
        let params = ListParams::default()
            .match_any()
            .labels(protocol::ROUTER_SELECTOR);
        let list = retrying(|| api.list(&params)).await?;
        Ok(list.items)
    }
}

/// The events of one namespace's report watch, tagged with it; when the server ends the watch
/// (its timeout), a new one from "0" starts (its ADDED events repeat what is known: harmless).
fn reopening(
    reports: Api<RouterReport>,
    params: WatchParams,
    namespace: String,
    first: BoxStream<'static, kube::Result<WatchEvent<RouterReport>>>,
) -> BoxStream<'static, anyhow::Result<(String, WatchEvent<RouterReport>)>> {
    futures::stream::unfold(
        (reports, params, namespace, Some(first)),
        |(reports, params, namespace, mut stream)| async move {
            loop {
                let current = match stream.as_mut() {
                    Some(s) => s,
                    None => match reports.watch(&params, "0").await {
                        Ok(s) => stream.insert(s.boxed()),
                        Err(e) => return Some((Err(api(e)), (reports, params, namespace, None))),
                    },
                };
                match current.next().await {
                    Some(Ok(event)) => {
                        let tagged = (namespace.clone(), event);
                        return Some((Ok(tagged), (reports, params, namespace, stream)));
                    }
                    Some(Err(e)) => {
                        return Some((Err(api(e)), (reports, params, namespace, None)));
                    }
                    // The server's watch timeout: watch again.
                    None => stream = None,
                }
            }
        },
    )
    .boxed()
}

/// A client like kube's default one, but offering HTTP/2 as kubectl does, so that every
/// request of a command shares one TLS connection (the wait's watch included).
///
/// Measured on `rollback` against the test API server: over HTTP/1.1 the reads before the
/// write took ~75 ms at p50, with ~40 ms stalls on fresh connections; over HTTP/2, ~30-50 ms.
/// With a proxy or a `tls-server-name`, kube's own client (HTTP/1.1) is used, which knows them.
fn client(config: Config) -> anyhow::Result<Client> {
    use kube::client::ConfigExt as _;
    if config.proxy_url.is_some() || config.tls_server_name.is_some() {
        return Ok(Client::try_from(config)?);
    }
    let mut tls = config.rustls_client_config()?;
    // The connector below sets ALPN (h2, http/1.1) itself and refuses a preset list.
    tls.alpn_protocols.clear();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(one_connection::FirstAlone::new(hyper));
    Ok(Client::new(service, config.default_namespace))
}

/// The JSON merge patch (RFC 7386) that turns `before` into `after`: objects are merged
/// recursively, a key that disappears becomes `null`, anything else is replaced whole.
pub fn merge_patch(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut patch = serde_json::Map::new();
            for (k, av) in a {
                match b.get(k) {
                    Some(bv) if bv == av => {}
                    Some(bv) if bv.is_object() && av.is_object() => {
                        patch.insert(k.clone(), merge_patch(bv, av));
                    }
                    _ => {
                        patch.insert(k.clone(), av.clone());
                    }
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => after.clone(),
    }
}

fn state(f: Function) -> FunctionState {
    FunctionState {
        name: f.name_any(),
        namespace: f.namespace().unwrap_or_default(),
        revision: f.resource_version().unwrap_or_default(),
        generation: f.metadata.generation.unwrap_or_default(),
        written_at: switchyard_core::protocol::written_at(&f.metadata),
        uid: f.metadata.uid.clone().unwrap_or_default(),
        created: f.metadata.creation_timestamp.as_ref().map(|t| t.0),
        status: f.status.clone(),
        spec: f.spec,
    }
}

/// A managed version's readiness, by core's rule, in the store's terms.
fn readiness(name: &str, deployment: Option<&Deployment>) -> Readiness {
    let r = workload::readiness(name, deployment);
    Readiness {
        ready: r.ready,
        ready_replicas: Some(r.available),
        desired_replicas: r.desired,
        detail: r.detail,
    }
}

#[async_trait]
impl Store for KubeStore {
    /// Sets [`ROUTERS_ANNOTATION`] of the Function `written` to `value`, if the Function is still
    /// at `written`'s generation (a newer write has its own wait and note); nothing with a local
    /// store. A metadata-only JSON merge patch carrying the resourceVersion read, re-read once per
    /// conflict (someone's annotation, say): it never bumps the generation and no router rebuilds
    /// for it. Failing to write it does not fail the command, which has already done its work and
    /// said so: a warning on stderr, and the column stays `pending` until the next write.
    async fn note_routers(&self, written: &FunctionState, value: &str) {
        let functions = self.functions_api();
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let mut revision = written.revision.clone();
        let noted = tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..3 {
                let body = serde_json::json!({
                    "metadata": {
                        "resourceVersion": revision,
                        "annotations": {
                            ROUTERS_ANNOTATION: value,
                            protocol::WRITTEN_AT_ANNOTATION: protocol::written_at_value(
                                &written.uid,
                                written.generation,
                                &written.revision,
                            ),
                        },
                    },
                });
                match functions
                    .patch(&written.name, &pp, &Patch::Merge(&body))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if code(&e) == Some(409) => {
                        let now = functions.get_opt(&written.name).await.map_err(api)?;
                        match now {
                            Some(f) if f.metadata.generation == Some(written.generation) => {
                                revision = f.resource_version().unwrap_or_default();
                            }
                            // A newer write (or a delete): the annotation is its writer's.
                            _ => return Ok(()),
                        }
                    }
                    Err(e) => return Err(api(e)),
                }
            }
            Ok(())
        })
        .await;
        timing::mark("note");
        let failed = match noted {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "no answer within 5s".to_string(),
        };
        eprintln!(
            "warning: function {}: could not set annotation {ROUTERS_ANNOTATION}={value}: {failed}",
            written.name
        );
    }

    fn location(&self) -> String {
        format!("namespace {}", self.namespace)
    }

    fn actor(&self) -> String {
        self.actor.clone()
    }

    async fn function(&self, name: &str) -> anyhow::Result<Option<FunctionState>> {
        let functions = self.functions_api();
        let f = retrying(|| functions.get_opt(name))
            .await
            .map_err(api)
            .with_context(|| format!("reading function {name} in namespace {}", self.namespace))?;
        Ok(f.map(state))
    }

    async fn function_cached(&self, name: &str) -> anyhow::Result<Option<FunctionState>> {
        // resourceVersion=0: from the API server's watch cache (~1 ms) instead of a quorum
        // read from etcd (~3.5 ms idle here, more under load; bench/RESULTS.md).
        let functions = self.functions_api();
        let any = GetParams::any();
        let got = retrying(|| functions.get_with(name, &any)).await;
        match got {
            Ok(f) => Ok(Some(state(f))),
            Err(e) if code(&e) == Some(404) => Ok(None),
            Err(e) => Err(api(e)).with_context(|| {
                format!("reading function {name} in namespace {}", self.namespace)
            }),
        }
    }

    async fn functions(&self) -> anyhow::Result<Vec<FunctionState>> {
        let functions = self.functions_api();
        let params = ListParams::default();
        let list = retrying(|| functions.list(&params))
            .await
            .map_err(api)
            .with_context(|| format!("listing functions in namespace {}", self.namespace))?;
        let mut out: Vec<FunctionState> = list.items.into_iter().map(state).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn versions(&self, function: &str) -> anyhow::Result<Vec<VersionInfo>> {
        self.list_versions(function, ListParams::default()).await
    }

    async fn versions_cached(&self, function: &str) -> anyhow::Result<Vec<VersionInfo>> {
        // resourceVersion=0: served from the API server's watch cache as it is. A consistent
        // list waits for that cache to catch up with etcd, which right after any write in the
        // cluster took ~95 ms (measured), against ~1 ms.
        self.list_versions(function, ListParams::default().match_any())
            .await
    }

    async fn create_version(&self, spec: &FunctionVersionSpec) -> anyhow::Result<Created> {
        let name = object_name(&spec.function, &spec.version);
        let what = format!(
            "FunctionVersion {}@{} in namespace {}",
            spec.function, spec.version, self.namespace
        );
        let mut fv = FunctionVersion::new(&name, spec.clone());
        fv.metadata.namespace = Some(self.namespace.clone());
        fv.metadata.labels = Some(workload::labels(&spec.function, &spec.version));
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let api_ = self.versions_api();
        let (created, outcome) = match retrying(|| api_.create(&pp, &fv)).await {
            Ok(created) => (created, Created::New),
            Err(e) if code(&e) == Some(409) => {
                let existing = retrying(|| api_.get(&name))
                    .await
                    .map_err(api)
                    .with_context(|| format!("reading {what}"))?;
                if existing.spec != *spec {
                    return Ok(Created::Different);
                }
                (existing, Created::Same)
            }
            Err(e) => return Err(api(e)).with_context(|| format!("creating {what}")),
        };
        if spec.image.is_some() {
            if let (made, Err(err)) = self.ensure_workload(&created).await {
                // Nothing half-applied: a new version whose workload could not be created is
                // removed again, with only the objects this deploy created (a re-run of the
                // same deploy also completes a missing workload).
                if outcome == Created::New {
                    let dp = DeleteParams::background();
                    if made.deployment {
                        let _ = self.deployments().delete(&name, &dp).await;
                    }
                    if made.service {
                        let _ = self.services().delete(&name, &dp).await;
                    }
                    let _ = api_.delete(&name, &DeleteParams::background()).await;
                    return Err(err.context(format!(
                        "deploying {}@{} (the FunctionVersion was removed again)",
                        spec.function, spec.version
                    )));
                }
                return Err(err);
            }
        }
        Ok(outcome)
    }

    async fn create_function(&self, name: &str, spec: &FunctionSpec) -> anyhow::Result<Written> {
        let mut f = Function::new(name, spec.clone());
        f.metadata.namespace = Some(self.namespace.clone());
        f.metadata.annotations = Some(
            [
                (
                    TRAFFIC_ANNOTATION.to_string(),
                    switchyard_core::plan::describe(&spec.traffic),
                ),
                (ROUTERS_ANNOTATION.to_string(), ROUTERS_PENDING.to_string()),
            ]
            .into(),
        );
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let functions = self.functions_api();
        match retrying(|| functions.create(&pp, &f)).await {
            Ok(f) => Ok(Written::Done(Box::new(state(f)))),
            Err(e) if code(&e) == Some(409) => Ok(Written::Conflict),
            Err(e) => Err(api(e)).with_context(|| {
                format!("creating function {name} in namespace {}", self.namespace)
            }),
        }
    }

    async fn write_function(
        &self,
        current: &FunctionState,
        spec: &FunctionSpec,
    ) -> anyhow::Result<Written> {
        // A JSON merge patch of the spec carrying the resourceVersion read: the API server
        // refuses it with 409 if anything (a person, or a router acknowledging on status)
        // changed the object since, and labels, other annotations and status are left alone.
        // The traffic annotation goes in the same write, so it never describes another spec;
        // so does `pending` for the routers, until the writer's wait is over.
        let mut body = serde_json::json!({
            "metadata": {
                "resourceVersion": current.revision,
                "annotations": {
                    TRAFFIC_ANNOTATION: switchyard_core::plan::describe(&spec.traffic),
                    ROUTERS_ANNOTATION: ROUTERS_PENDING,
                },
            },
            "spec": merge_patch(&serde_json::to_value(&current.spec)?, &serde_json::to_value(spec)?),
        });
        // A write that ends a rollout in flight (a manual traffic change) settles its record in
        // the same write: the Function has no status subresource.
        if let Some(status) = rollout::status_after_write(spec, current.status.as_ref()) {
            body["status"] = serde_json::to_value(status)?;
        }
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let functions = self.functions_api();
        let patch = Patch::Merge(&body);
        match retrying(|| functions.patch(&current.name, &pp, &patch)).await {
            Ok(f) => Ok(Written::Done(Box::new(state(f)))),
            Err(e) if code(&e) == Some(409) => Ok(Written::Conflict),
            Err(e) => Err(api(e)).with_context(|| {
                format!(
                    "writing function {} in namespace {}",
                    current.name, self.namespace
                )
            }),
        }
    }

    async fn delete_function(&self, current: &FunctionState) -> anyhow::Result<Written> {
        let name = &current.name;
        // The Function first, and only as it was read: a change since (a new split, a router
        // acknowledging) answers 409, and the command re-reads and re-decides. Once it is
        // gone, routers stop serving it, so no version below is still routed to.
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: Some(current.revision.clone()),
                uid: None,
            }),
            ..DeleteParams::background()
        };
        let functions = self.functions_api();
        match retrying(|| functions.delete(name, &dp)).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(409) => return Ok(Written::Conflict),
            Err(e) => {
                return Err(api(e)).with_context(|| {
                    format!("deleting function {name} in namespace {}", self.namespace)
                })
            }
        }
        // Then every version, listed whole (one made by hand may lack the label), each with
        // background propagation so that a garbage collector removes what it owns; the
        // workload is also deleted by name, as `delete_version` does, for clusters without one.
        let versions = self.versions_api();
        let params = ListParams::default();
        let all = retrying(|| versions.list(&params))
            .await
            .map_err(api)
            .with_context(|| {
                format!(
                    "listing versions of function {name} in namespace {} (the Function is deleted)",
                    self.namespace
                )
            })?;
        let background = DeleteParams::background();
        for fv in all.items.iter().filter(|fv| fv.spec.function == *name) {
            let object = fv.name_any();
            match retrying(|| versions.delete(&object, &background)).await {
                Ok(_) => {}
                Err(e) if code(&e) == Some(404) => {}
                Err(e) => {
                    return Err(api(e)).with_context(|| {
                        format!(
                            "deleting FunctionVersion {name}@{} in namespace {} (the Function is deleted)",
                            fv.spec.version, self.namespace
                        )
                    })
                }
            }
            if fv.spec.image.is_some() {
                self.delete_workload(&object).await?;
            }
        }
        Ok(Written::Done(Box::new(current.clone())))
    }

    async fn delete_version(&self, function: &str, version: &str) -> anyhow::Result<()> {
        let name = object_name(function, version);
        let versions = self.versions_api();
        let dp = DeleteParams::background();
        retrying(|| versions.delete(&name, &dp))
            .await
            .map_err(api)
            .with_context(|| {
                format!(
                    "deleting FunctionVersion {function}@{version} in namespace {}",
                    self.namespace
                )
            })?;
        // Owner references would let a garbage collector do this; deleting explicitly keeps
        // clusters without one (and the moment before it runs) clean.
        self.delete_workload(&name).await
    }

    async fn routers(&self) -> anyhow::Result<Vec<Router>> {
        let elsewhere = async {
            if self.router_namespace == self.namespace {
                Ok(Vec::new())
            } else {
                self.leases(&self.router_namespace).await
            }
        };
        let (here, elsewhere) = futures::join!(self.leases(&self.namespace), elsewhere);
        let mut leases = here
            .map_err(api)
            .with_context(|| format!("listing router Leases in namespace {}", self.namespace))?;
        {
            match elsewhere {
                Ok(more) => leases.extend(more),
                // A user may read their own namespace only; routers there still count.
                Err(e) if matches!(code(&e), Some(403 | 404)) => {}
                Err(e) => {
                    return Err(api(e)).with_context(|| {
                        format!(
                            "listing router Leases in namespace {}",
                            self.router_namespace
                        )
                    })
                }
            }
        }
        let now = jiff::Timestamp::now();
        let mut out: Vec<Router> = leases
            .into_iter()
            .filter(|l| protocol::serves_namespace(l, &self.namespace))
            .map(|l| Router {
                live: l
                    .spec
                    .as_ref()
                    .is_some_and(|spec| protocol::replica_live(spec, now)),
                renewed: l.spec.as_ref().and_then(protocol::proved_at),
                lease_duration_seconds: l
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .unwrap_or_default(),
                namespace: l.namespace().unwrap_or_default(),
                name: l.name_any(),
                report: None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    async fn reports(&self, _function: Option<&FunctionState>) -> anyhow::Result<Vec<Router>> {
        let (mut routers, reports) = futures::try_join!(self.routers(), self.all_reports())?;
        for r in &mut routers {
            r.report = reports
                .iter()
                .find(|(ns, rep)| *ns == r.namespace && rep.name_any() == r.name)
                .and_then(|(_, rep)| rep.status.clone());
        }
        Ok(routers)
    }

    async fn watch_reports(
        &self,
        _function: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Reports>>> {
        self.report_watch().await
    }

    async fn watch_reports_ahead(
        &self,
    ) -> anyhow::Result<Option<BoxStream<'static, anyhow::Result<Reports>>>> {
        self.report_watch().await.map(Some)
    }

    async fn prune_routers(&self, dry_run: bool) -> anyhow::Result<Vec<String>> {
        let (routers, reports) = futures::try_join!(self.routers(), self.all_reports())?;
        let now = jiff::Timestamp::now().as_millisecond();
        let gone = |proved: Option<jiff::Timestamp>, duration: i32| {
            proved.is_none_or(|t| protocol::prunable(t.as_millisecond(), duration, now))
        };
        // (namespace, name) of each Lease to delete, with its report.
        let mut doomed: Vec<(String, String)> = routers
            .iter()
            .filter(|r| !r.live && gone(r.renewed, r.lease_duration_seconds))
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect();
        // A report whose Lease is gone (a cluster without a garbage collector keeps it).
        for (ns, report) in &reports {
            let name = report.name_any();
            let has_lease = routers.iter().any(|r| r.namespace == *ns && r.name == name);
            let reported = report
                .status
                .as_ref()
                .and_then(|s| s.reported_at.parse::<jiff::Timestamp>().ok());
            let duration = i32::try_from(protocol::DEFAULT_LEASE_DURATION_SECONDS).unwrap_or(10);
            if !has_lease
                && gone(reported, duration)
                && !doomed.contains(&(ns.clone(), name.clone()))
            {
                doomed.push((ns.clone(), name));
            }
        }
        doomed.sort();
        if !dry_run {
            for (ns, name) in &doomed {
                let leases: Api<Lease> = Api::namespaced(self.client.clone(), ns);
                let reports: Api<RouterReport> = Api::namespaced(self.client.clone(), ns);
                let params = DeleteParams::default();
                for result in [
                    leases.delete(name, &params).await.map(|_| ()),
                    reports.delete(name, &params).await.map(|_| ()),
                ] {
                    match result {
                        Ok(()) => {}
                        Err(e) if code(&e) == Some(404) => {}
                        Err(e) => {
                            return Err(api(e)).with_context(|| {
                                format!("deleting router {name} in namespace {ns}")
                            })
                        }
                    }
                }
            }
        }
        Ok(doomed
            .into_iter()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect())
    }

    async fn watch_function(
        &self,
        after: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<FunctionState>>> {
        let params = WatchParams::default().fields(&format!("metadata.name={}", after.name));
        let name = after.name.clone();
        let functions = self.functions_api();
        let stream = retrying(|| functions.watch(&params, &after.revision))
            .await
            .map_err(api)
            .with_context(|| format!("watching function {name}"))?;
        Ok(stream
            .map_err(api)
            .try_filter_map(move |event| {
                let name = name.clone();
                async move {
                    match event {
                        WatchEvent::Added(f) | WatchEvent::Modified(f) => Ok(Some(state(f))),
                        WatchEvent::Deleted(_) => Err(anyhow!("function {name} was deleted")),
                        WatchEvent::Bookmark(_) => Ok(None),
                        WatchEvent::Error(s) => {
                            Err(anyhow!("watching function {name}: {}", s.message))
                        }
                    }
                }
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::{merge_patch, retry_wait, transient, Transient};
    use kube::core::response::StatusDetails;
    use kube::core::Status;
    use serde_json::json;
    use std::time::Duration;

    fn status(code: u16, message: &str, retry_after: u32) -> kube::Error {
        let mut s = Status::failure(message, "").with_code(code);
        s.details = Some(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: retry_after,
        });
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn busy_initializing_and_refused_are_transient_and_nothing_else_is() {
        let t = |why: &str, secs: Option<u64>| {
            Some(Transient {
                why: why.into(),
                retry_after: secs.map(Duration::from_secs),
            })
        };
        assert_eq!(
            transient(&status(429, "storage is (re)initializing", 1), false),
            t("storage is (re)initializing", Some(1))
        );
        assert_eq!(
            transient(&status(503, "", 0), false),
            t("the API server answered 503", None)
        );
        assert_eq!(
            transient(&status(500, "storage is (re)initializing", 0), false),
            t("storage is (re)initializing", None)
        );
        let refused = || {
            kube::Error::Service(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        };
        // Refused by a server that answered before: it restarts. Never reached: a wrong
        // address, told at once.
        assert_eq!(transient(&refused(), true), t("connection refused", None));
        assert_eq!(transient(&refused(), false), None);
        for code in [400, 403, 404, 409, 422, 500] {
            assert_eq!(transient(&status(code, "no", 3), true), None, "{code}");
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            transient(&kube::Error::Service(Box::new(reset)), true),
            None
        );
    }

    #[test]
    fn waits_follow_retry_after_else_double_and_stop_at_the_budget() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        assert_eq!(retry_wait(0, None, s(0)), Some(ms(250)));
        assert_eq!(retry_wait(3, None, s(0)), Some(s(2)));
        assert_eq!(retry_wait(10, None, s(0)), Some(s(10)));
        assert_eq!(retry_wait(0, Some(s(3)), s(0)), Some(s(3)));
        assert_eq!(retry_wait(0, Some(s(600)), s(0)), Some(s(10)));
        assert_eq!(retry_wait(0, Some(s(5)), s(25)), Some(s(5)));
        assert_eq!(retry_wait(0, Some(s(5)), s(26)), None);
        assert_eq!(retry_wait(40, None, s(21)), None);
    }

    #[test]
    fn a_merge_patch_nulls_what_disappears_and_replaces_lists_whole() {
        let before = json!({"traffic": [{"version": "1.0.0"}], "tags": [1], "stable": "1.0.0",
                            "affinity": {"header": "x-user"}, "hosts": ["a"]});
        let after = json!({"traffic": [{"version": "1.1.0"}], "stable": "1.0.0",
                           "affinity": {"cookie": "u"}, "hosts": ["a"]});
        assert_eq!(
            merge_patch(&before, &after),
            json!({"traffic": [{"version": "1.1.0"}], "tags": null,
                   "affinity": {"cookie": "u", "header": null}})
        );
    }
}

/// The workload objects one deploy created (and so may remove again).
#[derive(Debug, Default, Clone, Copy)]
struct Workload {
    deployment: bool,
    service: bool,
}
