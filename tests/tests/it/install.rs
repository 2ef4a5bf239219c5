//! `switchyard install` and `switchyard uninstall` on the real API server.
//!
//! The API server is shared by every test of the run: other tests create the CRDs, ClusterRoles
//! and the router's ClusterRoleBinding too (field manager `switchyard-tests`), so these tests
//! never expect a cluster-scoped object to be `created` by install, only that it exists
//! afterwards and that a second install reports everything `unchanged`.
//!
//! A real uninstall would delete the CRDs — and with them every Function of every test running
//! in parallel. So `uninstall` runs for real only where it refuses (a Function exists), and what
//! a forced uninstall deletes is checked with `--dry-run --force`, which the API server answers
//! for each object without deleting it.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_tests::cli as support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::{Client, ResourceExt as _};
use support::Cli;
use switchyard_core::Function;
use switchyard_tests::{client, namespace};

const SYSTEM: &str = "switchyard-system";
const ROUTER: &str = "switchyard-router";

/// Every object of the manifests, as install names them, in apply order.
const OBJECTS: [&str; 12] = [
    "CustomResourceDefinition functions.switchyard.dev",
    "CustomResourceDefinition functionversions.switchyard.dev",
    "CustomResourceDefinition routerreports.switchyard.dev",
    "Namespace switchyard-system",
    "ServiceAccount switchyard-system/switchyard-router",
    "ClusterRole switchyard-router",
    "ClusterRoleBinding switchyard-router",
    "ClusterRole switchyard-viewer",
    "ClusterRole switchyard-deployer",
    "Deployment switchyard-system/switchyard-router",
    "Service switchyard-system/switchyard-router",
    "PodDisruptionBudget switchyard-system/switchyard-router",
];

/// The lines of `stdout` that report on one object each, with the object as install names it.
fn object_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            OBJECTS
                .iter()
                .find(|o| l.starts_with(&format!("{o} ")))
                .map(|o| (o.to_string(), l[o.len() + 1..].to_string()))
        })
        .collect()
}

fn router_image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == "router"))
        .and_then(|c| c.image.clone())
        .expect("a router container with an image")
}

async fn router_deployment(kube: &Client) -> Deployment {
    Api::<Deployment>::namespaced(kube.clone(), SYSTEM)
        .get(ROUTER)
        .await
        .expect("the router Deployment")
}

#[tokio::test]
async fn install_creates_everything_and_a_second_install_changes_nothing() {
    let kube = client().await;
    switchyard_tests::cluster::require_controllers(&kube).await;
    let ns = namespace(&kube, "install").await;
    let cli = Cli::new(&ns);

    let first = cli.ok(&["install"]).await;
    let lines = object_lines(&first.stdout);
    let objects: Vec<&str> = lines.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(objects, OBJECTS, "{first:?}");
    for (object, outcome) in &lines {
        assert!(
            ["created", "unchanged"].contains(&outcome.as_str())
                || outcome.starts_with("configured ("),
            "{object}: {outcome}"
        );
    }
    assert!(
        first
            .stdout
            .contains("CustomResourceDefinitions established and served in"),
        "{first:?}"
    );
    assert!(first.stdout.contains("switchyard installed: "), "{first:?}");
    // Install waited for the router to roll out, and the controllers agree: two Pods of the
    // current template, Ready, on two different Nodes (the topology spread constraint).
    assert!(
        first
            .stdout
            .contains("Deployment switchyard-system/switchyard-router (2 replicas ready)"),
        "{first:?}"
    );
    let d = router_deployment(&kube).await;
    let status = d
        .status
        .clone()
        .expect("a status written by the controller");
    assert_eq!(
        (status.ready_replicas, status.updated_replicas),
        (Some(2), Some(2)),
        "{status:?}"
    );
    let selector = BTreeMap::from([("app.kubernetes.io/name".to_string(), ROUTER.to_string())]);
    let pods = switchyard_tests::cluster::pods(&kube, SYSTEM, &selector).await;
    let current: Vec<_> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| switchyard_tests::cluster::pod_ready(p))
        .collect();
    assert_eq!(current.len(), 2, "{pods:#?}");
    let nodes: BTreeSet<_> = current
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    assert_eq!(nodes.len(), 2, "one router replica per Node: {nodes:?}");

    // Everything is there, as the manifests say.
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    for name in [
        "functions.switchyard.dev",
        "functionversions.switchyard.dev",
    ] {
        let crd = crds.get(name).await.expect("the CRD");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
    Api::<Namespace>::all(kube.clone())
        .get(SYSTEM)
        .await
        .expect("the namespace");
    Api::<ServiceAccount>::namespaced(kube.clone(), SYSTEM)
        .get(ROUTER)
        .await
        .expect("the ServiceAccount");
    for name in [ROUTER, "switchyard-viewer", "switchyard-deployer"] {
        Api::<ClusterRole>::all(kube.clone())
            .get(name)
            .await
            .expect("the ClusterRole");
    }
    let binding = Api::<ClusterRoleBinding>::all(kube.clone())
        .get(ROUTER)
        .await
        .expect("the ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, ROUTER);
    let d = router_deployment(&kube).await;
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert!(
        router_image(&d).starts_with("ghcr.io/switchyard-dev/switchyard-router:"),
        "{}",
        router_image(&d)
    );
    let managers: Vec<String> = d
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"switchyard".to_string()), "{managers:?}");
    Api::<Service>::namespaced(kube.clone(), SYSTEM)
        .get(ROUTER)
        .await
        .expect("the Service");
    Api::<PodDisruptionBudget>::namespaced(kube.clone(), SYSTEM)
        .get(ROUTER)
        .await
        .expect("the PodDisruptionBudget");

    // Again: nothing changes, and nothing is written. (First let the Deployment controller
    // finish its last status write of this rollout.)
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), SYSTEM);
    switchyard_tests::wait_until(
        switchyard_tests::cluster::CONTROLLERS,
        "the router rollout complete",
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get(ROUTER).await.ok()?;
                let done = d.status?.conditions?.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                });
                done.then_some(())
            }
        },
    )
    .await;
    let revision = router_deployment(&kube).await.resource_version();
    let second = cli.ok(&["install"]).await;
    let lines = object_lines(&second.stdout);
    assert_eq!(lines.len(), OBJECTS.len(), "{second:?}");
    for (object, outcome) in &lines {
        assert_eq!(outcome, "unchanged", "{object} on the second install");
    }
    assert!(
        second
            .stdout
            .contains("switchyard installed: 0 created, 0 configured, 12 unchanged of 12 objects"),
        "{second:?}"
    );
    assert_eq!(router_deployment(&kube).await.resource_version(), revision);
}

#[tokio::test]
async fn install_dry_run_reports_what_would_change_and_writes_nothing() {
    let kube = client().await;
    let ns = namespace(&kube, "install-dry").await;
    let cli = Cli::new(&ns);
    cli.ok(&["install"]).await;
    let before = router_deployment(&kube).await;

    let out = cli.ok(&["install", "--dry-run"]).await;
    let lines = object_lines(&out.stdout);
    assert_eq!(lines.len(), OBJECTS.len(), "{out:?}");
    for (object, outcome) in &lines {
        assert_eq!(outcome, "unchanged", "{object}");
    }
    assert!(out.stdout.contains("nothing was written"), "{out:?}");

    let image = format!("registry.example/router@sha256:{}", "ab".repeat(32));
    let out = cli.ok(&["install", "--dry-run", "--image", &image]).await;
    for (object, outcome) in object_lines(&out.stdout) {
        if object.starts_with("Deployment ") {
            assert_eq!(
                outcome, "would be configured (spec.template.spec.containers)",
                "{out:?}"
            );
        } else {
            assert_eq!(outcome, "unchanged", "{object}: {out:?}");
        }
    }
    assert!(
        out.stdout.contains(
            "dry run: 0 would be created, 1 would be configured, 11 unchanged of 12 objects; nothing was written"
        ),
        "{out:?}"
    );
    let after = router_deployment(&kube).await;
    assert_eq!(router_image(&after), router_image(&before));
    assert_eq!(after.resource_version(), before.resource_version());
}

#[tokio::test]
async fn uninstall_refuses_while_a_function_exists_and_a_forced_dry_run_lists_what_it_would_delete()
{
    let kube = client().await;
    let ns = namespace(&kube, "uninstall").await;
    let cli = Cli::new(&ns);
    cli.ok(&["install"]).await;
    cli.ok(&[
        "deploy",
        "hello",
        "1.0.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ])
    .await;

    // The dry run first: it takes the same decision, so if it did not refuse, the real run
    // below would not be made (it would wipe the CRDs under every other test).
    let out = cli.run(&["uninstall", "--dry-run"]).await.expect(3);
    assert!(out.stderr.contains("refusing to uninstall"), "{out:?}");
    let out = cli.run(&["uninstall"]).await.expect(3);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.starts_with("error: refusing to uninstall: ")
            && out.stderr.contains(" Function")
            && out.stderr.contains("--force"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");

    let out = cli.ok(&["uninstall", "--dry-run", "--force"]).await;
    assert!(
        out.stdout
            .contains("--force: deleting the CRDs would delete "),
        "{out:?}"
    );
    let lines = object_lines(&out.stdout);
    let mut reversed = OBJECTS;
    reversed.reverse();
    let objects: Vec<&str> = lines.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(objects, reversed, "the CRDs go last: {out:?}");
    for (object, outcome) in &lines {
        assert_eq!(outcome, "would be deleted", "{object}");
    }
    assert!(
        out.stdout
            .contains("dry run: 12 would be deleted, 0 not found; nothing was deleted"),
        "{out:?}"
    );

    // Nothing was deleted.
    Api::<Function>::namespaced(kube.clone(), &ns)
        .get("hello")
        .await
        .expect("the Function is still there");
    let crd = Api::<CustomResourceDefinition>::all(kube.clone())
        .get("functions.switchyard.dev")
        .await
        .expect("the CRD is still there");
    assert!(crd.metadata.deletion_timestamp.is_none());
    let d = router_deployment(&kube).await;
    assert!(d.metadata.deletion_timestamp.is_none());
}
