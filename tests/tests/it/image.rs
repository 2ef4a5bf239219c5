//! The router's container image, made without a container engine by `scripts/router-image`
//! (an OCI image layout; see that script for why router/Dockerfile itself cannot be built
//! here), then run the way manifests/router.yaml runs it: as uid 65532 with no capabilities
//! and no_new_privs, on a read-only root filesystem, with its state directory mounted. It
//! follows a local store and routes a request to an upstream on loopback.
//!
//! This tier runs only where the sandbox can be made: as root (a mount namespace) with
//! util-linux's `unshare` and `setpriv`. Elsewhere the test says that it skipped, and why.
//! The image is built from the debug binary of this run, so its size here is not the
//! release image's; `scripts/router-image build` (release) prints that.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::router::temp_dir;
use switchyard_tests::{binary, free_port, get, wait_until_blocking, HttpClient, Upstream};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Why the sandbox cannot be made here, if it cannot.
fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some("not running as root (a mount namespace is needed)".into());
    }
    for tool in ["unshare", "setpriv", "tar", "gzip", "sha256sum"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("a blob");
    serde_json::from_slice(&bytes).expect("a JSON blob")
}

/// The router process of the image; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the router's /proc status")
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .map(|l| l[field.len() + 1..].trim().to_string())
        .unwrap_or_default()
}

#[test]
fn the_router_image_runs_as_non_root_on_a_read_only_root_and_serves_from_a_local_store() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: the router image tier needs a sandbox: {why}");
        return;
    }
    let script = workspace().join("scripts/router-image");
    let layout = temp_dir("router-image").join("layout");
    let built = Command::new(&script)
        .arg("build")
        .arg("--binary")
        .arg(binary("switchyard-router"))
        .arg("--out")
        .arg(&layout)
        .output()
        .expect("running scripts/router-image build");
    assert!(built.status.success(), "{built:?}");
    let report = String::from_utf8_lossy(&built.stdout);
    assert!(report.starts_with("size: "), "{report}");
    eprintln!("router image (debug binary) {report}");

    // The layout and its config say what router/Dockerfile says.
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    let manifest = blob(
        &layout,
        index["manifests"][0]["digest"]
            .as_str()
            .expect("a manifest"),
    );
    let config = blob(
        &layout,
        manifest["config"]["digest"].as_str().expect("a config"),
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/switchyard-router"])
    );
    assert_eq!(config["os"], "linux");

    // A local store with one function on a loopback upstream, owned by the image's user.
    let upstream = Upstream::start("from-the-image");
    let state = temp_dir("router-image-state");
    let deployed = Command::new(binary("switchyard"))
        .arg("--store")
        .arg(format!("dir:{}", state.display()))
        .args([
            "deploy",
            "hello",
            "1.0.0",
            "--endpoint",
            &upstream.url(),
            "--no-wait",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .expect("running switchyard");
    assert!(deployed.status.success(), "{deployed:?}");
    let status = Command::new("chown")
        .args(["-R", "65532:65532"])
        .arg(&state)
        .status()
        .expect("chown");
    assert!(status.success());
    chown(&state, Some(65532), Some(65532)).expect("chown the state dir");

    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let router = Running(
        Command::new(&script)
            .arg("run")
            .arg("--state")
            .arg(&state)
            .arg(&layout)
            .args(["--store", "dir:/var/lib/switchyard", "--listen", &listen])
            .args([
                "--admin",
                &admin,
                "--replica-name",
                "image",
                "--grace-period",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running scripts/router-image run"),
    );
    let admin_addr = admin.parse().expect("addr");
    wait_until_blocking(Duration::from_secs(30), "the image's /healthz", || {
        get(admin_addr, "/healthz").ok().filter(|r| r.status == 200)
    });
    wait_until_blocking(Duration::from_secs(30), "the image's /readyz", || {
        get(admin_addr, "/readyz").ok().filter(|r| r.status == 200)
    });

    // The script execs all the way down: its PID is the router's.
    let pid = router.0.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the router's exe");
    assert!(exe.ends_with("usr/local/bin/switchyard-router"), "{exe:?}");
    assert!(status_field(pid, "Uid").starts_with("65532\t65532"));
    assert!(status_field(pid, "Gid").starts_with("65532\t65532"));
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // Its root is read-only even to root; its state directory is not.
    let write = std::fs::write(format!("/proc/{pid}/root/usr/local/bin/x"), b"x");
    assert_eq!(
        write.map_err(|e| e.raw_os_error()),
        Err(Some(30)), // EROFS
        "the image's root filesystem must be read-only"
    );

    // And it routes.
    let mut http = HttpClient::new(listen.parse().expect("addr"));
    let r = wait_until_blocking(Duration::from_secs(30), "a request routed to hello", || {
        http.get("localhost", "/hello", &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    assert_eq!(r.header("x-upstream"), "from-the-image");
    drop(router);
    let _ = std::fs::remove_dir_all(layout.parent().expect("parent"));
    let _ = std::fs::remove_dir_all(&state);
}
