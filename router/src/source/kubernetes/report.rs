//! This replica's RouterReport (docs/protocol.md, "When a replica writes its report"): created
//! whole (owned by the Lease) once the first complete table is served, then merge-patched
//! after each swap that changes what it says, and with the numbers and the shadow counts at
//! most once a second (one merge patch carrying whichever changed).
//!
//! One write at a time, writes of what is served at least [`SPACING`] apart: during a storm of
//! changes each write carries every change read before it, and the first change after a quiet
//! moment goes out at once (a numbers write just before does not delay it). A failed write is retried with the latest state after a backoff.

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

/// The least time between two writes of what is served (at most 40 a second); a numbers write
/// (at most one a second) does not hold the next one back.
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
    let mut last_write: Option<Instant> = None;
    // The last write of what is served (create or swap): the spacing counts from it alone, so
    // that a swap right after a numbers write is not held back (it is on the critical path of
    // every CLI wait; the numbers are not).
    let mut last_served: Option<Instant> = None;
    let mut last_numbers: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    let mut retry_at: Option<Instant> = None;
    loop {
        let retry = retry_at.unwrap_or_else(Instant::now);
        let wake = if swap_due || !created {
            Some(last_served.map_or(retry, |t| (t + SPACING).max(retry)))
        } else if numbers_due || shadow_due {
            let earliest = last_write.map_or(retry, |t| (t + SPACING).max(retry));
            Some(earliest.max(last_numbers.map_or(earliest, |t| t + NUMBERS_EVERY)))
        } else {
            None
        };
        tokio::select! {
            changed = inputs.desired.changed() => {
                if changed.is_err() {
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
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
        let status = inputs
            .desired
            .borrow_and_update()
            .clone()
            .unwrap_or_default();
        let now = protocol::report_time(jiff::Timestamp::now());
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
        } else if swap_due {
            let mut changed = status;
            changed.reported_at = now;
            let patch = report::swap_patch(&changed);
            (
                "swap",
                api.patch(&replica, &merge, &Patch::Merge(&patch)).await,
            )
        } else {
            // Only the parts that changed since their last write.
            let numbers = numbers_due
                .then(|| inputs.numbers.borrow_and_update().clone())
                .flatten();
            let shadow = shadow_due
                .then(|| inputs.shadow.borrow_and_update().clone())
                .flatten();
            let patch = report::live_patch(numbers.as_ref(), shadow.as_ref(), &now);
            (
                "numbers",
                api.patch(&replica, &merge, &Patch::Merge(&patch)).await,
            )
        };
        last_write = Some(Instant::now());
        if what != "numbers" {
            last_served = last_write;
        }
        match result {
            Ok(_) => {
                tracing::debug!(
                    %replica,
                    "report {what} written in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
                match what {
                    "create" => {
                        created = true;
                        gate.reported();
                        swap_due = false;
                        numbers_due = false;
                        shadow_due = false;
                        last_numbers = last_write;
                    }
                    "swap" => swap_due = false,
                    _ => {
                        numbers_due = false;
                        shadow_due = false;
                        last_numbers = last_write;
                    }
                }
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
