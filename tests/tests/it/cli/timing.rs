//! The closing-note measurement of issue 4: process time of `switchyard rollback` from start to
//! exit with two router replicas acknowledging, p50 over 20 runs, split into the stages the
//! binary reports with `SWITCHYARD_TIMING=1`. Ignored by default (timings are measured, never
//! asserted); run it with
//!
//! ```text
//! cargo build -p switchyard-cli -p switchyard-router [--release]
//! cargo test -p switchyard-tests [--release] --test it cli::timing -- --ignored --nocapture
//! ```
//!
//! `SWITCHYARD_TIMING_ROUTERS=sim` uses simulated replicas instead of the real router;
//! `SWITCHYARD_TIMING_BIN=target/release/switchyard` times another build of the CLI.

use switchyard_tests::cli as support;

use std::collections::BTreeMap;
use std::time::Instant;

use support::{Cli, RealRouter, SimRouter};
use switchyard_tests::{client, namespace};

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
async fn rollback_process_time_with_two_routers() {
    let client = client().await;
    let ns = namespace(&client, "cli-timing").await;
    let cli = Cli::new(&ns);
    for (v, ep) in [
        ("1.0.0", "http://127.0.0.1:9001"),
        ("1.1.0", "http://127.0.0.1:9002"),
    ] {
        cli.ok(&["deploy", "hello", v, "--endpoint", ep, "--no-wait"])
            .await;
    }
    cli.ok(&["promote", "hello", "1.1.0", "--no-wait"]).await;
    let simulated = std::env::var("SWITCHYARD_TIMING_ROUTERS").as_deref() == Ok("sim");
    let (_sims, _reals) = if simulated {
        (
            vec![
                SimRouter::start(&client, &ns, "router-a").await,
                SimRouter::start(&client, &ns, "router-b").await,
            ],
            vec![],
        )
    } else {
        let ns_ = ns.clone();
        let reals = tokio::task::spawn_blocking(move || {
            vec![
                RealRouter::start(&ns_, "router-a"),
                RealRouter::start(&ns_, "router-b"),
            ]
        })
        .await
        .expect("routers");
        support::wait_for_leases(&client, &ns, &["router-a", "router-b"]).await;
        (vec![], reals)
    };
    // Warm-up: both replicas have acknowledged the current generation.
    cli.ok(&["rollback", "hello"]).await;
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..20 {
        // Each timed rollback is a real change: promote (untimed) first, forced because the
        // previous rollback left 1.1.0.
        cli.ok(&["promote", "hello", "1.1.0", "--force"]).await;
        let started = Instant::now();
        let bin = std::env::var_os("SWITCHYARD_TIMING_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| switchyard_tests::binary("switchyard"));
        let out = tokio::process::Command::new(bin)
            .arg("--kubeconfig")
            .arg(switchyard_tests::kubeconfig_path())
            .args(["-n", &ns, "rollback", "hello"])
            .env("SWITCHYARD_TIMING", "1")
            .output()
            .await
            .expect("running switchyard");
        let wall = started.elapsed().as_secs_f64() * 1000.0;
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with("timing:"))
            .expect("timing line");
        let mut inside = 0.0;
        for part in line.trim_start_matches("timing:").split_whitespace() {
            let (name, ms) = part.split_once('=').expect("name=ms");
            let ms: f64 = ms.trim_end_matches("ms").parse().expect("ms");
            if name == "total" {
                inside = ms;
            }
            stages.entry(name.to_string()).or_default().push(ms);
        }
        stages
            .entry("process start+exit (wall - total)".into())
            .or_default()
            .push(wall - inside);
        stages.entry("wall".into()).or_default().push(wall);
    }
    println!(
        "rollback with two {} routers, p50 of 20 runs:",
        if simulated { "simulated" } else { "real" }
    );
    for (name, v) in stages {
        println!("  {name:<36} {:>8.1} ms", p50(v));
    }
}
