//! Switchyard without a cluster: the quickstart, the local store under concurrent writers and
//! broken files, and a router binary following a rollback made by the CLI.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use switchyard_tests::cli::local;
use switchyard_tests::router::temp_dir;
use switchyard_tests::{binary, free_port, get, wait_until_blocking, HttpClient, Upstream};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn quickstart_runs_the_tour_and_observes_the_configured_shares() {
    let out = Command::new(binary("switchyard"))
        .args(["quickstart", "--exit", "--requests", "2000"])
        .env_remove("SWITCHYARD_STORE")
        .output()
        .expect("running the quickstart");
    let stdout = ok(&out);
    // Into a pipe: no colour escapes.
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    let mut checked = 0;
    for line in stdout
        .lines()
        .filter(|l| l.contains("configured") && l.contains("observed"))
    {
        let numbers: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.strip_suffix('%'))
            .filter_map(|w| w.parse().ok())
            .collect();
        let [configured, observed] = numbers[..] else {
            panic!("unexpected line {line:?}")
        };
        assert!((configured - observed).abs() <= 0.5, "{line}");
        checked += 1;
    }
    // 1.0.0 alone, both after the second deploy, 90/10, 50/50, after the rollback.
    assert_eq!(checked, 9, "{stdout}");
    assert!(
        stdout.contains("configured  10.0%  observed  10.0%"),
        "{stdout}"
    );
    assert!(stdout.contains("switchyard rollback hello"), "{stdout}");
}

#[test]
fn quickstart_stops_its_router_cleanly_at_the_end() {
    let store = temp_dir("quickstart-store");
    let out = Command::new(binary("switchyard"))
        .args(["quickstart", "--exit", "--requests", "1000", "--store"])
        .arg(format!("dir:{}", store.display()))
        .env_remove("SWITCHYARD_STORE")
        .output()
        .expect("running the quickstart");
    ok(&out);
    // A router stopped gracefully removes its heartbeat file; a killed one cannot.
    let left: Vec<_> = std::fs::read_dir(store.join("routers"))
        .expect("routers dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "router files left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn quickstart_without_a_router_binary_says_how_to_get_one() {
    // The CLI alone in a directory (a hard link: no copy of the binary), and a PATH without
    // a router: the quickstart has no router to start.
    let alone = temp_dir("cli-alone");
    let cli = alone.join("switchyard");
    std::fs::hard_link(binary("switchyard"), &cli).expect("link the CLI");
    let empty_path = temp_dir("empty-path");
    let out = Command::new(&cli)
        .args(["quickstart", "--exit"])
        .env_remove("SWITCHYARD_STORE")
        .env("PATH", &empty_path)
        .output()
        .expect("running the quickstart");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("switchyard-router"), "{stderr}");
    assert!(stderr.contains("--features embedded-router"), "{stderr}");
    let _ = std::fs::remove_dir_all(&alone);
    let _ = std::fs::remove_dir_all(&empty_path);
}

fn deploy_two(store: &Path, a: &Upstream, b: &Upstream) {
    ok(&local(
        store,
        &[
            "deploy",
            "hello",
            "1.0.0",
            "--endpoint",
            &a.url(),
            "--no-wait",
        ],
    ));
    ok(&local(
        store,
        &[
            "deploy",
            "hello",
            "1.1.0",
            "--endpoint",
            &b.url(),
            "--no-wait",
        ],
    ));
}

#[test]
fn two_processes_writing_one_function_at_once_lose_no_update() {
    let store = temp_dir("concurrent");
    let (a, b) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    deploy_two(&store, &a, &b);
    let writers: Vec<_> = (0..2)
        .map(|p| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut landed = Vec::new();
                for i in 0..8 {
                    let reason = format!("writer-{p}-change-{i}");
                    let canary = format!("1.1.0={}", 1 + p * 10 + i);
                    let stable = format!("1.0.0={}", 99 - p * 10 - i);
                    let out = local(
                        &store,
                        &[
                            "traffic",
                            "hello",
                            &canary,
                            &stable,
                            "--no-wait",
                            "--reason",
                            &reason,
                        ],
                    );
                    match out.status.code() {
                        Some(0) => landed.push(reason),
                        Some(5) => {}
                        other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
                    }
                }
                landed
            })
        })
        .collect();
    let landed: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    // The history holds exactly the writes that said they landed, each once: none that
    // exited 5 (lost its race after retrying), none twice, none missing. (That conflicts do
    // happen and end in exit 5 is forced deterministically in lost_race.rs.)
    let history: serde_json::Value =
        serde_json::from_str(&ok(&local(&store, &["history", "hello", "-o", "json"])))
            .expect("history as JSON");
    let mut recorded: Vec<String> = history
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .filter(|r| r.starts_with("writer-"))
        .map(str::to_string)
        .collect();
    let mut landed = landed;
    recorded.sort();
    landed.sort();
    assert_eq!(recorded, landed, "history against the writes that exited 0");
    assert!(!landed.is_empty());
}

#[test]
fn a_broken_state_file_is_reported_and_left_untouched() {
    let store = temp_dir("broken");
    let (a, b) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    deploy_two(&store, &a, &b);
    let file = store.join("functions").join("hello.yaml");
    let text = std::fs::read_to_string(&file).expect("state file");
    for broken in [
        text[..text.len() / 2].to_string(),
        text.replacen("weight: 1000000", "weight: 999999", 1),
    ] {
        std::fs::write(&file, &broken).expect("break the file");
        let out = local(
            &store,
            &["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit 1 (README: "unexpected error"), not any non-zero code: a panic (101) or a
        // signal would pass a test that only asked for "not 0".
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&file.display().to_string()),
            "names the file: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            broken,
            "left untouched"
        );
    }
    let truncated = text[..text.len() / 2].to_string();
    std::fs::write(&file, &truncated).expect("break the file");
    let out = local(&store, &["status", "hello"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", file.display())),
        "file and line: {stderr}"
    );
}

struct Router(Child);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_router_on_a_store_directory_follows_a_rollback_made_by_the_cli_and_acknowledges_it() {
    let store = temp_dir("follow");
    let (a, b) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    deploy_two(&store, &a, &b);
    let (listen, admin) = (free_port(), free_port());
    let _router = Router(
        Command::new(binary("switchyard-router"))
            .arg("--store")
            .arg(format!("dir:{}", store.display()))
            .args([
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .args(["--replica-name", "local-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the router"),
    );
    let admin_addr = format!("127.0.0.1:{admin}").parse().expect("addr");
    wait_until_blocking(Duration::from_secs(20), "the router to be ready", || {
        get(admin_addr, "/readyz").ok().filter(|r| r.status == 200)
    });
    let shifted = ok(&local(
        &store,
        &["traffic", "hello", "1.1.0=50", "1.0.0=50"],
    ));
    assert!(shifted.contains("applied by 1/1 routers"), "{shifted}");
    let rolled = ok(&local(&store, &["rollback", "hello"]));
    assert!(
        rolled.contains("→ 1.0.0=100% · applied by 1/1 routers"),
        "{rolled}"
    );
    let mut client = HttpClient::new(format!("127.0.0.1:{listen}").parse().expect("addr"));
    for _ in 0..200 {
        let r = client.get("localhost", "/hello", &[]).expect("request");
        assert_eq!(r.header("x-switchyard-served-by"), "hello@1.0.0");
    }
    let status = ok(&local(&store, &["status", "hello", "-o", "json"]));
    assert!(status.contains("local-1"), "{status}");
    // Its file carries its numbers too: status sums them (the 200 requests above).
    let live = wait_until_blocking(Duration::from_secs(20), "the numbers in status", || {
        let out = local(&store, &["status", "hello", "-o", "json"]);
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let stable = view["live"]
            .as_array()?
            .iter()
            .find(|v| v["version"] == "1.0.0")?
            .clone();
        (stable["requests"].as_u64()? >= 200).then_some(stable)
    });
    assert_eq!(live["errorRate"], 0.0, "{live}");
    // `routers` lists it; a replica file left behind long ago is pruned, the live one kept.
    let listed = ok(&local(&store, &["routers", "-o", "json"]));
    let rows: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(rows[0]["name"], "local-1", "{rows}");
    assert_eq!(rows[0]["live"], true, "{rows}");
    assert_eq!(rows[0]["address"], format!("127.0.0.1:{listen}"), "{rows}");
    std::fs::write(
        store.join("routers").join("gone.json"),
        r#"{"name": "gone", "renewedMs": 1000, "leaseDurationSeconds": 10}"#,
    )
    .expect("an old replica file");
    let pruned = ok(&local(&store, &["routers", "--prune"]));
    assert_eq!(pruned.trim(), "router gone pruned");
    assert!(!store.join("routers").join("gone.json").exists());
    assert!(store.join("routers").join("local-1.json").exists());

    // A whole function goes only with --force while a live router serves it.
    let out = local(&store, &["delete", "hello", "--all"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: function hello is served by 1 live router (local-1); deleting it makes them answer 404 (use --force)"
    );
    let deleted = ok(&local(&store, &["delete", "hello", "--all", "--force"]));
    assert_eq!(deleted.trim(), "function hello deleted with its 2 versions");
    wait_until_blocking(Duration::from_secs(20), "the route to go", || {
        let r = client.get("localhost", "/hello", &[]).ok()?;
        (r.status == 404).then_some(())
    });
    let listed = ok(&local(&store, &["list", "-o", "json"]));
    assert_eq!(listed.trim(), "[]");
}

#[test]
fn switchyard_store_names_the_local_store_when_no_flag_does() {
    // No --store and no cluster (KUBECONFIG points nowhere): SWITCHYARD_STORE alone picks the
    // store, for writes and reads, exactly as --store would.
    let store = temp_dir("env-store");
    let up = Upstream::start("1.0.0");
    let with_env = |args: &[&str]| {
        Command::new(binary("switchyard"))
            .args(args)
            .env("SWITCHYARD_STORE", format!("dir:{}", store.display()))
            .env("KUBECONFIG", store.join("no-such-kubeconfig"))
            .output()
            .expect("running switchyard")
    };
    ok(&with_env(&[
        "deploy",
        "hello",
        "1.0.0",
        "--endpoint",
        &up.url(),
        "--no-wait",
    ]));
    assert!(store.join("functions").join("hello.yaml").is_file());
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&with_env(&["list", "-o", "json"]))).expect("json");
    assert_eq!(listed[0]["name"], "hello", "{listed}");
    // The same store through the flag sees the same function.
    let flagged: serde_json::Value =
        serde_json::from_str(&ok(&local(&store, &["list", "-o", "json"]))).expect("json");
    assert_eq!(flagged, listed);
}
