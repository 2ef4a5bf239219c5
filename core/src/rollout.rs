//! An automated canary's rollout on its Function (docs/canary.md): the plan in `spec.rollout`,
//! the progress in `status.rollout`, and every transition as a pure function from one Function
//! to the next — the routers' decisions ([`apply`]) and the CLI's (`start`, `pause`, `resume`,
//! `abort`, `promote`).
//!
//! A rollout is *in flight* while `spec.rollout` is present; it is judged only while
//! `status.rollout.phase` is `Progressing` ([`active`]). Every transition that ends it
//! (success, abort, a manual traffic change) removes `spec.rollout` in the same write, so a
//! writer that sees only the spec (the CLI's traffic verbs) can end it too; the finished
//! record stays in `status.rollout` and in the history. Nothing here reads a clock.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::canary::{self, Action as Decision, Limits, Plan, PlanError, Progress};
use crate::numbers::{Reading, VersionKey};
use crate::plan::{self, Change, VersionState};
use crate::report::RouterReportStatus;
use crate::resources::{
    Action, Function, FunctionSpec, FunctionStatus, RolloutPhase, RolloutSpec, RolloutStatus,
    StepReading,
};
use crate::validate;
use crate::weight::{Percent, TOTAL_PPM};

/// `namespace/name` of a Function: how router numbers name it.
pub fn function_key(function: &Function) -> String {
    format!(
        "{}/{}",
        function.metadata.namespace.as_deref().unwrap_or_default(),
        function.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A time as the rollout's status writes it: RFC 3339 with milliseconds.
pub fn stamp(now: Timestamp) -> String {
    format!("{now:.3}")
}

/// A time as the history writes it: RFC 3339 in whole seconds, like every other entry.
fn history_time(now: Timestamp) -> String {
    format!("{now:.0}")
}

/// A limit's duration in milliseconds: like a timeout, but zero is allowed (`0ms`: no
/// increase at all).
fn limit_ms(name: &'static str, value: &str) -> Result<f64, PlanError> {
    validate::duration_or_zero(name, value)
        .map(|d| d.as_millis() as f64)
        .map_err(|e| duration_error(name, value, e))
}

/// A duration in milliseconds, by the timeouts' parser (1 ms to 24 h).
fn duration_ms(name: &'static str, value: &str) -> Result<u64, PlanError> {
    validate::duration(name, value)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|e| duration_error(name, value, e))
}

/// A duration the parser refused, as a plan error naming the field.
fn duration_error(name: &'static str, value: &str, e: validate::ValidationError) -> PlanError {
    PlanError::Duration {
        name,
        value: value.chars().take(80).collect(),
        why: match e {
            validate::ValidationError::Timeout { why, .. } => why,
            _ => "not a duration",
        },
    }
}

impl RolloutSpec {
    /// The plan the routers judge by, checked ([`Plan::validate`]).
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let hold_ms = duration_ms("hold", &self.hold)?;
        let max_wait_ms = match &self.max_wait {
            Some(w) => duration_ms("max wait", w)?,
            None => hold_ms.saturating_mul(canary::defaults::MAX_WAIT_HOLDS),
        };
        let plan = Plan {
            canary: self.canary.clone(),
            baseline: self.baseline.clone(),
            steps: self.steps.clone(),
            hold_ms,
            min_requests: self.min_requests,
            max_wait_ms,
            limits: Limits {
                max_error_increase_pp: self.max_error_increase,
                max_p99_increase_ms: self
                    .max_p99_increase
                    .as_deref()
                    .map(|v| limit_ms("max p99 increase", v))
                    .transpose()?,
                max_error_rate_pct: self.max_error_rate,
                max_p99_ms: self
                    .max_p99
                    .as_deref()
                    .map(|v| limit_ms("max p99", v))
                    .transpose()?,
            },
        };
        plan.validate()?;
        Ok(plan)
    }

    /// The plan of `canary` against `baseline` with every default of `switchyard canary`
    /// written out.
    pub fn with_defaults(canary: &str, baseline: &str) -> RolloutSpec {
        RolloutSpec {
            canary: canary.to_string(),
            baseline: baseline.to_string(),
            steps: canary::defaults::STEPS_PPM.to_vec(),
            hold: "30s".to_string(),
            min_requests: canary::defaults::MIN_REQUESTS,
            max_wait: Some("5m".to_string()),
            max_error_increase: Some(canary::defaults::MAX_ERROR_INCREASE_PP),
            max_p99_increase: Some("50ms".to_string()),
            max_error_rate: None,
            max_p99: None,
        }
    }
}

/// `step 2/5 at 5%`.
pub fn step_label(steps: &[u32], step: u32) -> String {
    let weight = steps.get(step as usize).copied().unwrap_or(TOTAL_PPM);
    format!("step {}/{} at {}", step + 1, steps.len(), Percent(weight))
}

/// A replica's reading of its counters, from its report: its published totals, or — when it
/// has published no numbers (an idle router writes none, docs/protocol.md) — an empty reading
/// of its run, so that everything it serves later counts in the step instead of being left
/// out as unknown.
pub fn reading_of(report: &RouterReportStatus) -> Reading {
    match &report.numbers {
        Some(numbers) => Reading::of_totals(&report.started_at, numbers),
        None => Reading {
            started_at: report.started_at.clone(),
            totals: BTreeMap::new(),
        },
    }
}

/// The readings the step's counts are measured from, by replica, as [`canary::step_counts`]
/// takes them: each [`StepReading`] of `status.atStart` as a reading of the canary and the
/// baseline of `function_key`.
pub fn readings_at_start(
    status: &RolloutStatus,
    function_key: &str,
    plan: &Plan,
) -> BTreeMap<String, Reading> {
    let key = |version: &str| VersionKey {
        function: function_key.to_string(),
        version: version.to_string(),
    };
    status
        .at_start
        .iter()
        .map(|r| {
            let totals = [
                (key(&plan.canary), r.canary.clone()),
                (key(&plan.baseline), r.baseline.clone()),
            ]
            .into();
            let reading = Reading {
                started_at: r.started_at.clone(),
                totals,
            };
            (r.replica.clone(), reading)
        })
        .collect()
}

/// What `status.atStart` keeps of the replicas' readings `now`: the canary's and the
/// baseline's counters of `function_key` per replica (zero for a version a replica has not
/// served yet: everything it serves later is inside the step).
pub fn step_readings(
    function_key: &str,
    plan: &Plan,
    now: &BTreeMap<String, Reading>,
) -> Vec<StepReading> {
    let counts = |reading: &Reading, version: &str| {
        reading
            .totals
            .get(&VersionKey {
                function: function_key.to_string(),
                version: version.to_string(),
            })
            .cloned()
            .unwrap_or_default()
    };
    now.iter()
        .map(|(replica, reading)| StepReading {
            replica: replica.clone(),
            started_at: reading.started_at.clone(),
            canary: counts(reading, &plan.canary),
            baseline: counts(reading, &plan.baseline),
        })
        .collect()
}

/// The rollout's plan and progress while it is judged (`phase` Progressing, with a plan that
/// `status.rollout` belongs to); `None` otherwise.
pub fn active(function: &Function) -> Option<(Plan, Progress)> {
    let (plan, status) = in_flight(function)?;
    if status.phase != RolloutPhase::Progressing {
        return None;
    }
    let step_started_ms = status
        .step_started_at
        .parse::<Timestamp>()
        .ok()?
        .as_millisecond();
    Some((
        plan,
        Progress {
            step: status.step as usize,
            step_started_ms,
        },
    ))
}

/// The plan and status of a rollout in flight whose status matches its plan.
fn in_flight(function: &Function) -> Option<(Plan, &RolloutStatus)> {
    let spec = function.spec.rollout.as_deref()?;
    let status = function.status.as_ref()?.rollout.as_deref()?;
    let plan = spec.plan().ok()?;
    let matches = status.canary == plan.canary
        && status.baseline == plan.baseline
        && (status.step as usize) < plan.steps.len()
        && !status.phase.finished();
    matches.then_some((plan, status))
}

/// A rollout as it stands, for display: its status, with a rollout that a manual traffic
/// change ended (the spec's plan removed, the status left as the CLI's traffic verbs cannot
/// write it) shown as Ended, with the reason the history recorded.
pub fn view(function: &Function) -> Option<RolloutStatus> {
    let mut status = function.status.as_ref()?.rollout.as_deref()?.clone();
    let planned = function
        .spec
        .rollout
        .as_deref()
        .is_some_and(|r| r.canary == status.canary && r.baseline == status.baseline);
    if !status.phase.finished() && !planned {
        status.phase = RolloutPhase::Ended;
        if let Some(ended) = function
            .spec
            .history
            .iter()
            .rfind(|h| h.action == Action::Canary)
        {
            status.reason = ended.reason.clone();
            status.actor = ended.actor.clone();
            status.updated_at = ended.time.clone();
        }
    }
    Some(status)
}

/// The status a write of `spec` must carry with it, given the Function's `status` as read:
/// `Some` when the write ends a rollout that the status still shows in flight — a manual
/// traffic change removes `spec.rollout` ([`crate::plan::end_rollout`]) — so that the stored
/// record says Ended, with the reason, actor and time of the history entry that ended it, in
/// the same write. `None` when the status stays as it is.
pub fn status_after_write(
    spec: &FunctionSpec,
    status: Option<&FunctionStatus>,
) -> Option<FunctionStatus> {
    let before = status?.rollout.as_deref()?;
    let after = view(&Function {
        metadata: Default::default(),
        spec: spec.clone(),
        status: status.cloned(),
    })?;
    (after.phase != before.phase).then(|| FunctionStatus {
        rollout: Some(Box::new(after)),
    })
}

/// What a transition does to the Function.
enum Step<'a> {
    /// The split of step `to` (a new step: new readings).
    Advance(usize, &'a [crate::TrafficTarget]),
    /// The baseline at 100%, the rollout over.
    Abort(&'a [crate::TrafficTarget]),
    /// The canary at 100%, the rollout over.
    Done(&'a [crate::TrafficTarget]),
    /// Not judged; the weights stay.
    Pause,
    /// Judged again from a new start of the same step.
    Resume,
}

/// Who makes a transition, when and why.
struct Who<'a> {
    now: Timestamp,
    actor: &'a str,
    reason: String,
}

/// The Function after `step`: the traffic, one history entry, the status; the spec's plan
/// removed when the rollout ends.
fn transition(
    function: &Function,
    plan: &Plan,
    step: Step<'_>,
    who: Who<'_>,
    readings_now: &BTreeMap<String, Reading>,
) -> Function {
    let mut next = function.clone();
    let key = function_key(function);
    let status = next
        .status
        .get_or_insert_with(FunctionStatus::default)
        .rollout
        .get_or_insert_with(|| Box::new(fresh_status(plan, &who)));
    let at = stamp(who.now);
    let (traffic, phase) = match step {
        Step::Advance(to, traffic) => {
            status.step = to as u32;
            status.step_started_at = at.clone();
            status.at_start = step_readings(&key, plan, readings_now);
            (Some(traffic), RolloutPhase::Progressing)
        }
        Step::Resume => {
            status.step_started_at = at.clone();
            status.at_start = step_readings(&key, plan, readings_now);
            (None, RolloutPhase::Progressing)
        }
        Step::Pause => (None, RolloutPhase::Paused),
        Step::Abort(traffic) => (Some(traffic), RolloutPhase::Aborted),
        Step::Done(traffic) => (Some(traffic), RolloutPhase::Succeeded),
    };
    status.phase = phase;
    status.reason = Some(who.reason.clone());
    status.actor = who.actor.to_string();
    status.updated_at = at;
    if phase.finished() {
        next.spec.rollout = None;
    }
    let change = Change {
        now: history_time(who.now),
        actor: who.actor.to_string(),
        reason: Some(who.reason),
    };
    match traffic {
        Some(traffic) => {
            plan::set_traffic(&mut next.spec, traffic.to_vec());
            plan::record(&mut next.spec, Action::Canary, &change);
        }
        None => {
            // The entry names the canary: a canary entry that names a version moved no
            // traffic (`HistoryEntry::moves_traffic`).
            plan::record(&mut next.spec, Action::Canary, &change);
            if let Some(last) = next.spec.history.last_mut() {
                last.versions = vec![plan.canary.clone()];
            }
        }
    }
    // `kubectl get fn` shows the split written; nobody waits for the routers on a router's
    // decision (the CLI marks its own transitions pending, then notes its wait).
    crate::protocol::annotate(
        &mut next.metadata,
        &next.spec,
        crate::protocol::ROUTERS_UNCONFIRMED,
    );
    next
}

/// A status for a rollout starting at step 0 (its times set by the transition).
fn fresh_status(plan: &Plan, who: &Who<'_>) -> RolloutStatus {
    RolloutStatus {
        phase: RolloutPhase::Progressing,
        step: 0,
        started_at: stamp(who.now),
        step_started_at: stamp(who.now),
        at_start: Vec::new(),
        reason: None,
        actor: who.actor.to_string(),
        updated_at: stamp(who.now),
        canary: plan.canary.clone(),
        baseline: plan.baseline.clone(),
        steps: plan.steps.clone(),
    }
}

/// The Function after a router's decision `action` on its judged rollout (see [`active`]):
/// an Advance writes the next step's traffic and starts it (`stepStartedAt` = `now`, `atStart`
/// from `readings_now`); an Abort restores the baseline at 100% (the canary stays at 0%); a
/// Done puts the canary at 100%; a Pause stops judging and leaves the weights. Each is one
/// history entry by `actor` with the reason. `None` for a Wait, when the rollout is not
/// judged, or for an Advance that is not to the next step.
pub fn apply(
    function: &Function,
    action: &Decision,
    now: Timestamp,
    actor: &str,
    readings_now: &BTreeMap<String, Reading>,
) -> Option<Function> {
    let (plan, progress) = active(function)?;
    let reason = |what: &str| format!("{what}: {}", action.reason());
    let (step, reason) = match action {
        Decision::Wait { .. } => return None,
        Decision::Advance { to, traffic, .. } => {
            if *to != progress.step + 1 || *to >= plan.steps.len() {
                return None;
            }
            let label = step_label(&plan.steps, *to as u32);
            (
                Step::Advance(*to, traffic),
                reason(&format!("advanced to {label}")),
            )
        }
        Decision::Abort { traffic, .. } => (Step::Abort(traffic), reason("aborted")),
        Decision::Pause { .. } => (Step::Pause, reason("paused")),
        Decision::Done { traffic, .. } => (Step::Done(traffic), reason("promoted")),
    };
    let who = Who { now, actor, reason };
    Some(transition(function, &plan, step, who, readings_now))
}

/// Why the CLI cannot make a rollout transition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// The plan is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The split it would write is invalid.
    #[error(transparent)]
    Refused(#[from] plan::PlanError),
    /// Nothing holds 100% and there is no stable version to compare with.
    #[error("function {0} has no baseline: no version holds 100% and none is stable (use --baseline VERSION)")]
    NoBaseline(String),
    /// Another rollout is in flight.
    #[error("function {function} already has a rollout of {canary} in flight ({where_}); abort it first (switchyard canary abort {function})")]
    InFlight {
        /// The function.
        function: String,
        /// The canary of the rollout in flight.
        canary: String,
        /// Its step and phase.
        where_: String,
    },
    /// No rollout in flight to pause, resume, abort or promote.
    #[error("function {function} has no rollout in flight{}", last.as_ref().map(|l| format!(" (the last one {l})")).unwrap_or_default())]
    NoneInFlight {
        /// The function.
        function: String,
        /// How the last one finished.
        last: Option<String>,
    },
}

/// What a CLI transition decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Write this Function.
    Write(Box<Function>),
    /// Nothing to write, and why (one line).
    Unchanged(String),
}

/// The version a rollout starts from: the one holding 100%, else the stable version.
pub fn baseline(spec: &FunctionSpec) -> Option<&str> {
    spec.traffic
        .iter()
        .find(|t| t.weight == TOTAL_PPM)
        .map(|t| t.version.as_str())
        .or(spec.stable.as_deref())
}

/// Who asks for a CLI transition, when and why.
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    /// When.
    pub now: Timestamp,
    /// Who (the kubeconfig user, or the local user name).
    pub actor: &'a str,
    /// Why, when said (`--reason`).
    pub reason: Option<&'a str>,
}

/// `switchyard canary FN V`: writes `rollout` as the plan, step 1's split (the baseline
/// holding the rest), a Progressing status whose step starts `now` from `readings_now`, and
/// one history entry. The canary must exist and be ready (unless `force`), and differ from
/// the baseline. The same plan already in flight is nothing to do; another is refused.
pub fn start(
    function: &Function,
    rollout: &RolloutSpec,
    versions: &[VersionState],
    force: bool,
    by: By<'_>,
    readings_now: &BTreeMap<String, Reading>,
) -> Result<Outcome, RolloutError> {
    let By { now, actor, reason } = by;
    let name = function.metadata.name.clone().unwrap_or_default();
    if let Some(current) = function.spec.rollout.as_deref() {
        let status = view(function);
        let where_ = status
            .as_ref()
            .map(|s| format!("{}, {}", step_label(&current.steps, s.step), s.phase))
            .unwrap_or_else(|| "no status yet".to_string());
        if current == rollout {
            return Ok(Outcome::Unchanged(format!(
                "{name}: the rollout of {} is already in flight ({where_}), nothing to change",
                rollout.canary
            )));
        }
        return Err(RolloutError::InFlight {
            function: name,
            canary: current.canary.clone(),
            where_,
        });
    }
    let plan = rollout.plan()?;
    for version in [&plan.canary, &plan.baseline] {
        let state = versions
            .iter()
            .find(|v| &v.version == version)
            .ok_or_else(|| plan::PlanError::UnknownVersion {
                function: name.clone(),
                version: version.clone(),
            })?;
        if !state.ready && !force && version == &plan.canary {
            return Err(plan::PlanError::NotReady {
                version: version.clone(),
            }
            .into());
        }
    }
    let traffic = plan.traffic(plan.steps[0]);
    let label = step_label(&plan.steps, 0);
    let mut said = format!(
        "started {label}: canary {} against baseline {}",
        plan.canary, plan.baseline
    );
    if let Some(r) = reason {
        said.push_str(&format!(" ({r})"));
    }
    let mut base = function.clone();
    base.spec.rollout = Some(Box::new(rollout.clone()));
    if let Some(status) = base.status.as_mut() {
        status.rollout = None;
    }
    let who = Who {
        now,
        actor,
        reason: said,
    };
    let next = transition(&base, &plan, Step::Advance(0, &traffic), who, readings_now);
    check(&name, &next, versions, force)?;
    Ok(Outcome::Write(Box::new(next)))
}

/// Checks the split a CLI transition writes as `plan::apply` would.
fn check(
    name: &str,
    next: &Function,
    versions: &[VersionState],
    force: bool,
) -> Result<(), RolloutError> {
    validate::function(
        name,
        &next.spec,
        versions.iter().map(|v| v.version.as_str()),
    )
    .map_err(plan::PlanError::from)?;
    if !force {
        // A rollout restores the baseline or moves weight to the canary only.
        for t in &next.spec.traffic {
            if let Some(v) = versions.iter().find(|v| v.version == t.version) {
                if !v.ready && t.weight > 0 {
                    return Err(plan::PlanError::NotReady {
                        version: t.version.clone(),
                    }
                    .into());
                }
            }
        }
    }
    Ok(())
}

/// What `canary pause|resume|abort|promote` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop judging; the weights stay.
    Pause,
    /// Judge again, the current step restarted with new readings.
    Resume,
    /// The baseline at 100%, the canary at 0%.
    Abort,
    /// The canary at 100%, the remaining steps skipped.
    Promote,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Abort => "abort",
            Command::Promote => "promote",
        })
    }
}

/// `switchyard canary pause|resume|abort|promote FN`, by `actor` at `now`. Pausing a paused
/// rollout or resuming a progressing one is nothing to do; any of them without a rollout in
/// flight is refused.
pub fn command(
    function: &Function,
    command: Command,
    by: By<'_>,
    readings_now: &BTreeMap<String, Reading>,
) -> Result<Outcome, RolloutError> {
    let By { now, actor, reason } = by;
    let name = function.metadata.name.clone().unwrap_or_default();
    let Some((plan, status)) = in_flight(function) else {
        return Err(RolloutError::NoneInFlight {
            function: name,
            last: view(function).map(|s| {
                format!(
                    "of {}: {}{}",
                    s.canary,
                    s.phase,
                    s.reason.map(|r| format!(", {r}")).unwrap_or_default()
                )
            }),
        });
    };
    let label = step_label(&plan.steps, status.step);
    let by = |what: &str| {
        let mut s = format!("{what} at {label} by {actor}");
        if let Some(r) = reason {
            s.push_str(&format!(": {r}"));
        }
        s
    };
    let phase = status.phase;
    let (step, said) = match (command, phase) {
        (Command::Pause, RolloutPhase::Paused) | (Command::Resume, RolloutPhase::Progressing) => {
            return Ok(Outcome::Unchanged(format!(
                "{name}: the rollout of {} is already {} ({label}), nothing to change",
                plan.canary,
                phase.to_string().to_lowercase()
            )))
        }
        (Command::Pause, _) => (Step::Pause, by("paused")),
        (Command::Resume, _) => (Step::Resume, by("resumed")),
        (Command::Abort, _) => (Step::Abort(&[]), by("aborted")),
        (Command::Promote, _) => (Step::Done(&[]), by("promoted")),
    };
    let (abort, done) = (plan.traffic(0), plan.traffic(TOTAL_PPM));
    let step = match step {
        Step::Abort(_) => Step::Abort(&abort),
        Step::Done(_) => Step::Done(&done),
        other => other,
    };
    let who = Who {
        now,
        actor,
        reason: said,
    };
    Ok(Outcome::Write(Box::new(transition(
        function,
        &plan,
        step,
        who,
        readings_now,
    ))))
}

#[cfg(test)]
mod tests;
