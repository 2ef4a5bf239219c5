//! The `switchyard` binary against the real API server: every command, its safety rules and
//! its exit codes, a fresh namespace per test. Traffic changes run with `--no-wait` here (no
//! router runs); waiting for routers is in `cli_routers.rs`.

use switchyard_tests::cli as support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use support::{function, Cli};
use switchyard_core::{FunctionVersion, TrafficTarget};
use switchyard_tests::cluster::{require_controllers, SimulatedNode};
use switchyard_tests::{client, namespace, viewer_kubeconfig_path};

const EP1: &str = "http://127.0.0.1:9001";
const EP2: &str = "http://127.0.0.1:9002";
const EP3: &str = "http://127.0.0.1:9003";

async fn setup(prefix: &str) -> (Client, Cli) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    (client, Cli::new(&ns))
}

/// hello with 1.0.0 (100%), 1.1.0 and 1.2.0, all external and so always ready.
async fn three_versions(cli: &Cli) {
    for (v, ep) in [("1.0.0", EP1), ("1.1.0", EP2), ("1.2.0", EP3)] {
        cli.ok(&["deploy", "hello", v, "--endpoint", ep, "--no-wait"])
            .await;
    }
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

fn w(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    let mut s: Vec<(String, u32)> = pairs.iter().map(|(v, p)| (v.to_string(), *p)).collect();
    s.sort();
    s
}

#[tokio::test]
async fn a_managed_deploy_creates_a_labelled_deployment_and_service_owned_by_the_version() {
    let (client, cli) = setup("cli-managed").await;
    let out = cli
        .ok(&[
            "deploy",
            "hello",
            "1.0.0",
            "--image",
            "ghcr.io/acme/hello:1",
            "--port",
            "9090",
            "--env",
            "GREETING=hi",
            "--replicas",
            "2",
            "--cpu",
            "100m",
            "--memory",
            "64Mi",
            "--args",
            "--serve",
            "--args",
            "-v",
            "--no-wait",
        ])
        .await;
    assert!(out.stderr.contains("not pinned by digest"), "{out:?}");
    let fv = Api::<FunctionVersion>::namespaced(client.clone(), &cli.ns)
        .get("hello-1-0-0")
        .await
        .expect("FunctionVersion");
    let uid = fv.metadata.uid.clone().expect("uid");
    let d = Api::<Deployment>::namespaced(client.clone(), &cli.ns)
        .get("hello-1-0-0")
        .await
        .expect("Deployment");
    let s = Api::<Service>::namespaced(client.clone(), &cli.ns)
        .get("hello-1-0-0")
        .await
        .expect("Service");
    for meta in [&d.metadata, &s.metadata] {
        let labels = meta.labels.clone().expect("labels");
        assert_eq!(labels["switchyard.dev/function"], "hello");
        assert_eq!(labels["switchyard.dev/version"], "1.0.0");
        assert_eq!(labels["app.kubernetes.io/name"], "hello");
        assert_eq!(labels["app.kubernetes.io/instance"], "hello-1-0-0");
        assert_eq!(labels["app.kubernetes.io/version"], "1.0.0");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "switchyard");
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("FunctionVersion", uid.as_str(), Some(true))
        );
    }
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.expect("pod").containers[0];
    assert_eq!(container.image.as_deref(), Some("ghcr.io/acme/hello:1"));
    assert_eq!(
        container.ports.as_ref().expect("ports")[0].container_port,
        9090
    );
    // --env, --args (in order), and --cpu/--memory as equal requests and limits.
    let env: Vec<(String, Option<String>)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(env, [("GREETING".to_string(), Some("hi".to_string()))]);
    assert_eq!(
        container.args.as_deref(),
        Some(&["--serve".to_string(), "-v".to_string()][..])
    );
    let resources = container.resources.as_ref().expect("resources");
    for quantities in [&resources.requests, &resources.limits] {
        let q = quantities.as_ref().expect("requests and limits");
        assert_eq!(
            (q["cpu"].0.as_str(), q["memory"].0.as_str()),
            ("100m", "64Mi"),
            "{resources:?}"
        );
    }
    let port = &s.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(port.port, 80);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9090))
    );
    // The first version takes all the traffic.
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(split(&f.spec.traffic), w(&[("1.0.0", 1_000_000)]));
}

#[tokio::test]
async fn redeploying_the_same_spec_is_a_no_op_and_a_different_spec_exits_3() {
    let (client, cli) = setup("cli-immutable").await;
    cli.ok(&["deploy", "hello", "1.0.0", "--endpoint", EP1, "--no-wait"])
        .await;
    let before = function(&client, &cli.ns, "hello")
        .await
        .metadata
        .resource_version;
    let again = cli
        .ok(&["deploy", "hello", "1.0.0", "--endpoint", EP1, "--no-wait"])
        .await;
    assert!(
        again.stdout.contains("already deployed with this spec"),
        "{again:?}"
    );
    assert_eq!(
        function(&client, &cli.ns, "hello")
            .await
            .metadata
            .resource_version,
        before
    );
    let other = cli
        .run(&["deploy", "hello", "1.0.0", "--endpoint", EP2, "--no-wait"])
        .await
        .expect(3);
    assert!(other.stderr.starts_with("error: "), "{other:?}");
    assert!(
        other
            .stderr
            .contains("versions are immutable, deploy a new version"),
        "{other:?}"
    );
    assert_eq!(other.stderr.lines().count(), 1, "{other:?}");
}

/// More memory than any of the test control plane's simulated Nodes has (256Gi): the Pod of a
/// version asking for it stays Pending until a test adds a [`SimulatedNode`] with room.
const TOO_BIG: &str = "1Ti";

/// A simulated Node with room for one [`TOO_BIG`] Pod, named after the test's namespace.
async fn room(client: &Client, cli: &Cli) -> SimulatedNode {
    SimulatedNode::add(client, &format!("big-{}", cli.ns), "32", "2Ti").await
}

#[tokio::test]
async fn traffic_to_an_unready_version_exits_3_until_its_deployment_is_ready() {
    let (client, cli) = setup("cli-unready").await;
    require_controllers(&client).await;
    cli.ok(&["deploy", "hello", "1.0.0", "--endpoint", EP1, "--no-wait"])
        .await;
    cli.ok(&[
        "deploy",
        "hello",
        "1.1.0",
        "--image",
        "ghcr.io/acme/hello@sha256:abc",
        "--memory",
        TOO_BIG,
        "--no-wait",
    ])
    .await;
    let refused = cli
        .run(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await
        .expect(3);
    assert!(
        refused.stderr.contains("version 1.1.0 is not ready"),
        "{refused:?}"
    );
    let versions = cli.ok(&["versions", "hello"]).await;
    assert!(versions.stdout.contains("0/1"), "{versions:?}");
    // Capacity arrives: the scheduler places the Pod, kwok runs it, the Deployment's
    // controller reports it available, and the version may take traffic.
    let node = room(&client, &cli).await;
    cli.ok(&[
        "deploy",
        "hello",
        "1.1.0",
        "--image",
        "ghcr.io/acme/hello@sha256:abc",
        "--memory",
        TOO_BIG,
        "--timeout",
        "120s",
    ])
    .await;
    cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await;
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(
        split(&f.spec.traffic),
        w(&[("1.0.0", 900_000), ("1.1.0", 100_000)])
    );
    node.remove().await;
}

#[tokio::test]
async fn deploy_waits_for_readiness_and_times_out_with_exit_4() {
    let (client, cli) = setup("cli-ready-wait").await;
    require_controllers(&client).await;
    cli.ok(&["deploy", "hello", "1.0.0", "--endpoint", EP1, "--no-wait"])
        .await;
    let out = cli
        .run(&[
            "deploy",
            "hello",
            "1.1.0",
            "--image",
            "img@sha256:1",
            "--memory",
            TOO_BIG,
            "--timeout",
            "1s",
        ])
        .await
        .expect(4);
    assert!(
        out.stderr.contains("waiting for hello@1.1.0 to be ready"),
        "{out:?}"
    );
    // The wait ended; the rollout did not: once there is room, the version becomes ready.
    let node = room(&client, &cli).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &cli.ns);
    switchyard_tests::wait_until(
        switchyard_tests::cluster::CONTROLLERS,
        "Deployment hello-1-1-0 rolled out",
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get_opt("hello-1-1-0").await.ok().flatten();
                switchyard_core::workload::readiness("hello-1-1-0", d.as_ref())
                    .ready
                    .then_some(())
            }
        },
    )
    .await;
    // Re-running the same deploy is idempotent, and the version now takes its share.
    let out = cli
        .ok(&[
            "deploy",
            "hello",
            "1.1.0",
            "--image",
            "img@sha256:1",
            "--memory",
            TOO_BIG,
            "--traffic",
            "25",
            "--no-wait",
        ])
        .await;
    assert!(
        out.stdout.contains("already deployed with this spec"),
        "{out:?}"
    );
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(
        split(&f.spec.traffic),
        w(&[("1.0.0", 750_000), ("1.1.0", 250_000)])
    );
    node.remove().await;
    // A deploy that waits returns once the controllers have made the version ready.
    let out = cli
        .run(&[
            "deploy",
            "hello",
            "1.2.0",
            "--image",
            "img@sha256:2",
            "--timeout",
            "120s",
        ])
        .await
        .expect(0);
    assert!(out.stdout.contains("hello@1.2.0 is ready"), "{out:?}");
    let d = deployments
        .get("hello-1-2-0")
        .await
        .expect("the Deployment");
    assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(1));
}

#[tokio::test]
async fn totals_other_than_100_exit_2_naming_the_total() {
    let (_client, cli) = setup("cli-totals").await;
    three_versions(&cli).await;
    let out = cli
        .run(&["traffic", "hello", "1.1.0=10", "1.0.0=80", "--no-wait"])
        .await
        .expect(2);
    assert!(out.stderr.contains("weights add up to 90%"), "{out:?}");
    let out = cli
        .run(&["traffic", "hello", "1.1.0=60", "1.0.0=60.5", "--no-wait"])
        .await
        .expect(2);
    assert!(out.stderr.contains("120.5%"), "{out:?}");
    let out = cli
        .run(&["traffic", "hello", "9.9.9=100", "--no-wait"])
        .await
        .expect(2);
    assert!(out.stderr.contains("9.9.9"), "{out:?}");
}

#[tokio::test]
async fn every_traffic_command_records_history_and_rollback_returns_to_stable_from_mid_canary() {
    let (client, cli) = setup("cli-rollback").await;
    three_versions(&cli).await;
    // Writes touch the spec only: a label someone put on the Function survives them.
    let label = serde_json::json!({"metadata": {"labels": {"team": "payments"}}});
    Api::<switchyard_core::Function>::namespaced(client.clone(), &cli.ns)
        .patch(
            "hello",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await
        .expect("labelling the Function");
    cli.ok(&["promote", "hello", "1.1.0", "--no-wait"]).await;
    // A canary of 1.2.0 in the middle of its ramp.
    cli.ok(&[
        "traffic",
        "hello",
        "1.2.0=5",
        "1.1.0=95",
        "--no-wait",
        "--reason",
        "canary",
    ])
    .await;
    cli.ok(&["traffic", "hello", "@latest=30", "1.1.0=70", "--no-wait"])
        .await;
    let out = cli
        .ok(&["rollback", "hello", "--no-wait", "--reason", "errors up"])
        .await;
    assert!(
        out.stdout.contains("1.2.0=30% 1.1.0=70% → 1.1.0=100%"),
        "{out:?}"
    );
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(split(&f.spec.traffic), w(&[("1.1.0", 1_000_000)]));
    // Rolling back again changes nothing: it never returns to the version it left.
    let out = cli.ok(&["rollback", "hello", "--no-wait"]).await;
    assert!(
        out.stdout
            .contains("already rolled back, 100% on 1.1.0 (rolled back from 1.2.0)"),
        "{out:?}"
    );
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(split(&f.spec.traffic), w(&[("1.1.0", 1_000_000)]));
    // Going back to the version rolled back from is a safety refusal without --force.
    let out = cli
        .run(&["rollback", "hello", "--to", "1.2.0", "--no-wait"])
        .await
        .expect(3);
    assert!(out.stderr.contains("needs --force"), "{out:?}");
    cli.ok(&["rollback", "hello", "--to", "1.2.0", "--force", "--no-wait"])
        .await;
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(split(&f.spec.traffic), w(&[("1.2.0", 1_000_000)]));
    let history: serde_json::Value =
        serde_json::from_str(&cli.ok(&["history", "hello", "-o", "json"]).await.stdout)
            .expect("json");
    let actions: Vec<&str> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        ["deploy", "added", "added", "promote", "traffic", "traffic", "rollback", "rollback"]
    );
    // The first rollback (after the two 0% deploys, the promote and the two shifts).
    assert_eq!(history[6]["reason"], "errors up");
    assert_eq!(history[6]["actor"], "admin");
    let f = function(&client, &cli.ns, "hello").await;
    assert_eq!(f.metadata.labels.expect("labels")["team"], "payments");
    let table = cli.ok(&["history", "hello"]).await.stdout;
    assert!(
        table.contains("errors up") && table.contains("ACTOR"),
        "{table}"
    );
}

#[tokio::test]
async fn undo_after_three_shifts_walks_back_one_step_at_a_time() {
    let (client, cli) = setup("cli-undo").await;
    three_versions(&cli).await;
    cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await;
    cli.ok(&["traffic", "hello", "1.1.0=50", "1.0.0=50", "--no-wait"])
        .await;
    cli.ok(&["traffic", "hello", "1.2.0=20", "1.1.0=80", "--no-wait"])
        .await;
    let steps = [
        w(&[("1.0.0", 500_000), ("1.1.0", 500_000)]),
        w(&[("1.0.0", 900_000), ("1.1.0", 100_000)]),
        w(&[("1.0.0", 1_000_000)]),
    ];
    for expected in steps {
        cli.ok(&["undo", "hello", "--no-wait"]).await;
        let f = function(&client, &cli.ns, "hello").await;
        assert_eq!(split(&f.spec.traffic), expected);
    }
    let out = cli.run(&["undo", "hello", "--no-wait"]).await.expect(3);
    assert!(out.stderr.contains("nothing to undo"), "{out:?}");
}

#[tokio::test]
async fn dry_run_prints_a_diff_and_leaves_the_resource_version_unchanged() {
    let (client, cli) = setup("cli-dry-run").await;
    three_versions(&cli).await;
    cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await;
    let rv = || async {
        function(&client, &cli.ns, "hello")
            .await
            .metadata
            .resource_version
    };
    let before = rv().await;
    let fvs = Api::<FunctionVersion>::namespaced(client.clone(), &cli.ns);
    let count = || async {
        fvs.list(&Default::default())
            .await
            .expect("list")
            .items
            .len()
    };
    let versions_before = count().await;
    for args in [
        vec!["traffic", "hello", "1.2.0=50", "1.0.0=50"],
        vec!["promote", "hello", "1.2.0"],
        vec!["rollback", "hello"],
        vec!["undo", "hello"],
        vec![
            "deploy",
            "hello",
            "1.3.0",
            "--endpoint",
            EP1,
            "--traffic",
            "10",
        ],
        vec!["deploy", "hello", "1.4.0", "--image", "img@sha256:1"],
        vec!["delete", "hello", "1.2.0", "--force"],
        vec!["gc", "hello", "--keep", "0", "--force"],
    ] {
        let mut args = args.clone();
        args.push("--dry-run");
        let out = cli.ok(&args).await;
        assert!(
            out.stdout.contains("dry run: nothing was written"),
            "{args:?}: {out:?}"
        );
        assert_eq!(rv().await, before, "{args:?}");
        assert_eq!(count().await, versions_before, "{args:?}");
    }
    let out = cli.ok(&["rollback", "hello", "--dry-run"]).await;
    assert!(
        out.stdout.contains("- traffic: 1.1.0=10% 1.0.0=90%"),
        "{out:?}"
    );
    assert!(out.stdout.contains("+ traffic: 1.0.0=100%"), "{out:?}");
}

#[tokio::test]
async fn delete_refuses_weighted_versions_and_gc_keeps_the_rollback_window() {
    let (client, cli) = setup("cli-delete").await;
    three_versions(&cli).await;
    cli.ok(&[
        "deploy",
        "hello",
        "1.3.0",
        "--image",
        "img@sha256:3",
        "--no-wait",
    ])
    .await;
    cli.ok(&["traffic", "hello", "1.2.0=10", "1.0.0=90", "--no-wait"])
        .await;
    let out = cli
        .run(&["delete", "hello", "1.0.0", "--force"])
        .await
        .expect(3);
    assert!(out.stderr.contains("has 90% of the traffic"), "{out:?}");
    cli.ok(&["promote", "hello", "1.2.0", "--no-wait"]).await;
    // 1.0.0 was the stable version until now: a rollback target.
    let out = cli.run(&["delete", "hello", "1.0.0"]).await.expect(3);
    assert!(out.stderr.contains("rollback target"), "{out:?}");
    cli.ok(&["delete", "hello", "1.1.0"]).await;
    cli.ok(&["delete", "hello", "1.3.0", "--force"]).await;
    let fvs = Api::<FunctionVersion>::namespaced(client.clone(), &cli.ns);
    assert!(fvs.get_opt("hello-1-1-0").await.expect("get").is_none());
    assert!(Api::<Deployment>::namespaced(client.clone(), &cli.ns)
        .get_opt("hello-1-3-0")
        .await
        .expect("get")
        .is_none());
    assert!(Api::<Service>::namespaced(client.clone(), &cli.ns)
        .get_opt("hello-1-3-0")
        .await
        .expect("get")
        .is_none());
    let out = cli.ok(&["gc", "hello", "--keep", "1"]).await;
    assert!(out.stdout.contains("nothing to collect"), "{out:?}");
    cli.ok(&["gc", "hello", "--keep", "1", "--force"]).await;
    let left: Vec<String> = fvs
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|v| v.spec.version)
        .collect();
    assert_eq!(left, ["1.2.0"]);
}

#[tokio::test]
async fn reads_work_in_every_output_format() {
    let (_client, cli) = setup("cli-reads").await;
    three_versions(&cli).await;
    cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await;
    for cmd in [
        vec!["versions", "hello"],
        vec!["status", "hello"],
        vec!["history", "hello"],
        vec!["list"],
    ] {
        let table = cli.ok(&cmd).await.stdout;
        assert!(!table.is_empty(), "{cmd:?}");
        let mut json_args = cmd.clone();
        json_args.extend(["-o", "json"]);
        let json: serde_json::Value =
            serde_json::from_str(&cli.ok(&json_args).await.stdout).expect("json parses");
        let mut yaml_args = cmd.clone();
        yaml_args.extend(["-o", "yaml"]);
        let yaml: serde_json::Value =
            serde_yaml::from_str(&cli.ok(&yaml_args).await.stdout).expect("yaml parses");
        assert_eq!(json, yaml, "{cmd:?}");
    }
    let versions: serde_json::Value =
        serde_json::from_str(&cli.ok(&["versions", "hello", "-o", "json"]).await.stdout)
            .expect("json");
    let weights: Vec<(String, u64)> = versions
        .as_array()
        .expect("array")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().expect("v").to_string(),
                v["weight"].as_u64().expect("w"),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [
            ("1.2.0".to_string(), 0),
            ("1.1.0".to_string(), 100_000),
            ("1.0.0".to_string(), 900_000)
        ]
    );
    let status = cli.ok(&["status", "hello"]).await.stdout;
    assert!(
        status.contains("Traffic:     1.1.0=10% 1.0.0=90%"),
        "{status}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&cli.ok(&["list", "-o", "json"]).await.stdout).expect("json");
    assert_eq!(list[0]["name"], "hello");

    // Each table says row for row what -o json says.
    let rows = |cmd: &[&str]| {
        let cli = cli.clone();
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let table = support::table_rows(&cli.ok(&args).await.stdout);
            let mut json_args = args.clone();
            json_args.extend(["-o", "json"]);
            let json: Vec<serde_json::Value> =
                serde_json::from_str(&cli.ok(&json_args).await.stdout).expect("a JSON array");
            assert_eq!(
                table.len(),
                json.len(),
                "{cmd:?}: {table:?} against {json:?}"
            );
            table.into_iter().zip(json).collect::<Vec<_>>()
        }
    };
    let text = |v: &serde_json::Value| v.as_str().expect("a string").to_string();
    for (row, v) in rows(&["versions", "hello"]).await {
        assert_eq!(row["VERSION"], text(&v["version"]), "{row:?}");
        assert_eq!(row["READY"], if v["ready"] == true { "yes" } else { "no" });
        assert_eq!(row["WEIGHT"], text(&v["percent"]), "{row:?}");
        for tag in v["tags"].as_array().expect("tags") {
            assert!(row["TAGS"].split(',').any(|t| t == text(tag)), "{row:?}");
        }
    }
    for (i, (row, h)) in rows(&["history", "hello"]).await.into_iter().enumerate() {
        // History's JSON gives a split as the same text the table shows, plus the weights.
        assert_eq!(row["#"], (i + 1).to_string());
        assert_eq!(row["TIME"], text(&h["time"]));
        assert_eq!(row["ACTOR"], text(&h["actor"]));
        // An entry that moves no traffic names its versions beside the action.
        let mut action = text(&h["action"]);
        if let Some(vs) = h["versions"].as_array() {
            let vs: Vec<String> = vs.iter().map(text).collect();
            action = format!("{action} {}", vs.join(","));
        }
        assert_eq!(row["ACTION"], action, "{row:?}");
        assert_eq!(row["TRAFFIC"], text(&h["traffic"]), "{row:?}");
        let weights: Vec<switchyard_core::TrafficTarget> =
            serde_json::from_value(h["weights"].clone()).expect("weights");
        assert_eq!(row["TRAFFIC"], switchyard_core::plan::describe(&weights));
        assert_eq!(row["REASON"], h["reason"].as_str().unwrap_or_default());
    }
    for (row, f) in rows(&["list"]).await {
        assert_eq!(row["NAME"], text(&f["name"]));
        assert_eq!(row["TRAFFIC"], text(&f["traffic"]), "{row:?}");
        assert_eq!(row["STABLE"], f["stable"].as_str().unwrap_or("-"));
        assert_eq!(row["ROUTE"], text(&f["route"]));
    }
    let missing = cli.run(&["status", "nope"]).await.expect(2);
    assert!(
        missing.stderr.contains("function nope not found"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_user_allowed_only_to_read_gets_one_clear_forbidden_line() {
    let (client, cli) = setup("cli-rbac").await;
    three_versions(&cli).await;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("read".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![
                "switchyard.dev".into(),
                "apps".into(),
                "coordination.k8s.io".into(),
            ]),
            resources: Some(vec![
                "functions".into(),
                "functionversions".into(),
                "deployments".into(),
                "leases".into(),
            ]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), &cli.ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("read".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "viewer".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), &cli.ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let viewer = Cli::with_kubeconfig(&cli.ns, &viewer_kubeconfig_path());
    // RBAC changes reach the authorizer's cache shortly after they are written.
    let reads = switchyard_tests::wait_until(
        std::time::Duration::from_secs(10),
        "viewer can read",
        || {
            let viewer = viewer.clone();
            async move {
                let out = viewer.run(&["versions", "hello"]).await;
                (out.code == 0).then_some(out)
            }
        },
    )
    .await;
    assert!(reads.stdout.contains("1.0.0"), "{reads:?}");
    let out = viewer
        .run(&["promote", "hello", "1.2.0", "--no-wait"])
        .await
        .expect(1);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.starts_with("error: writing function hello"),
        "{out:?}"
    );
    assert!(out.stderr.contains("forbidden"), "{out:?}");
    assert!(out.stderr.contains("viewer"), "{out:?}");
}

#[tokio::test]
async fn status_watch_prints_the_status_again_when_the_traffic_changes() {
    use tokio::io::AsyncBufReadExt as _;
    let (_client, cli) = setup("cli-watch").await;
    three_versions(&cli).await;
    let mut child = tokio::process::Command::new(switchyard_tests::binary("switchyard"))
        .arg("--kubeconfig")
        .arg(switchyard_tests::kubeconfig_path())
        .args(["-n", &cli.ns, "status", "hello", "--watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("status --watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen_first = false;
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Traffic:") && !seen_first {
                seen_first = true;
                cli.ok(&["traffic", "hello", "1.2.0=10", "1.0.0=90", "--no-wait"])
                    .await;
            }
            if line.contains("Traffic:     1.2.0=10% 1.0.0=90%") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "status --watch never showed the new split");
    let _ = child.kill().await;
}

#[tokio::test]
async fn nothing_to_change_exits_0_and_writes_nothing_and_nothing_to_roll_back_exits_3() {
    let (client, cli) = setup("cli-noop").await;
    three_versions(&cli).await;
    let version = |f: switchyard_core::Function| f.metadata.resource_version.expect("a version");
    let before = version(function(&client, &cli.ns, "hello").await);
    for cmd in [
        vec!["traffic", "hello", "1.0.0=100"],
        vec!["promote", "hello", "1.0.0"],
        vec!["rollback", "hello", "--to", "1.0.0"],
    ] {
        // No --no-wait: a command that writes nothing has nothing to wait for either.
        let out = cli.ok(&cmd).await;
        assert_eq!(
            out.stdout.trim_end(),
            "hello: already 1.0.0=100%, nothing to change",
            "{cmd:?}: {out:?}"
        );
        assert_eq!(
            version(function(&client, &cli.ns, "hello").await),
            before,
            "{cmd:?} wrote"
        );
    }
    // 1.0.0 is the only version ever to hold 100%, and holds it now: no rollback target.
    let out = cli.run(&["rollback", "hello", "--no-wait"]).await.expect(3);
    assert_eq!(
        out.stderr.trim_end(),
        "error: no stable version to roll back to: no version other than the current one has \
         held 100% of function hello (use --to VERSION)",
        "{out:?}"
    );
    assert_eq!(version(function(&client, &cli.ns, "hello").await), before);
}

#[tokio::test]
async fn context_picks_the_kubeconfig_context_and_its_namespace_is_the_default() {
    let (_client, cli) = setup("cli-context").await;
    three_versions(&cli).await;
    // The harness kubeconfig plus a context "sy-test" whose namespace is this test's.
    let mut config: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(switchyard_tests::kubeconfig_path()).expect("the kubeconfig"),
    )
    .expect("kubeconfig YAML");
    let current = config["current-context"]
        .as_str()
        .expect("a current context")
        .to_string();
    let mut context = config["contexts"]
        .as_sequence()
        .expect("contexts")
        .iter()
        .find(|c| c["name"].as_str() == Some(current.as_str()))
        .expect("the current context")
        .clone();
    context["name"] = "sy-test".into();
    context["context"]["namespace"] = cli.ns.clone().into();
    config["contexts"]
        .as_sequence_mut()
        .expect("contexts")
        .push(context);
    let dir = std::env::temp_dir().join(format!("{}-kubeconfig", cli.ns));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("config");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("writing it");

    let run = |context: Option<&'static str>| {
        let path = path.clone();
        async move {
            let mut cmd = tokio::process::Command::new(switchyard_tests::binary("switchyard"));
            cmd.arg("--kubeconfig").arg(&path).env_remove("KUBECONFIG");
            if let Some(c) = context {
                cmd.args(["--context", c]);
            }
            cmd.args(["versions", "hello", "-o", "json"])
                .output()
                .await
                .expect("running switchyard")
        }
    };
    // No -n: the context's namespace is where hello lives.
    let out = run(Some("sy-test")).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let versions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = versions
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v["version"].as_str().expect("a version"))
        .collect();
    assert_eq!(names, ["1.2.0", "1.1.0", "1.0.0"]);
    // The current context has no namespace of this test's: hello is not found there.
    let out = run(None).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&cli.ns),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
