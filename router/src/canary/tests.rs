use super::*;
use switchyard_core::numbers::{bucket_of, Counts, VersionKey};
use switchyard_core::plan::VersionState;
use switchyard_core::resources::{RolloutPhase, RolloutSpec};
use switchyard_core::rollout::{By, Outcome};
use switchyard_core::TOTAL_PPM;

const KEY: &str = "default/hello";

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

/// `requests` requests of which `failed` failed, all of 10 ms.
fn counts(requests: u64, failed: u64) -> Counts {
    Counts {
        requests,
        failures: failed,
        latency: if requests > 0 {
            [(bucket_of(10_000), requests)].into()
        } else {
            Default::default()
        },
    }
}

/// A replica's reading (run `run`) with totals for the canary 1.3.0 and the baseline 1.2.0.
fn reading(run: &str, canary: Counts, baseline: Counts) -> Reading {
    let key = |v: &str| VersionKey {
        function: KEY.to_string(),
        version: v.to_string(),
    };
    Reading {
        started_at: run.to_string(),
        totals: [(key("1.3.0"), canary), (key("1.2.0"), baseline)].into(),
    }
}

/// hello with a rollout of 1.3.0 against 1.2.0 started at t = 1 s (hold 30 s, 200 requests),
/// when r1 and r2 had served nothing of either.
fn started() -> Function {
    let mut f = Function::test("hello").with_weight("1.2.0", TOTAL_PPM);
    f.spec.stable = Some("1.2.0".into());
    let versions = VersionState::all_ready(&["1.2.0", "1.3.0"]);
    let zero = BTreeMap::from([
        ("r1".to_string(), reading("run", counts(0, 0), counts(0, 0))),
        ("r2".to_string(), reading("run", counts(0, 0), counts(0, 0))),
    ]);
    let by = By {
        now: at(1_000),
        actor: "alice",
        reason: None,
    };
    let plan = RolloutSpec::with_defaults("1.3.0", "1.2.0");
    match switchyard_core::rollout::start(&f, &plan, &versions, false, by, &zero).unwrap() {
        Outcome::Write(f) => *f,
        Outcome::Unchanged(line) => panic!("{line}"),
    }
}

fn phase(f: &Function) -> RolloutPhase {
    f.status.as_ref().unwrap().rollout.as_ref().unwrap().phase
}

#[test]
fn a_step_that_held_with_enough_requests_on_both_replicas_advances_by_the_router() {
    let f = started();
    assert!(judged(&f));
    // 150 + 150 canary requests over two replicas: only together past 200.
    let now = BTreeMap::from([
        (
            "r1".to_string(),
            reading("run", counts(150, 0), counts(5_000, 0)),
        ),
        (
            "r2".to_string(),
            reading("run", counts(150, 0), counts(5_000, 0)),
        ),
    ]);
    let (next, action) = judge(&f, &now, at(32_000), "switchyard-router/r1").expect("a write");
    assert!(
        matches!(action, Action::Advance { to: 1, .. }),
        "{action:?}"
    );
    assert_eq!(next.spec.weight_of("1.3.0"), 50_000);
    let entry = next.spec.history.last().unwrap();
    assert_eq!(entry.actor, "switchyard-router/r1");
    let status = next.status.as_ref().unwrap().rollout.as_ref().unwrap();
    assert_eq!(status.step, 1);
    assert_eq!(
        status.at_start.len(),
        2,
        "every live replica's reading starts the step"
    );
    // One replica alone has too few canary requests: waiting, nothing to write.
    let one = BTreeMap::from([(
        "r1".to_string(),
        reading("run", counts(150, 0), counts(5_000, 0)),
    )]);
    assert!(judge(&f, &one, at(32_000), "switchyard-router/r1").is_none());
}

#[test]
fn a_replica_whose_own_counts_prove_a_breach_aborts_at_once_during_the_hold() {
    let f = started();
    // 250 canary requests on r1 alone, 20% failed; the hold has 29 s to run.
    let own = reading("run", counts(250, 50), counts(25_000, 0));
    let (next, action) =
        judge_own(&f, "r1", &own, at(2_000), "switchyard-router/r1").expect("an abort");
    assert!(
        action
            .reason()
            .contains("error rate 20.0% vs baseline 0.0%"),
        "{action:?}"
    );
    assert_eq!(next.spec.weight_of("1.2.0"), TOTAL_PPM);
    assert_eq!(next.spec.weight_of("1.3.0"), 0);
    assert_eq!(phase(&next), RolloutPhase::Aborted);
    assert!(next.spec.rollout.is_none(), "an abort ends the rollout");
    assert!(!judged(&next));
}

#[test]
fn own_counts_that_would_pass_are_left_to_the_decider() {
    let f = started();
    let own = reading("run", counts(500, 0), counts(50_000, 0));
    assert!(
        judge_own(&f, "r1", &own, at(40_000), "switchyard-router/r1").is_none(),
        "an advance needs every replica's counts"
    );
    // And the decider, judging the same, advances.
    let all = BTreeMap::from([("r1".to_string(), own)]);
    assert!(judge(&f, &all, at(40_000), "switchyard-router/r1").is_some());
}

#[test]
fn a_replica_restarted_since_the_step_began_counts_everything_it_served() {
    let f = started();
    // r2 restarted at t = 5 s (a new run): its totals are all inside the step.
    let own = Reading {
        started_at: "1970-01-01T00:00:05.000Z".into(),
        ..reading("x", counts(300, 60), counts(30_000, 0))
    };
    assert!(judge_own(&f, "r2", &own, at(6_000), "switchyard-router/r2").is_some());
    // One that ran before the step began without a reading at its start counts nothing.
    let old = Reading {
        started_at: "1970-01-01T00:00:00.500Z".into(),
        ..reading("x", counts(300, 60), counts(30_000, 0))
    };
    assert!(judge_own(&f, "r3", &old, at(6_000), "switchyard-router/r3").is_none());
}

#[test]
fn the_compared_versions_are_each_rollout_s_canary_and_baseline() {
    let f = Arc::new(started());
    let rollouts = BTreeMap::from([(("default".to_string(), "hello".to_string()), f)]);
    let c = compared(&rollouts);
    assert!(c.contains(&(KEY.to_string(), "1.3.0".to_string())));
    assert!(c.contains(&(KEY.to_string(), "1.2.0".to_string())));
    assert_eq!(c.len(), 2);
}
