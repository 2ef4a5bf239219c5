//! What the router says on stderr at its default level (issue 13): its start-up, each table
//! swap with every changed function's old → new split, each rejection once per generation; and
//! the same events as JSON lines with `--log-format json`. On the local store, written by the
//! real CLI, which waits for the router's acknowledgement: a swap is logged before it is
//! acknowledged, so the log holds it once the CLI returns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard_tests::cli::local;
use switchyard_tests::router::temp_dir;
use switchyard_tests::{binary, free_port, get, wait_until_blocking};

fn ok(store: &Path, args: &[&str]) -> String {
    let out = local(store, args);
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A router on `store` with its stderr in a file, at the default log level (no RUST_LOG).
struct LoggedRouter {
    child: Child,
    log: PathBuf,
    listen: String,
    admin: String,
}

impl LoggedRouter {
    fn start(store: &Path, extra: &[&str]) -> LoggedRouter {
        let log = store.with_extension("router.log");
        let (listen, admin) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let mut child = Command::new(binary("switchyard-router"))
            .arg("--store")
            .arg(format!("dir:{}", store.display()))
            .args(["--listen", &listen, "--admin", &admin])
            .args(["--replica-name", "logger"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("SWITCHYARD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting switchyard-router");
        let addr = admin.parse().expect("admin address");
        wait_until_blocking(Duration::from_secs(30), "router /readyz", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "router exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            get(addr, "/readyz").ok().filter(|r| r.status == 200)
        });
        LoggedRouter {
            child,
            log,
            listen,
            admin,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("router log")
    }
}

impl Drop for LoggedRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hello` at 1.0.0=100% with 1.1.0 registered, and `other` at `/other`: the router starts
/// from this.
fn two_functions(store: &Path) {
    for (function, version, port) in [
        ("hello", "1.0.0", 9001),
        ("hello", "1.1.0", 9002),
        ("other", "1.0.0", 9003),
    ] {
        ok(
            store,
            &[
                "deploy",
                function,
                version,
                "--endpoint",
                &format!("http://127.0.0.1:{port}"),
                "--no-wait",
            ],
        );
    }
}

/// `other` claims hello's route: the CLI's wait fails (exit 1) once the router rejected it.
fn clash(store: &Path) {
    let out = local(store, &["set", "other", "--prefix", "/hello"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn at_the_default_level_the_router_logs_start_up_each_swap_with_its_split_and_each_rejection_once()
{
    let store = temp_dir("text");
    two_functions(&store);
    let router = LoggedRouter::start(&store, &[]);
    ok(&store, &["traffic", "hello", "1.1.0=10", "1.0.0=90"]);
    clash(&store);
    // A later swap (another change of hello) does not repeat the rejection.
    ok(&store, &["traffic", "hello", "1.1.0=20", "1.0.0=80"]);
    let log = router.log();

    let start = log
        .lines()
        .find(|l| l.contains(" INFO ") && l.contains("starting"))
        .unwrap_or_else(|| panic!("a start-up line:\n{log}"));
    for field in [
        format!("listen={}", router.listen),
        format!("admin={}", router.admin),
        format!("source=store dir:{}", store.display()),
        "replica=logger".to_string(),
    ] {
        assert!(start.contains(&field), "{field} in {start}");
    }
    let swaps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("local/hello: "))
        .collect();
    assert!(
        swaps
            .iter()
            .any(|l| l.contains("local/hello: 1.0.0=100% → 1.1.0=10% 1.0.0=90%")),
        "the first canary step:\n{log}"
    );
    assert!(
        swaps
            .iter()
            .any(|l| l.contains("local/hello: 1.1.0=10% 1.0.0=90% → 1.1.0=20% 1.0.0=80%")),
        "the second:\n{log}"
    );
    let rejections: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("local/other rejected"))
        .collect();
    assert_eq!(rejections.len(), 1, "one rejection line:\n{log}");
    assert!(
        rejections[0].contains("conflicts with function local/hello")
            && rejections[0].contains("generation=2"),
        "{}",
        rejections[0]
    );
    assert!(!log.contains('\u{1b}'), "no colour into a file:\n{log}");
}

#[test]
fn with_log_format_json_every_line_is_a_json_object_with_the_same_events() {
    let store = temp_dir("json");
    two_functions(&store);
    let router = LoggedRouter::start(&store, &["--log-format", "json"]);
    ok(&store, &["traffic", "hello", "1.1.0=10", "1.0.0=90"]);
    clash(&store);
    let log = router.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |message: &str| {
        events
            .iter()
            .find(|e| e["message"] == message)
            .unwrap_or_else(|| panic!("{message:?} in:\n{log}"))
    };
    let start = find("starting");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["listen"], router.listen.as_str());
    assert_eq!(start["replica"], "logger");
    let swap = find("local/hello: 1.0.0=100% → 1.1.0=10% 1.0.0=90%");
    assert_eq!(swap["function"], "local/hello");
    // Generation 1: the first deploy; 2: 1.1.0 added at 0% (in the history); 3: the shift.
    assert_eq!(swap["generation"], 3);
    let rejected = events
        .iter()
        .find(|e| e["level"] == "WARN" && e["function"] == "local/other")
        .unwrap_or_else(|| panic!("a rejection in:\n{log}"));
    assert!(
        rejected["message"]
            .as_str()
            .is_some_and(|m| m.contains("conflicts with function local/hello")),
        "{rejected}"
    );
}
