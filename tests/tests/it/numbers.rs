//! Live numbers end to end (issue 14): two real routers count what they proxy, publish it in
//! their reports, and `switchyard status -o json` sums the live replicas' last minute per
//! version. A version answering 500 to exactly 3 requests in 10 reads back with a 30% error
//! rate, the other with none, and the observed shares follow the configured split.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use switchyard_tests::cli::Cli;
use switchyard_tests::router::*;
use switchyard_tests::{client, namespace, wait_until, Upstream};

/// An upstream that answers 500 to requests 0, 1 and 2 of every 10 it receives (counted over
/// all its connections), 200 `flaky` otherwise; keep-alive, as the router's pool expects.
fn flaky_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the flaky upstream");
    let addr = listener.local_addr().expect("its address");
    let seen = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().expect("a second handle");
                let mut reader = BufReader::new(conn);
                while read_head(&mut reader) {
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    let (status, body) = if n % 10 < 3 {
                        ("500 Internal Server Error", "boom")
                    } else {
                        ("200 OK", "flaky")
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sums_two_routers_numbers_a_30_percent_failing_version_reads_30_percent_errors() {
    const PER_ROUTER: usize = 400;
    let client = client().await;
    let ns = namespace(&client, "numbers").await;
    let good = Upstream::start("good");
    let flaky = flaky_upstream();
    apply_version(&client, &ns, "hello", "1.0.0", &good.url()).await;
    apply_version(&client, &ns, "hello", "1.1.0", &format!("http://{flaky}")).await;
    let g = apply_function(
        &client,
        &ns,
        "hello",
        &[("1.0.0", 700_000), ("1.1.0", 300_000)],
        json!({}),
    )
    .await;
    let routers = [Router::start(&ns, "rnum-0"), Router::start(&ns, "rnum-1")];
    for r in &routers {
        r.wait_serving("hello", g);
    }
    let mut served = 0;
    for r in &routers {
        let addr = r.listen;
        let counts = tokio::task::spawn_blocking(move || {
            count_served(addr, "localhost", "/hello", PER_ROUTER)
        })
        .await
        .expect("requests");
        served += counts.values().sum::<usize>();
    }
    assert_eq!(served, 2 * PER_ROUTER);

    // Each replica publishes within a second or so; wait until both reports hold every request.
    let cli = Cli::new(&ns);
    let live = wait_until(WAIT, "both routers' numbers in status", || async {
        let out = cli.run(&["status", "hello", "-o", "json"]).await;
        let view: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let live = view["live"].as_array()?.clone();
        let total: u64 = live.iter().filter_map(|v| v["requests"].as_u64()).sum();
        (total == 2 * PER_ROUTER as u64).then_some(live)
    })
    .await;
    let version = |v: &str| {
        live.iter()
            .find(|row| row["version"] == v)
            .unwrap_or_else(|| panic!("version {v} in {live:?}"))
            .clone()
    };
    let (stable, canary) = (version("1.0.0"), version("1.1.0"));
    let f = |row: &serde_json::Value, k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(f(&stable, "errorRate"), 0.0, "{stable}");
    let canary_errors = f(&canary, "errorRate");
    assert!(
        (canary_errors - 0.3).abs() < 0.02,
        "a version failing 3 in 10 reads ~30% errors: {canary}"
    );
    assert_eq!(canary["health"], "failing", "{canary}");
    assert_eq!(stable["health"], "healthy", "{stable}");
    assert!(
        (f(&canary, "share") - 0.3).abs() < 0.05 && (f(&stable, "share") - 0.7).abs() < 0.05,
        "observed shares follow the 70/30 split: {stable} {canary}"
    );
    assert_eq!(stable["weight"], 700_000);
    assert!(f(&stable, "p50Ms") > 0.0 && f(&canary, "p99Ms") > 0.0);
    // Summed over both replicas: each one counted its own half.
    for r in ["rnum-0", "rnum-1"] {
        let report = report_of(&client, &ns, r).await.expect("a report");
        let numbers = report.numbers.expect("numbers in the report");
        let requests: u64 = numbers
            .versions
            .iter()
            .filter(|v| v.function == format!("{ns}/hello"))
            .map(|v| v.window.requests)
            .sum();
        assert_eq!(requests, PER_ROUTER as u64, "{r}");
    }
    // `list` flags the failing version.
    let listed = cli.ok(&["list"]).await;
    let health = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap_or_default();
    assert!(
        health.contains(&format!("1.1.0 {:.1}% errors", canary_errors * 100.0)),
        "{listed:?}"
    );
}
