//! `switchyard quickstart`: the whole idea in one command, no cluster needed.
//!
//! In this one process, on loopback: a local store, a router following it, and two small demo
//! versions of a function `hello`. The tour runs the real commands against the real store and
//! sends real requests through the real router, showing the split they observe: deploy 1.0.0,
//! deploy 1.1.0, shift 10% then 50%, roll back. Then it keeps running for the user to try
//! things from another terminal, until Ctrl-C (`--exit` ends after the tour).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use switchyard_router::source::local::LocalOptions;
use switchyard_router::{RouterConfig, RouterHandle, Source};
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
    let router = start_router(&root, listen, admin).await?;
    let store_flag = format!("--store dir:{}", root.display());

    say(&format!(
        "Switchyard quickstart: a router on http://{listen}, a local store at {}, two demo versions.\n",
        root.display()
    ));
    let result = tour(&store, &q, listen, &v1, &v2).await;
    if let Err(e) = result {
        stop_router(router).await;
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
    stop_router(router).await;
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

async fn start_router(
    root: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
) -> anyhow::Result<RouterHandle> {
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
}

async fn stop_router(router: RouterHandle) {
    let _ = tokio::task::spawn_blocking(move || router.stop()).await;
}
