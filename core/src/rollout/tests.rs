use super::*;
use crate::numbers::{bucket_of, Counts};
use crate::plan::VersionState;
use proptest::prelude::*;

const KEY: &str = "default/hello";

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

fn counts(requests: u64, failures: u64) -> Counts {
    Counts {
        requests,
        failures,
        latency: if requests > 0 {
            [(bucket_of(10_000), requests)].into()
        } else {
            Default::default()
        },
    }
}

/// One replica `r1` (run `run`) having served `canary` and `baseline` requests in all.
fn reading(run: &str, canary: u64, baseline: u64) -> BTreeMap<String, Reading> {
    failing(run, canary, 0, baseline)
}

/// The same with `failed` of the canary's requests failed.
fn failing(run: &str, canary: u64, failed: u64, baseline: u64) -> BTreeMap<String, Reading> {
    let key = |v: &str| VersionKey {
        function: KEY.to_string(),
        version: v.to_string(),
    };
    let totals = [
        (key("1.3.0"), counts(canary, failed)),
        (key("1.2.0"), counts(baseline, 0)),
    ]
    .into();
    [(
        "r1".to_string(),
        Reading {
            started_at: run.to_string(),
            totals,
        },
    )]
    .into()
}

fn versions() -> Vec<VersionState> {
    VersionState::all_ready(&["1.2.0", "1.3.0"])
}

fn by(ms: i64) -> By<'static> {
    By {
        now: at(ms),
        actor: "alice",
        reason: None,
    }
}

/// hello with 1.2.0 at 100% (stable), and a rollout of 1.3.0 started at t = 1 s.
fn started() -> Function {
    let f = Function::test("hello").with_weight("1.2.0", TOTAL_PPM);
    let mut f = f;
    f.spec.stable = Some("1.2.0".into());
    let plan = RolloutSpec::with_defaults("1.3.0", "1.2.0");
    match start(
        &f,
        &plan,
        &versions(),
        false,
        by(1_000),
        &reading("run1", 0, 50),
    )
    .unwrap()
    {
        Outcome::Write(f) => *f,
        Outcome::Unchanged(line) => panic!("{line}"),
    }
}

fn rollout(f: &Function) -> &RolloutStatus {
    f.status.as_ref().unwrap().rollout.as_ref().unwrap()
}

fn decision(f: &Function, counts_now: &BTreeMap<String, Reading>, now_ms: i64) -> Decision {
    let (plan, progress) = active(f).unwrap();
    let status = rollout(f);
    let at_start = readings_at_start(status, KEY, &plan);
    let c = canary::step_counts(KEY, &plan, &at_start, progress.step_started_ms, counts_now);
    canary::decide(&plan, &progress, &c, now_ms)
}

#[test]
fn a_start_writes_the_plan_step_one_the_status_and_one_history_entry() {
    let f = started();
    assert_eq!(
        f.spec.traffic,
        vec![
            crate::TrafficTarget::new("1.2.0", 990_000),
            crate::TrafficTarget::new("1.3.0", 10_000)
        ]
    );
    assert_eq!(f.spec.rollout.as_deref().unwrap().canary, "1.3.0");
    let s = rollout(&f);
    assert_eq!(s.phase, RolloutPhase::Progressing);
    assert_eq!(s.step, 0);
    assert_eq!(s.step_started_at, "1970-01-01T00:00:01.000Z");
    assert_eq!(s.at_start.len(), 1);
    assert_eq!(s.at_start[0].baseline.requests, 50);
    assert_eq!(s.at_start[0].canary, Counts::default());
    let h = f.spec.history.last().unwrap();
    assert_eq!(h.action, Action::Canary);
    assert!(h.moves_traffic());
    assert_eq!(
        h.reason.as_deref(),
        Some("started step 1/5 at 1%: canary 1.3.0 against baseline 1.2.0")
    );
    assert!(active(&f).is_some());
}

#[test]
fn the_same_plan_again_is_nothing_to_do_and_another_is_refused() {
    let f = started();
    let same = RolloutSpec::with_defaults("1.3.0", "1.2.0");
    let again = start(&f, &same, &versions(), false, by(2_000), &BTreeMap::new()).unwrap();
    assert!(matches!(again, Outcome::Unchanged(_)), "{again:?}");
    let mut other = same.clone();
    other.hold = "10s".into();
    let err = start(&f, &other, &versions(), false, by(2_000), &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "function hello already has a rollout of 1.3.0 in flight (step 1/5 at 1%, Progressing); abort it first (switchyard canary abort hello)"
    );
}

#[test]
fn a_start_refuses_unknown_unready_and_same_versions() {
    let f = Function::test("hello").with_weight("1.2.0", TOTAL_PPM);
    let go = |plan: &RolloutSpec, versions: &[VersionState]| {
        start(&f, plan, versions, false, by(0), &BTreeMap::new())
            .unwrap_err()
            .to_string()
    };
    let plan = RolloutSpec::with_defaults("1.4.0", "1.2.0");
    assert_eq!(
        go(&plan, &versions()),
        "version 1.4.0 of function hello does not exist"
    );
    let mut unready = versions();
    unready[1].ready = false;
    let plan = RolloutSpec::with_defaults("1.3.0", "1.2.0");
    assert!(go(&plan, &unready).starts_with("version 1.3.0 is not ready"));
    let plan = RolloutSpec::with_defaults("1.2.0", "1.2.0");
    assert_eq!(go(&plan, &versions()), "the canary 1.2.0 is the baseline");
}

#[test]
fn a_wait_writes_nothing() {
    let f = started();
    let d = decision(&f, &reading("run1", 5, 100), 2_000);
    assert!(matches!(d, Decision::Wait { .. }), "{d:?}");
    assert_eq!(
        apply(&f, &d, at(2_000), "switchyard-router/r1", &BTreeMap::new()),
        None
    );
}

#[test]
fn an_advance_goes_to_the_next_step_with_fresh_readings() {
    let f = started();
    let now = reading("run1", 400, 4_050);
    let d = decision(&f, &now, 31_000);
    assert!(matches!(d, Decision::Advance { to: 1, .. }), "{d:?}");
    let next = apply(&f, &d, at(31_000), "switchyard-router/r1", &now).unwrap();
    let s = rollout(&next);
    assert_eq!((s.step, s.phase), (1, RolloutPhase::Progressing));
    assert_eq!(s.step_started_at, "1970-01-01T00:00:31.000Z");
    assert_eq!(s.at_start[0].canary.requests, 400);
    assert_eq!(s.at_start[0].baseline.requests, 4_050);
    assert_eq!(s.actor, "switchyard-router/r1");
    assert_eq!(next.spec.weight_of("1.3.0"), 50_000);
    assert_eq!(next.spec.weight_of("1.2.0"), 950_000);
    let h = next.spec.history.last().unwrap();
    assert_eq!(
        (h.action, h.actor.as_str()),
        (Action::Canary, "switchyard-router/r1")
    );
    assert!(h.reason.as_deref().unwrap().starts_with(
        "advanced to step 2/5 at 5%: step 1/5 at 1% passed: canary 1.3.0 400 requests"
    ));
    // The step's counts now start from the new readings.
    let c = decision(&next, &reading("run1", 401, 4_060), 32_000);
    assert!(matches!(c, Decision::Wait { .. }));
}

#[test]
fn an_advance_that_is_not_to_the_next_step_is_not_written() {
    let f = started();
    let skip = Decision::Advance {
        to: 2,
        traffic: canary::Plan::new("1.3.0", "1.2.0").traffic(250_000),
        reason: "x".into(),
    };
    assert_eq!(apply(&f, &skip, at(40_000), "r", &BTreeMap::new()), None);
}

#[test]
fn an_abort_restores_the_baseline_keeps_the_canary_at_zero_and_ends_the_rollout() {
    let f = started();
    let d = Decision::Abort {
        traffic: canary::Plan::new("1.3.0", "1.2.0").traffic(0),
        reason: "canary 1.3.0: error rate 12.4% vs baseline 0.2% over 418 requests (limit +1 pp)"
            .into(),
    };
    let next = apply(&f, &d, at(5_000), "switchyard-router/r2", &BTreeMap::new()).unwrap();
    assert_eq!(next.spec.weight_of("1.2.0"), TOTAL_PPM);
    assert!(next
        .spec
        .traffic
        .iter()
        .any(|t| t.version == "1.3.0" && t.weight == 0));
    assert_eq!(next.spec.stable.as_deref(), Some("1.2.0"));
    assert_eq!(next.spec.rollout, None);
    let s = rollout(&next);
    assert_eq!(s.phase, RolloutPhase::Aborted);
    assert_eq!(
        s.reason.as_deref(),
        Some("aborted: canary 1.3.0: error rate 12.4% vs baseline 0.2% over 418 requests (limit +1 pp)")
    );
    assert_eq!(active(&next), None);
    // `kubectl get fn` shows the restored split, and that nobody confirmed the routers have it.
    let annotations = next.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get(crate::protocol::TRAFFIC_ANNOTATION)
            .map(String::as_str),
        Some(crate::plan::describe(&next.spec.traffic).as_str())
    );
    assert_eq!(
        annotations
            .get(crate::protocol::ROUTERS_ANNOTATION)
            .map(String::as_str),
        Some("unconfirmed")
    );
    // Nothing more happens to a finished rollout.
    assert_eq!(apply(&next, &d, at(6_000), "r", &BTreeMap::new()), None);
}

#[test]
fn done_puts_the_canary_at_100_percent_and_makes_it_stable() {
    let f = started();
    let d = Decision::Done {
        traffic: canary::Plan::new("1.3.0", "1.2.0").traffic(TOTAL_PPM),
        reason: "step 4/5 at 50% passed".into(),
    };
    let next = apply(&f, &d, at(5_000), "switchyard-router/r1", &BTreeMap::new()).unwrap();
    assert_eq!(next.spec.weight_of("1.3.0"), TOTAL_PPM);
    assert_eq!(next.spec.stable.as_deref(), Some("1.3.0"));
    assert_eq!(next.spec.previous_stable.as_deref(), Some("1.2.0"));
    assert_eq!(rollout(&next).phase, RolloutPhase::Succeeded);
    assert_eq!(next.spec.rollout, None);
}

#[test]
fn a_pause_keeps_the_weights_and_resume_restarts_the_step_with_new_readings() {
    let f = started();
    let d = Decision::Pause {
        reason: "step 1/5 at 1%: not enough requests after 5m".into(),
    };
    let paused = apply(
        &f,
        &d,
        at(301_000),
        "switchyard-router/r1",
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(paused.spec.traffic, f.spec.traffic);
    assert_eq!(rollout(&paused).phase, RolloutPhase::Paused);
    assert_eq!(active(&paused), None);
    let h = paused.spec.history.last().unwrap();
    assert!(!h.moves_traffic());
    let again = command(&paused, Command::Pause, by(302_000), &BTreeMap::new()).unwrap();
    assert!(matches!(again, Outcome::Unchanged(_)));
    let Outcome::Write(resumed) = command(
        &paused,
        Command::Resume,
        by(400_000),
        &reading("run1", 7, 900),
    )
    .unwrap() else {
        panic!("resume writes");
    };
    let s = rollout(&resumed);
    assert_eq!((s.phase, s.step), (RolloutPhase::Progressing, 0));
    assert_eq!(s.step_started_at, "1970-01-01T00:06:40.000Z");
    assert_eq!(s.at_start[0].canary.requests, 7);
    assert_eq!(
        s.reason.as_deref(),
        Some("resumed at step 1/5 at 1% by alice")
    );
    assert!(active(&resumed).is_some());
}

#[test]
fn cli_abort_and_promote_end_the_rollout_and_need_one_in_flight() {
    let f = started();
    let Outcome::Write(aborted) = command(&f, Command::Abort, by(2_000), &BTreeMap::new()).unwrap()
    else {
        panic!("abort writes");
    };
    assert_eq!(aborted.spec.weight_of("1.2.0"), TOTAL_PPM);
    assert_eq!(rollout(&aborted).phase, RolloutPhase::Aborted);
    let err = command(&aborted, Command::Promote, by(3_000), &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "function hello has no rollout in flight (the last one of 1.3.0: Aborted, aborted at step 1/5 at 1% by alice)"
    );
    let Outcome::Write(promoted) =
        command(&f, Command::Promote, by(2_000), &BTreeMap::new()).unwrap()
    else {
        panic!("promote writes");
    };
    assert_eq!(promoted.spec.weight_of("1.3.0"), TOTAL_PPM);
    assert_eq!(rollout(&promoted).phase, RolloutPhase::Succeeded);
}

#[test]
fn a_rollout_ended_by_a_manual_write_shows_as_ended_with_the_recorded_reason() {
    let f = started();
    let change = Change {
        now: "2026-01-01T00:00:00Z".into(),
        actor: "bob".into(),
        reason: None,
    };
    let mut manual = f.clone();
    manual.spec = plan::apply(
        "hello",
        &f.spec,
        vec![crate::TrafficTarget::new("1.2.0", TOTAL_PPM)],
        Action::Traffic,
        &versions(),
        false,
        &change,
    )
    .unwrap();
    assert_eq!(active(&manual), None);
    let v = view(&manual).unwrap();
    assert_eq!(v.phase, RolloutPhase::Ended);
    assert_eq!(v.actor, "bob");
    assert_eq!(
        v.reason.as_deref(),
        Some("ended by a manual traffic (canary 1.3.0 against baseline 1.2.0)")
    );
    // The write that ends it carries the Ended record, so the stored status never says
    // Progressing without a plan.
    let written = status_after_write(&manual.spec, f.status.as_ref()).unwrap();
    assert_eq!(written.rollout.as_deref(), Some(&v));
    // A write that leaves the rollout alone (or a status already settled) changes no status.
    assert_eq!(status_after_write(&f.spec, f.status.as_ref()), None);
    let settled = FunctionStatus {
        rollout: Some(Box::new(v)),
    };
    assert_eq!(status_after_write(&manual.spec, Some(&settled)), None);
    assert_eq!(status_after_write(&manual.spec, None), None);
}

#[test]
fn plans_read_durations_like_timeouts_and_allow_a_zero_increase() {
    let mut spec = RolloutSpec::with_defaults("1.3.0", "1.2.0");
    let plan = spec.plan().unwrap();
    assert_eq!(plan, canary::Plan::new("1.3.0", "1.2.0"));
    spec.max_p99_increase = Some("0ms".into());
    assert_eq!(spec.plan().unwrap().limits.max_p99_increase_ms, Some(0.0));
    spec.hold = "1h30m".into();
    spec.max_wait = None;
    assert_eq!(spec.plan().unwrap().max_wait_ms, 54_000_000);
    spec.hold = "soon".into();
    assert_eq!(
        spec.plan().unwrap_err().to_string(),
        "hold \"soon\" is not a duration from 1ms to 24h (like 500ms, 30s, 5m, 1h30m): each part is a number followed by h, m, s or ms"
    );
    spec.hold = "30s".into();
    spec.max_wait = Some("10s".into());
    assert_eq!(
        spec.plan().unwrap_err().to_string(),
        "max wait 10000 ms is shorter than the hold 30000 ms"
    );
}

#[test]
fn readings_round_trip_through_the_status() {
    let plan = canary::Plan::new("1.3.0", "1.2.0");
    let now = reading("run1", 12, 34);
    let status = RolloutStatus {
        at_start: step_readings(KEY, &plan, &now),
        ..rollout(&started()).clone()
    };
    assert_eq!(readings_at_start(&status, KEY, &plan), now);
}

proptest! {
    /// Whatever the counts and the time, a router's decision applied to a judged rollout
    /// never skips or repeats a step, and an abort always leaves the baseline at 100%.
    #[test]
    fn decisions_never_skip_a_step_and_aborts_restore_the_baseline(
        canary_requests in 0u64..2_000,
        canary_failures in 0u64..200,
        baseline_requests in 0u64..2_000,
        now_ms in 1_000i64..1_000_000,
        steps in 0usize..3,
    ) {
        let mut f = started();
        let mut readings;
        let mut t = 1_000;
        // Walk a few healthy steps first.
        for _ in 0..steps {
            t += 31_000;
            let r = rollout(&f).at_start[0].clone();
            readings = reading("run1", r.canary.requests + 300, r.baseline.requests + 300);
            let d = decision(&f, &readings, t);
            f = apply(&f, &d, at(t), "r", &readings).unwrap();
        }
        let before = rollout(&f).step;
        let r = rollout(&f).at_start[0].clone();
        let now = failing(
            "run1",
            r.canary.requests + canary_requests,
            r.canary.failures + canary_failures.min(canary_requests),
            r.baseline.requests + baseline_requests,
        );
        let d = decision(&f, &now, t + now_ms);
        match apply(&f, &d, at(t + now_ms), "r", &now) {
            None => {
                let waited = matches!(d, Decision::Wait { .. });
                prop_assert!(waited, "not written: {:?}", d);
            }
            Some(next) => {
                let s = rollout(&next);
                match d {
                    Decision::Advance { .. } => prop_assert_eq!(s.step, before + 1),
                    Decision::Abort { .. } => {
                        prop_assert_eq!(next.spec.weight_of("1.2.0"), TOTAL_PPM);
                        prop_assert_eq!(s.phase, RolloutPhase::Aborted);
                    }
                    Decision::Done { .. } => prop_assert_eq!(next.spec.weight_of("1.3.0"), TOTAL_PPM),
                    Decision::Pause { .. } => prop_assert_eq!(&next.spec.traffic, &f.spec.traffic),
                    Decision::Wait { .. } => prop_assert!(false, "a wait was written"),
                }
            }
        }
    }
}

#[test]
fn a_rollouts_steps_keep_sticky_keys_moving_only_to_the_canary() {
    use crate::resources::{Affinity, FunctionVersion};
    use crate::table::{BuildOptions, Route};
    let vs: Vec<FunctionVersion> = ["1.2.0", "1.3.0"]
        .iter()
        .map(|v| FunctionVersion::test_endpoint("hello", v, "http://127.0.0.1:9"))
        .collect();
    let mut f = started();
    f.spec.affinity = Some(Affinity {
        header: Some("x-user".into()),
        cookie: None,
    });
    let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let canary_of = |f: &Function| -> Vec<bool> {
        let route = Route::build(f, &vs, &BuildOptions::default()).expect("route");
        let canary = route
            .backends
            .iter()
            .position(|b| b.version == "1.3.0")
            .expect("canary backend");
        keys.iter()
            .map(|k| route.pick_for_key(k.as_bytes()) == canary)
            .collect()
    };
    let plan = canary::Plan::new("1.3.0", "1.2.0");
    let mut before = canary_of(&f);
    for to in 1..=3 {
        let d = Decision::Advance {
            to,
            traffic: plan.traffic(plan.steps[to]),
            reason: "passed".into(),
        };
        f = apply(&f, &d, at(1_000 + to as i64), "r", &BTreeMap::new()).expect("advance");
        assert_eq!(
            f.spec.affinity.as_ref().unwrap().header.as_deref(),
            Some("x-user")
        );
        let now = canary_of(&f);
        for (i, (was, is)) in before.iter().zip(&now).enumerate() {
            assert!(
                !was || *is,
                "key {} left the canary at step {}",
                keys[i],
                to + 1
            );
        }
        before = now;
    }
    let on_canary = before.iter().filter(|c| **c).count();
    assert!(
        on_canary.abs_diff(1000) <= 100,
        "{on_canary} of 2000 at 50%"
    );
}

#[test]
fn a_replica_that_published_no_numbers_reads_as_zero_and_its_later_requests_count() {
    use crate::numbers::{Numbers, VersionNumbers};
    use crate::report::RouterReportStatus;
    let idle = RouterReportStatus {
        replica: "r1".into(),
        started_at: "run1".into(),
        ..Default::default()
    };
    let at_start: BTreeMap<String, Reading> = [("r1".to_string(), reading_of(&idle))].into();
    let plan = canary::Plan::new("1.3.0", "1.2.0");
    let status = RolloutStatus {
        at_start: step_readings(KEY, &plan, &at_start),
        ..rollout(&started()).clone()
    };
    let busy = RouterReportStatus {
        numbers: Some(Numbers {
            versions: vec![VersionNumbers {
                function: KEY.into(),
                version: "1.3.0".into(),
                total: counts(7, 1),
                window: counts(7, 1),
            }],
            ..Default::default()
        }),
        ..idle.clone()
    };
    let now: BTreeMap<String, Reading> = [("r1".to_string(), reading_of(&busy))].into();
    // The replica's run began long before the step: only its empty reading lets it count.
    let c = canary::step_counts(
        KEY,
        &plan,
        &readings_at_start(&status, KEY, &plan),
        i64::MAX,
        &now,
    );
    assert_eq!((c.canary.requests, c.canary.failures), (7, 1));
}
