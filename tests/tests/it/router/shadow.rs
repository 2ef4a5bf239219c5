//! Shadow traffic end to end without a cluster (issue 16): the CLI writes `spec.shadow` to a
//! local store, a router binary following the store copies live requests to the shadow version
//! and counts the comparisons at its admin port; `shadow stop` stops the copies. Every step
//! waits on a signal: the router's acknowledgement of each write (`applied by 1/1 routers`)
//! and the counts at `/shadow`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use switchyard_tests::{binary, free_port, get, wait_until_blocking, HttpClient, Upstream};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn switchyard(store: &Path, args: &[&str]) -> Output {
    Command::new(binary("switchyard"))
        .arg("--store")
        .arg(format!("dir:{}", store.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running switchyard")
}

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
        ok(&switchyard(
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
    let started = ok(&switchyard(
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
    let stopped = ok(&switchyard(&store, &["shadow", "stop", "hello"]));
    assert!(stopped.contains("applied by 1/1 routers"), "{stopped}");
    for _ in 0..20 {
        client.get("localhost", "/hello", &[]).expect("request");
    }
    assert_eq!(a.hits(), 40);
    assert_eq!(counts(admin)["sent"].as_u64(), Some(20));
    assert_eq!(b.hits(), 20, "no copy after the stop");
}
