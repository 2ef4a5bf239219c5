//! Assembles the Pingora server (proxy and admin services) and runs it on its own thread with
//! a shutdown signal the router owns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::RouterConfig;
use crate::live::Shared;
use crate::proxy::{Bounds, Drain, Proxy, Trust};

/// Ends `Server::run`: on our own request, and on SIGTERM (graceful) or SIGINT (fast) when
/// the router handles signals. A graceful stop drains first: `/readyz` turns 503, each
/// connection closes after the response it is writing, and Pingora is told to stop once none
/// is left (or the grace period is over) — not after a fixed sleep of the whole grace period.
struct StopSignal {
    stop: watch::Receiver<bool>,
    signals: bool,
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let mut stop = self.stop.clone();
        let mut signals = if self.signals {
            signal(SignalKind::terminate())
                .ok()
                .zip(signal(SignalKind::interrupt()).ok())
        } else {
            None
        };
        let fast = match &mut signals {
            Some((term, int)) => tokio::select! {
                _ = stop.wait_for(|s| *s) => false,
                _ = term.recv() => {
                    tracing::info!("SIGTERM: draining; each connection closes after its current response");
                    false
                }
                _ = int.recv() => true,
            },
            None => {
                let _ = stop.wait_for(|s| *s).await;
                false
            }
        };
        if fast {
            return ShutdownSignal::FastShutdown;
        }
        self.shared.ready.store(false, Ordering::Release);
        let drained = match &mut signals {
            Some((_, int)) => tokio::select! {
                drained = self.drain.drain(self.grace) => drained,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            },
            None => self.drain.drain(self.grace).await,
        };
        if !drained {
            tracing::warn!(
                "grace period of {:?} over: closing the connections still open",
                self.grace
            );
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Starts the proxy and admin services on a new thread; returns when they are scheduled (the
/// thread ends after shutdown and the grace period).
pub fn spawn(
    config: &RouterConfig,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let conf = ServerConf {
        threads: config.threads.max(1),
        // The grace period is spent draining (StopSignal), not sleeping after it.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let drain = Arc::new(Drain::new());
    let mut proxy = Service::new(
        "switchyard proxy".to_string(),
        Proxy::new(
            Arc::clone(&shared),
            Arc::clone(&drain),
            Trust {
                hops: config.trusted_hops,
                forwarded_header: config.forwarded_header,
            },
            Bounds {
                timeouts: config.timeouts,
                max_connections: config.max_connections,
                max_upstream_connections: config.max_upstream_connections,
            },
        ),
    );
    // No L4 buffers under the proxy: it reads into its own per-connection buffers and writes
    // each response in one write, so Pingora's 64 KiB read buffer per connection (and a copy
    // of every byte read) would buy nothing but memory (4096 connections: 256 MiB).
    proxy.add_listener(
        ListenerConfig::tcp(config.listen.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
    );
    let mut admin = Service::new(
        "switchyard admin".to_string(),
        Admin::new(Arc::clone(&shared)).with_listen(config.listen),
    );
    admin.add_tcp(&config.admin.to_string());
    admin.threads = Some(1);
    server.add_service(proxy);
    server.add_service(admin);
    let signal = StopSignal {
        stop,
        signals: config.handle_signals,
        shared,
        drain,
        grace: config.grace_period,
    };
    std::thread::Builder::new()
        .name("switchyard-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        })
}
