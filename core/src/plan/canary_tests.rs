//! A manual traffic change during an automated canary ends the rollout first, in the same
//! write (issue 15).

use super::*;
use crate::resources::RolloutSpec;

fn change(actor: &str) -> Change {
    Change {
        now: "2026-12-02T10:00:00Z".into(),
        actor: actor.into(),
        reason: None,
    }
}

fn ready() -> Vec<VersionState> {
    VersionState::all_ready(&["1.2.0", "1.3.0"])
}

/// 1.2.0 stable, a rollout of 1.3.0 at its second step (5%).
fn rolling() -> FunctionSpec {
    let s = first_deploy("1.2.0", &change("alice"));
    let mut s = apply(
        "hello",
        &s,
        vec![
            TrafficTarget::new("1.2.0", 950_000),
            TrafficTarget::new("1.3.0", 50_000),
        ],
        Action::Canary,
        &ready(),
        false,
        &change("switchyard-router/r1"),
    )
    .unwrap();
    s.rollout = Some(Box::new(RolloutSpec::with_defaults("1.3.0", "1.2.0")));
    s
}

#[test]
fn each_manual_traffic_verb_ends_the_rollout_in_the_same_write_and_records_it() {
    for (action, traffic) in [
        (
            Action::Traffic,
            vec![("1.2.0", 500_000), ("1.3.0", 500_000)],
        ),
        (Action::Promote, vec![("1.3.0", TOTAL_PPM)]),
        (Action::Rollback, vec![("1.2.0", TOTAL_PPM)]),
    ] {
        let before = rolling();
        let traffic: Vec<TrafficTarget> = traffic
            .into_iter()
            .map(|(v, w)| TrafficTarget::new(v, w))
            .collect();
        let next = apply(
            "hello",
            &before,
            traffic.clone(),
            action,
            &ready(),
            false,
            &change("bob"),
        )
        .unwrap();
        assert_eq!(next.rollout, None, "{action}");
        assert_eq!(next.traffic, traffic);
        let [.., ended, own] = &next.history[..] else {
            panic!("two new entries");
        };
        assert_eq!(ended.action, Action::Canary);
        assert_eq!(ended.actor, "bob");
        assert_eq!(
            ended.reason.as_deref(),
            Some(
                format!("ended by a manual {action} (canary 1.3.0 against baseline 1.2.0)")
                    .as_str()
            )
        );
        // The ending moved no traffic: it records the split the rollout left.
        assert_eq!(ended.traffic, before.traffic);
        assert!(!ended.moves_traffic());
        assert_eq!(own.action, action);
    }
}

#[test]
fn undo_during_a_rollout_ends_it_and_restores_the_previous_state() {
    let next = undo("hello", &rolling(), &ready(), false, &change("bob")).unwrap();
    assert_eq!(next.rollout, None);
    assert_eq!(next.traffic, vec![TrafficTarget::new("1.2.0", TOTAL_PPM)]);
    let kinds: Vec<Action> = next.history.iter().map(|h| h.action).collect();
    assert_eq!(
        kinds,
        [Action::Deploy, Action::Canary, Action::Canary, Action::Undo]
    );
}

#[test]
fn changes_that_move_no_traffic_leave_the_rollout_alone() {
    let s = rolling();
    let tagged = tag("hello", &s, "beta", "1.3.0", &ready(), &change("bob"))
        .unwrap()
        .unwrap();
    assert!(tagged.rollout.is_some());
    let settings = Settings {
        pinning: Some(true),
        ..Default::default()
    };
    let set = super::settings("hello", &s, &settings, &ready(), &change("bob"))
        .unwrap()
        .unwrap();
    assert!(set.rollout.is_some());
}

#[test]
fn a_canary_step_keeps_sticky_affinity_and_without_a_rollout_nothing_is_recorded() {
    let mut s = rolling();
    s.affinity = Some(Affinity {
        header: Some("x-user".into()),
        cookie: None,
    });
    // The router's own step write goes through the same recording, affinity untouched.
    let step = apply(
        "hello",
        &s,
        vec![
            TrafficTarget::new("1.2.0", 750_000),
            TrafficTarget::new("1.3.0", 250_000),
        ],
        Action::Canary,
        &ready(),
        false,
        &change("switchyard-router/r1"),
    )
    .unwrap();
    assert_eq!(step.affinity, s.affinity);
    assert!(
        step.rollout.is_some(),
        "a canary step does not end its rollout"
    );
    let mut plain = rolling();
    plain.rollout = None;
    let n = plain.history.len();
    let next = apply(
        "hello",
        &plain,
        vec![TrafficTarget::new("1.2.0", TOTAL_PPM)],
        Action::Traffic,
        &ready(),
        false,
        &change("bob"),
    )
    .unwrap();
    assert_eq!(next.history.len(), n + 1);
}
