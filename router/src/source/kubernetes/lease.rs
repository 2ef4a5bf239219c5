//! This replica's Lease: created once it serves a complete table, renewed every third of its
//! duration, deleted on a clean shutdown; and the reading of every replica's Lease for pruning.
//! The Lease body and the liveness rule come from `switchyard_core::protocol`.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use switchyard_core::protocol;

/// Creates and renews this replica's Lease every third of its duration until stopped.
pub(super) async fn renew_lease(
    leases: Api<Lease>,
    replica: String,
    watch_namespace: String,
    duration: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let params = PatchParams::apply(&protocol::field_manager(&replica)).force();
    let seconds = duration.as_secs().clamp(1, i32::MAX as u64);
    let period = Duration::from_millis(seconds * 1000 / 3);
    let mut failing = false;
    loop {
        let lease = protocol::lease(
            &replica,
            &watch_namespace,
            i32::try_from(seconds).unwrap_or(i32::MAX),
            jiff::Timestamp::now(),
        );
        match leases.patch(&replica, &params, &Patch::Apply(&lease)).await {
            Ok(_) if failing => {
                tracing::info!(%replica, "lease renewed again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(%replica, "renewing lease: {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut stop => return,
        }
    }
}

/// The replicas with a live Lease (by `protocol::replica_live`) in each of `namespaces`, as
/// (namespace, name); `Err` with the namespace and the error when one cannot be listed. A
/// namespace that does not exist holds no Lease.
pub(super) async fn live_replicas(
    client: &Client,
    namespaces: impl IntoIterator<Item = String>,
    now: jiff::Timestamp,
) -> Result<HashSet<(String, String)>, (String, kube::Error)> {
    let selector = ListParams::default().labels(protocol::ROUTER_SELECTOR);
    let mut live = HashSet::new();
    for ns in namespaces {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        match leases.list(&selector).await {
            Ok(list) => {
                for lease in list {
                    let held = lease
                        .spec
                        .as_ref()
                        .is_some_and(|spec| protocol::replica_live(spec, now));
                    if held {
                        live.insert((ns.clone(), lease.metadata.name.unwrap_or_default()));
                    }
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err((ns, e)),
        }
    }
    Ok(live)
}
