//! The automated canary on a local store (`--store dir:PATH`): the single router judges the
//! rollout with its own counters and writes each transition through the store's locked write
//! (docs/protocol.md, "Local store"). A real router, real upstreams on 127.0.0.1, a real store
//! directory; every wait is on the stored document.

mod common;
use common::free;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::plan::VersionState;
use switchyard_core::resources::{RolloutPhase, RolloutSpec, RolloutStatus};
use switchyard_core::rollout::{self, By, Outcome};
use switchyard_core::{Function, FunctionVersion, TOTAL_PPM};
use switchyard_router::source::local::LocalOptions;
use switchyard_router::{RouterConfig, Source};
use switchyard_store::{FunctionDocument, LocalStore};

/// An upstream answering `label`, `500` to every `fail_every`-th request (none when 0).
fn upstream(label: &'static str, fail_every: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                let mut r = BufReader::new(conn);
                let mut line = String::new();
                loop {
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                    let status = if fail_every > 0 && n.is_multiple_of(fail_every) {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{label}",
                        label.len()
                    );
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Requests to `/hello` on one keep-alive connection until stopped; each answer's
/// `x-switchyard-served-by`, in order.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(router: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || {
            let mut conn: Option<BufReader<TcpStream>> = None;
            while !s.load(Ordering::Relaxed) {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match TcpStream::connect(router) {
                        Ok(t) => conn.insert(BufReader::new(t)),
                        Err(_) => continue,
                    },
                };
                let asked = c
                    .get_mut()
                    .write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\n\r\n");
                match asked.ok().and_then(|()| answer(c)) {
                    Some(by) => out.lock().expect("seen").push(by),
                    None => conn = None,
                }
            }
        });
        Load { stop, seen }
    }

    fn answers(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one response; its `x-switchyard-served-by`.
fn answer(c: &mut BufReader<TcpStream>) -> Option<String> {
    let (mut by, mut length, mut line) = (String::new(), 0usize, String::new());
    loop {
        line.clear();
        if c.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "x-switchyard-served-by" => by = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    c.read_exact(&mut body).ok()?;
    Some(by)
}

/// A store with `hello` on 1.2.0 (100%) and 1.3.0 deployed at 0%, a router following it, and
/// the router's handle.
fn setup(
    name: &str,
    canary_fail_every: u64,
) -> (LocalStore, switchyard_router::RouterHandle, SocketAddr) {
    let root = std::env::temp_dir().join(format!(
        "switchyard-canary-{name}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    let store = LocalStore::open(&root).expect("a store");
    let (base, canary) = (upstream("1.2.0", 0), upstream("1.3.0", canary_fail_every));
    let mut f = Function::test("hello")
        .with_weight("1.2.0", TOTAL_PPM)
        .with_weight("1.3.0", 0);
    f.metadata.generation = None;
    f.spec.stable = Some("1.2.0".into());
    let doc = FunctionDocument {
        function: Some(f),
        versions: vec![
            FunctionVersion::test_endpoint("hello", "1.2.0", &format!("http://{base}")),
            FunctionVersion::test_endpoint("hello", "1.3.0", &format!("http://{canary}")),
        ],
    };
    store.write("hello", "0", doc).expect("writing hello");
    let mut config = RouterConfig::new("local-1");
    config.listen = free();
    config.admin = free();
    let listen = config.listen;
    let source = Source::Local(LocalOptions {
        root,
        lease_duration: Duration::from_secs(3),
        listen: listen.to_string(),
    });
    let router = switchyard_router::start(config, source).expect("the router starts");
    (store, router, listen)
}

/// Starts a rollout as `switchyard canary` does on a local store: `rollout::start` with the
/// router's reading, through the store's revision-checked write.
fn start_rollout(store: &LocalStore, router: &switchyard_router::RouterHandle, spec: &RolloutSpec) {
    let doc = store.read("hello").expect("reading hello");
    let f = doc.function.clone().expect("a Function");
    let metrics = &router.shared().metrics;
    let own = switchyard_router::numbers::own_reading(metrics, &metrics.started_at(), |_, _| true);
    let readings = BTreeMap::from([("local-1".to_string(), own)]);
    let versions = VersionState::all_ready(&["1.2.0", "1.3.0"]);
    let by = By {
        now: jiff::Timestamp::now(),
        actor: "tester",
        reason: None,
    };
    let Outcome::Write(next) =
        rollout::start(&f, spec, &versions, false, by, &readings).expect("a valid start")
    else {
        panic!("nothing to start")
    };
    let next = FunctionDocument {
        function: Some(*next),
        versions: doc.versions.clone(),
    };
    store
        .write("hello", &doc.resource_version(), next)
        .expect("starting the rollout");
}

/// The progress of `f`'s rollout, if it has one.
fn rollout_of(f: &Function) -> Option<&RolloutStatus> {
    f.status.as_ref()?.rollout.as_deref()
}

/// The stored Function once its rollout has finished.
fn wait_finished(store: &LocalStore) -> Function {
    let started = Instant::now();
    loop {
        if let Some(f) = store.read("hello").ok().and_then(|d| d.function) {
            if rollout_of(&f).is_some_and(|r| r.phase.finished()) {
                return f;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the rollout never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn plan() -> RolloutSpec {
    let mut spec = RolloutSpec::with_defaults("1.3.0", "1.2.0");
    spec.hold = "1s".into();
    spec.min_requests = 20;
    spec
}

fn history(f: &Function) -> Vec<String> {
    f.spec
        .history
        .iter()
        .filter(|h| h.action == switchyard_core::resources::Action::Canary)
        .map(|h| {
            let reason = h.reason.clone().unwrap_or_default();
            reason.split(':').next().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn on_a_local_store_the_router_promotes_a_healthy_canary_step_by_step() {
    let (store, router, listen) = setup("ok", 0);
    let _load = Load::start(listen);
    start_rollout(&store, &router, &plan());
    let f = wait_finished(&store);
    let status = rollout_of(&f).expect("status");
    assert_eq!(status.phase, RolloutPhase::Succeeded, "{:?}", status.reason);
    assert_eq!(status.actor, "switchyard-router/local-1");
    assert_eq!(f.spec.weight_of("1.3.0"), TOTAL_PPM);
    assert_eq!(
        history(&f),
        [
            "started step 1/5 at 1%",
            "advanced to step 2/5 at 5%",
            "advanced to step 3/5 at 25%",
            "advanced to step 4/5 at 50%",
            "promoted",
        ]
    );
    router.stop();
}

#[test]
fn on_a_local_store_the_router_aborts_a_failing_canary_and_serves_the_baseline() {
    let (store, router, listen) = setup("bad", 5);
    let load = Load::start(listen);
    start_rollout(&store, &router, &plan());
    let f = wait_finished(&store);
    let status = rollout_of(&f).expect("status");
    assert_eq!(status.phase, RolloutPhase::Aborted, "{:?}", status.reason);
    let reason = status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("canary 1.3.0: error rate ") && reason.ends_with("(limit +1 pp)"),
        "{reason}"
    );
    assert_eq!(f.spec.weight_of("1.2.0"), TOTAL_PPM);
    // Once the router serves the abort (its table carries the new generation), live traffic
    // is on the baseline; the one request in flight at the swap is skipped.
    let generation = f.metadata.generation.expect("a generation");
    let started = Instant::now();
    let served = |router: &switchyard_router::RouterHandle| {
        let live = router.shared().live.load();
        live.to_json("", true, 0)["routes"]
            .as_array()
            .and_then(|routes| routes.iter().find(|r| r["name"] == "hello"))
            .and_then(|r| r["generation"].as_i64())
    };
    while served(&router) < Some(generation) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the abort never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let from = load.answers().len() + 1;
    while load.answers().len() < from + 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "no traffic");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = &load.answers()[from..from + 200];
    assert!(after.iter().all(|by| by == "hello@1.2.0"), "{after:?}");
    router.stop();
}
