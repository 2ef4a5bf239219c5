//! Issue 14's behaviours of protocol v2 with real routers (docs/protocol.md): a Function that
//! names a version not seen yet is pending, then served; a refusal ends a CLI wait at once with
//! the replica and the reason; a replica killed mid-wait is dropped when its Lease expires; a
//! new replica with many Functions is counted by a wait after its first report.

use serde_json::json;
use switchyard_core::report::ExceptionState;
use switchyard_tests::cli::Cli;
use switchyard_tests::router::*;
use switchyard_tests::{client, namespace, wait_until, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_created_before_its_version_is_pending_then_serves() {
    let client = client().await;
    let ns = namespace(&client, "pending").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "other", "1.0.0", &v1.url()).await;
    apply_function(&client, &ns, "other", &[("1.0.0", 1_000_000)], json!({})).await;
    let router = Router::start(&ns, "rpend-0");

    // The Function arrives first, naming a version the router has not seen.
    let g = apply_function(&client, &ns, "early", &[("1.0.0", 1_000_000)], json!({})).await;
    let exception = wait_until(WAIT, "early reported pending", || async {
        let report = report_of(&client, &ns, "rpend-0").await?;
        report.exceptions.into_iter().find(|e| e.name == "early")
    })
    .await;
    assert_eq!(exception.state, ExceptionState::Pending);
    assert_eq!(exception.generation, g);
    assert_eq!(exception.reason, "waiting for FunctionVersion early-1-0-0");
    // Pending is not a refusal: nothing counts it as rejected.
    assert!(router
        .metrics()
        .contains("switchyard_router_rejected_functions 0"));
    let status = Cli::new(&ns).ok(&["status", "early", "-o", "json"]).await;
    let view: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(view["routers"][0]["state"], "pending", "{view}");
    assert_eq!(
        view["routers"][0]["reason"], "waiting for FunctionVersion early-1-0-0",
        "{view}"
    );

    // The version arrives: served, and no longer listed.
    apply_version(&client, &ns, "early", "1.0.0", &v1.url()).await;
    let seen = wait_ack(&client, &ns, "early", "rpend-0", g).await;
    assert_eq!(seen.rejected, None);
    let report = report_of(&client, &ns, "rpend-0").await.expect("a report");
    assert!(report.exceptions.is_empty(), "{:?}", report.exceptions);
    let counts = count_served(router.listen, "localhost", "/early", 5);
    assert_eq!(counts.get("early@1.0.0"), Some(&5), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_function_ends_the_wait_at_once_with_the_replica_and_the_reason() {
    let client = client().await;
    let ns = namespace(&client, "refused").await;
    let v1 = Upstream::start("v1");
    // Function "squatter" serves the path /taken, which a new function "taken" would claim.
    apply_version(&client, &ns, "squatter", "1.0.0", &v1.url()).await;
    apply_function(
        &client,
        &ns,
        "squatter",
        &[("1.0.0", 1_000_000)],
        json!({"pathPrefix": "/taken"}),
    )
    .await;
    let _router = Router::start(&ns, "rref-0");

    // A timeout far beyond the test's: exit 4 would mean the refusal was waited out.
    let out = Cli::new(&ns)
        .run(&[
            "deploy",
            "taken",
            "1.0.0",
            "--endpoint",
            &v1.url(),
            "--timeout",
            "10m",
        ])
        .await
        .expect(1);
    assert!(
        out.stderr.contains(&format!(
            "router replica rref-0 rejected generation 1 of function taken: conflicts with function {ns}/squatter"
        )),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_wait_is_dropped_once_its_lease_expires() {
    let client = client().await;
    let ns = namespace(&client, "rdie").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "hello", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "hello", "1.1.0", &v1.url()).await;
    apply_function(&client, &ns, "hello", &[("1.0.0", 1_000_000)], json!({})).await;
    let _alive = Router::start(&ns, "rdie-0");
    let mut doomed = Router::start(&ns, "rdie-1");
    // Killed: its Lease (10 s) stays fresh a while, so the wait starts by counting it.
    doomed.kill();
    let out = Cli::new(&ns)
        .run(&[
            "traffic",
            "hello",
            "1.1.0=10",
            "1.0.0=90",
            "--timeout",
            "10m",
        ])
        .await
        .expect(0);
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
    assert!(
        out.stderr
            .contains("router replica rdie-1 left while waiting"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_with_many_functions_is_counted_after_its_first_report() {
    const N: usize = 200;
    let client = client().await;
    let ns = namespace(&client, "rmany").await;
    let v1 = Upstream::start("v1");
    for i in 0..N {
        let name = format!("f{i}");
        apply_version(&client, &ns, &name, "1.0.0", &v1.url()).await;
        apply_function(&client, &ns, &name, &[("1.0.0", 1_000_000)], json!({})).await;
    }
    apply_version(&client, &ns, "f0", "1.1.0", &v1.url()).await;
    // Ready means a wait counts it: its first report covers every Function.
    let _router = Router::start(&ns, "rmany-0");
    let report = report_of(&client, &ns, "rmany-0").await.expect("a report");
    assert_eq!(report.table.map(|t| t.routes), Some(N as u64));
    assert!(report.exceptions.is_empty());
    let cli = Cli::new(&ns);
    for name in ["f0", "f199"] {
        let status = cli.ok(&["status", name, "-o", "json"]).await;
        let view: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
        assert_eq!(view["routers"][0]["state"], "applied", "{name}: {view}");
    }
    let out = cli
        .ok(&["traffic", "f0", "1.1.0=10", "1.0.0=90", "--timeout", "10m"])
        .await;
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_replica_renews_its_lease_but_writes_no_report() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::Api;
    use switchyard_core::report::RouterReport;
    let client = client().await;
    let ns = namespace(&client, "ridle").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "quiet", "1.0.0", &v1.url()).await;
    apply_function(&client, &ns, "quiet", &[("1.0.0", 1_000_000)], json!({})).await;
    let _router = Router::start_with(
        &ns,
        "ridle-0",
        RouterOpts {
            lease_duration: 3,
            ..RouterOpts::default()
        },
    );
    let reports: Api<RouterReport> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let renewed = || async {
        leases
            .get("ridle-0")
            .await
            .ok()?
            .spec?
            .renew_time
            .map(|t| t.0)
    };
    let version = || async { reports.get("ridle-0").await.ok()?.metadata.resource_version };
    let before = version().await.expect("a report once ready");
    // Three renewals of the Lease (a second apart each): the report has nothing new to say.
    let mut last = renewed().await.expect("a Lease");
    for _ in 0..3 {
        last = wait_until(WAIT, "a Lease renewal", || async {
            renewed().await.filter(|t| *t > last)
        })
        .await;
    }
    assert_eq!(
        version().await,
        Some(before),
        "no traffic, no change: no write"
    );
}
