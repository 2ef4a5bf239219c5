//! Managed versions on the real path: kube-controller-manager turns their Deployments into
//! ReplicaSets and Pods, kube-scheduler places the Pods on simulated Nodes, kwok marks them
//! Running and Ready, the EndpointSlice controller fills their Services' endpoints, and the
//! garbage collector removes what a deleted version owned. No Deployment status is written by
//! hand here. Nothing runs in the Pods and nothing dials their IPs.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt as _};
use switchyard_core::{workload, FunctionVersion, TrafficTarget};
use switchyard_tests::cli::{function, Cli, SimRouter};
use switchyard_tests::cluster::{
    endpoint_pods, pod_ready, pods, require_controllers, wait_workload_gone, workload_objects,
    CONTROLLERS,
};
use switchyard_tests::{client, namespace, wait_until};

const IMAGE: &str =
    "ghcr.io/acme/hello@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A fresh namespace with a simulated router replica in it: the deploys here wait for the
/// routers as well as for readiness.
async fn setup(prefix: &str) -> (Client, Cli, SimRouter) {
    let client = client().await;
    require_controllers(&client).await;
    let ns = namespace(&client, prefix).await;
    let router = SimRouter::start(&client, &ns, &format!("{prefix}-router")).await;
    (client, Cli::new(&ns), router)
}

fn split(traffic: &[TrafficTarget]) -> Vec<(String, u32)> {
    let mut s: Vec<(String, u32)> = traffic
        .iter()
        .filter(|t| t.weight > 0)
        .map(|t| (t.version.clone(), t.weight))
        .collect();
    s.sort();
    s
}

/// `deploy hello VERSION --image … --replicas N`, waiting (the CLI's own wait) up to the
/// controllers' allowance.
async fn deploy(cli: &Cli, version: &str, replicas: &str, extra: &[&str]) -> String {
    let timeout = format!("{}s", CONTROLLERS.as_secs());
    let mut args = vec![
        "deploy",
        "hello",
        version,
        "--image",
        IMAGE,
        "--replicas",
        replicas,
        "--timeout",
        &timeout,
    ];
    args.extend_from_slice(extra);
    cli.ok(&args).await.stdout
}

/// The Pods of version `version` of hello: names of all of them, and whether each is Ready.
async fn version_pods(client: &Client, ns: &str, version: &str) -> Vec<(String, bool)> {
    let mut p: Vec<(String, bool)> = pods(client, ns, &workload::selector("hello", version))
        .await
        .iter()
        .map(|p| (p.name_any(), pod_ready(p)))
        .collect();
    p.sort();
    p
}

/// Waits until the ready endpoints of `service` are exactly `want` (the EndpointSlice
/// controller follows the Pods shortly after they turn Ready).
async fn wait_endpoints(client: &Client, ns: &str, service: &str, want: &BTreeSet<String>) {
    let start = std::time::Instant::now();
    loop {
        let now = endpoint_pods(client, ns, service).await;
        if now == *want {
            return;
        }
        assert!(
            start.elapsed() < CONTROLLERS,
            "endpoints of Service {service}: {now:?}, wanted exactly {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deploy_waits_for_real_readiness_and_each_versions_service_has_exactly_its_pods_as_endpoints(
) {
    let (client, cli, _router) = setup("rollout-ready").await;
    let out = deploy(&cli, "1.0.0", "3", &[]).await;
    assert!(out.contains("hello@1.0.0 is ready"), "{out}");

    // Ready by the controllers' own account: the Deployment's status, its three Pods.
    let d = Api::<Deployment>::namespaced(client.clone(), &cli.ns)
        .get("hello-1-0-0")
        .await
        .expect("the Deployment");
    let status = d
        .status
        .clone()
        .expect("a status written by the controller");
    assert_eq!(status.ready_replicas, Some(3), "{status:?}");
    assert_eq!(status.updated_replicas, Some(3), "{status:?}");
    assert!(status.observed_generation >= d.metadata.generation);
    let first = version_pods(&client, &cli.ns, "1.0.0").await;
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.iter().all(|(_, ready)| *ready), "{first:?}");

    // A second version: its Service's endpoints are its own Pod, never the first version's
    // (the selector names the version, not only the function).
    let out = deploy(&cli, "1.1.0", "1", &["--traffic", "10"]).await;
    assert!(out.contains("hello@1.1.0 is ready"), "{out}");
    let second = version_pods(&client, &cli.ns, "1.1.0").await;
    assert_eq!(second.len(), 1, "{second:?}");
    let names = |p: &[(String, bool)]| p.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
    wait_endpoints(&client, &cli.ns, "hello-1-0-0", &names(&first)).await;
    wait_endpoints(&client, &cli.ns, "hello-1-1-0", &names(&second)).await;

    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(
        split(&f.spec.traffic),
        vec![
            ("1.0.0".to_string(), 900_000),
            ("1.1.0".to_string(), 100_000)
        ]
    );
    let versions = cli.ok(&["versions", "hello"]).await;
    assert!(versions.stdout.contains("3/3"), "{versions:?}");
    assert!(versions.stdout.contains("1/1"), "{versions:?}");
}

#[tokio::test]
async fn a_version_whose_pods_are_never_scheduled_times_out_with_exit_4_and_takes_no_traffic() {
    let (client, cli, _router) = setup("rollout-never").await;
    cli.ok(&[
        "deploy",
        "hello",
        "1.0.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ])
    .await;
    let before = function(&client, &cli.ns, "hello").await;

    // 1000 CPUs: more than any simulated Node has, so the scheduler never places the Pod.
    let out = cli
        .run(&[
            "deploy",
            "hello",
            "1.1.0",
            "--image",
            IMAGE,
            "--cpu",
            "1000",
            "--traffic",
            "50",
            "--timeout",
            "3s",
        ])
        .await
        .expect(4);
    assert_eq!(
        out.stderr.lines().last().map(|l| l.starts_with(
            "error: timed out after 3s waiting for hello@1.1.0 to be ready: 0/1 replicas available"
        )),
        Some(true),
        "{out:?}"
    );

    // No traffic moved and the Function is untouched.
    let after = function(&client, &cli.ns, "hello").await;
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(
        split(&after.spec.traffic),
        vec![("1.0.0".to_string(), 1_000_000)]
    );
    // The version is whole, not half-applied: FunctionVersion, Deployment and Service, the
    // workload owned by the version; its Pod exists, unscheduled, and is no endpoint.
    let fv = Api::<FunctionVersion>::namespaced(client.clone(), &cli.ns)
        .get("hello-1-1-0")
        .await
        .expect("the FunctionVersion");
    for owners in [
        Api::<Deployment>::namespaced(client.clone(), &cli.ns)
            .get("hello-1-1-0")
            .await
            .expect("the Deployment")
            .owner_references()
            .to_vec(),
        Api::<Service>::namespaced(client.clone(), &cli.ns)
            .get("hello-1-1-0")
            .await
            .expect("the Service")
            .owner_references()
            .to_vec(),
    ] {
        assert_eq!(owners.len(), 1);
        assert_eq!(Some(owners[0].uid.clone()), fv.uid());
    }
    let pending = wait_until(CONTROLLERS, "the Pod marked unschedulable", || {
        let client = client.clone();
        let ns = cli.ns.clone();
        async move {
            let p = pods(&client, &ns, &workload::selector("hello", "1.1.0")).await;
            let unschedulable = p.len() == 1
                && p[0]
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    });
            unschedulable.then_some(p)
        }
    })
    .await;
    assert!(!pod_ready(&pending[0]));
    assert!(endpoint_pods(&client, &cli.ns, "hello-1-1-0")
        .await
        .is_empty());

    // Traffic to it is refused for as long as it is not ready.
    let refused = cli
        .run(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await
        .expect(3);
    assert!(
        refused.stderr.contains("version 1.1.0 is not ready"),
        "{refused:?}"
    );

    // A first deploy that times out creates no Function at all.
    let out = cli
        .run(&[
            "deploy",
            "other",
            "1.0.0",
            "--image",
            IMAGE,
            "--cpu",
            "1000",
            "--timeout",
            "1s",
        ])
        .await
        .expect(4);
    assert!(out.stderr.contains("timed out"), "{out:?}");
    let functions = Api::<switchyard_core::Function>::namespaced(client.clone(), &cli.ns);
    assert!(functions.get_opt("other").await.expect("reading").is_none());
}

#[tokio::test]
async fn delete_and_gc_of_a_version_leave_nothing_of_its_workload() {
    let (client, cli, _router) = setup("rollout-delete").await;
    deploy(&cli, "2.0.0", "2", &[]).await;
    deploy(&cli, "1.0.0", "2", &[]).await;
    deploy(&cli, "1.5.0", "1", &[]).await;
    for v in ["2.0.0", "1.0.0", "1.5.0"] {
        assert!(
            !workload_objects(&client, &cli.ns, &workload::selector("hello", v))
                .await
                .is_empty()
        );
    }

    // `delete`: the version's Deployment and Service go, and the garbage collector takes its
    // ReplicaSet and Pods after them.
    let out = cli.ok(&["delete", "hello", "1.5.0"]).await;
    assert!(out.stdout.contains("hello@1.5.0 deleted"), "{out:?}");
    wait_workload_gone(&client, &cli.ns, &workload::selector("hello", "1.5.0")).await;

    // `gc`: 1.0.0 has no traffic, no tag and was never released: deleted, workload and all.
    let out = cli.ok(&["gc", "hello", "--keep", "0"]).await;
    assert!(out.stdout.contains("1.0.0"), "{out:?}");
    wait_workload_gone(&client, &cli.ns, &workload::selector("hello", "1.0.0")).await;

    // The version serving traffic is untouched, Pods and endpoints.
    let serving = version_pods(&client, &cli.ns, "2.0.0").await;
    assert_eq!(serving.len(), 2, "{serving:?}");
    let names: BTreeSet<String> = serving.into_iter().map(|(n, _)| n).collect();
    wait_endpoints(&client, &cli.ns, "hello-2-0-0", &names).await;
}

#[tokio::test]
async fn the_garbage_collector_follows_a_deleted_function_versions_owner_references() {
    let (client, cli, _router) = setup("rollout-owner").await;
    deploy(&cli, "1.0.0", "2", &[]).await;
    let selector = workload::selector("hello", "1.0.0");
    let before = workload_objects(&client, &cli.ns, &selector).await;
    assert_eq!(
        before.iter().filter(|o| o.starts_with("Pod/")).count(),
        2,
        "{before:?}"
    );
    // Deleted as `kubectl delete functionversion` would: only the owner, in the background.
    // Everything else goes by owner references alone (FunctionVersion → Deployment and
    // Service, Deployment → ReplicaSet → Pods).
    Api::<FunctionVersion>::namespaced(client.clone(), &cli.ns)
        .delete("hello-1-0-0", &DeleteParams::background())
        .await
        .expect("deleting the FunctionVersion");
    wait_workload_gone(&client, &cli.ns, &selector).await;
}
