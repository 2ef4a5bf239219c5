//! The router's life around the API server and the process: an API server outage mid-test, a
//! start from the snapshot with no API server, and SIGTERM during load.

use switchyard_tests::router as support;

use std::sync::atomic::Ordering;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::*;
use switchyard_tests::{
    client, free_port, get, namespace, wait_until_blocking, HttpClient, Upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_keeps_the_table_serving_and_changes_resume_when_it_is_back() {
    let client = client().await;
    let ns = namespace(&client, "rout").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    apply_version(&client, &ns, "steady", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "steady", "2.0.0", &v2.url()).await;
    let g1 = apply_function(
        &client,
        &ns,
        "steady",
        &[("1.0.0", 1_000_000), ("2.0.0", 0)],
        json!({}),
    )
    .await;

    let dir = temp_dir("rout");
    let relay = Relay::start(apiserver_addr());
    let opts = RouterOpts {
        kubeconfig: kubeconfig_via(relay.addr.port(), &dir),
        ..RouterOpts::default()
    };
    let router = Router::start_with(&ns, "rout-0", opts);
    router.wait_serving("steady", g1);
    wait_ack(&client, &ns, "steady", "rout-0", g1).await;

    relay.cut();
    wait_until_blocking(WAIT, "the router noticing the outage", || {
        (router.routes()["sourceConnected"] == json!(false)).then_some(())
    });
    // A change the router cannot see while the API server is away.
    let g2 = apply_function(
        &client,
        &ns,
        "steady",
        &[("1.0.0", 0), ("2.0.0", 1_000_000)],
        json!({}),
    )
    .await;
    let counts = count_served(router.listen, "localhost", "/steady", 50);
    assert_eq!(
        counts.get("steady@1.0.0"),
        Some(&50),
        "the last good table keeps serving: {counts:?}"
    );
    assert_eq!(router.served_generation("steady"), Some(g1));
    let metrics = router.metrics();
    assert!(
        metrics.contains("switchyard_router_source_connected 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_router_table_age_seconds"),
        "{metrics}"
    );

    relay.restore();
    router.wait_serving("steady", g2);
    wait_ack(&client, &ns, "steady", "rout-0", g2).await;
    let counts = count_served(router.listen, "localhost", "/steady", 20);
    assert_eq!(counts.get("steady@2.0.0"), Some(&20), "{counts:?}");
    assert_eq!(router.routes()["sourceConnected"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_starts_from_its_snapshot_when_the_api_server_is_unreachable() {
    let client = client().await;
    let ns = namespace(&client, "rsnap").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    apply_version(&client, &ns, "snappy", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "snappy", "2.0.0", &v2.url()).await;
    let g = apply_function(
        &client,
        &ns,
        "snappy",
        &[("1.0.0", 750_000), ("2.0.0", 250_000)],
        json!({}),
    )
    .await;
    let dir = temp_dir("rsnap");
    let snapshot = dir.join("table.json");
    {
        let first = Router::start_with(
            &ns,
            "rsnap-0",
            RouterOpts {
                snapshot: Some(snapshot.clone()),
                ..RouterOpts::default()
            },
        );
        first.wait_serving("snappy", g);
        wait_until_blocking(WAIT, "the snapshot file", || {
            std::fs::read_to_string(&snapshot)
                .ok()
                .filter(|s| s.contains("snappy"))
                .map(|_| ())
        });
    }

    // Nothing listens where this kubeconfig points.
    let nowhere = kubeconfig_via(free_port(), &dir);
    let second = Router::start_with(
        &ns,
        "rsnap-1",
        RouterOpts {
            kubeconfig: nowhere.clone(),
            snapshot: Some(snapshot.clone()),
            ..RouterOpts::default()
        },
    );
    assert_eq!(second.served_generation("snappy"), Some(g));
    let routes = second.routes();
    assert_eq!(routes["sourceConnected"], json!(false));
    assert!(routes["ageSeconds"].is_u64(), "{routes}");
    let counts = count_served(second.listen, "localhost", "/snappy", 100);
    let new = counts.get("snappy@2.0.0").copied().unwrap_or(0);
    assert_eq!(
        counts.get("snappy@1.0.0").copied().unwrap_or(0) + new,
        100,
        "{counts:?}"
    );
    assert!(
        (23..=27).contains(&new),
        "75/25 from the snapshot: {counts:?}"
    );

    // Without a snapshot, an unreachable API server is a clear one-line failure.
    let mut third = Router::start_with(
        &ns,
        "rsnap-2",
        RouterOpts {
            kubeconfig: nowhere,
            wait_ready: false,
            ..RouterOpts::default()
        },
    );
    // Exit 1 (a startup error returned from main), not a panic's 101 nor a signal's `None`.
    let code = third.wait_exit(WAIT);
    assert_eq!(code, Some(1), "{}", third.log());
    let log = third.log();
    // Its start-up log line, then the error: one line saying why, no panic or backtrace.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("switchyard-router:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line on stderr: {log}");
    assert_eq!(
        log.trim_end().lines().count(),
        2,
        "the start-up line and the error: {log}"
    );
    assert!(log.contains("unreachable"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_turns_readyz_503_finishes_every_in_flight_request_and_exits_zero() {
    let client = client().await;
    let ns = namespace(&client, "rterm").await;
    // Requests stay in flight until released: the drain cannot end before the test has seen it.
    let slow = SlowUpstream::held();
    apply_version(&client, &ns, "slow", "1.0.0", &slow.url()).await;
    let g = apply_function(&client, &ns, "slow", &[("1.0.0", 1_000_000)], json!({})).await;
    let mut router = Router::start_with(
        &ns,
        "rterm-0",
        RouterOpts {
            grace: 120,
            ..RouterOpts::default()
        },
    );
    router.wait_serving("slow", g);
    let healthz = get(router.admin, "/healthz").expect("GET /healthz");
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    wait_ack(&client, &ns, "slow", "rterm-0", g).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    assert!(leases.get("rterm-0").await.is_ok());

    let in_flight = 8;
    let requests: Vec<_> = (0..in_flight)
        .map(|_| {
            let addr = router.listen;
            std::thread::spawn(move || HttpClient::new(addr).get("localhost", "/slow", &[]))
        })
        .collect();
    wait_until_blocking(WAIT, "every request in flight at the upstream", || {
        (slow.received.load(Ordering::SeqCst) >= in_flight).then_some(())
    });
    router.sigterm();
    // Draining: no longer ready (a load balancer stops sending), still alive.
    wait_until_blocking(WAIT, "/readyz answering 503 while draining", || {
        get(router.admin, "/readyz")
            .ok()
            .filter(|r| r.status == 503)
            .map(|_| ())
    });
    assert_eq!(
        get(router.admin, "/healthz").expect("GET /healthz").status,
        200
    );
    slow.release();
    for r in requests {
        let r = r
            .join()
            .expect("client thread")
            .expect("an in-flight request was lost");
        assert_eq!((r.status, r.body.as_str()), (200, "slow"));
        assert_eq!(r.header("x-switchyard-served-by"), "slow@1.0.0");
    }
    assert_eq!(router.wait_exit(WAIT), Some(0), "{}", router.log());
    assert!(
        leases.get("rterm-0").await.is_err(),
        "a clean shutdown deletes the Lease"
    );
}
