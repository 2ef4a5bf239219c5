//! The automated canary's judgment (docs/canary.md): a step machine that takes the plan, the
//! rollout's progress, the canary's and the baseline's counts since the step began and `now`,
//! and returns what to do next — wait, advance one step, abort, pause, or finish — with a
//! reason that carries the figures.
//!
//! Nothing here reads a clock or a replica: the decider gathers the replicas' readings
//! ([`step_counts`] subtracts them), calls [`decide`], and writes what it returns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

use crate::numbers::{Counts, Reading, VersionKey};
use crate::weight::{Percent, TOTAL_PPM};
use crate::TrafficTarget;

/// How a canary is rolled out and judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The version being rolled out.
    pub canary: String,
    /// The version it is compared with, and restored on abort.
    pub baseline: String,
    /// The canary's weight at each step, parts per million, strictly increasing in
    /// (0, 1,000,000]. A last step of 100% is the promotion itself (no baseline traffic is left
    /// to compare with), so it is reached, not held.
    pub steps: Vec<u32>,
    /// How long each step is held at least, milliseconds.
    pub hold_ms: u64,
    /// Requests each of canary and baseline must have served in the step before it can pass
    /// (at least 1: no traffic is never a pass). The canary also needs them before it can fail.
    pub min_requests: u64,
    /// How long a step may wait for enough requests before the rollout pauses, milliseconds
    /// (at least `hold_ms`; 10 × hold by default).
    pub max_wait_ms: u64,
    /// Limits relative to the baseline and absolute; `None` is not checked.
    pub limits: Limits,
}

/// The thresholds a canary must stay within, over the requests of the current step.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Limits {
    /// Percentage points the canary's error rate may exceed the baseline's by.
    pub max_error_increase_pp: Option<f64>,
    /// Milliseconds the canary's p99 may exceed the baseline's by.
    pub max_p99_increase_ms: Option<f64>,
    /// The canary's highest error rate, percent.
    pub max_error_rate_pct: Option<f64>,
    /// The canary's highest p99, milliseconds.
    pub max_p99_ms: Option<f64>,
}

/// Defaults of `switchyard canary` (docs/canary.md).
pub mod defaults {
    /// Steps, percent: 1, 5, 25, 50, 100.
    pub const STEPS_PPM: [u32; 5] = [10_000, 50_000, 250_000, 500_000, 1_000_000];
    /// Hold per step: 30 s.
    pub const HOLD_MS: u64 = 30_000;
    /// Requests per side per step: 200.
    pub const MIN_REQUESTS: u64 = 200;
    /// Error rate above the baseline's: 1 percentage point.
    pub const MAX_ERROR_INCREASE_PP: f64 = 1.0;
    /// p99 above the baseline's: 50 ms.
    pub const MAX_P99_INCREASE_MS: f64 = 50.0;
    /// Longest wait for requests, as a multiple of the hold: 10.
    pub const MAX_WAIT_HOLDS: u64 = 10;
}

impl Plan {
    /// A plan with the defaults of [`defaults`] for `canary` against `baseline`.
    pub fn new(canary: impl Into<String>, baseline: impl Into<String>) -> Plan {
        Plan {
            canary: canary.into(),
            baseline: baseline.into(),
            steps: defaults::STEPS_PPM.to_vec(),
            hold_ms: defaults::HOLD_MS,
            min_requests: defaults::MIN_REQUESTS,
            max_wait_ms: defaults::HOLD_MS * defaults::MAX_WAIT_HOLDS,
            limits: Limits {
                max_error_increase_pp: Some(defaults::MAX_ERROR_INCREASE_PP),
                max_p99_increase_ms: Some(defaults::MAX_P99_INCREASE_MS),
                max_error_rate_pct: None,
                max_p99_ms: None,
            },
        }
    }

    /// Checks the plan; the first problem found.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.canary == self.baseline {
            return Err(PlanError::SameVersion(self.canary.clone()));
        }
        let Some(&first) = self.steps.first() else {
            return Err(PlanError::NoSteps);
        };
        for &s in &self.steps {
            if s == 0 || s > TOTAL_PPM {
                return Err(PlanError::StepOutOfRange(s));
            }
        }
        for pair in self.steps.windows(2) {
            if pair[1] <= pair[0] {
                return Err(PlanError::NotIncreasing(pair[0], pair[1]));
            }
        }
        if first == TOTAL_PPM {
            return Err(PlanError::NothingToJudge);
        }
        if self.min_requests == 0 {
            return Err(PlanError::NoMinimum);
        }
        if self.max_wait_ms < self.hold_ms {
            return Err(PlanError::WaitBelowHold {
                max_wait_ms: self.max_wait_ms,
                hold_ms: self.hold_ms,
            });
        }
        let l = &self.limits;
        for (name, value) in [
            ("max error increase", l.max_error_increase_pp),
            ("max p99 increase", l.max_p99_increase_ms),
            ("max error rate", l.max_error_rate_pct),
            ("max p99", l.max_p99_ms),
        ] {
            if let Some(v) = value {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(PlanError::BadLimit { name, value: v });
                }
            }
        }
        Ok(())
    }

    /// The index of the last step that is held and judged: the last one, unless it is 100%
    /// (then the one before, whose pass is the promotion).
    pub fn last_judged(&self) -> usize {
        match self.steps.last() {
            Some(&TOTAL_PPM) => self.steps.len().saturating_sub(2),
            _ => self.steps.len().saturating_sub(1),
        }
    }

    /// The traffic with the canary at `canary_ppm` and the baseline holding the rest.
    pub fn traffic(&self, canary_ppm: u32) -> Vec<TrafficTarget> {
        let canary_ppm = canary_ppm.min(TOTAL_PPM);
        vec![
            TrafficTarget::new(self.baseline.clone(), TOTAL_PPM - canary_ppm),
            TrafficTarget::new(self.canary.clone(), canary_ppm),
        ]
    }
}

/// Why a plan cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// Canary and baseline are one version.
    #[error("the canary {0} is the baseline")]
    SameVersion(String),
    /// No step.
    #[error("a canary needs at least one step")]
    NoSteps,
    /// A step outside (0%, 100%].
    #[error("step {} is not above 0% and at most 100%", Percent(*.0))]
    StepOutOfRange(u32),
    /// Two steps not strictly increasing.
    #[error("steps must strictly increase, got {} then {}", Percent(*.0), Percent(*.1))]
    NotIncreasing(u32, u32),
    /// Only a 100% step: nothing to compare.
    #[error("the first step is 100%: nothing would be judged (use promote)")]
    NothingToJudge,
    /// `min_requests` of 0 would pass a step without traffic.
    #[error("min requests must be at least 1, got 0")]
    NoMinimum,
    /// `max_wait` shorter than the hold.
    #[error("max wait {max_wait_ms} ms is shorter than the hold {hold_ms} ms")]
    WaitBelowHold {
        /// The max wait given.
        max_wait_ms: u64,
        /// The hold given.
        hold_ms: u64,
    },
    /// A duration that does not parse, or is out of range.
    #[error(
        "{name} {value:?} is not a duration from 1ms to 24h (like 500ms, 30s, 5m, 1h30m): {why}"
    )]
    Duration {
        /// Which duration.
        name: &'static str,
        /// Its value (cut to 80 characters).
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A negative (or not finite) threshold.
    #[error("{name} must not be negative, got {value}")]
    BadLimit {
        /// Which threshold.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

/// Where a rollout is: the step whose weight is live, and when it began. A paused rollout is
/// not judged; resuming it starts its step again (a new `step_started_ms` and new readings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Index into [`Plan::steps`] of the live step.
    pub step: usize,
    /// When the step's weight was written, epoch milliseconds.
    pub step_started_ms: i64,
}

impl Progress {
    /// Milliseconds of the step's hold still to run at `now_ms` (0 once it is over), for a
    /// live view.
    pub fn hold_left_ms(&self, plan: &Plan, now_ms: i64) -> u64 {
        let elapsed = u64::try_from(now_ms.saturating_sub(self.step_started_ms)).unwrap_or(0);
        plan.hold_ms.saturating_sub(elapsed)
    }
}

/// The canary's and the baseline's counts since the step began, summed over replicas.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StepCounts {
    /// The canary's.
    pub canary: Counts,
    /// The baseline's.
    pub baseline: Counts,
}

/// What the decider does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing yet: holding, or waiting for requests.
    Wait {
        /// What it waits for, with the figures.
        reason: String,
    },
    /// Write `traffic` and start step `to` (always the next one).
    Advance {
        /// The step that starts.
        to: usize,
        /// The traffic of that step.
        traffic: Vec<TrafficTarget>,
        /// Why, with the figures of the step that passed.
        reason: String,
    },
    /// A breach: write `traffic` (the baseline at 100%, the canary at 0%) and end the rollout.
    Abort {
        /// The baseline at 100%.
        traffic: Vec<TrafficTarget>,
        /// The breach, with the figures.
        reason: String,
    },
    /// Not enough requests within `max_wait`: stop judging, leave the weights as they are.
    Pause {
        /// Why, with the figures.
        reason: String,
    },
    /// The last judged step passed: write `traffic` (the canary at 100%) and end the rollout.
    Done {
        /// The canary at 100%.
        traffic: Vec<TrafficTarget>,
        /// Why, with the figures.
        reason: String,
    },
}

impl Action {
    /// The reason, whatever the action.
    pub fn reason(&self) -> &str {
        match self {
            Action::Wait { reason }
            | Action::Advance { reason, .. }
            | Action::Abort { reason, .. }
            | Action::Pause { reason }
            | Action::Done { reason, .. } => reason,
        }
    }
}

/// The next action of a valid `plan` at `progress`, given the counts since the step began and
/// `now` (epoch milliseconds). The rules, in order (docs/canary.md):
///
/// 1. Once the canary has `min_requests`: a breach of an absolute limit, or (once the baseline
///    has them too) of a limit relative to the baseline, aborts, whatever the time.
/// 2. Before the hold is over: wait.
/// 3. Either side below `min_requests`: wait, and pause once `max_wait` has passed.
/// 4. Otherwise the step passed: advance to the next step, or finish after the last judged one.
pub fn decide(plan: &Plan, progress: &Progress, counts: &StepCounts, now_ms: i64) -> Action {
    let step = progress.step.min(plan.steps.len().saturating_sub(1));
    let weight = plan.steps.get(step).copied().unwrap_or(TOTAL_PPM);
    let label = format!(
        "step {}/{} at {}",
        step + 1,
        plan.steps.len(),
        Percent(weight)
    );
    let (c, b) = (&counts.canary, &counts.baseline);
    let min = plan.min_requests.max(1);
    if c.requests >= min {
        if let Some(breach) = breach(plan, c, (b.requests >= min).then_some(b)) {
            return Action::Abort {
                traffic: plan.traffic(0),
                reason: breach,
            };
        }
    }
    let elapsed = u64::try_from(now_ms.saturating_sub(progress.step_started_ms)).unwrap_or(0);
    let left = progress.hold_left_ms(plan, now_ms);
    if left > 0 {
        return Action::Wait {
            reason: format!(
                "{label}: holding, {} left, {}",
                seconds(left),
                figures(plan, c, b)
            ),
        };
    }
    if c.requests < min || b.requests < min {
        let counts = format!(
            "canary {}/{}, baseline {}/{}",
            thousands(c.requests),
            thousands(min),
            thousands(b.requests),
            thousands(min)
        );
        if elapsed >= plan.max_wait_ms {
            return Action::Pause {
                reason: format!(
                    "{label}: not enough requests after {}: {counts}",
                    seconds(elapsed)
                ),
            };
        }
        return Action::Wait {
            reason: format!("{label}: waiting for requests, {counts}"),
        };
    }
    let passed = format!("{label} passed: {}", figures(plan, c, b));
    if step >= plan.last_judged() {
        Action::Done {
            traffic: plan.traffic(TOTAL_PPM),
            reason: passed,
        }
    } else {
        let to = step + 1;
        let next = plan.steps[to];
        if next == TOTAL_PPM {
            // The 100% step is the promotion: reached, never held.
            Action::Done {
                traffic: plan.traffic(TOTAL_PPM),
                reason: passed,
            }
        } else {
            Action::Advance {
                to,
                traffic: plan.traffic(next),
                reason: passed,
            }
        }
    }
}

/// The first limit the canary's counts `c` break, against the baseline's `b` when it has
/// enough requests to compare with.
fn breach(plan: &Plan, c: &Counts, b: Option<&Counts>) -> Option<String> {
    let who = format!("canary {}", plan.canary);
    let n = thousands(c.requests);
    let c_err = c.error_rate().unwrap_or(0.0) * 100.0;
    let c_p99 = c.p99_ms();
    let l = &plan.limits;
    if let Some(max) = l.max_error_rate_pct {
        if c_err > max {
            return Some(format!(
                "{who}: error rate {} over {n} requests (limit {})",
                pct(c_err),
                pct(max)
            ));
        }
    }
    if let (Some(max), Some(p99)) = (l.max_p99_ms, c_p99) {
        if p99 > max {
            return Some(format!(
                "{who}: p99 {} over {n} requests (limit {})",
                ms(p99),
                ms(max)
            ));
        }
    }
    let b = b?;
    if let Some(max) = l.max_error_increase_pp {
        let b_err = b.error_rate().unwrap_or(0.0) * 100.0;
        if c_err - b_err > max {
            return Some(format!(
                "{who}: error rate {} vs baseline {} over {n} requests (limit +{} pp)",
                pct(c_err),
                pct(b_err),
                trim(max)
            ));
        }
    }
    if let (Some(max), Some(p99), Some(b_p99)) = (l.max_p99_increase_ms, c_p99, b.p99_ms()) {
        if p99 - b_p99 > max {
            return Some(format!(
                "{who}: p99 {} vs baseline {} over {n} requests (limit +{})",
                ms(p99),
                ms(b_p99),
                ms(max)
            ));
        }
    }
    None
}

/// `canary 41 requests, 0.0% errors, p99 12ms; baseline …` for wait and pass reasons.
fn figures(plan: &Plan, c: &Counts, b: &Counts) -> String {
    let side = |name: &str, version: &str, x: &Counts| {
        let mut s = format!("{name} {version} {} requests", thousands(x.requests));
        if let Some(e) = x.error_rate() {
            let _ = write!(s, ", {} errors", pct(e * 100.0));
        }
        if let Some(p) = x.p99_ms() {
            let _ = write!(s, ", p99 {}", ms(p));
        }
        s
    };
    format!(
        "{}; {}",
        side("canary", &plan.canary, c),
        side("baseline", &plan.baseline, b)
    )
}

/// `1,204`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A percentage with one decimal: `12.4%`.
fn pct(p: f64) -> String {
    format!("{p:.1}%")
}

/// A number without trailing zeros: `1`, `0.5`.
fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Milliseconds, whole from 10 ms: `412ms`, `3.1ms`.
fn ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.1}ms")
    } else {
        format!("{x:.0}ms")
    }
}

/// A duration in whole seconds, rounded up: `12s`, or `5m` / `2m30s` from a minute.
fn seconds(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// The canary's and the baseline's counts since the step began, summed over the replicas
/// `now` (replica name → its latest reading), given the readings taken when the step began
/// (`at_start`, same keys) and the step's start, epoch milliseconds. Per replica:
///
/// - same run as its reading at the step's start: the difference;
/// - restarted since, or not seen at the step's start, and its run began at or after the
///   step's start: everything it counted (all of it is in the step);
/// - otherwise (its counts from before the step cannot be told apart): left out.
pub fn step_counts(
    function: &str,
    plan: &Plan,
    at_start: &BTreeMap<String, Reading>,
    step_started_ms: i64,
    now: &BTreeMap<String, Reading>,
) -> StepCounts {
    let key = |version: &str| VersionKey {
        function: function.to_string(),
        version: version.to_string(),
    };
    let (canary, baseline) = (key(&plan.canary), key(&plan.baseline));
    let mut out = StepCounts::default();
    for (replica, reading) in now {
        let since = match at_start.get(replica).and_then(|start| reading.since(start)) {
            Some(diff) => diff,
            None if started_ms(&reading.started_at).is_some_and(|t| t >= step_started_ms) => {
                reading.totals.clone()
            }
            None => continue,
        };
        if let Some(c) = since.get(&canary) {
            out.canary.add(c);
        }
        if let Some(b) = since.get(&baseline) {
            out.baseline.add(b);
        }
    }
    out
}

/// An RFC 3339 time as epoch milliseconds.
fn started_ms(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests;
