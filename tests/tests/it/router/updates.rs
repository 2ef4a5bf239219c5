//! How the router follows changes: its report and its Lease (docs/protocol.md), invalid
//! updates that never replace a good table, and weight flips under load without a failed
//! request.

use switchyard_tests::router as support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::*;
use switchyard_tests::{client, namespace, HttpClient, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_covers_each_generation_and_is_owned_by_the_held_lease() {
    let client = client().await;
    let ns = namespace(&client, "rack").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "acked", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "acked", "1.1.0", &v1.url()).await;
    let g = apply_function(&client, &ns, "acked", &[("1.0.0", 1_000_000)], json!({})).await;
    let router = Router::start(&ns, "rack-0");
    let ack = wait_ack(&client, &ns, "acked", "rack-0", g).await;
    assert_eq!(ack.observed_generation, g);
    assert_eq!(ack.rejected, None);
    let report = report_of(&client, &ns, "rack-0").await.expect("a report");
    assert_eq!(report.replica, "rack-0");
    assert_eq!(report.address, router.listen.to_string());
    assert_eq!(report.watch_namespace, ns);
    assert!(
        report.reported_at.len() == 24
            && report.reported_at.as_bytes()[10] == b'T'
            && report.reported_at.ends_with('Z'),
        "reportedAt is RFC 3339 UTC to the millisecond: {}",
        report.reported_at
    );
    let table = report.table.expect("the table");
    assert!(table.generation >= 1 && table.routes == 1, "{table:?}");

    let g2 = apply_function(
        &client,
        &ns,
        "acked",
        &[("1.0.0", 500_000), ("1.1.0", 500_000)],
        json!({}),
    )
    .await;
    assert!(g2 > g);
    let ack = wait_ack(&client, &ns, "acked", "rack-0", g2).await;
    assert_eq!((ack.observed_generation, ack.rejected), (g2, None));
    // Acknowledged means served.
    assert_eq!(router.served_generation("acked"), Some(g2));

    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("rack-0")
        .await
        .expect("the replica's Lease");
    let labels = lease.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("switchyard.dev/router").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("switchyard-router")
    );
    let annotations = lease.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("switchyard.dev/watch-namespace"), Some(&ns));
    let uid = lease.metadata.uid.clone().expect("a uid");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("rack-0"));
    assert_eq!(spec.lease_duration_seconds, Some(10));
    assert!(spec.renew_time.is_some());
    // The report is the Lease's: the garbage collector removes it with the Lease.
    let object = Api::<switchyard_core::report::RouterReport>::namespaced(client.clone(), &ns)
        .get("rack-0")
        .await
        .expect("the report object");
    let owners = object.metadata.owner_references.expect("an owner");
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Lease", "rack-0", uid.as_str())
    );
    let labels = object.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("switchyard.dev/router").map(String::as_str),
        Some("true")
    );

    // A clean stop deletes both.
    router.sigterm();
    let reports: Api<switchyard_core::report::RouterReport> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    switchyard_tests::wait_until(WAIT, "the Lease and report deleted", || async {
        let report = reports.get_opt("rack-0").await.ok()?;
        let lease = leases.get_opt("rack-0").await.ok()?;
        (report.is_none() && lease.is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_keeps_the_previous_table_serving_and_is_reported_as_rejected() {
    let client = client().await;
    let ns = namespace(&client, "rinv").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    apply_version(&client, &ns, "shaky", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "shaky", "2.0.0", &v2.url()).await;
    let good = apply_function(
        &client,
        &ns,
        "shaky",
        &[("1.0.0", 900_000), ("2.0.0", 100_000)],
        json!({}),
    )
    .await;
    apply_version(&client, &ns, "owner", "1.0.0", &v1.url()).await;
    apply_function(
        &client,
        &ns,
        "owner",
        &[("1.0.0", 1_000_000)],
        json!({"pathPrefix": "/taken"}),
    )
    .await;
    let router = Router::start(&ns, "rinv-0");
    wait_ack(&client, &ns, "shaky", "rinv-0", good).await;

    // The API server accepts it, but its route claims what function owner serves.
    let bad = apply_function(
        &client,
        &ns,
        "shaky",
        &[("1.0.0", 500_000), ("2.0.0", 500_000)],
        json!({"pathPrefix": "/taken"}),
    )
    .await;
    let ack = wait_ack(&client, &ns, "shaky", "rinv-0", bad).await;
    let why = ack
        .rejected
        .expect("the bad generation is reported as rejected");
    assert!(
        why.contains(&format!("conflicts with function {ns}/owner")),
        "the reason names the function it conflicts with: {why}"
    );
    assert_eq!(
        router.served_generation("shaky"),
        Some(good),
        "the last good route stays"
    );
    let routes = router.routes();
    let rejection = &routes["rejections"][0];
    assert_eq!(rejection["function"], format!("{ns}/shaky"));
    assert_eq!(rejection["generation"], bad);
    assert!(router
        .metrics()
        .contains("switchyard_router_rejected_functions 1"));
    let counts = count_served(router.listen, "localhost", "/shaky", 100);
    let new = counts.get("shaky@2.0.0").copied().unwrap_or(0);
    assert_eq!(
        counts.get("shaky@1.0.0").copied().unwrap_or(0) + new,
        100,
        "{counts:?}"
    );
    assert!(
        (8..=12).contains(&new),
        "still the good 90/10 split: {counts:?}"
    );

    // A valid update is served again.
    let fixed = apply_function(&client, &ns, "shaky", &[("2.0.0", 1_000_000)], json!({})).await;
    let ack = wait_ack(&client, &ns, "shaky", "rinv-0", fixed).await;
    assert_eq!(ack.rejected, None);
    assert_eq!(router.served_generation("shaky"), Some(fixed));
    assert_eq!(router.routes()["rejections"], json!([]));
    let counts = count_served(router.listen, "localhost", "/shaky", 10);
    assert_eq!(counts.get("shaky@2.0.0"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_weight_flips_and_rollbacks_under_load_fail_no_request() {
    let client = client().await;
    let ns = namespace(&client, "rflip").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    apply_version(&client, &ns, "flip", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "flip", "2.0.0", &v2.url()).await;
    let g = apply_function(
        &client,
        &ns,
        "flip",
        &[("1.0.0", 1_000_000), ("2.0.0", 0)],
        json!({}),
    )
    .await;
    let router = Router::start(&ns, "rflip-0");
    router.wait_serving("flip", g);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, addr) =
                (stop.clone(), ok.clone(), failures.clone(), router.listen);
            std::thread::spawn(move || {
                let mut http = HttpClient::new(addr);
                while !stop.load(Ordering::Relaxed) {
                    match http.get("localhost", "/flip/work", &[]) {
                        Ok(r)
                            if r.status == 200
                                && r.header("x-switchyard-served-by").starts_with("flip@") =>
                        {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {:?}", r.status, r.body)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    let states: [&[(&str, u32)]; 5] = [
        &[("1.0.0", 900_000), ("2.0.0", 100_000)],
        &[("1.0.0", 500_000), ("2.0.0", 500_000)],
        &[("1.0.0", 0), ("2.0.0", 1_000_000)],
        &[("1.0.0", 999_000), ("2.0.0", 1_000)],
        &[("1.0.0", 1_000_000), ("2.0.0", 0)], // rollback
    ];
    for i in 0..50 {
        let before = ok.load(Ordering::Relaxed);
        let g = apply_function(&client, &ns, "flip", states[i % states.len()], json!({})).await;
        wait_ack(&client, &ns, "flip", "rflip-0", g).await;
        // Let some load run on each generation.
        switchyard_tests::wait_until(WAIT, "requests on the new generation", || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::Relaxed) >= before + 20).then_some(()) }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests (of {}): {:?}",
        failures.len(),
        ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) >= 1_000);
    assert!(v1.hits() > 0 && v2.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_renews_its_lease_of_the_given_duration_and_is_not_live_once_it_expires() {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let client = client().await;
    let ns = namespace(&client, "rlease").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "leased", "1.0.0", &v1.url()).await;
    let g = apply_function(&client, &ns, "leased", &[("1.0.0", 1_000_000)], json!({})).await;
    let opts = || RouterOpts {
        lease_duration: 3,
        ..RouterOpts::default()
    };
    let mut doomed = Router::start_with(&ns, "rlease-0", opts());
    let _keeper = Router::start_with(&ns, "rlease-1", opts());
    wait_ack(&client, &ns, "leased", "rlease-0", g).await;
    wait_ack(&client, &ns, "leased", "rlease-1", g).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let renewed = |name: &'static str| {
        let leases = leases.clone();
        async move {
            let spec = leases.get(name).await.ok()?.spec?;
            Some((spec.lease_duration_seconds?, spec.renew_time?.0))
        }
    };
    let (duration, first) = renewed("rlease-0").await.expect("rlease-0 holds a Lease");
    assert_eq!(duration, 3, "--lease-duration 3 must reach the Lease");
    // Renewal: a later renewTime appears (every third of the duration).
    switchyard_tests::wait_until(WAIT, "rlease-0 renewing its Lease", || async {
        renewed("rlease-0").await.filter(|(_, t)| *t > first)
    })
    .await;

    // Killed, the replica neither renews nor deletes its Lease: it stops being live when the
    // Lease expires, for `switchyard routers` as for every wait.
    doomed.kill();
    let cli = switchyard_tests::cli::Cli::new(&ns);
    let rows = switchyard_tests::wait_until(WAIT, "rlease-0 not live", || async {
        let out = cli.run(&["routers", "-o", "json"]).await;
        let rows: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let live = |name: &str| {
            rows.as_array()?
                .iter()
                .find(|r| r["name"] == name)
                .map(|r| r["live"] == true)
        };
        (live("rlease-0") == Some(false) && live("rlease-1") == Some(true)).then_some(rows)
    })
    .await;
    let (_, last) = renewed("rlease-0")
        .await
        .expect("a killed replica's Lease stays behind");
    assert!(
        Timestamp::now() > last + SignedDuration::from_secs(3),
        "called gone while rlease-0's Lease (renewed {last}) was still fresh: {rows}"
    );
}
