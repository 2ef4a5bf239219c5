//! Black-box tests of `shadow` and `shadow stop` through the `switchyard` binary on a local
//! store: the exit code, the line the user sees, and what was stored and recorded.

mod common;
use common::Store;

#[test]
fn a_shadow_is_dry_run_written_repeated_safely_recorded_and_stopped() {
    let store = Store::two_versions("shadow");
    let dry = store.ok(&[
        "shadow",
        "hello",
        "1.1.0",
        "--percent",
        "12.5",
        "--ignore-header",
        "date,x-request-id",
        "--ignore-json",
        "$.ts,$.requestId",
        "--dry-run",
    ]);
    assert!(
        dry.contains(
            "+ shadow: 1.1.0 12.5% GET,HEAD maxBody=1MiB ignore=date,x-request-id,$.ts,$.requestId"
        ) && dry.contains("dry run"),
        "{dry}"
    );
    assert!(store.spec().get("shadow").is_none());
    let out = store.ok(&[
        "shadow",
        "hello",
        "1.1.0",
        "--percent",
        "12.5",
        "--max-body",
        "64KiB",
        "--no-wait",
    ]);
    assert!(out.contains("shadow none → 1.1.0 12.5%"), "{out}");
    let shadow = &store.spec()["shadow"];
    assert_eq!(
        (&shadow["version"], &shadow["share"], &shadow["maxBody"]),
        (
            &serde_json::json!("1.1.0"),
            &serde_json::json!(125_000),
            &serde_json::json!(65_536)
        )
    );
    // The traffic did not move.
    assert_eq!(store.spec()["traffic"][0]["version"], "1.0.0");
    let again = store.ok(&[
        "shadow",
        "hello",
        "1.1.0",
        "--percent",
        "12.5",
        "--max-body",
        "64KiB",
        "--no-wait",
    ]);
    assert!(again.contains("nothing to change"), "{again}");
    let stopped = store.ok(&["shadow", "stop", "hello", "--no-wait"]);
    assert!(stopped.contains("→ none"), "{stopped}");
    assert!(store.spec().get("shadow").is_none());
    let none = store.ok(&["shadow", "stop", "hello", "--no-wait"]);
    assert!(none.contains("nothing is shadowed"), "{none}");
    let history = store.ok(&["history", "hello"]);
    assert_eq!(history.matches(" shadow ").count(), 2, "{history}");
    // Undo passes over shadow entries: nothing before the deploy to restore.
    let (code, _) = store.code_and_stderr(&["undo", "hello", "--no-wait"]);
    assert_eq!(code, Some(3));
}

#[test]
fn unsafe_methods_are_mirrored_only_when_listed_and_with_a_warning() {
    let store = Store::two_versions("shadow");
    let out = store.run(&[
        "shadow",
        "hello",
        "1.1.0",
        "--percent",
        "1",
        "--methods",
        "get,post",
        "--no-wait",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("POST") && !err.contains("GET"),
        "{err}"
    );
    assert_eq!(
        store.spec()["shadow"]["methods"],
        serde_json::json!(["GET", "POST"])
    );
    // The default copies only safe methods, without a warning.
    let out = store.run(&["shadow", "hello", "1.1.0", "--percent", "1", "--no-wait"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn bad_shadow_input_is_refused_in_one_line_and_writes_nothing() {
    let store = Store::two_versions("shadow");
    for bad in [
        &["shadow", "hello", "9.9.9", "--percent", "10", "--no-wait"][..],
        &["shadow", "hello", "1.1.0", "--percent", "0", "--no-wait"],
        &["shadow", "hello", "1.1.0", "--percent", "101", "--no-wait"],
        &[
            "shadow",
            "hello",
            "1.1.0",
            "--percent",
            "0.00001",
            "--no-wait",
        ],
        &[
            "shadow",
            "hello",
            "1.1.0",
            "--percent",
            "10",
            "--max-body",
            "9MiB",
            "--no-wait",
        ],
        &[
            "shadow",
            "hello",
            "1.1.0",
            "--percent",
            "10",
            "--max-body",
            "1GB",
            "--no-wait",
        ],
        &[
            "shadow",
            "hello",
            "1.1.0",
            "--percent",
            "10",
            "--ignore-json",
            "ts",
            "--no-wait",
        ],
        &[
            "shadow",
            "hello",
            "1.1.0",
            "--percent",
            "10",
            "--methods",
            "CONNECT",
            "--no-wait",
        ],
        &[
            "shadow",
            "hello",
            "1.1.0",
            "--percent",
            "10",
            "--ignore-header",
            "a b",
            "--no-wait",
        ],
    ] {
        let (code, err) = store.code_and_stderr(bad);
        assert_eq!((code, err.lines().count()), (Some(2), 1), "{bad:?}: {err}");
    }
    assert!(store.spec().get("shadow").is_none());
    // The deploy of 1.0.0 and the 0% deploy of 1.1.0: nothing from the refused commands.
    assert_eq!(store.spec()["history"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_version_served_over_https_is_refused_at_shadow_time_with_one_line() {
    let store = Store::two_versions("shadow");
    store.ok(&[
        "deploy",
        "hello",
        "1.2.0",
        "--endpoint",
        "https://fn.example.com",
        "--no-wait",
    ]);
    let (code, stderr) =
        store.code_and_stderr(&["shadow", "hello", "1.2.0", "--percent", "10", "--no-wait"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: 1.2.0 is served over https (https://fn.example.com), which shadow copies cannot reach: the router speaks plain HTTP to upstreams; shadow a version served over http"
    );
    assert!(store.spec().get("shadow").is_none(), "nothing written");
}

#[test]
fn shadow_status_says_when_nothing_is_shadowed_and_shows_the_active_shadow() {
    let store = Store::two_versions("shadow");
    let none = store.ok(&["shadow", "status", "hello"]);
    assert!(none.contains("hello: nothing is shadowed"), "{none}");
    assert_eq!(
        store
            .ok(&["shadow", "status", "hello", "-o", "json"])
            .trim(),
        "null"
    );
    store.ok(&["shadow", "hello", "1.1.0", "--percent", "10", "--no-wait"]);
    let view: serde_json::Value =
        serde_json::from_str(&store.ok(&["shadow", "status", "hello", "-o", "json"])).unwrap();
    assert_eq!(view["active"]["version"], "1.1.0");
    assert_eq!(
        (
            view["liveRouters"].as_u64(),
            view["versions"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    let text = store.ok(&["status", "hello"]);
    assert!(
        text.contains("Shadow:      1.1.0 10% GET,HEAD maxBody=1MiB; nothing copied yet"),
        "{text}"
    );
    // With no router there are no counts: promote is not refused for the shadow.
    store.ok(&["promote", "hello", "1.1.0", "--no-wait"]);
}
