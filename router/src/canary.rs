//! The automated canary's router side (docs/protocol.md, "The deciding replica"): the decider
//! Lease, the live replicas' readings, the decider loop that judges each Progressing rollout
//! and writes its transitions, and the fast abort every replica runs on its own counts.
//!
//! The judgment is `switchyard_core::canary::decide`; the Function after a transition is
//! `switchyard_core::rollout::apply`. [`judge`] and [`judge_own`] put the two together, pure;
//! `kube` and `local` read and write. Nothing here touches the request path: the counters it
//! reads are the ones every request already bumps.

pub mod kube;
pub mod lease;
pub mod local;
pub mod replicas;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use switchyard_core::canary::{self, Action};
use switchyard_core::numbers::Reading;
use switchyard_core::{rollout, Function};

use crate::metrics::Metrics;

/// How often every replica judges its own counts for a fast abort (and the local store's
/// single router judges everything).
pub const OWN_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How often the decider judges every rollout even without a report change.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The Functions whose rollout is judged (`rollout::active`), by `(namespace, name)`.
pub type Rollouts = Arc<BTreeMap<(String, String), Arc<Function>>>;

/// The actor of a router's decisions: `switchyard-router/<replica>`.
pub fn actor(replica: &str) -> String {
    format!("switchyard-router/{replica}")
}

/// Whether `function` has a rollout the routers judge.
pub fn judged(function: &Function) -> bool {
    function.spec.rollout.is_some() && rollout::active(function).is_some()
}

/// The decision on `function`'s rollout from the live replicas' `readings` (replica →
/// reading; the judge's own fresh among them) at `now`, and the Function to write for it;
/// `None` when there is nothing to write (a Wait, or no rollout judged).
pub fn judge(
    function: &Function,
    readings: &BTreeMap<String, Reading>,
    now: Timestamp,
    actor: &str,
) -> Option<(Function, Action)> {
    let (plan, progress) = rollout::active(function)?;
    let status = function.status.as_ref()?.rollout.as_ref()?;
    let key = rollout::function_key(function);
    let at_start = rollout::readings_at_start(status, &key, &plan);
    let counts = canary::step_counts(&key, &plan, &at_start, progress.step_started_ms, readings);
    let action = canary::decide(&plan, &progress, &counts, now.as_millisecond());
    let next = rollout::apply(function, &action, now, actor, readings)?;
    Some((next, action))
}

/// A fast abort: the decision on `function`'s rollout from this replica's counts alone
/// (`own`, the reading of `replica`), kept only when it is an abort — its counts alone prove
/// the breach. Anything else is the decider's to judge over every replica.
pub fn judge_own(
    function: &Function,
    replica: &str,
    own: &Reading,
    now: Timestamp,
    actor: &str,
) -> Option<(Function, Action)> {
    let readings = BTreeMap::from([(replica.to_string(), own.clone())]);
    match judge(function, &readings, now, actor)? {
        (next, action @ Action::Abort { .. }) => Some((next, action)),
        _ => None,
    }
}

/// The `(function, version)` pairs the rollouts compare: the canary and the baseline of each.
pub fn compared(rollouts: &BTreeMap<(String, String), Arc<Function>>) -> HashSet<(String, String)> {
    rollouts
        .values()
        .filter_map(|f| compared_of(f))
        .flatten()
        .collect()
}

/// The canary and the baseline `function`'s rollout compares, as `(function, version)`;
/// `None` when it has no rollout in flight (`spec.rollout` is present exactly while one is).
pub fn compared_of(function: &Function) -> Option<[(String, String); 2]> {
    let plan = function.spec.rollout.as_deref()?;
    let key = rollout::function_key(function);
    Some([
        (key.clone(), plan.canary.clone()),
        (key, plan.baseline.clone()),
    ])
}

/// This replica's counters of the compared versions now.
pub fn own_reading(
    metrics: &Metrics,
    started_at: &str,
    compared: &HashSet<(String, String)>,
) -> Reading {
    crate::numbers::own_reading(metrics, started_at, |f, v| {
        compared.contains(&(f.to_string(), v.to_string()))
    })
}

/// Resolves once `stop` turns true (or its sender is gone), holding no borrow of it.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One INFO line per transition a router writes.
pub fn log_transition(function: &Function, action: &Action, by: &str) {
    let key = rollout::function_key(function);
    let what = match action {
        Action::Wait { .. } => "waits",
        Action::Advance { .. } => "advanced",
        Action::Abort { .. } => "aborted",
        Action::Pause { .. } => "paused",
        Action::Done { .. } => "promoted",
    };
    tracing::info!(function = %key, actor = %by, "canary of {key} {what}: {}", action.reason());
}

#[cfg(test)]
mod tests;
