//! Test harness for Switchyard's end-to-end and API-server tests.
//!
//! It connects to the real kube-apiserver that `scripts/testenv start` runs (through
//! `KUBECONFIG`), with its controllers and kwok's simulated Nodes ([`cluster`]), gives each
//! test a fresh namespace, installs the CRDs once per process, and runs real upstream HTTP
//! servers and a small HTTP client, all on 127.0.0.1. It is not a mock
//! of anything: when the API server is absent, the tests that need it fail with a message that
//! says how to start it.

pub mod cli;
pub mod cluster;
pub mod router;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use tokio::sync::OnceCell;

/// The field manager the harness applies with.
pub const MANAGER: &str = "switchyard-tests";

/// The admin kubeconfig written by `scripts/testenv start`.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "KUBECONFIG is not set: these tests need the real API server. \
             Start it with `eval \"$(scripts/testenv start)\"` (or run `.ci/run`)"
        ),
    }
}

/// The kubeconfig of the read-only user `viewer` (no RBAC bindings unless a test adds some),
/// written beside the admin one.
pub fn viewer_kubeconfig_path() -> PathBuf {
    kubeconfig_path().with_file_name("viewer.kubeconfig")
}

/// A client for the admin user of the test API server.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    Client::try_from(config).expect("building a client for the test API server")
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Applies the CRDs generated from the Rust types (server-side apply) and waits until both are
/// Established. Runs once per process.
pub async fn ensure_crds(client: &Client) {
    CRDS.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in switchyard_core::crd::crds() {
            let name = crd.metadata.name.clone().expect("CRDs have names");
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        }
        for crd in switchyard_core::crd::crds() {
            let name = crd.metadata.name.clone().expect("CRDs have names");
            wait_until(
                Duration::from_secs(60),
                &format!("CRD {name} Established"),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await;
        }
    })
    .await;
}

/// Creates a fresh namespace `sy-<prefix>-<unique>` (after making sure the CRDs exist) and
/// returns its name. Namespaces are left behind for a failed test's objects to be looked at
/// (the namespace controller would remove them; a control plane started afresh has none).
pub async fn namespace(client: &Client, prefix: &str) -> String {
    ensure_crds(client).await;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "sy-{prefix}-{}-{:x}{:x}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 0xffff
    );
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Polls `check` every 20 ms until it returns `Some`, panicking with `what` after `timeout`.
/// Tests wait on signals (a generation, `/readyz`), never on a bare sleep.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The blocking twin of [`wait_until`], for tests that run outside a runtime.
pub fn wait_until_blocking<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 free at the time of asking (bound, read, released), from below the
/// kernel's ephemeral range (32768–60999 by default), where every `bind(…:0)` and outgoing
/// connection lands: a port handed out here for a router to listen on a moment later cannot be
/// taken meanwhile by another test's upstream. Each port is handed out once per process;
/// processes start 1,000 ports apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10_000 + (std::process::id() % 10) as u16 * 1000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 1000, "1,000 ports handed out in one test process");
        if TcpListener::bind(("127.0.0.1", base + n)).is_ok() {
            return base + n;
        }
    }
}

/// A real HTTP/1.1 upstream on 127.0.0.1: answers every request with `200`, the body
/// `<label>`, and the headers `x-upstream: <label>` and `x-path: <request path>`, keeping
/// connections alive. It counts requests and stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it answers.
    pub label: String,
    hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Starts an upstream answering `label`.
    pub fn start(label: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding an upstream");
        let addr = listener.local_addr().expect("upstream address");
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, l) = (hits.clone(), stop.clone(), label.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, s, l) = (h.clone(), s.clone(), l.clone());
                std::thread::spawn(move || serve_connection(conn, &l, &h, &s));
            }
        });
        Upstream {
            addr,
            label: label.to_string(),
            hits,
            stop,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn serve_connection(conn: TcpStream, label: &str, hits: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let Some(req) = read_head(&mut reader) else {
            return;
        };
        if req.content_length > 0 {
            let mut body = vec![0; req.content_length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        hits.fetch_add(1, Ordering::Relaxed);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream: {label}\r\nx-path: {}\r\ncontent-length: {}\r\n\r\n{label}",
            req.target,
            label.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || req.close {
            return;
        }
    }
}

struct Head {
    target: String,
    content_length: usize,
    close: bool,
    status: u16,
    headers: Vec<(String, String)>,
}

/// Reads a request or response head; `None` at end of stream or on garbage.
fn read_head(reader: &mut impl BufRead) -> Option<Head> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut parts = first.split_whitespace();
    let a = parts.next()?.to_string();
    let b = parts.next().unwrap_or_default().to_string();
    let mut head = Head {
        status: b.parse().unwrap_or(0),
        target: b,
        content_length: 0,
        close: false,
        headers: Vec::new(),
    };
    let _ = a;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some(head);
        }
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        match name.as_str() {
            "content-length" => head.content_length = value.parse().ok()?,
            "connection" if value.eq_ignore_ascii_case("close") => head.close = true,
            _ => {}
        }
        head.headers.push((name, value));
    }
}

/// One HTTP response as the test client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: HashMap<String, String>,
    /// Body as text.
    pub body: String,
}

impl Response {
    /// A header's value, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// A small keep-alive HTTP/1.1 client for one server address: enough to drive the router with
/// exact control over headers, and to count what served each request.
pub struct HttpClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// A client for `addr` (connections are made on first use and reused).
    pub fn new(addr: SocketAddr) -> HttpClient {
        HttpClient { addr, conn: None }
    }

    /// `GET path` with `Host: host` and extra headers. Reconnects once if a kept-alive
    /// connection turns out closed.
    pub fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        match self.try_get(host, path, headers) {
            Ok(r) => Ok(r),
            Err(_) if self.conn.is_some() => {
                self.conn = None;
                self.try_get(host, path, headers)
            }
            Err(e) => Err(e),
        }
    }

    fn try_get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        let reused = self.conn.is_some();
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let result = (|| {
            conn.get_mut().write_all(req.as_bytes())?;
            let head = read_head(conn).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    if reused {
                        "stale connection"
                    } else {
                        "no response"
                    },
                )
            })?;
            let mut body = vec![0; head.content_length];
            conn.read_exact(&mut body)?;
            Ok((head, body))
        })();
        match result {
            Ok((head, body)) => {
                if head.close {
                    self.conn = None;
                }
                Ok(Response {
                    status: head.status,
                    headers: head.headers.into_iter().collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// A blocking `GET` on a fresh connection: for admin endpoints (`/readyz`, `/routes`).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    HttpClient::new(addr).get("localhost", path, &[("connection", "close")])
}

/// Path of a workspace binary (`switchyard` or `switchyard-router`) built with the same
/// profile as the tests, and never older than the sources: `cargo test` does not build other
/// packages' binaries, so the first call in a test process runs `cargo build --workspace
/// --bins` itself (a second or so when nothing changed), and a test can never pass on a binary
/// left over from older code.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if let Err(why) = BUILT.get_or_init(build_binaries) {
        panic!("{why}");
    }
    let path = target_dir().join(profile()).join(name);
    assert!(
        path.exists(),
        "{} is missing after `cargo build --workspace --bins`",
        path.display()
    );
    path
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Runs the same build as `scripts/test` (same flags, so the two never rebuild each other's
/// output), with the cargo that runs the tests.
fn build_binaries() -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--workspace", "--bins"])
        .current_dir(workspace_dir());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running `cargo build --workspace --bins`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build --workspace --bins` failed, so the tests would run stale binaries:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The property `binary` exists for: no binary older than the code it is built from.
    #[test]
    fn binaries_are_never_older_than_their_sources() {
        let modified = |p: &std::path::Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        for (name, source) in [
            ("switchyard-router", "router/src/main.rs"),
            ("switchyard", "cli/src/main.rs"),
        ] {
            let bin = binary(name);
            let src = workspace_dir().join(source);
            assert!(
                modified(&bin) >= modified(&src),
                "{} is older than {}",
                bin.display(),
                src.display()
            );
        }
    }
}
