//! This replica's Lease: created once it serves a complete table, renewed every third of its
//! duration, deleted on a clean shutdown. The Lease body and the liveness rule come from
//! `switchyard_core::protocol`. Each renewal opens the replica's [`ReadyGate`] for one
//! duration and hands the Lease's uid to the report writer (the report's owner).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use switchyard_core::protocol;
use tokio::sync::watch;

use crate::source::ReadyGate;

/// Creates and renews this replica's Lease every third of its duration until stopped.
pub(super) async fn renew_lease(
    leases: Api<Lease>,
    replica: String,
    watch_namespace: String,
    duration: Duration,
    uid: watch::Sender<Option<String>>,
    gate: Arc<ReadyGate>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let params = PatchParams::apply(&protocol::field_manager(&replica)).force();
    let seconds = duration.as_secs().clamp(1, i32::MAX as u64);
    let period = Duration::from_millis(seconds * 1000 / 3);
    let mut failing = false;
    loop {
        let now = jiff::Timestamp::now();
        let lease = protocol::lease(
            &replica,
            &watch_namespace,
            i32::try_from(seconds).unwrap_or(i32::MAX),
            now,
        );
        match leases.patch(&replica, &params, &Patch::Apply(&lease)).await {
            Ok(held) => {
                gate.renewed(now.as_millisecond() + seconds as i64 * 1000);
                let held_uid = held.metadata.uid;
                uid.send_if_modified(|known| {
                    let changed = *known != held_uid;
                    if changed {
                        known.clone_from(&held_uid);
                    }
                    changed
                });
                if failing {
                    tracing::info!(%replica, "lease renewed again");
                    failing = false;
                }
            }
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
