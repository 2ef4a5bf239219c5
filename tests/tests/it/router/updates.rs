//! How the router follows changes: acknowledgements and the Lease (docs/protocol.md), invalid
//! updates that never replace a good table, and weight flips under load without a failed
//! request.

use switchyard_tests::router as support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::*;
use switchyard_tests::{client, namespace, HttpClient, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acknowledgement_reports_each_generation_and_the_lease_is_held() {
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
    assert!(
        ack.applied_at.len() == 20
            && ack.applied_at.as_bytes()[10] == b'T'
            && ack.applied_at.ends_with('Z'),
        "appliedAt is RFC 3339 UTC: {}",
        ack.applied_at
    );

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
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("rack-0"));
    assert_eq!(spec.lease_duration_seconds, Some(10));
    assert!(spec.renew_time.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_keeps_the_previous_table_serving_and_is_acknowledged_as_rejected() {
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
    let router = Router::start(&ns, "rinv-0");
    wait_ack(&client, &ns, "shaky", "rinv-0", good).await;

    // The API server accepts it (weights sum right), but version 3.0.0 does not exist.
    let bad = apply_function(
        &client,
        &ns,
        "shaky",
        &[("1.0.0", 500_000), ("3.0.0", 500_000)],
        json!({}),
    )
    .await;
    let ack = wait_ack(&client, &ns, "shaky", "rinv-0", bad).await;
    let why = ack
        .rejected
        .expect("the bad generation is acknowledged as rejected");
    assert!(
        why.contains("3.0.0"),
        "the reason names the unknown version: {why}"
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
async fn entries_of_routers_whose_lease_is_gone_are_pruned_and_live_ones_stay() {
    let client = client().await;
    let ns = namespace(&client, "rprune").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "pruned", "1.0.0", &v1.url()).await;
    let g = apply_function(&client, &ns, "pruned", &[("1.0.0", 1_000_000)], json!({})).await;
    let functions: Api<switchyard_core::Function> = Api::namespaced(client.clone(), &ns);
    // Two other replicas' entries, as they would have written them long ago.
    for replica in ["ghost", "alive"] {
        let status = json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": "pruned", "namespace": ns},
            "status": {"routers": [{"name": replica, "observedGeneration": g, "appliedAt": "2026-01-01T00:00:00Z"}]},
        });
        functions
            .patch_status(
                "pruned",
                &PatchParams::apply(&format!("switchyard-router.{replica}")).force(),
                &Patch::Apply(&status),
            )
            .await
            .expect("writing an entry");
    }
    // Only "alive" holds a Lease.
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "alive", "namespace": ns, "labels": {"switchyard.dev/router": "true"}},
        "spec": {
            "holderIdentity": "alive",
            "leaseDurationSeconds": 3600,
            "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    });
    Api::<Lease>::namespaced(client.clone(), &ns)
        .patch(
            "alive",
            &PatchParams::apply("switchyard-tests").force(),
            &Patch::Apply(&lease),
        )
        .await
        .expect("creating the live replica's Lease");

    let _router = Router::start_with(
        &ns,
        "rprune-0",
        RouterOpts {
            lease_duration: 3,
            ..RouterOpts::default()
        },
    );
    wait_ack(&client, &ns, "pruned", "rprune-0", g).await;
    let names = switchyard_tests::wait_until(WAIT, "the ghost entry pruned", || {
        let functions = functions.clone();
        async move {
            let routers = functions.get("pruned").await.ok()?.status?.routers;
            let names: Vec<String> = routers.into_iter().map(|r| r.name).collect();
            (!names.iter().any(|n| n == "ghost")).then_some(names)
        }
    })
    .await;
    assert!(names.contains(&"alive".to_string()), "{names:?}");
    assert!(names.contains(&"rprune-0".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_renews_its_lease_of_the_given_duration_and_is_pruned_once_it_expires() {
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

    // Killed, the replica neither renews nor deletes its Lease: only expiry can prune it.
    doomed.kill();
    let functions: Api<switchyard_core::Function> = Api::namespaced(client.clone(), &ns);
    let names = switchyard_tests::wait_until(WAIT, "rlease-0's entry pruned", || async {
        let routers = functions.get("leased").await.ok()?.status?.routers;
        let names: Vec<String> = routers.into_iter().map(|r| r.name).collect();
        (!names.iter().any(|n| n == "rlease-0")).then_some(names)
    })
    .await;
    assert_eq!(names, ["rlease-1"], "the live replica's entry stays");
    let (_, last) = renewed("rlease-0")
        .await
        .expect("a killed replica's Lease stays behind");
    assert!(
        Timestamp::now() > last + SignedDuration::from_secs(3),
        "pruned while rlease-0's Lease (renewed {last}) was still fresh"
    );
}
