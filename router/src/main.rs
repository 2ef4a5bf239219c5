//! The `switchyard-router` binary: flags and environment in, one router out.
//!
//! A thin shell over the `switchyard_router` library: it parses flags (each with a
//! `SWITCHYARD_*` environment equivalent), sets up logging (Pingora's `log` records bridged
//! into `tracing`), starts the router and waits for SIGTERM. It holds no routing logic.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard_core::BuildOptions;
use switchyard_router::config::Timeouts;
use switchyard_router::source::local::LocalOptions;
use switchyard_router::{KubernetesOptions, RouterConfig, Source};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// One human-readable line per event; coloured only on a terminal and never with NO_COLOR.
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log pipelines.
    Json,
}

/// Told after the flags in `--help`: the logging environment, which clap cannot list as a flag.
const LOG_HELP: &str = "\
Logging:
  Log lines go to stderr. At the default level (info) the router logs its start-up (listen and
  admin addresses, source, replica), each table swap with every changed function's old -> new
  split, each rejected or pending function with its reason (once per generation), and losing
  or regaining its source.
  RUST_LOG  filter in tracing's EnvFilter syntax, replacing the default
            (info,kube_client=off,kube_runtime=warn,pingora_core=warn,pingora=warn);
            e.g. RUST_LOG=debug, RUST_LOG=info,switchyard_router=debug
  NO_COLOR  when set (non-empty), text logs carry no colour; they are coloured only on a
            terminal anyway";

/// Switchyard's data plane: routes HTTP requests between function versions by weight.
#[derive(Parser, Debug)]
#[command(name = "switchyard-router", version, about, after_help = LOG_HELP)]
struct Args {
    /// Address the proxy listens on.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the admin endpoints (/healthz, /readyz, /metrics, /routes).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Follow a local store directory instead of a Kubernetes API server: `dir:PATH`.
    #[arg(long, env = "SWITCHYARD_STORE", value_name = "dir:PATH", value_parser = switchyard_store::parse_store_flag,
          conflicts_with_all = ["namespace", "kubeconfig", "lease_namespace"])]
    store: Option<PathBuf>,
    /// The one namespace to watch; all namespaces when absent.
    #[arg(long, short = 'n', env = "SWITCHYARD_NAMESPACE")]
    namespace: Option<String>,
    /// Kubeconfig file; else in-cluster config (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "SWITCHYARD_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// This replica's name (its Lease and its report); default $POD_NAME, else
    /// the hostname.
    #[arg(long, env = "SWITCHYARD_REPLICA_NAME")]
    replica_name: Option<String>,
    /// File to write each good table to, and to start from when the API server is unreachable.
    #[arg(long, env = "SWITCHYARD_SNAPSHOT")]
    snapshot: Option<PathBuf>,
    /// Cluster DNS domain of managed versions' Services.
    #[arg(
        long,
        env = "SWITCHYARD_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// Proxy worker threads.
    #[arg(long, env = "SWITCHYARD_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Longest a graceful stop (SIGTERM) waits for open connections to finish their current
    /// response; it ends as soon as they have.
    #[arg(long, env = "SWITCHYARD_GRACE_PERIOD", default_value_t = 10)]
    grace_period: u64,
    /// Namespace of this replica's Lease; default the watched namespace, else $POD_NAMESPACE,
    /// else switchyard-system.
    #[arg(long, env = "SWITCHYARD_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Lease duration in seconds; renewed every third of it.
    #[arg(long, env = "SWITCHYARD_LEASE_DURATION", default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_duration: u64,
    /// Seconds to wait for the first complete table at start before giving up.
    #[arg(long, env = "SWITCHYARD_STARTUP_TIMEOUT", default_value_t = 10)]
    startup_timeout: u64,
    /// Proxies in front of the router (load balancers) whose X-Forwarded-For, -Proto, -Host and
    /// Forwarded headers are believed: X-Forwarded-For keeps their last N addresses, then the
    /// router appends the address it sees. 0: every client value is replaced.
    #[arg(long, env = "SWITCHYARD_TRUSTED_HOPS", default_value_t = 0)]
    trusted_hops: usize,
    /// Also send functions an RFC 7239 `Forwarded` header (for, proto, host).
    #[arg(long, env = "SWITCHYARD_FORWARDED_HEADER")]
    forwarded_header: bool,
    // Timeouts and limits (issue 12 items 7 and 8), one block. Durations like 500ms, 30s, 5m,
    // 1h30m; a Function's spec.timeouts replaces all but --client-idle-timeout for its requests.
    /// Longest a client connection may sit idle between requests, or take to send a request
    /// head; then it is closed.
    #[arg(long, env = "SWITCHYARD_CLIENT_IDLE_TIMEOUT", default_value = "60s", value_parser = timeout, value_name = "DURATION")]
    client_idle_timeout: Duration,
    /// Longest a client may be silent inside a request body; then 408.
    #[arg(long, env = "SWITCHYARD_REQUEST_IDLE_TIMEOUT", default_value = "60s", value_parser = timeout, value_name = "DURATION")]
    request_idle_timeout: Duration,
    /// Longest a TCP connect to a function may take; then one failover, else 504.
    #[arg(long, env = "SWITCHYARD_CONNECT_TIMEOUT", default_value = "5s", value_parser = timeout, value_name = "DURATION")]
    connect_timeout: Duration,
    /// Longest a function may take to read the request and start its response; then 504.
    #[arg(long, env = "SWITCHYARD_RESPONSE_HEAD_TIMEOUT", default_value = "60s", value_parser = timeout, value_name = "DURATION")]
    response_head_timeout: Duration,
    /// Longest a function may be silent inside a response body; then both connections close.
    #[arg(long, env = "SWITCHYARD_RESPONSE_IDLE_TIMEOUT", default_value = "60s", value_parser = timeout, value_name = "DURATION")]
    response_idle_timeout: Duration,
    /// Longest a write to a client that does not read may wait; then both connections close.
    #[arg(long, env = "SWITCHYARD_CLIENT_WRITE_TIMEOUT", default_value = "60s", value_parser = timeout, value_name = "DURATION")]
    client_write_timeout: Duration,
    /// Longest both sides of an upgraded connection (a WebSocket) may be silent together; then
    /// both connections close.
    #[arg(long, env = "SWITCHYARD_TUNNEL_IDLE_TIMEOUT", default_value = "1h", value_parser = timeout, value_name = "DURATION")]
    tunnel_idle_timeout: Duration,
    /// Client connections held at once on the proxy port; past it a new one gets a 503 and is
    /// closed (the admin port is apart).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Connections (in use or idle) to one function address; past it a request waits up to its
    /// connect timeout for one, then gets a 503.
    #[arg(long, env = "SWITCHYARD_MAX_UPSTREAM_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_upstream_connections: u32,
    /// The address this replica's report gives (`switchyard routers` shows it); default the
    /// listen address. In a pod, `$(POD_IP):8080`.
    #[arg(long, env = "SWITCHYARD_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// Log line format on stderr: text, or json (one object per line, for log pipelines).
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// A timeout flag's value, in the same form as `spec.timeouts`.
fn timeout(value: &str) -> Result<Duration, String> {
    switchyard_core::validate::duration("flag", value).map_err(|e| e.to_string())
}

fn replica_name(flag: Option<String>) -> String {
    flag.filter(|s| !s.is_empty())
        .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "switchyard-router".to_string())
}

/// Whether text logs may carry colour: only on a terminal, and never when `NO_COLOR` is set
/// to anything non-empty (no-color.org).
fn colour(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            // kube-client logs every failed connection as an error; the router reports an
            // unreachable API server once, itself.
            "info,kube_client=off,kube_runtime=warn,pingora_core=warn,pingora=warn",
        )
    });
    // Pingora logs through `log`, kube through `tracing`: one subscriber for both.
    let _ = tracing_log::LogTracer::init();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(colour(
                        std::env::var_os("NO_COLOR"),
                        std::io::stderr().is_terminal(),
                    )),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = RouterConfig {
        listen: args.listen,
        admin: args.admin,
        threads: usize::from(args.threads),
        grace_period: Duration::from_secs(args.grace_period),
        replica: replica_name(args.replica_name),
        snapshot: args.snapshot,
        build: BuildOptions {
            cluster_domain: args.cluster_domain,
        },
        startup_timeout: Duration::from_secs(args.startup_timeout),
        handle_signals: true,
        trusted_hops: args.trusted_hops,
        forwarded_header: args.forwarded_header,
        timeouts: Timeouts {
            client_idle: args.client_idle_timeout,
            request_idle: args.request_idle_timeout,
            connect: args.connect_timeout,
            response_head: args.response_head_timeout,
            response_idle: args.response_idle_timeout,
            client_write: args.client_write_timeout,
            tunnel_idle: args.tunnel_idle_timeout,
        },
        max_connections: args.max_connections as usize,
        max_upstream_connections: args.max_upstream_connections as usize,
    };
    let source = match args.store {
        Some(root) => Source::Local(LocalOptions {
            root,
            lease_duration: Duration::from_secs(args.lease_duration),
            listen: args
                .advertise_address
                .clone()
                .unwrap_or_else(|| args.listen.to_string()),
        }),
        None => Source::Kubernetes(KubernetesOptions {
            kubeconfig: args.kubeconfig,
            namespace: args.namespace,
            lease_namespace: args.lease_namespace,
            lease_duration: Duration::from_secs(args.lease_duration),
            advertise_address: args.advertise_address,
        }),
    };
    let from = match &source {
        Source::Local(o) => format!("store dir:{}", o.root.display()),
        Source::Kubernetes(o) => match &o.namespace {
            Some(ns) => format!("kubernetes namespace {ns}"),
            None => "kubernetes all namespaces".to_string(),
        },
        Source::Fixed(_) => "a fixed table".to_string(),
    };
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin,
        source = %from,
        replica = %config.replica,
        "starting"
    );
    match switchyard_router::start(config, source) {
        Ok(router) => {
            tracing::info!("serving");
            router.wait();
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard-router: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        for (no_color, terminal, expected) in [
            (None, true, true),
            (None, false, false),
            (Some(""), true, true),
            (Some("1"), true, false),
            (Some("1"), false, false),
        ] {
            assert_eq!(
                colour(no_color.map(Into::into), terminal),
                expected,
                "NO_COLOR={no_color:?} terminal={terminal}"
            );
        }
    }
}
