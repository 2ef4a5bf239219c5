//! `switchyard quickstart`: the whole idea in one command, no cluster needed.
//!
//! On loopback: a local store, a router following it, and two small demo versions of a function
//! `hello`. The router is the `switchyard-router` binary found beside this one (or on PATH),
//! started for the tour and stopped after it; built with the `embedded-router` feature, it runs
//! in this process instead (see [`router`]). The tour runs the real commands against the real store and
//! sends real requests through the real router, showing the split they observe: deploy 1.0.0,
//! deploy 1.1.0, shift 10% then 50%, roll back. Then it keeps running for the user to try
//! things from another terminal, until Ctrl-C (`--exit` ends after the tour).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::args::{self, Format, Output, Write};
use crate::commands::{deploy, history, rollback, traffic};
use crate::store::local::DirStore;

const FUNCTION: &str = "hello";

/// How far an observed share may be from the configured one before the tour fails, in
/// percentage points. The router's low-discrepancy pick keeps it within a request or two.
const TOLERANCE_POINTS: f64 = 1.0;

/// Runs the tour.
pub async fn run(q: args::Quickstart, store: Option<PathBuf>) -> anyhow::Result<()> {
    let (root, temporary) = match &store {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!("switchyard-quickstart-{}", std::process::id())),
            true,
        ),
    };
    if root
        .join("functions")
        .join(format!("{FUNCTION}.yaml"))
        .exists()
    {
        bail!(
            "store dir:{} already holds function {FUNCTION}; pass an empty --store directory",
            root.display()
        );
    }
    let store = DirStore::open(&root, true, crate::write::DEFAULT_LOCK_WAIT)?;
    let v1 = demo_version("1.0.0").await?;
    let v2 = demo_version("1.1.0").await?;
    let listen = free_loopback_addr()?;
    let admin = free_loopback_addr()?;
    let router = router::start(&root, listen, admin).await?;
    let store_flag = format!("--store dir:{}", root.display());

    say(&format!(
        "Switchyard quickstart: a router on http://{listen}, a local store at {}, two demo versions.\n",
        root.display()
    ));
    let result = tour(&store, &q, listen, &v1, &v2).await;
    if let Err(e) = result {
        router::stop(router).await;
        if temporary {
            let _ = std::fs::remove_dir_all(&root);
        }
        return Err(e);
    }

    if q.exit {
        say(
            "Run `switchyard quickstart` without --exit to keep the router up and try it yourself.",
        );
    } else {
        say("Try it yourself, from another terminal:");
        say(&format!("  curl -i http://{listen}/{FUNCTION}"));
        say(&format!(
            "  switchyard {store_flag} traffic {FUNCTION} 1.1.0=25 1.0.0=75"
        ));
        say(&format!("  switchyard {store_flag} status {FUNCTION}"));
        say(&format!("  switchyard {store_flag} rollback {FUNCTION}"));
        say(&format!("  switchyard {store_flag} history {FUNCTION}"));
        say(&format!("  curl http://{admin}/metrics"));
        say("\nPress Ctrl-C to stop.");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    router::stop(router).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

async fn tour(
    store: &DirStore,
    q: &args::Quickstart,
    router: SocketAddr,
    v1: &Demo,
    v2: &Demo,
) -> anyhow::Result<()> {
    let write = Write {
        dry_run: false,
        no_wait: false,
        timeout: Duration::from_secs(10),
        reason: Some("quickstart".to_string()),
    };
    step(&format!(
        "switchyard deploy {FUNCTION} 1.0.0 --endpoint {}",
        v1.url
    ));
    deploy::run(store, deploy_args("1.0.0", &v1.url, write.clone())).await?;
    observe(router, q.requests, &[("1.0.0", 100.0)]).await?;

    step(&format!(
        "switchyard deploy {FUNCTION} 1.1.0 --endpoint {}",
        v2.url
    ));
    deploy::run(store, deploy_args("1.1.0", &v2.url, write.clone())).await?;
    observe(router, q.requests, &[("1.0.0", 100.0), ("1.1.0", 0.0)]).await?;

    for (canary, stable) in [(10.0, 90.0), (50.0, 50.0)] {
        step(&format!(
            "switchyard traffic {FUNCTION} 1.1.0={canary} 1.0.0={stable}"
        ));
        let split = vec![format!("1.1.0={canary}"), format!("1.0.0={stable}")];
        let parsed = traffic::parse_split(&split)?;
        traffic::traffic(
            store,
            args::Traffic {
                function: FUNCTION.to_string(),
                split,
                force: false,
                write: write.clone(),
            },
            parsed,
        )
        .await?;
        observe(router, q.requests, &[("1.0.0", stable), ("1.1.0", canary)]).await?;
    }

    step(&format!("switchyard rollback {FUNCTION}"));
    let started = Instant::now();
    rollback::rollback(
        store,
        args::Rollback {
            function: FUNCTION.to_string(),
            to: None,
            force: false,
            write: write.clone(),
        },
    )
    .await?;
    let back = first_response_from(router, "1.0.0", started).await?;
    say(&format!(
        "  live traffic was back on 1.0.0 {} after the command started",
        crate::wait::show(back)
    ));
    observe(router, q.requests, &[("1.0.0", 100.0), ("1.1.0", 0.0)]).await?;

    step(&format!("switchyard history {FUNCTION}"));
    history::history(
        store,
        args::Read {
            function: FUNCTION.to_string(),
            output: Output {
                format: Format::Table,
            },
        },
    )
    .await?;
    say("");
    Ok(())
}

fn deploy_args(version: &str, url: &str, write: Write) -> args::Deploy {
    args::Deploy {
        function: FUNCTION.to_string(),
        version: version.to_string(),
        image: None,
        endpoint: Some(url.to_string()),
        port: 8080,
        env: Vec::new(),
        args: Vec::new(),
        replicas: 1,
        cpu: None,
        memory: None,
        traffic: None,
        force: false,
        write,
    }
}

fn say(line: &str) {
    crate::output::line(format_args!("{line}"));
}

fn step(command: &str) {
    // Bold only for a person: never into a pipe or a file, nor with NO_COLOR set.
    use std::io::IsTerminal as _;
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    {
        crate::output::line(format_args!("\n\x1b[1m$ {command}\x1b[0m"));
    } else {
        crate::output::line(format_args!("\n$ {command}"));
    }
}

/// Sends `requests` requests through the router and prints the split they observed next to
/// the configured one; fails if a share is off by more than [`TOLERANCE_POINTS`].
async fn observe(
    router: SocketAddr,
    requests: u32,
    expected: &[(&str, f64)],
) -> anyhow::Result<()> {
    let mut client = Client::connect(router).await?;
    let mut counts: Vec<u32> = vec![0; expected.len()];
    for _ in 0..requests {
        let served = client.get(&format!("/{FUNCTION}")).await?;
        let version = served.rsplit('@').next().unwrap_or_default();
        match expected.iter().position(|(v, _)| *v == version) {
            Some(i) => counts[i] += 1,
            None => bail!("a request was served by {served:?}, which the split does not name"),
        }
    }
    crate::output::line(format_args!("  {requests} requests through the router:"));
    for ((version, want), got) in expected.iter().zip(&counts) {
        let share = 100.0 * f64::from(*got) / f64::from(requests);
        let bar = "█".repeat((share / 2.5).round() as usize);
        crate::output::line(format_args!(
            "    {FUNCTION}@{version:<6} configured {want:>5.1}%  observed {share:>5.1}%  {bar}"
        ));
        if (share - want).abs() > TOLERANCE_POINTS {
            bail!("{FUNCTION}@{version} got {share:.1}% of the requests, configured {want:.1}%");
        }
    }
    Ok(())
}

/// Sends requests until one is served by `version`; the time since `since`.
async fn first_response_from(
    router: SocketAddr,
    version: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    let mut client = Client::connect(router).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut streak = 0;
    // Twenty in a row: a 100% split shows up on every request, not by luck.
    while streak < 20 {
        if Instant::now() > deadline {
            bail!("traffic did not return to {FUNCTION}@{version} within 10 s");
        }
        let served = client.get(&format!("/{FUNCTION}")).await?;
        streak = if served.ends_with(&format!("@{version}")) {
            streak + 1
        } else {
            0
        };
    }
    Ok(since.elapsed())
}

/// A keep-alive HTTP/1.1 client that returns each response's `x-switchyard-served-by`.
struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        Ok(Client { addr, conn: None })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .with_context(|| format!("connecting to the router at {}", self.addr))?;
                stream.set_nodelay(true)?;
                self.conn = Some(BufReader::new(stream));
            }
            match self.exchange(path).await {
                Ok(served) => return Ok(served),
                Err(e) if attempt == 0 => {
                    tracing::debug!("retrying on a new connection: {e:#}");
                    self.conn = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn exchange(&mut self, path: &str) -> anyhow::Result<String> {
        let conn = self.conn.as_mut().context("not connected")?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
        conn.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no response")?;
        let (mut length, mut served, mut close) = (0usize, String::new(), false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                bail!("the connection closed mid-response");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse()?,
                    "x-switchyard-served-by" => served = v.trim().to_string(),
                    "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await?;
        if close {
            self.conn = None;
        }
        if status != 200 {
            bail!(
                "the router answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(served)
    }
}

/// A demo version: a tiny HTTP server on 127.0.0.1 answering `Hello from hello@<version>`.
struct Demo {
    url: String,
}

async fn demo_version(version: &str) -> anyhow::Result<Demo> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("starting a demo version")?;
    let url = format!("http://{}", listener.local_addr()?);
    let body = format!("Hello from {FUNCTION}@{version}\n");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve_demo(conn, body.clone()));
        }
    });
    Ok(Demo { url })
}

async fn serve_demo(conn: TcpStream, body: String) {
    let _ = conn.set_nodelay(true);
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        line.clear();
        match conn.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            line.clear();
            match conn.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut skip = vec![0; length];
        if conn.read_exact(&mut skip).await.is_err() {
            return;
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?)
}

/// The router of the tour, in this process (`embedded-router`).
#[cfg(feature = "embedded-router")]
mod router {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use anyhow::Context as _;
    use switchyard_router::source::local::LocalOptions;
    use switchyard_router::{RouterConfig, RouterHandle, Source};

    /// A running router.
    pub struct Running(RouterHandle);

    /// Starts a router following the store at `root`; returns once it serves its first table.
    pub async fn start(
        root: &Path,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<Running> {
        let mut config = RouterConfig::new("quickstart");
        config.listen = listen;
        config.admin = admin;
        config.grace_period = Duration::from_secs(1);
        let source = Source::Local(LocalOptions {
            root: PathBuf::from(root),
            lease_duration: Duration::from_secs(10),
            listen: listen.to_string(),
        });
        // The router runs its own runtimes; start and stop it off this one.
        tokio::task::spawn_blocking(move || switchyard_router::start(config, source))
            .await
            .context("starting the router")?
            .context("starting the router")
            .map(Running)
    }

    /// Stops the router.
    pub async fn stop(router: Running) {
        let _ = tokio::task::spawn_blocking(move || router.0.stop()).await;
    }
}

/// The router of the tour: the `switchyard-router` binary in a child process, so that this one
/// does not link the data plane.
#[cfg(not(feature = "embedded-router"))]
mod router {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context as _};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::process::{Child, Command};

    use crate::exit::{fail, Code};

    /// The router's executable, without the platform's suffix.
    const BINARY: &str = "switchyard-router";

    /// How long the router may take to serve its first table: its own startup timeout (10 s),
    /// and room for a slow start of the process.
    const READY_WAIT: Duration = Duration::from_secs(20);

    /// How often `/readyz` is asked while the router starts.
    const READY_POLL: Duration = Duration::from_millis(25);

    /// How long a stop waits for the router to end after SIGTERM (its grace period is 1 s)
    /// before killing it.
    const STOP_WAIT: Duration = Duration::from_secs(5);

    /// A running router process. Dropped without [`stop`] (an error on the way), it is killed.
    pub struct Running {
        child: Child,
    }

    /// Where the router binary is: beside this executable (how `cargo build` and a release
    /// archive lay them out), else the first on PATH.
    fn find() -> Option<PathBuf> {
        let file = format!("{BINARY}{}", std::env::consts::EXE_SUFFIX);
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(&file)));
        let on_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join(&file));
        beside.into_iter().chain(on_path).find(|p| p.is_file())
    }

    /// Starts the router binary following the store at `root`; returns once its `/readyz`
    /// answers 200.
    pub async fn start(
        root: &Path,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<Running> {
        let Some(binary) = find() else {
            return Err(fail(
                Code::Invalid,
                format!(
                    "the quickstart needs the {BINARY} binary beside this one or on PATH: \
                     `cargo build -p switchyard-router`, or run \
                     `cargo run --release -p switchyard-cli --features embedded-router -- quickstart`"
                ),
            ));
        };
        let mut command = Command::new(&binary);
        // The router reads SWITCHYARD_* as its flags: a namespace or kubeconfig meant for this
        // command must not turn the tour's router towards a cluster.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHYARD_") {
                command.env_remove(key);
            }
        }
        // Its warnings and errors only, as when it runs in this process.
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--store")
            .arg(format!("dir:{}", root.display()))
            .args(["--replica-name", "quickstart", "--grace-period", "1"])
            .args(["--lease-duration", "10"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut running = Running { child };
        let started = Instant::now();
        loop {
            if let Some(status) = running.child.try_wait()? {
                bail!(
                    "{} stopped before it was ready ({status})",
                    binary.display()
                );
            }
            if ready(admin).await {
                return Ok(running);
            }
            if started.elapsed() > READY_WAIT {
                bail!(
                    "{} was not ready within {} s (http://{admin}/readyz)",
                    binary.display(),
                    READY_WAIT.as_secs()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Whether the router's admin endpoint answers `GET /readyz` with 200.
    async fn ready(admin: SocketAddr) -> bool {
        let ask = async {
            let mut conn = TcpStream::connect(admin).await?;
            conn.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .await?;
            let mut response = Vec::new();
            conn.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        match tokio::time::timeout(Duration::from_secs(1), ask).await {
            Ok(Ok(response)) => String::from_utf8_lossy(&response)
                .split_whitespace()
                .nth(1)
                .is_some_and(|status| status == "200"),
            _ => false,
        }
    }

    /// Stops the router: SIGTERM (it finishes open responses and removes its heartbeat file),
    /// then a kill if it has not ended within [`STOP_WAIT`].
    pub async fn stop(mut router: Running) {
        if !matches!(router.child.try_wait(), Ok(None)) {
            return; // already ended (a Ctrl-C reaches it too)
        }
        terminate(&mut router.child);
        if tokio::time::timeout(STOP_WAIT, router.child.wait())
            .await
            .is_err()
        {
            let _ = router.child.kill().await;
        }
    }

    #[cfg(unix)]
    fn terminate(child: &mut Child) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    #[cfg(not(unix))]
    fn terminate(child: &mut Child) {
        let _ = child.start_kill();
    }
}
