//! One liveness rule on both sides (docs/protocol.md): a router prunes the `status.routers`
//! entry of a replica only when `switchyard_core::protocol::replica_live` says its Lease is
//! dead, the same rule the CLI's wait counts replicas by. A Lease that was acquired but not yet
//! renewed (`acquireTime` only) is live for both; the router's pruning used to read
//! `renewTime` alone and removed that replica's entry while the CLI still waited for it.

use switchyard_tests::router as support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::*;
use switchyard_core::protocol;
use switchyard_tests::{client, namespace, Upstream};

#[tokio::test]
async fn a_replica_whose_lease_was_just_acquired_keeps_its_entry_while_a_dead_one_is_pruned() {
    let client = client().await;
    let ns = namespace(&client, "plive").await;
    let v1 = Upstream::start("v1");
    apply_version(&client, &ns, "hello", "1.0.0", &v1.url()).await;
    let g = apply_function(&client, &ns, "hello", &[("1.0.0", 1_000_000)], json!({})).await;
    let functions: Api<switchyard_core::Function> = Api::namespaced(client.clone(), &ns);
    let long_ago = "2026-01-01T00:00:00Z".parse().expect("a timestamp");
    // Entries of two other replicas, written long ago.
    for replica in ["dead", "acquired"] {
        functions
            .patch_status(
                "hello",
                &PatchParams::apply(&protocol::field_manager(replica)).force(),
                &Patch::Apply(&protocol::ack_body(
                    &ns, "hello", replica, g, None, long_ago,
                )),
            )
            .await
            .expect("writing an entry");
    }
    // "acquired" holds a Lease it has acquired but not renewed yet; "dead" holds none.
    let mut lease = protocol::lease("acquired", &ns, 3600, long_ago);
    let spec = lease.spec.as_mut().expect("a spec");
    spec.renew_time = None;
    spec.acquire_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    Api::<Lease>::namespaced(client.clone(), &ns)
        .patch(
            "acquired",
            &PatchParams::apply(&protocol::field_manager("acquired")).force(),
            &Patch::Apply(&lease),
        )
        .await
        .expect("creating the acquired Lease");

    let _router = Router::start_with(
        &ns,
        "plive-0",
        RouterOpts {
            lease_duration: 3,
            ..RouterOpts::default()
        },
    );
    wait_ack(&client, &ns, "hello", "plive-0", g).await;
    // The pass that removes "dead" has judged "acquired" too.
    let names = switchyard_tests::wait_until(WAIT, "the dead entry pruned", || {
        let functions = functions.clone();
        async move {
            let routers = functions.get("hello").await.ok()?.status?.routers;
            let names: Vec<String> = routers.into_iter().map(|r| r.name).collect();
            (!names.iter().any(|n| n == "dead")).then_some(names)
        }
    })
    .await;
    assert!(names.contains(&"acquired".to_string()), "{names:?}");
    assert!(names.contains(&"plive-0".to_string()), "{names:?}");
}
