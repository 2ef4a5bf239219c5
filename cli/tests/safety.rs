//! Black-box tests of the safety rules of issue 13 through the `switchyard` binary on a local
//! store: each asserts the exit code and the one line the user sees.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Store;

impl Store {
    fn new() -> Store {
        Store::fresh("safety")
    }

    /// The current split as `status -o json` reports it.
    fn traffic(&self) -> String {
        let json: serde_json::Value =
            serde_json::from_str(&self.ok(&["status", "hello", "-o", "json"])).expect("json");
        json["traffic"].as_str().expect("traffic").to_string()
    }

    /// hello: 1.0.0 deployed, 1.1.0 deployed and promoted.
    fn promoted(&self) -> &Store {
        for v in ["1.0.0", "1.1.0"] {
            self.ok(&[
                "deploy",
                "hello",
                v,
                "--endpoint",
                "http://127.0.0.1:9",
                "--no-wait",
            ]);
        }
        self.ok(&["promote", "hello", "1.1.0", "--no-wait"]);
        self
    }

    /// [`Store::promoted`], then rolled back to 1.0.0.
    fn rolled_back(&self) -> &Store {
        self.promoted();
        self.ok(&["rollback", "hello", "--no-wait"]);
        assert_eq!(self.traffic(), "1.0.0=100%");
        self
    }
}

/// Asserts the exit code and that stderr is one `error:` line containing `needle`.
fn refused(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
}

#[test]
fn a_second_rollback_changes_nothing_and_says_so() {
    let s = Store::new();
    s.rolled_back();
    let out = s.ok(&["rollback", "hello", "--no-wait"]);
    assert_eq!(
        out.trim(),
        "hello: already rolled back, 100% on 1.0.0 (rolled back from 1.1.0); nothing to change, use --to VERSION to go elsewhere"
    );
    assert_eq!(s.traffic(), "1.0.0=100%");
}

#[test]
fn traffic_promote_and_undo_back_to_a_version_rolled_back_from_need_force() {
    let s = Store::new();
    s.rolled_back();
    let line = "version 1.1.0 of function hello was rolled back from; sending traffic back to it needs --force";
    refused(
        &s.run(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"]),
        3,
        line,
    );
    refused(&s.run(&["promote", "hello", "1.1.0", "--no-wait"]), 3, line);
    refused(&s.run(&["undo", "hello", "--no-wait"]), 3, line);
    refused(
        &s.run(&["rollback", "hello", "--to", "1.1.0", "--no-wait"]),
        3,
        line,
    );
    assert_eq!(s.traffic(), "1.0.0=100%");

    let out = s.run(&["promote", "hello", "1.1.0", "--force", "--no-wait"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "warning: sending traffic back to hello@1.1.0, which was rolled back from (--force)"
    );
    assert_eq!(s.traffic(), "1.1.0=100%");
}

#[test]
fn a_rollback_whose_target_was_deleted_is_a_safety_refusal_with_the_next_step() {
    let s = Store::new();
    s.promoted();
    s.ok(&["delete", "hello", "1.0.0", "--force"]);
    refused(
        &s.run(&["rollback", "hello", "--no-wait"]),
        3,
        "rollback would send traffic to version 1.0.0 of function hello, which was deleted; use rollback --to VERSION",
    );
}

#[test]
fn an_undo_whose_target_was_deleted_is_a_safety_refusal_with_the_next_step() {
    let s = Store::new();
    s.promoted();
    s.ok(&["delete", "hello", "1.0.0", "--force"]);
    refused(
        &s.run(&["undo", "hello", "--no-wait"]),
        3,
        "undo would send traffic to version 1.0.0 of function hello, which was deleted; use rollback --to VERSION or traffic",
    );
}

/// Holds the store's lock (as another writer would) until `child` exits or `limit` passes.
fn hold_lock_while(store: &Path, mut child: std::process::Child, limit: Duration) -> Output {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join(".lock"))
        .expect("lock file");
    lock.lock().expect("lock");
    let started = Instant::now();
    // A bound on the test itself, not a synchronisation: a command that waits without limit
    // gets the lock after `limit` and then (wrongly) succeeds.
    while child.try_wait().expect("child").is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(lock);
    child.wait_with_output().expect("output")
}

#[test]
fn a_write_waits_for_a_held_store_lock_no_longer_than_its_timeout() {
    let s = Store::new();
    s.promoted();
    let child = s
        .command(&["rollback", "hello", "--timeout", "1500ms", "--no-wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = hold_lock_while(&s.0, child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let lock = s.0.join(".lock");
    assert_eq!(
        lines,
        [
            format!(
                "waiting for the store's lock {} (another writer holds it)…",
                lock.display()
            ),
            format!(
                "error: timed out after 1.5s waiting for the lock {} (another writer holds it; nothing was written)",
                lock.display()
            )
        ]
    );
    assert_eq!(s.traffic(), "1.1.0=100%");
}

#[test]
fn a_local_store_and_a_cluster_named_at_once_are_an_error_naming_both() {
    let s = Store::new();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--context", "prod", "list"])
        .env("SWITCHYARD_STORE", s.flag())
        .output()
        .expect("run");
    refused(
        &out,
        2,
        &format!(
            "--store {} (from SWITCHYARD_STORE) conflicts with --context prod: name one target, a local store or a cluster (unset SWITCHYARD_STORE to use the cluster)",
            s.flag()
        ),
    );
    refused(
        &s.run(&["-n", "prod", "rollback", "hello"]),
        2,
        &format!(
            "--store {} conflicts with --namespace prod: name one target",
            s.flag()
        ),
    );
}

#[test]
fn versions_that_differ_only_in_punctuation_are_refused_before_anything_is_written() {
    let s = Store::new();
    s.ok(&[
        "deploy",
        "hello",
        "1.3.0-rc.1",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ]);
    for v in ["1.3.0-rc-1", "1.3.0+rc.1"] {
        refused(
            &s.run(&["deploy", "hello", v, "--endpoint", "http://127.0.0.1:8", "--no-wait"]),
            3,
            &format!("version {v} of function hello would be named hello-1-3-0-rc-1, like version 1.3.0-rc.1 that exists; choose a version that differs in more than punctuation"),
        );
    }
    let versions = s.ok(&["versions", "hello", "-o", "json"]);
    let versions: serde_json::Value = serde_json::from_str(&versions).expect("json");
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
}

#[test]
fn a_cause_is_printed_once() {
    let s = Store::new();
    let file = s.0.join("a-file");
    std::fs::write(&file, "").expect("file");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--store")
        .arg(format!("dir:{}/x", file.display()))
        .args([
            "deploy",
            "hello",
            "1.0.0",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .env_remove("SWITCHYARD_STORE")
        .output()
        .expect("run");
    refused(&out, 1, "Not a directory");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("Not a directory").count(), 1, "{stderr}");
}

#[test]
fn a_local_store_deploy_asks_for_an_endpoint_and_refuses_an_image_as_bad_input() {
    let s = Store::new();
    refused(
        &s.run(&["deploy", "hello", "1.0.0"]),
        2,
        "deploy hello@1.0.0 to a local store needs --endpoint URL (it runs external versions only)",
    );
    refused(
        &s.run(&["deploy", "hello", "1.0.0", "--image", "img@sha256:1"]),
        2,
        "the local store runs external versions only: deploy hello@1.0.0 with --endpoint URL",
    );
}

#[test]
fn the_last_output_flag_wins_and_timeouts_read_like_kubectl() {
    let s = Store::new();
    s.promoted();
    let out = s.ok(&["versions", "hello", "-o", "json", "-o", "yaml"]);
    assert!(out.starts_with("- version: 1.1.0"), "{out}");
    let out = s.ok(&["rollback", "hello", "--timeout", "1m30s", "--no-wait"]);
    assert!(out.starts_with("hello: 1.1.0=100% → 1.0.0=100%"), "{out}");
}

#[test]
fn one_broken_function_file_hides_only_that_function_from_list() {
    let s = Store::new();
    s.promoted();
    s.ok(&[
        "deploy",
        "other",
        "1.0.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ]);
    let broken = s.0.join("functions").join("hello.yaml");
    std::fs::write(&broken, "function: [oops\n").expect("corrupt");
    let out = s.run(&["list", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "warning: skipping function hello: {}:",
            broken.display()
        )),
        "{stderr}"
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["name"], "other", "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

#[test]
fn an_empty_function_file_is_an_error_not_a_deleted_function() {
    let s = Store::new();
    s.promoted();
    let file = s.0.join("functions").join("hello.yaml");
    std::fs::write(&file, "").expect("truncate");
    refused(
        &s.run(&["versions", "hello"]),
        1,
        &format!(
            "{}: the file is empty (restore it from a backup, or remove it to delete the function)",
            file.display()
        ),
    );
}

#[test]
fn a_read_on_a_store_that_does_not_exist_is_an_error_and_creates_nothing() {
    let s = Store::new();
    let missing = s.0.join("typo");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--store")
        .arg(format!("dir:{}", missing.display()))
        .arg("list")
        .env_remove("SWITCHYARD_STORE")
        .output()
        .expect("run");
    refused(
        &out,
        2,
        &format!(
            "store dir:{} does not exist (a first deploy creates it)",
            missing.display()
        ),
    );
    assert!(!missing.exists());
}

#[test]
fn status_watch_outlives_a_broken_file_and_shows_the_next_change() {
    use std::io::BufRead as _;
    let s = Store::new();
    s.promoted();
    let file = s.0.join("functions").join("hello.yaml");
    let good = std::fs::read(&file).expect("read");
    let mut child = s
        .command(&["status", "hello", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    assert!(wait_for("\"traffic\": \"1.1.0=100%\""), "first state");
    std::fs::write(&file, "function: [oops\n").expect("corrupt");
    // The watch reports the broken file (read on stderr below) and keeps going; once the file
    // is restored, a change shows up.
    let stderr = child.stderr.take().expect("stderr");
    let mut stderr = std::io::BufReader::new(stderr);
    let mut first = String::new();
    stderr.read_line(&mut first).expect("stderr line");
    assert!(first.starts_with("warning: "), "{first}");
    assert!(
        first.ends_with("; showing the last good state\n"),
        "{first}"
    );
    std::fs::write(&file, good).expect("restore");
    s.ok(&["traffic", "hello", "1.0.0=10", "1.1.0=90", "--no-wait"]);
    let shown = wait_for("1.0.0=10%");
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exited, None, "status -w ended");
    assert!(shown, "the change after the repair was not shown");
}

#[test]
fn a_reason_is_one_line_with_a_length_cap() {
    let s = Store::new();
    s.promoted();
    let out = s.run(&[
        "rollback",
        "hello",
        "--reason",
        "first\nsecond",
        "--no-wait",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "error: invalid value 'first\nsecond' for '--reason <TEXT>': a reason is one line"
        ),
        "{stderr}"
    );
    let long = "x".repeat(201);
    let out = s.run(&["rollback", "hello", "--reason", &long, "--no-wait"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("a reason is at most 200 characters, got 201"),
        "{out:?}"
    );
    assert_eq!(s.traffic(), "1.1.0=100%");
}

#[test]
fn a_deploy_dry_run_shows_the_whole_change_to_the_function() {
    let s = Store::new();
    s.promoted();
    let out = s.ok(&[
        "deploy",
        "hello",
        "1.2.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--traffic",
        "100",
        "--reason",
        "hotfix",
        "--dry-run",
    ]);
    for line in [
        "- traffic: 1.1.0=100%",
        "+ traffic: 1.2.0=100%",
        "- stable: 1.1.0",
        "+ stable: 1.2.0",
        "- previousStable: 1.0.0",
        "+ previousStable: 1.1.0",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing from:\n{out}"
        );
    }
    let history = out
        .lines()
        .find(|l| l.starts_with("+ history: "))
        .unwrap_or_else(|| panic!("no history line in:\n{out}"));
    assert!(
        history.contains(" deploy by ") && history.ends_with(" (\"hotfix\"): 1.2.0=100%"),
        "{history}"
    );
    assert_eq!(s.traffic(), "1.1.0=100%");
}

#[test]
fn a_name_that_looks_like_a_help_flag_is_an_error_not_help() {
    let s = Store::new();
    refused(
        &s.run(&[
            "deploy",
            "-hello",
            "1.0.0",
            "--endpoint",
            "http://127.0.0.1:9",
        ]),
        2,
        "unexpected argument '-hello' (put -- before a name that starts with '-')",
    );
    assert_eq!(s.run(&["deploy", "-h"]).status.code(), Some(0));
}

#[test]
fn versions_and_functions_of_a_local_store_have_an_age() {
    let s = Store::new();
    s.promoted();
    let versions: serde_json::Value =
        serde_json::from_str(&s.ok(&["versions", "hello", "-o", "json"])).expect("json");
    for v in versions.as_array().expect("array") {
        assert!(v["created"].is_string(), "{v}");
    }
    let list = s.ok(&["list"]);
    let row = list.lines().nth(1).expect("a row");
    assert!(!row.ends_with('-'), "AGE is - in {list}");
}

#[test]
fn describe_shows_where_a_rollback_would_go_and_what_it_will_not_return_to() {
    let s = Store::new();
    s.promoted();
    let json = |s: &Store| -> serde_json::Value {
        serde_json::from_str(&s.ok(&["describe", "hello", "-o", "json"])).expect("json")
    };
    let before = json(&s);
    assert_eq!(before["rollback"], "to 1.0.0");
    assert_eq!(before["affinity"], "none");
    s.ok(&["rollback", "hello", "--reason", "errors up", "--no-wait"]);
    let after = json(&s);
    assert_eq!(
        after["rollback"],
        "nothing to do: already rolled back to 1.0.0"
    );
    assert_eq!(after["rolledBackFrom"], serde_json::json!(["1.1.0"]));
    let recent = after["recentHistory"].as_array().expect("recent history");
    assert_eq!(recent.last().expect("an entry")["reason"], "errors up");
    let text = s.ok(&["describe", "hello"]);
    assert!(
        text.lines().any(|l| l == "Rolled back from: 1.1.0"),
        "{text}"
    );
    refused(&s.run(&["describe", "nope"]), 2, "function nope not found");
}

#[test]
fn delete_all_removes_a_function_no_router_serves_and_dry_run_names_everything() {
    let s = Store::new();
    s.promoted();
    let plan = s.ok(&["delete", "hello", "--all", "--dry-run"]);
    for line in [
        "- Function hello (traffic 1.1.0=100%)",
        "- version 1.0.0 (FunctionVersion hello-1-0-0)",
        "- version 1.1.0 (FunctionVersion hello-1-1-0)",
    ] {
        assert!(
            plan.lines().any(|l| l == line),
            "{line:?} missing from:\n{plan}"
        );
    }
    assert_eq!(s.traffic(), "1.1.0=100%");
    let out = s.ok(&["delete", "hello", "--all"]);
    assert_eq!(out.trim(), "function hello deleted with its 2 versions");
    refused(
        &s.run(&["versions", "hello"]),
        2,
        "function hello not found",
    );
    let out = s.run(&["delete", "hello", "1.0.0", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn list_status_history_and_describe_give_a_split_the_same_json_shape() {
    let s = Store::new();
    s.promoted();
    s.ok(&["traffic", "hello", "1.0.0=10", "1.1.0=90", "--no-wait"]);
    let get =
        |args: &[&str]| -> serde_json::Value { serde_json::from_str(&s.ok(args)).expect("json") };
    let list = get(&["list", "-o", "json"]);
    let status = get(&["status", "hello", "-o", "json"]);
    let history = get(&["history", "hello", "-o", "json"]);
    let describe = get(&["describe", "hello", "-o", "json"]);
    let last = history.as_array().and_then(|h| h.last()).expect("history");
    let shapes = [
        &list[0],
        &status,
        &status["lastChange"],
        last,
        &describe,
        describe["recentHistory"]
            .as_array()
            .and_then(|h| h.last())
            .expect("recent history"),
    ];
    for v in shapes {
        assert_eq!(v["traffic"], "1.0.0=10% 1.1.0=90%", "{v}");
        assert_eq!(
            v["weights"],
            serde_json::json!([
                {"version": "1.0.0", "weight": 100000},
                {"version": "1.1.0", "weight": 900000}
            ]),
            "{v}"
        );
    }
}

#[test]
fn a_router_killed_long_ago_leaves_status_and_one_gone_recently_shows_as_gone() {
    let s = Store::new();
    s.promoted();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // The files a router killed with -9 leaves behind: its last heartbeat, never removed.
    for (name, stopped_ms) in [("killed-long-ago", 3_600_000), ("killed-just-now", 20_000)] {
        let doc = serde_json::json!({
            "name": name,
            "renewedMs": now_ms - stopped_ms,
            "leaseDurationSeconds": 10,
            "functions": [],
        });
        std::fs::write(
            s.0.join("routers").join(format!("{name}.json")),
            doc.to_string(),
        )
        .expect("router file");
    }
    let status: serde_json::Value =
        serde_json::from_str(&s.ok(&["status", "hello", "-o", "json"])).expect("json");
    let routers: Vec<(&str, &str)> = status["routers"]
        .as_array()
        .expect("routers")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(routers, [("killed-just-now", "gone")]);
}
