//! Shared helpers of the `router_*` tests: run the real `switchyard-router` binary against the
//! test API server, write Functions and FunctionVersions, and wait on the router's own signals
//! (`/readyz`, the generation it serves in `/routes`, what its RouterReport says).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{binary, free_port, get, kubeconfig_path, wait_until_blocking, HttpClient, MANAGER};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use switchyard_core::Function;

/// How long any wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// A `switchyard-router` process on loopback ports; killed when dropped.
pub struct Router {
    /// The child process.
    pub child: Child,
    /// Proxy address.
    pub listen: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Replica name.
    pub replica: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// What a router is started with, beyond its namespace.
pub struct RouterOpts {
    /// Kubeconfig (default: the harness admin kubeconfig).
    pub kubeconfig: PathBuf,
    /// `--snapshot`.
    pub snapshot: Option<PathBuf>,
    /// `--grace-period` seconds.
    pub grace: u64,
    /// Whether to wait for `/readyz`.
    pub wait_ready: bool,
    /// `--lease-duration` seconds (default 10, the router's own default).
    pub lease_duration: u64,
}

impl Default for RouterOpts {
    fn default() -> Self {
        RouterOpts {
            kubeconfig: kubeconfig_path(),
            snapshot: None,
            grace: 1,
            wait_ready: true,
            lease_duration: 10,
        }
    }
}

impl Router {
    /// Starts a router watching `namespace` and waits until it is ready.
    pub fn start(namespace: &str, replica: &str) -> Router {
        Router::start_with(namespace, replica, RouterOpts::default())
    }

    /// Starts a router with options.
    pub fn start_with(namespace: &str, replica: &str, opts: RouterOpts) -> Router {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::env::temp_dir().join(format!("{replica}-{}.log", std::process::id()));
        let mut cmd = Command::new(binary("switchyard-router"));
        cmd.args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .args(["--namespace", namespace, "--replica-name", replica])
        .arg("--kubeconfig")
        .arg(&opts.kubeconfig)
        .args(["--grace-period", &opts.grace.to_string()])
        .args(["--lease-duration", &opts.lease_duration.to_string()])
        .env("RUST_LOG", "info,kube_client=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("router log file"));
        if let Some(s) = &opts.snapshot {
            cmd.arg("--snapshot").arg(s);
        }
        let child = cmd.spawn().expect("starting switchyard-router");
        let mut router = Router {
            child,
            listen,
            admin,
            replica: replica.to_string(),
            log,
        };
        if opts.wait_ready {
            router.wait_ready();
        }
        router
    }

    /// Waits for `/readyz` to answer 200 (fails early if the process exits).
    pub fn wait_ready(&mut self) {
        let admin = self.admin;
        let log = self.log.clone();
        let child = &mut self.child;
        wait_until_blocking(WAIT, "router /readyz", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "router exited with {status} before it was ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            get(admin, "/readyz")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| ())
        });
    }

    /// `/routes` as JSON.
    pub fn routes(&self) -> Value {
        let r = get(self.admin, "/routes").expect("GET /routes");
        assert_eq!(r.status, 200, "GET /routes: {}", r.body);
        serde_json::from_str(&r.body).expect("/routes is JSON")
    }

    /// The generation of function `name` the router serves, if it routes it.
    pub fn served_generation(&self, name: &str) -> Option<i64> {
        self.routes()["routes"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["generation"].as_i64())
    }

    /// Waits until the router serves generation `generation` (or newer) of function `name`.
    pub fn wait_serving(&self, name: &str, generation: i64) {
        wait_until_blocking(
            WAIT,
            &format!("router serving {name} generation {generation}"),
            || {
                self.served_generation(name)
                    .filter(|g| *g >= generation)
                    .map(|_| ())
            },
        );
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        get(self.admin, "/metrics").expect("GET /metrics").body
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process at once (SIGKILL): it neither deletes its Lease nor says goodbye, as
    /// a replica on a lost node.
    pub fn kill(&mut self) {
        self.child.kill().expect("killing the router");
        self.child.wait().expect("reaping the router");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = &mut self.child;
        wait_until_blocking(timeout, "router exit", || child.try_wait().ok().flatten()).code()
    }

    /// The router's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates (server-side apply) an external FunctionVersion of `function` served at `endpoint`.
pub async fn apply_version(
    client: &Client,
    ns: &str,
    function: &str,
    version: &str,
    endpoint: &str,
) {
    let api: Api<switchyard_core::FunctionVersion> = Api::namespaced(client.clone(), ns);
    let name = switchyard_core::object_name(function, version);
    let fv = json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "FunctionVersion",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"function": function, "version": version, "endpoint": endpoint},
    });
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&fv),
    )
    .await
    .unwrap_or_else(|e| panic!("applying FunctionVersion {name}: {e}"));
}

/// Server-side-applies Function `name` with `traffic` (version, ppm) and extra spec fields;
/// returns its new `metadata.generation`.
pub async fn apply_function(
    client: &Client,
    ns: &str,
    name: &str,
    traffic: &[(&str, u32)],
    extra: Value,
) -> i64 {
    let api: Api<Function> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({
        "traffic": traffic.iter().map(|(v, w)| json!({"version": v, "weight": w})).collect::<Vec<_>>(),
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    let f = json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    let applied = api
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&f),
        )
        .await
        .unwrap_or_else(|e| panic!("applying Function {name}: {e}"));
    applied
        .metadata
        .generation
        .expect("Functions have a generation")
}

/// What a replica's report says of one Function (docs/protocol.md, `protocol::summarize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The Function's generation the report covers.
    pub observed_generation: i64,
    /// Why the replica refuses it; `None` when it serves it.
    pub rejected: Option<String>,
}

/// The RouterReport of `replica` (in namespace `ns`, where its Lease is), if it has one.
pub async fn report_of(
    client: &Client,
    ns: &str,
    replica: &str,
) -> Option<switchyard_core::report::RouterReportStatus> {
    Api::<switchyard_core::report::RouterReport>::namespaced(client.clone(), ns)
        .get_opt(replica)
        .await
        .ok()??
        .status
}

/// Waits until `replica`'s report (its Lease and report in `ns`) covers Function `name` at
/// `generation` or newer, served or refused, as a CLI wait reads it; returns what it says.
pub async fn wait_ack(
    client: &Client,
    ns: &str,
    name: &str,
    replica: &str,
    generation: i64,
) -> Seen {
    let api: Api<Function> = Api::namespaced(client.clone(), ns);
    crate::wait_until(
        WAIT,
        &format!("{replica} reporting {name} generation {generation}"),
        || {
            let api = api.clone();
            async move {
                let f = api.get(name).await.ok()?;
                let g = f.metadata.generation?;
                if g < generation {
                    return None;
                }
                let rv = f.metadata.resource_version?;
                let report = report_of(client, ns, replica).await?;
                let one = [(replica.to_string(), Some(&report))];
                let s = switchyard_core::protocol::summarize(&one, ns, name, &rv, g).ok()?;
                if !s.applied.is_empty() {
                    Some(Seen {
                        observed_generation: g,
                        rejected: None,
                    })
                } else {
                    s.rejected.into_iter().next().map(|(_, why)| Seen {
                        observed_generation: g,
                        rejected: Some(why),
                    })
                }
            }
        },
    )
    .await
}

/// Sends `n` requests on one keep-alive connection and counts them by `x-switchyard-served-by`
/// (non-200 answers are counted under `status <code>`).
pub fn count_served(addr: SocketAddr, host: &str, path: &str, n: usize) -> HashMap<String, usize> {
    let mut client = HttpClient::new(addr);
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = client
            .get(host, path, &[])
            .expect("request through the router");
        let key = if r.status == 200 {
            r.header("x-switchyard-served-by").to_string()
        } else {
            format!("status {}", r.status)
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// A TCP relay between a client and `target`, which can be cut (every connection closed and
/// new ones refused) and restored: an API server outage without stopping the shared server.
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:<a free port>` to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the relay");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = down.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = cs.lock().unwrap();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, cut, conns }
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The API server's address, from the harness kubeconfig.
pub fn apiserver_addr() -> SocketAddr {
    let kc = std::fs::read_to_string(kubeconfig_path()).expect("reading the kubeconfig");
    let server = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("kubeconfig has a server")
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    server
        .parse()
        .expect("the test API server listens on an IP address")
}

/// A copy of the harness kubeconfig whose server is `https://127.0.0.1:<port>` (the certificate
/// names 127.0.0.1, so TLS still verifies through a relay on that address).
pub fn kubeconfig_via(port: u16, dir: &Path) -> PathBuf {
    let kc = std::fs::read_to_string(kubeconfig_path()).expect("reading the kubeconfig");
    let rewritten: String = kc
        .lines()
        .map(|l| match l.trim().strip_prefix("server:") {
            Some(_) => format!(
                "{}server: https://127.0.0.1:{port}",
                &l[..l.len() - l.trim_start().len()]
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join(format!("kubeconfig-{port}"));
    std::fs::write(&path, rewritten).expect("writing a kubeconfig copy");
    path
}

/// A fresh temporary directory for one test.
pub fn temp_dir(prefix: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sy-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

/// An upstream that holds each request for `delay`, or until [`SlowUpstream::release`] when
/// started [`held`](SlowUpstream::held), before answering `200 slow`, counting requests as
/// they arrive (so a test knows they are in flight).
pub struct SlowUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received so far.
    pub received: Arc<AtomicU64>,
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl SlowUpstream {
    /// Starts one that answers each request `delay` after it arrives.
    pub fn start(delay: Duration) -> SlowUpstream {
        SlowUpstream::with_gate(delay, true)
    }

    /// Starts one that answers nothing until [`SlowUpstream::release`]: requests stay in
    /// flight for exactly as long as the test says.
    pub fn held() -> SlowUpstream {
        SlowUpstream::with_gate(Duration::ZERO, false)
    }

    /// Lets every held request, and every later one, be answered.
    pub fn release(&self) {
        let (open, changed) = &*self.gate;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }

    fn with_gate(delay: Duration, open: bool) -> SlowUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a slow upstream");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let gate = Arc::new((Mutex::new(open), std::sync::Condvar::new()));
        let (r, g) = (received.clone(), gate.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, g) = (r.clone(), g.clone());
                std::thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let mut reader = BufReader::new(conn);
                    // GETs only: the head is the whole request.
                    while read_head(&mut reader) {
                        r.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(delay);
                        let (open, changed) = &*g;
                        drop(
                            changed
                                .wait_while(open.lock().unwrap(), |open| !*open)
                                .unwrap(),
                        );
                        let body = "slow";
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if writer.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                        let _ = reader.read(&mut []);
                    }
                });
            }
        });
        SlowUpstream {
            addr,
            received,
            gate,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one request head from `reader`, up to and including its empty line; false when the
/// connection ended (or failed) first. The upstreams of these tests serve GETs without a
/// body, so the head is the whole request.
pub fn read_head(reader: &mut impl BufRead) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

/// A loopback address nothing listens on (bound, then released).
pub fn dead_url() -> String {
    // Port 1 (tcpmux) is privileged and unused: connections are refused. A port that was free
    // a moment ago is not dead: a server of a test running in parallel may take it (CI saw
    // this one answer 404 for the "dead" version).
    "http://127.0.0.1:1".to_string()
}
