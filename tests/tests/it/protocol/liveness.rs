//! One liveness rule on both sides (docs/protocol.md): `switchyard routers` calls a replica
//! live exactly when `switchyard_core::protocol::replica_live` does, the rule the CLI's waits
//! count replicas by, and `--prune` removes only the replicas gone for two lease durations. A
//! Lease that was acquired but not yet renewed (`acquireTime` only) is live; the routers'
//! pruning of version 1 read `renewTime` alone.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use switchyard_core::protocol;
use switchyard_tests::cli::{write_report, Cli};
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn a_just_acquired_lease_is_live_and_kept_while_a_dead_replica_is_pruned_with_its_report() {
    let client = client().await;
    let ns = namespace(&client, "plive").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let long_ago = "2026-01-01T00:00:00Z".parse().expect("a timestamp");
    for (replica, acquired_now) in [("dead", false), ("acquired", true)] {
        // The acquired one holds for an hour: a slow machine does not make it expire.
        let duration = if acquired_now { 3600 } else { 10 };
        let mut lease = protocol::lease(replica, &ns, duration, long_ago);
        if acquired_now {
            let spec = lease.spec.as_mut().expect("a spec");
            spec.renew_time = None;
            spec.acquire_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        }
        leases
            .patch(
                replica,
                &PatchParams::apply(&protocol::field_manager(replica)).force(),
                &Patch::Apply(&lease),
            )
            .await
            .expect("writing a Lease");
        assert!(write_report(&client, &ns, replica, "1").await, "a report");
    }
    let cli = Cli::new(&ns);
    let listed = cli.ok(&["routers", "-o", "json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).expect("json");
    let live = |name: &str| {
        rows.as_array()
            .expect("a list")
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["live"].clone())
    };
    assert_eq!(live("acquired"), Some(true.into()), "{rows}");
    assert_eq!(live("dead"), Some(false.into()), "{rows}");
    assert_eq!(
        rows[0]["report"]["applied"]["functions"], "1",
        "the report is shown whole: {rows}"
    );

    let dry = cli.ok(&["routers", "--prune", "--dry-run"]).await;
    assert!(
        dry.stdout
            .contains(&format!("- router {ns}/dead (Lease and report)")),
        "{dry:?}"
    );
    assert!(!dry.stdout.contains("acquired"), "{dry:?}");
    assert!(leases.get_opt("dead").await.expect("reading").is_some());

    let pruned = cli.ok(&["routers", "--prune"]).await;
    assert_eq!(pruned.stdout.trim(), format!("router {ns}/dead pruned"));
    assert!(leases.get_opt("dead").await.expect("reading").is_none());
    assert!(leases.get_opt("acquired").await.expect("reading").is_some());
    let reports: Api<switchyard_core::report::RouterReport> = Api::namespaced(client.clone(), &ns);
    assert!(reports.get_opt("dead").await.expect("reading").is_none());
    assert!(reports
        .get_opt("acquired")
        .await
        .expect("reading")
        .is_some());
}
