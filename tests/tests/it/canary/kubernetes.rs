//! The canary on Kubernetes: promoted step by step, aborted on errors or latency with the
//! figures, paused without traffic, and carried on by another replica when the deciding one
//! is killed.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use switchyard_core::resources::RolloutPhase;
use switchyard_core::TOTAL_PPM;
use switchyard_tests::router::Router;
use switchyard_tests::Upstream;

use super::*;

/// A namespace with Function `hello` on the baseline 1.2.0 (100%) and the canary 1.3.0
/// deployed at 0%, served by `canary`, and `replicas` routers ready on it.
async fn setup(
    prefix: &str,
    replicas: usize,
    canary: &Faulty,
) -> (Client, String, Upstream, Vec<Router>) {
    let (client, ns, baseline) = two_versions(prefix, canary).await;
    let routers = (0..replicas)
        .map(|i| Router::start(&ns, &format!("{prefix}-{i}")))
        .collect();
    (client, ns, baseline, routers)
}

/// Waits until every router serves Function `f`'s generation, then until the load has seen
/// `n` more answers; those answers. Each router's load thread may have had one request in
/// flight, routed by the table before: those answers are skipped.
fn answers_after(load: &Load, routers: &[&Router], f: &Function, n: usize) -> Vec<String> {
    let generation = f.metadata.generation.expect("a generation");
    for r in routers {
        r.wait_serving("hello", generation);
    }
    let from = load.answers() + routers.len();
    switchyard_tests::wait_until_blocking(Duration::from_secs(60), "more answers", || {
        (load.answers() >= from + n).then_some(())
    });
    load.seen().order[from..from + n].to_vec()
}

/// The history of a five-step rollout that was promoted: each canary entry's reason up to its
/// first `:`.
const PROMOTED: [&str; 5] = [
    "started step 1/5 at 1%",
    "advanced to step 2/5 at 5%",
    "advanced to step 3/5 at 25%",
    "advanced to step 4/5 at 50%",
    "promoted",
];

/// What a rollout run to its end on one router left: the Function then, the load (still
/// sending), the router, and the two upstreams (kept alive while the test looks on: bind
/// `_upstreams` by name, since `..` would drop them at once).
struct Ended {
    f: Function,
    load: Load,
    routers: Vec<Router>,
    _upstreams: (Faulty, Upstream),
}

/// One router (replica `<prefix>-0`) under load through a rollout of 1.3.0, served by
/// `canary`, of five steps held 1 s with 20 requests a side, until it ends in `phase`.
async fn run_to_the_end(prefix: &str, canary: Faulty, phase: RolloutPhase, what: &str) -> Ended {
    let (client, ns, baseline, routers) = setup(prefix, 1, &canary).await;
    let load = Load::start(&[routers[0].listen], "hello");
    start_rollout(&client, &ns, "hello", &plan("1.3.0", "1.2.0", "1s", 20)).await;
    let f = wait_rollout(&client, &ns, "hello", what, ended(phase)).await;
    Ended {
        f,
        load,
        routers,
        _upstreams: (canary, baseline),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_every_step_and_is_promoted_by_the_router() {
    let canary = Faulty::start("1.3.0", 0, Duration::ZERO);
    let Ended {
        f,
        load,
        routers,
        _upstreams,
    } = run_to_the_end("cnok", canary, RolloutPhase::Succeeded, "the promotion").await;
    assert_eq!(f.spec.weight_of("1.3.0"), TOTAL_PPM);
    assert!(
        f.spec.rollout.is_none(),
        "a finished rollout leaves the spec"
    );
    let steps: Vec<String> = canary_history(&f)
        .into_iter()
        .map(|(actor, reason)| {
            let what = reason.split(':').next().unwrap_or_default().to_string();
            if !what.starts_with("started") {
                assert_eq!(actor, "switchyard-router/cnok-0", "{reason}");
            }
            what
        })
        .collect();
    assert_eq!(steps, PROMOTED);
    let seen = answers_after(&load, &[&routers[0]], &f, 100);
    assert!(seen.iter().all(|by| by == "hello@1.3.0"), "{seen:?}");
    let all = load.stop();
    assert_eq!(all.failed, 0, "{all:?}");
    assert!(
        routers[0].log().contains("canary of"),
        "an INFO line per transition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_one_request_in_five_is_aborted_with_the_figures() {
    let canary = Faulty::start("1.3.0", 5, Duration::ZERO);
    let Ended {
        f,
        load,
        routers,
        _upstreams,
    } = run_to_the_end("cnerr", canary, RolloutPhase::Aborted, "the abort").await;
    let reason = status(&f).reason.clone().unwrap_or_default();
    assert!(
        reason.contains("canary 1.3.0: error rate ")
            && reason.contains("% vs baseline 0.0% over ")
            && reason.ends_with("(limit +1 pp)"),
        "{reason}"
    );
    assert_eq!(f.spec.weight_of("1.2.0"), TOTAL_PPM);
    assert_eq!(f.spec.weight_of("1.3.0"), 0);
    let last = canary_history(&f).pop().expect("the abort in history");
    assert_eq!(last.0, "switchyard-router/cnerr-0");
    assert!(
        last.1.starts_with("aborted: canary 1.3.0: error rate"),
        "{}",
        last.1
    );
    // Live traffic is back on the baseline.
    let seen = answers_after(&load, &[&routers[0]], &f, 200);
    assert!(seen.iter().all(|by| by == "hello@1.2.0"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_200_ms_slower_is_aborted_on_the_latency_rule() {
    let canary = Faulty::start("1.3.0", 0, Duration::from_millis(200));
    let Ended {
        f,
        load,
        routers,
        _upstreams,
    } = run_to_the_end("cnslow", canary, RolloutPhase::Aborted, "the abort").await;
    let reason = status(&f).reason.clone().unwrap_or_default();
    assert!(
        reason.contains("canary 1.3.0: p99 2") && reason.ends_with("(limit +50ms)"),
        "{reason}"
    );
    assert_eq!(f.spec.weight_of("1.3.0"), 0);
    let seen = answers_after(&load, &[&routers[0]], &f, 100);
    assert!(seen.iter().all(|by| by == "hello@1.2.0"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traffic_a_step_waits_then_pauses_with_the_reason() {
    let canary = Faulty::start("1.3.0", 0, Duration::ZERO);
    let (client, ns, _baseline, _routers) = setup("cnidle", 1, &canary).await;
    let mut spec = plan("1.3.0", "1.2.0", "1s", 20);
    spec.max_wait = Some("2s".into());
    start_rollout(&client, &ns, "hello", &spec).await;
    let f = wait_rollout(&client, &ns, "hello", "the pause", |s| {
        s.phase == RolloutPhase::Paused
    })
    .await;
    let reason = status(&f).reason.clone().unwrap_or_default();
    assert!(
        reason.contains("step 1/5 at 1%: not enough requests after")
            && reason.ends_with("canary 0/20, baseline 0/20"),
        "{reason}"
    );
    // A pause keeps the weights of the step and stays in flight.
    assert_eq!(f.spec.weight_of("1.3.0"), 10_000);
    assert!(f.spec.rollout.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_deciding_router_is_killed_another_continues_without_skipping_or_repeating() {
    let canary = Faulty::start("1.3.0", 0, Duration::ZERO);
    let (client, ns, _baseline, mut routers) = setup("cnkill", 2, &canary).await;
    let load = Load::start(&[routers[0].listen, routers[1].listen], "hello");
    start_rollout(&client, &ns, "hello", &plan("1.3.0", "1.2.0", "2s", 20)).await;
    let f = wait_rollout(&client, &ns, "hello", "step 2", |s| s.step >= 1).await;
    assert_eq!(status(&f).phase, RolloutPhase::Progressing);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = leases
        .get("switchyard-canary")
        .await
        .expect("the decider Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    let dead = routers
        .iter()
        .position(|r| r.replica == holder)
        .expect("the holder is one of the routers");
    routers[dead].kill();
    let survivor = routers[1 - dead].replica.clone();
    let (_, history, steps) = wait_promoted(&client, &ns).await;
    assert_eq!(steps, PROMOTED, "{history:?}");
    assert_eq!(
        history.last().map(|(actor, _)| actor.clone()),
        Some(format!("switchyard-router/{survivor}")),
        "{history:?}"
    );
    let taken = leases
        .get("switchyard-canary")
        .await
        .expect("the decider Lease")
        .spec
        .expect("a spec");
    assert!(taken.lease_transitions.unwrap_or(0) >= 2, "{taken:?}");
    drop(load);
}
