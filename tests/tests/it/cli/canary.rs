//! `switchyard canary` against the real API server: the Function CRD keeps a rollout's plan
//! (`spec.rollout`) and progress (`status.rollout`, no status subresource: one write carries
//! both with the traffic), its CEL rules refuse an invalid plan with one clear line whoever
//! writes it, and a start / abort / manual-traffic round trip leaves the record a router and
//! a person read.

use kube::api::{Api, PostParams};
use switchyard_core::{Function, RolloutPhase, RolloutSpec, TOTAL_PPM};
use switchyard_tests::cli::{function, two_versions, Cli};
use switchyard_tests::{client, namespace};

fn rollout(f: &Function) -> &switchyard_core::RolloutStatus {
    f.status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .expect("status.rollout")
}

#[tokio::test]
async fn the_api_server_refuses_an_invalid_plan_with_one_clear_line_and_so_does_the_cli() {
    let client = client().await;
    let ns = namespace(&client, "cli-canary-cel").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let api: Api<Function> = Api::namespaced(client.clone(), &ns);
    type Spoil = fn(&mut RolloutSpec);
    let cases: [(&str, Spoil); 5] = [
        ("steps must strictly increase", |r| {
            r.steps = vec![250_000, 50_000]
        }),
        ("the canary must not be the baseline", |r| {
            r.baseline = r.canary.clone()
        }),
        ("minRequests", |r| r.min_requests = 0),
        ("maxWait must be at least the hold", |r| {
            r.max_wait = Some("10s".into())
        }),
        ("the first step is 100%", |r| r.steps = vec![1_000_000]),
    ];
    for (message, spoil) in cases {
        // Written directly, past every client-side check: the CRD alone refuses it.
        let mut f = api.get("hello").await.expect("hello");
        let mut plan = RolloutSpec::with_defaults("1.1.0", "1.0.0");
        spoil(&mut plan);
        f.spec.rollout = Some(Box::new(plan));
        let err = api
            .replace("hello", &PostParams::default(), &f)
            .await
            .expect_err(message);
        let kube::Error::Api(status) = &err else {
            panic!("{err}")
        };
        assert_eq!(status.code, 422, "{err}");
        assert!(
            status.message.contains(message),
            "{message}: {}",
            status.message
        );
    }
    assert!(api.get("hello").await.unwrap().spec.rollout.is_none());
    // The CLI refuses the same plans before any write: exit 2, one line.
    let before = function(&client, &ns, "hello")
        .await
        .metadata
        .resource_version;
    for args in [
        &["canary", "hello", "1.1.0", "--steps", "25,5"][..],
        &["canary", "hello", "1.1.0", "--min-requests", "0"],
        &[
            "canary",
            "hello",
            "1.1.0",
            "--hold",
            "30s",
            "--max-wait",
            "10s",
        ],
        &["canary", "hello", "1.1.0", "--steps", "100"],
        &["canary", "hello", "1.1.0", "--max-error-increase", "-1"],
        &["canary", "hello", "1.0.0", "--no-wait"],
    ] {
        let out = cli.run(args).await;
        assert!(out.code == 2 || out.code == 3, "{args:?}: {out:#?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:#?}");
        assert!(out.stderr.starts_with("error: "), "{out:#?}");
    }
    assert_eq!(
        function(&client, &ns, "hello")
            .await
            .metadata
            .resource_version,
        before
    );
}

#[tokio::test]
async fn a_rollout_starts_aborts_and_ends_on_a_manual_write_through_the_api_server() {
    let client = client().await;
    let ns = namespace(&client, "cli-canary").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let out = cli
        .ok(&["canary", "hello", "1.1.0", "--hold", "10s", "--no-wait"])
        .await;
    assert!(
        out.stdout
            .starts_with("hello: canary 1.1.0 started against 1.0.0: step 1/5 at 1%"),
        "{out:#?}"
    );
    // One write carried the plan, the split, the progress and the history entry.
    let f = function(&client, &ns, "hello").await;
    let plan = f.spec.rollout.as_deref().expect("spec.rollout");
    assert_eq!(
        (plan.canary.as_str(), plan.baseline.as_str()),
        ("1.1.0", "1.0.0")
    );
    assert_eq!(plan.hold, "10s");
    assert_eq!(f.spec.weight_of("1.1.0"), 10_000);
    let s = rollout(&f);
    assert_eq!((s.phase, s.step), (RolloutPhase::Progressing, 0));
    assert_eq!(
        f.spec.history.last().map(|h| h.action),
        Some(switchyard_core::Action::Canary)
    );
    assert!(switchyard_core::rollout::active(&f).is_some());
    // The same plan again is nothing to do; status reads it back.
    let again = cli
        .ok(&["canary", "hello", "1.1.0", "--hold", "10s", "--no-wait"])
        .await;
    assert!(again.stdout.contains("already in flight"), "{again:#?}");
    let json = cli.ok(&["canary", "status", "hello", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["phase"], "Progressing");
    assert_eq!(v["verdict"], "wait");
    // Abort: the baseline at 100%, the canary kept at 0%, the plan gone, the record kept.
    cli.ok(&["canary", "abort", "hello", "--no-wait"]).await;
    let f = function(&client, &ns, "hello").await;
    assert_eq!(f.spec.weight_of("1.0.0"), TOTAL_PPM);
    assert!(f.spec.traffic.iter().any(|t| t.version == "1.1.0"));
    assert!(f.spec.rollout.is_none());
    assert_eq!(rollout(&f).phase, RolloutPhase::Aborted);
    // A new rollout, then a manual traffic change: the traffic verb's spec-only write ends it.
    cli.ok(&["canary", "hello", "1.1.0", "--no-wait"]).await;
    cli.ok(&["traffic", "hello", "1.0.0=50", "1.1.0=50", "--no-wait"])
        .await;
    let f = function(&client, &ns, "hello").await;
    assert!(f.spec.rollout.is_none());
    assert!(switchyard_core::rollout::active(&f).is_none());
    let shown = switchyard_core::rollout::view(&f).expect("a record");
    assert_eq!(shown.phase, RolloutPhase::Ended);
    // Stored so, in the same write: the record never says Progressing without a plan.
    assert_eq!(rollout(&f).phase, RolloutPhase::Ended);
    assert_eq!(rollout(&f).reason, shown.reason);
    let status = cli.ok(&["status", "hello", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(v["rollout"]["phase"], "Ended");
    assert_eq!(
        v["rollout"]["reason"],
        "ended by a manual traffic (canary 1.1.0 against baseline 1.0.0)"
    );
}

/// Sets replica `replica`'s published counters (`numbers` of its report, the run its
/// report's `startedAt` names): hello's `canary` and `baseline` totals, as a router's sampler
/// would.
async fn publish(client: &kube::Client, ns: &str, replica: &str, canary: u64, baseline: u64) {
    use kube::api::{Patch, PatchParams};
    use switchyard_core::report::RouterReport;
    let side = |version: &str, n: u64| {
        serde_json::json!({
            "function": format!("{ns}/hello"),
            "version": version,
            "total": {"requests": n, "failures": 0, "latency": {"80": n}},
            "window": {"requests": 0, "failures": 0},
        })
    };
    let patch = serde_json::json!({"status": {
        "numbers": {
            "at": "2026-12-02T10:00:00Z",
            "windowSeconds": 60,
            "versions": [side("1.0.0", baseline), side("1.1.0", canary)],
        },
    }});
    Api::<RouterReport>::namespaced(client.clone(), ns)
        .patch(replica, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("publishing numbers");
}

#[tokio::test]
async fn a_start_takes_each_live_replicas_counters_and_status_counts_the_step_from_them() {
    use switchyard_tests::cli::SimRouter;
    let client = client().await;
    let ns = namespace(&client, "cli-canary-readings").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let router = SimRouter::start(&client, &ns, "sim-r1").await;
    // The report exists once the replica has acknowledged the deploys.
    let report = switchyard_tests::wait_until(
        std::time::Duration::from_secs(30),
        "the simulated replica's report",
        || {
            let api: Api<switchyard_core::report::RouterReport> =
                Api::namespaced(client.clone(), &ns);
            async move { api.get("sim-r1").await.ok() }
        },
    )
    .await;
    let run = report.status.map(|s| s.started_at).unwrap_or_default();
    publish(&client, &ns, "sim-r1", 0, 5_000).await;
    // This time the command waits for the replica to serve the write.
    let out = cli.ok(&["canary", "hello", "1.1.0", "--hold", "1h"]).await;
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:#?}");
    let f = function(&client, &ns, "hello").await;
    let at_start = &rollout(&f).at_start;
    assert_eq!(at_start.len(), 1, "{at_start:?}");
    assert_eq!(at_start[0].replica, "sim-r1");
    assert_eq!(at_start[0].started_at, run);
    assert_eq!(
        (at_start[0].canary.requests, at_start[0].baseline.requests),
        (0, 5_000)
    );
    // Later counters: the step's counts are the difference, on both sides.
    publish(&client, &ns, "sim-r1", 40, 5_300).await;
    let json = cli.ok(&["canary", "status", "hello", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["canaryStep"]["requests"], 40, "{v:#}");
    assert_eq!(v["baselineStep"]["requests"], 300, "{v:#}");
    assert_eq!(v["liveRouters"], 1);
    assert_eq!(v["verdict"], "wait");
    drop(router);
}
