//! This replica's RouterReport (docs/protocol.md, "When a replica writes its report"): created
//! whole (owned by the Lease) once the first complete table is served, then merge-patched
//! after each swap that changes what it says, and with the numbers and the shadow counts at
//! most once a second (one merge patch carrying whichever changed).
//!
//! Two lanes, each one write at a time. Writes of what is served are at least [`SPACING`]
//! apart: during a storm of changes each write carries every change read before it, and the
//! first change after a quiet moment goes out at once. Numbers writes go beside them (at most
//! one a second), so a swap never waits behind one in flight. A failed write is retried with
//! the latest state after a backoff.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use switchyard_core::numbers::Numbers;
use switchyard_core::protocol;
use switchyard_core::report::{self, RouterReport, RouterReportStatus};
use switchyard_core::shadow::ShadowNumbers;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::source::ReadyGate;

/// The least time between two writes of what is served (at most 40 a second); numbers writes
/// (at most one a second) are not counted.
pub(super) const SPACING: Duration = Duration::from_millis(25);
/// The least time between two writes of the numbers (and shadow counts).
const NUMBERS_EVERY: Duration = Duration::from_secs(1);

/// What the writer is handed: the report to reach, the numbers to publish, and the Lease's uid.
pub(super) struct Inputs {
    pub(super) desired: watch::Receiver<Option<RouterReportStatus>>,
    pub(super) numbers: watch::Receiver<Option<Numbers>>,
    pub(super) shadow: watch::Receiver<Option<ShadowNumbers>>,
    pub(super) lease_uid: watch::Receiver<Option<String>>,
}

/// Writes the report until `desired`'s sender is dropped (shutdown), then returns; the caller
/// deletes the report.
pub(super) async fn write_reports(
    api: Api<RouterReport>,
    namespace: String,
    replica: String,
    mut inputs: Inputs,
    gate: Arc<ReadyGate>,
) {
    let manager = protocol::field_manager(&replica);
    let apply = PatchParams::apply(&manager).force();
    let merge = PatchParams {
        field_manager: Some(manager.clone()),
        ..Default::default()
    };
    // The first write needs the owner's uid and something to say.
    let uid = loop {
        if let Some(uid) = inputs.lease_uid.borrow_and_update().clone() {
            break uid;
        }
        if inputs.lease_uid.changed().await.is_err() {
            return;
        }
    };
    if inputs.desired.wait_for(Option::is_some).await.is_err() {
        return;
    }
    let mut created = false;
    let mut swap_due = true;
    let mut numbers_due = false;
    let mut numbers_open = true;
    let mut shadow_due = false;
    let mut shadow_open = true;
    // The last write of what is served (create or swap): their spacing counts from it alone.
    let mut last_served: Option<Instant> = None;
    let mut last_numbers: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    let mut retry_at: Option<Instant> = None;
    // The numbers lane: at most one write in flight, beside the writes of what is served.
    let mut live_write: Option<tokio::task::JoinHandle<kube::Result<RouterReport>>> = None;
    let mut live_backoff = Duration::from_millis(200);
    let mut live_retry_at: Option<Instant> = None;
    loop {
        let retry = retry_at.unwrap_or_else(Instant::now);
        let served_wake =
            (swap_due || !created).then(|| last_served.map_or(retry, |t| (t + SPACING).max(retry)));
        let live_wake =
            (created && live_write.is_none() && (numbers_due || shadow_due)).then(|| {
                let retry = live_retry_at.unwrap_or_else(Instant::now);
                last_numbers.map_or(retry, |t| (t + NUMBERS_EVERY).max(retry))
            });
        let wake = match (served_wake, live_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            changed = inputs.desired.changed() => {
                if changed.is_err() {
                    if let Some(write) = live_write.take() {
                        write.abort();
                    }
                    return;
                }
                swap_due = true;
                continue;
            }
            changed = inputs.numbers.changed(), if numbers_open => {
                match changed {
                    Ok(()) => numbers_due = true,
                    Err(_) => numbers_open = false,
                }
                continue;
            }
            changed = inputs.shadow.changed(), if shadow_open => {
                match changed {
                    Ok(()) => shadow_due = true,
                    Err(_) => shadow_open = false,
                }
                continue;
            }
            done = async { live_write.as_mut().expect("in flight").await }, if live_write.is_some() => {
                live_write = None;
                let failed = match done {
                    Ok(Ok(_)) => None,
                    // Gone: the next write of what is served writes it whole, numbers included.
                    Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                        created = false;
                        None
                    }
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(e) = failed {
                    tracing::warn!(%replica, "writing the report (numbers), will retry: {e}");
                    // What it carried is still to be said, as it stands by then.
                    numbers_due = true;
                    shadow_due = true;
                    live_retry_at = Some(Instant::now() + live_backoff);
                    live_backoff = (live_backoff * 2).min(Duration::from_secs(5));
                } else {
                    tracing::debug!(%replica, "report numbers written");
                    live_retry_at = None;
                    live_backoff = Duration::from_millis(200);
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
        let now = protocol::report_time(jiff::Timestamp::now());
        if served_wake.is_none_or(|w| w > Instant::now()) {
            // The numbers' turn: only the parts that changed since their last write.
            let numbers = numbers_due
                .then(|| inputs.numbers.borrow_and_update().clone())
                .flatten();
            let shadow = shadow_due
                .then(|| inputs.shadow.borrow_and_update().clone())
                .flatten();
            numbers_due = false;
            shadow_due = false;
            last_numbers = Some(Instant::now());
            let patch = report::live_patch(numbers.as_ref(), shadow.as_ref(), &now);
            let (api, replica, merge) = (api.clone(), replica.clone(), merge.clone());
            live_write = Some(tokio::spawn(async move {
                api.patch(&replica, &merge, &Patch::Merge(&patch)).await
            }));
            continue;
        }
        let status = inputs
            .desired
            .borrow_and_update()
            .clone()
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let (what, result) = if !created {
            let mut whole = status;
            whole.reported_at = now;
            whole.numbers = inputs.numbers.borrow_and_update().clone();
            whole.shadow = inputs.shadow.borrow_and_update().clone();
            // A Lease deleted and taken again has a new uid.
            let owner = inputs
                .lease_uid
                .borrow()
                .clone()
                .unwrap_or_else(|| uid.clone());
            let body = report::report(&namespace, &owner, whole);
            (
                "create",
                api.patch(&replica, &apply, &Patch::Apply(&body)).await,
            )
        } else {
            let mut changed = status;
            changed.reported_at = now;
            let patch = report::swap_patch(&changed);
            (
                "swap",
                api.patch(&replica, &merge, &Patch::Merge(&patch)).await,
            )
        };
        last_served = Some(Instant::now());
        match result {
            Ok(_) => {
                tracing::debug!(
                    %replica,
                    "report {what} written in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
                if what == "create" {
                    created = true;
                    gate.reported();
                    numbers_due = false;
                    shadow_due = false;
                    last_numbers = last_served;
                }
                swap_due = false;
                retry_at = None;
                backoff = Duration::from_millis(200);
            }
            // Gone (its Lease expired and the garbage collector took it): write it whole.
            Err(kube::Error::Api(e)) if e.code == 404 && created => {
                tracing::info!(%replica, "report gone; writing it again");
                created = false;
            }
            Err(e) => {
                tracing::warn!(%replica, "writing the report ({what}), will retry: {e}");
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
