//! Tests that take away what every other test relies on (the CRDs, the router's namespace), so
//! they run only on a control plane of their own, alone: `scripts/test` runs them last, with
//! `SWITCHYARD_TESTS_EXCLUSIVE=1` and one test thread, and only when it started the control
//! plane itself (never on one that others may be using). Anywhere else they say that they
//! skipped.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use switchyard_core::workload;
use switchyard_tests::cli::Cli;
use switchyard_tests::cluster::{require_controllers, wait_workload_gone, CONTROLLERS};
use switchyard_tests::{
    binary, client, free_port, kubeconfig_path, namespace, wait_until, wait_until_blocking,
    HttpClient, Upstream,
};

const SYSTEM: &str = "switchyard-system";
const ROUTER: &str = "switchyard-router";

fn exclusive() -> bool {
    let on = std::env::var_os("SWITCHYARD_TESTS_EXCLUSIVE").is_some_and(|v| v == "1");
    if !on {
        eprintln!(
            "skipped: needs a control plane of its own (scripts/test runs it with SWITCHYARD_TESTS_EXCLUSIVE=1)"
        );
    }
    on
}

#[tokio::test]
async fn uninstall_removes_the_router_with_its_pods_and_every_version_and_install_brings_it_back() {
    if !exclusive() {
        return;
    }
    let kube = client().await;
    require_controllers(&kube).await;
    let ns = namespace(&kube, "exclusive").await;
    let cli = Cli::new(&ns);
    let out = cli.ok(&["install"]).await;
    assert!(
        out.stdout
            .contains("Deployment switchyard-system/switchyard-router (2 replicas ready)"),
        "{out:?}"
    );
    let image = format!("ghcr.io/acme/hello@sha256:{}", "ab".repeat(32));
    cli.ok(&["deploy", "hello", "1.0.0", "--image", &image, "--no-wait"])
        .await;
    let router = BTreeMap::from([("app.kubernetes.io/name".to_string(), ROUTER.to_string())]);
    let selector = "app.kubernetes.io/name=switchyard-router";
    let pods: Api<Pod> = Api::namespaced(kube.clone(), SYSTEM);
    assert_eq!(
        pods.list(&ListParams::default().labels(selector))
            .await
            .expect("listing the router's Pods")
            .items
            .len(),
        2
    );

    let out = cli.ok(&["uninstall", "--force"]).await;
    assert!(
        out.stdout.contains("--force: deleting the CRDs deletes "),
        "{out:?}"
    );
    // Gone already when uninstall returns, not left to the garbage collector after the CRDs:
    // once FunctionVersion is no longer served the collector cannot resolve the owner
    // references of the version's Deployment and Service and retries them for ever (before
    // the fix, uninstall deleted only the CRDs, and this wait timed out whenever the
    // collector's 30 s discovery resync fell between the two).
    let hello = switchyard_core::resources::object_name("hello", "1.0.0");
    assert!(
        Api::<Deployment>::namespaced(kube.clone(), &ns)
            .get_opt(&hello)
            .await
            .expect("reading")
            .is_none(),
        "{out:?}"
    );
    assert!(
        Api::<Service>::namespaced(kube.clone(), &ns)
            .get_opt(&hello)
            .await
            .expect("reading")
            .is_none(),
        "{out:?}"
    );
    // Every FunctionVersion (this test's, and any an earlier exclusive test left).
    assert!(
        out.stdout.lines().any(|l| l
            .ends_with("FunctionVersion deleted with its Deployment and Service")
            || l.ends_with("FunctionVersions deleted with their Deployments and Services")),
        "{out:?}"
    );

    // The CRDs go, and with them every Function and FunctionVersion; the garbage collector
    // takes the managed version's workload; the router's Deployment goes and its ReplicaSet
    // and Pods after it; the namespace controller empties and removes switchyard-system.
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    for name in [
        "functions.switchyard.dev",
        "functionversions.switchyard.dev",
    ] {
        wait_until(CONTROLLERS, &format!("CRD {name} gone"), || {
            let crds = crds.clone();
            async move { crds.get_opt(name).await.ok().filter(Option::is_none) }
        })
        .await;
    }
    wait_workload_gone(&kube, &ns, &workload::selector("hello", "1.0.0")).await;
    wait_workload_gone(&kube, SYSTEM, &router).await;
    assert!(Api::<Deployment>::namespaced(kube.clone(), SYSTEM)
        .get_opt(ROUTER)
        .await
        .expect("reading")
        .is_none());
    assert!(Api::<ReplicaSet>::namespaced(kube.clone(), SYSTEM)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing")
        .items
        .is_empty());
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    wait_until(CONTROLLERS, "namespace switchyard-system gone", || {
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .get_opt(SYSTEM)
                .await
                .ok()
                .filter(Option::is_none)
        }
    })
    .await;

    // Installed again, the router rolls out again.
    let out = cli.ok(&["install"]).await;
    assert!(
        out.stdout
            .contains("Deployment switchyard-system/switchyard-router (2 replicas ready)"),
        "{out:?}"
    );

    // --timeout bounds the wait for the rollout: a new router image cannot roll out within
    // 1 ms (kwok makes a Pod ready a second after it is scheduled), so install exits 4 saying
    // so, with everything applied; installing the release's image again rolls back out (and
    // leaves the cluster as the suite found it).
    let other = format!(
        "registry.example/switchyard-router@sha256:{}",
        "cd".repeat(32)
    );
    let out = cli
        .run(&["install", "--image", &other, "--timeout", "1ms"])
        .await
        .expect(4);
    assert!(
        out.stderr.contains("timed out after")
            && out
                .stderr
                .contains("waiting for Deployment switchyard-system/switchyard-router to roll out")
            && out.stderr.contains("(everything is applied)"),
        "{out:?}"
    );
    let applied = Api::<Deployment>::namespaced(kube.clone(), SYSTEM)
        .get(ROUTER)
        .await
        .expect("the router's Deployment");
    let containers = applied
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers)
        .unwrap_or_default();
    assert_eq!(containers[0].image.as_deref(), Some(other.as_str()));
    let out = cli.ok(&["install"]).await;
    assert!(
        out.stdout
            .contains("Deployment switchyard-system/switchyard-router (2 replicas ready)"),
        "{out:?}"
    );
}

/// A `switchyard-router` process started as the installed Deployment starts it: no
/// `--namespace` (every namespace), its identity the router's ServiceAccount, and its replica
/// name and Lease namespace from `$POD_NAME` and `$POD_NAMESPACE`. Killed when dropped.
struct InstalledRouter {
    child: std::process::Child,
    listen: std::net::SocketAddr,
}

impl Drop for InstalledRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_router_as_install_runs_it_watches_every_namespace_and_the_cli_finds_its_lease() {
    if !exclusive() {
        return;
    }
    let kube = client().await;
    let ns = namespace(&kube, "exclusive-router").await;
    let cli = Cli::new(&ns);
    cli.ok(&["install"]).await;
    let pod = "switchyard-router-5f7c9-abcde";
    let (listen, admin) = (
        std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
        std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let child = std::process::Command::new(binary("switchyard-router"))
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .args(["--grace-period", "0"])
        .arg("--kubeconfig")
        .arg(kubeconfig_path().with_file_name("router.kubeconfig"))
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", SYSTEM)
        .env("SWITCHYARD_REPLICA_NAME", pod)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting switchyard-router");
    let router = InstalledRouter { child, listen };
    tokio::task::spawn_blocking(move || {
        wait_until_blocking(CONTROLLERS, "router /readyz", || {
            switchyard_tests::get(admin, "/readyz")
                .ok()
                .filter(|r| r.status == 200)
        })
    })
    .await
    .expect("waiting for /readyz");

    // Its Lease is in $POD_NAMESPACE, named after the pod, watching every namespace.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kube.clone(), SYSTEM)
        .get(pod)
        .await
        .expect("the router's Lease in switchyard-system");
    assert_eq!(
        lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("switchyard.dev/watch-namespace"))
            .map(String::as_str),
        Some(""),
        "{lease:?}"
    );

    // A Function in a namespace of its own: the CLI (no --router-namespace) finds that Lease
    // in switchyard-system and waits for it, and the router serves the change. Its name (and so
    // its path) is its own: the router watches every namespace, where the rest of the suite has
    // left many a `hello` claiming /hello.
    let (v1, v2) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    cli.ok(&["deploy", "solo", "1.0.0", "--endpoint", &v1.url()])
        .await;
    cli.ok(&["deploy", "solo", "1.1.0", "--endpoint", &v2.url()])
        .await;
    let out = cli.ok(&["promote", "solo", "1.1.0"]).await;
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
    let listen = router.listen;
    let served = tokio::task::spawn_blocking(move || {
        HttpClient::new(listen)
            .get("localhost", "/solo", &[])
            .expect("a request through the router")
    })
    .await
    .expect("the request");
    assert_eq!(served.header("x-switchyard-served-by"), "solo@1.1.0");
    drop(router);
}
