use super::*;
use crate::numbers::bucket_of;
use proptest::prelude::*;

/// `requests` requests, `failures` of them failed, all taking `ms` milliseconds.
fn counts(requests: u64, failures: u64, ms: u64) -> Counts {
    Counts {
        requests,
        failures,
        latency: if requests > 0 {
            [(bucket_of(ms * 1000), requests)].into()
        } else {
            Default::default()
        },
    }
}

fn plan() -> Plan {
    Plan::new("1.3.0", "1.2.0")
}

fn at(step: usize, started: i64) -> Progress {
    Progress {
        step,
        step_started_ms: started,
    }
}

fn healthy() -> StepCounts {
    StepCounts {
        canary: counts(400, 0, 10),
        baseline: counts(4000, 0, 10),
    }
}

#[test]
fn the_default_plan_is_valid() {
    assert_eq!(plan().validate(), Ok(()));
    assert_eq!(plan().max_wait_ms, 300_000);
}

#[test]
fn invalid_plans_are_refused_with_the_offending_value() {
    let with = |f: fn(&mut Plan)| {
        let mut p = plan();
        f(&mut p);
        p.validate().unwrap_err().to_string()
    };
    assert_eq!(
        with(|p| p.baseline = "1.3.0".into()),
        "the canary 1.3.0 is the baseline"
    );
    assert_eq!(
        with(|p| p.steps.clear()),
        "a canary needs at least one step"
    );
    assert_eq!(
        with(|p| p.steps = vec![0, 500_000]),
        "step 0% is not above 0% and at most 100%"
    );
    assert_eq!(
        with(|p| p.steps = vec![10_000, 1_000_001]),
        "step 100.0001% is not above 0% and at most 100%"
    );
    assert_eq!(
        with(|p| p.steps = vec![50_000, 50_000]),
        "steps must strictly increase, got 5% then 5%"
    );
    assert_eq!(
        with(|p| p.steps = vec![250_000, 50_000]),
        "steps must strictly increase, got 25% then 5%"
    );
    assert_eq!(
        with(|p| p.steps = vec![1_000_000]),
        "the first step is 100%: nothing would be judged (use promote)"
    );
    assert_eq!(
        with(|p| p.min_requests = 0),
        "min requests must be at least 1, got 0"
    );
    assert_eq!(
        with(|p| p.max_wait_ms = 1_000),
        "max wait 1000 ms is shorter than the hold 30000 ms"
    );
    assert_eq!(
        with(|p| p.limits.max_error_increase_pp = Some(-1.0)),
        "max error increase must not be negative, got -1"
    );
    assert_eq!(
        with(|p| p.limits.max_p99_ms = Some(f64::NAN)),
        "max p99 must not be negative, got NaN"
    );
    // Zero limits are allowed (no increase at all), and steps may end below 100%.
    let mut p = plan();
    p.limits.max_error_increase_pp = Some(0.0);
    p.steps = vec![10_000, 20_000];
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn a_step_holds_before_it_can_pass() {
    let a = decide(&plan(), &at(1, 0), &healthy(), 18_000);
    assert_eq!(
        a,
        Action::Wait {
            reason: "step 2/5 at 5%: holding, 12s left, canary 1.3.0 400 requests, 0.0% errors, \
                     p99 10ms; baseline 1.2.0 4,000 requests, 0.0% errors, p99 10ms"
                .into()
        }
    );
}

#[test]
fn the_hold_left_counts_down_to_zero() {
    let p = plan();
    assert_eq!(at(0, 1_000).hold_left_ms(&p, 1_000), 30_000);
    assert_eq!(at(0, 1_000).hold_left_ms(&p, 19_000), 12_000);
    assert_eq!(at(0, 1_000).hold_left_ms(&p, 90_000), 0);
    // A clock behind the step's start: the whole hold is left.
    assert_eq!(at(0, 1_000).hold_left_ms(&p, 0), 30_000);
}

#[test]
fn waiting_for_requests_says_how_many_each_side_has() {
    let c = StepCounts {
        canary: counts(41, 0, 10),
        baseline: counts(1204, 0, 10),
    };
    assert_eq!(
        decide(&plan(), &at(1, 0), &c, 30_000),
        Action::Wait {
            reason: "step 2/5 at 5%: waiting for requests, canary 41/200, baseline 1,204/200"
                .into()
        }
    );
    assert_eq!(
        decide(&plan(), &at(1, 0), &c, 300_000),
        Action::Pause {
            reason:
                "step 2/5 at 5%: not enough requests after 5m: canary 41/200, baseline 1,204/200"
                    .into()
        }
    );
}

#[test]
fn a_worse_error_rate_than_the_baseline_aborts_with_the_figures() {
    let c = StepCounts {
        canary: counts(418, 52, 10),
        baseline: counts(1000, 2, 10),
    };
    // Even before the hold is over.
    assert_eq!(
        decide(&plan(), &at(1, 0), &c, 1_000),
        Action::Abort {
            traffic: vec![
                TrafficTarget::new("1.2.0", 1_000_000),
                TrafficTarget::new("1.3.0", 0)
            ],
            reason:
                "canary 1.3.0: error rate 12.4% vs baseline 0.2% over 418 requests (limit +1 pp)"
                    .into()
        }
    );
}

#[test]
fn a_slower_canary_aborts_on_the_latency_rule() {
    let c = StepCounts {
        canary: counts(300, 0, 210),
        baseline: counts(3000, 0, 10),
    };
    let a = decide(&plan(), &at(0, 0), &c, 40_000);
    assert!(matches!(a, Action::Abort { .. }), "{a:?}");
    assert!(
        a.reason().starts_with("canary 1.3.0: p99 ")
            && a.reason().ends_with("over 300 requests (limit +50ms)"),
        "{}",
        a.reason()
    );
}

#[test]
fn absolute_limits_need_no_baseline() {
    let mut p = plan();
    p.limits.max_error_rate_pct = Some(5.0);
    p.limits.max_p99_ms = Some(100.0);
    let lonely = |canary| StepCounts {
        canary,
        baseline: counts(3, 0, 10),
    };
    assert_eq!(
        decide(&p, &at(0, 0), &lonely(counts(200, 20, 10)), 0).reason(),
        "canary 1.3.0: error rate 10.0% over 200 requests (limit 5.0%)"
    );
    let a = decide(&p, &at(0, 0), &lonely(counts(200, 0, 500)), 0);
    assert!(
        a.reason().ends_with("over 200 requests (limit 100ms)"),
        "{a:?}"
    );
    // Within the absolute limits, the relative ones wait for the baseline.
    let a = decide(&p, &at(0, 0), &lonely(counts(200, 2, 10)), 60_000);
    assert!(matches!(a, Action::Wait { .. }), "{a:?}");
}

#[test]
fn a_canary_below_min_requests_is_not_judged_however_bad() {
    let c = StepCounts {
        canary: counts(199, 199, 900),
        baseline: counts(5000, 0, 10),
    };
    assert!(matches!(
        decide(&plan(), &at(0, 0), &c, 1_000),
        Action::Wait { .. }
    ));
}

#[test]
fn a_healthy_canary_walks_every_step_then_is_promoted() {
    let p = plan();
    let mut progress = at(0, 0);
    let mut now = 0;
    let mut walked = vec![p.steps[0]];
    loop {
        now += 10_000;
        match decide(&p, &progress, &healthy(), now) {
            Action::Wait { .. } => {}
            Action::Advance {
                to,
                traffic,
                reason,
            } => {
                assert_eq!(to, progress.step + 1);
                assert!(reason.starts_with(&format!("step {}/5 at ", progress.step + 1)));
                assert_eq!(traffic[1].weight, p.steps[to]);
                walked.push(traffic[1].weight);
                progress = at(to, now);
            }
            Action::Done { traffic, reason } => {
                assert_eq!(
                    traffic,
                    vec![
                        TrafficTarget::new("1.2.0", 0),
                        TrafficTarget::new("1.3.0", 1_000_000)
                    ]
                );
                assert!(reason.starts_with("step 4/5 at 50% passed"), "{reason}");
                walked.push(traffic[1].weight);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(walked, p.steps);
    // Each step held 30 s: four judged steps.
    assert_eq!(now, 4 * 30_000);
}

#[test]
fn a_plan_ending_below_100_promotes_after_its_last_step() {
    let mut p = plan();
    p.steps = vec![10_000, 200_000];
    assert_eq!(p.last_judged(), 1);
    assert!(matches!(
        decide(&p, &at(0, 0), &healthy(), 30_000),
        Action::Advance { to: 1, .. }
    ));
    assert!(matches!(
        decide(&p, &at(1, 0), &healthy(), 30_000),
        Action::Done { .. }
    ));
}

fn reading(started_at: &str, canary: u64, baseline: u64) -> Reading {
    let key = |v: &str| VersionKey {
        function: "prod/hello".into(),
        version: v.into(),
    };
    Reading {
        started_at: started_at.into(),
        totals: [
            (key("1.3.0"), counts(canary, canary / 10, 5)),
            (key("1.2.0"), counts(baseline, 0, 5)),
        ]
        .into(),
    }
}

#[test]
fn step_counts_subtract_each_replica_s_reading_at_the_step_start() {
    let step_start = "2026-12-02T10:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_millisecond();
    let before = "2026-12-02T09:00:00.000Z";
    let after = "2026-12-02T10:00:05.000Z";
    let start: BTreeMap<String, Reading> = [
        ("r1".to_string(), reading(before, 100, 1000)),
        ("r2".to_string(), reading(before, 50, 500)),
    ]
    .into();
    let now: BTreeMap<String, Reading> = [
        // Same run: the difference.
        ("r1".to_string(), reading(before, 130, 1300)),
        // Restarted after the step began: all of it.
        ("r2".to_string(), reading(after, 20, 200)),
        // New since the step began: all of it.
        ("r3".to_string(), reading(after, 10, 100)),
        // Up since before the step, but no reading from its start: left out.
        ("r4".to_string(), reading(before, 999, 9999)),
    ]
    .into();
    let c = step_counts("prod/hello", &plan(), &start, step_start, &now);
    assert_eq!(c.canary.requests, 30 + 20 + 10);
    assert_eq!(c.canary.failures, (13 - 10) + 2 + 1);
    assert_eq!(c.baseline.requests, 300 + 200 + 100);
    assert_eq!(c.canary.latency.values().sum::<u64>(), 60);
    // Another Function's versions are not counted.
    assert_eq!(
        step_counts("prod/other", &plan(), &start, step_start, &now),
        StepCounts::default()
    );
}

fn any_plan() -> impl Strategy<Value = Plan> {
    (
        proptest::collection::btree_set(1u32..=1_000_000, 2..7),
        1u64..120_000,
        1u64..500,
        1u64..20,
        proptest::option::of(0.0f64..20.0),
        proptest::option::of(0.0f64..500.0),
        proptest::option::of(0.0f64..50.0),
        proptest::option::of(0.0f64..2_000.0),
    )
        .prop_map(|(steps, hold_ms, min_requests, wait_holds, a, b, c, d)| {
            let mut steps: Vec<u32> = steps.into_iter().collect();
            if steps[0] == TOTAL_PPM {
                steps.insert(0, 500_000);
            }
            Plan {
                canary: "2".into(),
                baseline: "1".into(),
                steps,
                hold_ms,
                min_requests,
                max_wait_ms: hold_ms * wait_holds,
                limits: Limits {
                    max_error_increase_pp: a,
                    max_p99_increase_ms: b,
                    max_error_rate_pct: c,
                    max_p99_ms: d,
                },
            }
        })
        .prop_filter("valid", |p| p.validate().is_ok())
}

fn any_counts() -> impl Strategy<Value = Counts> {
    (0u64..1_000, 0u64..=100, 0u64..3_000)
        .prop_map(|(requests, fail_pct, ms)| counts(requests, requests * fail_pct / 100, ms))
}

fn any_case() -> impl Strategy<Value = (Plan, Progress, StepCounts, i64)> {
    any_plan().prop_flat_map(|p| {
        let last = p.last_judged();
        (
            Just(p),
            0..=last,
            0i64..1_000_000,
            any_counts(),
            any_counts(),
            0i64..3_000_000,
        )
            .prop_map(|(p, step, started, canary, baseline, later)| {
                (
                    p,
                    at(step, started),
                    StepCounts { canary, baseline },
                    started + later,
                )
            })
    })
}

proptest! {
    #[test]
    fn never_advances_without_min_requests_on_both_sides((p, progress, c, now) in any_case()) {
        match decide(&p, &progress, &c, now) {
            Action::Advance { .. } | Action::Done { .. } => {
                prop_assert!(c.canary.requests >= p.min_requests);
                prop_assert!(c.baseline.requests >= p.min_requests);
                prop_assert!(now - progress.step_started_ms >= p.hold_ms as i64);
            }
            _ => {}
        }
    }

    #[test]
    fn an_abort_always_restores_the_baseline((p, progress, c, now) in any_case()) {
        if let Action::Abort { traffic, reason } = decide(&p, &progress, &c, now) {
            prop_assert_eq!(traffic, vec![TrafficTarget::new("1", TOTAL_PPM), TrafficTarget::new("2", 0)]);
            prop_assert!(reason.starts_with("canary 2: "), "{}", reason);
            prop_assert!(c.canary.requests >= p.min_requests);
        }
    }

    #[test]
    fn steps_never_skip_or_repeat((p, progress, c, now) in any_case()) {
        match decide(&p, &progress, &c, now) {
            Action::Advance { to, traffic, .. } => {
                prop_assert_eq!(to, progress.step + 1);
                prop_assert!(to <= p.last_judged());
                prop_assert_eq!(traffic[1].weight, p.steps[to]);
                prop_assert_eq!(traffic[0].weight + traffic[1].weight, TOTAL_PPM);
            }
            Action::Done { traffic, .. } => {
                prop_assert_eq!(progress.step, p.last_judged());
                prop_assert_eq!(traffic[1].weight, TOTAL_PPM);
            }
            _ => {}
        }
    }

    #[test]
    fn no_traffic_is_never_a_pass((p, progress, _c, now) in any_case(), canary_only in any::<bool>(), n in 0u64..10_000) {
        // One side, or both, without a request.
        let c = if canary_only {
            StepCounts { canary: counts(n, 0, 5), baseline: Counts::default() }
        } else {
            StepCounts { canary: Counts::default(), baseline: counts(n, 0, 5) }
        };
        match decide(&p, &progress, &c, now) {
            Action::Wait { .. } => {}
            Action::Pause { .. } => prop_assert!(now - progress.step_started_ms >= p.max_wait_ms as i64),
            // Only absolute limits can fail a canary whose baseline has no traffic.
            Action::Abort { .. } => prop_assert!(canary_only && (p.limits.max_error_rate_pct.is_some() || p.limits.max_p99_ms.is_some())),
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn a_canary_like_its_baseline_is_never_aborted_on_relative_limits((p, progress, c, now) in any_case()) {
        let mut p = p;
        p.limits.max_error_rate_pct = None;
        p.limits.max_p99_ms = None;
        let same = StepCounts { canary: c.baseline.clone(), baseline: c.baseline };
        let a = decide(&p, &progress, &same, now);
        prop_assert!(!matches!(a, Action::Abort { .. }), "{:?}", a);
    }

    #[test]
    fn a_healthy_walk_visits_each_judged_step_once_in_order(p in any_plan()) {
        // Healthy means within every limit: an absolute p99 limit below the 5 ms both sides
        // answer in would (rightly) abort.
        let mut p = p;
        p.limits.max_p99_ms = p.limits.max_p99_ms.map(|m| m.max(10.0));
        let c = StepCounts {
            canary: counts(p.min_requests, 0, 5),
            baseline: counts(p.min_requests, 0, 5),
        };
        let mut progress = at(0, 0);
        let mut visited = vec![0];
        let mut now = 0;
        for _ in 0..=p.steps.len() * 2 {
            now += p.hold_ms as i64;
            match decide(&p, &progress, &c, now) {
                Action::Advance { to, .. } => {
                    visited.push(to);
                    progress = at(to, now);
                }
                Action::Done { .. } => break,
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(visited, (0..=p.last_judged()).collect::<Vec<_>>());
    }
}
