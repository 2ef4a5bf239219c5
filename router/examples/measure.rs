//! Measurements for the router's closing note (not a test: nothing here asserts).
//!
//! ```text
//! cargo run --release -p switchyard-router --example measure -- rss 0        # RSS at rest
//! cargo run --release -p switchyard-router --example measure -- rss 10000    # 10,000 functions × 3 versions
//! cargo run --release -p switchyard-router --example measure -- build 10000  # table build times
//! cargo run --release -p switchyard-router --example measure -- scan 10000   # a no-change state, 20 times
//! cargo run --release -p switchyard-router --example measure -- rps          # wrk: router vs direct
//! cargo run --release -p switchyard-router --example measure -- serve 60   # keep one up for manual wrk
//! KUBECONFIG=… cargo run --release -p switchyard-router --example measure -- flips 100
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use switchyard_core::{Function, FunctionVersion};
use switchyard_router::build::Builder;
use switchyard_router::source::State;
use switchyard_router::{KubernetesOptions, RouterConfig, Shared, Source};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// `n` functions with 3 external versions each (90/9/1), in namespaces of 100 functions.
fn state(n: usize, endpoint: &str) -> State {
    let mut functions = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n * 3);
    for i in 0..n {
        let ns = format!("ns-{}", i / 100);
        let name = format!("fn-{i}");
        let f: Function = serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": name, "namespace": ns, "generation": 1, "uid": format!("uid-{i}")},
            "spec": {"traffic": [
                {"version": "1.0.0", "weight": 900_000},
                {"version": "1.1.0", "weight": 90_000},
                {"version": "2.0.0", "weight": 10_000}]},
        }))
        .expect("a valid Function");
        functions.push(Arc::new(f));
        for v in ["1.0.0", "1.1.0", "2.0.0"] {
            let fv: FunctionVersion = serde_json::from_value(json!({
                "apiVersion": "switchyard.dev/v1alpha1", "kind": "FunctionVersion",
                "metadata": {"name": switchyard_core::object_name(&name, v), "namespace": ns, "uid": format!("uid-{i}-{v}")},
                "spec": {"function": name, "version": v, "endpoint": endpoint},
            }))
            .expect("a valid FunctionVersion");
            versions.push(Arc::new(fv));
        }
    }
    State {
        functions,
        versions,
    }
}

/// A minimal keep-alive HTTP/1.1 upstream on tokio answering `200 ok` to every GET.
fn upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = s.set_nodelay(true);
                    let mut buf = vec![0u8; 8192];
                    let mut filled = 0;
                    loop {
                        let Ok(n) = s.read(&mut buf[filled..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        filled += n;
                        while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                            let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                            if s.write_all(resp).await.is_err() {
                                return;
                            }
                            buf.copy_within(end + 4..filled, 0);
                            filled -= end + 4;
                        }
                    }
                });
            }
        });
    });
    addr
}

fn start_fixed(state: State, threads: usize) -> (switchyard_router::RouterHandle, SocketAddr) {
    let mut config = RouterConfig::new("measure");
    config.listen = free_addr();
    config.admin = free_addr();
    config.threads = threads;
    config.grace_period = Duration::from_secs(0);
    let listen = config.listen;
    let router = switchyard_router::start(config, Source::Fixed(state)).expect("router start");
    wait_port(listen);
    (router, listen)
}

fn wait_port(addr: SocketAddr) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "router did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rss(n: usize) {
    let before = rss_kib();
    let (router, listen) = start_fixed(state(n, "http://127.0.0.1:9"), 1);
    // One request through, so the request path is warm.
    let mut s = std::net::TcpStream::connect(listen).expect("connect");
    let _ = s.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let _ = s.read_to_end(&mut Vec::new());
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "functions={n} versions={} routes={} rss_before_start={} KiB rss_serving={} KiB",
        n * 3,
        router.shared().live.load().table.routes().len(),
        before,
        rss_kib()
    );
    router.stop();
}

fn build(n: usize) {
    let metrics = switchyard_router::metrics::Metrics::new();
    let st = state(n, "http://127.0.0.1:9");
    let mut builder = Builder::new(Default::default(), "measure".into());
    let t = Instant::now();
    let out = builder.apply(&st, SystemTime::now(), &metrics);
    let full = t.elapsed();
    let routes = out.live.as_ref().map_or(0, |l| l.table.routes().len());
    // One function's weights change: the incremental path.
    let mut changed = st.clone();
    let mut f = (*changed.functions[0]).clone();
    f.metadata.generation = Some(2);
    f.spec.traffic[0].weight = 800_000;
    f.spec.traffic[1].weight = 190_000;
    changed.functions[0] = Arc::new(f);
    let t = Instant::now();
    let out2 = builder.apply(&changed, SystemTime::now(), &metrics);
    let one = t.elapsed();
    let t = Instant::now();
    let same = builder.apply(&changed, SystemTime::now(), &metrics);
    let nothing = t.elapsed();
    // The same change as a source's update (what the Kubernetes source sends), 20 times.
    let mut updates = Vec::new();
    for round in 0..20 {
        let mut f = (*changed.functions[1]).clone();
        f.metadata.generation = Some(2 + round);
        f.spec.traffic[0].weight = 800_000 - round as u32;
        f.spec.traffic[1].weight = 190_000 + round as u32;
        let name = f.metadata.name.clone().unwrap_or_default();
        let update = switchyard_router::source::Update {
            functions: vec![switchyard_router::source::FunctionInputs {
                namespace: f.metadata.namespace.clone().unwrap_or_default(),
                name: name.clone(),
                versions: changed
                    .versions
                    .iter()
                    .filter(|v| v.spec.function == name)
                    .cloned()
                    .collect(),
                function: Some(Arc::new(f)),
            }],
        };
        let t = Instant::now();
        let out = builder.apply_update(&update, SystemTime::now(), &metrics);
        updates.push(t.elapsed());
        assert!(out.live.is_some());
    }
    updates.sort();
    println!(
        "one_function_update p50={:?} max={:?} (20 updates of one function)",
        updates[10], updates[19]
    );
    let routes_only: Vec<_> = out2
        .live
        .as_ref()
        .map(|l| l.table.routes().to_vec())
        .unwrap_or_default();
    let t = Instant::now();
    let _ = switchyard_core::RoutingTable::from_routes(routes_only);
    let index = t.elapsed();
    println!(
        "no_change_scan={nothing:?} (swapped: {}) core_from_routes={index:?}",
        same.live.is_some()
    );
    let st2 = state(n, "http://127.0.0.1:9");
    let t = Instant::now();
    let table = switchyard_core::RoutingTable::build(
        &st2.functions
            .iter()
            .map(|f| (**f).clone())
            .collect::<Vec<_>>(),
        &st2.versions
            .iter()
            .map(|v| (**v).clone())
            .collect::<Vec<_>>(),
        &Default::default(),
    );
    let core_only = t.elapsed();
    println!(
        "functions={n} versions={} routes={routes} first_build={full:?} one_function_changed={one:?} (swapped: {}) core_RoutingTable::build={core_only:?} ok={}",
        n * 3,
        out2.live.is_some(),
        table.is_ok()
    );
}

fn wrk(url: &str) -> String {
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c32", "-d10s", "--latency", url])
        .output()
        .expect("running wrk (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .unwrap_or("?")
        .trim()
        .to_string();
    format!("{rps}  p99 {p99}")
}

fn rps() {
    let up = upstream();
    wait_port(up);
    let (router, listen) = start_fixed(state(1, &format!("http://{up}")), 1);
    println!("direct  : {}", wrk(&format!("http://{up}/fn-0")));
    println!("router  : {}", wrk(&format!("http://{listen}/fn-0")));
    println!("direct  : {}", wrk(&format!("http://{up}/fn-0")));
    println!("router  : {}", wrk(&format!("http://{listen}/fn-0")));
    router.stop();
}

fn flips(n: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let up = upstream();
    let ns = format!("measure-{}", std::process::id());
    let client = rt.block_on(async {
        let client = kube::Client::try_default().await.expect("KUBECONFIG client");
        let nsapi: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let obj = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        nsapi.create(&PostParams::default(), &obj).await.expect("creating namespace");
        let fvs: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
        for v in ["1.0.0", "2.0.0"] {
            let name = switchyard_core::object_name("flip", v);
            let fv = json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "FunctionVersion",
                "metadata": {"name": name}, "spec": {"function": "flip", "version": v, "endpoint": format!("http://{up}")}});
            fvs.patch(&name, &PatchParams::apply("measure").force(), &Patch::Apply(&fv)).await.expect("fv");
        }
        client
    });
    let mut config = RouterConfig::new("measure-flips");
    config.listen = free_addr();
    config.admin = free_addr();
    config.grace_period = Duration::from_secs(0);
    let kubeconfig = std::env::var_os("KUBECONFIG").map(Into::into);
    let router = switchyard_router::start(
        config,
        Source::Kubernetes(KubernetesOptions::new(kubeconfig, Some(ns.clone()))),
    )
    .expect("router start");
    let shared: Arc<Shared> = router.shared().clone();
    let served = |shared: &Shared| {
        shared
            .live
            .load()
            .table
            .routes()
            .iter()
            .find(|r| r.name == "flip")
            .map_or(0, |r| r.generation)
    };
    let fns: Api<Function> = Api::namespaced(client, &ns);
    let mut samples = Vec::with_capacity(n);
    for i in 0..=n {
        let (a, b) = if i % 2 == 0 {
            (1_000_000, 0)
        } else {
            (0, 1_000_000)
        };
        let f = json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Function", "metadata": {"name": "flip"},
            "spec": {"traffic": [{"version": "1.0.0", "weight": a}, {"version": "2.0.0", "weight": b}]}});
        let t = Instant::now();
        let g = rt
            .block_on(fns.patch(
                "flip",
                &PatchParams::apply("measure").force(),
                &Patch::Apply(&f),
            ))
            .expect("flip")
            .metadata
            .generation
            .unwrap_or(0);
        while served(&shared) < g {
            std::thread::sleep(Duration::from_micros(100));
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "flip {i} never served"
            );
        }
        if i > 0 {
            // The first write creates the Function; the flips are the rest.
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(samples.len() - 1)]
    };
    println!(
        "flips={} write→serving p50={:?} p99={:?} max={:?} (includes the API write's own round trip)",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
    router.stop();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("rss") => rss(n(1, 0)),
        Some("build") => build(n(1, 10_000)),
        Some("rps") => rps(),
        Some("flips") => flips(n(1, 100)),
        Some("scan") => {
            let metrics = switchyard_router::metrics::Metrics::new();
            let st = state(n(1, 10_000), "http://127.0.0.1:9");
            let mut builder = Builder::new(Default::default(), "measure".into());
            builder.apply(&st, SystemTime::now(), &metrics);
            let t = Instant::now();
            for _ in 0..20 {
                builder.apply(&st, SystemTime::now(), &metrics);
            }
            println!("no-change apply: {:?} each", t.elapsed() / 20);
        }
        Some("serve") => {
            let up = upstream();
            wait_port(up);
            let (router, listen) = start_fixed(state(1, &format!("http://{up}")), 1);
            println!("upstream http://{up}/fn-0  router http://{listen}/fn-0");
            std::thread::sleep(Duration::from_secs(n(1, 60) as u64));
            router.stop();
        }
        _ => eprintln!("usage: measure rss N | build N | rps | serve SECONDS | flips N"),
    }
}
