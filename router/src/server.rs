//! Assembles the Pingora server (proxy and admin services) and runs it on its own thread with
//! a shutdown signal the router owns.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::RouterConfig;
use crate::live::Shared;
use crate::proxy::Proxy;

/// Ends `Server::run`: on our own request, and on SIGTERM (graceful) or SIGINT (fast) when
/// the router handles signals.
struct StopSignal {
    stop: watch::Receiver<bool>,
    signals: bool,
}

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut stop = self.stop.clone();
        let asked = async move {
            let _ = stop.wait_for(|s| *s).await;
            ShutdownSignal::GracefulTerminate
        };
        if !self.signals {
            return asked.await;
        }
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return asked.await;
        };
        tokio::select! {
            s = asked => s,
            _ = term.recv() => {
                tracing::info!("SIGTERM: no new connections, finishing in-flight requests");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
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
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = Service::new(
        "switchyard proxy".to_string(),
        Proxy::new(Arc::clone(&shared)),
    );
    proxy.add_tcp(&config.listen.to_string());
    let mut admin = Service::new("switchyard admin".to_string(), Admin::new(shared));
    admin.add_tcp(&config.admin.to_string());
    admin.threads = Some(1);
    server.add_service(proxy);
    server.add_service(admin);
    let signal = StopSignal {
        stop,
        signals: config.handle_signals,
    };
    std::thread::Builder::new()
        .name("switchyard-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        })
}
