//! `switchyard canary` on a local store, through the real binary: start, the dry run, status,
//! pause / resume / abort / promote, a manual traffic change ending a rollout, refused plans
//! (one line, exit code) and a repeated start.

mod common;

use common::Store;

/// hello's whole stored Function (spec and status), as JSON.
fn function(store: &Store) -> serde_json::Value {
    let text = std::fs::read_to_string(store.0.join("functions/hello.yaml")).expect("file");
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
    doc["function"].clone()
}

fn file(store: &Store) -> String {
    std::fs::read_to_string(store.0.join("functions/hello.yaml")).expect("file")
}

fn weight(f: &serde_json::Value, version: &str) -> u64 {
    f["spec"]["traffic"]
        .as_array()
        .expect("traffic")
        .iter()
        .find(|t| t["version"] == version)
        .map_or(0, |t| t["weight"].as_u64().expect("weight"))
}

#[test]
fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let store = Store::two_versions("canary-dry");
    let before = file(&store);
    let out = store.ok(&["canary", "hello", "1.1.0", "--hold", "1m", "--dry-run"]);
    assert!(
        out.contains("+ rollout: canary 1.1.0 against baseline 1.0.0"),
        "{out}"
    );
    assert!(
        out.contains("steps 1% → 5% → 25% → 50% → 100% holding 1m each"),
        "{out}"
    );
    assert!(
        out.contains("errors > baseline +1 pp, p99 > baseline +50ms"),
        "{out}"
    );
    assert!(out.contains("+ traffic: 1.0.0=99% 1.1.0=1%"), "{out}");
    assert!(out.contains("(dry run: nothing was written)"), "{out}");
    assert_eq!(file(&store), before);
}

#[test]
fn a_start_writes_plan_split_progress_and_history_at_once_and_a_repeat_changes_nothing() {
    let store = Store::two_versions("canary-start");
    let out = store.ok(&["canary", "hello", "1.1.0", "--steps", "10,50", "--no-wait"]);
    assert!(
        out.starts_with(
            "hello: canary 1.1.0 started against 1.0.0: step 1/2 at 10% (1.0.0=90% 1.1.0=10%)"
        ),
        "{out}"
    );
    let f = function(&store);
    assert_eq!(
        f["spec"]["rollout"]["steps"],
        serde_json::json!([100_000, 500_000])
    );
    assert_eq!(f["spec"]["rollout"]["minRequests"], 200);
    assert_eq!(f["status"]["rollout"]["phase"], "Progressing");
    assert_eq!(f["status"]["rollout"]["step"], 0);
    assert_eq!(weight(&f, "1.1.0"), 100_000);
    let last = f["spec"]["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "canary");
    let written = file(&store);
    // The same plan again: nothing to change, exit 0, nothing written.
    let again = store.ok(&["canary", "hello", "1.1.0", "--steps", "10,50", "--no-wait"]);
    assert!(again.contains("already in flight"), "{again}");
    assert_eq!(file(&store), written);
    // Another plan while it runs: refused, one line, exit 3, nothing written.
    let (code, err) =
        store.code_and_stderr(&["canary", "hello", "1.1.0", "--steps", "20,50", "--no-wait"]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(
        err,
        "error: function hello already has a rollout of 1.1.0 in flight (step 1/2 at 10%, Progressing); abort it first (switchyard canary abort hello)\n"
    );
    assert_eq!(file(&store), written);
}

#[test]
fn status_shows_the_step_both_sides_and_the_verdict_and_writes_nothing() {
    let store = Store::two_versions("canary-status");
    store.ok(&["canary", "hello", "1.1.0", "--hold", "10m", "--no-wait"]);
    let written = file(&store);
    let text = store.ok(&["canary", "status", "hello"]);
    assert!(
        text.starts_with("Canary:      1.1.0 against 1.0.0, Progressing, step 1/5 at 1%"),
        "{text}"
    );
    assert!(text.contains("canary     1.1.0"), "{text}");
    assert!(
        text.contains("Verdict:     wait: step 1/5 at 1%: holding"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&store.ok(&["canary", "status", "hello", "-o", "json"])).unwrap();
    assert_eq!(json["phase"], "Progressing");
    assert_eq!(json["verdict"], "wait");
    assert_eq!(json["canaryStep"]["requests"], 0);
    assert_eq!(json["baselineStep"]["weight"], 990_000);
    assert!(json["holdLeftMs"].as_u64().unwrap() > 500_000);
    let yaml = store.ok(&["canary", "status", "hello", "-o", "yaml"]);
    assert!(yaml.contains("phase: Progressing"), "{yaml}");
    // `status` and `describe` show it too.
    let status: serde_json::Value =
        serde_json::from_str(&store.ok(&["status", "hello", "-o", "json"])).unwrap();
    assert_eq!(status["rollout"]["canary"], "1.1.0");
    assert!(store
        .ok(&["describe", "hello"])
        .contains("Canary:      1.1.0 against 1.0.0"));
    assert_eq!(file(&store), written);
}

#[test]
fn pause_resume_abort_and_promote_steer_the_rollout() {
    let store = Store::two_versions("canary-steer");
    store.ok(&["canary", "hello", "1.1.0", "--no-wait"]);
    let out = store.ok(&["canary", "pause", "hello", "--no-wait"]);
    assert!(out.starts_with("hello: canary 1.1.0 paused"), "{out}");
    assert_eq!(function(&store)["status"]["rollout"]["phase"], "Paused");
    assert!(store
        .ok(&["canary", "pause", "hello", "--no-wait"])
        .contains("already paused"));
    store.ok(&["canary", "resume", "hello", "--no-wait"]);
    assert_eq!(
        function(&store)["status"]["rollout"]["phase"],
        "Progressing"
    );
    store.ok(&[
        "canary",
        "abort",
        "hello",
        "--reason",
        "bad logs",
        "--no-wait",
    ]);
    let f = function(&store);
    assert_eq!(f["status"]["rollout"]["phase"], "Aborted");
    assert_eq!(
        f["status"]["rollout"]["reason"],
        "aborted at step 1/5 at 1% by ".to_string()
            + f["status"]["rollout"]["actor"].as_str().unwrap()
            + ": bad logs"
    );
    assert_eq!(weight(&f, "1.0.0"), 1_000_000);
    assert!(f["spec"]["rollout"].is_null());
    // Nothing in flight now: steering is refused with the last one's outcome.
    let (code, err) = store.code_and_stderr(&["canary", "promote", "hello", "--no-wait"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.starts_with(
            "error: function hello has no rollout in flight (the last one of 1.1.0: Aborted"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    store.ok(&["canary", "hello", "1.1.0", "--no-wait"]);
    store.ok(&["canary", "promote", "hello", "--no-wait"]);
    let f = function(&store);
    assert_eq!(f["status"]["rollout"]["phase"], "Succeeded");
    assert_eq!(weight(&f, "1.1.0"), 1_000_000);
    assert_eq!(f["spec"]["stable"], "1.1.0");
}

#[test]
fn a_manual_traffic_change_ends_the_rollout_and_says_so() {
    let store = Store::two_versions("canary-manual");
    store.ok(&["canary", "hello", "1.1.0", "--no-wait"]);
    store.ok(&["traffic", "hello", "1.0.0=70", "1.1.0=30", "--no-wait"]);
    let f = function(&store);
    assert!(f["spec"]["rollout"].is_null());
    assert_eq!(weight(&f, "1.1.0"), 300_000);
    // The stored record is settled in the same write, not left saying Progressing.
    assert_eq!(f["status"]["rollout"]["phase"], "Ended", "{f}");
    assert_eq!(
        f["status"]["rollout"]["reason"],
        "ended by a manual traffic (canary 1.1.0 against baseline 1.0.0)"
    );
    let history = store.ok(&["history", "hello"]);
    assert!(
        history.contains("ended by a manual traffic (canary 1.1.0 against baseline 1.0.0)"),
        "{history}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&store.ok(&["canary", "status", "hello", "-o", "json"])).unwrap();
    assert_eq!(json["phase"], "Ended");
    assert!(json.get("verdict").is_none());
    // Another rollout may start now; rollback and undo end theirs alike.
    store.ok(&[
        "canary",
        "hello",
        "1.1.0",
        "--baseline",
        "1.0.0",
        "--no-wait",
    ]);
    store.ok(&["rollback", "hello", "--no-wait"]);
    assert!(function(&store)["spec"]["rollout"].is_null());
    assert!(store
        .ok(&["history", "hello"])
        .contains("ended by a manual rollback"));
}

#[test]
fn invalid_plans_are_refused_in_one_line_before_anything_is_read() {
    let store = Store::two_versions("canary-invalid");
    let before = file(&store);
    for (args, code, message) in [
        (
            &["--steps", "25,5"][..],
            2,
            "error: invalid canary plan: steps must strictly increase, got 25% then 5%",
        ),
        (
            &["--steps", "100"],
            2,
            "error: invalid canary plan: the first step is 100%: nothing would be judged (use promote)",
        ),
        (
            &["--min-requests", "0"],
            2,
            "error: invalid canary plan: min requests must be at least 1, got 0",
        ),
        (
            &["--hold", "soon"],
            2,
            "error: invalid canary plan: hold \"soon\" is not a duration from 1ms to 24h (like 500ms, 30s, 5m, 1h30m): each part is a number followed by h, m, s or ms",
        ),
        (
            &["--max-wait", "1s"],
            2,
            "error: invalid canary plan: max wait 1000 ms is shorter than the hold 30000 ms",
        ),
        (
            &["--max-error-increase", "-1"],
            2,
            "error: --max-error-increase \"-1\": expected a number not below 0, or off",
        ),
        (
            &["--steps", "0,5"],
            2,
            "error: invalid canary plan: step 0% is not above 0% and at most 100%",
        ),
    ] {
        let mut all = vec!["canary", "hello", "1.1.0", "--no-wait"];
        all.extend_from_slice(args);
        let (got, err) = store.code_and_stderr(&all);
        assert_eq!((got, err.as_str()), (Some(code), format!("{message}\n").as_str()));
    }
    // Refused by the function's state: the canary is the baseline, or does not exist.
    let (got, err) = store.code_and_stderr(&["canary", "hello", "1.0.0", "--no-wait"]);
    assert_eq!(
        (got, err.as_str()),
        (Some(2), "error: the canary 1.0.0 is the baseline\n")
    );
    let (got, err) = store.code_and_stderr(&["canary", "hello", "9.9.9", "--no-wait"]);
    assert_eq!(got, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (got, err) = store.code_and_stderr(&["canary", "status", "hello"]);
    assert_eq!(
        (got, err.as_str()),
        (
            Some(2),
            "error: function hello has no rollout (start one with: switchyard canary hello VERSION)\n"
        )
    );
    assert_eq!(file(&store), before);
}

#[test]
fn every_canary_verb_has_examples_in_its_help() {
    let store = Store::fresh("canary-help");
    for verb in [
        &["canary", "--help"][..],
        &["canary", "status", "--help"],
        &["canary", "pause", "--help"],
        &["canary", "resume", "--help"],
        &["canary", "abort", "--help"],
        &["canary", "promote", "--help"],
    ] {
        let out = store.ok(verb);
        assert!(out.contains("Examples:"), "{verb:?}: {out}");
        assert!(out.contains("switchyard canary status hello"), "{verb:?}");
        assert!(out.contains("Exit codes:"), "{verb:?}");
    }
}

#[test]
fn watching_a_finished_rollout_returns_at_once_with_its_outcome() {
    let store = Store::two_versions("canary-watch");
    store.ok(&["canary", "hello", "1.1.0", "--no-wait"]);
    store.ok(&["canary", "promote", "hello", "--no-wait"]);
    let out = store.ok(&["canary", "status", "hello", "--watch"]);
    assert!(out.contains("Succeeded"), "{out}");
    store.ok(&["canary", "hello", "1.0.0", "--no-wait"]);
    store.ok(&["canary", "abort", "hello", "--no-wait"]);
    let (code, err) = store.code_and_stderr(&["canary", "status", "hello", "-w"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.starts_with("error: the rollout of 1.0.0 is aborted: aborted at step 1/5 at 1% by "),
        "{err}"
    );
}
