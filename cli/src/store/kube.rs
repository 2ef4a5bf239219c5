//! The Kubernetes [`Store`]: Functions and FunctionVersions in one namespace, Deployments and
//! Services for managed versions, Leases and `status.routers` for the routers.

use anyhow::{anyhow, Context as _};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar as KEnvVar, PodSpec, PodTemplateSpec, ResourceRequirements,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource as _, ResourceExt as _};
use std::collections::BTreeMap;
use switchyard_core::resources::{LABEL_FUNCTION, LABEL_VERSION};
use switchyard_core::table::SERVICE_PORT;
use switchyard_core::{
    object_name, protocol, Function, FunctionSpec, FunctionVersion, FunctionVersionSpec,
};

use super::{Created, FunctionState, Readiness, Router, Store, VersionInfo, Written};
use crate::args::Global;
use crate::timing;

/// Field manager and `app.kubernetes.io/managed-by` value of everything the CLI writes.
pub const MANAGER: &str = "switchyard";
/// Default container port of a managed version.
pub const DEFAULT_PORT: u16 = 8080;

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

/// The HTTP status of an API error.
pub fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl KubeStore {
    /// Connects as kubectl would: `--kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`),
    /// `--context` (else the current one), `-n` (else the context's namespace, else `default`).
    pub async fn connect(global: &Global) -> anyhow::Result<KubeStore> {
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
                return Err(crate::exit::fail(
                    crate::exit::Code::Invalid,
                    format!(
                        "context {wanted} is not in the kubeconfig (it has: {})",
                        known.join(", ")
                    ),
                ));
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

    /// The client, for commands that work on the cluster rather than one namespace
    /// (`install`, `uninstall`).
    pub fn client(&self) -> &Client {
        &self.client
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

    fn workload(&self, fv: &FunctionVersion) -> anyhow::Result<(Deployment, Service)> {
        let spec = &fv.spec;
        let name = object_name(&spec.function, &spec.version);
        let image = spec
            .image
            .clone()
            .ok_or_else(|| anyhow!("version {} has no image", spec.version))?;
        let port = spec.port.unwrap_or(DEFAULT_PORT);
        let labels = labels(&spec.function, &spec.version);
        let selector: BTreeMap<String, String> = labels
            .iter()
            .filter(|(k, _)| k.as_str() == LABEL_FUNCTION || k.as_str() == LABEL_VERSION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let owner = OwnerReference {
            api_version: FunctionVersion::api_version(&()).into_owned(),
            kind: FunctionVersion::kind(&()).into_owned(),
            name: fv.name_any(),
            uid: fv
                .uid()
                .ok_or_else(|| anyhow!("FunctionVersion {name} has no uid"))?,
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        };
        let quantities = spec.resources.as_ref().map(|r| {
            let mut q = BTreeMap::new();
            if let Some(cpu) = &r.cpu {
                q.insert("cpu".to_string(), Quantity(cpu.clone()));
            }
            if let Some(memory) = &r.memory {
                q.insert("memory".to_string(), Quantity(memory.clone()));
            }
            q
        });
        let container = Container {
            name: "function".into(),
            image: Some(image),
            args: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: (!spec.env.is_empty()).then(|| {
                spec.env
                    .iter()
                    .map(|e| KEnvVar {
                        name: e.name.clone(),
                        value: Some(e.value.clone()),
                        ..Default::default()
                    })
                    .collect()
            }),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(port),
                ..Default::default()
            }]),
            resources: quantities.map(|q| ResourceRequirements {
                limits: Some(q.clone()),
                requests: Some(q),
                ..Default::default()
            }),
            ..Default::default()
        };
        let deployment = Deployment {
            metadata: meta.clone(),
            spec: Some(DeploymentSpec {
                replicas: Some(spec.replicas.unwrap_or(1)),
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let service = Service {
            metadata: meta,
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: i32::from(SERVICE_PORT),
                    target_port: Some(IntOrString::Int(i32::from(port))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok((deployment, service))
    }

    /// Creates the Deployment and Service of a managed version; existing ones are kept.
    /// Returns what it created, so a failed deploy can remove exactly that.
    async fn ensure_workload(&self, fv: &FunctionVersion) -> anyhow::Result<()> {
        let (deployment, service) = self.workload(fv)?;
        let name = deployment.name_any();
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match self.deployments().create(&pp, &deployment).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(409) => {}
            Err(e) => return Err(api(e)).with_context(|| format!("creating Deployment {name}")),
        }
        match self.services().create(&pp, &service).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(409) => {}
            Err(e) => return Err(api(e)).with_context(|| format!("creating Service {name}")),
        }
        Ok(())
    }

    async fn delete_workload(&self, name: &str) -> anyhow::Result<()> {
        let dp = DeleteParams::background();
        match self.deployments().delete(name, &dp).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(api(e)).with_context(|| format!("deleting Deployment {name}")),
        }
        match self.services().delete(name, &dp).await {
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
        let fvs = self
            .versions_api()
            .list(&params)
            .await
            .map_err(api)
            .with_context(context)?;
        let managed = fvs
            .items
            .iter()
            .any(|fv| fv.spec.function == function && fv.spec.image.is_some());
        let deployments = if managed {
            // The CLI labels every Deployment it makes; versions are listed whole, since a
            // FunctionVersion made by hand may lack the label.
            let by_function = params.labels(&format!("{LABEL_FUNCTION}={function}"));
            self.deployments()
                .list(&by_function)
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

    async fn leases(&self, namespace: &str) -> Result<Vec<Lease>, kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            // From the watch cache as it is (see `versions_cached`): a Lease lasts seconds,
            // a cache lags by moments.
            .list(
                &ListParams::default()
                    .match_any()
                    .labels(protocol::ROUTER_SELECTOR),
            )
            .await?;
        Ok(list.items)
    }
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
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// The labels of every object a version owns.
pub fn labels(function: &str, version: &str) -> BTreeMap<String, String> {
    let version = label_value(version);
    BTreeMap::from([
        (LABEL_FUNCTION.to_string(), function.to_string()),
        (LABEL_VERSION.to_string(), version.clone()),
        ("app.kubernetes.io/name".to_string(), function.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            object_name(function, &version),
        ),
        ("app.kubernetes.io/version".to_string(), version),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        ),
    ])
}

/// A semver version as a label value: build metadata's `+` is not allowed there.
fn label_value(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
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
        revision: f.resource_version().unwrap_or_default(),
        generation: f.metadata.generation.unwrap_or_default(),
        created: f.metadata.creation_timestamp.as_ref().map(|t| t.0),
        routers: f.status.map(|s| s.routers).unwrap_or_default(),
        spec: f.spec,
    }
}

/// A managed version's readiness from its Deployment: the controller has seen the current
/// spec, and the desired replicas are available.
fn readiness(name: &str, deployment: Option<&Deployment>) -> Readiness {
    let Some(d) = deployment else {
        return Readiness {
            ready: false,
            ready_replicas: Some(0),
            desired_replicas: None,
            detail: Some(format!("Deployment {name} not found")),
        };
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let condition = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    let ready = observed && available >= desired && condition;
    let detail = (!ready).then(|| {
        if !observed {
            format!("Deployment {name} not yet observed by its controller")
        } else if available < desired {
            format!("{available}/{desired} replicas available")
        } else {
            format!("Deployment {name} is not Available")
        }
    });
    Readiness {
        ready,
        ready_replicas: Some(available),
        desired_replicas: Some(desired),
        detail,
    }
}

#[async_trait]
impl Store for KubeStore {
    fn location(&self) -> String {
        format!("namespace {}", self.namespace)
    }

    fn actor(&self) -> String {
        self.actor.clone()
    }

    async fn function(&self, name: &str) -> anyhow::Result<Option<FunctionState>> {
        let f = self
            .functions_api()
            .get_opt(name)
            .await
            .map_err(api)
            .with_context(|| format!("reading function {name} in namespace {}", self.namespace))?;
        Ok(f.map(state))
    }

    async fn functions(&self) -> anyhow::Result<Vec<FunctionState>> {
        let list = self
            .functions_api()
            .list(&ListParams::default())
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
        fv.metadata.labels = Some(labels(&spec.function, &spec.version));
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let api_ = self.versions_api();
        let (created, outcome) = match api_.create(&pp, &fv).await {
            Ok(created) => (created, Created::New),
            Err(e) if code(&e) == Some(409) => {
                let existing = api_
                    .get(&name)
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
            if let Err(err) = self.ensure_workload(&created).await {
                // Nothing half-applied: a new version whose workload could not be created is
                // removed again (a re-run of the same deploy also completes a missing workload).
                if outcome == Created::New {
                    let _ = self.delete_workload(&name).await;
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
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match self.functions_api().create(&pp, &f).await {
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
        // changed the object since, and labels, annotations and status are left alone.
        let body = serde_json::json!({
            "metadata": {"resourceVersion": current.revision},
            "spec": merge_patch(&serde_json::to_value(&current.spec)?, &serde_json::to_value(spec)?),
        });
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match self
            .functions_api()
            .patch(&current.name, &pp, &Patch::Merge(&body))
            .await
        {
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

    async fn delete_version(&self, function: &str, version: &str) -> anyhow::Result<()> {
        let name = object_name(function, version);
        self.versions_api()
            .delete(&name, &DeleteParams::background())
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
                name: l.name_any(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    async fn watch_function(
        &self,
        after: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<FunctionState>>> {
        let params = WatchParams::default().fields(&format!("metadata.name={}", after.name));
        let name = after.name.clone();
        let stream = self
            .functions_api()
            .watch(&params, &after.revision)
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
    use super::merge_patch;
    use serde_json::json;

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
