use super::*;
use crate::resources::Tag;
use proptest::prelude::*;

fn change(n: u32) -> Change {
    Change {
        now: format!("2026-11-27T10:{:02}:{:02}Z", n / 60 % 60, n % 60),
        actor: "alice".into(),
        reason: None,
    }
}

fn ready(list: &[&str]) -> Vec<VersionState> {
    VersionState::all_ready(list)
}

fn split(pairs: &[(&str, u32)]) -> Vec<TrafficTarget> {
    pairs
        .iter()
        .map(|(v, w)| TrafficTarget::new(*v, *w))
        .collect()
}

const ALL: [&str; 4] = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"];

/// A function deployed at 1.0.0, promoted to 1.1.0, now canarying 1.2.0 at 10%.
fn mid_canary() -> FunctionSpec {
    let vs = ready(&ALL);
    let s = first_deploy("1.0.0", &change(0));
    let s = apply(
        "hello",
        &s,
        split(&[("1.1.0", TOTAL_PPM)]),
        Action::Promote,
        &vs,
        false,
        &change(1),
    )
    .expect("promote");
    apply(
        "hello",
        &s,
        split(&[("1.2.0", 100_000), ("1.1.0", 900_000)]),
        Action::Traffic,
        &vs,
        false,
        &change(2),
    )
    .expect("shift")
}

#[test]
fn first_deploy_puts_everything_on_the_only_version_and_makes_it_stable() {
    let s = first_deploy("1.0.0", &change(0));
    assert_eq!(s.traffic, split(&[("1.0.0", TOTAL_PPM)]));
    assert_eq!(s.stable.as_deref(), Some("1.0.0"));
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].action, Action::Deploy);
}

#[test]
fn rollback_from_the_middle_of_a_canary_returns_everything_to_the_stable_version() {
    let s = mid_canary();
    assert_eq!(rollback_target(&s), Some("1.1.0"));
    let t = rollback("hello", &s, None, &ready(&ALL)).expect("target");
    assert_eq!(t, Rollback::To(split(&[("1.1.0", TOTAL_PPM)])));
}

#[test]
fn rollback_right_after_a_promote_returns_to_the_version_before_it() {
    let vs = ready(&ALL);
    let s = mid_canary();
    let s = apply(
        "hello",
        &s,
        split(&[("1.2.0", TOTAL_PPM)]),
        Action::Promote,
        &vs,
        false,
        &change(3),
    )
    .expect("promote");
    assert_eq!(
        (s.stable.as_deref(), s.previous_stable.as_deref()),
        (Some("1.2.0"), Some("1.1.0"))
    );
    assert_eq!(rollback_target(&s), Some("1.1.0"));
}

#[test]
fn rollback_with_no_earlier_stable_version_says_so() {
    let s = first_deploy("1.0.0", &change(0));
    assert_eq!(
        rollback("hello", &s, None, &ready(&ALL)),
        Err(PlanError::NoStable("hello".into()))
    );
    assert_eq!(
        rollback("hello", &s, Some("1.1.0"), &ready(&ALL)),
        Ok(Rollback::To(split(&[("1.1.0", TOTAL_PPM)])))
    );
}

#[test]
fn the_stable_version_survives_trimming_of_the_history() {
    let vs = ready(&ALL);
    let mut s = first_deploy("1.0.0", &change(0));
    for i in 1..=(DEFAULT_HISTORY_LIMIT as u32 + 5) {
        let w = 1_000 * i;
        s = apply(
            "hello",
            &s,
            split(&[("1.1.0", w), ("1.0.0", TOTAL_PPM - w)]),
            Action::Traffic,
            &vs,
            false,
            &change(i),
        )
        .expect("shift");
    }
    assert_eq!(s.history.len(), DEFAULT_HISTORY_LIMIT);
    assert!(s.history.iter().all(|e| e.action == Action::Traffic));
    assert_eq!(rollback_target(&s), Some("1.0.0"));
}

#[test]
fn undo_after_three_shifts_walks_back_one_step_at_a_time() {
    let vs = ready(&ALL);
    let states = [
        split(&[("1.0.0", TOTAL_PPM)]),
        split(&[("1.1.0", 100_000), ("1.0.0", 900_000)]),
        split(&[("1.1.0", 500_000), ("1.0.0", 500_000)]),
        split(&[("1.1.0", TOTAL_PPM)]),
    ];
    let mut s = first_deploy("1.0.0", &change(0));
    for (i, t) in states.iter().enumerate().skip(1) {
        s = apply(
            "hello",
            &s,
            t.clone(),
            Action::Traffic,
            &vs,
            false,
            &change(i as u32),
        )
        .expect("shift");
    }
    for (i, expected) in states.iter().enumerate().rev().skip(1) {
        s = undo("hello", &s, &vs, false, &change(10 + i as u32)).expect("undo");
        assert_eq!(&s.traffic, expected, "after undoing back to state {i}");
        assert_eq!(s.history.last().map(|e| e.action), Some(Action::Undo));
    }
    assert_eq!(
        undo("hello", &s, &vs, false, &change(20)),
        Err(PlanError::NothingToUndo("hello".into()))
    );
}

#[test]
fn a_change_after_an_undo_continues_from_the_restored_state() {
    let vs = ready(&ALL);
    let s = mid_canary();
    let s = undo("hello", &s, &vs, false, &change(3)).expect("undo");
    let s = apply(
        "hello",
        &s,
        split(&[("1.3.0", 50_000), ("1.1.0", 950_000)]),
        Action::Traffic,
        &vs,
        false,
        &change(4),
    )
    .expect("shift");
    let s = undo("hello", &s, &vs, false, &change(5)).expect("undo");
    assert_eq!(s.traffic, split(&[("1.1.0", TOTAL_PPM)]));
}

#[test]
fn weight_goes_only_to_ready_versions_unless_forced() {
    let mut vs = ready(&ALL);
    vs[2].ready = false;
    let s = mid_canary();
    let more = split(&[("1.2.0", 200_000), ("1.1.0", 800_000)]);
    assert_eq!(
        apply(
            "hello",
            &s,
            more.clone(),
            Action::Traffic,
            &vs,
            false,
            &change(3)
        ),
        Err(PlanError::NotReady {
            version: "1.2.0".into()
        })
    );
    assert!(apply("hello", &s, more, Action::Traffic, &vs, true, &change(3)).is_ok());
    // Taking weight away from an unready version is always allowed: that is the way out.
    let less = split(&[("1.2.0", 50_000), ("1.1.0", 950_000)]);
    assert!(apply("hello", &s, less, Action::Traffic, &vs, false, &change(3)).is_ok());
}

#[test]
fn apply_refuses_unknown_versions_and_bad_totals() {
    let vs = ready(&["1.0.0"]);
    let s = first_deploy("1.0.0", &change(0));
    assert_eq!(
        apply(
            "hello",
            &s,
            split(&[("2.0.0", TOTAL_PPM)]),
            Action::Traffic,
            &vs,
            false,
            &change(1)
        ),
        Err(PlanError::UnknownVersion {
            function: "hello".into(),
            version: "2.0.0".into()
        })
    );
    assert!(matches!(
        apply(
            "hello",
            &s,
            split(&[("1.0.0", 999_000)]),
            Action::Traffic,
            &vs,
            false,
            &change(1)
        ),
        Err(PlanError::Invalid(ValidationError::WeightSum {
            total: 999_000
        }))
    ));
}

#[test]
fn a_new_share_is_taken_from_the_others_in_proportion() {
    let t = split(&[("1.0.0", 600_000), ("1.1.0", 400_000)]);
    assert_eq!(
        with_share(&t, "1.2.0", 100_000),
        split(&[("1.0.0", 540_000), ("1.1.0", 360_000), ("1.2.0", 100_000)])
    );
    let thirds = split(&[("1.0.0", 333_334), ("1.1.0", 333_333), ("1.2.0", 333_333)]);
    let out = with_share(&thirds, "1.3.0", 1);
    assert_eq!(out.iter().map(|t| t.weight).sum::<u32>(), TOTAL_PPM);
    assert_eq!(
        with_share(&t, "1.2.0", TOTAL_PPM),
        split(&[("1.2.0", TOTAL_PPM)])
    );
}

#[test]
fn delete_refuses_referenced_versions_and_force_overrides_all_but_weight() {
    let mut s = mid_canary();
    s.tags.push(Tag {
        tag: "qa".into(),
        version: "1.3.0".into(),
    });
    let all: Vec<String> = ALL.iter().map(|v| v.to_string()).collect();
    let refused = |v: &str, force: bool| {
        delete("hello", Some(&s), &all, v, 5, force)
            .expect_err(v)
            .to_string()
    };
    assert_eq!(
        refused("1.2.0", false),
        "version 1.2.0 of function hello has 10% of the traffic; shift it away first"
    );
    assert_eq!(
        refused("1.2.0", true),
        "version 1.2.0 of function hello has 10% of the traffic; shift it away first"
    );
    assert!(refused("1.3.0", false).contains("is named by tag qa"));
    assert_eq!(
        delete("hello", Some(&s), &all, "1.3.0", 5, true),
        Ok(vec!["qa".to_string()])
    );
    assert!(
        refused("1.0.0", false).contains("rollback target"),
        "{}",
        refused("1.0.0", false)
    );
    assert!(delete("hello", Some(&s), &all, "9.9.9", 5, true).is_err());
}

#[test]
fn gc_keeps_what_rollback_and_routing_need() {
    let vs = ready(&["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"]);
    let mut s = first_deploy("1.0.0", &change(0));
    for (i, v) in ["1.1.0", "1.2.0", "1.3.0"].iter().enumerate() {
        s = apply(
            "hello",
            &s,
            split(&[(v, TOTAL_PPM)]),
            Action::Promote,
            &vs,
            false,
            &change(i as u32 + 1),
        )
        .expect("promote");
    }
    s = apply(
        "hello",
        &s,
        split(&[("1.4.0", 100_000), ("1.3.0", 900_000)]),
        Action::Traffic,
        &vs,
        false,
        &change(9),
    )
    .expect("shift");
    let all: Vec<String> = vs.iter().map(|v| v.version.clone()).collect();
    let plan = gc(Some(&s), &all, 1);
    assert_eq!(plan.delete, vec!["1.0.0", "1.1.0"]);
    let kept: Vec<(&str, &Protection)> = plan.keep.iter().map(|(v, p)| (v.as_str(), p)).collect();
    assert_eq!(
        kept,
        vec![
            ("1.2.0", &Protection::Stable),
            ("1.3.0", &Protection::Weighted(900_000)),
            ("1.4.0", &Protection::Weighted(100_000)),
            ("1.5.0", &Protection::Unreleased),
        ]
    );
    // A wider rollback window keeps the versions it saw with traffic.
    assert_eq!(gc(Some(&s), &all, 10).delete, Vec::<String>::new());
}

/// Applies a rollback plan as the CLI does.
fn roll_back(s: &FunctionSpec, vs: &[VersionState], n: u32) -> Result<FunctionSpec, PlanError> {
    match rollback("hello", s, None, vs)? {
        Rollback::To(t) => apply("hello", s, t, Action::Rollback, vs, false, &change(n)),
        Rollback::Already { .. } => Ok(s.clone()),
    }
}

/// Deployed at 1.0.0, 1.1.0 promoted, then rolled back to 1.0.0.
fn promoted_then_rolled_back() -> FunctionSpec {
    let vs = ready(&ALL);
    let s = first_deploy("1.0.0", &change(0));
    let s = apply(
        "hello",
        &s,
        split(&[("1.1.0", TOTAL_PPM)]),
        Action::Promote,
        &vs,
        false,
        &change(1),
    )
    .expect("promote");
    let s = roll_back(&s, &vs, 2).expect("rollback");
    assert_eq!(s.traffic, split(&[("1.0.0", TOTAL_PPM)]));
    s
}

#[test]
fn a_second_rollback_changes_nothing_instead_of_returning_to_the_version_left() {
    let s = promoted_then_rolled_back();
    assert_eq!(
        rollback("hello", &s, None, &ready(&ALL)),
        Ok(Rollback::Already {
            version: "1.0.0".into(),
            left: vec!["1.1.0".into()],
        })
    );
}

#[test]
fn a_second_rollback_after_an_aborted_canary_keeps_the_healthy_release() {
    let vs = ready(&ALL);
    // 1.1.0 is stable with 1.0.0 before it; the 1.2.0 canary is aborted.
    let s = roll_back(&mid_canary(), &vs, 3).expect("rollback");
    assert_eq!(s.traffic, split(&[("1.1.0", TOTAL_PPM)]));
    assert_eq!(s.previous_stable.as_deref(), Some("1.0.0"));
    assert!(matches!(
        rollback("hello", &s, None, &vs),
        Ok(Rollback::Already { version, .. }) if version == "1.1.0"
    ));
}

#[test]
fn traffic_back_to_a_version_rolled_back_from_needs_force() {
    let vs = ready(&ALL);
    let s = promoted_then_rolled_back();
    assert_eq!(rolled_back_from(&s), BTreeSet::from(["1.1.0".to_string()]));
    let canary = split(&[("1.1.0", 100_000), ("1.0.0", 900_000)]);
    for action in [Action::Traffic, Action::Promote, Action::Rollback] {
        assert_eq!(
            apply("hello", &s, canary.clone(), action, &vs, false, &change(3)),
            Err(PlanError::RolledBackFrom {
                function: "hello".into(),
                version: "1.1.0".into()
            })
        );
    }
    assert_eq!(
        undo("hello", &s, &vs, false, &change(3)),
        Err(PlanError::RolledBackFrom {
            function: "hello".into(),
            version: "1.1.0".into()
        })
    );
    // Other versions are free; forcing it once makes it an ordinary version again.
    let other = split(&[("1.2.0", 100_000), ("1.0.0", 900_000)]);
    assert!(apply("hello", &s, other, Action::Traffic, &vs, false, &change(3)).is_ok());
    let forced =
        apply("hello", &s, canary, Action::Traffic, &vs, true, &change(3)).expect("forced");
    assert!(rolled_back_from(&forced).is_empty());
}

#[test]
fn a_rollback_or_undo_to_a_deleted_version_is_refused_with_the_next_step() {
    let s = mid_canary();
    let without_stable = ready(&["1.0.0", "1.2.0"]);
    assert_eq!(
        rollback("hello", &s, None, &without_stable),
        Err(PlanError::TargetGone {
            function: "hello".into(),
            version: "1.1.0".into(),
            action: Action::Rollback,
            next: "rollback --to VERSION",
        })
    );
    assert!(matches!(
        undo("hello", &s, &without_stable, false, &change(3)),
        Err(PlanError::TargetGone { version, action: Action::Undo, .. }) if version == "1.1.0"
    ));
}

#[test]
fn versions_that_differ_only_in_punctuation_collide_on_their_object_name() {
    let existing = ["1.2.0", "1.3.0-rc.1"];
    for version in ["1.3.0-rc-1", "1.3.0+rc.1", "1.3.0-RC.1"] {
        assert_eq!(
            name_collision("hello", existing, version),
            Err(PlanError::NameCollision {
                function: "hello".into(),
                version: version.into(),
                other: "1.3.0-rc.1".into(),
                object: "hello-1-3-0-rc-1".into(),
            }),
            "{version}"
        );
    }
    // The same version again is not a collision (immutability decides), nor is a new one.
    assert_eq!(name_collision("hello", existing, "1.3.0-rc.1"), Ok(()));
    assert_eq!(name_collision("hello", existing, "1.3.0-rc.2"), Ok(()));
}

/// One step of the model test: a shift of `share` to a version, a promote, a rollback (to the
/// version rollback chooses, or `--to` one), an undo; `force` as the user might pass it.
#[derive(Debug, Clone)]
enum Op {
    Shift(usize, u32, bool),
    Promote(usize, bool),
    Rollback(bool),
    RollbackTo(usize, bool),
    Undo(bool),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4, 0u32..=1_000_000, any::<bool>()).prop_map(|(v, w, f)| Op::Shift(v, w, f)),
        (0usize..4, any::<bool>()).prop_map(|(v, f)| Op::Promote(v, f)),
        any::<bool>().prop_map(Op::Rollback),
        (0usize..4, any::<bool>()).prop_map(|(v, f)| Op::RollbackTo(v, f)),
        any::<bool>().prop_map(Op::Undo),
    ]
}

/// A small model of what rollback should do, kept from the operations themselves rather than
/// from the spec: the distinct versions that held 100% in order, the versions a rollback left
/// (and nothing gave weight since), and whether the last change was a rollback.
///
/// It also keeps the undo stack (each traffic state not undone, oldest first) and which
/// versions are ready, and says what `apply` must do with a proposed split.
#[derive(Debug, Default)]
struct Model {
    holders: Vec<String>,
    left: BTreeSet<String>,
    just_rolled_back: bool,
    states: Vec<Vec<TrafficTarget>>,
    unready: BTreeSet<String>,
}

/// What the model expects of a write.
#[derive(Debug, PartialEq)]
enum Expect {
    Written,
    RolledBackFrom,
    NotReady,
}

impl Model {
    /// A write of `traffic` over `current`: refused without --force when it gives weight back
    /// to a version rolled back from (checked first), or more weight to an unready version.
    fn write(&self, current: &[TrafficTarget], traffic: &[TrafficTarget], force: bool) -> Expect {
        let gains = |t: &&TrafficTarget| t.weight > weight_in(current, &t.version);
        if force {
            Expect::Written
        } else if traffic
            .iter()
            .filter(gains)
            .any(|t| self.left.contains(&t.version))
        {
            Expect::RolledBackFrom
        } else if traffic
            .iter()
            .filter(gains)
            .any(|t| self.unready.contains(&t.version))
        {
            Expect::NotReady
        } else {
            Expect::Written
        }
    }

    fn changed(&mut self, before: &[TrafficTarget], after: &[TrafficTarget], rollback: bool) {
        for t in after {
            if t.weight > weight_in(before, &t.version) {
                self.left.remove(&t.version);
            }
        }
        if rollback {
            for t in before.iter().filter(|t| t.weight > 0) {
                if weight_in(after, &t.version) == 0 {
                    self.left.insert(t.version.clone());
                }
            }
        }
        if let Some(h) = full_holder(after) {
            if self.holders.last().map(String::as_str) != Some(h) {
                self.holders.push(h.to_string());
            }
        }
        self.just_rolled_back = rollback;
    }

    /// `Some(version)` to roll back to, `None` for "nothing to change" or "nothing to roll
    /// back to" (told apart by `already`).
    fn rollback(&self, current: &[TrafficTarget]) -> (Option<String>, bool) {
        let holder = full_holder(current);
        if self.just_rolled_back {
            return (None, true);
        }
        // Rollback remembers the last two versions to hold 100% (stable, previousStable).
        let target = self
            .holders
            .iter()
            .rev()
            .take(2)
            .find(|v| Some(v.as_str()) != holder && !self.left.contains(*v))
            .cloned();
        let on_stable = holder.is_some() && holder == self.holders.last().map(String::as_str);
        let already = target.is_none() && on_stable && !self.left.is_empty();
        (target, already)
    }
}

fn shift_strategy() -> impl Strategy<Value = Vec<(usize, u32)>> {
    proptest::collection::vec((0usize..4, 0u32..=1_000_000), 1..15)
}

proptest! {
    #[test]
    fn rollback_after_any_sequence_of_shifts_leaves_the_stable_version_at_100(shifts in shift_strategy()) {
        let vs = ready(&ALL);
        let mut s = first_deploy("1.0.0", &change(0));
        let mut last_full: Vec<String> = vec!["1.0.0".into()];
        for (i, (target, share)) in shifts.iter().enumerate() {
            let t = with_share(&s.traffic, ALL[*target], *share);
            s = apply("hello", &s, t, Action::Traffic, &vs, false, &change(i as u32 + 1)).expect("valid shift");
            if let Some(full) = s.traffic.iter().find(|t| t.weight == TOTAL_PPM) {
                if last_full.last() != Some(&full.version) {
                    last_full.push(full.version.clone());
                }
            }
        }
        let current_full = s.traffic.iter().find(|t| t.weight == TOTAL_PPM).map(|t| t.version.clone());
        let expected = last_full.iter().rev().find(|v| Some(*v) != current_full.as_ref()).cloned();
        match rollback("hello", &s, None, &vs) {
            Ok(Rollback::Already { .. }) => prop_assert!(false, "no rollback was made"),
            Ok(Rollback::To(t)) => {
                prop_assert_eq!(t.len(), 1);
                prop_assert_eq!(t[0].weight, TOTAL_PPM);
                prop_assert_eq!(Some(t[0].version.clone()), expected);
            }
            Err(e) => {
                prop_assert_eq!(e, PlanError::NoStable("hello".into()));
                prop_assert_eq!(expected, None);
            }
        }
    }

    #[test]
    fn undo_after_a_shift_restores_the_exact_prior_traffic(shifts in shift_strategy(), last in (0usize..4, 0u32..=1_000_000)) {
        let vs = ready(&ALL);
        let mut s = first_deploy("1.0.0", &change(0));
        for (i, (target, share)) in shifts.iter().enumerate() {
            s = apply("hello", &s, with_share(&s.traffic, ALL[*target], *share), Action::Traffic, &vs, false, &change(i as u32 + 1)).expect("shift");
        }
        let before = s.traffic.clone();
        let shifted = apply("hello", &s, with_share(&s.traffic, ALL[last.0], last.1), Action::Traffic, &vs, false, &change(99)).expect("shift");
        let undone = undo("hello", &shifted, &vs, false, &change(100)).expect("undo");
        prop_assert_eq!(undone.traffic, before);
    }

    #[test]
    fn with_share_always_sums_to_the_whole(weights in proptest::collection::vec(0u32..1_000_000, 1..5), share in 0u32..=1_000_000) {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        prop_assume!(total > 0);
        let mut t: Vec<TrafficTarget> = weights.iter().enumerate()
            .map(|(i, w)| TrafficTarget::new(format!("1.{i}.0"), (u64::from(*w) * 1_000_000 / total) as u32)).collect();
        let short = TOTAL_PPM - t.iter().map(|x| x.weight).sum::<u32>();
        t[0].weight += short;
        let out = with_share(&t, "9.0.0", share);
        prop_assert_eq!(out.iter().map(|x| u64::from(x.weight)).sum::<u64>(), 1_000_000u64);
        prop_assert_eq!(out.iter().find(|x| x.version == "9.0.0").map(|x| x.weight), Some(share));
    }

    #[test]
    fn every_write_matches_the_model_stable_moves_and_rollback_never_returns_to_a_version_left(
        ops in proptest::collection::vec(op_strategy(), 1..14),
        unready in proptest::collection::btree_set(1usize..4, 0..3),
    ) {
        let unready: BTreeSet<String> = unready.iter().map(|i| ALL[*i].to_string()).collect();
        let vs: Vec<VersionState> = ALL.iter().map(|v| VersionState { version: v.to_string(), ready: !unready.contains(*v) }).collect();
        let mut s = first_deploy("1.0.0", &change(0));
        let mut model = Model { holders: vec!["1.0.0".into()], states: vec![s.traffic.clone()], unready, ..Model::default() };
        for (i, op) in ops.iter().enumerate() {
            let n = i as u32 + 1;
            let before = s.traffic.clone();
            // The split each op proposes, how it is recorded, whether it is a rollback, --force.
            let (traffic, action, force) = match *op {
                Op::Shift(v, w, f) => (with_share(&s.traffic, ALL[v], w), Action::Traffic, f),
                Op::Promote(v, f) => (split(&[(ALL[v], TOTAL_PPM)]), Action::Promote, f),
                Op::RollbackTo(v, f) => match rollback("hello", &s, Some(ALL[v]), &vs) {
                    Ok(Rollback::To(t)) => (t, Action::Rollback, f),
                    other => return Err(TestCaseError::fail(format!("rollback --to {}: {other:?}", ALL[v]))),
                },
                Op::Rollback(f) => {
                    let (expected, already) = model.rollback(&s.traffic);
                    match rollback("hello", &s, None, &vs) {
                        Ok(Rollback::To(t)) => {
                            prop_assert_eq!(t.len(), 1);
                            prop_assert!(!model.left.contains(&t[0].version));
                            prop_assert_eq!(Some(t[0].version.clone()), expected);
                            (t, Action::Rollback, f)
                        }
                        Ok(Rollback::Already { .. }) => {
                            prop_assert!(already && expected.is_none());
                            continue;
                        }
                        Err(e) => {
                            prop_assert_eq!(e, PlanError::NoStable("hello".into()));
                            prop_assert!(!already && expected.is_none());
                            continue;
                        }
                    }
                }
                Op::Undo(f) => {
                    let result = undo("hello", &s, &vs, f, &change(n));
                    let [.., previous, _] = &model.states[..] else {
                        prop_assert_eq!(result, Err(PlanError::NothingToUndo("hello".into())));
                        continue;
                    };
                    let previous = previous.clone();
                    let expect = model.write(&before, &previous, f);
                    match result {
                        Ok(next) => {
                            prop_assert_eq!(expect, Expect::Written);
                            prop_assert_eq!(&next.traffic, &previous);
                            model.states.pop();
                            model.changed(&before, &next.traffic, false);
                            s = next;
                        }
                        Err(PlanError::RolledBackFrom { .. }) => prop_assert_eq!(expect, Expect::RolledBackFrom),
                        Err(PlanError::NotReady { .. }) => prop_assert_eq!(expect, Expect::NotReady),
                        Err(e) => return Err(TestCaseError::fail(format!("undo refused: {e}"))),
                    }
                    prop_assert_eq!(s.stable.as_ref(), model.holders.last());
                    prop_assert_eq!(s.previous_stable.as_ref(), model.holders.iter().rev().nth(1));
                    continue;
                }
            };
            let expect = model.write(&before, &traffic, force);
            let rolls_back = action == Action::Rollback;
            match apply("hello", &s, traffic, action, &vs, force, &change(n)) {
                Ok(next) => {
                    prop_assert_eq!(expect, Expect::Written);
                    // The CLI writes nothing when the split does not change.
                    if !same_split(&before, &next.traffic) {
                        model.changed(&before, &next.traffic, rolls_back);
                        model.states.push(next.traffic.clone());
                        s = next;
                        if rolls_back {
                            // Rolling back twice is rolling back once.
                            let again = rollback("hello", &s, None, &vs);
                            prop_assert!(matches!(again, Ok(Rollback::Already { .. })), "{:?}", again);
                        }
                    }
                }
                Err(PlanError::RolledBackFrom { .. }) => prop_assert_eq!(expect, Expect::RolledBackFrom),
                Err(PlanError::NotReady { .. }) => prop_assert_eq!(expect, Expect::NotReady),
                Err(e) => return Err(TestCaseError::fail(format!("{op:?} refused: {e}"))),
            }
            // The stable version is the last to hold 100%, the previous one the one before.
            prop_assert_eq!(s.stable.as_ref(), model.holders.last());
            prop_assert_eq!(s.previous_stable.as_ref(), model.holders.iter().rev().nth(1));
        }
    }
}

#[test]
fn revisions_count_every_change_and_survive_trimming() {
    let vs = ready(&ALL);
    let mut s = first_deploy("1.0.0", &change(0));
    assert_eq!(s.history[0].revision, 1);
    for i in 1..=(DEFAULT_HISTORY_LIMIT as u32 + 3) {
        let v = ALL[(i % 2) as usize];
        s = apply(
            "hello",
            &s,
            split(&[(v, TOTAL_PPM)]),
            Action::Promote,
            &vs,
            true,
            &change(i),
        )
        .unwrap();
    }
    // Trimmed to the limit, numbered on: the oldest kept is not #1 any more.
    assert_eq!(s.history.len(), DEFAULT_HISTORY_LIMIT);
    let revisions: Vec<u64> = s.history.iter().map(|h| h.revision).collect();
    let last = DEFAULT_HISTORY_LIMIT as u64 + 4;
    assert_eq!(
        revisions,
        ((last - DEFAULT_HISTORY_LIMIT as u64 + 1)..=last).collect::<Vec<_>>()
    );
    // Entries written before revisions existed count by position.
    let mut legacy = first_deploy("1.0.0", &change(0));
    legacy.history[0].revision = 0;
    assert_eq!(revision_at(&legacy, 0), 1);
    let next = apply(
        "hello",
        &legacy,
        split(&[("1.1.0", TOTAL_PPM)]),
        Action::Promote,
        &vs,
        false,
        &change(1),
    )
    .unwrap();
    assert_eq!(next.history[1].revision, 2);
}

#[test]
fn undo_to_a_revision_restores_its_traffic_and_walks_back_from_there() {
    let vs = ready(&ALL);
    let s = mid_canary(); // #1 deploy 1.0.0, #2 promote 1.1.0, #3 1.2.0 at 10%
    let to_one = undo_to("hello", &s, 1, &vs, true, &change(50)).unwrap();
    assert_eq!(to_one.traffic, split(&[("1.0.0", TOTAL_PPM)]));
    let last = to_one.history.last().unwrap();
    assert_eq!((last.action, last.revision), (Action::Undo, 4));
    assert!(to_one.history[1].undone && to_one.history[2].undone);
    // Nothing before #1 is left to undo to.
    assert_eq!(
        undo("hello", &to_one, &vs, true, &change(51)),
        Err(PlanError::NothingToUndo("hello".into()))
    );
    assert_eq!(
        undo_to("hello", &s, 9, &vs, true, &change(50)),
        Err(PlanError::NoRevision {
            function: "hello".into(),
            revision: 9,
            oldest: Some(1)
        })
    );
    // A revision whose version was deleted since is refused with the next step.
    let without = ready(&["1.1.0", "1.2.0"]);
    assert!(matches!(
        undo_to("hello", &s, 1, &without, true, &change(50)),
        Err(PlanError::TargetGone { .. })
    ));
}

#[test]
fn tags_are_set_moved_and_removed_with_history_but_no_traffic_change() {
    let vs = ready(&ALL);
    let s = mid_canary();
    let tagged = tag("hello", &s, "beta", "1.2.0", &vs, &change(60))
        .unwrap()
        .unwrap();
    assert_eq!(tagged.tag("beta"), Some("1.2.0"));
    assert_eq!(tagged.traffic, s.traffic);
    assert_eq!(tagged.history.last().unwrap().action, Action::Tag);
    // Again: nothing to do.
    assert_eq!(
        tag("hello", &tagged, "beta", "1.2.0", &vs, &change(61)),
        Ok(None)
    );
    let moved = tag("hello", &tagged, "beta", "1.3.0", &vs, &change(62))
        .unwrap()
        .unwrap();
    assert_eq!((moved.tags.len(), moved.tag("beta")), (1, Some("1.3.0")));
    assert!(matches!(
        tag("hello", &s, "beta", "9.9.9", &vs, &change(63)),
        Err(PlanError::UnknownVersion { .. })
    ));
    assert!(matches!(
        tag("hello", &s, "Not_A_Label", "1.2.0", &vs, &change(63)),
        Err(PlanError::Invalid(_))
    ));
    let untagged = untag("hello", &moved, "beta", &vs, &change(64))
        .unwrap()
        .unwrap();
    assert!(untagged.tags.is_empty());
    assert_eq!(
        untag("hello", &untagged, "beta", &vs, &change(65)),
        Ok(None)
    );
    // Undo passes over tag entries: it walks back the traffic, to before the canary.
    let undone = undo("hello", &untagged, &vs, true, &change(66)).unwrap();
    assert_eq!(undone.traffic, split(&[("1.1.0", TOTAL_PPM)]));
}

#[test]
fn settings_change_only_what_is_given_and_are_validated() {
    let vs = ready(&ALL);
    let s = mid_canary();
    let sticky = Settings {
        affinity: Some(Some(Affinity {
            header: Some("x-user".into()),
            cookie: None,
        })),
        pinning: Some(true),
        ..Default::default()
    };
    let next = settings("hello", &s, &sticky, &vs, &change(70))
        .unwrap()
        .unwrap();
    assert_eq!(
        next.affinity.as_ref().unwrap().header.as_deref(),
        Some("x-user")
    );
    assert!(next.pinning);
    assert_eq!(
        (next.traffic.clone(), next.hosts.clone()),
        (s.traffic.clone(), s.hosts.clone())
    );
    assert_eq!(next.history.last().unwrap().action, Action::Set);
    assert_eq!(
        settings("hello", &next, &sticky, &vs, &change(71)),
        Ok(None)
    );
    let bad_prefix = Settings {
        path_prefix: Some(Some("no-slash".into())),
        ..Default::default()
    };
    assert!(matches!(
        settings("hello", &s, &bad_prefix, &vs, &change(72)),
        Err(PlanError::Invalid(_))
    ));
    // A rollback after a settings change is still idempotent.
    let rolled = apply(
        "hello",
        &next,
        split(&[("1.1.0", TOTAL_PPM)]),
        Action::Rollback,
        &vs,
        false,
        &change(73),
    )
    .unwrap();
    let set_after = settings(
        "hello",
        &rolled,
        &Settings {
            pinning: Some(false),
            ..Default::default()
        },
        &vs,
        &change(74),
    )
    .unwrap()
    .unwrap();
    assert!(matches!(
        rollback("hello", &set_after, None, &vs),
        Ok(Rollback::Already { .. })
    ));
}

fn shadow_of(version: &str, share: u32) -> ShadowSpec {
    ShadowSpec {
        version: version.into(),
        share,
        methods: vec![],
        max_body: None,
        ignore_headers: vec!["date".into()],
        ignore_json: vec!["$.ts".into()],
    }
}

#[test]
fn a_shadow_is_started_changed_and_stopped_in_history_without_moving_traffic() {
    let vs = ready(&ALL);
    let s = mid_canary();
    let on = shadow("hello", &s, &shadow_of("1.3.0", 100_000), &vs, &change(80))
        .unwrap()
        .unwrap();
    assert_eq!(on.shadow.as_deref(), Some(&shadow_of("1.3.0", 100_000)));
    assert_eq!(on.traffic, s.traffic);
    assert_eq!(on.history.last().unwrap().action, Action::Shadow);
    assert!(!Action::Shadow.moves_traffic());
    // The same spec again: nothing to write.
    assert_eq!(
        shadow("hello", &on, &shadow_of("1.3.0", 100_000), &vs, &change(81)),
        Ok(None)
    );
    // A changed share is a change.
    let more = shadow(
        "hello",
        &on,
        &shadow_of("1.3.0", TOTAL_PPM),
        &vs,
        &change(82),
    )
    .unwrap()
    .unwrap();
    assert_eq!(more.shadow.as_ref().unwrap().share, TOTAL_PPM);
    let off = shadow_stop("hello", &more, &vs, &change(83))
        .unwrap()
        .unwrap();
    assert_eq!(
        (off.shadow.clone(), off.traffic.clone()),
        (None, s.traffic.clone())
    );
    assert_eq!(shadow_stop("hello", &off, &vs, &change(84)), Ok(None));
    // Undo passes over shadow entries: it walks back the traffic, to before the canary.
    let undone = undo("hello", &off, &vs, true, &change(85)).unwrap();
    assert_eq!(undone.traffic, split(&[("1.1.0", TOTAL_PPM)]));
}

#[test]
fn a_shadow_of_a_missing_version_or_with_bad_settings_is_refused() {
    let vs = ready(&ALL);
    let s = mid_canary();
    assert!(matches!(
        shadow("hello", &s, &shadow_of("9.9.9", 1), &vs, &change(90)),
        Err(PlanError::UnknownVersion { .. })
    ));
    let bad = [
        ShadowSpec {
            share: 0,
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            share: TOTAL_PPM + 1,
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            methods: vec!["get".into()],
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            methods: vec!["POST".into(), "POST".into()],
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            methods: vec!["CONNECT".into()],
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            max_body: Some(crate::resources::MAX_SHADOW_BODY + 1),
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            ignore_headers: vec!["X-Request-Id".into()],
            ..shadow_of("1.3.0", 1)
        },
        ShadowSpec {
            ignore_json: vec!["ts".into()],
            ..shadow_of("1.3.0", 1)
        },
    ];
    for b in bad {
        assert!(
            matches!(
                shadow("hello", &s, &b, &vs, &change(91)),
                Err(PlanError::Invalid(ValidationError::Shadow(_)))
            ),
            "{b:?} was accepted"
        );
    }
}

#[test]
fn a_shadow_lists_its_methods_and_the_unsafe_ones() {
    let s = shadow_of("1.3.0", 1);
    assert_eq!(s.effective_methods(), ["GET", "HEAD"]);
    assert!(s.unsafe_methods().is_empty());
    assert_eq!(s.effective_max_body(), 1024 * 1024);
    let writes = ShadowSpec {
        methods: vec!["GET".into(), "POST".into(), "DELETE".into()],
        ..s
    };
    assert_eq!(writes.unsafe_methods(), ["POST", "DELETE"]);
}

#[test]
fn the_shadow_version_is_never_deleted_while_shadowed() {
    let vs = ready(&ALL);
    let all: Vec<String> = ALL.iter().map(|v| v.to_string()).collect();
    // After 1.2.0 is promoted, nothing but history keeps 1.0.0.
    let promoted = apply(
        "hello",
        &mid_canary(),
        split(&[("1.2.0", TOTAL_PPM)]),
        Action::Promote,
        &vs,
        false,
        &change(94),
    )
    .unwrap();
    assert!(gc(Some(&promoted), &all, 0)
        .delete
        .contains(&"1.0.0".to_string()));
    let s = shadow("hello", &promoted, &shadow_of("1.0.0", 1), &vs, &change(95))
        .unwrap()
        .unwrap();
    for force in [false, true] {
        assert!(matches!(
            delete("hello", Some(&s), &all, "1.0.0", 0, force),
            Err(PlanError::Referenced { .. })
        ));
    }
    let kept = gc(Some(&s), &all, 0);
    assert!(!kept.delete.contains(&"1.0.0".to_string()), "{kept:?}");
    // Once stopped, it is an ordinary version again.
    let off = shadow_stop("hello", &s, &vs, &change(96)).unwrap().unwrap();
    assert_eq!(
        delete("hello", Some(&off), &all, "1.0.0", 0, false),
        Ok(vec![])
    );
}
