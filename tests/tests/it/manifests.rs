//! `manifests/` on a real kube-apiserver: every object of the kustomization passes the server's
//! validation (server-side dry-run), the router's Pod is admitted under the restricted Pod
//! Security Standard, every example is accepted or refused as its file says (by the server and
//! by `switchyard_core::validate`), and the RBAC holds for real: acting as the router's
//! ServiceAccount and as a person bound to `switchyard-viewer` or `switchyard-deployer`, what
//! the role allows succeeds and the rest is refused with 403.
//!
//! Cluster-scoped objects (CRDs, ClusterRoles, ClusterRoleBindings) are applied for real by
//! server-side apply, idempotently, so tests running in parallel do not clash; everything
//! namespaced goes into a fresh namespace per test. No kubelet runs here, so nothing is
//! scheduled: the Deployment is checked by the API server's admission, not by running it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::rbac::v1::RoleBinding;
// The tests crate has no direct serde dependency; k8s-openapi re-exports it.
use k8s_openapi::serde::Deserialize;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use switchyard_core::{validate, Function, FunctionVersion};
use switchyard_tests::{
    binary, client, free_port, kubeconfig_path, namespace, wait_until, HttpClient, Response,
    Upstream, MANAGER,
};

/// How long RBAC changes may take to reach the API server's authorizer cache, or a watch event
/// to arrive. A deadline against hanging, not a timing assertion.
const SETTLE: Duration = Duration::from_secs(30);

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// One object of a manifest file.
#[derive(Debug, Clone)]
struct Manifest {
    /// The file, relative to `manifests/`.
    file: String,
    object: DynamicObject,
}

impl Manifest {
    fn gvk(&self) -> GroupVersionKind {
        let types = self
            .object
            .types
            .as_ref()
            .unwrap_or_else(|| panic!("{}: an object without apiVersion and kind", self.file));
        GroupVersionKind::try_from(types)
            .unwrap_or_else(|e| panic!("{}: bad apiVersion: {e}", self.file))
    }

    fn kind(&self) -> String {
        self.gvk().kind
    }

    fn name(&self) -> String {
        self.object
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| panic!("{}: an object without a name", self.file))
    }

    fn label(&self) -> String {
        format!("{} {}/{}", self.file, self.kind(), self.name())
    }

    /// The object as JSON (`apiVersion`, `kind`, `metadata`, and the rest).
    fn json(&self) -> Value {
        serde_json::to_value(&self.object).expect("a DynamicObject serializes")
    }
}

/// Every object of a multi-document YAML file; comment-only documents are skipped.
fn read_manifests(path: &Path) -> Vec<Manifest> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = path
        .strip_prefix(manifests_dir())
        .unwrap_or(path)
        .display()
        .to_string();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|v| !v.is_null())
        .map(|v| Manifest {
            file: file.clone(),
            object: serde_yaml::from_value(v).unwrap_or_else(|e| panic!("{file}: {e}")),
        })
        .collect()
}

/// The files the kustomization lists, in order.
fn kustomization_resources() -> Vec<String> {
    let path = manifests_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).expect("reading manifests/kustomization.yaml");
    let k: serde_yaml::Value = serde_yaml::from_str(&text).expect("parsing kustomization.yaml");
    k["resources"]
        .as_sequence()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().expect("a resource is a file name").to_string())
        .collect()
}

/// Every object of the kustomization, in apply order.
fn kustomization_manifests() -> Vec<Manifest> {
    kustomization_resources()
        .iter()
        .flat_map(|f| read_manifests(&manifests_dir().join(f)))
        .collect()
}

/// The `.yaml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The first manifest of `kind` named `name`.
fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    manifests
        .iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

/// An `Api` for the manifest's kind, found through discovery, namespaced into `ns` when the
/// kind is namespaced.
async fn api_for(client: &Client, m: &Manifest, ns: &str) -> (Api<DynamicObject>, Scope) {
    let (ar, caps) = discovery::pinned_kind(client, &m.gvk())
        .await
        .unwrap_or_else(|e| panic!("{}: discovering its kind: {e}", m.label()));
    let api = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    (api, caps.scope)
}

/// Server-side apply of `m` (into `ns` when namespaced), dry-run or for real.
async fn apply(
    client: &Client,
    m: &Manifest,
    ns: &str,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let (api, scope) = api_for(client, m, ns).await;
    let mut object = m.object.clone();
    if scope == Scope::Namespaced {
        object.metadata.namespace = Some(ns.to_string());
    }
    let mut pp = PatchParams::apply(MANAGER).force();
    if dry_run {
        pp = pp.dry_run();
    }
    api.patch(&m.name(), &pp, &Patch::Apply(&object)).await
}

/// Applies the cluster-scoped objects of a manifest file for real (idempotent).
async fn apply_cluster_scoped(client: &Client, file: &str) {
    for m in read_manifests(&manifests_dir().join(file)) {
        let (_, scope) = api_for(client, &m, "default").await;
        if scope == Scope::Cluster {
            apply(client, &m, "", false)
                .await
                .unwrap_or_else(|e| panic!("applying {}: {e}", m.label()));
        }
    }
}

/// A client for one of the users `scripts/testenv` writes a kubeconfig for, beside the
/// admin's: `router.kubeconfig` or `viewer.kubeconfig`.
async fn client_as(file: &str) -> Client {
    let path = kubeconfig_path().with_file_name(file);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    Client::try_from(config).expect("building a client")
}

/// Asserts that the API server refused `what` with 403 Forbidden.
#[track_caller]
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        Err(kube::Error::Api(status)) => panic!(
            "{what}: expected 403 Forbidden, got {} {}",
            status.code, status.message
        ),
        Err(other) => panic!("{what}: expected 403 Forbidden, got {other}"),
        Ok(v) => panic!("{what}: expected 403 Forbidden, but it was allowed: {v:?}"),
    }
}

/// Asserts that the API server allowed `what`.
#[track_caller]
fn allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected it to be allowed, got {e}"))
}

fn function_json(name: &str, versions: &[(&str, u32)]) -> Value {
    let traffic: Vec<Value> = versions
        .iter()
        .map(|(v, w)| json!({"version": v, "weight": w}))
        .collect();
    json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name},
        "spec": {"traffic": traffic}
    })
}

fn version_json(function: &str, version: &str) -> Value {
    json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "FunctionVersion",
        "metadata": {"name": switchyard_core::object_name(function, version)},
        "spec": {"function": function, "version": version, "endpoint": "http://127.0.0.1:9"}
    })
}

fn function(name: &str, versions: &[(&str, u32)]) -> Function {
    serde_json::from_value(function_json(name, versions)).expect("a Function")
}

fn version(function: &str, version: &str) -> FunctionVersion {
    serde_json::from_value(version_json(function, version)).expect("a FunctionVersion")
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"password": "hunter2"}
    }))
    .expect("a Secret")
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "fn", "image": "ghcr.io/acme/hello:1.0.0"}]}
            }
        }
    }))
    .expect("a Deployment")
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("a Service")
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 10,
            "renewTime": "2026-01-01T00:00:00.000000Z"
        }
    }))
    .expect("a Lease")
}

/// A RoleBinding in `ns` granting ClusterRole `role` to user `user`.
async fn bind_user(admin: &Client, ns: &str, role: &str, user: &str) {
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{role}-{user}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap_or_else(|e| panic!("binding {role} to {user} in {ns}: {e}"));
}

/// Waits until `user_client` may list Functions in `ns` (or in every namespace): RBAC changes
/// reach the authorizer through a cache.
async fn wait_until_may_list_functions(user_client: &Client, ns: Option<&str>, who: &str) {
    let api: Api<Function> = match ns {
        Some(ns) => Api::namespaced(user_client.clone(), ns),
        None => Api::all(user_client.clone()),
    };
    wait_until(SETTLE, &format!("{who} may list Functions"), || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await;
}

/// Opens a watch on Functions of `ns` as `watcher`, changes `name` as admin, and returns once
/// the watch delivers the change.
async fn watch_sees_a_change(watcher: &Client, admin: &Client, ns: &str, name: &str, who: &str) {
    let theirs: Api<Function> = Api::namespaced(watcher.clone(), ns);
    let list = allowed(
        theirs.list(&ListParams::default()).await,
        &format!("{who} lists Functions"),
    );
    let rv = list
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let stream = allowed(
        theirs.watch(&WatchParams::default().timeout(60), &rv).await,
        &format!("{who} watches Functions"),
    );
    let mut stream = Box::pin(stream);
    Api::<Function>::namespaced(admin.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("admin labels the Function");
    let event = tokio::time::timeout(SETTLE, async {
        loop {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Modified(f))) if f.metadata.name.as_deref() == Some(name) => {
                    return f;
                }
                Ok(Some(WatchEvent::Error(e))) => panic!("{who}'s watch failed: {e:?}"),
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{who}'s watch ended before the change arrived"),
                Err(e) => panic!("{who}'s watch failed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{who}'s watch delivered no change within {SETTLE:?}"));
    assert_eq!(
        event.labels().get("touched").map(String::as_str),
        Some("yes")
    );
}

mod examples;
mod kustomization;
mod rbac;
