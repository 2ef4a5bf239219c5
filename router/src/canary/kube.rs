//! The canary on Kubernetes: the decider loop (one replica at a time, by the decider Lease)
//! and the fast abort (every replica), each writing a transition as one conditional replace
//! of the Function (docs/protocol.md, "The deciding replica").

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use switchyard_core::canary::Action;
use switchyard_core::numbers::Reading;
use switchyard_core::report::RouterReport;
use switchyard_core::Function;
use tokio::sync::watch;

use super::lease::{DeciderLease, RENEW_EVERY};
use super::replicas::Replicas;
use super::{actor, compared, judge, judge_own, log_transition, own_reading, Rollouts};
use crate::live::Shared;

/// Attempts at one transition when other writers keep winning the race.
const ATTEMPTS: usize = 3;

/// What both loops need.
#[derive(Clone)]
pub struct Context {
    /// The API server.
    pub client: Client,
    /// This replica.
    pub replica: String,
    /// Where the routers' Leases and reports are.
    pub lease_namespace: String,
    /// The counters.
    pub shared: Arc<Shared>,
    /// The rollouts judged, as the router's Function watch sees them.
    pub rollouts: watch::Receiver<Rollouts>,
}

/// Starts the decider loop and the fast abort on the current runtime, until `stop` turns true.
pub fn spawn(ctx: Context, stop: watch::Receiver<bool>) {
    tokio::spawn(fast_abort(ctx.clone(), stop.clone()));
    tokio::spawn(decide(ctx, stop));
}

/// The newer of two copies of a Function (by resourceVersion): what the watch delivered, or
/// what this replica wrote and the watch has not delivered yet.
fn newer(a: &Arc<Function>, b: Option<&Arc<Function>>) -> Arc<Function> {
    let rv = |f: &Function| {
        f.metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match b {
        Some(b) if rv(b) > rv(a) => Arc::clone(b),
        _ => Arc::clone(a),
    }
}

/// Functions whose last write failed, so that a failure repeated every tick (a refused write,
/// an unreachable API server) is logged once, and its end once.
type Failing = std::collections::HashSet<String>;

/// Writes the transition `judge_again` finds on `function`, conditionally; on a conflict
/// re-reads the Function and judges again. Returns the Function written, if any.
async fn write(
    client: &Client,
    function: &Function,
    by: &str,
    failing: &mut Failing,
    mut judge_again: impl FnMut(&Function) -> Option<(Function, Action)>,
) -> Option<Function> {
    let ns = function.metadata.namespace.clone().unwrap_or_default();
    let name = function.metadata.name.clone().unwrap_or_default();
    let api: Api<Function> = Api::namespaced(client.clone(), &ns);
    let mut current = function.clone();
    for _ in 0..ATTEMPTS {
        let (next, action) = judge_again(&current)?;
        match api.replace(&name, &PostParams::default(), &next).await {
            Ok(written) => {
                if failing.remove(&name) {
                    tracing::info!(function = %name, "canary writes succeed again");
                }
                log_transition(&written, &action, by);
                return Some(written);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Someone wrote first (another replica, the CLI): judge what is there now.
                match api.get(&name).await {
                    Ok(f) => current = f,
                    Err(e) => {
                        if failing.insert(name.clone()) {
                            tracing::warn!(function = %name, "re-reading after a conflict: {e}");
                        }
                        return None;
                    }
                }
            }
            Err(e) => {
                if failing.insert(name.clone()) {
                    tracing::warn!(
                        function = %name,
                        "writing the canary's {} (retried each evaluation, logged once): {e}",
                        kind(&action)
                    );
                }
                return None;
            }
        }
    }
    None
}

fn kind(action: &Action) -> &'static str {
    match action {
        Action::Wait { .. } => "wait",
        Action::Advance { .. } => "advance",
        Action::Abort { .. } => "abort",
        Action::Pause { .. } => "pause",
        Action::Done { .. } => "promotion",
    }
}

/// Every replica, every 250 ms while a rollout is judged: its own counts alone, and an abort
/// when they prove a breach.
async fn fast_abort(mut ctx: Context, mut stop: watch::Receiver<bool>) {
    let by = actor(&ctx.replica);
    let started_at = ctx.shared.metrics.started_at();
    let mut tick = tokio::time::interval(super::OWN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What this replica wrote, until the watch delivers something newer.
    let mut wrote: BTreeMap<(String, String), Arc<Function>> = BTreeMap::new();
    let mut failing = Failing::new();
    loop {
        let rollouts = Rollouts::clone(&ctx.rollouts.borrow_and_update());
        if rollouts.is_empty() {
            wrote.clear();
            tokio::select! {
                changed = ctx.rollouts.changed() => if changed.is_err() { return },
                _ = super::stopped(&mut stop) => return,
            }
            continue;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = super::stopped(&mut stop) => return,
        }
        let wanted = compared(&rollouts);
        let own = own_reading(&ctx.shared.metrics, &started_at, &wanted);
        for (key, function) in rollouts.iter() {
            let function = newer(function, wrote.get(key));
            let now = Timestamp::now();
            if judge_own(&function, &ctx.replica, &own, now, &by).is_none() {
                continue;
            }
            let written = write(&ctx.client, &function, &by, &mut failing, |f| {
                judge_own(f, &ctx.replica, &own, Timestamp::now(), &by)
            })
            .await;
            if let Some(w) = written {
                wrote.insert(key.clone(), Arc::new(w));
            }
        }
        wrote.retain(|k, _| rollouts.contains_key(k));
    }
}

/// The decider: takes the decider Lease while a rollout is judged, watches the reports, and
/// judges every rollout on each report change and each second.
async fn decide(mut ctx: Context, mut stop: watch::Receiver<bool>) {
    let by = actor(&ctx.replica);
    let started_at = ctx.shared.metrics.started_at();
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.lease_namespace);
    let mut lease = DeciderLease::new(leases.clone(), ctx.replica.clone());
    let mut reports: Option<
        BoxStream<'static, Result<watcher::Event<RouterReport>, watcher::Error>>,
    > = None;
    let mut replicas = Replicas::new(leases.clone());
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(super::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wrote: BTreeMap<(String, String), Arc<Function>> = BTreeMap::new();
    let mut failing = false;
    let mut refused = Failing::new();
    loop {
        if ctx.rollouts.borrow().is_empty() {
            // Nothing judged: no Lease, no watch, no writes.
            if lease.holds() {
                lease.release().await;
            }
            reports = None;
            wrote.clear();
            tokio::select! {
                changed = ctx.rollouts.changed() => if changed.is_err() { break },
                _ = super::stopped(&mut stop) => break,
            }
            continue;
        }
        let evaluate = tokio::select! {
            _ = renew.tick() => {
                match lease.hold().await {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        tracing::warn!(replica = %ctx.replica, "the canary decider lease: {e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
                if lease.holds() && reports.is_none() {
                    let api: Api<RouterReport> =
                        Api::namespaced(ctx.client.clone(), &ctx.lease_namespace);
                    reports = Some(
                        watcher::watcher(api, watcher::Config::default().any_semantic())
                            .default_backoff()
                            .boxed(),
                    );
                    replicas = Replicas::new(leases.clone());
                }
                if !lease.holds() {
                    reports = None;
                }
                false
            }
            event = async { reports.as_mut().expect("guarded").next().await }, if reports.is_some() => {
                match event {
                    Some(Ok(e)) => replicas.apply(e),
                    Some(Err(e)) => {
                        tracing::debug!("watching reports: {e}");
                        false
                    }
                    None => {
                        reports = None;
                        false
                    }
                }
            }
            _ = tick.tick() => true,
            changed = ctx.rollouts.changed() => {
                if changed.is_err() {
                    break;
                }
                false
            }
            _ = super::stopped(&mut stop) => break,
        };
        if !evaluate || !lease.holds() {
            continue;
        }
        let rollouts = Rollouts::clone(&ctx.rollouts.borrow());
        let now_ms = Timestamp::now().as_millisecond();
        let mut readings: BTreeMap<String, Reading> = replicas.readings(&ctx.replica, now_ms).await;
        readings.insert(
            ctx.replica.clone(),
            own_reading(&ctx.shared.metrics, &started_at, &compared(&rollouts)),
        );
        for (key, function) in rollouts.iter() {
            let function = newer(function, wrote.get(key));
            if judge(&function, &readings, Timestamp::now(), &by).is_none() {
                continue;
            }
            let written = write(&ctx.client, &function, &by, &mut refused, |f| {
                judge(f, &readings, Timestamp::now(), &by)
            })
            .await;
            if let Some(w) = written {
                wrote.insert(key.clone(), Arc::new(w));
            }
        }
        wrote.retain(|k, _| rollouts.contains_key(k));
    }
    lease.release().await;
}
