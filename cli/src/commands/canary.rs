//! `canary FN VERSION …` and `canary status|pause|resume|abort|promote FN`: the automated
//! canary (issue 15, docs/canary.md). The CLI only starts, steers and shows a rollout; the
//! routers judge it from live traffic and write its steps.
//!
//! A rollout's write carries the traffic, the history and `status.rollout` in one object
//! (the Function CRD has no status subresource). The [`Store`] trait reads and writes specs
//! only, so these verbs read and write whole Functions through [`Rollouts`], beside the store,
//! then wait for the routers through the store like every write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_core::canary::{self, Action as Decision};
use switchyard_core::numbers::{Counts, Reading};
use switchyard_core::plan::{self, VersionState};
use switchyard_core::rollout::{self, By, Outcome, RolloutError};
use switchyard_core::traffic::{self, Assignment};
use switchyard_core::weight::{parse_percent, Percent};
use switchyard_core::{Function, RolloutPhase, RolloutSpec, RolloutStatus, TOTAL_PPM};
use switchyard_store::{LocalStore, StoreError};

use crate::args::{self, CanaryVerb, Format};
use crate::exit::{self, fail, Code};
use crate::output;
use crate::store::{FunctionState, Router, Store};
use crate::write::ATTEMPTS;

/// Whole Functions, status included, where the store keeps them.
pub enum Rollouts {
    /// A cluster: the Function through the main endpoint.
    Kube(kube::Client),
    /// A local store: the Function in its file, under the store's lock.
    Dir(LocalStore),
}

/// What a conditional write of a whole Function did.
enum Wrote {
    Done(Box<Function>),
    Conflict,
}

impl Rollouts {
    /// The Function `f` names, as stored now.
    pub async fn read(&self, f: &FunctionState) -> anyhow::Result<Function> {
        match self {
            Rollouts::Kube(client) => {
                let api: kube::Api<Function> = kube::Api::namespaced(client.clone(), &f.namespace);
                api.get(&f.name)
                    .await
                    .map_err(crate::store::kube::api)
                    .map_err(|e| e.context(format!("reading function {}", f.name)))
            }
            Rollouts::Dir(store) => store
                .read(&f.name)?
                .function
                .ok_or_else(|| fail(Code::Invalid, format!("function {} not found", f.name))),
        }
    }

    /// Writes `next` only if the Function is still as `current` was read.
    async fn write(&self, current: &Function, next: &Function) -> anyhow::Result<Wrote> {
        let name = current.metadata.name.clone().unwrap_or_default();
        match self {
            Rollouts::Kube(client) => {
                let ns = current.metadata.namespace.clone().unwrap_or_default();
                let api: kube::Api<Function> = kube::Api::namespaced(client.clone(), &ns);
                let mut body = next.clone();
                body.metadata.resource_version = current.metadata.resource_version.clone();
                switchyard_core::protocol::annotate(
                    &mut body.metadata,
                    &next.spec,
                    crate::store::kube::ROUTERS_PENDING,
                );
                match api
                    .replace(&name, &kube::api::PostParams::default(), &body)
                    .await
                {
                    Ok(f) => Ok(Wrote::Done(Box::new(f))),
                    Err(e) if crate::store::kube::code(&e) == Some(409) => Ok(Wrote::Conflict),
                    Err(e) => Err(crate::store::kube::api(e))
                        .map_err(|e| e.context(format!("writing function {name}"))),
                }
            }
            Rollouts::Dir(store) => {
                let mut doc = store.read(&name)?;
                let expected = current
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default();
                doc.function = Some(next.clone());
                match store.write(&name, &expected, doc) {
                    Ok(doc) => Ok(Wrote::Done(Box::new(doc.function.ok_or_else(|| {
                        anyhow::anyhow!("function {name} was just written")
                    })?))),
                    Err(StoreError::Conflict { .. }) => Ok(Wrote::Conflict),
                    Err(e @ StoreError::LockTimeout { .. }) => {
                        Err(fail(Code::Timeout, e.to_string()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// The store's view of a Function written whole, for the router wait.
fn state_of(f: &Function, namespace: &str) -> FunctionState {
    FunctionState {
        name: f.metadata.name.clone().unwrap_or_default(),
        namespace: f
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
        spec: f.spec.clone(),
        revision: f.metadata.resource_version.clone().unwrap_or_default(),
        generation: f.metadata.generation.unwrap_or_default(),
        written_at: switchyard_core::protocol::written_at(&f.metadata),
        uid: f.metadata.uid.clone().unwrap_or_default(),
        created: f.metadata.creation_timestamp.as_ref().map(|t| t.0),
        status: f.status.clone(),
    }
}

/// The plan the flags ask for, checked before the store is touched (canary and baseline are
/// placeholders until the versions are resolved).
#[derive(Debug, Clone)]
pub struct Prepared {
    spec: RolloutSpec,
}

/// A limit flag: a value, or `off` (not checked).
fn limit(text: &str) -> Option<&str> {
    let t = text.trim();
    (!t.eq_ignore_ascii_case("off") && !t.eq_ignore_ascii_case("none")).then_some(t)
}

/// A number flag (`--max-error-increase 1`), not negative.
fn number(flag: &str, text: &str) -> anyhow::Result<f64> {
    match text.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(n),
        _ => Err(fail(
            Code::Invalid,
            format!("{flag} {text:?}: expected a number not below 0, or off"),
        )),
    }
}

/// Reads and checks the flags of `canary FN VERSION` (nothing for the subcommands).
pub fn prepare(args: &args::Canary) -> anyhow::Result<Option<Prepared>> {
    if args.verb.is_some() {
        return Ok(None);
    }
    let mut steps = Vec::with_capacity(args.steps.len());
    for s in &args.steps {
        steps.push(
            parse_percent(s).map_err(|e| fail(Code::Invalid, format!("--steps {s:?}: {e}")))?,
        );
    }
    let spec = RolloutSpec {
        canary: "0.0.1".into(),
        baseline: "0.0.0".into(),
        steps,
        hold: args.hold.trim().to_string(),
        min_requests: args.min_requests,
        max_wait: args.max_wait.as_ref().map(|w| w.trim().to_string()),
        max_error_increase: limit(&args.max_error_increase)
            .map(|v| number("--max-error-increase", v))
            .transpose()?,
        max_p99_increase: limit(&args.max_p99_increase).map(str::to_string),
        max_error_rate: args
            .max_error_rate
            .as_deref()
            .and_then(limit)
            .map(|v| number("--max-error-rate", v))
            .transpose()?,
        max_p99: args.max_p99.as_deref().and_then(limit).map(str::to_string),
    };
    spec.plan()
        .map_err(|e| fail(Code::Invalid, format!("invalid canary plan: {e}")))?;
    if spec.max_error_rate.is_some_and(|r| r > 100.0) {
        return Err(fail(
            Code::Invalid,
            "invalid canary plan: --max-error-rate is a percentage, at most 100",
        ));
    }
    Ok(Some(Prepared { spec }))
}

/// The exit code of a refused transition.
fn refused(e: RolloutError) -> anyhow::Error {
    let code = match &e {
        RolloutError::Plan(_) => Code::Invalid,
        RolloutError::Refused(p) => exit::plan_code(p),
        RolloutError::NoBaseline(_)
        | RolloutError::InFlight { .. }
        | RolloutError::NoneInFlight { .. } => Code::Refused,
    };
    fail(code, e.to_string())
}

/// Each live replica's latest reading of its counters, by replica: what a step starts from
/// (a replica that has published no numbers yet reads as zero: `rollout::reading_of`).
fn readings(routers: &[Router]) -> BTreeMap<String, Reading> {
    routers
        .iter()
        .filter(|r| r.live)
        .filter_map(|r| Some((r.name.clone(), rollout::reading_of(r.report.as_ref()?))))
        .collect()
}

/// `canary …`: starts a rollout, or runs a subcommand.
pub async fn run(
    store: &dyn Store,
    rollouts: &Rollouts,
    args: args::Canary,
    prepared: Option<Prepared>,
) -> anyhow::Result<()> {
    match args.verb {
        Some(CanaryVerb::Status(s)) => return status(store, rollouts, s).await,
        Some(CanaryVerb::Pause(c)) => {
            return control(store, rollouts, c, rollout::Command::Pause).await
        }
        Some(CanaryVerb::Resume(c)) => {
            return control(store, rollouts, c, rollout::Command::Resume).await
        }
        Some(CanaryVerb::Abort(c)) => {
            return control(store, rollouts, c, rollout::Command::Abort).await
        }
        Some(CanaryVerb::Promote(c)) => {
            return control(store, rollouts, c, rollout::Command::Promote).await
        }
        None => {}
    }
    let (Some(name), Some(version), Some(prepared)) = (&args.function, &args.version, prepared)
    else {
        return Err(fail(
            Code::Invalid,
            "canary takes FN VERSION, or status|pause|resume|abort|promote FN",
        ));
    };
    let write = &args.write;
    let plan_of = |f: &Function, names: &[VersionState]| -> anyhow::Result<RolloutSpec> {
        let known = names.iter().map(|v| v.version.as_str());
        let resolve = |word: &str| -> anyhow::Result<String> {
            let one = [Assignment {
                name: word.to_string(),
                weight: TOTAL_PPM,
            }];
            traffic::resolve(name, &one, Some(&f.spec), known.clone())
                .map(|r| r[0].version.clone())
                .map_err(|e| exit::plan(plan::PlanError::Traffic(e)))
        };
        let canary = resolve(version)?;
        let baseline = match &args.baseline {
            Some(b) => resolve(b)?,
            None => rollout::baseline(&f.spec)
                .map(str::to_string)
                .ok_or_else(|| refused(RolloutError::NoBaseline(name.clone())))?,
        };
        Ok(RolloutSpec {
            canary,
            baseline,
            ..prepared.spec.clone()
        })
    };
    // A canary whose shadow answers differed gets no traffic unless forced, as for promote
    // and traffic (issue 16).
    let shadows = super::shadow::reported(store, args.force).await?;
    let shadows: Vec<_> = shadows.iter().collect();
    let outcome = transition(store, rollouts, name, write, |f, versions, by, readings| {
        let spec = plan_of(f, versions)?;
        switchyard_core::shadow::refuse_weight(&rollout::function_key(f), &spec.canary, &shadows)
            .map_err(|e| fail(Code::Refused, e.to_string()))?;
        rollout::start(f, &spec, versions, args.force, by, readings).map_err(refused)
    })
    .await?;
    match outcome {
        Some((after, sent, routers)) => {
            let s = after.status.as_ref().and_then(|s| s.rollout.as_ref());
            let line = format!(
                "{name}: canary {} started against {}: {} ({})",
                s.map(|s| s.canary.as_str()).unwrap_or_default(),
                s.map(|s| s.baseline.as_str()).unwrap_or_default(),
                s.map(|s| rollout::step_label(&s.steps, s.step))
                    .unwrap_or_default(),
                plan::describe(&after.spec.traffic)
            );
            finish(store, &after, routers, sent, write, line).await?;
        }
        None if write.dry_run => return Ok(()),
        None => {}
    }
    if args.watch {
        return follow(store, rollouts, name, args.output.format).await;
    }
    if args.output.format != Format::Table {
        let f = super::function(store, name).await?;
        let view = view(store, rollouts, &f).await?;
        output::print(args.output.format, &view, String::new)?;
    }
    Ok(())
}

/// `canary pause|resume|abort|promote FN`.
async fn control(
    store: &dyn Store,
    rollouts: &Rollouts,
    args: args::CanaryControl,
    command: rollout::Command,
) -> anyhow::Result<()> {
    let name = &args.function;
    let outcome = transition(store, rollouts, name, &args.write, |f, _, by, readings| {
        rollout::command(f, command, by, readings).map_err(refused)
    })
    .await?;
    if let Some((after, sent, routers)) = outcome {
        let s = after.status.as_ref().and_then(|s| s.rollout.as_ref());
        let line = format!(
            "{name}: canary {} {}: {}",
            s.map(|s| s.canary.as_str()).unwrap_or_default(),
            match command {
                rollout::Command::Pause => "paused",
                rollout::Command::Resume => "resumed",
                rollout::Command::Abort => "aborted",
                rollout::Command::Promote => "promoted",
            },
            plan::describe(&after.spec.traffic)
        );
        finish(store, &after, routers, sent, &args.write, line).await?;
    }
    Ok(())
}

/// A written transition: the Function after it, when it landed, the replicas read before.
type Landed = (Function, Instant, Vec<Router>);

/// Reads the Function whole, its versions and the live replicas' readings, decides with
/// `decide`, and writes conditionally, re-reading on a conflict up to [`ATTEMPTS`] times.
/// `None` when there is nothing to write (said on stdout) or on a dry run (the diff printed).
async fn transition(
    store: &dyn Store,
    rollouts: &Rollouts,
    name: &str,
    write: &args::Write,
    decide: impl Fn(
        &Function,
        &[VersionState],
        By<'_>,
        &BTreeMap<String, Reading>,
    ) -> anyhow::Result<Outcome>,
) -> anyhow::Result<Option<Landed>> {
    for attempt in 0..ATTEMPTS {
        let state = super::function(store, name).await?;
        let (current, versions, routers) = futures::try_join!(
            rollouts.read(&state),
            store.versions(name),
            store.reports(Some(&state))
        )?;
        let states: Vec<VersionState> = versions.iter().map(|v| v.state()).collect();
        let actor = store.actor();
        let by = By {
            now: jiff::Timestamp::now(),
            actor: &actor,
            reason: write.reason.as_deref(),
        };
        let next = match decide(&current, &states, by, &readings(&routers))? {
            Outcome::Unchanged(line) => {
                output::line(format_args!("{line}"));
                return Ok(None);
            }
            Outcome::Write(next) => *next,
        };
        if write.dry_run {
            dry_run(store, &current, &next, name).print();
            return Ok(None);
        }
        match rollouts.write(&current, &next).await? {
            Wrote::Done(after) => return Ok(Some((*after, Instant::now(), routers))),
            Wrote::Conflict => {
                tokio::time::sleep(Duration::from_millis(5 + 10 * u64::from(attempt))).await;
            }
        }
    }
    Err(fail(
        Code::Conflict,
        format!(
            "function {name} kept changing concurrently ({ATTEMPTS} attempts); this command wrote nothing, re-run it"
        ),
    ))
}

/// The dry run of a transition: the plan, then the diff of the spec.
fn dry_run(store: &dyn Store, before: &Function, after: &Function, name: &str) -> output::Diff {
    let mut d = output::Diff::new(format!("function {name} in {}:", store.location()));
    if let Some(r) = after.spec.rollout.as_deref() {
        if before.spec.rollout.as_deref() != Some(r) {
            for line in plan_lines(r) {
                d.added(line);
            }
        }
    }
    crate::write::diff_into(&mut d, &before.spec, &after.spec);
    let phase = |f: &Function| {
        rollout::view(f)
            .map(|s| format!("{} at {}", s.phase, rollout::step_label(&s.steps, s.step)))
    };
    d.field("rollout", phase(before), phase(after));
    d
}

/// The plan in lines: `rollout: canary 1.3.0 against 1.2.0`, the steps, the rules.
fn plan_lines(r: &RolloutSpec) -> Vec<String> {
    let steps: Vec<String> = r.steps.iter().map(|s| Percent(*s).to_string()).collect();
    vec![
        format!(
            "rollout: canary {} against baseline {}",
            r.canary, r.baseline
        ),
        format!(
            "rollout: steps {} holding {} each; {} requests each side per step; pause after {}",
            steps.join(" → "),
            r.hold,
            r.min_requests,
            r.max_wait
                .clone()
                .unwrap_or_else(|| "10 × hold".to_string())
        ),
        format!("rollout: abort when {}", limits(r)),
    ]
}

/// The limits a plan checks: `errors > baseline +1 pp, p99 > baseline +50ms`.
fn limits(r: &RolloutSpec) -> String {
    let mut rules = Vec::new();
    if let Some(v) = r.max_error_increase {
        rules.push(format!("errors > baseline +{v} pp"));
    }
    if let Some(v) = &r.max_p99_increase {
        rules.push(format!("p99 > baseline +{v}"));
    }
    if let Some(v) = r.max_error_rate {
        rules.push(format!("errors > {v}%"));
    }
    if let Some(v) = &r.max_p99 {
        rules.push(format!("p99 > {v}"));
    }
    if rules.is_empty() {
        "nothing (every limit is off)".to_string()
    } else {
        rules.join(", ")
    }
}

/// After a write: waits for the routers (unless `--no-wait`) and prints the one line.
async fn finish(
    store: &dyn Store,
    after: &Function,
    routers: Vec<Router>,
    sent: Instant,
    write: &args::Write,
    line: String,
) -> anyhow::Result<()> {
    crate::write::confirm(
        store,
        &state_of(after, ""),
        crate::wait::Ahead {
            routers: Some(routers),
            reports: None,
        },
        sent,
        write,
        &line,
    )
    .await
}

/// One side's counts over the step, as `canary status` shows them.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Side {
    version: String,
    /// Weight now, ppm.
    weight: u32,
    requests: u64,
    failures: u64,
    /// 0.0 to 1.0; `null` without requests.
    error_rate: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Side {
    fn of(version: &str, weight: u32, c: &Counts) -> Side {
        Side {
            version: version.to_string(),
            weight,
            requests: c.requests,
            failures: c.failures,
            error_rate: c.error_rate(),
            p50_ms: c.p50_ms(),
            p99_ms: c.p99_ms(),
        }
    }
}

/// A rollout as `canary status`, `status` and `describe` show it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CanaryView {
    canary: String,
    baseline: String,
    /// `Progressing`, `Paused`, `Succeeded`, `Aborted` or `Ended`.
    pub(crate) phase: RolloutPhase,
    /// 1-based.
    step: u32,
    steps: usize,
    /// The live step's canary weight, ppm.
    step_weight: u32,
    started_at: String,
    step_started_at: String,
    /// Milliseconds of the step's hold still to run; only while progressing.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_left_ms: Option<u64>,
    /// Over the requests of the step, all live replicas; only while in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    canary_step: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_step: Option<Side>,
    /// `wait`, `advance`, `abort`, `pause` or `done`: what the routers' rule says now; only
    /// while progressing.
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'static str>,
    /// The rule's reason now, while progressing; else the last transition's.
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict_reason: Option<String>,
    /// The last transition's reason, who made it and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    actor: String,
    updated_at: String,
    live_routers: usize,
}

/// The rollout of `f` (read whole), judged as the routers would judge it now from the live
/// replicas' reports; `None` when it never had one.
pub(crate) fn canary_view(
    f: &Function,
    routers: &[Router],
    now: jiff::Timestamp,
) -> Option<CanaryView> {
    let status: RolloutStatus = rollout::view(f)?;
    let key = rollout::function_key(f);
    let readings_now = readings(routers);
    let plan = f
        .spec
        .rollout
        .as_deref()
        .filter(|_| !status.phase.finished())
        .and_then(|r| r.plan().ok());
    let step_weight = status
        .steps
        .get(status.step as usize)
        .copied()
        .unwrap_or(TOTAL_PPM);
    let mut v = CanaryView {
        canary: status.canary.clone(),
        baseline: status.baseline.clone(),
        phase: status.phase,
        step: status.step + 1,
        steps: status.steps.len(),
        step_weight,
        started_at: status.started_at.clone(),
        step_started_at: status.step_started_at.clone(),
        hold_left_ms: None,
        canary_step: None,
        baseline_step: None,
        verdict: None,
        verdict_reason: status.reason.clone(),
        reason: status.reason.clone(),
        actor: status.actor.clone(),
        updated_at: status.updated_at.clone(),
        live_routers: routers.iter().filter(|r| r.live).count(),
    };
    if let Some(plan) = plan {
        let step_started_ms = status
            .step_started_at
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or_default();
        let progress = canary::Progress {
            step: status.step as usize,
            step_started_ms,
        };
        let at_start = rollout::readings_at_start(&status, &key, &plan);
        let counts = canary::step_counts(&key, &plan, &at_start, step_started_ms, &readings_now);
        v.canary_step = Some(Side::of(
            &plan.canary,
            f.spec.weight_of(&plan.canary),
            &counts.canary,
        ));
        v.baseline_step = Some(Side::of(
            &plan.baseline,
            f.spec.weight_of(&plan.baseline),
            &counts.baseline,
        ));
        if status.phase == RolloutPhase::Progressing {
            let now_ms = now.as_millisecond();
            v.hold_left_ms = Some(progress.hold_left_ms(&plan, now_ms));
            let d = canary::decide(&plan, &progress, &counts, now_ms);
            v.verdict = Some(match d {
                Decision::Wait { .. } => "wait",
                Decision::Advance { .. } => "advance",
                Decision::Abort { .. } => "abort",
                Decision::Pause { .. } => "pause",
                Decision::Done { .. } => "done",
            });
            v.verdict_reason = Some(d.reason().to_string());
        }
    }
    Some(v)
}

/// The rollout's lines of text (`canary status`; indented in `status` and `describe`).
pub(crate) fn view_text(v: &CanaryView) -> String {
    let mut out = format!(
        "Canary:      {} against {}, {}, step {}/{} at {}\n",
        v.canary,
        v.baseline,
        v.phase,
        v.step,
        v.steps,
        Percent(v.step_weight)
    );
    if let Some(left) = v.hold_left_ms {
        out.push_str(&format!(
            "Hold:        {}\n",
            if left == 0 {
                "over".to_string()
            } else {
                format!("{}s left", left.div_ceil(1000))
            }
        ));
    }
    if let (Some(c), Some(b)) = (&v.canary_step, &v.baseline_step) {
        let mut t =
            output::Table::new(&["", "VERSION", "WEIGHT", "REQUESTS", "ERRORS", "P50", "P99"]);
        for (role, s) in [("canary", c), ("baseline", b)] {
            t.row(vec![
                role.to_string(),
                s.version.clone(),
                Percent(s.weight).to_string(),
                s.requests.to_string(),
                s.error_rate.map_or("-".into(), crate::live::percent),
                s.p50_ms.map_or("-".into(), crate::live::millis),
                s.p99_ms.map_or("-".into(), crate::live::millis),
            ]);
        }
        out.push_str(&format!(
            "This step ({} live router{}):\n",
            v.live_routers,
            if v.live_routers == 1 { "" } else { "s" }
        ));
        out.push_str(&t.render());
    }
    if let (Some(verdict), Some(reason)) = (v.verdict, &v.verdict_reason) {
        out.push_str(&format!("Verdict:     {verdict}: {reason}\n"));
    }
    if let Some(r) = &v.reason {
        out.push_str(&format!(
            "Last:        {r} ({}, {})\n",
            v.actor, v.updated_at
        ));
    }
    out
}

/// Reads `f` whole and the replicas' reports, and makes its view.
async fn view(
    store: &dyn Store,
    rollouts: &Rollouts,
    f: &FunctionState,
) -> anyhow::Result<CanaryView> {
    let (whole, routers) = futures::try_join!(rollouts.read(f), store.reports(Some(f)))?;
    canary_view(&whole, &routers, jiff::Timestamp::now()).ok_or_else(|| {
        fail(
            Code::Invalid,
            format!(
                "function {} has no rollout (start one with: switchyard canary {} VERSION)",
                f.name, f.name
            ),
        )
    })
}

/// `canary status FN [--watch]`.
async fn status(
    store: &dyn Store,
    rollouts: &Rollouts,
    args: args::CanaryStatus,
) -> anyhow::Result<()> {
    if args.watch {
        return follow(store, rollouts, &args.function, args.output.format).await;
    }
    let f = super::function(store, &args.function).await?;
    let v = view(store, rollouts, &f).await?;
    output::print(args.output.format, &v, || view_text(&v))
}

/// Prints the rollout every second until it ends or pauses: exit 0 when the canary was
/// promoted, 3 otherwise (with the reason).
async fn follow(
    store: &dyn Store,
    rollouts: &Rollouts,
    name: &str,
    format: Format,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut first = true;
    // Redrawn in place on a terminal, as `status --watch` does; a separator line otherwise.
    let in_place = format == Format::Table && std::io::stdout().is_terminal();
    loop {
        tick.tick().await;
        let f = super::function(store, name).await?;
        let v = view(store, rollouts, &f).await?;
        if in_place {
            print!("\x1b[H\x1b[2J");
        } else if !first && format == Format::Table {
            output::line("---");
        }
        first = false;
        output::print(format, &v, || view_text(&v))?;
        match v.phase {
            RolloutPhase::Progressing => {}
            RolloutPhase::Succeeded => return Ok(()),
            phase => {
                return Err(fail(
                    Code::Refused,
                    format!(
                        "the rollout of {} is {}: {}",
                        v.canary,
                        phase.to_string().to_lowercase(),
                        v.reason.unwrap_or_default()
                    ),
                ))
            }
        }
    }
}
