//! Shadow traffic end to end without a cluster (issue 16): the CLI writes `spec.shadow` to a
//! local store, a router binary following the store copies live requests to the shadow version
//! and counts the comparisons at its admin port; `shadow stop` stops the copies. Every step
//! waits on a signal: the router's acknowledgement of each write (`applied by 1/1 routers`)
//! and the counts at `/shadow`.
//!
//! Two routers on one store publish their counts in their files; `shadow status` and `status`
//! sum them, and `promote`/`traffic` refuse weight for the version whose copies differed.

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

struct Router(Child);

/// A router binary following `store` as `replica`; its (proxy, admin) addresses once ready.
fn router(store: &Path, replica: &str) -> (Router, std::net::SocketAddr, std::net::SocketAddr) {
    let (listen, admin) = (free_port(), free_port());
    let child = Command::new(binary("switchyard-router"))
        .arg("--store")
        .arg(format!("dir:{}", store.display()))
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--replica-name",
            replica,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the router");
    let router = Router(child);
    let admin = format!("127.0.0.1:{admin}").parse().expect("addr");
    wait_until_blocking(Duration::from_secs(20), "the router to be ready", || {
        get(admin, "/readyz").ok().filter(|r| r.status == 200)
    });
    (
        router,
        format!("127.0.0.1:{listen}").parse().expect("addr"),
        admin,
    )
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json output")
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// hello's shadow counts at the admin port.
fn counts(admin: std::net::SocketAddr) -> serde_json::Value {
    let body = get(admin, "/shadow").expect("/shadow").body;
    let all: serde_json::Value = serde_json::from_str(&body).expect("json");
    all["shadows"][0].clone()
}

#[test]
fn a_shadow_started_by_the_cli_copies_requests_and_stop_ends_the_copies() {
    let store = temp_dir("shadow");
    let (a, b) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    for (v, up) in [("1.0.0", &a), ("1.1.0", &b)] {
        ok(&local(
            &store,
            &["deploy", "hello", v, "--endpoint", &up.url(), "--no-wait"],
        ));
    }
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
                "--replica-name",
                "local-1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the router"),
    );
    let admin = format!("127.0.0.1:{admin}").parse().expect("addr");
    wait_until_blocking(Duration::from_secs(20), "the router to be ready", || {
        get(admin, "/readyz").ok().filter(|r| r.status == 200)
    });
    let started = ok(&local(
        &store,
        &["shadow", "hello", "1.1.0", "--percent", "100"],
    ));
    assert!(started.contains("applied by 1/1 routers"), "{started}");
    let mut client = HttpClient::new(format!("127.0.0.1:{listen}").parse().expect("addr"));
    for _ in 0..20 {
        let r = client.get("localhost", "/hello", &[]).expect("request");
        assert_eq!(r.header("x-switchyard-served-by"), "hello@1.0.0");
        assert_eq!(r.header("x-switchyard-shadow"), "");
    }
    let c = wait_until_blocking(Duration::from_secs(20), "20 compared copies", || {
        let c = counts(admin);
        (c["compared"].as_u64() == Some(20)).then_some(c)
    });
    // The two versions answer with their own labels: every copy differs in its body.
    assert_eq!(c["differing"]["body"].as_u64(), Some(20), "{c}");
    assert_eq!(b.hits(), 20);
    let stopped = ok(&local(&store, &["shadow", "stop", "hello"]));
    assert!(stopped.contains("applied by 1/1 routers"), "{stopped}");
    for _ in 0..20 {
        client.get("localhost", "/hello", &[]).expect("request");
    }
    assert_eq!(a.hits(), 40);
    assert_eq!(counts(admin)["sent"].as_u64(), Some(20));
    assert_eq!(b.hits(), 20, "no copy after the stop");
}

#[test]
fn two_routers_counts_are_summed_and_a_differing_shadow_gets_no_weight_unless_forced() {
    let store = temp_dir("shadow-sum");
    let (a, b) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    for (v, up) in [("1.0.0", &a), ("1.1.0", &b)] {
        ok(&local(
            &store,
            &["deploy", "hello", v, "--endpoint", &up.url(), "--no-wait"],
        ));
    }
    let (_r1, listen1, admin1) = router(&store, "local-1");
    let (_r2, listen2, admin2) = router(&store, "local-2");
    let started = ok(&local(
        &store,
        &["shadow", "hello", "1.1.0", "--percent", "100"],
    ));
    assert!(started.contains("applied by 2/2 routers"), "{started}");
    // Nothing copied yet: shown as active, nothing counted.
    let view = json(&local(&store, &["shadow", "status", "hello", "-o", "json"]));
    assert_eq!(view["active"]["version"], "1.1.0", "{view}");
    assert_eq!(view["versions"], serde_json::json!([]), "{view}");
    for (listen, n) in [(listen1, 7), (listen2, 5)] {
        let mut client = HttpClient::new(listen);
        for i in 0..n {
            let r = client
                .get("localhost", &format!("/hello/{i}"), &[])
                .expect("request");
            assert_eq!(r.header("x-switchyard-served-by"), "hello@1.0.0");
        }
    }
    // Each router compared its own copies...
    for (admin, n) in [(admin1, 7), (admin2, 5)] {
        wait_until_blocking(Duration::from_secs(20), "each router's copies", || {
            (counts(admin)["compared"].as_u64() == Some(n)).then_some(())
        });
    }
    // ...and the CLI sums what their files say, once both have written them.
    let view = wait_until_blocking(Duration::from_secs(20), "12 copies summed", || {
        let v = json(&local(&store, &["shadow", "status", "hello", "-o", "json"]));
        (v["versions"][0]["compared"].as_u64() == Some(12)).then_some(v)
    });
    let row = &view["versions"][0];
    assert_eq!(view["liveRouters"], 2, "{view}");
    assert_eq!(row["version"], "1.1.0");
    assert_eq!(row["verdict"], "differing");
    assert_eq!(
        (
            row["sent"].as_u64(),
            row["differed"].as_u64(),
            row["differing"]["body"].as_u64()
        ),
        (Some(12), Some(12), Some(12)),
        "{row}"
    );
    assert_eq!(
        row["examples"].as_array().map(Vec::len),
        Some(5),
        "bounded: {row}"
    );
    let text = ok(&local(&store, &["shadow", "status", "hello"]));
    assert!(
        text.contains("Routers:   2 live") && text.contains("differing"),
        "{text}"
    );
    let status = json(&local(&store, &["status", "hello", "-o", "json"]));
    assert_eq!(status["shadow"]["versions"][0]["compared"], 12, "{status}");
    let status = ok(&local(&store, &["status", "hello"]));
    assert!(
        status.contains("Shadow:      1.1.0 100% GET,HEAD maxBody=1MiB; 1.1.0: differing · 12 of 12 compared differ"),
        "{status}"
    );
    // No weight for it: promote, traffic and canary refuse with one line naming the count.
    for args in [
        &["promote", "hello", "1.1.0", "--no-wait"][..],
        &["traffic", "hello", "1.0.0=90", "1.1.0=10", "--no-wait"][..],
        &["canary", "hello", "1.1.0", "--no-wait"][..],
    ] {
        let out = local(&store, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("1.1.0 answered differently from the serving version in 12 of 12 shadow copies (first: GET /hello/"),
            "{stderr}"
        );
    }
    // Stopped, it still counts (the routers' counts live on); taking weight away is allowed.
    ok(&local(&store, &["shadow", "stop", "hello"]));
    let out = local(&store, &["promote", "hello", "1.1.0", "--no-wait"]);
    assert_eq!(out.status.code(), Some(3));
    let forced = ok(&local(&store, &["promote", "hello", "1.1.0", "--force"]));
    assert!(forced.contains("applied by 2/2 routers"), "{forced}");
    ok(&local(
        &store,
        &["traffic", "hello", "1.0.0=100", "--no-wait"],
    ));
}

/// The same on Kubernetes: two real routers watching one namespace write their counts in their
/// RouterReports; the CLI sums the live ones and refuses weight for the differing version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kubernetes_two_routers_reports_are_summed_and_gate_promote() {
    use switchyard_tests::cli::Cli;
    use switchyard_tests::router::{apply_function, apply_version, Router as Real, WAIT};
    use switchyard_tests::{client, namespace, wait_until};

    let client = client().await;
    let ns = namespace(&client, "shadow-sum").await;
    let (a, b) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    apply_version(&client, &ns, "hello", "1.0.0", &a.url()).await;
    apply_version(&client, &ns, "hello", "1.1.0", &b.url()).await;
    let g = apply_function(
        &client,
        &ns,
        "hello",
        &[("1.0.0", 1_000_000)],
        serde_json::json!({}),
    )
    .await;
    let routers = [Real::start(&ns, "rshadow-0"), Real::start(&ns, "rshadow-1")];
    for r in &routers {
        r.wait_serving("hello", g);
    }
    let cli = Cli::new(&ns);
    let started = cli
        .ok(&["shadow", "hello", "1.1.0", "--percent", "100"])
        .await;
    assert!(
        started.stdout.contains("applied by 2/2 routers"),
        "{started:?}"
    );
    for (r, n) in [(&routers[0], 4usize), (&routers[1], 3)] {
        let listen = r.listen;
        tokio::task::spawn_blocking(move || {
            let mut client = HttpClient::new(listen);
            for i in 0..n {
                let r = client
                    .get("localhost", &format!("/hello/{i}"), &[])
                    .expect("request");
                assert_eq!(r.header("x-switchyard-served-by"), "hello@1.0.0");
            }
        })
        .await
        .expect("requests");
    }
    let view = wait_until(WAIT, "7 copies summed over both reports", || async {
        let out = cli.run(&["shadow", "status", "hello", "-o", "json"]).await;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (v["versions"][0]["compared"].as_u64() == Some(7)).then_some(v)
    })
    .await;
    assert_eq!(view["liveRouters"], 2, "{view}");
    assert_eq!(view["versions"][0]["differing"]["body"], 7, "{view}");
    let status = cli.ok(&["status", "hello", "-o", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(
        status["shadow"]["versions"][0]["verdict"], "differing",
        "{status}"
    );
    let refused = cli.run(&["promote", "hello", "1.1.0"]).await.expect(3);
    assert!(
        refused.stderr.contains(
            "1.1.0 answered differently from the serving version in 7 of 7 shadow copies"
        ),
        "{refused:?}"
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    cli.ok(&["promote", "hello", "1.1.0", "--force"]).await;
}
