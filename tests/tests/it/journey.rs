//! The whole journey, as a user would make it, on the real API server with the real binaries:
//! `switchyard install`, two `switchyard-router` replicas as processes, an external version on
//! a loopback upstream, a canary, a promotion and a rollback — with client load running across
//! all of it and not one request failing. And a managed deploy, checked through the objects the
//! API server holds and the router's `/routes` (its Service address is never dialled).

use switchyard_tests::cli as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::ResourceExt as _;
use support::{Cli, Out};
use switchyard_core::FunctionVersion;
use switchyard_tests::{
    binary, client, free_port, get, kubeconfig_path, namespace, wait_until_blocking, HttpClient,
    Upstream,
};

/// A deadline against hanging, not a timing assertion.
const READY: Duration = Duration::from_secs(30);

/// A `switchyard-router` process watching one namespace and keeping its Lease there.
struct Router {
    name: String,
    listen: SocketAddr,
    admin: SocketAddr,
    child: std::process::Child,
}

impl Router {
    fn start(ns: &str, name: &str) -> Router {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = std::process::Command::new(binary("switchyard-router"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .args(["--namespace", ns, "--lease-namespace", ns])
            .args(["--replica-name", name, "--grace-period", "0"])
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting switchyard-router");
        let router = Router {
            name: name.to_string(),
            listen,
            admin,
            child,
        };
        wait_until_blocking(READY, &format!("{name} /readyz"), || {
            get(admin, "/readyz").ok().filter(|r| r.status == 200)
        });
        router
    }

    /// `/routes` as JSON (`null` when it cannot be read).
    fn routes(&self) -> serde_json::Value {
        get(self.admin, "/routes")
            .ok()
            .and_then(|r| serde_json::from_str(&r.body).ok())
            .unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI for the journey's namespace. Routers keep their Leases in that namespace, so the
/// CLI counts the routers there only (`--router-namespace`): a router of another test run
/// leasing in switchyard-system must not be waited for.
async fn sy(cli: &Cli, args: &[&str]) -> Out {
    let mut all = vec!["--router-namespace", cli.ns.as_str()];
    all.extend_from_slice(args);
    cli.ok(&all).await
}

/// Who served each request, per router, and every failure, from threads that keep sending
/// requests to both routers until stopped.
#[derive(Default)]
struct Tally {
    /// `[router][version]`: 0 = 1.0.0, 1 = 1.1.0.
    served: [[AtomicU64; 2]; 2],
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    /// Counts one response; the version that served it (0 = 1.0.0, 1 = 1.1.0), unless it failed.
    fn record(
        &self,
        router: usize,
        result: std::io::Result<switchyard_tests::Response>,
    ) -> Option<usize> {
        match result {
            Ok(r) if r.status == 200 && !r.header("x-switchyard-served-by").is_empty() => {
                let v = match r.header("x-switchyard-served-by") {
                    "hello@1.0.0" => 0,
                    "hello@1.1.0" => 1,
                    other => {
                        self.fail(format!("router {router}: served by {other:?}"));
                        return None;
                    }
                };
                self.served[router][v].fetch_add(1, Ordering::Relaxed);
                self.ok.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Ok(r) => {
                self.fail(format!(
                    "router {router}: {} served-by {:?}: {}",
                    r.status,
                    r.header("x-switchyard-served-by"),
                    r.body
                ));
                None
            }
            Err(e) => {
                self.fail(format!("router {router}: {e}"));
                None
            }
        }
    }

    fn fail(&self, what: String) {
        let mut f = self.failures.lock().expect("tally");
        if f.len() < 20 {
            f.push(what);
        }
    }

    fn served(&self, router: usize) -> [u64; 2] {
        [
            self.served[router][0].load(Ordering::Relaxed),
            self.served[router][1].load(Ordering::Relaxed),
        ]
    }
}

/// Sends `n` requests to one router from a client of its own; returns how many each version
/// served of those (a failure is recorded in the tally and counted for neither).
fn measure(addr: SocketAddr, n: usize, router: usize, tally: &Tally) -> [u64; 2] {
    let mut http = HttpClient::new(addr);
    let mut served = [0; 2];
    for _ in 0..n {
        if let Some(v) = tally.record(router, http.get("localhost", "/hello", &[])) {
            served[v] += 1;
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_installs_canaries_promotes_and_rolls_back_with_no_failed_request() {
    let kube = client().await;
    let ns = namespace(&kube, "journey").await;
    let cli = Cli::new(&ns);

    let out = cli.ok(&["install"]).await;
    assert!(out.stdout.contains("switchyard installed:"), "{out:?}");

    let ns_ = ns.clone();
    let routers = tokio::task::spawn_blocking(move || {
        [
            Router::start(&ns_, "journey-router-a"),
            Router::start(&ns_, "journey-router-b"),
        ]
    })
    .await
    .expect("routers");
    support::wait_for_leases(&kube, &ns, &["journey-router-a", "journey-router-b"]).await;
    let v1 = Upstream::start("1.0.0");
    let v2 = Upstream::start("1.1.0");

    // The first version gets 100%, and the deploy waits until both routers serve it.
    let out = sy(&cli, &["deploy", "hello", "1.0.0", "--endpoint", &v1.url()]).await;
    assert!(out.stdout.contains("applied by 2/2 routers"), "{out:?}");

    // From here to the end: client load on both routers.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = [routers[0].listen, routers[1].listen];
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut http = [HttpClient::new(addrs[0]), HttpClient::new(addrs[1])];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = i % 2;
                    let _ = tally.record(r, http[r].get("localhost", "/hello", &[]));
                    i += 1;
                }
            })
        })
        .collect();
    let check = |n: usize| {
        let tally = tally.clone();
        async move {
            tokio::task::spawn_blocking(move || [0, 1].map(|r| measure(addrs[r], n, r, &tally)))
                .await
                .expect("measuring")
        }
    };

    for (r, served) in check(200).await.iter().enumerate() {
        assert_eq!(served, &[200, 0], "router {r} before the canary");
    }

    let out = sy(&cli, &["deploy", "hello", "1.1.0", "--endpoint", &v2.url()]).await;
    assert!(out.stdout.contains("has 0% of the traffic"), "{out:?}");
    let out = sy(
        &cli,
        &[
            "traffic", "hello", "1.1.0=10", "1.0.0=90", "--reason", "canary",
        ],
    )
    .await;
    assert!(
        out.stdout
            .contains("hello: 1.0.0=100% → 1.1.0=10% 1.0.0=90% · applied by 2/2 routers"),
        "{out:?}"
    );
    // 5,000 requests from one client on each router, in turn. The load threads send requests
    // to the same router meanwhile, and a router's weighted picks are exact over a run of its
    // own requests, not over any subset of them: so the share is taken over every request the
    // router served in the window (this client's 5,000 and the load's), as its users see it.
    let tally_ = tally.clone();
    let shares = tokio::task::spawn_blocking(move || {
        [0, 1].map(|r| {
            let before = tally_.served(r);
            let mine = measure(addrs[r], 5_000, r, &tally_);
            let after = tally_.served(r);
            let window = [after[0] - before[0], after[1] - before[1]];
            (mine, window)
        })
    })
    .await
    .expect("measuring the canary");
    for (r, (mine, window)) in shares.iter().enumerate() {
        let share = window[1] as f64 * 100.0 / (window[0] + window[1]) as f64;
        let mine_share = mine[1] as f64 * 100.0 / (mine[0] + mine[1]) as f64;
        eprintln!(
            "{}: 1.1.0 served {share:.2}% of {} requests in the window \
             ({mine_share:.2}% of this client's {})",
            routers[r].name,
            window[0] + window[1],
            mine[0] + mine[1]
        );
        assert_eq!(mine[0] + mine[1], 5_000, "{}", routers[r].name);
        assert!(
            (9.0..=11.0).contains(&share),
            "{}: 1.1.0 got {share:.2}% (window {window:?})",
            routers[r].name
        );
    }

    let out = sy(&cli, &["promote", "hello", "1.1.0"]).await;
    assert!(
        out.stdout.contains("→ 1.1.0=100% · applied by 2/2 routers"),
        "{out:?}"
    );
    for (r, served) in check(200).await.iter().enumerate() {
        assert_eq!(served, &[0, 200], "router {r} after the promotion");
    }

    let out = sy(&cli, &["rollback", "hello", "--reason", "errors"]).await;
    assert!(
        out.stdout
            .contains("hello: 1.1.0=100% → 1.0.0=100% · applied by 2/2 routers in"),
        "{out:?}"
    );
    eprintln!("rollback: {}", out.stdout.trim());
    for (r, served) in check(200).await.iter().enumerate() {
        assert_eq!(served, &[200, 0], "router {r} after the rollback");
    }

    let history = sy(&cli, &["history", "hello"]).await.stdout;
    let actions: Vec<&str> = history
        .lines()
        .skip(1)
        .filter_map(|l| {
            ["deploy", "traffic", "promote", "rollback"]
                .into_iter()
                .find(|a| l.split_whitespace().any(|w| w == *a))
        })
        .collect();
    assert_eq!(
        actions,
        ["deploy", "traffic", "promote", "rollback"],
        "{history}"
    );
    assert!(
        history.contains("canary") && history.contains("errors"),
        "{history}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("a load thread");
    }
    let failures = tally.failures.lock().expect("tally").clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    eprintln!(
        "load and checks: {ok} requests answered 200 with served-by, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(v1.hits() > 0 && v2.hits() > 0);
}

#[tokio::test]
async fn a_managed_deploy_creates_its_workload_and_routes_to_its_service_by_cluster_dns_name() {
    let kube = client().await;
    switchyard_tests::cluster::require_controllers(&kube).await;
    let ns = namespace(&kube, "journey-managed").await;
    let cli = Cli::new(&ns);
    let ns_ = ns.clone();
    let router = tokio::task::spawn_blocking(move || Router::start(&ns_, "journey-managed-router"))
        .await
        .expect("router");
    let image = format!("ghcr.io/acme/hello@sha256:{}", "0123456789abcdef".repeat(4));
    let out = sy(
        &cli,
        &[
            "deploy",
            "hello2",
            "1.0.0",
            "--image",
            &image,
            "--port",
            "8081",
            "--env",
            "A=1",
            "--timeout",
            "120s",
        ],
    )
    .await;
    assert!(
        out.stdout.contains("Deployment and Service hello2-1-0-0"),
        "{out:?}"
    );
    // The deploy waited for the controllers to make it ready (kwok plays the kubelet), and
    // for the router to take the new Function.
    assert!(out.stdout.contains("hello2@1.0.0 is ready"), "{out:?}");
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
    let pods: std::collections::BTreeSet<String> = switchyard_tests::cluster::pods(
        &kube,
        &ns,
        &switchyard_core::workload::selector("hello2", "1.0.0"),
    )
    .await
    .iter()
    .filter(|p| switchyard_tests::cluster::pod_ready(p))
    .map(|p| p.name_any())
    .collect();
    assert_eq!(pods.len(), 1, "{pods:?}");
    switchyard_tests::wait_until(
        switchyard_tests::cluster::CONTROLLERS,
        "the Service's endpoints to be its Pod",
        || {
            let (kube, ns, pods) = (kube.clone(), ns.clone(), pods.clone());
            async move {
                (switchyard_tests::cluster::endpoint_pods(&kube, &ns, "hello2-1-0-0").await == pods)
                    .then_some(())
            }
        },
    )
    .await;

    let fv = Api::<FunctionVersion>::namespaced(kube.clone(), &ns)
        .get("hello2-1-0-0")
        .await
        .expect("the FunctionVersion");
    let d = Api::<Deployment>::namespaced(kube.clone(), &ns)
        .get("hello2-1-0-0")
        .await
        .expect("the Deployment");
    let s = Api::<Service>::namespaced(kube.clone(), &ns)
        .get("hello2-1-0-0")
        .await
        .expect("the Service");
    for (what, labels, owners) in [
        ("Deployment", d.labels(), d.owner_references()),
        ("Service", s.labels(), s.owner_references()),
    ] {
        assert_eq!(
            labels.get("switchyard.dev/function").map(String::as_str),
            Some("hello2"),
            "{what}"
        );
        assert_eq!(
            labels.get("switchyard.dev/version").map(String::as_str),
            Some("1.0.0"),
            "{what}"
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("switchyard"),
            "{what}"
        );
        assert_eq!(owners.len(), 1, "{what}");
        assert_eq!(owners[0].kind, "FunctionVersion", "{what}");
        assert_eq!(owners[0].name, "hello2-1-0-0", "{what}");
        assert_eq!(Some(owners[0].uid.clone()), fv.uid(), "{what}");
        assert_eq!(owners[0].controller, Some(true), "{what}");
    }
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod template");
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(image.as_str()));
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8081]);
    let env: Vec<(String, Option<String>)> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(env, [("A".to_string(), Some("1".to_string()))]);
    let sports = s
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert_eq!(sports.len(), 1);
    assert_eq!(sports[0].port, 80);
    assert_eq!(
        sports[0].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8081))
    );

    // The router routes to the Service by its cluster DNS name; nothing here dials it.
    let host = format!("hello2-1-0-0.{ns}.svc.cluster.local");
    let upstream = tokio::task::spawn_blocking(move || {
        wait_until_blocking(READY, "the router's /routes to hello2", || {
            let routes = router.routes();
            let route = routes["routes"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "hello2")?
                .clone();
            Some(route["backends"][0]["upstream"].clone())
        })
    })
    .await
    .expect("routes");
    assert_eq!(upstream["host"], serde_json::json!(host), "{upstream}");
    assert_eq!(upstream["port"], serde_json::json!(80), "{upstream}");
    assert_eq!(upstream["managed"], serde_json::json!(true), "{upstream}");
}
