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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
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

// ---------------------------------------------------------------------------------------------
// The kustomization

#[test]
fn every_yaml_file_in_manifests_is_listed_in_the_kustomization_once() {
    let listed = kustomization_resources();
    let mut on_disk: Vec<String> = yaml_files(&manifests_dir())
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        listed.len(),
        "a file is listed twice: {listed:?}"
    );
    assert_eq!(
        sorted, on_disk,
        "kustomization.yaml resources vs files in manifests/"
    );
    // Apply order: the CRDs and the namespace before anything that lives in or refers to them.
    assert_eq!(&listed[..2], ["crds.yaml", "namespace.yaml"], "{listed:?}");
}

#[test]
fn the_router_exits_on_its_own_before_the_kubelet_kills_it() {
    let all = kustomization_manifests();
    let d = find(&all, "Deployment", "switchyard-router").json();
    let pod = &d["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("router args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name}= in {args:?}"))
    };
    let grace: i64 = flag("grace-period")
        .parse()
        .expect("--grace-period in seconds");
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        pre_stop + grace < termination,
        "preStop {pre_stop} s + --grace-period {grace} s must end before \
         terminationGracePeriodSeconds {termination} s"
    );
    // Probes and Prometheus reach the admin port on the pod IP, so it must not be loopback.
    assert!(flag("admin").starts_with("0.0.0.0:"), "{args:?}");
    let ports: HashMap<&str, i64> = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named"),
                p["containerPort"].as_i64().expect("port"),
            )
        })
        .collect();
    assert_eq!(
        Some(&flag("admin")[8..]),
        ports.get("admin").map(|p| p.to_string()).as_deref()
    );
    assert_eq!(
        Some(&flag("listen")[8..]),
        ports.get("http").map(|p| p.to_string()).as_deref()
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The replica name is the pod name, from the downward API.
    let env: HashMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("named"), e))
        .collect();
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env["SWITCHYARD_REPLICA_NAME"]["value"], "$(POD_NAME)");
    // The Service, the PDB and the spread constraints all select the router's pods.
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value, what: &str| {
        for (k, v) in selector
            .as_object()
            .unwrap_or_else(|| panic!("{what}: a selector"))
        {
            assert_eq!(
                &pod_labels[k], v,
                "{what} selects {k}={v}, the pods say otherwise"
            );
        }
    };
    selects(&d["spec"]["selector"]["matchLabels"], "the Deployment");
    let svc = find(&all, "Service", "switchyard-router").json();
    selects(&svc["spec"]["selector"], "the Service");
    let pdb = find(&all, "PodDisruptionBudget", "switchyard-router").json();
    selects(
        &pdb["spec"]["selector"]["matchLabels"],
        "the PodDisruptionBudget",
    );
    for c in pod["topologySpreadConstraints"].as_array().expect("spread") {
        selects(
            &c["labelSelector"]["matchLabels"],
            "a topology spread constraint",
        );
    }
    for p in svc["spec"]["ports"].as_array().expect("service ports") {
        let target = p["targetPort"].as_str().expect("named target ports");
        assert!(
            ports.contains_key(target),
            "the Service targets unknown port {target}"
        );
    }
}

#[tokio::test]
async fn every_manifest_in_the_kustomization_passes_server_side_dry_run() {
    let client = client().await;
    // Namespaced objects go into a fresh namespace (a dry-run Namespace is not created, so
    // switchyard-system may not exist); that is what `kustomize edit set namespace` does too.
    let ns = namespace(&client, "manifests-dry").await;
    let all = kustomization_manifests();
    let mut kinds = BTreeMap::new();
    for m in &all {
        let applied = apply(&client, m, &ns, true)
            .await
            .unwrap_or_else(|e| panic!("dry-run apply of {}: {e}", m.label()));
        assert_eq!(applied.metadata.name, Some(m.name()));
        *kinds.entry(m.kind()).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> = [
        ("CustomResourceDefinition", 2),
        ("Namespace", 1),
        ("ServiceAccount", 1),
        ("ClusterRole", 3),
        ("ClusterRoleBinding", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("PodDisruptionBudget", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, expected);
    // Dry-run created nothing.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deployments
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test]
async fn the_router_pod_is_admitted_under_the_restricted_pod_security_standard() {
    let client = client().await;
    let ns = namespace(&client, "manifests-psa").await;
    let all = kustomization_manifests();
    // The labels namespace.yaml puts on switchyard-system, on this test's namespace.
    let labels = find(&all, "Namespace", "switchyard-system").json()["metadata"]["labels"].clone();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("labelling the namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // First prove that enforcement is on (the label reaches admission through a cache): a
    // pod running as root with privilege escalation is refused.
    let careless: Pod = serde_json::from_value(json!({
        "metadata": {"name": "careless"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("a Pod");
    wait_until(
        SETTLE,
        "restricted Pod Security enforced in the namespace",
        || {
            let (pods, careless, dry) = (pods.clone(), careless.clone(), dry.clone());
            async move {
                match pods.create(&dry, &careless).await {
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("restricted") =>
                    {
                        Some(())
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    // The router's pod, exactly as its Deployment's template describes it.
    let d = find(&all, "Deployment", "switchyard-router").json();
    let template = &d["spec"]["template"];
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "switchyard-router-test", "labels": template["metadata"]["labels"]},
        "spec": template["spec"]
    }))
    .expect("the template makes a Pod");
    pods.create(&dry, &pod)
        .await
        .unwrap_or_else(|e| panic!("the router's pod under restricted Pod Security: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Examples

/// The value of a `# <key>: ...` line in the file's top comment.
fn top_comment_value(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).expect("reading an example");
    let prefix = format!("# {key}:");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

fn assert_top_comment(path: &Path) {
    let text = std::fs::read_to_string(path).expect("reading an example");
    let comment: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(
        comment
            .iter()
            .any(|l| l.trim_start_matches('#').trim().len() > 10),
        "{} must open with a comment saying what it shows",
        path.display()
    );
}

/// Runs switchyard-core's validation on every Function and FunctionVersion of one example
/// file. A Function is checked against the versions of the same file; where a file holds no
/// version of it, against the versions it names itself (so that the file's intended flaw is
/// what shows).
fn core_verdicts(manifests: &[Manifest]) -> Vec<(String, Result<(), validate::ValidationError>)> {
    let versions: Vec<FunctionVersion> = manifests
        .iter()
        .filter(|m| m.kind() == "FunctionVersion")
        .map(|m| serde_json::from_value(m.json()).unwrap_or_else(|e| panic!("{}: {e}", m.label())))
        .collect();
    let mut verdicts = Vec::new();
    for fv in &versions {
        let name = fv.metadata.name.clone().unwrap_or_default();
        let verdict = validate::function_version(&fv.spec);
        if verdict.is_ok() {
            assert_eq!(
                name,
                switchyard_core::object_name(&fv.spec.function, &fv.spec.version),
                "a FunctionVersion is named <function>-<version with dots as dashes>"
            );
        }
        verdicts.push((format!("FunctionVersion {name}"), verdict));
    }
    for m in manifests.iter().filter(|m| m.kind() == "Function") {
        let f: Function =
            serde_json::from_value(m.json()).unwrap_or_else(|e| panic!("{}: {e}", m.label()));
        let name = m.name();
        let mut known: Vec<String> = versions
            .iter()
            .filter(|v| v.spec.function == name)
            .map(|v| v.spec.version.clone())
            .collect();
        if known.is_empty() {
            known.extend(f.spec.traffic.iter().map(|t| t.version.clone()));
            known.extend(f.spec.tags.iter().map(|t| t.version.clone()));
        }
        let verdict = validate::function(&name, &f.spec, known.iter().map(String::as_str));
        verdicts.push((format!("Function {name}"), verdict));
    }
    verdicts
}

#[tokio::test]
async fn every_valid_example_is_accepted_by_core_and_by_the_server() {
    let client = client().await;
    let files = yaml_files(&manifests_dir().join("examples"));
    assert!(files.len() >= 2, "expected valid examples, found {files:?}");
    for path in &files {
        assert_top_comment(path);
        let manifests = read_manifests(path);
        assert!(!manifests.is_empty(), "{} holds no object", path.display());
        for (what, verdict) in core_verdicts(&manifests) {
            if let Err(e) = verdict {
                panic!("{}: core refuses {what}: {e}", path.display());
            }
        }
        // Each example in a namespace of its own, since several use the same names.
        let ns = namespace(&client, "example").await;
        for m in &manifests {
            apply(&client, m, &ns, true)
                .await
                .unwrap_or_else(|e| panic!("dry-run apply of {}: {e}", m.label()));
        }
    }
}

#[tokio::test]
async fn every_invalid_example_is_refused_by_core_and_by_the_server_for_the_reason_it_states() {
    let client = client().await;
    let ns = namespace(&client, "example-invalid").await;
    let files = yaml_files(&manifests_dir().join("examples/invalid"));
    assert!(
        files.len() >= 4,
        "expected invalid examples, found {files:?}"
    );
    for path in &files {
        let file = path.display();
        assert_top_comment(path);
        let server_says = top_comment_value(path, "server says")
            .unwrap_or_else(|| panic!("{file}: no `# server says:` line"));
        let core_says = top_comment_value(path, "core says")
            .unwrap_or_else(|| panic!("{file}: no `# core says:` line"));
        let manifests = read_manifests(path);
        assert_eq!(manifests.len(), 1, "{file}: one invalid object per file");
        let m = &manifests[0];

        let verdicts = core_verdicts(&manifests);
        let refusal = verdicts
            .iter()
            .find_map(|(_, v)| v.as_ref().err())
            .unwrap_or_else(|| panic!("{file}: core accepts it"));
        assert!(
            refusal.to_string().contains(&core_says),
            "{file}: core says {refusal:?}, the file expects {core_says:?}"
        );

        match apply(&client, m, &ns, true).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{file}: {}", status.message);
                assert!(
                    status.message.contains(&server_says),
                    "{file}: the server says {:?}, the file expects {server_says:?}",
                    status.message
                );
            }
            Err(e) => panic!("{file}: expected a 422 from the server, got {e}"),
            Ok(_) => panic!("{file}: the server accepted it"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC, for real

#[tokio::test]
async fn the_router_watches_and_acknowledges_functions_and_may_do_nothing_else() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-router").await;
    // The ClusterRole and its binding to switchyard-system/switchyard-router, for real. The
    // ServiceAccount object itself is not needed: the test API server authenticates that
    // identity from its token file (router.kubeconfig).
    apply_cluster_scoped(&admin, "rbac.yaml").await;
    let router = client_as("router.kubeconfig").await;
    wait_until_may_list_functions(&router, None, "the router").await;

    let admin_fns: Api<Function> = Api::namespaced(admin.clone(), &ns);
    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &version("hello", "1.0.0"))
        .await
        .expect("admin creates a version");
    admin_fns
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret("db"))
        .await
        .expect("admin creates a Secret");

    // Reads, in every namespace: that is how the router builds its table.
    let all_fns: Api<Function> = Api::all(router.clone());
    let listed = allowed(
        all_fns.list(&ListParams::default()).await,
        "router lists Functions",
    );
    assert!(listed
        .items
        .iter()
        .any(|f| f.namespace().as_deref() == Some(&ns)));
    allowed(
        Api::<FunctionVersion>::all(router.clone())
            .list(&ListParams::default())
            .await,
        "router lists FunctionVersions",
    );
    let fns: Api<Function> = Api::namespaced(router.clone(), &ns);
    let hello = allowed(fns.get("hello").await, "router gets a Function");
    watch_sees_a_change(&router, &admin, &ns, "hello", "the router").await;

    // Its acknowledgement: its own entry in status.routers, by server-side apply.
    let ack = json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "Function",
        "status": {"routers": [{
            "name": "router-a",
            "observedGeneration": hello.metadata.generation,
            "appliedAt": "2026-01-01T00:00:00Z"
        }]}
    });
    allowed(
        fns.patch_status(
            "hello",
            &PatchParams::apply("switchyard-router.router-a").force(),
            &Patch::Apply(&ack),
        )
        .await,
        "router applies its status entry",
    );
    let acked = admin_fns
        .get_status("hello")
        .await
        .expect("admin reads status");
    let routers = acked.status.expect("a status").routers;
    assert_eq!(routers.len(), 1);
    assert_eq!(routers[0].name, "router-a");

    // Its Lease: the whole life cycle, the way the router keeps it (server-side apply creates
    // and renews it) and by plain create and update.
    let leases: Api<Lease> = Api::namespaced(router.clone(), &ns);
    let renew = PatchParams::apply("switchyard-router.router-b").force();
    for _ in 0..2 {
        let mut l = serde_json::to_value(lease("router-b")).expect("a Lease as JSON");
        l["apiVersion"] = json!("coordination.k8s.io/v1");
        l["kind"] = json!("Lease");
        l["metadata"]["labels"] = json!({"switchyard.dev/router": "true"});
        allowed(
            leases.patch("router-b", &renew, &Patch::Apply(&l)).await,
            "router applies its Lease",
        );
    }
    allowed(
        leases.delete("router-b", &DeleteParams::default()).await,
        "router deletes its applied Lease",
    );
    let created = allowed(
        leases
            .create(&PostParams::default(), &lease("router-a"))
            .await,
        "router creates its Lease",
    );
    allowed(leases.get("router-a").await, "router gets its Lease");
    allowed(
        leases.list(&ListParams::default()).await,
        "router lists Leases",
    );
    allowed(
        leases
            .replace("router-a", &PostParams::default(), &created)
            .await,
        "router renews its Lease",
    );
    allowed(
        leases.delete("router-a", &DeleteParams::default()).await,
        "router deletes its Lease",
    );

    // Nothing else.
    let mut changed = hello.clone();
    changed.spec.pinning = true;
    forbidden(
        fns.replace("hello", &PostParams::default(), &changed).await,
        "router updates a Function's spec",
    );
    forbidden(
        fns.patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pinning": true}})),
        )
        .await,
        "router patches a Function's spec",
    );
    forbidden(
        fns.create(
            &PostParams::default(),
            &function("other", &[("1.0.0", 1_000_000)]),
        )
        .await,
        "router creates a Function",
    );
    forbidden(
        fns.delete("hello", &DeleteParams::default()).await,
        "router deletes a Function",
    );
    forbidden(
        Api::<FunctionVersion>::namespaced(router.clone(), &ns)
            .create(&PostParams::default(), &version("hello", "2.0.0"))
            .await,
        "router creates a FunctionVersion",
    );
    let secrets: Api<Secret> = Api::namespaced(router.clone(), &ns);
    forbidden(secrets.get("db").await, "router reads a Secret");
    forbidden(
        Api::<Secret>::all(router.clone())
            .list(&ListParams::default())
            .await,
        "router lists Secrets",
    );
    forbidden(
        Api::<Deployment>::namespaced(router.clone(), &ns)
            .create(&PostParams::default(), &deployment("hello-1-0-0"))
            .await,
        "router creates a Deployment",
    );
    forbidden(
        Api::<Service>::namespaced(router.clone(), &ns)
            .create(&PostParams::default(), &service("hello-1-0-0"))
            .await,
        "router creates a Service",
    );
    forbidden(
        Api::<Pod>::namespaced(router.clone(), &ns)
            .list(&ListParams::default())
            .await,
        "router lists Pods",
    );
}

/// The real `switchyard-router` process, killed if the test ends without stopping it.
struct RouterProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl RouterProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET` on a fresh connection, off the async runtime.
async fn http_get(addr: SocketAddr, host: &'static str, path: &'static str) -> Option<Response> {
    tokio::task::spawn_blocking(move || {
        HttpClient::new(addr)
            .get(host, path, &[("connection", "close")])
            .ok()
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn the_real_router_serves_and_acknowledges_with_nothing_but_its_cluster_role() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-router-process").await;
    apply_cluster_scoped(&admin, "rbac.yaml").await;
    let router = client_as("router.kubeconfig").await;
    wait_until_may_list_functions(&router, None, "the router").await;

    let upstream = Upstream::start("1.0.0");
    let mut fv = version("hello", "1.0.0");
    fv.spec.endpoint = Some(upstream.url());
    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &fv)
        .await
        .expect("admin creates a version");
    let admin_fns: Api<Function> = Api::namespaced(admin.clone(), &ns);
    let created = admin_fns
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    let generation = created.metadata.generation.expect("a generation");

    // Watching one namespace (so that it acknowledges no other test's Functions) with its
    // Lease there too; the ClusterRole is what authorizes it, as in the cluster.
    let replica = format!("router-{ns}");
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::env::temp_dir().join(format!("{replica}.log"));
    let child = std::process::Command::new(binary("switchyard-router"))
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin_addr.to_string(),
        ])
        .args(["--namespace", &ns, "--lease-namespace", &ns])
        .args(["--replica-name", &replica, "--grace-period", "1"])
        .arg("--kubeconfig")
        .arg(kubeconfig_path().with_file_name("router.kubeconfig"))
        // Debug for the router itself: a refused acknowledgement is only logged at debug.
        .env("RUST_LOG", "info,switchyard_router=debug,kube_client=off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("starting switchyard-router");
    let mut process = RouterProcess { child, log };

    wait_until(SETTLE, "router /readyz", || async {
        let r = http_get(admin_addr, "localhost", "/readyz").await?;
        (r.status == 200).then_some(())
    })
    .await;
    let served = http_get(listen, "any.example.com", "/hello")
        .await
        .expect("a response through the router");
    assert_eq!((served.status, served.body.as_str()), (200, "1.0.0"));

    // Its acknowledgement (patch on functions/status) and its Lease (create and patch).
    wait_until(SETTLE, "the router's acknowledgement", || {
        let (admin_fns, replica) = (admin_fns.clone(), replica.clone());
        async move {
            let f = admin_fns.get("hello").await.ok()?;
            let ack = f.status?.routers.into_iter().find(|r| r.name == replica)?;
            (ack.observed_generation >= generation).then_some(ack)
        }
    })
    .await;
    let admin_leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    wait_until(SETTLE, "the router's Lease", || {
        let (admin_leases, replica) = (admin_leases.clone(), replica.clone());
        async move { admin_leases.get_opt(&replica).await.ok().flatten() }
    })
    .await;

    // A clean stop deletes the Lease (delete).
    let pid = process.child.id().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(signalled.success(), "kill -TERM {pid}");
    let exit = tokio::task::spawn_blocking(move || {
        let status = process.child.wait();
        (status, process)
    })
    .await
    .expect("waiting for the router");
    let (status, process) = exit;
    assert!(
        status.expect("router exit status").success(),
        "{}",
        process.log()
    );
    assert!(
        admin_leases
            .get_opt(&replica)
            .await
            .expect("admin reads Leases")
            .is_none(),
        "the router left its Lease behind"
    );
    let log = process.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the router was refused something:\n{log}"
    );
}

#[tokio::test]
async fn a_viewer_reads_functions_and_their_readiness_and_may_write_nothing() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-viewer").await;
    let elsewhere = namespace(&admin, "rbac-viewer-not").await;
    apply_cluster_scoped(&admin, "roles.yaml").await;
    // Granted in one namespace only, so that `viewer` stays powerless elsewhere (other tests
    // rely on that).
    bind_user(&admin, &ns, "switchyard-viewer", "viewer").await;
    let viewer = client_as("viewer.kubeconfig").await;
    wait_until_may_list_functions(&viewer, Some(&ns), "the viewer").await;

    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &version("hello", "1.0.0"))
        .await
        .expect("admin creates a version");
    Api::<Function>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    Api::<Lease>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &lease("router-a"))
        .await
        .expect("admin creates a Lease");
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &deployment("hello-1-0-0"))
        .await
        .expect("admin creates a Deployment");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret("db"))
        .await
        .expect("admin creates a Secret");

    let fns: Api<Function> = Api::namespaced(viewer.clone(), &ns);
    let fvs: Api<FunctionVersion> = Api::namespaced(viewer.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(viewer.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(viewer.clone(), &ns);
    let hello = allowed(fns.get("hello").await, "viewer gets a Function");
    allowed(
        fvs.list(&ListParams::default()).await,
        "viewer lists versions",
    );
    allowed(fvs.get("hello-1-0-0").await, "viewer gets a version");
    allowed(
        leases.list(&ListParams::default()).await,
        "viewer lists Leases",
    );
    allowed(leases.get("router-a").await, "viewer gets a Lease");
    allowed(
        deployments.get("hello-1-0-0").await,
        "viewer reads a Deployment",
    );
    allowed(
        deployments.list(&ListParams::default()).await,
        "viewer lists Deployments",
    );
    watch_sees_a_change(&viewer, &admin, &ns, "hello", "the viewer").await;

    forbidden(
        fvs.create(&PostParams::default(), &version("hello", "2.0.0"))
            .await,
        "viewer creates a version",
    );
    forbidden(
        fvs.delete("hello-1-0-0", &DeleteParams::default()).await,
        "viewer deletes a version",
    );
    forbidden(
        fns.patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pinning": true}})),
        )
        .await,
        "viewer patches a Function",
    );
    forbidden(
        fns.replace("hello", &PostParams::default(), &hello).await,
        "viewer updates a Function",
    );
    forbidden(
        fns.patch_status(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"routers": []}})),
        )
        .await,
        "viewer patches a Function's status",
    );
    forbidden(
        leases
            .create(&PostParams::default(), &lease("router-b"))
            .await,
        "viewer creates a Lease",
    );
    forbidden(
        deployments
            .create(&PostParams::default(), &deployment("hello-2-0-0"))
            .await,
        "viewer creates a Deployment",
    );
    forbidden(
        Api::<Secret>::namespaced(viewer.clone(), &ns)
            .get("db")
            .await,
        "viewer reads a Secret",
    );
    forbidden(
        Api::<Pod>::namespaced(viewer.clone(), &ns)
            .list(&ListParams::default())
            .await,
        "viewer lists Pods",
    );
    forbidden(
        Api::<Function>::namespaced(viewer.clone(), &elsewhere)
            .list(&ListParams::default())
            .await,
        "viewer lists Functions where it is not bound",
    );
}

#[tokio::test]
async fn a_deployer_can_do_what_the_cli_does_and_nothing_more() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-deployer").await;
    apply_cluster_scoped(&admin, "roles.yaml").await;
    // `viewer` is the only spare user of the test API server; here it is bound to
    // switchyard-deployer, in this namespace only.
    bind_user(&admin, &ns, "switchyard-deployer", "viewer").await;
    let deployer = client_as("viewer.kubeconfig").await;
    wait_until_may_list_functions(&deployer, Some(&ns), "the deployer").await;
    Api::<Lease>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &lease("router-a"))
        .await
        .expect("admin creates a Lease");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret("db"))
        .await
        .expect("admin creates a Secret");

    let fns: Api<Function> = Api::namespaced(deployer.clone(), &ns);
    let fvs: Api<FunctionVersion> = Api::namespaced(deployer.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(deployer.clone(), &ns);
    let services: Api<Service> = Api::namespaced(deployer.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(deployer.clone(), &ns);
    let apply = PatchParams::apply("switchyard");

    // deploy: versions by server-side apply, a managed one's Deployment and Service, the
    // Function created with the first version.
    for v in ["1.0.0", "1.1.0"] {
        let fv = version_json("hello", v);
        let name = switchyard_core::object_name("hello", v);
        allowed(
            fvs.patch(&name, &apply, &Patch::Apply(&fv)).await,
            "deployer applies a version",
        );
    }
    allowed(fvs.get("hello-1-0-0").await, "deployer gets a version");
    allowed(
        fvs.list(&ListParams::default()).await,
        "deployer lists versions",
    );
    let mut labelled = fvs.get("hello-1-1-0").await.expect("the version");
    labelled.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    allowed(
        fvs.replace("hello-1-1-0", &PostParams::default(), &labelled)
            .await,
        "deployer updates a version's labels",
    );
    // Owned by its version, with blockOwnerDeletion, as the CLI writes it.
    let mut workload = deployment("hello-1-1-0");
    workload.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "switchyard.dev/v1alpha1".into(),
        kind: "FunctionVersion".into(),
        name: "hello-1-1-0".into(),
        uid: labelled.metadata.uid.clone().expect("a uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    allowed(
        deployments
            .patch("hello-1-1-0", &apply, &Patch::Apply(&workload))
            .await,
        "deployer applies a Deployment",
    );
    allowed(
        services
            .patch(
                "hello-1-1-0",
                &apply,
                &Patch::Apply(&service("hello-1-1-0")),
            )
            .await,
        "deployer applies a Service",
    );
    allowed(
        deployments.get("hello-1-1-0").await,
        "deployer reads a Deployment",
    );
    allowed(
        services.list(&ListParams::default()).await,
        "deployer lists Services",
    );
    let created = allowed(
        fns.create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await,
        "deployer creates a Function",
    );

    // traffic, promote, rollback: optimistic-concurrency updates and patches of the spec.
    let mut shifted = created.clone();
    shifted.spec.traffic = function("hello", &[("1.0.0", 900_000), ("1.1.0", 100_000)])
        .spec
        .traffic;
    allowed(
        fns.replace("hello", &PostParams::default(), &shifted).await,
        "deployer updates a Function's traffic",
    );
    allowed(
        fns.patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"traffic": [{"version": "1.1.0", "weight": 1_000_000}]}}),
            ),
        )
        .await,
        "deployer patches a Function's traffic",
    );
    watch_sees_a_change(&deployer, &admin, &ns, "hello", "the deployer").await;
    // --wait: which routers are alive.
    allowed(
        leases.list(&ListParams::default()).await,
        "deployer lists Leases",
    );
    allowed(leases.get("router-a").await, "deployer gets a Lease");

    // delete and gc.
    allowed(
        services
            .delete("hello-1-1-0", &DeleteParams::default())
            .await,
        "deployer deletes a Service",
    );
    allowed(
        deployments
            .delete("hello-1-1-0", &DeleteParams::default())
            .await,
        "deployer deletes a Deployment",
    );
    allowed(
        fvs.delete("hello-1-0-0", &DeleteParams::default()).await,
        "deployer deletes a version",
    );

    // Nothing more.
    forbidden(
        fns.delete("hello", &DeleteParams::default()).await,
        "deployer deletes a Function",
    );
    forbidden(
        fns.patch_status(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"routers": []}})),
        )
        .await,
        "deployer patches a Function's status",
    );
    forbidden(
        leases
            .create(&PostParams::default(), &lease("router-b"))
            .await,
        "deployer creates a Lease",
    );
    forbidden(
        leases.delete("router-a", &DeleteParams::default()).await,
        "deployer deletes a Lease",
    );
    forbidden(
        Api::<Secret>::namespaced(deployer.clone(), &ns)
            .get("db")
            .await,
        "deployer reads a Secret",
    );
    forbidden(
        Api::<Secret>::namespaced(deployer.clone(), &ns)
            .create(&PostParams::default(), &secret("mine"))
            .await,
        "deployer creates a Secret",
    );
    let pods: Api<Pod> = Api::namespaced(deployer.clone(), &ns);
    forbidden(
        pods.list(&ListParams::default()).await,
        "deployer lists Pods",
    );
    // The grants end at the namespace of the binding.
    forbidden(
        Api::<Function>::all(deployer.clone())
            .list(&ListParams::default())
            .await,
        "deployer lists Functions in every namespace",
    );
    let watch_all = Api::<Deployment>::all(deployer.clone())
        .watch(&WatchParams::default().timeout(1), "0")
        .await;
    forbidden(
        watch_all.map(|_| ()),
        "deployer watches Deployments in every namespace",
    );
}
